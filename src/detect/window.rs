//! Per-key window state: compact, fixed-size, no heap. The map key and tumbling state live
//! here; the sliding state is in [`super::sliding`].
//!
//! Times are stored as `u32` epoch seconds (valid until 2106) to keep a tumbling entry at
//! 64 bytes including its key; sums and maxima are kept in nanoseconds (tumbling) so the
//! rounded averages match what Splunk computes from Ollama's nanosecond latencies. The
//! maximum latency and the byte total are 48-bit (saturating at 78 hours and 256 TiB), the
//! latency sum 64-bit, all 4-aligned, so the state is 36 bytes.

use super::source::SourceKey;

/// The map key: which rule, which source, which path (a keyed 64-bit hash of the normalised
/// path; 0 for rules grouped by source only). Fixed-size and `Copy`, so lookups never
/// allocate.
///
/// The hash is held as two `u32` halves so the key is 28 bytes aligned to 4 rather than 32
/// aligned to 8: the 44-byte sliding state then packs into a 72-byte entry. (A tumbling
/// entry is 64 bytes either way, its state being 8-aligned.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowKey {
    path: [u32; 2],
    pub(crate) src: SourceKey,
    pub(crate) rule: u16,
}

impl WindowKey {
    /// The key of rule index `rule`, source `src` and path hash `path`.
    pub(crate) fn new(path: u64, src: SourceKey, rule: u16) -> WindowKey {
        let [a, b, c, d, e, f, g, h] = path.to_le_bytes();
        WindowKey {
            path: [
                u32::from_le_bytes([a, b, c, d]),
                u32::from_le_bytes([e, f, g, h]),
            ],
            src,
            rule,
        }
    }

    /// The path hash ([`NO_PATH`](super::paths::NO_PATH) for rules grouped by source).
    pub(crate) fn path(&self) -> u64 {
        u64::from(self.path[0]) | u64::from(self.path[1]) << 32
    }

    /// The same source and path under another rule index (hot reload).
    pub(crate) fn with_rule(self, rule: u16) -> WindowKey {
        WindowKey { rule, ..self }
    }
}

/// Four words instead of the derived field-by-field (and byte-slice) hashing: the hash is
/// a large share of a map lookup, and the engine looks up one key per rule and request.
impl std::hash::Hash for WindowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [lo, hi, tail] = self.src.words();
        state.write_u64(self.path());
        state.write_u64(lo);
        state.write_u64(hi);
        state.write_u64(tail | u64::from(self.rule) << 32);
    }
}

/// The figures of one window, ready to become an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) start_ms: i64,
    pub(crate) end_ms: i64,
    pub(crate) count: u64,
    /// Bytes counted (volume rules; 0 for count rules).
    pub(crate) bytes: u64,
    pub(crate) avg_secs: f64,
    pub(crate) max_secs: f64,
    pub(crate) method: u8,
}

/// What adding a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    /// Counted; nothing to report.
    Counted,
    /// Counted, and the key just reached the threshold: report a detection.
    Crossed,
    /// Older than the key's current window: not counted.
    Late,
}

/// A 48-bit count in three 16-bit words, saturating: 6 bytes, 2-aligned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct U48([u16; 3]);

impl U48 {
    const MAX: u64 = (1 << 48) - 1;

    fn get(self) -> u64 {
        let [a, b, c] = self.0;
        u64::from(a) | u64::from(b) << 16 | u64::from(c) << 32
    }

    fn new(v: u64) -> U48 {
        let v = v.min(U48::MAX);
        U48([v as u16, (v >> 16) as u16, (v >> 32) as u16])
    }
}

/// A `u64` as two `u32` halves: 4-aligned, so it packs after the key's 28 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct U64x2([u32; 2]);

impl U64x2 {
    fn get(self) -> u64 {
        u64::from(self.0[0]) | u64::from(self.0[1]) << 32
    }

    fn new(v: u64) -> U64x2 {
        U64x2([v as u32, (v >> 32) as u32])
    }
}

/// Largest byte total a tumbling key holds (48-bit, 256 TiB), hence the largest tumbling
/// `threshold_bytes`.
pub(crate) const MAX_TUMBLING_BYTES: u64 = U48::MAX;

/// State of one tumbling-window key (36 bytes, 4-aligned: a 64-byte map entry with its
/// 28-byte key). `bytes` is summed for every rule (one add) but only volume rules compare
/// it with their threshold and report it; keeping one state type for both keeps one map
/// and one sweep. The maximum latency saturates at 2^48 ns (78 hours) and the byte total
/// at 2^48 bytes (validation keeps tumbling `threshold_bytes` at or below that, so
/// saturation cannot hide a crossing); the latency sum is a full 64-bit count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tumbling {
    pub(crate) window_start: u32,
    last_seen: u32,
    count: u32,
    sum_ns: U64x2,
    max_ns: U48,
    bytes: U48,
    method: u8,
    pub(crate) flagged: bool,
}

impl Tumbling {
    /// An empty window starting at `window_start` (epoch seconds).
    pub(crate) fn new(window_start: u32, method: u8) -> Tumbling {
        Tumbling {
            window_start,
            last_seen: window_start,
            count: 0,
            method,
            flagged: false,
            sum_ns: U64x2::default(),
            max_ns: U48::default(),
            bytes: U48::default(),
        }
    }

    /// Counts a request of `bytes` that belongs to `window_start`; returns
    /// [`Added::Crossed`] the first time the count (the byte total when `by_bytes`) reaches
    /// `threshold` in this window.
    pub(crate) fn add(
        &mut self,
        window_start: u32,
        now: u32,
        latency_ns: u64,
        (bytes, by_bytes): (u64, bool),
        threshold: u64,
    ) -> Added {
        if window_start < self.window_start {
            return Added::Late;
        }
        self.count = self.count.saturating_add(1);
        self.bytes = U48::new(self.bytes.get().saturating_add(bytes));
        let value = if by_bytes {
            self.bytes.get()
        } else {
            u64::from(self.count)
        };
        self.count_latency(latency_ns);
        self.last_seen = self.last_seen.max(now);
        if !self.flagged && value >= threshold {
            self.flagged = true;
            return Added::Crossed;
        }
        Added::Counted
    }

    /// A window flagged by a request still running (in-flight detection): no completed
    /// request counted yet, so its summary stays exact when the request later completes.
    pub(crate) fn flagged_in_flight(window_start: u32, now: u32, method: u8) -> Tumbling {
        Tumbling {
            last_seen: now.max(window_start),
            flagged: true,
            ..Tumbling::new(window_start, method)
        }
    }

    /// Completed requests counted in the window.
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// The window's figures as if a running request of `latency_ns` were counted too: what
    /// an in-flight detection reports (the state itself is left alone).
    pub(crate) fn snapshot_with(&self, window_secs: u32, latency_ns: u64) -> Snapshot {
        let mut with = *self;
        with.count = with.count.saturating_add(1);
        with.count_latency(latency_ns);
        with.snapshot(window_secs)
    }

    fn count_latency(&mut self, latency_ns: u64) {
        self.sum_ns = U64x2::new(self.sum_ns.get().saturating_add(latency_ns));
        self.max_ns = U48::new(self.max_ns.get().max(latency_ns));
    }

    /// Epoch seconds of the last qualifying request (eviction ranks keys by it).
    pub(crate) fn last_seen(&self) -> u32 {
        self.last_seen
    }

    /// Exclusive end of the window, in epoch seconds.
    pub(crate) fn window_end(&self, window_secs: u32) -> u64 {
        u64::from(self.window_start) + u64::from(window_secs)
    }

    /// The window's figures.
    pub(crate) fn snapshot(&self, window_secs: u32) -> Snapshot {
        let count = u64::from(self.count.max(1));
        Snapshot {
            start_ms: i64::from(self.window_start) * 1000,
            end_ms: (i64::from(self.window_start) + i64::from(window_secs)) * 1000,
            count: u64::from(self.count),
            bytes: self.bytes.get(),
            avg_secs: self.sum_ns.get() as f64 / count as f64 / 1e9,
            max_secs: self.max_ns.get() as f64 / 1e9,
            method: self.method,
        }
    }
}

/// `floor(secs / window) * window`, like SPL `bin span=window`.
pub(crate) fn align(secs: u32, window_secs: u32) -> u32 {
    secs - secs % window_secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_fields_keep_their_values_and_saturate_at_their_width() {
        let mut st = Tumbling::new(600, 2);
        let big = 5_000_000_000_000u64; // past 32 bits
        assert_eq!(st.add(600, 601, big, (big, true), u64::MAX), Added::Counted);
        assert_eq!(
            st.add(600, 602, u64::MAX, (1, true), u64::MAX),
            Added::Counted
        );
        let snap = st.snapshot(60);
        assert_eq!((snap.count, snap.bytes), (2, big + 1));
        // The sum is 64-bit (saturating at u64::MAX), the maximum 48-bit.
        assert_eq!(snap.avg_secs, u64::MAX as f64 / 2.0 / 1e9);
        assert_eq!(snap.max_secs, ((1u64 << 48) - 1) as f64 / 1e9);
        st.add(600, 603, 1, (u64::MAX, true), u64::MAX);
        assert_eq!(st.snapshot(60).bytes, MAX_TUMBLING_BYTES);
        assert_eq!(st.last_seen(), 603);
    }

    #[test]
    fn a_byte_threshold_at_the_widest_value_is_reached() {
        let mut st = Tumbling::new(0, 0);
        assert_eq!(
            st.add(0, 0, 7, (MAX_TUMBLING_BYTES - 1, true), MAX_TUMBLING_BYTES),
            Added::Counted
        );
        assert_eq!(
            st.add(0, 0, 7, (1, true), MAX_TUMBLING_BYTES),
            Added::Crossed
        );
        assert_eq!(st.snapshot(60).max_secs, 7e-9);
    }
}
