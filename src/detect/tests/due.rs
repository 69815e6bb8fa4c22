//! Ticks skip the walk of every key while no window can be due (`tumbling_due`,
//! `sliding_due`), and skipping never changes what the engine reports.

use std::sync::atomic::Ordering;

use proptest::prelude::*;

use super::*;
use crate::detect::rule::Cutoff;

fn rules() -> Vec<RuleConfig> {
    vec![
        // Tumbling, 5 minutes (the built-in shape), threshold 3: summaries of flagged keys.
        rule("five", |r| {
            r.group_by = "src".into();
            r.window = "5m".into();
            r.threshold = 3;
        }),
        // Tumbling, 1 minute, by source and path: keys ending at many different times.
        rule("one", |r| {
            r.group_by = "src_path".into();
            r.window = "1m".into();
            r.threshold = 2;
        }),
        // Sliding, 15 minutes (1-minute sub-buckets): episodes that end on a tick.
        slide(),
        // Sliding, 10 minutes (40 s sub-buckets), a volume rule: the byte ring's map.
        rule("bulk", |r| {
            r.group_by = "src".into();
            r.window = "10m".into();
            r.window_kind = "sliding".into();
            r.metric = "bytes_out".into();
            r.threshold_bytes = Some(1_000);
            r.severity_by = "bytes".into();
            r.severity_high = Some(Cutoff::Count(3_000));
            r.severity_medium = Some(Cutoff::Count(1_500));
        }),
    ]
}

fn sized(src: &str, path: &str, out: u64, when: DateTime<Utc>) -> RequestRecord {
    RequestRecord {
        bytes_out: out,
        ..req_at(src, Method::Post, path, secs(1), when)
    }
}

#[test]
fn a_tick_walks_the_keys_only_once_a_window_can_be_due() {
    let e = engine(&rules()[..1]);
    // A fresh engine does not know: its first tick walks.
    assert_eq!(e.tumbling_due.load(Ordering::Relaxed), 0);
    let mut out = Vec::new();
    for s in 0..3 {
        e.observe(&req("10.0.0.1", "/api/tags", secs(1), 10 + s), &mut out);
    }
    assert_eq!(kinds(&out), [("detection", 3)]);
    // Still unknown: an insert only ever lowers the bound.
    assert_eq!(e.tumbling_due.load(Ordering::Relaxed), 0);
    let end = u64::try_from(T0 + 300).unwrap();
    out.clear();
    // The first tick walks and finds the window's end.
    e.tick(at(T0 + 20, 0), &mut out);
    assert_eq!(e.tumbling_due.load(Ordering::Relaxed), end);
    e.tick(at(T0 + 299, 999), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(e.tumbling_due.load(Ordering::Relaxed), end);
    // A key of a later window does not move the bound later.
    e.observe(&req("10.0.0.2", "/api/tags", secs(1), 400), &mut out);
    assert_eq!(e.tumbling_due.load(Ordering::Relaxed), end);
    e.tick(at(T0 + 300, 0), &mut out);
    assert_eq!(kinds(&out), [("window_summary", 3)]);
    assert_eq!(out[0].detail().src, "10.0.0.1");
    // The walk found the next end among the keys it kept.
    assert_eq!(
        e.tumbling_due.load(Ordering::Relaxed),
        u64::try_from(T0 + 600).unwrap()
    );
    assert_eq!(e.tracked_keys(), 1);
    out.clear();
    e.tick(at(T0 + 600, 0), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(e.tracked_keys(), 0);
    // Nothing held: nothing is ever due until a key comes.
    assert_eq!(e.tumbling_due.load(Ordering::Relaxed), u64::MAX);
}

#[test]
fn a_sliding_key_is_walked_when_its_oldest_request_leaves_the_ring() {
    let e = engine(&rules()[2..3]);
    let mut out = Vec::new();
    for s in [0, 30, 70] {
        e.observe(&req("10.0.0.1", "/api/tags", secs(1), s), &mut out);
    }
    assert_eq!(kinds(&out), [("detection", 3)]);
    assert_eq!(e.sliding_due.load(Ordering::Relaxed), 0);
    out.clear();
    e.tick(at(T0 + 100, 0), &mut out);
    // 1-minute sub-buckets: the request at T0 leaves the 15-minute ring at T0 + 900.
    let leaves = u64::try_from(T0 + 900).unwrap() * 1000;
    assert_eq!(e.sliding_due.load(Ordering::Relaxed), leaves);
    e.tick(at(T0 + 899, 999), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(e.sliding_due.load(Ordering::Relaxed), leaves);
    // The episode ends when the first request leaves; the next change is the third's.
    e.tick(at(T0 + 900, 0), &mut out);
    assert_eq!(kinds(&out), [("window_summary", 3)]);
    assert_eq!(
        e.sliding_due.load(Ordering::Relaxed),
        u64::try_from(T0 + 60 + 900).unwrap() * 1000
    );
    out.clear();
    e.tick(at(T0 + 960, 0), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(e.tracked_keys(), 0);
    assert_eq!(e.sliding_due.load(Ordering::Relaxed), u64::MAX);
}

#[test]
fn a_late_request_in_an_older_sub_bucket_brings_the_sliding_walk_forward() {
    let e = engine(&rules()[2..3]);
    let mut out = Vec::new();
    e.observe(&req("10.0.0.1", "/a", secs(1), 300), &mut out);
    e.tick(at(T0 + 301, 0), &mut out);
    let first = u64::try_from(T0 + 300 + 900).unwrap() * 1000;
    assert_eq!(e.sliding_due.load(Ordering::Relaxed), first);
    // A request that completed two minutes before the newest one lands in an older
    // sub-bucket of the same ring: it leaves the ring first.
    e.observe(&req("10.0.0.1", "/a", secs(1), 180), &mut out);
    assert_eq!(
        e.sliding_due.load(Ordering::Relaxed),
        u64::try_from(T0 + 180 + 900).unwrap() * 1000
    );
}

/// How long before the newest time a request may complete (seconds, exclusive).
const MAX_BACK: u16 = 150;

/// One step of a random run: a request, or a tick.
#[derive(Debug, Clone)]
enum Op {
    /// Source, path, seconds the newest time moves on, seconds this request completed
    /// before the newest time (a late arrival), bytes out.
    Request(u8, u8, u16, u16, u16),
    /// Seconds from the newest time to the tick time (behind it as `scan` ticks, up to a
    /// window, or ahead as `serve` ticks a quiet engine); tick times never go back. Whether
    /// requests counted after a tick may have completed before it is `run`'s `behind_ticks`.
    Tick(i16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 0u8..3, 0u16..120, 0u16..MAX_BACK, 0u16..700)
            .prop_map(|(s, p, dt, back, out)| Op::Request(s, p, dt, back, out)),
        1 => (-900i16..400).prop_map(Op::Tick),
    ]
}

/// Runs `ops` on a fresh engine; `walk_always` forgets both bounds before every tick (every
/// tick then walks every key, as before the bounds existed). Returns every event, the key
/// count after each tick and how many ticks skipped both walks. No request goes back more
/// than `max_back` seconds from the newest time. Unless `behind_ticks`, no request counted
/// after a tick completed before it (as `scan` and `serve` guarantee with a steady clock);
/// with it, requests may (a wall clock stepped back, a record delayed past the grace).
fn run(
    ops: &[Op],
    walk_always: bool,
    max_back: u16,
    behind_ticks: bool,
) -> (Vec<Event>, Vec<usize>, usize) {
    let e = engine(&rules());
    let (mut out, mut keys, mut skipped) = (Vec::new(), Vec::new(), 0);
    let (mut newest, mut ticked) = (T0 * 1000, T0 * 1000);
    for op in ops {
        match *op {
            Op::Request(s, p, dt, back, bytes) => {
                newest += i64::from(dt) * 1000 + 7;
                let when = Utc
                    .timestamp_millis_opt(newest - i64::from(back) * 1000)
                    .unwrap();
                let src = format!("10.0.0.{}", s + 1);
                let path = ["/api/tags", "/api/show", "/api/chat"][usize::from(p)];
                e.observe(&sized(&src, path, u64::from(bytes), when), &mut out);
            }
            Op::Tick(lead) => {
                ticked = ticked.max(newest + i64::from(lead) * 1000);
                if !behind_ticks {
                    // The next request completes after this tick time.
                    newest = newest.max(ticked + i64::from(max_back) * 1000);
                }
                if walk_always {
                    forget_bounds(&e);
                }
                let tumbling = e.tumbling_due.load(Ordering::Relaxed);
                let sliding = e.sliding_due.load(Ordering::Relaxed);
                if tumbling > u64::try_from(ticked / 1000).unwrap()
                    && sliding > u64::try_from(ticked).unwrap()
                {
                    skipped += 1;
                }
                e.tick(Utc.timestamp_millis_opt(ticked).unwrap(), &mut out);
                keys.push(e.tracked_keys());
            }
        }
    }
    (out, keys, skipped)
}

#[test]
fn a_long_run_skips_most_walks_and_reports_the_same() {
    // A fixed pseudo-random run (a linear congruential generator): 5 000 steps.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (x >> 33) % n
    };
    let ops: Vec<Op> = (0..5_000)
        .map(|_| {
            if next(5) == 0 {
                Op::Tick(i16::try_from(next(30)).unwrap() - 25)
            } else {
                Op::Request(
                    u8::try_from(next(4)).unwrap(),
                    u8::try_from(next(3)).unwrap(),
                    u16::try_from(next(4)).unwrap(),
                    // Mostly in time order, as a proxy sees its requests complete.
                    u16::try_from(next(3)).unwrap(),
                    u16::try_from(next(700)).unwrap(),
                )
            }
        })
        .collect();
    let (events, keys, skipped) = run(&ops, false, 3, false);
    let (want_events, want_keys, _) = run(&ops, true, 3, false);
    assert_eq!(keys, want_keys);
    assert_eq!(events, want_events);
    let ticks = keys.len();
    assert!(ticks > 900, "{ticks} ticks");
    assert!(!events.is_empty());
    // Ticks every few seconds of a 15-minute sliding window and 1- to 5-minute tumbling
    // ones: most ticks have nothing due.
    assert!(
        skipped * 10 > ticks * 7,
        "{skipped} of {ticks} ticks skipped"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn skipping_walks_changes_no_event_and_no_key_count(ops in proptest::collection::vec(op(), 1..250)) {
        let (events, keys, _) = run(&ops, false, MAX_BACK, false);
        let (want_events, want_keys, _) = run(&ops, true, MAX_BACK, false);
        prop_assert_eq!(keys, want_keys);
        prop_assert_eq!(events, want_events);
    }

    /// The same when requests arrive that completed before earlier ticks (and before
    /// ticks that skipped): they are counted or late by their key's newest request alone.
    #[test]
    fn skipping_walks_changes_nothing_for_requests_older_than_a_tick(
        ops in proptest::collection::vec(op(), 1..250)
    ) {
        let (events, keys, _) = run(&ops, false, MAX_BACK, true);
        let (want_events, want_keys, _) = run(&ops, true, MAX_BACK, true);
        prop_assert_eq!(keys, want_keys);
        prop_assert_eq!(events, want_events);
    }
}

/// Forgets both bounds: the next tick walks every key, as before the bounds existed.
fn forget_bounds(e: &Engine) {
    e.tumbling_due.store(0, Ordering::Relaxed);
    e.sliding_due.store(0, Ordering::Relaxed);
}

/// A tick, walking every key when `walk_always`.
fn tick_with(e: &Engine, walk_always: bool, t: DateTime<Utc>, out: &mut Vec<Event>) {
    if walk_always {
        forget_bounds(e);
    }
    e.tick(t, out);
}

/// Sliding, 15 minutes (1-minute sub-buckets), threshold 3, by source.
fn slide() -> RuleConfig {
    rule("slide", |r| {
        r.group_by = "src".into();
        r.window_kind = "sliding".into();
        r.threshold = 3;
    })
}

/// `serve`'s ticker ticks `CLOSE_GRACE` behind the clock, then reports in-flight requests at
/// the clock: a report moves a sliding key to now, ahead of the ticks, and can end its
/// episode and leave it empty. The next tick must forget it though no request lowered the
/// bound.
#[test]
fn an_in_flight_report_that_empties_a_key_brings_the_next_walk_forward() {
    let mut exfil = crate::detect::builtin::model_exfiltration();
    exfil.window_kind = "sliding".into();
    let run = |walk_always: bool| {
        let e = engine(std::slice::from_ref(&exfil));
        let mut out = Vec::new();
        e.observe(&req("10.0.0.12", "/api/pull", secs(57), 10), &mut out);
        tick_with(&e, walk_always, at(T0 + 20, 0), &mut out);
        tick_with(&e, walk_always, at(T0 + 898, 200), &mut out);
        let running = req("10.0.0.12", "/api/pull", Duration::ZERO, 0);
        // Wall clock T0 + 900.2 s: the request counted at T0 + 10 s has left the ring.
        e.in_flight(
            &running,
            secs(886),
            at(T0 + 900, 200),
            &mut 0,
            &mut 0,
            &mut out,
        );
        let before = e.tracked_keys();
        tick_with(&e, walk_always, at(T0 + 899, 200), &mut out);
        (kinds(&out), before, e.tracked_keys())
    };
    let want = (
        vec![("detection", 1), ("window_summary", 1), ("detection", 1)],
        1,
        0,
    );
    assert_eq!(run(false), want);
    assert_eq!(run(true), want);
}

/// Requests that completed before the last ticks (the clock stepped back): a key is counted
/// against its own newest request, whether or not ticks walked meanwhile.
#[test]
fn a_request_older_than_the_last_tick_counts_against_its_keys_newest_request() {
    // (event kind, count, window start and end from T0, in seconds)
    let run = |walk_always: bool, back: i64, last_tick: i64| {
        let e = engine(&[slide()]);
        let mut out = Vec::new();
        e.observe(&req("10.0.0.1", "/a", secs(1), 0), &mut out);
        tick_with(&e, walk_always, at(T0 + 10, 0), &mut out);
        tick_with(&e, walk_always, at(T0 + last_tick, 0), &mut out);
        e.observe(&req("10.0.0.1", "/a", secs(1), back), &mut out);
        e.observe(&req("10.0.0.1", "/a", secs(1), back), &mut out);
        let events: Vec<_> = out
            .iter()
            .map(|ev| {
                let d = ev.detail();
                let from_t0 = |t: DateTime<Utc>| t.timestamp() - T0;
                (
                    ev.kind(),
                    d.count,
                    from_t0(d.window_start),
                    from_t0(d.window_end),
                )
            })
            .collect();
        (events, e.late_records(), e.tracked_keys())
    };
    // Two requests at T0 + 120 s after a tick at T0 + 300 s: the window (1-minute
    // sub-buckets) ends after the newest request, not after the tick (walks used to move
    // every key to the tick: a window to T0 + 360 s).
    let want = (vec![("detection", 3, -720, 180)], 0, 1);
    assert_eq!(run(false, 120, 300), want);
    assert_eq!(run(true, 120, 300), want);
    // Two requests a minute before the first one, after a tick at T0 + 899 s: within 15
    // minutes of the key's newest request, so counted (walks used to make them late).
    let want = (vec![("detection", 3, -840, 60)], 0, 1);
    assert_eq!(run(false, -60, 899), want);
    assert_eq!(run(true, -60, 899), want);
}

/// Whether a key's late requests count never depends on another key being due at a tick
/// (a due key makes the tick walk; the walk moves only the keys that are due).
#[test]
fn an_unrelated_due_key_does_not_move_another_key() {
    let run = |with_other: bool| {
        let e = engine(&[slide()]);
        let mut out = Vec::new();
        if with_other {
            // Leaves its ring at T0 + 840 s: due at the tick at T0 + 899 s.
            e.observe(&req("10.0.0.9", "/a", secs(1), -60), &mut out);
        }
        e.observe(&req("10.0.0.1", "/a", secs(1), 0), &mut out);
        e.tick(at(T0 + 10, 0), &mut out);
        e.tick(at(T0 + 899, 0), &mut out);
        e.observe(&req("10.0.0.1", "/a", secs(1), -60), &mut out);
        e.observe(&req("10.0.0.1", "/a", secs(1), -60), &mut out);
        let mine: Vec<_> = out
            .iter()
            .filter(|ev| ev.detail().src == "10.0.0.1")
            .map(|ev| (ev.kind(), ev.detail().count))
            .collect();
        (mine, e.late_records())
    };
    assert_eq!(run(false), (vec![("detection", 3)], 0));
    assert_eq!(run(true), (vec![("detection", 3)], 0));
}
