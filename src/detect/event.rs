//! What the engine reports: detections and window summaries (SPEC §5).
//!
//! The engine only *describes* what happened. The detection-log writer adds the common
//! fields (`schema`, `time`, `event`) and maps [`RuleAction`] to `logged`/`banned` under the
//! global mode; `enforce` decides whether a `block` verdict becomes a ban.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

/// How bad a flagged key looks, from the rule's `severity_by` value and cut-offs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// At or below `severity_medium`.
    Low,
    /// Above `severity_medium`, at or below `severity_high`.
    Medium,
    /// Above `severity_high`.
    High,
}

impl Severity {
    /// Every severity, so metric label tables can be pre-initialised.
    pub const ALL: [Severity; 3] = [Severity::Low, Severity::Medium, Severity::High];

    /// The log field and metric label value.
    pub fn as_str(self) -> &'static str {
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
pub enum RuleAction {
    /// `""`: follow the global `--mode` (monitor → log, block → ban).
    Default,
    /// `"log"`: only ever log, even in block mode.
    Log,
    /// `"block"`: ban the source, even in monitor mode.
    Block,
}

impl RuleAction {
    /// Every action, so metric label tables can be pre-initialised.
    pub const ALL: [RuleAction; 3] = [RuleAction::Default, RuleAction::Log, RuleAction::Block];

    /// The config spelling (`""`, `log`, `block`).
    pub fn config_str(self) -> &'static str {
        match self {
            RuleAction::Default => "",
            RuleAction::Log => "log",
            RuleAction::Block => "block",
        }
    }

    /// Whether this action bans, given the global mode (`block_mode` = `--mode block`).
    pub fn bans(self, block_mode: bool) -> bool {
        match self {
            RuleAction::Default => block_mode,
            RuleAction::Log => false,
            RuleAction::Block => true,
        }
    }
}

/// One engine verdict. Both kinds carry the same fields; they differ in *when* they fire.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A key reached its rule's threshold for the first time in this window (sliding: since
    /// it was last below threshold). This is the moment to ban.
    Detection(DetectionEvent),
    /// A flagged key's window closed (tumbling), or a flagged sliding key fell back below
    /// its threshold: the final figures, comparable row for row with the Splunk search.
    WindowSummary(DetectionEvent),
}

impl Event {
    /// The SPEC §5 `event` value: `detection` or `window_summary`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Detection(_) => "detection",
            Event::WindowSummary(_) => "window_summary",
        }
    }

    /// The fields, whichever the kind.
    pub fn detail(&self) -> &DetectionEvent {
        match self {
            Event::Detection(d) | Event::WindowSummary(d) => d,
        }
    }
}

/// The fields of a `detection` / `window_summary` line (SPEC §5), serialised under the SPEC's
/// names. Times serialise as RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionEvent {
    /// The rule's unique name (also the metric label).
    #[serde(serialize_with = "ser_arc")]
    pub rule: Arc<str>,
    /// The Splunk ESCU detection id this rule mirrors, when it mirrors one.
    #[serde(serialize_with = "ser_opt_arc")]
    pub escu_id: Option<Arc<str>>,
    /// MITRE ATT&CK technique id(s), as configured.
    #[serde(serialize_with = "ser_opt_arc")]
    pub mitre: Option<Arc<str>>,
    /// Human label of the attack (`Potential Data Exfiltration`).
    #[serde(serialize_with = "ser_arc")]
    pub attack_type: Arc<str>,
    /// The source: an IPv4 address, an IPv6 address (prefix 128) or an IPv6 network
    /// (`2001:db8:1:2::/64`).
    pub src: String,
    /// The normalised path; absent for rules grouped by `src` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri_path: Option<String>,
    /// The method of the first qualifying request of the key in this window.
    pub http_method: &'static str,
    /// Start of the window (tumbling: epoch-aligned like SPL `bin`).
    #[serde(serialize_with = "ser_time")]
    pub window_start: DateTime<Utc>,
    /// End of the window (exclusive).
    #[serde(serialize_with = "ser_time")]
    pub window_end: DateTime<Utc>,
    /// Qualifying requests counted.
    pub count: u64,
    /// Mean latency in seconds, rounded to 2 decimals.
    pub avg_response_time: f64,
    /// Largest latency in seconds, rounded to 2 decimals.
    pub max_response_time: f64,
    /// Severity from the rounded figures.
    pub severity: Severity,
    /// The rule's action; the writer maps it to `logged` / `banned`.
    pub action: RuleAction,
}

/// Rounds to 2 decimals the way SPL `round(x, 2)` does (half away from zero).
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn ser_arc<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

fn ser_opt_arc<S: Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(&**v),
        None => s.serialize_none(),
    }
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn detection_event_serialises_to_spec_field_names() {
        let ev = DetectionEvent {
            rule: "model_exfiltration".into(),
            escu_id: Some("c9fd1a54-0eab-4470-8970-d5fcc3c740fb".into()),
            mitre: None,
            attack_type: "Potential Data Exfiltration".into(),
            src: "192.168.1.50".into(),
            uri_path: None,
            http_method: "POST",
            window_start: Utc.timestamp_opt(1_759_416_300, 0).unwrap(),
            window_end: Utc.timestamp_opt(1_759_417_200, 0).unwrap(),
            count: 2,
            avg_response_time: 57.2,
            max_response_time: 58.0,
            severity: Severity::High,
            action: RuleAction::Default,
        };
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            concat!(
                r#"{"rule":"model_exfiltration","escu_id":"c9fd1a54-0eab-4470-8970-d5fcc3c740fb","#,
                r#""mitre":null,"attack_type":"Potential Data Exfiltration","src":"192.168.1.50","#,
                r#""http_method":"POST","window_start":"2025-10-02T14:45:00.000Z","#,
                r#""window_end":"2025-10-02T15:00:00.000Z","count":2,"avg_response_time":57.2,"#,
                r#""max_response_time":58.0,"severity":"high","action":"default"}"#
            )
        );
    }

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
