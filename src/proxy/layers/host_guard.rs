//! Host-guard layer: Ollama's DNS-rebinding defence, applied before anything is forwarded
//! (the policy itself is [`crate::proxy::host_guard`]). A refused request gets Ollama's own
//! answer — `403` with an empty body, `400` for a missing or doubled `Host` — is counted in
//! `refused_requests_total{reason="host"}`, closes its connection, and is recorded as
//! `refused` (never fed to detection).
//!
//! Before the host, what the proxy cannot forward whatever the host is refused the same way,
//! counted in `refused_requests_total{reason="malformed"}`: `CONNECT` (`405`: a tunnel, which
//! Ollama does not serve), a request target in authority form with any other method (`400`, as
//! Go answers: it cannot be forwarded as a path), and a transfer coding other than one
//! `chunked` (`501` with Go's text: the proxy decodes chunked only, and would otherwise forward
//! another coding's bytes as if they were the body).

use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::header::TRANSFER_ENCODING;
use http::{Method, Request, Response};
use http_body::Body;
use prometheus::IntCounter;
use tower::{Layer, Service};

use super::{refusal, Answer, ShortCircuit};
use crate::proxy::host_guard::HostPolicy;
use crate::proxy::refusal::{host_refused, unsupported_refused, Unsupported};
use crate::record::Outcome;

/// Refuses hosts the policy does not serve.
#[derive(Clone)]
pub(crate) struct HostGuardLayer {
    policy: Arc<ArcSwap<HostPolicy>>,
    refused: IntCounter,
    malformed: IntCounter,
}

impl HostGuardLayer {
    /// `policy` is live (swapped on reload); `refused` counts refusals for the host,
    /// `malformed` those for what the request is (see the module doc).
    pub(crate) fn new(
        policy: Arc<ArcSwap<HostPolicy>>,
        refused: IntCounter,
        malformed: IntCounter,
    ) -> Self {
        HostGuardLayer {
            policy,
            refused,
            malformed,
        }
    }
}

/// What no listener forwards (see the module doc); `None` for everything else.
fn unsupported<B: Body>(req: &Request<B>) -> Option<Unsupported> {
    if req.method() == Method::CONNECT {
        return Some(Unsupported::Connect);
    }
    // A target that is only an authority (`GET host:port`): the form of CONNECT alone (Go
    // answers 400), which would otherwise be forwarded as `/`.
    let uri = req.uri();
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Some(Unsupported::AuthorityForm);
    }
    // hyper reads a body framed by `Transfer-Encoding` only when its last coding is chunked,
    // and answers 400 otherwise; a body-less request has nothing to decode.
    if req.body().is_end_stream() {
        return None;
    }
    let mut codings = req.headers().get_all(TRANSFER_ENCODING).iter();
    match (codings.next(), codings.next()) {
        (None, _) => None,
        (Some(te), None) if te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => None,
        _ => Some(Unsupported::TransferCoding),
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
    B: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ShortCircuit<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(what) = unsupported(&req) {
            self.layer.malformed.inc();
            return ShortCircuit::answer(refusal(unsupported_refused(what), Outcome::Refused));
        }
        let policy = self.layer.policy.load();
        match policy.check(req.version(), req.uri(), req.headers()) {
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
        let (l, host, _) = layer_counting();
        (l, host)
    }

    /// The layer, its `host` refusal counter and its `malformed` one.
    fn layer_counting() -> (HostGuardLayer, IntCounter, IntCounter) {
        let policy = HostPolicy::new("127.0.0.1:11434".parse().unwrap(), None);
        let host = IntCounter::new("h", "h").unwrap();
        let malformed = IntCounter::new("m", "m").unwrap();
        (
            HostGuardLayer::new(
                Arc::new(ArcSwap::from_pointee(policy)),
                host.clone(),
                malformed.clone(),
            ),
            host,
            malformed,
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

    #[tokio::test]
    async fn an_http11_request_without_host_is_answered_400_and_counted_as_host() {
        let (l, host, malformed) = layer_counting();
        let (inner, seen) = capture();
        let resp = l
            .layer(inner)
            .oneshot(empty_request("/api/tags"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.headers()["connection"], "close");
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!((host.get(), malformed.get()), (1, 0));
    }

    fn with_body(method: Method, te: &[&str]) -> Request<http_body_util::Full<bytes::Bytes>> {
        let mut req = Request::builder()
            .method(method)
            .uri("/api/generate")
            .header("host", "localhost:11434");
        for v in te {
            req = req.header("transfer-encoding", *v);
        }
        req.body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
            .unwrap()
    }

    /// `METHOD localhost:11434 HTTP/1.1`: a target that is only an authority.
    fn authority_form(method: Method) -> Request<http_body_util::Full<bytes::Bytes>> {
        let mut req = with_body(method, &[]);
        *req.uri_mut() = http::Uri::from_static("localhost:11434");
        req
    }

    #[tokio::test]
    async fn connect_and_undecodable_transfer_codings_are_refused_as_malformed() {
        for (req, status, body) in [
            (with_body(Method::CONNECT, &[]), 405, &b""[..]),
            (
                with_body(Method::POST, &["gzip, chunked"]),
                501,
                b"Unsupported transfer encoding",
            ),
            (
                with_body(Method::POST, &["chunked, chunked"]),
                501,
                b"Unsupported transfer encoding",
            ),
            (
                with_body(Method::POST, &["chunked", "chunked"]),
                501,
                b"Unsupported transfer encoding",
            ),
            (authority_form(Method::GET), 400, b""),
            (authority_form(Method::POST), 400, b""),
            (
                authority_form(Method::from_bytes(b"connect").unwrap()),
                400,
                b"",
            ),
        ] {
            let (l, host, malformed) = layer_counting();
            let (inner, seen) = capture();
            let resp = l.layer(inner).oneshot(req).await.unwrap();
            assert_eq!(resp.status(), status);
            assert_eq!(resp.headers()["connection"], "close");
            assert_eq!(
                resp.extensions().get::<Disposition>().map(|d| d.outcome),
                Some(Outcome::Refused)
            );
            assert_eq!(
                &resp.into_body().collect().await.unwrap().to_bytes()[..],
                body
            );
            assert!(seen.lock().unwrap().is_empty());
            assert_eq!((host.get(), malformed.get()), (0, 1));
        }
    }

    #[tokio::test]
    async fn a_lone_chunked_coding_in_any_case_passes() {
        for te in ["chunked", "Chunked", " CHUNKED "] {
            let (l, host, malformed) = layer_counting();
            let (inner, seen) = capture();
            let resp = l
                .layer(inner)
                .oneshot(with_body(Method::POST, &[te]))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{te:?}");
            assert_eq!(seen.lock().unwrap().len(), 1);
            assert_eq!((host.get(), malformed.get()), (0, 0));
        }
    }
}
