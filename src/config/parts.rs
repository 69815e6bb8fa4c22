//! The two halves of a [`super::Config`]: what `serve` binds when it starts ([`Bound`]) and
//! what a reload (SIGHUP) swaps while it runs ([`Live`]).
//!
//! The split follows what can change under running connections. A listener, a log file,
//! the upstream pool, the worker threads and the connection limits are created once at
//! start, so a new value would need them torn down and rebuilt: those keys are `Bound`, and
//! a reload that changes one only reports it. Everything a request or a verdict reads
//! through a snapshot can be replaced between two requests: those keys are `Live`.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use super::{
    AccessLogFormat, BanPolicy, CpuAffinity, LogFormat, LogTarget, Mode, Timeouts, Upstream,
};
use crate::detect::RuleConfig;

/// Settings bound when `serve` starts; a change takes effect only after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    /// Client-facing listener.
    pub listen: SocketAddr,
    /// The Ollama to forward to (each worker's connection pool is built for it).
    pub upstream: Upstream,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Detection log destination (its writer thread opens it at start).
    pub detection_log: LogTarget,
    /// Access log destination (none = off).
    pub access_log: Option<LogTarget>,
    /// Access log line format (fixed with the access log's writer).
    pub access_log_format: AccessLogFormat,
    /// Where bans persist (none = in memory only); the journal is opened there at start.
    pub state_dir: Option<PathBuf>,
    /// Tracing filter for diagnostics (the subscriber is installed once).
    pub log_level: String,
    /// Diagnostics format on stderr (the subscriber is installed once).
    pub log_format: LogFormat,
    /// Proxy worker threads (each a single-threaded runtime with its own upstream pool).
    pub workers: usize,
    /// Whether the workers are pinned to CPUs (set when they start).
    pub cpu_affinity: CpuAffinity,
    /// Timeouts (read by the listeners, the upstream pools and the readiness probe, all set
    /// up at start).
    pub timeouts: Timeouts,
    /// Open client connections at most (0 = derived from the file-descriptor limit at start).
    pub max_connections: usize,
    /// Open client connections per source address at most (0 = off).
    pub max_connections_per_source: usize,
    /// The API key file (`auth.keys_file`, or `<state_dir>/keys.json`; none when neither is
    /// set, which `auth.mode = "off"` allows). The key store is opened there at start; its
    /// content is re-read on SIGHUP and changed by the admin API, but not its place.
    pub keys_file: Option<PathBuf>,
    /// The proxy listener speaks HTTPS (`tls_cert` and `tls_key` set). Turning TLS on or off
    /// changes what the listener speaks, so it needs a restart like `listen`; the files
    /// themselves are [`Live`] (a reload reads them again).
    pub tls: bool,
    /// `[sinks.splunk_hec]` (none = off): its queue, connection and TLS roots are built once
    /// at start.
    pub splunk_hec: Option<super::SplunkHec>,
    /// `[cluster]`: counters and bans shared through Redis (none = single instance). The
    /// connection and its background task are set up once at start.
    pub cluster: Option<super::ClusterConfig>,
}

impl Bound {
    /// The keys whose value in `new` differs from the running one in `self`, in the order a
    /// reload reports them as needing a restart.
    ///
    /// This is the one list of restart-bound keys. The destructuring is exhaustive on
    /// purpose: a field added to `Bound` does not compile until it is named here too, so a
    /// bound key can never be silently dropped from the report.
    pub fn changed_keys(&self, new: &Bound) -> Vec<&'static str> {
        let Bound {
            listen,
            upstream,
            admin_listen,
            detection_log,
            access_log,
            access_log_format,
            state_dir,
            log_level,
            log_format,
            workers,
            cpu_affinity,
            timeouts,
            max_connections,
            max_connections_per_source,
            keys_file,
            tls,
            splunk_hec,
            cluster,
        } = self;
        [
            (*listen != new.listen, "listen"),
            (*admin_listen != new.admin_listen, "admin_listen"),
            (*upstream != new.upstream, "upstream"),
            (*detection_log != new.detection_log, "detection_log"),
            (*access_log != new.access_log, "access_log"),
            (
                *access_log_format != new.access_log_format,
                "access_log_format",
            ),
            (*state_dir != new.state_dir, "state_dir"),
            (*timeouts != new.timeouts, "timeouts"),
            (*log_level != new.log_level, "log_level"),
            (*log_format != new.log_format, "log_format"),
            (*workers != new.workers, "workers"),
            (*cpu_affinity != new.cpu_affinity, "cpu_affinity"),
            (*max_connections != new.max_connections, "max_connections"),
            (
                *max_connections_per_source != new.max_connections_per_source,
                "max_connections_per_source",
            ),
            (*keys_file != new.keys_file, "auth.keys_file"),
            (*tls != new.tls, "tls_cert"),
            (*tls != new.tls, "tls_key"),
            (*splunk_hec != new.splunk_hec, "sinks.splunk_hec"),
            (*cluster != new.cluster, "cluster"),
        ]
        .into_iter()
        .filter_map(|(changed, key)| changed.then_some(key))
        .collect()
    }
}

/// Settings a reload swaps while `serve` runs: each request, verdict and admin call reads
/// them through a snapshot, so a new value applies from the next one on.
#[derive(Debug, Clone)]
pub struct Live {
    /// Default action of rules that set none.
    pub mode: Mode,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Sources never counted and never banned.
    pub allowlist: Vec<IpNet>,
    /// Host names clients may address (lower case; exact, `*.suffix` or `*`). `None` =
    /// the rule Ollama itself applies for the listen address.
    pub allowed_hosts: Option<Vec<String>>,
    /// IPv6 sources are grouped by this prefix length (counters and bans; the per-source
    /// connection limit keeps the grouping it started with).
    pub ipv6_prefix: u8,
    /// Hard cap on detection counter entries (the engine is rebuilt with it on reload).
    pub max_tracked_keys: usize,
    /// Ban policy.
    pub ban: BanPolicy,
    /// Bearer token the admin API's ban endpoints require (none = no auth; loopback bind).
    pub admin_token: Option<String>,
    /// The rules in force, resolved when the file was read: its `[[rule]]` tables, or the
    /// built-in set with its `[rules.NAME]` overrides applied (possibly empty, when every
    /// built-in is switched off).
    pub rules: Vec<RuleConfig>,
    /// The policy stage (`[policy]`).
    pub(crate) policy: crate::policy::PolicyConfig,
    /// `enforcement.abort_in_flight`: a ban cuts the banned source's running requests.
    pub abort_in_flight: bool,
    /// `[auth]` (everything but the key file's place).
    pub(crate) auth: crate::auth::AuthConfig,
    /// `tls_cert` + `tls_key`, read and checked: new handshakes use the certificate of the
    /// last successful load (established connections keep theirs).
    pub tls: Option<super::Tls>,
}

impl Live {
    /// The rules in force.
    pub fn effective_rules(&self) -> Vec<RuleConfig> {
        self.rules.clone()
    }
}
