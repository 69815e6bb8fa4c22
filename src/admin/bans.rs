//! `/api/bans`: list, add and lift bans (see README, "Admin listener"). Input is validated
//! (bad IP/CIDR or duration → 400 with a JSON error); sources are parsed by
//! [`crate::ip::parse_cidr`], the same function the config uses, so a network the config
//! refuses is refused here too. An allowlisted source is refused (409) unless the request
//! says `"force": true`. When `admin_token` is configured every call needs
//! `Authorization: Bearer <token>` (scheme in any case).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use crate::enforce::{EnforceError, Enforcement};
use crate::ip::parse_cidr;
use crate::respond;

/// Largest accepted request body.
const MAX_BODY: usize = 64 * 1024;

/// `POST /api/bans` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBan {
    src: String,
    duration: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    force: bool,
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    crate::respond::json_error(status, message)
}

/// The `Bearer` credentials of the request's one `Authorization` header; none when there are
/// two (which one would count is a guess: refused, as the proxy listener refuses them).
fn given_token(req: &Request<Incoming>) -> Option<&str> {
    let mut all = req.headers().get_all(http::header::AUTHORIZATION).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => v.to_str().ok().and_then(bearer_credentials),
        _ => None,
    }
}

fn authorised(req: &Request<Incoming>, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let given = given_token(req);
    // Compare without an early exit so the time taken does not reveal a matching prefix.
    given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

/// The credentials of a `Bearer` `Authorization` value. The scheme is case-insensitive
/// and followed by one or more spaces (RFC 9110 §11.4), so `bearer  TOKEN` from a client
/// library that spells it differently is accepted too.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    let credentials = rest.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

/// Without a token, only requests addressed to an IP literal or `localhost` are served: a
/// web page cannot reach the API through DNS rebinding.
fn host_ok(req: &Request<Incoming>) -> bool {
    let Some(host) = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return true; // HTTP/1.0 without Host: not a browser
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// The access rule of every admin API call (`/api/bans`, `/api/keys`, `/api/status`):
/// without an `admin_token`, only an IP literal or `localhost` as `Host` (no DNS rebinding);
/// with one, `Authorization: Bearer <token>`. `Some(answer)` refuses the call.
pub(super) fn refuse(
    req: &Request<Incoming>,
    token: Option<&str>,
) -> Option<Response<Full<Bytes>>> {
    if token.is_none() && !host_ok(req) {
        return Some(error(
            StatusCode::FORBIDDEN,
            "the admin API answers only to an IP address or localhost as Host",
        ));
    }
    if !authorised(req, token) {
        // A `Bearer` token was sent: it is not the configured one. (Which of the two a caller
        // gets depends on its own header only, never on the token's value.)
        let sent = given_token(req).is_some();
        let message = if sent {
            "admin token wrong"
        } else {
            "admin token required"
        };
        let mut r = error(StatusCode::UNAUTHORIZED, message);
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return Some(r);
    }
    None
}

/// Handles every request under `/api/bans`. `keys` is the API key store: an identity ban
/// (`"src": "identity:NAME"`) must name a key in it.
pub(crate) async fn handle(
    enf: &Arc<Enforcement>,
    keys: Option<&Arc<crate::auth::store::KeyStore>>,
    token: Option<&str>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(refused) = refuse(&req, token) {
        return refused;
    }
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.strip_prefix("/api/bans")) {
        (Method::GET, Some("" | "/")) => list(enf),
        (Method::POST, Some("" | "/")) => add(enf, keys, req).await,
        (Method::DELETE, Some(rest)) if rest.len() > 1 => {
            let text = percent_decode_str(&rest[1..])
                .decode_utf8_lossy()
                .into_owned();
            remove(enf, &text).await
        }
        (_, Some("" | "/")) => error(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST"),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn list(enf: &Enforcement) -> Response<Full<Bytes>> {
    let mut bans: Vec<serde_json::Value> = enf
        .list()
        .iter()
        .map(|b| serde_json::to_value(b).unwrap_or_default())
        .collect();
    bans.extend(enf.list_identities().iter().map(identity_json));
    respond::json(StatusCode::OK, serde_json::Value::from(bans).to_string())
}

/// Whether the body is declared JSON. A browser cannot send `application/json` cross-site
/// without a CORS preflight, which this API never grants: no cross-site request forgery of
/// bans or keys.
pub(super) fn json_content(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        })
}

/// The JSON of an identity ban: `identity` where an address ban has `src`.
pub(super) fn identity_json(b: &crate::enforce::identity::IdentityBan) -> serde_json::Value {
    serde_json::json!({
        "identity": &*b.identity,
        "until": crate::time::rfc3339_ms(&b.until),
        "reason": b.reason,
        "offence": b.offence,
        "rule": &*b.rule,
        "since": crate::time::rfc3339_ms(&b.since),
    })
}

/// The JSON body of an admin `POST` (at most `max` bytes), or the answer refusing it: 415
/// when it is not declared JSON, 400 when it cannot be read or parsed.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    max: usize,
) -> Result<T, Response<Full<Bytes>>> {
    if !json_content(&req) {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    let read = Limited::new(req.into_body(), max).collect();
    let body = match tokio::time::timeout(super::ADMIN_BODY_TIMEOUT, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("cannot read body: {e}"),
            ))
        }
        Err(_) => {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            ))
        }
    };
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))
}

/// The longest reason a ban may be given.
const MAX_REASON: usize = 1024;

async fn add(
    enf: &Enforcement,
    keys: Option<&Arc<crate::auth::store::KeyStore>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let new: NewBan = match read_json(req, MAX_BODY).await {
        Ok(n) => n,
        Err(refused) => return refused,
    };
    let text = new.duration.as_deref().unwrap_or("1h");
    let duration = match humantime::parse_duration(text) {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad duration {text:?}: {e}"),
            )
        }
    };
    let reason = new.reason.unwrap_or_else(|| "manual".to_owned());
    if reason.len() > MAX_REASON {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "reason: at most {MAX_REASON} bytes (got {}); a ban's reason travels with it to every replica and log line",
                reason.len()
            ),
        );
    }
    if let Some(name) = new.src.strip_prefix(crate::enforce::identity::PREFIX) {
        if keys.and_then(|k| k.get(name)).is_none() {
            return error(
                StatusCode::NOT_FOUND,
                format!("no API key named {name:?} (see /api/keys)"),
            );
        }
        return match enf.admin_add_identity(name, duration, reason).await {
            Ok(ban) => created(enf, &new.src, identity_json(&ban)),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        };
    }
    let src = match parse_cidr(&new.src) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match enf.admin_add(src, duration, reason, new.force).await {
        Ok(ban) => created(
            enf,
            &ban.src_display(),
            serde_json::to_value(&ban).unwrap_or_default(),
        ),
        Err(e @ (EnforceError::Allowlisted { .. } | EnforceError::TooWide { .. })) => {
            error(StatusCode::CONFLICT, e)
        }
        Err(e @ EnforceError::NotPersisted { .. }) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// What a manual ban in monitor mode carries in its answer (and the server's WARN line):
/// it is stored and listed, but no request is refused until the mode is `block`.
pub(crate) const MONITOR_WARNING: &str =
    "stored but not enforced: mode is monitor; bans are enforced in block mode";

/// The 201 answer of a new ban `json` (of `src`), with a `warning` in monitor mode.
fn created(enf: &Enforcement, src: &str, mut json: serde_json::Value) -> Response<Full<Bytes>> {
    if !enf.block_mode() {
        tracing::warn!(src = %src, "manual ban {MONITOR_WARNING}");
        json["warning"] = serde_json::Value::from(MONITOR_WARNING);
    }
    respond::json(StatusCode::CREATED, json.to_string())
}

async fn remove(enf: &Enforcement, text: &str) -> Response<Full<Bytes>> {
    if let Some(name) = text.strip_prefix(crate::enforce::identity::PREFIX) {
        return match enf.admin_remove_identity(name).await {
            Ok(Some(_)) => crate::respond::empty(StatusCode::NO_CONTENT),
            Ok(None) => error(StatusCode::NOT_FOUND, format!("no ban for {text}")),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        };
    }
    let src = match parse_cidr(text) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match enf.admin_remove(&src).await {
        Ok(Some(_)) => {
            let mut r = crate::respond::empty(StatusCode::NO_CONTENT);
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no ban for {text}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_credentials;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_takes_any_run_of_spaces() {
        assert_eq!(bearer_credentials("Bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials("bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials("BEARER    abc"), Some("abc"));
        assert_eq!(bearer_credentials("Bearer"), None);
        assert_eq!(bearer_credentials("Bearer   "), None);
        assert_eq!(bearer_credentials("Basic abc"), None);
        assert_eq!(bearer_credentials("Bearerabc"), None);
    }
}
