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
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use super::{upstream, Proxy};

/// One worker's share: the proxy and this thread's upstream pool.
struct Worker {
    proxy: Arc<Proxy>,
    client: upstream::UpstreamClient,
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
            client: upstream::client(&self.timeouts),
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
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let w = worker.clone();
                        let service = service_fn(move |req| {
                            let w = w.clone();
                            async move { w.proxy.handle(&w.client, req, peer).await }
                        });
                        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                        conns.spawn(async move {
                            if let Err(e) = conn.await {
                                tracing::debug!(%peer, error = %e, "client connection ended with an error");
                            }
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
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
