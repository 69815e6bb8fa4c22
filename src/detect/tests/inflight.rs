//! In-flight detection: a running request flags its key once it passes `min_latency`; its
//! completion is counted without a second detection; summaries count completed requests.

use super::*;

fn exfil() -> RuleConfig {
    crate::detect::builtin::model_exfiltration()
}

/// The start record of a request still running (only src, method and path matter).
fn running(src: &str, path: &str) -> RequestRecord {
    req(src, path, Duration::ZERO, 0)
}

fn in_flight(
    e: &Engine,
    rec: &RequestRecord,
    elapsed: u64,
    at_s: i64,
    reported: &mut u64,
) -> Vec<Event> {
    let mut out = Vec::new();
    e.in_flight(rec, secs(elapsed), at(T0 + at_s, 0), reported, &mut out);
    out
}

#[test]
fn a_running_request_is_flagged_once_and_its_completion_adds_no_second_detection() {
    let e = engine(&[exfil()]);
    let rec = running("10.0.0.7", "/api/pull");
    let mut reported = 0;
    let out = in_flight(&e, &rec, 60, 70, &mut reported);
    let d = only(&out);
    assert_eq!(out[0].kind(), "detection");
    assert!(d.in_flight);
    assert_eq!(
        (d.count, d.avg_response_time, d.max_response_time),
        (1, 60.0, 60.0)
    );
    assert_eq!((d.window_start, d.window_end), (at(T0, 0), at(T0 + 900, 0)));
    assert_eq!(d.uri_path.as_deref(), Some("/api/pull"));
    assert_eq!(reported, 1);
    // Asked again (same request, or a fresh tracker): the key is already flagged.
    assert!(in_flight(&e, &rec, 61, 71, &mut reported).is_empty());
    assert!(in_flight(&e, &rec, 61, 71, &mut 0).is_empty());
    // It completes after 62 s, then another slow request completes: no detection.
    let done = feed(
        &e,
        &[
            req("10.0.0.7", "/api/pull", secs(62), 72),
            req("10.0.0.7", "/api/pull", secs(56), 100),
        ],
    );
    assert!(done.is_empty(), "{done:?}");
    // The summary covers the two completed requests only.
    let mut out = Vec::new();
    e.tick(at(T0 + 900, 0), &mut out);
    let s = only(&out);
    assert_eq!(out[0].kind(), "window_summary");
    assert!(!s.in_flight);
    assert_eq!(
        (s.count, s.avg_response_time, s.max_response_time),
        (2, 59.0, 62.0)
    );
}

#[test]
fn a_request_that_never_reaches_min_latency_is_not_flagged() {
    let e = engine(&[exfil()]);
    let rec = running("10.0.0.8", "/api/pull");
    let mut reported = 0;
    assert!(in_flight(&e, &rec, 55, 60, &mut reported).is_empty());
    assert_eq!((reported, e.tracked_keys()), (0, 0));
    assert!(feed(&e, &[req("10.0.0.8", "/api/pull", secs(54), 60)]).is_empty());
    let mut out = Vec::new();
    e.tick(at(T0 + 900, 0), &mut out);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_window_flagged_only_in_flight_closes_without_a_summary() {
    let e = engine(&[exfil()]);
    let rec = running("10.0.0.9", "/api/pull");
    let mut reported = 0;
    assert_eq!(in_flight(&e, &rec, 56, 890, &mut reported).len(), 1);
    let mut out = Vec::new();
    e.tick(at(T0 + 900, 0), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(e.tracked_keys(), 0);
    // It completes in the next window: counted there, a detection of that window.
    let out = feed(&e, &[req("10.0.0.9", "/api/pull", secs(70), 904)]);
    let d = only(&out);
    assert!(!d.in_flight);
    assert_eq!((d.count, d.window_start), (1, at(T0 + 900, 0)));
}

#[test]
fn only_threshold_one_count_rules_on_tumbling_windows_report_in_flight() {
    let rules = [
        rule("two", |r| {
            r.min_latency = "1s".into();
            r.threshold = 2;
        }),
        rule("sliding", |r| {
            r.min_latency = "1s".into();
            r.window_kind = "sliding".into();
        }),
        rule("any_latency", |r| r.threshold = 1),
    ];
    let e = engine(&rules);
    assert_eq!(e.in_flight_after(), None);
    let mut reported = 0;
    assert!(in_flight(
        &e,
        &running("10.0.0.10", "/api/pull"),
        600,
        600,
        &mut reported
    )
    .is_empty());
    assert_eq!(e.tracked_keys(), 0);
    let e = engine(&[exfil()]);
    assert_eq!(e.in_flight_after(), Some(secs(55)));
}
