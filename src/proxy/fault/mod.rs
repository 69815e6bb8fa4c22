//! Which side a failed exchange is the fault of, in the style of pingora's error sources.
//!
//! A forwarded request can fail because the *client* sent a malformed body, stopped sending
//! it, or went away mid-upload, or because the *upstream* refused, timed out or broke the
//! connection. hyper-util reports both the same way (an error of the upstream exchange), so
//! the client's request body is wrapped in [`ClientBody`], whose errors are a type of their
//! own ([`ClientBodyError`]) and which notes the fault in a shared [`FaultCell`]. The
//! classifier finds that type in the error's source chain — typed matching, never the
//! `Debug` text — and the response body consults the cell when the upstream stream breaks
//! afterwards. Client faults answer 400/408 (or nothing, when the client is gone) and never
//! touch an upstream counter; upstream faults keep 502 and their `kind`.

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::telemetry::UpstreamErrorKind;

/// What the client did wrong while its request body was being forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFault {
    /// The body's framing was invalid (bad chunk size, bad chunk terminator): `400`.
    Malformed,
    /// The client closed or reset the connection before the body was complete.
    Aborted,
    /// The body stalled longer than `timeouts.body_idle`: `408`.
    Idle,
}

/// The origin of a failed exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The downstream client caused it.
    Client(ClientFault),
    /// The upstream caused it.
    Upstream(UpstreamErrorKind),
}

/// The error type of any request body (hyper's, in production).
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// An error of the client's request body, as the upstream client sees it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientBodyError {
    /// Reading the body from the client failed.
    #[error("client request body: {0}")]
    Read(#[source] BoxError),
    /// No body bytes arrived for this long.
    #[error("client request body idle for {0:?}")]
    Idle(Duration),
}

impl ClientBodyError {
    /// The fault this error is.
    pub(crate) fn fault(&self) -> ClientFault {
        match self {
            ClientBodyError::Idle(_) => ClientFault::Idle,
            // A compressed body that fell behind its decoder slot's minimum rate stalled.
            ClientBodyError::Read(e) if chain_is::<crate::proxy::policy_body::TooSlow>(&**e) => {
                ClientFault::Idle
            }
            ClientBodyError::Read(e) => match io_kind(&**e) {
                Some(io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput) => {
                    ClientFault::Malformed
                }
                _ if chain_has(&**e, hyper::Error::is_parse) => ClientFault::Malformed,
                _ => ClientFault::Aborted,
            },
        }
    }
}

/// What the request body noted, shared by its request and response sides: its first client
/// fault, and the body bytes read from the client so far (the record's `bytes_in`). One cell
/// for both, because both are written by [`ClientBody`] and read once the exchange is over.
#[derive(Debug, Default)]
pub(crate) struct FaultCell {
    fault: AtomicU8,
    bytes_in: AtomicU64,
    cut: std::sync::atomic::AtomicBool,
}

impl FaultCell {
    fn set(&self, fault: ClientFault) {
        let code = match fault {
            ClientFault::Malformed => 1,
            ClientFault::Aborted => 2,
            ClientFault::Idle => 3,
        };
        let _ = self
            .fault
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A ban cut the request.
    pub(crate) fn mark_cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }

    /// Whether a ban cut the request.
    pub(crate) fn was_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// Counts `n` request body bytes that passed on their way upstream.
    fn add_bytes_in(&self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Request body bytes read from the client so far (what passed, even if the body failed
    /// later).
    pub(crate) fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// The client fault noted so far, if any.
    pub(crate) fn get(&self) -> Option<ClientFault> {
        match self.fault.load(Ordering::Relaxed) {
            1 => Some(ClientFault::Malformed),
            2 => Some(ClientFault::Aborted),
            3 => Some(ClientFault::Idle),
            _ => None,
        }
    }
}

pin_project! {
    /// The client's request body on its way upstream: frames pass through untouched (their
    /// data bytes are counted in the shared cell, without copying); a read error or a stall
    /// longer than `idle` becomes a [`ClientBodyError`].
    pub(crate) struct ClientBody<B = Incoming> {
        #[pin]
        inner: B,
        idle: Duration,
        timer: Option<Pin<Box<Sleep>>>,
        fault: Arc<FaultCell>,
    }
}

impl<B> ClientBody<B> {
    /// Wraps a request body; `fault` is shared with the response side.
    pub(crate) fn new(inner: B, idle: Duration, fault: Arc<FaultCell>) -> Self {
        ClientBody {
            inner,
            idle,
            timer: None,
            fault,
        }
    }
}

impl<B> Body for ClientBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // The idle clock restarts with every frame.
                *this.timer = None;
                if let Some(data) = frame.data_ref() {
                    this.fault.add_bytes_in(data.remaining());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let err = ClientBodyError::Read(e.into());
                this.fault.set(err.fault());
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // Armed only while the upstream waits on the client (hyper polls the body
                // when it can write), so upstream back-pressure never counts as idling.
                let idle = *this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(timer.as_mut().poll(cx));
                this.fault.set(ClientFault::Idle);
                Poll::Ready(Some(Err(ClientBodyError::Idle(idle))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future;

fn io_kind(e: &(dyn StdError + 'static)) -> Option<io::ErrorKind> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

/// Whether any error in `e`'s source chain (`e` included) satisfies `pred`.
fn chain_any(
    e: &(dyn StdError + 'static),
    pred: impl Fn(&(dyn StdError + 'static)) -> bool,
) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if pred(err) {
            return true;
        }
        cur = err.source();
    }
    false
}

fn chain_is<T: StdError + 'static>(e: &(dyn StdError + 'static)) -> bool {
    chain_any(e, |err| err.is::<T>())
}

fn chain_has(e: &(dyn StdError + 'static), pred: impl Fn(&hyper::Error) -> bool) -> bool {
    chain_any(e, |err| {
        err.downcast_ref::<hyper::Error>().is_some_and(&pred)
    })
}

#[cfg(test)]
pub(crate) mod tests;
