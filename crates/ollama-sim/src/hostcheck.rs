//! Ollama's DNS-rebinding guard (`allowedHostsMiddleware` in `server/routes.go`).
//!
//! When Ollama listens on loopback it answers 403 with an empty body to any request whose
//! `Host` is not local. The proxy must rewrite `Host` to the upstream authority; this check
//! is what proves it does.
//!
//! Not reproduced: Ollama also accepts the machine's own hostname and the addresses of its
//! network interfaces; the simulator accepts neither (tests use `localhost` or IP literals).

use std::net::IpAddr;

/// Whether a request with this `Host` header value passes the check.
pub(crate) fn host_allowed(host_header: &str) -> bool {
    let host = split_host_port(host_header).unwrap_or(host_header);
    if let Ok(ip) = host.parse::<IpAddr>() {
        if is_local_ip(ip) {
            return true;
        }
    }
    allowed_name(host)
}

/// `netip.Addr.IsLoopback() || IsPrivate() || IsUnspecified()`.
fn is_local_ip(ip: IpAddr) -> bool {
    if ip.is_unspecified() {
        return true;
    }
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        // fc00::/7, unique local addresses.
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Ollama's `allowedHost`: empty, `localhost`, or a `.localhost`/`.local`/`.internal` name.
fn allowed_name(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host.is_empty()
        || host == "localhost"
        || [".localhost", ".local", ".internal"]
            .iter()
            .any(|tld| host.ends_with(tld))
}

/// Go's `net.SplitHostPort`: `None` where Go returns an error (no port, too many colons),
/// in which case Ollama uses the whole header as the host.
fn split_host_port(hostport: &str) -> Option<&str> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        let port = after.strip_prefix(':')?;
        if port.contains([':', '[', ']']) {
            return None;
        }
        return Some(&rest[..end]);
    }
    let colon = hostport.rfind(':')?;
    let host = &hostport[..colon];
    if host.contains([':', '[', ']']) {
        return None;
    }
    Some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_are_allowed() {
        for host in [
            "",
            "localhost",
            "LOCALHOST:11434",
            "app.localhost",
            "printer.local:80",
            "host.docker.internal:11434",
        ] {
            assert!(host_allowed(host), "{host}");
        }
    }

    #[test]
    fn loopback_private_and_unspecified_literals_are_allowed() {
        for host in [
            "127.0.0.1:11434",
            "127.8.9.10",
            "10.1.2.3:80",
            "172.16.0.1",
            "192.168.1.50:11434",
            "0.0.0.0:11434",
            "[::1]:11434",
            "::1",
            "[fd00::1]:80",
            "[::]:1",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(host_allowed(host), "{host}");
        }
    }

    #[test]
    fn foreign_names_and_public_ips_are_refused() {
        for host in [
            "evil.example",
            "evil.example:11434",
            "localhost.evil.example",
            "8.8.8.8:53",
            "172.32.0.1",
            "[2001:db8::1]:80",
            // Go's SplitHostPort rejects a bracketed address without a port.
            "[::1]",
        ] {
            assert!(!host_allowed(host), "{host}");
        }
    }
}
