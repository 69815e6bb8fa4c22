//! The JSON-lines detection log (README "Detection log", `docs/detection-log.md`): one
//! object per line, schema `ollama-guard.detection.v1`, written through a [`LogWriter`] so a
//! slow disk never stalls the proxy.
//!
//! [`DetectionLog::write`] is the only place a detection-log line is serialised: it wraps a
//! typed [`LogEvent`] in the `schema`/`time`/`event` envelope, so every line starts with the
//! same three fields whoever wrote it (the pipeline, enforcement, the gate).

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use super::log_event::{stamp, LogEvent};
use super::LogWriter;

/// The `schema` value of every line.
pub(crate) const SCHEMA: &str = "ollama-guard.detection.v1";

/// Writes detection-log lines.
#[derive(Clone)]
pub(crate) struct DetectionLog {
    writer: LogWriter,
    /// `[sinks.splunk_hec]`: every line is also handed to the HEC sink (never blocking).
    splunk: Option<std::sync::Arc<super::splunk_hec::HecSink>>,
}

/// One line: the envelope, then the event's kind and fields.
#[derive(Serialize)]
struct Envelope<'e, 'a> {
    schema: &'static str,
    #[serde(serialize_with = "ser_time")]
    time: DateTime<Utc>,
    #[serde(flatten)]
    event: &'e LogEvent<'a>,
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&stamp(t))
}

/// Renders `event`, logged at `now`, as one line (without the newline).
pub(crate) fn render(
    now: DateTime<Utc>,
    event: &LogEvent<'_>,
) -> Result<String, serde_json::Error> {
    crate::text::json_line(&Envelope {
        schema: SCHEMA,
        time: now,
        event,
    })
}

impl DetectionLog {
    /// Wraps the writer of the detection log.
    pub(crate) fn new(writer: LogWriter) -> Self {
        DetectionLog {
            writer,
            splunk: None,
        }
    }

    /// Also hands every line to the Splunk HEC sink.
    pub(crate) fn with_splunk(
        mut self,
        sink: Option<std::sync::Arc<super::splunk_hec::HecSink>>,
    ) -> Self {
        self.splunk = sink;
        self
    }

    /// Writes `event`, logged at `now`. Lines are written in the order of the calls, so a
    /// cause (a `detection`) is written before its effect (the `ban`) by calling in that order.
    pub(crate) fn write(&self, now: DateTime<Utc>, event: &LogEvent<'_>) {
        match render(now, event) {
            Ok(line) => {
                if let Some(sink) = &self.splunk {
                    sink.detection(now, &line);
                }
                self.writer.write(line);
            }
            // Only a failing custom serialiser could get here; none of the events has one.
            Err(e) => tracing::error!(error = %e, "cannot serialise a detection-log event"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
