//! HTTP/1.1 on an upstream connection, as bytes: the request head written, the response head
//! parsed (httparse), the response body's framing decided (RFC 9112 §6.3) and a chunked body
//! decoded. No I/O here: [`super::exchange`] and [`super::body`] read and write.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING,
};
use http::{Method, StatusCode, Version};

use crate::proxy::headers::{
    header_line, is_hop_by_hop, remove_connection_named, write_forwarded, Forwarding,
};

/// Most response headers accepted (hyper's default).
const MAX_HEADERS: usize = 100;
/// Largest response head accepted; beyond it the response is refused (`502`).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line (size, extensions) and trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// A malformed or refused upstream message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// The response head is not HTTP/1.x.
    #[error("invalid response head: {0}")]
    Head(&'static str),
    /// The response head is larger than [`MAX_HEAD`] or has too many headers.
    #[error("response head too large")]
    HeadTooLarge,
    /// `Content-Length` is not a number, or two of them disagree.
    #[error("invalid Content-Length in the response")]
    ContentLength,
    /// The chunked body's framing is broken.
    #[error("invalid chunked body: {0}")]
    Chunk(&'static str),
    /// A transfer coding other than one `chunked` frames the body: the proxy cannot decode it.
    #[error("unsupported transfer coding in the response")]
    TransferCoding,
    /// `101 Switching Protocols`: the proxy forwards no protocol upgrade.
    #[error("the upstream switched protocols (101), which is not forwarded")]
    Upgrade,
}

/// How the request body is framed on the upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReqFraming {
    /// No body.
    Empty,
    /// The client's `Content-Length`, forwarded; the bytes pass as they are.
    Length,
    /// `Transfer-Encoding: chunked` (the client's body had no length).
    Chunked,
}

/// Writes the request head and returns how its body is framed: the request line, the headers
/// (as [`Forwarding`] says when the request carries one, else as they are), the framing
/// header. A body that has already ended (`body_ended`) goes as no body; one with a
/// `Content-Length` written goes by that length, any other chunked.
pub(crate) fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    fwd: Option<&Forwarding>,
    body_ended: bool,
) -> ReqFraming {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let has_length = match fwd {
        Some(fwd) => write_forwarded(out, headers, fwd),
        None => {
            for (name, value) in headers {
                header_line(out, name.as_str().as_bytes(), value.as_bytes());
            }
            headers.contains_key(CONTENT_LENGTH)
        }
    };
    let framing = if body_ended {
        ReqFraming::Empty
    } else if has_length {
        ReqFraming::Length
    } else {
        ReqFraming::Chunked
    };
    match framing {
        ReqFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        // A body-carrying method without a body says so, as curl and hyper do.
        ReqFraming::Empty
            if matches!(*method, Method::POST | Method::PUT | Method::PATCH) && !has_length =>
        {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// Appends one chunk of a chunked request body (size line, data, CRLF).
pub(crate) fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut hex = [0u8; 16];
    let mut n = data.len();
    let mut i = hex.len();
    while n > 0 || i == hex.len() {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
    }
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked request body (no trailers).
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A parsed response head: its end-to-end headers, and what its framing headers said.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    /// The reason phrase, when it is not the status's canonical one (Go writes `413 Request
    /// Entity Too Large` where hyper would write `Payload Too Large`): hyper writes it back.
    pub(crate) reason: Option<hyper::ext::ReasonPhrase>,
    pub(crate) version: Version,
    /// The headers, without the hop-by-hop ones (`Connection`, those it names, `Keep-Alive`,
    /// `Transfer-Encoding`, ...): they are about this connection, not the client's.
    pub(crate) headers: HeaderMap,
    /// What `Connection`, `Transfer-Encoding` and `Content-Length` said.
    framing: Framing,
}

/// Parses a response head from the start of `buf` and removes it from `buf`; `None` when the
/// head is not complete yet (`buf` untouched). The header values share the head's bytes.
pub(crate) fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, WireError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            return Err(WireError::HeadTooLarge)
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(WireError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::HeadTooLarge),
        Err(e) => return Err(WireError::Head(head_error(e))),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| WireError::Head("status code"))?;
    let reason = resp
        .reason
        .filter(|r| Some(*r) != status.canonical_reason())
        .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes()).ok());
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Offsets into the head, so the values can share one frozen copy of it (the head is at
    // most MAX_HEAD bytes, so they fit in u32).
    let base = buf.as_ptr() as usize;
    let at = |p: *const u8| (p as usize - base) as u32;
    let spans: Vec<[u32; 4]> = resp
        .headers
        .iter()
        .map(|h| {
            let (name, value) = (at(h.name.as_ptr()), at(h.value.as_ptr()));
            [
                name,
                name + h.name.len() as u32,
                value,
                value + h.value.len() as u32,
            ]
        })
        .collect();
    let head = buf.split_to(len).freeze();
    let (headers, framing) = NAMES.with_borrow_mut(|names| names.headers(&head, &spans))?;
    Ok(Some(Head {
        status,
        reason,
        version,
        headers,
        framing,
    }))
}

/// Header names cached at most, per worker thread.
const CACHED_NAMES: usize = 32;
/// Longest header name cached (longer ones are parsed every time).
const CACHED_NAME_LEN: usize = 64;

std::thread_local! {
    /// The header names of this thread's recent upstream responses, as sent.
    static NAMES: std::cell::RefCell<NameCache> = const {
        std::cell::RefCell::new(NameCache { names: Vec::new(), template: None })
    };
}

/// What a response header is to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Forwarded, read by no one here.
    EndToEnd,
    /// Forwarded, and it frames the body.
    ContentLength,
    /// Read for the framing, not forwarded.
    Connection,
    /// Read for the framing, not forwarded.
    TransferEncoding,
    /// Another hop-by-hop header: not forwarded.
    Hop,
}

impl Role {
    fn of(name: &HeaderName) -> Role {
        if *name == CONTENT_LENGTH {
            Role::ContentLength
        } else if *name == CONNECTION {
            Role::Connection
        } else if *name == TRANSFER_ENCODING {
            Role::TransferEncoding
        } else if is_hop_by_hop(name) {
            Role::Hop
        } else {
            Role::EndToEnd
        }
    }

    /// Whether the header goes into the map.
    fn kept(self) -> bool {
        matches!(self, Role::EndToEnd | Role::ContentLength)
    }
}

/// Header names exactly as an upstream spelled them, with the [`HeaderName`] each parses to
/// and its [`Role`], and the header map of the last head whose names were all cached.
///
/// One upstream sends the same names in the same order on every response (`Server`, `Date`,
/// `Content-Type`, ...): the name at position `i` is compared with slot `i` only, and a hit
/// costs that byte comparison instead of `HeaderName::from_bytes`'s lower-casing and standard
/// name lookup (about 750 fewer instructions per response for nginx's 8 headers, callgrind). A
/// miss parses as before and takes the slot. The cache maps bytes to what parsing those bytes
/// gives, so it cannot change a result; it is bounded ([`CACHED_NAMES`] names of at most
/// [`CACHED_NAME_LEN`] bytes).
///
/// **Hop-by-hop headers** never enter the map: their values are read for the framing
/// ([`Framing`]) and dropped, instead of being put in the map and removed again by the rewrite
/// layer (a hashed removal and a walk, about 800 instructions per response for nginx's
/// `Connection: keep-alive` or Ollama's `Transfer-Encoding: chunked`). A `Connection` value
/// naming other headers removes those from the map after it is built.
///
/// **The map template.** When every name of a head is cached, no kept name repeats and no
/// `Connection` value names other headers, the map built for it is kept with empty values. A
/// later head with the same names in the same slots gets a clone of that map with its own
/// values put in: no name is hashed and no slot is probed again (`HeaderMap::append` costs
/// about 200 instructions a header). The clone has the same names in the same order as the
/// map built header by header, each value still validated, so the result is the same map; any
/// other head (one whose `Connection` names others included) is built header by header and
/// replaces (or drops) the template.
#[derive(Debug)]
struct NameCache {
    names: Vec<(Box<[u8]>, HeaderName, Role)>,
    /// The kept names of slots `0..slots`, each once, in order, with empty values.
    template: Option<Template>,
}

#[derive(Debug)]
struct Template {
    map: HeaderMap,
    /// How many slots (headers of the head, kept or not) the map was built from.
    slots: usize,
}

impl NameCache {
    /// The header map of a head and what its framing headers said: `spans` are the offsets
    /// of each header's name and value in `head`.
    fn headers(
        &mut self,
        head: &Bytes,
        spans: &[[u32; 4]],
    ) -> Result<(HeaderMap, Framing), WireError> {
        let raw_name = |&[ns, ne, _, _]: &[u32; 4]| &head[ns as usize..ne as usize];
        let raw_value = |&[_, _, vs, ve]: &[u32; 4]| &head[vs as usize..ve as usize];
        let value = |&[_, _, vs, ve]: &[u32; 4]| {
            HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
                .map_err(|_| WireError::Head("header value"))
        };
        if let Some(template) = &self.template {
            if template.slots == spans.len()
                && spans
                    .iter()
                    .zip(&self.names)
                    .all(|(span, (bytes, _, _))| **bytes == *raw_name(span))
            {
                let mut framing = Framing::default();
                let mut headers = template.map.clone();
                let mut values = headers.values_mut();
                let mut others = false;
                for (span, &(_, _, role)) in spans.iter().zip(&self.names) {
                    others |= framing.add(role, raw_value(span));
                    if role.kept() {
                        // The template has a value for each kept slot, in order.
                        if let Some(slot) = values.next() {
                            *slot = value(span)?;
                        }
                    }
                }
                if !others {
                    return Ok((headers, framing));
                }
                // A `Connection` value names other headers: built header by header below.
            }
        }
        // The slots may change below, and a head refused half-way would leave a template
        // that no longer matches them: it goes first.
        self.template = None;
        let mut headers = HeaderMap::with_capacity(spans.len());
        let mut framing = Framing::default();
        let mut all_cached = true;
        let mut others = false;
        for (i, span) in spans.iter().enumerate() {
            let (name, role, cached) = self.name(i, raw_name(span))?;
            all_cached &= cached;
            others |= framing.add(role, raw_value(span));
            if role.kept() {
                headers.append(name, value(span)?);
            }
        }
        if others {
            for span in spans {
                if raw_name(span).eq_ignore_ascii_case(b"connection") {
                    remove_connection_named(&mut headers, raw_value(span));
                }
            }
            return Ok((headers, framing));
        }
        // Names that repeat (`Set-Cookie` twice) put values beside a key, out of the
        // one-value-per-name order the template relies on: no template for them.
        self.template = (all_cached && headers.keys_len() == headers.len()).then(|| {
            let mut map = HeaderMap::with_capacity(headers.len());
            for name in headers.keys() {
                map.append(name.clone(), HeaderValue::from_static(""));
            }
            Template {
                map,
                slots: spans.len(),
            }
        });
        Ok((headers, framing))
    }

    /// The [`HeaderName`] of `raw`, the `i`-th name of a head, its role, and whether slot
    /// `i` holds `raw` now.
    fn name(&mut self, i: usize, raw: &[u8]) -> Result<(HeaderName, Role, bool), WireError> {
        if let Some((bytes, name, role)) = self.names.get(i) {
            if **bytes == *raw {
                return Ok((name.clone(), *role, true));
            }
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| WireError::Head("header name"))?;
        let role = Role::of(&name);
        let mut cached = false;
        if i < CACHED_NAMES && raw.len() <= CACHED_NAME_LEN {
            let entry = (Box::from(raw), name.clone(), role);
            if i < self.names.len() {
                self.names[i] = entry;
                cached = true;
            } else if i == self.names.len() {
                self.names.push(entry);
                cached = true;
            }
        }
        Ok((name, role, cached))
    }
}

fn head_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "header name",
        httparse::Error::HeaderValue => "header value",
        httparse::Error::NewLine => "line ending",
        httparse::Error::Status => "status",
        httparse::Error::Token => "token",
        httparse::Error::Version => "version",
        _ => "syntax",
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// No body (`HEAD`, `204`, `304`, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// The body's framing and whether the connection may carry another request afterwards.
///
/// A `Content-Length` beside a transfer coding is removed from `head`: the coding frames the
/// body, and whoever the head is forwarded to must not frame it by that length (RFC 9112
/// §6.3). A valid length sent as anything but one line of digits (`5, 5`, two equal lines) is
/// forwarded as that one number (RFC 9110 §8.6); an invalid one is refused, a `HEAD`'s too
/// (it is forwarded), but dropped beside a transfer coding or on a status that has no body.
/// A transfer coding other than one `chunked` is refused where it frames a body: the proxy
/// decodes chunked only, and would pass another coding's bytes on as if they were the body.
pub(crate) fn body_kind(method: &Method, head: &mut Head) -> Result<(BodyKind, bool), WireError> {
    let framing = &head.framing;
    let mut keep_alive = match head.version {
        // `close` wins over `keep-alive` (RFC 9112 §9.3).
        Version::HTTP_10 => framing.keep_alive_token && !framing.close_token,
        _ => !framing.close_token,
    };
    let transfer = framing.transfer;
    let bodiless_status = head.status.is_informational()
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED;
    let mut length = None;
    if transfer != Transfer::None {
        // A length next to a transfer coding, valid or not, is a smuggling attempt or a broken
        // server: the coding wins, the length goes, and the connection is not reused (RFC
        // 9112 §6.1, §6.3).
        if !matches!(framing.length, Ok(None)) {
            head.headers.remove(CONTENT_LENGTH);
            keep_alive = false;
        }
    } else if bodiless_status && framing.length.is_err() {
        // It frames nothing here: a broken length is dropped, not forwarded.
        head.headers.remove(CONTENT_LENGTH);
        keep_alive = false;
    } else {
        length = framing.length.clone()?;
        if let (Some(n), false) = (length, framing.length_plain) {
            head.headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    if *method == Method::HEAD || bodiless_status {
        return Ok((BodyKind::Empty, keep_alive));
    }
    match transfer {
        // HTTP/1.0 has no transfer codings: decoded, but the connection is not reused.
        Transfer::Chunked => Ok((
            BodyKind::Chunked,
            keep_alive && head.version != Version::HTTP_10,
        )),
        Transfer::Other => Err(WireError::TransferCoding),
        Transfer::None => Ok(match length {
            Some(0) => (BodyKind::Empty, keep_alive),
            Some(n) => (BodyKind::Length(n), keep_alive),
            None => (BodyKind::Close, false),
        }),
    }
}

/// What the `Transfer-Encoding` headers of a response say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    /// No such header (or only empty list elements).
    None,
    /// Exactly one coding, `chunked`.
    Chunked,
    /// Any other coding, or `chunked` with anything else (before or after it, or twice).
    Other,
}

/// What the framing headers of a response say, read as its head is parsed.
#[derive(Debug)]
struct Framing {
    /// A `Connection` header lists `keep-alive`.
    keep_alive_token: bool,
    /// A `Connection` header lists `close`.
    close_token: bool,
    /// The transfer codings, over every `Transfer-Encoding` line.
    transfer: Transfer,
    /// The `Content-Length` (none: no such header), or the first fault in its values.
    length: Result<Option<u64>, WireError>,
    /// No `Content-Length`, or exactly one, of digits only: forwarded as sent.
    length_plain: bool,
}

impl Default for Framing {
    fn default() -> Framing {
        Framing {
            keep_alive_token: false,
            close_token: false,
            transfer: Transfer::None,
            length: Ok(None),
            length_plain: true,
        }
    }
}

impl Framing {
    /// Reads one header's value, in the order of the head; returns whether it is a
    /// `Connection` value naming other headers (to be removed from the map). Inlined: most
    /// headers are none of the three, and the call alone cost more than the answer.
    #[inline]
    fn add(&mut self, role: Role, value: &[u8]) -> bool {
        match role {
            Role::EndToEnd | Role::Hop => false,
            _ => self.read(role, value),
        }
    }

    fn read(&mut self, role: Role, value: &[u8]) -> bool {
        match role {
            Role::Connection => {
                let mut others = false;
                for t in value.split(|b| *b == b',') {
                    let t = t.trim_ascii();
                    let keep_alive = t.eq_ignore_ascii_case(b"keep-alive");
                    self.keep_alive_token |= keep_alive;
                    self.close_token |= t.eq_ignore_ascii_case(b"close");
                    others |= !keep_alive;
                }
                others
            }
            Role::TransferEncoding => {
                for coding in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if coding.is_empty() {
                        continue;
                    }
                    self.transfer = match self.transfer {
                        Transfer::None if coding.eq_ignore_ascii_case(b"chunked") => {
                            Transfer::Chunked
                        }
                        _ => Transfer::Other,
                    };
                }
                false
            }
            Role::ContentLength => {
                // A second line, even an equal one, is not forwarded as sent.
                self.length_plain = matches!(self.length, Ok(None))
                    && !value.is_empty()
                    && value.iter().all(u8::is_ascii_digit);
                if let Ok(length) = &mut self.length {
                    self.length = content_length(*length, value);
                }
                false
            }
            Role::EndToEnd | Role::Hop => false,
        }
    }
}

/// `length` (the values seen so far) with one more `Content-Length` value; every
/// comma-separated part must be the same number.
fn content_length(mut length: Option<u64>, value: &[u8]) -> Result<Option<u64>, WireError> {
    for part in value.split(|b| *b == b',') {
        let n = parse_length(part.trim_ascii()).ok_or(WireError::ContentLength)?;
        if length.is_some_and(|l| l != n) {
            return Err(WireError::ContentLength);
        }
        length = Some(n);
    }
    Ok(length)
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// Data taken from the connection but not yet returned: one slice as it came (no copy), or
/// several appended.
#[derive(Debug, Default)]
pub(crate) enum Held {
    #[default]
    Nothing,
    One(Bytes),
    Many(BytesMut),
}

impl Held {
    pub(crate) fn len(&self) -> usize {
        match self {
            Held::Nothing => 0,
            Held::One(b) => b.len(),
            Held::Many(b) => b.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the first `n` bytes of `buf` here: the first piece as a slice of `buf` (no
    /// copy), a later one appended straight from `buf` (no slice made of it first).
    pub(crate) fn push_from(&mut self, buf: &mut BytesMut, n: usize) {
        if n == 0 {
            return;
        }
        if let Held::Nothing = self {
            *self = Held::One(buf.split_to(n).freeze());
            return;
        }
        self.append(&buf[..n], 0);
        buf.advance(n);
    }

    /// Appends a copy of `data`; the first piece goes into a buffer of at least `capacity`
    /// bytes (what the caller expects to append in all).
    fn append(&mut self, data: &[u8], capacity: usize) {
        match self {
            Held::Nothing => {
                let mut many = BytesMut::with_capacity(capacity.max(data.len()));
                many.extend_from_slice(data);
                *self = Held::Many(many);
            }
            Held::One(first) => {
                let mut many = BytesMut::with_capacity((first.len() + data.len()).max(4096));
                many.extend_from_slice(first);
                many.extend_from_slice(data);
                *self = Held::Many(many);
            }
            Held::Many(many) => many.extend_from_slice(data),
        }
    }

    pub(crate) fn take(&mut self) -> Option<Bytes> {
        match std::mem::take(self) {
            Held::Nothing => None,
            Held::One(b) => Some(b),
            Held::Many(b) => Some(b.freeze()),
        }
    }
}

/// Where a chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the chunk size (hex digits).
    Size,
    /// Skipping chunk extensions up to the line's CR.
    Extension,
    /// Expecting the LF of the size line.
    SizeLf,
    /// This many data bytes left in the chunk.
    Data(u64),
    /// Expecting the CR after the chunk's data.
    DataCr,
    /// Expecting the LF after the chunk's data.
    DataLf,
    /// In the trailer section; `true` when at the start of a line.
    Trailer(bool),
    /// Expecting the LF of a trailer line (`true`: the line was empty, the body ends).
    TrailerLf(bool),
    /// The last chunk and the trailers were read.
    Done,
}

/// Most hex digits a chunk size may have (it must fit in a `u64`).
const MAX_SIZE_DIGITS: usize = 16;

/// A complete chunk-size line without an extension (`HEX CRLF`) at the start of `buf`: the
/// size and the line's length. `None` for anything else, which the byte-by-byte decoder then
/// reads (and refuses when it is broken): no digit, a 17th digit, an extension, a bare CR or
/// a line not yet complete.
fn size_line(buf: &[u8]) -> Option<(u64, usize)> {
    let mut size = 0u64;
    for (i, &b) in buf.iter().enumerate().take(MAX_SIZE_DIGITS + 1) {
        match hex_digit(b) {
            Some(digit) if i < MAX_SIZE_DIGITS => size = size << 4 | u64::from(digit),
            None if b == b'\r' && i > 0 => {
                return (buf.get(i + 1) == Some(&b'\n')).then_some((size, i + 2));
            }
            _ => return None,
        }
    }
    None
}

/// Each byte's value as a hex digit, or `NOT_HEX`: one load per digit of a size line.
static HEX_DIGITS: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 16 {
        table[b"0123456789abcdef"[i] as usize] = i as u8;
        table[b"0123456789ABCDEF"[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const NOT_HEX: u8 = 0xFF;

/// The value of `b` as a hex digit.
#[inline]
fn hex_digit(b: u8) -> Option<u8> {
    match HEX_DIGITS[usize::from(b)] {
        NOT_HEX => None,
        d => Some(d),
    }
}

/// How many of `available` bytes belong to a chunk with `left` data bytes to go.
#[inline]
fn data_take(left: u64, available: usize) -> usize {
    usize::try_from(left).unwrap_or(usize::MAX).min(available)
}

/// Where a chunk with `left` data bytes to go is after `take` more.
#[inline]
fn after_data(left: u64, take: usize) -> State {
    match left - take as u64 {
        0 => State::DataCr,
        left => State::Data(left),
    }
}

/// A chunked-body decoder that accepts its input in pieces of any size.
#[derive(Debug)]
pub(crate) struct Chunked {
    state: State,
    size: u64,
    digits: u8,
    line: usize,
    trailers: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size,
            size: 0,
            digits: 0,
            line: 0,
            trailers: 0,
        }
    }
}

impl Chunked {
    /// Whether the last chunk (and the trailer section) has been read.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes what `buf` holds, moving chunk data into `out` (without copying a lone
    /// slice) until `buf` is used up, the body ends, or `out` holds `max` bytes. Bytes after
    /// the body's end stay in `buf`.
    pub(crate) fn decode(
        &mut self,
        buf: &mut BytesMut,
        out: &mut Held,
        max: usize,
    ) -> Result<(), WireError> {
        self.decode_with(buf, out, max, true)
    }

    /// [`Chunked::decode`]; `whole_lines: false` reads every framing byte through
    /// [`Chunked::step`] (the reference the tests compare the shortcuts against).
    ///
    /// The shortcuts ([`Chunked::decode_framing_in_place`]) take the common framing in one
    /// step when it is complete in `buf`: a size line of hex digits and CRLF (no extension),
    /// and the CRLF after a chunk's data. They leave the decoder exactly where stepping
    /// through the same bytes would; anything else (an extension, a line split across reads,
    /// the trailers, every error) goes byte by byte, and the shortcuts resume after each
    /// byte. An NDJSON stream is one small chunk per frame, so this is most of the framing
    /// the proxy reads.
    fn decode_with(
        &mut self,
        buf: &mut BytesMut,
        out: &mut Held,
        max: usize,
        whole_lines: bool,
    ) -> Result<(), WireError> {
        while !buf.is_empty() && self.state != State::Done {
            if whole_lines {
                self.decode_framing_in_place(buf, out, max);
                if buf.is_empty() || self.state == State::Done {
                    break;
                }
            }
            if let State::Data(left) = self.state {
                let room = max.saturating_sub(out.len());
                if room == 0 {
                    return Ok(());
                }
                let take = data_take(left, buf.len().min(room));
                out.push_from(buf, take);
                self.state = after_data(left, take);
                continue;
            }
            let b = buf[0];
            buf.advance(1);
            self.state = self.step(b)?;
        }
        Ok(())
    }

    /// The shortcuts of [`Chunked::decode_with`], run over `buf` by position, with `buf`
    /// advanced once at the end: chunk data, whole size lines of hex digits and the CRLF
    /// after the data, until anything else (which the caller steps through), the end of
    /// `buf` or `max` bytes in `out`. An NDJSON burst is many small chunks in one read: their
    /// data is copied into one buffer, without a slice of `buf` made and dropped per chunk.
    /// A piece with nothing after it in `buf` (a lone frame, or a read that ends inside a
    /// chunk) is still returned as a slice of `buf`, without a copy.
    fn decode_framing_in_place(&mut self, buf: &mut BytesMut, out: &mut Held, max: usize) {
        let mut at = 0;
        let mut state = self.state;
        loop {
            let rest = buf.len() - at;
            match state {
                State::Data(left) => {
                    let room = max.saturating_sub(out.len());
                    let take = data_take(left, rest.min(room));
                    if take == 0 {
                        break;
                    }
                    // More chunks after this one in the buffer, and room for them: copy.
                    let more = take < room && rest > take + 2;
                    if out.is_empty() && !more {
                        buf.advance(at);
                        at = 0;
                        out.push_from(buf, take);
                    } else {
                        out.append(&buf[at..at + take], rest.min(max));
                        at += take;
                    }
                    state = after_data(left, take);
                }
                State::Size if self.digits == 0 => match size_line(&buf[at..]) {
                    Some((size, used)) => {
                        at += used;
                        state = if size == 0 {
                            State::Trailer(true)
                        } else {
                            State::Data(size)
                        };
                    }
                    None => break,
                },
                State::DataCr if buf[at..].starts_with(b"\r\n") => {
                    at += 2;
                    state = State::Size;
                }
                _ => break,
            }
        }
        self.state = state;
        buf.advance(at);
    }

    /// The error [`Chunked::decode`] would return for `bytes` (the start of a body) before it
    /// is past the first chunk; nothing is consumed and this decoder is not moved. What
    /// arrived with the response head is checked with it, so a body broken from its first
    /// bytes is refused before the head is answered (a `502`, not a head and a cut
    /// connection). Byte by byte, as the decoder's reference path: a few bytes of framing.
    pub(crate) fn check_first(bytes: &[u8]) -> Result<(), WireError> {
        // The common case in one step: a size line of hex digits, the data, its CRLF (the
        // decoder's own shortcut, see `decode_with`).
        if let Some((size @ 1.., used)) = size_line(bytes) {
            let rest = usize::try_from(size)
                .ok()
                .and_then(|size| used.checked_add(size))
                .and_then(|end| bytes.get(end..))
                .unwrap_or_default();
            return match rest {
                [] | [b'\r'] | [b'\r', b'\n', ..] => Ok(()),
                _ => Err(WireError::Chunk("chunk terminator")),
            };
        }
        Chunked::check_first_stepped(bytes)
    }

    /// [`Chunked::check_first`] byte by byte through [`Chunked::step`], as the decoder's
    /// reference path reads (what the tests compare the shortcut against).
    fn check_first_stepped(bytes: &[u8]) -> Result<(), WireError> {
        let mut probe = Chunked::default();
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            match probe.state {
                State::Data(left) => {
                    let take = data_take(left, bytes.len() - i);
                    i += take;
                    probe.state = after_data(left, take);
                    continue;
                }
                State::Done => return Ok(()),
                _ => {}
            }
            let next = probe.step(b)?;
            if probe.state == State::DataLf && next == State::Size {
                return Ok(());
            }
            probe.state = next;
            i += 1;
        }
        Ok(())
    }

    fn step(&mut self, b: u8) -> Result<State, WireError> {
        Ok(match self.state {
            State::Size => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if usize::from(self.digits) == MAX_SIZE_DIGITS {
                        return Err(WireError::Chunk("chunk size too large"));
                    }
                    let d = hex_digit(b).unwrap_or(0);
                    self.size = self.size << 4 | u64::from(d);
                    self.digits += 1;
                    State::Size
                }
                _ if self.digits == 0 => return Err(WireError::Chunk("chunk size")),
                b'\r' => State::SizeLf,
                b';' | b' ' | b'\t' => {
                    self.line = 0;
                    State::Extension
                }
                _ => return Err(WireError::Chunk("chunk size")),
            },
            State::Extension => {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err(WireError::Chunk("chunk extension too long"));
                }
                match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(WireError::Chunk("bare LF")),
                    _ => State::Extension,
                }
            }
            State::SizeLf => {
                if b != b'\n' {
                    return Err(WireError::Chunk("chunk size line"));
                }
                let size = std::mem::take(&mut self.size);
                self.digits = 0;
                if size == 0 {
                    State::Trailer(true)
                } else {
                    State::Data(size)
                }
            }
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size,
            State::DataCr | State::DataLf => return Err(WireError::Chunk("chunk terminator")),
            State::Trailer(start) => {
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return Err(WireError::Chunk("trailers too long"));
                }
                match b {
                    b'\r' => State::TrailerLf(start),
                    b'\n' => return Err(WireError::Chunk("bare LF")),
                    _ => State::Trailer(false),
                }
            }
            State::TrailerLf(empty) => {
                if b != b'\n' {
                    return Err(WireError::Chunk("trailer line"));
                }
                if empty {
                    State::Done
                } else {
                    State::Trailer(true)
                }
            }
            State::Data(_) | State::Done => self.state,
        })
    }
}

#[cfg(test)]
mod tests;
