//! Coalescing of response frames that are already there.
//!
//! hyper's client hands a response body over from the upstream connection's task one frame at
//! a time (a one-slot channel: the next frame is decoded only after the previous one was
//! taken). Polled naively, every NDJSON frame of a burst the upstream wrote in one segment
//! becomes its own `writev` to the client — 20 frames, 20 system calls — while nginx, reading
//! the socket itself, forwards the burst in one.
//!
//! [`Coalesce`] takes a frame and, when the next one is not ready yet, lets the upstream task
//! run once before deciding: it spawns a tiny task that wakes it, which this worker's
//! scheduler runs after the connection task the take just woke (a plain self-wake is not
//! enough: hyper polls a body again at once, within the same turn, when its write is ready). If that produced another frame, it is
//! appended and the same is tried again; if it produced nothing, what is held is returned at
//! once. A lone frame thus waits for one turn of the worker's scheduler — no timer, no
//! syscall of its own — and a burst goes out as one frame, up to [`MAX_BYTES`]. A body whose
//! length is used up (`Content-Length`) is returned without the turn, so a one-frame answer
//! still leaves with its head in one write. Trailers, the end and errors are never merged:
//! what is held goes first, then they follow unchanged.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// Largest coalesced frame: beyond it, what is held is written.
pub(crate) const MAX_BYTES: usize = 64 * 1024;

/// What followed the held data and must be delivered after it.
enum Next<E> {
    Trailers(HeaderMap),
    Error(E),
    End,
}

pin_project! {
    /// `inner` with frames that are already available written together.
    pub(crate) struct Coalesce<B: Body> {
        #[pin]
        inner: B,
        held: Held,
        next: Option<Next<B::Error>>,
        // Set by a task spawned behind the upstream connection's task: the worker has given
        // that task its turn since the last frame arrived (`None`: no turn asked for).
        turn: Option<Arc<AtomicBool>>,
    }
}

/// Data taken but not yet returned: one frame as it came (no copy), or several appended.
#[derive(Default)]
enum Held {
    #[default]
    Nothing,
    One(Bytes),
    Many(BytesMut),
}

impl Held {
    fn len(&self) -> usize {
        match self {
            Held::Nothing => 0,
            Held::One(b) => b.len(),
            Held::Many(b) => b.len(),
        }
    }

    fn push(&mut self, data: Bytes) {
        *self = match std::mem::take(self) {
            Held::Nothing => Held::One(data),
            Held::One(first) => {
                let mut buf = BytesMut::with_capacity((first.len() + data.len()).max(4096));
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&data);
                Held::Many(buf)
            }
            Held::Many(mut buf) => {
                buf.extend_from_slice(&data);
                Held::Many(buf)
            }
        };
    }

    fn take(&mut self) -> Option<Bytes> {
        match std::mem::take(self) {
            Held::Nothing => None,
            Held::One(b) => Some(b),
            Held::Many(b) => Some(b.freeze()),
        }
    }
}

impl<B: Body> Coalesce<B> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: B) -> Self {
        Coalesce {
            inner,
            held: Held::Nothing,
            next: None,
            turn: None,
        }
    }
}

impl<B> Body for Coalesce<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        if let Some(next) = this.next.take() {
            return Poll::Ready(match next {
                Next::Trailers(t) => Some(Ok(Frame::trailers(t))),
                Next::Error(e) => Some(Err(e)),
                Next::End => None,
            });
        }
        loop {
            let polled = this.inner.as_mut().poll_frame(cx);
            let follow = match polled {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        *this.turn = None;
                        let data = data.copy_to_bytes(data.remaining());
                        if data.is_empty() {
                            continue;
                        }
                        this.held.push(data);
                        // A body whose length is used up (Content-Length) has nothing more to
                        // wait for: a one-frame response goes out with its head, as before.
                        if this.held.len() >= MAX_BYTES || this.inner.is_end_stream() {
                            return Poll::Ready(this.held.take().map(|b| Ok(Frame::data(b))));
                        }
                        continue;
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(t) => Next::Trailers(t),
                        // Neither data nor trailers: no such frame exists in http-body 1.
                        Err(_) => continue,
                    },
                },
                Poll::Ready(Some(Err(e))) => Next::Error(e),
                Poll::Ready(None) => Next::End,
                Poll::Pending => {
                    if matches!(this.held, Held::Nothing) {
                        return Poll::Pending;
                    }
                    match this.turn {
                        None => {
                            // Let the upstream connection's task (woken when the last frame
                            // was taken, so ahead in this worker's queue) hand over what it
                            // already has: a task spawned now runs after it and wakes us.
                            // hyper may poll again before that: we stay pending until then.
                            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                                return Poll::Ready(this.held.take().map(|b| Ok(Frame::data(b))));
                            };
                            let flag = Arc::new(AtomicBool::new(false));
                            let (done, waker) = (flag.clone(), cx.waker().clone());
                            rt.spawn(async move {
                                done.store(true, Ordering::Release);
                                waker.wake();
                            });
                            *this.turn = Some(flag);
                            return Poll::Pending;
                        }
                        Some(flag) if !flag.load(Ordering::Acquire) => return Poll::Pending,
                        Some(_) => {
                            *this.turn = None;
                            return Poll::Ready(this.held.take().map(|b| Ok(Frame::data(b))));
                        }
                    }
                }
            };
            return Poll::Ready(match this.held.take() {
                Some(data) => {
                    *this.next = Some(follow);
                    Some(Ok(Frame::data(data)))
                }
                None => match follow {
                    Next::Trailers(t) => Some(Ok(Frame::trailers(t))),
                    Next::Error(e) => Some(Err(e)),
                    Next::End => None,
                },
            });
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.held, Held::Nothing)
            && match &self.next {
                None => self.inner.is_end_stream(),
                Some(Next::End) => true,
                Some(_) => false,
            }
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.held.len() as u64;
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(held));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint
    }
}

#[cfg(test)]
mod tests;
