//! Cutting a running response when its source is banned (`enforcement.abort_in_flight`).
//!
//! A ban must stop what the banned source is already doing — a 30-minute push, a slow
//! exfiltration — not only its next request. The response body asks the gate on every frame
//! whether its source is banned now (one atomic load while no ban exists); when it is, the
//! body ends with an error: hyper aborts the client's stream (no clean chunked terminator, so
//! the client sees the failure) and drops the upstream body, which closes the upstream
//! connection, and Ollama stops the transfer. The exchange is recorded as `blocked` and an
//! `aborted` event is logged.
//!
//! A request still waiting for its response head (a non-streamed request Ollama is working on)
//! is cut too: each proxy worker has a ban signal the enforcement wakes on every ban, the
//! record layer's future looks again, and a banned source's request is answered `403` at once —
//! dropping the future drops the upstream request.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::fault::{BoxError, FaultCell};
use super::refusal::Gate;

/// The error a cut body ends with.
#[derive(Debug, thiserror::Error)]
#[error("ollama-guard: request cut: the source was banned ({0})")]
pub(crate) struct Cut(Arc<str>);

/// Who a response belongs to, for the gate and the `aborted` event.
#[derive(Clone)]
pub(crate) struct Owner {
    pub(crate) src: IpAddr,
    pub(crate) identity: Option<Arc<str>>,
    pub(crate) method: std::borrow::Cow<'static, str>,
    pub(crate) path: std::borrow::Cow<'static, str>,
    pub(crate) gate: Arc<dyn Gate>,
    pub(crate) cell: Arc<FaultCell>,
}

impl Owner {
    /// `Some(rule)` when the owner's source is banned now: the cut is noted in the request's
    /// cell and logged (`aborted`).
    pub(crate) fn cut(&self) -> Option<Arc<str>> {
        let rule = self.gate.cut(self.src, self.identity.as_deref())?;
        self.cell.mark_cut();
        self.gate.aborted(
            self.src,
            self.identity.as_deref(),
            &self.method,
            &self.path,
            &rule,
        );
        Some(rule)
    }
}

pin_project! {
    /// A response body that ends early when its source is banned — or, for a request cut
    /// before its response head existed, the refusal the guard answered instead.
    #[project = CutProj]
    pub(crate) enum CutBody<B> {
        /// The response's own body.
        Inner { #[pin] inner: B, owner: Option<Owner> },
        /// The guard's answer to a request cut before its head.
        Refused { body: Option<Bytes> },
    }
}

impl<B> CutBody<B> {
    /// `inner`, cut when `owner.src` is banned; `None` = never cut (locally answered).
    pub(crate) fn new(inner: B, owner: Option<Owner>) -> Self {
        CutBody::Inner { inner, owner }
    }

    /// The refusal of a request cut before its response head.
    pub(crate) fn refused(body: Bytes) -> Self {
        CutBody::Refused { body: Some(body) }
    }
}

impl<B> Body for CutBody<B>
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
        let (inner, owner) = match self.project() {
            CutProj::Refused { body } => {
                return Poll::Ready(body.take().map(|b| Ok(Frame::data(b))));
            }
            CutProj::Inner { inner, owner } => (inner, owner),
        };
        if let Some(rule) = owner.as_ref().and_then(Owner::cut) {
            *owner = None;
            return Poll::Ready(Some(Err(Box::new(Cut(rule)))));
        }
        inner.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        match self {
            CutBody::Inner { inner, .. } => inner.is_end_stream(),
            CutBody::Refused { body } => body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            CutBody::Inner { inner, .. } => inner.size_hint(),
            CutBody::Refused { body } => {
                SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use http_body_util::BodyExt;

    use super::*;

    #[derive(Default)]
    struct Switch {
        banned: AtomicBool,
        aborted: Mutex<Vec<String>>,
    }

    impl Gate for Switch {
        fn refuse(&self, _: IpAddr, _: Option<&str>, _: &str, _: &str) -> Option<Arc<str>> {
            None
        }
        fn cut(&self, _: IpAddr, _: Option<&str>) -> Option<Arc<str>> {
            self.banned
                .load(Ordering::Relaxed)
                .then(|| Arc::from("admin"))
        }
        fn aborted(&self, src: IpAddr, _: Option<&str>, method: &str, path: &str, rule: &str) {
            self.aborted
                .lock()
                .unwrap()
                .push(format!("{src} {method} {path} {rule}"));
        }
    }

    /// A body yielding ten numbered frames.
    struct Frames(u8);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0 += 1;
            Poll::Ready((self.0 <= 10).then(|| Ok(Frame::data(Bytes::from(vec![self.0])))))
        }
    }

    #[tokio::test]
    async fn a_ban_mid_stream_ends_the_body_with_an_error_once() {
        let gate = Arc::new(Switch::default());
        let cell = Arc::new(FaultCell::default());
        let owner = Owner {
            src: "192.0.2.66".parse().unwrap(),
            identity: None,
            method: "POST".into(),
            path: "/api/push".into(),
            gate: gate.clone(),
            cell: cell.clone(),
        };
        let mut body = CutBody::new(Frames(0), Some(owner));
        assert!(body.frame().await.unwrap().is_ok());
        gate.banned.store(true, Ordering::Relaxed);
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "ollama-guard: request cut: the source was banned (admin)"
        );
        assert!(cell.was_cut());
        assert_eq!(
            *gate.aborted.lock().unwrap(),
            ["192.0.2.66 POST /api/push admin"]
        );
    }
}
