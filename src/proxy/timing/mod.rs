//! The timing body: turns a response into exactly one [`RequestRecord`].
//!
//! The response body is an [`EosBody`] whose end-of-stream callback is the request's
//! [`Completion`]: it fills in the timings and outcome and hands the record to the sink —
//! on the end of the stream, on an error, when `is_end_stream()` turns true after a frame,
//! or from `Drop`. Until then a [`HeadGuard`] covers the time before the response head
//! exists: if the request future is dropped there, the client disconnected while Ollama was
//! still thinking, and that is recorded too (status 499).

use std::sync::Arc;

use chrono::Utc;
use http_body::Body;
use prometheus::{IntCounter, IntGauge};
use tokio::time::Instant;

use super::eos::{End, Eos, EosBody, OnEos};
use super::fault::FaultCell;
use crate::record::{Method, Outcome, RecordSink, RequestRecord};

/// Status recorded when the client left before a response head was sent (nginx's 499).
pub(crate) const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Everything about a request known before its response, waiting for its end.
pub(crate) struct Completion {
    /// The record with `status`, `ttfb`, `total`, `completed_at`, `outcome` still to fill.
    pub(crate) record: RequestRecord,
    /// When the request head was read.
    pub(crate) start: Instant,
    /// Where the finished record goes.
    pub(crate) sink: Arc<dyn RecordSink>,
    /// The sink's ticket for the running request ([`RecordSink::begin`]), ended first.
    pub(crate) ticket: Option<u64>,
    /// Decrements `in_flight_requests` when the record fires.
    pub(crate) in_flight: Option<InFlight>,
    /// Counts `upstream_errors_total{kind="reset"}` when a forwarded body fails mid-stream.
    pub(crate) upstream_resets: Option<IntCounter>,
    /// What the request body noted: a response that breaks because the client's upload
    /// failed is the client's fault, not an upstream reset; and the body bytes it read
    /// (`bytes_in`).
    pub(crate) fault: Option<Arc<FaultCell>>,
}

/// +1 on `in_flight_requests` while alive.
pub(crate) struct InFlight(IntGauge);

impl InFlight {
    /// Increments the gauge; the drop decrements it.
    pub(crate) fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Completion {
    /// Fills in the end of the exchange (at `ended_at`, or now) and hands the record to the
    /// sink.
    fn finish(
        mut self,
        ttfb: Option<Instant>,
        ended_at: Option<Instant>,
        bytes_out: u64,
        outcome: Outcome,
    ) {
        let client_fault = self.fault.as_deref().and_then(FaultCell::get).is_some();
        let cut = self.fault.as_deref().is_some_and(FaultCell::was_cut);
        self.record.bytes_in = self.fault.as_deref().map_or(0, FaultCell::bytes_in);
        self.record.bytes_out = bytes_out;
        let outcome = match outcome {
            // Cut by a ban: refused like any request of a banned source (never fed back).
            _ if cut => Outcome::Blocked,
            Outcome::UpstreamError if client_fault => Outcome::ClientCancelled,
            o => o,
        };
        let now = ended_at.unwrap_or_else(Instant::now);
        self.record.ttfb = ttfb.map(|t| t.saturating_duration_since(self.start));
        self.record.total = now.saturating_duration_since(self.start);
        self.record.completed_at = Utc::now();
        self.record.outcome = outcome;
        drop(self.in_flight.take());
        if let (Outcome::UpstreamError, Some(resets)) = (outcome, &self.upstream_resets) {
            resets.inc();
        }
        self.sink.finish(self.ticket.take(), self.record);
    }
}

/// Records a cancelled request if the request future is dropped before a response exists.
pub(crate) struct HeadGuard {
    completion: Option<Completion>,
}

impl HeadGuard {
    /// Arms the guard.
    pub(crate) fn new(completion: Completion) -> Self {
        HeadGuard {
            completion: Some(completion),
        }
    }

    /// Disarms the guard: the response exists, its body takes over with this status.
    pub(crate) fn into_body<B: Body>(
        mut self,
        status: u16,
        outcome: Outcome,
        inner: B,
    ) -> TimingBody<B> {
        let mut completion = self.completion.take();
        // hyper sends no body for HEAD, 1xx, 204 and 304 and drops it unpolled: that drop is
        // the normal end of the exchange, not a client disconnect.
        let mut bodiless = matches!(status, 100..=199 | 204 | 304);
        if let Some(c) = completion.as_mut() {
            c.record.status = status;
            c.record.outcome = outcome;
            bodiless |= c.record.method == Method::Head;
        }
        EosBody::new(inner, completion).bodiless(bodiless)
    }
}

impl HeadGuard {
    /// The response is Ollama's: a failure of its body from now on is an upstream reset.
    pub(crate) fn count_resets(&mut self, resets: IntCounter) {
        if let Some(c) = self.completion.as_mut() {
            c.upstream_resets = Some(resets);
        }
    }
}

impl Drop for HeadGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.completion.take() {
            c.record.status = CLIENT_CLOSED_REQUEST;
            c.finish(None, None, 0, Outcome::ClientCancelled);
        }
    }
}

/// A response body that records its request when it ends, fails or is dropped.
pub(crate) type TimingBody<B> = EosBody<B, Completion>;

impl OnEos for Completion {
    fn on_eos(self, eos: Eos) {
        let outcome = match eos.end {
            End::Complete => self.record.outcome,
            End::Error => Outcome::UpstreamError,
            End::Dropped => Outcome::ClientCancelled,
        };
        self.finish(eos.first_byte, eos.ended_at, eos.bytes, outcome);
    }
}

#[cfg(test)]
mod tests;
