//! The classifier against real hyper and hyper-util errors, produced over loopback sockets
//! and in-memory connections (hyper's error kinds cannot be built by hand).

use super::*;
use http::Request;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Serves one in-memory connection fed `raw`; hands each request body to the caller.
async fn incoming_from(raw: &'static [u8], close_after: bool) -> Incoming {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let svc = service_fn(move |req: Request<Incoming>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(req.into_body());
                // Keep the connection reading the body until the test is done with it.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, std::convert::Infallible>(http::Response::new(
                    http_body_util::Empty::<Bytes>::new(),
                ))
            }
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(server), svc)
            .await;
    });
    let mut client = client;
    client.write_all(raw).await.unwrap();
    let body = rx.recv().await.unwrap();
    if close_after {
        client.shutdown().await.unwrap();
        drop(client);
    } else {
        // Keep the client side open for the rest of the test.
        std::mem::forget(client);
    }
    body
}

async fn read_error(body: Incoming) -> ClientBodyError {
    let cell = Arc::new(FaultCell::default());
    let mut body = ClientBody::new(body, Duration::from_millis(200), cell.clone());
    loop {
        match http_body_util::BodyExt::frame(&mut body).await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                assert_eq!(
                    cell.get(),
                    Some(e.fault()),
                    "the cell notes the first fault"
                );
                return e;
            }
            None => panic!("body ended without an error"),
        }
    }
}

const BAD_CHUNK: &[u8] =
    b"POST /api/blobs/x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n";
const SHORT_LENGTH: &[u8] =
    b"POST /api/blobs/x HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\nonly-some";
const SHORT_CHUNKED: &[u8] =
    b"POST /api/blobs/x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel";

#[tokio::test]
async fn malformed_chunk_size_is_a_malformed_client_body() {
    let e = read_error(incoming_from(BAD_CHUNK, false).await).await;
    assert_eq!(e.fault(), ClientFault::Malformed);
}

#[tokio::test]
async fn client_closing_mid_body_is_an_aborted_client_body() {
    for raw in [SHORT_LENGTH, SHORT_CHUNKED] {
        let e = read_error(incoming_from(raw, true).await).await;
        assert_eq!(e.fault(), ClientFault::Aborted);
    }
}

#[tokio::test(start_paused = true)]
async fn stalled_body_times_out_as_idle() {
    let e = read_error(incoming_from(SHORT_LENGTH, false).await).await;
    assert!(matches!(e, ClientBodyError::Idle(d) if d == Duration::from_millis(200)));
    assert_eq!(e.fault(), ClientFault::Idle);
}

fn client(
    timeout: Option<Duration>,
) -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    ClientBody,
> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(timeout);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

async fn post(
    url: &str,
    body: Incoming,
    timeout: Option<Duration>,
) -> hyper_util::client::legacy::Error {
    let req = Request::post(url)
        .body(ClientBody::new(
            body,
            Duration::from_secs(60),
            Arc::default(),
        ))
        .unwrap();
    client(timeout)
        .request(req)
        .await
        .expect_err("the exchange must fail")
}

/// An upstream that reads everything and answers with `reply` (nothing: just reads).
async fn upstream(reply: Option<&'static [u8]>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
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
    url
}

const EMPTY_REQ: &[u8] = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n";

#[tokio::test]
async fn client_body_faults_are_found_in_the_upstream_error_chain() {
    let url = upstream(None).await;
    let e = post(&url, incoming_from(BAD_CHUNK, false).await, None).await;
    assert_eq!(classify(&e), Fault::Client(ClientFault::Malformed));
    let e = post(&url, incoming_from(SHORT_LENGTH, true).await, None).await;
    assert_eq!(classify(&e), Fault::Client(ClientFault::Aborted));
}

#[tokio::test]
async fn refused_connect_is_an_upstream_connect_fault() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    drop(l);
    let e = post(&url, incoming_from(EMPTY_REQ, false).await, None).await;
    assert!(e.is_connect());
    assert_eq!(classify(&e), Fault::Upstream(UpstreamErrorKind::Connect));
}

#[tokio::test(start_paused = true)]
async fn connect_timeout_is_an_upstream_timeout_fault() {
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
    let url = format!("http://{addr}/");
    let e = post(
        &url,
        incoming_from(EMPTY_REQ, false).await,
        Some(Duration::from_secs(5)),
    )
    .await;
    assert_eq!(classify(&e), Fault::Upstream(UpstreamErrorKind::Timeout));
    drop(l);
}

#[tokio::test]
async fn upstream_closing_or_garbling_the_response_is_an_upstream_reset() {
    for reply in [&b""[..], b"NOT HTTP AT ALL\r\n\r\n"] {
        let url = upstream(Some(reply)).await;
        let e = post(&url, incoming_from(EMPTY_REQ, false).await, None).await;
        assert_eq!(
            classify(&e),
            Fault::Upstream(UpstreamErrorKind::Reset),
            "{reply:?}"
        );
    }
}

#[test]
fn the_fault_cell_keeps_the_first_client_fault() {
    let cell = FaultCell::default();
    assert_eq!(cell.get(), None);
    cell.set(ClientFault::Aborted);
    cell.set(ClientFault::Malformed);
    assert_eq!(cell.get(), Some(ClientFault::Aborted));
}

/// A body that yields the given frames (or errors) in order, then ends.
struct Frames(std::collections::VecDeque<Result<Frame<Bytes>, BoxError>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front())
    }
}

fn frames(items: Vec<Result<Frame<Bytes>, BoxError>>) -> Frames {
    Frames(items.into())
}

#[tokio::test]
async fn request_body_bytes_are_counted_frame_by_frame_trailers_not() {
    let cell = Arc::new(FaultCell::default());
    let mut trailers = http::HeaderMap::new();
    trailers.insert(
        "x-t",
        http::HeaderValue::from_static("trailer-bytes-do-not-count"),
    );
    let body = frames(vec![
        Ok(Frame::data(Bytes::from(vec![b'a'; 1000]))),
        Ok(Frame::data(Bytes::new())),
        Ok(Frame::data(Bytes::from(vec![b'b'; 24]))),
        Ok(Frame::trailers(trailers)),
    ]);
    let body = ClientBody::new(body, Duration::from_secs(5), cell.clone());
    let collected = http_body_util::BodyExt::collect(body).await.unwrap();
    assert_eq!(collected.to_bytes().len(), 1024);
    assert_eq!(cell.bytes_in(), 1024);
}

#[tokio::test]
async fn an_error_mid_body_counts_what_passed_before_it() {
    let cell = Arc::new(FaultCell::default());
    let body = frames(vec![
        Ok(Frame::data(Bytes::from(vec![b'a'; 300]))),
        Ok(Frame::data(Bytes::from(vec![b'b'; 200]))),
        Err(Box::new(io::Error::from(io::ErrorKind::ConnectionReset)) as BoxError),
        Ok(Frame::data(Bytes::from(vec![b'c'; 999]))),
    ]);
    let mut body = ClientBody::new(body, Duration::from_secs(5), cell.clone());
    while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {}
    assert_eq!(cell.bytes_in(), 500);
    assert_eq!(cell.get(), Some(ClientFault::Aborted));
}
