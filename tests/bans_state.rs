//! Bans over time: expiry on a timer, surviving a restart (and a `kill -9`), a corrupt
//! state file.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::free_port;
use common::*;
use http::{Method, StatusCode};
use ollama_guard::config::ServeArgs;
use ollama_guard::serve::Server;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinSet;

const BIN: &str = env!("CARGO_BIN_EXE_ollama-guard");

#[tokio::test]
async fn bans_expire_on_a_timer_without_traffic() {
    let s = stack().await;
    let ok = admin(
        &s,
        Method::POST,
        "/api/bans",
        r#"{"src":"127.0.0.12","duration":"300ms"}"#,
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let ev = wait_events(&s.detection_log(), |e| {
        e.iter().any(|e| e["event"] == "unban")
    })
    .await;
    let unban = ev.iter().find(|e| e["event"] == "unban").unwrap();
    assert_eq!(
        (unban["src"].as_str(), unban["ended"].as_str()),
        (Some("127.0.0.12"), Some("expired"))
    );
    assert_eq!(
        admin(&s, Method::GET, "/api/bans", "", None).await.text(),
        "[]"
    );
    // The sweep writes the unban line before it refreshes the gauge.
    assert_eq!(
        metric_eventually(&s.admin, "ollama_guard_active_bans", 0.0).await,
        0.0
    );
    let log = s.detection_log();
    s.server.shutdown().await;
    assert_detection_log_valid(&log);
}

#[tokio::test]
async fn bans_survive_a_restart_without_inflating_offences() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let args = || ServeArgs {
        state_dir: Some(state.clone()),
        ..ServeArgs::default()
    };
    let start = |args: ServeArgs| {
        let config = config(&sim.url(), &dir, args, "");
        async move {
            Server::start(config, loopback().await, loopback().await)
                .await
                .unwrap()
        }
    };
    let first = start(args()).await;
    let url = format!("http://{}/api/bans", first.admin_addr);
    let r = send(
        Method::POST,
        &url,
        &[("content-type", "application/json")],
        r#"{"src":"2001:db8::/48","duration":"1h","reason":"net"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // A ban that runs out while the process is down.
    let r = send(
        Method::POST,
        &url,
        &[("content-type", "application/json")],
        r#"{"src":"192.0.2.9","duration":"1s","reason":"short"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let short: Value = serde_json::from_slice(&r.body).unwrap();
    first.shutdown().await;
    assert!(state.join("bans.json").exists());
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let second = start(args()).await;
    let list: Value = serde_json::from_slice(
        &get(&format!("http://{}/api/bans", second.admin_addr))
            .await
            .body,
    )
    .unwrap();
    assert_eq!(list[0]["src"], "2001:db8::/48");
    assert_eq!(list[0]["offence"], 1, "restoring is not a new offence");
    second.shutdown().await;
    let ev = assert_detection_log_valid(&dir.path().join("detection.log"));
    let restored: Vec<_> = ev
        .iter()
        .filter(|e| e["event"] == "ban" && e["restored"] == true)
        .collect();
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0]["offence"], 1);
    // The short ban's end is logged at the next start, stamped with that end.
    let unbans: Vec<_> = ev.iter().filter(|e| e["event"] == "unban").collect();
    assert_eq!(unbans.len(), 1, "{unbans:?}");
    assert_eq!(
        (&unbans[0]["src"], &unbans[0]["ended"], &unbans[0]["until"]),
        (&"192.0.2.9".into(), &"expired".into(), &short["until"])
    );
    assert_eq!(unbans[0]["time"], short["until"]);
}

#[tokio::test]
async fn corrupt_state_file_is_moved_aside_and_start_up_goes_on() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bans.json"), "{\"version\":1,\"bans\":[tru").unwrap();
    let args = ServeArgs {
        state_dir: Some(dir.path().to_path_buf()),
        ..ServeArgs::default()
    };
    let server = Server::start(
        config(&sim.url(), &dir, args, ""),
        loopback().await,
        loopback().await,
    )
    .await
    .unwrap();
    let list = get(&format!("http://{}/api/bans", server.admin_addr)).await;
    assert_eq!(list.text(), "[]");
    let moved: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bans.json.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "the corrupt file is kept for inspection");
    server.shutdown().await;
}

/// The real binary on fresh ports with `state` as its `--state-dir`, and its admin URL once
/// it accepts connections.
async fn spawn_guard(state: &Path) -> (Child, String) {
    let (port, admin) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args([
            "--upstream",
            "http://127.0.0.1:9",
            "--detection-log",
            "/dev/null",
        ])
        .args(["--state-dir", state.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", admin))
            .await
            .is_ok()
        {
            return (child, format!("http://127.0.0.1:{admin}"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    panic!("the admin port {admin} never opened");
}

const STORM_TASKS: u32 = 6;
const STORM_PER_TASK: u32 = 50;
/// Acknowledged bans after which the process is killed, mid-storm.
const KILL_AT: usize = 100;

/// One task of the storm: POSTs its bans one after the other, noting each answered 201,
/// until the process dies under it.
async fn storm_task(task: u32, url: String, acked: Arc<Mutex<Vec<String>>>, enough: Arc<Notify>) {
    let client = client();
    for i in 0..STORM_PER_TASK {
        let src = format!("10.{task}.{}.{}", i / 256, i % 256);
        let body = format!(r#"{{"src":"{src}","duration":"1h","reason":"storm"}}"#);
        let json = [("content-type", "application/json")];
        match client
            .request(request(Method::POST, &url, &json, body))
            .await
        {
            Ok(r) if r.status() == StatusCode::CREATED => {
                let mut acked = acked.lock().unwrap();
                acked.push(src);
                if acked.len() == KILL_AT {
                    enough.notify_one();
                }
            }
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_ban_answered_201_survives_kill_9_in_the_middle_of_a_ban_storm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (mut child, admin) = spawn_guard(&state).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let enough = Arc::new(Notify::new());
    let mut storm = JoinSet::new();
    for task in 0..STORM_TASKS {
        let url = format!("{admin}/api/bans");
        storm.spawn(storm_task(task, url, acked.clone(), enough.clone()));
    }
    tokio::time::timeout(Duration::from_secs(30), enough.notified())
        .await
        .expect("the storm never reached KILL_AT acknowledged bans");
    child.kill().unwrap(); // SIGKILL: no drain, no final save
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    while storm.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    let total = (STORM_TASKS * STORM_PER_TASK) as usize;
    assert!(
        (KILL_AT..total).contains(&acked.len()),
        "killed mid-storm: {} of {total} acknowledged",
        acked.len()
    );
    assert!(state.join("bans.journal").exists());

    let (mut second, admin) = spawn_guard(&state).await;
    let list: Vec<Value> =
        serde_json::from_slice(&get(&format!("{admin}/api/bans")).await.body).unwrap();
    let listed: HashSet<&str> = list.iter().filter_map(|b| b["src"].as_str()).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|s| !listed.contains(s.as_str()))
        .collect();
    assert_eq!(
        lost,
        Vec::<&String>::new(),
        "acknowledged bans lost by kill -9"
    );
    second.kill().unwrap();
    second.wait().unwrap();
}

/// POSTs a one-hour admin ban of `src` and asserts it was acknowledged (201).
async fn admin_ban(admin: &str, src: &str) {
    let body = format!(r#"{{"src":"{src}","duration":"1h","reason":"t"}}"#);
    let json = [("content-type", "application/json")];
    let r = client()
        .request(request(
            Method::POST,
            &format!("{admin}/api/bans"),
            &json,
            body,
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "ban of {src}");
}

/// The sources the admin API lists, sorted.
async fn listed(admin: &str) -> Vec<String> {
    let list: Vec<Value> =
        serde_json::from_slice(&get(&format!("{admin}/api/bans")).await.body).unwrap();
    let mut srcs: Vec<String> = list
        .iter()
        .filter_map(|b| b["src"].as_str().map(str::to_owned))
        .collect();
    srcs.sort();
    srcs
}

/// Two instances on one `state_dir` would each compact into their own files and lose the
/// other's acknowledged bans: the second is refused at start, naming the key and the holder.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_state_dir_is_refused_and_the_first_keeps_its_bans() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (mut first, admin) = spawn_guard(&state).await;
    admin_ban(&admin, "10.1.0.1").await;
    let out = Command::new(BIN)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--upstream", "http://127.0.0.1:9"])
        .args(["--detection-log", "/dev/null"])
        .args(["--state-dir", state.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "ollama-guard: config error: state_dir: {} is in use by another running ollama-guard \
             (pid {}): give each instance its own state_dir (replicas share bans through \
             [cluster])\n",
            state.display(),
            first.id()
        )
    );
    admin_ban(&admin, "10.1.0.2").await;
    // The lock goes with the process, even after kill -9: the next instance starts.
    first.kill().unwrap();
    first.wait().unwrap();
    let (mut second, admin) = spawn_guard(&state).await;
    assert_eq!(listed(&admin).await, ["10.1.0.1", "10.1.0.2"]);
    second.kill().unwrap();
    second.wait().unwrap();
}

/// A journal removed or renamed while the guard runs (by hand, or a cleanup job) must not
/// swallow the bans acknowledged after it: the writer notices and compacts into new files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_acknowledged_after_the_journal_was_removed_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (mut first, admin) = spawn_guard(&state).await;
    admin_ban(&admin, "10.2.0.1").await;
    std::fs::remove_file(state.join("bans.journal")).unwrap();
    admin_ban(&admin, "10.2.0.2").await;
    assert!(state.join("bans.journal").exists(), "a new journal");
    admin_ban(&admin, "10.2.0.3").await;
    // Renamed away (its link count stays 1): noticed all the same.
    std::fs::rename(state.join("bans.journal"), state.join("old.journal")).unwrap();
    admin_ban(&admin, "10.2.0.4").await;
    first.kill().unwrap();
    first.wait().unwrap();
    let (mut second, admin) = spawn_guard(&state).await;
    assert_eq!(
        listed(&admin).await,
        ["10.2.0.1", "10.2.0.2", "10.2.0.3", "10.2.0.4"]
    );
    second.kill().unwrap();
    second.wait().unwrap();
}
