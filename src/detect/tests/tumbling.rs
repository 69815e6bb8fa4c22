//! Tumbling windows: alignment, roll-over, thresholds, latency filters, severity.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::detect::event::RuleAction;
use crate::detect::rule::Cutoff;
use crate::detect::{default_rules, Severity};

fn exfil() -> RuleConfig {
    crate::detect::builtin::model_exfiltration()
}

fn counting(threshold: i64) -> RuleConfig {
    rule("counting", |r| r.threshold = threshold)
}

#[test]
fn window_is_aligned_to_the_epoch_like_spl_bin() {
    let e = engine(&[exfil()]);
    let out = feed(&e, &[req("192.168.1.50", "/api/generate", secs(57), 899)]);
    let d = only(&out);
    assert_eq!((d.window_start, d.window_end), (at(T0, 0), at(T0 + 900, 0)));
    let out = feed(&e, &[req("192.168.1.51", "/api/generate", secs(57), 900)]);
    assert_eq!(only(&out).window_start, at(T0 + 900, 0));
}

#[test]
fn detection_carries_the_spec_fields_of_the_seed_rule() {
    let e = engine(&default_rules());
    let out = feed(
        &e,
        &[req(
            "192.168.1.50",
            "/api/generate",
            Duration::from_millis(57_204),
            10,
        )],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind(), "detection");
    let expected = DetectionEvent {
        rule: Arc::from("model_exfiltration"),
        escu_id: Some(Arc::from("c9fd1a54-0eab-4470-8970-d5fcc3c740fb")),
        mitre: Some(Arc::from("T1048")),
        attack_type: Arc::from("Potential Data Exfiltration"),
        src: "192.168.1.50".into(),
        identity: None,
        by_identity: false,
        uri_path: Some("/api/generate".into()),
        http_method: "POST",
        window_start: at(T0, 0),
        window_end: at(T0 + 900, 0),
        count: 1,
        bytes: None,
        avg_response_time: 57.2,
        max_response_time: 57.2,
        severity: Severity::High,
        action: RuleAction::Log,
        in_flight: false,
        risk_score: 20,
    };
    assert_eq!(out[0].detail(), &expected);
}

#[test]
fn latencies_of_a_minute_or_more_count_unlike_the_seed_regex() {
    let e = engine(&[exfil()]);
    let out = feed(&e, &[req("10.0.0.1", "/api/pull", secs(3_725), 5)]);
    assert_eq!(only(&out).max_response_time, 3725.0);
}

#[test]
fn record_in_the_next_window_first_emits_the_previous_summary() {
    let e = engine(&[exfil()]);
    let out = feed(
        &e,
        &[
            req("10.0.0.1", "/api/show", secs(56), 100),
            req("10.0.0.1", "/api/show", secs(58), 800),
            req("10.0.0.1", "/api/show", secs(59), 905),
        ],
    );
    assert_eq!(
        kinds(&out),
        [("detection", 1), ("window_summary", 2), ("detection", 1)]
    );
    let summary = out[1].detail();
    assert_eq!(summary.window_start, at(T0, 0));
    assert_eq!(
        (summary.avg_response_time, summary.max_response_time),
        (57.0, 58.0)
    );
    assert_eq!(out[2].detail().window_start, at(T0 + 900, 0));
}

#[test]
fn exactly_threshold_requests_fire_and_one_fewer_do_not() {
    let e = engine(&[counting(3)]);
    let two = [
        req("10.0.0.1", "/a", secs(1), 1),
        req("10.0.0.1", "/a", secs(1), 2),
    ];
    assert!(feed(&e, &two).is_empty());
    let out = feed(&e, &[req("10.0.0.1", "/a", secs(1), 3)]);
    assert_eq!(kinds(&out), [("detection", 3)]);

    let below = engine(&[counting(3)]);
    assert!(feed(&below, &two).is_empty());
    let mut fin = Vec::new();
    below.finish(&mut fin);
    assert!(
        fin.is_empty(),
        "an unflagged window has no summary: {fin:?}"
    );
}

#[test]
fn detection_fires_once_per_key_per_window() {
    let e = engine(&[counting(2)]);
    let recs: Vec<_> = (0..5).map(|i| req("10.0.0.1", "/a", secs(1), i)).collect();
    assert_eq!(kinds(&feed(&e, &recs)), [("detection", 2)]);
    let mut fin = Vec::new();
    e.finish(&mut fin);
    assert_eq!(kinds(&fin), [("window_summary", 5)]);
}

#[test]
fn min_latency_is_a_strict_lower_bound() {
    let e = engine(&[exfil()]);
    assert!(feed(&e, &[req("10.0.0.1", "/x", secs(55), 1)]).is_empty());
    let just_over = secs(55) + Duration::from_nanos(1);
    assert_eq!(
        kinds(&feed(&e, &[req("10.0.0.1", "/x", just_over, 2)])),
        [("detection", 1)]
    );
}

#[test]
fn zero_min_latency_counts_a_request_of_exactly_zero_latency() {
    let e = engine(&[rule("every", |r| r.min_latency = "0s".into())]);
    assert_eq!(
        kinds(&feed(&e, &[req("10.0.0.1", "/x", Duration::ZERO, 1)])),
        [("detection", 1)]
    );
}

#[test]
fn one_nanosecond_min_latency_stays_strict() {
    let e = engine(&[rule("above_1ns", |r| r.min_latency = "1ns".into())]);
    let at_min = [
        req("10.0.0.1", "/x", Duration::ZERO, 1),
        req("10.0.0.1", "/x", Duration::from_nanos(1), 2),
    ];
    assert!(feed(&e, &at_min).is_empty());
    assert_eq!(
        kinds(&feed(
            &e,
            &[req("10.0.0.1", "/x", Duration::from_nanos(2), 3)]
        )),
        [("detection", 1)]
    );
}

#[test]
fn max_latency_is_an_exclusive_upper_bound() {
    let e = engine(&[rule("band", |r| r.max_latency = "60s".into())]);
    assert!(feed(&e, &[req("10.0.0.1", "/x", secs(60), 1)]).is_empty());
    let just_under = secs(60) - Duration::from_nanos(1);
    assert_eq!(
        kinds(&feed(&e, &[req("10.0.0.1", "/x", just_under, 2)])),
        [("detection", 1)]
    );
}

#[test]
fn only_listed_methods_count() {
    let e = engine(&[rule("posts", |r| r.methods = vec!["POST".into()])]);
    let get = req_at("10.0.0.1", Method::Get, "/x", secs(1), at(T0, 0));
    assert!(feed(&e, &[get]).is_empty());
    assert_eq!(feed(&e, &[req("10.0.0.1", "/x", secs(1), 1)]).len(), 1);
}

#[test]
fn severity_is_graded_on_the_average_rounded_to_two_decimals() {
    let e = engine(&[rule("sev", |_| {})]);
    let avg_50_004 = Duration::from_micros(50_004_000);
    assert_eq!(
        only(&feed(&e, &[req("10.0.0.1", "/a", avg_50_004, 1)])).severity,
        Severity::Medium
    );
    let avg_50_006 = Duration::from_micros(50_006_000);
    let d = feed(&e, &[req("10.0.0.2", "/a", avg_50_006, 1)]);
    assert_eq!(
        (only(&d).avg_response_time, only(&d).severity),
        (50.01, Severity::High)
    );
    assert_eq!(
        only(&feed(&e, &[req("10.0.0.3", "/a", secs(40), 1)])).severity,
        Severity::Low
    );
}

#[test]
fn severity_by_max_latency_and_by_count() {
    let by_max = engine(&[rule("m", |r| {
        r.threshold = 2;
        r.severity_by = "max_latency".into();
    })]);
    let out = feed(
        &by_max,
        &[
            req("10.0.0.1", "/a", secs(10), 1),
            req("10.0.0.1", "/a", secs(51), 2),
        ],
    );
    assert_eq!(
        (only(&out).avg_response_time, only(&out).severity),
        (30.5, Severity::High)
    );

    let by_count = engine(&[rule("c", |r| {
        r.severity_by = "count".into();
        r.severity_high = Some(Cutoff::Count(2));
        r.severity_medium = Some(Cutoff::Count(1));
    })]);
    let recs: Vec<_> = (0..3).map(|i| req("10.0.0.1", "/a", secs(1), i)).collect();
    assert_eq!(only(&feed(&by_count, &recs)).severity, Severity::Low);
    let mut fin = Vec::new();
    by_count.finish(&mut fin);
    assert_eq!(only(&fin).severity, Severity::High);
}

#[test]
fn group_by_src_counts_all_paths_together_and_omits_uri_path() {
    let e = engine(&[rule("per_src", |r| {
        r.group_by = "src".into();
        r.threshold = 2;
    })]);
    let out = feed(
        &e,
        &[
            req("10.0.0.1", "/api/tags", secs(1), 1),
            req("10.0.0.1", "/api/show", secs(1), 2),
        ],
    );
    let d = only(&out);
    assert_eq!((d.count, d.uri_path.as_deref()), (2, None));
    assert_eq!(e.tracked_paths(), 0);
}

#[test]
fn group_by_src_path_keeps_paths_apart() {
    let e = engine(&[counting(2)]);
    let out = feed(
        &e,
        &[
            req("10.0.0.1", "/api/tags", secs(1), 1),
            req("10.0.0.1", "/api/show", secs(1), 2),
        ],
    );
    assert!(out.is_empty());
    assert_eq!((e.tracked_keys(), e.tracked_paths()), (2, 2));
}

#[test]
fn tick_closes_windows_at_their_end_and_forgets_the_keys() {
    let e = engine(&[counting(2)]);
    feed(
        &e,
        &[
            req("10.0.0.1", "/a", secs(1), 1),
            req("10.0.0.1", "/a", secs(3), 2),
        ],
    );
    feed(&e, &[req("10.0.0.2", "/a", secs(1), 3)]);
    let mut out = Vec::new();
    e.tick(at(T0 + 899, 999), &mut out);
    assert!(out.is_empty());
    assert_eq!(e.tracked_keys(), 2);
    e.tick(at(T0 + 900, 0), &mut out);
    assert_eq!(kinds(&out), [("window_summary", 2)]);
    assert_eq!(out[0].detail().avg_response_time, 2.0);
    assert_eq!((e.tracked_keys(), e.tracked_paths()), (0, 0));
}

#[test]
fn finish_flushes_every_flagged_window_in_order() {
    let e = engine(&[exfil()]);
    feed(
        &e,
        &[
            req("10.0.0.9", "/b", secs(56), 1),
            req("10.0.0.1", "/b", secs(56), 2),
            req("10.0.0.1", "/a", secs(56), 3),
        ],
    );
    let mut out = Vec::new();
    e.finish(&mut out);
    let rows: Vec<_> = out
        .iter()
        .map(|e| {
            (
                e.kind(),
                e.detail().src.as_str(),
                e.detail().uri_path.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("window_summary", "10.0.0.1", "/a"),
            ("window_summary", "10.0.0.1", "/b"),
            ("window_summary", "10.0.0.9", "/b"),
        ]
    );
    assert_eq!(e.tracked_keys(), 0);
}

#[test]
fn a_record_older_than_the_current_window_is_not_counted() {
    let e = engine(&[counting(2)]);
    feed(&e, &[req("10.0.0.1", "/a", secs(1), 901)]);
    assert!(feed(&e, &[req("10.0.0.1", "/a", secs(1), 899)]).is_empty());
    assert_eq!(e.late_records(), 1);
}

#[test]
fn blocked_requests_are_never_counted() {
    let e = engine(&[counting(1)]);
    let mut r = req("10.0.0.1", "/a", secs(1), 1);
    r.outcome = Outcome::Blocked;
    assert!(feed(&e, &[r]).is_empty());
    assert_eq!(e.tracked_keys(), 0);
}

#[test]
fn normalised_spellings_of_a_path_share_one_key() {
    let e = engine(&[counting(2)]);
    let out = feed(
        &e,
        &[
            req("10.0.0.1", "/api/show", secs(1), 1),
            req("10.0.0.1", "/api/%73how?x=1", secs(1), 2),
        ],
    );
    assert_eq!(only(&out).uri_path.as_deref(), Some("/api/show"));
}

#[test]
fn records_outside_the_supported_time_range_are_counted_as_such_not_clamped() {
    let sliding = rule("sliding", |r| {
        r.window_kind = "sliding".to_owned();
        r.threshold = 2;
    });
    let e = engine(&[counting(2), sliding]);
    let last = i64::from(u32::MAX);
    let mut out = Vec::new();
    for t in [-1, 0, last, last + 1] {
        let when = at(t, 0);
        e.observe(
            &req_at("10.0.0.1", Method::Get, "/api/tags", secs(1), when),
            &mut out,
        );
    }
    // Clamped, -1 would join 0 and last + 1 would join last, reaching the threshold of 2.
    assert_eq!(kinds(&out), vec![]);
    assert_eq!(e.out_of_range_records(), 2);
    assert_eq!(e.tracked_keys(), 2);
}
