use super::*;

fn file(text: &str) -> FileConfig {
    toml::from_str(text).expect("valid toml")
}

#[test]
fn defaults_match_the_spec() {
    let c = Config::merge(&ServeArgs::default(), FileConfig::default()).unwrap();
    assert_eq!(c.bound.listen, "0.0.0.0:11434".parse().unwrap());
    assert_eq!(c.bound.upstream.url(), "http://127.0.0.1:11435");
    assert_eq!(c.bound.admin_listen, "127.0.0.1:9464".parse().unwrap());
    assert_eq!(c.live.mode, Mode::Monitor);
    assert_eq!(c.bound.detection_log, LogTarget::Stdout);
    assert_eq!(c.bound.access_log, None);
    assert_eq!(c.bound.access_log_format, AccessLogFormat::Gin);
    assert_eq!(c.bound.cpu_affinity, crate::config::CpuAffinity::Auto);
    assert_eq!(c.live.ipv6_prefix, 64);
    assert_eq!(c.live.max_tracked_keys, 1_000_000);
    assert_eq!(c.bound.timeouts.upstream_connect, Duration::from_secs(5));
    assert_eq!(c.bound.timeouts.grace_period, Duration::from_secs(30));
    assert_eq!(c.live.ban.duration, Duration::from_secs(900));
    assert_eq!(c.live.ban.max, Duration::from_secs(86_400));
    assert_eq!(c.live.ban.memory, Duration::from_secs(7 * 86_400));
}

#[test]
fn command_line_wins_over_file_and_file_over_default() {
    let args = ServeArgs {
        listen: Some("127.0.0.1:1".into()),
        ..ServeArgs::default()
    };
    let f = file("listen = \"127.0.0.1:2\"\nadmin_listen = \"127.0.0.1:3\"\nmode = \"block\"");
    let c = Config::merge(&args, f).unwrap();
    assert_eq!(c.bound.listen.port(), 1);
    assert_eq!(c.bound.admin_listen.port(), 3);
    assert_eq!(c.live.mode, Mode::Block);
}

#[test]
fn bad_values_name_their_key() {
    let err = |text: &str| {
        Config::merge(&ServeArgs::default(), file(text))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("mode = \"loud\""),
        "config error: mode: 'loud' is not one of monitor, block"
    );
    assert!(err("listen = \"nope\"").starts_with("config error: listen: 'nope' is not an address"));
    assert_eq!(
        err("upstream = \"https://x:1\""),
        "config error: upstream: 'https://x:1': only http:// upstreams are supported (Ollama speaks plain HTTP)"
    );
    assert_eq!(
        err("allowlist = [\"10.0.0.0/33\"]"),
        "config error: allowlist: '10.0.0.0/33' is not an IP address or CIDR"
    );
    assert!(err("[ban]\nduration = \"soon\"")
        .starts_with("config error: ban.duration: 'soon' is not a duration"));
    assert_eq!(
        err("[ban]\nduration = \"2h\"\nmax = \"1h\""),
        "config error: ban.max: must be at least ban.duration"
    );
    assert_eq!(
        err("ipv6_prefix = 0"),
        "config error: ipv6_prefix: 0 must be between 1 and 128"
    );
    assert_eq!(
        err("access_log_format = \"xml\""),
        "config error: access_log_format: 'xml' is not one of gin, json"
    );
    assert_eq!(
        err("log_format = \"xml\""),
        "config error: log_format: 'xml' is not one of text, json"
    );
    assert_eq!(
        err("cpu_affinity = \"on\""),
        "config error: cpu_affinity: 'on' is not one of auto, off"
    );
}

#[test]
fn unknown_key_in_file_is_an_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "mode = \"monitor\"\nlisten_addr = \"x\"\n").unwrap();
    let err = read_file(&path).unwrap_err().to_string();
    assert!(err.contains("line 2: unknown field `listen_addr`"), "{err}");
    assert!(!err.contains('\n'));
}

#[test]
fn a_value_of_the_wrong_type_or_range_in_the_file_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    for (text, want) in [
        (
            "ipv6_prefix = 300\n",
            "line 1: ipv6_prefix: invalid value: integer `300`, expected u8",
        ),
        (
            "mode = \"block\"\n[cluster]\nredis_url = \"redis://h:1\"\nsync_interval = 5\n",
            "line 4: cluster.sync_interval: invalid type: integer `5`, expected a string",
        ),
        (
            "max_tracked_keys = 99999999999999999999999\n",
            "line 1: max_tracked_keys: number too large to fit in target type",
        ),
        (
            "[[rule]]\nname = \"a\"\n\n[[ rule ]]\nname = \"b\"\nthreshold = \"many\"\n",
            "line 6: rule[#2].threshold: invalid type: string \"many\", expected i64",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.ends_with(want), "{err}");
    }
}

#[test]
fn upstream_without_port_defaults_to_80_and_rejects_paths() {
    assert_eq!(
        Upstream::parse("http://ollama").unwrap().url(),
        "http://ollama:80"
    );
    assert_eq!(
        Upstream::parse("http://[::1]:11435/").unwrap().url(),
        "http://[::1]:11435"
    );
    assert!(Upstream::parse("http://h:1/ollama")
        .unwrap_err()
        .contains("path prefix"));
    assert_eq!(
        Upstream::parse("http://[::1]").unwrap().url(),
        "http://[::1]:80"
    );
    // A port that is no port is refused, never taken for "no port" (80).
    for (text, port) in [
        ("http://127.0.0.1:99999", "99999"),
        ("http://127.0.0.1:65536", "65536"),
        ("http://127.0.0.1:1143x", "1143x"),
        ("http://127.0.0.1:", ""),
        ("http://[::1]:99999", "99999"),
        ("http://127.0.0.1:0", "0"),
    ] {
        assert_eq!(
            Upstream::parse(text).unwrap_err(),
            format!("'{text}': '{port}' is not a port number (1-65535)"),
        );
    }
    assert_eq!(
        merge_err(ServeArgs::default(), "upstream = \"http://:80\""),
        "config error: upstream: 'http://:80' has no host"
    );
}

#[test]
fn an_empty_log_level_or_state_dir_is_refused_naming_the_key() {
    assert_eq!(
        merge_err(ServeArgs::default(), "log_level = \"\""),
        "config error: log_level: '' is empty (error, warn, info, debug, trace, or a filter like info,ollama_guard=debug)"
    );
    assert_eq!(
        merge_err(ServeArgs::default(), "state_dir = \"\""),
        "config error: state_dir: '' is empty (leave it out to keep no state, or name a directory)"
    );
}

#[test]
fn trusted_proxy_single_address_becomes_host_cidr() {
    let args = ServeArgs {
        trusted_proxy: vec!["10.1.2.3".into(), "192.168.0.0/16".into()],
        ..ServeArgs::default()
    };
    let c = Config::merge(&args, FileConfig::default()).unwrap();
    let texts: Vec<String> = c
        .live
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(texts, ["10.1.2.3/32", "192.168.0.0/16"]);
}

#[test]
fn effective_config_round_trips_through_toml() {
    let c = Config::merge(
        &ServeArgs::default(),
        file("mode = \"block\"\nadmin_token = \"s3cret\""),
    )
    .unwrap();
    let text = c.to_toml();
    assert!(text.contains("mode = \"block\""));
    assert!(text.contains("admin_token = \"<redacted>\""));
    assert!(!text.contains("s3cret"));
    let back: FileConfig = toml::from_str(&text).unwrap();
    assert_eq!(back.listen.as_deref(), Some("0.0.0.0:11434"));
}

fn merge_err(args: ServeArgs, text: &str) -> String {
    Config::merge(&args, file(text)).unwrap_err().to_string()
}

#[test]
fn upstream_pointing_at_the_guard_itself_is_refused() {
    assert_eq!(
        merge_err(
            ServeArgs::default(),
            "upstream = \"http://127.0.0.1:11434\""
        ),
        "config error: upstream: 'http://127.0.0.1:11434' is this guard's own listen \
         (0.0.0.0:11434): requests would loop; point it at Ollama"
    );
    assert_eq!(
        merge_err(ServeArgs::default(), "upstream = \"http://localhost:9464\""),
        "config error: upstream: 'http://localhost:9464' is this guard's own admin_listen \
         (127.0.0.1:9464): requests would loop; point it at Ollama"
    );
    // Another port, another host, a name that needs DNS: all fine.
    for ok in [
        "upstream = \"http://127.0.0.1:11435\"",
        "listen = \"127.0.0.1:11434\"\nupstream = \"http://127.0.0.2:11434\"",
        "upstream = \"http://ollama.internal:11434\"",
    ] {
        assert!(
            Config::merge(&ServeArgs::default(), file(ok)).is_ok(),
            "{ok}"
        );
    }
}

#[test]
fn admin_listen_overlapping_listen_is_refused_but_port_zero_is_not() {
    assert_eq!(
        merge_err(
            ServeArgs::default(),
            "listen = \"0.0.0.0:9000\"\nadmin_listen = \"127.0.0.1:9000\""
        ),
        "config error: admin_listen: 127.0.0.1:9000 overlaps listen (0.0.0.0:9000); \
         give the admin listener another port"
    );
    let ephemeral = "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"";
    assert!(Config::merge(&ServeArgs::default(), file(ephemeral)).is_ok());
    let apart = "listen = \"127.0.0.1:9000\"\nadmin_listen = \"127.0.0.2:9000\"";
    assert!(Config::merge(&ServeArgs::default(), file(apart)).is_ok());
}

#[test]
fn cidrs_with_host_bits_are_refused_naming_the_network() {
    assert_eq!(
        merge_err(ServeArgs::default(), "trusted_proxies = [\"10.0.0.5/8\"]"),
        "config error: trusted_proxies: '10.0.0.5/8' has host bits set; write 10.0.0.0/8"
    );
    assert_eq!(
        merge_err(ServeArgs::default(), "allowlist = [\"2001:db8::1/64\"]"),
        "config error: allowlist: '2001:db8::1/64' has host bits set; write 2001:db8::/64"
    );
}

#[test]
fn ipv4_mapped_cidrs_become_ipv4_networks() {
    let c = Config::merge(
        &ServeArgs::default(),
        file("allowlist = [\"::ffff:192.0.2.0/120\", \"::ffff:10.1.2.3\"]"),
    )
    .unwrap();
    let texts: Vec<String> = c.live.allowlist.iter().map(|n| n.to_string()).collect();
    assert_eq!(texts, ["192.0.2.0/24", "10.1.2.3/32"]);
}

#[test]
fn trusting_everyone_is_accepted_with_a_warning() {
    let c = Config::merge(
        &ServeArgs::default(),
        file("trusted_proxies = [\"0.0.0.0/0\", \"10.0.0.0/8\", \"::/0\"]"),
    )
    .unwrap();
    assert_eq!(c.live.trusted_proxies.len(), 3);
    let w = c.warnings();
    assert_eq!(w.len(), 2);
    assert!(w[0]
        .starts_with("trusted_proxies contains 0.0.0.0/0: every client can forge X-Forwarded-For"));
    assert!(w[1].starts_with("trusted_proxies contains ::/0: "));
    let quiet = Config::merge(&ServeArgs::default(), FileConfig::default()).unwrap();
    assert!(quiet.warnings().is_empty());
}

#[test]
fn an_exposed_admin_listener_without_a_token_or_with_a_short_one_is_warned_about() {
    let warnings = |text: &str| {
        Config::merge(&ServeArgs::default(), file(text))
            .unwrap()
            .warnings()
            .to_vec()
    };
    assert_eq!(
        warnings("admin_listen = \"0.0.0.0:9464\""),
        [
            "admin_listen 0.0.0.0:9464 is not on loopback and admin_token is not set: anyone who \
          can reach it can ban and unban, and make and revoke API keys; set admin_token"
        ]
    );
    // An empty token is no token (the documented default).
    assert_eq!(
        warnings("admin_listen = \"[::]:9464\"\nadmin_token = \"\""),
        [
            "admin_listen [::]:9464 is not on loopback and admin_token is not set: anyone who \
          can reach it can ban and unban, and make and revoke API keys; set admin_token"
        ]
    );
    assert_eq!(
        warnings("admin_listen = \"0.0.0.0:9464\"\nadmin_token = \"hunter2\""),
        ["admin_token is 7 bytes long: use a long random string (`openssl rand -hex 32`)"]
    );
    assert!(
        warnings("admin_listen = \"0.0.0.0:9464\"\nadmin_token = \"0123456789abcdef\"").is_empty()
    );
    assert!(warnings("admin_listen = \"127.0.0.1:9464\"").is_empty());
    assert!(warnings("admin_listen = \"[::1]:9464\"\nadmin_token = \"hunter2\"").is_empty());
}

#[test]
fn comma_lists_from_the_environment_are_trimmed() {
    use clap::Parser;
    let cli = Cli::try_parse_from([
        "ollama-guard",
        "--trusted-proxy",
        "10.0.0.0/8, 192.168.0.0/16,",
        "--allowed-host",
        " ollama.example.com , *.corp.example.com",
    ])
    .unwrap();
    let c = Config::merge(&cli.serve, FileConfig::default()).unwrap();
    let texts: Vec<String> = c
        .live
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(texts, ["10.0.0.0/8", "192.168.0.0/16"]);
    assert_eq!(
        c.live.allowed_hosts,
        Some(vec![
            "ollama.example.com".to_owned(),
            "*.corp.example.com".to_owned()
        ])
    );
}

#[test]
fn connection_limits_and_body_idle_default_and_merge() {
    let c = Config::merge(&ServeArgs::default(), FileConfig::default()).unwrap();
    assert_eq!(c.bound.max_connections, 0);
    assert_eq!(c.bound.max_connections_per_source, 256);
    assert_eq!(c.bound.timeouts.body_idle, Duration::from_secs(300));
    assert_eq!(c.live.allowed_hosts, None);
    let f =
        "max_connections = 1000\nmax_connections_per_source = 0\n[timeouts]\nbody_idle = \"30s\"";
    let c = Config::merge(&ServeArgs::default(), file(f)).unwrap();
    assert_eq!(c.bound.max_connections, 1000);
    assert_eq!(c.bound.max_connections_per_source, 0);
    assert_eq!(c.bound.timeouts.body_idle, Duration::from_secs(30));
    let args = ServeArgs {
        max_connections: Some(50),
        max_connections_per_source: Some(5),
        ..ServeArgs::default()
    };
    let c = Config::merge(&args, file(f)).unwrap();
    assert_eq!(
        (c.bound.max_connections, c.bound.max_connections_per_source),
        (50, 5)
    );
    assert_eq!(
        merge_err(ServeArgs::default(), "[timeouts]\nbody_idle = \"0s\""),
        "config error: timeouts.body_idle: must be greater than zero"
    );
    // A readiness probe ten times a second at most: more is load on Ollama.
    assert_eq!(
        merge_err(
            ServeArgs::default(),
            "[timeouts]\nreadiness_probe = \"1ms\""
        ),
        "config error: timeouts.readiness_probe: must be at least 100ms"
    );
    let c = Config::merge(
        &ServeArgs::default(),
        file("[timeouts]\nreadiness_probe = \"100ms\""),
    )
    .unwrap();
    assert_eq!(c.bound.timeouts.readiness_probe, Duration::from_millis(100));
}

#[test]
fn allowed_hosts_accept_names_suffixes_star_and_ips_and_refuse_urls_and_ports() {
    let c = Config::merge(
        &ServeArgs::default(),
        file("allowed_hosts = [\"Ollama.Example.com\", \"*.example.com\", \"*\", \"10.0.0.1\", \"::1\"]"),
    )
    .unwrap();
    assert_eq!(
        c.live.allowed_hosts.unwrap(),
        [
            "ollama.example.com",
            "*.example.com",
            "*",
            "10.0.0.1",
            "::1"
        ]
    );
    for (bad, shown) in [
        ("http://x", "http://x"),
        ("x:80", "x:80"),
        ("*.", "*."),
        ("a..b", "a..b"),
        ("", ""),
    ] {
        assert_eq!(
            merge_err(
                ServeArgs::default(),
                &format!("allowed_hosts = [\"{bad}\"]")
            ),
            format!(
                "config error: allowed_hosts: '{shown}' is not a host name, a '*.suffix' \
                 pattern or \"*\" (no scheme, no port)"
            )
        );
    }
    let args = ServeArgs {
        allowed_host: vec!["cli.example.com".into()],
        ..ServeArgs::default()
    };
    let c = Config::merge(&args, file("allowed_hosts = [\"file.example.com\"]")).unwrap();
    assert_eq!(c.live.allowed_hosts.unwrap(), ["cli.example.com"]);
}

#[test]
fn restart_keys_are_the_bound_keys_that_changed_in_report_order() {
    let base = Config::merge(&ServeArgs::default(), FileConfig::default()).unwrap();
    assert!(base.bound.changed_keys(&base.bound.clone()).is_empty());
    // Every live key changed: nothing needs a restart.
    let live_only = Config::merge(
        &ServeArgs::default(),
        file(
            "mode = \"block\"\ntrusted_proxies = [\"10.0.0.0/8\"]\nallowlist = [\"10.1.0.0/16\"]\n\
             allowed_hosts = [\"x.example.com\"]\nipv6_prefix = 48\nmax_tracked_keys = 5\n\
             admin_token = \"t\"\n[ban]\nduration = \"1m\"",
        ),
    )
    .unwrap();
    assert!(base.bound.changed_keys(&live_only.bound).is_empty());
    // Every bound key changed: each is named once, in the order a reload reports them.
    let args = ServeArgs {
        workers: Some(base.bound.workers + 1),
        ..ServeArgs::default()
    };
    let all = Config::merge(
        &args,
        file(
            "listen = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:2\"\n\
             upstream = \"http://127.0.0.1:3\"\ndetection_log = \"d.log\"\naccess_log = \"a.log\"\n\
             access_log_format = \"json\"\nstate_dir = \"s\"\nlog_level = \"debug\"\nlog_format = \"json\"\n\
             cpu_affinity = \"off\"\n\
             max_connections = 9\nmax_connections_per_source = 8\n[timeouts]\nbody_idle = \"1s\"\n\
             [sinks.splunk_hec]\nurl = \"https://s:8088\"\ntoken = \"t\"",
        ),
    )
    .unwrap();
    assert_eq!(
        base.bound.changed_keys(&all.bound),
        [
            "listen",
            "admin_listen",
            "upstream",
            "detection_log",
            "access_log",
            "access_log_format",
            "state_dir",
            "timeouts",
            "log_level",
            "log_format",
            "workers",
            "cpu_affinity",
            "max_connections",
            "max_connections_per_source",
            // state_dir moved the default key file (<state_dir>/keys.json) with it.
            "auth.keys_file",
            "sinks.splunk_hec",
        ]
    );
}

#[test]
fn tls_keys_are_both_or_neither_and_the_command_line_wins() {
    let c = Config::merge(&ServeArgs::default(), FileConfig::default()).unwrap();
    assert!(
        !c.bound.tls && c.live.tls.is_none(),
        "plain HTTP by default"
    );
    let err = |args: ServeArgs, text: &str| merge_err(args, text);
    assert_eq!(
        err(ServeArgs::default(), "tls_cert = \"/x/cert.pem\""),
        "config error: tls_key: is not set but tls_cert is (set both or neither)"
    );
    assert_eq!(
        err(
            ServeArgs::default(),
            "tls_key = \"/x/key.pem\"\ntls_cert = \"\""
        ),
        "config error: tls_cert: is not set but tls_key is (set both or neither)"
    );

    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_path, key_path) = self_signed_files(dir.path());
    let args = ServeArgs {
        tls_cert: Some(cert_path.clone()),
        tls_key: Some(key_path.clone()),
        ..ServeArgs::default()
    };
    // The file's (missing) paths lose to the command line's.
    let c = Config::merge(
        &args,
        file("tls_cert = \"/missing/c.pem\"\ntls_key = \"/missing/k.pem\""),
    )
    .unwrap();
    assert!(c.bound.tls);
    let tls = c.live.tls.as_ref().unwrap();
    assert_eq!((&tls.cert, &tls.key), (&cert_path, &key_path));
    assert_eq!(tls.certified.cert[0], *cert.der());
    let text = c.to_toml();
    assert!(text.contains(&format!("tls_cert = {:?}", cert_path.display().to_string())));
}

/// The leaf's validity is read from the certificate (UTCTime before 2050, GeneralizedTime
/// after): an expired certificate is valid config, warned about at start, by `check-config`
/// and on reload (all print the config's warnings), and its end is the metric's value.
#[test]
fn a_certificate_s_validity_is_read_and_an_expired_or_ending_one_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, from: (i32, u8, u8), to: (i32, u8, u8)| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let want = (
            params.not_before.unix_timestamp(),
            params.not_after.unix_timestamp(),
        );
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (
            dir.path().join(format!("{name}.pem")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k, cert, want)
    };
    let (c, k, cert, want) = make("old", (2020, 1, 1), (2021, 1, 1));
    assert_eq!(want, (1_577_836_800, 1_609_459_200));
    assert_eq!(super::tls::validity(cert.der()), Some(want));
    let args = ServeArgs {
        tls_cert: Some(c.clone()),
        tls_key: Some(k),
        ..ServeArgs::default()
    };
    let config = Config::merge(&args, FileConfig::default()).unwrap();
    assert_eq!(config.live.tls.as_ref().unwrap().validity, Some(want));
    assert_eq!(
        config.warnings(),
        [format!(
            "tls_cert: {} expired at 2021-01-01T00:00:00+00:00: clients will refuse it",
            c.display()
        )]
    );
    let (_, _, cert, want) = make("far", (2024, 2, 29), (2060, 6, 1));
    assert_eq!(super::tls::validity(cert.der()), Some(want));
    assert_eq!(want.1, 2_853_273_600, "2060-06-01");
    assert_eq!(super::tls::validity(b"not a certificate"), None);
    let path = std::path::Path::new("c.pem");
    let day = 86_400;
    let now = 1_900_000_000;
    assert_eq!(
        super::tls::validity_warning(path, (now - day, now + 3 * day), now),
        Some("tls_cert: c.pem expires at 2030-03-20T17:46:40+00:00, in less than 14 days".into())
    );
    assert_eq!(
        super::tls::validity_warning(path, (now + day, now + 90 * day), now),
        Some(
            "tls_cert: c.pem is not valid before 2030-03-18T17:46:40+00:00: clients will refuse \
             it until then"
                .into()
        )
    );
    assert_eq!(
        super::tls::validity_warning(path, (now - day, now + 15 * day), now),
        None
    );
}

/// An encrypted private key (which rustls cannot read, and reports only as "no items found")
/// is named as such, with the fix.
#[test]
fn an_encrypted_private_key_is_named_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c, k) = self_signed_files(dir.path());
    std::fs::write(
        &k,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let args = ServeArgs {
        tls_cert: Some(c),
        tls_key: Some(k.clone()),
        ..ServeArgs::default()
    };
    let e = Config::merge(&args, FileConfig::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "config error: tls_key: {} is an encrypted private key: give the key unencrypted \
             (`openssl pkey -in KEY -out KEY.plain`, readable by the guard's user only)",
            k.display()
        )
    );
}

/// A self-signed certificate for `localhost` and its key, written as `c.pem` and `k.pem` in
/// `dir`: the certificate and the two paths.
fn self_signed_files(
    dir: &std::path::Path,
) -> (rcgen::Certificate, std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (cert, c, k)
}
