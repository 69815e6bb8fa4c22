//! `[cluster]` sliding counters: deltas per sub-bucket, the engine's own events withheld
//! while counters are shared, merged events with the local ring's figures.

use std::sync::Arc;

use super::*;
use crate::detect::shared::{Deltas, Run, SlideAnswer};

/// Per source, 15-minute sliding window (1-minute sub-buckets).
fn sliding(threshold: i64) -> RuleConfig {
    rule("burst", |r| {
        r.group_by = "src".into();
        r.window_kind = "sliding".into();
        r.threshold = threshold;
    })
}

/// Two requests in the first sub-bucket (the second crosses 2), one in the next.
fn burst() -> Vec<RequestRecord> {
    vec![
        req("10.0.0.1", "/a", secs(2), 0),
        req("10.0.0.1", "/a", secs(4), 10),
        req("10.0.0.1", "/a", secs(6), 70),
    ]
}

/// The sub-bucket of `T0` (a multiple of 60 s).
const I0: u32 = (T0 / 60) as u32;

fn post() -> u8 {
    Method::Post.index() as u8
}

#[test]
fn shared_sliding_counts_become_sub_bucket_deltas_and_local_events_are_withheld() {
    let e = engine(&[sliding(2)]);
    let deltas = Arc::new(Deltas::default());
    deltas.set_shared(true);
    e.attach_deltas(deltas.clone());
    assert!(feed(&e, &burst()).is_empty());
    let mut out = Vec::new();
    e.tick(at(T0 + 2_000, 0), &mut out);
    assert!(out.is_empty(), "{out:?}");
    let slides = deltas.drain_slides();
    assert_eq!(slides.len(), 1);
    let got: Vec<(u32, u64, u64, u64, u8, bool)> = slides[0]
        .subs
        .iter()
        .map(|(i, d)| (*i, d.count, d.sum_ms, d.max_ms, d.method, d.fired_locally))
        .collect();
    assert_eq!(
        got,
        vec![
            (I0, 2, 6_000, 4_000, post(), false),
            (I0 + 1, 1, 6_000, 6_000, post(), false)
        ]
    );
    assert_eq!(slides[0].path(), None);
}

#[test]
fn merged_sliding_events_carry_the_local_rings_figures() {
    // What one instance writes for the burst...
    let local = engine(&[sliding(2)]);
    let detection = feed(&local, &burst());
    assert_eq!(kinds(&detection), [("detection", 2)]);
    let mut summary = Vec::new();
    local.tick(at(T0 + 2_000, 0), &mut summary);
    assert_eq!(kinds(&summary), [("window_summary", 3)]);

    // ...is what a replica writes from the merged answers for the same requests: the merge
    // that crossed (2 requests in sub-bucket I0, the run widened to the window's start), and
    // the check that saw the count fall below 2 at sub-bucket I0 + 15.
    let shared = engine(&[sliding(2)]);
    let deltas = Arc::new(Deltas::default());
    deltas.set_shared(true);
    shared.attach_deltas(deltas.clone());
    feed(&shared, &burst());
    let key = deltas.drain_slides()[0].key;
    let run = Run {
        start: I0 - 14,
        count: 2,
        sum_ms: 6_000,
        max_ms: 4_000,
        bytes: 0,
        method: post(),
    };
    let crossed = SlideAnswer {
        total: 2,
        won: true,
        flagged: true,
        head: I0,
        run,
        ended: None,
    };
    assert_eq!(
        shared.slide_detection(&key, &crossed, None).unwrap(),
        *detection[0].detail()
    );
    let ended = Run {
        count: 3,
        sum_ms: 12_000,
        max_ms: 6_000,
        ..run
    };
    assert_eq!(
        shared.slide_summary(&key, I0 + 15, &ended, None).unwrap(),
        *summary[0].detail()
    );
    let name = shared.slide_name(&key, None).unwrap();
    let digest = name
        .strip_prefix("burst#")
        .and_then(|rest| rest.strip_suffix(":10.0.0.1/32:"))
        .unwrap_or_default();
    assert!(
        digest.len() == 16 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
}

#[test]
fn in_local_mode_the_engine_decides_and_marks_the_delta_that_fired() {
    let e = engine(&[sliding(2)]);
    let deltas = Arc::new(Deltas::default());
    e.attach_deltas(deltas.clone());
    assert_eq!(kinds(&feed(&e, &burst())), [("detection", 2)]);
    let mut out = Vec::new();
    e.tick(at(T0 + 2_000, 0), &mut out);
    assert_eq!(kinds(&out), [("window_summary", 3)]);
    let slides = deltas.drain_slides();
    let fired: Vec<(u32, bool)> = slides[0]
        .subs
        .iter()
        .map(|(i, d)| (*i, d.fired_locally))
        .collect();
    assert_eq!(fired, vec![(I0, true), (I0 + 1, false)]);
}

/// A crossing withheld for the merge (shared) rides on its delta with the local window's
/// figures; when that merge is lost, the detection written from them is the one local mode
/// would have written at the crossing, request for request. Sliding and tumbling alike.
#[test]
fn a_withheld_crossing_becomes_the_detection_local_mode_writes() {
    let rules = || {
        [
            sliding(2),
            rule("tumble", |r| {
                r.group_by = "src".into();
                r.threshold = 2;
            }),
        ]
    };
    for (i, config) in rules().into_iter().enumerate() {
        let name = config.name.clone();
        let local = engine(&[config]);
        let want = feed(&local, &burst()[..2]);
        assert_eq!(kinds(&want), [("detection", 2)], "{name}");

        let e = engine(&[rules()[i].clone()]);
        let deltas = Arc::new(Deltas::default());
        deltas.set_shared(true);
        e.attach_deltas(deltas.clone());
        assert!(feed(&e, &burst()[..2]).is_empty(), "{name}: withheld");
        let withheld = deltas.take_crossed();
        assert_eq!(withheld.len(), 1, "{name}: one crossing");
        let (key, _, snap, path) = withheld.into_iter().next().unwrap();
        assert_eq!(
            e.withheld_detection(&key, path, snap).unwrap(),
            *want[0].detail(),
            "{name}"
        );
        assert!(deltas.take_crossed().is_empty());
    }
}
