//! Scenario 3: file descriptors exhausted (the real binary under `ulimit -n 256`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::process::{free_port, wait_for_port, Proc, BIN};
use crate::common::*;
use crate::support::*;

// 3. File descriptors exhausted: the real binary under `ulimit -n 256`.

/// What a held half-request connection got.
enum Held {
    Answered503,
    Closed,
    StillOpen(TcpStream),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fd_exhaustion_is_answered_503_and_admin_stays_up() {
    const CONNS: usize = 366;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let script = format!(
        "ulimit -n 256 && exec \"$0\" serve --listen 127.0.0.1:{port} --admin-listen 127.0.0.1:{admin_port} --upstream http://127.0.0.1:9 --detection-log {}",
        dir.path().join("d.log").display()
    );
    let mut guard = Proc::spawn("sh", &["-c", &script, BIN]);
    let proxy_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin = format!("http://127.0.0.1:{admin_port}");
    // The admin listener is bound after the proxy one: probing it leaves the proxy untouched.
    wait_for_port(format!("127.0.0.1:{admin_port}").parse().unwrap()).await;
    let text = guard.wait_stderr("connection limit derived").await;
    let line = text
        .lines()
        .find(|l| l.contains("connection limit derived"))
        .unwrap();
    assert!(line.contains("nofile=256"), "{line}");
    let max: usize = line
        .split("max_connections=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(max, (256 - 192) / 2);

    let mut conns = Vec::with_capacity(CONNS);
    let mut connect_errors = 0u64;
    for _ in 0..CONNS {
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(proxy_addr)).await {
            Ok(Ok(mut c)) => {
                // Half a request head; a refused connection may already be gone.
                let _ = c.write_all(b"GET /api/tags HTTP/1.1\r\nHost: loc").await;
                conns.push(c);
            }
            _ => connect_errors += 1,
        }
    }
    let reads: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                match tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut buf)).await {
                    Err(_) if buf.is_empty() => Held::StillOpen(c),
                    Err(_) => panic!("partial answer: {}", String::from_utf8_lossy(&buf)),
                    Ok(_) if buf.is_empty() => Held::Closed,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf);
                        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
                        assert!(text.contains("retry-after: 1\r\n"), "{text}");
                        Held::Answered503
                    }
                }
            })
        })
        .collect();
    let (mut answered, mut closed, mut held) = (0u64, connect_errors, Vec::new());
    for r in reads {
        match r.await.unwrap() {
            Held::Answered503 => answered += 1,
            Held::Closed => closed += 1,
            Held::StillOpen(c) => held.push(c),
        }
    }

    // The admin listener answers while the proxy is saturated.
    let t0 = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(5), async {
        get(&format!("{admin}/healthz")).await.status
    })
    .await
    .expect("/healthz hung");
    let health_ms = t0.elapsed().as_millis();
    assert_eq!(health, 200);

    // A fresh connection is answered 503 at once, not left hanging.
    let mut fresh = TcpStream::connect(proxy_addr).await.unwrap();
    fresh
        .write_all(b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), fresh.read_to_end(&mut buf))
        .await
        .expect("a fresh connection hung")
        .unwrap();
    let fresh_answer = String::from_utf8_lossy(&buf).into_owned();
    assert!(fresh_answer.starts_with("HTTP/1.1 503"), "{fresh_answer}");
    assert!(
        fresh_answer.contains("retry-after: 1\r\n"),
        "{fresh_answer}"
    );

    let sent = CONNS as u64 + 1;
    let answered = answered + 1;
    let held_n = held.len() as u64;
    let open = sum_eventually(&admin, "ollama_guard_open_connections", &[], held_n as f64).await;
    let rejected = sum(
        &admin,
        "ollama_guard_connections_rejected_total",
        &[r#"reason="max_connections""#],
    )
    .await;
    let accept_errors = sum(
        &admin,
        "ollama_guard_connections_rejected_total",
        &[r#"reason="accept_error""#],
    )
    .await;
    let warnings = guard.stderr_lines_with(&["connection limit reached", "accept failed"]);
    println!(
        "reliability: fd_exhaustion sent={sent} answered={answered} lost={} (errors_to_client={closed}: closed_without_answer={closed}; held_waiting_for_their_head={held_n}; healthz_ms={health_ms}; connections_rejected_total{{max_connections}}={rejected} {{accept_error}}={accept_errors}; warning_lines={warnings})",
        sent - answered - closed - held_n
    );
    assert_eq!(
        sent,
        answered + closed + held_n,
        "every connection was answered, closed visibly, or is still being served"
    );
    assert_eq!(held_n, max as u64, "exactly max_connections are admitted");
    assert_eq!(open, held_n as f64);
    assert_eq!(
        rejected,
        (answered + closed - connect_errors) as f64,
        "every turned-away connection is counted"
    );
    assert!(answered > 1, "turned-away connections get a 503");
    assert!(guard.alive());
    assert!(
        (1..=3).contains(&warnings),
        "rate-limited warnings: {warnings}\n{}",
        guard.stderr_text()
    );
    drop(held);
}
