//! `ollama-guard bans list|add|remove`, `keys` and `status`: a thin client of the admin API,
//! so operators never hand-write JSON. Table output on a terminal, the API's JSON otherwise
//! (for scripts).
//!
//! [`run`] returns the text to print; the command (`src/commands/bans.rs`) prints it and
//! chooses the exit code.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use chrono::{DateTime, Utc};

use crate::config::{BansAction, BansArgs, Output, StatusArgs};

/// Why a `bans`, `keys` or `status` action failed: the admin API was unreachable (with a
/// hint), or refused the action (the message names the status and the API's error text).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BansError(String);

/// What a command prints: `out` on stdout, each of `warnings` as a line on stderr.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Printed {
    /// For stdout.
    pub out: String,
    /// For stderr, one line each (`ollama-guard: warning: ...`).
    pub warnings: Vec<String>,
}

impl From<String> for Printed {
    fn from(out: String) -> Printed {
        Printed {
            out,
            warnings: Vec::new(),
        }
    }
}

async fn call(
    args: &BansArgs,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<(u16, String), BansError> {
    call_admin(
        &args.conn.admin,
        args.conn.token.as_deref(),
        method,
        path,
        body,
    )
    .await
}

/// The hint of an unreachable admin API.
const UNREACHABLE_HINT: &str =
    "is ollama-guard running? point --admin URL (or OLLAMA_GUARD_ADMIN) at its admin_listen";

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
        .map_err(|e| {
            BansError(format!(
                "bad admin URL {url:?}: {e} (write --admin http://HOST:PORT)"
            ))
        })?;
    let resp = client.request(req).await.map_err(|e| {
        BansError(format!(
            "cannot reach the admin API at {url}: {}; {UNREACHABLE_HINT}",
            with_sources(&e)
        ))
    })?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| BansError(format!("reading the answer of {url}: {}", with_sources(&e))))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Whether to print a table: `--output`, else whether stdout is a terminal.
fn wants_table(output: Option<Output>, stdout_is_terminal: bool) -> bool {
    output.map_or(stdout_is_terminal, |o| o == Output::Table)
}

/// Time left until `until` (RFC 3339) at `now`, compact: `2d3h`, `1h05m`, `14m32s`, `9s`;
/// `expired` once it is past, the text as given when it does not parse.
pub fn remaining(until: &str, now: DateTime<Utc>) -> String {
    let Ok(until) = DateTime::parse_from_rfc3339(until) else {
        return until.to_owned();
    };
    match u64::try_from((until.with_timezone(&Utc) - now).num_seconds()) {
        Ok(secs) if secs > 0 => span(secs),
        _ => "expired".to_owned(),
    }
}

/// Who a ban is on, as `bans remove` takes it: the `src`, or `identity:NAME`.
use crate::text::printable;

fn ban_subject(b: &serde_json::Value) -> String {
    match (&b["identity"], &b["src"]) {
        (serde_json::Value::String(name), _) => format!("identity:{}", printable(name)),
        (_, serde_json::Value::String(src)) => printable(src),
        (_, v) => v.to_string(),
    }
}

/// The `bans list` table of `bans` (the API's objects) at `now`.
pub fn table(bans: &[serde_json::Value], now: DateTime<Utc>) -> String {
    if bans.is_empty() {
        return "no active bans\n".to_owned();
    }
    let field = |b: &serde_json::Value, k: &str| match &b[k] {
        serde_json::Value::String(s) => printable(s),
        v => v.to_string(),
    };
    let mut out = format!(
        "{:<28} {:<24} {:>9} {:>7} {:<20} REASON\n",
        "SRC", "UNTIL", "REMAINING", "OFFENCE", "RULE"
    );
    for b in bans {
        let until = field(b, "until");
        out.push_str(&format!(
            "{:<28} {:<24} {:>9} {:>7} {:<20} {}\n",
            ban_subject(b),
            until,
            remaining(&until, now),
            field(b, "offence"),
            field(b, "rule"),
            field(b, "reason")
        ));
    }
    out
}

/// The API's answer when it is `expect`, else the error naming the status and its message.
fn expect(expect: u16, (status, body): (u16, String)) -> Result<String, BansError> {
    if status == expect {
        Ok(body)
    } else {
        Err(api_error(status, body))
    }
}

/// Runs one `bans` action against the admin API and returns what to print: for `list`, a
/// table (`--output table`, or by default on a terminal) or the API's JSON (filtered by
/// `--rule`); for `add`, a sentence on a terminal, else the API's JSON, plus the API's
/// `warning` (monitor mode) for stderr; `unbanned <src>` / `lifted N bans` for `remove`.
pub async fn run(args: &BansArgs, stdout_is_terminal: bool) -> Result<Printed, BansError> {
    match &args.action {
        BansAction::List { rule, output } => {
            let body = expect(200, call(args, Method::GET, "/api/bans", None).await?)?;
            let bans: Vec<serde_json::Value> = serde_json::from_str(&body).map_err(|e| {
                BansError(format!(
                    "the admin API's ban list is not JSON ({e}): {body}"
                ))
            })?;
            let picked: Vec<serde_json::Value> = bans
                .into_iter()
                .filter(|b| rule.as_ref().map_or(true, |r| b["rule"] == r.as_str()))
                .collect();
            Ok(Printed::from(if wants_table(*output, stdout_is_terminal) {
                table(&picked, Utc::now())
            } else if rule.is_none() {
                format!("{body}\n")
            } else {
                format!("{}\n", serde_json::Value::from(picked))
            }))
        }
        BansAction::Add {
            src,
            duration,
            reason,
            force,
        } => {
            let body = serde_json::json!({"src": src, "duration": duration, "reason": reason, "force": force});
            let answer = expect(
                201,
                call(args, Method::POST, "/api/bans", Some(body.to_string())).await?,
            )?;
            let json: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
            let warnings = json["warning"]
                .as_str()
                .map(|w| format!("ban of {src} {w}"))
                .into_iter()
                .collect();
            let out = if stdout_is_terminal {
                format!(
                    "banned {} until {} ({}, offence {}, reason {:?})\n",
                    ban_subject(&json),
                    json["until"].as_str().unwrap_or_default(),
                    remaining(json["until"].as_str().unwrap_or_default(), Utc::now()),
                    json["offence"],
                    json["reason"].as_str().unwrap_or_default(),
                )
            } else {
                format!("{answer}\n")
            };
            Ok(Printed { out, warnings })
        }
        BansAction::Remove { src: Some(src), .. } => {
            let path = format!("/api/bans/{}", utf8_percent_encode(src, NON_ALPHANUMERIC));
            expect(204, call(args, Method::DELETE, &path, None).await?)?;
            Ok(Printed::from(format!("unbanned {src}\n")))
        }
        BansAction::Remove { src: None, .. } => {
            let body = expect(200, call(args, Method::GET, "/api/bans", None).await?)?;
            let bans: Vec<serde_json::Value> = serde_json::from_str(&body).map_err(|e| {
                BansError(format!(
                    "the admin API's ban list is not JSON ({e}): {body}"
                ))
            })?;
            let mut lifted = 0usize;
            for b in &bans {
                let who = ban_subject(b);
                let path = format!("/api/bans/{}", utf8_percent_encode(&who, NON_ALPHANUMERIC));
                match call(args, Method::DELETE, &path, None).await? {
                    (204, _) => lifted += 1,
                    // Ended (expired, or lifted by someone else) since the list: not ours.
                    (404, _) => {}
                    (status, body) => {
                        let e = api_error(status, body);
                        return Err(BansError(format!(
                            "lifted {lifted} of {} bans, then {who}: {e}",
                            bans.len()
                        )));
                    }
                }
            }
            Ok(Printed::from(format!(
                "lifted {lifted} ban{}\n",
                if lifted == 1 { "" } else { "s" }
            )))
        }
    }
}

fn api_error(status: u16, body: String) -> BansError {
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    let hint = match status {
        401 => "; pass --token TOKEN (or OLLAMA_GUARD_ADMIN_TOKEN), the admin_token of its config",
        _ => "",
    };
    BansError(format!("admin API answered {status}: {msg}{hint}"))
}

/// `ollama-guard status`: `GET /api/status`, rendered for a person (`--output table`, or by
/// default on a terminal) or as the API's JSON.
pub async fn status(args: &StatusArgs, stdout_is_terminal: bool) -> Result<Printed, BansError> {
    let answer = call_admin(
        &args.conn.admin,
        args.conn.token.as_deref(),
        Method::GET,
        "/api/status",
        None,
    )
    .await?;
    let body = expect(200, answer)?;
    if !wants_table(args.output, stdout_is_terminal) {
        return Ok(Printed::from(format!("{body}\n")));
    }
    let json: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| BansError(format!("the admin API's status is not JSON ({e}): {body}")))?;
    Ok(Printed::from(status_text(&json, Utc::now())))
}

/// Whole seconds as `3d4h`, `2h05m`, `14m32s`, `9s`.
fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// The human form of a `/api/status` document at `now` (bans' remaining time).
pub fn status_text(v: &serde_json::Value, now: DateTime<Utc>) -> String {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => printable(s),
        other => other.to_string(),
    };
    let mode = text(&v["mode"]);
    let mode_note = if mode == "monitor" {
        " (detect and log; no request is refused)"
    } else {
        " (rules and manual bans refuse requests)"
    };
    let ready = if v["upstream"]["ready"] == true {
        "ready"
    } else {
        "NOT READY (it did not answer the last probe)"
    };
    let mut out = format!(
        "mode:      {mode}{mode_note}\nupstream:  {} {ready}\nuptime:    {} (since {})\n",
        text(&v["upstream"]["url"]),
        span(v["uptime_seconds"].as_u64().unwrap_or(0)),
        text(&v["started"]),
    );
    let active = v["bans"]["active"].as_u64().unwrap_or(0);
    let first = v["bans"]["first"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("bans:      {active} active\n"));
    for b in &first {
        out.push_str(&format!(
            "  {:<28} {:>9} left  {} ({})\n",
            ban_subject(b),
            remaining(b["until"].as_str().unwrap_or_default(), now),
            text(&b["rule"]),
            text(&b["reason"]),
        ));
    }
    if active > first.len() as u64 {
        out.push_str(&format!(
            "  ... and {} more: ollama-guard bans list\n",
            active - first.len() as u64
        ));
    }
    let sources = v["flagged"]["sources"].as_u64().unwrap_or(0);
    let top = v["flagged"]["top"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!(
        "flagged:   {sources} source{} in the current windows\n",
        if sources == 1 { "" } else { "s" }
    ));
    for f in &top {
        let rules: Vec<String> = f["rules"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|r| match (&r["count"], &r["bytes"]) {
                (serde_json::Value::Number(n), _) => format!("{} ({n} requests)", text(&r["rule"])),
                (_, serde_json::Value::Number(n)) => format!("{} ({n} bytes)", text(&r["rule"])),
                _ => text(&r["rule"]),
            })
            .collect();
        out.push_str(&format!("  {:<28} {}\n", text(&f["src"]), rules.join(", ")));
    }
    let (det, acc) = (
        v["log_lines_dropped"]["detection"].as_u64().unwrap_or(0),
        v["log_lines_dropped"]["access"].as_u64().unwrap_or(0),
    );
    out.push_str(&format!(
        "log drops: {} (detection {det}, access {acc}){}\n",
        det + acc,
        if det + acc > 0 {
            ": a log writer fell behind; see ollama_guard_log_lines_dropped_total"
        } else {
            ""
        }
    ));
    out
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
) -> Result<Printed, BansError> {
    use crate::config::KeysAction;
    let (admin, token) = (args.conn.admin.as_str(), args.conn.token.as_deref());
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
    Ok(Printed::from(match (&args.action, stdout_is_terminal) {
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
    }))
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
        let resp = client.request(req).await.map_err(|e| {
            NotReady(format!(
                "cannot reach {url}: {}; {UNREACHABLE_HINT}",
                with_sources(&e)
            ))
        })?;
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

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::{remaining, status_text, table};

    #[test]
    fn remaining_is_compact_and_says_expired_once_past() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 14, 0, 0).unwrap();
        for (until, want) in [
            ("2026-11-29T14:00:09.500Z", "9s"),
            ("2026-11-29T14:14:32Z", "14m32s"),
            ("2026-11-29T15:05:00Z", "1h05m"),
            ("2026-12-01T17:00:00Z", "2d3h"),
            ("2026-11-29T14:00:00Z", "expired"),
            ("2026-11-29T13:00:00Z", "expired"),
            ("soon", "soon"),
        ] {
            assert_eq!(remaining(until, now), want, "{until}");
        }
    }

    #[test]
    fn the_table_shows_remaining_time_and_identity_bans() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 14, 0, 0).unwrap();
        let bans = [
            json!({"src":"203.0.113.7","until":"2026-11-29T14:14:32.000Z","reason":"abuse report","offence":1,"rule":"admin","since":"2026-11-29T13:59:00.000Z"}),
            json!({"identity":"ci-runner","until":"2026-11-29T15:00:00.000Z","reason":"5 failures","offence":2,"rule":"auth_failures","since":"2026-11-29T13:59:00.000Z"}),
        ];
        assert_eq!(
            table(&bans, now),
            "SRC                          UNTIL                    REMAINING OFFENCE RULE                 REASON\n\
             203.0.113.7                  2026-11-29T14:14:32.000Z    14m32s       1 admin                abuse report\n\
             identity:ci-runner           2026-11-29T15:00:00.000Z     1h00m       2 auth_failures        5 failures\n"
        );
        assert_eq!(table(&[], now), "no active bans\n");
        // A reason given through the API cannot move the cursor or recolour the terminal.
        let hostile = [
            json!({"src":"192.0.2.8","until":"2026-11-29T14:01:00.000Z","reason":"a\nb\u{1b}[31mc\u{0}","offence":1,"rule":"admin","since":"2026-11-29T13:59:00.000Z"}),
        ];
        assert_eq!(
            table(&hostile, now).lines().nth(1),
            Some("192.0.2.8                    2026-11-29T14:01:00.000Z     1m00s       1 admin                a\\nb\\u{1b}[31mc\\u{0}")
        );
        // Nor reorder or hide text: a right-to-left override would show the line's end
        // reversed, a zero-width space or byte-order mark would hide between letters.
        let reorder = [
            json!({"src":"192.0.2.9","until":"2026-11-29T14:01:00.000Z","reason":"x\u{202e}1.2.0.291\u{2066}y\u{200b}z\u{feff}","offence":1,"rule":"admin","since":"2026-11-29T13:59:00.000Z"}),
        ];
        assert_eq!(
            table(&reorder, now).lines().nth(1),
            Some("192.0.2.9                    2026-11-29T14:01:00.000Z     1m00s       1 admin                x\\u{202e}1.2.0.291\\u{2066}y\\u{200b}z\\u{feff}")
        );
        // Letters of other scripts are shown as they are.
        assert_eq!(
            crate::text::printable("señal ошибка 错误"),
            "señal ошибка 错误"
        );
        // Line and paragraph separators break a line in some viewers; tag characters hide
        // text.
        assert_eq!(
            crate::text::printable("a\u{2028}b\u{2029}c\u{e0041}d"),
            "a\\u{2028}b\\u{2029}c\\u{e0041}d"
        );
    }

    #[test]
    fn status_reads_like_fail2ban_client_status() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 14, 0, 0).unwrap();
        let ban = |src: &str| json!({"src":src,"until":"2026-11-29T14:10:00.000Z","reason":"manual","offence":1,"rule":"admin","since":"2026-11-29T13:50:00.000Z"});
        let status = json!({
            "version": "0.1.0", "mode": "block",
            "upstream": {"url": "http://127.0.0.1:11435", "ready": false},
            "started": "2026-11-29T11:55:00.000Z", "uptime_seconds": 7500,
            "bans": {"active": 7, "first": [ban("192.0.2.1"), ban("192.0.2.2")]},
            "flagged": {"sources": 2, "top": [
                {"src": "127.0.0.66", "rules": [{"rule": "metadata_enumeration", "count": 31}, {"rule": "model_exfiltration", "count": 5}]},
                {"src": "identity:app", "rules": [{"rule": "bulk_bytes", "bytes": 1048576}]}
            ]},
            "log_lines_dropped": {"detection": 3, "access": 0}
        });
        assert_eq!(
            status_text(&status, now),
            "mode:      block (rules and manual bans refuse requests)\n\
             upstream:  http://127.0.0.1:11435 NOT READY (it did not answer the last probe)\n\
             uptime:    2h05m (since 2026-11-29T11:55:00.000Z)\n\
             bans:      7 active\n\
             \x20 192.0.2.1                       10m00s left  admin (manual)\n\
             \x20 192.0.2.2                       10m00s left  admin (manual)\n\
             \x20 ... and 5 more: ollama-guard bans list\n\
             flagged:   2 sources in the current windows\n\
             \x20 127.0.0.66                   metadata_enumeration (31 requests), model_exfiltration (5 requests)\n\
             \x20 identity:app                 bulk_bytes (1048576 bytes)\n\
             log drops: 3 (detection 3, access 0): a log writer fell behind; see ollama_guard_log_lines_dropped_total\n"
        );
    }
}
