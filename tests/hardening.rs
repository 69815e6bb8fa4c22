//! Hardening over real sockets: client attribution through a real nginx, the Host guard,
//! faults filed on the side that caused them, and connection limits.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::nginx::Nginx;
use common::*;
use http::Method;
use ollama_guard::config::ServeArgs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connects from `source` (a loopback address) to `to`.
async fn connect_from(source: &str, to: std::net::SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{source}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

/// Sends raw bytes from `source` and reads the whole answer (the request says close).
async fn raw_from(source: &str, to: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut c = connect_from(source, to).await;
    c.write_all(bytes).await.unwrap();
    until_closed(&mut c).await
}

/// Everything the guard sends on `c` until it closes the connection (which it must within
/// 10 s).
async fn until_closed(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn addr(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

fn behind_nginx() -> ServeArgs {
    ServeArgs {
        trusted_proxy: vec!["127.0.0.1/32".into()],
        mode: Some("block".into()),
        ..ServeArgs::default()
    }
}

#[tokio::test]
async fn non_ascii_xff_sent_through_real_nginx_still_attributes_the_real_client() {
    let s = stack_with(behind_nginx(), "").await;
    let nginx = Nginx::start(s.proxy.trim_start_matches("http://")).await;
    let req = b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: caf\xe9\r\nx-sim-id: n1\r\nConnection: close\r\n\r\n";
    let answer = raw_from("127.0.0.66", nginx.addr, req).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // nginx appended the real client to the client's text: the guard found it.
    assert_eq!(
        sim_header(&s, "n1", "x-forwarded-for").as_deref(),
        Some("127.0.0.66")
    );
}

#[tokio::test]
async fn a_ban_cannot_be_dodged_with_one_odd_byte_in_xff_behind_nginx() {
    let s = stack_with(behind_nginx(), "").await;
    let nginx = Nginx::start(s.proxy.trim_start_matches("http://")).await;
    let added = admin(
        &s,
        Method::POST,
        "/api/bans",
        r#"{"src":"127.0.0.66","duration":"1h","reason":"test"}"#,
        None,
    )
    .await;
    assert_eq!(added.status, 201);
    for (i, xff) in [
        &b"caf\xe9"[..],
        b"\xff\xfe, 10.0.0.1",
        b"unknown",
        b"1.2.3.4, \x80",
    ]
    .iter()
    .enumerate()
    {
        let mut req = format!("GET /api/tags HTTP/1.1\r\nHost: localhost\r\nx-sim-id: b{i}\r\nConnection: close\r\nX-Forwarded-For: ").into_bytes();
        req.extend_from_slice(xff);
        req.extend_from_slice(b"\r\n\r\n");
        let answer = raw_from("127.0.0.66", nginx.addr, &req).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{xff:?}: {answer}");
        assert!(!sim_saw(&s, &format!("b{i}")), "banned request forwarded");
    }
    // Another client behind the same nginx is served.
    let answer = raw_from(
        "127.0.0.67",
        nginx.addr,
        b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: caf\xe9\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn rebound_host_on_a_loopback_listener_is_refused_like_ollama_and_never_forwarded() {
    let s = stack().await;
    let to = addr(&s.proxy);
    for (i, host) in [
        "rebind.attacker.example",
        "rebind.attacker.example:11434",
        "8.8.8.8",
    ]
    .iter()
    .enumerate()
    {
        let req = format!("GET /api/tags HTTP/1.1\r\nHost: {host}\r\nx-sim-id: r{i}\r\n\r\n");
        let answer = raw_from("127.0.0.1", to, req.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
        assert!(answer.contains("content-length: 0\r\n"), "{answer}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert!(!sim_saw(&s, &format!("r{i}")));
    }
    // An absolute-form target names the host Go would check.
    let answer = raw_from(
        "127.0.0.1",
        to,
        b"DELETE http://rebind.attacker.example/api/delete HTTP/1.1\r\nHost: localhost\r\nx-sim-id: abs\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(!sim_saw(&s, "abs"));
    // Two Host headers: 400, as Go's server answers.
    let answer = raw_from(
        "127.0.0.1",
        to,
        b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nHost: rebind.attacker.example\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(
        metric_eventually(
            &s.admin,
            "ollama_guard_refused_requests_total{reason=\"host\"}",
            5.0
        )
        .await,
        5.0
    );
    // Local names keep working.
    let ok = raw_from(
        "127.0.0.1",
        to,
        b"GET /api/tags HTTP/1.1\r\nHost: localhost:11434\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test]
async fn refused_hosts_are_not_fed_to_detection_so_nobody_is_framed() {
    // A rule that would ban on the first request of any kind.
    let rule = r#"
[[rule]]
name = "any"
paths = ["*"]
min_latency = "0s"
group_by = "src"
window = "1m"
threshold = 1
"#;
    let args = ServeArgs {
        mode: Some("block".into()),
        ..ServeArgs::default()
    };
    let s = stack_with(args, rule).await;
    let answer = raw_from(
        "127.0.0.70",
        addr(&s.proxy),
        b"GET /api/tags HTTP/1.1\r\nHost: rebind.attacker.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bans = admin(&s, Method::GET, "/api/bans", "", None).await;
    assert_eq!(
        bans.text(),
        "[]",
        "a refused Host must not ban the victim's address"
    );
}

#[tokio::test]
async fn allowed_hosts_refuses_every_other_name_on_any_listener() {
    let s = stack_with(
        ServeArgs::default(),
        r#"allowed_hosts = ["ollama.example.com", "*.gpu.example"]"#,
    )
    .await;
    let to = addr(&s.proxy);
    for (host, status) in [
        ("ollama.example.com", "200"),
        ("a.gpu.example:11434", "200"),
        ("localhost", "403"),
        ("gpu.example", "403"),
    ] {
        let req = format!("GET /api/tags HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = raw_from("127.0.0.1", to, req.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{host}: {answer}"
        );
    }
}

async fn upstream_resets(s: &Stack) -> f64 {
    metric(
        &s.admin,
        "ollama_guard_upstream_errors_total{kind=\"reset\"}",
    )
    .await
}

fn access_lines(s: &Stack) -> Vec<String> {
    std::fs::read_to_string(s.access_log())
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn malformed_chunked_body_is_a_400_and_never_an_upstream_error() {
    let s = stack().await;
    let answer = raw_from(
        "127.0.0.1",
        addr(&s.proxy),
        b"POST /api/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nbroken\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("malformed request body"), "{answer}");
    assert_eq!(upstream_resets(&s).await, 0.0);
    assert_eq!(
        metric(
            &s.admin,
            "ollama_guard_upstream_errors_total{kind=\"connect\"}"
        )
        .await,
        0.0
    );
    eventually(|| access_lines(&s).iter().any(|l| l.contains("| 400 |"))).await;
}

#[tokio::test]
async fn client_aborting_mid_upload_is_client_cancelled_499_not_an_upstream_error() {
    let s = stack().await;
    let mut c = connect_from("127.0.0.1", addr(&s.proxy)).await;
    c.write_all(b"POST /api/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\npartial")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(c);
    eventually(|| access_lines(&s).iter().any(|l| l.contains("| 499 |"))).await;
    assert_eq!(upstream_resets(&s).await, 0.0);
    let series = "ollama_guard_requests_total{method=\"POST\",outcome=\"client_cancelled\",route=\"/api/blobs/:digest\",status_class=\"4xx\"}";
    assert_eq!(metric_eventually(&s.admin, series, 1.0).await, 1.0);
}

#[tokio::test]
async fn stalled_upload_times_out_with_408_after_body_idle() {
    let s = stack_with(ServeArgs::default(), "[timeouts]\nbody_idle = \"300ms\"").await;
    let mut c = connect_from("127.0.0.1", addr(&s.proxy)).await;
    c.write_all(b"POST /api/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nsome")
        .await
        .unwrap();
    let answer = until_closed(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(upstream_resets(&s).await, 0.0);
}

#[tokio::test]
async fn a_slow_but_steady_upload_is_not_cut_by_body_idle() {
    let s = stack_with(ServeArgs::default(), "[timeouts]\nbody_idle = \"400ms\"").await;
    let mut c = connect_from("127.0.0.1", addr(&s.proxy)).await;
    c.write_all(b"POST /api/blobs/sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for b in b"hello" {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.write_all(&[*b]).await.unwrap();
    }
    let answer = until_closed(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

/// An upstream answering `POST /api/generate` with an NDJSON stream that never ends; sends on
/// `closed` once the guard has closed a stream's connection (a write to it failed).
async fn endless_upstream() -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = loopback().await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (closed, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut c, _) = listener.accept().await.unwrap();
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if !head.starts_with(b"POST /api/generate ") {
                    // The guard's readiness probe, say.
                    let _ = c
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
                let start = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n";
                let frame = b"{\"model\":\"m\",\"response\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\",\"done\":false}\n";
                let chunk = [format!("{:x}\r\n", frame.len()).as_bytes(), frame, b"\r\n"].concat();
                if c.write_all(start.as_bytes()).await.is_err() {
                    return;
                }
                while c.write_all(&chunk).await.is_ok() {}
                let _ = closed.send(());
            });
        }
    });
    (url, rx)
}

/// A guard with `send_idle` in front of [`endless_upstream`], and a client connection that has
/// asked it for an endless stream.
struct Streaming {
    server: ollama_guard::serve::Server,
    dir: tempfile::TempDir,
    closed: tokio::sync::mpsc::UnboundedReceiver<()>,
    reader: TcpStream,
}

async fn streaming(send_idle: &str) -> Streaming {
    let (upstream, closed) = endless_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = format!("[timeouts]\nsend_idle = \"{send_idle}\"");
    let config = config(&upstream, &dir, ServeArgs::default(), &file);
    let server = ollama_guard::serve::Server::start(config, loopback().await, loopback().await)
        .await
        .unwrap();
    let mut reader = connect_from("127.0.0.1", server.proxy_addr).await;
    let request = b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}";
    reader.write_all(request).await.unwrap();
    Streaming {
        server,
        dir,
        closed,
        reader,
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_a_stream_is_closed_after_send_idle() {
    // A client that reads its stream for a second, then stops reading without closing.
    let Streaming {
        server,
        dir,
        mut closed,
        mut reader,
    } = streaming("500ms").await;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < until {
        got += reader.read(&mut buf).await.unwrap();
    }
    assert!(got > 1024 * 1024, "{got}");
    // It was never closed while it read; once it stops, the guard closes it (and its
    // upstream stream) after send_idle, with no end of its own.
    assert!(closed.try_recv().is_err());
    tokio::time::timeout(Duration::from_secs(20), closed.recv())
        .await
        .unwrap()
        .unwrap();
    // What was buffered is still delivered, then the connection ends.
    tokio::time::timeout(Duration::from_secs(10), async {
        while reader.read(&mut buf).await.unwrap_or(0) > 0 {}
    })
    .await
    .unwrap();
    let log = dir.path().join("access.log");
    let generate = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.lines())
            .filter(|l| l.contains("/api/generate"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    eventually(|| generate().len() == 1).await;
    assert!(generate()[0].contains("| 200 |"), "{:?}", generate());
    // Counted as the client's doing, not the upstream's.
    let admin = format!("http://{}", server.admin_addr);
    let series = "ollama_guard_requests_total{method=\"POST\",outcome=\"client_cancelled\",route=\"/api/generate\",status_class=\"2xx\"}";
    assert_eq!(metric_eventually(&admin, series, 1.0).await, 1.0);
}

#[tokio::test]
async fn a_client_reading_a_stream_slowly_but_steadily_is_never_cut_by_send_idle() {
    // 8 000 bytes every 40 ms (200 KB/s) for 8 s: far slower than the upstream writes, so the
    // guard's writes wait all along; each wait ends as the reader frees its receive buffer.
    let Streaming {
        server: _server,
        mut closed,
        mut reader,
        ..
    } = streaming("2s").await;
    let mut buf = vec![0u8; 8000];
    let mut got = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let n = reader.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {got} bytes");
        got += n;
    }
    assert!(closed.try_recv().is_err(), "closed after {got} bytes");
    assert!(got > 1_000_000, "{got}");
}

#[tokio::test]
async fn per_source_limit_answers_503_with_retry_after_and_spares_other_sources() {
    let s = stack_with(ServeArgs::default(), "max_connections_per_source = 2").await;
    let to = addr(&s.proxy);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = connect_from("127.0.0.80", to).await;
        c.write_all(b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        read_until(&mut c, "\"models\"").await;
        held.push(c);
    }
    let answer = raw_from(
        "127.0.0.80",
        to,
        b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    let other = raw_from(
        "127.0.0.81",
        to,
        b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    assert_eq!(
        metric(
            &s.admin,
            "ollama_guard_connections_rejected_total{reason=\"per_source\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric_eventually(&s.admin, "ollama_guard_open_connections", 2.0).await,
        2.0
    );
    drop(held);
    assert_eq!(
        metric_eventually(&s.admin, "ollama_guard_open_connections", 0.0).await,
        0.0
    );
}

#[tokio::test]
async fn admin_answers_while_the_proxy_is_at_max_connections() {
    let s = stack_with(ServeArgs::default(), "max_connections = 8").await;
    let to = addr(&s.proxy);
    // Eight half-sent requests hold every slot.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut c = TcpStream::connect(to).await.unwrap();
        c.write_all(b"GET /api/tags HTTP/1.1\r\nHost: loc")
            .await
            .unwrap();
        held.push(c);
    }
    assert_eq!(
        metric_eventually(&s.admin, "ollama_guard_open_connections", 8.0).await,
        8.0
    );
    let answer = raw_from(
        "127.0.0.1",
        to,
        b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert_eq!(get(&format!("{}/healthz", s.admin)).await.status, 200);
    assert_eq!(
        metric(
            &s.admin,
            "ollama_guard_connections_rejected_total{reason=\"max_connections\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_banned_source_gets_connection_close_and_cannot_park_keep_alive_connections() {
    let args = ServeArgs {
        mode: Some("block".into()),
        ..ServeArgs::default()
    };
    let s = stack_with(args, "max_connections_per_source = 3").await;
    ban_for_an_hour(&s, "127.0.0.90").await;
    let to = addr(&s.proxy);
    let mut c = connect_from("127.0.0.90", to).await;
    c.write_all(b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The guard closes the connection after the refusal even though the client asked for
    // keep-alive: read_to_end returns.
    let answer = until_closed(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
}

/// The status lines of every response in `answer`, in order.
fn statuses(answer: &str) -> Vec<&str> {
    answer
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answer[at + 9..at + 12])
        .collect()
}

#[tokio::test]
async fn a_trusted_proxy_s_connection_stays_open_after_a_refusal_only_when_no_body_is_left_unread()
{
    let args = ServeArgs {
        trusted_proxy: vec!["127.0.0.95/32".into()],
        mode: Some("block".into()),
        ..ServeArgs::default()
    };
    let s = stack_with(
        args,
        "[policy]\nmax_body = \"1KiB\"\nmanage_from = [\"198.51.100.7/32\", \"198.51.100.8/32\"]\n",
    )
    .await;
    ban_for_an_hour(&s, "203.0.113.7").await;
    let to = addr(&s.proxy);
    let innocent = b"GET /api/version HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 198.51.100.1\r\nConnection: close\r\n\r\n";
    // `head` with `body` as its Content-Length body from a client behind the proxy, then the
    // innocent's request on the same connection.
    let pipelined = |head: &str, body: &[u8]| {
        let mut bytes = format!(
            "{head}\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(innocent);
        bytes
    };
    // The part of `answer` before its second response.
    let first = |answer: &str| -> String {
        let second = answer[1..]
            .find("HTTP/1.1 ")
            .map_or(answer.len(), |at| at + 1);
        answer[..second].to_owned()
    };
    // A banned client without a body, then an innocent one, on one connection: the proxy's
    // connection is not closed under the innocent's request.
    let mut bytes =
        b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"
            .to_vec();
    bytes.extend_from_slice(innocent);
    let answer = raw_from("127.0.0.95", to, &bytes).await;
    assert_eq!(statuses(&answer), ["403", "200"], "{answer}");
    assert!(!first(&answer).contains("connection:"), "{answer}");
    assert!(answer.contains("\"version\""), "{answer}");
    // A policy refusal of a body the guard read to its end (a push to a foreign registry)
    // leaves it open too.
    let push = br#"{"model":"attacker.example/x/y"}"#;
    let answer = raw_from(
        "127.0.0.95",
        to,
        &pipelined(
            "POST /api/push HTTP/1.1\r\nX-Forwarded-For: 198.51.100.7",
            push,
        ),
    )
    .await;
    assert_eq!(statuses(&answer), ["403", "200"], "{answer}");
    assert!(!first(&answer).contains("connection:"), "{answer}");
    // A refusal with a body the guard did not read to its end closes, and says so first: the
    // ban gate does not read a body, `manage_from` refuses before reading it, and the policy
    // stops at `max_body` (413). A proxy that
    // reused the connection after a response announcing keep-alive would have its next
    // client's request fail. Nothing of the body, nor what follows it, is taken for a request.
    let smuggled = b"GET /api/ps HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for (bytes, status, why) in [
        (
            pipelined(
                "POST /api/generate HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7",
                smuggled,
            ),
            "403",
            "banned",
        ),
        (
            pipelined(
                "POST /api/push HTTP/1.1\r\nX-Forwarded-For: 198.51.100.8",
                &[b' '; 2048],
            ),
            "413",
            "body_too_large",
        ),
        (
            pipelined(
                "POST /api/pull HTTP/1.1\r\nX-Forwarded-For: 198.51.100.9",
                br#"{"model":"llama3"}"#,
            ),
            "403",
            "manage_from",
        ),
    ] {
        let answer = raw_from("127.0.0.95", to, &bytes).await;
        assert_eq!(statuses(&answer), [status], "{answer}");
        assert!(answer.contains(why), "{answer}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
    }
    // So does a chunked body still arriving.
    let mut c = connect_from("127.0.0.95", to).await;
    c.write_all(
        b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 203.0.113.7\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n",
    )
    .await
    .unwrap();
    let out = until_closed(&mut c).await;
    assert_eq!(statuses(&out), ["403"], "{out}");
    assert!(out.contains("connection: close\r\n"), "{out}");
    // A banned client connecting itself cannot look vouched for by forging the header: its
    // refusal closes, and the request it pipelined after is never answered.
    ban_for_an_hour(&s, "127.0.0.96").await;
    let mut bytes =
        b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 198.51.100.1\r\n\r\n"
            .to_vec();
    bytes.extend_from_slice(innocent);
    let answer = raw_from("127.0.0.96", to, &bytes).await;
    assert_eq!(statuses(&answer), ["403"], "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
}

#[tokio::test]
async fn a_request_head_that_has_not_ended_by_64_kib_is_431_and_one_under_it_is_served() {
    let s = stack_with(ServeArgs::default(), "").await;
    let to = addr(&s.proxy);
    let head = |pad: usize| {
        format!(
            "GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(pad)
        )
        .into_bytes()
    };
    // 60 KiB of headers (a few large cookies) is forwarded as before.
    let served = raw_from("127.0.0.90", to, &head(60 << 10)).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    // hyper checks the cap before each read, so a head may end in the read that crosses it:
    // one of 128 KiB cannot.
    let refused = raw_from("127.0.0.90", to, &head(128 << 10)).await;
    assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
    // An unfinished head stops growing the buffer at the cap: the connection is answered 431
    // while the client is still sending, not held with up to 400 KiB of it.
    let mut c = connect_from("127.0.0.91", to).await;
    c.write_all(b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Pad: ")
        .await
        .unwrap();
    let _ = c.write_all(&vec![b'a'; 200 << 10]).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
}

#[tokio::test]
async fn one_source_cannot_hold_the_admin_listener_nor_park_a_body_on_it() {
    let s = stack_with(ServeArgs::default(), "").await;
    let admin = addr(&s.admin);
    // A source's 16 idle connections are its share; its 17th is closed at once.
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(connect_from("127.0.0.95", admin).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = connect_from("127.0.0.95", admin).await;
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), over.read_to_end(&mut out)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    // Everyone else is still answered.
    let health = raw_from(
        "127.0.0.96",
        admin,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // The host itself (127.0.0.1, where Prometheus and the CLI come from by default) has no
    // share: only the listener's 64.
    let mut local = Vec::new();
    for _ in 0..20 {
        local.push(connect_from("127.0.0.1", admin).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let health = raw_from(
        "127.0.0.1",
        admin,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    drop((held, local));
    // A body that never arrives is answered 408 after 10 s instead of holding a slot.
    let started = std::time::Instant::now();
    let mut c = connect_from("127.0.0.97", admin).await;
    c.write_all(b"POST /api/bans HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut out)).await;
    let parked = String::from_utf8_lossy(&out);
    assert!(parked.starts_with("HTTP/1.1 408"), "{parked}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}
