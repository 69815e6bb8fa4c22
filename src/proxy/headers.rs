//! Header rewriting between client and upstream: hop-by-hop headers are stripped in both
//! directions (RFC 9110 §7.6.1), end-to-end headers pass untouched. A forwarded request's
//! lines are written without them ([`write_forwarded`]); a response's are never put in its
//! map (`upstream::wire` asks [`is_hop_by_hop`] and [`remove_connection_named`]).
//! [`strip_hop_by_hop`], the same rule applied to a map, is what the tests compare both with.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, ORIGIN};
#[cfg(test)]
use http::header::{
    PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};

/// Whether a browser made the request for another site's page: `Sec-Fetch-Site` is
/// present and neither `same-origin` nor `none` (a user's own navigation). A page cannot
/// set or remove it, so a web page cannot pass its requests off as the visitor's own; a
/// script can add it, so it never earns a request anything but a refusal.
pub(crate) fn cross_site(headers: &HeaderMap) -> bool {
    const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
    headers
        .get(SEC_FETCH_SITE)
        .is_some_and(|v| v.as_bytes() != b"same-origin" && v.as_bytes() != b"none")
}

/// Hop-by-hop headers that are never forwarded, besides those `Connection` names (in the
/// order of [`name_bit`]'s bits).
const HOP_COUNT: usize = 8;
#[cfg(test)]
const HOP_BY_HOP: [HeaderName; HOP_COUNT] = [
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHORIZATION,
    PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// `Connection`'s bit in [`name_bit`].
const CONN: u16 = 1 << HOP_COUNT;
/// The bits of the hop-by-hop names, `Connection` included.
const HOP_MASK: u16 = (1 << (HOP_COUNT + 1)) - 1;
/// The bits of the names the proxy sets itself on a forwarded request (and `Expect`, which
/// hyper has already answered): the client's own are never forwarded.
const HOST_BIT: u16 = 1 << (HOP_COUNT + 1);
const EXPECT_BIT: u16 = 1 << (HOP_COUNT + 2);
const XFF_BIT: u16 = 1 << (HOP_COUNT + 3);
const XFP_BIT: u16 = 1 << (HOP_COUNT + 4);
const XFH_BIT: u16 = 1 << (HOP_COUNT + 5);
/// `Origin`, written after the walk: dropped when it names the client's own host
/// ([`same_origin`]).
const ORIGIN_BIT: u16 = 1 << (HOP_COUNT + 6);

/// Bit `i` for `HOP_BY_HOP[i]`, [`CONN`] for `Connection`, a bit each for `Host`, `Expect`,
/// the three `X-Forwarded-*` names and `Origin`, 0 for any other name.
///
/// A match on the name's text (a length switch, then one comparison): comparing against the
/// `HeaderName` constants instead builds and drops one per comparison, and a `static` array of
/// them is compared through the generic `PartialEq` — both cost several times more per name.
fn name_bit(name: &HeaderName) -> u16 {
    match name.as_str() {
        "te" => 1,
        "trailer" => 1 << 1,
        "transfer-encoding" => 1 << 2,
        "upgrade" => 1 << 3,
        "proxy-authorization" => 1 << 4,
        "proxy-authenticate" => 1 << 5,
        "keep-alive" => 1 << 6,
        "proxy-connection" => 1 << 7,
        "connection" => CONN,
        "host" => HOST_BIT,
        "expect" => EXPECT_BIT,
        "x-forwarded-for" => XFF_BIT,
        "x-forwarded-proto" => XFP_BIT,
        "x-forwarded-host" => XFH_BIT,
        "origin" => ORIGIN_BIT,
        _ => 0,
    }
}

/// [`name_bit`] for the hop-by-hop names only.
fn hop_bit(name: &HeaderName) -> u16 {
    name_bit(name) & HOP_MASK
}

/// Whether `name` is hop-by-hop by itself (`Connection` included; not the names a
/// `Connection` value adds).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_bit(name) != 0
}

/// Removes from `headers` every header a `Connection` value names (`keep-alive` aside,
/// which is hop-by-hop anyway). The raw bytes are split: a value with a non-ASCII byte must
/// still have its names honoured.
pub(crate) fn remove_connection_named(headers: &mut HeaderMap, connection: &[u8]) {
    for name in connection_tokens(connection) {
        if let Ok(name) = HeaderName::from_bytes(name) {
            headers.remove(name);
        }
    }
}

/// Removes hop-by-hop headers, including every header the `Connection` header names: the
/// rule as edits of a map, the reference the request's writer and the response's parser are
/// tested against.
#[cfg(test)]
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Bit i: HOP_BY_HOP[i] is present; bit 8: `Connection`.
    let mut present = 0u16;
    // Whether a `Connection` value names anything but `keep-alive` (a header to remove).
    let mut names_others = false;
    for (name, value) in headers.iter() {
        let bit = hop_bit(name);
        if bit == CONN && !names_others {
            names_others = connection_tokens(value.as_bytes()).next().is_some();
        }
        present |= bit;
    }
    if present == 0 {
        return;
    }
    if present & CONN != 0 {
        if names_others {
            // Split the raw bytes: a value with a non-ASCII byte must still have its names
            // honoured. `keep-alive` names a header that is hop-by-hop anyway (found above).
            for name in connection_named(headers) {
                headers.remove(name);
            }
        }
        headers.remove(CONNECTION);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// The headers the proxy sets on a request it forwards, in place of any the client sent.
#[derive(Debug, Clone)]
pub(crate) struct Forwarding {
    /// `Host`: the upstream's authority (Ollama on loopback requires it).
    pub(crate) host: HeaderValue,
    /// `X-Forwarded-For`: the resolved client, *replacing* the client's own.
    pub(crate) forwarded_for: HeaderValue,
    /// `X-Forwarded-Proto`: whether the client came over TLS.
    pub(crate) forwarded_proto: HeaderValue,
    /// `X-Forwarded-Host` when the client addressed an absolute-form target: its authority,
    /// the host the request was checked for (RFC 9112 §3.2.2: the `Host` header is then
    /// ignored, and so it must not be passed on as the original host). `None`: the client's
    /// first `Host`.
    pub(crate) forwarded_host: Option<HeaderValue>,
    /// Whether an `Origin` naming the client's own host is dropped ([`same_origin`]): only
    /// where the listener admits a list of names (`allowed_hosts`). Elsewhere a page on a
    /// rebound name (`Host: rebind.attacker.example`, `Origin: http://rebind.attacker.example`,
    /// or a spoofed `*.local` on a loopback listener) would match too; there the `Origin` goes
    /// on, and Ollama's CORS check refuses that page.
    pub(crate) same_origin: bool,
}

/// Writes the header lines (`name: value\r\n`) of a forwarded request: `Host` from `fwd`, the
/// client's `headers` without the hop-by-hop ones (those `Connection` names included),
/// `Expect` and the client's own `Host` and `X-Forwarded-*`, then `X-Forwarded-For` and
/// `X-Forwarded-Proto` from `fwd` and `X-Forwarded-Host` with the absolute-form target's
/// authority, else the client's first `Host` when it sent one, and last the client's `Origin`
/// lines unless they are dropped ([`Forwarding::same_origin`]). Returns whether a
/// `Content-Length` was written (the framing of the body depends on it).
///
/// The client's map is read, not edited: removing and inserting six names in a `HeaderMap`
/// (hashing, probing, growing the map) cost about 2 000 instructions per request, a walk
/// comparing names a few hundred. A client naming `Host` or a forwarding header in its
/// `Connection` header strips only its own copy: the proxy's lines are written regardless, and
/// `X-Forwarded-Host` is read before anything is skipped.
pub(crate) fn write_forwarded(out: &mut Vec<u8>, headers: &HeaderMap, fwd: &Forwarding) -> bool {
    let mark = out.len();
    let (has_length, others) = forwarded_lines(out, headers, fwd, &[]);
    if !others {
        return has_length;
    }
    // A `Connection` value named other headers, which may have come before it: the lines go
    // again, without them. Rare (no client library sends such a value).
    let named = connection_named(headers);
    out.truncate(mark);
    forwarded_lines(out, headers, fwd, &named).0
}

/// The headers of `headers` that `Connection` values name (`keep-alive` aside), each once; a
/// token that is not a header name, or names a header the request does not have, names
/// nothing. Kept to the names present, the list is never longer than the head's distinct
/// names, however many tokens a client packs into `Connection`: each header line is checked
/// against it.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut named: Vec<HeaderName> = Vec::new();
    for token in headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| connection_tokens(v.as_bytes()))
    {
        if let Ok(name) = HeaderName::from_bytes(token) {
            if headers.contains_key(&name) && !named.contains(&name) {
                named.push(name);
            }
        }
    }
    named
}

/// One pass of [`write_forwarded`], skipping `named` too; returns whether a `Content-Length`
/// was written and whether a `Connection` value names other headers.
fn forwarded_lines(
    out: &mut Vec<u8>,
    headers: &HeaderMap,
    fwd: &Forwarding,
    named: &[HeaderName],
) -> (bool, bool) {
    header_line(out, b"host", fwd.host.as_bytes());
    let mut names_others = false;
    let mut has_length = false;
    let mut original_host = None;
    let mut origin = false;
    for (name, value) in headers {
        let bit = name_bit(name);
        if bit == 0 {
            if named.contains(name) {
                continue;
            }
            has_length |= *name == CONTENT_LENGTH;
            header_line(out, name.as_str().as_bytes(), value.as_bytes());
        } else if bit == CONN {
            names_others = names_others || connection_tokens(value.as_bytes()).next().is_some();
        } else if bit == HOST_BIT && original_host.is_none() {
            original_host = Some(value);
        } else if bit == ORIGIN_BIT {
            origin = true;
        }
    }
    header_line(out, b"x-forwarded-for", fwd.forwarded_for.as_bytes());
    header_line(out, b"x-forwarded-proto", fwd.forwarded_proto.as_bytes());
    let client_host = fwd.forwarded_host.as_ref().or(original_host);
    if let Some(host) = client_host {
        header_line(out, b"x-forwarded-host", host.as_bytes());
    }
    if origin && !named.contains(&ORIGIN) {
        let mut origins = headers.get_all(ORIGIN).iter().peekable();
        let first = origins.peek().map(|v| v.as_bytes());
        let client_host = client_host.map_or(&[][..], |h| h.as_bytes());
        if !(fwd.same_origin && first.is_some_and(|o| same_origin(o, client_host))) {
            for value in origins {
                header_line(out, b"origin", value.as_bytes());
            }
        }
    }
    (has_length, names_others)
}

/// Whether `origin` is `http://` or `https://` and then `host` exactly: the request Ollama's CORS
/// layer (gin-contrib/cors) takes for a same-origin one and lets through without a CORS check,
/// comparing the `Origin` with its own `Host`. The proxy rewrites `Host`, so that comparison
/// would fail and a page served on the guard's own origin (a web UI behind a front proxy that
/// passes `Host`) would get Ollama's `403` unless its origin were in `OLLAMA_ORIGINS`: such an
/// `Origin` is not forwarded, which is what Ollama does with it — nothing.
fn same_origin(origin: &[u8], host: &[u8]) -> bool {
    [&b"http://"[..], b"https://"]
        .into_iter()
        .any(|scheme| origin.strip_prefix(scheme) == Some(host))
}

/// Appends `name: value\r\n`.
pub(crate) fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The tokens of a `Connection` value other than `keep-alive` (trimmed, possibly empty).
fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|name| !name.eq_ignore_ascii_case(b"keep-alive"))
}

std::thread_local! {
    /// This worker thread's last `X-Forwarded-For` address and its value.
    static LAST_FORWARDED: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

/// The `X-Forwarded-For` value of `ip`: [`ip_value`], reused while the address repeats.
///
/// A client sends request after request (keep-alive, or one trusted proxy for many): the
/// value of the worker's last address is shared (a reference count) instead of formatted into
/// a new allocation each time, about 200 fewer instructions per request (callgrind). The
/// value is a function of the address, so the cache cannot change a header.
pub(crate) fn forwarded_for(ip: IpAddr) -> HeaderValue {
    LAST_FORWARDED.with_borrow_mut(|last| match last {
        Some((cached, value)) if *cached == ip => value.clone(),
        _ => {
            let value = ip_value(ip);
            *last = Some((ip, value.clone()));
            value
        }
    })
}

/// The header value of an IP address (`X-Forwarded-For`), formatted without a temporary
/// `String`. IPv4, nearly every request, is written digit by digit (`core::fmt` costs ten
/// times more).
pub(crate) fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut buf = [0u8; 64];
    let len = match ip {
        IpAddr::V4(v4) => write_v4(&mut buf, v4.octets()),
        IpAddr::V6(_) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // An address is at most 45 bytes, so the write cannot fail; the fallback is
            // unreachable.
            match write!(cursor, "{ip}") {
                Ok(()) => usize::try_from(cursor.position()).unwrap_or(0),
                Err(_) => 0,
            }
        }
    };
    HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Writes `a.b.c.d` into `buf` (at least 15 bytes); returns the length.
fn write_v4(buf: &mut [u8], octets: [u8; 4]) -> usize {
    let mut n = 0;
    for (i, o) in octets.into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            buf[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            buf[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + o % 10;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_bits_follow_the_hop_by_hop_list_and_spare_every_other_name() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_bit(name), 1 << i, "{name}");
        }
        assert_eq!(hop_bit(&CONNECTION), 1 << HOP_COUNT);
        for other in [
            "content-type",
            "x-te",
            "tee",
            "upgrade-insecure-requests",
            "keep-alive2",
        ] {
            assert_eq!(hop_bit(&HeaderName::from_static(other)), 0, "{other}");
        }
        // Names are lower-cased when parsed: any spelling of a hop-by-hop name is found.
        let upper = HeaderName::from_bytes(b"Transfer-Encoding").unwrap();
        assert_eq!(hop_bit(&upper), 1 << 2);
    }

    #[test]
    fn forwarded_for_is_the_value_of_each_address_repeated_or_not() {
        for ip in [
            "192.0.2.1",
            "192.0.2.1",
            "2001:db8::1",
            "192.0.2.1",
            "10.0.0.255",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(forwarded_for(ip), ip_value(ip));
            assert_eq!(forwarded_for(ip).to_str().unwrap(), ip.to_string());
        }
    }

    /// The header lines of [`write_forwarded`], per name, values in order.
    fn lines_by_name(out: &[u8]) -> std::collections::BTreeMap<String, Vec<Vec<u8>>> {
        let mut by_name = std::collections::BTreeMap::<String, Vec<Vec<u8>>>::new();
        for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let line = line.strip_suffix(b"\r").unwrap();
            let at = line.windows(2).position(|w| w == b": ").unwrap();
            let name = String::from_utf8(line[..at].to_vec()).unwrap();
            by_name
                .entry(name)
                .or_default()
                .push(line[at + 2..].to_vec());
        }
        by_name
    }

    /// What the rewrite did to the client's map before the lines were written from it: the
    /// edits `write_forwarded` replaces.
    fn edited(mut h: HeaderMap, fwd: &Forwarding) -> HeaderMap {
        let original_host = h.remove(http::header::HOST);
        strip_hop_by_hop(&mut h);
        let host = original_host.as_ref().map_or(&b""[..], |v| v.as_bytes());
        if let Some(origin) = h.get(ORIGIN) {
            let origin = origin.as_bytes();
            if origin.strip_prefix(b"http://") == Some(host)
                || origin.strip_prefix(b"https://") == Some(host)
            {
                h.remove(ORIGIN);
            }
        }
        h.remove(http::header::EXPECT);
        h.insert(http::header::HOST, fwd.host.clone());
        h.insert("x-forwarded-for", fwd.forwarded_for.clone());
        h.insert("x-forwarded-proto", fwd.forwarded_proto.clone());
        match original_host {
            Some(host) => h.insert("x-forwarded-host", host),
            None => h.remove("x-forwarded-host"),
        };
        h
    }

    proptest::proptest! {
        /// The lines written for any mix of hop-by-hop, forwarding and end-to-end headers
        /// (and `Connection` values naming any of them) are the headers of the edited map,
        /// value for value; `Content-Length` is reported exactly when it is written.
        #[test]
        fn forwarded_lines_are_the_edited_maps_headers(
            pairs in proptest::collection::vec((0usize..17, 0usize..9), 0..14)
        ) {
            const NAMES: [&str; 17] = [
                "host", "connection", "x-forwarded-for", "x-forwarded-host",
                "x-forwarded-proto", "expect", "te", "transfer-encoding", "keep-alive",
                "content-length", "content-type", "x-secret-hop", "authorization", "upgrade",
                "proxy-connection", "accept", "origin",
            ];
            const VALUES: [&str; 9] = [
                "keep-alive", "x-secret-hop", "close, content-length", "host, accept",
                "Keep-Alive, X-Forwarded-For", "1", "http://1", "https://1", "origin",
            ];
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(NAMES[n], HeaderValue::from_static(VALUES[v]));
            }
            let fwd = Forwarding {
                host: HeaderValue::from_static("127.0.0.1:11435"),
                forwarded_for: HeaderValue::from_static("198.51.100.7"),
                forwarded_proto: HeaderValue::from_static("http"),
                forwarded_host: None,
                same_origin: true,
            };
            let mut out = b"GET / HTTP/1.1\r\n".to_vec();
            let has_length = write_forwarded(&mut out, &h, &fwd);
            let written = lines_by_name(&out[16..]);
            let want = edited(h, &fwd);
            let mut expected = std::collections::BTreeMap::<String, Vec<Vec<u8>>>::new();
            for (name, value) in &want {
                expected.entry(name.as_str().to_owned()).or_default().push(value.as_bytes().to_vec());
            }
            proptest::prop_assert_eq!(&written, &expected);
            proptest::prop_assert_eq!(has_length, want.contains_key(CONTENT_LENGTH));
        }
    }

    /// An `Origin` that is the client's own host behind `http://` or `https://`, byte for byte,
    /// is not forwarded (Ollama's CORS layer would have let it through unchecked, comparing it
    /// with the `Host` the proxy rewrites); any other is, every value of it.
    #[test]
    fn a_same_origin_origin_is_not_forwarded_and_any_other_is() {
        let forwarded_origins = |host: Option<&'static str>,
                                 authority: Option<&'static str>,
                                 origins: &[&'static str]| {
            let mut h = HeaderMap::new();
            if let Some(host) = host {
                h.insert(http::header::HOST, HeaderValue::from_static(host));
            }
            for o in origins {
                h.append(ORIGIN, HeaderValue::from_static(o));
            }
            let fwd = Forwarding {
                host: HeaderValue::from_static("127.0.0.1:11435"),
                forwarded_for: HeaderValue::from_static("198.51.100.7"),
                forwarded_proto: HeaderValue::from_static("https"),
                forwarded_host: authority.map(HeaderValue::from_static),
                same_origin: true,
            };
            let mut out = Vec::new();
            write_forwarded(&mut out, &h, &fwd);
            lines_by_name(&out).remove("origin").unwrap_or_default()
        };
        let host = Some("ai.example.com");
        assert!(forwarded_origins(host, None, &["http://ai.example.com"]).is_empty());
        assert!(forwarded_origins(host, None, &["https://ai.example.com"]).is_empty());
        // The first value decides, as Go's `Header.Get`; the others go with it.
        assert!(forwarded_origins(host, None, &["https://ai.example.com", "http://x"]).is_empty());
        assert_eq!(
            forwarded_origins(host, None, &["http://x", "https://ai.example.com"]),
            [b"http://x".to_vec(), b"https://ai.example.com".to_vec()]
        );
        for other in [
            "https://ai.example.com:443",
            "HTTPS://ai.example.com",
            "https://AI.example.com",
            "https://evil.example",
            "null",
        ] {
            assert_eq!(
                forwarded_origins(host, None, &[other]),
                [other.as_bytes().to_vec()],
                "{other}"
            );
        }
        // An absolute-form target's authority is Go's `Request.Host`, not the header.
        assert!(forwarded_origins(
            host,
            Some("api.example.com:8443"),
            &["https://api.example.com:8443"]
        )
        .is_empty());
        assert_eq!(
            forwarded_origins(
                host,
                Some("api.example.com:8443"),
                &["https://ai.example.com"]
            ),
            [b"https://ai.example.com".to_vec()]
        );
        // A listener that takes every `Host` keeps it: there a rebound name would match.
        let mut h = HeaderMap::new();
        h.insert(
            http::header::HOST,
            HeaderValue::from_static("rebind.attacker.example"),
        );
        h.insert(
            ORIGIN,
            HeaderValue::from_static("http://rebind.attacker.example"),
        );
        let open = Forwarding {
            host: HeaderValue::from_static("127.0.0.1:11435"),
            forwarded_for: HeaderValue::from_static("198.51.100.7"),
            forwarded_proto: HeaderValue::from_static("http"),
            forwarded_host: None,
            same_origin: false,
        };
        let mut out = Vec::new();
        write_forwarded(&mut out, &h, &open);
        assert_eq!(
            lines_by_name(&out).remove("origin"),
            Some(vec![b"http://rebind.attacker.example".to_vec()])
        );
        // No `Host` at all (HTTP/1.0): Go compares with the empty host.
        assert!(forwarded_origins(None, None, &["http://"]).is_empty());
        assert_eq!(
            forwarded_origins(None, None, &["http://a"]),
            [b"http://a".to_vec()]
        );
    }

    #[test]
    fn connection_value_with_a_non_ascii_byte_still_names_its_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_bytes(b"x-hop, caf\xe9").unwrap(),
        );
        h.insert("x-hop", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn ip_values_are_the_address_text() {
        assert_eq!(ip_value("2001:db8::1".parse().unwrap()), "2001:db8::1");
        assert_eq!(ip_value("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(
            ip_value("::ffff:10.0.0.1".parse().unwrap()),
            "::ffff:10.0.0.1"
        );
        // Every octet value, in every position, as `Display` writes it.
        for o in 0..=255u8 {
            for ip in [
                std::net::Ipv4Addr::new(o, 0, 100, 255),
                std::net::Ipv4Addr::new(9, o, 10, o),
                std::net::Ipv4Addr::new(255, 99, o, 1),
            ] {
                assert_eq!(ip_value(IpAddr::V4(ip)), ip.to_string().as_str());
            }
        }
    }

    #[test]
    fn a_message_without_hop_headers_is_left_exactly_as_it_was() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.append("x-multi", HeaderValue::from_static("1"));
        h.append("x-multi", HeaderValue::from_static("2"));
        h.insert("keep-alive-x", HeaderValue::from_static("not hop-by-hop"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn connection_keep_alive_removes_the_keep_alive_header_and_itself_only() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("content-length", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-length"]);
    }

    #[test]
    fn each_hop_header_alone_is_removed() {
        for name in HOP_BY_HOP.iter().chain([&CONNECTION]) {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_static("text/plain"));
            h.insert(name.clone(), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h);
            let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(left, ["content-type"], "{name}");
        }
    }

    #[test]
    fn connection_named_and_standard_hop_headers_are_removed_end_to_end_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-type"]);
    }

    /// However many tokens a `Connection` value packs, the list the head's lines are checked
    /// against holds each named header the request has, once: a client cannot make every
    /// header line cost a walk over its tokens.
    #[test]
    fn connection_named_is_the_present_names_once_each() {
        let mut h = HeaderMap::new();
        let mut value = String::new();
        for i in 0..10_000 {
            value.push_str(if i % 2 == 0 { "X-A, " } else { "absent-name, " });
            value.push_str(&format!("n{i}, "));
        }
        value.push_str("x-b, not a name, keep-alive");
        h.insert(CONNECTION, HeaderValue::from_str(&value).unwrap());
        h.insert("x-b", HeaderValue::from_static("1"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("n7", HeaderValue::from_static("1"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let named = connection_named(&h);
        assert_eq!(named, ["x-a", "n7", "x-b"]);
    }
}
