//! The delivery loop of the HEC sink: batches, gzip, retries with backoff, indexer
//! acknowledgement, and the shutdown flush. Runs alone on the `splunk-hec` thread.

use std::collections::HashSet;
use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::{StatusCode, Uri};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::client::HecClient;
use super::SinkMetrics;
use crate::config::SplunkHec;

/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A batch the HEC accepted and has not acknowledged yet (`ack = true`).
struct Pending {
    ack_id: u64,
    body: Bytes,
    events: u64,
    accepted: Instant,
    /// Accepted before the HEC restarted (a later batch got an id not above this one's):
    /// its id now names another batch, so it is sent again, never taken as acknowledged.
    stale: bool,
}

pub(super) struct Worker {
    rx: mpsc::Receiver<String>,
    shutdown: watch::Receiver<bool>,
    client: HecClient,
    url: Uri,
    ack_url: Uri,
    ack: bool,
    batch_size: usize,
    batch_interval: Duration,
    queue: usize,
    backoff: Duration,
    ack_timeout: Duration,
    shutdown_timeout: Duration,
    metrics: SinkMetrics,
    pending: Vec<Pending>,
    last_poll: Instant,
    /// Set when shutdown was asked: by then the queue must be empty.
    deadline: Option<Instant>,
    /// A failure streak is going on (logged at its start, and when it ends).
    failing: bool,
    /// Statuses of refused batches already logged (each is logged once).
    refused_logged: HashSet<u16>,
}

impl Worker {
    pub(super) fn new(
        config: &SplunkHec,
        client: HecClient,
        rx: mpsc::Receiver<String>,
        shutdown: watch::Receiver<bool>,
        metrics: SinkMetrics,
    ) -> Worker {
        Worker {
            rx,
            shutdown,
            client,
            url: config.url.clone(),
            ack_url: config.ack_url.clone(),
            ack: config.ack,
            batch_size: config.batch_size,
            batch_interval: config.batch_interval,
            queue: config.queue,
            backoff: config.retry_backoff,
            ack_timeout: config.ack_timeout,
            shutdown_timeout: config.shutdown_timeout,
            metrics,
            pending: Vec::new(),
            last_poll: Instant::now(),
            deadline: None,
            failing: false,
            refused_logged: HashSet::new(),
        }
    }

    /// Delivers until shutdown has emptied the queue (or its timeout ran out).
    pub(super) async fn run(mut self) {
        loop {
            self.note_shutdown();
            if self.past_deadline() {
                break;
            }
            let batch = self.next_batch().await;
            if !batch.is_empty() {
                let events = batch.len() as u64;
                let body = gzip(batch.concat().as_bytes());
                self.deliver(body, events).await;
            }
            if self.ack {
                self.acks().await;
            }
            if self.deadline.is_some() && self.rx.is_empty() && self.pending.is_empty() {
                break;
            }
        }
        self.rx.close();
        let mut left = self.pending.iter().map(|p| p.events).sum::<u64>();
        while self.rx.try_recv().is_ok() {
            left += 1;
        }
        if left > 0 {
            tracing::warn!(
                events = left,
                "splunk_hec: shutdown timeout: events not delivered are dropped"
            );
            self.metrics.dropped.inc_by(left);
        }
    }

    /// Starts the shutdown clock when shutdown was asked (or its sender is gone, which
    /// would otherwise make every `changed()` return at once).
    fn note_shutdown(&mut self) {
        let asked = *self.shutdown.borrow() || self.shutdown.has_changed().is_err();
        if self.deadline.is_none() && asked {
            self.deadline = Some(Instant::now() + self.shutdown_timeout);
        }
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn pending_events(&self) -> usize {
        self.pending
            .iter()
            .map(|p| usize::try_from(p.events).unwrap_or(usize::MAX))
            .sum()
    }

    /// Up to `batch_size` events: waits for the first, then at most `batch_interval` for
    /// more. Empty when there is nothing to send now (an ack poll may be due). At shutdown,
    /// takes what is queued without waiting.
    async fn next_batch(&mut self) -> Vec<String> {
        let mut batch = Vec::new();
        if self.deadline.is_some() {
            while batch.len() < self.batch_size {
                match self.rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            if batch.is_empty() && !self.pending.is_empty() {
                tokio::time::sleep(self.batch_interval.min(Duration::from_millis(100))).await;
            }
            return batch;
        }
        // Unacknowledged batches count against the queue, so memory stays bounded when the
        // HEC accepts but never acknowledges.
        let room = self.pending_events() < self.queue;
        tokio::select! {
            ev = self.rx.recv(), if room => match ev {
                Some(e) => batch.push(e),
                None => self.deadline = Some(Instant::now() + self.shutdown_timeout),
            },
            _ = self.shutdown.changed() => {
                self.note_shutdown();
                return batch;
            }
            () = tokio::time::sleep(self.batch_interval), if !self.pending.is_empty() || !room => {
                return batch;
            }
        }
        let until = Instant::now() + self.batch_interval;
        while batch.len() < self.batch_size {
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(e) => batch.push(e),
                    None => break,
                },
                () = tokio::time::sleep_until(until) => break,
                _ = self.shutdown.changed() => {
                    self.note_shutdown();
                    break;
                }
            }
        }
        batch
    }

    /// Posts one gzipped batch of `events` until the HEC takes it (2xx), refuses it (4xx
    /// other than 429: dropped and counted), or the shutdown timeout runs out.
    async fn deliver(&mut self, body: Bytes, events: u64) {
        let mut attempt = 0u32;
        loop {
            self.note_shutdown();
            if self.past_deadline() {
                self.metrics.dropped.inc_by(events);
                return;
            }
            let url = self.url.clone();
            let failure = match self.client.post(&url, body.clone(), true).await {
                Ok(a) if a.status.is_success() => {
                    if self.failing {
                        self.failing = false;
                        tracing::info!("splunk_hec: delivery resumed");
                    }
                    match (self.ack, ack_id(&a.body)) {
                        (true, Some(ack_id)) => {
                            // Splunk numbers a channel's acks upward and forgets them when it
                            // restarts: an id that is not above a pending one means a restart.
                            for p in self.pending.iter_mut().filter(|p| p.ack_id >= ack_id) {
                                p.stale = true;
                            }
                            self.pending.push(Pending {
                                ack_id,
                                body,
                                events,
                                accepted: Instant::now(),
                                stale: false,
                            });
                        }
                        _ => self.metrics.sent.inc_by(events),
                    }
                    return;
                }
                Ok(a)
                    if a.status == StatusCode::TOO_MANY_REQUESTS || a.status.is_server_error() =>
                {
                    let kind = if a.status == StatusCode::TOO_MANY_REQUESTS {
                        "http_429"
                    } else {
                        "http_5xx"
                    };
                    self.metrics.error(kind);
                    format!("HTTP {}: {}", a.status.as_u16(), text(&a.body))
                }
                Ok(a) => {
                    self.metrics.error("http_4xx");
                    self.metrics.dropped.inc_by(events);
                    if self.refused_logged.insert(a.status.as_u16()) {
                        tracing::error!(
                            url = %self.url,
                            status = a.status.as_u16(),
                            response = %text(&a.body),
                            events,
                            "splunk_hec: the HEC refused a batch (a configuration error: token, index, ack?); \
                             such batches are dropped and counted in ollama_guard_sink_dropped_total"
                        );
                    }
                    return;
                }
                Err(f) => {
                    self.metrics.error(f.kind());
                    f.to_string()
                }
            };
            if !self.failing {
                self.failing = true;
                tracing::error!(url = %self.url, error = %failure, "splunk_hec: delivery failed; retrying with backoff");
            } else {
                tracing::debug!(url = %self.url, error = %failure, "splunk_hec: delivery failed again");
            }
            let wait = backoff(self.backoff, attempt);
            attempt = attempt.saturating_add(1);
            let wait = match self.deadline {
                Some(d) => wait.min(d.saturating_duration_since(Instant::now())),
                None => wait,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = self.shutdown.changed(), if self.deadline.is_none() => {}
            }
        }
    }

    /// Asks which pending batches are indexed; counts those as sent, and sends again the
    /// ones not acknowledged within `ack_timeout`.
    async fn acks(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let due = self.deadline.is_some() || self.last_poll.elapsed() >= self.batch_interval;
        if !due {
            return;
        }
        self.last_poll = Instant::now();
        let ids: Vec<u64> = (self.pending.iter())
            .filter(|p| !p.stale)
            .map(|p| p.ack_id)
            .collect();
        let query = serde_json::json!({ "acks": ids }).to_string();
        let url = self.ack_url.clone();
        match self.client.post(&url, Bytes::from(query), false).await {
            Ok(a) if a.status.is_success() => {
                let acked = acked_ids(&a.body);
                let mut sent = 0;
                self.pending.retain(|p| {
                    let done = !p.stale && acked.contains(&p.ack_id);
                    if done {
                        sent += p.events;
                    }
                    !done
                });
                self.metrics.sent.inc_by(sent);
            }
            Ok(a) => {
                let kind = if a.status.is_server_error() {
                    "http_5xx"
                } else {
                    "http_4xx"
                };
                self.metrics.error(kind);
                tracing::debug!(status = a.status.as_u16(), response = %text(&a.body), "splunk_hec: ack poll refused");
            }
            Err(f) => {
                self.metrics.error(f.kind());
                tracing::debug!(error = %f, "splunk_hec: ack poll failed");
            }
        }
        let timeout = self.ack_timeout;
        let (expired, kept): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.stale || p.accepted.elapsed() >= timeout);
        self.pending = kept;
        for p in expired {
            if p.stale {
                self.metrics.error("ack_lost");
                tracing::warn!(
                    ack_id = p.ack_id,
                    events = p.events,
                    "splunk_hec: the HEC restarted before acknowledging a batch; sending it again"
                );
            } else {
                self.metrics.error("ack_timeout");
                tracing::warn!(
                    ack_id = p.ack_id,
                    events = p.events,
                    "splunk_hec: batch not acknowledged in ack_timeout; sending it again"
                );
            }
            self.deliver(p.body, p.events).await;
        }
    }
}

/// `initial * 2^attempt`, at most [`MAX_BACKOFF`].
fn backoff(initial: Duration, attempt: u32) -> Duration {
    initial
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF)
}

fn gzip(data: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    Bytes::from(enc.finish().unwrap_or_default())
}

/// The `ackId` of an event-endpoint answer (`{"text":"Success","code":0,"ackId":7}`).
fn ack_id(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("ackId")?
        .as_u64()
}

/// The acknowledged ids of an ack-endpoint answer (`{"acks":{"7":true,"8":false}}`).
fn acked_ids(body: &[u8]) -> HashSet<u64> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return HashSet::new();
    };
    v.get("acks")
        .and_then(|a| a.as_object())
        .map(|m| {
            m.iter()
                .filter(|(_, done)| done.as_bool() == Some(true))
                .filter_map(|(id, _)| id.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A response body for a log line (at most 200 characters).
fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let ms = |n| backoff(Duration::from_millis(500), n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(5), ms(6), ms(40)],
            [500, 1000, 2000, 16_000, 30_000, 30_000]
        );
    }

    #[test]
    fn ack_answers_are_read() {
        assert_eq!(ack_id(br#"{"text":"Success","code":0,"ackId":7}"#), Some(7));
        assert_eq!(ack_id(br#"{"text":"Success","code":0}"#), None);
        let acked = acked_ids(br#"{"acks":{"7":true,"8":false,"9":true}}"#);
        let mut v: Vec<u64> = acked.into_iter().collect();
        v.sort_unstable();
        assert_eq!(v, [7, 9]);
    }
}
