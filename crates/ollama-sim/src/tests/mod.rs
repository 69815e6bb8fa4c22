//! Tests of the simulator over real sockets on `127.0.0.1:0`, with a raw hyper client so
//! frames, headers and `Host` are exactly what the test says.

mod blobs;
mod hosts;
mod openai;
mod routes;
mod streams;
mod transfers;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::{spawn, SimConfig, SimHandle};

/// Starts a simulator on an ephemeral loopback port.
pub(super) async fn start(cfg: SimConfig) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn(listener, cfg).await
}

/// Default config with short delays, so the suite stays fast.
pub(super) fn quick() -> SimConfig {
    SimConfig {
        chunk_delay: std::time::Duration::from_millis(2),
        chunks: 3,
        transfer_duration: std::time::Duration::from_millis(6),
        ..SimConfig::default()
    }
}

/// A request builder with Ollama's usual `Host`.
pub(super) fn req(method: &str, path: &str) -> http::request::Builder {
    req_host(method, path, "localhost:11434")
}

/// A request builder with the given `Host`.
pub(super) fn req_host(method: &str, path: &str, host: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
}

/// Opens a fresh connection and sends one request; returns the response head and body.
pub(super) async fn send<B>(sim: &SimHandle, req: Request<B>) -> Response<Incoming>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(sim.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender.send_request(req).await.unwrap()
}

/// A finished exchange: head, every body frame as received, and a body error if any.
#[derive(Debug)]
pub(super) struct Got {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) frames: Vec<Bytes>,
    pub(super) error: Option<String>,
}

impl Got {
    pub(super) fn body(&self) -> String {
        self.frames
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect()
    }

    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body()).unwrap()
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// Reads a response to its end, frame by frame.
pub(super) async fn collect(response: Response<Incoming>) -> Got {
    let (parts, mut body) = response.into_parts();
    let mut frames = Vec::new();
    let mut error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    frames.push(data);
                }
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    Got {
        status: parts.status,
        headers: parts.headers,
        frames,
        error,
    }
}

/// Sends a bodiless request and reads the whole answer.
pub(super) async fn fetch(sim: &SimHandle, req: http::request::Builder) -> Got {
    collect(send(sim, req.body(Empty::<Bytes>::new()).unwrap()).await).await
}

/// Sends `body` (with `Content-Length`) and reads the whole answer.
pub(super) async fn post(sim: &SimHandle, req: http::request::Builder, body: &str) -> Got {
    let body = Full::new(Bytes::copy_from_slice(body.as_bytes()));
    collect(send(sim, req.body(body).unwrap()).await).await
}

/// A large request body produced frame by frame: `count` copies of `chunk`, chunked unless
/// `known_length`.
pub(super) struct Repeat {
    pub(super) chunk: Bytes,
    pub(super) count: usize,
    pub(super) known_length: bool,
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.count == 0 {
            return Poll::Ready(None);
        }
        self.count -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }

    fn size_hint(&self) -> SizeHint {
        if self.known_length {
            SizeHint::with_exact((self.chunk.len() * self.count) as u64)
        } else {
            SizeHint::default()
        }
    }
}
