//! Upstream-error layer: turns a failed exchange into an answer, filed on the side that
//! caused it ([`crate::proxy::fault`]). Upstream faults answer `502` with the cause and count
//! `upstream_errors_total{kind}`; client faults answer `400`/`408` (or are logged as 499 when
//! the client is gone) and count nothing upstream. Warnings are rate-limited.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::Response;
use http_body_util::Either;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{answered, Answer};
use crate::proxy::fault::{ClientFault, Fault};
use crate::proxy::timing::CLIENT_CLOSED_REQUEST;
use crate::proxy::upstream;
use crate::record::Outcome;
use crate::telemetry::throttle::Throttle;
use crate::telemetry::Metrics;

/// An error that can say whose fault it was (implemented by the upstream client's error;
/// tests use their own).
pub(crate) trait Classify {
    /// The side at fault, and how.
    fn fault(&self) -> Fault;
    /// The cause, for the answer and the log.
    fn detail(&self) -> String;
}

impl Classify for upstream::ExchangeError {
    fn fault(&self) -> Fault {
        upstream::ExchangeError::fault(self)
    }
    fn detail(&self) -> String {
        upstream::describe(self)
    }
}

/// What the layer counts and names.
pub(crate) struct ErrorCtx {
    /// Metrics (`upstream_errors_total`).
    pub(crate) metrics: Arc<Metrics>,
    /// The upstream URL, for the warning.
    pub(crate) upstream: String,
}

/// Maps failed exchanges to answers.
#[derive(Clone)]
pub(crate) struct UpstreamErrorLayer {
    ctx: Arc<ErrorCtx>,
}

impl UpstreamErrorLayer {
    /// Counts in `ctx.metrics`.
    pub(crate) fn new(ctx: ErrorCtx) -> Self {
        UpstreamErrorLayer { ctx: Arc::new(ctx) }
    }
}

impl<S> Layer<S> for UpstreamErrorLayer {
    type Service = UpstreamError<S>;
    fn layer(&self, inner: S) -> UpstreamError<S> {
        UpstreamError {
            inner,
            ctx: self.ctx.clone(),
        }
    }
}

/// The upstream-error service.
#[derive(Clone)]
pub(crate) struct UpstreamError<S> {
    inner: S,
    ctx: Arc<ErrorCtx>,
}

impl<S, R, B> Service<R> for UpstreamError<S>
where
    S: Service<R, Response = Response<B>>,
    S::Error: Classify,
{
    type Response = Response<Answer<B>>;
    type Error = Infallible;
    type Future = ErrorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The pooled client is always ready; an error here would be a fault of the exchange,
        // reported by `call`.
        let _ = ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        ErrorFuture {
            fut: self.inner.call(req),
            ctx: self.ctx.clone(),
        }
    }
}

pin_project! {
    /// The inner exchange, its failure answered.
    pub(crate) struct ErrorFuture<F> {
        #[pin]
        fut: F,
        ctx: Arc<ErrorCtx>,
    }
}

impl<F, B, E> Future for ErrorFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Classify,
{
    type Output = Result<Response<Answer<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(Ok(match ready!(this.fut.poll(cx)) {
            Ok(resp) => resp.map(Either::Left),
            Err(e) => failed(this.ctx, &e),
        }))
    }
}

static UPSTREAM_WARN: Throttle = Throttle::new(Duration::from_secs(10));
static CLIENT_WARN: Throttle = Throttle::new(Duration::from_secs(10));

/// The answer to a failed exchange.
fn failed<B, E: Classify>(ctx: &ErrorCtx, e: &E) -> Response<Answer<B>> {
    let detail = e.detail();
    match e.fault() {
        Fault::Upstream(kind) => {
            ctx.metrics.upstream_error(kind);
            if let Some(repeats) = UPSTREAM_WARN.allow() {
                tracing::warn!(upstream = %ctx.upstream, error = %detail, repeats, "upstream request failed");
            }
            let resp = upstream::bad_gateway(&detail).map(Either::Right);
            answered(resp, Outcome::UpstreamError, None)
        }
        Fault::Client(fault) => {
            if let Some(repeats) = CLIENT_WARN.allow() {
                tracing::info!(error = %detail, repeats, "client request body failed");
            }
            let resp = upstream::client_fault(fault, &detail).map(Either::Right);
            match fault {
                // Nobody is left to read an answer: the log says 499, as nginx's does.
                ClientFault::Aborted => {
                    answered(resp, Outcome::ClientCancelled, Some(CLIENT_CLOSED_REQUEST))
                }
                _ => answered(resp, Outcome::Complete, None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::{ready, Ready};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use tower::ServiceExt;

    use super::*;
    use crate::proxy::layers::Disposition;
    use crate::telemetry::UpstreamErrorKind;

    #[derive(Debug)]
    struct Mock(Fault);

    impl Classify for Mock {
        fn fault(&self) -> Fault {
            self.0
        }
        fn detail(&self) -> String {
            "mock cause".into()
        }
    }

    type Failed = Ready<Result<Response<Empty<Bytes>>, Mock>>;
    type Upstream = Response<Empty<Bytes>>;

    fn failing(f: Fault) -> impl Service<(), Response = Upstream, Error = Mock, Future = Failed> {
        tower::service_fn(move |()| ready(Err(Mock(f))))
    }

    fn layer() -> (UpstreamErrorLayer, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(&[]).unwrap());
        let l = UpstreamErrorLayer::new(ErrorCtx {
            metrics: metrics.clone(),
            upstream: "http://127.0.0.1:11435".into(),
        });
        (l, metrics)
    }

    async fn answer(f: Fault) -> (u16, Option<Disposition>, String, Arc<Metrics>) {
        let (l, m) = layer();
        let resp = l.layer(failing(f)).oneshot(()).await.unwrap();
        let status = resp.status().as_u16();
        let d = resp.extensions().get::<Disposition>().copied();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, d, String::from_utf8_lossy(&body).into_owned(), m)
    }

    fn resets(m: &Metrics, kind: UpstreamErrorKind) -> u64 {
        m.upstream_error_counter(kind).get()
    }

    #[tokio::test]
    async fn upstream_faults_answer_502_with_the_cause_and_count_their_kind() {
        let (status, d, body, m) = answer(Fault::Upstream(UpstreamErrorKind::Connect)).await;
        assert_eq!(status, 502);
        assert_eq!(d.map(|d| d.outcome), Some(Outcome::UpstreamError));
        assert_eq!(
            body,
            r#"{"error":"ollama-guard: upstream unavailable: mock cause"}"#
        );
        assert_eq!(resets(&m, UpstreamErrorKind::Connect), 1);
    }

    #[tokio::test]
    async fn client_faults_answer_400_408_or_499_and_count_nothing_upstream() {
        for (fault, status, logged, outcome) in [
            (ClientFault::Malformed, 400, 400, Outcome::Complete),
            (ClientFault::Idle, 408, 408, Outcome::Complete),
            (ClientFault::Aborted, 400, 499, Outcome::ClientCancelled),
        ] {
            let (s, d, _, m) = answer(Fault::Client(fault)).await;
            let d = d.unwrap();
            assert_eq!(
                (s, d.status.unwrap_or(s), d.outcome),
                (status, logged, outcome),
                "{fault:?}"
            );
            for kind in [
                UpstreamErrorKind::Connect,
                UpstreamErrorKind::Timeout,
                UpstreamErrorKind::Reset,
            ] {
                assert_eq!(resets(&m, kind), 0);
            }
        }
    }

    #[tokio::test]
    async fn a_successful_exchange_passes_through_as_the_upstream_body() {
        let (l, _) = layer();
        let ok = tower::service_fn(|()| ready(Ok::<_, Mock>(Response::new(Empty::<Bytes>::new()))));
        let resp = l.layer(ok).oneshot(()).await.unwrap();
        assert!(matches!(resp.body(), Either::Left(_)));
        assert!(resp.extensions().get::<Disposition>().is_none());
    }
}
