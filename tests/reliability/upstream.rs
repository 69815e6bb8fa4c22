//! Scenarios 1 and 2: the upstream process killed mid-stream, and restarted under load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use ollama_guard::config::ServeArgs;

use crate::common::process::{wait_for_port, Proc};
use crate::common::*;
use crate::support::*;

// 1. The upstream process is killed while long streams are in flight.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_killed_mid_stream() {
    let sim_addr = loopback_addr();
    let mut sim = Proc::simulator(sim_addr);
    wait_for_port(sim_addr).await;
    let (_server, proxy, admin, _dir) = start_guard(
        &format!("http://{sim_addr}"),
        ServeArgs::default(),
        "max_connections_per_source = 1000",
    )
    .await;
    let limit = Duration::from_secs(12);

    // 50 short streams that finish before the kill.
    let short = join_all(spawn_many(50, limit, None, |_| generate(&proxy, 5, 1))).await;
    for s in &short {
        match s {
            Seen::Answer(200, body) => {
                let text = String::from_utf8_lossy(body);
                let last = text.lines().last().unwrap_or_default();
                assert!(last.contains("\"done\":true"), "incomplete stream: {text}");
            }
            other => panic!("a short stream before the kill: {other:?}"),
        }
    }

    // 100 long streams (30 s each), all in flight when the simulator is killed.
    let streaming = Arc::new(AtomicUsize::new(0));
    let long = spawn_many(100, limit, Some(streaming.clone()), |_| {
        generate(&proxy, 3000, 10)
    });
    for _ in 0..400 {
        if streaming.load(Ordering::Acquire) == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        streaming.load(Ordering::Acquire),
        100,
        "streams never started"
    );
    sim.kill();
    let long = join_all(long).await;

    // 50 requests after the kill: nobody listens upstream.
    let after = join_all(spawn_many(50, limit, None, |_| generate(&proxy, 5, 1))).await;

    let all: Vec<&Seen> = short.iter().chain(&long).chain(&after).collect();
    let t = Tally::of(all.iter().copied());
    for s in &all {
        match s {
            Seen::Answer(200, _) | Seen::Aborted(200) => {}
            Seen::Answer(502, body) => assert_bad_gateway_body(body),
            other => panic!("unexpected: {other:?}"),
        }
    }
    let errors = t.aborted + t.status(502);
    let counted = sum_eventually(&admin, UPSTREAM_ERRORS, &[], errors as f64).await;
    let failed = sum_eventually(
        &admin,
        REQUESTS,
        &[r#"outcome="upstream_error""#],
        errors as f64,
    )
    .await;
    let resets = sum(&admin, UPSTREAM_ERRORS, &[r#"kind="reset""#]).await;
    t.report(
        "upstream_killed_mid_stream",
        &format!(
            "; complete_streams={} 502={}; upstream_errors_total={counted} (reset={resets}) requests_total{{outcome=upstream_error}}={failed}",
            t.status(200),
            t.status(502)
        ),
    );
    assert_eq!(t.status(200), 50, "every short stream completed");
    assert_eq!(
        t.aborted, 100,
        "every stream in flight was cut, none ended cleanly"
    );
    assert_eq!(t.status(502), 50, "every request after the kill got a 502");
    assert_eq!(t.conn_errors, 0);
    assert_eq!(counted, errors as f64, "every upstream failure is counted");
    assert_eq!(
        failed, errors as f64,
        "every failed request is recorded as upstream_error"
    );
    assert!(resets >= t.aborted as f64, "cut streams count as resets");
}

// ---------------------------------------------------------------------------------------------
// 2. The upstream process is stopped and started again on the same port under a request loop.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_restarted_under_load() {
    let sim_addr = loopback_addr();
    let mut sim = Proc::simulator(sim_addr);
    wait_for_port(sim_addr).await;
    let (_server, proxy, admin, _dir) =
        start_guard(&format!("http://{sim_addr}"), ServeArgs::default(), "").await;

    let results: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (results, stop, url) = (results.clone(), stop.clone(), format!("{proxy}/api/tags"));
            tokio::spawn(async move {
                let c = client();
                for _ in 0..5000 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let req = request(Method::GET, &url, &[], Bytes::new());
                    let seen = exchange(&c, req, Duration::from_secs(5), None).await;
                    results.lock().unwrap().push(seen);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let count =
        |pred: fn(&Seen) -> bool| results.lock().unwrap().iter().filter(|s| pred(s)).count();
    let wait_for = |what: &'static str, pred: fn(&Seen) -> bool, n: usize| {
        let count = &count;
        async move {
            for _ in 0..400 {
                if count(pred) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("never saw {n} {what}");
        }
    };
    wait_for(
        "200s before the stop",
        |s| matches!(s, Seen::Answer(200, _)),
        40,
    )
    .await;
    sim.kill();
    wait_for(
        "502s during the gap",
        |s| matches!(s, Seen::Answer(502, _)),
        20,
    )
    .await;
    let sim = Proc::simulator(sim_addr);
    wait_for_port(sim_addr).await;
    let restarted = results.lock().unwrap().len();
    // Recovery: the last 40 answers are all 200.
    let mut recovered = false;
    for _ in 0..400 {
        {
            let r = results.lock().unwrap();
            if r.len() >= restarted + 40
                && r[r.len() - 40..]
                    .iter()
                    .all(|s| matches!(s, Seen::Answer(200, _)))
            {
                recovered = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, Ordering::Release);
    for l in loops {
        l.await.unwrap();
    }
    drop(sim);
    assert!(recovered, "traffic never recovered after the restart");
    let results = std::mem::take(&mut *results.lock().unwrap());
    let t = Tally::of(&results);
    for s in &results {
        match s {
            Seen::Answer(200, _) => {}
            Seen::Answer(502, body) => assert_bad_gateway_body(body),
            Seen::Aborted(200) => {}
            other => panic!("unexpected: {other:?}"),
        }
    }
    let last = &results[results.len() - 40..];
    assert!(last.iter().all(|s| matches!(s, Seen::Answer(200, _))));
    let errors = t.aborted + t.status(502);
    let counted = sum_eventually(&admin, UPSTREAM_ERRORS, &[], errors as f64).await;
    let failed = sum_eventually(
        &admin,
        REQUESTS,
        &[r#"outcome="upstream_error""#],
        errors as f64,
    )
    .await;
    t.report(
        "upstream_restarted_under_load",
        &format!("; 502_during_gap={}; last_40_all_200=true; upstream_errors_total={counted} requests_total{{outcome=upstream_error}}={failed}", t.status(502)),
    );
    assert_eq!(
        t.conn_errors, 0,
        "the guard itself never failed a connection"
    );
    assert_eq!(counted, errors as f64, "every 502 and cut body is counted");
    assert_eq!(failed, errors as f64);
}
