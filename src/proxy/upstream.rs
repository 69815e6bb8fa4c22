//! The pooled upstream client and the mapping of its failures.

use std::error::Error as StdError;

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use tower::Service;

use crate::config::{Timeouts, Upstream};
use crate::respond;

/// The client type: plain HTTP/1.1 to Ollama, request bodies streamed through untouched
/// (wrapped only to tell the client's faults from the upstream's).
pub(crate) type UpstreamClient = Client<
    FixedConnector,
    super::fault::ClientBody<super::policy_body::PolicyBody<hyper::body::Incoming>>,
>;

/// Idle connections kept per upstream; enough for bursts at high concurrency.
const MAX_IDLE_PER_HOST: usize = 1024;

/// The authority of every request handed to the client. hyper-util keys its connection
/// pool by scheme and authority and hashes that key (SipHash, byte by byte) three times per
/// request; there is only one upstream, so the key is this one byte, and [`FixedConnector`]
/// dials the real upstream whatever the URI says. It never reaches the wire: the request
/// line is origin-form and `Host` is set to the upstream's authority by the rewrite layer.
pub(crate) const POOL_AUTHORITY: &str = "u";

/// Connects every pool key to the one upstream.
#[derive(Clone)]
pub(crate) struct FixedConnector {
    inner: HttpConnector,
    target: Uri,
}

impl Service<Uri> for FixedConnector {
    type Response = <HttpConnector as Service<Uri>>::Response;
    type Error = <HttpConnector as Service<Uri>>::Error;
    type Future = <HttpConnector as Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _pool_key: Uri) -> Self::Future {
        self.inner.call(self.target.clone())
    }
}

/// Builds the pooled client for `upstream`: `TCP_NODELAY` (streamed tokens must not wait for
/// Nagle), a connect timeout, an idle timer, and a bounded idle pool.
pub(crate) fn client(t: &Timeouts, upstream: &Upstream) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(t.upstream_connect));
    connector.enforce_http(true);
    let target = Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query("/")
        .build()
        .unwrap_or_else(|_| Uri::from_static("http://127.0.0.1:11434/"));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(t.upstream_idle)
        .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .build(FixedConnector {
            inner: connector,
            target,
        })
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
