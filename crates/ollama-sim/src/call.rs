//! One request in flight: its parts, controls, tracker, and helpers to read its body the way
//! gin's `ShouldBindJSON` does (same error messages for the common failures).

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::body::{Chunk, StreamPlan};
use super::controls::Controls;
use super::log::Tracker;
use super::reply::Reply;
use super::SimState;

/// A request being handled.
pub(crate) struct Call {
    pub(crate) state: Arc<SimState>,
    pub(crate) parts: Parts,
    pub(crate) controls: Controls,
    pub(crate) tracker: Tracker,
    /// The route's path parameter (`:digest`, `:model`), percent-decoded.
    pub(crate) param: String,
    body: Option<Incoming>,
}

/// Why a JSON body could not be used; rendered by the caller in the route family's shape.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// Empty body (Go's `io.EOF`).
    #[error("missing request body")]
    Missing,
    /// Not JSON, or not the expected shape; the text mimics Go's `encoding/json`.
    #[error("{0}")]
    Invalid(String),
    /// The client went away while sending the body.
    #[error("client disconnected while sending the request body")]
    Gone,
}

// === impl Call ===

impl Call {
    pub(crate) fn new(
        state: Arc<SimState>,
        parts: Parts,
        body: Incoming,
        tracker: Tracker,
    ) -> Self {
        let controls = Controls::from_headers(&parts.headers, &state.cfg);
        Call {
            state,
            parts,
            controls,
            tracker,
            param: String::new(),
            body: Some(body),
        }
    }

    /// Streams the request body through `sink` frame by frame (never buffering it here),
    /// hashing and counting it, and records length and digest in the log. Returns the
    /// lower-case hex SHA-256, or `None` if the client went away.
    pub(crate) async fn consume_body(&mut self, mut sink: impl FnMut(&Bytes)) -> Option<String> {
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let Some(mut body) = self.body.take() else {
            return Some(hex(&hasher.finalize()));
        };
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                self.tracker.client_gone();
                return None;
            };
            if let Ok(data) = frame.into_data() {
                hasher.update(&data);
                len += data.len() as u64;
                sink(&data);
            }
        }
        let digest = hex(&hasher.finalize());
        self.tracker.record_body(len, digest.clone());
        Some(digest)
    }

    /// Reads the whole body as a JSON object.
    pub(crate) async fn json(&mut self, go_type: &str) -> Result<Value, BodyError> {
        let mut buf = Vec::new();
        self.consume_body(|data| buf.extend_from_slice(data))
            .await
            .ok_or(BodyError::Gone)?;
        parse_object(&buf, go_type)
    }

    /// The native JSON body, with gin-style 400s for unusable bodies.
    pub(crate) async fn native_json(&mut self, go_type: &str) -> Result<Value, Reply> {
        self.json(go_type)
            .await
            .map_err(|e| Reply::error(StatusCode::BAD_REQUEST, &e.to_string()))
    }

    /// A plan for a streamed answer under this request's controls.
    pub(crate) fn plan(&self, chunks: Vec<Chunk>, error_line: Bytes) -> StreamPlan {
        StreamPlan::new(&self.controls, chunks, error_line)
    }

    /// Waits as long as the stream would have taken; used by `"stream": false` answers.
    pub(crate) async fn generate_time(&self) {
        let total = self.controls.stream_duration();
        if !total.is_zero() {
            tokio::time::sleep(total).await;
        }
    }
}

/// Parses a request body like `json.Decoder.Decode` into a Go struct named `go_type`.
pub(crate) fn parse_object(buf: &[u8], go_type: &str) -> Result<Value, BodyError> {
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Missing);
    }
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    let value = match stream.next() {
        Some(Ok(value)) => value,
        Some(Err(e)) if e.is_eof() => return Err(BodyError::Invalid("unexpected EOF".into())),
        Some(Err(e)) => return Err(BodyError::Invalid(syntax_message(buf, &e))),
        None => return Err(BodyError::Missing),
    };
    if value.is_object() {
        Ok(value)
    } else {
        Err(BodyError::Invalid(format!(
            "json: cannot unmarshal {} into Go value of type {go_type}",
            go_kind(&value)
        )))
    }
}

/// A string field, `Ok(None)` when absent or null; a non-string is Go's unmarshal error.
pub(crate) fn str_field<'v>(
    body: &'v Value,
    field: &str,
    go_struct: &str,
) -> Result<Option<&'v str>, BodyError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(BodyError::Invalid(format!(
            "json: cannot unmarshal {} into Go struct field {go_struct}.{field} of type string",
            go_kind(other)
        ))),
    }
}

/// A boolean field, `Ok(None)` when absent or null; anything else is Go's unmarshal error.
pub(crate) fn bool_field(
    body: &Value,
    field: &str,
    go_struct: &str,
) -> Result<Option<bool>, BodyError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(BodyError::Invalid(format!(
            "json: cannot unmarshal {} into Go struct field {go_struct}.{field} of type bool",
            go_kind(other)
        ))),
    }
}

/// Ollama's `stream` flag: streaming unless explicitly `false`.
pub(crate) fn wants_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(true)
}

fn go_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go reports the offending character: `invalid character 'x' looking for beginning of value`.
fn syntax_message(buf: &[u8], err: &serde_json::Error) -> String {
    let offending = buf
        .split(|b| *b == b'\n')
        .nth(err.line().saturating_sub(1))
        .and_then(|line| line.get(err.column().saturating_sub(1)))
        .copied()
        .unwrap_or(b'?');
    format!(
        "invalid character '{}' looking for beginning of value",
        char::from(offending)
    )
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(buf: &[u8]) -> String {
        parse_object(buf, "api.GenerateRequest")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_or_blank_body_is_missing() {
        assert_eq!(err(b""), "missing request body");
        assert_eq!(err(b" \n"), "missing request body");
    }

    #[test]
    fn syntax_errors_name_the_offending_character() {
        assert_eq!(
            err(b"xyz"),
            "invalid character 'x' looking for beginning of value"
        );
        assert_eq!(err(b"{\"model\":"), "unexpected EOF");
    }

    #[test]
    fn non_objects_are_unmarshal_errors() {
        assert_eq!(
            err(b"[1,2]"),
            "json: cannot unmarshal array into Go value of type api.GenerateRequest"
        );
    }

    #[test]
    fn str_field_rejects_non_strings_like_go() {
        let v = serde_json::json!({"model": 5, "name": "x"});
        assert_eq!(str_field(&v, "name", "ShowRequest").unwrap(), Some("x"));
        assert_eq!(str_field(&v, "nope", "ShowRequest").unwrap(), None);
        assert_eq!(
            str_field(&v, "model", "ShowRequest")
                .unwrap_err()
                .to_string(),
            "json: cannot unmarshal number into Go struct field ShowRequest.model of type string"
        );
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
    }
}
