//! The JSON-lines detection log (SPEC §5): one object per line, schema
//! `ollama-guard.detection.v1`, written through a [`LogWriter`] so a slow disk never
//! stalls the proxy.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::LogWriter;
use crate::detect::Event;

/// The `schema` value of every line.
pub const SCHEMA: &str = "ollama-guard.detection.v1";

/// Writes detection-log lines.
#[derive(Clone)]
pub struct DetectionLog {
    writer: LogWriter,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Renders one line: the common fields first, then `fields` in their order.
pub fn render(now: DateTime<Utc>, event: &str, fields: Map<String, Value>) -> String {
    let mut line = String::with_capacity(512);
    line.push_str("{\"schema\":\"");
    line.push_str(SCHEMA);
    line.push_str("\",\"time\":\"");
    line.push_str(&stamp(now));
    line.push_str("\",\"event\":");
    line.push_str(&Value::from(event).to_string());
    for (k, v) in fields {
        line.push(',');
        line.push_str(&Value::from(k).to_string());
        line.push(':');
        line.push_str(&v.to_string());
    }
    line.push('}');
    line
}

/// The line of a `detection` or `window_summary` event; `banned` says what was done.
pub fn event_line(now: DateTime<Utc>, event: &Event, banned: bool) -> String {
    let mut fields = match serde_json::to_value(event.detail()) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    fields.insert(
        "action".into(),
        Value::from(if banned { "banned" } else { "logged" }),
    );
    render(now, event.kind(), fields)
}

impl DetectionLog {
    /// Wraps the writer of the detection log.
    pub fn new(writer: LogWriter) -> Self {
        DetectionLog { writer }
    }

    /// Logs a `detection` or `window_summary`.
    pub fn event(&self, now: DateTime<Utc>, event: &Event, banned: bool) {
        self.writer.write(event_line(now, event, banned));
    }

    /// Logs any other event (`ban`, `unban`, `blocked`) with its fields.
    pub fn other(&self, now: DateTime<Utc>, event: &str, fields: Map<String, Value>) {
        self.writer.write(render(now, event, fields));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{DetectionEvent, RuleAction, Severity};
    use chrono::TimeZone;

    #[test]
    fn detection_line_has_schema_time_event_and_spec_fields() {
        let t = |s| Utc.timestamp_opt(s, 0).unwrap();
        let ev = Event::Detection(DetectionEvent {
            rule: "model_exfiltration".into(),
            escu_id: Some("c9fd1a54-0eab-4470-8970-d5fcc3c740fb".into()),
            mitre: Some("T1048".into()),
            attack_type: "Potential Data Exfiltration".into(),
            src: "192.168.1.50".into(),
            uri_path: Some("/api/show".into()),
            http_method: "POST",
            window_start: t(1_759_416_300),
            window_end: t(1_759_417_200),
            count: 1,
            avg_response_time: 57.2,
            max_response_time: 57.2,
            severity: Severity::High,
            action: RuleAction::Default,
        });
        let line = event_line(t(1_759_416_450), &ev, false);
        assert!(line.starts_with(
            r#"{"schema":"ollama-guard.detection.v1","time":"2025-10-02T14:47:30.000Z","event":"detection","#
        ));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["action"], "logged");
        assert_eq!(v["uri_path"], "/api/show");
        assert_eq!(v["window_start"], "2025-10-02T14:45:00.000Z");
        assert_eq!(v["window_end"], "2025-10-02T15:00:00.000Z");
        assert_eq!(v["avg_response_time"], 57.2);
        assert_eq!(v["severity"], "high");
        assert_eq!(v["escu_id"], "c9fd1a54-0eab-4470-8970-d5fcc3c740fb");
        let banned: Value = serde_json::from_str(&event_line(t(0), &ev, true)).unwrap();
        assert_eq!(banned["action"], "banned");
    }
}
