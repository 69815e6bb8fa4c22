//! Auth layer: what `[auth]` allows. Below the ban gate (a banned source is refused before
//! any key matters) and above the policy stage (a stranger's body is never read).
//!
//! `auth.mode = "required"`: a request without a valid key is answered `401` (with
//! `WWW-Authenticate: Bearer`), a model-management route called with a `user` key `403`;
//! neither is forwarded. Bodies are shaped for the route family so each SDK raises its own
//! error type (ollama-python/ollama-js `ResponseError`, OpenAI `AuthenticationError` /
//! `PermissionDeniedError`, Anthropic `authentication_error`). 401 and 403, never 429 or
//! 5xx: the OpenAI SDK would retry those.
//!
//! `auth.mode = "observe"`: nothing is refused; the sink is told what `required` would
//! have done (an `auth` event with `action = "would_refuse"`).
//!
//! The probe routes Ollama clients call before anything else (`HEAD /`, `GET /`,
//! `/api/version`) stay open unless `auth.protect_probes = true`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use prometheus::IntCounter;
use tower::{Layer, Service};

use super::{declares_no_body, refusal_of, Answer, Client, Meta, ShortCircuit};
use crate::auth::store::Role;
use crate::auth::{AuthConfig, AuthMode, Caller, Credential};
use crate::record::Outcome;
use crate::route::Route;

/// One request `required` refuses (or would refuse, in `observe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthNote<'a> {
    /// The client.
    pub(crate) src: IpAddr,
    /// The key's name, for a valid key without the role.
    pub(crate) identity: Option<&'a str>,
    /// The request method.
    pub(crate) method: &'a str,
    /// The normalised path.
    pub(crate) path: &'a str,
    /// 401 or 403.
    pub(crate) status: u16,
    /// `missing_key`, `invalid_key`, `expired_key` or `role`.
    pub(crate) reason: &'static str,
    /// Refused (`required`), or only noted (`observe`).
    pub(crate) enforced: bool,
}

/// Where the layer reports refusals (the record pipeline: an `auth` event, rate-limited).
pub(crate) trait AuthSink: Send + Sync + 'static {
    /// Notes one refusal.
    fn auth_refusal(&self, note: &AuthNote<'_>);
}

/// What the layer shares.
pub(crate) struct AuthCtx {
    /// The live `[auth]` settings.
    pub(crate) config: Arc<ArcSwap<AuthConfig>>,
    /// Where refusals are reported.
    pub(crate) sink: Arc<dyn AuthSink>,
    /// `refused_requests_total{reason="auth"}` (401) and `{reason="role"}` (403).
    pub(crate) refused_auth: IntCounter,
    /// See `refused_auth`.
    pub(crate) refused_role: IntCounter,
    /// `auth_requests_total{result}`, in [`Credential`] order (valid, missing, invalid,
    /// expired).
    pub(crate) results: [IntCounter; 4],
    /// `identity_requests_total{identity}`, counted when `auth.metrics_by_identity` is on.
    pub(crate) by_identity: Arc<crate::telemetry::IdentityCounter>,
}

/// Enforces `[auth]`.
#[derive(Clone)]
pub(crate) struct AuthLayer {
    ctx: Arc<AuthCtx>,
}

impl AuthLayer {
    /// Enforces through `ctx`.
    pub(crate) fn new(ctx: AuthCtx) -> Self {
        AuthLayer { ctx: Arc::new(ctx) }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            ctx: self.ctx.clone(),
        }
    }
}

/// The auth service.
#[derive(Clone)]
pub(crate) struct AuthService<S> {
    inner: S,
    ctx: Arc<AuthCtx>,
}

/// Routes that manage models, or the server's ollama.com account: they need the `manager`
/// role.
pub(crate) fn needs_manager(route: Route, method: &Method) -> bool {
    match route {
        Route::Pull | Route::Push | Route::Create | Route::Copy | Route::Delete => true,
        Route::Account => true,
        Route::Blobs => method == Method::POST,
        _ => false,
    }
}

/// The routes clients probe before anything else (open unless `protect_probes`).
fn is_probe(route: Route, method: &Method) -> bool {
    match route {
        Route::Root => method == Method::GET || method == Method::HEAD,
        Route::Version => true,
        _ => false,
    }
}

/// A CORS preflight: `OPTIONS` with an `Origin` and an `Access-Control-Request-Method`.
fn is_preflight(method: &Method, headers: &http::HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(http::header::ORIGIN)
        && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// What `required` does with a request: `None` lets it through, `Some((status, reason))`
/// refuses it.
pub(crate) fn judge(
    cfg: &AuthConfig,
    caller: Option<&Caller>,
    method: &Method,
    route: Route,
) -> Option<(StatusCode, &'static str)> {
    if cfg.mode == AuthMode::Off || (!cfg.protect_probes && is_probe(route, method)) {
        return None;
    }
    let Some(caller) = caller else {
        return Some((StatusCode::UNAUTHORIZED, Credential::Missing.as_str()));
    };
    if caller.credential != Credential::Valid {
        return Some((StatusCode::UNAUTHORIZED, caller.credential.as_str()));
    }
    if needs_manager(route, method) && caller.role < Some(Role::Manager) {
        return Some((StatusCode::FORBIDDEN, "role"));
    }
    None
}

fn message(status: StatusCode, reason: &str) -> &'static str {
    match (status, reason) {
        (StatusCode::FORBIDDEN, _) => {
            "ollama-guard: this API key may not manage models (pull, push, create, copy, delete need the manager role)"
        }
        (_, "missing_key") => {
            "ollama-guard: an API key is required (send Authorization: Bearer <key>)"
        }
        (_, "expired_key") => "ollama-guard: this API key has expired",
        _ => "ollama-guard: invalid API key",
    }
}

/// The refusal for `path`, shaped for its route family.
pub(crate) fn answer(
    path: &str,
    status: StatusCode,
    reason: &str,
) -> Response<http_body_util::Full<Bytes>> {
    let msg = message(status, reason);
    let unauthorized = status == StatusCode::UNAUTHORIZED;
    let body = if path == "/v1/messages" || path.starts_with("/v1/messages/") {
        let kind = if unauthorized {
            "authentication_error"
        } else {
            "permission_error"
        };
        serde_json::json!({"type": "error", "error": {"type": kind, "message": msg}})
    } else if path.starts_with("/v1/") {
        let (kind, code) = if unauthorized {
            ("invalid_request_error", "invalid_api_key")
        } else {
            ("permission_error", "insufficient_role")
        };
        serde_json::json!({"error": {"message": msg, "type": kind, "param": null, "code": code}})
    } else {
        serde_json::json!({ "error": msg })
    };
    let mut resp = crate::respond::json(status, body.to_string());
    if unauthorized {
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"ollama-guard\""),
        );
    }
    resp
}

impl<S, B, RB> Service<Request<B>> for AuthService<S>
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
        let cfg = **self.ctx.config.load();
        if cfg.mode == AuthMode::Off {
            return ShortCircuit::Inner {
                fut: self.inner.call(req),
            };
        }
        let ext = req.extensions();
        let caller = ext.get::<Caller>();
        let credential = caller.map_or(Credential::Missing, |c| c.credential);
        let ix = match credential {
            Credential::Valid => 0,
            Credential::Missing => 1,
            Credential::Invalid => 2,
            Credential::Expired => 3,
        };
        self.ctx.results[ix].inc();
        if let (true, Some(name)) = (
            cfg.metrics_by_identity,
            caller.and_then(|c| c.identity.as_deref()),
        ) {
            self.ctx.by_identity.inc(name);
        }
        let Some(meta) = ext.get::<Meta>() else {
            return ShortCircuit::Inner {
                fut: self.inner.call(req),
            };
        };
        let cross_site = meta.cross_site;
        // A browser's CORS preflight carries no credentials (the Fetch standard forbids them),
        // and Ollama's CORS handler answers it without running any route: requiring a key
        // would make every browser client that sends one fail before it could.
        let judged = if is_preflight(req.method(), req.headers()) {
            None
        } else {
            judge(&cfg, caller, req.method(), meta.route)
        };
        let Some((status, reason)) = judged else {
            return ShortCircuit::Inner {
                fut: self.inner.call(req),
            };
        };
        let enforced = cfg.mode == AuthMode::Required;
        let client = ext.get::<Client>().copied();
        let src = client.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.src);
        self.ctx.sink.auth_refusal(&AuthNote {
            src,
            identity: caller.and_then(|c| c.identity.as_deref()),
            method: &meta.method_text,
            path: &meta.path,
            status: status.as_u16(),
            reason,
            enforced,
        });
        if !enforced {
            return ShortCircuit::Inner {
                fut: self.inner.call(req),
            };
        }
        if status == StatusCode::UNAUTHORIZED {
            self.ctx.refused_auth.inc();
        } else {
            self.ctx.refused_role.inc();
        }
        // A browser's cross-site 401 without a key (none, or the `Basic` credentials a browser
        // adds by itself) is recorded as a refusal nobody is counted for, so a web page cannot
        // get its visitor's address banned by making failed requests. Only without one: a page
        // can send a key to another site only after a preflight that site's CORS answers
        // (`Authorization` is not a simple header), so a cross-site request with a wrong key
        // comes from a page Ollama allows or from a script that added the mark, and counts
        // toward `auth_failures` like any other.
        let outcome =
            if status == StatusCode::UNAUTHORIZED && cross_site && !caller.is_some_and(|c| c.key) {
                Outcome::Refused
            } else {
                Outcome::Unauthorized
            };
        // The body is dropped unread.
        ShortCircuit::answer(refusal_of(
            answer(&meta.path, status, reason),
            outcome,
            client.as_ref(),
            declares_no_body(req.headers()),
        ))
    }
}

#[cfg(test)]
mod tests;
