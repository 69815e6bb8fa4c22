//! The `Host` guard: Ollama's defence against DNS rebinding, kept alive in front of it.
//!
//! Ollama bound to a loopback address refuses requests whose `Host` is not a local name
//! (its fix for CVE-2024-28224): a web page on `rebind.attacker.example`, re-resolved to
//! 127.0.0.1, cannot drive the API from a victim's browser. The proxy rewrites `Host` to the
//! upstream's authority (or Ollama on loopback would refuse every proxied request), which
//! would silently switch that check off. So the guard applies the same rule itself, for the
//! address *it* listens on:
//!
//! - listening on a loopback address: only an empty Host, `localhost`, `*.localhost`,
//!   `*.local`, `*.internal`, the machine's host name, or an IP literal that is loopback,
//!   private, unspecified or on a local interface (the port is ignored) — refused requests get
//!   what Ollama answers, `403` with an empty body;
//! - listening on any other address: every Host, as Ollama does.
//!
//! `allowed_hosts`, when set, replaces that rule on every listener: exact names, `*.suffix`
//! patterns (subdomains only, as nginx's `server_name *.example.com`) or `"*"`.
//!
//! Which host is checked: the authority of an absolute-form request target when there is one
//! (Go's server takes it over the `Host` header, and so must we), otherwise the `Host` header.
//! More than one `Host` header is malformed, and so is an HTTP/1.1 request without one, on
//! every listener (Go answers 400 to both, RFC 9112 §3.2; the proxy writes its own `Host`
//! upstream, so Ollama could no longer tell).

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::header::{HeaderMap, HOST};
use http::{Uri, Version};

/// How often the list of local interface addresses may be re-read (only a Host naming a
/// public IP literal that is not in the list triggers a re-read).
const INTERFACE_REFRESH: Duration = Duration::from_secs(10);

/// Why a request's host was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostRefusal {
    /// A name the policy does not allow: `403`, empty body (Ollama's answer).
    NotAllowed,
    /// Several `Host` headers, or one that is not text: `400`.
    Malformed,
    /// An HTTP/1.1 request without a `Host` header: `400`.
    Missing,
}

/// The rule in force on one listener.
#[derive(Debug)]
pub(crate) struct HostPolicy {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// A non-loopback listener without `allowed_hosts`: anything goes, as with Ollama.
    Any,
    /// A loopback listener without `allowed_hosts`: Ollama's own rule.
    Ollama(LocalNames),
    /// `allowed_hosts`.
    Listed(Vec<Pattern>),
}

#[derive(Debug, PartialEq, Eq)]
enum Pattern {
    All,
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

/// What "this machine" means to Ollama's rule: its host name and interface addresses.
#[derive(Debug)]
struct LocalNames {
    hostname: Option<String>,
    interfaces: Mutex<(Instant, Vec<IpAddr>)>,
}

impl HostPolicy {
    /// The policy for a listener on `listen`; `allowed` is the validated `allowed_hosts`
    /// (lower case). An empty list counts as unset.
    pub(crate) fn new(listen: SocketAddr, allowed: Option<&[String]>) -> HostPolicy {
        let kind = match allowed {
            Some(list) if !list.is_empty() => {
                Kind::Listed(list.iter().map(|e| pattern(e)).collect())
            }
            _ if listen.ip().is_loopback() => Kind::Ollama(LocalNames::read()),
            _ => Kind::Any,
        };
        HostPolicy { kind }
    }

    /// Whether this policy allows every host name (the name check is skipped; a missing or
    /// doubled `Host` is refused all the same).
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.kind, Kind::Any)
            || matches!(&self.kind, Kind::Listed(p) if p.contains(&Pattern::All))
    }

    /// Whether the rule is a list of names (`allowed_hosts` without `"*"`): the operator's own,
    /// which no page can rebind. Only then is a same-origin `Origin` dropped (README, "Proxy
    /// behaviour"): Ollama's loopback rule also admits `*.local`, `*.internal` and the host
    /// name, which a LAN or local DNS can point anywhere.
    pub(crate) fn names_listed(&self) -> bool {
        matches!(&self.kind, Kind::Listed(p) if !p.contains(&Pattern::All))
    }

    /// Checks the host a request addresses.
    pub(crate) fn check(
        &self,
        version: Version,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<(), HostRefusal> {
        let mut hosts = headers.get_all(HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (None, _) if version == Version::HTTP_11 => return Err(HostRefusal::Missing),
            (_, Some(_)) => return Err(HostRefusal::Malformed),
            (host, None) => host,
        };
        if self.is_open() {
            return Ok(());
        }
        let host = match uri.authority() {
            Some(authority) => authority_host(authority),
            None => match host {
                Some(v) => v.to_str().map_err(|_| HostRefusal::Malformed)?,
                None => "",
            },
        };
        let name = strip_port(host);
        let allowed = match &self.kind {
            Kind::Any => true,
            Kind::Ollama(local) => local.allows(name),
            Kind::Listed(patterns) => listed(patterns, name),
        };
        if allowed {
            Ok(())
        } else {
            Err(HostRefusal::NotAllowed)
        }
    }
}

fn pattern(entry: &str) -> Pattern {
    match entry {
        "*" => Pattern::All,
        e => match e.strip_prefix('*') {
            Some(suffix) => Pattern::Suffix(suffix.to_owned()),
            None => Pattern::Exact(e.to_owned()),
        },
    }
}

fn listed(patterns: &[Pattern], name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    patterns.iter().any(|p| match p {
        Pattern::All => true,
        Pattern::Exact(e) => *e == name || *e == bare,
        Pattern::Suffix(s) => name.len() > s.len() && name.ends_with(s.as_str()),
    })
}

/// An authority's host and port, without the user information a client may put in front
/// (`user:pw@host:port` → `host:port`, as Go's `url.Parse` reads it): the host checked and the
/// one forwarded as `X-Forwarded-Host` are the same text.
pub(crate) fn authority_host(authority: &http::uri::Authority) -> &str {
    let text = authority.as_str();
    text.rsplit_once('@').map_or(text, |(_, host)| host)
}

/// `name:port` → `name`, `[v6]:port` → `[v6]`, anything else unchanged (Go's
/// `net.SplitHostPort`, falling back to the whole text).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    // Byte searches: the last `:` and whether another comes before it (a bare IPv6 literal
    // has several and no port).
    let bytes = host.as_bytes();
    match bytes.iter().rposition(|&b| b == b':') {
        Some(colon) if !bytes[..colon].contains(&b':') => &host[..colon],
        _ => host,
    }
}

impl LocalNames {
    fn read() -> LocalNames {
        let hostname = gethostname::gethostname()
            .into_string()
            .ok()
            .map(|h| h.to_ascii_lowercase())
            .filter(|h| !h.is_empty());
        LocalNames {
            hostname,
            interfaces: Mutex::new((Instant::now(), interface_addrs())),
        }
    }

    /// Ollama's `allowedHostsMiddleware` + `allowedHost` for a loopback listener.
    fn allows(&self, name: &str) -> bool {
        // Go parses the bare text; `[::1]` without a port is accepted here too (an IP literal
        // cannot be rebound, so accepting it weakens nothing).
        let literal = name.strip_prefix('[').and_then(|n| n.strip_suffix(']'));
        if let Ok(ip) = literal.unwrap_or(name).parse::<IpAddr>() {
            let ip = crate::ip::canonical(ip);
            if ip.is_loopback() || is_private(ip) || ip.is_unspecified() || self.is_local(ip) {
                return true;
            }
        }
        let name = name.to_ascii_lowercase();
        name.is_empty()
            || name == "localhost"
            || self.hostname.as_deref() == Some(name.as_str())
            || [".localhost", ".local", ".internal"]
                .iter()
                .any(|tld| name.ends_with(tld))
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        let mut cache = self
            .interfaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.1.contains(&ip) {
            return true;
        }
        if cache.0.elapsed() >= INTERFACE_REFRESH {
            *cache = (Instant::now(), interface_addrs());
            return cache.1.contains(&ip);
        }
        false
    }
}

fn interface_addrs() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(list) => list.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the local interface addresses");
            Vec::new()
        }
    }
}

/// Go's `netip.Addr.IsPrivate`: RFC 1918 and RFC 4193 (`fc00::/7`).
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xfe00 == 0xfc00,
    }
}

#[cfg(test)]
mod tests;
