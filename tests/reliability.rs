//! Fault injection: the upstream killed or restarted under load, descriptors exhausted, a full
//! disk under the detection log, a read-only state dir, a SIGHUP storm and 10 000 sources.
//!
//! Every scenario prints one line `reliability: <name> sent=N answered=N lost=N (...)` and
//! asserts the invariant: nothing accepted is lost silently. Each request either got an HTTP
//! answer or a client-visible error (connection error, aborted stream), and every loss is
//! also counted in a metric.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::process::{free_port, wait_for_port, Proc, Tmpfs, BIN};
use common::*;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use ollama_guard::config::{Config, ServeArgs};
use ollama_guard::serve::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

const UNAVAILABLE: &str = "ollama-guard: upstream unavailable: ";

// ---------------------------------------------------------------------------------------------
// Accounting

/// What one request came to, as its client saw it.
#[derive(Debug)]
enum Seen {
    /// A whole HTTP answer (head and a cleanly ended body).
    Answer(u16, Bytes),
    /// A head, then a body that ended without its terminator.
    Aborted(u16),
    /// No answer: the connection failed (refused, reset, closed).
    ConnError,
    /// Nothing within the deadline: the request is lost.
    Hung,
}

#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    answered: u64,
    aborted: u64,
    conn_errors: u64,
    by_status: BTreeMap<u16, u64>,
}

impl Tally {
    fn add(&mut self, seen: &Seen) {
        self.sent += 1;
        match seen {
            Seen::Answer(status, _) => {
                self.answered += 1;
                *self.by_status.entry(*status).or_default() += 1;
            }
            Seen::Aborted(_) => self.aborted += 1,
            Seen::ConnError => self.conn_errors += 1,
            Seen::Hung => {}
        }
    }

    fn of<'a>(seen: impl IntoIterator<Item = &'a Seen>) -> Tally {
        let mut t = Tally::default();
        for s in seen {
            t.add(s);
        }
        t
    }

    fn status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    fn client_errors(&self) -> u64 {
        self.aborted + self.conn_errors
    }

    fn lost(&self) -> u64 {
        self.sent - self.answered - self.client_errors()
    }

    /// Prints the scenario's line and asserts that nothing was lost.
    fn report(&self, name: &str, extra: &str) {
        println!(
            "reliability: {name} sent={} answered={} lost={} (errors_to_client={}: aborted_streams={} connection_errors={}; statuses={:?}{extra})",
            self.sent,
            self.answered,
            self.lost(),
            self.client_errors(),
            self.aborted,
            self.conn_errors,
            self.by_status,
        );
        assert_eq!(
            self.sent,
            self.answered + self.client_errors(),
            "{name}: requests lost without an answer or a client-visible error: {self:?}"
        );
    }
}

/// Sends `req` and reads the whole answer, within `limit`. `first_frame` is bumped when the
/// first body frame arrives (a stream is in flight).
async fn exchange(
    c: &HttpClient,
    req: Request<Full<Bytes>>,
    limit: Duration,
    first_frame: Option<&AtomicUsize>,
) -> Seen {
    let run = async {
        let Ok(resp) = c.request(req).await else {
            return Seen::ConnError;
        };
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut buf = BytesMut::new();
        let mut first = true;
        loop {
            match body.frame().await {
                None => return Seen::Answer(status, buf.freeze()),
                Some(Err(_)) => return Seen::Aborted(status),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                    if std::mem::take(&mut first) {
                        if let Some(n) = first_frame {
                            n.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                }
            }
        }
    };
    tokio::time::timeout(limit, run).await.unwrap_or(Seen::Hung)
}

/// A 502 must carry the guard's JSON error.
fn assert_bad_gateway_body(body: &Bytes) {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("502 body is not JSON ({e}): {body:?}"));
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.starts_with(UNAVAILABLE), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Metrics

async fn scrape(admin: &str) -> String {
    get(&format!("{admin}/metrics")).await.text()
}

/// The sum of every series of family `name` whose labels contain all of `labels`.
fn series_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let family = series.split('{').next()?;
            (family == name && labels.iter().all(|x| series.contains(x)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

async fn sum(admin: &str, name: &str, labels: &[&str]) -> f64 {
    series_sum(&scrape(admin).await, name, labels)
}

/// Waits (bounded, 10 s) until the sum reads `want`; returns what it read last.
async fn sum_eventually(admin: &str, name: &str, labels: &[&str], want: f64) -> f64 {
    let mut n = sum(admin, name, labels).await;
    for _ in 0..400 {
        if n == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        n = sum(admin, name, labels).await;
    }
    n
}

const UPSTREAM_ERRORS: &str = "ollama_guard_upstream_errors_total";
const REQUESTS: &str = "ollama_guard_requests_total";

// ---------------------------------------------------------------------------------------------
// Set-ups

/// The in-process guard in front of `upstream`, with extra TOML `file`.
async fn start_guard(
    upstream: &str,
    args: ServeArgs,
    file: &str,
) -> (Server, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(upstream, &dir, args, file);
    let server = Server::start(cfg, loopback().await, loopback().await)
        .await
        .unwrap();
    let proxy = format!("http://{}", server.proxy_addr);
    let admin = format!("http://{}", server.admin_addr);
    (server, proxy, admin, dir)
}

fn loopback_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

fn generate(proxy: &str, chunks: u32, chunk_delay_ms: u32) -> Request<Full<Bytes>> {
    request(
        Method::POST,
        &format!("{proxy}/api/generate"),
        &[
            ("x-sim-chunks", &chunks.to_string()),
            ("x-sim-chunk-delay-ms", &chunk_delay_ms.to_string()),
        ],
        r#"{"model":"llama3.2","prompt":"hi"}"#,
    )
}

/// Spawns `n` concurrent exchanges built by `make(i)`.
fn spawn_many(
    n: usize,
    limit: Duration,
    first_frame: Option<Arc<AtomicUsize>>,
    make: impl Fn(usize) -> Request<Full<Bytes>>,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    (0..n)
        .map(|i| {
            let req = make(i);
            let first = first_frame.clone();
            tokio::spawn(async move { exchange(&client(), req, limit, first.as_deref()).await })
        })
        .collect()
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<Seen>>) -> Vec<Seen> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. The upstream process is killed while long streams are in flight.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_killed_mid_stream() {
    let sim_addr = loopback_addr();
    let mut sim = Proc::simulator(sim_addr);
    wait_for_port(sim_addr).await;
    let (_server, proxy, admin, _dir) = start_guard(
        &format!("http://{sim_addr}"),
        ServeArgs::default(),
        "max_connections_per_source = 1000",
    )
    .await;
    let limit = Duration::from_secs(12);

    // 50 short streams that finish before the kill.
    let short = join_all(spawn_many(50, limit, None, |_| generate(&proxy, 5, 1))).await;
    for s in &short {
        match s {
            Seen::Answer(200, body) => {
                let text = String::from_utf8_lossy(body);
                let last = text.lines().last().unwrap_or_default();
                assert!(last.contains("\"done\":true"), "incomplete stream: {text}");
            }
            other => panic!("a short stream before the kill: {other:?}"),
        }
    }

    // 100 long streams (30 s each), all in flight when the simulator is killed.
    let streaming = Arc::new(AtomicUsize::new(0));
    let long = spawn_many(100, limit, Some(streaming.clone()), |_| {
        generate(&proxy, 3000, 10)
    });
    for _ in 0..400 {
        if streaming.load(Ordering::Acquire) == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        streaming.load(Ordering::Acquire),
        100,
        "streams never started"
    );
    sim.kill();
    let long = join_all(long).await;

    // 50 requests after the kill: nobody listens upstream.
    let after = join_all(spawn_many(50, limit, None, |_| generate(&proxy, 5, 1))).await;

    let all: Vec<&Seen> = short.iter().chain(&long).chain(&after).collect();
    let t = Tally::of(all.iter().copied());
    for s in &all {
        match s {
            Seen::Answer(200, _) | Seen::Aborted(200) => {}
            Seen::Answer(502, body) => assert_bad_gateway_body(body),
            other => panic!("unexpected: {other:?}"),
        }
    }
    let errors = t.aborted + t.status(502);
    let counted = sum_eventually(&admin, UPSTREAM_ERRORS, &[], errors as f64).await;
    let failed = sum_eventually(
        &admin,
        REQUESTS,
        &[r#"outcome="upstream_error""#],
        errors as f64,
    )
    .await;
    let resets = sum(&admin, UPSTREAM_ERRORS, &[r#"kind="reset""#]).await;
    t.report(
        "upstream_killed_mid_stream",
        &format!(
            "; complete_streams={} 502={}; upstream_errors_total={counted} (reset={resets}) requests_total{{outcome=upstream_error}}={failed}",
            t.status(200),
            t.status(502)
        ),
    );
    assert_eq!(t.status(200), 50, "every short stream completed");
    assert_eq!(
        t.aborted, 100,
        "every stream in flight was cut, none ended cleanly"
    );
    assert_eq!(t.status(502), 50, "every request after the kill got a 502");
    assert_eq!(t.conn_errors, 0);
    assert_eq!(counted, errors as f64, "every upstream failure is counted");
    assert_eq!(
        failed, errors as f64,
        "every failed request is recorded as upstream_error"
    );
    assert!(resets >= t.aborted as f64, "cut streams count as resets");
}

// ---------------------------------------------------------------------------------------------
// 2. The upstream process is stopped and started again on the same port under a request loop.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_restarted_under_load() {
    let sim_addr = loopback_addr();
    let mut sim = Proc::simulator(sim_addr);
    wait_for_port(sim_addr).await;
    let (_server, proxy, admin, _dir) =
        start_guard(&format!("http://{sim_addr}"), ServeArgs::default(), "").await;

    let results: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (results, stop, url) = (results.clone(), stop.clone(), format!("{proxy}/api/tags"));
            tokio::spawn(async move {
                let c = client();
                for _ in 0..5000 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let req = request(Method::GET, &url, &[], Bytes::new());
                    let seen = exchange(&c, req, Duration::from_secs(5), None).await;
                    results.lock().unwrap().push(seen);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let count =
        |pred: fn(&Seen) -> bool| results.lock().unwrap().iter().filter(|s| pred(s)).count();
    let wait_for = |what: &'static str, pred: fn(&Seen) -> bool, n: usize| {
        let count = &count;
        async move {
            for _ in 0..400 {
                if count(pred) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("never saw {n} {what}");
        }
    };
    wait_for(
        "200s before the stop",
        |s| matches!(s, Seen::Answer(200, _)),
        40,
    )
    .await;
    sim.kill();
    wait_for(
        "502s during the gap",
        |s| matches!(s, Seen::Answer(502, _)),
        20,
    )
    .await;
    let sim = Proc::simulator(sim_addr);
    wait_for_port(sim_addr).await;
    let restarted = results.lock().unwrap().len();
    // Recovery: the last 40 answers are all 200.
    let mut recovered = false;
    for _ in 0..400 {
        {
            let r = results.lock().unwrap();
            if r.len() >= restarted + 40
                && r[r.len() - 40..]
                    .iter()
                    .all(|s| matches!(s, Seen::Answer(200, _)))
            {
                recovered = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, Ordering::Release);
    for l in loops {
        l.await.unwrap();
    }
    drop(sim);
    assert!(recovered, "traffic never recovered after the restart");
    let results = std::mem::take(&mut *results.lock().unwrap());
    let t = Tally::of(&results);
    for s in &results {
        match s {
            Seen::Answer(200, _) => {}
            Seen::Answer(502, body) => assert_bad_gateway_body(body),
            Seen::Aborted(200) => {}
            other => panic!("unexpected: {other:?}"),
        }
    }
    let last = &results[results.len() - 40..];
    assert!(last.iter().all(|s| matches!(s, Seen::Answer(200, _))));
    let errors = t.aborted + t.status(502);
    let counted = sum_eventually(&admin, UPSTREAM_ERRORS, &[], errors as f64).await;
    let failed = sum_eventually(
        &admin,
        REQUESTS,
        &[r#"outcome="upstream_error""#],
        errors as f64,
    )
    .await;
    t.report(
        "upstream_restarted_under_load",
        &format!("; 502_during_gap={}; last_40_all_200=true; upstream_errors_total={counted} requests_total{{outcome=upstream_error}}={failed}", t.status(502)),
    );
    assert_eq!(
        t.conn_errors, 0,
        "the guard itself never failed a connection"
    );
    assert_eq!(counted, errors as f64, "every 502 and cut body is counted");
    assert_eq!(failed, errors as f64);
}

// ---------------------------------------------------------------------------------------------
// 3. File descriptors exhausted: the real binary under `ulimit -n 256`.

/// What a held half-request connection got.
enum Held {
    Answered503,
    Closed,
    StillOpen(TcpStream),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fd_exhaustion_is_answered_503_and_admin_stays_up() {
    const CONNS: usize = 366;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let script = format!(
        "ulimit -n 256 && exec \"$0\" serve --listen 127.0.0.1:{port} --admin-listen 127.0.0.1:{admin_port} --upstream http://127.0.0.1:9 --detection-log {}",
        dir.path().join("d.log").display()
    );
    let mut guard = Proc::spawn("sh", &["-c", &script, BIN]);
    let proxy_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin = format!("http://127.0.0.1:{admin_port}");
    // The admin listener is bound after the proxy one: probing it leaves the proxy untouched.
    wait_for_port(format!("127.0.0.1:{admin_port}").parse().unwrap()).await;
    let text = guard.wait_stderr("connection limit derived").await;
    let line = text
        .lines()
        .find(|l| l.contains("connection limit derived"))
        .unwrap();
    assert!(line.contains("nofile=256"), "{line}");
    let max: usize = line
        .split("max_connections=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(max, (256 - 192) / 2);

    let mut conns = Vec::with_capacity(CONNS);
    let mut connect_errors = 0u64;
    for _ in 0..CONNS {
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(proxy_addr)).await {
            Ok(Ok(mut c)) => {
                // Half a request head; a refused connection may already be gone.
                let _ = c.write_all(b"GET /api/tags HTTP/1.1\r\nHost: loc").await;
                conns.push(c);
            }
            _ => connect_errors += 1,
        }
    }
    let reads: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                match tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut buf)).await {
                    Err(_) if buf.is_empty() => Held::StillOpen(c),
                    Err(_) => panic!("partial answer: {}", String::from_utf8_lossy(&buf)),
                    Ok(_) if buf.is_empty() => Held::Closed,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf);
                        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
                        assert!(text.contains("retry-after: 1\r\n"), "{text}");
                        Held::Answered503
                    }
                }
            })
        })
        .collect();
    let (mut answered, mut closed, mut held) = (0u64, connect_errors, Vec::new());
    for r in reads {
        match r.await.unwrap() {
            Held::Answered503 => answered += 1,
            Held::Closed => closed += 1,
            Held::StillOpen(c) => held.push(c),
        }
    }

    // The admin listener answers while the proxy is saturated.
    let t0 = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(5), async {
        get(&format!("{admin}/healthz")).await.status
    })
    .await
    .expect("/healthz hung");
    let health_ms = t0.elapsed().as_millis();
    assert_eq!(health, 200);

    // A fresh connection is answered 503 at once, not left hanging.
    let mut fresh = TcpStream::connect(proxy_addr).await.unwrap();
    fresh
        .write_all(b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), fresh.read_to_end(&mut buf))
        .await
        .expect("a fresh connection hung")
        .unwrap();
    let fresh_answer = String::from_utf8_lossy(&buf).into_owned();
    assert!(fresh_answer.starts_with("HTTP/1.1 503"), "{fresh_answer}");
    assert!(
        fresh_answer.contains("retry-after: 1\r\n"),
        "{fresh_answer}"
    );

    let sent = CONNS as u64 + 1;
    let answered = answered + 1;
    let held_n = held.len() as u64;
    let open = sum_eventually(&admin, "ollama_guard_open_connections", &[], held_n as f64).await;
    let rejected = sum(
        &admin,
        "ollama_guard_connections_rejected_total",
        &[r#"reason="max_connections""#],
    )
    .await;
    let accept_errors = sum(
        &admin,
        "ollama_guard_connections_rejected_total",
        &[r#"reason="accept_error""#],
    )
    .await;
    let warnings = guard.stderr_lines_with(&["connection limit reached", "accept failed"]);
    println!(
        "reliability: fd_exhaustion sent={sent} answered={answered} lost={} (errors_to_client={closed}: closed_without_answer={closed}; held_waiting_for_their_head={held_n}; healthz_ms={health_ms}; connections_rejected_total{{max_connections}}={rejected} {{accept_error}}={accept_errors}; warning_lines={warnings})",
        sent - answered - closed - held_n
    );
    assert_eq!(
        sent,
        answered + closed + held_n,
        "every connection was answered, closed visibly, or is still being served"
    );
    assert_eq!(held_n, max as u64, "exactly max_connections are admitted");
    assert_eq!(open, held_n as f64);
    assert_eq!(
        rejected,
        (answered + closed - connect_errors) as f64,
        "every turned-away connection is counted"
    );
    assert!(answered > 1, "turned-away connections get a 503");
    assert!(guard.alive());
    assert!(
        (1..=3).contains(&warnings),
        "rate-limited warnings: {warnings}\n{}",
        guard.stderr_text()
    );
    drop(held);
}

// ---------------------------------------------------------------------------------------------
// 4. The detection log's disk is full.

/// A rule that flags every new source once: one detection line per distinct source.
const EVERY_SOURCE: &str = r#"
trusted_proxies = ["127.0.0.1/32"]
max_connections_per_source = 1000

[[rule]]
name = "every_source"
paths = ["*"]
group_by = "src"
window = "24h"
threshold = 1
"#;

/// Numbers of the disk-full scenario.
struct DiskFull {
    tally: Tally,
    detections: f64,
    lines_on_disk: u64,
    dropped: f64,
    medium: &'static str,
}

async fn detection_log_on_a_full_disk(name: &str) -> DiskFull {
    const N: usize = 300;
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let full_dir = dir.path().join("full");
    std::fs::create_dir(&full_dir).unwrap();
    let tmpfs = Tmpfs::mount(&full_dir, "64k");
    let (path, medium) = match &tmpfs {
        Some(_) => (full_dir.join("detection.log"), "tmpfs size=64k"),
        None => ("/dev/full".into(), "/dev/full"),
    };
    let args = ServeArgs {
        upstream: Some(sim.url()),
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        detection_log: Some(path.display().to_string()),
        access_log: Some(dir.path().join("access.log").display().to_string()),
        ..ServeArgs::default()
    };
    let cfg = Config::merge(&args, toml::from_str(EVERY_SOURCE).unwrap()).unwrap();
    let server = Server::start(cfg, loopback().await, loopback().await)
        .await
        .unwrap();
    let proxy = format!("http://{}", server.proxy_addr);
    let admin = format!("http://{}", server.admin_addr);
    let next = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = (0..8)
        .map(|_| {
            let (next, url) = (next.clone(), format!("{proxy}/api/tags"));
            tokio::spawn(async move {
                let c = client();
                let mut seen = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::AcqRel);
                    if i >= N {
                        return seen;
                    }
                    let xff = format!("10.4.{}.{}", i / 250, i % 250 + 1);
                    let req = request(
                        Method::GET,
                        &url,
                        &[("x-forwarded-for", &xff)],
                        Bytes::new(),
                    );
                    seen.push(exchange(&c, req, Duration::from_secs(10), None).await);
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for l in loops {
        results.extend(l.await.unwrap());
    }
    let tally = Tally::of(&results);
    let detections = sum_eventually(
        &admin,
        "ollama_guard_detections_total",
        &[r#"rule="every_source""#],
        N as f64,
    )
    .await;
    let count_lines = || -> u64 {
        if tmpfs.is_none() {
            return 0; // nothing is ever written to /dev/full (and reading it never ends)
        }
        std::fs::read(&path)
            .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
            .unwrap_or(0)
    };
    // What a correct count reads once the writer is idle; polled, so the writer can finish.
    let dropped_series = [r#"log="detection""#];
    let mut dropped = sum(
        &admin,
        "ollama_guard_log_lines_dropped_total",
        &dropped_series,
    )
    .await;
    let mut lines_on_disk = count_lines();
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let (d, l) = (
            sum(
                &admin,
                "ollama_guard_log_lines_dropped_total",
                &dropped_series,
            )
            .await,
            count_lines(),
        );
        let settled = d == dropped && l == lines_on_disk;
        (dropped, lines_on_disk) = (d, l);
        if settled && detections - lines_on_disk as f64 == dropped {
            break;
        }
    }
    // Still serving after the disk filled up.
    let health = get(&format!("{admin}/healthz")).await.status;
    assert_eq!(health, 200);
    let out = DiskFull {
        tally,
        detections,
        lines_on_disk,
        dropped,
        medium,
    };
    out.tally.report(
        name,
        &format!(
            "; medium={medium}; detections_total={detections} lines_on_disk={lines_on_disk} lines_lost={} log_lines_dropped_total{{log=detection}}={dropped}",
            detections - lines_on_disk as f64
        ),
    );
    drop(server);
    drop(tmpfs);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_log_disk_full_traffic_is_still_answered() {
    let r = detection_log_on_a_full_disk("detection_log_disk_full").await;
    assert_eq!(
        r.tally.status(200),
        r.tally.sent,
        "every request answered 200"
    );
    assert_eq!(
        r.detections, r.tally.sent as f64,
        "one detection per source"
    );
    assert!(
        (r.lines_on_disk as f64) < r.detections,
        "the disk ({}) must have filled up for this scenario to mean anything",
        r.medium
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_log_disk_full_lost_lines_are_counted() {
    let r = detection_log_on_a_full_disk("detection_log_disk_full_counted").await;
    assert_eq!(
        r.dropped,
        r.detections - r.lines_on_disk as f64,
        "every detection line that did not reach the disk is counted in log_lines_dropped_total{{log=\"detection\"}}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. The state dir turns read-only under a running guard.

/// Writes into `path` until its filesystem is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

async fn post_ban(admin: &str, src: &str) -> Reply {
    send(
        Method::POST,
        &format!("{admin}/api/bans"),
        &[("content-type", "application/json")],
        format!(r#"{{"src":"{src}","duration":"1h","reason":"reliability"}}"#),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_state_dir_keeps_bans_in_memory_and_says_so() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let tmpfs = Tmpfs::mount(&state, "1m");
    let (port, admin_port) = (free_port(), free_port());
    let mut guard = Proc::spawn(
        BIN,
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
            "--upstream",
            &sim.url(),
            "--detection-log",
            &dir.path().join("d.log").display().to_string(),
            "--state-dir",
            &state.display().to_string(),
            "--mode",
            "block",
        ],
    );
    let admin = format!("http://127.0.0.1:{admin_port}");
    wait_for_port(format!("127.0.0.1:{admin_port}").parse().unwrap()).await;
    // Root ignores mode bits, and the journal keeps its file open (a read-only remount would
    // be refused as busy): make writes really fail by filling the state tmpfs (ENOSPC); when
    // mounts are not allowed, /dev/full-like failure is not reachable, so the state dir is
    // replaced by a file before the guard's first write.
    let moved = dir.path().join("state.moved");
    let filler = state.join("filler");
    let how = match &tmpfs {
        Some(_) => {
            fill(&filler);
            "state tmpfs filled up (ENOSPC)"
        }
        None => {
            std::fs::rename(&state, &moved).unwrap();
            std::fs::write(&state, b"not a directory").unwrap();
            "state dir replaced by a file"
        }
    };

    // The ban is in force but cannot be made durable: the API says so (503) instead of 201.
    // A journal line can still land in the file's last, partly used page, so bans are added
    // until one needs a page the full filesystem cannot give (8 KiB of lines at most).
    let mut refused = None;
    let mut posted = 0.0;
    for i in 0..64u8 {
        let src = format!("127.0.1.{i}");
        let added = post_ban(&admin, &src).await;
        posted += 1.0;
        match added.status.as_u16() {
            201 => continue,
            503 => {
                refused = Some(src);
                break;
            }
            other => panic!("unexpected {other}: {}", added.text()),
        }
    }
    let refused = refused.expect("a ban on a full disk must answer 503");
    let added = post_ban(&admin, "127.0.0.66").await;
    assert_eq!(added.status, 503, "{}", added.text());

    let proxy = format!("http://127.0.0.1:{port}");
    let mut seen = Vec::new();
    for src in ["127.0.0.66", "127.0.0.1", refused.as_str()] {
        let c = client_from(src);
        for _ in 0..20 {
            let req = request(Method::GET, &format!("{proxy}/api/tags"), &[], Bytes::new());
            seen.push((src, exchange(&c, req, Duration::from_secs(10), None).await));
        }
    }
    for (src, s) in &seen {
        match (*src, s) {
            ("127.0.0.1", Seen::Answer(200, _)) => {}
            (src, Seen::Answer(403, _)) if src != "127.0.0.1" => {}
            other => panic!("{other:?}"),
        }
    }
    let t = Tally::of(seen.iter().map(|(_, s)| s));
    let listed = get(&format!("{admin}/api/bans")).await.text();
    assert!(listed.contains("127.0.0.66"), "{listed}");
    let blocked = sum(
        &admin,
        "ollama_guard_blocked_requests_total",
        &[r#"rule="admin""#],
    )
    .await;
    let bans = sum(&admin, "ollama_guard_active_bans", &[]).await;
    let failures =
        guard.stderr_lines_with(&["could not be persisted", "cannot write the ban state"]);
    assert!(
        failures >= 1,
        "the failure is logged: {}",
        guard.stderr_text()
    );

    // Writable again: the next change writes every ban, the one that failed included.
    match &tmpfs {
        Some(_) => std::fs::remove_file(&filler).unwrap(),
        None => {
            std::fs::remove_file(&state).unwrap();
            std::fs::rename(&moved, &state).unwrap();
        }
    }
    assert_eq!(post_ban(&admin, "127.0.0.67").await.status, 201);
    // 201 means on disk: the snapshot rewritten after the failure holds both bans.
    let mut saved = String::new();
    for _ in 0..400 {
        saved = std::fs::read_to_string(state.join("bans.json")).unwrap_or_default();
        if saved.contains("127.0.0.66") && saved.contains("127.0.0.67") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    t.report(
        "state_dir_read_only",
        &format!("; how={how}; blocked_requests_total{{rule=admin}}={blocked} active_bans={bans}; state_write_errors_logged={failures}; api_answer_for_unpersisted_bans=503"),
    );
    assert!(
        saved.contains("127.0.0.66") && saved.contains("127.0.0.67"),
        "the failed write is retried on the next change: {saved}"
    );
    assert_eq!(
        t.status(403),
        40,
        "bans answered 503 are enforced from memory"
    );
    assert_eq!(t.status(200), 20);
    assert_eq!(blocked, 40.0);
    assert_eq!(
        bans,
        posted + 1.0,
        "every ban is in force, persisted or not"
    );
    assert!(failures >= 1);
    guard.signal("TERM");
    assert_eq!(guard.wait_exit().await, Some(0));
    drop(tmpfs);
}

// ---------------------------------------------------------------------------------------------
// 6. A SIGHUP storm during traffic.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_storm_during_traffic() {
    const HUPS: usize = 50;
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("guard.toml");
    std::fs::write(
        &conf,
        "mode = \"monitor\"\nmax_connections_per_source = 1000\n",
    )
    .unwrap();
    let access = dir.path().join("access.log");
    let (port, admin_port) = (free_port(), free_port());
    let mut guard = Proc::spawn(
        BIN,
        &[
            "serve",
            "--config",
            &conf.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
            "--upstream",
            &sim.url(),
            "--detection-log",
            &dir.path().join("d.log").display().to_string(),
            "--access-log",
            &access.display().to_string(),
        ],
    );
    let admin = format!("http://127.0.0.1:{admin_port}");
    wait_for_port(format!("127.0.0.1:{admin_port}").parse().unwrap()).await;
    let proxy = format!("http://127.0.0.1:{port}");

    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let (stop, url) = (stop.clone(), format!("{proxy}/api/tags"));
            tokio::spawn(async move {
                let c = client();
                let mut seen = Vec::new();
                for _ in 0..5000 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let req = request(Method::GET, &url, &[], Bytes::new());
                    seen.push(exchange(&c, req, Duration::from_secs(5), None).await);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            })
        })
        .collect();
    for _ in 0..HUPS {
        guard.signal("HUP");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // Let the last reloads land, with traffic still running.
    let mut reloads = 0.0;
    let mut logged = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let r = sum(
            &admin,
            "ollama_guard_config_reloads_total",
            &[r#"result="success""#],
        )
        .await;
        let l = guard.stderr_lines_with(&["config reloaded"]);
        let settled = r == reloads && l == logged;
        (reloads, logged) = (r, l);
        if settled && r == l as f64 && r > 0.0 {
            break;
        }
    }
    stop.store(true, Ordering::Release);
    let mut results = Vec::new();
    for l in loops {
        results.extend(l.await.unwrap());
    }
    let t = Tally::of(&results);
    let refused = sum(
        &admin,
        "ollama_guard_config_reloads_total",
        &[r#"result="failure""#],
    )
    .await;
    let hup_lines = guard.stderr_lines_with(&["SIGHUP: reopening logs"]);
    // Every answered request is in the access log, across 50 reopenings.
    let answered = t.answered;
    let mut access_lines = 0;
    for _ in 0..200 {
        access_lines = std::fs::read_to_string(&access)
            .map(|s| s.lines().count() as u64)
            .unwrap_or(0);
        if access_lines == answered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let dropped = sum(&admin, "ollama_guard_log_lines_dropped_total", &[]).await;
    let alive = guard.alive();
    t.report(
        "sighup_storm",
        &format!("; hups_sent={HUPS} hups_handled={hup_lines} config_reloads_total{{success}}={reloads} {{failure}}={refused}; access_log_lines={access_lines} log_lines_dropped_total={dropped}; alive={alive}"),
    );
    assert!(alive, "the guard survived the storm");
    assert_eq!(t.status(200), t.sent, "zero failed requests");
    assert_eq!(refused, 0.0);
    // Signals that arrive while one is being handled coalesce (tokio delivers "at least one
    // since the last recv"): each handled HUP is one successful reload.
    assert_eq!(
        reloads, hup_lines as f64,
        "every handled SIGHUP is one counted reload"
    );
    assert_eq!(logged, hup_lines);
    assert!((1..=HUPS).contains(&hup_lines), "{hup_lines}");
    assert_eq!(
        access_lines, answered,
        "no access-log line lost across reopenings"
    );
    assert_eq!(dropped, 0.0);
    guard.signal("TERM");
    assert_eq!(guard.wait_exit().await, Some(0));
}

// ---------------------------------------------------------------------------------------------
// 7. 10 000 distinct sources (X-Forwarded-For from a trusted proxy).

/// Two rules: one key per source, plus one key per source on `/api/tags`.
const TWO_RULES: &str = r#"
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "per_source"
paths = ["*"]
group_by = "src"
window = "1h"
window_kind = "sliding"
threshold = 4095

[[rule]]
name = "tags_per_source_and_path"
paths = ["/api/tags"]
group_by = "src_path"
window = "1h"
window_kind = "sliding"
threshold = 4095
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_distinct_sources() {
    const N: usize = 10_000;
    let sim = simulator().await;
    let (_server, proxy, admin, _dir) =
        start_guard(&sim.url(), ServeArgs::default(), TWO_RULES).await;
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let loops: Vec<_> = (0..16)
        .map(|_| {
            let (next, proxy) = (next.clone(), proxy.clone());
            tokio::spawn(async move {
                let c = client();
                let mut seen = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::AcqRel);
                    if i >= N {
                        return seen;
                    }
                    // Even sources ask for /api/tags, odd ones for /api/version.
                    let path = if i % 2 == 0 {
                        "/api/tags"
                    } else {
                        "/api/version"
                    };
                    let xff = format!("10.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256);
                    let req = request(
                        Method::GET,
                        &format!("{proxy}{path}"),
                        &[("x-forwarded-for", &xff)],
                        Bytes::new(),
                    );
                    seen.push(exchange(&c, req, Duration::from_secs(10), None).await);
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for l in loops {
        results.extend(l.await.unwrap());
    }
    let secs = t0.elapsed().as_secs_f64();
    let t = Tally::of(&results);
    // per_source: one key per source; tags_per_source_and_path: one per even source.
    let expected_keys = (N + N / 2) as f64;
    let keys = sum_eventually(&admin, "ollama_guard_tracked_keys", &[], expected_keys).await;
    let forwarded = sum_eventually(
        &admin,
        REQUESTS,
        &[r#"outcome="forwarded""#, r#"status_class="2xx""#],
        N as f64,
    )
    .await;
    let evictions = sum(&admin, "ollama_guard_tracked_key_evictions_total", &[]).await;
    t.report(
        "ten_thousand_sources",
        &format!("; {secs:.1}s; tracked_keys={keys} (expected {expected_keys}); requests_total{{forwarded,2xx}}={forwarded}; evictions={evictions}"),
    );
    assert_eq!(t.status(200), N as u64, "every source answered");
    assert_eq!(keys, expected_keys);
    assert_eq!(forwarded, N as f64);
    assert_eq!(evictions, 0.0);
}
