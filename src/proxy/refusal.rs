//! The answer to a banned source: 403 before anything is forwarded, with a body shaped for
//! the client library of the route family, so each SDK surfaces a readable error instead of
//! a parse failure. 403, not 429 or 5xx: the OpenAI SDK retries those, which would turn one
//! refusal into a retry storm.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;

/// Decides, before forwarding, whether a source is refused.
pub(crate) trait Gate: Send + Sync + 'static {
    /// `Some(rule)` refuses the request (the rule that banned the source or the identity
    /// — the API key's name, when `[auth]` named the caller — or `admin`); the
    /// implementation counts and logs the refusal.
    fn refuse(
        &self,
        src: IpAddr,
        identity: Option<&str>,
        method: &str,
        path: &str,
    ) -> Option<Arc<str>>;

    /// `Some(rule)` when a running request of `src` must be cut now: the source has been
    /// banned since the request started (block mode, `enforcement.abort_in_flight`). Called on
    /// every frame of a running response, so it must cost one atomic load when no ban exists.
    fn cut(&self, _src: IpAddr, _identity: Option<&str>) -> Option<Arc<str>> {
        None
    }

    /// Whether a ban can cut running requests now (block mode and
    /// `enforcement.abort_in_flight`). A request that starts while it cannot does not listen
    /// for bans before its response head (the listener's registration and removal are a
    /// mutex each, per request); its frames still ask [`Gate::cut`].
    fn cuts_now(&self) -> bool {
        true
    }

    /// Whether the guard refuses now (block mode): then a browser's cross-site request
    /// without an `Origin` is refused at the gate.
    fn blocking(&self) -> bool {
        false
    }

    /// A running request was cut by the ban of `rule`: log it (an `aborted` event).
    fn aborted(
        &self,
        _src: IpAddr,
        _identity: Option<&str>,
        _method: &str,
        _path: &str,
        _rule: &str,
    ) {
    }

    /// A signal woken whenever a ban starts, for one proxy worker's requests still waiting
    /// for their response head (`None`: this gate never cuts).
    fn ban_listener(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}

/// The message every refusal carries.
pub(crate) const MESSAGE: &str = "ollama-guard: request blocked: this source is banned";

fn body(value: serde_json::Value) -> Bytes {
    Bytes::from(value.to_string())
}

/// The three bodies, rendered once (a flood of refused requests only clones them).
static NATIVE: LazyLock<Bytes> = LazyLock::new(|| body(serde_json::json!({ "error": MESSAGE })));
static OPENAI: LazyLock<Bytes> = LazyLock::new(|| {
    body(
        serde_json::json!({"error": {"message": MESSAGE, "type": "permission_error", "param": null, "code": "ollama_guard_blocked"}}),
    )
});
static ANTHROPIC: LazyLock<Bytes> = LazyLock::new(|| {
    body(
        serde_json::json!({"type": "error", "error": {"type": "permission_error", "message": MESSAGE}}),
    )
});

/// What Ollama answers a Host it does not serve: `403` with an empty body (and `400` for a
/// request with several `Host` headers, or an HTTP/1.1 one without, as Go's server does).
pub(crate) fn host_refused(
    refusal: crate::proxy::host_guard::HostRefusal,
) -> http::Response<Full<Bytes>> {
    use crate::proxy::host_guard::HostRefusal;
    crate::respond::empty(match refusal {
        HostRefusal::NotAllowed => StatusCode::FORBIDDEN,
        HostRefusal::Malformed | HostRefusal::Missing => StatusCode::BAD_REQUEST,
    })
}

/// A request no listener forwards, whatever its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsupported {
    /// `CONNECT`: a tunnel.
    Connect,
    /// A `Transfer-Encoding` other than one `chunked`.
    TransferCoding,
    /// A request target that is only an authority, with a method other than `CONNECT`.
    AuthorityForm,
}

/// `405` with an empty body for `CONNECT`, `400` for another method's authority-form target;
/// Go's `501 Unsupported transfer encoding` for a transfer coding the proxy cannot decode.
pub(crate) fn unsupported_refused(what: Unsupported) -> http::Response<Full<Bytes>> {
    match what {
        Unsupported::Connect => crate::respond::empty(StatusCode::METHOD_NOT_ALLOWED),
        Unsupported::AuthorityForm => crate::respond::empty(StatusCode::BAD_REQUEST),
        Unsupported::TransferCoding => crate::respond::with_body(
            StatusCode::NOT_IMPLEMENTED,
            crate::respond::PLAIN,
            "Unsupported transfer encoding",
        ),
    }
}

/// A `403` for `path` carrying `message`, shaped for the route family the way its clients
/// read errors: native `{"error": ...}` (ollama-python raises `ResponseError` with it),
/// OpenAI's error object (the SDK raises `PermissionDeniedError`), Anthropic's.
pub(crate) fn shaped(path: &str, message: &str) -> http::Response<Full<Bytes>> {
    let body = if path == "/v1/messages" || path.starts_with("/v1/messages/") {
        serde_json::json!({"type": "error", "error": {"type": "permission_error", "message": message}})
    } else if path.starts_with("/v1/") {
        serde_json::json!({"error": {"message": message, "type": "permission_error", "param": null, "code": "ollama_guard_blocked"}})
    } else {
        serde_json::json!({ "error": message })
    };
    crate::respond::json(StatusCode::FORBIDDEN, body.to_string())
}

/// The 403 body for `path` (normalised), shaped for its route family.
pub(crate) fn forbidden_body(path: &str) -> Bytes {
    let body = if path == "/v1/messages" || path.starts_with("/v1/messages/") {
        &ANTHROPIC
    } else if path.starts_with("/v1/") {
        &OPENAI
    } else {
        &NATIVE
    };
    Bytes::clone(body)
}

/// The 403 response for `path` (normalised), shaped for its route family.
pub(crate) fn forbidden(path: &str) -> http::Response<Full<Bytes>> {
    crate::respond::json(StatusCode::FORBIDDEN, forbidden_body(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(path: &str) -> serde_json::Value {
        let resp = forbidden(path);
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn native_openai_and_anthropic_routes_get_their_own_error_shapes() {
        assert_eq!(
            body("/api/show").await,
            serde_json::json!({"error": MESSAGE})
        );
        assert_eq!(
            body("/v1/chat/completions").await,
            serde_json::json!({"error": {"message": MESSAGE, "type": "permission_error", "param": null, "code": "ollama_guard_blocked"}})
        );
        assert_eq!(
            body("/v1/messages").await,
            serde_json::json!({"type": "error", "error": {"type": "permission_error", "message": MESSAGE}})
        );
        assert_eq!(body("/").await, serde_json::json!({"error": MESSAGE}));
    }
}
