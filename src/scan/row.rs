//! One output row of `scan` (README, "scan") and its order.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::detect::Severity;

/// One row: one (rule, window start, source, path) that a rule flagged.
///
/// Why: the same shape for both modes, so a SOC can diff `--splunk-compat` output against
/// its Splunk search and the default mode against it, column for column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    /// The rule's name (`model_exfiltration` in compat mode).
    pub rule: Arc<str>,
    /// Window start, epoch seconds (`_time`).
    pub time: i64,
    /// The source: raw IP text in compat mode; the engine's source identity otherwise
    /// (an IPv4 address, or an IPv6 network such as `2001:db8::/64`).
    pub src: String,
    /// The path (raw text in compat mode, normalised otherwise); `None` for rules grouped
    /// by source only.
    pub uri_path: Option<String>,
    /// Requests counted in the window.
    pub count: u64,
    /// Mean latency in seconds, rounded to 2 decimals.
    pub avg_response_time: f64,
    /// Largest latency in seconds, rounded to 2 decimals.
    pub max_response_time: f64,
    /// The rule's grading of the window.
    pub severity: Severity,
    /// The rule's attack label.
    pub attack_type: Arc<str>,
}

impl Row {
    /// Output order (README, "scan"): `_time`, then `src`, then `uri_path` (byte order, no path first),
    /// then the rule name.
    pub(crate) fn spec_order(a: &Row, b: &Row) -> Ordering {
        a.time
            .cmp(&b.time)
            .then_with(|| a.src.as_bytes().cmp(b.src.as_bytes()))
            .then_with(|| {
                a.uri_path
                    .as_deref()
                    .map(str::as_bytes)
                    .cmp(&b.uri_path.as_deref().map(str::as_bytes))
            })
            .then_with(|| a.rule.as_bytes().cmp(b.rule.as_bytes()))
    }
}
