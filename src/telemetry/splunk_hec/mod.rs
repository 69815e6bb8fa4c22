//! `[sinks.splunk_hec]`: every detection-log event (and, with `requests = true`, one
//! `ollama:api` event per finished request) delivered to a Splunk HTTP Event Collector.
//!
//! The proxy never waits on Splunk: [`HecSink::detection`] and [`HecSink::request`] build
//! the HEC envelope and hand it to a bounded queue with a non-blocking `try_send`; a full
//! queue drops the event and counts it (`ollama_guard_sink_dropped_total{sink="splunk_hec"}`).
//! The delivery loop ([`worker`]) runs on its own thread with its own runtime: it batches
//! (`batch_size` events or `batch_interval`), gzips, posts with `Authorization: Splunk
//! <token>`, retries with exponential backoff on 5xx, 429, timeouts and connection or TLS
//! errors, drops (and counts) a batch the HEC refuses with another 4xx (a configuration
//! error: bad token, disabled token, unknown index), and with `ack = true` polls
//! `/services/collector/ack` and re-sends what is not acknowledged in `ack_timeout`.

mod client;
mod worker;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{IntCounter, IntCounterVec};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::SplunkHec;
use crate::record::{Outcome, RequestRecord};

pub(crate) use client::HecClient;

/// The sourcetype of per-request events (the TA-ollama add-on's).
pub(crate) const API_SOURCETYPE: &str = "ollama:api";

/// The metric handles of the sink.
#[derive(Clone)]
pub(crate) struct SinkMetrics {
    /// Events delivered.
    pub(crate) sent: IntCounter,
    /// Events dropped.
    pub(crate) dropped: IntCounter,
    /// Failed attempts by kind (`sink_errors_total{sink="splunk_hec",kind}`).
    pub(crate) errors: IntCounterVec,
}

impl SinkMetrics {
    /// The `splunk_hec` series of `metrics`.
    pub(crate) fn of(metrics: &super::Metrics) -> Self {
        SinkMetrics {
            sent: metrics.sink_sent.with_label_values(&["splunk_hec"]),
            dropped: metrics.sink_dropped.with_label_values(&["splunk_hec"]),
            errors: metrics.sink_errors.clone(),
        }
    }

    pub(crate) fn error(&self, kind: &str) {
        self.errors.with_label_values(&["splunk_hec", kind]).inc();
    }
}

/// The handle the detection log and the record pipeline hand events to.
pub(crate) struct HecSink {
    tx: mpsc::Sender<String>,
    /// `,"host":…,"source":…,"sourcetype":…[,"index":…],"event":` for detection events.
    detection_fields: String,
    /// The same with `"sourcetype":"ollama:api"`.
    api_fields: String,
    /// `dest` of `ollama:api` events: the upstream `host:port`.
    dest: String,
    requests: bool,
    dropped: IntCounter,
    shutdown: watch::Sender<bool>,
    done: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for HecSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HecSink").finish_non_exhaustive()
    }
}

/// Why the sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The TLS configuration (roots, CA file) is unusable.
    #[error("sinks.splunk_hec: {0}")]
    Tls(String),
    /// The delivery thread could not be started.
    #[error("sinks.splunk_hec: cannot start the delivery thread: {0}")]
    Thread(std::io::Error),
}

impl HecSink {
    /// Starts the delivery thread for `config`; `dest` is the upstream `host:port`.
    pub(crate) fn start(
        config: &SplunkHec,
        dest: String,
        metrics: SinkMetrics,
    ) -> Result<Arc<HecSink>, SinkError> {
        let client = HecClient::new(config)?;
        let (tx, rx) = mpsc::channel(config.queue);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (done_tx, done_rx) = oneshot::channel();
        let dropped = metrics.dropped.clone();
        let worker = worker::Worker::new(config, client, rx, shutdown_rx, metrics);
        std::thread::Builder::new()
            .name("splunk-hec".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(worker.run()),
                    Err(e) => tracing::error!(error = %e, "splunk_hec: cannot start a runtime"),
                }
                let _ = done_tx.send(());
            })
            .map_err(SinkError::Thread)?;
        Ok(Arc::new(HecSink {
            tx,
            detection_fields: fields(config, &config.sourcetype),
            api_fields: fields(config, API_SOURCETYPE),
            dest,
            requests: config.requests,
            dropped,
            shutdown,
            done: std::sync::Mutex::new(Some(done_rx)),
            shutdown_timeout: config.shutdown_timeout,
        }))
    }

    /// Whether per-request `ollama:api` events are on.
    pub(crate) fn wants_requests(&self) -> bool {
        self.requests
    }

    /// Hands over the detection-log `line` (one JSON object) written at `now`.
    pub(crate) fn detection(&self, now: DateTime<Utc>, line: &str) {
        self.offer(envelope(now, &self.detection_fields, line));
    }

    /// Hands over the `ollama:api` event of a finished request.
    pub(crate) fn request(&self, record: &RequestRecord) {
        let event = ApiEvent::new(record, &self.dest);
        // Request events may fill only half the queue: while Splunk is slow or down, a flood
        // of them must not leave detection, ban and blocked events no room.
        if self.tx.capacity() * 2 <= self.tx.max_capacity() {
            self.dropped.inc();
            return;
        }
        match serde_json::to_string(&event) {
            Ok(json) => self.offer(envelope(record.completed_at, &self.api_fields, &json)),
            Err(e) => tracing::error!(error = %e, "cannot serialise an ollama:api event"),
        }
    }

    fn offer(&self, envelope: String) {
        if self.tx.try_send(envelope).is_err() {
            self.dropped.inc();
        }
    }

    /// Stops taking events, sends what is queued (for at most `shutdown_timeout`; what is
    /// left is counted as dropped) and returns when the delivery thread has stopped.
    pub(crate) async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let done = self.done.lock().ok().and_then(|mut d| d.take());
        if let Some(done) = done {
            let margin = self.shutdown_timeout + Duration::from_secs(2);
            let _ = tokio::time::timeout(margin, done).await;
        }
    }
}

/// The fixed fields of every envelope of one sourcetype, JSON-encoded once.
fn fields(config: &SplunkHec, sourcetype: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    let mut out = format!(
        r#","host":{},"source":{},"sourcetype":{}"#,
        q(&config.host),
        q(&config.source),
        q(sourcetype)
    );
    if let Some(index) = &config.index {
        let _ = write!(out, r#","index":{}"#, q(index));
    }
    out.push_str(r#","event":"#);
    out
}

/// `{"time":<epoch seconds with milliseconds>,<fields><event>}`: one HEC event.
pub(crate) fn envelope(time: DateTime<Utc>, fields: &str, event: &str) -> String {
    let ms = time.timestamp_millis();
    let (secs, frac) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    format!(r#"{{"time":{secs}.{frac:03}{fields}{event}}}"#)
}

/// One `ollama:api` event: the CIM Web fields the TA-ollama add-on extracts from Ollama's
/// own logs, from the proxy's record of the request.
#[derive(Debug, Serialize)]
pub(crate) struct ApiEvent<'a> {
    /// `%Y-%m-%dT%H:%M:%S.%3N%z`: when the request finished, UTC, numeric offset.
    time: String,
    /// The client.
    src: String,
    /// The upstream Ollama (`host:port`) the request was for.
    dest: &'a str,
    /// `allowed`, or `blocked` for a request refused before forwarding (ban, `Host`, auth).
    action: &'static str,
    /// Response status.
    status: u16,
    /// Request method.
    http_method: &'a str,
    /// Normalised path.
    uri_path: &'a str,
    /// `http://<dest><raw target>`.
    url: String,
    /// Seconds, millisecond precision.
    duration: f64,
    /// Milliseconds.
    response_time_ms: u64,
    /// Request body bytes read.
    bytes_in: u64,
    /// Response body bytes written.
    bytes_out: u64,
    /// The caller's API key name, when `[auth]` named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a str>,
}

impl<'a> ApiEvent<'a> {
    fn new(r: &'a RequestRecord, dest: &'a str) -> Self {
        let ms = u64::try_from(r.total.as_millis()).unwrap_or(u64::MAX);
        let blocked = matches!(
            r.outcome,
            Outcome::Blocked | Outcome::Refused | Outcome::Unauthorized
        );
        ApiEvent {
            time: r.completed_at.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string(),
            src: r.src.to_string(),
            dest,
            action: if blocked { "blocked" } else { "allowed" },
            status: r.status,
            http_method: &r.method_text,
            uri_path: &r.path,
            url: format!("http://{dest}{}", r.raw_target),
            duration: ms as f64 / 1000.0,
            response_time_ms: ms,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            identity: r.identity.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_envelope_has_epoch_seconds_with_milliseconds() {
        let t = Utc.timestamp_millis_opt(1_759_416_450_012).unwrap();
        assert_eq!(
            envelope(t, r#","host":"h","event":"#, r#"{"a":1}"#),
            r#"{"time":1759416450.012,"host":"h","event":{"a":1}}"#
        );
        let t = Utc.timestamp_millis_opt(1_759_416_450_000).unwrap();
        assert_eq!(
            envelope(t, r#","event":"#, "{}"),
            r#"{"time":1759416450.000,"event":{}}"#
        );
    }
}
