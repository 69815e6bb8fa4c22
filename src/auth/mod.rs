//! Who is calling: optional API keys (`[auth]`), their roles, and what the request path
//! learns from them.
//!
//! The identify layer (outside the record layer, so every record carries the identity)
//! resolves the key a request presents into a [`Caller`], strips the credential before
//! anything is forwarded, and the auth layer (below the ban gate) refuses what
//! `auth.mode = "required"` does not allow.

use std::sync::Arc;

/// What the identify layer learned about a request's credentials (a request extension,
/// present only when `auth.mode` is not `off`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The key's name, when the request carried a valid key.
    pub(crate) identity: Option<Arc<str>>,
    /// The key's role, when the request carried a valid key.
    pub(crate) role: Option<store::Role>,
    /// What the credential was.
    pub(crate) credential: Credential,
    /// Whether a key was presented (a `Bearer` token or `x-api-key`, right or wrong): a web
    /// page cannot send one to another site without that site's consent (a preflight), while
    /// a browser adds `Authorization: Basic` by itself for credentials it has cached.
    pub(crate) key: bool,
}

/// The credential a request presented, judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Credential {
    /// A key in the store, not expired.
    Valid,
    /// No credential header.
    Missing,
    /// A key that is not in the store, another scheme, or several credentials.
    Invalid,
    /// A key whose expiry has passed.
    Expired,
}

impl Credential {
    /// The `result` label of `ollama_guard_auth_requests_total` and the `reason` of `auth`
    /// events.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Credential::Valid => "valid",
            Credential::Missing => "missing_key",
            Credential::Invalid => "invalid_key",
            Credential::Expired => "expired_key",
        }
    }
}

pub(crate) mod key;
pub(crate) mod store;

/// `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum AuthMode {
    /// No identity: requests pass as before and `Authorization` is forwarded untouched.
    #[default]
    Off,
    /// Keys are read and attributed, credentials stripped, nothing refused; events say what
    /// `required` would have done.
    Observe,
    /// A request without a valid key is answered 401, a management route without the
    /// `manager` role 403; neither is forwarded.
    Required,
}

impl AuthMode {
    /// The config value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AuthMode::Off => "off",
            AuthMode::Observe => "observe",
            AuthMode::Required => "required",
        }
    }

    /// Parses the config value.
    pub(crate) fn parse(text: &str) -> Option<AuthMode> {
        match text {
            "off" => Some(AuthMode::Off),
            "observe" => Some(AuthMode::Observe),
            "required" => Some(AuthMode::Required),
            _ => None,
        }
    }
}

/// The reloadable part of `[auth]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AuthConfig {
    /// `auth.mode`.
    pub(crate) mode: AuthMode,
    /// `auth.protect_probes`: also require a key on `HEAD`/`GET /` and `/api/version`.
    pub(crate) protect_probes: bool,
    /// `auth.metrics_by_identity`: per-key request counter (capped).
    pub(crate) metrics_by_identity: bool,
}
