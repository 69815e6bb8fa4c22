//! `timeouts.send_idle`: a client connection whose writes make no progress for that long is
//! closed (nginx's `send_timeout`).
//!
//! A client that stops reading a response (an NDJSON stream, a large `/api/show`) fills its
//! socket buffers, and the write to it then waits. Nothing else ends that wait: there is
//! deliberately no total timeout (generations run for hours), and `header_read` and
//! `body_idle` are about what the client sends. Such a connection holds its upstream
//! connection and, with Ollama, its generation slot, whose blocked write stalls the
//! generation: `OLLAMA_NUM_PARALLEL` such clients would freeze every generation for everyone.
//!
//! The deadline is per connection and measures the time since the last write that made
//! progress, not the response's length. It costs nothing while writes complete at once; the
//! timer is created the first time a write has to wait, and reset (not re-created) after.
//!
//! A write "makes progress" when the kernel takes bytes, which it does only once the socket is
//! writable again. By default Linux reports a TCP socket writable only when a third of its
//! send buffer is free, and that buffer grows to megabytes: a client reading a few kilobytes a
//! second would have to read a megabyte between two writes, and would be cut though it never
//! stopped. So client sockets get `TCP_NOTSENT_LOWAT` ([`limit_unsent`]): the kernel keeps at
//! most [`UNSENT`] bytes that it has not sent yet, and reports the socket writable when fewer
//! than half of them are left. A client that reads opens its receive window, the kernel sends,
//! and the write goes on: a reader of any pace that frees one segment's worth of its receive
//! buffer within `send_idle` (64 KiB on loopback, 1.5 KiB on an Ethernet path) is never cut.
//! It also bounds what a stalled client holds in the kernel to a receive window plus
//! [`UNSENT`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pin_project_lite::pin_project! {
    /// A client stream whose writes fail with [`io::ErrorKind::TimedOut`] once they have made
    /// no progress for `idle`; reads pass through.
    pub(crate) struct SendIdle<S> {
        #[pin]
        inner: S,
        idle: Duration,
        // Boxed and created on the first write that waits: most connections never need it.
        timer: Option<Pin<Box<Sleep>>>,
        // Whether `timer` runs for the write waiting now.
        armed: bool,
    }
}

/// The most bytes a client socket holds that the kernel has not sent yet (see the module
/// documentation): below one loopback segment (64 KiB) twice over, so that one window update
/// of a slow reader wakes the writer.
pub(crate) const UNSENT: u32 = 32 * 1024;

/// Sets `TCP_NOTSENT_LOWAT` to [`UNSENT`] on a client socket (Linux; elsewhere a no-op). A
/// failure leaves the kernel's default: only slow readers would be cut sooner.
pub(crate) fn limit_unsent(stream: &tokio::net::TcpStream) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(stream).set_tcp_notsent_lowat(UNSENT);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

impl<S> SendIdle<S> {
    /// `inner`, whose writes may wait at most `idle` for progress.
    pub(crate) fn new(inner: S, idle: Duration) -> Self {
        SendIdle {
            inner,
            idle,
            timer: None,
            armed: false,
        }
    }
}

/// What a write did: progress disarms the deadline; a wait arms it (once) and fails the
/// write when it has passed.
fn after<T>(
    polled: Poll<io::Result<T>>,
    cx: &mut Context<'_>,
    idle: Duration,
    timer: &mut Option<Pin<Box<Sleep>>>,
    armed: &mut bool,
) -> Poll<io::Result<T>> {
    if polled.is_ready() {
        *armed = false;
        return polled;
    }
    // The clock is read only when the wait starts, not at every wake-up during it.
    let sleep = match timer {
        Some(sleep) if *armed => sleep,
        Some(sleep) => {
            sleep.as_mut().reset(Instant::now() + idle);
            sleep
        }
        None => timer.insert(Box::pin(tokio::time::sleep(idle))),
    };
    *armed = true;
    match sleep.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing for timeouts.send_idle",
        ))),
        Poll::Pending => Poll::Pending,
    }
}

impl<S: AsyncRead> AsyncRead for SendIdle<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for SendIdle<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        after(polled, cx, *this.idle, this.timer, this.armed)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        after(polled, cx, *this.idle, this.timer, this.armed)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_flush(cx);
        after(polled, cx, *this.idle, this.timer, this.armed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_shutdown(cx);
        after(polled, cx, *this.idle, this.timer, this.armed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_longer_than_the_deadline_fails_timed_out() {
        let (client, server) = tokio::io::duplex(1024);
        let mut w = SendIdle::new(server, Duration::from_secs(60));
        let started = Instant::now();
        let err = w.write_all(&[7u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // The first 1 024 bytes went at once; then nothing for exactly the deadline.
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_keeps_reading_slowly_never_trips_it() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut w = SendIdle::new(server, Duration::from_secs(60));
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 512];
            // 512 bytes every 50 s: slower than the writer, never 60 s without progress.
            while got < 64 * 1024 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                got += client.read(&mut buf).await.unwrap();
            }
            got
        });
        let started = Instant::now();
        w.write_all(&vec![1u8; 63 * 1024]).await.unwrap();
        w.flush().await.unwrap();
        assert!(started.elapsed() > Duration::from_secs(60 * 60));
        w.write_all(&[1u8; 1024]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 64 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_the_last_progress_not_the_first_wait() {
        let (mut client, server) = tokio::io::duplex(16);
        let mut w = SendIdle::new(server, Duration::from_secs(60));
        let writer = tokio::spawn(async move { w.write_all(&[9u8; 64]).await });
        // 16 bytes read at 59 s and at 118 s: each read is progress; then the reader stops.
        let mut buf = [0u8; 16];
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_secs(59)).await;
            assert_eq!(client.read(&mut buf).await.unwrap(), 16);
        }
        let started = Instant::now();
        let err = writer.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        // What was written before stays readable: 16 bytes, then the end.
        assert_eq!(client.read(&mut buf).await.unwrap(), 16);
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    }
}
