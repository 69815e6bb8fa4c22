//! The one place responses the guard writes itself are built: the proxy's refusals and
//! failure answers, and the admin listener's pages. Each has an exact `Content-Length`
//! (`Full`), a content type, and — for JSON errors — the `{"error": "..."}` shape Ollama's own
//! errors have, which its clients surface as the message.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;

/// `application/json; charset=utf-8`.
pub(crate) const JSON: &str = "application/json; charset=utf-8";
/// `text/plain; charset=utf-8`.
pub(crate) const PLAIN: &str = "text/plain; charset=utf-8";

/// A response of `status` with `body` of `content_type`.
pub(crate) fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    with_body(status, JSON, body)
}

/// `{"error": message}` with `status`.
pub(crate) fn json_error(
    status: StatusCode,
    message: impl std::fmt::Display,
) -> Response<Full<Bytes>> {
    json(
        status,
        serde_json::json!({ "error": message.to_string() }).to_string(),
    )
}

/// A response with no body (`Content-Length: 0`) and no content type.
pub(crate) fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn json_errors_have_ollamas_shape_and_a_content_type() {
        let resp = json_error(StatusCode::BAD_GATEWAY, "ollama-guard: \"x\"");
        assert_eq!(resp.status(), 502);
        assert_eq!(resp.headers()["content-type"], JSON);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"error":"ollama-guard: \"x\""}"#);
        let e = empty(StatusCode::FORBIDDEN);
        assert!(e.headers().get("content-type").is_none());
    }
}
