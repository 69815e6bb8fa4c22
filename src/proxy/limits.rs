//! Connection limits: the proxy never accepts more connections than its file descriptors can
//! carry, no single address can take all of them, and what is turned away is answered and
//! counted.
//!
//! - `max_connections` (0 = derived): each proxied connection can need two descriptors (the
//!   client's and, while a request runs, an upstream one), and the admin listener, the logs,
//!   the state files and the connections being turned away need a reserve of their own. So
//!   the derived limit is `(RLIMIT_NOFILE - RESERVE_FDS) / 2`, after raising the soft limit to
//!   the hard one as nginx's `worker_rlimit_nofile` and Go's runtime do. The admin listener
//!   lives in the reserve, so `/metrics`, `/healthz` and `/api/bans` answer while the proxy
//!   port is saturated.
//! - `max_connections_per_source` (0 = off) counts connections per socket peer. Trusted
//!   proxies are exempt: every client behind one shares its address.
//! - A connection over a limit gets `503` with `Retry-After: 1` and `Connection: close`,
//!   written without reading the request, then the connection is closed after a short drain
//!   (so the client reads the answer instead of a reset). At most [`MAX_REJECTING`] such
//!   answers are in progress at once; beyond that a connection is closed at once.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ipnet::IpNet;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Descriptors kept back from the proxy: admin listener and its connections, logs, state
/// files, listeners, the runtime's own, and the connections being turned away.
pub(crate) const RESERVE_FDS: u64 = 192;
/// Connections being answered `503` at once, at most.
pub(crate) const MAX_REJECTING: usize = 64;
/// The smallest derived limit, for tiny descriptor limits.
const MIN_DERIVED: usize = 16;

const REJECT_BODY: &str = r#"{"error":"ollama-guard: too many connections, retry later"}"#;

/// Raises the soft descriptor limit to the hard one and derives `max_connections` from it.
pub(crate) fn derived_max_connections() -> (usize, u64) {
    let soft = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024);
    let max = usize::try_from(soft.saturating_sub(RESERVE_FDS) / 2).unwrap_or(usize::MAX);
    (max.max(MIN_DERIVED), soft)
}

/// Why a connection was turned away (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// `max_connections` reached.
    Total,
    /// `max_connections_per_source` reached for this peer.
    PerSource,
}

impl Rejection {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Rejection::Total => "max_connections",
            Rejection::PerSource => "per_source",
        }
    }
}

/// The limits shared by every worker.
pub(crate) struct ConnLimits {
    max: usize,
    per_source: usize,
    v6_prefix: u8,
    open: AtomicUsize,
    by_source: DashMap<IpAddr, usize>,
    rejecting: Arc<Semaphore>,
    /// The proxy's metrics (none for the admin listener's limits).
    gauge: Option<IntGauge>,
    rejected_total: Option<IntCounter>,
    rejected_per_source: Option<IntCounter>,
}

/// One open connection's share of the limits; released on drop.
pub(crate) struct ConnPermit {
    limits: Arc<ConnLimits>,
    source: Option<IpAddr>,
}

impl ConnLimits {
    /// Limits of `max` connections in all and `per_source` per peer (0 = off); IPv6 peers
    /// count per `v6_prefix` network, since one host can hold a whole /64.
    pub(crate) fn new(
        max: usize,
        per_source: usize,
        v6_prefix: u8,
        metrics: &crate::telemetry::Metrics,
    ) -> Arc<Self> {
        let rejected = |r: Rejection| metrics.connections_rejected.with_label_values(&[r.label()]);
        Arc::new(ConnLimits {
            gauge: Some(metrics.open_connections.clone()),
            rejected_total: Some(rejected(Rejection::Total)),
            rejected_per_source: Some(rejected(Rejection::PerSource)),
            ..Self::limits(max, per_source, v6_prefix)
        })
    }

    /// Limits like [`new`](Self::new)'s that count in no metric of the proxy's (the admin
    /// listener's).
    pub(crate) fn unmetered(max: usize, per_source: usize, v6_prefix: u8) -> Arc<Self> {
        Arc::new(Self::limits(max, per_source, v6_prefix))
    }

    fn limits(max: usize, per_source: usize, v6_prefix: u8) -> Self {
        ConnLimits {
            max: max.max(1),
            per_source,
            v6_prefix,
            open: AtomicUsize::new(0),
            by_source: DashMap::new(),
            rejecting: Arc::new(Semaphore::new(MAX_REJECTING)),
            gauge: None,
            rejected_total: None,
            rejected_per_source: None,
        }
    }

    /// Admits a connection from `peer`, unless a limit is reached; `exempt` skips the
    /// per-source limit (trusted proxies).
    pub(crate) fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
        exempt: bool,
    ) -> Result<ConnPermit, Rejection> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.rejected_total.iter().for_each(IntCounter::inc);
            return Err(Rejection::Total);
        }
        let source = if self.per_source > 0 && !exempt {
            let peer = match peer {
                IpAddr::V6(v6) if crate::ip::is_own_source_v6(v6) => peer,
                IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, self.v6_prefix)
                    .map_or(peer, |n| IpAddr::V6(n.network())),
                v4 => v4,
            };
            let mut n = self.by_source.entry(peer).or_insert(0);
            if *n >= self.per_source {
                drop(n);
                self.open.fetch_sub(1, Ordering::AcqRel);
                self.rejected_per_source.iter().for_each(IntCounter::inc);
                return Err(Rejection::PerSource);
            }
            *n += 1;
            Some(peer)
        } else {
            None
        };
        self.gauge.iter().for_each(IntGauge::inc);
        Ok(ConnPermit {
            limits: self.clone(),
            source,
        })
    }

    /// Answers a turned-away connection with `503` off the accept loop, or closes it at once
    /// when too many such answers are already in progress.
    pub(crate) fn reject(&self, stream: TcpStream) {
        let Ok(permit) = self.rejecting.clone().try_acquire_owned() else {
            drop(stream);
            return;
        };
        tokio::spawn(async move {
            answer_503(stream).await;
            drop(permit);
        });
    }
}

async fn answer_503(mut stream: TcpStream) {
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{REJECT_BODY}",
        REJECT_BODY.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.shutdown().await?;
        // Drain what the client sent, briefly, so closing does not reset the connection
        // before the client has read the answer.
        let mut buf = [0u8; 4096];
        while stream.read(&mut buf).await? > 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), write).await;
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let l = &self.limits;
        if let Some(src) = self.source {
            // Remove the entry when it reaches zero, so the map holds only open sources.
            l.by_source.remove_if_mut(&src, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
        l.open.fetch_sub(1, Ordering::AcqRel);
        l.gauge.iter().for_each(IntGauge::dec);
    }
}

/// Whether `ip` is one of `trusted` (exempt from the per-source limit).
pub(crate) fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_source: usize) -> (Arc<ConnLimits>, crate::telemetry::Metrics) {
        let m = crate::telemetry::Metrics::new(&[]).unwrap();
        (ConnLimits::new(max, per_source, 64, &m), m)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn total_limit_admits_up_to_max_and_frees_on_drop() {
        let (l, m) = limits(2, 0);
        let a = l.admit(ip("192.0.2.1"), false).unwrap();
        let _b = l.admit(ip("192.0.2.2"), false).unwrap();
        assert_eq!(
            l.admit(ip("192.0.2.3"), false).err(),
            Some(Rejection::Total)
        );
        assert_eq!(m.open_connections.get(), 2);
        drop(a);
        assert_eq!(m.open_connections.get(), 1);
        assert!(l.admit(ip("192.0.2.3"), false).is_ok());
        let rejected = m
            .connections_rejected
            .with_label_values(&["max_connections"]);
        assert_eq!(rejected.get(), 1);
    }

    #[test]
    fn per_source_limit_binds_one_address_but_not_others_or_exempt_peers() {
        let (l, m) = limits(100, 2);
        let held: Vec<_> = (0..2)
            .map(|_| l.admit(ip("192.0.2.1"), false).unwrap())
            .collect();
        assert_eq!(
            l.admit(ip("192.0.2.1"), false).err(),
            Some(Rejection::PerSource)
        );
        assert!(l.admit(ip("192.0.2.2"), false).is_ok());
        let _v6: Vec<_> = ["2001:db8::1", "2001:db8::2"]
            .iter()
            .map(|a| l.admit(ip(a), false).unwrap())
            .collect();
        assert_eq!(
            l.admit(ip("2001:db8::ffff"), false).err(),
            Some(Rejection::PerSource),
            "one /64 is one source"
        );
        assert!(l.admit(ip("2001:db8:0:1::1"), false).is_ok());
        let proxy: Vec<_> = (0..5)
            .map(|_| l.admit(ip("10.0.0.1"), true).unwrap())
            .collect();
        assert_eq!(proxy.len(), 5);
        drop(held);
        assert!(
            l.by_source.get(&ip("192.0.2.1")).is_none(),
            "entry removed at zero"
        );
        assert!(l.admit(ip("192.0.2.1"), false).is_ok());
        assert_eq!(
            m.connections_rejected
                .with_label_values(&["per_source"])
                .get(),
            2
        );
    }

    #[test]
    fn derived_limit_leaves_the_reserve_and_two_descriptors_per_connection() {
        let (max, soft) = derived_max_connections();
        let expected = usize::try_from(soft.saturating_sub(RESERVE_FDS) / 2).unwrap();
        assert_eq!(max, expected.max(MIN_DERIVED));
    }
}
