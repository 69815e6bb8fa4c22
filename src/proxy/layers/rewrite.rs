//! Rewrite layer: the last touch before the wire. The request is pointed at the upstream
//! (origin-form request target, `Host` = the upstream's authority, which Ollama on loopback
//! requires),
//! hop-by-hop headers and `Expect` are removed (hyper already answered `100 Continue` to the
//! client when the body is first read), `X-Forwarded-For` is *replaced* by the resolved client
//! (Ollama's gin trusts any `X-Forwarded-For`), `X-Forwarded-Proto` says whether the client
//! came over TLS (the whole listener does or does not), and the body is wrapped so its faults can be
//! told from the upstream's ([`ClientBody`]). Nothing else changes: bytes and framing pass
//! through.
//!
//! The request's headers are rewritten as the upstream client writes its head: this layer
//! attaches a [`Forwarding`] (the proxy's `Host`, `X-Forwarded-For` and `X-Forwarded-Proto`)
//! and `headers::write_forwarded` writes the client's map through it, skipping what does not
//! go, instead of the map being edited here (six hashed removals and insertions, about 2 000
//! instructions per request). The response's hop-by-hop headers never leave the upstream
//! client either: they frame the body on the upstream connection and are not put in the
//! response's map (`upstream::wire`).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::HeaderValue;
use std::borrow::Cow;

use http::{Request, Response, Uri, Version};
use tower::{Layer, Service};

use super::{Client, Meta};
use crate::proxy::fault::{ClientBody, FaultCell};
use crate::proxy::headers::{self, Forwarding};

/// Where requests go.
pub(crate) struct Target {
    /// The upstream's authority, as the `Host` header value.
    pub(crate) host: HeaderValue,
    /// `X-Forwarded-Proto`: `https` when the proxy listener speaks TLS, else `http`.
    pub(crate) forwarded_proto: HeaderValue,
    /// `timeouts.body_idle`.
    pub(crate) body_idle: Duration,
    /// Whether the listener's `Host` rule is a list of names, so a same-origin `Origin` is
    /// dropped (see [`Forwarding::same_origin`]).
    pub(crate) names_listed: Arc<AtomicBool>,
}

/// Points requests at the upstream.
#[derive(Clone)]
pub(crate) struct RewriteLayer {
    target: Arc<Target>,
}

impl RewriteLayer {
    /// Rewrites for `target`.
    pub(crate) fn new(target: Target) -> Self {
        RewriteLayer {
            target: Arc::new(target),
        }
    }
}

impl<S> Layer<S> for RewriteLayer {
    type Service = Rewrite<S>;
    fn layer(&self, inner: S) -> Rewrite<S> {
        Rewrite {
            inner,
            target: self.target.clone(),
        }
    }
}

/// The rewrite service.
#[derive(Clone)]
pub(crate) struct Rewrite<S> {
    inner: S,
    target: Arc<Target>,
}

impl<S, B, RB> Service<Request<B>> for Rewrite<S>
where
    S: Service<Request<ClientBody<B>>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.inner.call(rewrite(&self.target, req))
    }
}

fn rewrite<B>(t: &Target, req: Request<B>) -> Request<ClientBody<B>> {
    let (mut parts, body) = req.into_parts();
    let src = parts
        .extensions
        .get::<Client>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.src);
    let fault = parts
        .extensions
        .get::<Meta>()
        .map_or_else(|| Arc::new(FaultCell::default()), |m| m.fault.clone());
    // The upstream client writes the path and query (origin form); an absolute-form target
    // from the client keeps only those, and its authority is the original host.
    let mut forwarded_host = None;
    if let Some(authority) = parts.uri.authority() {
        // The host the guard checked, without the user information a client may have put
        // in front of it.
        forwarded_host =
            HeaderValue::from_str(crate::proxy::host_guard::authority_host(authority)).ok();
        let target = origin_form(parts.uri.path_and_query().map_or("", |pq| pq.as_str()));
        parts.uri = Uri::try_from(target.as_ref()).unwrap_or_else(|_| Uri::from_static("/"));
    }
    // The headers are rewritten as the head is written (`headers::write_forwarded`): the
    // client's map is read there, not edited here.
    parts.extensions.insert(Forwarding {
        host: t.host.clone(),
        forwarded_for: headers::forwarded_for(src),
        forwarded_proto: t.forwarded_proto.clone(),
        forwarded_host,
        same_origin: t.names_listed.load(Ordering::Relaxed),
    });
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, ClientBody::new(body, t.body_idle, fault))
}

/// `target` (an absolute-form target's path and query) in origin form: an empty path is
/// `/` (RFC 9112 §3.2.1), so `http://host?q` goes as `/?q`.
pub(crate) fn origin_form(target: &str) -> Cow<'_, str> {
    if target.starts_with('/') || target == "*" {
        Cow::Borrowed(target)
    } else {
        Cow::Owned(format!("/{target}"))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::ready;
    use std::sync::Mutex;

    use bytes::Bytes;
    use http_body_util::Empty;
    use tower::ServiceExt;

    use super::*;
    use crate::proxy::layers::test_support::request_from;

    /// The head the upstream client writes for a rewritten request, parsed back: what the
    /// upstream receives.
    fn upstream_head<B: http_body::Body>(req: &Request<B>) -> (String, http::HeaderMap) {
        let mut out = Vec::new();
        crate::proxy::upstream::wire::encode_head(
            &mut out,
            req.method(),
            req.uri().path_and_query().map_or("/", |pq| pq.as_str()),
            req.headers(),
            req.extensions().get::<Forwarding>(),
            req.body().is_end_stream(),
        );
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut slots);
        assert!(parsed.parse(&out).unwrap().is_complete());
        let line = format!("{} {}", parsed.method.unwrap(), parsed.path.unwrap());
        let mut headers = http::HeaderMap::new();
        for h in parsed.headers.iter() {
            headers.append(
                http::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(h.value).unwrap(),
            );
        }
        (line, headers)
    }

    fn target() -> Target {
        Target {
            host: HeaderValue::from_static("127.0.0.1:11435"),
            forwarded_proto: HeaderValue::from_static("http"),
            body_idle: Duration::from_secs(300),
            names_listed: Arc::new(AtomicBool::new(false)),
        }
    }

    #[tokio::test]
    async fn request_is_pointed_upstream_with_xff_replaced_and_hop_headers_removed() {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        let inner = tower::service_fn(move |req: Request<ClientBody<Empty<Bytes>>>| {
            *s.lock().unwrap() = Some((upstream_head(&req), req.version()));
            ready(Ok::<_, Infallible>(Response::new(())))
        });
        let mut req = request_from("198.51.100.7", "/api/chat?x=1");
        let h = req.headers_mut();
        h.insert("host", HeaderValue::from_static("ollama.example"));
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("expect", HeaderValue::from_static("100-continue"));
        h.insert("authorization", HeaderValue::from_static("Bearer k"));
        RewriteLayer::new(target())
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap();
        let ((line, headers), version) = seen.lock().unwrap().take().unwrap();
        assert_eq!(line, "GET /api/chat?x=1");
        assert_eq!(version, Version::HTTP_11);
        assert_eq!(headers["host"], "127.0.0.1:11435");
        assert_eq!(headers["x-forwarded-for"], "198.51.100.7");
        assert_eq!(headers["x-forwarded-host"], "ollama.example");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(
            headers["authorization"], "Bearer k",
            "end-to-end headers pass"
        );
        for gone in ["connection", "x-secret-hop", "expect"] {
            assert!(!headers.contains_key(gone), "{gone}");
        }
    }

    /// The request line and headers the upstream receives for a client's request.
    async fn through_rewrite(req: Request<Empty<Bytes>>) -> (String, http::HeaderMap) {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        let inner = tower::service_fn(move |req: Request<ClientBody<Empty<Bytes>>>| {
            *s.lock().unwrap() = Some(upstream_head(&req));
            ready(Ok::<_, Infallible>(Response::new(())))
        });
        RewriteLayer::new(target())
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap();
        let head = seen.lock().unwrap().take().unwrap();
        head
    }

    /// The headers the upstream receives for a client's request.
    async fn forwarded(req: Request<Empty<Bytes>>) -> http::HeaderMap {
        through_rewrite(req).await.1
    }

    /// A client naming Host, or the forwarding headers, as hop-by-hop cannot strip what the
    /// proxy sends upstream; a repeated Host and forwarding headers of its own are replaced,
    /// not appended to; without a Host, no X-Forwarded-Host is invented or passed on.
    #[tokio::test]
    async fn a_client_cannot_strip_or_add_to_the_forwarding_headers() {
        let mut req = request_from("198.51.100.7", "/api/tags");
        let h = req.headers_mut();
        h.append("host", HeaderValue::from_static("first.example"));
        h.append("host", HeaderValue::from_static("second.example"));
        h.insert(
            "connection",
            HeaderValue::from_static("host, x-forwarded-for, x-forwarded-host, x-forwarded-proto"),
        );
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let headers = forwarded(req).await;
        let all = |name: &str| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("host"), ["127.0.0.1:11435"]);
        assert_eq!(all("x-forwarded-host"), ["first.example"]);
        assert_eq!(all("x-forwarded-for"), ["198.51.100.7"]);
        assert_eq!(all("x-forwarded-proto"), ["http"]);
        assert!(!headers.contains_key("connection"));

        let mut req = request_from("198.51.100.7", "/api/tags");
        req.headers_mut().remove("host");
        req.headers_mut()
            .insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        let headers = forwarded(req).await;
        assert_eq!(headers["host"], "127.0.0.1:11435");
        assert!(!headers.contains_key("x-forwarded-host"));
    }

    /// The request line and headers the upstream receives for `method uri` with `host`.
    async fn forwarded_line(
        method: http::Method,
        uri: &str,
        host: &'static str,
    ) -> (String, http::HeaderMap) {
        let mut req = request_from("198.51.100.7", uri);
        *req.method_mut() = method;
        req.headers_mut()
            .insert("host", HeaderValue::from_static(host));
        through_rewrite(req).await
    }

    /// An absolute-form target goes in origin form (an empty path is `/`, RFC 9112 §3.2.1),
    /// and its authority — the host the guard checked — is the original host, not the `Host`
    /// header the guard ignored (which a client could otherwise use to pass a name the guard
    /// would refuse on to the upstream).
    #[tokio::test]
    async fn an_absolute_form_target_goes_in_origin_form_with_its_authority_as_the_host() {
        use http::Method;
        for (method, target, line, xfh) in [
            (
                Method::GET,
                "http://localhost?x=1",
                "GET /?x=1",
                "localhost",
            ),
            (
                Method::GET,
                "http://localhost:11434?",
                "GET /?",
                "localhost:11434",
            ),
            (Method::GET, "http://localhost", "GET /", "localhost"),
            (
                Method::GET,
                "http://localhost:11434/api/tags?a=b",
                "GET /api/tags?a=b",
                "localhost:11434",
            ),
            (
                Method::GET,
                "http://user:pw@localhost/",
                "GET /",
                "localhost",
            ),
        ] {
            let (got, headers) = forwarded_line(method, target, "evil.example").await;
            assert_eq!(got, line, "{target}");
            let all: Vec<_> = headers.get_all("x-forwarded-host").iter().collect();
            assert_eq!(all, [xfh], "{target}");
            assert_eq!(headers["host"], "127.0.0.1:11435");
        }
        // Origin form is untouched, and its Host is the original host.
        let (got, headers) = forwarded_line(Method::GET, "/api/tags", "localhost:11434").await;
        assert_eq!(got, "GET /api/tags");
        assert_eq!(headers["x-forwarded-host"], "localhost:11434");
    }

    #[test]
    fn origin_form_adds_the_empty_paths_slash_only() {
        assert_eq!(origin_form("?x=1"), "/?x=1");
        assert_eq!(origin_form(""), "/");
        assert_eq!(origin_form("/a?b"), "/a?b");
        assert_eq!(origin_form("*"), "*");
        assert!(matches!(origin_form("/api/tags"), Cow::Borrowed(_)));
    }
}
