//! `tls_cert` / `tls_key`: the PEM files of the proxy listener's certificate, read and checked
//! when the config is loaded (at start, by `check-config` and on every reload), so a missing
//! file, a file that is not PEM, or a key that does not belong to the certificate is one
//! config error naming the key — and on a reload, a refused reload that keeps the old
//! certificate in force.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;

use super::ConfigError;

/// The listener's certificate: where it was read from, and what was read.
#[derive(Clone)]
pub struct Tls {
    /// `tls_cert`: the certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// `tls_key`: the leaf's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The chain and the signing key, checked to belong together.
    pub(crate) certified: Arc<CertifiedKey>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Both keys or neither: one alone is an error naming the missing one.
pub(super) fn tls(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<Tls>, ConfigError> {
    let empty = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
    match (empty(cert), empty(key)) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::invalid(
            "tls_key",
            "is not set but tls_cert is (set both or neither)",
        )),
        (None, Some(_)) => Err(ConfigError::invalid(
            "tls_cert",
            "is not set but tls_key is (set both or neither)",
        )),
        (Some(cert), Some(key)) => {
            let certified = Arc::new(load(&cert, &key)?);
            Ok(Some(Tls {
                cert,
                key,
                certified,
            }))
        }
    }
}

/// Reads the chain and the key, and checks that the key is the leaf certificate's.
pub(crate) fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, ConfigError> {
    let bad_cert = |problem: String| ConfigError::invalid("tls_cert", problem);
    let bad_key = |problem: String| ConfigError::invalid("tls_key", problem);
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            bad_cert(format!(
                "cannot read a PEM certificate from {}: {e}",
                cert.display()
            ))
        })?;
    let Some(leaf) = chain.first() else {
        return Err(bad_cert(format!(
            "{} holds no CERTIFICATE block",
            cert.display()
        )));
    };
    ParsedCertificate::try_from(leaf).map_err(|e| {
        bad_cert(format!(
            "{}: the first certificate is not valid X.509 ({e})",
            cert.display()
        ))
    })?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        bad_key(format!(
            "cannot read a PEM private key from {}: {e}",
            key.display()
        ))
    })?;
    let signing = default_provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| bad_key(format!("{}: not a usable private key ({e})", key.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(e) => Err(bad_key(format!(
            "{} does not match the certificate in {} ({e})",
            key.display(),
            cert.display()
        ))),
    }
}
