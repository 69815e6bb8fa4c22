//! In-flight detection over real sockets: a threshold-1 latency rule reports a streamed
//! request the moment it passes `min_latency`, while the stream is still open, and its
//! completion adds no second detection — with a tumbling and with a sliding window.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::Method;
use http_body_util::BodyExt;
use ollama_guard::config::ServeArgs;
use serde_json::Value;
use std::time::Duration;

/// One slow generation flags its source, in a day-long tumbling window.
const RULE: &str = r#"
[[rule]]
name = "slow_generate"
paths = ["/api/generate"]
min_latency = "1s"
window = "24h"
threshold = 1
"#;

/// The tumbling window of `RULE`: epoch-aligned, so it ends at midnight UTC. A stream running
/// across that end is flagged in flight in one window and counted on completion in the next,
/// which flags the key again: a second `detection`.
const DAY: Duration = Duration::from_secs(86_400);

/// The same rule over a sliding window.
const SLIDING_RULE: &str = r#"
[[rule]]
name = "slow_generate"
paths = ["/api/generate"]
min_latency = "1s"
window = "24h"
window_kind = "sliding"
threshold = 1
"#;

fn detections(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event"] == "detection" && e["rule"] == "slow_generate")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_is_detected_in_flight_before_it_ends_and_only_once() {
    slow_stream_detected_once(RULE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_is_detected_in_flight_once_with_a_sliding_window() {
    slow_stream_detected_once(SLIDING_RULE).await;
}

/// One slow stream under `rule`: the in-flight detection is written before the stream ends,
/// the completion adds none, and the shutdown summary counts the completed request.
async fn slow_stream_detected_once(rule: &str) {
    let s = stack_with(ServeArgs::default(), rule).await;
    // The stream must end in the window it was flagged in (needed by `RULE`, harmless for
    // `SLIDING_RULE`, whose window moves with the request).
    clear_of_window_end(DAY, Duration::from_secs(30)).await;
    // 15 chunks 200 ms apart: about 3 s of streaming.
    let req = request(
        Method::POST,
        &format!("{}/api/generate", s.proxy),
        &[
            ("x-sim-id", "slow-1"),
            ("x-sim-chunks", "15"),
            ("x-sim-chunk-delay-ms", "200"),
        ],
        r#"{"model":"llama3.2","prompt":"hi"}"#,
    );
    let resp = client().request(req).await.unwrap();
    let mut body = resp.into_body();
    // Read the stream frame by frame until the in-flight detection is in the log.
    let mut frames = 0;
    let mut ended = false;
    loop {
        if !detections(&events(&s.detection_log())).is_empty() {
            break;
        }
        match body.frame().await {
            Some(f) => {
                f.unwrap();
                frames += 1;
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    assert!(!ended, "the stream ended before the detection was written");
    let log = events(&s.detection_log());
    let found = detections(&log);
    assert_eq!(found.len(), 1, "{log:#?}");
    let d = found[0];
    assert_eq!(d["in_flight"], true);
    assert_eq!(
        (d["src"].as_str(), d["uri_path"].as_str()),
        (Some("127.0.0.1"), Some("/api/generate"))
    );
    assert_eq!(
        (d["count"].as_u64(), d["action"].as_str()),
        (Some(1), Some("would_block"))
    );
    // The upstream is still generating: the detection came before the end.
    let sim = s.sim.log.requests();
    let r = sim
        .iter()
        .find(|r| r.id.as_deref() == Some("slow-1"))
        .unwrap();
    assert!(!r.finished, "detected while the request runs");
    // Drain the stream; shutting down closes the window after the completion was counted.
    while let Some(f) = body.frame().await {
        f.unwrap();
        frames += 1;
    }
    assert!(frames > 1);
    let dir = s.detection_log();
    s.server.shutdown().await;
    let log = assert_detection_log_valid(&dir);
    let found = detections(&log);
    assert_eq!(found.len(), 1, "exactly one detection: {log:#?}");
    let summaries: Vec<&Value> = log
        .iter()
        .filter(|e| e["event"] == "window_summary" && e["rule"] == "slow_generate")
        .collect();
    assert_eq!(summaries.len(), 1, "{log:#?}");
    assert_eq!(summaries[0]["count"], 1, "the completed request is counted");
    assert!(summaries[0].get("in_flight").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_mode_bans_in_flight_and_cuts_the_running_stream() {
    let args = ServeArgs {
        mode: Some("block".into()),
        ..ServeArgs::default()
    };
    let s = stack_with(args, RULE).await;
    // The cut request is counted when it ends: in the window it was flagged in, or it flags
    // the key again in the next one.
    clear_of_window_end(DAY, Duration::from_secs(30)).await;
    let c = client_from("127.0.0.77");
    // 100 chunks 100 ms apart: 10 s if nothing cuts it.
    let req = request(
        Method::POST,
        &format!("{}/api/generate", s.proxy),
        &[
            ("x-sim-id", "slow-ban"),
            ("x-sim-chunks", "100"),
            ("x-sim-chunk-delay-ms", "100"),
        ],
        r#"{"model":"llama3.2","prompt":"hi"}"#,
    );
    let resp = c.request(req).await.unwrap();
    let mut body = resp.into_body();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => break Some(e.to_string()),
            Ok(None) => break None,
            Err(_) => panic!("the stream was neither cut nor finished"),
        }
    };
    assert!(ended.is_some(), "the stream must be cut, not end cleanly");
    let log = wait_events(&s.detection_log(), |ev| {
        ev.iter().any(|e| e["event"] == "aborted")
    })
    .await;
    let kinds: Vec<&str> = log.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds, ["detection", "ban", "aborted"], "{log:#?}");
    assert_eq!(log[0]["in_flight"], true);
    assert_eq!(log[0]["action"], "banned");
    assert_eq!(log[1]["src"], "127.0.0.77");
    let sim = s.sim.log.requests();
    let r = sim
        .iter()
        .find(|r| r.id.as_deref() == Some("slow-ban"))
        .unwrap();
    assert!(!r.finished, "cut before the upstream finished");
    assert_detection_log_valid(&s.detection_log());
}
