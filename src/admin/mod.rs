//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/api/bans`, `/api/keys` and
//! `/api/status`.
//!
//! It binds loopback by default and is a separate listener from the proxy so that scraping
//! and operating never share a port with untrusted clients.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

pub(crate) mod bans;
pub mod client;
pub(crate) mod keys;
pub(crate) mod status;

use arc_swap::ArcSwapOption;

use crate::config::Upstream;
use crate::enforce::Enforcement;
use crate::proxy::limits::ConnLimits;
use crate::respond::{with_body, PLAIN};
use crate::telemetry::Metrics;

/// Shared state of the admin endpoints.
pub(crate) struct AdminState {
    /// The metric registry rendered at `/metrics`.
    pub(crate) metrics: Arc<Metrics>,
    /// Whether the upstream answered the last readiness probe.
    pub(crate) ready: Arc<AtomicBool>,
    /// The ban service behind `/api/bans`.
    pub(crate) enforcement: Arc<Enforcement>,
    /// Bearer token `/api/bans` and `/api/keys` require (reloadable).
    pub(crate) token: ArcSwapOption<String>,
    /// The API key store behind `/api/keys` (none without a key file).
    pub(crate) keys: Option<Arc<crate::auth::store::KeyStore>>,
    /// The detection stage: the keys flagged in the current windows (`/api/status`).
    pub(crate) detection: Arc<crate::pipeline::DetectionStage>,
    /// The upstream's URL (`/api/status`).
    pub(crate) upstream: String,
    /// When the server started: uptime (monotonic) and its wall-clock time.
    pub(crate) started: std::time::Instant,
    /// The wall-clock time of `started`.
    pub(crate) started_at: chrono::DateTime<chrono::Utc>,
    /// The proxy's records held back until their responses are written: every answer here
    /// counts what a client could already have seen.
    pub(crate) records: Arc<crate::proxy::deferred::Deferred>,
}

async fn route(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    state.records.settle();
    if req.uri().path() == "/api/bans" || req.uri().path().starts_with("/api/bans/") {
        let token = state.token.load_full();
        return bans::handle(
            &state.enforcement,
            state.keys.as_ref(),
            token.as_deref().map(String::as_str),
            req,
        )
        .await;
    }
    if req.uri().path() == "/api/status" {
        let token = state.token.load_full();
        return status::handle(state, token.as_deref().map(String::as_str), &req);
    }
    if req.uri().path() == "/api/keys" || req.uri().path().starts_with("/api/keys/") {
        let token = state.token.load_full();
        return keys::handle(
            state.keys.as_ref(),
            token.as_deref().map(String::as_str),
            req,
        )
        .await;
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => with_body(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.render(),
        ),
        (&Method::GET, "/healthz") => with_body(StatusCode::OK, PLAIN, "ok\n"),
        (&Method::GET, "/readyz") => {
            if state.ready.load(Ordering::Relaxed) {
                with_body(StatusCode::OK, PLAIN, "ready\n")
            } else {
                with_body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PLAIN,
                    "upstream not ready\n",
                )
            }
        }
        (_, "/metrics" | "/healthz" | "/readyz") => with_body(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "method not allowed\n",
        ),
        _ => with_body(StatusCode::NOT_FOUND, PLAIN, "not found\n"),
    }
}

/// Admin connections open at once, at most (part of the proxy's descriptor reserve).
pub(crate) const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Admin connections one source (an address, an IPv6 /64) may hold at once.
pub(crate) const ADMIN_MAX_PER_SOURCE: usize = 16;

/// How long an admin request body may take to arrive.
pub(crate) const ADMIN_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long admin connections may finish after the stop.
const ADMIN_GRACE: Duration = Duration::from_secs(5);

/// Longest wait of a write to an admin client for progress (the proxy's `timeouts.send_idle`
/// default).
const ADMIN_SEND_IDLE: Duration = Duration::from_secs(60);

/// Serves the admin endpoints until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()>,
) {
    // The admin listener's own budget, inside the descriptors the proxy leaves in reserve;
    // no source may hold more than its share of it (IPv6 per /64), so one client cannot keep
    // `/healthz`, `/readyz` and `/metrics` from answering.
    let slots = ConnLimits::unmetered(ADMIN_MAX_CONNECTIONS, ADMIN_MAX_PER_SOURCE, 64);
    let own_ip = listener
        .local_addr()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| {
            crate::ip::canonical(a.ip())
        });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let options = accept_loop::Options {
        name: "admin",
        grace: ADMIN_GRACE,
    };
    accept_loop::serve(
        listener,
        options,
        shutdown,
        |_| {},
        |stream, peer, drain| {
            // Over budget: close at once rather than queue behind the flood.
            // The host itself is exempt from the share (127.0.0.1, ::1, the listener's own
            // address): by default every client (Prometheus, the health check, the CLI) comes
            // from there.
            let ip = crate::ip::canonical(peer.ip());
            let own = ip == own_ip || ip == Ipv4Addr::LOCALHOST || ip == Ipv6Addr::LOCALHOST;
            let slot = slots.admit(ip, own).ok()?;
            let state = state.clone();
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            // A client that stops reading (`/metrics`, `/api/bans`) gives its slot back after
            // a minute (the proxy's `send_idle` default).
            crate::proxy::send_idle::limit_unsent(&stream);
            let stream = crate::proxy::send_idle::SendIdle::new(stream, ADMIN_SEND_IDLE);
            let conn = drain.watch(builder.serve_connection(TokioIo::new(stream), service));
            Some(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "admin connection error");
                }
                drop(slot);
            })
        },
    )
    .await;
}

/// Probes the upstream (`GET /api/version`) every `interval`; any HTTP answer within the
/// timeout counts as ready. `ready` (what `/readyz` answers) and the `upstream_up` gauge
/// follow each probe. Runs until `shutdown` resolves.
pub(crate) async fn probe_upstream(
    upstream: Upstream,
    interval: Duration,
    ready: Arc<AtomicBool>,
    upstream_up: prometheus::IntGauge,
    shutdown: impl Future<Output = ()>,
) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri = format!("{}/api/version", upstream.url());
    let timeout = interval.min(Duration::from_secs(5));
    tokio::pin!(shutdown);
    loop {
        let ok = match uri.parse::<http::Uri>() {
            Ok(u) => matches!(
                tokio::time::timeout(timeout, client.get(u)).await,
                Ok(Ok(_))
            ),
            Err(_) => false,
        };
        upstream_up.set(i64::from(ok));
        if ready.swap(ok, Ordering::Relaxed) != ok {
            tracing::info!(upstream = %upstream.url(), ready = ok, "upstream readiness changed");
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = &mut shutdown => break,
        }
    }
}
