//! The Ollama simulator through its public API only, over raw sockets: keep-alive,
//! `Expect: 100-continue`, and shutdown.

// Test helpers may unwrap: a failure here is a failed test.
#![allow(clippy::unwrap_used)]

use ollama_sim::{spawn, SimConfig, SimHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start() -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn(listener, SimConfig::default()).await
}

/// Reads from `stream` until `needle` has been seen; returns everything read.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = stream.read(&mut buf).await.unwrap();
        assert_ne!(
            n,
            0,
            "connection closed before {needle:?}; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(seen).unwrap()
}

#[tokio::test]
async fn url_names_the_loopback_port() {
    let sim = start().await;
    assert_eq!(sim.url(), format!("http://127.0.0.1:{}", sim.addr.port()));
}

#[tokio::test]
async fn one_connection_serves_several_requests() {
    let sim = start().await;
    let mut stream = TcpStream::connect(sim.addr).await.unwrap();
    for _ in 0..3 {
        stream
            .write_all(b"GET /api/version HTTP/1.1\r\nHost: localhost:11434\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until(&mut stream, "{\"version\":\"0.12.3\"}").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("content-length: 20\r\n"), "{answer}");
    }
    assert_eq!(sim.log.requests().len(), 3);
}

#[tokio::test]
async fn expect_continue_gets_100_before_the_body_is_sent() {
    let sim = start().await;
    let digest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    let mut stream = TcpStream::connect(sim.addr).await.unwrap();
    let head = format!(
        "POST /api/blobs/{digest} HTTP/1.1\r\nHost: localhost\r\n\
         Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let interim = read_until(&mut stream, "\r\n\r\n").await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.unwrap();
    let answer = read_until(&mut stream, "\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 201 Created\r\n"), "{answer}");
}

#[tokio::test]
async fn shutdown_closes_open_connections_and_stops_accepting() {
    let sim = start().await;
    let addr = sim.addr;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut idle, "Ollama is running").await;
    sim.shutdown().await;
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).await.unwrap(), 0);
    assert!(TcpStream::connect(addr).await.is_err());
}
