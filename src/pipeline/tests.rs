//! The pipeline end to end at unit level: records in, detection-log lines out, in order and
//! valid against `docs/detection-log.schema.json`.
#![allow(clippy::unwrap_used)]

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ipnet::IpNet;

use super::verdict::{decide, Decision, Exemption};
use super::*;
use crate::config::{BanPolicy, LogTarget, Mode};
use crate::detect::{build_rules, Engine, EngineOptions, RuleConfig};
use crate::enforce::{Bans, Enforcement};
use crate::proxy::refusal::Gate;
use crate::record::{Method, Outcome, RequestRecord};
use crate::route::normalize;
use crate::telemetry::detection_log::tests::{assert_valid, validator};
use crate::telemetry::log_event::Action;
use crate::telemetry::{DetectionLog, LogWriter, Metrics};

pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    writer: LogWriter,
    pub(super) stage: Arc<DetectionStage>,
    pub(super) enforcement: Arc<Enforcement>,
    metrics: Arc<Metrics>,
}

/// A stage with one rule that flags every source on its first request to any path.
fn fixture(mode: Mode, allowlist: Vec<IpNet>) -> Fixture {
    let every = RuleConfig {
        name: "every".into(),
        ..RuleConfig::default()
    };
    fixture_with(mode, allowlist, vec![every])
}

/// A stage running `rules`.
pub(super) fn fixture_with(mode: Mode, allowlist: Vec<IpNet>, rules: Vec<RuleConfig>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("detection.log");
    let names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
    let metrics = Arc::new(Metrics::new(&names).unwrap());
    let dropped = metrics.log_lines_dropped.with_label_values(&["detection"]);
    let writer =
        LogWriter::spawn("detection", &LogTarget::File(path.clone()), 64, dropped).unwrap();
    let log = DetectionLog::new(writer.clone());
    let policy = BanPolicy {
        duration: Duration::from_secs(900),
        increment: 2.0,
        max: Duration::from_secs(86_400),
        memory: Duration::from_secs(7 * 86_400),
    };
    let bans = Arc::new(Bans::new(policy, allowlist, 64));
    let enforcement = Arc::new(Enforcement::new(bans, log.clone(), metrics.clone(), None));
    let rules = build_rules(&rules).unwrap();
    let options = EngineOptions {
        ipv6_prefix: 64,
        allowlist: Vec::new(),
        max_tracked_keys: 1000,
    };
    let engine = Engine::new(rules, options).unwrap();
    let stage = Arc::new(DetectionStage::new(
        engine,
        log,
        metrics.clone(),
        mode,
        enforcement.clone(),
    ));
    Fixture {
        _dir: dir,
        path,
        writer,
        stage,
        enforcement,
        metrics,
    }
}

pub(super) fn record(src: &str, path: &str) -> RequestRecord {
    let (norm, route) = normalize(path);
    RequestRecord {
        src: src.parse().unwrap(),
        peer: src.parse().unwrap(),
        method: Method::Post,
        method_text: Cow::Borrowed("POST"),
        path: norm,
        raw_target: Cow::Owned(path.to_owned()),
        route,
        status: 200,
        ttfb: Some(Duration::from_millis(5)),
        total: Duration::from_millis(500),
        completed_at: Utc::now(),
        outcome: Outcome::Complete,
        bytes_in: 0,
        bytes_out: 0,
        in_flight_reported: 0,
        identity: None,
    }
}

impl Fixture {
    /// Every line written so far, each checked against the schema.
    pub(super) async fn lines(&self) -> Vec<serde_json::Value> {
        self.writer.flush().await;
        let validator = validator();
        let text = std::fs::read_to_string(&self.path).unwrap();
        text.lines()
            .map(|line| {
                assert_valid(&validator, line);
                serde_json::from_str(line).unwrap()
            })
            .collect()
    }

    fn detections(&self, action: &str) -> f64 {
        self.metrics
            .detections
            .with_label_values(&["every", "low", action])
            .get() as f64
    }
}

fn kinds(lines: &[serde_json::Value]) -> Vec<&str> {
    lines.iter().map(|l| l["event"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn block_mode_writes_cause_before_effect_and_every_kind_matches_the_schema() {
    let f = fixture(Mode::Block, Vec::new());
    let chain = chain(f.metrics.clone(), None, None, f.stage.clone());
    chain.record(record("192.0.2.7", "/api/show"));
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    assert!(f
        .enforcement
        .refuse(ip, None, "POST", "/api/pull")
        .is_some());
    let src: IpNet = "192.0.2.7/32".parse().unwrap();
    assert!(f.enforcement.admin_remove(&src).await.unwrap().is_some());
    f.stage.finish();
    let lines = f.lines().await;
    assert_eq!(
        kinds(&lines),
        ["detection", "ban", "blocked", "unban", "window_summary"]
    );
    assert_eq!(lines[0]["action"], "banned");
    assert_eq!(
        (lines[1]["src"].as_str(), lines[1]["offence"].as_u64()),
        (Some("192.0.2.7"), Some(1))
    );
    assert_eq!(lines[3]["ended"], "admin");
    assert_eq!(lines[4]["action"], "banned");
    assert_eq!(f.detections("banned"), 1.0);
}

#[tokio::test]
async fn a_source_already_banned_is_reported_banned_without_a_second_ban() {
    let f = fixture(Mode::Block, Vec::new());
    f.stage.record(record("192.0.2.8", "/api/show"));
    f.stage.record(record("192.0.2.8", "/api/tags")); // a new key of the same source
    let lines = f.lines().await;
    assert_eq!(kinds(&lines), ["detection", "ban", "detection"]);
    assert_eq!(lines[2]["action"], "banned");
    assert_eq!(f.detections("banned"), 2.0);
}

#[tokio::test]
async fn monitor_mode_bans_nothing_and_says_would_block_where_block_mode_would_ban() {
    let f = fixture(Mode::Monitor, Vec::new());
    f.stage.record(record("192.0.2.9", "/api/show"));
    f.stage.finish();
    let lines = f.lines().await;
    assert_eq!(kinds(&lines), ["detection", "window_summary"]);
    assert!(
        lines.iter().all(|l| l["action"] == "would_block"),
        "{lines:?}"
    );
    assert_eq!(
        (
            f.detections("would_block"),
            f.detections("logged"),
            f.detections("banned")
        ),
        (1.0, 0.0, 0.0)
    );
    assert!(f.enforcement.list().is_empty());
    // A log-only rule would not ban in block mode either: `logged`.
    let log_only = RuleConfig {
        name: "every".into(),
        action: "log".into(),
        ..RuleConfig::default()
    };
    let f = fixture_with(Mode::Monitor, Vec::new(), vec![log_only]);
    f.stage.record(record("192.0.2.9", "/api/show"));
    f.stage.finish();
    let lines = f.lines().await;
    assert_eq!(kinds(&lines), ["detection", "window_summary"]);
    assert!(lines.iter().all(|l| l["action"] == "logged"), "{lines:?}");
    assert_eq!(
        (f.detections("would_block"), f.detections("logged")),
        (0.0, 1.0)
    );
}

#[tokio::test]
async fn trusted_proxies_and_allowlisted_sources_are_exempt_in_block_mode() {
    let f = fixture(Mode::Block, vec!["192.0.2.20/32".parse().unwrap()]);
    f.stage
        .set_trusted_proxies(vec!["192.0.2.30/32".parse().unwrap()]);
    f.stage.record(record("192.0.2.20", "/api/show"));
    f.stage.record(record("192.0.2.30", "/api/show"));
    let lines = f.lines().await;
    assert_eq!(kinds(&lines), ["detection", "detection"]);
    assert!(lines.iter().all(|l| l["action"] == "logged"));
    assert!(f.enforcement.list().is_empty());
}

#[test]
fn the_decision_is_mode_times_action_then_exemptions() {
    let ip: IpAddr = "198.51.100.1".parse().unwrap();
    let trusted: Vec<IpNet> = vec!["198.51.100.0/24".parse().unwrap()];
    let no = |_| false;
    let log_only = Decision::Log(Exemption::LogOnly);
    assert_eq!(decide(false, true, ip, &[], no), log_only);
    assert_eq!(decide(true, false, ip, &[], no), log_only);
    assert_eq!(decide(true, true, ip, &[], no), Decision::Ban);
    assert_eq!(
        decide(true, true, ip, &trusted, no),
        Decision::Log(Exemption::TrustedProxy)
    );
    assert_eq!(
        decide(true, true, ip, &[], |_| true),
        Decision::Log(Exemption::Allowlisted)
    );
}

/// Identity bans handed to the seam: `(identity, rule)` of each call.
#[derive(Default)]
struct Recorded(std::sync::Mutex<Vec<(String, String)>>);

impl super::verdict::IdentityBans for Recorded {
    fn ban(
        &self,
        name: &str,
        rule: &str,
        _reason: &str,
        _now: chrono::DateTime<Utc>,
        before: &mut dyn FnMut(),
    ) -> bool {
        before();
        self.0
            .lock()
            .unwrap()
            .push((name.to_owned(), rule.to_owned()));
        true
    }
}

fn per_key() -> Vec<RuleConfig> {
    vec![RuleConfig {
        name: "per_key".into(),
        group_by: "identity".into(),
        ..RuleConfig::default()
    }]
}

fn keyed(name: &str, src: &str) -> RequestRecord {
    RequestRecord {
        identity: Some(name.into()),
        ..record(src, "/api/chat")
    }
}

#[tokio::test]
async fn an_identity_verdict_never_bans_the_address_and_is_logged_without_identity_bans() {
    let f = fixture_with(Mode::Block, Vec::new(), per_key());
    f.stage.record(keyed("alice", "192.0.2.40"));
    f.stage.finish();
    let lines = f.lines().await;
    assert_eq!(kinds(&lines), ["detection", "window_summary"]);
    for line in &lines {
        assert_eq!(
            (
                line["identity"].as_str(),
                line["src"].as_str(),
                line["action"].as_str()
            ),
            (Some("alice"), Some("192.0.2.40"), Some("logged"))
        );
    }
    assert!(f.enforcement.list().is_empty());
}

#[tokio::test]
async fn an_identity_verdict_goes_to_the_identity_bans_and_an_address_verdict_does_not() {
    let mut rules = per_key();
    rules.push(RuleConfig {
        name: "per_addr".into(),
        group_by: "src".into(),
        threshold: 2,
        ..RuleConfig::default()
    });
    let f = fixture_with(Mode::Block, Vec::new(), rules);
    let bans = Arc::new(Recorded::default());
    assert!(f.stage.verdicts().set_identity_bans(bans.clone()));
    assert!(!f.stage.verdicts().set_identity_bans(bans.clone()), "once");
    f.stage.record(keyed("bob", "192.0.2.41"));
    let ip: IpAddr = "192.0.2.41".parse().unwrap();
    assert!(f
        .enforcement
        .refuse(ip, None, "POST", "/api/chat")
        .is_none());
    f.stage.record(keyed("carol", "192.0.2.41"));
    let lines = f.lines().await;
    let rows: Vec<(&str, &str, Option<&str>, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["event"].as_str().unwrap(),
                l["rule"].as_str().unwrap_or(""),
                l["identity"].as_str(),
                l["action"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("detection", "per_key", Some("bob"), "banned"),
            ("detection", "per_key", Some("carol"), "banned"),
            // The address's own rule names the identity of the request that crossed, and
            // bans the address.
            ("detection", "per_addr", Some("carol"), "banned"),
            ("ban", "per_addr", None, ""),
        ]
    );
    assert_eq!(
        *bans.0.lock().unwrap(),
        [
            ("bob".to_owned(), "per_key".to_owned()),
            ("carol".to_owned(), "per_key".to_owned())
        ]
    );
    assert_eq!(f.enforcement.list().len(), 1);
}

#[test]
fn the_ban_target_is_the_identity_only_for_identity_keys() {
    use super::verdict::{ban_target, BanTarget};
    use crate::detect::event::{RuleAction, Severity};
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let d = crate::detect::DetectionEvent {
        rule: "r".into(),
        escu_id: None,
        mitre: None,
        attack_type: "r".into(),
        src: "198.51.100.7".into(),
        identity: Some("alice".into()),
        by_identity: false,
        uri_path: None,
        http_method: "GET",
        window_start: Utc::now(),
        window_end: Utc::now(),
        count: 1,
        bytes: None,
        avg_response_time: 0.0,
        max_response_time: 0.0,
        severity: Severity::Low,
        action: RuleAction::Default,
        in_flight: false,
        risk_score: 20,
    };
    assert_eq!(ban_target(&d, Some(ip)), Some(BanTarget::Addr(ip)));
    assert_eq!(ban_target(&d, None), None);
    let by_identity = crate::detect::DetectionEvent {
        by_identity: true,
        ..d
    };
    let alice = Some(BanTarget::Identity("alice".into()));
    assert_eq!(ban_target(&by_identity, Some(ip)), alice);
    assert_eq!(ban_target(&by_identity, None), alice);
}

/// Whether a ban can cut running requests follows the mode and `abort_in_flight` as they are
/// set at start-up and by reloads: only block mode with `abort_in_flight` cuts (and only then
/// do requests waiting for their head listen for bans), and `cut` answers nothing otherwise,
/// even for a banned source.
#[test]
fn a_ban_cuts_running_requests_only_in_block_mode_with_abort_in_flight() {
    let f = fixture(Mode::Monitor, Vec::new());
    let e = &f.enforcement;
    let src: IpAddr = "203.0.113.5".parse().unwrap();
    e.ban(src, "excessive_requests", "test".into(), Utc::now(), || {});
    let states = [
        (Mode::Monitor, true, false),
        (Mode::Block, true, true),
        (Mode::Block, false, false),
        (Mode::Monitor, false, false),
        (Mode::Block, true, true),
    ];
    for (mode, abort, cuts) in states {
        e.set_mode(mode);
        e.set_abort_in_flight(abort);
        assert_eq!(e.cuts_now(), cuts, "{mode:?} abort_in_flight {abort}");
        assert_eq!(
            e.cut(src, None).as_deref(),
            cuts.then_some("excessive_requests"),
            "{mode:?} abort_in_flight {abort}"
        );
    }
}

/// A cluster link that records what it is asked to publish.
#[derive(Default)]
struct Published(std::sync::Mutex<Vec<String>>);

impl crate::enforce::BanSync for Published {
    fn banned(&self, ban: crate::enforce::SharedBan, _: Vec<chrono::DateTime<chrono::Utc>>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("ban {}", ban.subject().display()));
    }
    fn unbanned(&self, who: crate::enforce::Subject, _: chrono::DateTime<chrono::Utc>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("unban {}", who.display()));
    }
}

#[test]
fn a_rule_ban_the_allowlist_lifts_is_lifted_in_the_cluster_and_never_taken_back_from_it() {
    let f = fixture(Mode::Block, Vec::new());
    let published = Arc::new(Published::default());
    f.enforcement.set_sync(published.clone());
    let now = chrono::Utc::now();
    let banned = f
        .enforcement
        .ban("10.1.2.3".parse().unwrap(), "r", "x".into(), now, || {});
    let crate::enforce::BanOutcome::Banned(ban) = banned else {
        panic!("{banned:?}")
    };
    // The reload that allowlists it lifts it here and in the shared store: the next resync
    // would otherwise bring it back.
    f.enforcement
        .set_allowlist(vec!["10.0.0.0/8".parse().unwrap()]);
    assert_eq!(
        *published.0.lock().unwrap(),
        ["ban 10.1.2.3", "unban 10.1.2.3"]
    );
    assert!(f.enforcement.list().is_empty());
    // Another replica's rule ban of an allowlisted source is not applied; an operator's
    // (forced) one is.
    assert!(!f.enforcement.bans().apply_remote(ban.clone(), now));
    let forced = crate::enforce::Ban {
        rule: Arc::from(crate::enforce::ADMIN_RULE),
        ..ban
    };
    assert!(f.enforcement.bans().apply_remote(forced, now));
}

#[tokio::test]
async fn policy_verdicts_write_one_line_per_source_and_rule_a_minute_and_count_the_rest() {
    let f = fixture(Mode::Block, Vec::new());
    let verdicts = f.stage.verdicts();
    let minute = chrono::DateTime::from_timestamp(1_764_590_400, 0).unwrap();
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let b: IpAddr = "192.0.2.2".parse().unwrap();
    let debug = crate::policy::debug_render_only();
    let large = crate::policy::too_large(1 << 20);
    let judge = |at: i64, v: &crate::policy::Verdict, src: IpAddr| {
        verdicts.policy_at(
            minute + chrono::TimeDelta::seconds(at),
            v,
            src,
            "/api/generate",
            "POST",
            false,
        )
    };
    // Five of one rule from A in one minute, one of another rule, one from B; then A again in
    // the next minute.
    for at in 0..5 {
        assert_eq!(judge(at, &debug, a), Action::Blocked);
    }
    assert_eq!(judge(10, &large, a), Action::Blocked);
    assert_eq!(judge(20, &debug, b), Action::Blocked);
    assert_eq!(judge(61, &debug, a), Action::Blocked);
    let lines = f.lines().await;
    let seen: Vec<(String, String, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["rule"].as_str().unwrap().to_owned(),
                l["src"].as_str().unwrap().to_owned(),
                l["since_last"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("policy.debug_render_only".into(), "192.0.2.1".into(), 0),
            ("policy.body_too_large".into(), "192.0.2.1".into(), 0),
            ("policy.debug_render_only".into(), "192.0.2.2".into(), 0),
            ("policy.debug_render_only".into(), "192.0.2.1".into(), 4),
        ]
    );
    // Every verdict is counted, logged or not.
    let counted = f
        .metrics
        .detections
        .with_label_values(&[
            "policy.debug_render_only",
            debug.severity.as_str(),
            "blocked",
        ])
        .get();
    assert_eq!(counted, 7);
    // A verdict that bans is written even within the minute of an earlier line, with the
    // count not logged before it; the next line counts from it.
    assert_eq!(judge(62, &debug, a), Action::Blocked);
    assert_eq!(
        verdicts.policy_at(
            minute + chrono::TimeDelta::seconds(63),
            &debug,
            a,
            "/api/generate",
            "POST",
            true,
        ),
        Action::Banned
    );
    let lines = f.lines().await;
    assert_eq!(kinds(&lines[4..]), ["detection", "ban"]);
    assert_eq!(lines[4]["action"], "banned");
    assert_eq!(lines[4]["since_last"], 1);
    assert_eq!(judge(64, &debug, a), Action::Blocked);
    assert_eq!(judge(121, &debug, a), Action::Blocked);
    let lines = f.lines().await;
    assert_eq!(lines.len(), 7, "{lines:?}");
    assert_eq!(lines[6]["since_last"], 1);
    // Addresses of one IPv6 /48 are one source to the count: one line a minute for all.
    for (at, ip) in [
        (180, "2001:db8:7::1"),
        (181, "2001:db8:7:1::2"),
        (182, "2001:db8:7:ff::3"),
    ] {
        assert_eq!(judge(at, &debug, ip.parse().unwrap()), Action::Blocked);
    }
    assert_eq!(
        judge(183, &debug, "2001:db8:8::1".parse().unwrap()),
        Action::Blocked
    );
    assert_eq!(
        judge(240, &debug, "2001:db8:7:2::9".parse().unwrap()),
        Action::Blocked
    );
    let lines = f.lines().await;
    let tail: Vec<(&str, u64)> = lines[7..]
        .iter()
        .map(|l| {
            (
                l["src"].as_str().unwrap(),
                l["since_last"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tail,
        [
            ("2001:db8:7::1", 0),
            ("2001:db8:8::1", 0),
            ("2001:db8:7:2::9", 2)
        ]
    );
}

/// One rule, per source, in a 10-minute sliding window, flagging at `threshold` requests.
fn sliding_every(threshold: i64) -> Vec<RuleConfig> {
    vec![RuleConfig {
        name: "every".into(),
        group_by: "src".into(),
        window: "10m".into(),
        window_kind: "sliding".into(),
        threshold,
        ..RuleConfig::default()
    }]
}

/// `record(src, path)` as a request that ran for 1 ms and completed 10 ms from now: it
/// started after whatever happened before this call.
async fn fresh(src: &str, path: &str) -> RequestRecord {
    tokio::time::sleep(Duration::from_millis(10)).await;
    RequestRecord {
        total: Duration::from_millis(1),
        completed_at: Utc::now(),
        ..record(src, path)
    }
}

/// Sweeps every ban as if its end had passed.
fn expire_all(f: &Fixture) {
    let later = Utc::now() + chrono::Duration::days(2);
    assert!(!f.enforcement.bans().expire(later).is_empty());
}

#[tokio::test]
async fn a_source_still_above_the_threshold_when_its_ban_ends_is_banned_again() {
    let f = fixture_with(Mode::Block, Vec::new(), sliding_every(3));
    for _ in 0..3 {
        f.stage.record(record("192.0.2.50", "/api/tags"));
    }
    let ip: IpAddr = "192.0.2.50".parse().unwrap();
    // A request that passed the gate before the ban: counted, nothing new.
    f.stage.record(record("192.0.2.50", "/api/tags"));
    expire_all(&f);
    // A request that started before the ban and ends after it: not a new offence.
    f.stage.record(RequestRecord {
        total: Duration::from_secs(60),
        ..fresh("192.0.2.50", "/api/tags").await
    });
    assert!(f.enforcement.bans().check(ip, Utc::now()).is_none());
    // The key is still flagged: the next request sent after the ban bans again.
    f.stage.record(fresh("192.0.2.50", "/api/tags").await);
    assert!(f.enforcement.bans().check(ip, Utc::now()).is_some());
    let lines = f.lines().await;
    assert_eq!(kinds(&lines), ["detection", "ban", "detection", "ban"]);
    assert_eq!(
        (lines[2]["count"].as_u64(), lines[2]["action"].as_str()),
        (Some(6), Some("banned"))
    );
    assert_eq!(lines[3]["offence"].as_u64(), Some(2));
    assert_eq!(f.detections("banned"), 2.0);
}

#[tokio::test]
async fn a_tumbling_window_already_flagged_bans_again_when_the_ban_ends() {
    let f = fixture(Mode::Block, Vec::new());
    f.stage.record(record("192.0.2.51", "/api/show"));
    expire_all(&f);
    f.stage.record(fresh("192.0.2.51", "/api/show").await);
    let lines = f.lines().await;
    assert_eq!(kinds(&lines), ["detection", "ban", "detection", "ban"]);
    assert_eq!(lines[2]["count"].as_u64(), Some(2));
}

#[tokio::test]
async fn a_source_whose_ban_an_operator_lifted_goes_free_for_the_rest_of_its_window() {
    let f = fixture_with(Mode::Block, Vec::new(), sliding_every(3));
    for _ in 0..3 {
        f.stage.record(record("192.0.2.54", "/api/tags"));
    }
    let src: IpNet = "192.0.2.54/32".parse().unwrap();
    assert!(f.enforcement.admin_remove(&src).await.unwrap().is_some());
    for _ in 0..5 {
        f.stage.record(fresh("192.0.2.54", "/api/tags").await);
    }
    let ip: IpAddr = "192.0.2.54".parse().unwrap();
    assert!(f.enforcement.bans().check(ip, Utc::now()).is_none());
    let lines = f.lines().await;
    assert_eq!(kinds(&lines), ["detection", "ban", "unban"]);
}

/// A key flagged in block mode by a crossing that banned nothing (here: its source was a
/// trusted proxy then) is left to that crossing: a request counted after it (on another
/// worker, perhaps, before the crossing's own verdict is handled) bans nothing by itself, or
/// one ban would get two detection lines.
#[tokio::test]
async fn a_key_flagged_in_block_mode_is_left_to_the_crossing_that_flagged_it() {
    let f = fixture_with(Mode::Block, Vec::new(), sliding_every(3));
    f.stage
        .set_trusted_proxies(vec!["192.0.2.55/32".parse().unwrap()]);
    for _ in 0..3 {
        f.stage.record(record("192.0.2.55", "/api/tags"));
    }
    f.stage.set_trusted_proxies(Vec::new());
    for _ in 0..3 {
        f.stage.record(fresh("192.0.2.55", "/api/tags").await);
    }
    let lines = f.lines().await;
    assert_eq!(kinds(&lines), ["detection"]);
    assert!(f.enforcement.list().is_empty());
}

#[tokio::test]
async fn a_source_flagged_in_monitor_mode_is_banned_at_its_next_request_in_block_mode() {
    let f = fixture_with(Mode::Monitor, Vec::new(), sliding_every(3));
    for _ in 0..6 {
        f.stage.record(record("192.0.2.52", "/api/tags"));
    }
    assert!(f.enforcement.list().is_empty());
    f.enforcement.set_mode(Mode::Block);
    f.stage.record(record("192.0.2.52", "/api/tags"));
    let lines = f.lines().await;
    assert_eq!(kinds(&lines), ["detection", "detection", "ban"]);
    assert_eq!(
        (lines[0]["count"].as_u64(), lines[0]["action"].as_str()),
        (Some(3), Some("would_block"))
    );
    assert_eq!(
        (lines[1]["count"].as_u64(), lines[1]["action"].as_str()),
        (Some(7), Some("banned"))
    );
    assert_eq!(f.enforcement.list().len(), 1);
}

#[tokio::test]
async fn a_flagged_source_that_is_never_banned_writes_one_detection_however_many_requests_follow() {
    // Monitor mode, and a trusted proxy in block mode: the first crossing is logged, the
    // requests after it write nothing and ban nothing.
    for mode in [Mode::Monitor, Mode::Block] {
        let f = fixture_with(mode, Vec::new(), sliding_every(3));
        f.stage
            .set_trusted_proxies(vec!["192.0.2.53/32".parse().unwrap()]);
        for _ in 0..20 {
            f.stage.record(record("192.0.2.53", "/api/tags"));
        }
        let lines = f.lines().await;
        assert_eq!(kinds(&lines), ["detection"], "{mode:?}");
        assert_eq!(lines[0]["action"], "logged");
        assert!(f.enforcement.list().is_empty());
        assert_eq!(f.detections("logged"), 1.0);
    }
}
