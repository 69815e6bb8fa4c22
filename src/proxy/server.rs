//! The accept side: one single-threaded runtime per worker thread, like nginx's worker
//! processes.
//!
//! Each worker accepts from its own handle on the shared listening socket, and owns its
//! upstream connection pool, so a request, its upstream connection and its response body are
//! all driven by one thread: no cross-thread wake-up per request or per streamed frame. With
//! tokio's work-stealing runtime those wake-ups dominated (two single-threaded processes
//! served 17 % more than one two-worker process in the same benchmark).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tower::Layer;

use super::layers::client_ip::ClientIpLayer;
use super::{limits, upstream, Proxy};
use crate::telemetry::throttle::Throttle;

/// One worker's share: the proxy and the request stack around this thread's upstream pool.
struct Worker {
    proxy: Arc<Proxy>,
    stack: super::Stack,
}

impl Proxy {
    /// Serves `listener` on `workers` threads until `shutdown` resolves, then lets in-flight
    /// requests finish for up to `grace` (idle keep-alive connections close at once); returns
    /// when every worker has stopped.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) {
        let listener = match listener.into_std() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot hand the listener to the workers");
                return;
            }
        };
        let (stop, stopped) = watch::channel(false);
        let mut done = Vec::new();
        for i in 0..self.workers.max(1) {
            let handle = match listener.try_clone() {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, worker = i, "cannot share the listener");
                    break;
                }
            };
            let (finished, wait) = oneshot::channel::<()>();
            let proxy = self.clone();
            let stopped = stopped.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ollama-guard-proxy-{i}"))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(proxy.run_worker(handle, stopped, grace)),
                        Err(e) => {
                            tracing::error!(error = %e, worker = i, "cannot start a proxy worker")
                        }
                    }
                    drop(finished);
                });
            match spawned {
                Ok(_) => done.push(wait),
                Err(e) => {
                    tracing::error!(error = %e, worker = i, "cannot start a proxy worker thread")
                }
            }
        }
        drop(listener);
        shutdown.await;
        let _ = stop.send(true);
        for wait in done {
            let _ = wait.await;
        }
    }

    async fn run_worker(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        mut stopped: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "a proxy worker cannot register the listener");
                return;
            }
        };
        let worker = Arc::new(Worker {
            stack: self.stack(upstream::client(&self.timeouts)),
            proxy: self,
        });
        let graceful = GracefulShutdown::new();
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(worker.proxy.timeouts.header_read)
            .keep_alive(true);
        // Connection tasks are owned here, so those still open when the grace period ends
        // can be aborted and awaited: their responses' drops fire the last records before
        // the caller flushes the logs.
        let mut conns = JoinSet::new();
        let mut backoff = AcceptBackoff::default();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        backoff.reset();
                        let ip = super::client_ip::canonical(peer.ip());
                        let exempt = limits::is_trusted(ip, &worker.proxy.trusted.load());
                        let permit = match worker.proxy.limits.admit(ip, exempt) {
                            Ok(p) => p,
                            Err(why) => {
                                static WARN: Throttle = Throttle::new(Duration::from_secs(10));
                                if let Some(repeats) = WARN.allow() {
                                    tracing::warn!(%peer, limit = why.label(), repeats, "connection limit reached; answering 503");
                                }
                                worker.proxy.limits.reject(stream);
                                continue;
                            }
                        };
                        let _ = stream.set_nodelay(true);
                        // The connection-bound layer on top of the worker's stack (see
                        // `Proxy::stack` for the order).
                        let service = ClientIpLayer::new(peer, worker.proxy.trusted.clone())
                            .layer(worker.stack.clone());
                        let service = TowerToHyperService::new(service);
                        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                        conns.spawn(async move {
                            if let Err(e) = conn.await {
                                tracing::debug!(%peer, error = %e, "client connection ended with an error");
                            }
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        worker.proxy.metrics.connections_rejected.with_label_values(&["accept_error"]).inc();
                        backoff.wait(&e).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = stopped.wait_for(|s| *s) => break,
            }
        }
        drop(listener);
        tokio::select! {
            () = graceful.shutdown() => tracing::debug!("worker drained"),
            () = tokio::time::sleep(grace) => tracing::warn!(?grace, "grace period over; closing remaining connections"),
        }
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

/// Back-off of an accept loop that fails: out of descriptors (`EMFILE`/`ENFILE`) or memory,
/// waiting 10 ms doubling to 1 s instead of spinning, with one rate-limited warning.
#[derive(Default)]
pub(crate) struct AcceptBackoff {
    delay: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// A connection was accepted: the next failure starts over.
    pub(crate) fn reset(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// Waits after a failed accept. A connection aborted before it was accepted is not a
    /// resource problem: no wait.
    pub(crate) async fn wait(&mut self, e: &std::io::Error) {
        if matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
        ) {
            return;
        }
        self.delay = (self.delay * 2).clamp(Self::FIRST, Self::MAX);
        static WARN: Throttle = Throttle::new(Duration::from_secs(10));
        if let Some(repeats) = WARN.allow() {
            tracing::warn!(error = %e, retry_in = ?self.delay, repeats, "accept failed (out of file descriptors?); backing off");
        }
        tokio::time::sleep(self.delay).await;
    }
}
