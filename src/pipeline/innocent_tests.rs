//! The "innocent" tests: the built-in rule set in block mode, fed ordinary traffic with
//! explicit times and durations, bans nobody — what it flags is logged, not banned — while an
//! operator's `[rules.NAME] action = "block"` does ban.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::tests::{fixture_with, record, Fixture};
use crate::config::{FileConfig, Mode};
use crate::detect::{effective_rules, RuleConfig};
use crate::record::{Method, RecordSink, RequestRecord};
use crate::route::normalize;

/// 2025-10-02T14:45:00Z, a quarter-hour boundary.
fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_759_416_300, 0).unwrap()
}

/// A request from `src` to `path` completing `at_s` after [`t0`], taking `secs`, sending
/// `bytes_out` response bytes.
fn req(
    src: &str,
    method: Method,
    path: &str,
    at_s: i64,
    secs: f64,
    bytes_out: u64,
) -> RequestRecord {
    let (norm, route) = normalize(path);
    RequestRecord {
        method,
        method_text: method.as_str().into(),
        path: norm,
        route,
        total: Duration::from_secs_f64(secs),
        completed_at: t0() + chrono::Duration::seconds(at_s),
        bytes_out,
        ..record(src, path)
    }
}

/// The built-in set with the `[rules.NAME]` tables of `toml`.
fn builtins(toml: &str) -> Vec<RuleConfig> {
    let file: FileConfig = toml::from_str(toml).unwrap();
    effective_rules(&file.rules, &file.rule_overrides).unwrap()
}

/// Feeds `records` to a block-mode stage of `rules`, closes every window, returns the
/// fixture and the `(event, rule, action)` of every finding.
async fn run(rules: Vec<RuleConfig>, records: &[RequestRecord]) -> (Fixture, Vec<[String; 3]>) {
    let f = fixture_with(Mode::Block, Vec::new(), rules);
    for r in records {
        f.stage.record(r.clone());
    }
    f.stage.finish();
    let findings = f
        .lines()
        .await
        .iter()
        .filter(|l| l["event"] == "detection" || l["event"] == "window_summary")
        .map(|l| ["event", "rule", "action"].map(|k| l[k].as_str().unwrap().to_owned()))
        .collect();
    (f, findings)
}

/// A streamed chat of one minute on a CPU box: ~20 tokens/s × 60 s × 130 bytes.
fn minute_chat(src: &str, at_s: i64) -> RequestRecord {
    req(src, Method::Post, "/api/chat", at_s, 60.0, 1_200 * 130)
}

fn assert_nobody_banned(f: &Fixture, findings: &[[String; 3]], must_fire: &[&str]) {
    assert!(f.enforcement.list().is_empty(), "{findings:?}");
    assert!(
        findings.iter().all(|[_, _, action]| action == "logged"),
        "{findings:?}"
    );
    for rule in must_fire {
        assert!(
            findings
                .iter()
                .any(|[ev, r, _]| ev == "detection" && r == rule),
            "{rule} should have fired (and only logged): {findings:?}"
        );
    }
}

#[tokio::test]
async fn a_minute_long_chat_is_logged_not_banned() {
    let (f, findings) = run(builtins(""), &[minute_chat("192.0.2.10", 100)]).await;
    assert_nobody_banned(&f, &findings, &["model_exfiltration"]);
}

#[tokio::test]
async fn a_three_minute_model_pull_is_logged_not_banned() {
    // /api/pull streams NDJSON progress lines for the whole download.
    let pull = req("192.0.2.11", Method::Post, "/api/pull", 200, 180.0, 90_000);
    let (f, findings) = run(builtins(""), &[pull]).await;
    assert_nobody_banned(&f, &findings, &["model_exfiltration"]);
}

/// Fifteen minutes of one busy person: two browser tabs of a chat UI each polling
/// `/api/tags` every 10 s (180 metadata calls, which flags `metadata_enumeration`), a chat
/// every 30 s of up to a minute (some past 55 s), 1 000-token answers streamed: about
/// 4 MB out, 60 requests per 5 minutes.
fn busy_session(src: &str) -> Vec<RequestRecord> {
    let mut recs = Vec::new();
    for i in 0..90 {
        recs.push(req(src, Method::Get, "/api/tags", i * 10, 0.01, 2_000));
        recs.push(req(src, Method::Get, "/api/tags", i * 10 + 5, 0.01, 2_000));
    }
    for i in 0..30 {
        let secs = if i % 5 == 0 { 58.0 } else { 20.0 };
        recs.push(req(
            src,
            Method::Post,
            "/api/chat",
            i * 30 + 3,
            secs,
            1_000 * 130,
        ));
    }
    recs.sort_by_key(|r| r.completed_at);
    recs
}

#[tokio::test]
async fn a_busy_but_legitimate_session_is_logged_not_banned() {
    let (f, findings) = run(builtins(""), &busy_session("192.0.2.12")).await;
    assert_nobody_banned(
        &f,
        &findings,
        &["model_exfiltration", "metadata_enumeration"],
    );
    assert!(
        !findings.iter().any(|[_, r, _]| r == "excessive_requests"),
        "{findings:?}"
    );
}

#[tokio::test]
async fn opting_a_built_in_into_block_bans() {
    let rules = builtins("[rules.model_exfiltration]\naction = \"block\"\n");
    let (f, findings) = run(rules, &[minute_chat("192.0.2.13", 100)]).await;
    assert!(
        findings.contains(&["detection", "model_exfiltration", "banned"].map(str::to_owned)),
        "{findings:?}"
    );
    let banned: Vec<String> = f
        .enforcement
        .list()
        .iter()
        .map(|b| b.src.to_string())
        .collect();
    assert_eq!(banned, ["192.0.2.13/32"]);
}

#[test]
fn no_overrides_is_the_built_in_set() {
    let none: BTreeMap<String, crate::detect::RuleOverride> = BTreeMap::new();
    assert_eq!(
        effective_rules(&[], &none).unwrap(),
        crate::detect::default_rules()
    );
}
