//! Telemetry: Prometheus metrics, the access log and the detection log.

pub(crate) mod access_log;
pub(crate) mod auth_metrics;
pub(crate) mod buffered;
pub(crate) mod cluster_metrics;
pub(crate) mod detection_log;
pub(crate) mod log_event;
pub(crate) mod logfile;
pub(crate) mod metrics;
pub(crate) mod splunk_hec;
pub(crate) mod throttle;

pub(crate) use auth_metrics::IdentityCounter;
pub(crate) use detection_log::DetectionLog;
pub(crate) use logfile::LogWriter;
pub(crate) use metrics::{Metrics, UpstreamErrorKind};
