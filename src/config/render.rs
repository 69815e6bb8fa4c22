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
    let cidr_texts = |v: &[IpNet]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let file = FileConfig {
        listen: Some(c.listen.to_string()),
        upstream: Some(c.upstream.url()),
        admin_listen: Some(c.admin_listen.to_string()),
        mode: Some(c.mode.as_str().to_owned()),
        trusted_proxies: Some(cidr_texts(&c.trusted_proxies)),
        allowlist: Some(cidr_texts(&c.allowlist)),
        ipv6_prefix: Some(c.ipv6_prefix),
        max_tracked_keys: Some(c.max_tracked_keys),
        detection_log: Some(c.detection_log.display()),
        access_log: Some(
            c.access_log
                .as_ref()
                .map(LogTarget::display)
                .unwrap_or_default(),
        ),
        access_log_format: Some(c.access_log_format.as_str().to_owned()),
        state_dir: c.state_dir.as_ref().map(|p| p.display().to_string()),
        log_level: Some(c.log_level.clone()),
        workers: Some(c.workers),
        admin_token: c.admin_token.as_ref().map(|_| "<redacted>".to_owned()),
        allowed_hosts: c.allowed_hosts.clone(),
        max_connections: Some(c.max_connections),
        max_connections_per_source: Some(c.max_connections_per_source),
        timeouts: Some(TimeoutsFile {
            upstream_connect: Some(human(c.timeouts.upstream_connect)),
            header_read: Some(human(c.timeouts.header_read)),
            grace_period: Some(human(c.timeouts.grace_period)),
            readiness_probe: Some(human(c.timeouts.readiness_probe)),
            upstream_idle: Some(human(c.timeouts.upstream_idle)),
            body_idle: Some(human(c.timeouts.body_idle)),
        }),
        ban: Some(BanFile {
            duration: Some(human(c.ban.duration)),
            increment: Some(c.ban.increment),
            max: Some(human(c.ban.max)),
            memory: Some(human(c.ban.memory)),
        }),
        rules: c.effective_rules(),
    };
    toml::to_string(&file).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}
