//! How the proxy attributes odd request targets, through the real listener: the route a
//! request is counted under is the one Ollama serves it from (see README, "Path
//! normalisation").
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tokio::io::AsyncWriteExt;

async fn raw_get(s: &Stack, target: &str) -> String {
    let addr = s.proxy.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    read_until(&mut stream, "\r\n\r\n").await
}

/// What the simulator received, without the readiness probe's `/api/version`.
fn forwarded(s: &Stack) -> Vec<String> {
    s.sim
        .log
        .requests()
        .into_iter()
        .map(|r| r.target)
        .filter(|t| t != "/api/version")
        .collect()
}

fn series(route: &str) -> String {
    format!(
        r#"ollama_guard_requests_total{{method="GET",outcome="forwarded",route="{route}",status_class="4xx"}}"#
    )
}

/// Decision: a raw `#` ends the request target for the `http` crate, so the proxy forwards
/// `/api/show` and Ollama answers it as `/api/show`; the guard counts what Ollama served.
#[tokio::test]
async fn raw_hash_in_the_target_is_cut_and_counted_as_what_ollama_receives() {
    let s = stack().await;
    let head = raw_get(&s, "/api/show#x").await;
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    let targets = forwarded(&s);
    assert_eq!(targets, ["/api/show"]);
    // GET /api/show is Ollama's 405 (it is a POST route); counted under its route.
    assert_eq!(
        metric_eventually(&s.admin, &series("/api/show"), 1.0).await,
        1.0
    );
}

/// Ollama's mux answers an unclean path with a 301 before gin runs: the request is not a
/// `/api/show`, whatever the simulator answers.
#[tokio::test]
async fn unclean_and_double_encoded_paths_are_not_counted_as_the_route_they_resemble() {
    let s = stack().await;
    for target in ["//api/show", "/api/./show", "/api/%2573how"] {
        raw_get(&s, target).await;
    }
    let targets = forwarded(&s);
    assert_eq!(targets, ["//api/show", "/api/./show", "/api/%2573how"]);
    assert_eq!(
        metric_eventually(&s.admin, &series("other"), 3.0).await,
        3.0
    );
    let show = r#"ollama_guard_request_duration_seconds_count{route="/api/show"}"#;
    assert_eq!(metric(&s.admin, show).await, 0.0);
}
