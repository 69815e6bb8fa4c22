//! `[rules.NAME]` tables: operators tune a built-in rule without copying the whole set.
//!
//! Each table names a built-in rule and sets any of its keys (`action`, `min_latency`,
//! `threshold`, `threshold_bytes`, `window`, ...) or switches it off (`enabled = false`).
//! Overrides apply to the built-in set only: a file with `[[rule]]` tables has replaced that
//! set, so an override there has nothing to apply to and is refused rather than ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::builtin::default_rules;
use super::rule::{Cutoff, RuleConfig};

/// One `[rules.NAME]` table: every key of a rule except `name`, all optional, plus
/// `enabled`. Unknown keys are an error, as in `[[rule]]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleOverride {
    /// `false` removes the rule from the set. Default `true`.
    pub(crate) enabled: Option<bool>,
    pub(crate) escu_id: Option<String>,
    pub(crate) attack_type: Option<String>,
    pub(crate) mitre: Option<String>,
    pub(crate) paths: Option<Vec<String>>,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) status: Option<Vec<i64>>,
    pub(crate) min_latency: Option<String>,
    pub(crate) max_latency: Option<String>,
    pub(crate) group_by: Option<String>,
    pub(crate) window: Option<String>,
    pub(crate) window_kind: Option<String>,
    pub(crate) metric: Option<String>,
    pub(crate) threshold: Option<i64>,
    pub(crate) threshold_bytes: Option<i64>,
    pub(crate) severity_by: Option<String>,
    pub(crate) severity_high: Option<Cutoff>,
    pub(crate) severity_medium: Option<Cutoff>,
    pub(crate) action: Option<String>,
    pub(crate) risk_score: Option<i64>,
}

/// Why a set of overrides cannot apply: `(key, problem)`, the key being `rules.NAME`.
pub(crate) type OverrideError = (String, String);

/// The rules in force: `rules` when the file has `[[rule]]` tables (then `overrides` must be
/// empty), else the built-in set with `overrides` applied, in built-in order.
pub(crate) fn effective_rules(
    rules: &[RuleConfig],
    overrides: &BTreeMap<String, RuleOverride>,
) -> Result<Vec<RuleConfig>, OverrideError> {
    if !rules.is_empty() {
        return match overrides.keys().next() {
            Some(name) => Err((
                format!("rules.{name}"),
                "overrides apply to the built-in rule set only, and [[rule]] tables replace it \
                 (edit the [[rule]] table instead)"
                    .into(),
            )),
            None => Ok(rules.to_vec()),
        };
    }
    let builtins = default_rules();
    if let Some(name) = overrides
        .keys()
        .find(|n| !builtins.iter().any(|r| &r.name == *n))
    {
        return Err((
            format!("rules.{name}"),
            "no built-in rule of that name".into(),
        ));
    }
    Ok(builtins
        .into_iter()
        .filter_map(|rule| match overrides.get(&rule.name) {
            Some(o) => o.apply(rule),
            None => Some(rule),
        })
        .collect())
}

impl RuleOverride {
    /// `base` with the keys this table sets; `None` when it disables the rule.
    fn apply(&self, base: RuleConfig) -> Option<RuleConfig> {
        if self.enabled == Some(false) {
            return None;
        }
        let o = self.clone();
        Some(RuleConfig {
            name: base.name,
            escu_id: o.escu_id.or(base.escu_id),
            attack_type: o.attack_type.unwrap_or(base.attack_type),
            mitre: o.mitre.or(base.mitre),
            paths: o.paths.unwrap_or(base.paths),
            methods: o.methods.unwrap_or(base.methods),
            status: o.status.unwrap_or(base.status),
            min_latency: o.min_latency.unwrap_or(base.min_latency),
            max_latency: o.max_latency.unwrap_or(base.max_latency),
            group_by: o.group_by.unwrap_or(base.group_by),
            window: o.window.unwrap_or(base.window),
            window_kind: o.window_kind.unwrap_or(base.window_kind),
            metric: o.metric.unwrap_or(base.metric),
            threshold: o.threshold.unwrap_or(base.threshold),
            threshold_bytes: o.threshold_bytes.or(base.threshold_bytes),
            severity_by: o.severity_by.unwrap_or(base.severity_by),
            severity_high: o.severity_high.or(base.severity_high),
            severity_medium: o.severity_medium.or(base.severity_medium),
            action: o.action.unwrap_or(base.action),
            risk_score: o.risk_score.or(base.risk_score),
        })
    }
}
