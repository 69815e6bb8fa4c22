//! The upstream client: HTTP/1.1 to Ollama over a per-worker pool of keep-alive connections,
//! driven inside the request's own task.
//!
//! A request is written (head and whatever body the client already sent, in one write), the
//! response head is read and parsed ([`wire`]), and the response body ([`UpstreamBody`]) reads
//! the upstream socket itself when the client side asks for more — no connection task, no
//! channel between two tasks, no second wake-up per frame. Frames that are already there leave
//! together: each read takes what the socket holds (up to [`body::MAX_FRAME`]), so a burst of
//! NDJSON lines is one write to the client, and a frame that arrived alone is returned at once.
//! When the body ends the connection goes back to the worker's pool; a body dropped before its
//! end (the client left, a ban cut it) closes the connection, which is how Ollama learns to stop.
//!
//! hyper-util's pooled client did the same work with a task per upstream connection, a
//! dispatch channel for the request and a one-slot channel per body frame; on a proxied
//! `GET /api/tags` that machinery was about 40 % of the proxy's instructions (README,
//! Performance).

pub(crate) mod body;
mod exchange;
mod pool;
pub(crate) mod wire;

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use tower::Service;

pub(crate) use body::UpstreamBody;

use crate::config::{Timeouts, Upstream};
use crate::proxy::fault::{ClientBodyError, Fault};
use crate::respond;
use crate::telemetry::UpstreamErrorKind;

/// Idle connections kept per worker; enough for bursts at high concurrency.
const MAX_IDLE: usize = 1024;

/// A failed exchange with the upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// The TCP connection could not be made.
    #[error("tcp connect error: {0}")]
    Connect(#[source] io::Error),
    /// The TCP connection was not made in time.
    #[error("tcp connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// Reading the client's request body failed (the client's fault).
    #[error(transparent)]
    Client(ClientBodyError),
    /// The connection failed after it was made.
    #[error("connection error: {0}")]
    Io(#[source] io::Error),
    /// The upstream closed the connection before its response head was complete.
    #[error("connection closed before the response head was complete")]
    Closed,
    /// The upstream's response is not acceptable HTTP/1.1.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
}

impl ExchangeError {
    /// The side at fault, and how.
    pub(crate) fn fault(&self) -> Fault {
        match self {
            ExchangeError::Client(e) => Fault::Client(e.fault()),
            ExchangeError::ConnectTimeout(_) => Fault::Upstream(UpstreamErrorKind::Timeout),
            ExchangeError::Connect(e) if e.kind() == io::ErrorKind::TimedOut => {
                Fault::Upstream(UpstreamErrorKind::Timeout)
            }
            ExchangeError::Connect(_) => Fault::Upstream(UpstreamErrorKind::Connect),
            ExchangeError::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
                Fault::Upstream(UpstreamErrorKind::Timeout)
            }
            ExchangeError::Io(_) | ExchangeError::Closed | ExchangeError::Wire(_) => {
                Fault::Upstream(UpstreamErrorKind::Reset)
            }
        }
    }
}

/// The upstream client of one worker: clones share the worker's pool.
#[derive(Clone)]
pub(crate) struct UpstreamClient {
    pool: Arc<pool::Pool>,
}

/// Builds a worker's client for `upstream`: `TCP_NODELAY` (streamed tokens must not wait for
/// Nagle), the connect timeout, and an idle pool whose connections close after
/// `timeouts.upstream_idle` unused. Must be called inside the worker's runtime (the pool's
/// sweeper runs there).
pub(crate) fn client(t: &Timeouts, upstream: &Upstream) -> UpstreamClient {
    let pool = pool::Pool::new(
        upstream.authority.as_str().to_owned(),
        t.upstream_connect,
        t.upstream_idle,
        MAX_IDLE,
    );
    pool::spawn_sweeper(&pool);
    UpstreamClient { pool }
}

/// The exchange in flight (one allocation per request).
pub(crate) type ExchangeFuture =
    Pin<Box<dyn Future<Output = Result<Response<UpstreamBody>, ExchangeError>> + Send>>;

impl<B> Service<Request<B>> for UpstreamClient
where
    B: http_body::Body<Data = Bytes, Error = ClientBodyError> + Send + 'static,
{
    type Response = Response<UpstreamBody>;
    type Error = ExchangeError;
    type Future = ExchangeFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ExchangeError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        Box::pin(exchange::exchange(self.pool.clone(), req))
    }
}

/// The innermost cause, which is the part an operator can act on ("Connection refused").
pub(crate) fn describe(e: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// `400 {"error":"ollama-guard: malformed request body: ..."}` or `408` for a stalled body;
/// the connection closes after it (the body's framing cannot be trusted).
pub(crate) fn client_fault(
    fault: super::fault::ClientFault,
    detail: &str,
) -> Response<Full<Bytes>> {
    let (status, what) = match fault {
        super::fault::ClientFault::Idle => (StatusCode::REQUEST_TIMEOUT, "request body timed out"),
        _ => (StatusCode::BAD_REQUEST, "malformed request body"),
    };
    let mut resp = respond::json_error(status, format!("ollama-guard: {what}: {detail}"));
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}

/// `502 {"error":"ollama-guard: upstream unavailable: ..."}`.
pub(crate) fn bad_gateway(detail: &str) -> Response<Full<Bytes>> {
    respond::json_error(
        StatusCode::BAD_GATEWAY,
        format!("ollama-guard: upstream unavailable: {detail}"),
    )
}

#[cfg(test)]
mod tests;
