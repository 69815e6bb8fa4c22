//! Which client a request really comes from.
//!
//! The socket peer, unless the peer is a trusted proxy: then `X-Forwarded-For` is walked
//! right to left, skipping trusted hops, and the first untrusted address is the client
//! (nginx `real_ip_recursive on`). Anything a client writes into the header itself sits to
//! the left of what its proxy appended, so it can neither evade a ban nor frame another
//! source. An unparsable hop ends the walk at the last hop a trusted proxy vouched for.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
use ipnet::IpNet;

/// Shows an IPv4-mapped IPv6 address (`::ffff:192.0.2.10`) as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// Parses one `X-Forwarded-For` element: a bare IP, `[v6]`, `[v6]:port` or `v4:port`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let t = text.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = t.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (host, port) = t.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Resolves the client address of a request from its socket peer and headers.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let mut current = peer;
    // Later header lines were appended by later hops, so walk the lines in reverse too.
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = value.to_str() else {
            return current;
        };
        for hop in text.rsplit(',') {
            if hop.trim().is_empty() {
                continue;
            }
            let Some(ip) = parse_hop(hop) else {
                return current;
            };
            current = canonical(ip);
            if !is_trusted(current, trusted) {
                return current;
            }
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn spoofed_xff_from_untrusted_peer_is_ignored() {
        let h = headers(&["6.6.6.6"]);
        assert_eq!(
            resolve(ip("203.0.113.9"), &h, &nets(&["10.0.0.0/8"])),
            ip("203.0.113.9")
        );
        assert_eq!(resolve(ip("203.0.113.9"), &h, &[]), ip("203.0.113.9"));
    }

    #[test]
    fn trusted_peer_xff_is_walked_right_to_left_past_trusted_hops() {
        let h = headers(&["6.6.6.6, 198.51.100.7, 10.0.0.2"]);
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn multiple_xff_lines_are_one_list_in_order() {
        let h = headers(&["6.6.6.6", "198.51.100.7"]);
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn garbage_hop_stops_at_the_last_vouched_address() {
        let h = headers(&["198.51.100.7, garbage"]);
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn all_trusted_chain_gives_the_leftmost_and_ports_are_accepted() {
        let h = headers(&["10.9.9.9:4711, [2001:db8::5]:80"]);
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8", "2001:db8::/32"])),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn ipv4_mapped_peer_is_shown_as_ipv4() {
        assert_eq!(
            resolve(ip("::ffff:192.0.2.10"), &HeaderMap::new(), &[]),
            ip("192.0.2.10")
        );
        let h = headers(&["::ffff:198.51.100.1"]);
        assert_eq!(
            resolve(ip("::ffff:10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
            ip("198.51.100.1")
        );
    }
}
