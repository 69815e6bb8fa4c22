//! In-flight detection: a request counts as slow the moment it passes a rule's
//! `min_latency`, not when it ends.
//!
//! Only rules where one slow request is already the verdict are eligible ([`eligible`]:
//! metric `count`, `threshold = 1`, `min_latency > 0`, tumbling or sliding window — e.g. the
//! built-in `model_exfiltration`). For those, waiting for the end of a 20-minute pull to say
//! "this source is pulling a model" is waiting for the exfiltration to finish.
//!
//! Tumbling windows: [`Engine::in_flight`] flags the key in the current window *without
//! counting* the request, and reports a `detection` with `in_flight = true` whose figures
//! include the running request at its latency so far. When the request completes, `observe`
//! counts it in its window as usual: the key is already flagged, so no second `detection`,
//! and the `window_summary` keeps exact Splunk figures over completed requests. A window
//! flagged only in flight that closes before any request of the key completed (the request
//! ran past the window's end, or was cut by a ban) writes no `window_summary`.
//!
//! Sliding windows: a flag without a counted request would end at the next sub-bucket (the
//! ring is below the threshold), so the key is not flagged in flight. The detection is
//! reported (unless the key is already flagged by completed requests: then it is asked again
//! at the next tick), the caller remembers the rule in the request's `sliding` mask, and the
//! completed record carries that mask ([`RequestRecord::in_flight_reported`]): `observe`
//! counts the request as usual — the key becomes flagged, its `window_summary` is normal —
//! but writes no second `detection` for those rules. Limit: another request of the same key
//! that *completes* while the reported one still runs crosses on its own and writes its own
//! `detection`.
//!
//! Like the rest of the engine it is pure: the caller (the pipeline's ticker) passes the
//! elapsed time and the wall clock in, and remembers which rules it already asked about.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::engine::{
    bucket_index, epoch_secs, sub_bucket_ms, window_secs, Engine, SUPPORTED_EPOCH_SECS,
};
use super::event::Event;
use super::paths::{capped, NO_PATH};
use super::rule::{Metric, Rule, Target, WindowKind};
use super::sliding::SUB_BUCKETS;
use super::source::SourceKey;
use super::window::{align, Snapshot, Tumbling, WindowKey};
use crate::record::RequestRecord;
use chrono::{DateTime, Utc};

/// Rules beyond this index are never reported in flight (the caller's `reported` set is a
/// 64-bit mask).
pub(crate) const MAX_IN_FLIGHT_RULES: usize = 64;

/// Whether `rule` can report a running request: one slow request flags the key.
///
/// Rules with a `status` list are not eligible: a running request's status is not final.
pub(crate) fn eligible(rule: &Rule) -> bool {
    rule.metric == Metric::Count
        && rule.threshold == 1
        && !rule.min_latency.is_zero()
        && !rule.filters_status()
}

impl Engine {
    /// The shortest `min_latency` of the eligible rules: a running request younger than that
    /// cannot be reported yet (`None`: no eligible rule, nothing to track).
    pub(crate) fn in_flight_after(&self) -> Option<Duration> {
        self.rules
            .iter()
            .take(MAX_IN_FLIGHT_RULES)
            .filter(|r| eligible(r))
            .map(|r| r.min_latency)
            .min()
    }

    /// A request `rec` (its start record: method, path, source) has been running for
    /// `elapsed` at wall-clock `now`. For each eligible rule it now qualifies for and whose
    /// bit in `reported` is clear:
    /// - tumbling window: sets the bit, flags the key's current window (creating it with no
    ///   completed request) and, if the key was not flagged yet, pushes a `detection` with
    ///   `in_flight = true`;
    /// - sliding window: if the key is not flagged (after moving its ring to `now`, which
    ///   may push the summary of an ended episode), pushes that `detection` and sets the bit
    ///   in both `reported` and `sliding`; a flagged key is left alone and asked again later.
    ///
    /// The request itself is counted later, by `observe`, which writes no second detection
    /// for the rules of its `in_flight_reported` mask (the caller's `sliding`).
    pub(crate) fn in_flight(
        &self,
        rec: &RequestRecord,
        elapsed: Duration,
        now: DateTime<Utc>,
        reported: &mut u64,
        sliding: &mut u64,
        out: &mut Vec<Event>,
    ) {
        if rec.outcome.is_refusal() || !SUPPORTED_EPOCH_SECS.contains(&now.timestamp()) {
            return;
        }
        if !self.allowlist.is_empty() && self.allowlist.contains(rec.src) {
            return;
        }
        let src = SourceKey::new(rec.src, self.ipv6_prefix);
        let mut ident = None;
        let target = Target::of(rec);
        for (index, rule) in self.rules.iter().enumerate().take(MAX_IN_FLIGHT_RULES) {
            let bit = 1u64 << index;
            if *reported & bit != 0
                || !eligible(rule)
                || !rule.admits(rec.status, rec.outcome)
                || !rule.qualifies(&target, elapsed)
            {
                continue;
            }
            let path = if rule.group_by.by_path() {
                self.paths.hash(&rec.path)
            } else {
                NO_PATH
            };
            let rule_ix = u16::try_from(index).unwrap_or(u16::MAX);
            let who = self.subject(rule.group_by, src, rec, &mut ident);
            let key = WindowKey::new(path, who, rule_ix);
            let found = match rule.window_kind {
                WindowKind::Tumbling => {
                    *reported |= bit;
                    self.flag_tumbling(rule, key, rec, elapsed, now, out)
                }
                WindowKind::Sliding => {
                    let found = self.report_sliding(rule, key, rec, elapsed, now, out);
                    if found.is_some() {
                        *reported |= bit;
                        *sliding |= bit;
                    }
                    found
                }
            };
            if let Some(ev) = found {
                out.push(ev);
            }
        }
    }

    /// The in-flight detection of a sliding count key at `now`, unless it is flagged. The
    /// key is not changed beyond moving its ring forward (and ending its episode, whose
    /// summary goes to `out`); the figures are those of the running request alone (a key
    /// that is not flagged holds no request, the threshold being 1).
    fn report_sliding(
        &self,
        rule: &Rule,
        key: WindowKey,
        rec: &RequestRecord,
        elapsed: Duration,
        now: DateTime<Utc>,
        out: &mut Vec<Event>,
    ) -> Option<Event> {
        let sub = sub_bucket_ms(rule);
        let idx = bucket_index(&now, sub);
        let text = (key.path() != NO_PATH).then(|| capped(&rec.path));
        let flagged = self.sliding.update(&key, |st| {
            let summary = st.advance(idx, rule.threshold, sub);
            // Moved ahead of the ticks (to now, not to the tick time): the key may now be
            // empty or change sooner, and the next tick must not skip it.
            self.sliding_changes_by(st.next_change(), sub);
            // Shared counters: the cluster writes the merged summary.
            if let Some(summary) = summary.filter(|_| !self.counters_shared()) {
                let src = SourceKey::new(rec.src, self.ipv6_prefix);
                let ev = self.event(rule, &key, &src, None, text.clone(), summary);
                out.push(Event::WindowSummary(ev));
            }
            st.flagged()
        });
        if flagged == Some(true) {
            return None;
        }
        let at = |i: u32| i64::try_from(u64::from(i) * sub).unwrap_or(i64::MAX);
        let secs = elapsed.as_secs_f64();
        let snap = Snapshot {
            start_ms: at(idx.saturating_sub(SUB_BUCKETS - 1)),
            end_ms: at(idx.saturating_add(1)),
            count: 1,
            bytes: 0,
            avg_secs: secs,
            max_secs: secs,
            method: u8::try_from(rec.method.index()).unwrap_or(u8::MAX),
        };
        let src = SourceKey::new(rec.src, self.ipv6_prefix);
        let mut ev = self.event(rule, &key, &src, rec.identity.as_ref(), text, snap);
        ev.in_flight = true;
        Some(Event::Detection(ev))
    }

    /// Flags `key`'s window at `now`; the in-flight detection if it was not flagged.
    fn flag_tumbling(
        &self,
        rule: &Rule,
        key: WindowKey,
        rec: &RequestRecord,
        elapsed: Duration,
        now: DateTime<Utc>,
        out: &mut Vec<Event>,
    ) -> Option<Event> {
        let window = window_secs(rule);
        let secs = epoch_secs(&now);
        let start = align(secs, window);
        let latency = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let method = u8::try_from(rec.method.index()).unwrap_or(u8::MAX);
        self.make_room(&self.tumbling, &key, out);
        let snap = self.tumbling.upsert(
            key,
            out,
            |st, out| {
                self.note_src(&key, rec.src);
                if start > st.window_start {
                    if let Some(summary) = self.tumbling_summary(&key, st) {
                        out.push(summary);
                    }
                    *st = Tumbling::flagged_in_flight(start, secs, method);
                } else if st.flagged || start < st.window_start {
                    return None; // already reported in this window (or a clock step back)
                } else {
                    st.flagged = true;
                }
                Some(st.snapshot_with(window, latency))
            },
            |_| {
                self.paths.acquire(key.path(), &rec.path);
                self.tumbling_ends_by(u64::from(start) + u64::from(window));
                let st = Tumbling::flagged_in_flight(start, secs, method);
                self.keys.fetch_add(1, Ordering::Relaxed);
                self.note_src(&key, rec.src);
                (st, Some(st.snapshot_with(window, latency)))
            },
        )?;
        let text = (key.path() != NO_PATH).then(|| capped(&rec.path));
        let src = SourceKey::new(rec.src, self.ipv6_prefix);
        let mut ev = self.event(rule, &key, &src, rec.identity.as_ref(), text, snap);
        ev.in_flight = true;
        Some(Event::Detection(ev))
    }
}
