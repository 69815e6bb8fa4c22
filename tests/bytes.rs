//! `bytes_in` / `bytes_out` of the JSON access log against the body bytes that really crossed
//! the client's socket: requests written and responses read raw, so the test counts the
//! wire itself (chunk framing decoded by hand), not what a client library reports.
#![allow(clippy::unwrap_used)]

mod common;

use common::{eventually, stack_with};
use ollama_guard::config::ServeArgs;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `head` then each of `chunks` as raw bytes (a test can pace them), reads the whole
/// response (the request says `Connection: close`), returns `(status line, body payload)`.
async fn exchange(addr: std::net::SocketAddr, head: &str, chunks: &[&[u8]]) -> (String, Vec<u8>) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    for chunk in chunks {
        c.write_all(chunk).await.unwrap();
        c.flush().await.unwrap();
    }
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), c.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let body = &raw[end + 4..];
    let status = head.lines().next().unwrap().to_owned();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let payload = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    (status, payload)
}

/// The payload of a chunked body (sizes in hex, no extensions or trailers expected).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&body[..eol]).unwrap(), 16).unwrap();
        body = &body[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// One chunk of a chunked request body, framed.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut v = format!("{:x}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn byte_counts_equal_the_body_bytes_on_the_wire() {
    let args = ServeArgs {
        access_log_format: Some("json".into()),
        ..ServeArgs::default()
    };
    let s = stack_with(args, "").await;
    let addr = s.server.proxy_addr;
    let log = s.access_log();
    let mut want: Vec<(&str, usize, usize)> = Vec::new();

    // A streamed NDJSON generation (chunked response), Content-Length request.
    let gen = br#"{"model":"llama3.2","prompt":"tell me a story"}"#;
    let head = format!(
        "POST /api/generate HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        gen.len()
    );
    let (status, out) = exchange(addr, &head, &[gen]).await;
    assert!(status.contains(" 200 "), "{status}");
    assert!(out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() > 1);
    want.push(("/api/generate", gen.len(), out.len()));

    // A chunked upload (three chunks), answered with a Content-Length body.
    let parts: [&[u8]; 3] = [
        br#"{"model":"llama3.2","#,
        br#""messages":[{"role":"user","content":"hi"}],"#,
        br#""stream":false}"#,
    ];
    let head = "POST /api/chat HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let framed: Vec<Vec<u8>> = parts.iter().map(|p| chunk(p)).collect();
    let mut all: Vec<&[u8]> = framed.iter().map(Vec::as_slice).collect();
    all.push(b"0\r\n\r\n");
    let (status, out) = exchange(addr, head, &all).await;
    assert!(status.contains(" 200 "), "{status}");
    let sent: usize = parts.iter().map(|p| p.len()).sum();
    want.push(("/api/chat", sent, out.len()));

    // A plain Content-Length response.
    let head = "GET /api/tags HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let (status, out) = exchange(addr, head, &[]).await;
    assert!(status.contains(" 200 ") && !out.is_empty(), "{status}");
    want.push(("/api/tags", 0, out.len()));

    // HEAD: a Content-Length header, no body bytes.
    let blob = format!("/api/blobs/sha256:{}", "0".repeat(64));
    let head = format!("HEAD {blob} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let (_, out) = exchange(addr, &head, &[]).await;
    assert!(out.is_empty());
    want.push((&blob, 0, 0));

    eventually(|| lines(&log).len() == want.len()).await;
    let got: Vec<(String, u64, u64)> = lines(&log)
        .iter()
        .map(|v| {
            (
                v["uri"].as_str().unwrap().to_owned(),
                v["bytes_in"].as_u64().unwrap(),
                v["bytes_out"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64, u64)> = want
        .iter()
        .map(|(u, i, o)| ((*u).to_owned(), *i as u64, *o as u64))
        .collect();
    assert_eq!(got, want);
    s.server.shutdown().await;
}
