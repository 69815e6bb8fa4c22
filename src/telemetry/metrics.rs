//! Prometheus metrics (README, "Metrics"), registered once with every handle the request path needs
//! resolved in advance.
//!
//! Labels come only from fixed tables (route id, method, status class, outcome, configured
//! rule names, severities, actions), never from client input, so cardinality is bounded by
//! construction. The combinations an operator alerts on are pre-initialised to 0 so `rate()`
//! works from the first scrape; the rest of the fixed table is created on first use through a
//! `OnceLock` slot, which costs the request path one atomic load, not a hash lookup.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::Mode;
use crate::record::{Method, Outcome, RequestRecord};
use crate::route::Route;

/// Histogram buckets of request durations: sub-second API calls up to hour-long pulls, with
/// the seed rule's edges (40, 50, 55, 60 s) as exact boundaries.
pub(crate) const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 55.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Buckets of time to first byte (first token): finer at the low end.
pub(crate) const TTFB_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 3600.0,
];

/// The `kind` label values of `sink_errors_total` (README, "Splunk").
pub(crate) const SINK_ERROR_KINDS: [&str; 8] = [
    "connect",
    "tls",
    "timeout",
    "http_5xx",
    "http_429",
    "http_4xx",
    "ack_timeout",
    "ack_lost",
];

/// Status class labels; index = first digit - 1, last = anything outside 100..=599.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Upstream error kinds (README, "Metrics").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamErrorKind {
    /// TCP connect refused or failed.
    Connect,
    /// Connect timed out.
    Timeout,
    /// The connection broke after it was established.
    Reset,
}

impl UpstreamErrorKind {
    /// In discriminant order, so `kind as usize` indexes tables built from it.
    const ALL: [UpstreamErrorKind; 3] = [Self::Connect, Self::Timeout, Self::Reset];

    /// Label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
        }
    }
}

/// Severity labels pre-initialised for `detections_total`.
pub(crate) const SEVERITIES: [&str; 3] = ["low", "medium", "high"];
/// Action labels of `detections_total` (`would_block`: monitor mode, where block mode would
/// ban).
pub(crate) const ACTIONS: [&str; 3] = ["logged", "would_block", "banned"];
/// Action labels of policy verdicts in `detections_total`.
pub(crate) const POLICY_ACTIONS: [&str; 3] = ["would_block", "blocked", "banned"];

fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 5,
    }
}

const N_ROUTE: usize = Route::ALL.len();
const N_METHOD: usize = Method::ALL.len();
const N_CLASS: usize = STATUS_CLASSES.len();
const N_OUTCOME: usize = Outcome::ALL.len();

fn slot(route: Route, method: Method, class: usize, outcome: Outcome) -> usize {
    ((route.index() * N_METHOD + method.index()) * N_CLASS + class) * N_OUTCOME + outcome.index()
}

/// All metric families of one process.
pub(crate) struct Metrics {
    registry: Registry,
    /// Unprefixed families: the standard `process_*` ones of the process collector, under
    /// the names every Prometheus client library exports them by (Linux only).
    process_registry: Registry,
    requests_vec: IntCounterVec,
    requests: Box<[OnceLock<IntCounter>]>,
    duration: Box<[Histogram]>,
    ttfb: Box<[Histogram]>,
    /// Requests currently being proxied.
    pub(crate) in_flight: IntGauge,
    upstream_errors: [IntCounter; 3],
    /// `detections_total{rule,severity,action}`.
    pub(crate) detections: IntCounterVec,
    /// `blocked_requests_total{rule}`.
    pub(crate) blocked: IntCounterVec,
    /// Bans in force.
    pub(crate) active_bans: IntGauge,
    /// Detection counter entries.
    pub(crate) tracked_keys: IntGauge,
    /// Counter entries evicted by the `max_tracked_keys` cap.
    pub(crate) tracked_key_evictions: IntCounter,
    /// Log lines dropped because a log writer could not keep up (`log` = access | detection).
    pub(crate) log_lines_dropped: IntCounterVec,
    /// `sink_sent_total{sink}`: events a sink delivered (acknowledged, with HEC ack on).
    pub(crate) sink_sent: IntCounterVec,
    /// `sink_dropped_total{sink}`: events a sink gave up on (queue full, refused by the
    /// receiver as a configuration error, or still queued when shutdown timed out).
    pub(crate) sink_dropped: IntCounterVec,
    /// `sink_errors_total{sink,kind}`: failed delivery attempts, by kind.
    pub(crate) sink_errors: IntCounterVec,
    /// Config reloads by result (`success` | `failure`).
    pub(crate) config_reloads: IntCounterVec,
    /// `refused_requests_total{reason}`: refused before forwarding for what the request is.
    pub(crate) refused: IntCounterVec,
    /// `refused_requests_total{reason="host"}`, resolved for the request path.
    pub(crate) refused_host: IntCounter,
    /// `connections_rejected_total{reason}`: connections turned away by a limit.
    pub(crate) connections_rejected: IntCounterVec,
    /// `tls_handshake_failures_total{reason}`: TLS connections that never got to HTTP.
    pub(crate) tls_handshake_failures: IntCounterVec,
    /// Client connections open now (proxy listener).
    pub(crate) open_connections: IntGauge,
    /// Running requests cut because their source was banned.
    pub(crate) aborted: IntCounter,
    /// The `[auth]` families.
    pub(crate) auth: super::auth_metrics::AuthMetrics,
    /// The `[cluster]` families.
    pub(crate) cluster: super::cluster_metrics::ClusterMetrics,
    /// 1 when the upstream answered the last readiness probe (what `/readyz` reports).
    pub(crate) upstream_up: IntGauge,
    /// The listener certificate's notAfter (seconds since the epoch); 0 without TLS.
    tls_expiry: IntGauge,
    /// `mode{mode}`: 1 for the mode in force, 0 for the other.
    mode: IntGaugeVec,
    /// Unix time of the last successful config load (start or SIGHUP reload).
    config_last_reload_success: Gauge,
    /// 1 when the last config reload succeeded (start counts as one), else 0.
    config_last_reload_successful: IntGauge,
}

/// Reasons of `refused_requests_total` known at start.
pub(crate) const REFUSAL_REASONS: [&str; 7] = [
    "host",
    "malformed",
    "cross_site",
    "policy",
    "busy",
    "auth",
    "role",
];
/// Reasons of `connections_rejected_total`.
pub(crate) const CONNECTION_REJECT_REASONS: [&str; 4] = [
    "max_connections",
    "per_source",
    "accept_error",
    "plain_http",
];

/// Registration failed (a programming error: duplicate or invalid metric).
#[derive(Debug, thiserror::Error)]
// prometheus's error is the source: `serve` prints the chain, so it is not repeated here.
#[error("metrics registration failed")]
pub struct MetricsError(#[from] prometheus::Error);

fn reg<T: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: T,
) -> Result<T, MetricsError> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Registers every family; `rules` are the configured rule names (pre-initialised labels).
    pub(crate) fn new(rules: &[String]) -> Result<Metrics, MetricsError> {
        let r = Registry::new_custom(Some("ollama_guard".into()), None)?;
        let requests_vec = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "requests_total",
                    "Requests handled, by route, method, status class and outcome.",
                ),
                &["route", "method", "status_class", "outcome"],
            )?,
        )?;
        let hist =
            |name: &str, help: &str, buckets: &[f64]| -> Result<HistogramVec, MetricsError> {
                let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
                reg(&r, HistogramVec::new(opts, &["route"])?)
            };
        let duration_vec = hist(
            "request_duration_seconds",
            "Request head in to last response byte out (Ollama's [GIN] latency).",
            DURATION_BUCKETS,
        )?;
        let ttfb_vec = hist(
            "time_to_first_byte_seconds",
            "Request head in to the first response body byte.",
            TTFB_BUCKETS,
        )?;
        let per_route = |v: &HistogramVec| -> Box<[Histogram]> {
            Route::ALL
                .iter()
                .map(|r| v.with_label_values(&[r.label()]))
                .collect()
        };
        let upstream_vec = reg(
            &r,
            IntCounterVec::new(
                Opts::new("upstream_errors_total", "Upstream failures by kind."),
                &["kind"],
            )?,
        )?;
        let upstream_errors =
            UpstreamErrorKind::ALL.map(|k| upstream_vec.with_label_values(&[k.label()]));
        let refused = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "refused_requests_total",
                    "Requests refused before forwarding, by reason (host, ...).",
                ),
                &["reason"],
            )?,
        )?;
        let m = Metrics {
            aborted: reg(
                &r,
                IntCounter::new(
                    "aborted_requests_total",
                    "Running requests cut because their source was banned while they ran.",
                )?,
            )?,
            refused_host: refused.with_label_values(&["host"]),
            refused,
            connections_rejected: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "connections_rejected_total",
                        "Client connections turned away (a connection limit, a failed accept, plain HTTP on the HTTPS port), by reason.",
                    ),
                    &["reason"],
                )?,
            )?,
            tls_handshake_failures: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tls_handshake_failures_total",
                        "TLS connections to the proxy that never got to HTTP, by reason (timeout, protocol, closed).",
                    ),
                    &["reason"],
                )?,
            )?,
            open_connections: reg(
                &r,
                IntGauge::new(
                    "open_connections",
                    "Client connections open on the proxy listener.",
                )?,
            )?,
            requests: (0..N_ROUTE * N_METHOD * N_CLASS * N_OUTCOME)
                .map(|_| OnceLock::new())
                .collect(),
            duration: per_route(&duration_vec),
            ttfb: per_route(&ttfb_vec),
            in_flight: reg(
                &r,
                IntGauge::new("in_flight_requests", "Requests being proxied now.")?,
            )?,
            upstream_errors,
            detections: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "detections_total",
                        "Rule detections by rule, severity and action.",
                    ),
                    &["rule", "severity", "action"],
                )?,
            )?,
            blocked: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("blocked_requests_total", "Requests refused by a ban."),
                    &["rule"],
                )?,
            )?,
            active_bans: reg(&r, IntGauge::new("active_bans", "Bans in force.")?)?,
            tracked_keys: reg(
                &r,
                IntGauge::new("tracked_keys", "Detection counter entries held.")?,
            )?,
            tracked_key_evictions: reg(
                &r,
                IntCounter::new(
                    "tracked_key_evictions_total",
                    "Counter entries evicted by max_tracked_keys.",
                )?,
            )?,
            log_lines_dropped: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "log_lines_dropped_total",
                        "Log lines dropped because the writer fell behind.",
                    ),
                    &["log"],
                )?,
            )?,
            sink_sent: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "sink_sent_total",
                        "Events a sink delivered (with Splunk HEC ack: acknowledged).",
                    ),
                    &["sink"],
                )?,
            )?,
            sink_dropped: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "sink_dropped_total",
                        "Events a sink dropped: queue full, refused by the receiver (4xx), or unsent at shutdown.",
                    ),
                    &["sink"],
                )?,
            )?,
            sink_errors: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "sink_errors_total",
                        "Failed sink delivery attempts by kind.",
                    ),
                    &["sink", "kind"],
                )?,
            )?,
            config_reloads: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("config_reloads_total", "Config reloads by result."),
                    &["result"],
                )?,
            )?,
            auth: super::auth_metrics::AuthMetrics::new(&r)?,
            cluster: super::cluster_metrics::ClusterMetrics::new(&r)?,
            upstream_up: reg(
                &r,
                IntGauge::new(
                    "upstream_up",
                    "1 when the upstream Ollama answered the last readiness probe (/readyz 200), else 0.",
                )?,
            )?,
            tls_expiry: reg(
                &r,
                IntGauge::new(
                    "tls_certificate_expiration_timestamp_seconds",
                    "When the proxy listener's TLS certificate expires (its notAfter, seconds since the epoch); 0 without TLS.",
                )?,
            )?,
            mode: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "mode",
                        "The global mode in force: 1 for the active mode, 0 for the other.",
                    ),
                    &["mode"],
                )?,
            )?,
            config_last_reload_success: reg(
                &r,
                Gauge::new(
                    "config_last_reload_success_timestamp_seconds",
                    "Unix time of the last successful config load (start or SIGHUP reload).",
                )?,
            )?,
            config_last_reload_successful: reg(
                &r,
                IntGauge::new(
                    "config_last_reload_successful",
                    "1 when the last config load (start or SIGHUP reload) succeeded, else 0.",
                )?,
            )?,
            requests_vec,
            registry: r,
            process_registry: Registry::new(),
        };
        let build = reg(
            &m.registry,
            IntGaugeVec::new(
                Opts::new(
                    "build_info",
                    "Build information (version, source revision); always 1.",
                ),
                &["version", "revision"],
            )?,
        )?;
        build
            .with_label_values(&[crate::VERSION, crate::REVISION])
            .set(1);
        #[cfg(target_os = "linux")]
        m.process_registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        m.preinitialise(rules);
        Ok(m)
    }

    /// Sets `tls_certificate_expiration_timestamp_seconds` from a certificate's validity
    /// (start and every reload; 0 when unknown).
    pub(crate) fn set_tls_expiry(&self, validity: Option<(i64, i64)>) {
        self.tls_expiry
            .set(validity.map_or(0, |(_, not_after)| not_after));
    }

    /// Sets `mode{mode}`: 1 for `mode`, 0 for the other (at start and on every reload).
    pub(crate) fn set_mode(&self, mode: Mode) {
        for m in [Mode::Monitor, Mode::Block] {
            self.mode
                .with_label_values(&[m.as_str()])
                .set(i64::from(m == mode));
        }
    }

    /// Records a config load: a success sets the timestamp to `now` (Unix seconds) and
    /// `config_last_reload_successful` to 1; a failure sets only the latter, to 0.
    pub(crate) fn config_loaded(&self, success: bool, now: f64) {
        if success {
            self.config_last_reload_success.set(now);
        }
        self.config_last_reload_successful.set(i64::from(success));
    }

    /// Sets the label combinations operators alert on to 0 so every series exists at start.
    fn preinitialise(&self, rules: &[String]) {
        for route in Route::ALL {
            let method = match route {
                Route::Root
                | Route::Version
                | Route::Status
                | Route::Tags
                | Route::Ps
                | Route::ModelRecommendations
                | Route::OpenAiModels
                | Route::OpenAiModel => Method::Get,
                Route::Delete => Method::Delete,
                _ => Method::Post,
            };
            for (class, outcome) in [
                (1, Outcome::Complete),
                (3, Outcome::Complete),
                (4, Outcome::Complete),
                (3, Outcome::Blocked),
                (3, Outcome::Refused),
                (4, Outcome::UpstreamError),
                (3, Outcome::ClientCancelled),
            ] {
                self.request_counter(route, method, class, outcome);
            }
        }
        for rule in rules {
            for sev in SEVERITIES {
                for action in ACTIONS {
                    self.detections
                        .with_label_values(&[rule.as_str(), sev, action]);
                }
            }
            self.blocked.with_label_values(&[rule.as_str()]);
        }
        self.blocked.with_label_values(&["admin"]);
        for rule in crate::policy::RULES {
            for (sev, action) in crate::policy::RULE_SEVERITIES
                .iter()
                .filter(|(r, _)| *r == rule)
                .flat_map(|(_, sev)| POLICY_ACTIONS.map(|a| (sev.as_str(), a)))
            {
                self.detections.with_label_values(&[rule, sev, action]);
            }
        }
        self.sink_sent.with_label_values(&["splunk_hec"]);
        self.sink_dropped.with_label_values(&["splunk_hec"]);
        for kind in SINK_ERROR_KINDS {
            self.sink_errors.with_label_values(&["splunk_hec", kind]);
        }
        for log in ["access", "detection"] {
            self.log_lines_dropped.with_label_values(&[log]);
        }
        for result in ["success", "failure"] {
            self.config_reloads.with_label_values(&[result]);
        }
        for mode in [Mode::Monitor, Mode::Block] {
            self.mode.with_label_values(&[mode.as_str()]);
        }
        for reason in REFUSAL_REASONS {
            self.refused.with_label_values(&[reason]);
        }
        for reason in CONNECTION_REJECT_REASONS {
            self.connections_rejected.with_label_values(&[reason]);
        }
        for reason in crate::proxy::tls::HANDSHAKE_FAILURE_REASONS {
            self.tls_handshake_failures.with_label_values(&[reason]);
        }
    }

    /// Creates the zero series of a rule (at start, and for rules a reload adds).
    pub(crate) fn init_rule(&self, rule: &str) {
        for sev in SEVERITIES {
            for action in ACTIONS {
                self.detections.with_label_values(&[rule, sev, action]);
            }
        }
        self.blocked.with_label_values(&[rule]);
    }

    fn request_counter(
        &self,
        route: Route,
        method: Method,
        class: usize,
        outcome: Outcome,
    ) -> &IntCounter {
        let i = slot(route, method, class, outcome);
        self.requests[i].get_or_init(|| {
            self.requests_vec.with_label_values(&[
                route.label(),
                method.as_str(),
                STATUS_CLASSES[class],
                outcome.label(),
            ])
        })
    }

    /// Counts one finished request.
    pub(crate) fn observe(&self, rec: &RequestRecord) {
        self.request_counter(rec.route, rec.method, status_class(rec.status), rec.outcome)
            .inc();
        if rec.outcome.is_refusal() {
            return;
        }
        self.duration[rec.route.index()].observe(rec.total.as_secs_f64());
        if let Some(t) = rec.ttfb {
            self.ttfb[rec.route.index()].observe(t.as_secs_f64());
        }
    }

    /// The counter of one upstream failure kind (resolved once, for the request path).
    pub(crate) fn upstream_error_counter(&self, kind: UpstreamErrorKind) -> IntCounter {
        self.upstream_errors[kind as usize].clone()
    }

    /// Counts one upstream failure.
    pub(crate) fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].inc();
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut buf = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.process_registry.gather());
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_cover_499_and_out_of_range() {
        assert_eq!(STATUS_CLASSES[status_class(499)], "4xx");
        assert_eq!(STATUS_CLASSES[status_class(204)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class(100)], "1xx");
        assert_eq!(STATUS_CLASSES[status_class(999)], "other");
    }

    #[test]
    fn every_family_is_exported_from_the_first_scrape() {
        let m = Metrics::new(&["model_exfiltration".into()]).unwrap();
        let text = m.render();
        for family in [
            "ollama_guard_requests_total{",
            "ollama_guard_request_duration_seconds_bucket{",
            "ollama_guard_time_to_first_byte_seconds_bucket{",
            "ollama_guard_in_flight_requests 0",
            "ollama_guard_upstream_errors_total{kind=\"timeout\"} 0",
            "ollama_guard_detections_total{action=\"banned\",rule=\"model_exfiltration\",severity=\"high\"} 0",
            "ollama_guard_blocked_requests_total{rule=\"model_exfiltration\"} 0",
            "ollama_guard_active_bans 0",
            "ollama_guard_tracked_keys 0",
            "ollama_guard_tracked_key_evictions_total 0",
            "ollama_guard_build_info{revision=\"",
            "ollama_guard_upstream_up 0",
            "ollama_guard_tls_certificate_expiration_timestamp_seconds 0",
            "ollama_guard_mode{mode=\"monitor\"} 0",
            "ollama_guard_mode{mode=\"block\"} 0",
            "ollama_guard_config_last_reload_successful 0",
            "ollama_guard_config_last_reload_success_timestamp_seconds 0",
            "ollama_guard_refused_requests_total{reason=\"host\"} 0",
            "ollama_guard_connections_rejected_total{reason=\"per_source\"} 0",
            "ollama_guard_connections_rejected_total{reason=\"plain_http\"} 0",
            "ollama_guard_tls_handshake_failures_total{reason=\"timeout\"} 0",
            "ollama_guard_tls_handshake_failures_total{reason=\"protocol\"} 0",
            "ollama_guard_tls_handshake_failures_total{reason=\"closed\"} 0",
            "ollama_guard_open_connections 0",
            "ollama_guard_cluster_connected 0",
            "ollama_guard_cluster_sync_duration_seconds_bucket{le=\"0.0005\"} 0",
            "ollama_guard_cluster_sync_errors_total 0",
            "ollama_guard_cluster_deltas_dropped_total 0",
            "route=\"/api/show\",status_class=\"2xx\"",
            "le=\"55\"",
        ] {
            assert!(text.contains(family), "missing {family}");
        }
    }

    #[test]
    fn mode_and_reload_gauges_take_their_values() {
        let m = Metrics::new(&[]).unwrap();
        m.set_mode(Mode::Block);
        m.config_loaded(true, 1_764_400_000.5);
        let text = m.render();
        for line in [
            "ollama_guard_mode{mode=\"block\"} 1\n",
            "ollama_guard_mode{mode=\"monitor\"} 0\n",
            "ollama_guard_config_last_reload_successful 1\n",
            "ollama_guard_config_last_reload_success_timestamp_seconds 1764400000.5\n",
        ] {
            assert!(text.contains(line), "missing {line}");
        }
        m.set_mode(Mode::Monitor);
        m.config_loaded(false, 1_764_400_100.0);
        let text = m.render();
        for line in [
            "ollama_guard_mode{mode=\"block\"} 0\n",
            "ollama_guard_mode{mode=\"monitor\"} 1\n",
            "ollama_guard_config_last_reload_successful 0\n",
            "ollama_guard_config_last_reload_success_timestamp_seconds 1764400000.5\n",
        ] {
            assert!(text.contains(line), "missing {line}");
        }
    }
}
