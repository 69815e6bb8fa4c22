//! The admin ban API and the `bans` command through a running stack: validation, token,
//! cross-site protection.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use ollama_guard::config::ServeArgs;
use serde_json::Value;
use std::time::Duration;

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
    // A reason longer than 1 KiB is refused, naming the field (it travels with the ban to
    // every replica and log line); 1 KiB exactly is taken.
    let long = format!(r#"{{"src":"127.0.0.11","reason":"{}"}}"#, "r".repeat(1025));
    let bad = admin(&s, Method::POST, "/api/bans", &long, None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_slice::<Value>(&bad.body).unwrap()["error"],
        "reason: at most 1024 bytes (got 1025); a ban's reason travels with it to every replica and log line"
    );
    let fits = format!(r#"{{"src":"127.0.0.12","reason":"{}"}}"#, "r".repeat(1024));
    let ok = admin(&s, Method::POST, "/api/bans", &fits, None).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text());
    let ok = admin(&s, Method::DELETE, "/api/bans/127.0.0.12", "", None).await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
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
    // The log writer writes the unban line after the admin call has answered.
    let ev = wait_events(&s.detection_log(), |ev| {
        ev.iter().filter(|e| e["event"] == "unban").count() >= 2
    })
    .await;
    let unbans: Vec<&Value> = ev.iter().filter(|e| e["event"] == "unban").collect();
    assert_eq!(unbans.len(), 2, "{unbans:?}");
    // The ban with the longest reason first, then this one.
    assert_eq!(unbans[0]["src"], "127.0.0.12");
    assert_eq!(unbans[1]["src"], "127.0.0.11");
    assert_eq!(unbans[1]["ended"], "admin");
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
    // Two Authorization headers, the right token in either: which one counts would be a
    // guess, so neither does (as on the proxy listener).
    let addr = s.admin.trim_start_matches("http://").to_owned();
    for (first, second) in [
        ("s3cret", "wrong"),
        ("wrong", "s3cret"),
        ("s3cret", "s3cret"),
    ] {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(
            format!(
                "GET /api/bans HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {first}\r\n\
                 Authorization: Bearer {second}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 401 ") && answer.contains("admin token required"),
            "{first}, {second}: {answer}"
        );
    }
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

#[tokio::test]
async fn bearer_scheme_is_case_insensitive_and_allows_several_spaces() {
    let s = stack_with(ServeArgs::default(), "admin_token = \"s3cret\"").await;
    let url = format!("{}/api/bans", s.admin);
    for auth in ["bearer s3cret", "BEARER s3cret", "Bearer    s3cret"] {
        let r = send(Method::GET, &url, &[("authorization", auth)], "").await;
        assert_eq!(r.status, StatusCode::OK, "{auth}");
    }
    for auth in ["bearer s3cre", "Basic s3cret", "Bearers3cret", "bearer"] {
        let r = send(Method::GET, &url, &[("authorization", auth)], "").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth}");
    }
}

/// The admin API parses sources with the config's function: host bits are refused naming
/// the network, IPv4-mapped networks become IPv4.
#[tokio::test]
async fn admin_api_parses_sources_like_the_config() {
    let s = stack_with(
        ServeArgs {
            mode: Some("block".into()),
            ..ServeArgs::default()
        },
        "",
    )
    .await;
    let post = |src: &str| {
        let body = format!(r#"{{"src":"{src}","duration":"1h"}}"#);
        let s = &s;
        async move { admin(s, Method::POST, "/api/bans", &body, None).await }
    };
    let bad = post("10.0.0.5/8").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_slice::<Value>(&bad.body).unwrap()["error"],
        "'10.0.0.5/8' has host bits set; write 10.0.0.0/8"
    );
    let mapped = post("::ffff:192.0.2.0/120").await;
    assert_eq!(mapped.status, StatusCode::CREATED);
    assert_eq!(
        serde_json::from_slice::<Value>(&mapped.body).unwrap()["src"],
        "192.0.2.0/24"
    );
    let gone = admin(&s, Method::DELETE, "/api/bans/192.0.2.5%2F24", "", None).await;
    assert_eq!(gone.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_slice::<Value>(&gone.body).unwrap()["error"],
        "'192.0.2.5/24' has host bits set; write 192.0.2.0/24"
    );
    let gone = admin(
        &s,
        Method::DELETE,
        "/api/bans/::ffff:192.0.2.0%2F120",
        "",
        None,
    )
    .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
}

/// Runs the binary with `args` (off the runtime): exit code, stdout, stderr.
async fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ollama-guard"))
            .args(&args)
            .env_remove("OLLAMA_GUARD_ADMIN")
            .env_remove("OLLAMA_GUARD_ADMIN_TOKEN")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// A rule that flags (and, in block mode, bans) a source on its second request.
const BURST: &str = "[[rule]]\nname = \"burst\"\ngroup_by = \"src\"\nwindow = \"24h\"\nthreshold = 2\naction = \"block\"\n";

/// The tumbling window of `BURST`: epoch-aligned, so it ends at midnight UTC; the requests a
/// test counts in it must not straddle that.
const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_list_filters_shows_remaining_time_and_remove_all_lifts_every_ban() {
    let s = stack_with(
        ServeArgs {
            mode: Some("block".into()),
            ..ServeArgs::default()
        },
        BURST,
    )
    .await;
    // Both requests in one window of BURST, or the second does not reach the threshold.
    clear_of_window_end(DAY, Duration::from_secs(30)).await;
    let c = client_from("127.0.0.9");
    for _ in 0..2 {
        call(&c, Method::GET, &format!("{}/api/tags", s.proxy), &[]).await;
    }
    wait_events(&s.detection_log(), |ev| {
        ev.iter().any(|e| e["event"] == "ban")
    })
    .await;
    let a = s.admin.as_str();
    // --admin after the action, as after `bans`.
    let (code, out, err) =
        cli(&["bans", "add", "127.0.0.50", "--admin", a, "--reason", "cli"]).await;
    assert_eq!(
        (code, err.as_str()),
        (Some(0), ""),
        "block mode: no warning"
    );
    assert!(
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .get("warning")
            .is_none(),
        "{out}"
    );

    let (code, out, _) = cli(&[
        "bans", "list", "--admin", a, "--rule", "burst", "--output", "json",
    ])
    .await;
    assert_eq!(code, Some(0));
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    let got: Vec<(&str, &str, bool)> = list
        .iter()
        .map(|b| {
            let reason = b["reason"].as_str().unwrap();
            (
                b["src"].as_str().unwrap(),
                b["rule"].as_str().unwrap(),
                reason.starts_with("burst: 2 qualifying requests"),
            )
        })
        .collect();
    assert_eq!(got, [("127.0.0.9", "burst", true)]);
    // Without --output, stdout not a terminal: the API's JSON as before.
    let (_, out, _) = cli(&["bans", "--admin", a, "list"]).await;
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out).unwrap().len(), 2);

    let (code, out, err) = cli(&[
        "bans", "list", "--admin", a, "--rule", "admin", "--output", "table",
    ])
    .await;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[0],
        "SRC                          UNTIL                    REMAINING OFFENCE RULE                 REASON"
    );
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        (cols[0], cols[3], cols[4], cols[5]),
        ("127.0.0.50", "1", "admin", "cli")
    );
    // A one-hour ban made a moment ago: 59 minutes and some seconds left.
    assert!(
        cols[2].starts_with("59m") && cols[2].ends_with('s'),
        "{out}"
    );

    let (code, out, err) = cli(&["bans", "remove", "--all", "--admin", a]).await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (Some(0), "lifted 2 bans\n", "")
    );
    let (_, out, _) = cli(&["bans", "list", "--admin", a]).await;
    assert_eq!(out, "[]\n");
    let (code, out, _) = cli(&["bans", "remove", "--all", "--admin", a]).await;
    assert_eq!((code, out.as_str()), (Some(0), "lifted 0 bans\n"));
    let (code, _, err) = cli(&["bans", "remove", "--admin", a]).await;
    assert_eq!(code, Some(2), "a source or --all is required: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_ban_in_monitor_mode_warns_in_the_answer_and_on_the_command_line() {
    let s = stack().await;
    let r = admin(
        &s,
        Method::POST,
        "/api/bans",
        r#"{"src":"127.0.0.70","duration":"1h"}"#,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap()["warning"],
        "stored but not enforced: mode is monitor; bans are enforced in block mode"
    );
    let (code, out, err) = cli(&["bans", "add", "127.0.0.71", "--admin", &s.admin]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        err,
        "ollama-guard: warning: ban of 127.0.0.71 stored but not enforced: mode is monitor; bans are enforced in block mode\n"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["src"],
        "127.0.0.71"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_mode_upstream_bans_flagged_sources_and_drops() {
    let s = stack_with(ServeArgs::default(), BURST).await;
    for _ in 0..100 {
        if get(&format!("{}/readyz", s.admin)).await.status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // All three requests in one window of BURST: the status reports the current window's count.
    clear_of_window_end(DAY, Duration::from_secs(30)).await;
    let c = client_from("127.0.0.9");
    for _ in 0..3 {
        call(&c, Method::GET, &format!("{}/api/tags", s.proxy), &[]).await;
    }
    wait_events(&s.detection_log(), |ev| {
        ev.iter().any(|e| e["event"] == "detection")
    })
    .await;
    let r = admin(
        &s,
        Method::POST,
        "/api/bans",
        r#"{"src":"127.0.0.50","duration":"1h"}"#,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);

    let (code, out, err) = cli(&["status", "--admin", &s.admin, "--output", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["mode"], "monitor");
    assert_eq!(
        v["upstream"],
        serde_json::json!({"url": s.sim.url(), "ready": true})
    );
    assert!(v["uptime_seconds"].as_u64().unwrap() < 60, "{v}");
    assert_eq!(v["bans"]["active"], 1);
    assert_eq!(v["bans"]["first"][0]["src"], "127.0.0.50");
    assert_eq!(
        v["flagged"],
        serde_json::json!({"sources": 1, "top": [{"src": "127.0.0.9", "rules": [{"rule": "burst", "count": 3}]}]})
    );
    assert_eq!(
        v["log_lines_dropped"],
        serde_json::json!({"detection": 0, "access": 0})
    );

    let (code, out, _) = cli(&["status", "--admin", &s.admin, "--output", "table"]).await;
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{out}");
    assert_eq!(
        lines[0],
        "mode:      monitor (detect and log; no request is refused)"
    );
    assert_eq!(lines[1], format!("upstream:  {} ready", s.sim.url()));
    assert!(
        lines[2].starts_with("uptime:    ") && lines[2].contains("s (since 20"),
        "{out}"
    );
    assert_eq!(lines[3], "bans:      1 active");
    assert!(
        lines[4].starts_with("  127.0.0.50                      59m")
            && lines[4].ends_with("s left  admin (manual)"),
        "{out}"
    );
    assert_eq!(lines[5], "flagged:   1 source in the current windows");
    assert_eq!(
        lines[6],
        "  127.0.0.9                    burst (3 requests)"
    );
    assert_eq!(lines[7], "log drops: 0 (detection 0, access 0)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_say_what_to_do_when_unreachable_or_unauthorised() {
    let s = stack_with(ServeArgs::default(), "admin_token = \"s3cret\"").await;
    assert_eq!(
        admin(&s, Method::GET, "/api/status", "", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let (code, _, err) = cli(&["status", "--admin", &s.admin]).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "ollama-guard: status: admin API answered 401: admin token required; pass --token TOKEN \
         (or OLLAMA_GUARD_ADMIN_TOKEN), the admin_token of its config\n"
    );
    let (code, _, err) = cli(&["status", "--admin", &s.admin, "--token", "wrong"]).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "ollama-guard: status: admin API answered 401: admin token wrong; pass --token TOKEN \
         (or OLLAMA_GUARD_ADMIN_TOKEN), the admin_token of its config\n"
    );
    let (code, out, _) = cli(&["status", "--admin", &s.admin, "--token", "s3cret"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["mode"],
        "monitor"
    );

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for cmd in [&["bans", "list"][..], &["keys", "list"], &["status"]] {
        let mut args = cmd.to_vec();
        args.extend(["--admin", closed.as_str()]);
        let (code, _, err) = cli(&args).await;
        let path = match cmd[0] {
            "bans" => "/api/bans",
            "keys" => "/api/keys",
            _ => "/api/status",
        };
        assert_eq!(code, Some(1));
        assert_eq!(
            err,
            format!(
                "ollama-guard: {}: cannot reach the admin API at {closed}{path}: client error \
                 (Connect): tcp connect error: Connection refused (os error 111); is ollama-guard \
                 running? point --admin URL (or OLLAMA_GUARD_ADMIN) at its admin_listen\n",
                cmd[0]
            )
        );
    }
}
