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
    /// The leaf's `(notBefore, notAfter)`, seconds since the epoch (`None`: unreadable).
    pub(crate) validity: Option<(i64, i64)>,
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
            let validity = certified.cert.first().and_then(|leaf| validity(leaf));
            Ok(Some(Tls {
                cert,
                key,
                certified,
                validity,
            }))
        }
    }
}

/// When a certificate (DER) is valid: `(notBefore, notAfter)` in seconds since the epoch;
/// `None` when the DER is not an X.509 certificate this reader can walk.
pub(crate) fn validity(der: &[u8]) -> Option<(i64, i64)> {
    use yasna::tags::{TAG_GENERALIZEDTIME, TAG_UTCTIME};
    use yasna::{BERReader, Tag};
    fn time(r: BERReader<'_, '_>) -> yasna::ASN1Result<i64> {
        let tag = r.lookahead_tag()?;
        if tag == TAG_UTCTIME {
            Ok(r.read_utctime()?.datetime().unix_timestamp())
        } else if tag == TAG_GENERALIZEDTIME {
            Ok(r.read_generalized_time()?.datetime().unix_timestamp())
        } else {
            Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid))
        }
    }
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
    //   validity SEQUENCE { notBefore, notAfter }, subject, subjectPublicKeyInfo, ... }
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let validity = r.next().read_sequence(|r| {
                r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
                for _ in 0..3 {
                    r.next().read_der()?; // serialNumber, signature, issuer
                }
                let validity = r
                    .next()
                    .read_sequence(|r| Ok((time(r.next())?, time(r.next())?)))?;
                while r.read_optional(|r| r.read_der())?.is_some() {}
                Ok(validity)
            })?;
            r.next().read_der()?;
            r.next().read_der()?;
            Ok(validity)
        })
    })
    .ok()
}

/// The warning for a certificate that is not valid at `now` (seconds), or will not be within
/// [`EXPIRY_WARNING_DAYS`]: clients refuse an expired one, and a renewal that copied the old
/// file back would otherwise go unnoticed until they do.
pub(crate) fn validity_warning(
    path: &Path,
    (not_before, not_after): (i64, i64),
    now: i64,
) -> Option<String> {
    let shown = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0).map_or_else(|| t.to_string(), |d| d.to_rfc3339())
    };
    if not_after <= now {
        Some(format!(
            "tls_cert: {} expired at {}: clients will refuse it",
            path.display(),
            shown(not_after)
        ))
    } else if not_before > now {
        Some(format!(
            "tls_cert: {} is not valid before {}: clients will refuse it until then",
            path.display(),
            shown(not_before)
        ))
    } else if not_after - now < EXPIRY_WARNING_DAYS * 86_400 {
        Some(format!(
            "tls_cert: {} expires at {}, in less than {EXPIRY_WARNING_DAYS} days",
            path.display(),
            shown(not_after)
        ))
    } else {
        None
    }
}

/// How close to its end a certificate is warned about.
pub(crate) const EXPIRY_WARNING_DAYS: i64 = 14;

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
        // rustls reads no encrypted key, and says only that it found none.
        let encrypted =
            std::fs::read(key).is_ok_and(|text| text.windows(9).any(|w| w == b"ENCRYPTED"));
        if encrypted {
            bad_key(format!(
                "{} is an encrypted private key: give the key unencrypted (`openssl pkey -in \
                 KEY -out KEY.plain`, readable by the guard's user only)",
                key.display()
            ))
        } else {
            bad_key(format!(
                "cannot read a PEM private key from {}: {e}",
                key.display()
            ))
        }
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
