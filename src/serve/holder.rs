//! Who holds the client-facing port when `listen` cannot be bound: a common mistake is to
//! leave Ollama itself on 11434 (for instance with `OLLAMA_HOST=0.0.0.0` in the
//! `override.conf` of `systemctl edit ollama`, which wins over a drop-in that sorts before it).
//! Then the guard cannot start while Ollama stays exposed; the error says so and how to fix it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long the probe of the port's holder may take, in all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where to reach a listener that holds `addr`: the address itself, or loopback for an
/// unspecified one (`0.0.0.0`: 127.0.0.1; `::`: ::1, then 127.0.0.1, since a dual-stack
/// bind also collides with an IPv4 holder).
fn probe_targets(addr: SocketAddr) -> Vec<SocketAddr> {
    let port = addr.port();
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => vec![(Ipv4Addr::LOCALHOST, port).into()],
        IpAddr::V6(ip) if ip.is_unspecified() => vec![
            (Ipv6Addr::LOCALHOST, port).into(),
            (Ipv4Addr::LOCALHOST, port).into(),
        ],
        _ => vec![addr],
    }
}

/// The Ollama version text if `{"version": "..."}` is what `GET /api/version` answers at
/// `target`, within the timeout.
async fn ollama_version(target: SocketAddr) -> Option<String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{target}/api/version").parse().ok()?;
    let exchange = async {
        let resp = client.get(uri).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body = Limited::new(resp.into_body(), 4096)
            .collect()
            .await
            .ok()?
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        v.get("version")?.as_str().map(str::to_owned)
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

/// The version of the Ollama that holds `addr`, if it is one (tried on every probe target
/// within [`PROBE_TIMEOUT`] in all).
pub(super) async fn ollama_on(addr: SocketAddr) -> Option<String> {
    for target in probe_targets(addr) {
        if let Some(version) = ollama_version(target).await {
            return Some(version);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let t = |s: &str| {
            probe_targets(s.parse().unwrap())
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(t("0.0.0.0:11434"), ["127.0.0.1:11434"]);
        assert_eq!(t("[::]:11434"), ["[::1]:11434", "127.0.0.1:11434"]);
        assert_eq!(t("192.0.2.7:80"), ["192.0.2.7:80"]);
    }
}
