//! `/api/keys`: list, add and revoke API keys (README, "Authentication and TLS"). Same
//! access rules as `/api/bans` (admin token when configured; otherwise only an IP literal or
//! `localhost` as `Host`). A new key is in the `POST` answer and nowhere else: the store
//! keeps its SHA-256 only. Changes are on disk before the answer and apply to the next
//! request.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::bans::{read_json, refuse};
use crate::auth::store::{KeyEntry, KeyStore, Role, StoreError};
use crate::respond;

/// Largest accepted request body.
const MAX_BODY: usize = 16 * 1024;

/// `POST /api/keys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    role: Option<String>,
    /// How long the key works (humantime, `30d`); none = until revoked.
    expires_in: Option<String>,
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    respond::json_error(status, message)
}

/// The JSON of one key (never the key itself, which is not stored).
fn entry_json(e: &KeyEntry) -> serde_json::Value {
    serde_json::json!({
        "name": &*e.name,
        "role": e.role.as_str(),
        "created": crate::time::rfc3339_ms(&e.created),
        "expires": e.expires.as_ref().map(crate::time::rfc3339_ms),
    })
}

/// Handles every request under `/api/keys`.
pub(crate) async fn handle(
    store: Option<&Arc<KeyStore>>,
    token: Option<&str>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(refused) = refuse(&req, token) {
        return refused;
    }
    let Some(store) = store.cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "no key file: set auth.keys_file or state_dir and restart",
        );
    };
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.strip_prefix("/api/keys")) {
        (Method::GET, Some("" | "/")) => {
            let keys: Vec<_> = store.list().iter().map(|e| entry_json(e)).collect();
            respond::json(StatusCode::OK, serde_json::Value::from(keys).to_string())
        }
        (Method::POST, Some("" | "/")) => add(store, req).await,
        (Method::DELETE, Some(rest)) if rest.len() > 1 => {
            let name = percent_decode_str(&rest[1..])
                .decode_utf8_lossy()
                .into_owned();
            revoke(store, name).await
        }
        (_, Some("" | "/")) => error(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST"),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn add(store: Arc<KeyStore>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let new: NewKey = match read_json(req, MAX_BODY).await {
        Ok(n) => n,
        Err(refused) => return refused,
    };
    let role_text = new.role.as_deref().unwrap_or("user");
    let Some(role) = Role::parse(role_text) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("role {role_text:?} is not one of user, manager"),
        );
    };
    let now = chrono::Utc::now();
    let expires = match new.expires_in.as_deref() {
        None | Some("") => None,
        Some(text) => match humantime::parse_duration(text)
            .ok()
            .and_then(|d| chrono::TimeDelta::from_std(d).ok())
            .and_then(|d| now.checked_add_signed(d))
        {
            Some(t) if t > now => Some(t),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("expires_in {text:?} is not a duration like 30d"),
                )
            }
        },
    };
    let name = new.name;
    let made = tokio::task::spawn_blocking(move || store.add(&name, role, expires, now)).await;
    match made {
        Ok(Ok((entry, key))) => {
            let mut v = entry_json(&entry);
            v["key"] = serde_json::Value::from(key);
            tracing::info!(name = %entry.name, role = entry.role.as_str(), "API key added");
            respond::json(StatusCode::CREATED, v.to_string())
        }
        Ok(Err(e @ StoreError::Exists(_))) => error(StatusCode::CONFLICT, e),
        Ok(Err(e @ StoreError::BadName(_))) => error(StatusCode::BAD_REQUEST, e),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn revoke(store: Arc<KeyStore>, name: String) -> Response<Full<Bytes>> {
    let gone = tokio::task::spawn_blocking(move || store.revoke(&name).map(|g| (g, name))).await;
    match gone {
        Ok(Ok((Some(entry), _))) => {
            tracing::info!(name = %entry.name, "API key revoked");
            respond::empty(StatusCode::NO_CONTENT)
        }
        Ok(Ok((None, name))) => error(StatusCode::NOT_FOUND, format!("no key named {name:?}")),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
