use super::*;
use proptest::prelude::*;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(*n, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn the_request_head_is_the_request_line_the_headers_and_the_framing() {
    let h = headers(&[("host", "127.0.0.1:11434"), ("x-forwarded-for", "10.0.0.1")]);
    let mut out = Vec::new();
    let framing = encode_head(&mut out, &Method::GET, "/api/tags?x=1", &h, None, true);
    assert_eq!(framing, ReqFraming::Empty);
    assert_eq!(
        out,
        b"GET /api/tags?x=1 HTTP/1.1\r\nhost: 127.0.0.1:11434\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"
    );
    out.clear();
    let framing = encode_head(
        &mut out,
        &Method::POST,
        "/api/pull",
        &headers(&[("host", "u")]),
        None,
        true,
    );
    assert_eq!(framing, ReqFraming::Empty);
    assert_eq!(
        out,
        b"POST /api/pull HTTP/1.1\r\nhost: u\r\ncontent-length: 0\r\n\r\n"
    );
    out.clear();
    let h = headers(&[("host", "u"), ("content-length", "5")]);
    let framing = encode_head(&mut out, &Method::POST, "/api/chat", &h, None, false);
    assert_eq!(framing, ReqFraming::Length);
    assert_eq!(
        out,
        b"POST /api/chat HTTP/1.1\r\nhost: u\r\ncontent-length: 5\r\n\r\n"
    );
    out.clear();
    let framing = encode_head(
        &mut out,
        &Method::POST,
        "/api/blobs/x",
        &headers(&[("host", "u")]),
        None,
        false,
    );
    assert_eq!(framing, ReqFraming::Chunked);
    assert_eq!(
        out,
        b"POST /api/blobs/x HTTP/1.1\r\nhost: u\r\ntransfer-encoding: chunked\r\n\r\n"
    );
}

/// The head of a `POST` to `target` with `headers`, forwarded, and its framing.
fn forwarded_post(target: &str, h: &HeaderMap, body_ended: bool) -> (ReqFraming, String) {
    let mut out = Vec::new();
    let framing = encode_head(
        &mut out,
        &Method::POST,
        target,
        h,
        Some(&forwarding()),
        body_ended,
    );
    (framing, String::from_utf8(out).unwrap())
}

fn forwarding() -> Forwarding {
    Forwarding {
        host: HeaderValue::from_static("127.0.0.1:11435"),
        forwarded_for: HeaderValue::from_static("198.51.100.7"),
        forwarded_proto: HeaderValue::from_static("http"),
        forwarded_host: None,
        same_origin: true,
    }
}

/// A forwarded request's head: the proxy's `Host` first, the client's end-to-end headers in
/// their order (every value of a repeated one), then the forwarding headers; the client's
/// `Host` is `X-Forwarded-Host`, its own forwarding headers, `Expect` and hop-by-hop headers
/// do not go.
#[test]
fn a_forwarded_head_has_the_proxys_forwarding_headers_and_the_clients_end_to_end_ones() {
    let h = headers(&[
        ("host", "ollama.example"),
        ("user-agent", "ollama-python/0.4"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("accept", "application/json"),
        ("accept", "text/plain"),
        ("expect", "100-continue"),
        ("te", "trailers"),
        ("keep-alive", "timeout=5"),
        ("connection", "keep-alive"),
        ("content-length", "2"),
    ]);
    let (framing, head) = forwarded_post("/api/chat", &h, false);
    assert_eq!(framing, ReqFraming::Length);
    assert_eq!(
        head,
        "POST /api/chat HTTP/1.1\r\n\
         host: 127.0.0.1:11435\r\n\
         user-agent: ollama-python/0.4\r\n\
         accept: application/json\r\n\
         accept: text/plain\r\n\
         content-length: 2\r\n\
         x-forwarded-for: 198.51.100.7\r\n\
         x-forwarded-proto: http\r\n\
         x-forwarded-host: ollama.example\r\n\
         \r\n"
    );
}

/// `Connection` can name a header that came before it: the lines are written again without
/// it. A `Content-Length` it names is not written, and the body goes chunked, never framed
/// by a length the upstream does not see. A client's own `Transfer-Encoding` never goes:
/// the proxy writes the one framing line.
#[test]
fn headers_a_connection_value_names_are_dropped_wherever_they_stand() {
    let h = headers(&[
        ("x-secret-hop", "1"),
        ("content-length", "5"),
        ("transfer-encoding", "chunked"),
        ("content-type", "application/json"),
        ("connection", "X-Secret-Hop, content-length, host"),
    ]);
    let (framing, head) = forwarded_post("/api/generate", &h, false);
    assert_eq!(framing, ReqFraming::Chunked);
    assert_eq!(
        head,
        "POST /api/generate HTTP/1.1\r\n\
         host: 127.0.0.1:11435\r\n\
         content-type: application/json\r\n\
         x-forwarded-for: 198.51.100.7\r\n\
         x-forwarded-proto: http\r\n\
         transfer-encoding: chunked\r\n\
         \r\n"
    );
    // An ended body: no framing line but `Content-Length: 0` for a POST, whose own length
    // was named away.
    let (framing, head) = forwarded_post("/api/generate", &h, true);
    assert_eq!(framing, ReqFraming::Empty);
    assert!(head.ends_with("x-forwarded-proto: http\r\ncontent-length: 0\r\n\r\n"));
}

#[test]
fn chunks_are_sized_in_lowercase_hex() {
    let mut out = Vec::new();
    encode_chunk(&mut out, b"hello");
    encode_chunk(&mut out, b"");
    encode_chunk(&mut out, &[b'a'; 255]);
    let mut want = b"5\r\nhello\r\nff\r\n".to_vec();
    want.extend_from_slice(&[b'a'; 255]);
    want.extend_from_slice(b"\r\n");
    assert_eq!(out, want);
    out.clear();
    encode_chunk(&mut out, &vec![b'z'; 0x1_0000]);
    assert!(out.starts_with(b"10000\r\nzz"));
}

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Multi: a\r\nx-multi: b\r\nContent-Length: 4\r\n\r\nbody";

#[test]
fn a_head_is_parsed_once_complete_and_leaves_the_body_in_the_buffer() {
    for cut in 1..HEAD.len() - 4 {
        let mut buf = BytesMut::from(&HEAD[..cut]);
        assert!(parse_head(&mut buf).unwrap().is_none(), "cut at {cut}");
        assert_eq!(&buf[..], &HEAD[..cut], "a partial head is left as it was");
    }
    let mut buf = BytesMut::from(HEAD);
    let head = parse_head(&mut buf).unwrap().unwrap();
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.version, Version::HTTP_11);
    assert_eq!(head.headers.len(), 4);
    assert_eq!(head.headers["content-type"], "application/json");
    let multi: Vec<_> = head.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    assert_eq!(&buf[..], b"body");
}

#[test]
fn bad_and_oversized_heads_are_refused() {
    let mut buf = BytesMut::from(&b"NOT HTTP AT ALL\r\n\r\n"[..]);
    assert_eq!(
        parse_head(&mut buf).unwrap_err(),
        WireError::Head("version")
    );
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n"[..]);
    assert_eq!(
        parse_head(&mut buf).unwrap_err(),
        WireError::Head("header name")
    );
    let mut long = b"HTTP/1.1 200 OK\r\nx-a: ".to_vec();
    long.resize(MAX_HEAD + 1, b'a');
    assert_eq!(
        parse_head(&mut BytesMut::from(&long[..])).unwrap_err(),
        WireError::HeadTooLarge
    );
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        parse_head(&mut BytesMut::from(&long[..])).unwrap_err(),
        WireError::HeadTooLarge,
        "complete, but too large"
    );
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(
        parse_head(&mut BytesMut::from(&many[..])).unwrap_err(),
        WireError::HeadTooLarge
    );
}

fn kind(method: Method, raw: &str) -> Result<(BodyKind, bool), WireError> {
    let mut buf = BytesMut::from(raw.as_bytes());
    let mut head = parse_head(&mut buf).unwrap().unwrap();
    body_kind(&method, &mut head)
}

/// A method, a response head, and the framing expected.
type Case = (Method, &'static str, Result<(BodyKind, bool), WireError>);

#[test]
fn the_body_framing_follows_rfc_9112() {
    use BodyKind::*;
    let cases: &[Case] = &[
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n",
            Ok((Length(12), true)),
        ),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            Ok((Empty, true)),
        ),
        (
            Method::HEAD,
            "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n",
            Ok((Empty, true)),
        ),
        (
            Method::GET,
            "HTTP/1.1 204 No Content\r\n\r\n",
            Ok((Empty, true)),
        ),
        (
            Method::GET,
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
            Ok((Empty, true)),
        ),
        (
            Method::POST,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            Ok((Chunked, true)),
        ),
        (
            Method::POST,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked,\r\n\r\n",
            Ok((Chunked, true)),
        ),
        // Any coding but one chunked: the proxy cannot decode it, and must not pass its bytes
        // on as the body (the header goes: it is hop-by-hop).
        (
            Method::POST,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            Err(WireError::TransferCoding),
        ),
        (
            Method::POST,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            Err(WireError::TransferCoding),
        ),
        (
            Method::POST,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n",
            Err(WireError::TransferCoding),
        ),
        (
            Method::POST,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: gzip\r\n\r\n",
            Err(WireError::TransferCoding),
        ),
        // Where no body follows, the coding frames nothing.
        (
            Method::HEAD,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            Ok((Empty, true)),
        ),
        // A HEAD's length is forwarded: a broken one is refused too, and one beside a coding
        // goes (and the connection with it).
        (
            Method::HEAD,
            "HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n",
            Err(WireError::ContentLength),
        ),
        (
            Method::HEAD,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            Err(WireError::ContentLength),
        ),
        (
            Method::HEAD,
            "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ntransfer-encoding: chunked\r\n\r\n",
            Ok((Empty, false)),
        ),
        // Beside a transfer coding, or on a status without a body, a length frames nothing:
        // a broken one is dropped (with the connection), not refused.
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: abc\r\n\r\n",
            Ok((Chunked, false)),
        ),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\ntransfer-encoding: chunked\r\n\r\n",
            Ok((Chunked, false)),
        ),
        (
            Method::GET,
            "HTTP/1.1 204 No Content\r\ncontent-length: abc\r\n\r\n",
            Ok((Empty, false)),
        ),
        (
            Method::GET,
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 5, 6\r\n\r\n",
            Ok((Empty, false)),
        ),
        // HTTP/1.0 has no transfer codings: the framing is faulty, the connection goes.
        (
            Method::GET,
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n",
            Ok((Chunked, false)),
        ),
        // A length beside a transfer coding: the coding wins, the connection is not reused.
        (
            Method::POST,
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            Ok((Chunked, false)),
        ),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
            Ok((Length(5), true)),
        ),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            Err(WireError::ContentLength),
        ),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            Err(WireError::ContentLength),
        ),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            Err(WireError::ContentLength),
        ),
        (Method::GET, "HTTP/1.1 200 OK\r\n\r\n", Ok((Close, false))),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            Ok((Length(1), false)),
        ),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\ncontent-length: 1\r\n\r\n",
            Ok((Length(1), false)),
        ),
        (
            Method::GET,
            "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n",
            Ok((Length(1), false)),
        ),
        (
            Method::GET,
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
            Ok((Length(1), true)),
        ),
        // `close` wins over `keep-alive` in HTTP/1.0 too (RFC 9112 §9.3).
        (
            Method::GET,
            "HTTP/1.0 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 1\r\n\r\n",
            Ok((Length(1), false)),
        ),
        (
            Method::GET,
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            Ok((Length(1), false)),
        ),
    ];
    // Each head twice: the second is built from the template when the first made one (the
    // framing headers are read as the values are put in), and frames the same.
    for (method, raw, want) in cases {
        assert_eq!(&kind(method.clone(), raw), want, "{method} {raw:?}");
        assert_eq!(&kind(method.clone(), raw), want, "again: {method} {raw:?}");
    }
}

/// The `Content-Length` values a head is forwarded with, after its framing was read.
fn forwarded_lengths(method: Method, raw: &str) -> Vec<String> {
    let mut buf = BytesMut::from(raw.as_bytes());
    let mut head = parse_head(&mut buf).unwrap().unwrap();
    body_kind(&method, &mut head).unwrap();
    head.headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_length_is_forwarded_as_one_number_unless_sent_as_one() {
    for (method, raw, want) in [
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            &["5"][..],
        ),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\ncontent-length: 00005\r\n\r\n",
            &["00005"],
        ),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
            &["5"],
        ),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\ncontent-length: 5,5\r\n\r\n",
            &["5"],
        ),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n",
            &["5"],
        ),
        (
            Method::HEAD,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n",
            &["5"],
        ),
        (
            Method::HEAD,
            "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ntransfer-encoding: chunked\r\n\r\n",
            &[],
        ),
        (Method::GET, "HTTP/1.1 200 OK\r\n\r\n", &[]),
        (
            Method::GET,
            "HTTP/1.1 200 OK\r\ncontent-length: abc\r\ntransfer-encoding: chunked\r\n\r\n",
            &[],
        ),
        (
            Method::GET,
            "HTTP/1.1 204 No Content\r\ncontent-length: abc\r\n\r\n",
            &[],
        ),
        (
            Method::GET,
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 5, 5\r\n\r\n",
            &["5"],
        ),
    ] {
        // Twice: the second parse may come from the template.
        for _ in 0..2 {
            assert_eq!(
                forwarded_lengths(method.clone(), raw),
                want,
                "{method} {raw:?}"
            );
        }
    }
}

/// The headers of a parsed head, in the map's order.
fn pairs(head: &Head) -> Vec<(String, String)> {
    head.headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect()
}

/// Hop-by-hop headers never enter the map, whether it is built header by header or from the
/// template, and still decide the framing: nginx's `Connection: keep-alive`, Ollama's
/// `Transfer-Encoding: chunked`, a `Keep-Alive`, a `Connection: close`.
#[test]
fn hop_by_hop_headers_frame_the_body_and_never_enter_the_map() {
    NAMES.with_borrow_mut(|c| {
        c.names.clear();
        c.template = None;
    });
    let nginx = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nETag: \"x\"\r\n\r\n";
    let ollama = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nDate: d\r\nTransfer-Encoding: chunked\r\n\r\n";
    let closing = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\nKeep-Alive: timeout=5\r\nETag: \"x\"\r\n\r\n";
    for round in 0..3 {
        let mut head = parse_head(&mut BytesMut::from(nginx.as_bytes()))
            .unwrap()
            .unwrap();
        assert_eq!(
            pairs(&head),
            [
                ("server", "nginx"),
                ("content-type", "application/json"),
                ("content-length", "2"),
                ("etag", "\"x\""),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned())),
            "round {round}"
        );
        assert_eq!(
            body_kind(&Method::GET, &mut head),
            Ok((BodyKind::Length(2), true))
        );
        // The template holds the four kept names of the six slots.
        NAMES.with_borrow(|c| {
            let t = c.template.as_ref().unwrap();
            assert_eq!((t.map.len(), t.slots), (4, 6));
        });
    }
    for _ in 0..2 {
        let mut head = parse_head(&mut BytesMut::from(ollama.as_bytes()))
            .unwrap()
            .unwrap();
        assert_eq!(
            pairs(&head),
            [("content-type", "application/x-ndjson"), ("date", "d")]
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        assert_eq!(
            body_kind(&Method::POST, &mut head),
            Ok((BodyKind::Chunked, true))
        );
    }
    // The same names as `nginx`, but `Connection: close` names a header `close` (RFC 9110
    // §7.6.1): built header by header, the connection not reused, no template kept.
    parse_head(&mut BytesMut::from(nginx.as_bytes())).unwrap();
    let mut head = parse_head(&mut BytesMut::from(closing.as_bytes()))
        .unwrap()
        .unwrap();
    assert_eq!(pairs(&head).len(), 4);
    assert!(!head.headers.contains_key("connection"));
    assert_eq!(
        body_kind(&Method::GET, &mut head),
        Ok((BodyKind::Length(2), false))
    );
    NAMES.with_borrow(|c| assert!(c.template.is_none()));
}

proptest! {
    /// Any head, parsed with the cache cold and then again warm (from the template when one
    /// was kept), gives the headers the rewrite layer's own strip leaves of the full map
    /// (value for value, per name), and the same framing both times.
    #[test]
    fn a_parsed_map_is_the_full_map_stripped_and_frames_alike_cold_or_warm(
        lines in proptest::collection::vec((0usize..11, 0usize..6), 0..10)
    ) {
        const NAMES_: [&str; 11] = [
            "Server", "Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "X-A",
            "x-a", "Set-Cookie", "TE", "Upgrade", "Date",
        ];
        const VALUES: [&str; 6] = ["keep-alive", "close", "X-A, server", "chunked", "5", "x"];
        let mut raw = String::from("HTTP/1.1 200 OK\r\n");
        let mut full = HeaderMap::new();
        for (n, v) in &lines {
            raw.push_str(&format!("{}: {}\r\n", NAMES_[*n], VALUES[*v]));
            full.append(
                HeaderName::from_bytes(NAMES_[*n].as_bytes()).unwrap(),
                HeaderValue::from_static(VALUES[*v]),
            );
        }
        raw.push_str("\r\n");
        crate::proxy::headers::strip_hop_by_hop(&mut full);
        let by_name = |h: &HeaderMap| {
            let mut m = std::collections::BTreeMap::<String, Vec<Vec<u8>>>::new();
            for (n, v) in h {
                m.entry(n.as_str().to_owned()).or_default().push(v.as_bytes().to_vec());
            }
            m
        };
        NAMES.with_borrow_mut(|c| {
            c.names.clear();
            c.template = None;
        });
        let mut cold = parse_head(&mut BytesMut::from(raw.as_bytes())).unwrap().unwrap();
        let mut warm = parse_head(&mut BytesMut::from(raw.as_bytes())).unwrap().unwrap();
        prop_assert_eq!(by_name(&cold.headers), by_name(&full));
        prop_assert_eq!(by_name(&warm.headers), by_name(&full));
        prop_assert_eq!(body_kind(&Method::GET, &mut cold), body_kind(&Method::GET, &mut warm));
    }
}

/// A `Connection` value naming other headers removes them, wherever they stand, also when
/// the head has the template's names; the template is not kept for such a head, and the next
/// plain head is exact again.
#[test]
fn headers_a_response_connection_names_are_removed_template_or_not() {
    NAMES.with_borrow_mut(|c| {
        c.names.clear();
        c.template = None;
    });
    let plain = "HTTP/1.1 200 OK\r\nX-Trace: t\r\nConnection: keep-alive\r\nContent-Length: 0\r\nX-Other: o\r\n\r\n";
    let naming = "HTTP/1.1 200 OK\r\nX-Trace: t\r\nConnection: X-Trace, x-other\r\nContent-Length: 0\r\nX-Other: o\r\n\r\n";
    let want_plain = [("x-trace", "t"), ("content-length", "0"), ("x-other", "o")]
        .map(|(n, v)| (n.to_owned(), v.to_owned()));
    for raw in [plain, plain, naming, plain, plain, naming, naming] {
        let head = parse_head(&mut BytesMut::from(raw.as_bytes()))
            .unwrap()
            .unwrap();
        if raw == naming {
            assert_eq!(
                pairs(&head),
                [("content-length".to_owned(), "0".to_owned())]
            );
            NAMES.with_borrow(|c| assert!(c.template.is_none()));
        } else {
            assert_eq!(pairs(&head), want_plain);
        }
    }
}

/// Decodes `wire` fed in pieces of `step` bytes; returns the data and what is left after it.
fn dechunk(wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>, bool), WireError> {
    let mut c = Chunked::default();
    let mut data = Vec::new();
    let mut buf = BytesMut::new();
    for piece in wire.chunks(step) {
        buf.extend_from_slice(piece);
        let mut out = Held::Nothing;
        c.decode(&mut buf, &mut out, usize::MAX)?;
        if let Some(b) = out.take() {
            data.extend_from_slice(&b);
        }
    }
    Ok((data, buf.to_vec(), c.is_done()))
}

#[test]
fn a_chunked_body_decodes_the_same_in_pieces_of_any_size() {
    let wire =
        b"5\r\nhello\r\n1;name=value\r\n \r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
    for step in 1..=wire.len() {
        let (data, rest, done) = dechunk(wire, step).unwrap();
        assert_eq!(data, b"hello 0123456789", "step {step}");
        assert!(done, "step {step}");
        assert_eq!(rest, b"NEXT", "step {step}: bytes after the body stay");
    }
    let (data, rest, done) = dechunk(b"3\r\nabc\r\n", 4).unwrap();
    assert_eq!(
        (data.as_slice(), rest.as_slice(), done),
        (&b"abc"[..], &b""[..], false)
    );
}

#[test]
fn broken_chunked_framing_is_an_error() {
    for (wire, why) in [
        (&b"zz\r\nhello\r\n"[..], "chunk size"),
        (b"\r\n", "chunk size"),
        (b"5\r\nhelloXX", "chunk terminator"),
        (b"5\rhello", "chunk size line"),
        (b"11111111111111111\r\n", "chunk size too large"),
        (b"0\r\nx: 1\n", "bare LF"),
    ] {
        assert_eq!(
            dechunk(wire, 3).unwrap_err(),
            WireError::Chunk(why),
            "{wire:?}"
        );
    }
}

#[test]
fn a_whole_size_line_is_read_in_one_step() {
    assert_eq!(size_line(b"5\r\nhello"), Some((5, 3)));
    assert_eq!(size_line(b"Ff\r\n"), Some((255, 4)));
    assert_eq!(size_line(b"0\r\n\r\n"), Some((0, 3)));
    assert_eq!(
        size_line(b"ffffffffffffffff\r\n"),
        Some((u64::MAX, 18)),
        "16 digits still fit"
    );
    // Everything else is left to the byte-by-byte decoder.
    for other in [
        &b"11111111111111111\r\n"[..], // a 17th digit
        b"5;ext=1\r\n",                // an extension
        b"5 \r\n",                     // whitespace before the CR
        b"5\r",                        // the LF has not arrived
        b"5",                          // nor the CR
        b"\r\n",                       // no digit
        b"5\rX",                       // CR without LF
        b"5\n",                        // bare LF
        b"",
    ] {
        assert_eq!(size_line(other), None, "{other:?}");
    }
}

/// One random chunked stream: chunks with sizes in any case of hex (some with extensions or
/// zero-padded), the last chunk, trailers, bytes after the body, and now and then a broken
/// byte anywhere.
fn chunked_stream() -> impl Strategy<Value = Vec<u8>> {
    let chunk = (
        proptest::collection::vec(any::<u8>(), 1..40),
        any::<bool>(),
        0u8..4,
    )
        .prop_map(|(data, upper, style)| {
            let size = if upper {
                format!("{:X}", data.len())
            } else {
                format!("{:x}", data.len())
            };
            let line = match style {
                0 => format!("{size}\r\n"),
                1 => format!("{size};n=v\r\n"),
                2 => format!("000{size}\r\n"),
                _ => format!("{size} \r\n"),
            };
            let mut out = line.into_bytes();
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
            out
        });
    (
        proptest::collection::vec(chunk, 0..6),
        any::<bool>(),
        proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
    )
        .prop_map(|(chunks, trailer, corrupt)| {
            let mut wire: Vec<u8> = chunks.concat();
            wire.extend_from_slice(b"0\r\n");
            if trailer {
                wire.extend_from_slice(b"x-t: 1\r\n");
            }
            wire.extend_from_slice(b"\r\nNEXT");
            if let Some((at, byte)) = corrupt {
                let i = at.index(wire.len());
                wire[i] = byte;
            }
            wire
        })
}

/// Feeds `wire` in pieces of `step` bytes, taking at most `max` data bytes per call; returns
/// the data, what is left after it, whether the body ended, or the error.
fn dechunk_with(wire: &[u8], step: usize, max: usize, whole_lines: bool) -> DechunkResult {
    let mut c = Chunked::default();
    let mut data = Vec::new();
    let mut buf = BytesMut::new();
    for piece in wire.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            let before = (buf.len(), c.state);
            let mut out = Held::Nothing;
            c.decode_with(&mut buf, &mut out, max, whole_lines)?;
            if let Some(b) = out.take() {
                data.extend_from_slice(&b);
            }
            if (buf.len(), c.state) == before {
                break;
            }
        }
    }
    Ok((data, buf.to_vec(), c.is_done()))
}

type DechunkResult = Result<(Vec<u8>, Vec<u8>, bool), WireError>;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// The one-step size lines and data CRLFs decode exactly as the byte-by-byte decoder does:
    /// the same data, the same bytes left, the same end, the same error, whatever the stream,
    /// the size of the reads and the frame cap.
    #[test]
    fn whole_line_shortcuts_decode_as_byte_by_byte(
        wire in chunked_stream(),
        step in 1usize..64,
        max in prop_oneof![Just(usize::MAX), 1usize..50],
    ) {
        prop_assert_eq!(
            dechunk_with(&wire, step, max, true),
            dechunk_with(&wire, step, max, false)
        );
    }
}

#[test]
fn the_first_chunk_is_checked_and_nothing_after_it() {
    for (wire, why) in [
        (
            &b"00000000000000005\r\nhello\r\n"[..],
            "chunk size too large",
        ),
        (b"5\r\nhelloXX0\r\n\r\n", "chunk terminator"),
        (b"5\r\nhello\rX", "chunk terminator"),
        (b"5\r\nhello\n", "chunk terminator"),
        (b"zz\r\n", "chunk size"),
        (b"5\rhello", "chunk size line"),
        (b"0\r\nx: 1\n", "bare LF"),
    ] {
        assert_eq!(
            Chunked::check_first(wire),
            Err(WireError::Chunk(why)),
            "{wire:?}"
        );
    }
    for fine in [
        &b""[..],
        b"5",
        b"5\r\nhel",
        b"5\r\nhello\r\n",
        // A fault past the first chunk is the stream's to meet, after the data before it.
        b"5\r\nhello\r\nZZ\r\n",
        b"5;x=1\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n",
        b"0\r\n\r\nNEXT",
    ] {
        assert_eq!(Chunked::check_first(fine), Ok(()), "{fine:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// The check never refuses what the decoder reads (a fault it reports is the decoder's
    /// first fault), and passes every intact stream.
    #[test]
    fn the_first_chunk_check_is_the_decoders_verdict(
        wire in chunked_stream(),
        cut in any::<prop::sample::Index>(),
    ) {
        let prefix = &wire[..cut.index(wire.len() + 1)];
        if let Err(e) = Chunked::check_first(prefix) {
            prop_assert_eq!(dechunk(prefix, prefix.len().max(1)).unwrap_err(), e);
        }
        if dechunk(&wire, wire.len().max(1)).is_ok() {
            prop_assert_eq!(Chunked::check_first(prefix), Ok(()));
        }
        // The one-step shortcut gives what reading the same bytes one by one gives.
        prop_assert_eq!(Chunked::check_first(prefix), Chunked::check_first_stepped(prefix));
    }
}

#[test]
fn decoding_stops_at_the_frame_cap_and_resumes() {
    let mut c = Chunked::default();
    let mut buf = BytesMut::from(&b"a\r\n0123456789\r\n0\r\n\r\n"[..]);
    let mut out = Held::Nothing;
    c.decode(&mut buf, &mut out, 4).unwrap();
    assert_eq!(out.take().unwrap(), "0123");
    c.decode(&mut buf, &mut out, usize::MAX).unwrap();
    assert_eq!(out.take().unwrap(), "456789");
    assert!(c.is_done());
}

#[test]
fn held_data_is_one_slice_without_a_copy_or_appended() {
    let mut h = Held::Nothing;
    let mut buf = BytesMut::from(&b"onetwothreeNEXT"[..]);
    let start = buf.as_ptr();
    h.push_from(&mut buf, 3);
    h.push_from(&mut buf, 0);
    assert!(
        matches!(&h, Held::One(b) if b.as_ptr() == start && b == "one"),
        "the first piece is the buffer's own bytes"
    );
    h.push_from(&mut buf, 3);
    h.push_from(&mut buf, 5);
    assert_eq!(h.len(), 11);
    assert_eq!(buf, "NEXT", "what was not taken stays");
    assert_eq!(h.take().unwrap(), "onetwothree");
    assert!(h.is_empty());
    assert_eq!(h.take(), None);
}

/// A burst of chunks in one read is copied into one buffer sized to the read; a chunk with
/// nothing after it in the buffer (a lone frame, or a read that ends inside a chunk) is
/// returned as the buffer's own bytes.
#[test]
fn a_burst_is_copied_once_and_a_lone_chunk_is_not_copied() {
    let mut c = Chunked::default();
    let mut buf = BytesMut::from(&b"3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n"[..]);
    let mut out = Held::Nothing;
    c.decode(&mut buf, &mut out, usize::MAX).unwrap();
    assert!(
        matches!(&out, Held::Many(b) if b == "onetwothree" && (11..=26).contains(&b.capacity())),
        "{out:?}"
    );
    assert!(buf.is_empty());

    for wire in [&b"5\r\nalone\r\n"[..], b"5\r\nalo", b"5\r\nalone"] {
        let mut c = Chunked::default();
        let mut buf = BytesMut::from(wire);
        let data = buf.as_ptr().wrapping_add(3);
        let mut out = Held::Nothing;
        c.decode(&mut buf, &mut out, usize::MAX).unwrap();
        assert!(
            matches!(&out, Held::One(b) if b.as_ptr() == data && wire[3..].starts_with(b)),
            "{wire:?}: {out:?}"
        );
    }

    // The frame cap ends a burst: what fits is returned without a copy, the rest stays.
    let mut c = Chunked::default();
    let mut buf = BytesMut::from(&b"3\r\none\r\n3\r\ntwo\r\n"[..]);
    let mut out = Held::Nothing;
    c.decode(&mut buf, &mut out, 3).unwrap();
    assert!(matches!(&out, Held::One(b) if b == "one"), "{out:?}");
    assert_eq!(
        buf, "two\r\n",
        "the framing before the data not taken is read"
    );
}

/// The header-name cache gives exactly what parsing gives: heads whose names change from one
/// response to the next, in other spellings and orders, each parse to the names of a fresh
/// parse; long names and positions past the cache's size are parsed every time; a bad name
/// at a cached position is still refused.
#[test]
fn cached_header_names_are_the_names_a_fresh_parse_gives() {
    let long = format!("X-{}", "a".repeat(CACHED_NAME_LEN));
    let many: String = (0..40).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let heads = [
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: a\r\nContent-Length: 0\r\n\r\n".to_owned(),
        "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: a\r\nContent-Length: 0\r\n\r\n".to_owned(),
        "HTTP/1.1 200 OK\r\nSERVER: x\r\ncontent-type: b\r\nX-Custom: 1\r\nContent-Length: 0\r\n\r\n"
            .to_owned(),
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: nginx\r\n\r\n".to_owned(),
        format!("HTTP/1.1 200 OK\r\n{long}: 1\r\nContent-Length: 0\r\n\r\n"),
        format!("HTTP/1.1 200 OK\r\n{long}: 2\r\nContent-Length: 0\r\n\r\n"),
        format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 0\r\n\r\n"),
        format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 0\r\n\r\n"),
    ];
    for raw in &heads {
        let head = parse_head(&mut BytesMut::from(raw.as_bytes()))
            .unwrap()
            .unwrap();
        let got: Vec<(String, String)> = head
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        let want: Vec<(String, String)> = raw
            .split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_ascii_lowercase(), v.to_owned())
            })
            .collect();
        assert_eq!(got, want, "{raw}");
    }
    NAMES.with_borrow(|c| {
        assert_eq!(c.names.len(), CACHED_NAMES, "bounded");
        assert!(c
            .names
            .iter()
            .all(|(raw, _, _)| raw.len() <= CACHED_NAME_LEN));
    });
    // Slot 0 holds `X-H0` now; a name that is not a token at that position is still refused.
    let bad = b"HTTP/1.1 200 OK\r\nX-H0: 1\r\nBad Name: 2\r\n\r\n";
    assert!(parse_head(&mut BytesMut::from(&bad[..])).is_err());
}

/// The headers of `raw` as a map built header by header, without the name cache.
fn fresh_map(raw: &str) -> Vec<(String, Vec<u8>)> {
    raw.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_ascii_lowercase(), v.trim().as_bytes().to_vec())
        })
        .collect()
}

fn parsed(raw: &str) -> Result<Vec<(String, Vec<u8>)>, WireError> {
    let head = parse_head(&mut BytesMut::from(raw.as_bytes()))?.unwrap();
    // The map must hold every value in order, and `get_all` must find each under its name.
    for (name, _) in head.headers.iter() {
        assert!(head.headers.get_all(name).iter().count() >= 1);
    }
    Ok(head
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect())
}

/// A head with the same names as the last one is built from the kept map, and gives exactly
/// the map of a fresh parse: same names, same values, same order, the values its own. Heads
/// that change one name, the number of names, or repeat a name are built header by header and
/// are just as exact; a head refused half-way (after it changed a slot) leaves no template
/// that could give the next head the old names.
#[test]
fn the_map_template_gives_the_map_a_fresh_parse_gives() {
    NAMES.with_borrow_mut(|c| {
        c.names.clear();
        c.template = None;
    });
    let a = "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: d1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n";
    let a2 = "HTTP/1.1 200 OK\r\nServer: other\r\nDate: d2\r\nContent-Type: text/plain\r\nContent-Length: 17\r\n\r\n";
    let renamed = "HTTP/1.1 200 OK\r\nServer: nginx\r\nX-Date: d3\r\nContent-Type: a\r\nContent-Length: 2\r\n\r\n";
    let shorter = "HTTP/1.1 200 OK\r\nServer: nginx\r\nX-Date: d4\r\nContent-Type: a\r\n\r\n";
    let repeated =
        "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n";
    let sequence = [
        (a, false),
        (a2, true),
        (a, true),
        (renamed, false),
        (renamed, true),
        (shorter, false),
        (shorter, true),
        (a, false),
        (a2, true),
        (repeated, false),
        (repeated, false),
        (a, false),
        (a, true),
    ];
    for (raw, templated) in sequence {
        let template_names = || -> Option<Vec<String>> {
            NAMES.with_borrow(|c| {
                c.template
                    .as_ref()
                    .map(|t| t.map.keys().map(|k| k.as_str().to_owned()).collect())
            })
        };
        let had = template_names();
        assert_eq!(parsed(raw).unwrap(), fresh_map(raw), "{raw}");
        // Templated exactly when the kept map has this head's names.
        let names: Vec<String> = fresh_map(raw).into_iter().map(|(n, _)| n).collect();
        assert_eq!(had.as_ref() == Some(&names), templated, "{raw}");
        // After a head of distinct, cached names the template is that head's names.
        let kept = template_names();
        let distinct = raw != repeated;
        assert_eq!(
            kept,
            distinct.then(|| fresh_map(raw).into_iter().map(|(n, _)| n).collect()),
            "{raw}"
        );
        // The template's values are empty: it holds no upstream's bytes.
        NAMES.with_borrow(|c| {
            if let Some(t) = &c.template {
                assert!(t.map.values().all(|v| v.is_empty()));
            }
        });
    }

    // httparse refuses the bytes `HeaderValue` refuses, so a head fails half-way only if
    // that ever changes; the cache is asked directly. A bad value after slot 1 changed:
    // refused, and the template is gone, so the next head with the new names gets them (not
    // the old template's `date`).
    let mut cache = NameCache {
        names: Vec::new(),
        template: None,
    };
    let build = |cache: &mut NameCache, pairs: &[(&str, &[u8])]| {
        let mut raw = Vec::new();
        let mut spans = Vec::new();
        for (n, v) in pairs {
            let ns = raw.len() as u32;
            raw.extend_from_slice(n.as_bytes());
            let vs = raw.len() as u32;
            raw.extend_from_slice(v);
            spans.push([ns, ns + n.len() as u32, vs, vs + v.len() as u32]);
        }
        cache.headers(&Bytes::from(raw), &spans).map(|(h, _)| {
            h.iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect::<Vec<_>>()
        })
    };
    let first: [(&str, &[u8]); 3] = [
        ("Server", b"nginx"),
        ("Date", b"d"),
        ("Content-Length", b"2"),
    ];
    build(&mut cache, &first).unwrap();
    assert_eq!(cache.template.as_ref().map(|t| t.map.len()), Some(3));
    let bad: [(&str, &[u8]); 3] = [
        ("Server", b"nginx"),
        ("X-Other", b"1"),
        ("Content-Length", b"\x01"),
    ];
    assert!(matches!(
        build(&mut cache, &bad),
        Err(WireError::Head("header value"))
    ));
    assert!(cache.template.is_none());
    let next: [(&str, &[u8]); 3] = [
        ("Server", b"s"),
        ("X-Other", b"2"),
        ("Content-Length", b"3"),
    ];
    let want = vec![
        ("server".to_owned(), b"s".to_vec()),
        ("x-other".to_owned(), b"2".to_vec()),
        ("content-length".to_owned(), b"3".to_vec()),
    ];
    assert_eq!(build(&mut cache, &next).unwrap(), want);
    assert_eq!(cache.template.as_ref().map(|t| t.map.len()), Some(3));
    assert_eq!(build(&mut cache, &next).unwrap(), want);

    // A bad value in a head that matches the template: refused too, the template kept.
    let bad_value: [(&str, &[u8]); 3] = [
        ("Server", b"s"),
        ("X-Other", b"\x7f"),
        ("Content-Length", b"3"),
    ];
    assert!(matches!(
        build(&mut cache, &bad_value),
        Err(WireError::Head("header value"))
    ));
    assert_eq!(cache.template.as_ref().map(|t| t.map.len()), Some(3));
    assert_eq!(build(&mut cache, &next).unwrap(), want);
}
