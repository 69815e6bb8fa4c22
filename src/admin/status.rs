//! `GET /api/status`: the guard at a glance for `ollama-guard status` (like
//! `fail2ban-client status`): mode, upstream readiness, uptime, the active bans (count and
//! the first few), the sources flagged in the current windows, log lines dropped. Same
//! access rules as `/api/bans` (admin token when configured; otherwise only an IP literal or
//! `localhost` as `Host`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::AdminState;
use crate::respond;

/// Bans listed in full (the rest are counted).
pub(crate) const FIRST_BANS: usize = 5;

/// Flagged sources listed (those with the highest figures).
pub(crate) const TOP_FLAGGED: usize = 5;

/// Handles `/api/status`.
pub(crate) fn handle(
    state: &AdminState,
    token: Option<&str>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(refused) = super::bans::refuse(req, token) {
        return refused;
    }
    if req.method() != Method::GET {
        return respond::json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    respond::json(StatusCode::OK, status(state).to_string())
}

/// The status document (README, "Admin listener").
fn status(state: &AdminState) -> serde_json::Value {
    let enf = &state.enforcement;
    let mut bans: Vec<serde_json::Value> = enf
        .list()
        .iter()
        .map(|b| serde_json::to_value(b).unwrap_or_default())
        .collect();
    bans.extend(enf.list_identities().iter().map(super::bans::identity_json));
    // Soonest to end first: what an operator is about to see lifted.
    bans.sort_by(|a, b| a["until"].as_str().cmp(&b["until"].as_str()));
    let active = bans.len();
    bans.truncate(FIRST_BANS);
    let dropped = |log: &str| {
        state
            .metrics
            .log_lines_dropped
            .with_label_values(&[log])
            .get()
    };
    let uptime = state.started.elapsed().as_secs();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "mode": if enf.block_mode() { "block" } else { "monitor" },
        "upstream": {
            "url": state.upstream,
            "ready": state.ready.load(Ordering::Relaxed),
        },
        "started": crate::time::rfc3339_ms(&state.started_at),
        "uptime_seconds": uptime,
        "bans": {"active": active, "first": bans},
        "flagged": flagged(state),
        "log_lines_dropped": {
            "detection": dropped("detection"),
            "access": dropped("access"),
        },
    })
}

/// The sources flagged in the current windows: per source, the rules and their figures,
/// the sources with the most flagged requests first (then by name), at most
/// [`TOP_FLAGGED`]; `sources` is how many there are in all.
fn flagged(state: &AdminState) -> serde_json::Value {
    // who -> rule -> (requests, bytes); a path-grouped rule adds up its paths.
    let mut by_who: BTreeMap<String, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
    for f in state.detection.flagged() {
        let figures = by_who
            .entry(f.who)
            .or_default()
            .entry(f.rule.to_string())
            .or_default();
        if f.bytes {
            figures.1 = figures.1.saturating_add(f.value);
        } else {
            figures.0 = figures.0.saturating_add(f.value);
        }
    }
    let sources = by_who.len();
    let mut rows: Vec<(u64, String, serde_json::Value)> = by_who
        .into_iter()
        .map(|(who, rules)| {
            let requests: u64 = rules.values().map(|(n, _)| *n).sum();
            let rules: Vec<serde_json::Value> = rules
                .into_iter()
                .map(|(rule, (count, bytes))| {
                    let mut v = serde_json::json!({"rule": rule});
                    if bytes > 0 {
                        v["bytes"] = bytes.into();
                    } else {
                        v["count"] = count.into();
                    }
                    v
                })
                .collect();
            (
                requests,
                who.clone(),
                serde_json::json!({"src": who, "rules": rules}),
            )
        })
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let top: Vec<serde_json::Value> = rows.into_iter().take(TOP_FLAGGED).map(|r| r.2).collect();
    serde_json::json!({"sources": sources, "top": top})
}
