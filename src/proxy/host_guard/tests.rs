use super::*;

struct Parts {
    version: Version,
    uri: Uri,
    headers: HeaderMap,
}

impl HostPolicy {
    fn check_parts(&self, p: &Parts) -> Result<(), HostRefusal> {
        self.check(p.version, &p.uri, &p.headers)
    }
}

fn parts(target: &str, hosts: &[&[u8]]) -> Parts {
    let mut b = http::Request::builder().uri(target);
    for h in hosts {
        b = b.header(HOST, http::HeaderValue::from_bytes(h).unwrap());
    }
    let (parts, ()) = b.body(()).unwrap().into_parts();
    Parts {
        version: parts.version,
        uri: parts.uri,
        headers: parts.headers,
    }
}

fn loopback() -> HostPolicy {
    HostPolicy::new("127.0.0.1:11434".parse().unwrap(), None)
}

fn host(p: &HostPolicy, h: &str) -> Result<(), HostRefusal> {
    p.check_parts(&parts("/api/tags", &[h.as_bytes()]))
}

#[test]
fn loopback_listener_allows_what_ollama_allows() {
    let p = loopback();
    for h in [
        "",
        "localhost",
        "LOCALHOST:11434",
        "ollama.localhost",
        "box.local",
        "svc.internal:80",
        "127.0.0.1",
        "127.0.0.1:11434",
        "127.9.9.9:1",
        "[::1]:11434",
        "[::1]",
        "::1",
        "10.1.2.3",
        "172.16.0.1:11434",
        "192.168.1.50",
        "[fd00::1]:11434",
        "0.0.0.0:11434",
        "[::ffff:127.0.0.1]:80",
    ] {
        assert_eq!(host(&p, h), Ok(()), "{h}");
    }
}

#[test]
fn loopback_listener_refuses_a_rebound_name_like_ollama() {
    let p = loopback();
    for h in [
        "rebind.attacker.example",
        "rebind.attacker.example:11434",
        "localhost.attacker.example",
        "evil-local",
        "local",
        "8.8.8.8",
        "localhost.",
        "203.0.113.7:11434",
    ] {
        assert_eq!(host(&p, h), Err(HostRefusal::NotAllowed), "{h}");
    }
}

#[test]
fn machine_host_name_is_allowed_on_loopback() {
    let name = gethostname::gethostname().into_string().unwrap();
    assert_eq!(host(&loopback(), &name.to_uppercase()), Ok(()));
}

#[test]
fn absolute_form_target_is_checked_instead_of_the_host_header() {
    let p = loopback();
    let evil = parts("http://rebind.attacker.example/api/tags", &[b"localhost"]);
    assert_eq!(p.check_parts(&evil), Err(HostRefusal::NotAllowed));
    let fine = parts(
        "http://localhost:11434/api/tags",
        &[b"rebind.attacker.example"],
    );
    assert_eq!(p.check_parts(&fine), Ok(()));
}

#[test]
fn several_or_binary_host_headers_are_malformed() {
    let p = loopback();
    let two = parts("/api/tags", &[b"localhost", b"rebind.attacker.example"]);
    assert_eq!(p.check_parts(&two), Err(HostRefusal::Malformed));
    let binary = parts("/api/tags", &[b"localhost\xff"]);
    assert_eq!(p.check_parts(&binary), Err(HostRefusal::Malformed));
}

#[test]
fn non_loopback_listener_allows_any_host_as_ollama_does() {
    let p = HostPolicy::new("0.0.0.0:11434".parse().unwrap(), None);
    assert!(p.is_open());
    assert_eq!(host(&p, "rebind.attacker.example"), Ok(()));
    let p = HostPolicy::new("192.0.2.1:11434".parse().unwrap(), Some(&[]));
    assert_eq!(host(&p, "anything.example"), Ok(()));
}

#[test]
fn allowed_hosts_is_enforced_on_every_listener() {
    let list: Vec<String> = ["ollama.example.com", "*.corp.example", "192.0.2.10"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for listen in ["0.0.0.0:11434", "127.0.0.1:11434"] {
        let p = HostPolicy::new(listen.parse().unwrap(), Some(&list));
        assert!(!p.is_open());
        for ok in [
            "ollama.example.com",
            "OLLAMA.example.com:443",
            "gpu.corp.example",
            "a.b.corp.example:11434",
            "192.0.2.10:11434",
        ] {
            assert_eq!(host(&p, ok), Ok(()), "{listen} {ok}");
        }
        for bad in [
            "corp.example",
            "xcorp.example",
            "localhost",
            "127.0.0.1",
            "ollama.example.com.attacker.example",
            "",
        ] {
            assert_eq!(
                host(&p, bad),
                Err(HostRefusal::NotAllowed),
                "{listen} {bad}"
            );
        }
    }
}

#[test]
fn allowed_hosts_star_allows_everything() {
    let p = HostPolicy::new("127.0.0.1:1".parse().unwrap(), Some(&["*".to_string()]));
    assert!(p.is_open());
    assert_eq!(host(&p, "rebind.attacker.example"), Ok(()));
}

#[test]
fn an_http11_request_without_host_is_malformed_on_every_listener_http10_is_not() {
    let open = HostPolicy::new("0.0.0.0:11434".parse().unwrap(), None);
    let star = HostPolicy::new("127.0.0.1:1".parse().unwrap(), Some(&["*".to_string()]));
    for p in [loopback(), open, star] {
        for target in ["/api/tags", "http://localhost/api/tags"] {
            let mut none = parts(target, &[]);
            assert_eq!(p.check_parts(&none), Err(HostRefusal::Missing), "{target}");
            none.version = Version::HTTP_10;
            assert_eq!(p.check_parts(&none), Ok(()), "{target}");
        }
        // Two Host headers are malformed whatever the listener, absolute form or not (Go
        // answers 400 before it looks at the target).
        for target in ["/api/tags", "http://localhost/api/tags"] {
            let two = parts(target, &[b"localhost", b"localhost"]);
            assert_eq!(p.check_parts(&two), Err(HostRefusal::Malformed), "{target}");
        }
    }
}

#[test]
fn the_port_is_stripped_as_go_splits_host_and_port() {
    for (host, name) in [
        ("localhost:11434", "localhost"),
        ("localhost:", "localhost"),
        (":80", ""),
        ("localhost", "localhost"),
        ("[::1]:11434", "[::1]"),
        ("[::1]", "[::1]"),
        ("::1", "::1"),
        ("fe80::1:80", "fe80::1:80"),
        ("127.0.0.1:11434", "127.0.0.1"),
    ] {
        assert_eq!(strip_port(host), name, "{host}");
    }
}

/// The host checked is the one Go reads, after any user information: `localhost:x@evil` names
/// `evil` (an allow-list cannot be passed with a user name that looks like an allowed host),
/// and `evil@localhost` names `localhost`.
#[test]
fn user_information_in_an_absolute_form_target_is_not_the_host() {
    let p = loopback();
    for (target, want) in [
        (
            "http://localhost:x@evil.example/api/tags",
            Err(HostRefusal::NotAllowed),
        ),
        (
            "http://127.0.0.1:1@evil.example/",
            Err(HostRefusal::NotAllowed),
        ),
        ("http://evil.example@localhost/api/tags", Ok(())),
        ("http://a:b@localhost:11434/", Ok(())),
    ] {
        assert_eq!(
            p.check_parts(&parts(target, &[b"localhost"])),
            want,
            "{target}"
        );
    }
    let list = vec!["ollama.example.com".to_string()];
    let p = HostPolicy::new("0.0.0.0:11434".parse().unwrap(), Some(&list));
    let t = parts(
        "http://ollama.example.com:x@evil.example/",
        &[b"ollama.example.com"],
    );
    assert_eq!(p.check_parts(&t), Err(HostRefusal::NotAllowed));
}
