//! Bans over time: expiry on a timer, surviving a restart, a corrupt state file.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::{Method, StatusCode};
use ollama_guard::config::ServeArgs;
use ollama_guard::serve::Server;
use serde_json::Value;

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
    assert_eq!(metric(&s.admin, "ollama_guard_active_bans").await, 0.0);
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
    first.shutdown().await;
    assert!(state.join("bans.json").exists());

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
    let ev = events(&dir.path().join("detection.log"));
    let restored: Vec<_> = ev
        .iter()
        .filter(|e| e["event"] == "ban" && e["restored"] == true)
        .collect();
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0]["offence"], 1);
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
