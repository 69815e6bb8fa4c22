//! Metrics, the access log and log reopening, through a running stack.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use ollama_guard::config::ServeArgs;
use ollama_guard::gin::{parse_gin_line, splunk::splunk_extract};

async fn traffic(s: &Stack) {
    get(&format!("{}/api/tags", s.proxy)).await;
    get(&format!("{}/api/%74ags?x=1", s.proxy)).await;
    get(&format!("{}/random/path/123", s.proxy)).await;
    send(
        Method::POST,
        &format!("{}/api/show", s.proxy),
        &[("authorization", "Bearer sk-secret-token")],
        r#"{"model":"llama3.2"}"#,
    )
    .await;
    send(Method::HEAD, &format!("{}/", s.proxy), &[], Bytes::new()).await;
}

#[tokio::test]
async fn metrics_pass_promtool_and_labels_stay_bounded() {
    let s = stack().await;
    traffic(&s).await;
    let text = get(&format!("{}/metrics", s.admin)).await.text();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(!l.contains("127.0.0.1"), "client IP in a label: {l}");
        assert!(
            !l.contains("random") && !l.contains("%74") && !l.contains("x=1"),
            "raw path in a label: {l}"
        );
    }
    let tags = r#"ollama_guard_requests_total{method="GET",outcome="forwarded",route="/api/tags",status_class="2xx"}"#;
    assert_eq!(
        metric(&s.admin, tags).await,
        2.0,
        "the percent-encoded path counts as /api/tags"
    );
    let other = r#"ollama_guard_requests_total{method="GET",outcome="forwarded",route="other",status_class="4xx"}"#;
    assert_eq!(metric(&s.admin, other).await, 1.0);
    assert_eq!(
        metric(
            &s.admin,
            r#"ollama_guard_request_duration_seconds_count{route="/api/show"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&s.admin, "ollama_guard_in_flight_requests").await,
        0.0
    );

    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is required for this test (apt-get install prometheus): {e}")
        });
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool reported: {report}"
    );
}

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let s = stack().await;
    assert_eq!(
        get(&format!("{}/healthz", s.admin)).await.status,
        StatusCode::OK
    );
    let mut ready = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        ready = get(&format!("{}/readyz", s.admin)).await.status;
        if ready == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(ready, StatusCode::OK);
}

#[tokio::test]
async fn readyz_is_503_when_the_upstream_is_down() {
    let dead = loopback().await;
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let server = ollama_guard::serve::Server::start(
        config(&url, &dir, ServeArgs::default(), ""),
        loopback().await,
        loopback().await,
    )
    .await
    .unwrap();
    let r = get(&format!("http://{}/readyz", server.admin_addr)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn gin_access_lines_parse_like_ollamas_own_and_never_hold_credentials() {
    let s = stack().await;
    traffic(&s).await;
    let server = s.server;
    let log = s.dir.path().join("access.log");
    server.shutdown().await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("sk-secret-token") && !text.contains("Bearer"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    let expect = [
        ("200", "GET", "/api/tags"),
        ("200", "GET", "/api/tags?x=1"),
        ("404", "GET", "/random/path/123"),
        ("200", "POST", "/api/show"),
        ("200", "HEAD", "/"),
    ];
    for (line, (status, method, path)) in lines.iter().zip(expect) {
        let parsed = parse_gin_line(line.as_bytes()).unwrap();
        assert_eq!(parsed.status.to_string(), status);
        assert_eq!(parsed.method, method);
        assert_eq!(parsed.path, path);
        assert_eq!(parsed.client_ip.to_string(), "127.0.0.1");
        // The seed rule's regex sees the same fields in our lines as in Ollama's, except that
        // sub-millisecond latencies are written in ms/µs (which the regex cannot match, as
        // with Ollama's own lines).
        if let Some(f) = splunk_extract(line) {
            assert_eq!(
                (f.status_code, f.src_ip, f.http_method, f.uri_path),
                (status, "127.0.0.1", method, path)
            );
        } else {
            assert!(
                parsed.latency_text.ends_with("ms") || parsed.latency_text.ends_with("µs"),
                "{line}"
            );
        }
        assert!(line.starts_with("[GIN] "));
    }
}

#[tokio::test]
async fn json_access_log_has_one_object_per_request() {
    let args = ServeArgs {
        access_log_format: Some("json".into()),
        ..ServeArgs::default()
    };
    let s = stack_with(args, "").await;
    get(&format!("{}/api/tags?x=1", s.proxy)).await;
    let server = s.server;
    let log = s.dir.path().join("access.log");
    server.shutdown().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["src"], "127.0.0.1");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["uri"], "/api/tags?x=1");
    assert_eq!(v["path"], "/api/tags");
    assert_eq!(v["route"], "/api/tags");
    assert_eq!(v["status"], 200);
    assert_eq!(v["outcome"], "forwarded");
    assert!(v["duration_seconds"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn reopen_logs_follows_logrotate() {
    let s = stack().await;
    get(&format!("{}/api/version", s.proxy)).await;
    let log = s.dir.path().join("access.log");
    let rotated = s.dir.path().join("access.log.1");
    eventually(|| {
        std::fs::read_to_string(&log)
            .map(|t| t.lines().count() == 1)
            .unwrap_or(false)
    })
    .await;
    std::fs::rename(&log, &rotated).unwrap();
    s.server.reopen_logs();
    get(&format!("{}/api/ps", s.proxy)).await;
    let server = s.server;
    server.shutdown().await;
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("\"/api/version\""));
    let fresh = std::fs::read_to_string(&log).unwrap();
    assert_eq!(fresh.lines().count(), 1);
    assert!(fresh.contains("\"/api/ps\""));
}
