//! Enforcement-gate layer: a banned source is answered `403` before anything is forwarded,
//! with a body shaped for its route family, its connection closed (unless a trusted proxy
//! holds it: [`super::refusal_of`]), and the exchange
//! recorded as `blocked` (never fed back to detection: no self-feeding bans). The ban
//! decision itself belongs to [`crate::proxy::refusal::Gate`] (the enforcement service).
//!
//! Records run just after their response is written ([`Deferred`]); the gate settles them
//! before it asks, so a request sent after a response arrived meets what that response's
//! record decided.
//!
//! In block mode the gate also refuses a browser's cross-site request that carries no
//! `Origin` (an `<img>`, an `<iframe>`, a no-cors `fetch`: the page can never read the
//! answer, so no web application needs one), recorded as `refused` and fed to no rule: a web
//! page cannot get its visitor's address banned by making requests in its name. A
//! cross-site request *with* an `Origin` goes on to Ollama, whose `OLLAMA_ORIGINS` decides
//! (its 403 is recorded the same way, by the record layer).

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::ORIGIN;
use http::{Request, Response};
use prometheus::IntCounter;
use tower::{Layer, Service};

use super::{declares_no_body, refusal_of, Answer, Client, Meta, ShortCircuit};
use crate::proxy::deferred::Deferred;
use crate::proxy::refusal::{forbidden, shaped, Gate};
use crate::record::Outcome;

/// The message of a refused cross-site request.
const CROSS_SITE: &str =
    "ollama-guard: request refused: a browser's cross-site request without an Origin";

/// Refuses banned sources.
#[derive(Clone)]
pub(crate) struct GateLayer {
    gate: Arc<dyn Gate>,
    records: Option<Arc<Deferred>>,
    cross_site: Option<IntCounter>,
}

impl GateLayer {
    /// Asks `gate` about every request.
    pub(crate) fn new(gate: Arc<dyn Gate>) -> Self {
        GateLayer {
            gate,
            records: None,
            cross_site: None,
        }
    }

    /// In block mode, refuses a browser's cross-site request without an `Origin` and counts
    /// it in `refused` (see the module doc).
    pub(crate) fn refusing_cross_site(mut self, refused: IntCounter) -> Self {
        self.cross_site = Some(refused);
        self
    }

    /// Runs the records `records` holds back before asking (see the module doc).
    pub(crate) fn settling(mut self, records: Arc<Deferred>) -> Self {
        self.records = Some(records);
        self
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = GateService<S>;
    fn layer(&self, inner: S) -> GateService<S> {
        GateService {
            inner,
            gate: self.gate.clone(),
            records: self.records.clone(),
            cross_site: self.cross_site.clone(),
        }
    }
}

/// The gate service.
#[derive(Clone)]
pub(crate) struct GateService<S> {
    inner: S,
    gate: Arc<dyn Gate>,
    records: Option<Arc<Deferred>>,
    cross_site: Option<IntCounter>,
}

impl<S, B, RB> Service<Request<B>> for GateService<S>
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
        if let Some(records) = &self.records {
            records.settle();
        }
        let ext = req.extensions();
        if let (Some(client), Some(meta)) = (ext.get::<Client>(), ext.get::<Meta>()) {
            let identity = ext
                .get::<crate::auth::Caller>()
                .and_then(|c| c.identity.as_deref());
            if self
                .gate
                .refuse(client.src, identity, &meta.method_text, &meta.path)
                .is_some()
            {
                // The request body is dropped unread.
                return ShortCircuit::answer(refusal_of(
                    forbidden(&meta.path),
                    Outcome::Blocked,
                    Some(client),
                    declares_no_body(req.headers()),
                ));
            }
            if let Some(refused) = &self.cross_site {
                if meta.cross_site && self.gate.blocking() && !req.headers().contains_key(ORIGIN) {
                    refused.inc();
                    return ShortCircuit::answer(refusal_of(
                        shaped(&meta.path, CROSS_SITE),
                        Outcome::Refused,
                        Some(client),
                        declares_no_body(req.headers()),
                    ));
                }
            }
        }
        ShortCircuit::Inner {
            fut: self.inner.call(req),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::net::IpAddr;
    use std::sync::Mutex;

    use super::*;
    use crate::proxy::fault::FaultCell;
    use crate::proxy::layers::test_support::{capture, request_from};
    use crate::proxy::layers::Disposition;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// Bans one address; remembers what it was asked.
    struct Banned(IpAddr, Mutex<Vec<(IpAddr, String, String)>>);

    impl Gate for Banned {
        fn refuse(
            &self,
            src: IpAddr,
            _: Option<&str>,
            method: &str,
            path: &str,
        ) -> Option<Arc<str>> {
            self.1
                .lock()
                .unwrap()
                .push((src, method.to_owned(), path.to_owned()));
            (src == self.0).then(|| Arc::from("admin"))
        }
    }

    fn request(src: &str, path: &'static str) -> Request<http_body_util::Empty<bytes::Bytes>> {
        let mut req = request_from(src, path);
        req.extensions_mut().insert(Meta {
            path: Cow::Borrowed(path),
            method_text: Cow::Borrowed("POST"),
            route: crate::route::Route::Other,
            fault: Arc::new(FaultCell::default()),
            cross_site: false,
        });
        req
    }

    #[tokio::test]
    async fn a_banned_source_gets_the_route_family_403_and_is_not_forwarded() {
        let gate = Arc::new(Banned("192.0.2.66".parse().unwrap(), Mutex::default()));
        let (inner, seen) = capture();
        let svc = GateLayer::new(gate.clone()).layer(inner);
        let resp = svc
            .oneshot(request("192.0.2.66", "/v1/chat/completions"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.headers()["connection"], "close");
        assert_eq!(
            resp.extensions().get::<Disposition>().map(|d| d.outcome),
            Some(Outcome::Blocked)
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "ollama_guard_blocked");
        assert!(seen.lock().unwrap().is_empty());
        let asked = gate.1.lock().unwrap().clone();
        assert_eq!(
            asked,
            [(
                "192.0.2.66".parse().unwrap(),
                "POST".to_owned(),
                "/v1/chat/completions".to_owned()
            )]
        );
    }

    #[tokio::test]
    async fn a_banned_client_behind_a_trusted_proxy_is_refused_on_a_connection_left_open() {
        let gate = Arc::new(Banned("192.0.2.66".parse().unwrap(), Mutex::default()));
        let (inner, seen) = capture();
        let svc = GateLayer::new(gate).layer(inner);
        let mut req = request("192.0.2.66", "/api/tags");
        req.extensions_mut().insert(Client {
            src: "192.0.2.66".parse().unwrap(),
            peer: "10.0.0.1".parse().unwrap(),
            unknown: false,
        });
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 403);
        // The proxy's connection carries every client behind it: it stays open.
        assert_eq!(resp.headers().get("connection"), None);
        assert_eq!(
            resp.extensions().get::<Disposition>().map(|d| d.outcome),
            Some(Outcome::Blocked)
        );
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn another_source_is_forwarded() {
        let gate = Arc::new(Banned("192.0.2.66".parse().unwrap(), Mutex::default()));
        let (inner, seen) = capture();
        let resp = GateLayer::new(gate)
            .layer(inner)
            .oneshot(request("192.0.2.67", "/api/tags"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    /// No bans; `blocking` says which mode the guard is in.
    struct Mode(bool);

    impl Gate for Mode {
        fn refuse(&self, _: IpAddr, _: Option<&str>, _: &str, _: &str) -> Option<Arc<str>> {
            None
        }
        fn blocking(&self) -> bool {
            self.0
        }
    }

    #[tokio::test]
    async fn block_mode_refuses_a_browser_s_cross_site_request_without_an_origin() {
        // (block mode, Sec-Fetch-Site, Origin) → refused.
        for (block, site, origin, refused) in [
            (true, Some("cross-site"), None, true),
            (true, Some("same-site"), None, true),
            (
                true,
                Some("cross-site"),
                Some("https://chat.example"),
                false,
            ),
            (true, Some("same-origin"), None, false),
            (true, Some("none"), None, false),
            (true, None, None, false),
            (false, Some("cross-site"), None, false),
        ] {
            let counter = prometheus::IntCounter::new("c", "c").unwrap();
            let (inner, seen) = capture();
            let svc = GateLayer::new(Arc::new(Mode(block)))
                .refusing_cross_site(counter.clone())
                .layer(inner);
            let mut req = request("192.0.2.7", "/api/tags");
            if let Some(site) = site {
                req.headers_mut()
                    .insert("sec-fetch-site", http::HeaderValue::from_static(site));
            }
            if let Some(origin) = origin {
                req.headers_mut()
                    .insert("origin", http::HeaderValue::from_static(origin));
            }
            // What the record layer reads into the meta.
            let flag = crate::proxy::headers::cross_site(req.headers());
            req.extensions_mut().get_mut::<Meta>().unwrap().cross_site = flag;
            let resp = svc.oneshot(req).await.unwrap();
            let case = format!("{block} {site:?} {origin:?}");
            assert_eq!(seen.lock().unwrap().len(), usize::from(!refused), "{case}");
            assert_eq!(counter.get(), u64::from(refused), "{case}");
            if refused {
                assert_eq!(resp.status(), 403, "{case}");
                assert_eq!(
                    resp.extensions().get::<Disposition>().map(|d| d.outcome),
                    Some(Outcome::Refused),
                    "{case}"
                );
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(json["error"], CROSS_SITE, "{case}");
            }
        }
    }
}
