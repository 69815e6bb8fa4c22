use std::sync::Mutex;

use super::*;
use crate::auth::Credential;
use crate::proxy::fault::FaultCell;
use crate::proxy::layers::test_support::{capture, request_from};
use crate::proxy::layers::Disposition;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// What the sink was told: path, status, reason, enforced, identity.
type Note = (String, u16, &'static str, bool, Option<String>);

#[derive(Default)]
struct Notes(Mutex<Vec<Note>>);

impl AuthSink for Notes {
    fn auth_refusal(&self, n: &AuthNote<'_>) {
        self.0.lock().unwrap().push((
            n.path.to_owned(),
            n.status,
            n.reason,
            n.enforced,
            n.identity.map(str::to_owned),
        ));
    }
}

fn ctx(mode: AuthMode, protect_probes: bool, notes: Arc<Notes>) -> AuthCtx {
    let r = prometheus::Registry::new();
    let m = crate::telemetry::auth_metrics::AuthMetrics::new(&r).unwrap();
    AuthCtx {
        config: Arc::new(ArcSwap::from_pointee(AuthConfig {
            mode,
            protect_probes,
            metrics_by_identity: false,
        })),
        sink: notes,
        refused_auth: IntCounter::new("a", "a").unwrap(),
        refused_role: IntCounter::new("r", "r").unwrap(),
        results: m.results,
        by_identity: m.by_identity,
    }
}

fn caller(credential: Credential, role: Option<Role>) -> Caller {
    Caller {
        identity: role.map(|_| Arc::from("alice")),
        role,
        credential,
        key: credential != Credential::Missing,
    }
}

fn request(
    method: &str,
    path: &'static str,
    who: Option<Caller>,
) -> Request<http_body_util::Empty<Bytes>> {
    let mut req = request_from("192.0.2.9", path);
    *req.method_mut() = method.parse().unwrap();
    let (_, route) = crate::route::normalize_fast(path);
    req.extensions_mut().insert(Meta {
        path: std::borrow::Cow::Borrowed(path),
        method_text: std::borrow::Cow::Owned(method.to_owned()),
        route,
        fault: Arc::new(FaultCell::default()),
        cross_site: false,
    });
    if let Some(c) = who {
        req.extensions_mut().insert(c);
    }
    req
}

async fn json_of(resp: Response<Answer<http_body_util::Empty<Bytes>>>) -> serde_json::Value {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn required_answers_401_in_each_route_familys_shape_and_forwards_nothing() {
    let notes = Arc::new(Notes::default());
    for (path, want) in [
        (
            "/api/chat",
            serde_json::json!({"error": "ollama-guard: an API key is required (send Authorization: Bearer <key>)"}),
        ),
        (
            "/v1/chat/completions",
            serde_json::json!({"error": {"message": "ollama-guard: an API key is required (send Authorization: Bearer <key>)", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
        ),
        (
            "/v1/messages",
            serde_json::json!({"type": "error", "error": {"type": "authentication_error", "message": "ollama-guard: an API key is required (send Authorization: Bearer <key>)"}}),
        ),
    ] {
        let (inner, seen) = capture();
        let svc = AuthLayer::new(ctx(AuthMode::Required, false, notes.clone())).layer(inner);
        let resp = svc
            .oneshot(request(
                "POST",
                path,
                Some(caller(Credential::Missing, None)),
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer realm=\"ollama-guard\""
        );
        assert_eq!(resp.headers()["connection"], "close");
        assert_eq!(
            resp.extensions().get::<Disposition>().map(|d| d.outcome),
            Some(Outcome::Unauthorized)
        );
        assert_eq!(json_of(resp).await, want, "{path}");
        assert!(seen.lock().unwrap().is_empty());
    }
    assert_eq!(notes.0.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_refusal_behind_a_trusted_proxy_leaves_its_connection_open_unless_a_body_was_sent() {
    let notes = Arc::new(Notes::default());
    for (length, closes) in [(None, false), (Some("0"), false), (Some("12"), true)] {
        let (inner, _) = capture();
        let svc = AuthLayer::new(ctx(AuthMode::Required, false, notes.clone())).layer(inner);
        let mut req = request(
            "POST",
            "/api/generate",
            Some(caller(Credential::Missing, None)),
        );
        req.extensions_mut().insert(Client {
            src: "192.0.2.9".parse().unwrap(),
            peer: "10.0.0.1".parse().unwrap(),
            unknown: false,
        });
        if let Some(n) = length {
            req.headers_mut()
                .insert(http::header::CONTENT_LENGTH, n.parse().unwrap());
        }
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers()
                .get("connection")
                .is_some_and(|v| v == "close"),
            closes,
            "{length:?}"
        );
    }
}

#[tokio::test]
async fn a_user_key_may_generate_but_not_manage_models() {
    let notes = Arc::new(Notes::default());
    let user = || Some(caller(Credential::Valid, Some(Role::User)));
    for (method, path, allowed) in [
        ("POST", "/api/chat", true),
        ("GET", "/api/tags", true),
        ("POST", "/v1/chat/completions", true),
        ("HEAD", "/api/blobs/sha256:00", true),
        ("POST", "/api/pull", false),
        ("POST", "/api/push", false),
        ("POST", "/api/create", false),
        ("POST", "/api/copy", false),
        ("DELETE", "/api/delete", false),
        ("POST", "/api/blobs/sha256:00", false),
        // The server's ollama.com account: who it is, and signing it out.
        ("POST", "/api/me", false),
        ("POST", "/api/signout", false),
        ("DELETE", "/api/user/keys/c3NoLWVkMjU1MTk", false),
        // Ollama's web tools run on ollama.com as the server's account, as a `:cloud` model
        // does for a user; the cloud status and the recommended models are reads.
        ("POST", "/api/experimental/web_search", true),
        ("POST", "/api/experimental/web_fetch", true),
        ("GET", "/api/experimental/model-recommendations", true),
        ("GET", "/api/status", true),
        ("POST", "/v1/audio/transcriptions", true),
    ] {
        let (inner, seen) = capture();
        let resp = AuthLayer::new(ctx(AuthMode::Required, false, notes.clone()))
            .layer(inner)
            .oneshot(request(method, path, user()))
            .await
            .unwrap();
        let want = if allowed { 200 } else { 403 };
        assert_eq!(resp.status(), want, "{method} {path}");
        assert_eq!(seen.lock().unwrap().len(), usize::from(allowed));
    }
    // The manager may do it all.
    let (inner, seen) = capture();
    let resp = AuthLayer::new(ctx(AuthMode::Required, false, notes.clone()))
        .layer(inner)
        .oneshot(request(
            "POST",
            "/api/pull",
            Some(caller(Credential::Valid, Some(Role::Manager))),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(seen.lock().unwrap().len(), 1);
    let last = notes.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        last,
        (
            "/api/user/keys/c3NoLWVkMjU1MTk".to_owned(),
            403,
            "role",
            true,
            Some("alice".to_owned())
        )
    );
}

#[tokio::test]
async fn the_openai_role_refusal_is_a_permission_error() {
    let resp = answer("/v1/models", StatusCode::FORBIDDEN, "role");
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("www-authenticate").is_none());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "permission_error");
    assert_eq!(v["error"]["code"], "insufficient_role");
}

#[tokio::test]
async fn observe_changes_no_response_but_notes_what_required_would_do() {
    let notes = Arc::new(Notes::default());
    for who in [
        None,
        Some(caller(Credential::Invalid, None)),
        Some(caller(Credential::Expired, None)),
        Some(caller(Credential::Valid, Some(Role::User))),
    ] {
        let (inner, seen) = capture();
        let resp = AuthLayer::new(ctx(AuthMode::Observe, false, notes.clone()))
            .layer(inner)
            .oneshot(request("POST", "/api/pull", who))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
    let got: Vec<_> = notes
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|n| (n.1, n.2, n.3))
        .collect();
    assert_eq!(
        got,
        [
            (401, "missing_key", false),
            (401, "invalid_key", false),
            (401, "expired_key", false),
            (403, "role", false)
        ]
    );
}

#[tokio::test]
async fn probes_stay_open_unless_protected() {
    for (protect, want) in [(false, 200), (true, 401)] {
        for (method, path) in [("HEAD", "/"), ("GET", "/"), ("GET", "/api/version")] {
            let (inner, _) = capture();
            let resp = AuthLayer::new(ctx(AuthMode::Required, protect, Arc::default()))
                .layer(inner)
                .oneshot(request(
                    method,
                    path,
                    Some(caller(Credential::Missing, None)),
                ))
                .await
                .unwrap();
            assert_eq!(resp.status(), want, "{method} {path} protect={protect}");
        }
    }
    // Everything else needs a key even when probes are open.
    let (inner, _) = capture();
    let resp = AuthLayer::new(ctx(AuthMode::Required, false, Arc::default()))
        .layer(inner)
        .oneshot(request("GET", "/api/tags", None))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn a_cors_preflight_needs_no_key_and_anything_else_without_one_is_401() {
    let preflight = |method: &str, origin: bool, asked: bool| {
        let mut req = request(method, "/api/chat", None);
        if origin {
            req.headers_mut()
                .insert("origin", "http://localhost:5173".parse().unwrap());
        }
        if asked {
            req.headers_mut()
                .insert("access-control-request-method", "POST".parse().unwrap());
        }
        req
    };
    for (method, origin, asked, want) in [
        ("OPTIONS", true, true, 200),
        ("OPTIONS", false, true, 401),
        ("OPTIONS", true, false, 401),
        ("POST", true, true, 401),
    ] {
        let (inner, seen) = capture();
        let resp = AuthLayer::new(ctx(AuthMode::Required, false, Arc::default()))
            .layer(inner)
            .oneshot(preflight(method, origin, asked))
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            want,
            "{method} origin={origin} asked={asked}"
        );
        assert_eq!(seen.lock().unwrap().len(), usize::from(want == 200));
    }
}

#[tokio::test]
async fn a_browsers_cross_site_401_without_a_key_is_recorded_so_nobody_is_counted_for_it() {
    // Without a key, or with the `Basic` credentials a browser adds by itself, nobody is
    // counted. A key is not something a page can send to another site without that site's
    // consent: a script adding the mark to guess keys is counted like any other.
    for (credential, key, outcome) in [
        (None, false, Outcome::Refused),
        (Some(Credential::Invalid), false, Outcome::Refused),
        (Some(Credential::Invalid), true, Outcome::Unauthorized),
        (Some(Credential::Expired), true, Outcome::Unauthorized),
    ] {
        let (inner, _) = capture();
        let who = credential.map(|c| Caller {
            key,
            ..caller(c, None)
        });
        let mut req = request("GET", "/api/tags", who);
        req.headers_mut()
            .insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        // What the record layer reads into the meta.
        req.extensions_mut().get_mut::<Meta>().unwrap().cross_site = true;
        let resp = AuthLayer::new(ctx(AuthMode::Required, false, Arc::default()))
            .layer(inner)
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.extensions().get::<Disposition>().map(|d| d.outcome),
            Some(outcome),
            "{credential:?} key={key}"
        );
    }
}

#[tokio::test]
async fn off_passes_everything_untouched() {
    let (inner, seen) = capture();
    let resp = AuthLayer::new(ctx(AuthMode::Off, true, Arc::default()))
        .layer(inner)
        .oneshot(request("POST", "/api/push", None))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(seen.lock().unwrap().len(), 1);
}
