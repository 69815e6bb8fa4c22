//! Sliding-window state: 44 bytes per key (a 72-byte map entry with its 28-byte key) for
//! count rules; volume rules (`metric = "bytes_*"`) hold 32-bit byte totals per sub-bucket
//! instead ([`ByteRing`], a 128-byte entry), in a map of their own.
//!
//! # Counting
//! A sliding window is approximated by a ring of [`SUB_BUCKETS`] sub-buckets of
//! `window / 15` each, so a request is counted for between 14/15 and the whole window after
//! it happened (error ≤ 1/15 of the window). Sub-bucket counts are 12-bit and saturate at
//! [`MAX_SUB_COUNT`] (4095); validation caps sliding thresholds at that value, so one saturated
//! sub-bucket already holds the key at or above its threshold: saturation can neither hide a
//! crossing nor end an episode early. Below threshold no sub-bucket can be saturated, so the
//! window count a detection reports is exact.
//!
//! # Latency figures: the run
//! Per-sub-bucket latency sums and maxima (12 bytes × 15, what made a sliding entry 248
//! bytes) do not fit the budget, so latency is summarised once per key, over its *run*: the
//! requests since the key's window was last empty (in practice its first request, empty keys
//! being forgotten) or since its last episode ended. The run holds its first sub-bucket,
//! its request count (exact, `u32`), its latency sum and its maximum (milliseconds, as
//! before). The sum is a `u32` in units of 2^`scale` ms: when it would overflow (49 days of
//! summed latency) the unit doubles, so it never saturates silently; the relative error of the
//! average stays below `count / 2^32`.
//!
//! What the events say:
//! - `detection`: window = the sliding window that reached the threshold, `count` = its
//!   (exact) count; avg/max = the run so far. For a burst after a quiet window (the usual
//!   attack) the run *is* the window, as the old per-sub-bucket figures were. A key that
//!   kept trickling without one quiet window before its burst adds those earlier requests;
//!   a key crossing again soon after an episode ended leaves out the requests of the window
//!   that the ended episode's summary already reported.
//! - `window_summary`: `window_start` = the earlier of the run's first sub-bucket and the
//!   start of the window that crossed, `window_end` = where the episode ended; `count`,
//!   avg and max are those of the run — every request of that span not already reported in
//!   an earlier summary of the key, none twice.
//!
//! # Layout
//! `slots` packs sixteen 12-bit fields in 24 bytes: slot `i % 15` counts sub-bucket `i`,
//! slot 15 holds the flag (bit 0), the method code (bits 1–3) and the sum's scale (bits
//! 4–7). Then five `u32`: the newest sub-bucket, and the run's start, count, sum and max.

use super::window::{Added, Snapshot};
use crate::record::Method;

/// Number of sub-buckets of a sliding window.
pub(crate) const SUB_BUCKETS: u32 = 15;

/// Largest count a sub-bucket holds (12 bits), hence the largest sliding threshold.
pub(crate) const MAX_SUB_COUNT: u16 = 0x0FFF;

/// The slot that holds flag, method and scale.
const META: usize = SUB_BUCKETS as usize;
const FLAGGED: (u16, u16) = (0, 0b1);
const METHOD: (u16, u16) = (1, 0b111);
const SCALE: (u16, u16) = (4, 0b1111);

const _: () = assert!(Method::ALL.len() <= 8, "method codes must fit 3 bits");

/// Sixteen 12-bit fields in 24 bytes, two per three bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Slots([u8; 24]);

impl Slots {
    fn get(&self, i: usize) -> u16 {
        let at = i / 2 * 3;
        let (lo, mid, hi) = (self.0[at], self.0[at + 1], self.0[at + 2]);
        if i % 2 == 0 {
            u16::from(lo) | u16::from(mid & 0x0F) << 8
        } else {
            u16::from(mid >> 4) | u16::from(hi) << 4
        }
    }

    /// Stores `v`, clamped to 12 bits.
    fn set(&mut self, i: usize, v: u16) {
        let [low, high] = v.min(MAX_SUB_COUNT).to_le_bytes();
        let at = i / 2 * 3;
        if i % 2 == 0 {
            self.0[at] = low;
            self.0[at + 1] = (self.0[at + 1] & 0xF0) | high;
        } else {
            self.0[at + 1] = (self.0[at + 1] & 0x0F) | low << 4;
            self.0[at + 2] = low >> 4 | high << 4;
        }
    }
}

/// What a sliding key's sub-buckets hold: request counts ([`Slots`], 12-bit) for count
/// rules, byte totals ([`ByteRing`], 32-bit) for volume rules. Each kind lives in its own
/// map, so count keys keep their compact entry and only volume keys pay for wider buckets.
pub(crate) trait Ring: Copy + Default + std::fmt::Debug + PartialEq + Send + Sync {
    /// Whether the ring counts bytes (the run then keeps its byte total too).
    const BYTES: bool;
    /// Sub-bucket `i` (0..15).
    fn amount(&self, i: usize) -> u64;
    /// Sets sub-bucket `i`, saturating at what it holds (4095 requests, 4 GiB); validation
    /// keeps thresholds at or below that, so a saturated sub-bucket alone holds the key at
    /// its threshold.
    fn set_amount(&mut self, i: usize, v: u64);
    /// The 12-bit meta field (flag, method, scale).
    fn meta_bits(&self) -> u16;
    /// Sets the meta field.
    fn set_meta_bits(&mut self, v: u16);
    /// Bytes of the current run (0 for count rings).
    fn run_bytes(&self) -> u64 {
        0
    }
    /// Sets the bytes of the current run (ignored by count rings).
    fn set_run_bytes(&mut self, _: u64) {}
}

impl Ring for Slots {
    const BYTES: bool = false;
    fn amount(&self, i: usize) -> u64 {
        u64::from(self.get(i))
    }
    fn set_amount(&mut self, i: usize, v: u64) {
        self.set(i, u16::try_from(v).unwrap_or(u16::MAX));
    }
    fn meta_bits(&self) -> u16 {
        self.get(META)
    }
    fn set_meta_bits(&mut self, v: u16) {
        self.set(META, v);
    }
}

/// Byte totals per sub-bucket for volume rules: exact bytes, saturating at 4 GiB per
/// sub-bucket (so a sliding volume threshold is at most `u32::MAX` bytes), and the run's byte
/// total. 72 bytes; a volume key's map entry is 128 bytes (see the `detect` module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ByteRing {
    subs: [u32; SUB_BUCKETS as usize],
    meta: u16,
    run_bytes: u64,
}

impl Ring for ByteRing {
    const BYTES: bool = true;
    fn amount(&self, i: usize) -> u64 {
        u64::from(self.subs[i])
    }
    fn set_amount(&mut self, i: usize, v: u64) {
        self.subs[i] = u32::try_from(v).unwrap_or(u32::MAX);
    }
    fn meta_bits(&self) -> u16 {
        self.meta
    }
    fn set_meta_bits(&mut self, v: u16) {
        self.meta = v & MAX_SUB_COUNT;
    }
    fn run_bytes(&self) -> u64 {
        self.run_bytes
    }
    fn set_run_bytes(&mut self, v: u64) {
        self.run_bytes = v;
    }
}

/// State of one sliding-window key: the ring of counts (or bytes) and the figures of the
/// current run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sliding<R = Slots> {
    slots: R,
    /// Index (`epoch_ms / sub_ms`) of the newest sub-bucket.
    head: u32,
    /// First sub-bucket of the run; once flagged, the start of the summary's span.
    start: u32,
    /// Requests in the run; 0 = the next request starts a new run.
    count: u32,
    /// Latency sum of the run, in units of 2^scale ms.
    sum: u32,
    max_ms: u32,
}

impl<R: Ring> Sliding<R> {
    /// An empty ring whose newest sub-bucket is `head`.
    pub(crate) fn new(head: u32) -> Sliding<R> {
        Sliding {
            slots: R::default(),
            head,
            start: head,
            count: 0,
            sum: 0,
            max_ms: 0,
        }
    }

    /// Requests (bytes, for a byte ring) in the ring.
    pub(crate) fn total(&self) -> u64 {
        (0..META).map(|i| self.slots.amount(i)).sum()
    }

    /// Whether the key is in a flagged episode (its detection has fired).
    pub(crate) fn flagged(&self) -> bool {
        self.meta(FLAGGED) != 0
    }

    /// The newest sub-bucket index.
    pub(crate) fn head(&self) -> u32 {
        self.head
    }

    /// The sub-bucket from which a tick can change this key: when its oldest counted request
    /// leaves the ring (a count can only fall then); holding none, the next sub-bucket if it
    /// is flagged (its episode ends there), else 0 (the next tick forgets it).
    pub(crate) fn next_change(&self) -> u32 {
        let oldest = (0..SUB_BUCKETS)
            .rev()
            .map(|back| self.head.saturating_sub(back))
            .find(|idx| self.slots.amount(slot(*idx)) > 0);
        match oldest {
            Some(idx) => idx.saturating_add(SUB_BUCKETS),
            None if self.flagged() => self.head.saturating_add(1),
            None => 0,
        }
    }

    /// Epoch seconds at the start of the newest sub-bucket holding a request: at most one
    /// sub-bucket earlier than the last request itself (eviction ranks keys by it).
    pub(crate) fn last_seen(&self, sub_ms: u64) -> u32 {
        let newest = (0..SUB_BUCKETS)
            .map(|back| self.head.saturating_sub(back))
            .find(|idx| self.slots.amount(slot(*idx)) > 0)
            .unwrap_or_else(|| self.window_start());
        u32::try_from(u64::from(newest) * sub_ms / 1000).unwrap_or(u32::MAX)
    }

    /// Moves the newest sub-bucket forward to `to`, expiring old ones. When a flagged key
    /// falls below `threshold` on the way, it is unflagged, the run's summary (ending at the
    /// sub-bucket where that happened) is returned, and the next request starts a new run.
    pub(crate) fn advance(&mut self, to: u32, threshold: u64, sub_ms: u64) -> Option<Snapshot> {
        if to <= self.head {
            return None;
        }
        let mut ended = None;
        for idx in self.head + 1..=to.min(self.head.saturating_add(SUB_BUCKETS)) {
            self.slots.set_amount(slot(idx), 0);
            if self.flagged() && self.total() < threshold {
                self.set_meta(FLAGGED, 0);
                ended = Some(idx);
            }
        }
        self.head = to;
        let end = ended?;
        let run = (u64::from(self.count), self.slots.run_bytes());
        let summary = self.snapshot(self.start, end, sub_ms, run);
        self.count = 0;
        Some(summary)
    }

    /// Counts a request in sub-bucket `idx` (call [`Sliding::advance`] first when `idx` is
    /// newer than the head); [`Added::Crossed`] when the ring reaches `threshold` while the
    /// key is not flagged. `method` is kept when the request starts a run. `bytes` is what a
    /// byte ring adds (a count ring adds 1 whatever it is).
    pub(crate) fn add(
        &mut self,
        idx: u32,
        latency_ms: u32,
        bytes: u64,
        threshold: u64,
        method: u8,
    ) -> Added {
        if idx > self.head || self.head - idx >= SUB_BUCKETS {
            return Added::Late;
        }
        if self.count == 0 || self.total() == 0 {
            self.begin_run(idx, method);
        }
        self.start = self.start.min(idx);
        let s = slot(idx);
        let amount = if R::BYTES { bytes } else { 1 };
        self.slots
            .set_amount(s, self.slots.amount(s).saturating_add(amount));
        if R::BYTES {
            let run = self.slots.run_bytes().saturating_add(bytes);
            self.slots.set_run_bytes(run);
        }
        self.count = self.count.saturating_add(1);
        self.max_ms = self.max_ms.max(latency_ms);
        self.add_to_sum(latency_ms);
        if self.flagged() || self.total() < threshold {
            return Added::Counted;
        }
        self.set_meta(FLAGGED, 1);
        self.start = self.start.min(self.window_start());
        Added::Crossed
    }

    /// The window that just reached the threshold, with the run's latency figures, for a
    /// detection. A byte ring reports the window's bytes and the run's request count (the
    /// ring keeps no per-sub-bucket request counts).
    pub(crate) fn window_snapshot(&self, sub_ms: u64) -> Snapshot {
        let figures = if R::BYTES {
            (u64::from(self.count), self.total())
        } else {
            (self.total(), 0)
        };
        self.snapshot(self.window_start(), self.head + 1, sub_ms, figures)
    }

    fn begin_run(&mut self, idx: u32, method: u8) {
        self.start = idx;
        self.count = 0;
        self.sum = 0;
        self.max_ms = 0;
        self.slots.set_run_bytes(0);
        self.set_meta(SCALE, 0);
        self.set_meta(METHOD, u16::from(method.min(7)));
    }

    /// Adds `ms` to the sum, doubling the unit (halving the sum) instead of overflowing.
    fn add_to_sum(&mut self, ms: u32) {
        let mut scale = self.meta(SCALE);
        loop {
            let half = (1u64 << scale) >> 1;
            let units = (u64::from(ms) + half) >> scale;
            let sum = u64::from(self.sum) + units;
            match u32::try_from(sum) {
                Ok(sum) => {
                    self.sum = sum;
                    return;
                }
                Err(_) if scale < SCALE.1 => {
                    scale += 1;
                    self.sum = u32::try_from(u64::from(self.sum).div_ceil(2)).unwrap_or(u32::MAX);
                    self.set_meta(SCALE, scale);
                }
                Err(_) => {
                    self.sum = u32::MAX;
                    return;
                }
            }
        }
    }

    fn sum_ms(&self) -> f64 {
        f64::from(self.sum) * f64::from(1u32 << self.meta(SCALE))
    }

    fn window_start(&self) -> u32 {
        self.head.saturating_sub(SUB_BUCKETS - 1)
    }

    fn snapshot(&self, start: u32, end: u32, sub_ms: u64, (count, bytes): (u64, u64)) -> Snapshot {
        let at = |idx: u32| i64::try_from(u64::from(idx) * sub_ms).unwrap_or(i64::MAX);
        Snapshot {
            start_ms: at(start),
            end_ms: at(end),
            count,
            bytes,
            avg_secs: self.sum_ms() / f64::from(self.count.max(1)) / 1e3,
            max_secs: f64::from(self.max_ms) / 1e3,
            method: u8::try_from(self.meta(METHOD)).unwrap_or(u8::MAX),
        }
    }

    fn meta(&self, (at, mask): (u16, u16)) -> u16 {
        self.slots.meta_bits() >> at & mask
    }

    fn set_meta(&mut self, (at, mask): (u16, u16), v: u16) {
        let old = self.slots.meta_bits() & !(mask << at);
        self.slots.set_meta_bits(old | (v & mask) << at);
    }
}

/// The ring slot of sub-bucket `idx`.
fn slot(idx: u32) -> usize {
    (idx % SUB_BUCKETS) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_sixteen_independent_twelve_bit_values() {
        let mut s = Slots::default();
        for i in 0..16 {
            s.set(i, (i as u16 + 1) * 255);
        }
        s.set(3, 9_999);
        let got: Vec<u16> = (0..16).map(|i| s.get(i)).collect();
        let mut want: Vec<u16> = (0..16).map(|i| (i + 1) * 255).collect();
        want[3] = MAX_SUB_COUNT;
        assert_eq!(got, want);
    }

    #[test]
    fn a_sub_bucket_saturates_at_4095_while_the_run_counts_on() {
        let mut st: Sliding = Sliding::new(100);
        let crossed: Vec<Added> = (0..5_000).map(|_| st.add(100, 7, 0, 4_095, 2)).collect();
        assert_eq!(crossed.iter().filter(|a| **a == Added::Crossed).count(), 1);
        assert_eq!(crossed[4_094], Added::Crossed);
        assert_eq!((st.total(), st.count), (4_095, 5_000));
        let end = st.advance(115, 4_095, 60_000).unwrap();
        assert_eq!(
            (end.count, end.avg_secs, end.max_secs),
            (5_000, 0.007, 0.007)
        );
    }

    #[test]
    fn the_latency_sum_doubles_its_unit_instead_of_overflowing() {
        let mut st: Sliding = Sliding::new(1);
        st.add(1, 3_000_000_001, 0, 10, 0);
        st.add(1, 3_000_000_001, 0, 10, 0);
        assert_eq!((st.meta(SCALE), st.sum), (1, 3_000_000_002));
        let snap = st.window_snapshot(1_000);
        assert_eq!(snap.avg_secs, 3_000_000.002);
        assert_eq!(snap.max_secs, 3_000_000.001);
    }

    #[test]
    fn meta_fields_do_not_disturb_the_counts() {
        let mut st: Sliding = Sliding::new(14);
        st.add(14, 1, 0, 3, 5);
        st.add(14, 1, 0, 3, 5);
        st.add(14, 1, 0, 3, 5);
        assert_eq!((st.flagged(), st.meta(METHOD), st.total()), (true, 5, 3));
        assert_eq!(st.slots.get(14), 3);
    }

    #[test]
    fn a_byte_ring_sums_bytes_per_sub_bucket_and_over_the_run() {
        let mut st: Sliding<ByteRing> = Sliding::new(10);
        assert_eq!(st.add(10, 5, 600_000, 1_000_000, 2), Added::Counted);
        assert_eq!(st.add(10, 5, 500_000, 1_000_000, 2), Added::Crossed);
        let snap = st.window_snapshot(60_000);
        assert_eq!((snap.count, snap.bytes), (2, 1_100_000));
        // A sub-bucket saturates at 4 GiB; the run's total does not.
        st.add(10, 5, u64::from(u32::MAX), 1_000_000, 2);
        assert_eq!(st.total(), u64::from(u32::MAX));
        let end = st.advance(30, 1_000_000, 60_000).unwrap();
        assert_eq!((end.count, end.bytes), (3, 1_100_000 + u64::from(u32::MAX)));
        assert_eq!(st.total(), 0);
    }
}
