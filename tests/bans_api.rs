//! The admin ban API and the `bans` command through a running stack: validation, token,
//! cross-site protection.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use ollama_guard::config::ServeArgs;
use serde_json::Value;

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
