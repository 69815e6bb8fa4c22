//! Telemetry: Prometheus metrics, the access log and the detection log.

pub mod access_log;
pub mod detection_log;
pub mod logfile;
pub mod metrics;
pub mod sink;
pub mod throttle;

pub use detection_log::DetectionLog;
pub use logfile::LogWriter;
pub use metrics::{Metrics, UpstreamErrorKind};
pub use sink::TelemetrySink;
