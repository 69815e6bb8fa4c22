//! ollama-sim: an in-process fake of Ollama's HTTP API.
//!
//! ollama-guard's integration tests, the benchmarks and the `demo` command need an upstream
//! that behaves like Ollama on the wire — same routes, statuses, content types, NDJSON and
//! SSE streaming frame by frame, the loopback `Host` check, the default CORS check (a foreign
//! `Origin` is answered 403), blob uploads — without a model
//! or a GPU. Each request can be made slow, long or broken through `x-sim-*` headers, which
//! a proxy forwards untouched, and everything the simulator saw is recorded in a
//! [`SimLog`], including whether the client went away early.
//!
//! Per-request controls:
//! - `x-sim-id: <text>` names the request in the log ([`SimLog::wait_done`]).
//! - `x-sim-delay-ms: N` waits before the response head (honoured in `fast` mode too).
//! - `x-sim-chunk-delay-ms: N`, `x-sim-chunks: N` override the stream schedule.
//! - `x-sim-transfer-ms: N` makes a `/api/pull` or `/api/push` last N ms in total (default
//!   [`SimConfig::transfer_duration`], 300 ms), with its progress lines spread evenly over
//!   it: `x-sim-chunks` of them if given, else one every 250 ms (at least
//!   [`SimConfig::chunks`]). A `"stream": false` transfer waits as long, then answers one
//!   `{"status":"success"}`. So a test can start a slow transfer and cut it.
//! - `x-sim-fail: error-line` ends a stream after two frames with an in-band error line;
//!   `x-sim-fail: abort` cuts the connection after two frames (no chunked terminator).
//!
//! Pull progress is `{"status":"pulling manifest"}`, then `{"status":"pulling <digest 12>",
//! "digest":"sha256:…","total":N,"completed":M}` lines with `completed` rising to `total`,
//! then `verifying sha256 digest`, `writing manifest`, `success`; push progress is
//! `retrieving manifest`, `pushing <digest 12>` lines, `pushing manifest`, `success`. Names
//! may carry a registry host (`attacker.example/ns/model:tag`, `hf.co/user/repo`) and the
//! body may set `insecure`; a push of an unqualified name the simulator does not have is
//! refused (500) before any progress.
//!
//! Start one with [`spawn`] on a bound listener and a [`SimConfig`]; the returned
//! [`SimHandle`] gives its [`url`](SimHandle::url), its [`log`](SimHandle::log) and
//! [`shutdown`](SimHandle::shutdown).
//!
//! This crate stands alone (it does not depend on ollama-guard, which depends on it), so
//! the route table and response formats here are the simulator's own copy of Ollama's.
//!
//! # Layout
//! - `log`: [`SimLog`] and [`SimRequest`], and the tracker that follows each request.
//! - `controls`: the `x-sim-*` headers.
//! - `router`, `call`, `reply`, `body`: dispatch, request reading, response building, and
//!   the (streaming) response body.
//! - `hostcheck`: Ollama's DNS-rebinding guard.
//! - `models`, `native`, `transfer`, `blobs`, `openai`: the route handlers.

mod blobs;
mod body;
mod call;
mod controls;
mod hostcheck;
mod log;
mod models;
mod native;
mod openai;
mod origin;
mod reply;
mod router;
#[cfg(test)]
mod tests;
mod transfer;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use self::log::{SimLog, SimRequest};

/// The simulator's defaults; every field can be overridden per request by a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Pause before each streamed chunk, so streams take wall-clock time like a generation.
    pub chunk_delay: Duration,
    /// Content chunks per stream (tokens of a generation, progress lines of a pull).
    pub chunks: usize,
    /// Total duration of a `/api/pull` or `/api/push` progress stream (and the wait before
    /// a `"stream": false` answer) unless the request sets `x-sim-transfer-ms`; zero in
    /// `fast` mode.
    pub transfer_duration: Duration,
    /// Reproduce Ollama's 403 for foreign `Host` headers when listening on loopback; this is
    /// what proves the proxy rewrites `Host`.
    pub host_check: bool,
    /// Benchmark mode: no default delays, so the proxy's overhead is what gets measured.
    pub fast: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            chunk_delay: Duration::from_millis(10),
            chunks: 5,
            transfer_duration: Duration::from_millis(300),
            host_check: true,
            fast: false,
        }
    }
}

/// Shared by every connection of one simulator.
#[derive(Debug)]
pub(crate) struct SimState {
    pub(crate) cfg: SimConfig,
    pub(crate) log: Arc<SimLog>,
    /// Digests of uploaded blobs (`sha256-<hex>`).
    pub(crate) blobs: Mutex<HashSet<String>>,
    /// `host_check` and the listener is on loopback, as in Ollama's middleware.
    pub(crate) check_hosts: bool,
}

/// A running simulator. Dropping it stops the simulator too (without waiting); call
/// [`SimHandle::shutdown`] to wait until every connection is closed.
#[derive(Debug)]
pub struct SimHandle {
    /// The address the simulator listens on.
    pub addr: SocketAddr,
    /// Every request the simulator has seen.
    pub log: Arc<SimLog>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

// === impl SimHandle ===

impl SimHandle {
    /// The base URL to point a client or the proxy's `--upstream` at; an unspecified listen
    /// address is reported as loopback, which is where it can be reached.
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}")
    }

    /// Stops accepting, closes every open connection (in-flight requests see their
    /// connection cut) and waits until that is done.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts serving on `listener` (bind `127.0.0.1:0` in tests) until the handle is shut
/// down or dropped.
pub async fn spawn(listener: TcpListener, cfg: SimConfig) -> SimHandle {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let log = Arc::new(SimLog::new());
    let state = Arc::new(SimState {
        check_hosts: cfg.host_check && addr.ip().is_loopback(),
        cfg,
        log: Arc::clone(&log),
        blobs: Mutex::new(HashSet::new()),
    });
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, state, stopped));
    SimHandle {
        addr,
        log,
        stop: Some(stop),
        task: Some(task),
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<SimState>, stopped: oneshot::Receiver<()>) {
    // No grace: a stopped simulator closes every connection at once (tests kill it mid-stream).
    let options = accept_loop::Options {
        name: "simulator",
        grace: Duration::ZERO,
    };
    let stop = async move {
        let _ = stopped.await;
    };
    accept_loop::serve(
        listener,
        options,
        stop,
        |_| {},
        |stream, _peer, _drain| Some(serve_connection(Arc::clone(&state), stream)),
    )
    .await;
}

/// One task per connection: HTTP/1.1 with keep-alive, as Go's `net/http` serves Ollama.
async fn serve_connection(state: Arc<SimState>, stream: TcpStream) {
    // Streams are written frame by frame; Nagle would hold small frames back.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(router::handle(state, req).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, "simulator connection ended with an error");
    }
}
