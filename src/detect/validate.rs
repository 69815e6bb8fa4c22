//! Turning a [`RuleConfig`] into a [`Rule`], with errors that name the key.
//!
//! Every message has the shape `rule[NAME].KEY: PROBLEM` (one clear line naming the
//! key and the problem), e.g. `rule[model_exfiltration].threshold: must be at least 1`.
//! A rule without a name is named by its 1-based position: `rule[#2].name: must not be empty`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::event::RuleAction;
use super::glob::Glob;
use super::rule::{Cutoff, GroupBy, Metric, Rule, RuleConfig, SeverityRule, WindowKind};
use super::sliding::MAX_SUB_COUNT;
use super::window::MAX_TUMBLING_BYTES;

/// Sliding windows use 15 sub-buckets of at least one second each.
const MIN_SLIDING_WINDOW: Duration = Duration::from_secs(15);

/// A rule that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Every rule needs a name: it keys the detection log and the metrics.
    #[error("rule[#{position}].name: must not be empty")]
    EmptyName {
        /// 1-based position of the rule in the list (1 when built on its own).
        position: usize,
    },
    /// Two rules share a name, so their log lines and metrics could not be told apart.
    #[error("rule[{0}].name: duplicate rule name")]
    Duplicate(String),
    /// A key has a value the engine cannot use.
    #[error("rule[{rule}].{key}: {problem}")]
    Invalid {
        /// The rule's name.
        rule: String,
        /// The offending key (`threshold`, `paths[1]`, ...).
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Validates a whole `[[rule]]` list: each rule, then name uniqueness.
pub(crate) fn build_rules(configs: &[RuleConfig]) -> Result<Vec<Rule>, RuleError> {
    let mut seen = HashSet::new();
    let mut rules = Vec::with_capacity(configs.len());
    for (i, cfg) in configs.iter().enumerate() {
        let rule = build(cfg, i + 1)?;
        if !seen.insert(cfg.name.as_str()) {
            return Err(RuleError::Duplicate(cfg.name.clone()));
        }
        rules.push(rule);
    }
    Ok(rules)
}

impl Rule {
    /// Validates one rule on its own (duplicate names are checked by [`build_rules`]).
    #[cfg(test)]
    pub(crate) fn from_config(cfg: &RuleConfig) -> Result<Rule, RuleError> {
        build(cfg, 1)
    }
}

/// A problem with one key: `(key, message)`.
type Problem = (String, String);

fn build(cfg: &RuleConfig, position: usize) -> Result<Rule, RuleError> {
    if cfg.name.trim().is_empty() {
        return Err(RuleError::EmptyName { position });
    }
    let mut rule = parse(cfg).map_err(|(key, problem)| RuleError::Invalid {
        rule: cfg.name.clone(),
        key,
        problem,
    })?;
    rule.shared_id = rule.make_shared_id();
    Ok(rule)
}

fn parse(cfg: &RuleConfig) -> Result<Rule, Problem> {
    let paths = parse_paths(&cfg.paths)?;
    let methods = parse_methods(&cfg.methods).map_err(at("methods"))?;
    let statuses = parse_statuses(&cfg.status)?;
    let (min_latency, max_latency) = parse_latency_band(cfg)?;
    let group_by = pick(
        &cfg.group_by,
        "group_by",
        &[
            ("src_path", GroupBy::SrcPath),
            ("src", GroupBy::Src),
            ("identity", GroupBy::Identity),
            ("identity_path", GroupBy::IdentityPath),
        ],
    )?;
    let kinds = [
        ("tumbling", WindowKind::Tumbling),
        ("sliding", WindowKind::Sliding),
    ];
    let window_kind = pick(&cfg.window_kind, "window_kind", &kinds)?;
    let window = parse_window(&cfg.window, window_kind).map_err(at("window"))?;
    let metrics = [
        ("count", Metric::Count),
        ("bytes_out", Metric::BytesOut),
        ("bytes_in", Metric::BytesIn),
    ];
    let metric = pick(&cfg.metric, "metric", &metrics)?;
    let threshold = if metric.is_bytes() {
        parse_threshold_bytes(cfg, window_kind)?
    } else if cfg.threshold_bytes.is_some() {
        return Err((
            "threshold_bytes".into(),
            "only for metric = \"bytes_out\" or \"bytes_in\" (count rules use threshold)".into(),
        ));
    } else {
        parse_threshold(cfg.threshold, window_kind).map_err(at("threshold"))?
    };
    let (severity, high, medium) =
        parse_severity(cfg, metric).map_err(|(k, p)| (k.to_owned(), p))?;
    // The filled-in cutoffs are kept only in the tests' copy of the effective config.
    #[cfg(not(test))]
    let _ = (high, medium);
    let actions = [
        ("", RuleAction::Default),
        ("log", RuleAction::Log),
        ("block", RuleAction::Block),
    ];
    let action = pick(&cfg.action, "action", &actions)?;
    let risk_score = match cfg.risk_score {
        None => super::rule::DEFAULT_RISK_SCORE,
        Some(n @ 1..=100) => u32::try_from(n).unwrap_or(super::rule::DEFAULT_RISK_SCORE),
        Some(n) => {
            return Err((
                "risk_score".into(),
                format!("{n} must be between 1 and 100"),
            ))
        }
    };
    let attack_type = match cfg.attack_type.trim() {
        "" => cfg.name.as_str(),
        text => text,
    };
    let any_path = paths.iter().any(|g| g.as_str().bytes().all(|b| b == b'*'));
    Ok(Rule {
        name: Arc::from(cfg.name.as_str()),
        shared_id: Arc::from(""),
        escu_id: non_empty(cfg.escu_id.as_deref()),
        mitre: non_empty(cfg.mitre.as_deref()),
        attack_type: Arc::from(attack_type),
        any_path,
        fixed_routes: super::rule::fixed_routes(&paths, any_path),
        paths,
        methods,
        statuses,
        min_latency,
        max_latency,
        latency_ns: (
            min_latency.as_nanos(),
            max_latency.map_or(u128::MAX, |max| max.as_nanos()),
        ),
        group_by,
        window,
        window_kind,
        metric,
        threshold,
        severity,
        action,
        risk_score,
        #[cfg(test)]
        config: RuleConfig {
            severity_high: Some(high),
            severity_medium: Some(medium),
            ..cfg.clone()
        },
    })
}

/// Tags a message with its key.
fn at(key: &'static str) -> impl Fn(String) -> Problem {
    move |problem| (key.to_owned(), problem)
}

/// One of a fixed set of spellings.
fn pick<T: Copy>(value: &str, key: &str, choices: &[(&str, T)]) -> Result<T, Problem> {
    if let Some((_, v)) = choices.iter().find(|(name, _)| *name == value) {
        return Ok(*v);
    }
    let names: Vec<String> = choices
        .iter()
        .map(|(n, _)| {
            if n.is_empty() {
                "\"\"".to_owned()
            } else {
                (*n).to_owned()
            }
        })
        .collect();
    let expected = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    };
    Err((
        key.to_owned(),
        format!("unknown value {value:?} (expected {expected})"),
    ))
}

fn parse_latency_band(cfg: &RuleConfig) -> Result<(Duration, Option<Duration>), Problem> {
    let min = parse_duration(&cfg.min_latency).map_err(at("min_latency"))?;
    let max = match cfg.max_latency.trim() {
        "" => None,
        text => Some(parse_duration(text).map_err(at("max_latency"))?),
    };
    if max.is_some_and(|max| max <= min) {
        return Err((
            "max_latency".into(),
            "must be greater than min_latency".into(),
        ));
    }
    Ok((min, max))
}

fn non_empty(v: Option<&str>) -> Option<Arc<str>> {
    v.map(str::trim).filter(|s| !s.is_empty()).map(Arc::from)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("bad duration {text:?}: {e}"))
}

fn parse_paths(paths: &[String]) -> Result<Vec<Glob>, Problem> {
    if paths.is_empty() {
        return Err((
            "paths".into(),
            "must not be empty (use [\"*\"] for any path)".into(),
        ));
    }
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| Glob::new(p).map_err(|e| (format!("paths[{i}]"), e.to_string())))
        .collect()
}

fn parse_methods(methods: &[String]) -> Result<Vec<Box<str>>, String> {
    methods
        .iter()
        .map(|m| {
            let token = !m.is_empty() && m.bytes().all(|b| b.is_ascii_graphic());
            if !token {
                Err(format!("{m:?} is not an HTTP method"))
            } else if m.bytes().any(|b| b.is_ascii_lowercase()) {
                Err(format!(
                    "{m:?} must be upper case (HTTP methods are case-sensitive)"
                ))
            } else {
                Ok(m.as_str().into())
            }
        })
        .collect()
}

/// HTTP statuses, each 100..=599 (what a response can carry); kept sorted and deduplicated.
fn parse_statuses(status: &[i64]) -> Result<Vec<u16>, Problem> {
    let mut out = Vec::with_capacity(status.len());
    for (i, s) in status.iter().enumerate() {
        let code = u16::try_from(*s)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| {
                (
                    format!("status[{i}]"),
                    format!("{s} is not an HTTP status (expected 100 to 599)"),
                )
            })?;
        out.push(code);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// At least 1, and at most what the window's counter holds, so a saturated counter can
/// never hide a crossing: for sliding windows what a 12-bit sub-bucket counter holds (see
/// `sliding`), for tumbling windows `u32::MAX` (see `window`).
fn parse_threshold(value: i64, kind: WindowKind) -> Result<u64, String> {
    let threshold = u64::try_from(value)
        .ok()
        .filter(|t| *t >= 1)
        .ok_or_else(|| "must be at least 1".to_owned())?;
    let max = match kind {
        WindowKind::Sliding => u64::from(MAX_SUB_COUNT),
        WindowKind::Tumbling => u64::from(u32::MAX),
    };
    if threshold > max {
        return Err(match kind {
            WindowKind::Sliding => format!(
                "must be at most {max} for a sliding window (use a tumbling window for more)"
            ),
            WindowKind::Tumbling => format!(
                "must be at most {max} for a tumbling window (its per-window count is 32-bit)"
            ),
        });
    }
    Ok(threshold)
}

/// A byte threshold: at least 1 and at most what the window holds (so saturation cannot
/// hide a crossing): for sliding windows one 32-bit sub-bucket, for tumbling windows the
/// 48-bit byte total (256 TiB, see `window`). `threshold` must be left at 1: a byte rule with
/// a request threshold as well would be two rules in one, and a silently ignored value is a
/// trap for whoever tunes it.
fn parse_threshold_bytes(cfg: &RuleConfig, kind: WindowKind) -> Result<u64, Problem> {
    if cfg.threshold != 1 {
        return Err((
            "threshold".into(),
            format!(
                "must be 1 (or left out) for metric = {:?}; set threshold_bytes",
                cfg.metric
            ),
        ));
    }
    let value = cfg.threshold_bytes.ok_or_else(|| {
        (
            "threshold_bytes".to_owned(),
            format!("required for metric = {:?}", cfg.metric),
        )
    })?;
    let bytes = u64::try_from(value)
        .ok()
        .filter(|t| *t >= 1)
        .ok_or_else(|| {
            (
                "threshold_bytes".to_owned(),
                "must be at least 1".to_owned(),
            )
        })?;
    if kind == WindowKind::Sliding && bytes > u64::from(u32::MAX) {
        return Err((
            "threshold_bytes".into(),
            format!(
                "must be at most {} for a sliding window (use a tumbling window for more)",
                u32::MAX
            ),
        ));
    }
    if kind == WindowKind::Tumbling && bytes > MAX_TUMBLING_BYTES {
        return Err((
            "threshold_bytes".into(),
            format!("must be at most {MAX_TUMBLING_BYTES} for a tumbling window (its byte total is 48-bit)"),
        ));
    }
    Ok(bytes)
}

fn parse_window(text: &str, kind: WindowKind) -> Result<Duration, String> {
    let window = parse_duration(text)?;
    if window < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    if window.subsec_nanos() != 0 {
        return Err("must be a whole number of seconds".into());
    }
    if window.as_secs() > u64::from(u32::MAX) {
        return Err("is too long".into());
    }
    if kind == WindowKind::Sliding && window < MIN_SLIDING_WINDOW {
        return Err("must be at least 15s for a sliding window".into());
    }
    Ok(window)
}

type SeverityParts = (SeverityRule, Cutoff, Cutoff);

fn parse_severity(
    cfg: &RuleConfig,
    metric: Metric,
) -> Result<SeverityParts, (&'static str, String)> {
    let (high, medium) = (cfg.severity_high.as_ref(), cfg.severity_medium.as_ref());
    match cfg.severity_by.as_str() {
        by @ ("avg_latency" | "max_latency") => {
            let high = high.cloned().unwrap_or_else(|| Cutoff::Text("50s".into()));
            let medium = medium
                .cloned()
                .unwrap_or_else(|| Cutoff::Text("40s".into()));
            let h = latency_cutoff(&high, by).map_err(|p| ("severity_high", p))?;
            let m = latency_cutoff(&medium, by).map_err(|p| ("severity_medium", p))?;
            if m > h {
                return Err(("severity_medium", "must not exceed severity_high".into()));
            }
            let use_max = by == "max_latency";
            let sev = SeverityRule::Latency {
                use_max,
                high: h,
                medium: m,
            };
            Ok((sev, high, medium))
        }
        "bytes" if !metric.is_bytes() => Err((
            "severity_by",
            "\"bytes\" needs metric = \"bytes_out\" or \"bytes_in\"".into(),
        )),
        by @ ("count" | "bytes") => {
            let required = || format!("required when severity_by = {by:?}");
            let high = high.ok_or_else(|| ("severity_high", required()))?;
            let medium = medium.ok_or_else(|| ("severity_medium", required()))?;
            let h = count_cutoff(high, by).map_err(|p| ("severity_high", p))?;
            let m = count_cutoff(medium, by).map_err(|p| ("severity_medium", p))?;
            if m > h {
                return Err(("severity_medium", "must not exceed severity_high".into()));
            }
            let sev = if by == "bytes" {
                SeverityRule::Bytes { high: h, medium: m }
            } else {
                SeverityRule::Count { high: h, medium: m }
            };
            Ok((sev, Cutoff::Count(h as i64), Cutoff::Count(m as i64)))
        }
        other => Err((
            "severity_by",
            format!("unknown value {other:?} (expected avg_latency, max_latency, count or bytes)"),
        )),
    }
}

fn latency_cutoff(c: &Cutoff, by: &str) -> Result<f64, String> {
    match c {
        Cutoff::Text(t) => parse_duration(t).map(|d| d.as_secs_f64()),
        Cutoff::Count(n) => Err(format!(
            "expected a duration like \"50s\" for severity_by = {by:?}, got {n}"
        )),
    }
}

fn count_cutoff(c: &Cutoff, by: &str) -> Result<u64, String> {
    let n = match c {
        Cutoff::Count(n) => Some(*n),
        Cutoff::Text(t) => t.trim().parse::<i64>().ok(),
    };
    n.and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| match c {
            Cutoff::Count(n) => format!("must not be negative, got {n}"),
            Cutoff::Text(t) => {
                format!("expected a whole number for severity_by = {by:?}, got {t:?}")
            }
        })
}
