//! TLS termination of the proxy listener (`tls_cert` / `tls_key`), over real sockets: HTTPS
//! through the guard to the simulator, the plaintext answer to plain HTTP on the HTTPS port,
//! the handshake timeout and the connection limits before it, the config errors (exit 2
//! naming the key), certificate reload on SIGHUP without dropping connections, and the real
//! Python and JavaScript SDKs over `https://` with a private CA.
//!
//! Every certificate is generated here (rcgen): a test CA and leaves for
//! `localhost`/`127.0.0.1`; no key material is kept in the repository.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::{free_port, wait_for_port, Proc, BIN};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use ollama_guard::config::ServeArgs;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SerialNumber};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The exact answer to plain HTTP on the HTTPS port.
const PLAIN_HTTP_ANSWER: &str = "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: 51\r\n\r\nollama-guard: this port speaks HTTPS; use https://\n";

/// A test CA and the files of the leaves it signs, in a temporary directory.
struct Pki {
    dir: TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A leaf certificate: its DER (what a client sees) and its files.
struct Leaf {
    der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ollama-guard test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// A leaf for `localhost` and `127.0.0.1`, serial `serial`.
    fn leaf(&self, serial: u8) -> Leaf {
        self.leaf_until(serial, None)
    }

    /// [`Pki::leaf`], valid until `until` (year, month, day) when given (rcgen's default:
    /// the year 4096).
    fn leaf_until(&self, serial: u8, until: Option<(i32, u8, u8)>) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        if let Some((y, m, d)) = until {
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        params.distinguished_name.push(
            DnType::CommonName,
            format!("ollama-guard test leaf {serial}"),
        );
        params.serial_number = Some(SerialNumber::from(vec![serial]));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Leaf {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    fn cert_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
    fn key_file(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// Writes `leaf` as the guard's `cert.pem` / `key.pem`.
    fn install(&self, leaf: &Leaf) {
        std::fs::write(self.cert_file(), &leaf.cert_pem).unwrap();
        std::fs::write(self.key_file(), &leaf.key_pem).unwrap();
    }

    fn args(&self) -> ServeArgs {
        ServeArgs {
            tls_cert: Some(self.cert_file()),
            tls_key: Some(self.key_file()),
            ..ServeArgs::default()
        }
    }

    fn client_config(&self, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

const ALL: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The leaf certificate the server presented on `stream`.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// An HTTP/1.1 connection over an established TLS stream.
async fn http_over(stream: TlsStream<TcpStream>) -> SendRequest<Empty<Bytes>> {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// `GET path` on `send`: status and body.
async fn get_on(
    send: &mut SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
    id: &str,
) -> (StatusCode, String) {
    send.ready().await.unwrap();
    let req = Request::get(path)
        .header("host", format!("localhost:{}", addr.port()))
        .header("x-sim-id", id)
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A full in-process stack whose proxy listener speaks TLS with `leaf`.
async fn tls_stack(pki: &Pki, leaf: &Leaf, file: &str) -> (common::Stack, SocketAddr) {
    pki.install(leaf);
    let s = common::stack_with(pki.args(), file).await;
    let addr = s.server.proxy_addr;
    (s, addr)
}

#[tokio::test]
async fn https_reaches_the_simulator_with_forwarded_proto_https() {
    let pki = Pki::new();
    let leaf = pki.leaf(1);
    let (s, addr) = tls_stack(&pki, &leaf, "").await;
    let stream = tls_connect(addr, pki.client_config(ALL)).await.unwrap();
    assert_eq!(presented(&stream), leaf.der);
    let session = stream.get_ref().1;
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let mut send = http_over(stream).await;
    let (status, body) = get_on(&mut send, addr, "/api/tags", "t1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("llama3.2:latest"), "{body}");
    assert_eq!(
        common::sim_header(&s, "t1", "x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(
        common::sim_header(&s, "t1", "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    // The access log line is the same as over plain HTTP.
    let log = s.access_log();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    common::eventually(|| read().contains("\"/api/tags\"")).await;
    let text = read();
    let line = text.lines().find(|l| l.contains("/api/tags")).unwrap();
    assert!(
        line.starts_with("[GIN] ") && line.contains("| 200 |"),
        "{line}"
    );
    assert!(line.contains(" 127.0.0.1 | GET "), "{line}");
}

#[tokio::test]
async fn a_tls12_only_client_is_served() {
    let pki = Pki::new();
    let leaf = pki.leaf(1);
    let (_s, addr) = tls_stack(&pki, &leaf, "").await;
    let stream = tls_connect(addr, pki.client_config(&[&rustls::version::TLS12]))
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut send = http_over(stream).await;
    assert_eq!(
        get_on(&mut send, addr, "/api/version", "v").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_a_plaintext_400_and_is_closed() {
    let pki = Pki::new();
    let (s, addr) = tls_stack(&pki, &pki.leaf(1), "").await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nx-sim-id: plain\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut answer))
        .await
        .expect("the connection is closed after the answer")
        .unwrap();
    assert_eq!(answer, PLAIN_HTTP_ANSWER);
    assert_eq!(
        common::metric(
            &s.admin,
            "ollama_guard_connections_rejected_total{reason=\"plain_http\"}"
        )
        .await,
        1.0
    );
    assert!(
        !common::sim_saw(&s, "plain"),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn a_handshake_that_never_completes_is_closed_after_header_read() {
    let pki = Pki::new();
    let (s, addr) = tls_stack(&pki, &pki.leaf(1), "[timeouts]\nheader_read = \"1s\"\n").await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The start of a TLS record header, then nothing.
    tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("closed by the guard")
        .unwrap_or(0);
    let waited = started.elapsed();
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    assert_eq!(
        common::metric_eventually(
            &s.admin,
            "ollama_guard_tls_handshake_failures_total{reason=\"timeout\"}",
            1.0
        )
        .await,
        1.0
    );
    // The slot is released after the handshake's failure is counted.
    assert_eq!(
        common::metric_eventually(&s.admin, "ollama_guard_open_connections", 0.0).await,
        0.0,
        "the slot is free again"
    );
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_counted_as_a_protocol_failure() {
    let pki = Pki::new();
    let (s, addr) = tls_stack(&pki, &pki.leaf(1), "").await;
    // Another CA (of the same name: the signature check is what fails).
    let stranger = Pki::new();
    let err = tls_connect(addr, stranger.client_config(ALL))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    assert_eq!(
        common::metric_eventually(
            &s.admin,
            "ollama_guard_tls_handshake_failures_total{reason=\"protocol\"}",
            1.0
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn connection_limits_apply_before_the_handshake() {
    let pki = Pki::new();
    let (s, addr) = tls_stack(&pki, &pki.leaf(1), "max_connections_per_source = 1\n").await;
    // One connection that never starts its handshake holds the source's only slot.
    let _held = TcpStream::connect(addr).await.unwrap();
    common::metric_eventually(&s.admin, "ollama_guard_open_connections", 1.0).await;
    let mut second = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert!(buf.is_empty(), "closed without a plaintext answer");
    assert_eq!(
        common::metric(
            &s.admin,
            "ollama_guard_connections_rejected_total{reason=\"per_source\"}"
        )
        .await,
        1.0
    );
}

/// Runs the binary with `args` and `env`, expecting exit 2; returns stderr.
fn exit_2(args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in [
        "OLLAMA_GUARD_TLS_CERT",
        "OLLAMA_GUARD_TLS_KEY",
        "OLLAMA_GUARD_CONFIG",
    ] {
        if !env.iter().any(|(e, _)| e == &k) {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one error line: {stderr}");
    stderr
}

#[test]
fn bad_certificates_and_keys_exit_2_naming_the_key() {
    let pki = Pki::new();
    let a = pki.leaf(1);
    let b = pki.leaf(2);
    pki.install(&a);
    let dir = pki.dir.path();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, &b.key_pem).unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.join("missing.pem");
    let (cert, key) = (pki.cert_file(), pki.key_file());
    let s = |p: &Path| p.display().to_string();

    let err = exit_2(&["--tls-cert", &s(&missing), "--tls-key", &s(&key)], &[]);
    assert!(
        err.starts_with(&format!(
            "ollama-guard: config error: tls_cert: cannot read a PEM certificate from {}: ",
            missing.display()
        )),
        "{err}"
    );
    let err = exit_2(
        &[],
        &[
            ("OLLAMA_GUARD_TLS_CERT", &garbage),
            ("OLLAMA_GUARD_TLS_KEY", &key),
        ],
    );
    assert!(
        err.starts_with("ollama-guard: config error: tls_cert: ") && err.contains("no CERTIFICATE"),
        "{err}"
    );
    let err = exit_2(&["--tls-cert", &s(&cert), "--tls-key", &s(&garbage)], &[]);
    assert!(
        err.starts_with("ollama-guard: config error: tls_key: cannot read a PEM private key"),
        "{err}"
    );
    let err = exit_2(&["--tls-cert", &s(&cert), "--tls-key", &s(&other_key)], &[]);
    assert!(
        err.starts_with(&format!(
            "ollama-guard: config error: tls_key: {} does not match the certificate in {}",
            other_key.display(),
            cert.display()
        )),
        "{err}"
    );
    let err = exit_2(&["--tls-cert", &s(&cert)], &[]);
    assert_eq!(
        err.trim_end(),
        "ollama-guard: config error: tls_key: is not set but tls_cert is (set both or neither)"
    );
    let err = exit_2(&[], &[("OLLAMA_GUARD_TLS_KEY", &key)]);
    assert_eq!(
        err.trim_end(),
        "ollama-guard: config error: tls_cert: is not set but tls_key is (set both or neither)"
    );

    // check-config runs the same checks on the file's keys.
    let toml = dir.join("guard.toml");
    std::fs::write(
        &toml,
        format!("tls_cert = {:?}\ntls_key = {:?}\n", s(&cert), s(&other_key)),
    )
    .unwrap();
    let err = exit_2(&["check-config", &s(&toml)], &[]);
    assert!(
        err.starts_with("ollama-guard: config error: tls_key: ") && err.contains("does not match"),
        "{err}"
    );
    std::fs::write(
        &toml,
        format!("tls_cert = {:?}\ntls_key = {:?}\n", s(&cert), s(&key)),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", &s(&toml)])
        .env_remove("OLLAMA_GUARD_TLS_CERT")
        .env_remove("OLLAMA_GUARD_TLS_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            s(&cert),
            s(&key)
        )),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_for_new_connections_and_keeps_open_ones() {
    let pki = Pki::new();
    let first = pki.leaf(1);
    pki.install(&first);
    let sim = common::simulator().await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let s = |p: PathBuf| p.display().to_string();
    let guard = Proc::spawn(
        BIN,
        &[
            "--listen",
            &addr.to_string(),
            "--admin-listen",
            &admin,
            "--upstream",
            &sim.url(),
            "--tls-cert",
            &s(pki.cert_file()),
            "--tls-key",
            &s(pki.key_file()),
        ],
    );
    wait_for_port(addr).await;
    // Each connection is a new client (its own config, so no session to resume: a resumed
    // TLS session skips the certificate, as it should).
    let config = || pki.client_config(ALL);

    let before = tls_connect(addr, config()).await.unwrap();
    assert_eq!(presented(&before), first.der);
    let mut kept = http_over(before).await;
    assert_eq!(
        get_on(&mut kept, addr, "/api/tags", "k1").await.0,
        StatusCode::OK
    );

    // The expiry metric is the leaf's notAfter: rcgen's default, 4096-01-01.
    let expiry = "ollama_guard_tls_certificate_expiration_timestamp_seconds";
    let admin_url = format!("http://{admin}");
    assert_eq!(common::metric(&admin_url, expiry).await, 67_090_118_400.0);
    let second = pki.leaf_until(2, Some((2099, 1, 1)));
    pki.install(&second);
    guard.signal("HUP");
    guard.wait_stderr("TLS certificate reloaded").await;
    assert_eq!(common::metric(&admin_url, expiry).await, 4_070_908_800.0);
    let after = tls_connect(addr, config()).await.unwrap();
    assert_eq!(
        presented(&after),
        second.der,
        "a new connection gets the new leaf"
    );
    let mut fresh = http_over(after).await;
    assert_eq!(
        get_on(&mut fresh, addr, "/api/tags", "n1").await.0,
        StatusCode::OK
    );
    assert_eq!(
        get_on(&mut kept, addr, "/api/tags", "k2").await.0,
        StatusCode::OK,
        "the keep-alive connection opened before the reload still serves"
    );

    // A broken certificate file: the reload is refused naming the key, the old one stays.
    std::fs::write(
        pki.cert_file(),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    guard.signal("HUP");
    let stderr = guard.wait_stderr("config reload refused").await;
    let refused: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("config reload refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{stderr}");
    assert!(refused[0].contains("config error: tls_cert: "), "{stderr}");
    let still = tls_connect(addr, config()).await.unwrap();
    assert_eq!(
        presented(&still),
        second.der,
        "the last good certificate stays"
    );
    let mut still = http_over(still).await;
    assert_eq!(
        get_on(&mut still, addr, "/api/version", "s1").await.0,
        StatusCode::OK
    );
    assert_eq!(
        get_on(&mut fresh, addr, "/api/version", "n2").await.0,
        StatusCode::OK
    );
    drop(guard);
}

/// Runs a client suite against a fresh TLS stack: `OLLAMA_GUARD_URL` is
/// `https://localhost:PORT`, `OLLAMA_GUARD_CA` the test CA's PEM file.
async fn run_tls_suite(mut cmd: Command, what: &'static str) -> (bool, String) {
    let pki = Pki::new();
    let (s, addr) = tls_stack(&pki, &pki.leaf(1), "").await;
    cmd.env(
        "OLLAMA_GUARD_URL",
        format!("https://localhost:{}", addr.port()),
    )
    .env("OLLAMA_GUARD_CA", pki.ca_file())
    // Node reads its extra CA file once, at start (Python ignores it).
    .env("NODE_EXTRA_CA_CERTS", pki.ca_file())
    .env_remove("OLLAMA_API_KEY")
    .env_remove("SSL_CERT_FILE")
    .env_remove("SSL_CERT_DIR");
    let result = common::clients::run(cmd, what).await;
    drop(s);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_python_clients_work_over_https() {
    let (ok, report) = run_tls_suite(
        common::clients::pytest("test_tls.py"),
        "Python (OLLAMA_GUARD_PYTHON: a venv with pytest, ollama, openai)",
    )
    .await;
    assert!(ok, "pytest failed:\n{report}");
    assert!(
        report.contains("6 passed"),
        "expected all 6 TLS client tests to run:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_javascript_clients_work_over_https() {
    let (ok, report) = run_tls_suite(
        common::clients::node_test("tls.test.cjs"),
        "JavaScript (Node.js; OLLAMA_GUARD_NODE_PATH: ollama, openai)",
    )
    .await;
    assert!(ok, "node --test failed:\n{report}");
    assert!(
        report.contains("ℹ pass 4"),
        "expected all 4 TLS client tests to pass:\n{report}"
    );
}

#[tokio::test]
async fn turning_tls_on_or_off_is_reported_as_needing_a_restart() {
    let pki = Pki::new();
    let leaf = pki.leaf(1);
    pki.install(&leaf);
    let sim = common::simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guard.toml");
    let tls_keys = format!(
        "tls_cert = {:?}\ntls_key = {:?}\n",
        pki.cert_file().display().to_string(),
        pki.key_file().display().to_string()
    );
    std::fs::write(&file, &tls_keys).unwrap();
    let args = ServeArgs {
        config: Some(file.clone()),
        upstream: Some(sim.url()),
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        detection_log: Some(dir.path().join("detection.log").display().to_string()),
        ..ServeArgs::default()
    };
    let config = ollama_guard::config::Config::load(&args).unwrap();
    let server = ollama_guard::serve::Server::start(
        config,
        common::loopback().await,
        common::loopback().await,
    )
    .await
    .unwrap();
    let addr = server.proxy_addr;

    // Same files, new contents: live, nothing to restart.
    let second = pki.leaf(2);
    pki.install(&second);
    let report = server.reload(&args).unwrap();
    assert!(report.needs_restart.is_empty(), "{report}");
    let stream = tls_connect(addr, pki.client_config(ALL)).await.unwrap();
    assert_eq!(presented(&stream), second.der);

    // TLS off: reported, and the listener goes on speaking TLS with the last certificate.
    std::fs::write(&file, "").unwrap();
    let report = server.reload(&args).unwrap();
    assert_eq!(report.needs_restart, ["tls_cert", "tls_key"]);
    assert!(
        report
            .to_string()
            .ends_with("; restart needed for: tls_cert, tls_key"),
        "{report}"
    );
    assert!(server.bound_config().tls, "the running value stays");
    let stream = tls_connect(addr, pki.client_config(ALL)).await.unwrap();
    assert_eq!(presented(&stream), second.der);
    let mut send = http_over(stream).await;
    assert_eq!(
        get_on(&mut send, addr, "/api/version", "r").await.0,
        StatusCode::OK
    );
    server.shutdown().await;

    // And on: a plain listener reports it too, and stays plain.
    std::fs::write(&file, "").unwrap();
    let plain = ollama_guard::serve::Server::start(
        ollama_guard::config::Config::load(&args).unwrap(),
        common::loopback().await,
        common::loopback().await,
    )
    .await
    .unwrap();
    std::fs::write(&file, &tls_keys).unwrap();
    let report = plain.reload(&args).unwrap();
    assert_eq!(report.needs_restart, ["tls_cert", "tls_key"]);
    let reply = common::get(&format!("http://{}/api/version", plain.proxy_addr)).await;
    assert_eq!(reply.status, StatusCode::OK);
    plain.shutdown().await;
}
