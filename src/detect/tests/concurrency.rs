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
