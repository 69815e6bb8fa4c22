//! TLS termination of the proxy listener (`tls_cert` / `tls_key`).
//!
//! rustls on the `ring` provider, TLS 1.2 and 1.3, ALPN `http/1.1` (the proxy serves
//! HTTP/1.1 only). The certificate is resolved per handshake from an `ArcSwap`, so a reload
//! swaps it for new handshakes while established connections keep the session they have.
//!
//! Before the handshake the first byte is peeked: a TLS connection starts with a handshake
//! record (`0x16`); anything else is a plain-HTTP client on the HTTPS port, answered with a
//! readable plaintext `400` instead of a TLS alert it cannot decode. The peek and the
//! handshake together are bounded by `timeouts.header_read`, like the request head after
//! them, so a client stalling at the TLS layer cannot hold a connection slot.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::IntCounter;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::telemetry::throttle::Throttle;
use crate::telemetry::Metrics;

/// The first byte of a TLS record carrying a handshake message (a ClientHello).
const HANDSHAKE_RECORD: u8 = 0x16;

/// The whole answer to a plain-HTTP request on the HTTPS port.
pub(crate) const PLAIN_HTTP_BODY: &str = "ollama-guard: this port speaks HTTPS; use https://\n";

/// Reasons of `tls_handshake_failures_total`.
pub(crate) const HANDSHAKE_FAILURE_REASONS: [&str; 3] = ["timeout", "protocol", "closed"];

/// The certificate new handshakes are given: swapped by a reload.
struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Why a connection never got to HTTP (the `reason` label of the failure counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// No complete handshake within `timeouts.header_read`.
    Timeout,
    /// The client's bytes were not acceptable TLS, or it sent an alert (no shared version,
    /// an unknown CA).
    Protocol,
    /// The client closed or reset the connection during the handshake.
    Closed,
}

impl Failure {
    fn label(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Protocol => "protocol",
            Failure::Closed => "closed",
        }
    }
}

/// The TLS side of the proxy listener, shared by every worker.
pub(crate) struct TlsListener {
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
    plain_http: IntCounter,
    failures: [IntCounter; 3],
}

impl TlsListener {
    /// A listener presenting `certified` until [`TlsListener::set_certificate`] replaces it.
    pub(crate) fn new(
        certified: Arc<CertifiedKey>,
        metrics: &Metrics,
    ) -> Result<TlsListener, rustls::Error> {
        let resolver = Arc::new(Resolver {
            current: ArcSwap::new(certified),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let failure = |f: Failure| {
            metrics
                .tls_handshake_failures
                .with_label_values(&[f.label()])
        };
        Ok(TlsListener {
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            plain_http: metrics
                .connections_rejected
                .with_label_values(&["plain_http"]),
            failures: [
                failure(Failure::Timeout),
                failure(Failure::Protocol),
                failure(Failure::Closed),
            ],
        })
    }

    /// New handshakes present `certified` (config reload); established connections keep
    /// the certificate they were opened with.
    pub(crate) fn set_certificate(&self, certified: Arc<CertifiedKey>) {
        self.resolver.current.store(certified);
    }

    /// Peeks at the first byte and completes the handshake within `within`; `None` when the
    /// connection was answered (plain HTTP) or dropped (failed handshake), already counted.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
        within: Duration,
    ) -> Option<TlsStream<TcpStream>> {
        let peer = stream.peer_addr().ok();
        let handshake = async {
            let mut first = [0u8; 1];
            match stream.peek(&mut first).await {
                Ok(0) => return Err((Failure::Closed, None)),
                Ok(_) if first[0] != HANDSHAKE_RECORD => return Ok(Err(stream)),
                Ok(_) => {}
                Err(_) => return Err((Failure::Closed, None)),
            }
            self.acceptor.accept(stream).await.map(Ok).map_err(|e| {
                let failure = match e.kind() {
                    io::ErrorKind::InvalidData => Failure::Protocol,
                    _ => Failure::Closed,
                };
                (failure, Some(e))
            })
        };
        let failure = match tokio::time::timeout(within, handshake).await {
            Ok(Ok(Ok(tls))) => return Some(tls),
            Ok(Ok(Err(plain))) => {
                self.plain_http.inc();
                static WARN: Throttle = Throttle::new(Duration::from_secs(10));
                if let Some(repeats) = WARN.allow() {
                    tracing::warn!(peer = ?peer, repeats, "plain HTTP on the HTTPS port; answering 400");
                }
                answer_plain_http(plain).await;
                return None;
            }
            Ok(Err((failure, error))) => (failure, error),
            Err(_) => (Failure::Timeout, None),
        };
        let (failure, error) = failure;
        let index = match failure {
            Failure::Timeout => 0,
            Failure::Protocol => 1,
            Failure::Closed => 2,
        };
        self.failures[index].inc();
        // A client that hangs up mid-handshake (a port scanner, a health check) is not worth a
        // warning; a timeout or a protocol error is, at most once per 10 s.
        static WARN: Throttle = Throttle::new(Duration::from_secs(10));
        let error = error.map(|e| e.to_string()).unwrap_or_default();
        match (failure != Failure::Closed).then(|| WARN.allow()).flatten() {
            Some(repeats) => {
                tracing::warn!(peer = ?peer, reason = failure.label(), %error, repeats, "TLS handshake failed");
            }
            None => {
                tracing::debug!(peer = ?peer, reason = failure.label(), %error, "TLS handshake failed");
            }
        }
        None
    }
}

/// `400` in plaintext, `Connection: close`, then a short drain so the client reads the
/// answer instead of a reset.
async fn answer_plain_http(mut stream: TcpStream) {
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 4096];
        while stream.read(&mut buf).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), write).await;
}
