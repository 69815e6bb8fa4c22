//! Identify layer: who is calling, by API key. Outside the record layer, so every record —
//! refused or forwarded — carries the identity, and so does the start record in-flight
//! detection sees.
//!
//! With `auth.mode` other than `off` it reads the credential (`Authorization: Bearer` or
//! `x-api-key`), looks it up in the key store, attaches a [`Caller`] and **removes the
//! credential headers**: Ollama never sees a key. With `auth.mode = "off"` it does nothing
//! at all (one atomic load), so today's transparent deployments forward `Authorization`
//! untouched.

use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::Request;
use tower::{Layer, Service};

use crate::auth::key::{presented, Presented, X_API_KEY};
use crate::auth::store::{KeyStore, Lookup};
use crate::auth::{AuthConfig, AuthMode, Caller, Credential};

/// What the layer reads.
#[derive(Clone)]
pub(crate) struct IdentifyCtx {
    /// The live `[auth]` settings.
    pub(crate) config: Arc<ArcSwap<AuthConfig>>,
    /// The keys (none when no key file is configured: `auth.mode` is then `off`).
    pub(crate) store: Option<Arc<KeyStore>>,
}

/// Resolves the caller of every request.
#[derive(Clone)]
pub(crate) struct IdentifyLayer {
    ctx: IdentifyCtx,
}

impl IdentifyLayer {
    /// Identifies through `ctx`.
    pub(crate) fn new(ctx: IdentifyCtx) -> Self {
        IdentifyLayer { ctx }
    }
}

impl<S> Layer<S> for IdentifyLayer {
    type Service = Identify<S>;
    fn layer(&self, inner: S) -> Identify<S> {
        Identify {
            inner,
            ctx: self.ctx.clone(),
        }
    }
}

/// The identify service.
#[derive(Clone)]
pub(crate) struct Identify<S> {
    inner: S,
    ctx: IdentifyCtx,
}

/// The caller `headers` present, per `store` at `now`.
pub(crate) fn identify(
    headers: &http::HeaderMap,
    store: Option<&KeyStore>,
    now: chrono::DateTime<chrono::Utc>,
) -> Caller {
    let shown = presented(headers);
    let (credential, entry) = match (shown, store) {
        (Presented::None, _) => (Credential::Missing, None),
        (Presented::Malformed, _) | (Presented::Key(_), None) => (Credential::Invalid, None),
        (Presented::Key(key), Some(store)) => match store.lookup(key, now) {
            Lookup::Valid(e) => (Credential::Valid, Some(e)),
            Lookup::Expired(_) => (Credential::Expired, None),
            Lookup::Unknown => (Credential::Invalid, None),
        },
    };
    Caller {
        identity: entry.as_ref().map(|e| e.name.clone()),
        role: entry.map(|e| e.role),
        credential,
        key: matches!(shown, Presented::Key(_)),
    }
}

impl<S, B> Service<Request<B>> for Identify<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        if self.ctx.config.load().mode != AuthMode::Off {
            let caller = identify(req.headers(), self.ctx.store.as_deref(), chrono::Utc::now());
            let headers = req.headers_mut();
            headers.remove(http::header::AUTHORIZATION);
            headers.remove(X_API_KEY);
            req.extensions_mut().insert(caller);
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::store::Role;
    use crate::proxy::layers::test_support::capture;
    use tower::ServiceExt;

    fn ctx(mode: AuthMode, store: Option<Arc<KeyStore>>) -> IdentifyCtx {
        IdentifyCtx {
            config: Arc::new(ArcSwap::from_pointee(AuthConfig {
                mode,
                ..AuthConfig::default()
            })),
            store,
        }
    }

    /// An inner service that keeps the headers and the caller it was given.
    fn request(auth: Option<&str>) -> Request<http_body_util::Empty<bytes::Bytes>> {
        let mut b = Request::get("/api/tags");
        if let Some(a) = auth {
            b = b.header("authorization", a).header("x-custom", "kept");
        }
        b.body(http_body_util::Empty::new()).unwrap()
    }

    async fn through(
        ctx: IdentifyCtx,
        req: Request<http_body_util::Empty<bytes::Bytes>>,
    ) -> (http::HeaderMap, Option<Caller>) {
        let seen = Arc::new(std::sync::Mutex::new(None));
        let keep = seen.clone();
        let inner = tower::service_fn(move |req: Request<_>| {
            *keep.lock().unwrap() = Some((
                req.headers().clone(),
                req.extensions().get::<Caller>().cloned(),
            ));
            async { Ok::<_, std::convert::Infallible>(()) }
        });
        IdentifyLayer::new(ctx)
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap();
        let (h, c) = seen.lock().unwrap().take().unwrap();
        (h, c)
    }

    #[tokio::test]
    async fn off_forwards_authorization_untouched_and_attaches_nothing() {
        let (headers, caller) = through(
            ctx(AuthMode::Off, None),
            request(Some("Bearer sk-anything")),
        )
        .await;
        assert_eq!(headers["authorization"], "Bearer sk-anything");
        assert_eq!(caller, None);
        let _ = capture; // the shared mocks are not needed here
    }

    #[tokio::test]
    async fn a_valid_key_names_the_caller_and_never_reaches_the_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(KeyStore::open(&dir.path().join("k.json")).unwrap());
        let (_, key) = store
            .add("alice", Role::Manager, None, chrono::Utc::now())
            .unwrap();
        let (headers, caller) = through(
            ctx(AuthMode::Observe, Some(store.clone())),
            request(Some(&format!("Bearer {key}"))),
        )
        .await;
        assert!(headers.get("authorization").is_none());
        assert_eq!(headers["x-custom"], "kept");
        assert_eq!(
            caller,
            Some(Caller {
                identity: Some(Arc::from("alice")),
                role: Some(Role::Manager),
                credential: Credential::Valid,
                key: true,
            })
        );
        // x-api-key (the Anthropic SDK) works the same and is removed too.
        let req = Request::post("/v1/messages")
            .header("x-api-key", key.as_str())
            .body(http_body_util::Empty::new())
            .unwrap();
        let (headers, caller) = through(ctx(AuthMode::Required, Some(store)), req).await;
        assert!(headers.get("x-api-key").is_none());
        assert_eq!(caller.unwrap().identity.as_deref(), Some("alice"));
    }

    #[tokio::test]
    async fn wrong_missing_and_malformed_credentials_are_anonymous_and_still_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(KeyStore::open(&dir.path().join("k.json")).unwrap());
        for (auth, want, key) in [
            (Some("Bearer ogk_0000"), Credential::Invalid, true),
            (Some("Basic dXNlcjpwYXNz"), Credential::Invalid, false),
            (None, Credential::Missing, false),
        ] {
            let (headers, caller) =
                through(ctx(AuthMode::Required, Some(store.clone())), request(auth)).await;
            assert!(headers.get("authorization").is_none());
            let caller = caller.unwrap();
            assert_eq!(caller.credential, want, "{auth:?}");
            assert_eq!(caller.key, key, "{auth:?}");
            assert_eq!(caller.identity, None);
            assert_eq!(caller.role, None);
        }
    }
}
