//! The proxy in front of the simulator, over real sockets: transparency, streaming,
//! uploads, client IP and Host rewriting.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use ollama_guard::config::ServeArgs;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CASES: &[(&str, &str, &str)] = &[
    ("GET", "/", ""),
    ("HEAD", "/", ""),
    ("GET", "/api/version", ""),
    ("GET", "/api/tags", ""),
    ("GET", "/api/ps", ""),
    ("POST", "/api/show", r#"{"model":"llama3.2"}"#),
    ("POST", "/api/show", r#"{"model":"nope"}"#),
    ("POST", "/api/show", "{not json"),
    (
        "POST",
        "/api/generate",
        r#"{"model":"llama3.2","prompt":"hi","stream":false}"#,
    ),
    (
        "POST",
        "/api/generate",
        r#"{"model":"llama3.2","prompt":"hi"}"#,
    ),
    (
        "POST",
        "/api/chat",
        r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}"#,
    ),
    ("POST", "/api/embed", r#"{"model":"llama3.2","input":"hi"}"#),
    (
        "POST",
        "/api/embeddings",
        r#"{"model":"llama3.2","prompt":"hi"}"#,
    ),
    ("POST", "/api/pull", r#"{"model":"llama3.2"}"#),
    (
        "POST",
        "/api/copy",
        r#"{"source":"llama3.2","destination":"x"}"#,
    ),
    ("DELETE", "/api/delete", r#"{"model":"missing"}"#),
    (
        "HEAD",
        "/api/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "",
    ),
    (
        "POST",
        "/v1/chat/completions",
        r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}"#,
    ),
    (
        "POST",
        "/v1/chat/completions",
        r#"{"model":"llama3.2","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    ),
    ("GET", "/v1/models", ""),
    ("GET", "/v1/models/missing", ""),
    ("OPTIONS", "/api/tags", ""),
    ("GET", "/nope", ""),
    ("GET", "/api/generate", ""),
];

/// Removes the fields that legitimately differ between two calls (clock readings).
fn stable(body: &Bytes) -> String {
    let text = String::from_utf8_lossy(body).into_owned();
    text.lines()
        .map(
            |l| match serde_json::from_str::<serde_json::Value>(l.trim_start_matches("data: ")) {
                Ok(mut v) => {
                    scrub(&mut v);
                    v.to_string()
                }
                Err(_) => l.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
}

fn scrub(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for key in [
                "created_at",
                "created",
                "id",
                "modified_at",
                "expires_at",
                "total_duration",
                "load_duration",
                "prompt_eval_duration",
                "eval_duration",
            ] {
                m.remove(key);
            }
            m.values_mut().for_each(scrub);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// Flags every request of every source, so the monitor-mode corpus below runs with rules firing.
const FLAG_EVERYTHING: &str = r#"
[[rule]]
name = "everything"
min_latency = "0s"
threshold = 1
"#;

#[tokio::test]
async fn every_route_answers_through_the_proxy_as_it_does_directly() {
    let s = stack_with(ServeArgs::default(), FLAG_EVERYTHING).await;
    for (method, path, body) in CASES {
        let m: Method = method.parse().unwrap();
        let direct = send(
            m.clone(),
            &format!("{}{path}", s.sim.url()),
            &[("host", "localhost")],
            body.to_string(),
        )
        .await;
        let proxied = send(m, &format!("{}{path}", s.proxy), &[], body.to_string()).await;
        assert_eq!(proxied.status, direct.status, "{method} {path}");
        assert_eq!(
            proxied.content_type(),
            direct.content_type(),
            "{method} {path}"
        );
        assert_eq!(
            stable(&proxied.body),
            stable(&direct.body),
            "{method} {path}"
        );
        assert_eq!(
            proxied.headers.get("content-length"),
            direct.headers.get("content-length"),
            "{method} {path}"
        );
    }
    // The rule fired on every distinct path, and monitor mode changed nothing above.
    let server = s.server;
    let log_path = s.dir.path().join("detection.log");
    server.shutdown().await;
    let log = std::fs::read_to_string(log_path).unwrap();
    let mut paths: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "detection")
        .map(|v| v["uri_path"].as_str().unwrap().to_owned())
        .collect();
    paths.sort();
    let total = paths.len();
    // A run that straddles a 15-minute window boundary sees a key flagged once per window.
    paths.dedup();
    let mut expected: Vec<String> = CASES.iter().map(|(_, p, _)| p.to_string()).collect();
    expected.sort();
    expected.dedup();
    assert_eq!(paths, expected, "every source and path flagged");
    assert!(
        total <= 2 * expected.len(),
        "at most once per window: {total} detections"
    );
}

#[tokio::test]
async fn ndjson_frames_arrive_while_the_upstream_is_still_generating() {
    let s = stack().await;
    let req = request(
        Method::POST,
        &format!("{}/api/generate", s.proxy),
        &[
            ("x-sim-id", "stream-1"),
            ("x-sim-chunks", "6"),
            ("x-sim-chunk-delay-ms", "150"),
        ],
        r#"{"model":"llama3.2","prompt":"hi"}"#,
    );
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    // The first line is here while the simulator has not produced its last one yet:
    // nothing buffers the stream.
    let seen = s.sim.log.requests();
    let r = seen
        .iter()
        .find(|r| r.id.as_deref() == Some("stream-1"))
        .unwrap();
    assert!(
        !r.finished,
        "first frame must arrive before the upstream finished"
    );
    let mut lines = vec![first];
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            lines.push(d);
        }
    }
    let text: String = lines
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    let parsed: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), 7, "6 chunks and the final done line");
    assert_eq!(parsed.last().unwrap()["done"], true);
    assert!(lines.len() >= 2, "frames were not coalesced into one");
}

#[tokio::test]
async fn sse_stream_passes_unchanged_and_ends_with_done() {
    let s = stack().await;
    let body = r#"{"model":"llama3.2","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = send(
        Method::POST,
        &format!("{}/v1/chat/completions", s.proxy),
        &[("x-sim-chunks", "3")],
        body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "text/event-stream");
    let text = r.text();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(
        text.matches("data: ").count(),
        5,
        "3 chunks, a finish chunk and [DONE]: {text}"
    );
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn blob_upload_of_32_mib_streams_with_content_length_and_chunked() {
    let s = stack().await;
    let data: Vec<u8> = (0..32 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let digest = format!("sha256:{}", sha256_hex(&data));
    let url = format!("{}/api/blobs/{digest}", s.proxy);
    let r = send(Method::POST, &url, &[], data.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let head = send(Method::HEAD, &url, &[], Bytes::new()).await;
    assert_eq!(head.status, StatusCode::OK);

    // Chunked: a streamed body with no Content-Length (other bytes: a stored digest would
    // be answered without reading the body, as Ollama does).
    let data: Vec<u8> = data.iter().map(|b| b.wrapping_add(1)).collect();
    let url = format!("{}/api/blobs/sha256:{}", s.proxy, sha256_hex(&data));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let req = http::Request::post(&url).body(ChannelBody(rx)).unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let feeder = tokio::spawn(async move {
        for chunk in data.chunks(1024 * 1024) {
            tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
    });
    let resp = client.request(req).await.unwrap();
    feeder.await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let seen = s.sim.log.requests();
    let uploads: Vec<_> = seen
        .iter()
        .filter(|r| r.method == "POST" && r.target.starts_with("/api/blobs/"))
        .collect();
    assert_eq!(uploads.len(), 2);
    assert!(uploads.iter().all(|r| r.body_len == 32 * 1024 * 1024));
    assert_eq!(
        uploads[1]
            .headers
            .get("transfer-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("chunked")
    );
}

/// A request body fed through a channel: no size hint, so it goes out chunked.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test]
async fn expect_100_continue_upload_is_answered_then_forwarded() {
    let s = stack().await;
    let data = vec![7u8; 256 * 1024];
    let digest = format!("sha256:{}", sha256_hex(&data));
    let mut c = TcpStream::connect(s.server.proxy_addr).await.unwrap();
    let head = format!(
        "POST /api/blobs/{digest} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        data.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let interim = read_until(&mut c, "\r\n\r\n").await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    c.write_all(&data).await.unwrap();
    let resp = read_until(&mut c, "\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 201 Created\r\n"), "{resp}");
    let seen = s.sim.log.requests();
    let up = seen
        .iter()
        .find(|r| r.target.starts_with("/api/blobs/"))
        .unwrap();
    assert_eq!(up.body_len, data.len() as u64);
    assert!(
        up.headers.get("expect").is_none(),
        "Expect is hop-local; the proxy answered it"
    );
}

#[tokio::test]
async fn spoofed_xff_from_untrusted_peer_is_replaced_by_the_peer() {
    let s = stack().await;
    send(
        Method::GET,
        &format!("{}/api/tags", s.proxy),
        &[("x-sim-id", "x1"), ("x-forwarded-for", "6.6.6.6")],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        sim_header(&s, "x1", "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        sim_header(&s, "x1", "x-forwarded-proto").as_deref(),
        Some("http")
    );
}

#[tokio::test]
async fn xff_from_a_trusted_proxy_is_believed() {
    let args = ServeArgs {
        trusted_proxy: vec!["127.0.0.1/32".into()],
        ..ServeArgs::default()
    };
    let s = stack_with(args, "").await;
    send(
        Method::GET,
        &format!("{}/api/tags", s.proxy),
        &[("x-sim-id", "x2"), ("x-forwarded-for", "198.51.100.7")],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        sim_header(&s, "x2", "x-forwarded-for").as_deref(),
        Some("198.51.100.7")
    );
}

#[tokio::test]
async fn host_is_rewritten_so_the_loopback_host_check_passes() {
    // An operator serving a public name lists it; the guard forwards it with Host rewritten.
    let s = stack_with(
        ServeArgs::default(),
        r#"allowed_hosts = ["ollama.example"]"#,
    )
    .await;
    let direct = send(
        Method::GET,
        &format!("{}/api/tags", s.sim.url()),
        &[("host", "evil.example")],
        Bytes::new(),
    )
    .await;
    assert_eq!(direct.status, StatusCode::FORBIDDEN);
    assert!(direct.body.is_empty());
    let proxied = send(
        Method::GET,
        &format!("{}/api/tags", s.proxy),
        &[("host", "ollama.example"), ("x-sim-id", "h")],
        Bytes::new(),
    )
    .await;
    assert_eq!(proxied.status, StatusCode::OK);
    let upstream = s.sim.url().trim_start_matches("http://").to_owned();
    assert_eq!(sim_header(&s, "h", "host"), Some(upstream));
    assert_eq!(
        sim_header(&s, "h", "x-forwarded-host").as_deref(),
        Some("ollama.example")
    );
}

#[tokio::test]
async fn a_reason_phrase_that_is_not_hyper_s_is_passed_on_as_the_upstream_wrote_it() {
    // An upstream writing Go's reason phrases (Go says `Request Entity Too Large` where the
    // RFC and hyper say `Payload Too Large`), and one that is canonical.
    let up = loopback().await;
    let upstream = format!("http://{}", up.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut c, _)) = up.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                for status in [
                    "413 Request Entity Too Large",
                    "404 Not Found",
                    "599 Custom",
                ] {
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = c.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                    }
                    seen.clear();
                    let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok");
                    if c.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&upstream, &dir, ServeArgs::default(), "");
    let server = ollama_guard::serve::Server::start(cfg, loopback().await, loopback().await)
        .await
        .unwrap();
    let mut c = TcpStream::connect(server.proxy_addr).await.unwrap();
    let mut lines = Vec::new();
    for _ in 0..3 {
        c.write_all(b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"ok") {
            use tokio::io::AsyncReadExt;
            c.read_exact(&mut byte).await.unwrap();
            got.push(byte[0]);
        }
        let text = String::from_utf8(got).unwrap();
        lines.push(text.lines().next().unwrap().to_owned());
    }
    assert_eq!(
        lines,
        [
            "HTTP/1.1 413 Request Entity Too Large",
            "HTTP/1.1 404 Not Found",
            "HTTP/1.1 599 Custom"
        ]
    );
}

/// The routes Ollama added after 0.19 (its cloud status, web tools, recommendations and audio
/// transcription) are counted under their own labels, not `other`. The simulator does not serve
/// them (it answers 404), which is what the status class shows.
#[tokio::test]
async fn ollamas_newer_routes_are_counted_under_their_own_labels() {
    let s = stack().await;
    let cases = [
        ("GET", "/api/status"),
        ("POST", "/api/experimental/web_search"),
        ("POST", "/api/experimental/web_fetch"),
        ("GET", "/api/experimental/model-recommendations"),
        ("POST", "/v1/audio/transcriptions"),
    ];
    for (method, path) in cases {
        let reply = send(
            method.parse().unwrap(),
            &format!("{}{path}", s.proxy),
            &[],
            r#"{"query":"x"}"#.to_owned(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    for (method, path) in cases {
        let series = format!(
            "ollama_guard_requests_total{{method=\"{method}\",outcome=\"forwarded\",route=\"{path}\",status_class=\"4xx\"}}"
        );
        assert_eq!(
            metric_eventually(&s.admin, &series, 1.0).await,
            1.0,
            "{series}"
        );
    }
    // Nothing was counted as `other`.
    let text = get(&format!("{}/metrics", s.admin)).await.text();
    let other: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ollama_guard_requests_total{") && l.contains("route=\"other\""))
        .filter(|l| !l.ends_with(" 0"))
        .collect();
    assert_eq!(other, Vec::<&str>::new());
}

/// A page served on the guard's own origin (a web UI behind a front proxy that passes `Host`,
/// its name in `allowed_hosts`): Ollama's CORS layer lets a request whose `Origin` is
/// `http(s)://` + its `Host` through unchecked, and the guard rewrites `Host`, so there it does
/// not forward such an `Origin`. Anywhere else (a loopback listener's Ollama rule, which admits
/// names a LAN can spoof, or an open one) and for a cross-origin page, the `Origin` reaches
/// Ollama as sent.
#[tokio::test]
async fn a_same_origin_origin_is_dropped_only_for_a_listed_host_name() {
    let s = stack().await;
    for (id, origin) in [
        ("same-http", "http://localhost:11434"),
        ("same-local", "http://ollama.local:11434"),
        ("cross", "http://localhost:3000"),
    ] {
        let host = origin.strip_prefix("http://").unwrap();
        let host = if id == "cross" {
            "localhost:11434"
        } else {
            host
        };
        let reply = send(
            Method::GET,
            &format!("{}/api/tags", s.proxy),
            &[("host", host), ("origin", origin), ("x-sim-id", id)],
            String::new(),
        )
        .await;
        assert!(sim_saw(&s, id), "{id}");
        assert_eq!(
            sim_header(&s, id, "origin").as_deref(),
            Some(origin),
            "{id}"
        );
        assert_eq!(
            sim_header(&s, id, "x-forwarded-host").as_deref(),
            Some(host),
            "{id}"
        );
        // Ollama's default origins admit localhost on any port, not a `.local` name.
        let want = if id == "same-local" {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::OK
        };
        assert_eq!(reply.status, want, "{id}");
    }
    // The case it is for: a UI on `https://ai.example.com` whose front proxy passes `Host`, the
    // name in `allowed_hosts`. Ollama (the simulator) would refuse that origin had it seen it
    // against the rewritten `Host`.
    let (status, upstream_origin) = generate_from(
        r#"allowed_hosts = ["ai.example.com"]"#,
        "ai.example.com",
        "https",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(upstream_origin, None);
    // A listener that takes every `Host` (`allowed_hosts = ["*"]`, or one on 0.0.0.0 without
    // it) keeps even a same-origin `Origin`: there a page on a rebound name matches its own
    // `Host`, and Ollama's CORS check is what refuses it (`403`, empty body, in the simulator
    // as in Ollama).
    let (status, upstream_origin) = generate_from(
        r#"allowed_hosts = ["*"]"#,
        "rebind.attacker.example",
        "http",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        upstream_origin.as_deref(),
        Some("http://rebind.attacker.example")
    );
}

/// A generation sent to a guard configured by `file` with `Host: host` and the same-origin
/// `Origin: scheme://host`: its status, and the `Origin` the simulator received.
async fn generate_from(file: &str, host: &str, scheme: &str) -> (StatusCode, Option<String>) {
    let s = stack_with(ServeArgs::default(), file).await;
    let origin = format!("{scheme}://{host}");
    let reply = send(
        Method::POST,
        &format!("{}/api/generate", s.proxy),
        &[("host", host), ("origin", &origin), ("x-sim-id", "page")],
        r#"{"model":"llama3.2","prompt":"hi","stream":false}"#.to_owned(),
    )
    .await;
    (reply.status, sim_header(&s, "page", "origin"))
}
