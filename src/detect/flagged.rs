//! The keys flagged in the engine's current windows, for the admin API's `GET /api/status`
//! (`ollama-guard status`): which source (or API key name) a rule has flagged and how far it
//! is in its window. A read-only walk of the window maps, one shard at a time.

use std::sync::Arc;

use super::engine::{Engine, KeyStore};
use super::source::SourceKey;
use super::window::WindowKey;

/// One flagged key: a rule's window of a source or identity that crossed the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Flagged {
    /// The rule.
    pub(crate) rule: Arc<str>,
    /// `192.0.2.1`, `2001:db8::/64`, or `identity:NAME` for keys of identity rules.
    pub(crate) who: String,
    /// The window's figure so far: requests, or bytes for volume rules.
    pub(crate) value: u64,
    /// Whether `value` is bytes (`metric = "bytes_*"`) rather than requests.
    pub(crate) bytes: bool,
}

impl Engine {
    /// Every key flagged in its current window (unordered; a key of a path-grouped rule is
    /// one entry per path).
    pub(crate) fn flagged(&self) -> Vec<Flagged> {
        let mut out = Vec::new();
        self.tumbling.each(|key, st| {
            if st.flagged && st.count() > 0 {
                self.push_flagged(&mut out, key, u64::from(st.count()));
            }
        });
        self.sliding.each(|key, st| {
            if st.flagged() {
                self.push_flagged(&mut out, key, st.total());
            }
        });
        self.sliding_bytes.each(|key, st| {
            if st.flagged() {
                self.push_flagged(&mut out, key, st.total());
            }
        });
        out
    }

    fn push_flagged(&self, out: &mut Vec<Flagged>, key: &WindowKey, value: u64) {
        let Some(rule) = self.rules.get(usize::from(key.rule)) else {
            return;
        };
        out.push(Flagged {
            rule: rule.name.clone(),
            who: self.who(&key.src),
            value,
            bytes: rule.metric.is_bytes(),
        });
    }

    fn who(&self, src: &SourceKey) -> String {
        match src.identity_id() {
            Some(id) => match self.identities.name(id) {
                // The admin API's spelling of an identity (`enforce::identity::PREFIX`).
                Some(name) => format!("identity:{name}"),
                None => src.to_string(),
            },
            None => src.to_string(),
        }
    }
}
