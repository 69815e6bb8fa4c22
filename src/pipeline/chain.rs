//! The telemetry stage of the record pipeline: metrics and the access log, then the next
//! stage (detection).

use std::sync::Arc;

use crate::config::AccessLogFormat;
use crate::record::{RecordSink, RequestRecord};

use super::{access_log, LogWriter, Metrics};

/// Counts every record, writes it to the access log, and passes it on.
pub struct TelemetrySink {
    metrics: Arc<Metrics>,
    access: Option<(LogWriter, AccessLogFormat)>,
    next: Arc<dyn RecordSink>,
}

impl TelemetrySink {
    /// Builds the stage; `next` receives every record after telemetry saw it.
    pub fn new(
        metrics: Arc<Metrics>,
        access: Option<(LogWriter, AccessLogFormat)>,
        next: Arc<dyn RecordSink>,
    ) -> Self {
        TelemetrySink {
            metrics,
            access,
            next,
        }
    }
}

impl RecordSink for TelemetrySink {
    fn record(&self, record: RequestRecord) {
        self.metrics.observe(&record);
        if let Some((log, format)) = &self.access {
            log.write(access_log::format_line(*format, &record));
        }
        self.next.record(record);
    }
}
