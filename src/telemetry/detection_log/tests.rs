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
            LogEvent::Detection(Finding::new(&d, Action::Logged)),
            format!(r#"{HEAD}"event":"detection",{finding}"action":"logged"}}"#),
        ),
        (
            LogEvent::WindowSummary(Finding::new(&d, Action::Banned)),
            format!(r#"{HEAD}"event":"window_summary",{finding}"action":"banned"}}"#),
        ),
        (
            LogEvent::Detection(Finding::new(&bare, Action::Logged)),
            format!(
                r#"{HEAD}"event":"detection","rule":"model_exfiltration","escu_id":null,"mitre":null,"attack_type":"Potential Data Exfiltration","src":"192.168.1.50","http_method":"POST","window_start":"2025-10-02T14:45:00.000Z","window_end":"2025-10-02T15:00:00.000Z","count":2,"avg_response_time":57.2,"max_response_time":58.0,"severity":"high","action":"logged"}}"#
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

#[test]
fn the_schema_refuses_unknown_fields_kinds_and_values() {
    let validator = validator();
    let d = verdict(Some("/api/show"), true);
    let line = render(t(0), &LogEvent::Detection(Finding::new(&d, Action::Logged))).unwrap();
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
            }),
        )
        .unwrap();
        assert_eq!(
            line,
            format!(
                "{HEAD}\"event\":\"detection\",\"rule\":\"policy.registry_push\",\"mitre\":\"T1048\",\"attack_type\":\"Model Theft via Push to Foreign Registry\",\"src\":\"192.0.2.9\",\"uri_path\":\"/api/push\",\"http_method\":\"POST\",\"field\":\"model\",\"value\":\"attacker.example/x/y\",\"severity\":\"high\",\"action\":\"{text}\"}}"
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
    for (event, kind) in [
        (
            LogEvent::Detection(Finding::new(&d, Action::Logged)),
            "detection",
        ),
        (
            LogEvent::WindowSummary(Finding::new(&d, Action::Logged)),
            "window_summary",
        ),
    ] {
        let line = render(t(1_759_416_450), &event).unwrap();
        assert_eq!(
            line,
            format!(
                r#"{HEAD}"event":"{kind}","rule":"model_exfiltration","escu_id":null,"mitre":null,"attack_type":"Potential Data Exfiltration","src":"192.168.1.50","identity":"ci-runner","http_method":"POST","window_start":"2025-10-02T14:45:00.000Z","window_end":"2025-10-02T15:00:00.000Z","count":2,"avg_response_time":57.2,"max_response_time":58.0,"severity":"high","action":"logged"}}"#
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
