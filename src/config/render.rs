//! The effective configuration rendered back as a TOML file (`check-config`): every key
//! spelled as the operator writes it, so the output reads like a config file (the admin
//! token is redacted). Kept apart from `values` so neither file grows too long to read.

use std::time::Duration;

use ipnet::IpNet;

use super::{BanFile, Config, FileConfig, LogTarget, TimeoutsFile};

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Renders `c` with every default filled in and the rules in force (the built-in set when
/// the file has none), so an operator sees what `serve` would actually run with.
pub(super) fn to_toml(c: &Config) -> String {
    let (b, l) = (&c.bound, &c.live);
    let cidr_texts = |v: &[IpNet]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let file = FileConfig {
        listen: Some(b.listen.to_string()),
        upstream: Some(b.upstream.url()),
        admin_listen: Some(b.admin_listen.to_string()),
        mode: Some(l.mode.as_str().to_owned()),
        trusted_proxies: Some(cidr_texts(&l.trusted_proxies)),
        allowlist: Some(cidr_texts(&l.allowlist)),
        ipv6_prefix: Some(l.ipv6_prefix),
        max_tracked_keys: Some(l.max_tracked_keys),
        detection_log: Some(b.detection_log.display()),
        access_log: Some(
            c.bound
                .access_log
                .as_ref()
                .map(LogTarget::display)
                .unwrap_or_default(),
        ),
        access_log_format: Some(b.access_log_format.as_str().to_owned()),
        state_dir: b.state_dir.as_ref().map(|p| p.display().to_string()),
        log_level: Some(b.log_level.clone()),
        log_format: Some(b.log_format.as_str().to_owned()),
        workers: Some(b.workers),
        admin_token: l.admin_token.as_ref().map(|_| "<redacted>".to_owned()),
        allowed_hosts: l.allowed_hosts.clone(),
        tls_cert: l.tls.as_ref().map(|t| t.cert.display().to_string()),
        tls_key: l.tls.as_ref().map(|t| t.key.display().to_string()),
        max_connections: Some(b.max_connections),
        max_connections_per_source: Some(b.max_connections_per_source),
        timeouts: Some(TimeoutsFile {
            upstream_connect: Some(human(b.timeouts.upstream_connect)),
            header_read: Some(human(b.timeouts.header_read)),
            grace_period: Some(human(b.timeouts.grace_period)),
            readiness_probe: Some(human(b.timeouts.readiness_probe)),
            upstream_idle: Some(human(b.timeouts.upstream_idle)),
            body_idle: Some(human(b.timeouts.body_idle)),
        }),
        ban: Some(BanFile {
            duration: Some(human(l.ban.duration)),
            increment: Some(l.ban.increment),
            max: Some(human(l.ban.max)),
            memory: Some(human(l.ban.memory)),
        }),
        policy: Some(super::policy::render(&l.policy)),
        enforcement: Some(super::EnforcementFile {
            abort_in_flight: Some(l.abort_in_flight),
        }),
        auth: Some(super::AuthFile {
            mode: Some(l.auth.mode.as_str().to_owned()),
            keys_file: b.keys_file.as_ref().map(|p| p.display().to_string()),
            protect_probes: Some(l.auth.protect_probes),
            metrics_by_identity: Some(l.auth.metrics_by_identity),
        }),
        cluster: b.cluster.as_ref().map(super::cluster::render),
        rules: c.effective_rules(),
        // Already merged into `rules` above.
        rule_overrides: Default::default(),
    };
    toml::to_string(&file).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}
