//! The HEC's HTTP/1.1 client: one kept-alive connection, over TLS (rustls on `ring`, the
//! provider the listener already uses) or plain TCP, built from `hyper::client::conn`
//! directly. One connection to one host needs no pool, so neither the legacy pooled client
//! nor `hyper-rustls` is needed: the connect, handshake and request are a few lines each,
//! and each step fails with an error the sink can classify (connect, TLS, timeout).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::SinkError;
use crate::config::SplunkHec;

/// The longest HEC answer read (the acks of a batch, an error text).
const MAX_ANSWER: usize = 64 << 10;
/// Why an exchange failed; the `kind` label of `sink_errors_total`.
#[derive(Debug)]
pub(crate) enum Failure {
    /// TCP connect failed or the connection broke.
    Connect(String),
    /// The TLS handshake failed (certificate not trusted, name mismatch, ...).
    Tls(String),
    /// Connect or exchange took longer than `request_timeout`.
    Timeout,
}

impl Failure {
    /// The metric label.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::Tls(_) => "tls",
            Failure::Timeout => "timeout",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connection failed: {e}"),
            Failure::Tls(e) => write!(
                f,
                "TLS handshake failed: {e} (is the HEC's certificate signed by a CA in \
                 sinks.splunk_hec.ca_file, or by a public CA when it is unset?)"
            ),
            Failure::Timeout => write!(f, "timed out (sinks.splunk_hec.request_timeout)"),
        }
    }
}

/// A response: status and body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

/// The client of one HEC.
pub(crate) struct HecClient {
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// `host:port` to connect to.
    addr: String,
    authorization: HeaderValue,
    channel: Option<HeaderValue>,
    timeout: Duration,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl HecClient {
    /// The client of `config`'s HEC (TLS roots built now, no connection yet).
    pub(crate) fn new(config: &SplunkHec) -> Result<HecClient, SinkError> {
        let https = config.url.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = config.url.host().unwrap_or_default().to_owned();
        let port = config
            .url
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let server = ServerName::try_from(name)
                .map_err(|e| SinkError::Tls(format!("'{host}' is not a TLS server name: {e}")))?;
            Some((TlsConnector::from(Arc::new(tls_config(config)?)), server))
        } else {
            None
        };
        let authorization = HeaderValue::from_str(&format!("Splunk {}", config.token))
            .map_err(|_| SinkError::Tls("the token is not a valid header value".into()))?;
        let channel = config
            .ack
            .then(|| HeaderValue::from_str(&channel_guid()).ok())
            .flatten();
        Ok(HecClient {
            tls,
            addr: format!("{host}:{port}"),
            authorization,
            channel,
            timeout: config.request_timeout,
            conn: None,
        })
    }

    /// POSTs `body` (already gzip-compressed when `gzip`) to `uri`.
    pub(crate) async fn post(
        &mut self,
        uri: &Uri,
        body: Bytes,
        gzip: bool,
    ) -> Result<Answer, Failure> {
        match tokio::time::timeout(self.timeout, self.exchange(uri, body, gzip)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(f)) => {
                self.conn = None;
                Err(f)
            }
            Err(_) => {
                self.conn = None;
                Err(Failure::Timeout)
            }
        }
    }

    async fn exchange(&mut self, uri: &Uri, body: Bytes, gzip: bool) -> Result<Answer, Failure> {
        let mut sender = match self.conn.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender
            .ready()
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let mut req = Request::post(uri.clone())
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let headers = req.headers_mut();
        if let Ok(host) = HeaderValue::from_str(&self.addr) {
            headers.insert(http::header::HOST, host);
        }
        if gzip {
            headers.insert(
                http::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
        }
        if let Some(channel) = &self.channel {
            headers.insert("x-splunk-request-channel", channel.clone());
        }
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let status = resp.status();
        // HEC answers a few hundred bytes (the acks of a channel at most a few kilobytes):
        // anything longer is not read whole, so a wrong URL or a hostile server cannot make
        // the proxy hold hundreds of megabytes.
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| Failure::Connect(format!("the answer: {e}")))?
            .to_bytes();
        self.conn = Some(sender);
        Ok(Answer { status, body })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| Failure::Connect(format!("{}: {e}", self.addr)))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await.map_err(|e| {
                    let inner = e
                        .get_ref()
                        .and_then(|i| i.downcast_ref::<rustls::Error>())
                        .map(ToString::to_string);
                    Failure::Tls(format!("{}: {}", self.addr, inner.unwrap_or(e.to_string())))
                })?;
                handshake(tls).await
            }
        }
    }
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Connect(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// rustls on `ring`: the built-in Mozilla roots (`webpki-roots`), or only the CAs of
/// `ca_file`; `tls_verify = false` accepts any certificate (signatures still checked).
fn tls_config(config: &SplunkHec) -> Result<rustls::ClientConfig, SinkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::Tls(e.to_string()))?;
    let mut tls = if config.tls_verify {
        let mut roots = rustls::RootCertStore::empty();
        match &config.ca_file {
            Some(path) => {
                for cert in
                    crate::config::load_ca(path).map_err(|e| SinkError::Tls(e.to_string()))?
                {
                    roots
                        .add(cert)
                        .map_err(|e| SinkError::Tls(format!("ca_file: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// `tls_verify = false`: any certificate, any name (handshake signatures still verified).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A random (version 4) GUID for `X-Splunk-Request-Channel`.
fn channel_guid() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: a time-derived channel still works (it need only be unique
        // among this HEC's clients).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = nanos.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    use super::{Failure, HecClient};
    use crate::config::SplunkHec;

    fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap(), key)
    }

    /// A HEC whose certificate is signed by a CA the client does not trust: the failure
    /// says what failed, with rustls's reason, and which key fixes it.
    #[tokio::test]
    async fn an_unknown_ca_is_a_tls_failure_that_names_ca_file() {
        let (hec_ca, hec_ca_key) = ca("the HEC's CA");
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &hec_ca, &hec_ca_key)
            .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        let (other_ca, _) = ca("another CA");
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, other_ca.pem()).unwrap();
        let url: http::Uri = format!("https://{addr}/services/collector/event")
            .parse()
            .unwrap();
        let config = SplunkHec {
            ack_url: url.clone(),
            url: url.clone(),
            token: "t".into(),
            index: None,
            sourcetype: "s".into(),
            source: "s".into(),
            host: "h".into(),
            tls_verify: true,
            ca_file: Some(ca_file),
            requests: false,
            ack: false,
            batch_size: 1,
            batch_interval: Duration::from_secs(1),
            queue: 1,
            request_timeout: Duration::from_secs(10),
            retry_backoff: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(1),
        };
        let mut client = HecClient::new(&config).unwrap();
        let failure = client
            .post(&url, Bytes::from_static(b"{}"), false)
            .await
            .err()
            .unwrap();
        assert!(matches!(failure, Failure::Tls(_)), "{failure:?}");
        assert_eq!(failure.kind(), "tls");
        assert_eq!(
            failure.to_string(),
            format!(
                "TLS handshake failed: {addr}: invalid peer certificate: UnknownIssuer (is the \
                 HEC's certificate signed by a CA in sinks.splunk_hec.ca_file, or by a public CA \
                 when it is unset?)"
            )
        );
    }

    #[test]
    fn channel_guids_are_version_4_and_differ() {
        let (a, b) = (super::channel_guid(), super::channel_guid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }
}
