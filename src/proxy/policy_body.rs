//! The request body after the policy stage: the client's stream untouched, or the bytes the
//! stage read, replayed byte-identical — followed, for a body larger than the stage reads,
//! by the rest of the stream.
//!
//! A generation body larger than the stage reads carries a [`Guard`]: the rest is scanned
//! for `"_debug_render_only": true` as it streams ([`crate::policy::scan`]). Ollama cannot act
//! on a JSON body before it has the object's closing brace, so when the frame holding that
//! brace shows the switch set and the verdict is to block, the body yields an error *instead*
//! of that frame: the upstream never receives a complete body, the exchange fails, and the
//! policy layer (which shares the [`ScanCell`]) answers the client `403`. Nothing else is held
//! back; in monitor mode every frame passes unchanged. A zstd body's rest is decompressed before
//! it is scanned (Ollama reads such a body whole before acting); a frame that does not
//! decompress is withheld the same way, and answered `400`.
//!
//! Framing is kept: a body that came with `Content-Length` (the header is forwarded) reports
//! its exact size; a chunked one reports none, so hyper sends it chunked again.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::fault::BoxError;
use tokio::sync::OwnedSemaphorePermit;

use crate::policy::inflate::Inflate;
use crate::policy::scan::{Scan, Scanner};
use crate::policy::{self, Verdict};

/// The hand-off between a scanned body and the policy layer: the body reports its verdict
/// through `judge` (once) and notes here the verdict that refused the body's end.
pub(crate) struct ScanCell {
    /// Reports a verdict (the pipeline logs it); `true` = refuse (block mode).
    judge: Box<dyn Fn(&Verdict) -> bool + Send + Sync>,
    refused: OnceLock<Verdict>,
}

impl ScanCell {
    /// A cell whose verdicts are reported by `judge`.
    pub(crate) fn new(judge: impl Fn(&Verdict) -> bool + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(ScanCell {
            judge: Box::new(judge),
            refused: OnceLock::new(),
        })
    }

    /// The verdict that made the body withhold its end, if one did.
    pub(crate) fn refused(&self) -> Option<&Verdict> {
        self.refused.get()
    }
}

/// A zstd body's decoder, and the slot it holds while it decodes (see the policy layer).
pub(crate) struct Decoding {
    /// The decoder.
    pub(crate) inflate: Inflate,
    /// Freed with the decoder.
    pub(crate) _slot: OwnedSemaphorePermit,
}

/// The streaming check of a body's remainder (see the module docs).
pub(crate) struct Guard {
    scanner: Scanner,
    /// A zstd body: the rest is decompressed before it is scanned (dropped once decided).
    decoding: Option<Decoding>,
    cell: Arc<ScanCell>,
    /// Nothing more to look at: a verdict was reported, or the object closed clean.
    decided: bool,
    refused: bool,
}

impl Guard {
    /// Continues `scanner` (which has seen the prefix) over the rest, reporting to `cell`;
    /// with `decoding`, over the rest decompressed.
    pub(crate) fn new(scanner: Scanner, decoding: Option<Decoding>, cell: Arc<ScanCell>) -> Self {
        Guard {
            scanner,
            decoding,
            cell,
            decided: false,
            refused: false,
        }
    }

    /// Scans `data`; `true` when the frame holding it must not be sent.
    fn withhold(&mut self, data: &[u8]) -> bool {
        if self.decided {
            return self.refused;
        }
        let scanner = &mut self.scanner;
        let verdict = match &mut self.decoding {
            None => {
                scanner.feed(data);
                (scanner.outcome() == Scan::Flagged).then(policy::debug_render_only)
            }
            Some(d) => {
                let fed = d.inflate.feed(data, &mut |plain| {
                    scanner.feed(plain);
                    scanner.outcome() == Scan::Pending
                });
                match (scanner.outcome(), fed) {
                    (Scan::Flagged, _) => Some(policy::debug_render_only()),
                    (Scan::Clear, _) => {
                        self.decided = true;
                        self.decoding = None;
                        None
                    }
                    (Scan::Pending, Err(e)) => Some(policy::unreadable(&e)),
                    (Scan::Pending, Ok(())) => None,
                }
            }
        };
        if let Some(v) = verdict {
            self.decided = true;
            self.decoding = None;
            self.refused = (self.cell.judge)(&v);
            if self.refused {
                let _ = self.cell.refused.set(v);
            }
        }
        self.refused
    }
}

/// The error a refused body ends with (the exchange fails; the policy layer answers).
#[derive(Debug, thiserror::Error)]
#[error("request body refused by the policy stage")]
pub(crate) struct Refused;

pin_project! {
    /// See the module docs.
    #[project = PolicyBodyProj]
    pub(crate) enum PolicyBody<B> {
        /// Not read by the policy stage.
        Stream { #[pin] body: B },
        /// Read (in part or whole) by the policy stage: `prefix` first, then `rest`.
        Replay {
            prefix: Option<Bytes>,
            #[pin] rest: Option<B>,
            exact: Option<u64>,
            guard: Option<Box<Guard>>,
        },
    }
}

impl<B> PolicyBody<B> {
    /// The client's body, untouched.
    pub(crate) fn stream(body: B) -> Self {
        PolicyBody::Stream { body }
    }

    /// `prefix` (already read), then `rest` (`None` when the body ended); `exact` = the
    /// `Content-Length` the client sent, if any.
    pub(crate) fn replay(prefix: Bytes, rest: Option<B>, exact: Option<u64>) -> Self {
        PolicyBody::Replay {
            prefix: Some(prefix).filter(|p| !p.is_empty()),
            rest,
            exact,
            guard: None,
        }
    }

    /// [`PolicyBody::replay`], with the rest checked by `guard` as it streams.
    pub(crate) fn guarded(prefix: Bytes, rest: B, exact: Option<u64>, guard: Guard) -> Self {
        PolicyBody::Replay {
            prefix: Some(prefix).filter(|p| !p.is_empty()),
            rest: Some(rest),
            exact,
            guard: Some(Box::new(guard)),
        }
    }
}

impl<B> Body for PolicyBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            PolicyBodyProj::Stream { body } => body.poll_frame(cx).map_err(Into::into),
            PolicyBodyProj::Replay {
                prefix,
                rest,
                guard,
                ..
            } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                if guard.as_ref().is_some_and(|g| g.refused) {
                    return Poll::Ready(Some(Err(Box::new(Refused))));
                }
                let Some(r) = rest.as_pin_mut() else {
                    return Poll::Ready(None);
                };
                let frame = ready!(r.poll_frame(cx));
                if let (Some(Ok(f)), Some(g)) = (&frame, guard.as_mut()) {
                    if f.data_ref().is_some_and(|d| g.withhold(d)) {
                        return Poll::Ready(Some(Err(Box::new(Refused))));
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PolicyBody::Stream { body } => body.is_end_stream(),
            PolicyBody::Replay {
                prefix,
                rest,
                guard,
                ..
            } => {
                let refused = guard.as_ref().is_some_and(|g| g.refused);
                !refused && prefix.is_none() && rest.as_ref().map_or(true, Body::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PolicyBody::Stream { body } => body.size_hint(),
            PolicyBody::Replay { exact: Some(n), .. } => SizeHint::with_exact(*n),
            PolicyBody::Replay { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn replay_yields_the_prefix_then_the_rest_byte_identical() {
        let rest = Full::new(Bytes::from_static(b" world"));
        let body = PolicyBody::replay(Bytes::from_static(b"hello"), Some(rest), Some(11));
        assert_eq!(body.size_hint().exact(), Some(11));
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"hello world");
    }

    #[tokio::test]
    async fn a_chunked_body_stays_without_a_size() {
        let body = PolicyBody::<Full<Bytes>>::replay(Bytes::from_static(b"{}"), None, None);
        assert_eq!(body.size_hint().exact(), None);
        assert!(!body.is_end_stream());
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"{}");
        let empty = PolicyBody::<Full<Bytes>>::replay(Bytes::new(), None, Some(0));
        assert!(empty.is_end_stream());
    }
}
