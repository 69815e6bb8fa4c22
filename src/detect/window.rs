//! Per-key window state: compact, fixed-size, no heap.
//!
//! Times are stored as `u32` epoch seconds (valid until 2106) to keep a tumbling entry at
//! 64 bytes including its key; sums and maxima are kept in nanoseconds (tumbling) so the
//! rounded averages match what Splunk computes from Ollama's nanosecond latencies.
//!
//! Sliding windows are approximated by a ring of [`SUB_BUCKETS`] sub-buckets of
//! `window / 15` each, so a request is counted for between 14/15 and the whole window after
//! it happened (error ≤ 1/15 of the window). Sliding sums and maxima are in milliseconds.

use super::source::SourceKey;

/// Number of sub-buckets of a sliding window.
pub(crate) const SUB_BUCKETS: u32 = 15;

/// The map key: which rule, which source, which path (a keyed 64-bit hash of the normalised
/// path; 0 for rules grouped by source only). Fixed-size and `Copy`, so lookups never
/// allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct WindowKey {
    pub(crate) path: u64,
    pub(crate) src: SourceKey,
    pub(crate) rule: u16,
}

/// The figures of one window, ready to become an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) start_ms: i64,
    pub(crate) end_ms: i64,
    pub(crate) count: u64,
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

/// Anything the eviction pass can rank by recency.
pub(crate) trait Recency {
    /// Epoch seconds of the last qualifying request.
    fn last_seen(&self) -> u32;
}

/// State of one tumbling-window key (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tumbling {
    pub(crate) window_start: u32,
    last_seen: u32,
    count: u32,
    method: u8,
    pub(crate) flagged: bool,
    sum_ns: u64,
    max_ns: u64,
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
        }
    }

    /// Counts a request that belongs to `window_start`; returns [`Added::Crossed`] the first
    /// time the count reaches `threshold` in this window.
    pub(crate) fn add(
        &mut self,
        window_start: u32,
        now: u32,
        latency_ns: u64,
        threshold: u64,
    ) -> Added {
        if window_start < self.window_start {
            return Added::Late;
        }
        self.count = self.count.saturating_add(1);
        self.sum_ns = self.sum_ns.saturating_add(latency_ns);
        self.max_ns = self.max_ns.max(latency_ns);
        self.last_seen = self.last_seen.max(now);
        if !self.flagged && u64::from(self.count) >= threshold {
            self.flagged = true;
            return Added::Crossed;
        }
        Added::Counted
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
            avg_secs: self.sum_ns as f64 / count as f64 / 1e9,
            max_secs: self.max_ns as f64 / 1e9,
            method: self.method,
        }
    }
}

impl Recency for Tumbling {
    fn last_seen(&self) -> u32 {
        self.last_seen
    }
}

/// One sliding sub-bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    count: u32,
    sum_ms: u32,
    max_ms: u32,
}

/// State of one sliding-window key: the ring, plus the figures of the current flagged
/// episode (from the window in which the threshold was reached until the count falls back
/// below it), which become the `window_summary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sliding {
    /// Index (`epoch_ms / sub_ms`) of the newest sub-bucket.
    head: u32,
    last_seen: u32,
    episode_start: u32,
    episode_count: u32,
    episode_max_ms: u32,
    method: u8,
    pub(crate) flagged: bool,
    episode_sum_ms: u64,
    buckets: [Bucket; SUB_BUCKETS as usize],
}

impl Sliding {
    /// An empty ring whose newest sub-bucket is `head`.
    pub(crate) fn new(head: u32, now: u32, method: u8) -> Sliding {
        Sliding {
            head,
            last_seen: now,
            episode_start: 0,
            episode_count: 0,
            episode_max_ms: 0,
            method,
            flagged: false,
            episode_sum_ms: 0,
            buckets: [Bucket::default(); SUB_BUCKETS as usize],
        }
    }

    /// Requests in the ring.
    pub(crate) fn total(&self) -> u64 {
        self.buckets.iter().map(|b| u64::from(b.count)).sum()
    }

    /// Moves the newest sub-bucket forward to `to`, expiring old ones. When a flagged key
    /// falls below `threshold` on the way, it is unflagged and the sub-bucket index at which
    /// that happened is returned (the episode's end).
    pub(crate) fn advance(&mut self, to: u32, threshold: u64) -> Option<u32> {
        if to <= self.head {
            return None;
        }
        let mut ended = None;
        for idx in self.head + 1..=to.min(self.head.saturating_add(SUB_BUCKETS)) {
            self.buckets[(idx % SUB_BUCKETS) as usize] = Bucket::default();
            if self.flagged && self.total() < threshold {
                self.flagged = false;
                ended = Some(idx);
            }
        }
        self.head = to;
        ended
    }

    /// Counts a request in sub-bucket `idx` (call [`Sliding::advance`] first when `idx` is
    /// newer than the head); [`Added::Crossed`] when the ring reaches `threshold` while the
    /// key is not flagged.
    pub(crate) fn add(&mut self, idx: u32, now: u32, latency_ms: u32, threshold: u64) -> Added {
        if idx > self.head || self.head - idx >= SUB_BUCKETS {
            return Added::Late;
        }
        let b = &mut self.buckets[(idx % SUB_BUCKETS) as usize];
        b.count = b.count.saturating_add(1);
        b.sum_ms = b.sum_ms.saturating_add(latency_ms);
        b.max_ms = b.max_ms.max(latency_ms);
        self.last_seen = self.last_seen.max(now);
        if self.flagged {
            self.episode_count = self.episode_count.saturating_add(1);
            self.episode_sum_ms = self.episode_sum_ms.saturating_add(u64::from(latency_ms));
            self.episode_max_ms = self.episode_max_ms.max(latency_ms);
            return Added::Counted;
        }
        if self.total() < threshold {
            return Added::Counted;
        }
        self.flagged = true;
        self.episode_start = self.head.saturating_sub(SUB_BUCKETS - 1);
        self.episode_count = self.buckets.iter().map(|b| b.count).sum();
        self.episode_sum_ms = self.buckets.iter().map(|b| u64::from(b.sum_ms)).sum();
        self.episode_max_ms = self.buckets.iter().map(|b| b.max_ms).max().unwrap_or(0);
        Added::Crossed
    }

    /// The current window (the ring), for a detection.
    pub(crate) fn window_snapshot(&self, sub_ms: u64) -> Snapshot {
        let count = self.total();
        let sum_ms: u64 = self.buckets.iter().map(|b| u64::from(b.sum_ms)).sum();
        let max_ms = self.buckets.iter().map(|b| b.max_ms).max().unwrap_or(0);
        let start = self.head.saturating_sub(SUB_BUCKETS - 1);
        self.snapshot(start, self.head + 1, sub_ms, (count, sum_ms, max_ms))
    }

    /// The flagged episode that ended at sub-bucket `end`, for a window summary.
    pub(crate) fn episode_snapshot(&self, end: u32, sub_ms: u64) -> Snapshot {
        let figures = (
            u64::from(self.episode_count),
            self.episode_sum_ms,
            self.episode_max_ms,
        );
        self.snapshot(self.episode_start, end, sub_ms, figures)
    }

    fn snapshot(
        &self,
        start: u32,
        end: u32,
        sub_ms: u64,
        (count, sum_ms, max_ms): (u64, u64, u32),
    ) -> Snapshot {
        let at = |idx: u32| i64::try_from(u64::from(idx) * sub_ms).unwrap_or(i64::MAX);
        Snapshot {
            start_ms: at(start),
            end_ms: at(end),
            count,
            avg_secs: sum_ms as f64 / count.max(1) as f64 / 1e3,
            max_secs: f64::from(max_ms) / 1e3,
            method: self.method,
        }
    }

    /// The newest sub-bucket index.
    pub(crate) fn head(&self) -> u32 {
        self.head
    }
}

impl Recency for Sliding {
    fn last_seen(&self) -> u32 {
        self.last_seen
    }
}

/// `floor(secs / window) * window`, like SPL `bin span=window`.
pub(crate) fn align(secs: u32, window_secs: u32) -> u32 {
    secs - secs % window_secs.max(1)
}
