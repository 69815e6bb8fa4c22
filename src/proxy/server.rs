//! The accept side: one single-threaded runtime per worker thread, like nginx's worker
//! processes.
//!
//! Each worker accepts from its own handle on the shared listening socket, and owns its
//! upstream connection pool, so a request, its upstream connection and its response body are
//! all driven by one thread: no cross-thread wake-up per request or per streamed frame. With
//! tokio's work-stealing runtime those wake-ups dominated (two single-threaded processes
//! served 17 % more than one two-worker process in the same benchmark).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use accept_loop::GracefulShutdown;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tower::{Layer, Service, ServiceExt};

use super::head_timer::{self, HeadTimer};
use super::layers::client_ip::{ClientIp, ClientIpLayer};
use super::send_idle::SendIdle;
use super::{limits, upstream, Proxy};
use crate::telemetry::throttle::Throttle;

/// The largest request head a client may send (Envoy's default is 60 KiB, nginx's 32 KiB): the
/// read buffer of a connection never grows past it either.
pub(crate) const MAX_HEAD: usize = 64 << 10;
/// One worker's share: the proxy and the request stack around this thread's upstream pool.
struct Worker {
    proxy: Arc<Proxy>,
    stack: super::Stack,
    /// The worker's index: its record queue ([`super::deferred`]).
    index: usize,
}

impl Proxy {
    /// Serves `listener` on `workers` threads until `shutdown` resolves, then lets in-flight
    /// requests finish for up to `grace` (idle keep-alive connections close at once); returns
    /// when every worker has stopped.
    pub(crate) async fn serve(
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
                    // One worker per CPU (`cpu_affinity`): its connections, pool and
                    // tables stay in that core's caches (see `crate::affinity`).
                    if let Some(&cpu) = proxy.cpus.as_ref().and_then(|cpus| cpus.get(i)) {
                        if !crate::affinity::pin_current(cpu) {
                            tracing::warn!(
                                worker = i,
                                cpu,
                                "cannot pin the proxy worker to its CPU"
                            );
                        }
                    }
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(proxy.run_worker(i, handle, stopped, grace)),
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
        index: usize,
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
        tokio::spawn(sweep_head_timers(self.timeouts.header_read));
        let worker = Arc::new(Worker {
            stack: self.stack(upstream::client(&self.timeouts, &self.upstream)),
            proxy: self,
            index,
        });
        let mut builder = http1::Builder::new();
        builder
            // The worker's own table of head deadlines, swept by `sweep_head_timers`.
            .timer(HeadTimer)
            .header_read_timeout(worker.proxy.timeouts.header_read)
            // A request head larger than this is answered `431`; it also caps the read
            // buffer (hyper's own cap is about 400 KiB), so a slowloris head costs at most this.
            .max_buf_size(MAX_HEAD)
            .keep_alive(true)
            // One buffer per flush instead of a queue of slices: the upstream client already
            // hands over whole bursts as one frame, so the copy is small and the write is still
            // one system call; 1 % fewer instructions per proxied request (docs/performance.md).
            .writev(false);
        let accept_errors = worker
            .proxy
            .metrics
            .connections_rejected
            .with_label_values(&["accept_error"]);
        let options = accept_loop::Options {
            name: "proxy",
            grace,
        };
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        accept_loop::serve(
            listener,
            options,
            stop,
            |_| accept_errors.inc(),
            |stream, peer, drain| worker.connection(&builder, stream, peer, drain),
        )
        .await;
    }
}

/// Fires the worker's passed header-read deadlines ([`HeadTimer`]) every half `header_read`,
/// at least every second: a head gets between `header_read` and one period more.
///
/// Its interval is also always the earliest timer of the worker's runtime, so a tokio timer a
/// request arms later (a request body's idle timeout) never makes tokio wake its own driver
/// through an eventfd (docs/performance.md: the timer anchor this task grew out of).
async fn sweep_head_timers(header_read: Duration) {
    let period = (header_read / 2).clamp(Duration::from_millis(1), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        head_timer::sweep(std::time::Instant::now());
    }
}

/// The connection's stack as a hyper service, called in place.
///
/// hyper-util's `TowerToHyperService` clones the whole stack for every request (hyper calls
/// through `&self`, tower through `&mut self`) and drops the clone after it: a dozen `Arc`
/// increments and decrements and the copies of the stack per request. hyper serves one
/// connection's requests one after another, so the connection's own stack is borrowed instead.
/// Every layer is ready at once (the upstream client always is); should one ever not be, that
/// request falls back to a ready clone, as before.
struct ConnService {
    stack: std::cell::RefCell<ClientIp<super::Stack>>,
}

impl<B> hyper::service::Service<http::Request<B>> for ConnService
where
    ClientIp<super::Stack>: Service<http::Request<B>>,
{
    type Response = <ClientIp<super::Stack> as Service<http::Request<B>>>::Response;
    type Error = <ClientIp<super::Stack> as Service<http::Request<B>>>::Error;
    type Future = futures_util::future::Either<
        <ClientIp<super::Stack> as Service<http::Request<B>>>::Future,
        tower::util::Oneshot<ClientIp<super::Stack>, http::Request<B>>,
    >;

    fn call(&self, req: http::Request<B>) -> Self::Future {
        // hyper never calls a connection's service from within that call: the borrow is free.
        let mut stack = self.stack.borrow_mut();
        let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
        match stack.poll_ready(&mut cx) {
            std::task::Poll::Ready(Ok(())) => futures_util::future::Either::Left(stack.call(req)),
            _ => futures_util::future::Either::Right(stack.clone().oneshot(req)),
        }
    }
}

impl Worker {
    /// Admits a connection (or answers it `503`) and returns its task: hyper serving the
    /// connection-bound client-IP layer on top of the worker's stack (see `Proxy::stack`),
    /// after the TLS handshake when the listener speaks TLS. The limits apply before the
    /// handshake, so connections stalled in it count against them too.
    fn connection(
        &self,
        builder: &http1::Builder,
        stream: TcpStream,
        peer: SocketAddr,
        drain: &GracefulShutdown,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let proxy = &self.proxy;
        let ip = crate::ip::canonical(peer.ip());
        let exempt = limits::is_trusted(ip, &proxy.trusted.load());
        let permit = match proxy.limits.admit(ip, exempt) {
            Ok(p) => p,
            Err(why) => {
                static WARN: Throttle = Throttle::new(Duration::from_secs(10));
                if let Some(repeats) = WARN.allow() {
                    tracing::warn!(%peer, limit = why.label(), repeats, "connection limit reached; answering 503");
                }
                if proxy.tls.is_some() {
                    // A plaintext 503 is unreadable to a TLS client, and a handshake only to
                    // refuse would spend CPU exactly when the proxy is overloaded: close.
                    drop(stream);
                } else {
                    proxy.limits.reject(stream);
                }
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        super::send_idle::limit_unsent(&stream);
        let service = ConnService {
            stack: std::cell::RefCell::new(
                ClientIpLayer::new(peer, proxy.trusted.clone()).layer(self.stack.clone()),
            ),
        };
        let watcher = drain.watcher();
        let builder = builder.clone();
        let proxy = proxy.clone();
        // Records of this connection's requests run after each poll of it, that is after
        // hyper wrote their responses (see `super::deferred`).
        let records = proxy.records.clone();
        let send_idle = proxy.timeouts.send_idle;
        // Boxed here, once: the connection's future (hyper's codec state, both the plain and
        // the TLS variant) is kilobytes, and every move on its way into the task (the accept
        // loop, `JoinSet::spawn`, tokio's task cell and its stage changes) would copy it whole.
        Some(records.scope(
            self.index,
            Box::pin(async move {
                let result = match &proxy.tls {
                    None => {
                        let stream = SendIdle::new(stream, send_idle);
                        watcher
                            .watch(builder.serve_connection(TokioIo::new(stream), service))
                            .await
                    }
                    Some(tls) => match tls.accept(stream, proxy.timeouts.header_read).await {
                        Some(stream) => {
                            let stream = SendIdle::new(stream, send_idle);
                            watcher
                                .watch(builder.serve_connection(TokioIo::new(stream), service))
                                .await
                        }
                        None => Ok(()),
                    },
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
                drop(permit);
            }),
        ))
    }
}
