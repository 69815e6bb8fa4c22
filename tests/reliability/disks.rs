//! Scenarios 4 and 5: a full disk under the detection log, and a state dir turned
//! read-only under a running guard.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use ollama_guard::config::{Config, ServeArgs};
use ollama_guard::serve::Server;

use crate::common::process::{free_port, wait_for_port, Proc, Tmpfs, BIN};
use crate::common::*;
use crate::support::*;

// 4. The detection log's disk is full.

/// A rule that flags every new source once: one detection line per distinct source.
const EVERY_SOURCE: &str = r#"
trusted_proxies = ["127.0.0.1/32"]
max_connections_per_source = 1000

[[rule]]
name = "every_source"
paths = ["*"]
group_by = "src"
window = "24h"
threshold = 1
"#;

/// The tumbling window of `EVERY_SOURCE`: epoch-aligned, so it ends at midnight UTC. Closing
/// it writes one `window_summary` per source, lines the scenario's arithmetic (lines lost =
/// detections − lines on disk) does not expect.
const DAY: Duration = Duration::from_secs(86_400);

/// Numbers of the disk-full scenario.
struct DiskFull {
    tally: Tally,
    detections: f64,
    lines_on_disk: u64,
    dropped: f64,
    medium: &'static str,
}

async fn detection_log_on_a_full_disk(name: &str) -> DiskFull {
    const N: usize = 300;
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let full_dir = dir.path().join("full");
    std::fs::create_dir(&full_dir).unwrap();
    let tmpfs = Tmpfs::mount(&full_dir, "64k");
    let (path, medium) = match &tmpfs {
        Some(_) => (full_dir.join("detection.log"), "tmpfs size=64k"),
        None => ("/dev/full".into(), "/dev/full"),
    };
    let args = ServeArgs {
        upstream: Some(sim.url()),
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        detection_log: Some(path.display().to_string()),
        access_log: Some(dir.path().join("access.log").display().to_string()),
        ..ServeArgs::default()
    };
    let cfg = Config::merge(&args, toml::from_str(EVERY_SOURCE).unwrap()).unwrap();
    let server = Server::start(cfg, loopback().await, loopback().await)
        .await
        .unwrap();
    let proxy = format!("http://{}", server.proxy_addr);
    let admin = format!("http://{}", server.admin_addr);
    // No window of EVERY_SOURCE closes (and writes its summaries) while the scenario counts.
    clear_of_window_end(DAY, Duration::from_secs(60)).await;
    let next = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = (0..8)
        .map(|_| {
            let (next, url) = (next.clone(), format!("{proxy}/api/tags"));
            tokio::spawn(async move {
                let c = client();
                let mut seen = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::AcqRel);
                    if i >= N {
                        return seen;
                    }
                    let xff = format!("10.4.{}.{}", i / 250, i % 250 + 1);
                    let req = request(
                        Method::GET,
                        &url,
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
    let tally = Tally::of(&results);
    let detections = sum_eventually(
        &admin,
        "ollama_guard_detections_total",
        &[r#"rule="every_source""#],
        N as f64,
    )
    .await;
    let count_lines = || -> u64 {
        if tmpfs.is_none() {
            return 0; // nothing is ever written to /dev/full (and reading it never ends)
        }
        std::fs::read(&path)
            .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
            .unwrap_or(0)
    };
    // What a correct count reads once the writer is idle; polled, so the writer can finish.
    let dropped_series = [r#"log="detection""#];
    let mut dropped = sum(
        &admin,
        "ollama_guard_log_lines_dropped_total",
        &dropped_series,
    )
    .await;
    let mut lines_on_disk = count_lines();
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let (d, l) = (
            sum(
                &admin,
                "ollama_guard_log_lines_dropped_total",
                &dropped_series,
            )
            .await,
            count_lines(),
        );
        let settled = d == dropped && l == lines_on_disk;
        (dropped, lines_on_disk) = (d, l);
        if settled && detections - lines_on_disk as f64 == dropped {
            break;
        }
    }
    // Still serving after the disk filled up.
    let health = get(&format!("{admin}/healthz")).await.status;
    assert_eq!(health, 200);
    let out = DiskFull {
        tally,
        detections,
        lines_on_disk,
        dropped,
        medium,
    };
    out.tally.report(
        name,
        &format!(
            "; medium={medium}; detections_total={detections} lines_on_disk={lines_on_disk} lines_lost={} log_lines_dropped_total{{log=detection}}={dropped}",
            detections - lines_on_disk as f64
        ),
    );
    drop(server);
    drop(tmpfs);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_log_disk_full_traffic_is_still_answered() {
    let r = detection_log_on_a_full_disk("detection_log_disk_full").await;
    assert_eq!(
        r.tally.status(200),
        r.tally.sent,
        "every request answered 200"
    );
    assert_eq!(
        r.detections, r.tally.sent as f64,
        "one detection per source"
    );
    assert!(
        (r.lines_on_disk as f64) < r.detections,
        "the disk ({}) must have filled up for this scenario to mean anything",
        r.medium
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_log_disk_full_lost_lines_are_counted() {
    let r = detection_log_on_a_full_disk("detection_log_disk_full_counted").await;
    assert_eq!(
        r.dropped,
        r.detections - r.lines_on_disk as f64,
        "every detection line that did not reach the disk is counted in log_lines_dropped_total{{log=\"detection\"}}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. The state dir turns read-only under a running guard.

/// Writes into `path` until its filesystem is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

async fn post_ban(admin: &str, src: &str) -> Reply {
    send(
        Method::POST,
        &format!("{admin}/api/bans"),
        &[("content-type", "application/json")],
        format!(r#"{{"src":"{src}","duration":"1h","reason":"reliability"}}"#),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_state_dir_keeps_bans_in_memory_and_says_so() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let tmpfs = Tmpfs::mount(&state, "1m");
    let (port, admin_port) = (free_port(), free_port());
    let mut guard = Proc::spawn(
        BIN,
        &[
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
            "--upstream",
            &sim.url(),
            "--detection-log",
            &dir.path().join("d.log").display().to_string(),
            "--state-dir",
            &state.display().to_string(),
            "--mode",
            "block",
        ],
    );
    let admin = format!("http://127.0.0.1:{admin_port}");
    wait_for_port(format!("127.0.0.1:{admin_port}").parse().unwrap()).await;
    // Root ignores mode bits, and the journal keeps its file open (a read-only remount would
    // be refused as busy): make writes really fail by filling the state tmpfs (ENOSPC); when
    // mounts are not allowed, /dev/full-like failure is not reachable, so the state dir is
    // replaced by a file before the guard's first write.
    let moved = dir.path().join("state.moved");
    let filler = state.join("filler");
    let how = match &tmpfs {
        Some(_) => {
            fill(&filler);
            "state tmpfs filled up (ENOSPC)"
        }
        None => {
            std::fs::rename(&state, &moved).unwrap();
            std::fs::write(&state, b"not a directory").unwrap();
            "state dir replaced by a file"
        }
    };

    // The ban is in force but cannot be made durable: the API says so (503) instead of 201.
    // A journal line can still land in the file's last, partly used page, so bans are added
    // until one needs a page the full filesystem cannot give (8 KiB of lines at most).
    let mut refused = None;
    let mut posted = 0.0;
    for i in 0..64u8 {
        let src = format!("127.0.1.{i}");
        let added = post_ban(&admin, &src).await;
        posted += 1.0;
        match added.status.as_u16() {
            201 => continue,
            503 => {
                refused = Some(src);
                break;
            }
            other => panic!("unexpected {other}: {}", added.text()),
        }
    }
    let refused = refused.expect("a ban on a full disk must answer 503");
    let added = post_ban(&admin, "127.0.0.66").await;
    assert_eq!(added.status, 503, "{}", added.text());

    let proxy = format!("http://127.0.0.1:{port}");
    let mut seen = Vec::new();
    for src in ["127.0.0.66", "127.0.0.1", refused.as_str()] {
        let c = client_from(src);
        for _ in 0..20 {
            let req = request(Method::GET, &format!("{proxy}/api/tags"), &[], Bytes::new());
            seen.push((src, exchange(&c, req, Duration::from_secs(10), None).await));
        }
    }
    for (src, s) in &seen {
        match (*src, s) {
            ("127.0.0.1", Seen::Answer(200, _)) => {}
            (src, Seen::Answer(403, _)) if src != "127.0.0.1" => {}
            other => panic!("{other:?}"),
        }
    }
    let t = Tally::of(seen.iter().map(|(_, s)| s));
    let listed = get(&format!("{admin}/api/bans")).await.text();
    assert!(listed.contains("127.0.0.66"), "{listed}");
    let blocked = sum(
        &admin,
        "ollama_guard_blocked_requests_total",
        &[r#"rule="admin""#],
    )
    .await;
    let bans = sum(&admin, "ollama_guard_active_bans", &[]).await;
    let failures =
        guard.stderr_lines_with(&["could not be persisted", "cannot write the ban state"]);
    assert!(
        failures >= 1,
        "the failure is logged: {}",
        guard.stderr_text()
    );

    // Writable again: the next change writes every ban, the one that failed included.
    match &tmpfs {
        Some(_) => std::fs::remove_file(&filler).unwrap(),
        None => {
            std::fs::remove_file(&state).unwrap();
            std::fs::rename(&moved, &state).unwrap();
        }
    }
    assert_eq!(post_ban(&admin, "127.0.0.67").await.status, 201);
    // 201 means on disk: the snapshot rewritten after the failure holds both bans.
    let mut saved = String::new();
    for _ in 0..400 {
        saved = std::fs::read_to_string(state.join("bans.json")).unwrap_or_default();
        if saved.contains("127.0.0.66") && saved.contains("127.0.0.67") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    t.report(
        "state_dir_read_only",
        &format!("; how={how}; blocked_requests_total{{rule=admin}}={blocked} active_bans={bans}; state_write_errors_logged={failures}; api_answer_for_unpersisted_bans=503"),
    );
    assert!(
        saved.contains("127.0.0.66") && saved.contains("127.0.0.67"),
        "the failed write is retried on the next change: {saved}"
    );
    assert_eq!(
        t.status(403),
        40,
        "bans answered 503 are enforced from memory"
    );
    assert_eq!(t.status(200), 20);
    assert_eq!(blocked, 40.0);
    assert_eq!(
        bans,
        posted + 1.0,
        "every ban is in force, persisted or not"
    );
    assert!(failures >= 1);
    guard.signal("TERM");
    assert_eq!(guard.wait_exit().await, Some(0));
    drop(tmpfs);
}
