//! The `[auth]` metric families: credential results, and (opt-in) requests per key name.
//!
//! Key names are operator-made, not client input, but a deployment can have many keys, so the
//! per-identity family exists only with `auth.metrics_by_identity = true` and holds at most
//! [`MAX_IDENTITY_LABELS`] names; later names are counted under `identity="_other"`.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Distinct `identity` label values at most.
pub(crate) const MAX_IDENTITY_LABELS: usize = 100;

/// The label of identities past the cap.
const OTHER: &str = "_other";

/// `ollama_guard_auth_requests_total{result}` label values, in [`crate::auth::Credential`]
/// order.
pub(crate) const AUTH_RESULTS: [&str; 4] = ["valid", "missing_key", "invalid_key", "expired_key"];

/// Requests per key name, capped.
pub(crate) struct IdentityCounter {
    vec: IntCounterVec,
    seen: Mutex<HashSet<String>>,
}

impl IdentityCounter {
    /// Counts one request of `name`.
    pub(crate) fn inc(&self, name: &str) {
        let label = {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if seen.contains(name) {
                name
            } else if seen.len() < MAX_IDENTITY_LABELS {
                seen.insert(name.to_owned());
                name
            } else {
                OTHER
            }
        };
        self.vec.with_label_values(&[label]).inc();
    }
}

/// The `[auth]` families.
pub(crate) struct AuthMetrics {
    /// `auth_requests_total{result}`, in [`AUTH_RESULTS`] order.
    pub(crate) results: [IntCounter; 4],
    /// `identity_requests_total{identity}`.
    pub(crate) by_identity: std::sync::Arc<IdentityCounter>,
}

impl AuthMetrics {
    /// Registers the families on `r`.
    pub(crate) fn new(r: &Registry) -> Result<AuthMetrics, prometheus::Error> {
        let results = IntCounterVec::new(
            Opts::new(
                "auth_requests_total",
                "Requests judged by [auth] (observe or required), by credential result.",
            ),
            &["result"],
        )?;
        r.register(Box::new(results.clone()))?;
        let by_identity = IntCounterVec::new(
            Opts::new(
                "identity_requests_total",
                "Requests per API key name (auth.metrics_by_identity; at most 100 names, then _other).",
            ),
            &["identity"],
        )?;
        r.register(Box::new(by_identity.clone()))?;
        Ok(AuthMetrics {
            results: AUTH_RESULTS.map(|l| results.with_label_values(&[l])),
            by_identity: std::sync::Arc::new(IdentityCounter {
                vec: by_identity,
                seen: Mutex::default(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_labels_are_capped() {
        let r = Registry::new();
        let m = AuthMetrics::new(&r).unwrap();
        for i in 0..(MAX_IDENTITY_LABELS + 5) {
            m.by_identity.inc(&format!("key{i}"));
        }
        m.by_identity.inc("key0");
        let families = r.gather();
        let fam = families
            .iter()
            .find(|f| f.name() == "identity_requests_total")
            .unwrap();
        assert_eq!(fam.get_metric().len(), MAX_IDENTITY_LABELS + 1);
        let value = |label: &str| {
            fam.get_metric()
                .iter()
                .find(|m| m.get_label()[0].value() == label)
                .map(|m| m.get_counter().get_value())
        };
        assert_eq!(value("key0"), Some(2.0));
        assert_eq!(value("_other"), Some(5.0));
        // Pre-initialised credential results exist from the start.
        let results = families
            .iter()
            .find(|f| f.name() == "auth_requests_total")
            .unwrap();
        assert_eq!(results.get_metric().len(), 4);
    }
}
