//! Ollama's loopback `Host` check.

use super::{fetch, quick, req, req_host, start};
use crate::SimConfig;

#[tokio::test]
async fn foreign_host_is_refused_with_an_empty_403() {
    let sim = start(quick()).await;
    let got = fetch(&sim, req_host("GET", "/api/tags", "evil.example")).await;
    assert_eq!(got.status, 403);
    assert_eq!(got.body(), "");
    assert_eq!(got.header("content-length"), Some("0"));
    assert_eq!(got.header("content-type"), None);
}

#[tokio::test]
async fn host_check_applies_to_unknown_paths_too() {
    let sim = start(quick()).await;
    let got = fetch(&sim, req_host("GET", "/nope", "evil.example:11434")).await;
    assert_eq!(got.status, 403);
}

#[tokio::test]
async fn localhost_and_loopback_hosts_are_served() {
    let sim = start(quick()).await;
    for host in ["localhost:11434", "127.0.0.1:11435", "[::1]:11434"] {
        let got = fetch(&sim, req_host("GET", "/", host)).await;
        assert_eq!(got.status, 200, "{host}");
    }
}

#[tokio::test]
async fn options_from_an_allowed_host_is_204() {
    let sim = start(quick()).await;
    let got = fetch(&sim, req("OPTIONS", "/api/chat")).await;
    assert_eq!((got.status.as_u16(), got.body().as_str()), (204, ""));
}

#[tokio::test]
async fn disabled_host_check_serves_any_host() {
    let sim = start(SimConfig {
        host_check: false,
        ..quick()
    })
    .await;
    let got = fetch(&sim, req_host("GET", "/", "evil.example")).await;
    assert_eq!(got.status, 200);
}
