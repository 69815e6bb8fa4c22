//! The name and address keys: `allowed_hosts` entries, and checks across the address keys:
//! a configuration that would make the guard talk to
//! itself (proxy loop) or bind one address twice is refused before anything starts, and a
//! trust list that believes everyone is reported as a startup warning.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use ipnet::IpNet;

use super::{ConfigError, Upstream};

/// Refuses `admin_listen` overlapping `listen`, and an `upstream` that is one of the guard's
/// own listeners (every request would be forwarded to the guard again, for ever).
///
/// Port 0 (an ephemeral port picked at bind time) never conflicts.
pub(super) fn check_listeners(
    listen: SocketAddr,
    admin_listen: SocketAddr,
    upstream: &Upstream,
) -> Result<(), ConfigError> {
    if listen.port() != 0 && listen.port() == admin_listen.port() && overlap(listen, admin_listen) {
        return Err(ConfigError::invalid(
            "admin_listen",
            format!(
                "{admin_listen} overlaps listen ({listen}); give the admin listener another port"
            ),
        ));
    }
    for (key, own) in [("listen", listen), ("admin_listen", admin_listen)] {
        if own.port() != 0 && reaches(own, upstream) {
            return Err(ConfigError::invalid(
                "upstream",
                format!(
                    "'{}' is this guard's own {key} ({own}): requests would loop; point it at Ollama",
                    upstream.url()
                ),
            ));
        }
    }
    Ok(())
}

/// Warnings about keys that are valid but almost certainly a mistake.
pub(super) fn trust_warnings(trusted: &[IpNet]) -> Vec<String> {
    trusted
        .iter()
        .filter(|n| n.prefix_len() == 0)
        .map(|n| {
            format!(
                "trusted_proxies contains {n}: every client can forge X-Forwarded-For and \
                 frame (or hide behind) any address; list only your proxies' addresses"
            )
        })
        .collect()
}

/// Shortest `admin_token` that draws no warning: 16 bytes, a guessable length for a
/// password, not for a random token.
const ADMIN_TOKEN_MIN: usize = 16;

/// Warnings about an admin listener reachable beyond this host: without a token (anyone who
/// reaches it can ban, unban and make API keys), or with one too short to be random.
pub(crate) fn admin_warnings(admin_listen: SocketAddr, token: Option<&str>) -> Vec<String> {
    if admin_listen.ip().is_loopback() {
        return Vec::new();
    }
    match token {
        None => vec![format!(
            "admin_listen {admin_listen} is not on loopback and admin_token is not set: anyone \
             who can reach it can ban and unban, and make and revoke API keys; set admin_token"
        )],
        Some(t) if t.len() < ADMIN_TOKEN_MIN => vec![format!(
            "admin_token is {} bytes long: use a long random string (`openssl rand -hex 32`)",
            t.len()
        )],
        _ => Vec::new(),
    }
}

/// Whether two listeners on the same port would claim the same connections: the same IP,
/// or an unspecified one covering the other's family (`::` covers IPv4 too: Linux binds it
/// dual-stack by default).
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let (a, b) = (a.ip().to_canonical(), b.ip().to_canonical());
    a == b || covers(a, b) || covers(b, a)
}

/// Whether a listener on the unspecified address `wild` accepts connections to `ip`.
fn covers(wild: IpAddr, ip: IpAddr) -> bool {
    match wild {
        IpAddr::V4(w) => w.is_unspecified() && ip.is_ipv4(),
        IpAddr::V6(w) => w.is_unspecified(),
    }
}

/// Whether connecting to `upstream` would reach the listener `own`.
///
/// `localhost` counts as loopback; other names are not resolved (config is checked without
/// DNS), so they are never refused here.
fn reaches(own: SocketAddr, upstream: &Upstream) -> bool {
    if upstream.authority.port_u16() != Some(own.port()) {
        return false;
    }
    let host = upstream.authority.host();
    let targets: Vec<IpAddr> = if host.eq_ignore_ascii_case("localhost") {
        vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
    } else {
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            // Connecting to the unspecified address reaches this host over loopback.
            Ok(ip) if ip.is_unspecified() && ip.is_ipv4() => vec![Ipv4Addr::LOCALHOST.into()],
            Ok(ip) if ip.is_unspecified() => vec![Ipv6Addr::LOCALHOST.into()],
            Ok(ip) => vec![ip.to_canonical()],
            Err(_) => return false,
        }
    };
    let own_ip = own.ip().to_canonical();
    targets
        .iter()
        .any(|&t| t == own_ip || (covers(own_ip, t) && is_local(t)))
}

/// Whether `ip` belongs to this host: loopback, or an address the kernel lets us bind.
///
/// Why a bind: it is the portable way to ask "is this address on one of my interfaces"
/// without reading interface tables; a UDP socket on port 0 sends nothing and is closed at
/// once.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind((ip, 0)).is_ok()
}

/// `allowed_hosts`: exact names, `*.suffix` patterns or `"*"`, compared case-insensitively
/// (stored lower case). A port or a scheme is a mistake worth refusing: Host ports are ignored.
pub(super) fn allowed_hosts(list: &[String]) -> Result<Vec<String>, ConfigError> {
    list.iter()
        .map(|raw| {
            let entry = raw.trim().to_ascii_lowercase();
            let name = entry.strip_prefix("*.").unwrap_or(&entry);
            let ok = entry == "*"
                || (!name.is_empty()
                    && name.len() <= 253
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
                    && !name.starts_with('.')
                    && !name.ends_with('.')
                    && !name.contains(".."))
                || entry.parse::<std::net::IpAddr>().is_ok();
            if ok {
                Ok(entry)
            } else {
                Err(ConfigError::invalid(
                    "allowed_hosts",
                    format!("'{raw}' is not a host name, a '*.suffix' pattern or \"*\" (no scheme, no port)"),
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn up(s: &str) -> Upstream {
        Upstream::parse(s).unwrap()
    }

    #[test]
    fn unspecified_covers_its_family_and_dual_stack_covers_both() {
        assert!(overlap(addr("0.0.0.0:1"), addr("127.0.0.1:1")));
        assert!(overlap(addr("[::]:1"), addr("127.0.0.1:1")));
        assert!(!overlap(addr("0.0.0.0:1"), addr("[::1]:1")));
        assert!(!overlap(addr("127.0.0.1:1"), addr("127.0.0.2:1")));
        assert!(overlap(addr("[::ffff:127.0.0.1]:1"), addr("127.0.0.1:1")));
    }

    #[test]
    fn upstream_reaching_a_listener_is_detected_without_dns() {
        let own = addr("0.0.0.0:11434");
        assert!(reaches(own, &up("http://127.0.0.1:11434")));
        assert!(reaches(own, &up("http://LOCALHOST:11434")));
        assert!(reaches(own, &up("http://0.0.0.0:11434")));
        assert!(!reaches(own, &up("http://127.0.0.1:11435")));
        assert!(
            !reaches(own, &up("http://[::1]:11434")),
            "0.0.0.0 is IPv4 only"
        );
        assert!(!reaches(own, &up("http://ollama.internal:11434")));
        // TEST-NET-1 is never assigned to this host.
        assert!(!reaches(own, &up("http://192.0.2.1:11434")));
        assert!(reaches(addr("[::]:80"), &up("http://[::1]")));
        assert!(!reaches(
            addr("127.0.0.1:11434"),
            &up("http://127.0.0.2:11434")
        ));
    }
}
