//! Blob upload and model bookkeeping: `HEAD|POST /api/blobs/:digest`, `POST /api/copy`,
//! `DELETE /api/delete`.
//!
//! Uploads are the proxy's hardest streaming case (multi-GB bodies, `Expect: 100-continue`),
//! so the simulator hashes them incrementally frame by frame and never holds one in memory.

use std::sync::PoisonError;

use http::StatusCode;
use serde_json::Value;

use super::call::{str_field, Call};
use super::models;
use super::reply::Reply;

/// Ollama's `BlobsPath` pattern: `sha256:` or `sha256-` then 64 hex digits (any case).
fn valid_digest(digest: &str) -> bool {
    let hex = digest
        .strip_prefix("sha256:")
        .or_else(|| digest.strip_prefix("sha256-"));
    hex.is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Ollama stores a blob under `sha256-<hex>`, so both spellings find it.
fn store_key(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

fn is_stored(call: &Call, digest: &str) -> bool {
    call.state
        .blobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&store_key(digest))
}

/// `HEAD /api/blobs/:digest`: 200 if stored, else 404 (the JSON error's length, no bytes).
pub(crate) fn head(call: &Call) -> Reply {
    let digest = call.param.as_str();
    if !valid_digest(digest) {
        return Reply::error(StatusCode::BAD_REQUEST, "invalid digest format");
    }
    if is_stored(call, digest) {
        Reply::empty(StatusCode::OK)
    } else {
        Reply::error(
            StatusCode::NOT_FOUND,
            &format!("blob \"{digest}\" not found"),
        )
    }
}

/// `POST /api/blobs/:digest`: 201 when the body hashes to the digest, 400 otherwise; 200
/// without reading the body when the blob is already stored, as Ollama does.
pub(crate) async fn upload(call: &mut Call) -> Reply {
    let digest = call.param.clone();
    if !valid_digest(&digest) {
        return Reply::error(StatusCode::BAD_REQUEST, "invalid digest format");
    }
    if is_stored(call, &digest) {
        return Reply::empty(StatusCode::OK);
    }
    let Some(hex) = call.consume_body(|_| {}).await else {
        return Reply::error(StatusCode::BAD_REQUEST, "client disconnected");
    };
    let got = format!("sha256:{hex}");
    if got != digest {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            &format!("digest mismatch, expected \"{digest}\", got \"{got}\""),
        );
    }
    call.state
        .blobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(store_key(&digest));
    Reply::empty(StatusCode::CREATED)
}

/// `POST /api/copy`: 200 with no body, 404 for an unknown source.
pub(crate) async fn copy(call: &mut Call) -> Reply {
    let body = match call.native_json("api.CopyRequest").await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default();
    let (source, destination) = (field("source"), field("destination"));
    if source.is_empty() {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            &format!("source \"{source}\" is invalid"),
        );
    }
    if destination.is_empty() {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            &format!("destination \"{destination}\" is invalid"),
        );
    }
    if models::find(source).is_none() {
        return Reply::error(
            StatusCode::NOT_FOUND,
            &format!("model \"{source}\" not found"),
        );
    }
    Reply::empty(StatusCode::OK)
}

/// `DELETE /api/delete`: 200 with no body for an installed model (which the simulator keeps
/// listing, so runs stay repeatable), 404 otherwise.
pub(crate) async fn delete(call: &mut Call) -> Reply {
    let body = match call.native_json("api.DeleteRequest").await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let name = str_field(&body, "model", "DeleteRequest")
        .and_then(|m| Ok(m.or(str_field(&body, "name", "DeleteRequest")?)));
    let name = match name {
        Ok(name) => name.unwrap_or_default(),
        Err(e) => return Reply::error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if name.is_empty() {
        return Reply::error(StatusCode::BAD_REQUEST, "name \"\" is invalid");
    }
    match models::find(name) {
        Some(_) => Reply::empty(StatusCode::OK),
        None => Reply::error(StatusCode::NOT_FOUND, &format!("model '{name}' not found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_format_follows_ollama_blobs_path() {
        let hex = "a".repeat(64);
        assert!(valid_digest(&format!("sha256:{hex}")));
        assert!(valid_digest(&format!("sha256-{}", "F".repeat(64))));
        assert!(!valid_digest(&format!("sha256:{}", "a".repeat(63))));
        assert!(!valid_digest(&format!("sha512:{hex}")));
        assert!(!valid_digest(&format!("sha256:{}g", "a".repeat(63))));
    }

    #[test]
    fn both_spellings_share_one_store_key() {
        let hex = "b".repeat(64);
        assert_eq!(
            store_key(&format!("sha256:{hex}")),
            store_key(&format!("sha256-{hex}"))
        );
    }
}
