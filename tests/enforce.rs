//! Enforcement through a running stack: monitor vs block, refusal shapes, trusted proxies,
//! hot reload.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::{Method, StatusCode};
use ollama_guard::config::ServeArgs;
use serde_json::Value;
use std::time::Duration;

/// The rule's tumbling window: the two slow calls of a scenario must share one.
const HOUR: Duration = Duration::from_secs(3600);

const RULE: &str = r#"
[[rule]]
name = "slow_meta"
paths = ["/api/show", "/api/tags", "/v1/models", "/v1/messages", "/v1/chat/completions"]
min_latency = "200ms"
window = "1h"
threshold = 2
"#;

/// Two slow /api/show calls flag 127.0.0.9; then five more calls of every kind.
async fn scenario(s: &Stack) -> Vec<Reply> {
    clear_of_window_end(HOUR, Duration::from_secs(30)).await;
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
    assert_eq!(ev[0]["action"], "would_block");
    assert!(ev.iter().all(|e| e["event"] != "ban"));
    let logged =
        r#"ollama_guard_detections_total{action="would_block",rule="slow_meta",severity="low"}"#;
    assert_eq!(
        metric(&s.admin, logged).await,
        1.0,
        "the would-block count of monitor mode"
    );
    let log = s.detection_log();
    s.server.shutdown().await;
    assert_detection_log_valid(&log);
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
    // Cause before effect: the detection, then the ban it triggered, then the refusals.
    let order = ["detection", "ban", "blocked"].map(|k| position(&ev, k).unwrap());
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "events out of order: {ev:#?}"
    );
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
    assert_detection_log_valid(&log);
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
async fn behind_a_trusted_proxy_the_forwarded_client_is_banned_not_the_proxy() {
    let args = ServeArgs {
        mode: Some("block".into()),
        trusted_proxy: vec!["127.0.0.30/32".into()],
        ..ServeArgs::default()
    };
    let s = stack_with(args, RULE).await;
    clear_of_window_end(HOUR, Duration::from_secs(30)).await;
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
    // Lifting the admin ban writes an `unban`: every kind of event is now in the log.
    let r = admin(&s, Method::DELETE, "/api/bans/127.0.0.31", "", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let log = s.detection_log();
    s.server.shutdown().await;
    let ev = assert_detection_log_valid(&log);
    for kind in ["detection", "ban", "blocked", "unban", "window_summary"] {
        assert!(position(&ev, kind).is_some(), "no {kind} event: {ev:#?}");
    }
}

#[tokio::test]
async fn reload_applies_a_good_config_and_refuses_a_bad_one() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guard.toml");
    std::fs::write(&file, format!("mode = \"monitor\"\n{RULE}")).unwrap();
    let (args, server) = serve_file(&sim.url(), dir.path(), &file).await;
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
    clear_of_window_end(HOUR, Duration::from_secs(30)).await;
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
    let ev = assert_detection_log_valid(&dir.path().join("detection.log"));
    let order = ["detection", "ban"].map(|k| position(&ev, k).unwrap());
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "events out of order: {ev:#?}"
    );
}

#[tokio::test]
async fn reload_reports_bound_keys_until_restart_and_swaps_live_ones() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guard.toml");
    std::fs::write(&file, "max_connections_per_source = 256\n").unwrap();
    let (args, server) = serve_file(&sim.url(), dir.path(), &file).await;

    std::fs::write(&file, "mode = \"block\"\nmax_connections_per_source = 7\n").unwrap();
    let report = server.reload(&args).unwrap();
    assert_eq!(report.needs_restart, ["max_connections_per_source"]);
    assert_eq!(server.live_config().mode, ollama_guard::config::Mode::Block);
    assert_eq!(
        server.bound_config().max_connections_per_source,
        256,
        "a bound key keeps its running value"
    );
    // Compared with the running value, not the last file: still reported next time.
    std::fs::write(
        &file,
        "mode = \"monitor\"\nmax_connections_per_source = 7\n",
    )
    .unwrap();
    let report = server.reload(&args).unwrap();
    assert_eq!(report.needs_restart, ["max_connections_per_source"]);
    assert_eq!(
        server.live_config().mode,
        ollama_guard::config::Mode::Monitor
    );
    server.shutdown().await;
}

/// Bans a source on its first `/api/show`.
const FIRST_SHOW_BANS: &str = r#"
[[rule]]
name = "first_show"
paths = ["/api/show"]
window = "1h"
threshold = 1
"#;

/// The ban a response's record decides is in force for the very next request of that source,
/// sent the moment the response is in, on a new connection (whichever worker accepts it).
#[tokio::test]
async fn the_request_after_the_banning_response_is_refused_on_a_new_connection() {
    let args = ServeArgs {
        mode: Some("block".into()),
        workers: Some(2),
        ..ServeArgs::default()
    };
    let s = stack_with(args, FIRST_SHOW_BANS).await;
    clear_of_window_end(HOUR, Duration::from_secs(60)).await;
    let show = format!("{}/api/show", s.proxy);
    let tags = format!("{}/api/tags", s.proxy);
    let mut statuses = Vec::new();
    for k in 1..=20 {
        let ip = format!("127.0.3.{k}");
        let first = call(&client_from(&ip), Method::POST, &show, &[]).await;
        let next = call(&client_from(&ip), Method::GET, &tags, &[]).await;
        statuses.push((first.status.as_u16(), next.status.as_u16()));
    }
    assert_eq!(statuses, vec![(200, 403); 20]);
    let forwarded: Vec<String> = s
        .sim
        .log
        .requests()
        .into_iter()
        .map(|r| r.target)
        .filter(|t| t != "/api/version")
        .collect();
    assert_eq!(forwarded, vec!["/api/show".to_owned(); 20]);
    assert_eq!(metric(&s.admin, "ollama_guard_active_bans").await, 20.0);
    s.server.shutdown().await;
}

/// A web page cannot get its visitor's address banned (block mode, a rule that bans at the
/// third `/api/tags` in an hour). A page's no-cors requests (`<img>`, `<iframe>`: cross-site,
/// no `Origin`) are refused at the gate; its CORS requests carry its own `Origin`, which
/// Ollama refuses (403). Neither counts: after 10 of each, the visitor's own tools still
/// pass. A script that adds `Sec-Fetch-Site` gains nothing: refused, or answered and counted.
#[tokio::test]
async fn a_web_page_cannot_get_its_visitor_banned() {
    let args = ServeArgs {
        mode: Some("block".into()),
        ..ServeArgs::default()
    };
    let rule = r#"
[[rule]]
name = "burst"
paths = ["/api/tags"]
window = "1h"
threshold = 3
action = "block"
"#;
    let s = stack_with(args, rule).await;
    clear_of_window_end(HOUR, Duration::from_secs(30)).await;
    let tags = format!("{}/api/tags", s.proxy);
    let visitor = client_from("127.0.0.21");
    for _ in 0..10 {
        let img = call(
            &visitor,
            Method::GET,
            &tags,
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
        assert_eq!(img.status, StatusCode::FORBIDDEN);
        let body: Value = serde_json::from_slice(&img.body).unwrap();
        assert_eq!(
            body["error"],
            "ollama-guard: request refused: a browser's cross-site request without an Origin"
        );
        let page = [
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ];
        let cors = call(&visitor, Method::GET, &tags, &page).await;
        assert_eq!(cors.status, StatusCode::FORBIDDEN);
        assert!(cors.body.is_empty(), "Ollama's own 403");
    }
    let own = call(&visitor, Method::GET, &tags, &[]).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(
        metric(
            &s.admin,
            "ollama_guard_refused_requests_total{reason=\"cross_site\"}"
        )
        .await,
        10.0
    );
    // An allowed origin (a local web UI) is answered, and counts like any client: the
    // third request in the window bans.
    let ui = client_from("127.0.0.22");
    let local = [
        ("sec-fetch-site", "same-site"),
        ("origin", "http://localhost:3000"),
    ];
    for _ in 0..3 {
        assert_eq!(
            call(&ui, Method::GET, &tags, &local).await.status,
            StatusCode::OK
        );
    }
    wait_events(&s.detection_log(), |e| {
        e.iter().any(|e| e["event"] == "ban")
    })
    .await;
    assert_eq!(
        call(&ui, Method::GET, &tags, &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let events = events(&s.detection_log());
    let named: Vec<&Value> = events.iter().filter(|e| e["src"] == "127.0.0.21").collect();
    assert!(named.is_empty(), "the visitor is named nowhere: {named:?}");
}

#[tokio::test]
async fn a_ban_narrowed_around_an_allowlisted_address_still_covers_the_rest_of_its_network() {
    // The attacker shares a /64 with an allowlisted host (a LAN with privacy addresses): its
    // ban is narrowed to its address, but rotating to another one in the /64 gains nothing.
    let args = ServeArgs {
        mode: Some("block".into()),
        trusted_proxy: vec!["127.0.0.32/32".into()],
        ..ServeArgs::default()
    };
    let s = stack_with(args, &format!("allowlist = [\"fd5e:1::1/128\"]\n{RULE}")).await;
    clear_of_window_end(HOUR, Duration::from_secs(30)).await;
    let hop = client_from("127.0.0.32");
    let from = |src: &'static str| [("x-forwarded-for", src), ("x-sim-delay-ms", "250")];
    let show = format!("{}/api/show", s.proxy);
    call(&hop, Method::POST, &show, &from("fd5e:1::100")).await;
    call(&hop, Method::POST, &show, &from("fd5e:1::100")).await;
    wait_events(&s.detection_log(), |e| {
        e.iter().any(|e| e["event"] == "ban")
    })
    .await;
    let tags = format!("{}/api/tags", s.proxy);
    let xff = |src: &'static str| [("x-forwarded-for", src)];
    for (src, status) in [
        ("fd5e:1::100", StatusCode::FORBIDDEN),
        ("fd5e:1::101", StatusCode::FORBIDDEN),
        ("fd5e:1::101", StatusCode::FORBIDDEN),
        ("fd5e:1::1", StatusCode::OK),
        ("fd5e:2::101", StatusCode::OK),
    ] {
        assert_eq!(
            call(&hop, Method::GET, &tags, &xff(src)).await.status,
            status,
            "{src}"
        );
    }
    assert_eq!(
        metric(
            &s.admin,
            "ollama_guard_blocked_requests_total{rule=\"slow_meta\"}"
        )
        .await,
        3.0
    );
    // Lifting the offender's ban lifts the rest of its /64 with it.
    let r = admin(&s, Method::DELETE, "/api/bans/fd5e:1::100", "", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&hop, Method::GET, &tags, &xff("fd5e:1::102"))
            .await
            .status,
        StatusCode::OK
    );
    let log = s.detection_log();
    s.server.shutdown().await;
    let ev = assert_detection_log_valid(&log);
    // One ban, the offender's: its neighbours are refused under it, each refusal counted with
    // its refusals (one `blocked` line a minute for the lot, so rotating addresses cannot
    // flood the log); nothing is added to the ban table.
    let of = |kind: &str| -> Vec<String> {
        ev.iter()
            .filter(|e| e["event"] == kind)
            .map(|e| {
                format!(
                    "{} {}",
                    e["src"].as_str().unwrap(),
                    e["rule"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(of("ban"), ["fd5e:1::100 slow_meta"]);
    assert_eq!(of("blocked"), ["fd5e:1::100 slow_meta"]);
}
