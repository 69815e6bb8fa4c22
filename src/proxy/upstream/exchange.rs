//! One request/response exchange on an upstream connection.
//!
//! The head, and whatever request body the client already sent, leave in one write. The rest
//! of the body streams frame by frame; an upstream that answers before it has the whole body
//! (an early error) is listened to, and its connection is not reused. It is listened to
//! before each frame and while a write is blocked (an upstream that answered may never read
//! the rest, and a client's body may always be ready); an informational head sent meanwhile
//! (`103`, an unasked `100`) is skipped and the upload goes on. The response head is
//! read (informational `1xx` heads skipped) and the body handed to [`UpstreamBody`].
//!
//! **Retries.** An idle connection the upstream has just closed is found before use (see
//! [`Pool::checkout`]), but a close can cross the request in flight. The request is sent again
//! on a new connection, once, when the reused connection failed before a byte of the response
//! arrived and nothing was lost: the head's write failed (the upstream read nothing), or the
//! method is idempotent (RFC 9110 §9.2.2) and the whole request was in that first write.
//! A request body that streamed beyond the first write is never replayed.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, Version};
use http_body::Body;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use super::body::UpstreamBody;
use super::pool::{Conn, Pool};
use super::wire::{self, ReqFraming};
use super::ExchangeError;
use crate::proxy::fault::ClientBodyError;
use crate::proxy::headers::Forwarding;

/// Sends `req` upstream and returns the response with its body still on the connection.
///
/// The request head is encoded here, before the future exists: the future keeps only what
/// the exchange needs afterwards (the method, the body, the encoded head), not the request,
/// and the rarely taken steps (dialling a new connection, streaming a body that was not all
/// there) are boxed where they happen. The future is about a third of the size it was as one
/// `async fn`, and it is moved whole into its box on every request.
pub(crate) fn exchange<B>(
    pool: Arc<Pool>,
    req: Request<B>,
) -> impl Future<Output = Result<Response<UpstreamBody>, ExchangeError>> + Send + 'static
where
    B: Body<Data = Bytes, Error = ClientBodyError> + Send + 'static,
{
    let (parts, body) = req.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut first = HeadBuf::take();
    let framing = wire::encode_head(
        &mut first,
        &parts.method,
        target,
        &parts.headers,
        parts.extensions.get::<Forwarding>(),
        body.is_end_stream(),
    );
    let method = parts.method;
    async move {
        let mut body = pin!(body);
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
        let replayable = sent_all && is_idempotent(&method);

        let mut fresh_only = false;
        loop {
            let (mut conn, reused) = match (fresh_only, pool.checkout()) {
                (false, Some(conn)) => (conn, true),
                _ => (Box::pin(pool.connect()).await?, false),
            };
            #[cfg(test)]
            WRITES.with(|w| w.set(w.get() + 1));
            if let Err(e) = conn.io.write_all(&first).await {
                if reused {
                    fresh_only = true;
                    continue;
                }
                return Err(ExchangeError::Io(e));
            }
            let mut complete = sent_all;
            if !sent_all {
                complete = Box::pin(send_rest(&mut conn, body.as_mut(), framing)).await?;
            }
            match read_head(&mut conn).await {
                Ok(mut head) => {
                    let (kind, keep_alive) = wire::body_kind(&method, &mut head)?;
                    if kind == wire::BodyKind::Chunked {
                        // A body broken from its first bytes gets the 502, not a head and a
                        // cut connection.
                        wire::Chunked::check_first(&conn.buf)?;
                    }
                    let mut resp =
                        Response::new(UpstreamBody::new(conn, kind, keep_alive && complete, pool));
                    *resp.status_mut() = head.status;
                    if let Some(reason) = head.reason {
                        resp.extensions_mut().insert(reason);
                    }
                    // The proxy answers in its own version, whatever the upstream spoke (RFC
                    // 9110 §2.5); hyper writes HTTP/1.0 to an HTTP/1.0 client itself.
                    *resp.version_mut() = Version::HTTP_11;
                    *resp.headers_mut() = head.headers;
                    if !complete {
                        // Answered before the body was all sent: the client's connection
                        // closes after this answer (the rest of its body is never read), and
                        // says so, as Go's server does (RFC 9112 §9.6).
                        resp.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    return Ok(resp);
                }
                Err(Unanswered::Before(_)) if reused && replayable => fresh_only = true,
                Err(Unanswered::Before(e)) | Err(Unanswered::After(e)) => return Err(e),
            }
        }
    }
}

/// Largest first-write buffer kept for the next request (one per worker thread).
const KEPT_HEAD_BUF: usize = 8 * 1024;

std::thread_local! {
    /// This worker thread's spare first-write buffer.
    static SPARE_HEAD_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The buffer of an exchange's first write (the head, and the body the client already sent).
///
/// It goes back to its worker thread when the exchange ends, and the next request writes into
/// it: one allocation and one free fewer per request. A buffer a large body grew beyond
/// [`KEPT_HEAD_BUF`] is freed as before, so a worker keeps at most that much.
struct HeadBuf(Vec<u8>);

impl HeadBuf {
    fn take() -> HeadBuf {
        let mut buf = SPARE_HEAD_BUF.take();
        buf.clear();
        buf.reserve(512);
        HeadBuf(buf)
    }
}

impl std::ops::Deref for HeadBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for HeadBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for HeadBuf {
    fn drop(&mut self) {
        if self.0.capacity() <= KEPT_HEAD_BUF {
            SPARE_HEAD_BUF.set(std::mem::take(&mut self.0));
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

/// Reads what the upstream sent while the body is still being sent: `Ready(Ok)` for an
/// answer (informational heads are skipped), `Ready(Err)` when it went, `Pending` while it
/// has said nothing.
fn poll_answer(
    conn: &mut Conn,
    cx: &mut std::task::Context<'_>,
) -> Poll<Result<(), ExchangeError>> {
    loop {
        conn.buf.reserve(1024);
        match poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(ExchangeError::Closed)),
            Poll::Ready(Ok(_)) => match only_informational(&mut conn.buf) {
                // A `103`, an unasked `100`: no answer, keep sending.
                Ok(true) => {}
                Ok(false) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e)),
            },
            Poll::Ready(Err(e)) => return Poll::Ready(Err(ExchangeError::Io(e))),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// Writes `data`; `false` when the upstream answered first. A blocked write listens for
/// the answer: an upstream that answered early may never read the rest.
async fn write_or_answer(conn: &mut Conn, mut data: &[u8]) -> Result<bool, ExchangeError> {
    poll_fn(|cx| {
        while !data.is_empty() {
            #[cfg(test)]
            WRITES.with(|w| w.set(w.get() + 1));
            match Pin::new(&mut conn.io).poll_write(cx, data) {
                Poll::Ready(Ok(0)) => {
                    let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
                    return Poll::Ready(Err(ExchangeError::Io(e)));
                }
                Poll::Ready(Ok(n)) => data = &data[n..],
                // It may have answered, then closed: the answer is still there to be read.
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(match poll_answer(conn, cx) {
                        Poll::Ready(Ok(())) => Ok(false),
                        _ => Err(ExchangeError::Io(e)),
                    })
                }
                Poll::Pending => return poll_answer(conn, cx).map_ok(|()| false),
            }
        }
        Poll::Ready(Ok(true))
    })
    .await
}

/// Most request-body bytes gathered into one write: the frames that are ready together (a
/// client's many small chunks) go in one write, up to this much.
const GATHER_MAX: usize = 64 * 1024;

#[cfg(test)]
std::thread_local! {
    /// Writes to upstream sockets on this thread (tests count them).
    pub(crate) static WRITES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Streams the rest of the request body; `false` when the upstream answered before the body
/// was complete (the connection is then not reused).
///
/// The frames that are ready together are written together (up to [`GATHER_MAX`]): hyper
/// hands over a chunked body one chunk at a time, and a client sending a megabyte as
/// one-byte chunks must not cost a write and a segment to the upstream per chunk. A frame
/// that arrives alone is written after one scheduler turn (in which hyper finds no further
/// chunk): nothing waits for a timer.
async fn send_rest<B>(
    conn: &mut Conn,
    mut body: Pin<&mut B>,
    framing: ReqFraming,
) -> Result<bool, ExchangeError>
where
    B: Body<Data = Bytes, Error = ClientBodyError>,
{
    let chunked = framing == ReqFraming::Chunked;
    let mut scratch = Vec::new();
    loop {
        scratch.clear();
        // One frame gathered alone is written from its own buffer, without a copy.
        let mut one: Option<Bytes> = None;
        let mut end = false;
        // Whether the last turn given up for more frames brought none (see below).
        let mut turned_in_vain = false;
        let polled = poll_fn(|cx| {
            // The upstream first: a body that is always ready must not hide an answer.
            if let Poll::Ready(answer) = poll_answer(conn, cx) {
                return Poll::Ready(Err(answer));
            }
            loop {
                let have = one.as_ref().map_or(0, Bytes::len) + scratch.len();
                if have >= GATHER_MAX {
                    return Poll::Ready(Ok(()));
                }
                let frame = match body.as_mut().poll_frame(cx) {
                    // hyper hands a body over one frame at a time: its connection (this same
                    // task) decodes the next chunk only once the last one is taken. One turn
                    // given up lets it decode what already arrived; a turn that brings nothing
                    // more ends the gathering. No timer: a lone frame waits one turn.
                    Poll::Pending if have > 0 && !turned_in_vain => {
                        turned_in_vain = true;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Poll::Pending if have > 0 => return Poll::Ready(Ok(())),
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        end = true;
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(Err(ExchangeError::Client(e))))
                    }
                    Poll::Ready(Some(Ok(frame))) => frame,
                };
                turned_in_vain = false;
                match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if chunked => wire::encode_chunk(&mut scratch, &data),
                    Ok(data) if one.is_none() && scratch.is_empty() => one = Some(data),
                    Ok(data) => {
                        if let Some(first) = one.take() {
                            scratch.extend_from_slice(&first);
                        }
                        scratch.extend_from_slice(&data);
                    }
                    // Trailers: not forwarded (the chunked framing ends without them).
                    Err(_) => {}
                }
                if body.is_end_stream() {
                    end = true;
                    return Poll::Ready(Ok(()));
                }
            }
        })
        .await;
        match polled {
            Ok(()) => {}
            Err(Ok(())) => return Ok(false),
            Err(Err(e)) => return Err(e),
        }
        if chunked && end {
            scratch.extend_from_slice(wire::LAST_CHUNK);
        }
        let out: &[u8] = match &one {
            Some(first) => first,
            None => &scratch,
        };
        if !out.is_empty() && !write_or_answer(conn, out).await? {
            return Ok(false);
        }
        if end {
            return Ok(true);
        }
    }
}

/// Skips the complete informational (`1xx`) heads at the start of `buf`; `true` when nothing
/// else is there yet but the start of another such head (or too little to tell).
fn only_informational(buf: &mut BytesMut) -> Result<bool, ExchangeError> {
    // `HTTP/1.x 1`: the status's first digit is the tenth byte.
    const DIGIT: usize = b"HTTP/1.1 ".len();
    loop {
        if buf.len() <= DIGIT {
            return Ok(true);
        }
        if buf[DIGIT] != b'1' {
            return Ok(false);
        }
        match wire::parse_head(buf)? {
            Some(head) if head.status == http::StatusCode::SWITCHING_PROTOCOLS => {
                return Err(wire::WireError::Upgrade.into())
            }
            Some(head) if head.status.is_informational() => {}
            // Not informational after all: it was consumed, the answer is lost.
            Some(_) => return Err(wire::WireError::Head("status").into()),
            None => return Ok(true),
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

/// Most informational (`1xx`) heads accepted before the final one: an upstream that sends them
/// without end is refused (`502`) instead of holding the request for ever.
const MAX_INFORMATIONAL: usize = 16;

/// Reads the response head, skipping informational (`1xx`) heads.
async fn read_head(conn: &mut Conn) -> Result<wire::Head, Unanswered> {
    let mut any = !conn.buf.is_empty();
    let mut informational = 0;
    loop {
        if !conn.buf.is_empty() {
            if let Some(head) = wire::parse_head(&mut conn.buf)? {
                if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
                    return Err(wire::WireError::Upgrade.into());
                }
                if head.status.is_informational() {
                    any = true;
                    informational += 1;
                    if informational > MAX_INFORMATIONAL {
                        return Err(
                            wire::WireError::Head("too many informational responses").into()
                        );
                    }
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
