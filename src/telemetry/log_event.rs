//! The events of the detection log, as types.
//!
//! Every line of the detection log is one [`LogEvent`]; the `schema`/`time`/`event` envelope
//! is added by [`DetectionLog::write`](super::DetectionLog::write), the only place a line is
//! serialised. Field names and order are the log's public contract (`docs/detection-log.md`,
//! checked against `docs/detection-log.schema.json`): a field is renamed or reordered here
//! only together with those documents and the schema version.
//!
//! The payloads borrow from what produced them (the engine's verdict, the ban, the refused
//! request), so writing an event costs one `String`, the line itself.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use crate::detect::{DetectionEvent, Severity};

/// One detection-log event. Serialised with its kind as the `event` field; the variants'
/// fields follow in their declared order. New kinds (a request aborted by a policy, policy
/// changes) are new variants here, a new `oneOf` branch in the schema and a section in the
/// docs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum LogEvent<'a> {
    /// A key first reached its rule's threshold in a window.
    Detection(Finding<'a>),
    /// A request broke a policy rule (`rule = "policy.<name>"`): a `detection` event with the
    /// offending value instead of window figures.
    #[serde(rename = "detection")]
    Policy(PolicyFinding<'a>),
    /// A flagged key's window closed (or its sliding count fell below the threshold, or the
    /// rule went away at a reload, or shutdown): the final figures.
    WindowSummary(Finding<'a>),
    /// A ban started (or was restored from `state_dir` at start-up).
    Ban(BanEvent<'a>),
    /// A ban ended: expired, lifted through the admin API, or lifted by the allowlist.
    Unban(UnbanEvent<'a>),
    /// A banned source's request was refused (at most one event per ban per minute).
    Blocked(BlockedEvent<'a>),
    /// A running request was cut because its source was banned while it ran.
    Aborted(AbortedEvent<'a>),
    /// `[auth]` refused a request (or, in `observe` mode, would have): at most one event per
    /// source per minute, with the number not logged since.
    Auth(AuthEvent<'a>),
}

/// What was done about a verdict: the `action` field of `detection` and `window_summary`,
/// and the `action` label of `ollama_guard_detections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    /// Logged only (a log-only rule, or a source block mode would not ban either).
    Logged,
    /// Monitor mode: block mode would have refused the request (policy verdicts) or banned
    /// the source (rule verdicts).
    #[serde(rename = "would_block")]
    WouldBlock,
    /// The request was refused, the source not banned (policy verdicts).
    Blocked,
    /// The source is banned (now, or already was).
    Banned,
}

impl Action {
    /// The log value and metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Logged => "logged",
            Action::WouldBlock => "would_block",
            Action::Blocked => "blocked",
            Action::Banned => "banned",
        }
    }
}

/// The fields of a policy `detection`: what the request asked for that a policy rule forbids.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PolicyFinding<'a> {
    /// `policy.<name>`.
    pub(crate) rule: &'a str,
    /// MITRE ATT&CK technique id.
    pub(crate) mitre: &'a str,
    /// Human label of the attack.
    pub(crate) attack_type: &'a str,
    /// The client.
    pub(crate) src: &'a str,
    /// The normalised path.
    #[serde(serialize_with = "ser_capped")]
    pub(crate) uri_path: &'a str,
    /// The request method.
    #[serde(serialize_with = "ser_capped")]
    pub(crate) http_method: &'a str,
    /// The request field that carried the value (`model`, `destination`, … or `source`).
    pub(crate) field: &'a str,
    /// The offending value, as sent (at most 256 bytes).
    pub(crate) value: &'a str,
    /// How serious.
    pub(crate) severity: Severity,
    /// What was done: `would_block` (monitor), `blocked` or `banned`.
    pub(crate) action: Action,
    /// Risk-based alerting fields (see [`Risk`]).
    #[serde(flatten)]
    pub(crate) risk: Risk,
    /// Verdicts of this rule against this source since its previous line and not logged (one
    /// line per source and rule per minute, a `banned` one always).
    pub(crate) since_last: u64,
}

impl<'a> PolicyFinding<'a> {
    /// The risk fields of a policy verdict against `src` (the object is always the system).
    pub(crate) fn risk_of(
        rule: &str,
        src: &str,
        uri_path: &str,
        http_method: &str,
        field: &str,
        value: &str,
    ) -> Risk {
        let (score, template) = crate::policy::risk(rule);
        let message = render_template(template, |name| match name {
            "src" | "risk_object" => Some(src.to_owned()),
            "rule" => Some(rule.to_owned()),
            "uri_path" => Some(uri_path.to_owned()),
            "http_method" => Some(http_method.to_owned()),
            "field" => Some(field.to_owned()),
            "value" => Some(value.to_owned()),
            _ => None,
        });
        Risk {
            risk_object: src.to_owned(),
            risk_object_type: "system",
            risk_score: score,
            risk_message: message,
        }
    }
}

/// Risk-based alerting (Splunk ES risk framework) fields of a `detection`: what the risk
/// index needs to attribute a score to an object. Written last on the line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Risk {
    /// The source address (`system`), or the identity for identity-keyed detections (`user`).
    pub(crate) risk_object: String,
    /// `system` or `user`.
    pub(crate) risk_object_type: &'static str,
    /// The rule's `risk_score` (1..=100).
    pub(crate) risk_score: u32,
    /// The rule's template rendered with the event's values.
    pub(crate) risk_message: String,
}

/// `template` with every `$name$` replaced by `value(name)`, `-` when it has none (an
/// unknown name is left as written).
pub(crate) fn render_template(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('$') {
            Some(end)
                if !after[..end].is_empty()
                    && after[..end]
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_') =>
            {
                let name = &after[..end];
                match value(name) {
                    Some(v) => out.push_str(&v),
                    None if KNOWN_FIELDS.contains(&name) => out.push('-'),
                    None => {
                        out.push('$');
                        out.push_str(name);
                        out.push('$');
                    }
                }
                rest = &after[end + 1..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The names a template may use (`-` when the event has no value for one).
const KNOWN_FIELDS: [&str; 18] = [
    "rule",
    "attack_type",
    "src",
    "identity",
    "uri_path",
    "http_method",
    "window_start",
    "window_end",
    "count",
    "bytes",
    "avg_response_time",
    "max_response_time",
    "severity",
    "action",
    "risk_object",
    "risk_score",
    "field",
    "value",
];

/// The fields of a `detection` or `window_summary` event: the engine's figures and what was
/// done about them.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Finding<'a> {
    /// The rule's name.
    pub(crate) rule: &'a str,
    /// The Splunk ESCU detection id the rule mirrors (`null` when none).
    pub(crate) escu_id: Option<&'a str>,
    /// MITRE ATT&CK technique id(s) (`null` when none).
    pub(crate) mitre: Option<&'a str>,
    /// Human label of the attack.
    pub(crate) attack_type: &'a str,
    /// The source: IPv4 address, IPv6 address or IPv6 network.
    pub(crate) src: &'a str,
    /// The caller's identity (API key name): the key's identity for rules grouped by
    /// identity, else the identity of the request that crossed the threshold (detections
    /// only); absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) identity: Option<&'a str>,
    /// The normalised path; absent for rules grouped by source only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) uri_path: Option<&'a str>,
    /// The method of the key's first qualifying request in the window.
    pub(crate) http_method: &'a str,
    /// Start of the window.
    #[serde(serialize_with = "ser_time")]
    pub(crate) window_start: DateTime<Utc>,
    /// End of the window (exclusive).
    #[serde(serialize_with = "ser_time")]
    pub(crate) window_end: DateTime<Utc>,
    /// Qualifying requests counted.
    pub(crate) count: u64,
    /// Bytes counted, for volume rules (`metric = "bytes_out"` / `"bytes_in"`); absent for
    /// count rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bytes: Option<u64>,
    /// Mean latency in seconds, 2 decimals.
    pub(crate) avg_response_time: f64,
    /// Largest latency in seconds, 2 decimals.
    pub(crate) max_response_time: f64,
    /// Severity from the rounded figures.
    pub(crate) severity: Severity,
    /// What was done.
    pub(crate) action: Action,
    /// `true` on a `detection` of a request still running (it passed the rule's
    /// `min_latency`); absent otherwise, so lines of completed requests are unchanged.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) in_flight: bool,
    /// Risk-based alerting fields: on `detection` events only (a `window_summary` would
    /// count the same finding twice in the risk index).
    #[serde(flatten)]
    pub(crate) risk: Option<Risk>,
}

impl<'a> Finding<'a> {
    /// The fields of verdict `d`, with what was done about it.
    pub(crate) fn new(d: &'a DetectionEvent, action: Action) -> Self {
        Finding {
            rule: &d.rule,
            escu_id: d.escu_id.as_deref(),
            mitre: d.mitre.as_deref(),
            attack_type: &d.attack_type,
            src: &d.src,
            identity: d.identity.as_deref(),
            uri_path: d.uri_path.as_deref(),
            http_method: d.http_method,
            window_start: d.window_start,
            window_end: d.window_end,
            count: d.count,
            bytes: d.bytes,
            avg_response_time: d.avg_response_time,
            max_response_time: d.max_response_time,
            severity: d.severity,
            action,
            in_flight: d.in_flight,
            risk: None,
        }
    }

    /// The fields of a `detection` of verdict `d`: [`Finding::new`] with the risk fields.
    pub(crate) fn detection(d: &'a DetectionEvent, action: Action) -> Self {
        let mut f = Finding::new(d, action);
        let (object, object_type) = match (&d.identity, d.by_identity) {
            (Some(id), true) => (id.to_string(), "user"),
            _ => (d.src.clone(), "system"),
        };
        let template = crate::detect::builtin::risk_message_template(&d.rule);
        let message = render_template(template, |name| f.value(name, &object, d.risk_score));
        f.risk = Some(Risk {
            risk_object: object,
            risk_object_type: object_type,
            risk_score: d.risk_score,
            risk_message: message,
        });
        f
    }

    /// The text of field `name` in a risk message.
    fn value(&self, name: &str, object: &str, score: u32) -> Option<String> {
        Some(match name {
            "rule" => self.rule.to_owned(),
            "attack_type" => self.attack_type.to_owned(),
            "src" => self.src.to_owned(),
            "identity" => self.identity?.to_owned(),
            "uri_path" => self.uri_path?.to_owned(),
            "http_method" => self.http_method.to_owned(),
            "window_start" => stamp(&self.window_start),
            "window_end" => stamp(&self.window_end),
            "count" => self.count.to_string(),
            "bytes" => self.bytes?.to_string(),
            "avg_response_time" => self.avg_response_time.to_string(),
            "max_response_time" => self.max_response_time.to_string(),
            "severity" => self.severity.as_str().to_owned(),
            "action" => self.action.as_str().to_owned(),
            "risk_object" => object.to_owned(),
            "risk_score" => score.to_string(),
            _ => return None,
        })
    }
}

/// The fields of a `ban` event (and the first fields of an `unban`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BanEvent<'a> {
    /// The banned source as displayed (`192.0.2.1`, `2001:db8:1:2::/64`); absent for the
    /// ban of an identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) src: Option<String>,
    /// The banned identity (an API key's name); absent for the ban of an address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) identity: Option<&'a str>,
    /// When the ban ends (for an `unban`, when it was scheduled to end, or the lift).
    #[serde(serialize_with = "ser_time")]
    pub(crate) until: DateTime<Utc>,
    /// Why, in words.
    pub(crate) reason: &'a str,
    /// Which offence of this source within the ban memory.
    pub(crate) offence: u32,
    /// Restored from `state_dir` at start-up rather than started now.
    pub(crate) restored: bool,
    /// The rule that banned, or `admin`.
    pub(crate) rule: &'a str,
    /// `[cluster]`: the replica that made the ban, when it was made by another one and
    /// applied here from Redis (absent for bans made by this replica).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) origin: Option<&'a str>,
}

/// Why a ban ended: the `ended` field of `unban`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Ended {
    /// Its time ran out.
    Expired,
    /// Lifted through the admin API.
    Admin,
    /// Lifted because a reload extended the allowlist over it.
    Allowlist,
}

/// The fields of an `unban` event: the ban that ended, and why.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct UnbanEvent<'a> {
    /// The ban (`restored` is always `false`).
    #[serde(flatten)]
    pub(crate) ban: BanEvent<'a>,
    /// Why it ended.
    pub(crate) ended: Ended,
}

/// The fields of a `blocked` event.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BlockedEvent<'a> {
    /// The ban's source as displayed (the ban's network, not the client's address); for the
    /// ban of an identity, the client's address.
    pub(crate) src: &'a str,
    /// The banned identity, when the ban is an identity's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) identity: Option<&'a str>,
    /// The refused request's path.
    #[serde(serialize_with = "ser_capped")]
    pub(crate) uri_path: &'a str,
    /// The refused request's method.
    #[serde(serialize_with = "ser_capped")]
    pub(crate) http_method: &'a str,
    /// Requests refused under this ban since the previous `blocked` event and not logged.
    pub(crate) blocked_since_last: u64,
    /// The rule that banned, or `admin`.
    pub(crate) rule: &'a str,
}

/// The fields of an `aborted` event.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AbortedEvent<'a> {
    /// The client whose request was cut.
    pub(crate) src: &'a str,
    /// The caller's identity (API key name), when `[auth]` named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) identity: Option<&'a str>,
    /// The request's path.
    #[serde(serialize_with = "ser_capped")]
    pub(crate) uri_path: &'a str,
    /// The request's method.
    #[serde(serialize_with = "ser_capped")]
    pub(crate) http_method: &'a str,
    /// The rule whose ban cut it, or `admin`.
    pub(crate) rule: &'a str,
}

/// The fields of an `auth` event.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AuthEvent<'a> {
    /// The client.
    pub(crate) src: &'a str,
    /// The key's name, when a valid key lacked the role (`reason = "role"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) identity: Option<&'a str>,
    /// The request's path.
    #[serde(serialize_with = "ser_capped")]
    pub(crate) uri_path: &'a str,
    /// The request's method.
    #[serde(serialize_with = "ser_capped")]
    pub(crate) http_method: &'a str,
    /// The status `required` answers: 401 (no valid key) or 403 (role).
    pub(crate) status: u16,
    /// `missing_key`, `invalid_key`, `expired_key` or `role`.
    pub(crate) reason: &'a str,
    /// `refused` (`auth.mode = "required"`) or `would_refuse` (`observe`).
    pub(crate) action: &'a str,
    /// Requests of this source refused (or noted) since its previous `auth` event and not
    /// logged.
    pub(crate) since_last: u64,
}

/// RFC 3339 UTC with milliseconds, the one time format of the log.
pub(super) fn stamp(t: &DateTime<Utc>) -> String {
    crate::time::rfc3339_ms(t)
}

/// A request's path or method as a client sent it, cut to its first KiB (as the rules' path
/// texts are): one client's request must not make a line Splunk truncates, nor multiply the
/// log's volume.
fn ser_capped<S: Serializer>(text: &&str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::detect::paths::capped_cow(text))
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&stamp(t))
}
