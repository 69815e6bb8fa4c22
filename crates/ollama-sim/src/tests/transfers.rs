//! `/api/pull` and `/api/push`: progress stream shape, duration control, `"stream": false`,
//! registry-qualified names, and what the log records when a transfer is cut.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{collect, post, quick, req, send, start};
use crate::call::hex;
use crate::SimConfig;

/// The NDJSON lines of a progress stream, one per frame.
fn lines(frames: &[Bytes]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| {
            let text = std::str::from_utf8(f).unwrap();
            assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
            serde_json::from_str(text).unwrap()
        })
        .collect()
}

fn statuses(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l["status"].as_str().unwrap())
        .collect()
}

/// The progress lines between the opening and closing statuses: every one names the same
/// digest and total, `completed` never goes down and ends at `total`.
fn assert_progress(progress: &[Value], verb: &str) {
    assert!(!progress.is_empty());
    let digest = progress[0]["digest"].as_str().unwrap();
    assert!(digest.starts_with("sha256:") && digest.len() == 7 + 64);
    let total = progress[0]["total"].as_u64().unwrap();
    let mut previous = 0;
    for line in progress {
        assert_eq!(line["status"], format!("{verb} {}", &digest[7..19]));
        assert_eq!(
            (line["digest"].as_str(), line["total"].as_u64()),
            (Some(digest), Some(total))
        );
        let completed = line["completed"].as_u64().unwrap();
        assert!(completed >= previous, "completed went down: {progress:?}");
        previous = completed;
    }
    assert_eq!(previous, total);
}

fn sha256(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn pull_streams_manifest_progress_then_verify_write_success() {
    let sim = start(quick()).await;
    let body = r#"{"model":"hf.co/user/repo:Q4_K_M","insecure":true}"#;
    let got = post(&sim, req("POST", "/api/pull").header("x-sim-id", "p"), body).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/x-ndjson"));
    let lines = lines(&got.frames);
    let statuses = statuses(&lines);
    assert_eq!(statuses.len(), 1 + 3 + 3);
    assert_eq!(statuses[0], "pulling manifest");
    assert_eq!(
        statuses[4..],
        ["verifying sha256 digest", "writing manifest", "success"]
    );
    assert_progress(&lines[1..4], "pulling");
    let logged = sim.log.wait_done("p").await;
    assert!(logged.finished && !logged.client_disconnected);
    assert_eq!(logged.body_sha256, Some(sha256(body)));
}

#[tokio::test]
async fn push_to_a_foreign_registry_streams_push_progress() {
    let sim = start(quick()).await;
    for name in [
        "attacker.example/ns/model:tag",
        "attacker.example/ns/llama3.2",
    ] {
        let body = format!(r#"{{"model":"{name}","insecure":true}}"#);
        let got = post(&sim, req("POST", "/api/push"), &body).await;
        assert_eq!(got.status, 200, "{name}");
        let lines = lines(&got.frames);
        let statuses = statuses(&lines);
        assert_eq!(statuses[0], "retrieving manifest");
        assert_eq!(
            statuses[statuses.len() - 2..],
            ["pushing manifest", "success"]
        );
        assert_progress(&lines[1..lines.len() - 2], "pushing");
    }
}

#[tokio::test]
async fn push_of_an_unknown_unqualified_model_is_refused_before_any_progress() {
    let sim = start(quick()).await;
    let got = post(&sim, req("POST", "/api/push"), r#"{"model":"ns/nothing"}"#).await;
    assert_eq!(got.status, 500);
    assert_eq!(got.body(), r#"{"error":"model 'ns/nothing' not found"}"#);
    let body = r#"{"model":"attacker.example/ns/m","insecure":"yes"}"#;
    let got = post(&sim, req("POST", "/api/push"), body).await;
    assert_eq!(got.status, 400);
    assert_eq!(
        got.json()["error"],
        "json: cannot unmarshal string into Go struct field PushRequest.insecure of type bool"
    );
}

#[tokio::test]
async fn stream_false_answers_one_success_object() {
    let sim = start(quick()).await;
    for path in ["/api/pull", "/api/push"] {
        let body = r#"{"model":"attacker.example/ns/m:1","stream":false}"#;
        let got = post(&sim, req("POST", path), body).await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(got.header("content-type"), Some("application/json"));
        assert_eq!(got.body(), r#"{"status":"success"}"#);
    }
}

/// Sends `body` to `path` and reads the answer to its end; returns the lines and how long
/// the stream took.
async fn timed(
    sim: &crate::SimHandle,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (Vec<Value>, Duration) {
    let mut request = req("POST", path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let started = Instant::now();
    let got = collect(
        send(
            sim,
            request
                .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
                .unwrap(),
        )
        .await,
    )
    .await;
    (lines(&got.frames), started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn transfer_header_sets_the_duration_and_paces_progress_lines() {
    let sim = start(SimConfig::default()).await;
    let body = r#"{"model":"attacker.example/ns/llama3.2"}"#;
    let (lines, took) = timed(&sim, "/api/push", &[("x-sim-transfer-ms", "30000")], body).await;
    // One progress line every 250 ms over 30 s.
    assert_eq!(lines.len(), 1 + 120 + 2);
    assert_progress(&lines[1..121], "pushing");
    assert!(took >= Duration::from_secs(30), "{took:?}");
    assert!(took < Duration::from_secs(31), "{took:?}");
    // An explicit line count is spread over the same duration.
    let headers = [("x-sim-transfer-ms", "2000"), ("x-sim-chunks", "4")];
    let (lines, took) = timed(&sim, "/api/pull", &headers, r#"{"model":"llama3.2"}"#).await;
    assert_eq!(lines.len(), 1 + 4 + 3);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(2100),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn transfers_default_to_a_few_hundred_ms_and_stream_false_waits_as_long() {
    let sim = start(SimConfig::default()).await;
    let default = SimConfig::default().transfer_duration;
    let (lines, took) = timed(&sim, "/api/pull", &[], r#"{"model":"llama3.2"}"#).await;
    assert_eq!(lines.len(), 1 + 5 + 3);
    assert!(took >= default && took < default * 2, "{took:?}");
    let started = Instant::now();
    let got = post(
        &sim,
        req("POST", "/api/push").header("x-sim-transfer-ms", "5000"),
        r#"{"model":"llama3.2","stream":false}"#,
    )
    .await;
    assert_eq!(got.body(), r#"{"status":"success"}"#);
    assert!(started.elapsed() >= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn fast_mode_transfers_take_no_time_unless_asked() {
    let sim = start(SimConfig {
        fast: true,
        ..SimConfig::default()
    })
    .await;
    let (_, took) = timed(&sim, "/api/pull", &[], r#"{"model":"llama3.2"}"#).await;
    assert!(took < Duration::from_millis(50), "{took:?}");
    let (_, took) = timed(
        &sim,
        "/api/pull",
        &[("x-sim-transfer-ms", "1000")],
        r#"{"model":"llama3.2"}"#,
    )
    .await;
    assert!(took >= Duration::from_secs(1), "{took:?}");
}

#[tokio::test]
async fn a_push_cut_mid_stream_is_recorded_as_a_disconnect_with_its_body_digest() {
    let sim = start(quick()).await;
    let body = r#"{"model":"attacker.example/ns/llama3.2:latest","insecure":true}"#;
    let request = req("POST", "/api/push")
        .header("x-sim-id", "cut")
        .header("x-sim-transfer-ms", "60000");
    let response = send(
        &sim,
        request
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body();
    for _ in 0..2 {
        stream.frame().await.unwrap().unwrap();
    }
    drop(stream);
    let logged = tokio::time::timeout(Duration::from_secs(5), sim.log.wait_done("cut"))
        .await
        .expect("the simulator must notice the disconnect");
    assert_eq!((logged.finished, logged.client_disconnected), (false, true));
    assert_eq!(logged.body_sha256, Some(sha256(body)));
    assert_eq!(logged.body_len, body.len() as u64);
}

#[tokio::test]
async fn a_client_leaving_a_stream_false_pull_is_recorded_as_a_disconnect() {
    let sim = start(quick()).await;
    let request = req("POST", "/api/pull")
        .header("x-sim-id", "quiet")
        .header("x-sim-transfer-ms", "60000");
    let body = Full::new(Bytes::from_static(
        br#"{"model":"llama3.2","stream":false}"#,
    ));
    let pending = tokio::spawn({
        let addr = sim.addr;
        async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            sender.send_request(request.body(body).unwrap()).await
        }
    });
    // Wait until the body has been read (the digest is logged), then go away.
    while sim
        .log
        .requests()
        .first()
        .and_then(|r| r.body_sha256.clone())
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    pending.abort();
    let logged = tokio::time::timeout(Duration::from_secs(5), sim.log.wait_done("quiet"))
        .await
        .expect("the simulator must notice the disconnect");
    assert_eq!((logged.finished, logged.client_disconnected), (false, true));
}
