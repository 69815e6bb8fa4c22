//! `observe` from many threads at once counts every request exactly once.

use std::thread;

use super::*;

#[test]
fn concurrent_observers_count_each_request_once_and_detect_once() {
    let e = engine(&[rule("shared", |r| r.threshold = 4_000)]);
    let events: Vec<Vec<Event>> = thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let e = &e;
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..1_000 {
                        let r = req("10.0.0.1", "/api/generate", secs(1), (w * 1_000 + i) % 800);
                        e.observe(&r, &mut out);
                    }
                    out
                })
            })
            .collect();
        workers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<Event> = events.into_iter().flatten().collect();
    assert_eq!(kinds(&all), [("detection", 4_000)]);
    let mut fin = Vec::new();
    e.finish(&mut fin);
    assert_eq!(kinds(&fin), [("window_summary", 4_000)]);
}

/// Ticks that skip their walk (`tumbling_due`, `sliding_due`) while other threads insert keys:
/// a tick after the inserts must close every tumbling window that ended by then and forget
/// every sliding key whose requests have all left their ring, whatever interleaving the
/// bounds went through.
#[test]
fn ticks_racing_inserts_never_skip_a_due_key() {
    let e = engine(&[
        rule("minute", |r| {
            r.group_by = "src".into();
            r.window = "1m".into();
            r.threshold = 1_000;
        }),
        rule("slide", |r| {
            r.group_by = "src".into();
            r.window = "2m".into();
            r.window_kind = "sliding".into();
            r.threshold = 1_000;
        }),
    ]);
    // Three threads insert keys completing between T0 and T0 + 300 while a fourth ticks at
    // `ticks` (the same tick time again and again when it is one number).
    let race = |ticks: std::ops::Range<i64>| {
        thread::scope(|s| {
            for w in 0..3u32 {
                let e = &e;
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..3_000u32 {
                        let src = format!("10.{w}.{}.{}", i / 256, i % 256);
                        let t = i64::from((i * 7 + w * 13) % 300);
                        e.observe(&req(&src, "/api/tags", secs(1), t), &mut out);
                    }
                });
            }
            let e = &e;
            s.spawn(move || {
                let mut out = Vec::new();
                for k in 0..300 {
                    let t = ticks.start + k % (ticks.end - ticks.start);
                    e.tick(at(T0 + t, 0), &mut out);
                }
            });
        });
    };
    // Ticks among the inserts' times: windows close while keys of the same times come.
    race(0..300);
    let mut out = Vec::new();
    e.tick(at(T0 + 1_000, 0), &mut out);
    assert_eq!(e.tracked_keys(), 0);
    // Nothing held: both bounds say "nothing due". Late keys (ended long before the tick time)
    // come while ticks at T0 + 1000 run: each must bring the next walk forward itself.
    race(1_000..1_001);
    e.tick(at(T0 + 1_000, 0), &mut out);
    assert_eq!(e.tracked_keys(), 0, "keys left open past their windows");
}
