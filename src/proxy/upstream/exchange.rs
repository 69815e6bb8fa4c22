//! One request/response exchange on an upstream connection.
//!
//! The head, and whatever request body the client already sent, leave in one write. The rest
//! of the body streams frame by frame; an upstream that answers before it has the whole body
//! (an early error) is listened to, and its connection is not reused. The response head is
//! read (informational `1xx` heads skipped) and the body handed to [`UpstreamBody`].
//!
//! **Retries.** An idle connection the upstream has just closed is found before use (see
//! [`Pool::checkout`]), but a close can cross the request in flight. The request is sent again
//! on a new connection, once, when the reused connection failed before a byte of the response
//! arrived and nothing was lost: the head's write failed (the upstream read nothing), or the
//! method is idempotent (RFC 9110 §9.2.2) and the whole request was in that first write.
//! A request body that streamed beyond the first write is never replayed.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, Bytes};
use http::{Method, Request, Response};
use http_body::Body;
use tokio::io::AsyncWriteExt;
use tokio_util::io::poll_read_buf;

use super::body::UpstreamBody;
use super::pool::{Conn, Pool};
use super::wire::{self, ReqFraming};
use super::ExchangeError;
use crate::proxy::fault::ClientBodyError;

/// Sends `req` upstream and returns the response with its body still on the connection.
pub(crate) async fn exchange<B>(
    pool: Arc<Pool>,
    req: Request<B>,
) -> Result<Response<UpstreamBody>, ExchangeError>
where
    B: Body<Data = Bytes, Error = ClientBodyError> + Send + 'static,
{
    let (parts, body) = req.into_parts();
    let mut body = pin!(body);
    let framing = if body.is_end_stream() {
        ReqFraming::Empty
    } else if parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        ReqFraming::Length
    } else {
        ReqFraming::Chunked
    };
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut first = Vec::with_capacity(512);
    wire::encode_head(&mut first, &parts.method, target, &parts.headers, framing);

    // The body the client already sent goes with the head.
    let mut sent_all = framing == ReqFraming::Empty;
    if !sent_all {
        let polled = poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await;
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    push_data(&mut first, framing, &data);
                }
                sent_all = body.is_end_stream();
            }
            Poll::Ready(None) => sent_all = true,
            Poll::Ready(Some(Err(e))) => return Err(ExchangeError::Client(e)),
            Poll::Pending => {}
        }
        if sent_all && framing == ReqFraming::Chunked {
            first.extend_from_slice(wire::LAST_CHUNK);
        }
    }
    let replayable = sent_all && is_idempotent(&parts.method);

    let mut fresh_only = false;
    loop {
        let (mut conn, reused) = match (fresh_only, pool.checkout()) {
            (false, Some(conn)) => (conn, true),
            _ => (pool.connect().await?, false),
        };
        if let Err(e) = conn.io.write_all(&first).await {
            if reused {
                fresh_only = true;
                continue;
            }
            return Err(ExchangeError::Io(e));
        }
        let mut complete = sent_all;
        if !sent_all {
            complete = send_rest(&mut conn, body.as_mut(), framing).await?;
        }
        match read_head(&mut conn).await {
            Ok(mut head) => {
                let (kind, keep_alive) = wire::body_kind(&parts.method, &mut head)?;
                let mut resp =
                    Response::new(UpstreamBody::new(conn, kind, keep_alive && complete, pool));
                *resp.status_mut() = head.status;
                *resp.version_mut() = head.version;
                *resp.headers_mut() = head.headers;
                return Ok(resp);
            }
            Err(Unanswered::Before(_)) if reused && replayable => fresh_only = true,
            Err(Unanswered::Before(e)) | Err(Unanswered::After(e)) => return Err(e),
        }
    }
}

/// The methods a request of which may be sent twice (RFC 9110 §9.2.2).
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn push_data(out: &mut Vec<u8>, framing: ReqFraming, data: &[u8]) {
    match framing {
        ReqFraming::Chunked => wire::encode_chunk(out, data),
        _ => out.extend_from_slice(data),
    }
}

/// What the body stream or the upstream did first.
enum Next {
    Frame(Option<Result<http_body::Frame<Bytes>, ClientBodyError>>),
    /// The upstream sent bytes (an early answer) before the body was complete.
    Answer,
    /// The upstream closed or broke the connection.
    Gone(Option<std::io::Error>),
}

/// Streams the rest of the request body; `false` when the upstream answered before the body
/// was complete (the connection is then not reused).
async fn send_rest<B>(
    conn: &mut Conn,
    mut body: std::pin::Pin<&mut B>,
    framing: ReqFraming,
) -> Result<bool, ExchangeError>
where
    B: Body<Data = Bytes, Error = ClientBodyError>,
{
    let mut scratch = Vec::new();
    loop {
        let next = poll_fn(|cx| {
            if let Poll::Ready(f) = body.as_mut().poll_frame(cx) {
                return Poll::Ready(Next::Frame(f));
            }
            conn.buf.reserve(1024);
            match poll_read_buf(std::pin::Pin::new(&mut conn.io), cx, &mut conn.buf) {
                Poll::Ready(Ok(0)) => Poll::Ready(Next::Gone(None)),
                Poll::Ready(Ok(_)) => Poll::Ready(Next::Answer),
                Poll::Ready(Err(e)) => Poll::Ready(Next::Gone(Some(e))),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match next {
            Next::Frame(Some(Ok(frame))) => {
                let end = body.is_end_stream();
                if let Ok(mut data) = frame.into_data() {
                    if framing == ReqFraming::Chunked {
                        scratch.clear();
                        wire::encode_chunk(&mut scratch, data.chunk());
                        if end {
                            scratch.extend_from_slice(wire::LAST_CHUNK);
                        }
                        conn.io.write_all(&scratch).await
                    } else {
                        conn.io.write_all_buf(&mut data).await
                    }
                    .map_err(ExchangeError::Io)?;
                } else if end && framing == ReqFraming::Chunked {
                    conn.io
                        .write_all(wire::LAST_CHUNK)
                        .await
                        .map_err(ExchangeError::Io)?;
                }
                if end {
                    return Ok(true);
                }
            }
            Next::Frame(None) => {
                if framing == ReqFraming::Chunked {
                    conn.io
                        .write_all(wire::LAST_CHUNK)
                        .await
                        .map_err(ExchangeError::Io)?;
                }
                return Ok(true);
            }
            Next::Frame(Some(Err(e))) => return Err(ExchangeError::Client(e)),
            Next::Answer => return Ok(false),
            Next::Gone(Some(e)) => return Err(ExchangeError::Io(e)),
            Next::Gone(None) => return Err(ExchangeError::Closed),
        }
    }
}

/// A response head that did not come: `Before` any byte of it arrived (the request may be
/// sent again), or `After`.
enum Unanswered {
    Before(ExchangeError),
    After(ExchangeError),
}

impl From<wire::WireError> for Unanswered {
    fn from(e: wire::WireError) -> Self {
        Unanswered::After(e.into())
    }
}

/// Reads the response head, skipping informational (`1xx`) heads.
async fn read_head(conn: &mut Conn) -> Result<wire::Head, Unanswered> {
    let mut any = !conn.buf.is_empty();
    loop {
        if !conn.buf.is_empty() {
            if let Some(head) = wire::parse_head(&mut conn.buf)? {
                if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
                    return Err(wire::WireError::Upgrade.into());
                }
                if head.status.is_informational() {
                    any = true;
                    continue;
                }
                return Ok(head);
            }
        }
        conn.buf.reserve(4096);
        let read =
            poll_fn(|cx| poll_read_buf(std::pin::Pin::new(&mut conn.io), cx, &mut conn.buf)).await;
        match read {
            Ok(0) if any => return Err(Unanswered::After(ExchangeError::Closed)),
            Ok(0) => return Err(Unanswered::Before(ExchangeError::Closed)),
            Ok(_) => any = true,
            Err(e) if any => return Err(Unanswered::After(ExchangeError::Io(e))),
            Err(e) => return Err(Unanswered::Before(ExchangeError::Io(e))),
        }
    }
}
