//! Source identity: who a request is counted against.
//!
//! IPv4 sources are single addresses. An IPv6 client usually owns a whole /64 (SLAAC, privacy
//! addresses), so counting per address would let one attacker rotate through 2^64 identities;
//! IPv6 sources are therefore grouped by a configurable prefix (default 64) and displayed as a
//! network, `2001:db8:1:2::/64` (or as a plain address when the prefix is 128). IPv4-mapped
//! IPv6 (`::ffff:192.0.2.1`, what a dual-stack socket reports) is treated as the IPv4 address
//! it carries, so the same client never counts twice.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};

/// A compact, fixed-size source identity (18 bytes, no heap), used inside counter keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SourceKey {
    /// IPv4: the address in the first four bytes; IPv6: the masked network.
    addr: [u8; 16],
    /// 32 for IPv4; the grouping prefix (1..=128) for IPv6.
    prefix: u8,
    v4: bool,
}

impl SourceKey {
    /// The identity of `ip` when IPv6 sources are grouped by `ipv6_prefix` bits (clamped to
    /// 0..=128). A link-local address (`fe80::/10`) is its own: every link has the same
    /// `fe80::/64`, so its prefix says nothing about who sent it; so is an IPv4 client's
    /// address translated into a NAT64 prefix ([`crate::ip::is_own_source_v6`]).
    pub(crate) fn new(ip: IpAddr, ipv6_prefix: u8) -> SourceKey {
        match canonical(ip) {
            IpAddr::V4(v4) => {
                let mut addr = [0u8; 16];
                addr[..4].copy_from_slice(&v4.octets());
                SourceKey {
                    addr,
                    prefix: 32,
                    v4: true,
                }
            }
            IpAddr::V6(v6) => {
                let prefix = if crate::ip::is_own_source_v6(v6) {
                    128
                } else {
                    ipv6_prefix.min(128)
                };
                let bits = u128::from(v6);
                let masked = match prefix {
                    0 => 0,
                    p => bits & (u128::MAX << (128 - u32::from(p))),
                };
                SourceKey {
                    addr: masked.to_be_bytes(),
                    prefix,
                    v4: false,
                }
            }
        }
    }

    /// The counter subject of an identity (an API key's name, interned by the engine as
    /// `id`), for the keys of rules grouped by identity. It can never equal the key of an
    /// address: an IPv4 key has prefix 32, an IPv6 key is not marked IPv4. So identity keys
    /// share the 18 bytes of the source inside a window key instead of widening it.
    pub(crate) fn identity(id: u16) -> SourceKey {
        let mut addr = [0u8; 16];
        addr[..2].copy_from_slice(&id.to_le_bytes());
        SourceKey {
            addr,
            prefix: 0,
            v4: true,
        }
    }

    /// The key as three words (address halves; prefix and family in the low bits of the
    /// third), equal exactly when the keys are equal: for hashing.
    pub(crate) fn words(&self) -> [u64; 3] {
        let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = self.addr;
        [
            u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
            u64::from(self.prefix) | u64::from(self.v4) << 8,
        ]
    }

    /// The interned identity this key stands for, when it is an identity key.
    pub(crate) fn identity_id(&self) -> Option<u16> {
        (self.v4 && self.prefix == 0).then(|| u16::from_le_bytes([self.addr[0], self.addr[1]]))
    }

    /// The network this identity covers (a /32 for IPv4), e.g. for a ban.
    pub(crate) fn network(&self) -> IpNet {
        let net = match self.ip() {
            IpAddr::V4(a) => ipnet::Ipv4Net::new(a, 32).map(IpNet::V4),
            IpAddr::V6(a) => ipnet::Ipv6Net::new(a, self.prefix).map(IpNet::V6),
        };
        // The prefix is at most 32 / 128 by construction; the fallback is unreachable.
        net.unwrap_or_else(|_| IpNet::from(self.ip()))
    }

    fn ip(&self) -> IpAddr {
        if self.v4 {
            let [a, b, c, d, ..] = self.addr;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.addr))
        }
    }
}

impl SourceKey {
    /// The `src` field's text, as [`Display`](fmt::Display) writes it.
    ///
    /// Why: every event names its source, and `scan` every row; an IPv4 source is written
    /// into a string of its own length here, without the formatting machinery and the
    /// growing string of `to_string` (about 600 instructions a row before).
    pub(crate) fn text(&self) -> String {
        match self.v4_text() {
            Some((buf, len)) => {
                std::str::from_utf8(&buf[..len]).map_or_else(|_| self.to_string(), String::from)
            }
            None => self.to_string(),
        }
    }

    /// The dotted quad of an IPv4 source (not an identity) in a buffer, and its length.
    fn v4_text(&self) -> Option<([u8; 16], usize)> {
        if self.identity_id().is_some() {
            return None;
        }
        let IpAddr::V4(a) = self.ip() else {
            return None;
        };
        // Each octet's digits and a dot from a table, written whole; the next one starts
        // after the digits. 16 bytes: the last octet's dot falls into the spare byte, and
        // is not counted.
        let mut buf = [0u8; 16];
        let mut len = 0;
        for octet in a.octets() {
            let (text, n) = OCTET_TEXT[usize::from(octet)];
            buf[len..len + 4].copy_from_slice(&text);
            len += n;
        }
        Some((buf, len - 1))
    }
}

/// The decimal text of every octet followed by a dot, and the length of both.
const OCTET_TEXT: [([u8; 4], usize); 256] = {
    let mut table = [([0u8; 4], 0usize); 256];
    let mut octet = 0;
    while octet < 256 {
        let (h, t, o) = (
            (octet / 100) as u8,
            (octet / 10 % 10) as u8,
            (octet % 10) as u8,
        );
        table[octet] = if octet >= 100 {
            ([b'0' + h, b'0' + t, b'0' + o, b'.'], 4)
        } else if octet >= 10 {
            ([b'0' + t, b'0' + o, b'.', 0], 3)
        } else {
            ([b'0' + o, b'.', 0, 0], 2)
        };
        octet += 1;
    }
    table
};

impl fmt::Display for SourceKey {
    /// `192.0.2.1`, `2001:db8::1` (prefix 128) or `2001:db8:1:2::/64`: the `src` field.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(id) = self.identity_id() {
            // Never shown in an event (those name the request's address); for debugging.
            return write!(f, "identity#{id}");
        }
        // By hand: `Ipv4Addr`'s own Display goes through the formatting machinery four
        // times, and `scan` names the source of every row.
        if let Some((buf, len)) = self.v4_text() {
            return f.write_str(std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?);
        }
        match self.ip() {
            IpAddr::V6(a) if self.prefix == 128 => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/{}", self.prefix),
            IpAddr::V4(a) => write!(f, "{a}"),
        }
    }
}

pub(crate) use crate::ip::canonical;

/// Sources that are never counted (the `allowlist` config key): health checkers, the operator's own
/// tooling, loopback.
#[derive(Debug, Clone, Default)]
pub(crate) struct Allowlist {
    nets: Vec<IpNet>,
}

impl Allowlist {
    /// Wraps the configured networks.
    pub(crate) fn new(nets: Vec<IpNet>) -> Allowlist {
        Allowlist { nets }
    }

    /// Whether `ip` (or, for IPv4-mapped IPv6, the IPv4 address inside) is listed.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let canon = canonical(ip);
        self.nets
            .iter()
            .any(|n| n.contains(&canon) || (canon != ip && n.contains(&ip)))
    }

    /// Whether every address counted under `src` is listed: such a key can never count
    /// again, so a hot reload drops it. An IPv4 source is also covered by an IPv4-mapped
    /// IPv6 entry (`::ffff:192.0.2.1/128`), as [`Allowlist::contains`] treats it.
    pub(crate) fn covers(&self, src: &SourceKey) -> bool {
        let net = src.network();
        let mapped = match net {
            IpNet::V4(v4) => Ipv6Net::new(v4.addr().to_ipv6_mapped(), 96 + v4.prefix_len())
                .ok()
                .map(IpNet::V6),
            IpNet::V6(_) => None,
        };
        self.nets
            .iter()
            .any(|n| n.contains(&net) || mapped.is_some_and(|m| n.contains(&m)))
    }

    /// Whether nothing is listed (skips the check on the hot path).
    pub(crate) fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` writes what `Display` writes, for every kind of source.
    #[test]
    fn the_source_text_is_the_display_text() {
        let cases = [
            ("0.0.0.0", 64, "0.0.0.0"),
            ("10.0.1.100", 64, "10.0.1.100"),
            ("255.255.255.255", 64, "255.255.255.255"),
            ("::ffff:192.0.2.9", 64, "192.0.2.9"),
            ("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"),
            ("2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6"),
        ];
        for (ip, prefix, want) in cases {
            let key = SourceKey::new(ip.parse().unwrap(), prefix);
            assert_eq!(
                (key.text(), key.to_string()),
                (want.to_owned(), want.to_owned())
            );
        }
        // Every octet value in every place, against the standard library's text.
        for octet in 0..=255u8 {
            for place in 0..4 {
                let mut octets = [7, 45, 123, 0];
                octets[place] = octet;
                let ip = Ipv4Addr::from(octets);
                let key = SourceKey::new(IpAddr::V4(ip), 64);
                assert_eq!(key.text(), ip.to_string());
            }
        }
    }

    fn key(ip: &str, prefix: u8) -> SourceKey {
        SourceKey::new(ip.parse().unwrap(), prefix)
    }

    #[test]
    fn ipv4_displays_as_the_standard_library_does() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.1.100",
            "192.168.1.9",
            "1.20.100.0",
        ] {
            assert_eq!(key(ip, 64).to_string(), ip);
        }
        for n in (0..=u32::MAX).step_by(9_973) {
            let ip = Ipv4Addr::from(n);
            assert_eq!(
                SourceKey::new(IpAddr::V4(ip), 64).to_string(),
                ip.to_string()
            );
        }
    }

    #[test]
    fn ipv4_is_exact_and_displays_as_address() {
        assert_eq!(key("192.168.1.50", 64).to_string(), "192.168.1.50");
        assert_ne!(key("192.168.1.50", 64), key("192.168.1.51", 64));
        assert_eq!(
            key("192.168.1.50", 64).network().to_string(),
            "192.168.1.50/32"
        );
    }

    #[test]
    fn ipv6_is_grouped_by_prefix_and_displayed_as_network() {
        let a = key("2001:db8:1:2:aaaa::1", 64);
        let b = key("2001:DB8:1:2:bbbb::2", 64);
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_ne!(a, key("2001:db8:1:3::1", 64));
        assert_eq!(
            key("2001:db8:1:2:aaaa::1", 48).to_string(),
            "2001:db8:1::/48"
        );
    }

    /// Every link has the same `fe80::/64`: a link-local source is its address, whatever the
    /// grouping (a helper's review: one link-local offender behind a Go proxy would otherwise
    /// ban every link-local client of every link).
    #[test]
    fn a_link_local_address_is_its_own_source() {
        let a = key("fe80::2", 64);
        assert_eq!(a.to_string(), "fe80::2");
        assert_ne!(a, key("fe80::3", 64));
        assert_eq!(key("febf::1", 48).to_string(), "febf::1");
        // Just outside fe80::/10, and a unique-local address: grouped as usual.
        assert_eq!(key("fec0::1", 64).to_string(), "fec0::/64");
        assert_eq!(key("fd00::1", 64).to_string(), "fd00::/64");
        assert_eq!(
            crate::proxy::client_ip::source_key("fe80::2".parse().unwrap()).to_string(),
            "fe80::2"
        );
        assert_eq!(
            crate::proxy::client_ip::source_key("fd00::1:2".parse().unwrap()).to_string(),
            "fd00::"
        );
    }

    /// Behind a NAT64/SIIT translator each IPv4 client is one address of the translation
    /// prefix: one abusive client must not get the others counted and banned with it.
    #[test]
    fn an_ipv4_client_translated_into_a_nat64_prefix_is_its_own_source() {
        for (ip, text) in [
            ("64:ff9b::198.51.100.7", "64:ff9b::c633:6407"),
            ("64:ff9b:1::c633:6407", "64:ff9b:1::c633:6407"),
        ] {
            assert_eq!(key(ip, 64).to_string(), text);
            assert_eq!(key(ip, 48).to_string(), text);
            assert_eq!(
                crate::proxy::client_ip::source_key(ip.parse().unwrap()).to_string(),
                text
            );
        }
        assert_ne!(
            key("64:ff9b::198.51.100.7", 64),
            key("64:ff9b::203.0.113.200", 64)
        );
        // Next to the prefixes: grouped as usual.
        assert_eq!(key("64:ff9b:0:1::1", 64).to_string(), "64:ff9b:0:1::/64");
        assert_eq!(key("64:ff9b:2::1", 64).to_string(), "64:ff9b:2::/64");
    }

    #[test]
    fn ipv6_prefix_128_is_exact_and_displays_as_address() {
        let a = key("2001:db8::1", 128);
        assert_eq!(a.to_string(), "2001:db8::1");
        assert_ne!(a, key("2001:db8::2", 128));
        assert_eq!(a.network().to_string(), "2001:db8::1/128");
    }

    #[test]
    fn identity_keys_never_equal_an_address_key() {
        let id = SourceKey::identity(0);
        assert_eq!(id.identity_id(), Some(0));
        assert_eq!(SourceKey::identity(65_535).identity_id(), Some(65_535));
        assert_eq!(key("0.0.0.0", 64).identity_id(), None);
        assert_eq!(key("::", 0).identity_id(), None);
        assert_ne!(id, key("0.0.0.0", 64));
        assert_ne!(id, key("::", 0));
        assert_eq!(SourceKey::identity(7).to_string(), "identity#7");
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_source() {
        assert_eq!(key("::ffff:192.0.2.7", 64), key("192.0.2.7", 64));
        assert_eq!(key("::ffff:192.0.2.7", 64).to_string(), "192.0.2.7");
    }

    #[test]
    fn allowlist_matches_networks_and_mapped_addresses() {
        let list = Allowlist::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(list.contains("127.0.0.1".parse().unwrap()));
        assert!(list.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(list.contains("::1".parse().unwrap()));
        assert!(!list.contains("127.0.0.2".parse().unwrap()));
        assert!(!list.contains("::2".parse().unwrap()));
    }

    #[test]
    fn allowlist_covers_a_source_only_when_its_whole_network_is_listed() {
        let list = Allowlist::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "::ffff:192.0.2.7/128".parse().unwrap(),
            "2001:db8::/48".parse().unwrap(),
        ]);
        assert!(list.covers(&key("10.1.2.3", 64)));
        assert!(list.covers(&key("192.0.2.7", 64)));
        assert!(!list.covers(&key("192.0.2.8", 64)));
        assert!(list.covers(&key("2001:db8:0:5::1", 64)));
        assert!(!list.covers(&key("2001:db8:0:5::1", 32)));
    }
}
