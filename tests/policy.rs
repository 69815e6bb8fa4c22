//! The policy stage through a running stack and the real `ollama` Python client and OpenAI
//! SDK (tests/e2e/test_policy.py): a push to a foreign registry is refused before the
//! simulator sees it (block) or flagged `would_block` and forwarded byte-identical (monitor).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ollama_guard::config::ServeArgs;
use serde_json::Value;

async fn run_python(s: &Stack, mode: &str) -> String {
    let mut cmd = common::clients::pytest("test_policy.py");
    cmd.env("OLLAMA_GUARD_URL", &s.proxy)
        .env("OLLAMA_GUARD_MODE", mode)
        .env_remove("OLLAMA_API_KEY");
    let (ok, report) = common::clients::run(
        cmd,
        "Python policy (OLLAMA_GUARD_PYTHON: a venv with pytest, ollama, openai)",
    )
    .await;
    assert!(ok, "pytest failed:\n{report}");
    assert!(report.contains("3 passed"), "{report}");
    report
}

fn policy_events(s: &Stack) -> Vec<(String, String, String)> {
    events(&s.detection_log())
        .into_iter()
        .filter(|e| e["rule"].as_str().is_some_and(|r| r.starts_with("policy.")))
        .map(|e: Value| {
            (
                e["rule"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn block_mode() -> ServeArgs {
    ServeArgs {
        mode: Some("block".into()),
        ..ServeArgs::default()
    }
}

/// Bans 127.0.0.66 through the admin API (201: in force and on disk).
async fn ban_attacker(s: &Stack) {
    let added = admin(
        s,
        http::Method::POST,
        "/api/bans",
        r#"{"src":"127.0.0.66","duration":"1h","reason":"exfiltration"}"#,
        None,
    )
    .await;
    assert_eq!(added.status, 201);
}

fn sim_targets(s: &Stack) -> Vec<String> {
    s.sim.log.requests().into_iter().map(|r| r.target).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_mode_refuses_a_foreign_push_before_the_simulator_sees_it() {
    let s = stack_with(block_mode(), "").await;
    run_python(&s, "block").await;
    let got = wait_events(&s.detection_log(), |ev| {
        ev.iter()
            .filter(|e| e["rule"].as_str().is_some_and(|r| r.starts_with("policy.")))
            .count()
            >= 2
    })
    .await;
    assert_detection_log_valid(&s.detection_log());
    drop(got);
    assert_eq!(
        policy_events(&s),
        [
            (
                "policy.registry_push".into(),
                "attacker.example/x/y".into(),
                "blocked".into()
            ),
            (
                "policy.debug_render_only".into(),
                "true".into(),
                "blocked".into()
            ),
        ]
    );
    let targets = sim_targets(&s);
    assert!(!targets.iter().any(|t| t == "/api/push"), "{targets:?}");
    assert!(
        targets.iter().any(|t| t == "/api/pull"),
        "the official pull passed"
    );
    assert_eq!(
        metric(
            &s.admin,
            "ollama_guard_refused_requests_total{reason=\"policy\"}"
        )
        .await,
        2.0
    );
    // Refused is not banned: the same client may still pull.
    assert_eq!(
        admin(&s, http::Method::GET, "/api/bans", "", None)
            .await
            .text(),
        "[]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_mode_flags_would_block_and_forwards_the_push_byte_identical() {
    let s = stack().await;
    run_python(&s, "monitor").await;
    wait_events(&s.detection_log(), |ev| {
        ev.iter()
            .filter(|e| e["rule"].as_str().is_some_and(|r| r.starts_with("policy.")))
            .count()
            >= 2
    })
    .await;
    assert_detection_log_valid(&s.detection_log());
    assert_eq!(
        policy_events(&s),
        [
            (
                "policy.registry_push".into(),
                "attacker.example/x/y".into(),
                "would_block".into()
            ),
            (
                "policy.debug_render_only".into(),
                "true".into(),
                "would_block".into()
            ),
        ]
    );
    assert!(sim_targets(&s).iter().any(|t| t == "/api/push"));
}

/// A body with odd spacing, a duplicate key and a trailing newline, as Content-Length and as
/// chunks: the simulator receives exactly these bytes.
#[tokio::test]
async fn monitor_mode_forwards_policy_bodies_byte_identical_in_both_framings() {
    use sha2::Digest;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = stack().await;
    let body: &[u8] =
        b"{ \"model\" :\"llama3\",\"MODEL\":\"attacker.example/x/y\" ,\"insecure\":true}\n";
    let want = format!("{:x}", sha2::Sha256::digest(body));
    let addr = s.proxy.trim_start_matches("http://").to_owned();
    let head_cl = format!(
        "POST /api/push HTTP/1.1\r\nHost: localhost\r\nx-sim-id: cl\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut chunked = b"POST /api/push HTTP/1.1\r\nHost: localhost\r\nx-sim-id: ch\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for part in body.chunks(7) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut with_cl = head_cl.into_bytes();
    with_cl.extend_from_slice(body);
    for raw in [with_cl, chunked] {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(&raw).await.unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        // The simulator's own answer (whatever it thinks of the model) came back.
        assert!(
            out.starts_with(b"HTTP/1.1 "),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
    for id in ["cl", "ch"] {
        let r = s
            .sim
            .log
            .requests()
            .into_iter()
            .find(|r| r.id.as_deref() == Some(id))
            .unwrap();
        assert_eq!(r.body_sha256.as_deref(), Some(want.as_str()), "{id}");
    }
    // The duplicate, case-folded key is read as Go reads it: the last one. (The detection
    // log is written by its own thread: wait for the line.) Both requests were judged; one
    // line a minute is written per source and rule, and the metric counts both.
    wait_events(&s.detection_log(), |e| {
        e.iter().any(|v| v["value"] == "attacker.example/x/y")
    })
    .await;
    // One line, unless the two requests fell on either side of a minute's end: then one in
    // each minute.
    let minutes: Vec<String> = events(&s.detection_log())
        .into_iter()
        .filter(|e| e["value"] == "attacker.example/x/y")
        .map(|e| e["time"].as_str().unwrap()[..16].to_owned())
        .collect();
    let mut distinct = minutes.clone();
    distinct.dedup();
    assert!(
        minutes.len() == 1 || (minutes.len() == 2 && distinct.len() == 2),
        "{minutes:?}"
    );
    let text = get(&format!("{}/metrics", s.admin)).await.text();
    let judged: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("ollama_guard_detections_total{")
                && l.contains(r#"rule="policy.registry_push""#)
                && l.contains(r#"action="would_block""#)
        })
        .collect();
    assert_eq!(judged.len(), 1, "{judged:?}");
    assert!(judged[0].ends_with(" 2"), "{judged:?}");
}

/// A 30-second transfer of a source that gets banned is cut at once — no progress line passes
/// after the ban is acknowledged (lines come every 250 ms, so that is well within a second) —
/// and the simulator sees the upstream request dropped.
#[tokio::test]
async fn a_ban_cuts_the_sources_running_transfer_within_a_second() {
    use http_body_util::BodyExt;
    let s = stack_with(
        block_mode(),
        "[policy]\nregistries_push = [\"registry.internal\"]",
    )
    .await;
    let c = client_from("127.0.0.66");
    let req = request(
        http::Method::POST,
        &format!("{}/api/push", s.proxy),
        &[("x-sim-transfer-ms", "30000"), ("x-sim-id", "long-push")],
        r#"{"model":"registry.internal/team/llama3"}"#,
    );
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // The transfer is running: progress lines arrive.
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    ban_attacker(&s).await;
    let mut frames_after_ban = 0;
    let ended = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), body.frame()).await {
            Ok(Some(Ok(_))) => frames_after_ban += 1,
            Ok(Some(Err(e))) => break Some(e.to_string()),
            Ok(None) => break None,
            Err(_) => panic!("the stream was not cut"),
        }
    };
    assert!(
        ended.is_some(),
        "the stream must end with an error, not cleanly"
    );
    assert_eq!(frames_after_ban, 0, "no progress line passes after the ban");
    eventually(|| {
        s.sim
            .log
            .requests()
            .iter()
            .any(|r| r.id.as_deref() == Some("long-push") && r.client_disconnected)
    })
    .await;
    let ev = wait_events(&s.detection_log(), |ev| {
        ev.iter().any(|e| e["event"] == "aborted")
    })
    .await;
    let aborted: Vec<&Value> = ev.iter().filter(|e| e["event"] == "aborted").collect();
    assert_eq!(aborted.len(), 1);
    assert_eq!(
        (
            aborted[0]["src"].as_str(),
            aborted[0]["uri_path"].as_str(),
            aborted[0]["rule"].as_str()
        ),
        (Some("127.0.0.66"), Some("/api/push"), Some("admin"))
    );
    assert_detection_log_valid(&s.detection_log());
}

/// A generation body padded past `max_body`, streamed chunked through the real stack: the
/// switch after the padding is still found, the simulator never receives a complete body, and
/// the client gets the route's `403`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_mode_refuses_a_padded_debug_render_only_body_before_its_end_is_forwarded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = stack_with(block_mode(), "[policy]\nmax_body = \"1KiB\"\n").await;
    let body = format!(
        r#"{{"model":"llama3","prompt":"{}","_debug_render_only":true}}"#,
        "x".repeat(16 * 1024)
    );
    let addr = s.proxy.trim_start_matches("http://").to_owned();
    let mut raw = b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nx-sim-id: pad\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for part in body.as_bytes().chunks(1500) {
        raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        raw.extend_from_slice(part);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    c.write_all(&raw).await.unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("policy.debug_render_only"), "{text}");
    wait_events(&s.detection_log(), |ev| {
        ev.iter().any(|e| e["rule"] == "policy.debug_render_only")
    })
    .await;
    assert_eq!(
        policy_events(&s),
        [(
            "policy.debug_render_only".into(),
            "true".into(),
            "blocked".into()
        )]
    );
    let complete = s
        .sim
        .log
        .requests()
        .into_iter()
        .filter(|r| r.id.as_deref() == Some("pad"))
        .filter(|r| r.body_sha256.is_some())
        .count();
    assert_eq!(complete, 0, "the simulator never read a complete body");
}

/// A non-streamed 30-second pull (no response head until the end) of a source that gets banned
/// is answered 403 at the ban, not after Ollama finishes: the upstream request is dropped.
#[tokio::test]
async fn a_ban_cuts_a_request_still_waiting_for_its_head() {
    use http_body_util::BodyExt;
    let s = stack_with(block_mode(), "").await;
    let c = client_from("127.0.0.66");
    let req = request(
        http::Method::POST,
        &format!("{}/api/pull", s.proxy),
        &[("x-sim-transfer-ms", "30000"), ("x-sim-id", "quiet-pull")],
        r#"{"model":"llama3.2","stream":false}"#,
    );
    let pending = tokio::spawn(async move { c.request(req).await });
    // The simulator has the request: Ollama is working on it.
    eventually(|| {
        s.sim
            .log
            .requests()
            .iter()
            .any(|r| r.id.as_deref() == Some("quiet-pull"))
    })
    .await;
    ban_attacker(&s).await;
    // 30 s of transfer remain; the answer arrives long before that.
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), pending)
        .await
        .expect("the request was not cut")
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["error"],
        "ollama-guard: request blocked: this source is banned"
    );
    eventually(|| {
        s.sim
            .log
            .requests()
            .iter()
            .any(|r| r.id.as_deref() == Some("quiet-pull") && r.client_disconnected)
    })
    .await;
    let ev = wait_events(&s.detection_log(), |ev| {
        ev.iter().any(|e| e["event"] == "aborted")
    })
    .await;
    assert_eq!(ev.iter().filter(|e| e["event"] == "aborted").count(), 1);
    assert_detection_log_valid(&s.detection_log());
}

/// A `Content-Encoding: zstd` body on Ollama's OpenAI-compatible routes, which Ollama 0.18 and
/// later decompress before reading: the switch inside is refused before anything is forwarded,
/// while a benign compressed body reaches the simulator byte-identical, still compressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_body_is_judged_decompressed_and_forwarded_compressed() {
    use sha2::Digest;
    let s = stack_with(block_mode(), "").await;
    let flagged = zstd::encode_all(
        &br#"{"model":"llama3","messages":[],"_debug_render_only":true}"#[..],
        3,
    )
    .unwrap();
    let benign = zstd::encode_all(&br#"{"model":"llama3","messages":[]}"#[..], 3).unwrap();
    let url = format!("{}/v1/chat/completions", s.proxy);
    let headers = |id| [("content-encoding", "zstd"), ("x-sim-id", id)];
    let refused = send(http::Method::POST, &url, &headers("zflag"), flagged).await;
    assert_eq!(refused.status, 403);
    let error: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(
        error["error"]["message"],
        "ollama-guard: request refused by policy.debug_render_only: _debug_render_only \"true\" is not allowed"
    );
    let passed = send(http::Method::POST, &url, &headers("zok"), benign.clone()).await;
    assert_ne!(passed.status, 403);
    wait_events(&s.detection_log(), |ev| {
        ev.iter().any(|e| e["rule"] == "policy.debug_render_only")
    })
    .await;
    assert_eq!(
        policy_events(&s),
        [(
            "policy.debug_render_only".into(),
            "true".into(),
            "blocked".into()
        )]
    );
    let seen = |id: &str| {
        s.sim
            .log
            .requests()
            .into_iter()
            .filter(|r| r.id.as_deref() == Some(id))
            .map(|r| r.body_sha256)
            .collect::<Vec<_>>()
    };
    assert_eq!(seen("zflag"), Vec::<Option<String>>::new());
    let want = format!("{:x}", sha2::Sha256::digest(&benign));
    assert_eq!(seen("zok"), [Some(want)]);
}

/// A compressed body that stalls while it holds one of the policy stage's decoder slots is cut
/// once it falls behind the slots' minimum rate (4 KiB a second after a 10-second grace), and
/// answered `408`; the simulator never reads a complete body, and the slot is free again.
#[tokio::test]
async fn a_compressed_body_stalling_in_a_decoder_slot_is_cut_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = stack_with(block_mode(), "[policy]\nmax_body = \"1KiB\"\n").await;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let prompt: String = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    let plain = format!(r#"{{"model":"llama3","prompt":"{prompt}"}}"#);
    let z = zstd::encode_all(plain.as_bytes(), 3).unwrap();
    let addr = s.proxy.trim_start_matches("http://").to_owned();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nx-sim-id: slow\r\nContent-Encoding: zstd\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        z.len()
    );
    let start = std::time::Instant::now();
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    // 4 KiB buys one second beyond the grace; then nothing more comes.
    c.write_all(&z[..4096]).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(60), c.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let waited = start.elapsed();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(waited >= std::time::Duration::from_secs(11), "{waited:?}");
    let complete = s
        .sim
        .log
        .requests()
        .into_iter()
        .filter(|r| r.id.as_deref() == Some("slow") && r.body_sha256.is_some())
        .count();
    assert_eq!(complete, 0, "the simulator never read a complete body");
    // The same client, sending the whole body, is served.
    let url = format!("{}/v1/completions", s.proxy);
    let headers = [("content-encoding", "zstd"), ("x-sim-id", "whole")];
    let passed = send(http::Method::POST, &url, &headers, z).await;
    assert_ne!(passed.status, 403);
    assert_ne!(passed.status, 503);
}

/// A trusted proxy that names its client by something that is not an address (`unix:` from an
/// nginx on a Unix socket, Squid's `unknown`) does not pass its own `manage_from` rights on; a link-local client that Go's reverse proxy
/// writes with its zone id is its address (a review found both taken for the proxy itself).
#[tokio::test]
async fn manage_from_is_not_granted_to_a_client_the_trusted_proxy_could_not_name() {
    let s = stack_with(
        block_mode(),
        "trusted_proxies = [\"127.0.0.1/32\"]\n[policy]\nmanage_from = [\"127.0.0.1/32\"]\n",
    )
    .await;
    let pull = |id: &'static str, xff: Option<&'static str>| {
        let url = format!("{}/api/pull", s.proxy);
        async move {
            let mut headers = vec![("x-sim-id", id), ("content-type", "application/json")];
            if let Some(xff) = xff {
                headers.push(("x-forwarded-for", xff));
            }
            send(
                http::Method::POST,
                &url,
                &headers,
                r#"{"model":"llama3.2","stream":false}"#.to_owned(),
            )
            .await
            .status
        }
    };
    // The proxy's own host (no header) manages, as before.
    assert_eq!(pull("own", None).await, http::StatusCode::OK);
    for (id, xff) in [
        ("unix", "unix:"),
        ("unknown", "198.51.100.7, unknown"),
        ("zone", "fe80::2%lo"),
        ("zone-bracketed", "[fe80::2%25eth0]:51234"),
    ] {
        assert_eq!(
            pull(id, Some(xff)).await,
            http::StatusCode::FORBIDDEN,
            "{id}"
        );
        assert!(!sim_saw(&s, id), "{id} reached the upstream");
    }
    assert!(sim_saw(&s, "own"));
    let events = wait_events(&s.detection_log(), |ev| {
        ev.iter()
            .filter(|e| e["rule"] == "policy.manage_from")
            .count()
            >= 2
    })
    .await;
    let mut seen: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["rule"] == "policy.manage_from")
        .map(|e| {
            (
                e["src"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    seen.sort();
    // One line per source and rule a minute: the two unknown clients share the proxy's.
    assert_eq!(
        seen,
        [
            (
                "127.0.0.1".to_owned(),
                "unknown client via 127.0.0.1".to_owned()
            ),
            ("fe80::2".to_owned(), "fe80::2".to_owned()),
        ]
    );
}

/// A rule's ban of an IPv6 /64 never refuses a `manage_from` host inside it: with `[policy]
/// ban = true` a neighbour's pull refused by `manage_from` bans the /64, and so does a
/// neighbour's burst that the admin's own request tips over a shared count; the admin keeps
/// managing, the group's other addresses are refused (reviews saw the admin locked out both
/// ways).
#[tokio::test]
async fn a_neighbours_ban_does_not_lock_out_the_management_host() {
    let s = stack_with(
        block_mode(),
        "trusted_proxies = [\"127.0.0.1/32\"]\n\
         [policy]\nban = true\nmanage_from = [\"2001:db8::10/128\", \"2001:db8:1::10/128\"]\n\
         [[rule]]\nname = \"burst\"\nmin_latency = \"0s\"\nthreshold = 3\npaths = [\"/api/version\"]\n\
         action = \"block\"\n",
    )
    .await;
    let call = |method: http::Method, path: &'static str, id: &'static str, xff: &'static str| {
        let url = format!("{}{path}", s.proxy);
        async move {
            send(
                method,
                &url,
                &[
                    ("x-sim-id", id),
                    ("x-forwarded-for", xff),
                    ("content-type", "application/json"),
                ],
                if path == "/api/pull" {
                    r#"{"model":"llama3.2","stream":false}"#.to_owned()
                } else {
                    String::new()
                },
            )
            .await
            .status
        }
    };
    let pull = |id, xff| call(http::Method::POST, "/api/pull", id, xff);
    let tags = |id, xff| call(http::Method::GET, "/api/tags", id, xff);
    let version = |id, xff| call(http::Method::GET, "/api/version", id, xff);
    // A neighbour's pull, refused by `manage_from`, bans the /64.
    assert_eq!(
        pull("neighbour", "2001:db8::11").await,
        http::StatusCode::FORBIDDEN
    );
    assert_eq!(pull("admin", "2001:db8::10").await, http::StatusCode::OK);
    assert!(sim_saw(&s, "admin"));
    assert_eq!(
        tags("other", "2001:db8::12").await,
        http::StatusCode::FORBIDDEN
    );
    assert!(!sim_saw(&s, "other"));
    // A neighbour's two calls and the admin's third cross the group's count: the /64 is
    // banned, the admin is not refused.
    assert_eq!(version("n1", "2001:db8:1::11").await, http::StatusCode::OK);
    assert_eq!(version("n2", "2001:db8:1::11").await, http::StatusCode::OK);
    assert_eq!(version("a1", "2001:db8:1::10").await, http::StatusCode::OK);
    let bans = wait_bans(&s, 2).await;
    assert_eq!(bans, ["2001:db8:1::/64", "2001:db8::/64"]);
    assert_eq!(version("a2", "2001:db8:1::10").await, http::StatusCode::OK);
    assert_eq!(pull("a3", "2001:db8:1::10").await, http::StatusCode::OK);
    assert_eq!(
        tags("n3", "2001:db8:1::11").await,
        http::StatusCode::FORBIDDEN
    );
    assert_eq!(
        metric(
            &s.admin,
            "ollama_guard_blocked_requests_total{rule=\"policy.manage_from\"}"
        )
        .await,
        1.0
    );
}

/// The sources of the bans in force, sorted, once there are `n` of them (bounded wait: a rule's
/// ban is made by the record of the request that crossed, just after its response).
async fn wait_bans(s: &Stack, n: usize) -> Vec<String> {
    for _ in 0..250 {
        let text = admin(s, http::Method::GET, "/api/bans", "", None)
            .await
            .text();
        let list: Value = serde_json::from_str(&text).unwrap();
        let mut srcs: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["src"].as_str().unwrap().to_owned())
            .collect();
        if srcs.len() >= n {
            srcs.sort();
            return srcs;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} bans");
}
