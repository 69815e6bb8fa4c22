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
    in_flight_masks(e, rec, elapsed, at_s, reported, &mut 0)
}

/// [`in_flight`] that also keeps the caller's `sliding` mask.
fn in_flight_masks(
    e: &Engine,
    rec: &RequestRecord,
    elapsed: u64,
    at_s: i64,
    reported: &mut u64,
    sliding: &mut u64,
) -> Vec<Event> {
    let mut out = Vec::new();
    e.in_flight(
        rec,
        secs(elapsed),
        at(T0 + at_s, 0),
        reported,
        sliding,
        &mut out,
    );
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

fn sliding_exfil() -> RuleConfig {
    let mut r = exfil();
    r.window_kind = "sliding".into();
    r
}

#[test]
fn a_sliding_key_is_reported_once_in_flight_and_its_completion_only_counts() {
    let e = engine(&[sliding_exfil()]);
    let rec = running("10.0.0.11", "/api/pull");
    let (mut reported, mut sliding) = (0, 0);
    // 60 s into the request, at T0 + 70 s (sub-bucket T0 + 60 s of 60 s sub-buckets).
    let out = in_flight_masks(&e, &rec, 60, 70, &mut reported, &mut sliding);
    let d = only(&out);
    assert_eq!(out[0].kind(), "detection");
    assert!(d.in_flight);
    assert_eq!(
        (d.count, d.avg_response_time, d.max_response_time),
        (1, 60.0, 60.0)
    );
    assert_eq!(
        (d.window_start, d.window_end),
        (at(T0 - 780, 0), at(T0 + 120, 0))
    );
    assert_eq!(d.uri_path.as_deref(), Some("/api/pull"));
    assert_eq!((reported, sliding), (1, 1));
    // The key is not flagged by the report: nothing is tracked until the request completes.
    assert_eq!(e.tracked_keys(), 0);
    assert!(in_flight_masks(&e, &rec, 61, 71, &mut reported, &mut sliding).is_empty());
    // It completes after 62 s carrying the mask: counted, flagged, no second detection.
    let mut done = req("10.0.0.11", "/api/pull", secs(62), 72);
    done.in_flight_reported = sliding;
    assert!(feed(&e, &[done]).is_empty());
    assert_eq!(e.tracked_keys(), 1);
    // Another running request of the key, asked with fresh masks: the key is flagged.
    let (mut r2, mut s2) = (0, 0);
    assert!(in_flight_masks(&e, &rec, 58, 100, &mut r2, &mut s2).is_empty());
    assert_eq!((r2, s2), (0, 0));
    // It completes unreported: the key is still flagged, no detection either.
    assert!(feed(&e, &[req("10.0.0.11", "/api/pull", secs(56), 100)]).is_empty());
    // The episode ends when the ring empties: the summary covers the completed requests.
    let mut out = Vec::new();
    e.tick(at(T0 + 1_000, 0), &mut out);
    let s = only(&out);
    assert_eq!(out[0].kind(), "window_summary");
    assert!(!s.in_flight);
    assert_eq!(
        (s.count, s.avg_response_time, s.max_response_time),
        (2, 59.0, 62.0)
    );
    assert_eq!(
        (s.window_start, s.window_end),
        (at(T0 - 780, 0), at(T0 + 960, 0))
    );
}

#[test]
fn a_flagged_sliding_key_is_asked_again_and_reported_once_its_episode_ends() {
    let e = engine(&[sliding_exfil()]);
    assert_eq!(
        feed(&e, &[req("10.0.0.12", "/api/pull", secs(57), 10)]).len(),
        1
    );
    let rec = running("10.0.0.12", "/api/pull");
    let (mut reported, mut sliding) = (0, 0);
    assert!(in_flight_masks(&e, &rec, 56, 70, &mut reported, &mut sliding).is_empty());
    assert_eq!((reported, sliding), (0, 0));
    // At T0 + 900 s the first request has left the ring: its summary, then the report.
    let out = in_flight_masks(&e, &rec, 886, 900, &mut reported, &mut sliding);
    let got: Vec<(&str, u64, bool)> = out
        .iter()
        .map(|ev| (ev.kind(), ev.detail().count, ev.detail().in_flight))
        .collect();
    assert_eq!(got, [("window_summary", 1, false), ("detection", 1, true)]);
    assert_eq!(out[1].detail().max_response_time, 886.0);
    assert_eq!((reported, sliding), (1, 1));
}

#[test]
fn only_threshold_one_count_rules_with_a_min_latency_report_in_flight() {
    let rules = [
        rule("two", |r| {
            r.min_latency = "1s".into();
            r.threshold = 2;
        }),
        rule("sliding_two", |r| {
            r.min_latency = "1s".into();
            r.window_kind = "sliding".into();
            r.threshold = 2;
        }),
        rule("volume", |r| {
            r.min_latency = "1s".into();
            r.metric = "bytes_out".into();
            r.threshold_bytes = Some(1);
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
    let e = engine(&[sliding_exfil()]);
    assert_eq!(e.in_flight_after(), Some(secs(55)));
}
