use super::*;

fn file(text: &str) -> FileConfig {
    toml::from_str(text).expect("valid toml")
}

#[test]
fn defaults_match_the_spec() {
    let c = Config::merge(&ServeArgs::default(), FileConfig::default()).unwrap();
    assert_eq!(c.listen, "0.0.0.0:11434".parse().unwrap());
    assert_eq!(c.upstream.url(), "http://127.0.0.1:11435");
    assert_eq!(c.admin_listen, "127.0.0.1:9464".parse().unwrap());
    assert_eq!(c.mode, Mode::Monitor);
    assert_eq!(c.detection_log, LogTarget::Stdout);
    assert_eq!(c.access_log, None);
    assert_eq!(c.access_log_format, AccessLogFormat::Gin);
    assert_eq!(c.ipv6_prefix, 64);
    assert_eq!(c.max_tracked_keys, 1_000_000);
    assert_eq!(c.timeouts.upstream_connect, Duration::from_secs(5));
    assert_eq!(c.timeouts.grace_period, Duration::from_secs(30));
    assert_eq!(c.ban.duration, Duration::from_secs(900));
    assert_eq!(c.ban.max, Duration::from_secs(86_400));
    assert_eq!(c.ban.memory, Duration::from_secs(7 * 86_400));
}

#[test]
fn command_line_wins_over_file_and_file_over_default() {
    let args = ServeArgs {
        listen: Some("127.0.0.1:1".into()),
        ..ServeArgs::default()
    };
    let f = file("listen = \"127.0.0.1:2\"\nadmin_listen = \"127.0.0.1:3\"\nmode = \"block\"");
    let c = Config::merge(&args, f).unwrap();
    assert_eq!(c.listen.port(), 1);
    assert_eq!(c.admin_listen.port(), 3);
    assert_eq!(c.mode, Mode::Block);
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
}

#[test]
fn trusted_proxy_single_address_becomes_host_cidr() {
    let args = ServeArgs {
        trusted_proxy: vec!["10.1.2.3".into(), "192.168.0.0/16".into()],
        ..ServeArgs::default()
    };
    let c = Config::merge(&args, FileConfig::default()).unwrap();
    let texts: Vec<String> = c.trusted_proxies.iter().map(|n| n.to_string()).collect();
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
