//! The record chain: what the proxy's [`RecordSink`] is. Every finished request is seen by
//! telemetry first (metrics, access log: every request counts, whatever detection makes of
//! it), then by the detection stage.

use std::sync::Arc;

use crate::config::AccessLogFormat;
use crate::record::{RecordSink, RequestRecord};
use crate::telemetry::splunk_hec::HecSink;
use crate::telemetry::{access_log, LogWriter, Metrics};

use super::DetectionStage;

/// Counts every record and writes it to the access log.
pub(crate) struct TelemetryStage {
    metrics: Arc<Metrics>,
    access: Option<(LogWriter, AccessLogFormat)>,
    /// `[sinks.splunk_hec] requests = true`: one `ollama:api` event per record.
    splunk: Option<Arc<HecSink>>,
}

impl TelemetryStage {
    /// Counts in `metrics`; writes `access` lines when an access log is configured.
    pub(crate) fn new(metrics: Arc<Metrics>, access: Option<(LogWriter, AccessLogFormat)>) -> Self {
        TelemetryStage {
            metrics,
            access,
            splunk: None,
        }
    }

    /// Also hands every record to `sink` (when it wants per-request events).
    pub(crate) fn with_splunk(mut self, sink: Option<Arc<HecSink>>) -> Self {
        self.splunk = sink.filter(|s| s.wants_requests());
        self
    }

    fn observe(&self, record: &RequestRecord) {
        self.metrics.observe(record);
        if let Some((log, format)) = &self.access {
            log.write_with(|line| access_log::format_into(*format, record, line));
        }
        if let Some(sink) = &self.splunk {
            sink.request(record);
        }
    }
}

/// Telemetry, then detection, in that order.
pub(crate) struct Chain {
    telemetry: TelemetryStage,
    detection: Arc<DetectionStage>,
}

impl Chain {
    /// The chain of `telemetry` then `detection`.
    pub(crate) fn new(telemetry: TelemetryStage, detection: Arc<DetectionStage>) -> Self {
        Chain {
            telemetry,
            detection,
        }
    }
}

impl RecordSink for Chain {
    fn record(&self, record: RequestRecord) {
        self.telemetry.observe(&record);
        self.detection.record(record);
    }

    fn begin(&self, record: &RequestRecord, start: tokio::time::Instant) -> Option<u64> {
        self.detection.begin(record, start)
    }

    fn end(&self, ticket: u64) -> u64 {
        self.detection.end(ticket)
    }
}
