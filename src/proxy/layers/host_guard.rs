//! Host-guard layer: Ollama's DNS-rebinding defence, applied before anything is forwarded
//! (the policy itself is [`crate::proxy::host_guard`]). A refused request gets Ollama's own
//! answer — `403` with an empty body — is counted in `refused_requests_total{reason="host"}`,
//! closes its connection, and is recorded as `refused` (never fed to detection).

use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Request, Response};
use prometheus::IntCounter;
use tower::{Layer, Service};

use super::{refusal, Answer, ShortCircuit};
use crate::proxy::host_guard::HostPolicy;
use crate::proxy::refusal::host_refused;
use crate::record::Outcome;

/// Refuses hosts the policy does not serve.
#[derive(Clone)]
pub(crate) struct HostGuardLayer {
    policy: Arc<ArcSwap<HostPolicy>>,
    refused: IntCounter,
}

impl HostGuardLayer {
    /// `policy` is live (swapped on reload); `refused` counts refusals.
    pub(crate) fn new(policy: Arc<ArcSwap<HostPolicy>>, refused: IntCounter) -> Self {
        HostGuardLayer { policy, refused }
    }
}

impl<S> Layer<S> for HostGuardLayer {
    type Service = HostGuard<S>;
    fn layer(&self, inner: S) -> HostGuard<S> {
        HostGuard {
            inner,
            layer: self.clone(),
        }
    }
}

/// The host-guard service.
#[derive(Clone)]
pub(crate) struct HostGuard<S> {
    inner: S,
    layer: HostGuardLayer,
}

impl<S, B, RB> Service<Request<B>> for HostGuard<S>
where
    S: Service<Request<B>, Response = Response<Answer<RB>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ShortCircuit<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.layer.policy.load().check(req.uri(), req.headers()) {
            Ok(()) => ShortCircuit::Inner {
                fut: self.inner.call(req),
            },
            Err(why) => {
                self.layer.refused.inc();
                ShortCircuit::answer(refusal(host_refused(why), Outcome::Refused))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::layers::test_support::{capture, empty_request};
    use crate::proxy::layers::Disposition;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn layer() -> (HostGuardLayer, IntCounter) {
        let policy = HostPolicy::new("127.0.0.1:11434".parse().unwrap(), None);
        let c = IntCounter::new("c", "c").unwrap();
        (
            HostGuardLayer::new(Arc::new(ArcSwap::from_pointee(policy)), c.clone()),
            c,
        )
    }

    #[tokio::test]
    async fn a_rebound_host_is_answered_403_empty_and_never_reaches_the_inner_service() {
        let (l, refused) = layer();
        let (inner, seen) = capture();
        let mut req = empty_request("/api/tags");
        req.headers_mut()
            .insert("host", "rebind.attacker.example".parse().unwrap());
        let resp = l.layer(inner).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()["connection"], "close");
        assert_eq!(
            resp.extensions().get::<Disposition>().map(|d| d.outcome),
            Some(Outcome::Refused)
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(refused.get(), 1);
    }

    #[tokio::test]
    async fn a_local_host_passes_through_untouched() {
        let (l, refused) = layer();
        let (inner, seen) = capture();
        let mut req = empty_request("/api/tags");
        req.headers_mut()
            .insert("host", "localhost:11434".parse().unwrap());
        let resp = l.layer(inner).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(refused.get(), 0);
    }
}
