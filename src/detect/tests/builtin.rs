//! The built-in rules fire at their published thresholds, with their published severities.

use super::*;
use crate::detect::{default_rules, Severity};

/// `n` requests from `src` to `path`, one per second from `T0 + start`.
fn burst(src: &str, path: &str, latency: Duration, start: i64, n: i64) -> Vec<RequestRecord> {
    (0..n).map(|i| req(src, path, latency, start + i)).collect()
}

fn fired(events: &[Event]) -> Vec<(&str, &'static str, u64, Severity)> {
    events
        .iter()
        .map(|e| {
            let d = e.detail();
            (&*d.rule, e.kind(), d.count, d.severity)
        })
        .collect()
}

#[test]
fn jailbreak_rule_needs_more_than_170_long_generations_in_ten_minutes() {
    let e = engine(&default_rules());
    // T0 + 120 .. T0 + 290 all lie in the 10-minute bin [T0 - 300, T0 + 300).
    let mut recs = burst("10.0.0.1", "/api/generate", secs(31), 120, 170);
    let out = feed(&e, &recs);
    assert!(fired(&out)
        .iter()
        .all(|f| f.0 != "jailbreak_long_generation"));
    recs = burst("10.0.0.1", "/v1/chat/completions", secs(31), 290, 1);
    let out = feed(&e, &recs);
    assert!(fired(&out).contains(&(
        "jailbreak_long_generation",
        "detection",
        171,
        Severity::High
    )));
}

#[test]
fn request_volume_rules_fire_at_121_requests_in_five_minutes() {
    let e = engine(&default_rules());
    let out = feed(
        &e,
        &burst("10.0.0.2", "/api/version", Duration::from_millis(2), 0, 120),
    );
    assert!(out.is_empty(), "{out:?}");
    let out = feed(
        &e,
        &burst("10.0.0.2", "/api/version", Duration::from_millis(2), 120, 1),
    );
    assert_eq!(
        fired(&out),
        [
            ("excessive_requests", "detection", 121, Severity::High),
            ("endpoint_scan", "detection", 121, Severity::Medium),
        ]
    );
}

#[test]
fn request_volume_rules_keep_their_constant_severity_when_their_threshold_is_tuned() {
    let mut rules = default_rules();
    for r in rules
        .iter_mut()
        .filter(|r| r.name == "excessive_requests" || r.name == "endpoint_scan")
    {
        r.threshold = 5;
    }
    let e = engine(&rules);
    let out = feed(
        &e,
        &burst("10.0.0.3", "/api/version", Duration::from_millis(2), 0, 5),
    );
    assert_eq!(
        fired(&out),
        [
            ("excessive_requests", "detection", 5, Severity::High),
            ("endpoint_scan", "detection", 5, Severity::Medium),
        ]
    );
}

#[test]
fn metadata_enumeration_fires_at_100_metadata_calls_per_source() {
    let e = engine(&default_rules());
    let mut recs = burst("10.0.0.3", "/api/tags", Duration::from_millis(3), 0, 50);
    recs.extend(burst(
        "10.0.0.3",
        "/v1/models/llama3",
        Duration::from_millis(3),
        50,
        49,
    ));
    assert!(feed(&e, &recs).is_empty());
    let out = feed(
        &e,
        &burst("10.0.0.3", "/api/show", Duration::from_millis(3), 99, 1),
    );
    assert_eq!(
        fired(&out),
        [("metadata_enumeration", "detection", 100, Severity::Low)]
    );
    assert_eq!(out[0].detail().uri_path, None);
}

#[test]
fn bulk_generation_fires_at_32_mib_of_generated_output_per_source() {
    let e = engine(&default_rules());
    // 31 streamed chats of 1 MiB each within 15 minutes: under the threshold.
    let chat = |i: i64, bytes: u64| RequestRecord {
        bytes_out: bytes,
        in_flight_reported: 0,
        identity: None,
        ..req("10.0.0.4", "/api/chat", secs(20), i * 25)
    };
    let recs: Vec<RequestRecord> = (0..31).map(|i| chat(i, 1 << 20)).collect();
    assert!(fired(&feed(&e, &recs)).is_empty());
    let out = feed(&e, &[chat(31, 1 << 20)]);
    assert_eq!(
        fired(&out),
        [("bulk_generation", "detection", 32, Severity::Low)]
    );
    assert_eq!(out[0].detail().bytes, Some(32 << 20));
}

#[test]
fn built_ins_carry_block_safe_actions() {
    let actions: Vec<(String, String)> = default_rules()
        .into_iter()
        .map(|r| (r.name, r.action))
        .collect();
    let want = [
        ("model_exfiltration", "log"),
        ("metadata_enumeration", "log"),
        ("jailbreak_long_generation", "log"),
        ("excessive_requests", "block"),
        ("endpoint_scan", "log"),
        ("bulk_generation", "log"),
        ("auth_failures", "block"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(n, a)| ((*n).to_owned(), (*a).to_owned()))
        .collect();
    assert_eq!(actions, want);
}

/// A request the `[auth]` layer refused with `status` (never forwarded).
fn refused(src: &str, path: &str, status: u16, offset_s: i64) -> RequestRecord {
    RequestRecord {
        status,
        outcome: Outcome::Unauthorized,
        ..req(src, path, Duration::from_millis(1), offset_s)
    }
}

#[test]
fn auth_failures_leaves_a_stale_key_poller_alone_and_flags_a_spray_once() {
    let e = engine(&default_rules());
    // A dashboard left with a revoked key polls /api/tags every 30 s for an hour: 20
    // refusals per 10 minutes, 120 in all. No rule counts them but auth_failures, which
    // stays under its threshold of 60.
    let mut out = Vec::new();
    for i in 0..120 {
        e.observe(&refused("10.0.0.5", "/api/tags", 401, i * 30), &mut out);
        e.tick(at(T0 + i * 30, 0), &mut out);
    }
    assert!(out.is_empty(), "{out:?}");
    // A spray: 60 refusals in one minute from one source, then 60 more.
    let spray: Vec<RequestRecord> = (0..120)
        .map(|i| refused("10.0.0.6", "/api/generate", 401, 4_000 + i))
        .collect();
    let out = feed(&e, &spray[..59]);
    assert!(out.is_empty(), "{out:?}");
    let out = feed(&e, &spray[59..]);
    assert_eq!(
        fired(&out),
        [("auth_failures", "detection", 60, Severity::Low)]
    );
    let d = out[0].detail();
    assert_eq!(
        (
            d.src.as_str(),
            d.identity.as_deref(),
            d.by_identity,
            d.uri_path.as_deref()
        ),
        ("10.0.0.6", None, false, None)
    );
    assert_eq!(
        (
            d.severity,
            d.action,
            d.http_method,
            d.mitre.as_deref(),
            d.bytes
        ),
        (
            Severity::Low,
            crate::detect::event::RuleAction::Block,
            "POST",
            Some("T1110"),
            None
        )
    );
    assert_eq!(
        (d.window_end - d.window_start).num_seconds(),
        600,
        "the 10-minute sliding window"
    );
    let mut closed = Vec::new();
    e.tick(at(T0 + 4_000 + 1_300, 0), &mut closed);
    assert_eq!(
        fired(&closed),
        [("auth_failures", "window_summary", 120, Severity::Low)]
    );
}
