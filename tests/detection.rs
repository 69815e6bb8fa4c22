//! In-line detection: the proxy in front of the simulator with a scaled-down rule.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use ollama_guard::config::ServeArgs;
use std::time::Duration;

/// The rule's tumbling window.
const HOUR: Duration = Duration::from_secs(3600);

const RULE: &str = r#"
[[rule]]
name = "slow_show"
escu_id = "c9fd1a54-0eab-4470-8970-d5fcc3c740fb"
mitre = "T1048"
attack_type = "Potential Data Exfiltration"
paths = ["/api/show", "/api/tags"]
min_latency = "300ms"
window = "1h"
threshold = 2
severity_high = "50s"
severity_medium = "40s"
"#;

async fn call(c: &Client<HttpConnector, Full<Bytes>>, url: &str, delay_ms: u32) -> Bytes {
    let delay = delay_ms.to_string();
    let req = request(
        Method::POST,
        url,
        &[("x-sim-delay-ms", &delay)],
        r#"{"model":"llama3.2"}"#,
    );
    c.request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn slow_requests_of_one_source_give_one_detection_then_a_window_summary() {
    let s = stack_with(ServeArgs::default(), RULE).await;
    clear_of_window_end(HOUR, Duration::from_secs(30)).await;
    let attacker = client_from("127.0.0.1");
    let quiet = client_from("127.0.0.2");
    let show = format!("{}/api/show", s.proxy);
    call(&attacker, &show, 350).await;
    call(&attacker, &show, 10).await; // fast: does not qualify
    call(&quiet, &show, 350).await; // one slow request: below threshold
    assert!(
        lines(&s.detection_log()).is_empty(),
        "threshold 2 not reached yet"
    );
    call(&attacker, &show, 400).await;
    let log = s.detection_log();
    eventually(|| lines(&log).len() == 1).await;
    call(&attacker, &show, 450).await; // third qualifying: no second detection in the window

    // Monitor mode: the flagged source still gets exactly what Ollama sends.
    let direct = send(
        Method::POST,
        &format!("{}/api/show", s.sim.url()),
        &[("host", "localhost")],
        r#"{"model":"llama3.2"}"#,
    )
    .await;
    assert_eq!(call(&attacker, &show, 0).await, direct.body);

    let server = s.server;
    server.shutdown().await; // closes the window: its summary is written
    let events = lines(&log);
    assert_eq!(events.len(), 2, "{events:#?}");
    let (det, sum) = (&events[0], &events[1]);
    assert_eq!(det["schema"], "ollama-guard.detection.v1");
    assert_eq!(det["event"], "detection");
    assert_eq!(det["rule"], "slow_show");
    assert_eq!(det["escu_id"], "c9fd1a54-0eab-4470-8970-d5fcc3c740fb");
    assert_eq!(det["src"], "127.0.0.1");
    assert_eq!(det["uri_path"], "/api/show");
    assert_eq!(det["http_method"], "POST");
    assert_eq!(det["count"], 2);
    assert_eq!(det["severity"], "low");
    assert_eq!(det["action"], "would_block");
    assert_eq!(sum["event"], "window_summary");
    assert_eq!(sum["count"], 3);
    assert_eq!(sum["src"], "127.0.0.1");
    let avg = sum["avg_response_time"].as_f64().unwrap();
    let max = sum["max_response_time"].as_f64().unwrap();
    assert!(
        avg >= 0.40 && max >= 0.45 && max >= avg,
        "avg {avg} max {max}"
    );
    assert!(events.iter().all(|e| e["src"] != "127.0.0.2"));
    let ws = chrono::DateTime::parse_from_rfc3339(sum["window_start"].as_str().unwrap()).unwrap();
    assert_eq!(
        ws.timestamp() % 3600,
        0,
        "tumbling windows are epoch-aligned"
    );
    assert_detection_log_valid(&log);
}

#[tokio::test]
async fn detections_are_counted_in_metrics_by_rule_severity_and_action() {
    let s = stack_with(ServeArgs::default(), RULE).await;
    clear_of_window_end(HOUR, Duration::from_secs(30)).await;
    let c = client_from("127.0.0.3");
    let tags = format!("{}/api/tags", s.proxy);
    for _ in 0..2 {
        let req = request(
            Method::GET,
            &tags,
            &[("x-sim-delay-ms", "320")],
            Bytes::new(),
        );
        c.request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
    }
    let series =
        r#"ollama_guard_detections_total{action="would_block",rule="slow_show",severity="low"}"#;
    assert_eq!(metric_eventually(&s.admin, series, 1.0).await, 1.0);
    // The ticker publishes the engine's size: one key (127.0.0.3, /api/tags).
    assert_eq!(
        metric_eventually(&s.admin, "ollama_guard_tracked_keys", 1.0).await,
        1.0
    );
    let log = s.detection_log();
    s.server.shutdown().await;
    assert_detection_log_valid(&log);
}
