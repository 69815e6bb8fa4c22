//! The `[cluster]` metric families (README, "Scaling out"). Registered whether or not
//! `[cluster]` is set, so dashboards and alerts see them from the first scrape
//! (`cluster_connected` stays 0 in single-instance mode).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

use super::metrics::MetricsError;

/// Buckets of one sync round trip: sub-millisecond on a LAN, up to the response timeout.
const SYNC_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The cluster families.
pub(crate) struct ClusterMetrics {
    /// 1 while the replica is connected to Redis (shared mode), 0 in local mode.
    pub(crate) connected: IntGauge,
    /// Duration of one sync (deltas flushed, merged totals read back).
    pub(crate) sync_duration: Histogram,
    /// Syncs, connections and publications that failed.
    pub(crate) sync_errors: IntCounter,
    /// Counter deltas dropped: the outage buffer was full, or they belonged to windows that
    /// had ended when Redis came back.
    pub(crate) deltas_dropped: IntCounter,
}

impl ClusterMetrics {
    /// Registers the families in `r`.
    pub(crate) fn new(r: &Registry) -> Result<Self, MetricsError> {
        let connected = IntGauge::new(
            "cluster_connected",
            "1 while this replica shares counters and bans through Redis, 0 in local mode.",
        )?;
        let sync_duration = Histogram::with_opts(
            HistogramOpts::new(
                "cluster_sync_duration_seconds",
                "Duration of one cluster sync round trip to Redis.",
            )
            .buckets(SYNC_BUCKETS.to_vec()),
        )?;
        let sync_errors = IntCounter::new(
            "cluster_sync_errors_total",
            "Cluster syncs, connections and publications to Redis that failed.",
        )?;
        let deltas_dropped = IntCounter::new(
            "cluster_deltas_dropped_total",
            "Counter deltas not merged into Redis (outage buffer full, or window already ended).",
        )?;
        r.register(Box::new(connected.clone()))?;
        r.register(Box::new(sync_duration.clone()))?;
        r.register(Box::new(sync_errors.clone()))?;
        r.register(Box::new(deltas_dropped.clone()))?;
        Ok(ClusterMetrics {
            connected,
            sync_duration,
            sync_errors,
            deltas_dropped,
        })
    }
}
