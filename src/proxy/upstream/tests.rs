//! The upstream client against scripted upstreams on loopback sockets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::*;
use crate::proxy::fault::tests::{incoming_from, BAD_CHUNK, SHORT_LENGTH};
use crate::proxy::fault::{ClientBody, ClientFault};
use crate::proxy::test_io::CountingIo;

fn client_for(addr: std::net::SocketAddr, idle: Duration) -> UpstreamClient {
    UpstreamClient {
        pool: pool::Pool::new(addr.to_string(), Duration::from_secs(5), idle, 16),
    }
}

fn wrap<B>(body: B) -> ClientBody<B> {
    ClientBody::new(body, Duration::from_secs(5), Arc::default())
}

fn get(path: &str) -> Request<ClientBody<Full<Bytes>>> {
    Request::get(path)
        .header("host", "upstream")
        .body(wrap(Full::new(Bytes::new())))
        .unwrap()
}

/// Reads one request head (and a `content-length` body) from `s`; `None` at EOF.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse::<usize>().unwrap());
            if buf.len() >= end + 4 + len {
                return Some(buf.drain(..end + 4 + len).collect());
            }
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An upstream that accepts one connection and hands it to `serve`.
async fn accept_one<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        serve(s).await;
    });
    addr
}

/// An upstream whose every connection is served by `serve`; counts accepts.
async fn upstream_with<F, Fut>(serve: F) -> (std::net::SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let count = accepts.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s));
        }
    });
    (addr, accepts)
}

/// An upstream answering every request on every connection with `reply`; counts accepts.
async fn keep_alive_upstream(reply: &'static [u8]) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    upstream_with(move |mut s| async move {
        let mut buf = Vec::new();
        while read_request(&mut s, &mut buf).await.is_some() {
            if s.write_all(reply).await.is_err() {
                return;
            }
        }
    })
    .await
}

const TAGS: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{\"models\":[]}";

#[tokio::test]
async fn connections_are_kept_alive_and_reused() {
    let (addr, accepts) = keep_alive_upstream(TAGS).await;
    let client = client_for(addr, Duration::from_secs(60));
    for _ in 0..3 {
        let resp = client.clone().oneshot(get("/api/tags")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.body().size_hint().exact(), Some(13));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "{\"models\":[]}");
    }
    assert_eq!(accepts.load(Ordering::SeqCst), 1);
    assert_eq!(client.pool.idle_count(), 1);
}

#[tokio::test]
async fn an_idle_connection_older_than_the_idle_timeout_is_not_used() {
    let (addr, accepts) = keep_alive_upstream(TAGS).await;
    let client = client_for(addr, Duration::from_millis(50));
    for _ in 0..2 {
        let resp = client.clone().oneshot(get("/api/tags")).await.unwrap();
        resp.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
}

/// An upstream that answers each connection's first request and then closes it.
async fn one_shot_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    upstream_with(|mut s| async move {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).await.is_some() {
            let _ = s.write_all(TAGS).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_found_before_use() {
    let (addr, accepts) = one_shot_upstream().await;
    let client = client_for(addr, Duration::from_secs(60));
    for _ in 0..3 {
        let resp = client.clone().oneshot(get("/api/tags")).await.unwrap();
        resp.into_body().collect().await.unwrap();
        // Give the close time to arrive, as it would between two requests.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepts.load(Ordering::SeqCst), 3);
}

/// An upstream whose connections answer the first request, then read the second and close
/// without an answer (a close crossing the request); `accepts` counts connections.
async fn crossing_close_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    upstream_with(|mut s| async move {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).await.is_some() {
            let _ = s.write_all(TAGS).await;
        }
        let _ = read_request(&mut s, &mut buf).await;
    })
    .await
}

#[tokio::test]
async fn an_idempotent_request_is_sent_again_when_a_reused_connection_closes_unanswered() {
    let (addr, accepts) = crossing_close_upstream().await;
    let client = client_for(addr, Duration::from_secs(60));
    let resp = client.clone().oneshot(get("/api/tags")).await.unwrap();
    resp.into_body().collect().await.unwrap();
    let resp = client.clone().oneshot(get("/api/tags")).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    assert_eq!(accepts.load(Ordering::SeqCst), 2);

    // A POST is not sent twice: the upstream may have acted on it.
    let post = Request::post("/api/generate")
        .header("content-length", "2")
        .body(wrap(Full::new(Bytes::from_static(b"{}"))))
        .unwrap();
    let e = client.clone().oneshot(post).await.unwrap_err();
    assert!(matches!(e, ExchangeError::Closed), "{e:?}");
    assert_eq!(e.fault(), Fault::Upstream(UpstreamErrorKind::Reset));
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
}

/// An upstream that sends `head`, then each of `rest` when the test says so (one message on
/// `go` per piece); returns the address and the sender.
async fn scripted_upstream(
    head: &'static [u8],
    rest: Vec<&'static [u8]>,
) -> (std::net::SocketAddr, mpsc::UnboundedSender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (go, mut gate) = mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        read_request(&mut s, &mut buf).await.unwrap();
        s.write_all(head).await.unwrap();
        for piece in rest {
            if gate.recv().await.is_none() {
                return;
            }
            s.write_all(piece).await.unwrap();
        }
        // Hold the connection until the test ends.
        let _ = gate.recv().await;
    });
    (addr, go)
}

const NDJSON_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n";

#[tokio::test]
async fn a_burst_of_frames_the_upstream_wrote_together_is_one_frame() {
    // Head and 20 NDJSON chunks in one segment, as Ollama's writes often arrive.
    let mut burst = NDJSON_HEAD.to_vec();
    for i in 0..20 {
        let line = format!("{{\"response\":\"t{i:02}\",\"done\":false}}\n");
        burst.extend_from_slice(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes());
    }
    let burst: &'static [u8] = burst.leak();
    let (addr, _go) = scripted_upstream(burst, vec![]).await;
    let client = client_for(addr, Duration::from_secs(60));
    let resp = client.oneshot(get("/api/generate")).await.unwrap();
    assert!(!resp.headers().contains_key("content-length"));
    let mut body = resp.into_body();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let text = String::from_utf8(frame.to_vec()).unwrap();
    assert_eq!(text.lines().count(), 20, "{text}");
    assert!(text.starts_with("{\"response\":\"t00\""));
    assert!(text.ends_with("{\"response\":\"t19\",\"done\":false}\n"));
}

#[tokio::test]
async fn a_lone_frame_is_returned_without_waiting_for_more() {
    let (addr, go) = scripted_upstream(
        NDJSON_HEAD,
        vec![b"6\r\nfirst\n\r\n", b"7\r\nsecond\n\r\n", b"0\r\n\r\n"],
    )
    .await;
    let client = client_for(addr, Duration::from_secs(60));
    let resp = client.clone().oneshot(get("/api/chat")).await.unwrap();
    let mut body = resp.into_body();
    // The upstream sends the next piece only after this frame was returned: a body that
    // waited for more would hang here (the test's timeout says so).
    for want in ["first\n", "second\n"] {
        go.send(()).unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a lone frame is not held back")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), want);
        assert!(!body.is_end_stream());
    }
    go.send(()).unwrap();
    assert!(body.frame().await.is_none());
    assert!(body.is_end_stream());
    assert_eq!(
        client.pool.idle_count(),
        1,
        "a complete body returns the connection"
    );
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_the_connection() {
    let (addr, go) = scripted_upstream(NDJSON_HEAD, vec![b"6\r\nfirst\n\r\n"]).await;
    let client = client_for(addr, Duration::from_secs(60));
    let resp = client.clone().oneshot(get("/api/chat")).await.unwrap();
    let mut body = resp.into_body();
    go.send(()).unwrap();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "first\n"
    );
    drop(body);
    assert_eq!(client.pool.idle_count(), 0);
}

#[tokio::test]
async fn an_upstream_closing_mid_body_is_an_error_after_the_data_it_sent() {
    let addr = accept_one(|mut s| async move {
        let mut buf = Vec::new();
        read_request(&mut s, &mut buf).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")
            .await
            .unwrap();
    })
    .await;
    let client = client_for(addr, Duration::from_secs(60));
    let resp = client.clone().oneshot(get("/api/pull")).await.unwrap();
    let mut body = resp.into_body();
    let mut data = Vec::new();
    let err = loop {
        match body.frame().await {
            Some(Ok(f)) => data.extend_from_slice(&f.into_data().unwrap()),
            Some(Err(e)) => break e,
            None => panic!("the body must not end cleanly"),
        }
    };
    assert_eq!(data, b"only ten b");
    assert!(matches!(err, body::BodyError::Closed), "{err:?}");
    assert_eq!(client.pool.idle_count(), 0);
}

#[tokio::test]
async fn a_streamed_request_body_is_sent_chunked_and_the_upstream_sees_it_exactly() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !got.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
        seen_tx.send(got).unwrap();
        s.write_all(TAGS).await.unwrap();
        let _ = s.read(&mut chunk).await;
    });
    let (tx, rx) = mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
    let stream = http_body_util::StreamBody::new(tokio_stream_from(rx));
    let req = Request::post("/api/blobs/sha256:x")
        .header("host", "upstream")
        .body(wrap(stream))
        .unwrap();
    let client = client_for(addr, Duration::from_secs(60));
    let call = tokio::spawn(client.clone().oneshot(req));
    for piece in ["hello", "", " world"] {
        tx.send(Ok(http_body::Frame::data(Bytes::from(piece))))
            .await
            .unwrap();
    }
    drop(tx);
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        seen.recv().await.unwrap(),
        b"POST /api/blobs/sha256:x HTTP/1.1\r\nhost: upstream\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    );
    resp.into_body().collect().await.unwrap();
    assert_eq!(client.pool.idle_count(), 1);
}

/// A `Stream` of frames from a channel (no tokio-stream dependency for one test).
fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<http_body::Frame<Bytes>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn an_early_answer_ends_the_upload_and_the_connection_is_not_reused() {
    let addr = accept_one(|mut s| async move {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        s.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        // Keep reading whatever else comes.
        while matches!(s.read(&mut chunk).await, Ok(n) if n > 0) {}
    })
    .await;
    let (tx, rx) = mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"part"))))
        .await
        .unwrap();
    let req = Request::post("/api/blobs/sha256:x")
        .header("content-length", "1000000")
        .body(wrap(http_body_util::StreamBody::new(tokio_stream_from(rx))))
        .unwrap();
    let client = client_for(addr, Duration::from_secs(60));
    let resp = tokio::time::timeout(Duration::from_secs(5), client.clone().oneshot(req))
        .await
        .expect("the early answer is returned while the body is still open")
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(resp.body().is_end_stream());
    // The client's connection closes after it, and the answer says so.
    assert_eq!(resp.headers()[http::header::CONNECTION], "close");
    drop(resp);
    assert_eq!(client.pool.idle_count(), 0);
    drop(tx);
}

async fn failed(client: UpstreamClient, body: Incoming) -> ExchangeError {
    let req = Request::post("/")
        .body(ClientBody::new(
            body,
            Duration::from_secs(60),
            Arc::default(),
        ))
        .unwrap();
    client
        .oneshot(req)
        .await
        .expect_err("the exchange must fail")
}

use hyper::body::Incoming;

const EMPTY_REQ: &[u8] = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n";

/// An upstream that reads everything and answers with `reply` (nothing: just reads).
async fn reading_upstream(reply: Option<&'static [u8]>) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                match reply {
                    Some(r) => {
                        let _ = s.read(&mut buf).await;
                        let _ = s.write_all(r).await;
                    }
                    None => while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {},
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn client_body_faults_are_the_clients() {
    let addr = reading_upstream(None).await;
    let client = client_for(addr, Duration::from_secs(60));
    let e = failed(client.clone(), incoming_from(BAD_CHUNK, false).await).await;
    assert_eq!(e.fault(), Fault::Client(ClientFault::Malformed));
    let e = failed(client, incoming_from(SHORT_LENGTH, true).await).await;
    assert_eq!(e.fault(), Fault::Client(ClientFault::Aborted));
}

#[tokio::test]
async fn a_refused_connect_is_an_upstream_connect_fault() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let e = failed(
        client_for(addr, Duration::from_secs(1)),
        incoming_from(EMPTY_REQ, false).await,
    )
    .await;
    assert_eq!(e.fault(), Fault::Upstream(UpstreamErrorKind::Connect));
    assert!(
        describe(&e).starts_with("tcp connect error: Connection refused"),
        "{}",
        describe(&e)
    );
}

#[tokio::test(start_paused = true)]
async fn a_connect_timeout_is_an_upstream_timeout_fault() {
    // A listener whose accept queue is full drops further SYNs: the connect hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l = socket.listen(1).unwrap();
    let addr = l.local_addr().unwrap();
    let mut parked = Vec::new();
    for _ in 0..4 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_millis(50), s.connect(addr)).await {
            parked.push(c);
        }
    }
    let e = failed(
        client_for(addr, Duration::from_secs(1)),
        incoming_from(EMPTY_REQ, false).await,
    )
    .await;
    assert!(
        matches!(e, ExchangeError::ConnectTimeout(d) if d == Duration::from_secs(5)),
        "{e:?}"
    );
    assert_eq!(e.fault(), Fault::Upstream(UpstreamErrorKind::Timeout));
    drop(l);
}

#[tokio::test]
async fn an_upstream_closing_or_garbling_the_response_is_an_upstream_reset() {
    for reply in [&b""[..], b"NOT HTTP AT ALL\r\n\r\n"] {
        let addr = reading_upstream(Some(reply)).await;
        let e = failed(
            client_for(addr, Duration::from_secs(1)),
            incoming_from(EMPTY_REQ, false).await,
        )
        .await;
        assert_eq!(
            e.fault(),
            Fault::Upstream(UpstreamErrorKind::Reset),
            "{reply:?}"
        );
    }
}

/// Reads from `r` until `buf` holds `needle` `times` times.
async fn read_until(
    r: &mut tokio::io::DuplexStream,
    buf: &mut Vec<u8>,
    needle: &str,
    times: usize,
) {
    while String::from_utf8_lossy(buf).matches(needle).count() < times {
        let mut chunk = [0u8; 8192];
        let n = r.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "the connection ended early: {}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn through_hyper_a_burst_is_one_write_and_a_lone_frame_leaves_at_once() {
    let mut burst = NDJSON_HEAD.to_vec();
    for i in 0..20 {
        let line = format!("{{\"response\":\"t{i:02}\",\"done\":false}}\n");
        burst.extend_from_slice(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes());
    }
    let burst: &'static [u8] = burst.leak();
    let (addr, go) =
        scripted_upstream(burst, vec![b"e\r\n{\"done\":true}\n\r\n", b"0\r\n\r\n"]).await;
    let client = client_for(addr, Duration::from_secs(60));
    // The proxy's side of the client connection is hyper's server, as in `serve`.
    let (mut near, far) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(AtomicUsize::new(0));
    let io = CountingIo::new(far, writes.clone());
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let req = req.map(wrap);
        client.clone().oneshot(req)
    });
    tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(io), svc),
    );
    near.write_all(b"POST /api/generate HTTP/1.1\r\nhost: g\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        read_until(&mut near, &mut got, "\"done\":false", 20),
    )
    .await
    .expect("the burst is forwarded");
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert_eq!(
        writes.load(Ordering::SeqCst),
        1,
        "the head and 20 frames in one write: {}",
        String::from_utf8_lossy(&got)
    );
    // A frame that arrives alone leaves at once, in a write of its own.
    go.send(()).unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        read_until(&mut near, &mut got, "\"done\":true", 1),
    )
    .await
    .expect("a lone frame is not held back");
    assert_eq!(writes.load(Ordering::SeqCst), 2);
    go.send(()).unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        read_until(&mut near, &mut got, "0\r\n\r\n", 1),
    )
    .await
    .expect("the response ends");
    assert_eq!(writes.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_closes_connections_idle_for_the_idle_timeout() {
    let (addr, _) = keep_alive_upstream(TAGS).await;
    let pool = pool::Pool::new(
        addr.to_string(),
        Duration::from_secs(5),
        Duration::from_secs(4),
        16,
    );
    pool::spawn_sweeper(&pool);
    let conn = pool.connect().await.unwrap();
    pool.put(conn);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pool.idle_count(), 1, "not idle long enough yet");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pool.idle_count(), 0);
    // The sweeper ends with its pool.
    drop(pool);
}

mod adversarial;

/// An upstream that reads one request whole (its body by `content-length`, or chunked to the
/// last chunk), hands its bytes over and answers [`TAGS`].
async fn recording_upstream() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = accept_one(move |mut s| async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let done = match head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                {
                    Some(n) => buf.len() >= end + 4 + n.trim().parse::<usize>().unwrap(),
                    None => buf.ends_with(b"\r\n0\r\n\r\n"),
                };
                if done {
                    break;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        tx.send(buf).unwrap();
        let _ = s.write_all(TAGS).await;
    })
    .await;
    (addr, rx)
}

/// A request body that is not ready at its first poll, then has `n` one-byte frames ready
/// at once (a client's tiny chunks arriving in one read).
struct Burst {
    n: usize,
    sent: usize,
    waited: bool,
}

impl Body for Burst {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if !self.waited {
            self.waited = true;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        if self.sent == self.n {
            return std::task::Poll::Ready(None);
        }
        let b = b'a' + (self.sent % 26) as u8;
        self.sent += 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![b])))))
    }
}

/// 1 000 one-byte body frames that become ready together after the head went: gathered into
/// one write to the upstream, not one write (and one segment) per chunk, whether the body goes
/// by its length or chunked; the bytes and the framing arrive intact.
#[tokio::test]
async fn request_body_frames_ready_together_go_in_one_write() {
    for length in [true, false] {
        let (addr, mut seen) = recording_upstream().await;
        let client = client_for(addr, Duration::from_secs(60));
        let mut req = Request::post("/api/embed").header("host", "upstream");
        if length {
            req = req.header("content-length", "1000");
        }
        let body = Burst {
            n: 1000,
            sent: 0,
            waited: false,
        };
        let req = req.body(wrap(body)).unwrap();
        let writes = || super::exchange::WRITES.with(std::cell::Cell::get);
        let before = writes();
        let resp = client.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            writes() - before,
            2,
            "length {length}: the head alone, then the body in one write"
        );
        let want: String = (0..1000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let got = seen.recv().await.unwrap();
        let text = String::from_utf8_lossy(&got).into_owned();
        let (_, sent) = text.split_once("\r\n\r\n").unwrap();
        if length {
            assert_eq!(sent, want);
        } else {
            assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
            let chunks: String = want.chars().map(|c| format!("1\r\n{c}\r\n")).collect();
            assert_eq!(sent, format!("{chunks}0\r\n\r\n"));
        }
    }
}

/// A body frame that arrives alone is written at once: the upstream has it before the next
/// frame exists.
#[tokio::test]
async fn a_lone_request_body_frame_is_written_at_once() {
    let (tx_up, mut rx_up) = mpsc::unbounded_channel::<Vec<u8>>();
    let addr = accept_one(move |mut s| async move {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx_up.send(chunk[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    let client = client_for(addr, Duration::from_secs(60));
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| {
            (
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(b)),
                rx,
            )
        })
    });
    let body = http_body_util::StreamBody::new(frames);
    let req = Request::post("/api/embed")
        .header("host", "upstream")
        .body(wrap(body))
        .unwrap();
    let call = tokio::spawn(client.oneshot(req));
    async fn wait_for(
        got: &mut Vec<u8>,
        rx_up: &mut mpsc::UnboundedReceiver<Vec<u8>>,
        want: &'static str,
    ) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !String::from_utf8_lossy(got).contains(want) {
                got.extend(rx_up.recv().await.unwrap());
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{want:?} not written at once"));
    }
    let mut got = Vec::new();
    wait_for(&mut got, &mut rx_up, "\r\n\r\n").await;
    tx.send(Bytes::from_static(b"first-frame")).unwrap();
    wait_for(&mut got, &mut rx_up, "first-frame").await;
    tx.send(Bytes::from_static(b"second-frame")).unwrap();
    wait_for(&mut got, &mut rx_up, "second-frame").await;
    call.abort();
}

/// Through hyper's server, as in `serve`: a client's chunked body of 1 000 one-byte chunks,
/// sent in one piece, goes upstream in two writes, not one per chunk (hyper hands
/// the body over one chunk at a time; a turn given up lets it decode the next); the bytes
/// arrive intact.
#[tokio::test]
async fn through_hyper_a_body_of_tiny_chunks_goes_upstream_in_few_writes() {
    let (addr, mut seen) = recording_upstream().await;
    let client = client_for(addr, Duration::from_secs(60));
    let (mut near, far) = tokio::io::duplex(1 << 20);
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let req = req.map(wrap);
        client.clone().oneshot(req)
    });
    tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(far), svc),
    );
    let want: String = (0..1000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut request =
        b"POST /api/embed HTTP/1.1\r\nhost: g\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for c in want.bytes() {
        request.extend_from_slice(b"1\r\n");
        request.push(c);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let writes = || super::exchange::WRITES.with(std::cell::Cell::get);
    let before = writes();
    near.write_all(&request).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("the body is forwarded")
        .unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    let (_, sent) = text.split_once("\r\n\r\n").unwrap();
    let body: String = sent
        .split("\r\n")
        .collect::<Vec<_>>()
        .chunks(2)
        .filter_map(|c| match c {
            [size, data] if *size != "0" => Some(*data),
            _ => None,
        })
        .collect();
    assert_eq!(body, want);
    let n = writes() - before;
    // The head with the first chunk, then the other 999 in one write (1 001 before).
    assert_eq!(n, 2, "{n} writes upstream for 1 000 chunks");
}
