//! The accept loop every listener of the workspace runs: ollama-guard's proxy workers and
//! admin listener, and the Ollama simulator.
//!
//! It accepts until told to stop, hands each connection to the caller (who may refuse it:
//! connection limits), owns the connection tasks so they can be drained, backs off when
//! accept fails (out of file descriptors: 10 ms doubling to 1 s, one warning per 10 s with the
//! number of repeats, instead of spinning and flooding the log), and on shutdown stops
//! accepting, lets connections finish for up to a grace period (hyper's graceful shutdown:
//! idle keep-alive connections close at once), then aborts and awaits the rest — so every
//! response body's `Drop` has run when it returns.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How a loop behaves.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The listener's name in warnings (`proxy`, `admin`, `simulator`).
    pub name: &'static str,
    /// How long open connections may finish after the stop; then they are aborted.
    pub grace: Duration,
}

/// Runs the loop until `shutdown` resolves, then drains.
///
/// `connection` gets each accepted stream, its peer, and the drain handle to `watch` its
/// hyper connection with; it returns the connection's task, or `None` when it dealt with the
/// stream itself (a refusal). `on_error` sees every failed accept (to count it).
pub async fn serve<C, Fut>(
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()>,
    mut on_error: impl FnMut(&io::Error),
    mut connection: C,
) where
    C: FnMut(TcpStream, SocketAddr, &GracefulShutdown) -> Option<Fut>,
    Fut: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    let mut backoff = Backoff::new(options.name);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff.reset();
                    if let Some(task) = connection(stream, peer, &graceful) {
                        tasks.spawn(task);
                    }
                }
                Err(e) => {
                    on_error(&e);
                    backoff.wait(&e).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!(listener = options.name, "drained"),
        () = tokio::time::sleep(options.grace) => {
            if !tasks.is_empty() {
                tracing::warn!(listener = options.name, grace = ?options.grace, "grace period over; closing remaining connections");
            }
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// Back-off of a failing accept loop.
#[derive(Debug)]
pub struct Backoff {
    name: &'static str,
    delay: Duration,
    last_warning: Option<Instant>,
    repeats: u64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);
    const WARN_EVERY: Duration = Duration::from_secs(10);

    /// A back-off for the listener `name`.
    pub fn new(name: &'static str) -> Self {
        Backoff {
            name,
            delay: Duration::ZERO,
            last_warning: None,
            repeats: 0,
        }
    }

    /// A connection was accepted: the next failure starts over.
    pub fn reset(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// The wait after `e`: none for a connection aborted before it was accepted (not a
    /// resource problem), else 10 ms doubling to 1 s.
    pub fn next_delay(&mut self, e: &io::Error) -> Duration {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
        ) {
            return Duration::ZERO;
        }
        self.delay = (self.delay * 2).clamp(Self::FIRST, Self::MAX);
        self.delay
    }

    /// Waits after a failed accept, warning at most once per 10 s.
    pub async fn wait(&mut self, e: &io::Error) {
        let delay = self.next_delay(e);
        if delay.is_zero() {
            return;
        }
        let now = Instant::now();
        match self.last_warning {
            Some(t) if now.duration_since(t) < Self::WARN_EVERY => self.repeats += 1,
            _ => {
                tracing::warn!(listener = self.name, error = %e, retry_in = ?delay, repeats = self.repeats, "accept failed (out of file descriptors?); backing off");
                self.last_warning = Some(now);
                self.repeats = 0;
            }
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    #[test]
    fn backoff_doubles_to_one_second_and_ignores_aborted_connections() {
        let mut b = Backoff::new("t");
        let emfile = io::Error::from_raw_os_error(24);
        let delays: Vec<u64> = (0..9)
            .map(|_| b.next_delay(&emfile).as_millis() as u64)
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(b.next_delay(&aborted), Duration::ZERO);
        b.reset();
        assert_eq!(b.next_delay(&emfile), Duration::from_millis(10));
    }

    #[tokio::test]
    async fn serves_connections_refuses_when_told_and_drains_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let mut n = 0;
        let server = tokio::spawn(serve(
            listener,
            Options {
                name: "test",
                grace: Duration::from_secs(5),
            },
            async {
                let _ = stopped.await;
            },
            |_| {},
            move |mut s: TcpStream, _peer, _drain: &GracefulShutdown| {
                n += 1;
                if n == 2 {
                    return None; // refused: the stream is dropped
                }
                Some(async move {
                    let _ = s.write_all(b"hi").await;
                })
            },
        ));
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        first.read_to_end(&mut buf).await.unwrap();
        assert_eq!(buf, b"hi");
        let mut second = TcpStream::connect(addr).await.unwrap();
        buf.clear();
        second.read_to_end(&mut buf).await.unwrap();
        assert!(buf.is_empty(), "refused connections are closed");
        stop.send(()).unwrap();
        server.await.unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer listening"
        );
    }
}
