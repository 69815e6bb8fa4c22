//! `[cluster]` over `rediss://`: a real `redis-server` with TLS only (`--port 0
//! --tls-port`), its certificate signed by a test CA generated here (rcgen), trusted by the
//! guard through `cluster.ca_file`; a wrong CA leaves the replica in local mode with one
//! clear error line; a bad `ca_file` is a config error naming the key (exit 2).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::process::{free_port, wait_for_port, Proc, BIN};
use common::*;
use http::{Method, StatusCode};
use ollama_guard::config::ServeArgs;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::Value;
use tempfile::TempDir;

/// A CA and, optionally, a server certificate it signs, as PEM files in `dir`.
struct Pki {
    dir: TempDir,
}

impl Pki {
    /// A new CA named `name`; with `server`, a certificate for `127.0.0.1`/`localhost`
    /// signed by it (`server.pem`, `server-key.pem`).
    fn new(name: &str, server: bool) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        if server {
            let mut params =
                CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                    .unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "redis test server");
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
            std::fs::write(dir.path().join("server-key.pem"), key.serialize_pem()).unwrap();
        }
        Pki { dir }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// A `redis-server` accepting TLS only, on a free loopback port; killed (SIGKILL) on drop.
struct TlsRedis {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl TlsRedis {
    async fn start(pki: &Pki) -> TlsRedis {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| pki.dir.path().join(name).display().to_string();
        let log = dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &p("server.pem")])
            .args(["--tls-key-file", &p("server-key.pem")])
            .args(["--tls-ca-cert-file", &p("ca.pem")])
            .args(["--tls-auth-clients", "no"])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let mut r = TlsRedis {
            child,
            port,
            _dir: dir,
        };
        if let Some(status) = {
            tokio::time::sleep(Duration::from_millis(100)).await;
            r.child.try_wait().unwrap()
        } {
            // Debian's redis-server is built with TLS; a build without it refuses
            // --tls-port and exits at once. Say so loudly rather than pass silently.
            panic!(
                "redis-server exited at start ({status}): is it built with TLS? {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        wait_for_port(([127, 0, 0, 1], port).into()).await;
        r
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cluster_toml(url: &str, ca: &Path, id: &str) -> String {
    format!(
        "mode = \"block\"\n[cluster]\nredis_url = \"{url}\"\nca_file = \"{}\"\ninstance_id = \"{id}\"\nsync_interval = \"100ms\"\n",
        ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_rediss_with_the_ca_connect_and_share_bans() {
    let pki = Pki::new("ollama-guard redis test CA", true);
    let redis = TlsRedis::start(&pki).await;
    let a = stack_with(
        ServeArgs::default(),
        &cluster_toml(&redis.url(), &pki.ca_file(), "guard-a"),
    )
    .await;
    let b = stack_with(
        ServeArgs::default(),
        &cluster_toml(&redis.url(), &pki.ca_file(), "guard-b"),
    )
    .await;
    for s in [&a, &b] {
        assert_eq!(
            metric_eventually(&s.admin, "ollama_guard_cluster_connected", 1.0).await,
            1.0
        );
    }
    let r = admin(
        &a,
        Method::POST,
        "/api/bans",
        r#"{"src":"127.0.0.51","duration":"10m","reason":"over tls"}"#,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert!(version_status_within_1s(&b, "127.0.0.51", StatusCode::FORBIDDEN).await);
    let ev = wait_events(&b.detection_log(), |e| {
        e.iter().any(|v| v["event"] == "ban")
    })
    .await;
    let bans: Vec<&Value> = ev.iter().filter(|v| v["event"] == "ban").collect();
    assert_eq!(bans.len(), 1, "{bans:#?}");
    assert_eq!(bans[0]["src"], "127.0.0.51");
    assert_eq!(bans[0]["origin"], "guard-a");
    assert_eq!(bans[0]["reason"], "over tls");
    assert_eq!(
        metric(&a.admin, "ollama_guard_cluster_sync_errors_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_leaves_the_replica_in_local_mode_with_one_clear_error() {
    let pki = Pki::new("ollama-guard redis test CA", true);
    let other = Pki::new("some other CA", false);
    let redis = TlsRedis::start(&pki).await;
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guard.toml");
    std::fs::write(
        &file,
        cluster_toml(&redis.url(), &other.ca_file(), "guard-x"),
    )
    .unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let guard = Proc::spawn(
        BIN,
        &[
            "serve",
            "--config",
            &file.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
            "--upstream",
            &sim.url(),
            "--detection-log",
            &dir.path().join("detection.log").display().to_string(),
        ],
    );
    let needle = "Redis's TLS certificate is not trusted: invalid peer certificate: UnknownIssuer (cluster.ca_file names the CA that signs it";
    let text = guard.wait_stderr(needle).await;
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
    assert!(
        lines[0].contains("cluster: ") && lines[0].contains("running in local mode"),
        "{}",
        lines[0]
    );
    let admin_url = format!("http://127.0.0.1:{admin_port}");
    wait_for_port(([127, 0, 0, 1], admin_port).into()).await;
    assert_eq!(
        metric(&admin_url, "ollama_guard_cluster_connected").await,
        0.0
    );
    assert!(metric(&admin_url, "ollama_guard_cluster_sync_errors_total").await >= 1.0);
    // Local mode serves and enforces.
    let r = get(&format!("http://127.0.0.1:{port}/api/version")).await;
    assert_eq!(r.status, StatusCode::OK);
    // The same replica with the right CA connects.
    let good = stack_with(
        ServeArgs::default(),
        &cluster_toml(&redis.url(), &pki.ca_file(), "guard-y"),
    )
    .await;
    assert_eq!(
        metric_eventually(&good.admin, "ollama_guard_cluster_connected", 1.0).await,
        1.0
    );
}

#[test]
fn a_bad_ca_file_exits_2_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    for (ca, url, want) in [
        (
            &missing,
            "rediss://127.0.0.1:6380",
            format!(
                "ollama-guard: config error: cluster.ca_file: cannot read {}: No such file or directory",
                missing.display()
            ),
        ),
        (
            &garbage,
            "rediss://127.0.0.1:6380",
            format!(
                "ollama-guard: config error: cluster.ca_file: {} holds no CERTIFICATE block",
                garbage.display()
            ),
        ),
        (
            &garbage,
            "redis://127.0.0.1:6379",
            "ollama-guard: config error: cluster.ca_file: is set but cluster.redis_url 'redis://127.0.0.1:6379' is not rediss:// (the CA verifies Redis's TLS certificate)".to_owned(),
        ),
    ] {
        let file = dir.path().join("guard.toml");
        std::fs::write(&file, cluster_toml(url, ca, "g")).unwrap();
        let out = Command::new(BIN)
            .args(["check-config", &file.display().to_string()])
            .env_remove("OLLAMA_GUARD_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one error line: {stderr}");
        assert!(stderr.starts_with(&want), "{stderr}");
    }
}
