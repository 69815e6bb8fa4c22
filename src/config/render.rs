//! The effective configuration rendered back as a TOML file (`check-config`): every key
//! spelled as the operator writes it, so the output reads like a config file (the admin
//! token is redacted). Kept apart from `values` so neither file grows too long to read.

use std::time::Duration;

use ipnet::IpNet;

use super::{BanFile, Config, FileConfig, LogTarget, TimeoutsFile};

/// A size in bytes as an operator writes it, in its largest exact unit: `1MiB`, `64KiB`,
/// `1100` (bytes). Parsed back unchanged (a rounded `1.1 KiB` would not be).
pub(super) fn exact_size(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes != 0 && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// A duration as an operator writes it, in its largest exact unit: `15m`, `24h`, `7d`, `90s`,
/// `250ms` (days only from two on: `24h` reads better than `1d`). Parsed back unchanged.
pub(super) fn human(d: Duration) -> String {
    const UNITS: [(&str, u128); 5] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
    ];
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    for (unit, size) in UNITS {
        if ns % size == 0 && (unit != "d" || ns / size >= 2) {
            return format!("{}{unit}", ns / size);
        }
    }
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
        workers: Some(if c.workers_auto { 0 } else { b.workers }),
        cpu_affinity: Some(b.cpu_affinity.as_str().to_owned()),
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
            send_idle: Some(human(b.timeouts.send_idle)),
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
        sinks: super::sinks::render(b.splunk_hec.as_ref()),
        // The attack type each rule's detections carry: the rule's name when it sets none.
        rules: c
            .effective_rules()
            .into_iter()
            .map(|mut r| {
                r.attack_type = match r.attack_type.trim() {
                    "" => r.name.clone(),
                    text => text.to_owned(),
                };
                r
            })
            .collect(),
        // Already merged into `rules` above.
        rule_overrides: Default::default(),
    };
    let text = toml::to_string(&file).unwrap_or_else(|e| format!("# cannot render config: {e}\n"));
    if !c.workers_auto {
        return text;
    }
    // `0` is what was set; say what it means here (a TOML comment: the output stays a config).
    text.replacen(
        "\nworkers = 0\n",
        &format!("\nworkers = 0 # {} on this host (one per CPU)\n", b.workers),
        1,
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{exact_size, human};

    #[test]
    fn durations_render_in_their_largest_exact_unit_and_parse_back() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(900), "15m"),
            (Duration::from_secs(86_400), "24h"),
            (Duration::from_secs(2 * 86_400), "2d"),
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::from_nanos(1_500), "1us 500ns"),
        ] {
            assert_eq!(human(d), text, "{d:?}");
            assert_eq!(humantime::parse_duration(text).unwrap(), d, "{text}");
        }
    }

    #[test]
    fn sizes_render_in_their_largest_exact_unit_and_parse_back() {
        for (bytes, text) in [
            (1024, "1KiB"),
            (1100, "1100"),
            (1126, "1126"),
            (1_000_000, "1000000"),
            (1_024_000, "1000KiB"),
            (1 << 20, "1MiB"),
            (3 << 20, "3MiB"),
            (1 << 30, "1GiB"),
        ] {
            assert_eq!(exact_size(bytes), text, "{bytes}");
            let back: bytesize::ByteSize = text.parse().unwrap();
            assert_eq!(back.as_u64(), bytes, "{text}");
        }
    }
}
