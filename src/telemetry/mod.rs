//! Telemetry: Prometheus metrics, the access log and the detection log.

pub mod logfile;
pub mod metrics;

pub use logfile::LogWriter;
pub use metrics::{Metrics, UpstreamErrorKind};
