//! The record pipeline: one home for what happens to a finished request after the proxy.
//!
//! ```text
//! proxy ──RequestRecord──▶ Chain (chain.rs)
//!                            ├─ TelemetryStage: metrics, access log
//!                            └─ DetectionStage (stage.rs): engine.observe
//!                                  │ verdicts (detection / window_summary)
//!                                  ▼
//!                               Verdicts (verdict.rs): decide ─▶ log ─▶ Enforcement::ban
//! ticker.rs: closes windows on wall-clock time (DetectionStage::tick), and reports
//!            running requests past a rule's min_latency (running.rs, in flight)
//! ```
//!
//! Who decides what:
//! - [`verdict::decide`] is the only place that decides whether a verdict bans: global mode
//!   (monitor/block) × the rule's action, then the trusted-proxy and allowlist exemptions.
//!   The `action` written (`logged` / `banned`) is what became of that decision.
//! - `enforce` is told to ban ([`Enforcement::ban`](crate::enforce::Enforcement::ban)); it
//!   keeps the table, its lifecycle, persistence and the gate, and writes the `ban`, `unban`
//!   and `blocked` events.
//! - Every detection-log line is a typed
//!   [`LogEvent`](crate::telemetry::log_event::LogEvent), serialised only by
//!   [`DetectionLog::write`](crate::telemetry::DetectionLog::write).
//!
//! Lines are written cause before effect: a `detection` before the `ban` it triggers, and
//! both before the ban reaches the gate, so before any `blocked` it causes.

mod auth;
mod chain;
mod policy;
mod running;
mod stage;
pub(crate) mod ticker;
pub(crate) mod verdict;

#[cfg(test)]
mod innocent_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub(crate) use chain::{Chain, TelemetryStage};
pub(crate) use stage::DetectionStage;

use crate::config::AccessLogFormat;
use crate::record::RecordSink;
use crate::telemetry::{LogWriter, Metrics};

/// The proxy's record sink: telemetry (with the access log, if configured), then `detection`.
pub(crate) fn chain(
    metrics: Arc<Metrics>,
    access: Option<(LogWriter, AccessLogFormat)>,
    splunk: Option<Arc<crate::telemetry::splunk_hec::HecSink>>,
    detection: Arc<DetectionStage>,
) -> Arc<dyn RecordSink> {
    Arc::new(Chain::new(
        TelemetryStage::new(metrics, access).with_splunk(splunk),
        detection,
    ))
}
