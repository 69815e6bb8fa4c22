//! The exact bytes of every event kind (field names and order are the log's contract), and
//! the schema in `docs/detection-log.schema.json` checked against each of them.

use chrono::TimeZone;
use serde_json::Value;

use super::*;
use crate::detect::event::RuleAction;
use crate::detect::{DetectionEvent, Severity};
use crate::telemetry::log_event::{
    Action, BanEvent, BlockedEvent, Ended, Finding, LogEvent, PolicyFinding, UnbanEvent,
};

/// The schema of the detection log, as shipped in `docs/`.
pub(crate) const SCHEMA_JSON: &str = include_str!("../../../docs/detection-log.schema.json");

/// A validator for the shipped schema (itself checked against the 2020-12 meta-schema).
pub(crate) fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(SCHEMA_JSON).unwrap();
    jsonschema::draft202012::meta::validate(&schema).unwrap();
    jsonschema::draft202012::new(&schema).unwrap()
}

/// Panics with every violation unless `line` is a valid detection-log line.
pub(crate) fn assert_valid(validator: &jsonschema::Validator, line: &str) {
    let v: Value = serde_json::from_str(line).unwrap();
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{line}\nviolates the schema: {errors:#?}"
    );
}

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(s, 0).unwrap()
}

fn verdict(uri_path: Option<&str>, escu: bool) -> DetectionEvent {
    DetectionEvent {
        rule: "model_exfiltration".into(),
        escu_id: escu.then(|| "c9fd1a54-0eab-4470-8970-d5fcc3c740fb".into()),
        mitre: escu.then(|| "T1048".into()),
        attack_type: "Potential Data Exfiltration".into(),
        src: "192.168.1.50".into(),
        identity: None,
        by_identity: false,
        uri_path: uri_path.map(str::to_owned),
        http_method: "POST",
        window_start: t(1_759_416_300),
        window_end: t(1_759_417_200),
        count: 2,
        bytes: None,
        avg_response_time: 57.2,
        max_response_time: 58.0,
        severity: Severity::High,
        action: RuleAction::Default,
        in_flight: false,
        risk_score: 20,
    }
}

fn ban() -> BanEvent<'static> {
    BanEvent {
        src: Some("2001:db8:1:2::/64".into()),
        identity: None,
        until: t(1_759_417_200),
        reason: "too many",
        offence: 2,
        restored: false,
        rule: "model_exfiltration",
        origin: None,
    }
}

const HEAD: &str = r#"{"schema":"ollama-guard.detection.v1","time":"2025-10-02T14:47:30.000Z","#;

#[test]
fn every_event_kind_renders_its_documented_fields_in_order() {
    let now = t(1_759_416_450);
    let d = verdict(Some("/api/show"), true);
    let bare = verdict(None, false);
    let finding = concat!(
        r#""rule":"model_exfiltration","escu_id":"c9fd1a54-0eab-4470-8970-d5fcc3c740fb","#,
        r#""mitre":"T1048","attack_type":"Potential Data Exfiltration","src":"192.168.1.50","#,
        r#""uri_path":"/api/show","http_method":"POST","window_start":"2025-10-02T14:45:00.000Z","#,
        r#""window_end":"2025-10-02T15:00:00.000Z","count":2,"avg_response_time":57.2,"#,
        r#""max_response_time":58.0,"severity":"high","#
    );
    let cases: Vec<(LogEvent<'_>, String)> = vec![
        (
            LogEvent::Detection(Finding::detection(&d, Action::Logged)),
            format!(
                r#"{HEAD}"event":"detection",{finding}"action":"logged","risk_object":"192.168.1.50","risk_object_type":"system","risk_score":20,"risk_message":"Potential model data exfiltration detected from 192.168.1.50 with 57.2 seconds average response time on /api/show"}}"#
            ),
        ),
        (
            LogEvent::WindowSummary(Finding::new(&d, Action::Banned)),
            format!(r#"{HEAD}"event":"window_summary",{finding}"action":"banned"}}"#),
        ),
        (
            LogEvent::Detection(Finding::detection(&bare, Action::Logged)),
            format!(
                r#"{HEAD}"event":"detection","rule":"model_exfiltration","escu_id":null,"mitre":null,"attack_type":"Potential Data Exfiltration","src":"192.168.1.50","http_method":"POST","window_start":"2025-10-02T14:45:00.000Z","window_end":"2025-10-02T15:00:00.000Z","count":2,"avg_response_time":57.2,"max_response_time":58.0,"severity":"high","action":"logged","risk_object":"192.168.1.50","risk_object_type":"system","risk_score":20,"risk_message":"Potential model data exfiltration detected from 192.168.1.50 with 57.2 seconds average response time on -"}}"#
            ),
        ),
        (
            LogEvent::Ban(ban()),
            format!(
                r#"{HEAD}"event":"ban","src":"2001:db8:1:2::/64","until":"2025-10-02T15:00:00.000Z","reason":"too many","offence":2,"restored":false,"rule":"model_exfiltration"}}"#
            ),
        ),
        (
            LogEvent::Unban(UnbanEvent {
                ban: ban(),
                ended: Ended::Allowlist,
            }),
            format!(
                r#"{HEAD}"event":"unban","src":"2001:db8:1:2::/64","until":"2025-10-02T15:00:00.000Z","reason":"too many","offence":2,"restored":false,"rule":"model_exfiltration","ended":"allowlist"}}"#
            ),
        ),
        (
            LogEvent::Blocked(BlockedEvent {
                src: "192.0.2.7",
                identity: None,
                uri_path: "/api/pull",
                http_method: "POST",
                blocked_since_last: 41,
                rule: "admin",
            }),
            format!(
                r#"{HEAD}"event":"blocked","src":"192.0.2.7","uri_path":"/api/pull","http_method":"POST","blocked_since_last":41,"rule":"admin"}}"#
            ),
        ),
    ];
    let validator = validator();
    for (event, want) in &cases {
        let line = render(now, event).unwrap();
        assert_eq!(&line, want);
        assert_valid(&validator, &line);
    }
}

/// A client's own path and method are cut to their first KiB in the events that carry them as
/// sent (`blocked`, `aborted`, `auth`): a 64 KiB path made a 65 KB `blocked` line and a path
/// of control characters a 126 KB `auth` line, over what Splunk reads of one event.
#[test]
fn a_client_s_long_path_and_method_are_cut_to_a_kib() {
    use crate::telemetry::log_event::{AbortedEvent, AuthEvent};
    let path = format!("/api/{}", "\u{1}".repeat(21_000));
    let method = "M".repeat(5_000);
    let cut_path = format!("/api/{}…", "\u{1}".repeat(1019));
    let cut_method = format!("{}…", "M".repeat(1024));
    let events = [
        LogEvent::Blocked(BlockedEvent {
            src: "192.0.2.7",
            identity: None,
            uri_path: &path,
            http_method: &method,
            blocked_since_last: 0,
            rule: "admin",
        }),
        LogEvent::Aborted(AbortedEvent {
            src: "192.0.2.7",
            identity: None,
            uri_path: &path,
            http_method: &method,
            rule: "admin",
        }),
        LogEvent::Auth(AuthEvent {
            src: "192.0.2.7",
            identity: None,
            uri_path: &path,
            http_method: &method,
            status: 401,
            reason: "missing_key",
            action: "refused",
            since_last: 0,
        }),
    ];
    let validator = validator();
    for event in &events {
        let line = render(t(0), event).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["uri_path"], Value::from(cut_path.as_str()), "{line:.200}");
        assert_eq!(v["http_method"], Value::from(cut_method.as_str()));
        assert!(line.len() < 8_000, "{}", line.len());
        assert_valid(&validator, &line);
    }
}

#[test]
fn the_schema_refuses_unknown_fields_kinds_and_values() {
    let validator = validator();
    let d = verdict(Some("/api/show"), true);
    let line = render(
        t(0),
        &LogEvent::Detection(Finding::detection(&d, Action::Logged)),
    )
    .unwrap();
    let good: Value = serde_json::from_str(&line).unwrap();
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    for bad in [
        broken(&|v| v["extra"] = Value::from(1)),
        broken(&|v| v["severity"] = Value::from("critical")),
        broken(&|v| v["action"] = Value::from("default")),
        broken(&|v| v["event"] = Value::from("aborted")),
        broken(&|v| v["time"] = Value::from("2025-10-02T14:47:30Z")),
        broken(&|v| drop(v.as_object_mut().unwrap().remove("count"))),
        broken(&|v| v["risk_score"] = Value::from(0)),
        broken(&|v| v["risk_object_type"] = Value::from("host")),
    ] {
        assert!(!validator.is_valid(&bad), "accepted {bad}");
    }
    assert!(validator.is_valid(&good));
}

#[test]
fn a_policy_verdict_is_a_detection_with_the_offending_value_and_matches_the_schema() {
    let v = validator();
    for (action, text) in [
        (Action::WouldBlock, "would_block"),
        (Action::Blocked, "blocked"),
        (Action::Banned, "banned"),
    ] {
        let line = render(
            t(1_759_416_450),
            &LogEvent::Policy(PolicyFinding {
                rule: "policy.registry_push",
                mitre: "T1048",
                attack_type: "Model Theft via Push to Foreign Registry",
                src: "192.0.2.9",
                uri_path: "/api/push",
                http_method: "POST",
                field: "model",
                value: "attacker.example/x/y",
                severity: Severity::High,
                action,
                risk: PolicyFinding::risk_of(
                    "policy.registry_push",
                    "192.0.2.9",
                    "/api/push",
                    "POST",
                    "model",
                    "attacker.example/x/y",
                ),
                since_last: 3,
            }),
        )
        .unwrap();
        assert_eq!(
            line,
            format!(
                "{HEAD}\"event\":\"detection\",\"rule\":\"policy.registry_push\",\"mitre\":\"T1048\",\"attack_type\":\"Model Theft via Push to Foreign Registry\",\"src\":\"192.0.2.9\",\"uri_path\":\"/api/push\",\"http_method\":\"POST\",\"field\":\"model\",\"value\":\"attacker.example/x/y\",\"severity\":\"high\",\"action\":\"{text}\",\"risk_object\":\"192.0.2.9\",\"risk_object_type\":\"system\",\"risk_score\":80,\"risk_message\":\"Model push to a foreign registry refused: 192.0.2.9 asked POST /api/push with model = attacker.example/x/y\",\"since_last\":3}}"
            )
        );
        assert_valid(&v, &line);
    }
}

#[test]
fn identity_follows_src_in_detections_and_summaries_and_matches_the_schema() {
    let v = validator();
    let d = DetectionEvent {
        identity: Some("ci-runner".into()),
        by_identity: true,
        ..verdict(None, false)
    };
    let risk = r#","risk_object":"ci-runner","risk_object_type":"user","risk_score":20,"risk_message":"Potential model data exfiltration detected from 192.168.1.50 with 57.2 seconds average response time on -""#;
    for (event, kind, tail) in [
        (
            LogEvent::Detection(Finding::detection(&d, Action::Logged)),
            "detection",
            risk,
        ),
        (
            LogEvent::WindowSummary(Finding::new(&d, Action::Logged)),
            "window_summary",
            "",
        ),
    ] {
        let line = render(t(1_759_416_450), &event).unwrap();
        assert_eq!(
            line,
            format!(
                r#"{HEAD}"event":"{kind}","rule":"model_exfiltration","escu_id":null,"mitre":null,"attack_type":"Potential Data Exfiltration","src":"192.168.1.50","identity":"ci-runner","http_method":"POST","window_start":"2025-10-02T14:45:00.000Z","window_end":"2025-10-02T15:00:00.000Z","count":2,"avg_response_time":57.2,"max_response_time":58.0,"severity":"high","action":"logged"{tail}}}"#
            )
        );
        assert_valid(&v, &line);
        let mut bad: Value = serde_json::from_str(&line).unwrap();
        bad["identity"] = Value::from(7);
        assert!(!v.is_valid(&bad), "accepted {bad}");
        bad["identity"] = Value::from("");
        assert!(!v.is_valid(&bad), "accepted {bad}");
    }
}

/// The risk fields of a `detection` of each built-in rule, from the rule's own score and
/// message template.
#[test]
fn every_built_in_rule_has_its_risk_score_and_message() {
    let rules = crate::detect::build_rules(&crate::detect::builtin::default_rules()).unwrap();
    let score = |name: &str| {
        rules
            .iter()
            .find(|r| &**r.name() == name)
            .map(|r| r.risk_score())
            .unwrap()
    };
    let w = "2025-10-02T14:45:00.000Z";
    let cases = [
        ("model_exfiltration", Some("/api/generate"), None, 20, "Potential model data exfiltration detected from 192.168.1.50 with 57.2 seconds average response time on /api/generate".to_owned()),
        ("metadata_enumeration", None, None, 15, format!("Model metadata enumeration from 192.168.1.50: 2 metadata queries since {w}")),
        ("jailbreak_long_generation", None, None, 25, format!("Possible prompt injection or jailbreak from 192.168.1.50: 2 long generations since {w}, longest 58 seconds")),
        ("excessive_requests", None, None, 40, format!("Excessive API requests from 192.168.1.50: 2 requests since {w}")),
        ("endpoint_scan", None, None, 30, format!("Possible API endpoint scan from 192.168.1.50: 2 requests since {w}")),
        ("bulk_generation", None, Some(33_554_432), 50, format!("Bulk generation (possible distillation) by 192.168.1.50: 33554432 bytes of model output since {w}")),
        ("auth_failures", None, None, 60, format!("API key spray from 192.168.1.50: 2 requests refused for a missing or unknown key since {w}")),
    ];
    assert_eq!(cases.len(), rules.len());
    for (rule, path, bytes, want_score, want_message) in cases {
        assert_eq!(score(rule), want_score, "{rule}");
        let d = DetectionEvent {
            rule: rule.into(),
            bytes,
            risk_score: score(rule),
            ..verdict(path, false)
        };
        let f = Finding::detection(&d, Action::Logged);
        let risk = f.risk.clone().unwrap();
        assert_eq!(
            (
                risk.risk_object.as_str(),
                risk.risk_object_type,
                risk.risk_score,
                risk.risk_message.as_str()
            ),
            ("192.168.1.50", "system", want_score, want_message.as_str()),
            "{rule}"
        );
        assert_valid(
            &validator(),
            &render(t(1_759_416_450), &LogEvent::Detection(f)).unwrap(),
        );
    }
}

#[test]
fn an_override_sets_the_risk_score_and_a_rule_of_ones_own_gets_the_generic_message() {
    let overrides: std::collections::BTreeMap<String, crate::detect::RuleOverride> =
        toml::from_str("[model_exfiltration]\nrisk_score = 55").unwrap();
    let rules =
        crate::detect::build_rules(&crate::detect::effective_rules(&[], &overrides).unwrap())
            .unwrap();
    assert_eq!(rules[0].risk_score(), 55);
    assert_eq!(rules[1].risk_score(), 15);
    let d = DetectionEvent {
        risk_score: rules[0].risk_score(),
        ..verdict(Some("/api/chat"), true)
    };
    let line = render(
        t(1_759_416_450),
        &LogEvent::Detection(Finding::detection(&d, Action::Banned)),
    )
    .unwrap();
    assert!(line.ends_with(r#""action":"banned","risk_object":"192.168.1.50","risk_object_type":"system","risk_score":55,"risk_message":"Potential model data exfiltration detected from 192.168.1.50 with 57.2 seconds average response time on /api/chat"}"#), "{line}");
    let own = DetectionEvent {
        rule: "my_rule".into(),
        attack_type: "Odd Traffic".into(),
        identity: Some("ci-runner".into()),
        by_identity: true,
        ..verdict(None, false)
    };
    let risk = Finding::detection(&own, Action::Logged).risk.unwrap();
    assert_eq!(risk.risk_object, "ci-runner");
    assert_eq!(risk.risk_object_type, "user");
    assert_eq!(risk.risk_score, 20);
    assert_eq!(
        risk.risk_message,
        "Odd Traffic detected from ci-runner by rule my_rule: 2 requests since 2025-10-02T14:45:00.000Z"
    );
    for bad in [0, 101] {
        let cfg = crate::detect::RuleConfig {
            name: "r".into(),
            risk_score: Some(bad),
            ..Default::default()
        };
        assert_eq!(
            crate::detect::build_rules(&[cfg]).unwrap_err().to_string(),
            format!("rule[r].risk_score: {bad} must be between 1 and 100")
        );
    }
}

#[test]
fn policy_rules_score_by_what_they_stop() {
    let scores: Vec<(&str, u32)> = crate::policy::RULES
        .iter()
        .map(|r| (*r, crate::policy::risk(r).0))
        .collect();
    assert_eq!(
        scores,
        [
            ("policy.manage_from", 60),
            ("policy.registry_pull", 60),
            ("policy.registry_push", 80),
            ("policy.insecure", 60),
            ("policy.create_from_path", 70),
            ("policy.create_remote_host", 70),
            ("policy.copy_destination", 80),
            ("policy.debug_render_only", 40),
            ("policy.body_too_large", 30),
            ("policy.unreadable_body", 30),
        ]
    );
    let r = PolicyFinding::risk_of(
        "policy.body_too_large",
        "10.0.0.1",
        "/api/create",
        "POST",
        "body",
        "2097152 bytes",
    );
    assert_eq!(
        r.risk_message,
        "Oversized model-management request from 10.0.0.1 on /api/create (body = 2097152 bytes)"
    );
    let r = PolicyFinding::risk_of(
        "policy.manage_from",
        "10.0.0.1",
        "/api/pull",
        "POST",
        "source",
        "10.0.0.1",
    );
    assert_eq!(
        r.risk_message,
        "Model management from an unauthorised network: 10.0.0.1 called POST /api/pull"
    );
}

#[test]
fn templates_fill_known_names_and_leave_the_rest() {
    use crate::telemetry::log_event::render_template;
    let v = |n: &str| (n == "src").then(|| "1.2.3.4".to_owned());
    assert_eq!(
        render_template("from $src$ on $uri_path$ costs $5 $x$ $", v),
        "from 1.2.3.4 on - costs $5 $x$ $"
    );
}

/// A client's path with marks that reorder or hide text is logged with them escaped; a JSON
/// reader gets the same value.
#[test]
fn marks_that_reorder_or_hide_text_are_written_as_escapes() {
    use crate::telemetry::log_event::BlockedEvent;
    let path = "/api/\u{202e}wohs\u{200b}\u{85}\u{7f}\u{e0041}\u{2028}é/\u{1}\u{ad}\u{fe0f}";
    let event = LogEvent::Blocked(BlockedEvent {
        src: "192.0.2.7",
        identity: None,
        uri_path: path,
        http_method: "GET",
        blocked_since_last: 0,
        rule: "admin",
    });
    let line = render(t(0), &event).unwrap();
    assert!(
        line.contains(
            r#""uri_path":"/api/\u202ewohs\u200b\u0085\u007f\udb40\udc41\u2028é/\u0001\u00ad\ufe0f""#
        ),
        "{line}"
    );
    assert!(!line.chars().any(crate::text::hidden), "{line}");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["uri_path"], Value::from(path));
    assert_valid(&validator(), &line);
}
