//! Telemetry: Prometheus metrics, the access log and the detection log.

pub mod access_log;
pub mod detection_log;
pub mod log_event;
pub mod logfile;
pub mod metrics;
pub mod throttle;

pub use detection_log::DetectionLog;
pub use logfile::LogWriter;
pub use metrics::{Metrics, UpstreamErrorKind};
