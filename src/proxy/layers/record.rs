//! Record layer: every request becomes exactly one [`RequestRecord`] — forwarded, refused
//! or failed — timed from the moment the head was read to the last byte out or the client's
//! disconnect.
//!
//! Outermost per request (only the connection-bound client-IP layer is above it), so the
//! clock starts before any other work and refusals are recorded like anything else. The
//! response body becomes a [`TimingBody`] whose end-of-stream callback builds the record;
//! before the head exists a [`HeadGuard`] records a client that left (499). A layer below
//! that answered by itself says how to record it with a [`Disposition`].

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::{Client, Disposition, Meta};
use crate::proxy::cut::{CutBody, Owner};
use crate::proxy::fault::FaultCell;
use crate::proxy::refusal::Gate;
use crate::proxy::timing::{Completion, HeadGuard, InFlight, TimingBody};
use crate::record::{Method, Outcome, RecordSink, RequestRecord};
use crate::route;

/// Where records go and what they count.
pub(crate) struct RecordCtx {
    /// The record pipeline.
    pub(crate) sink: Arc<dyn RecordSink>,
    /// `in_flight_requests`.
    pub(crate) in_flight: IntGauge,
    /// `upstream_errors_total{kind="reset"}`: forwarded bodies that break mid-stream.
    pub(crate) resets: IntCounter,
    /// Asked on every frame of a forwarded response whether a ban cuts it.
    pub(crate) gate: Arc<dyn Gate>,
    /// This worker's ban signal: wakes requests still waiting for their head on every ban.
    pub(crate) bans: Option<Arc<Notify>>,
}

/// Records every request.
#[derive(Clone)]
pub(crate) struct RecordLayer {
    ctx: Arc<RecordCtx>,
}

impl RecordLayer {
    /// Records into `ctx.sink`.
    pub(crate) fn new(ctx: RecordCtx) -> Self {
        RecordLayer { ctx: Arc::new(ctx) }
    }
}

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;
    fn layer(&self, inner: S) -> Record<S> {
        Record {
            inner,
            ctx: self.ctx.clone(),
        }
    }
}

/// The record service.
#[derive(Clone)]
pub(crate) struct Record<S> {
    inner: S,
    ctx: Arc<RecordCtx>,
}

/// The record a request starts with: everything known before its response.
fn start_record<B>(req: &Request<B>) -> RequestRecord {
    let unknown = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let client = req.extensions().get::<Client>().copied().unwrap_or(Client {
        src: unknown,
        peer: unknown,
        unknown: false,
    });
    let target = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
    // The target as forwarded: an absolute-form one with an empty path goes as `/?query`.
    let target = crate::proxy::layers::rewrite::origin_form(target);
    let (path, route) = route::normalize_fast(&target);
    let raw_target = if path == target {
        path.clone()
    } else {
        // A query (or a target the path was normalised from); an API key in it is not logged.
        match crate::auth::key::redact(&target) {
            Cow::Borrowed(_) => Cow::Owned(target.into_owned()),
            Cow::Owned(redacted) => Cow::Owned(redacted),
        }
    };
    let method = Method::parse(req.method().as_str());
    let method_text = match method {
        Method::Other => Cow::Owned(req.method().as_str().to_owned()),
        m => Cow::Borrowed(m.as_str()),
    };
    RequestRecord {
        src: client.src,
        peer: client.peer,
        method,
        method_text,
        path,
        raw_target,
        route,
        status: 0,
        ttfb: None,
        total: Duration::ZERO,
        completed_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
        outcome: Outcome::Complete,
        bytes_in: 0,
        bytes_out: 0,
        in_flight_reported: 0,
        identity: req
            .extensions()
            .get::<crate::auth::Caller>()
            .and_then(|c| c.identity.clone()),
    }
}

impl<S, B, RB> Service<Request<B>> for Record<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Infallible>,
    RB: Body<Data = bytes::Bytes>,
    RB::Error: Into<crate::proxy::fault::BoxError>,
{
    type Response = Response<TimingBody<CutBody<RB>>>;
    type Error = Infallible;
    type Future = RecordFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let record = start_record(&req);
        let cross_site = crate::proxy::headers::cross_site(req.headers());
        let fault = Arc::new(FaultCell::default());
        req.extensions_mut().insert(Meta {
            path: record.path.clone(),
            method_text: record.method_text.clone(),
            route: record.route,
            fault: fault.clone(),
            cross_site,
        });
        let fault_for_owner = fault.clone();
        let ticket = self.ctx.sink.begin(&record, start);
        let completion = Completion {
            record,
            start,
            sink: self.ctx.sink.clone(),
            ticket,
            in_flight: Some(InFlight::new(self.ctx.in_flight.clone())),
            upstream_resets: None,
            fault: Some(fault),
        };
        let owner = Owner {
            src: completion.record.src,
            identity: completion.record.identity.clone(),
            method: completion.record.method_text.clone(),
            path: completion.record.path.clone(),
            gate: self.ctx.gate.clone(),
            cell: fault_for_owner,
        };
        // Listening for bans costs a lock to register and one to leave; it is only worth it
        // while a ban can cut (block mode, `abort_in_flight`).
        let bans = if self.ctx.gate.cuts_now() {
            self.ctx.bans.clone()
        } else {
            None
        };
        RecordFuture {
            fut: self.inner.call(req),
            ban: bans.clone().map(Notify::notified_owned),
            bans,
            guard: Some(HeadGuard::new(completion)),
            resets: self.ctx.resets.clone(),
            owner: Some(owner),
            cross_site,
        }
    }
}

pin_project! {
    /// Waits for the response head; the [`HeadGuard`] records a client that leaves first.
    pub(crate) struct RecordFuture<F> {
        #[pin]
        fut: F,
        // Fires when any ban starts while the head is awaited (re-armed when it was not ours).
        #[pin]
        ban: Option<OwnedNotified>,
        bans: Option<Arc<Notify>>,
        guard: Option<HeadGuard>,
        resets: IntCounter,
        owner: Option<Owner>,
        // A browser's cross-site request: Ollama's 403 to it is recorded as a refusal.
        cross_site: bool,
    }
}

impl<F, RB> Future for RecordFuture<F>
where
    F: Future<Output = Result<Response<RB>, Infallible>>,
    RB: Body<Data = bytes::Bytes>,
    RB::Error: Into<crate::proxy::fault::BoxError>,
{
    type Output = Result<Response<TimingBody<CutBody<RB>>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        while let Some(ban) = this.ban.as_mut().as_pin_mut() {
            if ban.poll(cx).is_pending() {
                break;
            }
            if let Some(rule) = this.owner.as_ref().and_then(Owner::cut) {
                // Banned while Ollama was still working: answer the refusal now; dropping
                // this future drops the upstream request, so Ollama stops.
                let Some(guard) = this.guard.take() else {
                    return Poll::Pending;
                };
                let path = this.owner.take().map(|o| o.path).unwrap_or_default();
                tracing::debug!(%rule, "request cut before its response head");
                let (parts, _) = crate::proxy::refusal::forbidden(&path).into_parts();
                let bytes = crate::proxy::refusal::forbidden_body(&path);
                let body = guard.into_body(
                    parts.status.as_u16(),
                    Outcome::Blocked,
                    CutBody::refused(bytes),
                );
                return Poll::Ready(Ok(Response::from_parts(parts, body)));
            }
            let again = this.bans.clone().map(Notify::notified_owned);
            this.ban.set(again);
        }
        let resp = match ready!(this.fut.poll(cx)) {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        let (mut parts, body) = resp.into_parts();
        let Some(mut guard) = this.guard.take() else {
            // Polled after completion: a caller bug; stay pending rather than panic.
            return Poll::Pending;
        };
        let (outcome, status, owner) = match parts.extensions.remove::<Disposition>() {
            Some(d) => (d.outcome, d.status.unwrap_or(parts.status.as_u16()), None),
            None => {
                // Ollama's own response: a failure of its body from now on is an upstream
                // reset (unless the client's upload failed first; the fault cell says), and a
                // ban of its source cuts it.
                guard.count_resets(this.resets.clone());
                // Ollama refuses a browser's request from an origin it does not allow
                // (`OLLAMA_ORIGINS`) with 403: a refusal for what the request is, never fed to
                // detection, so a web page cannot get its visitor banned by sending them.
                let outcome = if *this.cross_site && parts.status == http::StatusCode::FORBIDDEN {
                    Outcome::Refused
                } else {
                    Outcome::Complete
                };
                (outcome, parts.status.as_u16(), this.owner.take())
            }
        };
        let body = guard.into_body(status, outcome, CutBody::new(body, owner));
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

#[cfg(test)]
mod tests;
