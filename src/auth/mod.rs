//! Who is calling: optional API keys (`[auth]`), their roles, and what the request path
//! learns from them.
//!
//! The identify layer (outside the record layer, so every record carries the identity)
//! resolves the key a request presents into a [`Caller`], strips the credential before
//! anything is forwarded, and the auth layer (below the ban gate) refuses what
//! `auth.mode = "required"` does not allow.

use std::sync::Arc;

/// What the identify layer learned about a request's credentials (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The key's name, when the request carried a valid key.
    pub(crate) identity: Option<Arc<str>>,
}
