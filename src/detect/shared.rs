//! `[cluster]` counters: what each replica adds to its windows between two syncs.
//!
//! The engine keeps counting locally on the hot path (local mode needs its own counts, and
//! a lookup here is one more `DashMap` entry per counted rule, no I/O). When a [`Deltas`]
//! is attached, every tumbling count is also added to the delta of its `(key, window)` and
//! every sliding count to the delta of its `(key, sub-bucket)`; the cluster task drains them
//! every `sync_interval`, merges them in Redis and decides detections on the merged totals.
//! While [`Deltas::is_shared`] is on (connected), the engine emits no `detection` or
//! `window_summary` of its own for counted rules: the merged ones replace them, written once
//! cluster-wide. Pure: no I/O, no tokio.
//!
//! # Sliding windows
//! A sliding key's delta is kept per sub-bucket (the ring's `window / 15` slices, numbered
//! `epoch_ms / sub_ms` like the local ring): requests, bytes (volume rules), latency sum and
//! maximum (ms), the method of the sub-bucket's first request. The cluster task sends them
//! to Redis, which keeps one hash per key with one field per sub-bucket (expired ones
//! deleted) and the key's run and episode state, and answers a [`SlideAnswer`]: the merged
//! window total, whether this merge crossed the threshold (and so writes the detection),
//! whether an episode ended (and so writes its summary). [`Engine::slide_detection`] and
//! [`Engine::slide_summary`] turn it into events with the local ring's semantics (see
//! `sliding`).
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;

use super::engine::KeyStore;

use super::engine::{sub_bucket_ms, Engine};
use super::event::DetectionEvent;
use super::paths::{capped, NO_PATH};
use super::rule::{Rule, WindowKind};
pub(crate) use super::sliding::SUB_BUCKETS;
use super::source::SourceKey;
use super::window::{Snapshot, WindowKey};
use crate::record::RequestRecord;

/// Pending deltas at most (tumbling `(key, window)` and sliding `(key, sub-bucket)` together):
/// what an outage can accumulate before further deltas are dropped (and counted).
pub(crate) const MAX_PENDING: usize = 100_000;

/// What one replica counted in one window of one key since the last sync.
#[derive(Debug, Clone, PartialEq)]
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
    /// This replica's own count crossed the threshold while counters were shared, and its
    /// detection (these figures) was left to the merge: when the merge is lost, it is written
    /// here after all ([`Engine::withheld_detection`]).
    pub(crate) crossed: Option<Snapshot>,
}

/// What one replica counted in one sub-bucket of one sliding key since the last sync.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SubDelta {
    /// Requests counted.
    pub(crate) count: u64,
    /// Bytes counted (volume rules; 0 for count rules).
    pub(crate) bytes: u64,
    /// Sum of their latencies, milliseconds (the sliding run's unit).
    pub(crate) sum_ms: u64,
    /// Largest latency, milliseconds.
    pub(crate) max_ms: u64,
    /// The method of the sub-bucket's first request here.
    pub(crate) method: u8,
    /// The normalised path text of keys grouped by path.
    pub(crate) path: Option<String>,
    /// A detection of the key was already written by this replica for these requests (in
    /// local mode, or in flight): when the merge crosses the threshold, it is not written
    /// twice.
    pub(crate) fired_locally: bool,
    /// As [`Delta::crossed`].
    pub(crate) crossed: Option<Snapshot>,
}

impl SubDelta {
    fn absorb(&mut self, d: &SubDelta) {
        self.count = self.count.saturating_add(d.count);
        self.bytes = self.bytes.saturating_add(d.bytes);
        self.sum_ms = self.sum_ms.saturating_add(d.sum_ms);
        self.max_ms = self.max_ms.max(d.max_ms);
        self.fired_locally |= d.fired_locally;
        if self.crossed.is_none() {
            self.crossed = d.crossed;
        }
    }
}

/// A crossing of a threshold left to a merge: the key, its window start (tumbling; `None`
/// for sliding), the crossing's figures and the key's path text.
pub(crate) type Withheld = (WindowKey, Option<u32>, Snapshot, Option<String>);

/// One sliding key's pending sub-bucket deltas, as one merge sends them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slide {
    /// The key.
    pub(crate) key: WindowKey,
    /// Sub-bucket index and delta, oldest first.
    pub(crate) subs: Vec<(u32, SubDelta)>,
}

impl Slide {
    /// The key's path text (keys grouped by path).
    pub(crate) fn path(&self) -> Option<&str> {
        self.subs.iter().find_map(|(_, d)| d.path.as_deref())
    }

    /// Whether this replica already wrote a detection for some of these requests.
    pub(crate) fn fired_locally(&self) -> bool {
        self.subs.iter().any(|(_, d)| d.fired_locally)
    }

    /// This replica's own crossing of the threshold in these sub-buckets while shared, with
    /// its figures ([`Delta::crossed`]).
    pub(crate) fn crossed(&self) -> Option<Snapshot> {
        self.subs.iter().find_map(|(_, d)| d.crossed)
    }

    /// The newest sub-bucket.
    pub(crate) fn head(&self) -> u32 {
        self.subs.iter().map(|(i, _)| *i).max().unwrap_or(0)
    }

    /// Requests in the deltas.
    pub(crate) fn count(&self) -> u64 {
        self.subs.iter().map(|(_, d)| d.count).sum()
    }
}

/// The deltas of every tumbling `(key, window start)` and sliding `(key, sub-bucket)` since
/// the last drain.
#[derive(Debug)]
pub(crate) struct Deltas {
    map: DashMap<(WindowKey, u32), Delta, foldhash::fast::RandomState>,
    slides: DashMap<(WindowKey, u32), SubDelta, foldhash::fast::RandomState>,
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
            slides: DashMap::default(),
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

    /// Adds one request to the delta of `key`'s window starting at `start`; `false` when it
    /// was dropped (the pending deltas are at their cap).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &self,
        key: WindowKey,
        start: u32,
        latency_ns: u64,
        bytes: u64,
        method: u8,
        (fired_locally, crossed): (bool, Option<Snapshot>),
        path: impl FnOnce() -> Option<String>,
    ) -> bool {
        if let Some(mut d) = self.map.get_mut(&(key, start)) {
            d.count = d.count.saturating_add(1);
            d.sum_ns = d.sum_ns.saturating_add(latency_ns);
            d.max_ns = d.max_ns.max(latency_ns);
            d.bytes = d.bytes.saturating_add(bytes);
            d.fired_locally |= fired_locally;
            if d.crossed.is_none() {
                d.crossed = crossed;
            }
            return true;
        }
        if self.pending() >= self.cap {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.map
            .entry((key, start))
            .and_modify(|d| {
                d.count = d.count.saturating_add(1);
                d.sum_ns = d.sum_ns.saturating_add(latency_ns);
                d.max_ns = d.max_ns.max(latency_ns);
                d.bytes = d.bytes.saturating_add(bytes);
                d.fired_locally |= fired_locally;
                if d.crossed.is_none() {
                    d.crossed = crossed;
                }
            })
            .or_insert_with(|| Delta {
                count: 1,
                sum_ns: latency_ns,
                max_ns: latency_ns,
                bytes,
                method,
                path: path(),
                fired_locally,
                crossed,
            });
        true
    }

    /// The crossings of a threshold that this replica left to a merge and that are still
    /// pending, their marks cleared: `(key, window start (tumbling) or None (sliding), the
    /// crossing's figures, the key's path text)`. When the replica falls back to local mode,
    /// their merges wait for Redis: their detections are written here instead
    /// ([`Engine::withheld_detection`]).
    pub(crate) fn take_crossed(&self) -> Vec<Withheld> {
        let mut out = Vec::new();
        for mut e in self.map.iter_mut() {
            let key = *e.key();
            let d = e.value_mut();
            if let Some(snap) = d.crossed.take() {
                out.push((key.0, Some(key.1), snap, d.path.clone()));
            }
        }
        for mut e in self.slides.iter_mut() {
            let key = e.key().0;
            let d = e.value_mut();
            if let Some(snap) = d.crossed.take() {
                out.push((key, None, snap, d.path.clone()));
            }
        }
        out
    }

    /// Takes every pending delta (the sync sends them).
    pub(crate) fn drain(&self) -> Vec<((WindowKey, u32), Delta)> {
        let keys: Vec<(WindowKey, u32)> = self.map.iter().map(|e| *e.key()).collect();
        keys.into_iter()
            .filter_map(|k| self.map.remove(&k))
            .collect()
    }

    /// Pending deltas, tumbling and sliding (the cap counts both).
    fn pending(&self) -> usize {
        self.map.len() + self.slides.len()
    }

    /// Adds one request to the delta of sliding `key`'s sub-bucket `idx`: `bytes` is what a
    /// volume rule counts (0 for count rules), latencies are in milliseconds.
    pub(crate) fn add_slide(
        &self,
        (key, idx): (WindowKey, u32),
        latency_ms: u64,
        bytes: u64,
        method: u8,
        (fired_locally, crossed): (bool, Option<Snapshot>),
        path: impl FnOnce() -> Option<String>,
    ) -> bool {
        let one = SubDelta {
            count: 1,
            bytes,
            sum_ms: latency_ms,
            max_ms: latency_ms,
            method,
            path: None,
            fired_locally,
            crossed,
        };
        if let Some(mut d) = self.slides.get_mut(&(key, idx)) {
            d.absorb(&one);
            return true;
        }
        if self.pending() >= self.cap {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.slides
            .entry((key, idx))
            .and_modify(|d| d.absorb(&one))
            .or_insert_with(|| SubDelta {
                path: path(),
                ..one.clone()
            });
        true
    }

    /// Takes every pending sliding delta, grouped by key, sub-buckets oldest first.
    pub(crate) fn drain_slides(&self) -> Vec<Slide> {
        let keys: Vec<(WindowKey, u32)> = self.slides.iter().map(|e| *e.key()).collect();
        let mut by_key: std::collections::HashMap<WindowKey, Vec<(u32, SubDelta)>> =
            std::collections::HashMap::new();
        for k in keys {
            if let Some(((key, idx), d)) = self.slides.remove(&k) {
                by_key.entry(key).or_default().push((idx, d));
            }
        }
        by_key
            .into_iter()
            .map(|(key, mut subs)| {
                subs.sort_by_key(|(i, _)| *i);
                Slide { key, subs }
            })
            .collect()
    }

    /// Requests dropped since the last call (for `cluster_deltas_dropped_total`).
    /// Drops every pending delta, counted: after a reload that changes the rules, a delta's
    /// rule index may name another rule, whose counts it must not join.
    pub(crate) fn discard_all(&self) {
        let n: u64 = self.drain().iter().map(|(_, d)| d.count).sum::<u64>()
            + self
                .drain_slides()
                .iter()
                .flat_map(|s| s.subs.iter().map(|(_, d)| d.count))
                .sum::<u64>();
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Pending windows.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// The figures of a sliding run (the requests since the key's window was last empty or its
/// last episode ended), merged across replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Run {
    /// Its first sub-bucket (once flagged, the start of the summary's span).
    pub(crate) start: u32,
    /// Requests.
    pub(crate) count: u64,
    /// Latency sum and maximum, milliseconds.
    pub(crate) sum_ms: u64,
    pub(crate) max_ms: u64,
    /// Bytes (volume rules).
    pub(crate) bytes: u64,
    /// The method of its first request.
    pub(crate) method: u8,
}

/// What one sliding merge (or episode check) answered: the merged state of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SlideAnswer {
    /// The merged window total (requests, or bytes for volume rules) at `head`.
    pub(crate) total: u64,
    /// This merge crossed the threshold and started the episode: this replica writes the
    /// detection.
    pub(crate) won: bool,
    /// An episode is open after the merge.
    pub(crate) flagged: bool,
    /// The newest sub-bucket of the merged window.
    pub(crate) head: u32,
    /// The current run.
    pub(crate) run: Run,
    /// An episode this call ended: the sub-bucket where the merged count fell below the
    /// threshold, and the ended run (this replica writes the summary).
    pub(crate) ended: Option<(u32, Run)>,
}

impl SlideAnswer {
    /// Reads the script's answer: `total, won, flagged, head`, the run (`start, count, sum,
    /// max, bytes, method`), then `ended, end` and the ended run.
    pub(crate) fn from_values(v: &[i64]) -> Option<SlideAnswer> {
        if v.len() != 18 {
            return None;
        }
        let n = |i: usize| u64::try_from(v[i]).unwrap_or(0);
        let idx = |i: usize| u32::try_from(v[i]).unwrap_or(0);
        let run = |at: usize| Run {
            start: idx(at),
            count: n(at + 1),
            sum_ms: n(at + 2),
            max_ms: n(at + 3),
            bytes: n(at + 4),
            method: u8::try_from(v[at + 5]).unwrap_or(u8::MAX),
        };
        Some(SlideAnswer {
            total: n(0),
            won: v[1] == 1,
            flagged: v[2] == 1,
            head: idx(3),
            run: run(4),
            ended: (v[10] == 1).then(|| (idx(11), run(12))),
        })
    }
}

/// A sliding rule as the cluster task needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlideRule {
    /// The rule's name in Redis, with its configuration's digest (a reload that moves or
    /// changes rules must not mix keys up).
    pub(crate) name: std::sync::Arc<str>,
    /// Sub-bucket length, milliseconds.
    pub(crate) sub_ms: u64,
    /// Threshold: requests, or bytes for volume rules.
    pub(crate) threshold: u64,
    /// Whether it counts bytes.
    pub(crate) by_bytes: bool,
}

impl<M: super::engine::Maps> Engine<M> {
    /// `[cluster]`: adds a sliding count (already counted in the local ring) to its
    /// sub-bucket's delta. Returns whether the engine's own events of the key are withheld
    /// (counters shared: the merged ones replace them). `crossed`: the local ring just
    /// crossed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn share_slide(
        &self,
        rule: &Rule,
        (key, idx): (WindowKey, u32),
        latency_ms: u32,
        method: u8,
        rec: &RequestRecord,
        crossed: Option<Snapshot>,
    ) -> bool {
        let Some(deltas) = self.shared.get() else {
            return false;
        };
        let shared = deltas.is_shared();
        // A detection this replica writes (local mode) or already wrote (in flight).
        let in_flight = 1u64
            .checked_shl(u32::from(key.rule))
            .is_some_and(|bit| rec.in_flight_reported & bit != 0);
        let fired_locally = (crossed.is_some() && !shared) || in_flight;
        let kept = deltas.add_slide(
            (key, idx),
            u64::from(latency_ms),
            rule.metric.bytes(rec),
            method,
            (fired_locally, crossed.filter(|_| shared)),
            || (key.path() != NO_PATH).then(|| capped(&rec.path)),
        );
        // A crossing whose delta was dropped (the cap) would reach no merge: detected here.
        shared && kept
    }

    /// [`Engine::withheld_detection`] of each of `withheld`, with the address it is about
    /// (none for an identity's key), as [`Event`]s for the verdicts.
    pub(crate) fn withheld_detections(
        &self,
        withheld: Vec<Withheld>,
    ) -> Vec<(super::Event, Option<std::net::IpAddr>)> {
        withheld
            .into_iter()
            .filter_map(|(key, _, snap, path)| {
                let ev = self.withheld_detection(&key, path, snap)?;
                let src = key
                    .src
                    .identity_id()
                    .is_none()
                    .then(|| key.src.network().addr());
                Some((super::Event::Detection(ev), src))
            })
            .collect()
    }

    /// `[cluster]`: the detection this replica withheld for a merge (`snap`, the crossing's
    /// figures as the local window had them) when that merge is lost (a failed sync drops its
    /// deltas) or waits for Redis (the replica fell back to local mode): written here after
    /// all, as local mode would have written it at the crossing.
    pub(crate) fn withheld_detection(
        &self,
        key: &WindowKey,
        path: Option<String>,
        snap: Snapshot,
    ) -> Option<DetectionEvent> {
        let rule = self.rules.get(usize::from(key.rule))?;
        Some(self.event(rule, key, &self.merged_src(key), None, path, snap))
    }

    /// `[cluster]`: the sliding rule of a delta key (`None`: not a sliding rule, or gone).
    pub(crate) fn slide_rule(&self, key: &WindowKey) -> Option<SlideRule> {
        let rule = self.rules.get(usize::from(key.rule))?;
        (rule.window_kind == WindowKind::Sliding).then(|| SlideRule {
            name: rule.shared_id.clone(),
            sub_ms: sub_bucket_ms(rule),
            threshold: rule.threshold,
            by_bytes: rule.metric.is_bytes(),
        })
    }

    /// `[cluster]`: the stable name of a sliding key across replicas: `rule:subject:path`
    /// (the path hash is per process, its text is not).
    pub(crate) fn slide_name(&self, key: &WindowKey, path: Option<&str>) -> Option<String> {
        let rule = self.rules.get(usize::from(key.rule))?;
        let subject = match key.src.identity_id() {
            Some(id) => format!("id={}", self.identities.name(id)?),
            None => key.src.network().to_string(),
        };
        Some(format!(
            "{}:{subject}:{}",
            rule.shared_id,
            path.unwrap_or("")
        ))
    }

    /// `[cluster]`: the detection of a merge that crossed the threshold, as the local ring
    /// writes it (`Sliding::window_snapshot`): the window ending at the merged head, its
    /// merged count (a volume rule: its bytes and the run's requests), the run's latency.
    pub(crate) fn slide_detection(
        &self,
        key: &WindowKey,
        a: &SlideAnswer,
        path: Option<String>,
    ) -> Option<DetectionEvent> {
        let rule = self.rules.get(usize::from(key.rule))?;
        let sub = sub_bucket_ms(rule);
        let (count, bytes) = if rule.metric.is_bytes() {
            (a.run.count, a.total)
        } else {
            (a.total, 0)
        };
        let start = a.head.saturating_sub(SUB_BUCKETS - 1);
        let snap = run_snapshot(
            sub,
            (start, a.head.saturating_add(1)),
            &a.run,
            (count, bytes),
        );
        Some(self.event(rule, key, &self.merged_src(key), None, path, snap))
    }

    /// `[cluster]`: the summary of an episode the merged count ended, as the local ring
    /// writes it: from the run's start to the sub-bucket where the count fell below the
    /// threshold, with the run's figures.
    pub(crate) fn slide_summary(
        &self,
        key: &WindowKey,
        end: u32,
        run: &Run,
        path: Option<String>,
    ) -> Option<DetectionEvent> {
        let rule = self.rules.get(usize::from(key.rule))?;
        let sub = sub_bucket_ms(rule);
        let snap = run_snapshot(sub, (run.start, end), run, (run.count, run.bytes));
        Some(self.event(rule, key, &self.merged_src(key), None, path, snap))
    }

    /// The address a merged event names: the key's source, or for an identity key the last
    /// address this replica counted under it.
    fn merged_src(&self, key: &WindowKey) -> SourceKey {
        match (key.src.identity_id(), self.last_src.copied(key)) {
            (Some(_), Some(ip)) => SourceKey::new(ip, self.ipv6_prefix),
            _ => key.src,
        }
    }
}

fn run_snapshot(
    sub_ms: u64,
    (start, end): (u32, u32),
    run: &Run,
    (count, bytes): (u64, u64),
) -> Snapshot {
    let at = |idx: u32| i64::try_from(u64::from(idx) * sub_ms).unwrap_or(i64::MAX);
    Snapshot {
        start_ms: at(start),
        end_ms: at(end),
        count,
        bytes,
        avg_secs: run.sum_ms as f64 / run.count.max(1) as f64 / 1e3,
        max_secs: run.max_ms as f64 / 1e3,
        method: run.method,
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
        d.add(key(1), 60, 5, 10, 1, (false, None), || None);
        d.add(key(1), 60, 9, 1, 2, (true, None), || None);
        d.add(key(2), 60, 1, 0, 1, (false, None), || Some("/api/x".into()));
        d.add(key(3), 60, 1, 0, 1, (false, None), || None);
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
                fired_locally: true,
                crossed: None
            }
        );
        assert_eq!(all[1].1.path.as_deref(), Some("/api/x"));
        // A reload that changes the rules drops what is pending, counted by requests.
        d.add(key(1), 60, 1, 0, 1, (false, None), || None);
        d.add(key(2), 60, 1, 0, 1, (false, None), || None);
        d.add(key(2), 60, 1, 0, 1, (false, None), || None);
        d.discard_all();
        assert_eq!(d.len(), 0);
        assert_eq!(d.take_dropped(), 3);
    }

    /// A crossing left to the merge rides on its pending delta, with its figures, and is
    /// taken once by `take_crossed` (the deltas stay for the merge); a delta dropped for the
    /// cap reports `false`, so the engine keeps that crossing's detection local.
    #[test]
    fn crossings_ride_on_their_deltas_are_taken_once_and_a_dropped_delta_says_so() {
        let snap = Snapshot {
            start_ms: 60_000,
            end_ms: 120_000,
            count: 6,
            bytes: 0,
            avg_secs: 1.5,
            max_secs: 2.0,
            method: 1,
        };
        let d = Deltas::with_cap(3);
        assert!(d.add(key(1), 60, 1, 0, 1, (false, None), || None));
        assert!(d.add(key(1), 60, 1, 0, 1, (false, Some(snap)), || None));
        assert!(d.add(key(2), 60, 1, 0, 1, (false, None), || None));
        assert!(
            d.add_slide((key(3), 100), 1, 0, 1, (false, Some(snap)), || Some(
                "/p".into()
            ))
        );
        assert!(
            !d.add(key(4), 60, 1, 0, 1, (false, Some(snap)), || None),
            "over the cap"
        );
        assert!(!d.add_slide((key(5), 100), 1, 0, 1, (false, None), || None));
        assert_eq!(
            d.take_crossed(),
            vec![
                (key(1), Some(60), snap, None),
                (key(3), None, snap, Some("/p".to_owned()))
            ]
        );
        assert_eq!(d.take_crossed(), vec![]);
        assert_eq!(d.pending(), 3);
    }

    #[test]
    fn sliding_deltas_sum_per_sub_bucket_group_by_key_and_share_the_cap() {
        let d = Deltas::with_cap(4);
        d.add_slide((key(1), 101), 30, 0, 2, (false, None), || Some("/a".into()));
        d.add_slide((key(1), 100), 10, 0, 1, (false, None), || None);
        d.add_slide((key(1), 101), 50, 7, 3, (true, None), || None);
        d.add_slide((key(2), 100), 5, 0, 1, (false, None), || None);
        // A tumbling window takes the last place of the cap (4): the next new sub-bucket is
        // dropped, an existing one still counts.
        d.add(key(3), 60, 1, 0, 1, (false, None), || None);
        d.add_slide((key(2), 102), 5, 0, 1, (false, None), || None);
        d.add_slide((key(2), 100), 6, 0, 1, (false, None), || None);
        assert_eq!(d.take_dropped(), 1);
        let mut slides = d.drain_slides();
        slides.sort_by_key(|s| s.key.src.network());
        assert_eq!(d.pending(), 1, "the tumbling delta stays");
        assert_eq!(slides.len(), 2);
        let a = &slides[0];
        assert_eq!(a.key, key(1));
        assert_eq!(
            a.subs,
            vec![
                (
                    100,
                    SubDelta {
                        count: 1,
                        bytes: 0,
                        sum_ms: 10,
                        max_ms: 10,
                        method: 1,
                        path: None,
                        fired_locally: false,
                        crossed: None
                    }
                ),
                (
                    101,
                    SubDelta {
                        count: 2,
                        bytes: 7,
                        sum_ms: 80,
                        max_ms: 50,
                        method: 2,
                        path: Some("/a".into()),
                        fired_locally: true,
                        crossed: None
                    }
                ),
            ]
        );
        assert_eq!(
            (a.path(), a.fired_locally(), a.head(), a.count()),
            (Some("/a"), true, 101, 3)
        );
        let b = &slides[1];
        assert_eq!(
            (
                b.subs.len(),
                b.subs[0].1.count,
                b.subs[0].1.sum_ms,
                b.fired_locally()
            ),
            (1, 2, 11, false)
        );
        // A reload that changes the rules drops what is pending, sliding and tumbling alike.
        d.add_slide((key(1), 101), 1, 0, 1, (false, None), || None);
        d.add_slide((key(1), 102), 1, 0, 1, (false, None), || None);
        d.discard_all();
        assert_eq!(d.pending(), 0);
        assert_eq!(
            d.take_dropped(),
            3,
            "two sub-buckets and the tumbling window"
        );
    }

    #[test]
    fn a_slide_answer_reads_the_scripts_eighteen_integers() {
        let v = [
            12, 1, 1, 500, 486, 12, 240, 40, 0, 2, 1, 470, 455, 7, 70, 10, 0, 1,
        ];
        let a = SlideAnswer::from_values(&v).unwrap();
        assert_eq!(
            a,
            SlideAnswer {
                total: 12,
                won: true,
                flagged: true,
                head: 500,
                run: Run {
                    start: 486,
                    count: 12,
                    sum_ms: 240,
                    max_ms: 40,
                    bytes: 0,
                    method: 2
                },
                ended: Some((
                    470,
                    Run {
                        start: 455,
                        count: 7,
                        sum_ms: 70,
                        max_ms: 10,
                        bytes: 0,
                        method: 1
                    }
                )),
            }
        );
        let mut quiet = v;
        quiet[10] = 0;
        assert_eq!(SlideAnswer::from_values(&quiet).unwrap().ended, None);
        assert_eq!(SlideAnswer::from_values(&v[..17]), None);
    }
}
