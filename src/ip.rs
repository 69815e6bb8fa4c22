//! Addresses in one place: the canonical form every module compares and shows
//! ([`canonical`], [`canonical_net`]), and the one parser for an IP address or CIDR network
//! written by an operator — in the config file (`trusted_proxies`, `allowlist`), on the
//! command line, or sent to the admin API ([`parse_cidr`]).
//!
//! Why one parser: the config and the admin API used to disagree (the config silently
//! truncated `10.0.0.5/8` to `10.0.0.0/8`, the API refused it). Now both refuse a network
//! with host bits, naming the network it would mean, because a typo in a trust or allow
//! list must not silently widen or shift it.
//!
//! IPv4-mapped IPv6 (`::ffff:192.0.2.0/120`, prefix >= 96) is *normalised* to the IPv4
//! network it carries (`192.0.2.0/24`): sources are compared in their canonical form, where
//! a mapped address is shown and matched as IPv4, so the mapped spelling could never match
//! anything as written. A mapped prefix shorter than 96 always has host bits set (the
//! `ffff` marker lies in them) and is refused like any other.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// IPv4-mapped IPv6 (`::ffff:192.0.2.10`) becomes the IPv4 address it is; everything else is
/// unchanged. Every source is compared, counted, banned and shown in this form.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The network in canonical form: host bits cleared, and an IPv4-mapped IPv6 network
/// (`::ffff:192.0.2.0/120`) as the IPv4 network it carries, so a ban or an allowlist entry
/// matches the canonical (IPv4) addresses the hot path looks up.
pub(crate) fn canonical_net(net: IpNet) -> IpNet {
    unmap(net.trunc())
}

/// Why a text is not an acceptable address or network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CidrError {
    /// Neither an IP address nor a CIDR network.
    #[error("'{0}' is not an IP address or CIDR")]
    Syntax(String),
    /// A network whose address has bits set beyond the prefix.
    #[error("'{text}' has host bits set; write {network}")]
    HostBits {
        /// The text as written (trimmed).
        text: String,
        /// The network the prefix describes.
        network: IpNet,
    },
}

/// Parses an IP address (a host network, `/32` or `/128`) or a CIDR network.
///
/// Surrounding spaces are ignored; host bits are refused; IPv4-mapped IPv6 with a prefix of
/// at least 96 becomes the IPv4 network (see the module docs for why).
pub(crate) fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    let text = text.trim();
    let syntax = || CidrError::Syntax(text.to_owned());
    let net = if text.contains('/') {
        text.parse::<IpNet>().map_err(|_| syntax())?
    } else {
        IpNet::from(text.parse::<IpAddr>().map_err(|_| syntax())?)
    };
    let net = unmap(net);
    if net.trunc() != net {
        return Err(CidrError::HostBits {
            text: text.to_owned(),
            network: net.trunc(),
        });
    }
    Ok(net)
}

/// `::ffff:a.b.c.d/n` with `n >= 96` → `a.b.c.d/(n-96)`; anything else unchanged.
fn unmap(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    }
}

/// Whether `ip` is an IPv6 link-local unicast address (`fe80::/10`; the standard library's own
/// test needs Rust 1.84).
pub(crate) fn is_link_local_v6(ip: std::net::Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Whether an IPv6 address is a source of its own, never grouped with its prefix: a
/// link-local one (`fe80::/10`: every link has the same `fe80::/64`) or an IPv4 client's
/// address translated by NAT64/SIIT into the well-known prefix `64:ff9b::/96` or the local-use
/// `64:ff9b:1::/48` (RFC 6052, RFC 8215), where each address is one IPv4 client and a /64
/// would hold every IPv4 client of the translator.
pub(crate) fn is_own_source_v6(ip: std::net::Ipv6Addr) -> bool {
    let s = ip.segments();
    is_link_local_v6(ip)
        || (s[0] == 0x64 && s[1] == 0xff9b && (s[2] == 1 || s[2..6] == [0, 0, 0, 0]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ok(text: &str) -> String {
        parse_cidr(text).unwrap().to_string()
    }

    fn err(text: &str) -> String {
        parse_cidr(text).unwrap_err().to_string()
    }

    #[test]
    fn addresses_become_host_networks_and_spaces_are_ignored() {
        assert_eq!(ok("10.1.2.3"), "10.1.2.3/32");
        assert_eq!(ok(" 192.168.0.0/16 "), "192.168.0.0/16");
        assert_eq!(ok("2001:db8::/48"), "2001:db8::/48");
        assert_eq!(ok("::1"), "::1/128");
    }

    #[test]
    fn host_bits_are_refused_naming_the_network_meant() {
        assert_eq!(
            err("10.0.0.5/8"),
            "'10.0.0.5/8' has host bits set; write 10.0.0.0/8"
        );
        assert_eq!(
            err("2001:db8::1/64"),
            "'2001:db8::1/64' has host bits set; write 2001:db8::/64"
        );
    }

    #[test]
    fn ipv4_mapped_networks_become_ipv4_and_host_bits_name_the_ipv4_form() {
        assert_eq!(ok("::ffff:192.0.2.0/120"), "192.0.2.0/24");
        assert_eq!(ok("::ffff:192.0.2.7"), "192.0.2.7/32");
        assert_eq!(ok("::ffff:0.0.0.0/96"), "0.0.0.0/0");
        assert_eq!(
            err("::ffff:10.0.0.5/104"),
            "'::ffff:10.0.0.5/104' has host bits set; write 10.0.0.0/8"
        );
        assert_eq!(
            err("::ffff:10.0.0.0/80"),
            "'::ffff:10.0.0.0/80' has host bits set; write ::/80"
        );
    }

    #[test]
    fn garbage_is_a_syntax_error() {
        assert_eq!(
            err("10.0.0.0/33"),
            "'10.0.0.0/33' is not an IP address or CIDR"
        );
        assert_eq!(err("nope"), "'nope' is not an IP address or CIDR");
        assert_eq!(err(""), "'' is not an IP address or CIDR");
    }
}
