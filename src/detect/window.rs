//! Per-key window state: compact, fixed-size, no heap. The map key and tumbling state live
//! here; the sliding state is in [`super::sliding`].
//!
//! Times are stored as `u32` epoch seconds (valid until 2106) to keep a tumbling entry at
//! 64 bytes including its key; sums and maxima are kept in nanoseconds (tumbling) so the
//! rounded averages match what Splunk computes from Ollama's nanosecond latencies.

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

/// State of one tumbling-window key (40 bytes: a 72-byte map entry). `bytes` is summed for
/// every rule (one add) but only volume rules compare it with their threshold and report it;
/// keeping one state type for both keeps one map and one sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tumbling {
    pub(crate) window_start: u32,
    last_seen: u32,
    count: u32,
    method: u8,
    pub(crate) flagged: bool,
    sum_ns: u64,
    max_ns: u64,
    bytes: u64,
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
            sum_ns: 0,
            max_ns: 0,
            bytes: 0,
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
        self.bytes = self.bytes.saturating_add(bytes);
        let value = if by_bytes {
            self.bytes
        } else {
            u64::from(self.count)
        };
        self.sum_ns = self.sum_ns.saturating_add(latency_ns);
        self.max_ns = self.max_ns.max(latency_ns);
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
        with.sum_ns = with.sum_ns.saturating_add(latency_ns);
        with.max_ns = with.max_ns.max(latency_ns);
        with.snapshot(window_secs)
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
            bytes: self.bytes,
            avg_secs: self.sum_ns as f64 / count as f64 / 1e9,
            max_secs: self.max_ns as f64 / 1e9,
            method: self.method,
        }
    }
}

/// `floor(secs / window) * window`, like SPL `bin span=window`.
pub(crate) fn align(secs: u32, window_secs: u32) -> u32 {
    secs - secs % window_secs.max(1)
}
