//! A worker's idle upstream connections, and new ones made when none is idle.

use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ExchangeError;

/// Read buffer of a new connection; it grows for larger heads and bursts.
const READ_BUF: usize = 8 * 1024;

/// An upstream connection and the bytes read from it but not yet used.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) io: TcpStream,
    pub(crate) buf: BytesMut,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The pool of one worker. Connections are registered with that worker's runtime, so a pool
/// is never shared between workers.
pub(crate) struct Pool {
    /// `host:port` of the upstream, resolved at each connect.
    authority: String,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    /// Most recently used last (taken first: its socket and buffers are warm).
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    pub(crate) fn new(
        authority: String,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            authority,
            connect_timeout,
            idle_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// An idle connection that is still open, if there is one.
    ///
    /// An idle connection has nothing to read: if its socket became readable, the upstream
    /// closed it (or sent bytes nobody asked for) and it is dropped. The readiness tokio
    /// already holds is consulted first, so the common case costs no system call.
    pub(crate) fn checkout(&self) -> Option<Conn> {
        let now = Instant::now();
        loop {
            let idle = self.lock().pop()?;
            if now.duration_since(idle.since) >= self.idle_timeout {
                continue;
            }
            let conn = idle.conn;
            let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
            match conn.io.poll_read_ready(&mut cx) {
                Poll::Pending => return Some(conn),
                Poll::Ready(Err(_)) => continue,
                Poll::Ready(Ok(())) => {
                    // Readiness may be left over from the last read: ask the socket.
                    let mut probe = [0u8; 1];
                    match conn.io.try_read(&mut probe) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(conn),
                        _ => continue,
                    }
                }
            }
        }
    }

    /// Keeps `conn` for the next request (or closes it when the pool is full or it holds
    /// unread bytes, which no request asked for).
    pub(crate) fn put(&self, conn: Conn) {
        if !conn.buf.is_empty() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// A new connection to the upstream (`TCP_NODELAY`), within the connect timeout.
    pub(crate) async fn connect(&self) -> Result<Conn, ExchangeError> {
        let dial = async {
            let mut last = None;
            for addr in tokio::net::lookup_host(self.authority.as_str())
                .await
                .map_err(ExchangeError::Connect)?
            {
                match TcpStream::connect(addr).await {
                    Ok(io) => return Ok(io),
                    Err(e) => last = Some(e),
                }
            }
            Err(ExchangeError::Connect(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "the upstream name has no address")
            })))
        };
        let io = tokio::time::timeout(self.connect_timeout, dial)
            .await
            .map_err(|_| ExchangeError::ConnectTimeout(self.connect_timeout))??;
        io.set_nodelay(true).map_err(ExchangeError::Connect)?;
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_BUF),
        })
    }

    /// Closes the connections idle for `idle_timeout` or longer.
    fn sweep(&self) {
        let now = Instant::now();
        self.lock()
            .retain(|i| now.duration_since(i.since) < self.idle_timeout);
    }

    /// Idle connections held now.
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding the lock leaves a valid Vec: keep using it.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Closes idle connections once they have been unused for `idle_timeout`, checking every
/// half of it (at least every second, at most every minute); ends with the pool.
pub(crate) fn spawn_sweeper(pool: &Arc<Pool>) {
    let weak: Weak<Pool> = Arc::downgrade(pool);
    let period = (pool.idle_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(pool) => pool.sweep(),
                None => return,
            }
        }
    });
}
