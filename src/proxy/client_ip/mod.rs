//! Which client a request really comes from.
//!
//! The socket peer, unless the peer is a trusted proxy: then `X-Forwarded-For` is walked
//! right to left, skipping trusted hops, and the first untrusted address is the client
//! (nginx `real_ip_recursive on`). Anything a client writes into the header itself sits to
//! the left of what its proxy appended, so it can neither evade a ban nor frame another
//! source.
//!
//! The header is read as bytes, hop by hop. nginx's `$proxy_add_x_forwarded_for` appends the
//! real client to whatever the client sent, on the same line: a client that sends one
//! non-ASCII byte (`caf\xe9`) must not make the whole line unreadable, or the walk would fall
//! back to the trusted proxy and nobody would be counted or banned. So each comma-separated
//! hop is judged on its own; the walk stops at the first hop that is not an IP address, and
//! the answer is the last valid hop to the right of it (an untrusted one ends the walk
//! earlier, as usual). A bad hop can only sit to the left of what a trusted proxy appended,
//! so stopping there never lets the client choose its own address.
//!
//! When the walk stops at a bad hop before it found an untrusted address, the client is
//! *unknown*: a trusted proxy forwarded the request for someone it did not name by address
//! (nginx on a Unix socket writes `unix:`, Squid `unknown`). The request is still counted under
//! the last address vouched for, as before, but it is not that address's own: it gets none of
//! the rights an address can hold (`manage_from`), or a client could claim a trusted proxy's
//! rights by sending one bad element. An IPv6 hop with a zone id (`fe80::2%eth0`, which Go's reverse proxy writes for a
//! link-local client) is its address: the zone only says which link.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{HeaderMap, HeaderName};
use ipnet::IpNet;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub(crate) use crate::ip::canonical;

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// Optional whitespace around a hop (RFC 9110 OWS: space and horizontal tab).
fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// Parses one `X-Forwarded-For` element: a bare IP, `[v6]`, `[v6]:port` or `v4:port`, an IPv6
/// address with a zone id (`fe80::2%eth0`, `[fe80::2%25eth0]:80`) as its address. Anything else
/// (a name, `unknown`, `unix:`, a non-ASCII byte) is not an address.
fn parse_hop(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(trim_ows(raw)).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(v6) = zoned_v6(text) {
        return Some(IpAddr::V6(v6));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return v6
            .parse::<Ipv6Addr>()
            .ok()
            .or_else(|| zoned_v6(v6))
            .map(IpAddr::V6);
    }
    let (host, port) = text.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// An IPv6 address followed by `%` and a non-empty zone id (Go's `fe80::2%eth0`, or the URI
/// form `%25eth0`): the address.
fn zoned_v6(text: &str) -> Option<Ipv6Addr> {
    let (addr, zone) = text.split_once('%')?;
    // `%25` alone is the URI form of an empty zone.
    if zone.is_empty() || zone == "25" {
        return None;
    }
    addr.parse::<Ipv6Addr>().ok()
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.parse::<u16>().is_ok()
}

/// What the walk found at one hop.
enum Step {
    /// Keep walking left (a trusted address, or an empty element).
    Continue,
    /// The answer.
    Stop(Resolved),
}

/// A request's client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The address the request is counted under.
    pub(crate) src: IpAddr,
    /// A trusted proxy named the client with something that is not an address: `src` is the
    /// last address vouched for, not the client's own (see the module doc).
    pub(crate) unknown: bool,
}

/// Resolves the client of a request from its socket peer and headers.
pub(crate) fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Resolved {
    let peer = canonical(peer);
    let known = |src| Resolved {
        src,
        unknown: false,
    };
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return known(peer);
    }
    // The last address a trusted hop vouched for: the answer if the walk runs out.
    let mut current = peer;
    let mut step = |hop: &[u8]| -> Step {
        if trim_ows(hop).is_empty() {
            return Step::Continue;
        }
        let Some(ip) = parse_hop(hop) else {
            return Step::Stop(Resolved {
                src: current,
                unknown: true,
            });
        };
        current = canonical(ip);
        if is_trusted(current, trusted) {
            Step::Continue
        } else {
            Step::Stop(known(current))
        }
    };
    // Later header lines were appended by later hops (HAProxy adds a line of its own), so
    // the lines are walked in reverse too: together they are one list.
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        for hop in value.as_bytes().rsplit(|&b| b == b',') {
            if let Step::Stop(found) = step(hop) {
                return found;
            }
        }
    }
    known(current)
}

/// One source's key for every per-source budget and count (decoder slots, held body bytes,
/// log throttles): the address, or an IPv6 address's /48 (a site's allocation: one
/// subscriber's /56 holds 256 /64s, each of which would otherwise have its own share). A
/// link-local address is its own key: every link shares `fe80::/48`; so is an IPv4 client's
/// address in a NAT64 prefix ([`crate::ip::is_own_source_v6`]).
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if crate::ip::is_own_source_v6(v6) => ip,
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 80) - 1)).into()),
        },
    }
}

#[cfg(test)]
mod tests;
