//! The response body, read from the upstream socket by whoever polls it.
//!
//! Each poll decodes what the connection's buffer holds, then reads the socket until it would
//! block (or [`MAX_FRAME`] bytes are held), and returns everything as one frame: a burst of
//! NDJSON lines the upstream wrote together leaves in one write, and a frame that arrived
//! alone is returned at once — there is nothing to wait for, the socket said so. When the body
//! is complete the connection returns to the pool; dropped early, it is closed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio_util::io::poll_read_buf;

use super::pool::{Conn, Pool};
use super::wire::{BodyKind, Chunked, Held, WireError};

/// Largest frame handed on: beyond it, what is held is returned.
pub(crate) const MAX_FRAME: usize = 64 * 1024;
/// Room made in the read buffer before each read.
const READ_ROOM: usize = 8 * 1024;

/// A response body that broke off.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// Reading the upstream connection failed.
    #[error("upstream connection error: {0}")]
    Io(#[source] io::Error),
    /// The upstream closed the connection before the body was complete.
    #[error("upstream closed the connection before the response body was complete")]
    Closed,
    /// The body's framing is broken.
    #[error(transparent)]
    Wire(#[from] WireError),
}

#[derive(Debug)]
enum Decode {
    /// This many bytes left.
    Length(u64),
    Chunked(Chunked),
    /// Until the upstream closes.
    Close,
    Done,
}

/// The upstream's response body (see the module docs).
pub(crate) struct UpstreamBody {
    conn: Option<Conn>,
    decode: Decode,
    /// The connection may carry another request once the body is complete.
    keep_alive: bool,
    pool: Option<Arc<Pool>>,
    /// An error met after data that was returned first.
    failed: Option<BodyError>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("decode", &self.decode)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// The body of `kind` read from `conn`, which returns to `pool` when the body is
    /// complete and `keep_alive` holds.
    pub(crate) fn new(conn: Conn, kind: BodyKind, keep_alive: bool, pool: Arc<Pool>) -> Self {
        let decode = match kind {
            BodyKind::Empty | BodyKind::Length(0) => Decode::Done,
            BodyKind::Length(n) => Decode::Length(n),
            BodyKind::Chunked => Decode::Chunked(Chunked::default()),
            BodyKind::Close => Decode::Close,
        };
        let mut body = UpstreamBody {
            conn: Some(conn),
            decode,
            keep_alive,
            pool: Some(pool),
            failed: None,
        };
        if matches!(body.decode, Decode::Done) {
            body.release();
        }
        body
    }

    /// The body is complete: the connection goes back to the pool if it may.
    fn release(&mut self) {
        self.decode = Decode::Done;
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.take()) {
            if self.keep_alive {
                pool.put(conn);
            }
        }
    }

    /// Moves what the buffer holds of the body into `out`; `true` when the body is complete.
    fn drain(&mut self, out: &mut Held) -> Result<bool, BodyError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(true);
        };
        let buf = &mut conn.buf;
        match &mut self.decode {
            Decode::Done => Ok(true),
            Decode::Length(left) => {
                let room = MAX_FRAME.saturating_sub(out.len());
                let take = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(buf.len())
                    .min(room);
                out.push_from(buf, take);
                *left -= take as u64;
                Ok(*left == 0)
            }
            Decode::Chunked(c) => {
                c.decode(buf, out, MAX_FRAME)?;
                Ok(c.is_done())
            }
            Decode::Close => {
                let room = MAX_FRAME.saturating_sub(out.len());
                out.push_from(buf, buf.len().min(room));
                Ok(false)
            }
        }
    }

    fn frame(data: Option<Bytes>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Poll::Ready(data.map(|d| Ok(Frame::data(d))))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let mut out = Held::Nothing;
        loop {
            match this.drain(&mut out) {
                Ok(true) => {
                    this.release();
                    return Self::frame(out.take());
                }
                Ok(false) => {}
                Err(e) => return this.fail(out, e),
            }
            if out.len() >= MAX_FRAME {
                return Self::frame(out.take());
            }
            let Some(conn) = this.conn.as_mut() else {
                return Self::frame(out.take());
            };
            conn.buf.reserve(READ_ROOM);
            match poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                Poll::Ready(Ok(0)) => {
                    if matches!(this.decode, Decode::Close) {
                        this.keep_alive = false;
                        this.release();
                        return Self::frame(out.take());
                    }
                    return this.fail(out, BodyError::Closed);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(out, BodyError::Io(e)),
                Poll::Pending if out.is_empty() => return Poll::Pending,
                Poll::Pending => return Self::frame(out.take()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decode, Decode::Done) && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Done => SizeHint::with_exact(0),
            Decode::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl UpstreamBody {
    /// The connection is unusable: it is closed; data already taken is returned first.
    fn fail(
        &mut self,
        mut out: Held,
        e: BodyError,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.conn = None;
        self.pool = None;
        self.keep_alive = false;
        self.decode = Decode::Done;
        match out.take() {
            Some(data) => {
                self.failed = Some(e);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            None => Poll::Ready(Some(Err(e))),
        }
    }
}
