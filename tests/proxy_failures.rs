//! The proxy when things go wrong, over real sockets: clients that disconnect or never finish
//! their head, an upstream that dies or is down, and the graceful drain.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use ollama_guard::config::ServeArgs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_client_that_never_finishes_its_head_is_disconnected() {
    let s = stack_with(ServeArgs::default(), "[timeouts]\nheader_read = \"300ms\"").await;
    let mut c = TcpStream::connect(s.server.proxy_addr).await.unwrap();
    c.write_all(b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf))
        .await
        .expect("a slowloris connection must be closed");
    assert!(read.is_ok());
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

/// Reads until the proxy closes the connection; what it sent and when it closed.
async fn until_closed(c: &mut TcpStream) -> (String, std::time::Instant) {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf))
        .await
        .expect("the connection must be closed")
        .unwrap();
    (
        String::from_utf8_lossy(&buf).into_owned(),
        std::time::Instant::now(),
    )
}

/// The deadline holds from both sides: a head may take the whole `header_read`, and the
/// connection is closed within one sweep period (half of it here) after.
#[tokio::test]
async fn a_slow_head_has_header_read_and_is_closed_soon_after() {
    let s = stack_with(ServeArgs::default(), "[timeouts]\nheader_read = \"400ms\"").await;
    // Taken before connecting: the proxy's deadline runs from when it accepted, which can be
    // a fraction of a millisecond before `connect` returns here.
    let start = std::time::Instant::now();
    let mut c = TcpStream::connect(s.server.proxy_addr).await.unwrap();
    c.write_all(b"GET /api/tags HTTP/1.1\r\n").await.unwrap();
    let mut byte = [0u8; 1];
    // 200 ms: half the deadline is left as margin for a test thread that runs late.
    let early = tokio::time::timeout(Duration::from_millis(200), c.read(&mut byte)).await;
    assert!(early.is_err(), "closed before header_read: {early:?}");
    let (text, closed) = until_closed(&mut c).await;
    let took = closed - start;
    assert!(took >= Duration::from_millis(400), "{took:?}");
    // 400 ms, plus one 200 ms sweep period, plus a generous margin for a loaded machine.
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

/// A slowloris cannot stretch the deadline by trickling bytes: it runs from the start of
/// the head, not from the last byte (the whole head would take over 2.5 s).
#[tokio::test]
async fn trickling_a_head_does_not_extend_its_deadline() {
    let s = stack_with(ServeArgs::default(), "[timeouts]\nheader_read = \"400ms\"").await;
    // Before connecting, as above.
    let start = std::time::Instant::now();
    let mut c = TcpStream::connect(s.server.proxy_addr).await.unwrap();
    let head = b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for b in head {
        if c.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let (_, closed) = until_closed(&mut c).await;
    let took = closed - start;
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

/// Many slow heads at once, spread over both workers, are all closed on the same deadline,
/// and a client that sends its head in time is served meanwhile and after.
#[tokio::test]
async fn two_hundred_slow_heads_are_all_closed_and_a_prompt_client_is_served() {
    let s = stack_with(ServeArgs::default(), "[timeouts]\nheader_read = \"400ms\"").await;
    let start = std::time::Instant::now();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut c = TcpStream::connect(s.server.proxy_addr).await.unwrap();
        c.write_all(b"POST /api/pull HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        slow.push(c);
    }
    let r = get(&format!("http://{}/api/version", s.server.proxy_addr)).await;
    assert_eq!(r.status, StatusCode::OK);
    let closed = futures_util::future::join_all(slow.iter_mut().map(until_closed)).await;
    for (_, at) in &closed {
        let took = *at - start;
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    let r = get(&format!("http://{}/api/version", s.server.proxy_addr)).await;
    assert_eq!(r.status, StatusCode::OK);
}

/// The innocent side: a keep-alive client whose requests come further apart in total than
/// `header_read` is served on one connection; each head has its own deadline.
#[tokio::test]
async fn a_keep_alive_client_is_served_past_header_read_in_total() {
    let s = stack_with(ServeArgs::default(), "[timeouts]\nheader_read = \"400ms\"").await;
    let mut c = TcpStream::connect(s.server.proxy_addr).await.unwrap();
    let start = std::time::Instant::now();
    for i in 0..6 {
        c.write_all(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let reply = read_until(&mut c, "}").await;
        assert!(reply.starts_with("HTTP/1.1 200"), "request {i}: {reply}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn client_disconnect_mid_stream_drops_the_upstream_request() {
    let s = stack().await;
    let mut c = TcpStream::connect(s.server.proxy_addr).await.unwrap();
    let body = r#"{"model":"llama3.2","prompt":"hi"}"#;
    let req = format!(
        "POST /api/generate HTTP/1.1\r\nHost: localhost\r\nx-sim-id: gone\r\nx-sim-chunks: 100\r\nx-sim-chunk-delay-ms: 100\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    read_until(&mut c, "\"response\"").await;
    drop(c);
    let r = tokio::time::timeout(Duration::from_secs(10), s.sim.log.wait_done("gone"))
        .await
        .expect("upstream never saw the disconnect");
    assert!(r.client_disconnected);
    assert!(!r.finished);
    let series = r#"ollama_guard_requests_total{method="POST",outcome="client_cancelled",route="/api/generate",status_class="2xx"}"#;
    assert_eq!(metric_eventually(&s.admin, series, 1.0).await, 1.0);
}

#[tokio::test]
async fn client_disconnect_before_the_head_is_recorded_as_499() {
    let s = stack().await;
    let mut c = TcpStream::connect(s.server.proxy_addr).await.unwrap();
    c.write_all(
        b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nx-sim-id: early\r\nx-sim-delay-ms: 5000\r\n\r\n",
    )
    .await
    .unwrap();
    // Wait until the simulator has the request, then hang up.
    for _ in 0..200 {
        if s.sim
            .log
            .requests()
            .iter()
            .any(|r| r.id.as_deref() == Some("early"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(c);
    let r = tokio::time::timeout(Duration::from_secs(10), s.sim.log.wait_done("early"))
        .await
        .expect("upstream never saw the disconnect");
    assert!(r.client_disconnected);
    // The record and the upstream's close happen in the same drop; the metric is read after.
    let series = r#"ollama_guard_requests_total{method="GET",outcome="client_cancelled",route="/api/tags",status_class="4xx"}"#;
    assert_eq!(metric_eventually(&s.admin, series, 1.0).await, 1.0);
}

#[tokio::test]
async fn upstream_death_mid_stream_aborts_the_client_stream() {
    let s = stack().await;
    let req = request(
        Method::POST,
        &format!("{}/api/chat", s.proxy),
        &[("x-sim-fail", "abort"), ("x-sim-chunks", "5")],
        r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await;
    assert!(
        collected.is_err(),
        "a clean end would hide the upstream failure"
    );
    let series = r#"ollama_guard_requests_total{method="POST",outcome="upstream_error",route="/api/chat",status_class="2xx"}"#;
    assert_eq!(metric_eventually(&s.admin, series, 1.0).await, 1.0);
    let resets = r#"ollama_guard_upstream_errors_total{kind="reset"}"#;
    assert_eq!(metric(&s.admin, resets).await, 1.0);
}

#[tokio::test]
async fn unreachable_upstream_gives_502_json_and_counts_a_connect_error() {
    let dead = loopback().await;
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dead_url, &dir, ServeArgs::default(), "");
    let server = ollama_guard::serve::Server::start(config, loopback().await, loopback().await)
        .await
        .unwrap();
    let r = get(&format!("http://{}/api/tags", server.proxy_addr)).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.content_type(), "application/json; charset=utf-8");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.starts_with("ollama-guard: upstream unavailable: "),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    let admin = format!("http://{}", server.admin_addr);
    assert_eq!(
        metric(
            &admin,
            r#"ollama_guard_upstream_errors_total{kind="connect"}"#
        )
        .await,
        1.0
    );
    let series = r#"ollama_guard_requests_total{method="GET",outcome="upstream_error",route="/api/tags",status_class="5xx"}"#;
    assert_eq!(metric(&admin, series).await, 1.0);
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let s = stack().await;
    let url = format!("{}/api/tags", s.proxy);
    let slow = tokio::spawn(async move {
        send(
            Method::GET,
            &url,
            &[("x-sim-id", "slow"), ("x-sim-delay-ms", "400")],
            Bytes::new(),
        )
        .await
    });
    for _ in 0..200 {
        if s.sim
            .log
            .requests()
            .iter()
            .any(|r| r.id.as_deref() == Some("slow"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let addr = s.server.proxy_addr;
    s.server.shutdown().await;
    let r = slow.await.unwrap();
    assert_eq!(
        r.status,
        StatusCode::OK,
        "in-flight request completed during drain"
    );
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}
