//! Building responses the way Ollama (Go `net/http` + gin) shapes them.
//!
//! Fixed bodies carry `Content-Length`, streams are chunked. JSON is escaped like Go's
//! `encoding/json` (`<`, `>`, `&`, U+2028 and U+2029 as `\u00XX` escapes), so byte-level
//! comparisons against real Ollama output hold.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Response, StatusCode};
use serde::Serialize;

use super::body::{Payload, SimBody, StreamPlan};
use super::log::Tracker;

/// gin's `c.JSON` content type.
pub(crate) const JSON_UTF8: &str = "application/json; charset=utf-8";
/// Content type set by handlers that write JSON themselves (OpenAI middleware,
/// `waitForStream`).
pub(crate) const JSON_PLAIN: &str = "application/json";
/// gin's `c.String` content type.
pub(crate) const TEXT_UTF8: &str = "text/plain; charset=utf-8";
/// gin's default 404/405 body content type.
pub(crate) const TEXT_PLAIN: &str = "text/plain";
/// Ollama's native streaming content type.
pub(crate) const NDJSON: &str = "application/x-ndjson";
/// The OpenAI-compatible streaming content type.
pub(crate) const EVENT_STREAM: &str = "text/event-stream";

/// A response before it is bound to its request's tracker.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    /// Extra headers (a short list keeps `Reply` small; most replies carry one).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) payload: Payload,
}

// === impl Reply ===

impl Reply {
    /// A response with no body and no content type (Go sends `Content-Length: 0`).
    pub(crate) fn empty(status: StatusCode) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            payload: Payload::Empty,
        }
    }

    /// A fixed body with the given content type.
    pub(crate) fn bytes(status: StatusCode, content_type: &'static str, body: Bytes) -> Self {
        let headers = vec![(CONTENT_TYPE, HeaderValue::from_static(content_type))];
        Reply {
            status,
            headers,
            payload: Payload::Full(body),
        }
    }

    /// gin's `c.JSON`: compact JSON, no trailing newline.
    pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Self {
        Self::bytes(status, JSON_UTF8, go_json(value))
    }

    /// `json.NewEncoder(w).Encode(v)` under an explicit `application/json`: trailing newline.
    pub(crate) fn json_line<T: Serialize>(status: StatusCode, value: &T) -> Self {
        Self::bytes(status, JSON_PLAIN, go_json_line(value))
    }

    /// Ollama's native error body, `{"error":"..."}`.
    pub(crate) fn error(status: StatusCode, message: &str) -> Self {
        Self::json(status, &ErrorBody { error: message })
    }

    /// A chunked stream with the given content type.
    pub(crate) fn stream(content_type: &'static str, plan: StreamPlan) -> Self {
        let headers = vec![(CONTENT_TYPE, HeaderValue::from_static(content_type))];
        Reply {
            status: StatusCode::OK,
            headers,
            payload: Payload::Stream(Box::new(plan)),
        }
    }

    /// Binds the reply to its tracker. A HEAD answer keeps the `Content-Length` the GET
    /// body would have had but carries no bytes, as Go's `net/http` does.
    pub(crate) fn into_response(self, method: &Method, tracker: Tracker) -> Response<SimBody> {
        let Reply {
            status,
            headers,
            payload,
        } = self;
        let mut map = HeaderMap::with_capacity(headers.len() + 1);
        map.extend(headers);
        let payload = match payload {
            Payload::Full(body) if method == Method::HEAD => {
                map.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
                Payload::Empty
            }
            Payload::Stream(_) if method == Method::HEAD => Payload::Empty,
            other => other,
        };
        let mut response = Response::new(SimBody::new(payload, tracker));
        *response.status_mut() = status;
        *response.headers_mut() = map;
        response
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// Serialises like Go's `json.Marshal`: compact, HTML-sensitive characters escaped.
pub(crate) fn go_json<T: Serialize>(value: &T) -> Bytes {
    // Serialising our own plain structs cannot fail; an empty object is a safe fallback.
    let text = serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"));
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            other => out.push(other),
        }
    }
    Bytes::from(out)
}

/// [`go_json`] plus the newline `json.Encoder` (and Ollama's NDJSON writer) appends.
pub(crate) fn go_json_line<T: Serialize>(value: &T) -> Bytes {
    let mut line = go_json(value).to_vec();
    line.push(b'\n');
    Bytes::from(line)
}

/// One server-sent event carrying `value` as JSON: `data: {...}\n\n`.
pub(crate) fn sse_event<T: Serialize>(value: &T) -> Bytes {
    let json = go_json(value);
    let mut event = Vec::with_capacity(json.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(&json);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// The native in-band error line of a failing stream.
pub(crate) fn error_line(message: &str) -> Bytes {
    go_json_line(&ErrorBody { error: message })
}

/// Timestamps as Go's `time.Time` marshals them (RFC 3339 with nanoseconds, UTC).
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_json_escapes_html_characters_like_encoding_json() {
        let body = go_json(&serde_json::json!({"t": "<|x|> & \u{2028}"}));
        assert_eq!(&body[..], br#"{"t":"\u003c|x|\u003e \u0026 \u2028"}"#);
    }

    #[test]
    fn json_line_ends_with_one_newline() {
        assert_eq!(
            &go_json_line(&serde_json::json!({"a": 1}))[..],
            b"{\"a\":1}\n"
        );
    }

    #[test]
    fn sse_event_frames_json_as_one_data_event() {
        assert_eq!(&sse_event(&serde_json::json!([1]))[..], b"data: [1]\n\n");
    }

    #[test]
    fn error_reply_is_gin_json() {
        let reply = Reply::error(StatusCode::NOT_FOUND, "model 'x' not found");
        assert_eq!(
            reply.headers,
            [(CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8))]
        );
        match reply.payload {
            Payload::Full(b) => assert_eq!(&b[..], br#"{"error":"model 'x' not found"}"#),
            other => panic!("unexpected payload {other:?}"),
        }
    }
}
