//! An adversary's view: hostile upstream responses, desync attempts, refused bodies, retries,
//! cancellation and back-pressure, each against real loopback sockets.

use std::sync::Mutex;

use super::*;

/// An upstream that answers the n-th request it reads (over all its connections) with
/// `replies[n]` (the last one again once they run out); counts accepts.
async fn serial_upstream(replies: Vec<&'static [u8]>) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let next = Arc::new(AtomicUsize::new(0));
    let replies = Arc::new(replies);
    upstream_with(move |mut s| {
        let (next, replies) = (next.clone(), replies.clone());
        async move {
            let mut buf = Vec::new();
            while read_request(&mut s, &mut buf).await.is_some() {
                let i = next.fetch_add(1, Ordering::SeqCst).min(replies.len() - 1);
                if s.write_all(replies[i]).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

fn head(path: &str) -> Request<ClientBody<Full<Bytes>>> {
    Request::head(path)
        .header("host", "upstream")
        .body(wrap(Full::new(Bytes::new())))
        .unwrap()
}

async fn body_of(resp: Response<UpstreamBody>) -> Result<Bytes, body::BodyError> {
    Ok(resp.into_body().collect().await?.to_bytes())
}

/// Sends `GET /` and returns the body (and leaves the connection as the body leaves it).
async fn get_body(client: &UpstreamClient) -> Result<Bytes, String> {
    let resp = client
        .clone()
        .oneshot(get("/"))
        .await
        .map_err(|e| format!("exchange: {e:?}"))?;
    body_of(resp).await.map_err(|e| format!("body: {e:?}"))
}

/// Sends `GET /` to an upstream answering `reply`: the exchange's error, which must say the
/// response was refused for its framing (`wire`), and a connection left out of the pool.
async fn refused_wire(reply: &'static [u8]) -> wire::WireError {
    let (addr, _) = serial_upstream(vec![reply]).await;
    let client = client_for(addr, Duration::from_secs(60));
    let e = client.clone().oneshot(get("/")).await.unwrap_err();
    assert_eq!(client.pool.idle_count(), 0);
    match e {
        ExchangeError::Wire(w) => w,
        other => panic!("{other:?} for {}", String::from_utf8_lossy(reply)),
    }
}

#[tokio::test]
async fn bytes_after_a_complete_body_are_never_read_as_the_next_response() {
    let (addr, accepts) = serial_upstream(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil",
        TAGS,
    ])
    .await;
    let client = client_for(addr, Duration::from_secs(60));
    assert_eq!(get_body(&client).await.unwrap(), "ok");
    assert_eq!(client.pool.idle_count(), 0, "unread bytes: not pooled");
    assert_eq!(get_body(&client).await.unwrap(), "{\"models\":[]}");
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn bytes_arriving_after_the_body_on_an_idle_connection_retire_it() {
    // The extra response comes in a segment of its own, after the connection was pooled.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let count = accepts.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_request(&mut s, &mut buf).await.is_some() {
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                    if n == 0 {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil")
                            .await
                            .unwrap();
                    }
                }
            });
        }
    });
    let client = client_for(addr, Duration::from_secs(60));
    assert_eq!(get_body(&client).await.unwrap(), "ok");
    assert_eq!(client.pool.idle_count(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get_body(&client).await.unwrap(), "ok");
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
}

/// An upstream's hop-by-hop headers (`Connection` and what it names, `Keep-Alive`,
/// `Transfer-Encoding`) frame the body on the upstream connection and go no further, the
/// first time and when the head is built from the template; the end-to-end headers pass in
/// their order, and a header the next response's `Connection` names is removed too.
#[tokio::test]
async fn hop_by_hop_response_headers_stay_on_the_upstream_connection() {
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    const PLAIN: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: keep-alive\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (addr, accepts) = serial_upstream(vec![CHUNKED, PLAIN, PLAIN, CHUNKED]).await;
    let client = client_for(addr, Duration::from_secs(60));
    for (i, x_hop_named) in [true, false, false, true].into_iter().enumerate() {
        let resp = client.clone().oneshot(get("/")).await.unwrap();
        let names: Vec<&str> = resp.headers().keys().map(|k| k.as_str()).collect();
        let want: &[&str] = if x_hop_named {
            &["content-type"]
        } else {
            &["content-type", "x-hop"]
        };
        assert_eq!(names, want, "response {i}");
        assert_eq!(body_of(resp).await.unwrap(), "hello", "response {i}");
    }
    // Every response kept the connection: one accept.
    assert_eq!(accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_head_response_with_a_body_does_not_desync_the_connection() {
    let (addr, accepts) = serial_upstream(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        TAGS,
    ])
    .await;
    let client = client_for(addr, Duration::from_secs(60));
    let resp = client.clone().oneshot(head("/")).await.unwrap();
    assert_eq!(resp.headers()["content-length"], "5");
    assert_eq!(body_of(resp).await.unwrap(), "");
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(get_body(&client).await.unwrap(), "{\"models\":[]}");
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn bodiless_statuses_with_a_length_keep_the_connection_in_step() {
    let (addr, accepts) = serial_upstream(vec![
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 13\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\ncontent-length: 13\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nx: y\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{\"models\":[]}",
    ])
    .await;
    let client = client_for(addr, Duration::from_secs(60));
    for status in [304, 204] {
        let resp = client.clone().oneshot(get("/")).await.unwrap();
        assert_eq!(resp.status(), status);
        assert_eq!(body_of(resp).await.unwrap(), "");
    }
    // Informational heads are skipped, the final one is the answer.
    let resp = client.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("link"));
    assert_eq!(body_of(resp).await.unwrap(), "{\"models\":[]}");
    assert_eq!(accepts.load(Ordering::SeqCst), 1);
    assert_eq!(client.pool.idle_count(), 1);
}

#[tokio::test]
async fn switching_protocols_is_refused_and_not_pooled() {
    let (addr, _) = serial_upstream(vec![
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    ])
    .await;
    let client = client_for(addr, Duration::from_secs(60));
    let e = client.clone().oneshot(get("/")).await.unwrap_err();
    assert!(
        matches!(e, ExchangeError::Wire(wire::WireError::Upgrade)),
        "{e:?}"
    );
    assert_eq!(e.fault(), Fault::Upstream(UpstreamErrorKind::Reset));
    assert_eq!(client.pool.idle_count(), 0);
}

#[tokio::test]
async fn contradicting_lengths_are_refused() {
    for reply in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nokk"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nokk",
        b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0x2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length:\r\n\r\nok",
    ] {
        assert_eq!(
            refused_wire(reply).await,
            wire::WireError::ContentLength,
            "{}",
            String::from_utf8_lossy(reply)
        );
    }
    // Repeated equal lengths are one length.
    let (addr, accepts) = serial_upstream(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\nok",
    ])
    .await;
    let client = client_for(addr, Duration::from_secs(60));
    assert_eq!(get_body(&client).await.unwrap(), "ok");
    assert_eq!(get_body(&client).await.unwrap(), "ok");
    assert_eq!(accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_transfer_coding_beside_a_length_wins_and_the_connection_is_retired() {
    let (addr, accepts) = serial_upstream(vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        TAGS,
    ])
    .await;
    let client = client_for(addr, Duration::from_secs(60));
    let resp = client.clone().oneshot(get("/")).await.unwrap();
    // RFC 9112 §6.3: an intermediary forwarding such a message MUST remove the received
    // Content-Length first; forwarded, hyper's server would frame the body by it (3 bytes
    // of the 5).
    assert!(
        !resp.headers().contains_key("content-length"),
        "{:?}",
        resp.headers()
    );
    assert_eq!(body_of(resp).await.unwrap(), "hello");
    assert_eq!(client.pool.idle_count(), 0);
    assert_eq!(get_body(&client).await.unwrap(), "{\"models\":[]}");
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_transfer_coding_other_than_one_chunked_is_refused_not_passed_on_encoded() {
    // The proxy decodes chunked only: another coding's bytes, passed on with the header
    // dropped, would reach the client (and the policy reading the body) as if they were the
    // body itself.
    for reply in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: xchunked\r\n\r\nhello",
    ] {
        let e = refused_wire(reply).await;
        assert_eq!(e, wire::WireError::TransferCoding, "{}", String::from_utf8_lossy(reply));
        assert_eq!(
            ExchangeError::Wire(e).fault(),
            Fault::Upstream(UpstreamErrorKind::Reset)
        );
    }
}

#[tokio::test]
async fn a_body_broken_in_what_came_with_the_head_is_refused_before_the_head() {
    for reply in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    ] {
        let e = refused_wire(reply).await;
        assert!(
            matches!(e, wire::WireError::Chunk(_)),
            "{e:?} for {}",
            String::from_utf8_lossy(reply)
        );
    }
}

#[tokio::test]
async fn an_http10_keep_alive_with_close_is_not_pooled() {
    // RFC 9112 §9.3: `close` wins, in one value or across two lines.
    for reply in [
        &b"HTTP/1.0 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 2\r\n\r\nhi"[..],
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\nconnection: close\r\ncontent-length: 2\r\n\r\nhi",
    ] {
        let (addr, accepts) = serial_upstream(vec![reply, TAGS]).await;
        let client = client_for(addr, Duration::from_secs(60));
        assert_eq!(get_body(&client).await.unwrap(), "hi");
        assert_eq!(client.pool.idle_count(), 0);
        assert_eq!(get_body(&client).await.unwrap(), "{\"models\":[]}");
        assert_eq!(accepts.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn an_http10_response_with_a_transfer_coding_is_not_pooled() {
    // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means its framing is faulty:
    // the recipient closes the connection after the message.
    let (addr, accepts) = serial_upstream(vec![
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        TAGS,
    ])
    .await;
    let client = client_for(addr, Duration::from_secs(60));
    assert_eq!(get_body(&client).await.unwrap(), "hello");
    assert_eq!(client.pool.idle_count(), 0);
    assert_eq!(get_body(&client).await.unwrap(), "{\"models\":[]}");
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn http10_and_close_delimited_responses_are_forwarded_and_not_pooled() {
    for reply in [
        &b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
    ] {
        let (addr, accepts) = serial_upstream(vec![reply]).await;
        let client = client_for(addr, Duration::from_secs(60));
        assert_eq!(get_body(&client).await.unwrap(), "ok");
        assert_eq!(client.pool.idle_count(), 0);
        assert_eq!(get_body(&client).await.unwrap(), "ok");
        assert_eq!(accepts.load(Ordering::SeqCst), 2);
    }
    // No length at all: the body ends with the connection.
    let addr = accept_one(|mut s| async move {
        read_request(&mut s, &mut Vec::new()).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.write_all(b" the close").await.unwrap();
    })
    .await;
    let client = client_for(addr, Duration::from_secs(60));
    let resp = client.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(resp.body().size_hint().exact(), None);
    assert_eq!(body_of(resp).await.unwrap(), "until the close");
    assert_eq!(client.pool.idle_count(), 0);
}

#[tokio::test]
async fn hostile_chunked_framing_is_an_error_and_never_pooled() {
    let cases: [(&'static [u8], &str); 6] = [
        (b"ffffffffffffffffff\r\n", "chunk size too large"),
        (b"5\nhello\r\n0\r\n\r\n", "chunk size"),
        (b"5\r\nhelloX\r\n0\r\n\r\n", "chunk terminator"),
        (b"zz\r\n", "chunk size"),
        (b"\r\n", "chunk size"),
        (b"5;a=b\nhello\r\n0\r\n\r\n", "bare LF"),
    ];
    for (body, why) in cases {
        let mut reply = NDJSON_HEAD.to_vec();
        reply.extend_from_slice(body);
        let reply: &'static [u8] = reply.leak();
        let (addr, _) = serial_upstream(vec![reply]).await;
        let client = client_for(addr, Duration::from_secs(60));
        let e = get_body(&client).await.unwrap_err();
        assert!(e.contains(why), "{e} for {}", String::from_utf8_lossy(body));
        assert_eq!(client.pool.idle_count(), 0);
    }
    // Endless trailers and an endless extension are cut off.
    let mut trailers = NDJSON_HEAD.to_vec();
    trailers.extend_from_slice(b"0\r\n");
    for _ in 0..4000 {
        trailers.extend_from_slice(b"x-pad: yyyyyy\r\n");
    }
    let mut ext = NDJSON_HEAD.to_vec();
    ext.extend_from_slice(b"5;");
    ext.extend_from_slice(&[b'e'; 5000]);
    for (reply, why) in [
        (trailers, "trailers too long"),
        (ext, "chunk extension too long"),
    ] {
        let reply: &'static [u8] = reply.leak();
        let (addr, _) = serial_upstream(vec![reply]).await;
        let client = client_for(addr, Duration::from_secs(60));
        let e = get_body(&client).await.unwrap_err();
        assert!(e.contains(why), "{e}");
        assert_eq!(client.pool.idle_count(), 0);
    }
}

#[tokio::test]
async fn chunk_extensions_and_trailers_are_skipped_and_the_connection_kept() {
    let mut reply = NDJSON_HEAD.to_vec();
    reply.extend_from_slice(b"5;name=\"v;x\"\r\nhello\r\n000\r\nx-t: 1\r\n\r\n");
    let reply: &'static [u8] = reply.leak();
    let (addr, accepts) = serial_upstream(vec![reply]).await;
    let client = client_for(addr, Duration::from_secs(60));
    assert_eq!(get_body(&client).await.unwrap(), "hello");
    assert_eq!(get_body(&client).await.unwrap(), "hello");
    assert_eq!(accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn heads_over_the_limits_are_refused() {
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..101 {
        many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"content-length: 0\r\n\r\n");
    let mut long = b"HTTP/1.1 200 OK\r\nx-long: ".to_vec();
    long.extend_from_slice(&vec![b'a'; wire::MAX_HEAD + 1]);
    // Never ends: the head grows past the limit while still partial.
    let partial = long.clone();
    long.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
    for reply in [many, long, partial] {
        let reply: &'static [u8] = reply.leak();
        let (addr, _) = serial_upstream(vec![reply]).await;
        let client = client_for(addr, Duration::from_secs(60));
        let e = tokio::time::timeout(Duration::from_secs(5), client.clone().oneshot(get("/")))
            .await
            .expect("refused, not waited on")
            .unwrap_err();
        assert!(
            matches!(e, ExchangeError::Wire(wire::WireError::HeadTooLarge)),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn odd_but_valid_heads_are_forwarded_exactly() {
    let (addr, _) = serial_upstream(vec![
        b"HTTP/1.1 200 OK\r\nx-latin: caf\xe9\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\ncontent-length: 3\n\nlf!",
    ])
    .await;
    let client = client_for(addr, Duration::from_secs(60));
    let resp = client.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(resp.headers()["x-latin"].as_bytes(), b"caf\xe9");
    assert_eq!(body_of(resp).await.unwrap(), "ok");
    assert_eq!(get_body(&client).await.unwrap(), "lf!");
    // A folded header line (obs-fold) and a space before the colon are refused.
    for reply in [
        &b"HTTP/1.1 200 OK\r\nx-a: b\r\n c\r\ncontent-length: 0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length : 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n",
    ] {
        let (addr, _) = serial_upstream(vec![reply]).await;
        let client = client_for(addr, Duration::from_secs(60));
        let e = client.clone().oneshot(get("/")).await.unwrap_err();
        assert!(matches!(e, ExchangeError::Wire(_)), "{e:?}");
    }
}

/// A request body: `first` (sent at once), then `rest` after the test says so, then an error
/// (a policy refusal) or the end.
type FrameTx = mpsc::Sender<Result<http_body::Frame<Bytes>, std::io::Error>>;

fn streamed(
    content_length: Option<usize>,
) -> (
    FrameTx,
    Request<ClientBody<impl Body<Data = Bytes, Error = std::io::Error>>>,
) {
    let (tx, rx) = mpsc::channel(4);
    let mut req = Request::post("/api/generate").header("host", "upstream");
    if let Some(n) = content_length {
        req = req.header("content-length", n.to_string());
    }
    let req = req
        .body(wrap(http_body_util::StreamBody::new(tokio_stream_from(rx))))
        .unwrap();
    (tx, req)
}

/// An upstream that records everything it reads on its first connection until EOF, and
/// reports it (the request was abandoned: no answer).
async fn recording_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Receiver<Vec<u8>>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        let _ = tx.send(got);
    });
    (addr, rx)
}

#[tokio::test]
async fn a_refused_body_never_completes_upstream_and_the_connection_closes() {
    for length in [None, Some(10)] {
        let (addr, seen) = recording_upstream().await;
        let client = client_for(addr, Duration::from_secs(60));
        let (tx, req) = streamed(length);
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"hello"))))
            .await
            .unwrap();
        let call = tokio::spawn(client.clone().oneshot(req));
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The policy verdict: the frame holding the rest becomes an error.
        tx.send(Err(std::io::Error::other("refused")))
            .await
            .unwrap();
        let e = call.await.unwrap().unwrap_err();
        assert!(matches!(e, ExchangeError::Client(_)), "{e:?}");
        let got = tokio::time::timeout(Duration::from_secs(5), seen)
            .await
            .expect("the upstream connection is closed")
            .unwrap();
        let want: &[u8] = match length {
            None => b"POST /api/generate HTTP/1.1\r\nhost: upstream\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
            Some(_) => b"POST /api/generate HTTP/1.1\r\nhost: upstream\r\ncontent-length: 10\r\n\r\nhello",
        };
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
        assert_eq!(client.pool.idle_count(), 0);
    }
}

#[tokio::test]
async fn an_informational_answer_during_the_upload_does_not_stop_it() {
    // An upstream may send a 1xx (103 Early Hints, an unsolicited 100 Continue) while it
    // reads the body; the body must still be sent whole, or both sides wait for ever.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (seen_tx, seen) = tokio::sync::oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
        while !got.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
        let _ = seen_tx.send(got);
        s.write_all(TAGS).await.unwrap();
        let _ = s.read(&mut chunk).await;
    });
    let client = client_for(addr, Duration::from_secs(60));
    let (tx, req) = streamed(None);
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"hello"))))
        .await
        .unwrap();
    let call = tokio::spawn(client.clone().oneshot(req));
    tokio::time::sleep(Duration::from_millis(50)).await;
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b" world"))))
        .await
        .unwrap();
    drop(tx);
    let resp = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the body is sent whole and the answer comes")
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(seen
        .await
        .unwrap()
        .ends_with(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
    assert_eq!(body_of(resp).await.unwrap(), "{\"models\":[]}");
    assert_eq!(client.pool.idle_count(), 1, "the upload was complete");
}

#[tokio::test]
async fn a_retry_happens_once_at_most() {
    // Every connection: the first request on it is answered only on the very first
    // connection; any other request is read and the connection closed without an answer.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let (count, log) = (accepts.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(req) = read_request(&mut s, &mut buf).await {
                    log.lock().unwrap().push(req);
                    if n > 0 || log.lock().unwrap().len() > 1 {
                        return;
                    }
                    s.write_all(TAGS).await.unwrap();
                }
            });
        }
    });
    let client = client_for(addr, Duration::from_secs(60));
    assert_eq!(get_body(&client).await.unwrap(), "{\"models\":[]}");
    // The GET on the reused connection dies unanswered, is sent once more on a new
    // connection, which dies too: an error, not a loop.
    let e = client.clone().oneshot(get("/again")).await.unwrap_err();
    assert!(matches!(e, ExchangeError::Closed), "{e:?}");
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
    assert_eq!(requests.lock().unwrap().len(), 3);
    // A POST on a fresh connection that dies is not sent again.
    let post = Request::post("/api/generate")
        .header("content-length", "2")
        .body(wrap(Full::new(Bytes::from_static(b"{}"))))
        .unwrap();
    let e = client.clone().oneshot(post).await.unwrap_err();
    assert!(matches!(e, ExchangeError::Closed), "{e:?}");
    assert_eq!(accepts.load(Ordering::SeqCst), 3);
    assert_eq!(requests.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_streamed_post_on_a_reused_connection_that_dies_is_not_replayed() {
    let (addr, accepts) = crossing_close_upstream().await;
    let client = client_for(addr, Duration::from_secs(60));
    assert_eq!(get_body(&client).await.unwrap(), "{\"models\":[]}");
    let (tx, req) = streamed(Some(10));
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"hello"))))
        .await
        .unwrap();
    let call = tokio::spawn(client.clone().oneshot(req));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let _ = tx
        .send(Ok(http_body::Frame::data(Bytes::from_static(b"world"))))
        .await;
    drop(tx);
    let e = call.await.unwrap().unwrap_err();
    assert!(
        matches!(e, ExchangeError::Closed | ExchangeError::Io(_)),
        "{e:?}"
    );
    assert_eq!(accepts.load(Ordering::SeqCst), 1, "never sent again");
}

#[tokio::test]
async fn a_client_gone_before_the_head_closes_the_upstream_connection() {
    let (addr, seen) = recording_upstream().await;
    let client = client_for(addr, Duration::from_secs(60));
    let call = tokio::spawn(client.clone().oneshot(get("/api/generate")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    call.abort();
    let got = tokio::time::timeout(Duration::from_secs(5), seen)
        .await
        .expect("the upstream sees the close")
        .unwrap();
    assert!(got.starts_with(b"GET /api/generate HTTP/1.1\r\n"));
    assert_eq!(client.pool.idle_count(), 0);
}

#[tokio::test]
async fn a_body_dropped_mid_stream_closes_the_upstream_connection() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (eof_tx, eof) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        read_request(&mut s, &mut Vec::new()).await.unwrap();
        s.write_all(NDJSON_HEAD).await.unwrap();
        s.write_all(b"6\r\nfirst\n\r\n").await.unwrap();
        let mut chunk = [0u8; 64];
        if let Ok(0) = s.read(&mut chunk).await {
            let _ = eof_tx.send(());
        }
    });
    let client = client_for(addr, Duration::from_secs(60));
    let resp = client.clone().oneshot(get("/api/chat")).await.unwrap();
    let mut body = resp.into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "first\n"
    );
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), eof)
        .await
        .expect("the upstream sees EOF")
        .unwrap();
}

#[tokio::test]
async fn a_slow_reader_holds_back_the_upstream() {
    // 32 MiB offered; the client reads one frame and stops. The proxy must not read ahead:
    // what the upstream managed to write is bounded by the socket buffers, not the body.
    const TOTAL: usize = 32 << 20;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let w = written.clone();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        read_request(&mut s, &mut Vec::new()).await.unwrap();
        s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {TOTAL}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let piece = vec![b'x'; 64 << 10];
        while w.load(Ordering::SeqCst) < TOTAL {
            if s.write_all(&piece).await.is_err() {
                return;
            }
            w.fetch_add(piece.len(), Ordering::SeqCst);
        }
    });
    let client = client_for(addr, Duration::from_secs(60));
    let resp = client.clone().oneshot(get("/api/pull")).await.unwrap();
    let mut body = resp.into_body();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(frame.len() <= body::MAX_FRAME, "{}", frame.len());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let w = written.load(Ordering::SeqCst);
    assert!(w < TOTAL / 2, "the upstream wrote {w} bytes unread");
    // Frames stay within the limit while it drains.
    for _ in 0..64 {
        let f = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(f.len() <= body::MAX_FRAME, "{}", f.len());
    }
}

#[tokio::test]
async fn an_answer_while_a_large_upload_still_flows_is_forwarded() {
    // Ollama answers the upload of a blob it already has without reading the body, and Go's
    // server then half-closes, waits, and closes. The client's body is always ready, so the
    // proxy is busy writing when the answer comes; the answer must still be heard.
    let addr = accept_one(|mut s| async move {
        let mut chunk = [0u8; 4096];
        let _ = s.read(&mut chunk).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        let _ = s.shutdown().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    })
    .await;
    const N: usize = 1024;
    let piece = Bytes::from(vec![b'x'; 64 << 10]);
    let frames = futures_util::stream::iter(
        (0..N).map(move |_| Ok::<_, std::io::Error>(http_body::Frame::data(piece.clone()))),
    );
    let req = Request::post("/api/blobs/sha256:x")
        .header("content-length", (N * (64 << 10)).to_string())
        .body(wrap(http_body_util::StreamBody::new(frames)))
        .unwrap();
    let client = client_for(addr, Duration::from_secs(60));
    let resp = tokio::time::timeout(Duration::from_secs(2), client.clone().oneshot(req))
        .await
        .expect("the answer is heard while the upload is blocked")
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_of(resp).await.unwrap(), "ok");
    assert_eq!(client.pool.idle_count(), 0);
}

#[tokio::test]
async fn endless_informational_heads_are_refused_after_sixteen() {
    let mut sixteen = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n".repeat(16);
    sixteen.extend_from_slice(TAGS);
    let sixteen: &'static [u8] = sixteen.leak();
    let (addr, _) = serial_upstream(vec![sixteen]).await;
    let client = client_for(addr, Duration::from_secs(60));
    assert_eq!(get_body(&client).await.unwrap(), "{\"models\":[]}");

    let seventeen: &'static [u8] = b"HTTP/1.1 103 Early Hints\r\n\r\n".repeat(17).leak();
    let (addr, _) = serial_upstream(vec![seventeen]).await;
    let client = client_for(addr, Duration::from_secs(60));
    let e = client.clone().oneshot(get("/")).await.unwrap_err();
    assert!(
        matches!(
            e,
            ExchangeError::Wire(wire::WireError::Head("too many informational responses"))
        ),
        "{e:?}"
    );
    assert_eq!(client.pool.idle_count(), 0);
}
