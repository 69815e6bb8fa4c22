//! What the engine reports: detections and window summaries.
//!
//! The engine only *describes* what happened. The record pipeline (`pipeline::verdict`)
//! decides from [`RuleAction`] and the global mode whether a verdict bans, and logs it as a
//! typed `telemetry::log_event::Finding` (README "Detection log", `docs/detection-log.md`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How bad a flagged key looks, from the rule's `severity_by` value and cut-offs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    /// At or below `severity_medium`.
    Low,
    /// Above `severity_medium`, at or below `severity_high`.
    Medium,
    /// Above `severity_high`.
    High,
}

impl Severity {
    /// The log field and metric label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// What a rule asks for when it flags a key (config key `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RuleAction {
    /// `""`: follow the global `--mode` (monitor → log, block → ban).
    Default,
    /// `"log"`: only ever log, even in block mode.
    Log,
    /// `"block"`: ban the source, even in monitor mode.
    Block,
}

impl RuleAction {
    /// Whether this action bans, given the global mode (`block_mode` = `--mode block`).
    pub(crate) fn bans(self, block_mode: bool) -> bool {
        match self {
            RuleAction::Default => block_mode,
            RuleAction::Log => false,
            RuleAction::Block => true,
        }
    }
}

/// One engine verdict. Both kinds carry the same fields; they differ in *when* they fire.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// A key reached its rule's threshold for the first time in this window (sliding: since
    /// it was last below threshold). This is the moment to ban.
    Detection(DetectionEvent),
    /// A flagged key's window closed (tumbling), or a flagged sliding key fell back below
    /// its threshold: the final figures, comparable row for row with the Splunk search.
    WindowSummary(DetectionEvent),
}

impl Event {
    /// The detection-log `event` value: `detection` or `window_summary`.
    #[cfg(test)]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Event::Detection(_) => "detection",
            Event::WindowSummary(_) => "window_summary",
        }
    }

    /// The fields, whichever the kind.
    pub(crate) fn detail(&self) -> &DetectionEvent {
        match self {
            Event::Detection(d) | Event::WindowSummary(d) => d,
        }
    }
}

/// The figures of a `detection` / `window_summary`. Not serialised itself: the detection
/// log writes them, with what was done, as a `telemetry::log_event::Finding`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DetectionEvent {
    /// The rule's unique name (also the metric label).
    pub(crate) rule: Arc<str>,
    /// The Splunk ESCU detection id this rule mirrors, when it mirrors one.
    pub(crate) escu_id: Option<Arc<str>>,
    /// MITRE ATT&CK technique id(s), as configured.
    pub(crate) mitre: Option<Arc<str>>,
    /// Human label of the attack (`Potential Data Exfiltration`).
    pub(crate) attack_type: Arc<str>,
    /// The source: an IPv4 address, an IPv6 address (prefix 128) or an IPv6 network
    /// (`2001:db8:1:2::/64`).
    pub(crate) src: String,
    /// The caller's identity (API key name): for a key grouped by identity, that identity;
    /// for an address key, the identity of the request that crossed the threshold
    /// (detections only), when it had one.
    pub(crate) identity: Option<Arc<str>>,
    /// Whether the key *is* the identity (`group_by = "identity"` / `"identity_path"` and a
    /// request with an identity): the verdict is about the identity, wherever it calls from,
    /// so a ban would be of the identity, not of `src` (`pipeline::verdict::BanTarget`).
    /// `src` is then the address of the request that produced the event, or at window close
    /// of the last request counted under the key.
    pub(crate) by_identity: bool,
    /// The normalised path; absent for rules grouped by `src` (or `identity`) only.
    pub(crate) uri_path: Option<String>,
    /// The method of the first qualifying request of the key in this window.
    pub(crate) http_method: &'static str,
    /// Start of the window (tumbling: epoch-aligned like SPL `bin`).
    pub(crate) window_start: DateTime<Utc>,
    /// End of the window (exclusive).
    pub(crate) window_end: DateTime<Utc>,
    /// Qualifying requests counted.
    pub(crate) count: u64,
    /// Bytes counted, for volume rules (`metric = "bytes_out"` / `"bytes_in"`); `None` for
    /// count rules, whose events carry no `bytes` field.
    pub(crate) bytes: Option<u64>,
    /// Mean latency in seconds, rounded to 2 decimals.
    pub(crate) avg_response_time: f64,
    /// Largest latency in seconds, rounded to 2 decimals.
    pub(crate) max_response_time: f64,
    /// Severity from the rounded figures.
    pub(crate) severity: Severity,
    /// The rule's action; the pipeline decides from it (and the mode) whether to ban.
    pub(crate) action: RuleAction,
    /// A detection of a request still running (it passed the rule's `min_latency`); its
    /// figures include that request at its latency so far. Always `false` for summaries.
    pub(crate) in_flight: bool,
    /// The rule's `risk_score` (risk-based alerting; written on `detection` events only).
    pub(crate) risk_score: u32,
}

/// Rounds to 2 decimals the way SPL `round(x, 2)` does (half away from zero).
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round2_rounds_half_away_from_zero_on_two_decimals() {
        assert_eq!(round2(50.004), 50.0);
        assert_eq!(round2(57.204518733), 57.2);
        assert_eq!(round2(40.126), 40.13);
    }

    #[test]
    fn actions_ban_according_to_global_mode() {
        assert!(!RuleAction::Default.bans(false));
        assert!(RuleAction::Default.bans(true));
        assert!(!RuleAction::Log.bans(true));
        assert!(RuleAction::Block.bans(false));
    }
}
