//! Streamed routes: frames, order, schedule controls, failure modes and disconnects.

use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::{collect, post, quick, req, send, start};

fn lines(frames: &[bytes::Bytes]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| {
            let text = std::str::from_utf8(f).unwrap();
            assert_eq!(
                text.matches('\n').count(),
                1,
                "one line per frame: {text:?}"
            );
            assert!(text.ends_with('\n'));
            serde_json::from_str(text).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn generate_streams_ndjson_lines_as_separate_frames_in_order() {
    let sim = start(quick()).await;
    let body = r#"{"model":"llama3.2","prompt":"why is the sky blue"}"#;
    let got = post(
        &sim,
        req("POST", "/api/generate").header("x-sim-id", "g"),
        body,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(got.header("transfer-encoding"), Some("chunked"));
    let lines = lines(&got.frames);
    let texts: Vec<&Value> = lines.iter().map(|l| &l["response"]).collect();
    assert_eq!(
        texts,
        [&json!("The"), &json!(" sky"), &json!(" looks"), &json!("")]
    );
    assert!(lines[..3].iter().all(|l| l["done"] == false));
    let last = &lines[3];
    assert_eq!(
        (last["done"].clone(), last["done_reason"].clone()),
        (json!(true), json!("stop"))
    );
    assert_eq!(last["eval_count"], 3);
    assert!(last["total_duration"].as_u64().unwrap() > 0);
    let logged = sim.log.wait_done("g").await;
    assert!(logged.finished && !logged.client_disconnected);
}

#[tokio::test]
async fn chunk_count_header_overrides_the_schedule() {
    let sim = start(quick()).await;
    let body = r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}"#;
    let request = req("POST", "/api/chat")
        .header("x-sim-chunks", "7")
        .header("x-sim-chunk-delay-ms", "0");
    let got = post(&sim, request, body).await;
    let lines = lines(&got.frames);
    assert_eq!(lines.len(), 8);
    assert_eq!(
        lines[0]["message"],
        json!({"role":"assistant","content":"The"})
    );
    assert_eq!(lines[7]["message"]["content"], "");
    assert_eq!(lines[7]["eval_count"], 7);
}

#[tokio::test]
async fn pull_streams_progress_ending_in_success() {
    let sim = start(quick()).await;
    let got = post(&sim, req("POST", "/api/pull"), r#"{"model":"llama3.2"}"#).await;
    let statuses: Vec<String> = lines(&got.frames)
        .iter()
        .map(|l| l["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        statuses,
        [
            "pulling manifest",
            "pulling dde5aa3fc5ff",
            "pulling dde5aa3fc5ff",
            "pulling dde5aa3fc5ff",
            "verifying sha256 digest",
            "writing manifest",
            "success"
        ]
    );
}

#[tokio::test]
async fn sse_chat_stream_sends_chunks_then_finish_then_done() {
    let sim = start(quick()).await;
    let body = r#"{"model":"llama3.2","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let got = post(&sim, req("POST", "/v1/chat/completions"), body).await;
    assert_eq!(got.header("content-type"), Some("text/event-stream"));
    let events: Vec<&str> = got
        .frames
        .iter()
        .map(|f| std::str::from_utf8(f).unwrap())
        .collect();
    assert_eq!(events.len(), 3 + 1 + 1);
    assert!(events
        .iter()
        .all(|e| e.starts_with("data: ") && e.ends_with("\n\n")));
    assert_eq!(*events.last().unwrap(), "data: [DONE]\n\n");
    let chunk = |i: usize| -> Value { serde_json::from_str(&events[i][6..]).unwrap() };
    assert_eq!(chunk(0)["object"], "chat.completion.chunk");
    assert_eq!(
        chunk(0)["choices"][0]["delta"],
        json!({"role":"assistant","content":"The"})
    );
    assert_eq!(chunk(1)["choices"][0]["delta"], json!({"content":" sky"}));
    assert_eq!(chunk(3)["choices"][0]["delta"], json!({}));
    assert_eq!(chunk(3)["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn error_line_mode_ends_the_stream_cleanly_after_two_frames() {
    let sim = start(quick()).await;
    let request = req("POST", "/api/generate")
        .header("x-sim-fail", "error-line")
        .header("x-sim-id", "e");
    let got = post(&sim, request, r#"{"model":"llama3.2","prompt":"hi"}"#).await;
    assert_eq!(got.error, None);
    let lines = lines(&got.frames);
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[2],
        json!({"error":"an error was encountered while running the model: unexpected EOF"})
    );
    assert!(sim.log.wait_done("e").await.finished);
}

#[tokio::test]
async fn abort_mode_cuts_the_stream_without_terminator() {
    let sim = start(quick()).await;
    for delay in ["2", "0"] {
        let request = req("POST", "/api/chat")
            .header("x-sim-fail", "abort")
            .header("x-sim-chunk-delay-ms", delay)
            .header("x-sim-id", delay);
        let body = r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}"#;
        let got = post(&sim, request, body).await;
        assert_eq!(got.frames.len(), 2, "delay {delay}");
        assert!(got.error.is_some(), "the client must see a broken body");
        let logged = sim.log.wait_done(delay).await;
        assert_eq!(
            (logged.finished, logged.client_disconnected),
            (false, false)
        );
    }
}

#[tokio::test]
async fn client_dropping_mid_stream_is_recorded_as_disconnect() {
    let sim = start(quick()).await;
    let request = req("POST", "/api/generate")
        .header("x-sim-id", "d")
        .header("x-sim-chunks", "10000")
        .header("x-sim-chunk-delay-ms", "1");
    let body = http_body_util::Full::new(bytes::Bytes::from_static(
        br#"{"model":"llama3.2","prompt":"hi"}"#,
    ));
    let response = send(&sim, request.body(body).unwrap()).await;
    let mut body = response.into_body();
    for _ in 0..2 {
        body.frame().await.unwrap().unwrap();
    }
    drop(body);
    let logged = tokio::time::timeout(Duration::from_secs(5), sim.log.wait_done("d"))
        .await
        .expect("the simulator must notice the disconnect");
    assert_eq!((logged.finished, logged.client_disconnected), (false, true));
}

#[tokio::test]
async fn client_leaving_during_head_delay_is_recorded_as_disconnect() {
    let sim = start(quick()).await;
    let request = req("GET", "/api/tags")
        .header("x-sim-id", "w")
        .header("x-sim-delay-ms", "60000");
    let pending = tokio::spawn({
        let addr = sim.addr;
        async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            sender
                .send_request(
                    request
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                        .unwrap(),
                )
                .await
        }
    });
    while sim.log.requests().is_empty() {
        tokio::task::yield_now().await;
    }
    pending.abort();
    let logged = tokio::time::timeout(Duration::from_secs(5), sim.log.wait_done("w"))
        .await
        .expect("the simulator must notice the disconnect");
    assert!(logged.client_disconnected);
}

#[tokio::test(start_paused = true)]
async fn delay_header_holds_the_response_head_even_in_fast_mode() {
    let cfg = crate::SimConfig {
        fast: true,
        ..quick()
    };
    let sim = start(cfg).await;
    let started = tokio::time::Instant::now();
    let got = collect(
        send(
            &sim,
            req("GET", "/")
                .header("x-sim-delay-ms", "300")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await,
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}
