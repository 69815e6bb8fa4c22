//! Scenarios 6 and 7: a SIGHUP storm during traffic, and 10 000 distinct sources.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use ollama_guard::config::ServeArgs;

use crate::common::process::{free_port, wait_for_port, Proc, BIN};
use crate::common::*;
use crate::support::*;

// 6. A SIGHUP storm during traffic.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_storm_during_traffic() {
    const HUPS: usize = 50;
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("guard.toml");
    std::fs::write(
        &conf,
        "mode = \"monitor\"\nmax_connections_per_source = 1000\n",
    )
    .unwrap();
    let access = dir.path().join("access.log");
    let (port, admin_port) = (free_port(), free_port());
    let mut guard = Proc::spawn(
        BIN,
        &[
            "serve",
            "--config",
            &conf.display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
            "--upstream",
            &sim.url(),
            "--detection-log",
            &dir.path().join("d.log").display().to_string(),
            "--access-log",
            &access.display().to_string(),
        ],
    );
    let admin = format!("http://127.0.0.1:{admin_port}");
    wait_for_port(format!("127.0.0.1:{admin_port}").parse().unwrap()).await;
    let proxy = format!("http://127.0.0.1:{port}");

    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let (stop, url) = (stop.clone(), format!("{proxy}/api/tags"));
            tokio::spawn(async move {
                let c = client();
                let mut seen = Vec::new();
                for _ in 0..5000 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let req = request(Method::GET, &url, &[], Bytes::new());
                    seen.push(exchange(&c, req, Duration::from_secs(5), None).await);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            })
        })
        .collect();
    for _ in 0..HUPS {
        guard.signal("HUP");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // Let the last reloads land, with traffic still running.
    let mut reloads = 0.0;
    let mut logged = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let r = sum(
            &admin,
            "ollama_guard_config_reloads_total",
            &[r#"result="success""#],
        )
        .await;
        let l = guard.stderr_lines_with(&["config reloaded"]);
        let settled = r == reloads && l == logged;
        (reloads, logged) = (r, l);
        if settled && r == l as f64 && r > 0.0 {
            break;
        }
    }
    stop.store(true, Ordering::Release);
    let mut results = Vec::new();
    for l in loops {
        results.extend(l.await.unwrap());
    }
    let t = Tally::of(&results);
    let refused = sum(
        &admin,
        "ollama_guard_config_reloads_total",
        &[r#"result="failure""#],
    )
    .await;
    let hup_lines = guard.stderr_lines_with(&["SIGHUP: reopening logs"]);
    // Every answered request is in the access log, across 50 reopenings.
    let answered = t.answered;
    let mut access_lines = 0;
    for _ in 0..200 {
        access_lines = std::fs::read_to_string(&access)
            .map(|s| s.lines().count() as u64)
            .unwrap_or(0);
        if access_lines == answered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let dropped = sum(&admin, "ollama_guard_log_lines_dropped_total", &[]).await;
    let alive = guard.alive();
    t.report(
        "sighup_storm",
        &format!("; hups_sent={HUPS} hups_handled={hup_lines} config_reloads_total{{success}}={reloads} {{failure}}={refused}; access_log_lines={access_lines} log_lines_dropped_total={dropped}; alive={alive}"),
    );
    assert!(alive, "the guard survived the storm");
    assert_eq!(t.status(200), t.sent, "zero failed requests");
    assert_eq!(refused, 0.0);
    // Signals that arrive while one is being handled coalesce (tokio delivers "at least one
    // since the last recv"): each handled HUP is one successful reload.
    assert_eq!(
        reloads, hup_lines as f64,
        "every handled SIGHUP is one counted reload"
    );
    assert_eq!(logged, hup_lines);
    assert!((1..=HUPS).contains(&hup_lines), "{hup_lines}");
    assert_eq!(
        access_lines, answered,
        "no access-log line lost across reopenings"
    );
    assert_eq!(dropped, 0.0);
    guard.signal("TERM");
    assert_eq!(guard.wait_exit().await, Some(0));
}

// ---------------------------------------------------------------------------------------------
// 7. 10 000 distinct sources (X-Forwarded-For from a trusted proxy).

/// Two rules: one key per source, plus one key per source on `/api/tags`.
const TWO_RULES: &str = r#"
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "per_source"
paths = ["*"]
group_by = "src"
window = "1h"
window_kind = "sliding"
threshold = 4095

[[rule]]
name = "tags_per_source_and_path"
paths = ["/api/tags"]
group_by = "src_path"
window = "1h"
window_kind = "sliding"
threshold = 4095
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_distinct_sources() {
    const N: usize = 10_000;
    let sim = simulator().await;
    let (_server, proxy, admin, _dir) =
        start_guard(&sim.url(), ServeArgs::default(), TWO_RULES).await;
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let loops: Vec<_> = (0..16)
        .map(|_| {
            let (next, proxy) = (next.clone(), proxy.clone());
            tokio::spawn(async move {
                let c = client();
                let mut seen = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::AcqRel);
                    if i >= N {
                        return seen;
                    }
                    // Even sources ask for /api/tags, odd ones for /api/version.
                    let path = if i % 2 == 0 {
                        "/api/tags"
                    } else {
                        "/api/version"
                    };
                    let xff = format!("10.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256);
                    let req = request(
                        Method::GET,
                        &format!("{proxy}{path}"),
                        &[("x-forwarded-for", &xff)],
                        Bytes::new(),
                    );
                    seen.push(exchange(&c, req, Duration::from_secs(10), None).await);
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for l in loops {
        results.extend(l.await.unwrap());
    }
    let secs = t0.elapsed().as_secs_f64();
    let t = Tally::of(&results);
    // per_source: one key per source; tags_per_source_and_path: one per even source.
    let expected_keys = (N + N / 2) as f64;
    let keys = sum_eventually(&admin, "ollama_guard_tracked_keys", &[], expected_keys).await;
    let forwarded = sum_eventually(
        &admin,
        REQUESTS,
        &[r#"outcome="forwarded""#, r#"status_class="2xx""#],
        N as f64,
    )
    .await;
    let evictions = sum(&admin, "ollama_guard_tracked_key_evictions_total", &[]).await;
    t.report(
        "ten_thousand_sources",
        &format!("; {secs:.1}s; tracked_keys={keys} (expected {expected_keys}); requests_total{{forwarded,2xx}}={forwarded}; evictions={evictions}"),
    );
    assert_eq!(t.status(200), N as u64, "every source answered");
    assert_eq!(keys, expected_keys);
    assert_eq!(forwarded, N as f64);
    assert_eq!(evictions, 0.0);
}
