//! The TOML configuration file, as written by the operator: every key optional, unknown keys
//! rejected (a typo must not silently fall back to a default).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::detect::{RuleConfig, RuleOverride};

/// The file's top level (README, "Configuration file").
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Client-facing listener.
    pub listen: Option<String>,
    /// The Ollama to forward to.
    pub upstream: Option<String>,
    /// Admin listener.
    pub admin_listen: Option<String>,
    /// `monitor` | `block`.
    pub mode: Option<String>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// Sources never counted and never banned.
    pub allowlist: Option<Vec<String>>,
    /// IPv6 grouping prefix length.
    pub ipv6_prefix: Option<u8>,
    /// Hard cap on counter entries.
    pub max_tracked_keys: Option<usize>,
    /// Detection log path (`-` = stdout).
    pub detection_log: Option<String>,
    /// Access log path (`-` = stdout); absent = off.
    pub access_log: Option<String>,
    /// `gin` | `json`.
    pub access_log_format: Option<String>,
    /// Where bans persist.
    pub state_dir: Option<String>,
    /// Tracing filter for diagnostics.
    pub log_level: Option<String>,
    /// `text` | `json`: diagnostics format on stderr.
    pub log_format: Option<String>,
    /// Proxy worker threads; 0 = one per CPU (extension).
    pub workers: Option<usize>,
    /// `auto` | `off`: pin each worker to one CPU, a different one each, when there are as
    /// many workers as CPUs the process may run on (extension).
    pub cpu_affinity: Option<String>,
    /// Bearer token required by the admin API's `/api/bans` (extension).
    pub admin_token: Option<String>,
    /// Host names clients may address (exact, `*.suffix`, `"*"`); unset = Ollama's own rule.
    pub allowed_hosts: Option<Vec<String>>,
    /// PEM certificate chain of the proxy listener (with `tls_key`: HTTPS only).
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<String>,
    /// Open client connections at most; 0 = derived from the file-descriptor limit.
    pub max_connections: Option<usize>,
    /// Open client connections per source address at most; 0 = no per-source limit.
    pub max_connections_per_source: Option<usize>,
    /// Timeouts (extension).
    pub timeouts: Option<TimeoutsFile>,
    /// Ban policy.
    pub ban: Option<BanFile>,
    /// The policy stage of the model-management routes.
    pub policy: Option<PolicyFile>,
    /// What a ban does to running requests.
    pub enforcement: Option<EnforcementFile>,
    /// API keys (README, "Authentication and TLS").
    pub auth: Option<AuthFile>,
    /// Where else events go (README, "Splunk").
    pub sinks: Option<super::SinksFile>,
    /// Counters and bans shared across replicas through Redis (README, "Scaling out").
    pub cluster: Option<super::ClusterFile>,
    /// Detection rules; none = the built-in set.
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleConfig>,
    /// `[rules.NAME]`: overrides of built-in rules by name (built-in set only).
    #[serde(default, rename = "rules", skip_serializing_if = "BTreeMap::is_empty")]
    pub rule_overrides: BTreeMap<String, RuleOverride>,
}

/// `[ban]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BanFile {
    /// First ban.
    pub duration: Option<String>,
    /// Multiplier per repeat offence.
    pub increment: Option<f64>,
    /// Longest ban.
    pub max: Option<String>,
    /// How long offences are remembered.
    pub memory: Option<String>,
}

/// `[timeouts]` (README, "Configuration file").
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// Upstream TCP connect timeout.
    pub upstream_connect: Option<String>,
    /// Client header-read timeout (slowloris guard).
    pub header_read: Option<String>,
    /// How long in-flight requests may finish after SIGTERM.
    pub grace_period: Option<String>,
    /// How often the readiness probe asks the upstream.
    pub readiness_probe: Option<String>,
    /// Idle upstream connections are closed after this long.
    pub upstream_idle: Option<String>,
    /// Longest pause between two reads of a request body.
    pub body_idle: Option<String>,
    /// Longest wait of a write to a client for progress.
    pub send_idle: Option<String>,
}

/// `[policy]`: what the model-management routes may be asked (README, "Policy").
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Largest request body read for a policy decision (`1MiB`).
    pub max_body: Option<String>,
    /// Registries models may be pulled from.
    pub registries_pull: Option<Vec<String>>,
    /// Registries models may be pushed to.
    pub registries_push: Option<Vec<String>>,
    /// Hosts `/api/create` may name as `remote_host`.
    pub create_remote_hosts: Option<Vec<String>>,
    /// Networks allowed to call pull/push/create/copy/delete/blob uploads (empty = any).
    pub manage_from: Option<Vec<String>>,
    /// Also ban the source on a policy verdict in block mode.
    pub ban: Option<bool>,
}

/// `[auth]`: optional API keys with roles.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// `off` | `observe` | `required`.
    pub mode: Option<String>,
    /// The key file (default `<state_dir>/keys.json`).
    pub keys_file: Option<String>,
    /// Also require a key on the probe routes (`HEAD`/`GET /`, `/api/version`).
    pub protect_probes: Option<bool>,
    /// Label `ollama_guard_identity_requests_total` by key name (small key sets; capped).
    pub metrics_by_identity: Option<bool>,
}

/// `[enforcement]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnforcementFile {
    /// A ban cuts the banned source's running requests (default true).
    pub abort_in_flight: Option<bool>,
}
