//! `ollama-guard bans list|add|remove`: a thin client of the admin API, so operators never
//! hand-write JSON. Table output on a terminal, the API's JSON otherwise (for scripts).
//!
//! [`run`] returns the text to print; the command (`src/commands/bans.rs`) prints it and
//! chooses the exit code.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::config::{BansAction, BansArgs};

/// Why a `bans` action failed: the admin API was unreachable, or refused the action (the
/// message names the status and the API's error text).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BansError(String);

async fn call(
    args: &BansArgs,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<(u16, String), BansError> {
    call_admin(&args.admin, args.token.as_deref(), method, path, body).await
}

async fn call_admin(
    admin: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<(u16, String), BansError> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("{}{path}", admin.trim_end_matches('/'));
    let mut req = Request::builder().method(method).uri(&url);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| BansError(format!("bad admin URL {url:?}: {e}")))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| BansError(format!("cannot reach the admin API at {url}: {e}")))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| BansError(format!("reading the answer of {url}: {e}")))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn table(json: &str) -> String {
    let Ok(serde_json::Value::Array(bans)) = serde_json::from_str::<serde_json::Value>(json) else {
        return json.to_owned();
    };
    if bans.is_empty() {
        return "no active bans\n".to_owned();
    }
    let field = |b: &serde_json::Value, k: &str| match &b[k] {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let mut out = format!(
        "{:<28} {:<26} {:>7} {:<20} REASON\n",
        "SRC", "UNTIL", "OFFENCE", "RULE"
    );
    for b in &bans {
        let who = match &b["identity"] {
            serde_json::Value::String(name) => format!("identity:{name}"),
            _ => field(b, "src"),
        };
        out.push_str(&format!(
            "{:<28} {:<26} {:>7} {:<20} {}\n",
            who,
            field(b, "until"),
            field(b, "offence"),
            field(b, "rule"),
            field(b, "reason")
        ));
    }
    out
}

/// Runs one `bans` action against the admin API and returns what to print on stdout: a
/// table (`list`) or a sentence (`add`) when `stdout_is_terminal`, else the API's JSON; the
/// same `unbanned <src>` line for `remove` either way.
pub async fn run(args: &BansArgs, stdout_is_terminal: bool) -> Result<String, BansError> {
    let (expect, result) = match &args.action {
        BansAction::List => (200, call(args, Method::GET, "/api/bans", None).await?),
        BansAction::Add {
            src,
            duration,
            reason,
            force,
        } => {
            let body = serde_json::json!({"src": src, "duration": duration, "reason": reason, "force": force});
            (
                201,
                call(args, Method::POST, "/api/bans", Some(body.to_string())).await?,
            )
        }
        BansAction::Remove { src } => {
            let path = format!("/api/bans/{}", utf8_percent_encode(src, NON_ALPHANUMERIC));
            (204, call(args, Method::DELETE, &path, None).await?)
        }
    };
    let (status, body) = result;
    if status != expect {
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(body);
        return Err(BansError(format!("admin API answered {status}: {msg}")));
    }
    Ok(match (&args.action, stdout_is_terminal) {
        (BansAction::List, true) => table(&body),
        (BansAction::Remove { src }, _) => format!("unbanned {src}\n"),
        (_, true) => format!("banned: {body}\n"),
        (_, false) => format!("{body}\n"),
    })
}

fn api_error(status: u16, body: String) -> BansError {
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or(body);
    BansError(format!("admin API answered {status}: {msg}"))
}

fn keys_table(json: &str) -> String {
    let Ok(serde_json::Value::Array(keys)) = serde_json::from_str::<serde_json::Value>(json) else {
        return json.to_owned();
    };
    if keys.is_empty() {
        return "no API keys\n".to_owned();
    }
    let field = |k: &serde_json::Value, f: &str| match &k[f] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "never".to_owned(),
        v => v.to_string(),
    };
    let mut out = format!("{:<32} {:<8} {:<26} EXPIRES\n", "NAME", "ROLE", "CREATED");
    for k in &keys {
        out.push_str(&format!(
            "{:<32} {:<8} {:<26} {}\n",
            field(k, "name"),
            field(k, "role"),
            field(k, "created"),
            field(k, "expires")
        ));
    }
    out
}

/// Runs one `keys` action against the admin API and returns what to print on stdout. `add`
/// prints the new key, which the guard does not keep: on a terminal with instructions, else
/// the API's JSON (with a `key` field).
pub async fn run_keys(
    args: &crate::config::KeysArgs,
    stdout_is_terminal: bool,
) -> Result<String, BansError> {
    use crate::config::KeysAction;
    let (admin, token) = (args.admin.as_str(), args.token.as_deref());
    let (expect, (status, body)) = match &args.action {
        KeysAction::List => (
            200,
            call_admin(admin, token, Method::GET, "/api/keys", None).await?,
        ),
        KeysAction::Add {
            name,
            role,
            expires_in,
        } => {
            let mut body = serde_json::json!({"name": name, "role": role});
            if let Some(e) = expires_in {
                body["expires_in"] = serde_json::Value::from(e.as_str());
            }
            (
                201,
                call_admin(
                    admin,
                    token,
                    Method::POST,
                    "/api/keys",
                    Some(body.to_string()),
                )
                .await?,
            )
        }
        KeysAction::Revoke { name } => {
            let path = format!("/api/keys/{}", utf8_percent_encode(name, NON_ALPHANUMERIC));
            (
                204,
                call_admin(admin, token, Method::DELETE, &path, None).await?,
            )
        }
    };
    if status != expect {
        return Err(api_error(status, body));
    }
    Ok(match (&args.action, stdout_is_terminal) {
        (KeysAction::List, true) => keys_table(&body),
        (KeysAction::Revoke { name }, _) => format!("revoked {name}\n"),
        (KeysAction::Add { .. }, true) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let key = v["key"].as_str().unwrap_or_default();
            format!(
                "API key {} (role {}) — shown only this once, the guard keeps only its SHA-256:\n{key}\nClients send it as: Authorization: Bearer {key}\n",
                v["name"].as_str().unwrap_or_default(),
                v["role"].as_str().unwrap_or_default(),
            )
        }
        (_, _) => format!("{body}\n"),
    })
}

/// Why `healthcheck` found the guard not ready: unreachable, too slow, or `/readyz`
/// answered something other than 200.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(String);

/// `GET {admin}/readyz` within `timeout`: `Ok` on 200, else why not.
pub async fn readyz(admin: &str, timeout: std::time::Duration) -> Result<(), NotReady> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("{}/readyz", admin.trim_end_matches('/'));
    let req = Request::builder()
        .method(Method::GET)
        .uri(&url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| NotReady(format!("bad admin URL {url:?}: {e}")))?;
    let probe = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| NotReady(format!("cannot reach {url}: {}", with_sources(&e))))?;
        let status = resp.status();
        // The body is a short reason (e.g. the upstream is down): worth a line.
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        if status == http::StatusCode::OK {
            Ok(())
        } else if body.is_empty() {
            Err(NotReady(format!("{url} answered {status}")))
        } else {
            Err(NotReady(format!("{url} answered {status}: {body}")))
        }
    };
    tokio::time::timeout(timeout, probe)
        .await
        .map_err(|_| NotReady(format!("{url} did not answer within {timeout:?}")))?
}

/// `e` and its sources, `: `-separated (hyper's own text is only "client error (Connect)").
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
