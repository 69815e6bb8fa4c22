//! Client-body faults against real hyper errors, produced over in-memory connections
//! (hyper's error kinds cannot be built by hand). The upstream client's own classification
//! is tested in `proxy::upstream`.

use super::*;
use http::Request;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Serves one in-memory connection fed `raw`; hands each request body to the caller.
pub(crate) async fn incoming_from(raw: &'static [u8], close_after: bool) -> Incoming {
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

pub(crate) const BAD_CHUNK: &[u8] =
    b"POST /api/blobs/x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n";
pub(crate) const SHORT_LENGTH: &[u8] =
    b"POST /api/blobs/x HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\nonly-some";
pub(crate) const SHORT_CHUNKED: &[u8] =
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

#[test]
fn a_compressed_body_behind_its_minimum_rate_is_a_stall() {
    let e = ClientBodyError::Read(Box::new(crate::proxy::policy_body::TooSlow));
    assert_eq!(e.fault(), ClientFault::Idle);
    let other = ClientBodyError::Read(Box::new(crate::proxy::policy_body::Refused));
    assert_eq!(other.fault(), ClientFault::Aborted);
}
