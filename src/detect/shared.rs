//! `[cluster]` counters: what each replica adds to a tumbling window between two syncs.
//!
//! The engine keeps counting locally on the hot path (local mode needs its own counts, and
//! a lookup here is one more `DashMap` entry per counted rule, no I/O). When a [`Deltas`]
//! is attached, every tumbling count is also added to the delta of its `(key, window)`;
//! the cluster task drains them every `sync_interval`, merges them in Redis and decides
//! detections on the merged totals. While [`Deltas::is_shared`] is on (connected), the
//! engine emits no tumbling `detection` or `window_summary` of its own: the merged ones
//! replace them, written once cluster-wide. Pure: no I/O, no tokio.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;

use super::window::WindowKey;

/// Pending `(key, window)` deltas at most: what an outage can accumulate before further
/// deltas are dropped (and counted).
pub(crate) const MAX_PENDING: usize = 100_000;

/// What one replica counted in one window of one key since the last sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delta {
    /// Requests counted.
    pub(crate) count: u64,
    /// Sum of their latencies, nanoseconds.
    pub(crate) sum_ns: u64,
    /// Largest latency, nanoseconds.
    pub(crate) max_ns: u64,
    /// Bytes counted.
    pub(crate) bytes: u64,
    /// The method of the window's first request here (the event's `http_method`).
    pub(crate) method: u8,
    /// The normalised path text of keys grouped by path.
    pub(crate) path: Option<String>,
    /// This replica already wrote the window's detection in local mode (an outage): when
    /// the merge decides it again, it is not written twice.
    pub(crate) fired_locally: bool,
}

/// The deltas of every tumbling `(key, window start)` since the last drain.
#[derive(Debug)]
pub(crate) struct Deltas {
    map: DashMap<(WindowKey, u32), Delta, foldhash::fast::RandomState>,
    shared: AtomicBool,
    dropped: AtomicU64,
    cap: usize,
}

impl Default for Deltas {
    fn default() -> Self {
        Deltas::with_cap(MAX_PENDING)
    }
}

impl Deltas {
    /// Holding at most `cap` pending windows.
    pub(crate) fn with_cap(cap: usize) -> Deltas {
        Deltas {
            map: DashMap::default(),
            shared: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            cap,
        }
    }

    /// Whether detections are decided on merged totals now (connected to Redis).
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Acquire)
    }

    /// Switches between shared (connected) and local decisions.
    pub(crate) fn set_shared(&self, on: bool) {
        self.shared.store(on, Ordering::Release);
    }

    /// Adds one request to the delta of `key`'s window starting at `start`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &self,
        key: WindowKey,
        start: u32,
        latency_ns: u64,
        bytes: u64,
        method: u8,
        fired_locally: bool,
        path: impl FnOnce() -> Option<String>,
    ) {
        if let Some(mut d) = self.map.get_mut(&(key, start)) {
            d.count = d.count.saturating_add(1);
            d.sum_ns = d.sum_ns.saturating_add(latency_ns);
            d.max_ns = d.max_ns.max(latency_ns);
            d.bytes = d.bytes.saturating_add(bytes);
            d.fired_locally |= fired_locally;
            return;
        }
        if self.map.len() >= self.cap {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.map
            .entry((key, start))
            .and_modify(|d| {
                d.count = d.count.saturating_add(1);
                d.sum_ns = d.sum_ns.saturating_add(latency_ns);
                d.max_ns = d.max_ns.max(latency_ns);
                d.bytes = d.bytes.saturating_add(bytes);
                d.fired_locally |= fired_locally;
            })
            .or_insert_with(|| Delta {
                count: 1,
                sum_ns: latency_ns,
                max_ns: latency_ns,
                bytes,
                method,
                path: path(),
                fired_locally,
            });
    }

    /// Takes every pending delta (the sync sends them).
    pub(crate) fn drain(&self) -> Vec<((WindowKey, u32), Delta)> {
        let keys: Vec<(WindowKey, u32)> = self.map.iter().map(|e| *e.key()).collect();
        keys.into_iter()
            .filter_map(|k| self.map.remove(&k))
            .collect()
    }

    /// Puts deltas back after a failed sync, merged with what was counted meanwhile; past
    /// the cap they are dropped (counted).
    pub(crate) fn restore(&self, items: Vec<((WindowKey, u32), Delta)>) {
        for (k, d) in items {
            if let Some(mut cur) = self.map.get_mut(&k) {
                cur.count = cur.count.saturating_add(d.count);
                cur.sum_ns = cur.sum_ns.saturating_add(d.sum_ns);
                cur.max_ns = cur.max_ns.max(d.max_ns);
                cur.bytes = cur.bytes.saturating_add(d.bytes);
                cur.fired_locally |= d.fired_locally;
                continue;
            }
            if self.map.len() >= self.cap {
                self.dropped.fetch_add(d.count, Ordering::Relaxed);
                continue;
            }
            self.map.insert(k, d);
        }
    }

    /// Requests dropped since the last call (for `cluster_deltas_dropped_total`).
    pub(crate) fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Pending windows.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::SourceKey;

    fn key(n: u8) -> WindowKey {
        WindowKey::new(0, SourceKey::new([10, 0, 0, n].into(), 64), 0)
    }

    #[test]
    fn deltas_sum_drain_restore_and_cap() {
        let d = Deltas::with_cap(2);
        d.add(key(1), 60, 5, 10, 1, false, || None);
        d.add(key(1), 60, 9, 1, 2, true, || None);
        d.add(key(2), 60, 1, 0, 1, false, || Some("/api/x".into()));
        d.add(key(3), 60, 1, 0, 1, false, || None);
        assert_eq!(d.take_dropped(), 1);
        let mut all = d.drain();
        all.sort_by_key(|((k, _), _)| k.src.network());
        assert_eq!(d.len(), 0);
        assert_eq!(
            all[0].1,
            Delta {
                count: 2,
                sum_ns: 14,
                max_ns: 9,
                bytes: 11,
                method: 1,
                path: None,
                fired_locally: true
            }
        );
        assert_eq!(all[1].1.path.as_deref(), Some("/api/x"));
        d.add(key(1), 60, 1, 0, 1, false, || None);
        d.restore(all);
        let again = d.drain();
        let one = again.iter().find(|((k, _), _)| *k == key(1)).unwrap();
        assert_eq!(one.1.count, 3);
        assert_eq!(again.len(), 2);
    }
}
