//! The proxy path: accept, resolve the client, forward unchanged and unbuffered, stream the
//! response back frame by frame, and hand one [`RequestRecord`] per request to the sink.
//!
//! There is one service function and one body wrapper ([`timing::TimingBody`]); no tower
//! stack, because there is exactly one path through the proxy.

pub mod client_ip;
pub mod fault;
pub mod headers;
pub mod host_guard;
pub mod limits;
pub mod refusal;
mod server;
pub(crate) use server::AcceptBackoff;
pub mod timing;
pub mod upstream;

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderValue, EXPECT, HOST};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use ipnet::IpNet;
use tokio::time::Instant;

use crate::config::{Config, Upstream};
use crate::record::{Method, Outcome, RecordSink, RequestRecord};
use crate::route;
use crate::telemetry::throttle::Throttle;
use crate::telemetry::Metrics;
use fault::{ClientBody, ClientFault, Fault, FaultCell};
use host_guard::HostPolicy;
use refusal::Gate;
use timing::{Completion, HeadGuard, InFlight, TimingBody};

/// The response body every proxied or locally answered request gets.
pub type ProxyBody = TimingBody<Either<Incoming, Full<Bytes>>>;

/// The proxy: upstream client, client-IP policy, and where records go.
pub struct Proxy {
    upstream: Upstream,
    upstream_host: HeaderValue,
    trusted: ArcSwap<Vec<IpNet>>,
    hosts: ArcSwap<HostPolicy>,
    listen: SocketAddr,
    sink: Arc<dyn RecordSink>,
    gate: Arc<dyn Gate>,
    metrics: Arc<Metrics>,
    upstream_resets: prometheus::IntCounter,
    timeouts: crate::config::Timeouts,
    workers: usize,
    limits: Arc<limits::ConnLimits>,
}

impl Proxy {
    /// Builds the proxy for `config`; records go to `sink`.
    pub fn new(
        config: &Config,
        sink: Arc<dyn RecordSink>,
        gate: Arc<dyn Gate>,
        metrics: Arc<Metrics>,
    ) -> Arc<Proxy> {
        let max_connections = match config.bound.max_connections {
            0 => {
                let (max, nofile) = limits::derived_max_connections();
                tracing::info!(
                    max_connections = max,
                    nofile,
                    "connection limit derived from the file-descriptor limit"
                );
                max
            }
            n => n,
        };
        let limits = limits::ConnLimits::new(
            max_connections,
            config.bound.max_connections_per_source,
            config.live.ipv6_prefix,
            &metrics,
        );
        let upstream_host = HeaderValue::from_str(config.bound.upstream.authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Arc::new(Proxy {
            upstream: config.bound.upstream.clone(),
            upstream_host,
            trusted: ArcSwap::from_pointee(config.live.trusted_proxies.clone()),
            hosts: ArcSwap::from_pointee(HostPolicy::new(
                config.bound.listen,
                config.live.allowed_hosts.as_deref(),
            )),
            listen: config.bound.listen,
            sink,
            gate,
            upstream_resets: metrics
                .upstream_error_counter(crate::telemetry::UpstreamErrorKind::Reset),
            metrics,
            timeouts: config.bound.timeouts.clone(),
            workers: config.bound.workers,
            limits,
        })
    }

    /// Replaces the trusted-proxy list (config reload).
    pub fn set_trusted_proxies(&self, trusted: Vec<IpNet>) {
        self.trusted.store(Arc::new(trusted));
    }

    /// Replaces the `allowed_hosts` policy (config reload; the listener stays).
    pub fn set_allowed_hosts(&self, allowed: Option<&[String]>) {
        self.hosts
            .store(Arc::new(HostPolicy::new(self.listen, allowed)));
    }

    fn completion(&self, req: &Request<Incoming>, peer: SocketAddr, start: Instant) -> Completion {
        let trusted = self.trusted.load();
        let src = client_ip::resolve(peer.ip(), req.headers(), &trusted);
        let target = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
        let (path, route) = route::normalize_fast(target);
        let raw_target = if path == target {
            path.clone()
        } else {
            Cow::Owned(target.to_owned())
        };
        let method = Method::parse(req.method().as_str());
        let method_text = match method {
            Method::Other => Cow::Owned(req.method().as_str().to_owned()),
            m => Cow::Borrowed(m.as_str()),
        };
        Completion {
            record: RequestRecord {
                src,
                peer: client_ip::canonical(peer.ip()),
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
            },
            start,
            sink: self.sink.clone(),
            in_flight: Some(InFlight::new(self.metrics.in_flight.clone())),
            upstream_resets: None,
            fault: None,
        }
    }

    async fn handle(
        &self,
        client: &upstream::UpstreamClient,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let start = Instant::now();
        let mut completion = self.completion(&req, peer, start);
        if let Err(refusal) = self.hosts.load().check(req.uri(), req.headers()) {
            self.metrics.refused_host.inc();
            return Ok(refuse(
                completion,
                refusal::host_refused(refusal),
                Outcome::Refused,
            ));
        }
        let src = completion.record.src;
        if self
            .gate
            .refuse(src, &completion.record.method_text, &completion.record.path)
            .is_some()
        {
            // Refused before any upstream connection is touched; the body is dropped unread.
            let resp = refusal::forbidden(&completion.record.path);
            return Ok(refuse(completion, resp, Outcome::Blocked));
        }
        let cell = Arc::new(FaultCell::default());
        completion.fault = Some(cell.clone());
        let guard = HeadGuard::new(completion);
        let req = self.rewrite(req, src, cell);
        match client.request(req).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                headers::strip_hop_by_hop(&mut parts.headers);
                let mut guard = guard;
                guard.count_resets(self.upstream_resets.clone());
                let body =
                    guard.into_body(parts.status.as_u16(), Outcome::Complete, Either::Left(body));
                Ok(Response::from_parts(parts, body))
            }
            Err(e) => Ok(self.failed(guard, &e)),
        }
    }

    /// Answers an exchange that failed before a response head, filed on the side that
    /// caused it.
    fn failed(
        &self,
        guard: HeadGuard,
        e: &hyper_util::client::legacy::Error,
    ) -> Response<ProxyBody> {
        let detail = upstream::describe(e);
        match fault::classify(e) {
            Fault::Upstream(kind) => {
                self.metrics.upstream_error(kind);
                static WARN: Throttle = Throttle::new(Duration::from_secs(10));
                if let Some(repeats) = WARN.allow() {
                    tracing::warn!(upstream = %self.upstream.url(), error = %detail, repeats, "upstream request failed");
                }
                let (parts, body) = upstream::bad_gateway(&detail).into_parts();
                let body = guard.into_body(
                    parts.status.as_u16(),
                    Outcome::UpstreamError,
                    Either::Right(body),
                );
                Response::from_parts(parts, body)
            }
            Fault::Client(fault) => {
                static WARN: Throttle = Throttle::new(Duration::from_secs(10));
                if let Some(repeats) = WARN.allow() {
                    tracing::info!(error = %detail, repeats, "client request body failed");
                }
                let (parts, body) = upstream::client_fault(fault, &detail).into_parts();
                let (status, outcome) = match fault {
                    // Nobody is left to read an answer: the log says 499, as nginx's does.
                    ClientFault::Aborted => {
                        (timing::CLIENT_CLOSED_REQUEST, Outcome::ClientCancelled)
                    }
                    _ => (parts.status.as_u16(), Outcome::Complete),
                };
                let body = guard.into_body(status, outcome, Either::Right(body));
                Response::from_parts(parts, body)
            }
        }
    }

    /// Points the request at the upstream: absolute URI, `Host` = upstream authority,
    /// hop-by-hop headers and `Expect` removed (hyper already answered `100 Continue` to the
    /// client when the body is first read), `X-Forwarded-*` set from what we resolved.
    fn rewrite(
        &self,
        req: Request<Incoming>,
        src: IpAddr,
        fault: Arc<FaultCell>,
    ) -> Request<ClientBody> {
        let (mut parts, body) = req.into_parts();
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.upstream.scheme.clone());
        uri.authority = Some(self.upstream.authority.clone());
        uri.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(uri) {
            parts.uri = uri;
        }
        let h = &mut parts.headers;
        let original_host = h.remove(HOST);
        headers::strip_hop_by_hop(h);
        h.remove(EXPECT);
        h.insert(HOST, self.upstream_host.clone());
        h.insert(headers::X_FORWARDED_FOR, headers::ip_value(src));
        h.insert(headers::X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        match original_host {
            Some(host) => h.insert(headers::X_FORWARDED_HOST, host),
            None => h.remove(headers::X_FORWARDED_HOST),
        };
        parts.version = Version::HTTP_11;
        Request::from_parts(parts, ClientBody::new(body, self.timeouts.body_idle, fault))
    }
}

/// A response refused before forwarding: recorded with `outcome`, and the connection closed
/// after it, so a refused client cannot park keep-alive connections on the guard's slots.
fn refuse(
    completion: Completion,
    resp: Response<Full<Bytes>>,
    outcome: Outcome,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    parts
        .headers
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    let body =
        HeadGuard::new(completion).into_body(parts.status.as_u16(), outcome, Either::Right(body));
    Response::from_parts(parts, body)
}
