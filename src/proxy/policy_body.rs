//! The request body after the policy stage: the client's stream untouched, or the bytes the
//! stage read, replayed byte-identical — followed, for a body larger than the stage reads,
//! by the rest of the stream.
//!
//! Framing is kept: a body that came with `Content-Length` (the header is forwarded) reports
//! its exact size; a chunked one reports none, so hyper sends it chunked again.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::fault::BoxError;

pin_project! {
    /// See the module docs.
    #[project = PolicyBodyProj]
    pub(crate) enum PolicyBody<B> {
        /// Not read by the policy stage.
        Stream { #[pin] body: B },
        /// Read (in part or whole) by the policy stage: `prefix` first, then `rest`.
        Replay { prefix: Option<Bytes>, #[pin] rest: Option<B>, exact: Option<u64> },
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
            PolicyBodyProj::Replay { prefix, rest, .. } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                match rest.as_pin_mut() {
                    Some(r) => r.poll_frame(cx).map_err(Into::into),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PolicyBody::Stream { body } => body.is_end_stream(),
            PolicyBody::Replay { prefix, rest, .. } => {
                prefix.is_none() && rest.as_ref().map_or(true, Body::is_end_stream)
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
