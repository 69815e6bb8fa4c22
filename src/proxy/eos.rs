//! A body that calls back exactly once when its stream is over — however it ends.
//!
//! Modelled on linkerd2-proxy's `BodyWithEosFn`. hyper does not always poll a body to its
//! end: it stops at `Content-Length`, never polls a body that is empty from the start (HEAD,
//! 204, 304), and drops a body whose client went away. So the callback fires on the first
//! of: the end of the stream, an error frame, `is_end_stream()` turning true after a frame,
//! or `Drop`. It knows nothing of records or metrics: what happens at the end is the
//! callback's business ([`OnEos`]), which keeps this wrapper reusable and separately tested.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

/// How a body's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The last frame was delivered (or the body was empty and needed no polling).
    Complete,
    /// The inner body yielded an error.
    Error,
    /// The body was dropped before its end: the client went away.
    Dropped,
}

/// What the callback learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Eos {
    /// How the stream ended.
    pub(crate) end: End,
    /// When the first non-empty data frame passed, if one did.
    pub(crate) first_byte: Option<Instant>,
    /// Data bytes that passed (0 for a body hyper never polls: HEAD, 204, 304).
    pub(crate) bytes: u64,
    /// When the stream ended, if the clock was read then anyway: the frame that carried the
    /// first byte was also the last (most responses), and its time is the end's too. `None`
    /// otherwise (the callback reads the clock itself).
    pub(crate) ended_at: Option<Instant>,
}

/// The end-of-stream callback. Implemented by closures and by named types (a named type
/// keeps the body type nameable, so the proxy's service stack stays a concrete type).
pub(crate) trait OnEos {
    /// Called exactly once.
    fn on_eos(self, eos: Eos);
}

impl<F: FnOnce(Eos)> OnEos for F {
    fn on_eos(self, eos: Eos) {
        self(eos)
    }
}

pin_project! {
    /// `inner`, calling `on_eos` once when it is over.
    pub(crate) struct EosBody<B, F: OnEos> {
        #[pin]
        inner: B,
        on_eos: Option<F>,
        first_byte: Option<Instant>,
        bytes: u64,
        // hyper never polls a body that is empty from the start: dropping it is its end.
        empty_at_start: bool,
    }

    impl<B, F: OnEos> PinnedDrop for EosBody<B, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.on_eos.take() {
                let end = if *this.empty_at_start { End::Complete } else { End::Dropped };
                f.on_eos(Eos {
                    end,
                    first_byte: *this.first_byte,
                    bytes: *this.bytes,
                    ended_at: None,
                });
            }
        }
    }
}

impl<B: Body, F: OnEos> EosBody<B, F> {
    /// Wraps `inner`; `on_eos` = `None` makes a plain pass-through.
    pub(crate) fn new(inner: B, on_eos: Option<F>) -> Self {
        let empty_at_start = inner.is_end_stream();
        EosBody {
            inner,
            on_eos,
            first_byte: None,
            bytes: 0,
            empty_at_start,
        }
    }

    /// Treats a drop before any polling as the normal end (HEAD, 1xx, 204, 304 responses,
    /// whose bodies hyper never sends).
    pub(crate) fn bodiless(mut self, yes: bool) -> Self {
        self.empty_at_start |= yes;
        self
    }
}

impl<B: Body, F: OnEos> Body for EosBody<B, F> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let mut now = None;
        let end = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, bytes::Buf::remaining);
                if this.first_byte.is_none() && n > 0 {
                    now = Some(Instant::now());
                    *this.first_byte = now;
                }
                *this.bytes = this
                    .bytes
                    .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
                this.inner.is_end_stream().then_some(End::Complete)
            }
            Poll::Ready(Some(Err(_))) => Some(End::Error),
            Poll::Ready(None) => Some(End::Complete),
            Poll::Pending => None,
        };
        if let Some(end) = end {
            if let Some(f) = this.on_eos.take() {
                f.on_eos(Eos {
                    end,
                    first_byte: *this.first_byte,
                    bytes: *this.bytes,
                    ended_at: now,
                });
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};

    use super::*;

    fn recorder() -> (Arc<Mutex<Vec<Eos>>>, impl FnOnce(Eos) + Clone) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (seen, move |e| s.lock().unwrap().push(e))
    }

    #[tokio::test]
    async fn fires_once_at_content_length_without_polling_to_none() {
        let (seen, f) = recorder();
        let mut b = EosBody::new(Full::new(Bytes::from_static(b"abc")), Some(f));
        let frame = b.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"abc"));
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].end, End::Complete);
        assert!(got[0].first_byte.is_some());
        drop(b);
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "drop after the end fires nothing"
        );
    }

    /// A body that never yields: a stream still running when it is dropped.
    struct Never;

    impl Body for Never {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn drop_before_the_end_is_dropped_and_empty_bodies_are_complete() {
        let (seen, f) = recorder();
        drop(EosBody::new(Never, Some(f.clone())));
        drop(EosBody::new(Empty::<Bytes>::new(), Some(f.clone())));
        drop(EosBody::new(Full::new(Bytes::from_static(b"x")), Some(f)).bodiless(true));
        let ends: Vec<End> = seen.lock().unwrap().iter().map(|e| e.end).collect();
        assert_eq!(ends, [End::Dropped, End::Complete, End::Complete]);
    }

    /// Yields `frames` then an error, or the end.
    struct Frames(Vec<Result<Frame<Bytes>, std::io::Error>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready((!self.0.is_empty()).then(|| self.0.remove(0)))
        }
    }

    fn data(n: usize) -> Result<Frame<Bytes>, std::io::Error> {
        Ok(Frame::data(Bytes::from(vec![b'x'; n])))
    }

    #[tokio::test]
    async fn counts_the_data_bytes_that_passed_however_the_body_ends() {
        let (seen, f) = recorder();
        let b = EosBody::new(Frames(vec![data(100), data(0), data(28)]), Some(f.clone()));
        let _ = b.collect().await.unwrap();
        let err = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let mut b = EosBody::new(Frames(vec![data(7), Err(err), data(9)]), Some(f.clone()));
        while let Some(Ok(_)) = b.frame().await {}
        drop(b);
        let mut b = EosBody::new(Frames(vec![data(5), data(6)]), Some(f.clone()));
        let _ = b.frame().await;
        drop(b);
        drop(EosBody::new(Full::new(Bytes::from_static(b"head")), Some(f)).bodiless(true));
        let got: Vec<(End, u64)> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|e| (e.end, e.bytes))
            .collect();
        assert_eq!(
            got,
            [
                (End::Complete, 128),
                (End::Error, 7),
                (End::Dropped, 5),
                (End::Complete, 0)
            ]
        );
    }

    /// The end's time is the first byte's only when one frame was both: a later end, an
    /// error or a drop leaves the callback to read the clock.
    #[tokio::test(start_paused = true)]
    async fn the_end_shares_the_first_bytes_time_only_when_one_frame_was_both() {
        let (seen, f) = recorder();
        let mut b = EosBody::new(Full::new(Bytes::from_static(b"abc")), Some(f.clone()));
        let _ = b.frame().await;
        let mut b = EosBody::new(Frames(vec![data(3), data(4)]), Some(f.clone()));
        let _ = b.frame().await;
        tokio::time::advance(std::time::Duration::from_millis(5)).await;
        while b.frame().await.is_some() {}
        let err = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let mut b = EosBody::new(Frames(vec![data(2), Err(err)]), Some(f.clone()));
        while let Some(Ok(_)) = b.frame().await {}
        let mut b = EosBody::new(Frames(vec![data(1), data(1)]), Some(f));
        let _ = b.frame().await;
        drop(b);
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.len(), 4);
        assert!(got[0].first_byte.is_some());
        assert_eq!(got[0].ended_at, got[0].first_byte);
        for e in &got[1..] {
            assert!(e.first_byte.is_some());
            assert_eq!(e.ended_at, None, "{:?}", e.end);
        }
    }
}
