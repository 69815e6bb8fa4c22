//! The proxy path: accept, resolve the client, forward unchanged and unbuffered, stream the
//! response back frame by frame, and hand one [`RequestRecord`](crate::record::RequestRecord)
//! per request to the record pipeline.
//!
//! The request path is a tower stack of one-concern layers ([`layers`]), assembled once in
//! [`Proxy::stack`]; hyper serves it through `TowerToHyperService`. Connection admission
//! (limits, accept back-off) happens before hyper sees a byte, in the accept loop
//! (`server` and [`limits`]). tower's `ConcurrencyLimit`/`LoadShed` do not fit there: they
//! bound requests in flight, while what exhausts the guard is open connections (idle
//! keep-alive ones and half-sent heads included), which must be refused at accept time.

pub(crate) mod buffered;
pub(crate) mod client_ip;
pub(crate) mod cut;
pub(crate) mod decoders;
pub(crate) mod deferred;
pub(crate) mod eos;
pub(crate) mod fault;
pub(crate) mod head_timer;
pub(crate) mod headers;
pub(crate) mod host_guard;
pub(crate) mod layers;
pub(crate) mod limits;
pub(crate) mod policy_body;
pub(crate) mod refusal;
pub(crate) mod send_idle;
mod server;
#[cfg(test)]
pub(crate) mod test_io;
pub(crate) mod timing;
pub(crate) mod tls;
pub(crate) mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use ipnet::IpNet;
use tower::ServiceBuilder;

use crate::config::{Bound, Live, Upstream};
use crate::record::RecordSink;
use crate::telemetry::Metrics;
use host_guard::HostPolicy;
use layers::auth::{AuthCtx, AuthLayer, AuthService, AuthSink};
use layers::gate::{GateLayer, GateService};
use layers::host_guard::{HostGuard, HostGuardLayer};
use layers::identify::{Identify, IdentifyCtx, IdentifyLayer};
use layers::policy::{PolicyCtx, PolicyLayer, PolicyService, PolicySink};
use layers::record::{Record, RecordCtx, RecordLayer};
use layers::rewrite::{Rewrite, RewriteLayer, Target};
use layers::upstream_error::{ErrorCtx, UpstreamError, UpstreamErrorLayer};
use refusal::Gate;

/// The request path below the connection-bound client-IP layer: a concrete type (no boxed
/// service per request), built once per worker around that worker's upstream pool.
pub(crate) type Stack = Identify<
    Record<
        HostGuard<
            GateService<
                AuthService<PolicyService<UpstreamError<Rewrite<upstream::UpstreamClient>>>>,
            >,
        >,
    >,
>;

/// What the `[auth]` layers share with the rest of `serve`.
#[derive(Clone)]
pub(crate) struct AuthParts {
    /// The live `[auth]` settings (reload swaps them).
    pub(crate) config: Arc<ArcSwap<crate::auth::AuthConfig>>,
    /// The key store (none without a key file).
    pub(crate) store: Option<Arc<crate::auth::store::KeyStore>>,
    /// Where refusals are reported.
    pub(crate) sink: Arc<dyn AuthSink>,
}

/// The proxy: what every layer of the stack shares, and the live policies reload swaps.
pub(crate) struct Proxy {
    upstream: Upstream,
    trusted: Arc<ArcSwap<Vec<IpNet>>>,
    hosts: Arc<ArcSwap<HostPolicy>>,
    /// Whether `hosts` is a list of names (`allowed_hosts`): then a same-origin `Origin` is
    /// not forwarded (the rewrite layer reads it per request; a reload sets it).
    names_listed: Arc<AtomicBool>,
    listen: SocketAddr,
    /// The record pipeline, behind the queues that run each record after its response is
    /// written.
    records: Arc<deferred::Deferred>,
    gate: Arc<dyn Gate>,
    metrics: Arc<Metrics>,
    timeouts: crate::config::Timeouts,
    workers: usize,
    /// The CPU each worker is pinned to (`cpu_affinity`; none = left to the scheduler).
    cpus: Option<Vec<usize>>,
    limits: Arc<limits::ConnLimits>,
    policy: Arc<ArcSwap<crate::policy::PolicyConfig>>,
    policy_sink: Arc<dyn PolicySink>,
    /// The policy stage's zstd decoder slots, shared by every worker.
    decoders: Arc<decoders::Decoders>,
    /// The bytes of bodies the policy stage holds, counted across workers.
    buffered: Arc<buffered::Buffered>,
    auth: AuthParts,
    /// The listener speaks HTTPS (`tls_cert`/`tls_key`; on or off for the process's life).
    tls: Option<tls::TlsListener>,
}

impl Proxy {
    /// Builds the proxy from the restart-bound part of the config and the live part it
    /// starts with; records go to `sink`, bans are asked of `gate`. Fails only when the TLS
    /// configuration cannot be built.
    pub(crate) fn new(
        bound: &Bound,
        live: &Live,
        sink: Arc<dyn RecordSink>,
        gate: Arc<dyn Gate>,
        policy_sink: Arc<dyn PolicySink>,
        auth: AuthParts,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Proxy>, rustls::Error> {
        let tls = match &live.tls {
            Some(t) => Some(tls::TlsListener::new(t.certified.clone(), &metrics)?),
            None => None,
        };
        metrics.set_tls_expiry(live.tls.as_ref().and_then(|t| t.validity));
        let max_connections = match bound.max_connections {
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
            bound.max_connections_per_source,
            live.ipv6_prefix,
            &metrics,
        );
        let cpus = match bound.cpu_affinity {
            crate::config::CpuAffinity::Auto => crate::affinity::plan(bound.workers),
            crate::config::CpuAffinity::Off => None,
        };
        if let Some(cpus) = &cpus {
            tracing::info!(?cpus, "pinning the proxy workers, one per CPU");
        }
        let hosts = HostPolicy::new(bound.listen, live.allowed_hosts.as_deref());
        Ok(Arc::new(Proxy {
            upstream: bound.upstream.clone(),
            trusted: Arc::new(ArcSwap::from_pointee(live.trusted_proxies.clone())),
            names_listed: Arc::new(AtomicBool::new(hosts.names_listed())),
            hosts: Arc::new(ArcSwap::from_pointee(hosts)),
            listen: bound.listen,
            records: deferred::Deferred::new(sink, bound.workers),
            gate,
            metrics,
            timeouts: bound.timeouts.clone(),
            workers: bound.workers,
            cpus,
            limits,
            policy: Arc::new(ArcSwap::from_pointee(live.policy.clone())),
            policy_sink,
            decoders: decoders::Decoders::standard(),
            buffered: buffered::Buffered::new(),
            auth,
            tls,
        }))
    }

    /// New TLS handshakes present `tls`'s certificate (config reload). Turning TLS on or off
    /// needs a restart (the reload reports it), so a listener without TLS ignores this.
    pub(crate) fn set_tls(&self, tls: Option<&crate::config::Tls>) {
        if let (Some(listener), Some(tls)) = (&self.tls, tls) {
            listener.set_certificate(tls.certified.clone());
            self.metrics.set_tls_expiry(tls.validity);
            tracing::info!(tls_cert = %tls.cert.display(), tls_key = %tls.key.display(), "TLS certificate reloaded: new connections use it");
        }
    }

    /// Runs every record still held back (see [`deferred`]): what a client could have seen
    /// answered is then counted, logged and enforced.
    pub(crate) fn settle(&self) {
        self.records.settle();
    }

    /// The records' queues, for those that must settle them (the admin API).
    pub(crate) fn records(&self) -> Arc<deferred::Deferred> {
        self.records.clone()
    }

    /// Replaces the trusted-proxy list (config reload).
    pub(crate) fn set_trusted_proxies(&self, trusted: Vec<IpNet>) {
        self.trusted.store(Arc::new(trusted));
    }

    /// Replaces the reloadable `[auth]` settings (config reload).
    pub(crate) fn set_auth(&self, auth: crate::auth::AuthConfig) {
        self.auth.config.store(Arc::new(auth));
    }

    /// The key store (none without a key file).
    pub(crate) fn keys(&self) -> Option<&Arc<crate::auth::store::KeyStore>> {
        self.auth.store.as_ref()
    }

    /// Replaces the `[policy]` section (config reload).
    pub(crate) fn set_policy(&self, policy: crate::policy::PolicyConfig) {
        self.policy.store(Arc::new(policy));
    }

    /// Replaces the `allowed_hosts` policy (config reload; the listener stays).
    pub(crate) fn set_allowed_hosts(&self, allowed: Option<&[String]>) {
        let policy = HostPolicy::new(self.listen, allowed);
        self.names_listed
            .store(policy.names_listed(), Ordering::Relaxed);
        self.hosts.store(Arc::new(policy));
    }

    /// The request path, outermost first. The order is the design:
    ///
    /// 1. *(per connection, added by the accept loop)* client IP — every layer below needs
    ///    to know who is calling.
    /// 2. identify — which API key (if `[auth]` is on), and the credential removed: the
    ///    record below starts with the identity, and no layer after this sees a key.
    /// 3. record — outermost per request, so the clock starts before any work and every
    ///    request, refused or forwarded, becomes exactly one record.
    /// 4. host guard — refuses for *what* the request is (a rebound name, a missing `Host`,
    ///    `CONNECT`, a transfer coding it cannot decode), cheapest check, and must hold even
    ///    for sources nobody has banned.
    /// 5. gate — refuses banned sources (and banned identities) before any upstream work,
    ///    before a key can matter and before the policy stage reads a body.
    /// 6. auth — refuses what `auth.mode = "required"` does not allow (401/403), before a
    ///    stranger's body is read.
    /// 7. policy — reads the JSON body of model-management (and generation) routes and
    ///    refuses what `[policy]` forbids before a byte is forwarded.
    /// 8. upstream-error mapping — turns failures from below into answers filed on the
    ///    side that caused them.
    /// 9. rewrite — the last touch before the wire (URI, `Host`, `X-Forwarded-*`,
    ///    hop-by-hop headers, the body's fault wrapper).
    /// 10. the upstream client (HTTP/1.1 over the worker's connection pool, in the request's
    ///     own task: [`upstream`]).
    pub(crate) fn stack(&self, client: upstream::UpstreamClient) -> Stack {
        let host = HeaderValue::from_str(self.upstream.authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        let auth_metrics = &self.metrics.auth;
        ServiceBuilder::new()
            .layer(IdentifyLayer::new(IdentifyCtx {
                config: self.auth.config.clone(),
                store: self.auth.store.clone(),
            }))
            .layer(RecordLayer::new(RecordCtx {
                sink: self.records.clone(),
                in_flight: self.metrics.in_flight.clone(),
                resets: self
                    .metrics
                    .upstream_error_counter(crate::telemetry::UpstreamErrorKind::Reset),
                gate: self.gate.clone(),
                bans: self.gate.ban_listener(),
            }))
            .layer(HostGuardLayer::new(
                self.hosts.clone(),
                self.metrics.refused_host.clone(),
                self.metrics.refused.with_label_values(&["malformed"]),
            ))
            .layer(
                GateLayer::new(self.gate.clone())
                    .settling(self.records.clone())
                    .refusing_cross_site(self.metrics.refused.with_label_values(&["cross_site"])),
            )
            .layer(AuthLayer::new(AuthCtx {
                config: self.auth.config.clone(),
                sink: self.auth.sink.clone(),
                refused_auth: self.metrics.refused.with_label_values(&["auth"]),
                refused_role: self.metrics.refused.with_label_values(&["role"]),
                results: auth_metrics.results.clone(),
                by_identity: auth_metrics.by_identity.clone(),
            }))
            .layer(PolicyLayer::new(PolicyCtx {
                config: self.policy.clone(),
                sink: self.policy_sink.clone(),
                refused: self.metrics.refused.with_label_values(&["policy"]),
                body_idle: self.timeouts.body_idle,
                decoders: self.decoders.clone(),
                buffered: self.buffered.clone(),
                busy: self.metrics.refused.with_label_values(&["busy"]),
            }))
            .layer(UpstreamErrorLayer::new(ErrorCtx {
                metrics: self.metrics.clone(),
                upstream: self.upstream.url(),
            }))
            .layer(RewriteLayer::new(Target {
                host,
                forwarded_proto: HeaderValue::from_static(if self.tls.is_some() {
                    "https"
                } else {
                    "http"
                }),
                body_idle: self.timeouts.body_idle,
                names_listed: self.names_listed.clone(),
            }))
            .service(client)
    }
}
