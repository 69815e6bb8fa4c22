//! In-flight detection: a request counts as slow the moment it passes a rule's
//! `min_latency`, not when it ends.
//!
//! Only rules where one slow request is already the verdict are eligible ([`eligible`]:
//! metric `count`, `threshold = 1`, `min_latency > 0`, tumbling window — e.g. the built-in
//! `model_exfiltration`). For those, waiting for the end of a 20-minute pull to say "this
//! source is pulling a model" is waiting for the exfiltration to finish.
//!
//! [`Engine::in_flight`] flags the key in the current window *without counting* the
//! request, and reports a `detection` with `in_flight = true` whose figures include the
//! running request at its latency so far. When the request completes, `observe` counts it
//! in its window as usual: the key is already flagged, so no second `detection`, and the
//! `window_summary` keeps exact Splunk figures over completed requests. A window flagged
//! only in flight that closes before any request of the key completed (the request ran
//! past the window's end, or was cut by a ban) writes no `window_summary`.
//!
//! Sliding windows are not eligible: their flag ends as soon as the ring is below the
//! threshold, which an uncounted request would do at the next sub-bucket.
//!
//! Like the rest of the engine it is pure: the caller (the pipeline's ticker) passes the
//! elapsed time and the wall clock in, and remembers which rules it already asked about.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::mapref::entry::Entry;

use super::engine::{epoch_secs, window_secs, Engine, SUPPORTED_EPOCH_SECS};
use super::event::Event;
use super::paths::{capped, NO_PATH};
use super::rule::{GroupBy, Metric, Rule, WindowKind};
use super::source::SourceKey;
use super::window::{align, Tumbling, WindowKey};
use crate::record::RequestRecord;

/// Rules beyond this index are never reported in flight (the caller's `reported` set is a
/// 64-bit mask).
pub(crate) const MAX_IN_FLIGHT_RULES: usize = 64;

/// Whether `rule` can report a running request: one slow request flags the key.
pub(crate) fn eligible(rule: &Rule) -> bool {
    rule.metric == Metric::Count
        && rule.threshold == 1
        && !rule.min_latency.is_zero()
        && rule.window_kind == WindowKind::Tumbling
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
    /// bit in `reported` is clear: sets the bit, flags the key's current window (creating it
    /// with no completed request) and, if the key was not flagged yet, pushes a `detection`
    /// with `in_flight = true`. The request itself is counted later, by `observe`.
    pub(crate) fn in_flight(
        &self,
        rec: &RequestRecord,
        elapsed: Duration,
        now: DateTime<Utc>,
        reported: &mut u64,
        out: &mut Vec<Event>,
    ) {
        if rec.outcome.is_refusal() || !SUPPORTED_EPOCH_SECS.contains(&now.timestamp()) {
            return;
        }
        if !self.allowlist.is_empty() && self.allowlist.contains(rec.src) {
            return;
        }
        let src = SourceKey::new(rec.src, self.ipv6_prefix);
        for (index, rule) in self.rules.iter().enumerate().take(MAX_IN_FLIGHT_RULES) {
            let bit = 1u64 << index;
            if *reported & bit != 0
                || !eligible(rule)
                || !rule.qualifies(&rec.method_text, &rec.path, elapsed)
            {
                continue;
            }
            *reported |= bit;
            let path = match rule.group_by {
                GroupBy::SrcPath => self.paths.hash(&rec.path),
                GroupBy::Src => NO_PATH,
            };
            let rule_ix = u16::try_from(index).unwrap_or(u16::MAX);
            let key = WindowKey::new(path, src, rule_ix);
            if let Some(ev) = self.flag_tumbling(rule, key, rec, elapsed, now, out) {
                out.push(ev);
            }
        }
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
        let snap = match self.tumbling.entry(key) {
            Entry::Occupied(mut e) => {
                let st = e.get_mut();
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
                st.snapshot_with(window, latency)
            }
            Entry::Vacant(e) => {
                self.paths.acquire(key.path(), &rec.path);
                let st = Tumbling::flagged_in_flight(start, secs, method);
                self.keys.fetch_add(1, Ordering::Relaxed);
                e.insert(st).snapshot_with(window, latency)
            }
        };
        let text = (key.path() != NO_PATH).then(|| capped(&rec.path));
        let mut ev = self.event(rule, &key.src, text, snap);
        ev.in_flight = true;
        Some(Event::Detection(ev))
    }
}
