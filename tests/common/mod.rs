//! Shared harness of the integration tests: the simulator and a full `serve` stack on
//! ephemeral loopback ports, and small HTTP helpers.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ollama_guard::config::{Config, FileConfig, ServeArgs};
use ollama_guard::serve::Server;
use ollama_sim::{SimConfig, SimHandle};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

pub mod clients;
pub mod nginx;
pub mod process;

pub struct Stack {
    pub sim: SimHandle,
    pub server: Server,
    pub proxy: String,
    pub admin: String,
    pub dir: TempDir,
}

impl Stack {
    pub fn access_log(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }
    pub fn detection_log(&self) -> PathBuf {
        self.dir.path().join("detection.log")
    }
}

pub async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

pub async fn simulator() -> SimHandle {
    ollama_sim::spawn(loopback().await, SimConfig::default()).await
}

/// A config pointing at `upstream`, logs in `dir`; `file` adds TOML.
pub fn config(upstream: &str, dir: &TempDir, args: ServeArgs, file: &str) -> Config {
    let args = ServeArgs {
        upstream: Some(upstream.to_owned()),
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        detection_log: Some(dir.path().join("detection.log").display().to_string()),
        access_log: Some(dir.path().join("access.log").display().to_string()),
        ..args
    };
    let file: FileConfig = toml::from_str(file).unwrap();
    Config::merge(&args, file).unwrap()
}

pub async fn stack_with(args: ServeArgs, file: &str) -> Stack {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&sim.url(), &dir, args, file);
    let server = Server::start(config, loopback().await, loopback().await)
        .await
        .unwrap();
    Stack {
        proxy: format!("http://{}", server.proxy_addr),
        admin: format!("http://{}", server.admin_addr),
        sim,
        server,
        dir,
    }
}

/// A server started from the config file `file` (the caller writes it, and may rewrite it and
/// call `server.reload(&args)`), forwarding to `upstream`, its detection log in `dir`.
pub async fn serve_file(
    upstream: &str,
    dir: &std::path::Path,
    file: &std::path::Path,
) -> (ServeArgs, Server) {
    let args = ServeArgs {
        config: Some(file.to_path_buf()),
        upstream: Some(upstream.to_owned()),
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        detection_log: Some(dir.join("detection.log").display().to_string()),
        ..ServeArgs::default()
    };
    let config = Config::load(&args).unwrap();
    let server = Server::start(config, loopback().await, loopback().await)
        .await
        .unwrap();
    (args, server)
}

pub async fn stack() -> Stack {
    stack_with(ServeArgs::default(), "").await
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        client().request(request(method, url, headers, body)),
    )
    .await
    .expect("request timed out")
    .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, &[], Bytes::new()).await
}

/// Scrapes `/metrics` and returns the value of the exact series line `series`.
pub async fn metric(admin: &str, series: &str) -> f64 {
    let text = get(&format!("{admin}/metrics")).await.text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("series {series} not found"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits (bounded, 5 s) until the series `series` reads `want`, and returns what it read last.
/// Records are counted when a response body ends, which can be just after the client saw it.
pub async fn metric_eventually(admin: &str, series: &str, want: f64) -> f64 {
    let mut n = metric(admin, series).await;
    for _ in 0..250 {
        if n == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        n = metric(admin, series).await;
    }
    n
}

/// Whether `s` answers `GET /api/version` from `who` with `want` within 1 s (polled every
/// 20 ms, a fresh connection each time): how the cluster tests wait for a ban or an unban.
///
/// A poll whose response is cut is not an answer: a ban that arrives while a poll is in
/// flight cuts that response (`enforcement.abort_in_flight`), so the client sees the stream
/// end early. That poll counts as neither status; the next one, on a fresh connection, is
/// refused before it starts.
pub async fn version_status_within_1s(s: &Stack, who: &str, want: StatusCode) -> bool {
    let url = format!("{}/api/version", s.proxy);
    for _ in 0..50 {
        let c = client_from(who);
        let got = match c.request(request(Method::GET, &url, &[], "")).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                body.collect().await.ok().map(|_| parts.status)
            }
            Err(e) => {
                assert!(!e.is_connect(), "{url} refused the connection: {e}");
                None
            }
        };
        if got == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A client whose requests come from `source` (any 127.0.0.0/8 address works on Linux).
pub fn client_from(source: &str) -> Client<HttpConnector, Full<Bytes>> {
    let mut c = HttpConnector::new();
    c.set_local_address(Some(source.parse().unwrap()));
    Client::builder(TokioExecutor::new()).build(c)
}

/// Waits, when needed, until at least `need` is left before the end of the current
/// epoch-aligned tumbling window of length `window`. A test whose requests must share one
/// window cannot then straddle its end: an hour-long window otherwise ends inside a
/// two-second test about once in 1 800 runs, and the test sees two half-counted windows.
pub async fn clear_of_window_end(window: Duration, need: Duration) {
    let window_ms = i64::try_from(window.as_millis()).unwrap();
    let need_ms = i64::try_from(need.as_millis()).unwrap();
    assert!(need_ms < window_ms, "a test cannot need the whole window");
    let left = window_ms - chrono::Utc::now().timestamp_millis().rem_euclid(window_ms);
    if left < need_ms {
        tokio::time::sleep(Duration::from_millis(u64::try_from(left + 50).unwrap())).await;
    }
}

/// Waits (bounded) until `f` holds, polling the state it reads.
pub async fn eventually<F: FnMut() -> bool>(mut f: F) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not reached within 5 s");
}

pub async fn call(
    c: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let body = if method == Method::POST {
        r#"{"model":"llama3.2"}"#
    } else {
        ""
    };
    let resp = c
        .request(request(method, url, headers, body))
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub async fn wait_events(path: &std::path::Path, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..250 {
        let ev = events(path);
        if pred(&ev) {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("expected events never appeared: {:#?}", events(path));
}

/// A call to the admin API (JSON content type, optional bearer token).
pub async fn admin(
    s: &Stack,
    method: Method,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    send(
        method,
        &format!("{}{path}", s.admin),
        &headers,
        body.to_string(),
    )
    .await
}

/// Bans `src` for an hour through the admin API (no token) and checks that it took.
pub async fn ban_for_an_hour(s: &Stack, src: &str) {
    let body = format!(r#"{{"src":"{src}","duration":"1h","reason":"test"}}"#);
    let added = admin(s, Method::POST, "/api/bans", &body, None).await;
    assert_eq!(added.status, 201, "{:?}", added.body);
}

/// Reads from a raw connection until `needle` has arrived (bounded: 10 s).
pub async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&buf).contains(needle) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("timed out waiting for response bytes")
            .unwrap();
        assert!(
            n > 0,
            "connection closed before {needle:?}: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The detection log's JSON Schema, as shipped.
pub const DETECTION_LOG_SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/docs/detection-log.schema.json"
);

/// Checks every line of the detection log at `path` against `docs/detection-log.schema.json`
/// and returns the lines parsed; panics naming each line that does not match. Call it at the
/// end of a test that ran a stack, so every event the program really wrote is checked.
pub fn assert_detection_log_valid(path: &std::path::Path) -> Vec<Value> {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(DETECTION_LOG_SCHEMA).unwrap()).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut bad = Vec::new();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
            if !errors.is_empty() {
                bad.push(format!("{line}\n  {}", errors.join("\n  ")));
            }
            v
        })
        .collect();
    assert!(
        bad.is_empty(),
        "detection log lines violate the schema:\n{}",
        bad.join("\n")
    );
    lines
}

/// The position of the first event of kind `kind`.
pub fn position(events: &[Value], kind: &str) -> Option<usize> {
    events.iter().position(|e| e["event"] == kind)
}

/// A header of the request the simulator received with `x-sim-id: id`.
pub fn sim_header(s: &Stack, id: &str, name: &str) -> Option<String> {
    s.sim
        .log
        .requests()
        .into_iter()
        .find(|r| r.id.as_deref() == Some(id))
        .and_then(|r| r.headers.get(name).map(|v| v.to_str().unwrap().to_owned()))
}

/// Whether the simulator received a request with `x-sim-id: id`.
pub fn sim_saw(s: &Stack, id: &str) -> bool {
    s.sim
        .log
        .requests()
        .iter()
        .any(|r| r.id.as_deref() == Some(id))
}

/// The revision `build.rs` must have compiled in, worked out independently: the checkout's
/// `git rev-parse --short=12 HEAD` when there is a `.git`, else `OLLAMA_GUARD_REVISION`, else
/// `unknown`.
pub fn expected_revision() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    if std::path::Path::new(root).join(".git").exists() {
        let out = std::process::Command::new("git")
            .args(["-C", root, "rev-parse", "--short=12", "HEAD"])
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap().trim().to_owned();
        }
    }
    std::env::var("OLLAMA_GUARD_REVISION").unwrap_or_else(|_| "unknown".into())
}
