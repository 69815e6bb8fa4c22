//! Sliding windows: 15 sub-buckets, detection once per episode, summary when it ends.

use super::*;

/// Per source, any latency, 15-minute sliding window (1-minute sub-buckets).
fn sliding(threshold: i64) -> RuleConfig {
    rule("burst", |r| {
        r.group_by = "src".into();
        r.window_kind = "sliding".into();
        r.threshold = threshold;
    })
}

fn tumbling(threshold: i64) -> RuleConfig {
    rule("burst_tumbling", |r| {
        r.group_by = "src".into();
        r.threshold = threshold;
    })
}

fn burst_across_a_quarter_hour() -> Vec<RequestRecord> {
    [890, 895, 905, 910]
        .iter()
        .map(|&t| req("10.0.0.1", "/api/tags", secs(1), t))
        .collect()
}

#[test]
fn burst_straddling_a_tumbling_boundary_fires_only_the_sliding_rule() {
    let tumb = engine(&[tumbling(3)]);
    assert!(feed(&tumb, &burst_across_a_quarter_hour()).is_empty());

    let slide = engine(&[sliding(3)]);
    let out = feed(&slide, &burst_across_a_quarter_hour());
    assert_eq!(kinds(&out), [("detection", 3)]);
    let d = out[0].detail();
    assert_eq!(
        (d.window_start, d.window_end),
        (at(T0 + 60, 0), at(T0 + 960, 0))
    );
}

#[test]
fn detection_fires_once_until_the_key_falls_below_threshold() {
    let e = engine(&[sliding(2)]);
    let out = feed(
        &e,
        &[
            req("10.0.0.1", "/a", secs(2), 0),
            req("10.0.0.1", "/a", secs(4), 10),
            req("10.0.0.1", "/a", secs(6), 20),
        ],
    );
    assert_eq!(kinds(&out), [("detection", 2)]);

    let mut out = Vec::new();
    e.tick(at(T0 + 899, 999), &mut out);
    assert!(out.is_empty());
    e.tick(at(T0 + 900, 0), &mut out);
    assert_eq!(kinds(&out), [("window_summary", 3)]);
    let s = out[0].detail();
    assert_eq!(
        (s.window_start, s.window_end),
        (at(T0 - 840, 0), at(T0 + 900, 0))
    );
    assert_eq!((s.avg_response_time, s.max_response_time), (4.0, 6.0));
    assert_eq!(e.tracked_keys(), 0);

    let again = feed(
        &e,
        &[
            req("10.0.0.1", "/a", secs(1), 901),
            req("10.0.0.1", "/a", secs(1), 902),
        ],
    );
    assert_eq!(kinds(&again), [("detection", 2)]);
}

#[test]
fn a_later_request_closes_an_episode_that_has_expired() {
    let e = engine(&[sliding(2)]);
    feed(
        &e,
        &[
            req("10.0.0.1", "/a", secs(1), 0),
            req("10.0.0.1", "/a", secs(1), 1),
        ],
    );
    let out = feed(&e, &[req("10.0.0.1", "/a", secs(1), 2_000)]);
    assert_eq!(kinds(&out), [("window_summary", 2)]);
    assert_eq!(out[0].detail().window_end, at(T0 + 900, 0));
}

#[test]
fn requests_are_forgotten_after_the_window_within_one_sub_bucket() {
    let e = engine(&[sliding(2)]);
    // 14 minutes 59 seconds apart: same window.
    let out = feed(
        &e,
        &[
            req("10.0.0.1", "/a", secs(1), 0),
            req("10.0.0.1", "/a", secs(1), 899),
        ],
    );
    assert_eq!(kinds(&out), [("detection", 2)]);
    // 14 minutes 1 second apart but 15 sub-buckets apart: the approximation (≤ 1/15 of the
    // window) lets the first one go.
    let e = engine(&[sliding(2)]);
    let out = feed(
        &e,
        &[
            req("10.0.0.2", "/a", secs(1), 59),
            req("10.0.0.2", "/a", secs(1), 900),
        ],
    );
    assert!(out.is_empty());
}

#[test]
fn finish_ends_a_sliding_episode_where_it_would_expire() {
    let e = engine(&[sliding(1)]);
    feed(&e, &[req("10.0.0.1", "/a", secs(1), 120)]);
    let mut out = Vec::new();
    e.finish(&mut out);
    assert_eq!(kinds(&out), [("window_summary", 1)]);
    assert_eq!(out[0].detail().window_end, at(T0 + 1_020, 0));
    assert_eq!(e.tracked_keys(), 0);
}

#[test]
fn idle_unflagged_sliding_keys_are_forgotten_once_empty() {
    let e = engine(&[sliding(5)]);
    feed(&e, &[req("10.0.0.1", "/a", secs(1), 0)]);
    let mut out = Vec::new();
    e.tick(at(T0 + 600, 0), &mut out);
    assert_eq!(e.tracked_keys(), 1);
    e.tick(at(T0 + 900, 0), &mut out);
    assert_eq!((e.tracked_keys(), out.len()), (0, 0));
}

#[test]
fn a_trickle_before_the_burst_is_part_of_the_run_the_figures_cover() {
    let e = engine(&[sliding(3)]);
    // The key never goes a full window without a request, so all four are one run.
    let out = feed(
        &e,
        &[
            req("10.0.0.1", "/a", secs(20), 0),
            req("10.0.0.1", "/a", secs(20), 600),
            req("10.0.0.1", "/a", secs(2), 1_200),
            req("10.0.0.1", "/a", secs(2), 1_210),
        ],
    );
    // The window that crossed holds the last three; the figures cover the whole run.
    let d = only(&out);
    assert_eq!((d.count, d.window_start), (3, at(T0 + 360, 0)));
    assert_eq!((d.avg_response_time, d.max_response_time), (11.0, 20.0));
    let mut out = Vec::new();
    e.tick(at(T0 + 1_499, 0), &mut out);
    assert!(out.is_empty());
    e.tick(at(T0 + 1_500, 0), &mut out);
    let s = only(&out);
    assert_eq!(
        (s.count, s.window_start, s.window_end),
        (4, at(T0, 0), at(T0 + 1_500, 0))
    );
    assert_eq!((s.avg_response_time, s.max_response_time), (11.0, 20.0));
}

#[test]
fn a_second_episode_counts_only_requests_after_the_first_ended() {
    let e = engine(&[sliding(2)]);
    feed(
        &e,
        &[
            req("10.0.0.1", "/a", secs(1), 0),
            req("10.0.0.1", "/a", secs(1), 300),
        ],
    );
    // At T0 + 900 the first request expires: the episode ends, one request stays live.
    let out = feed(&e, &[req("10.0.0.1", "/a", secs(5), 900)]);
    assert_eq!(kinds(&out), [("window_summary", 2), ("detection", 2)]);
    // The detection's figures are the new run's: the 1 s request was reported already.
    assert_eq!(out[1].detail().avg_response_time, 5.0);
    let mut out = Vec::new();
    e.finish(&mut out);
    let s = only(&out);
    assert_eq!((s.count, s.avg_response_time), (1, 5.0));
}
