//! Enforcement through a running stack: monitor vs block, refusal shapes, the admin API,
//! bans surviving restarts, expiry, trusted proxies, hot reload.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use ollama_guard::config::ServeArgs;
use ollama_guard::serve::Server;
use serde_json::Value;

const RULE: &str = r#"
[[rule]]
name = "slow_meta"
paths = ["/api/show", "/api/tags", "/v1/models", "/v1/messages", "/v1/chat/completions"]
min_latency = "200ms"
window = "1h"
threshold = 2
"#;

async fn call(
    c: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let body = if method == Method::POST {
        r#"{"model":"llama3.2"}"#
    } else {
        ""
    };
    let resp = c
        .request(request(method, url, headers, body))
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn wait_events(path: &std::path::Path, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..250 {
        let ev = events(path);
        if pred(&ev) {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("expected events never appeared: {:#?}", events(path));
}

/// Two slow /api/show calls flag 127.0.0.9; then five more calls of every kind.
async fn scenario(s: &Stack) -> Vec<Reply> {
    let c = client_from("127.0.0.9");
    let show = format!("{}/api/show", s.proxy);
    call(&c, Method::POST, &show, &[("x-sim-delay-ms", "250")]).await;
    call(&c, Method::POST, &show, &[("x-sim-delay-ms", "250")]).await;
    wait_events(&s.detection_log(), |e| {
        e.iter().any(|e| e["event"] == "detection")
    })
    .await;
    let mut after = Vec::new();
    for (m, p) in [
        (Method::POST, "/api/show"),
        (Method::GET, "/api/tags"),
        (Method::GET, "/v1/models"),
        (Method::POST, "/v1/messages"),
        (Method::POST, "/v1/chat/completions"),
    ] {
        after.push(call(&c, m, &format!("{}{p}", s.proxy), &[]).await);
    }
    after
}

#[tokio::test]
async fn monitor_mode_flags_but_never_changes_a_response() {
    let s = stack_with(ServeArgs::default(), RULE).await;
    let after = scenario(&s).await;
    assert!(after.iter().all(|r| r.status != StatusCode::FORBIDDEN));
    let direct = send(
        Method::POST,
        &format!("{}/api/show", s.sim.url()),
        &[("host", "localhost")],
        r#"{"model":"llama3.2"}"#,
    )
    .await;
    assert_eq!(after[0].body, direct.body);
    let ev = events(&s.detection_log());
    assert_eq!(ev[0]["action"], "logged");
    assert!(ev.iter().all(|e| e["event"] != "ban"));
    let logged =
        r#"ollama_guard_detections_total{action="logged",rule="slow_meta",severity="low"}"#;
    assert_eq!(
        metric(&s.admin, logged).await,
        1.0,
        "the would-block count of monitor mode"
    );
}

#[tokio::test]
async fn block_mode_bans_and_refuses_with_route_family_bodies_without_forwarding() {
    let args = ServeArgs {
        mode: Some("block".into()),
        ..ServeArgs::default()
    };
    let s = stack_with(args, RULE).await;
    let after = scenario(&s).await;
    // The readiness probe's GET /api/version aside, Ollama saw only the two calls before the ban.
    let forwarded = s
        .sim
        .log
        .requests()
        .into_iter()
        .filter(|r| r.target != "/api/version")
        .count();
    assert_eq!(forwarded, 2, "nothing after the ban reached Ollama");
    assert!(after.iter().all(|r| r.status == StatusCode::FORBIDDEN));
    let json = |r: &Reply| serde_json::from_slice::<Value>(&r.body).unwrap();
    let msg = "ollama-guard: request blocked: this source is banned";
    assert_eq!(json(&after[0]), serde_json::json!({"error": msg}));
    assert_eq!(json(&after[2])["error"]["code"], "ollama_guard_blocked");
    assert_eq!(json(&after[2])["error"]["type"], "permission_error");
    assert_eq!(
        json(&after[3]),
        serde_json::json!({"type":"error","error":{"type":"permission_error","message":msg}})
    );
    let ev = wait_events(&s.detection_log(), |e| {
        e.iter().any(|e| e["event"] == "blocked")
    })
    .await;
    let det = ev.iter().find(|e| e["event"] == "detection").unwrap();
    assert_eq!(det["action"], "banned");
    let ban = ev.iter().find(|e| e["event"] == "ban").unwrap();
    assert_eq!(
        (
            ban["src"].as_str(),
            ban["offence"].as_u64(),
            ban["restored"].as_bool()
        ),
        (Some("127.0.0.9"), Some(1), Some(false))
    );
    let blocked: Vec<_> = ev.iter().filter(|e| e["event"] == "blocked").collect();
    assert_eq!(
        blocked.len(),
        1,
        "blocked events are rate-limited to one per source per minute"
    );
    assert_eq!(blocked[0]["blocked_since_last"], 0);
    assert_eq!(
        metric(
            &s.admin,
            r#"ollama_guard_blocked_requests_total{rule="slow_meta"}"#
        )
        .await,
        5.0
    );
    assert_eq!(metric(&s.admin, "ollama_guard_active_bans").await, 1.0);
    let banned =
        r#"ollama_guard_detections_total{action="banned",rule="slow_meta",severity="low"}"#;
    assert_eq!(metric(&s.admin, banned).await, 1.0);
    // Another source is untouched.
    let other = call(
        &client_from("127.0.0.10"),
        Method::GET,
        &format!("{}/api/tags", s.proxy),
        &[],
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    // Blocked requests never feed detection: the window still holds the 2 forwarded ones.
    let log = s.detection_log();
    let server = s.server;
    server.shutdown().await;
    let summary = events(&log)
        .into_iter()
        .find(|e| e["event"] == "window_summary")
        .unwrap();
    assert_eq!(summary["count"], 2);
}

async fn admin(s: &Stack, method: Method, path: &str, body: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    send(
        method,
        &format!("{}{path}", s.admin),
        &headers,
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn admin_api_adds_lists_and_lifts_bans_and_validates_input() {
    let args = ServeArgs {
        mode: Some("block".into()),
        ..ServeArgs::default()
    };
    let s = stack_with(args, "allowlist = [\"127.0.0.20/32\"]").await;
    assert_eq!(
        admin(&s, Method::GET, "/api/bans", "", None).await.text(),
        "[]"
    );
    let bad = admin(
        &s,
        Method::POST,
        "/api/bans",
        r#"{"src":"999.1.1.1","duration":"1h"}"#,
        None,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(serde_json::from_slice::<Value>(&bad.body).unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("999.1.1.1"));
    let bad = admin(
        &s,
        Method::POST,
        "/api/bans",
        r#"{"src":"127.0.0.11","duration":"soon"}"#,
        None,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let allow = admin(
        &s,
        Method::POST,
        "/api/bans",
        r#"{"src":"127.0.0.20","duration":"1h"}"#,
        None,
    )
    .await;
    assert_eq!(allow.status, StatusCode::CONFLICT);
    let forced = admin(
        &s,
        Method::POST,
        "/api/bans",
        r#"{"src":"127.0.0.20","duration":"1h","force":true}"#,
        None,
    )
    .await;
    assert_eq!(forced.status, StatusCode::CREATED);
    let ok = admin(
        &s,
        Method::POST,
        "/api/bans",
        r#"{"src":"127.0.0.11","duration":"1h","reason":"test"}"#,
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let ban: Value = serde_json::from_slice(&ok.body).unwrap();
    assert_eq!(
        (
            ban["src"].as_str(),
            ban["reason"].as_str(),
            ban["offence"].as_u64()
        ),
        (Some("127.0.0.11"), Some("test"), Some(1))
    );
    let list: Value =
        serde_json::from_slice(&admin(&s, Method::GET, "/api/bans", "", None).await.body).unwrap();
    let srcs: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["src"].as_str().unwrap())
        .collect();
    assert_eq!(srcs, ["127.0.0.11", "127.0.0.20"]);
    let refused = call(
        &client_from("127.0.0.11"),
        Method::GET,
        &format!("{}/api/tags", s.proxy),
        &[],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        metric(
            &s.admin,
            r#"ollama_guard_blocked_requests_total{rule="admin"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        admin(&s, Method::DELETE, "/api/bans/127.0.0.11", "", None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        admin(&s, Method::DELETE, "/api/bans/127.0.0.11", "", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let again = call(
        &client_from("127.0.0.11"),
        Method::GET,
        &format!("{}/api/tags", s.proxy),
        &[],
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    let ev = events(&s.detection_log());
    let unban = ev.iter().find(|e| e["event"] == "unban").unwrap();
    assert_eq!(unban["src"], "127.0.0.11");
    assert_eq!(unban["ended"], "admin");
}

#[tokio::test]
async fn admin_api_refuses_cross_site_forms_and_foreign_hosts() {
    let s = stack().await;
    let url = format!("{}/api/bans", s.admin);
    let form = send(
        Method::POST,
        &url,
        &[("content-type", "text/plain")],
        r#"{"src":"0.0.0.0/0","force":true}"#,
    )
    .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let rebound = send(
        Method::GET,
        &url,
        &[("host", "attacker.example:9464")],
        Bytes::new(),
    )
    .await;
    assert_eq!(rebound.status, StatusCode::FORBIDDEN);
    assert_eq!(
        admin(&s, Method::GET, "/api/bans", "", None).await.text(),
        "[]"
    );
}

#[tokio::test]
async fn monitor_mode_never_refuses_even_a_banned_source() {
    let s = stack().await;
    let r = admin(
        &s,
        Method::POST,
        "/api/bans",
        r#"{"src":"127.0.0.13","duration":"1h"}"#,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let c = client_from("127.0.0.13");
    let ok = call(&c, Method::GET, &format!("{}/api/tags", s.proxy), &[]).await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "the ban is stored but monitor mode changes no response"
    );
}

#[tokio::test]
async fn admin_token_is_required_when_configured() {
    let s = stack_with(ServeArgs::default(), "admin_token = \"s3cret\"").await;
    assert_eq!(
        admin(&s, Method::GET, "/api/bans", "", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        admin(&s, Method::GET, "/api/bans", "", Some("wrong"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        admin(&s, Method::GET, "/api/bans", "", Some("s3cret"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(&format!("{}/metrics", s.admin)).await.status,
        StatusCode::OK,
        "scrapes need no token"
    );
}

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

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_banned_not_the_proxy() {
    let args = ServeArgs {
        mode: Some("block".into()),
        trusted_proxy: vec!["127.0.0.30/32".into()],
        ..ServeArgs::default()
    };
    let s = stack_with(args, RULE).await;
    let proxy_hop = client_from("127.0.0.30");
    let show = format!("{}/api/show", s.proxy);
    let attacker = [
        ("x-forwarded-for", "198.51.100.7"),
        ("x-sim-delay-ms", "250"),
    ];
    call(&proxy_hop, Method::POST, &show, &attacker).await;
    call(&proxy_hop, Method::POST, &show, &attacker).await;
    wait_events(&s.detection_log(), |e| {
        e.iter().any(|e| e["event"] == "ban")
    })
    .await;
    let banned = call(
        &proxy_hop,
        Method::GET,
        &format!("{}/api/tags", s.proxy),
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await;
    assert_eq!(banned.status, StatusCode::FORBIDDEN);
    let innocent = call(
        &proxy_hop,
        Method::GET,
        &format!("{}/api/tags", s.proxy),
        &[("x-forwarded-for", "198.51.100.8")],
    )
    .await;
    assert_eq!(
        innocent.status,
        StatusCode::OK,
        "the proxy itself is not banned"
    );
    // An untrusted peer cannot frame the banned address onto itself or evade its own ban.
    let direct_attacker = client_from("127.0.0.31");
    let framed = call(
        &direct_attacker,
        Method::GET,
        &format!("{}/api/tags", s.proxy),
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await;
    assert_eq!(framed.status, StatusCode::OK);
    admin(
        &s,
        Method::POST,
        "/api/bans",
        r#"{"src":"127.0.0.31","duration":"1h"}"#,
        None,
    )
    .await;
    let evade = call(
        &direct_attacker,
        Method::GET,
        &format!("{}/api/tags", s.proxy),
        &[("x-forwarded-for", "203.0.113.1")],
    )
    .await;
    assert_eq!(evade.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn reload_applies_a_good_config_and_refuses_a_bad_one() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guard.toml");
    std::fs::write(&file, format!("mode = \"monitor\"\n{RULE}")).unwrap();
    let args = ServeArgs {
        config: Some(file.clone()),
        upstream: Some(sim.url()),
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        detection_log: Some(dir.path().join("detection.log").display().to_string()),
        ..ServeArgs::default()
    };
    let config = ollama_guard::config::Config::load(&args).unwrap();
    let server = Server::start(config, loopback().await, loopback().await)
        .await
        .unwrap();
    let admin_url = format!("http://{}", server.admin_addr);

    std::fs::write(&file, "mode = \"loud\"\n").unwrap();
    let err = server.reload(&args).unwrap_err().to_string();
    assert_eq!(
        err,
        "config error: mode: 'loud' is not one of monitor, block"
    );
    assert_eq!(
        metric(
            &admin_url,
            r#"ollama_guard_config_reloads_total{result="failure"}"#
        )
        .await,
        1.0
    );

    // One qualifying request under the old config (threshold 2: not flagged yet) ...
    let c = client_from("127.0.0.40");
    let show = format!("http://{}/api/show", server.proxy_addr);
    call(&c, Method::POST, &show, &[("x-sim-delay-ms", "250")]).await;
    std::fs::write(&file, format!("mode = \"block\"\n{RULE}")).unwrap();
    let report = server.reload(&args).unwrap();
    assert_eq!(
        report.kept_rules,
        ["slow_meta"],
        "the rule did not change: its counters are kept"
    );
    assert_eq!(report.keys_kept, 1);
    assert_eq!(
        metric(
            &admin_url,
            r#"ollama_guard_config_reloads_total{result="success"}"#
        )
        .await,
        1.0
    );
    // ... and one after: the kept count reaches the threshold, and block mode bans.
    call(&c, Method::POST, &show, &[("x-sim-delay-ms", "250")]).await;
    let r = call(&c, Method::POST, &show, &[]).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "block mode from the reloaded file is in force"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_command_operates_the_admin_api() {
    let s = stack().await;
    let admin_url = s.admin.clone();
    let run = move |args: &[&str]| {
        let mut full = vec!["bans", "--admin", admin_url.as_str()];
        full.extend_from_slice(args);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ollama-guard"))
            .args(&full)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let run2 = run.clone();
    let (code, out, _) = tokio::task::spawn_blocking(move || {
        run2(&["add", "127.0.0.50", "--duration", "1h", "--reason", "cli"])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["src"],
        "127.0.0.50"
    );
    let run3 = run.clone();
    let (code, out, _) = tokio::task::spawn_blocking(move || run3(&["list"]))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["reason"], "cli");
    let run4 = run.clone();
    let (code, out, _) = tokio::task::spawn_blocking(move || run4(&["remove", "127.0.0.50"]))
        .await
        .unwrap();
    assert_eq!((code, out.as_str()), (Some(0), "unbanned 127.0.0.50\n"));
    let (code, _, err) = tokio::task::spawn_blocking(move || run(&["remove", "127.0.0.50"]))
        .await
        .unwrap();
    assert_eq!(code, Some(1));
    assert!(err.contains("admin API answered 404"), "{err}");
}
