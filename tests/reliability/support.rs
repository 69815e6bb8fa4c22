//! The reliability suite's accounting (what each request came to), metric scraping and
//! set-ups shared by every scenario.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use ollama_guard::config::ServeArgs;
use ollama_guard::serve::Server;

use crate::common::process::free_port;
use crate::common::*;

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) const UNAVAILABLE: &str = "ollama-guard: upstream unavailable: ";

// ---------------------------------------------------------------------------------------------
// Accounting

/// What one request came to, as its client saw it.
#[derive(Debug)]
pub(crate) enum Seen {
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
pub(crate) struct Tally {
    pub(crate) sent: u64,
    pub(crate) answered: u64,
    pub(crate) aborted: u64,
    pub(crate) conn_errors: u64,
    pub(crate) by_status: BTreeMap<u16, u64>,
}

impl Tally {
    pub(crate) fn add(&mut self, seen: &Seen) {
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

    pub(crate) fn of<'a>(seen: impl IntoIterator<Item = &'a Seen>) -> Tally {
        let mut t = Tally::default();
        for s in seen {
            t.add(s);
        }
        t
    }

    pub(crate) fn status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    pub(crate) fn client_errors(&self) -> u64 {
        self.aborted + self.conn_errors
    }

    pub(crate) fn lost(&self) -> u64 {
        self.sent - self.answered - self.client_errors()
    }

    /// Prints the scenario's line and asserts that nothing was lost.
    pub(crate) fn report(&self, name: &str, extra: &str) {
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
pub(crate) async fn exchange(
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
pub(crate) fn assert_bad_gateway_body(body: &Bytes) {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("502 body is not JSON ({e}): {body:?}"));
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.starts_with(UNAVAILABLE), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Metrics

pub(crate) async fn scrape(admin: &str) -> String {
    get(&format!("{admin}/metrics")).await.text()
}

/// The sum of every series of family `name` whose labels contain all of `labels`.
pub(crate) fn series_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
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

pub(crate) async fn sum(admin: &str, name: &str, labels: &[&str]) -> f64 {
    series_sum(&scrape(admin).await, name, labels)
}

/// Waits (bounded, 10 s) until the sum reads `want`; returns what it read last.
pub(crate) async fn sum_eventually(admin: &str, name: &str, labels: &[&str], want: f64) -> f64 {
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

pub(crate) const UPSTREAM_ERRORS: &str = "ollama_guard_upstream_errors_total";
pub(crate) const REQUESTS: &str = "ollama_guard_requests_total";

// ---------------------------------------------------------------------------------------------
// Set-ups

/// The in-process guard in front of `upstream`, with extra TOML `file`.
pub(crate) async fn start_guard(
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

pub(crate) fn loopback_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

pub(crate) fn generate(proxy: &str, chunks: u32, chunk_delay_ms: u32) -> Request<Full<Bytes>> {
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
pub(crate) fn spawn_many(
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

pub(crate) async fn join_all(tasks: Vec<tokio::task::JoinHandle<Seen>>) -> Vec<Seen> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
