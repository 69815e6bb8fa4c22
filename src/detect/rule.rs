//! Rules: the `[[rule]]` TOML table ([`RuleConfig`]) and its validated form ([`Rule`]).
//!
//! The config type keeps every value as the operator wrote it (strings for durations and
//! enums) so `check-config` can print the effective configuration back, and so validation can
//! name the exact key that is wrong. [`Rule`] is what the engine runs: parsed durations,
//! compiled globs, typed modes.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::event::{round2, RuleAction, Severity};
use super::glob::Glob;
pub(crate) use super::validate::build_rules;
pub use super::validate::RuleError;
use crate::record::{Outcome, RequestRecord};
use crate::route::Route;

// The fixed-route table of a rule is a `u32`.
const _: () = assert!(Route::ALL.len() <= 32);

/// One `[[rule]]` table as written in the config file (README, "Detection rules").
///
/// Missing keys take the defaults of [`RuleConfig::default`]; unknown keys are an error, so a
/// typo (`treshold`) cannot silently leave a default in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name, used in the detection log and as a metric label. Required.
    pub(crate) name: String,
    /// The Splunk ESCU detection id this rule mirrors, copied into the detection log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) escu_id: Option<String>,
    /// Human label of the attack; empty means "use the rule name".
    pub(crate) attack_type: String,
    /// MITRE ATT&CK technique id(s), copied into the detection log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mitre: Option<String>,
    /// Globs on the normalised path (`*`, `?`); `["*"]` = any path. Default `["*"]`.
    pub(crate) paths: Vec<String>,
    /// Exact, case-sensitive HTTP methods; empty = any. Default `[]`.
    pub(crate) methods: Vec<String>,
    /// HTTP statuses (100..=599) a request must have been answered with; empty = any.
    /// Default `[]`. Requests refused by `[auth]` (401/403, never forwarded) count only for
    /// rules that list their status here.
    pub(crate) status: Vec<i64>,
    /// A request qualifies when its latency is strictly greater, except that `"0s"` means
    /// every request, including one of exactly 0 ns (gin prints `0s` when the clock did not
    /// tick). Default `"0s"`.
    pub(crate) min_latency: String,
    /// Optional exclusive upper bound on latency; `""` = none. Default `""`.
    pub(crate) max_latency: String,
    /// `src_path` (one counter per source and path), `src`, `identity` (one counter per API
    /// key name) or `identity_path` (per key name and path). A request without an identity
    /// counts under its source under the identity groupings (`identity` like `src`,
    /// `identity_path` like `src_path`). Default `src_path`.
    pub(crate) group_by: String,
    /// Window length (humantime). Default `"15m"`.
    pub(crate) window: String,
    /// `tumbling` (epoch-aligned, like SPL `bin`) or `sliding`. Default `tumbling`.
    pub(crate) window_kind: String,
    /// What the rule counts: `count` (qualifying requests), `bytes_out` (response body
    /// bytes sent to the client) or `bytes_in` (request body bytes read from it). Default
    /// `count`. Byte metrics are proxy-only: `scan` cannot see sizes in a `[GIN]` line.
    pub(crate) metric: String,
    /// Qualifying requests in one window that flag the key (`>=`). Default 1. At most 4095
    /// for sliding windows and 4294967295 for tumbling ones (what their counters hold).
    /// Must stay 1 for byte metrics, which use `threshold_bytes`.
    pub(crate) threshold: i64,
    /// Bytes in one window that flag the key (`>=`), for byte metrics (required there, and
    /// refused for `count`). At most 4294967295 for sliding windows (a 32-bit sub-bucket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) threshold_bytes: Option<i64>,
    /// `avg_latency`, `max_latency`, `count` or (byte metrics) `bytes`. Default `avg_latency`.
    pub(crate) severity_by: String,
    /// Value above which severity is `high`: a duration for latency modes (default `"50s"`),
    /// a whole number for `count` and `bytes` (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) severity_high: Option<Cutoff>,
    /// Value above which severity is `medium` (default `"40s"` for latency modes; required
    /// for `count`). Must not exceed `severity_high`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) severity_medium: Option<Cutoff>,
    /// `""` (follow the global mode), `log` or `block`. Default `""`; the built-in rules
    /// set their own (see `builtin`).
    pub(crate) action: String,
    /// Risk-based alerting: the `risk_score` of this rule's `detection` events, 1..=100
    /// (what Splunk ES adds to the risk object's total). Unset = [`DEFAULT_RISK_SCORE`];
    /// the built-in rules set their own (see `builtin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) risk_score: Option<i64>,
}

/// The `risk_score` of a rule that sets none: the seed ESCU rule's `rba` score.
pub(crate) const DEFAULT_RISK_SCORE: u32 = 20;

impl Default for RuleConfig {
    /// The neutral rule: every request on every path, per source and path, 15-minute
    /// tumbling windows, flag on the first request, severity from the average latency
    /// (the seed's 50 s / 40 s cut-offs).
    fn default() -> Self {
        RuleConfig {
            name: String::new(),
            escu_id: None,
            attack_type: String::new(),
            mitre: None,
            paths: vec!["*".to_owned()],
            methods: Vec::new(),
            status: Vec::new(),
            min_latency: "0s".to_owned(),
            max_latency: String::new(),
            group_by: "src_path".to_owned(),
            window: "15m".to_owned(),
            window_kind: "tumbling".to_owned(),
            metric: "count".to_owned(),
            threshold: 1,
            threshold_bytes: None,
            severity_by: "avg_latency".to_owned(),
            severity_high: None,
            severity_medium: None,
            action: String::new(),
            risk_score: None,
        }
    }
}

/// A severity cut-off as written: TOML allows `"50s"` for latency modes and `500` (or
/// `"500"`) for `count`, so both shapes deserialise and validation decides which fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Cutoff {
    /// A plain TOML integer (a count).
    Count(i64),
    /// A string: a humantime duration, or a count in digits.
    Text(String),
}

/// What a counter key is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupBy {
    /// One counter per (source, normalised path): the seed's `by src, uri_path`.
    SrcPath,
    /// One counter per source, all matching paths together.
    Src,
    /// One counter per identity (API key name), all matching paths together; a request
    /// without identity counts under its source, as with [`GroupBy::Src`].
    Identity,
    /// One counter per (identity, normalised path); a request without identity counts
    /// under its source and path, as with [`GroupBy::SrcPath`].
    IdentityPath,
}

impl GroupBy {
    /// Whether keys hold the normalised path.
    pub(crate) fn by_path(self) -> bool {
        matches!(self, GroupBy::SrcPath | GroupBy::IdentityPath)
    }

    /// Whether requests carrying an identity count under it rather than their source.
    pub(crate) fn by_identity(self) -> bool {
        matches!(self, GroupBy::Identity | GroupBy::IdentityPath)
    }
}

/// What a rule counts per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metric {
    /// Qualifying requests.
    Count,
    /// Response body bytes written to the client.
    BytesOut,
    /// Request body bytes read from the client.
    BytesIn,
}

impl Metric {
    /// Whether the rule counts bytes (its threshold is `threshold_bytes`).
    pub(crate) fn is_bytes(self) -> bool {
        self != Metric::Count
    }

    /// The bytes of `rec` this metric adds (0 for `count`).
    pub(crate) fn bytes(self, rec: &crate::record::RequestRecord) -> u64 {
        match self {
            Metric::Count => 0,
            Metric::BytesOut => rec.bytes_out,
            Metric::BytesIn => rec.bytes_in,
        }
    }
}

/// How windows move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowKind {
    /// Fixed windows aligned to the epoch (`floor(t / window) * window`), like SPL `bin`.
    Tumbling,
    /// A window ending now, approximated by 15 sub-buckets (error ≤ 1/15 of the window).
    Sliding,
}

/// The validated severity mode and cut-offs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SeverityRule {
    /// Compare a latency in seconds (rounded to 2 decimals) with the cut-offs in seconds.
    Latency {
        /// `true` for `max_latency`, `false` for `avg_latency`.
        use_max: bool,
        /// `> high` → high.
        high: f64,
        /// `> medium` → medium.
        medium: f64,
    },
    /// Compare the request count with the cut-offs.
    Count {
        /// `> high` → high.
        high: u64,
        /// `> medium` → medium.
        medium: u64,
    },
    /// Compare the byte total with the cut-offs (byte metrics only).
    Bytes {
        /// `> high` → high.
        high: u64,
        /// `> medium` → medium.
        medium: u64,
    },
}

impl SeverityRule {
    /// Grades a window's figures. Latencies are rounded to 2 decimals first, as SPL's
    /// `round()` runs before its `case()`; rounding twice is harmless.
    pub(crate) fn grade(&self, count: u64, bytes: u64, avg_secs: f64, max_secs: f64) -> Severity {
        let (above_high, above_medium) = match *self {
            SeverityRule::Latency {
                use_max,
                high,
                medium,
            } => {
                let v = round2(if use_max { max_secs } else { avg_secs });
                (v > high, v > medium)
            }
            SeverityRule::Count { high, medium } => (count > high, count > medium),
            SeverityRule::Bytes { high, medium } => (bytes > high, bytes > medium),
        };
        if above_high {
            Severity::High
        } else if above_medium {
            Severity::Medium
        } else {
            Severity::Low
        }
    }
}

/// A validated rule, ready for the engine. Build it with [`Rule::from_config`] or, for a
/// whole list (which also rejects duplicate names), [`build_rules`].
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// The rule as written (the tests check it round-trips).
    #[cfg(test)]
    pub(super) config: RuleConfig,
    pub(super) name: Arc<str>,
    /// `[cluster]`: the rule's name in Redis keys, with a digest of its configuration
    /// (`validate::shared_id`).
    pub(super) shared_id: Arc<str>,
    pub(super) escu_id: Option<Arc<str>>,
    pub(super) mitre: Option<Arc<str>>,
    pub(super) attack_type: Arc<str>,
    pub(super) paths: Vec<Glob>,
    pub(super) any_path: bool,
    /// Bit `r` set when the path of fixed route `r` ([`Route::fixed_path`]) matches
    /// `paths`: the globs' answer for the common paths, worked out once (see [`Target`]).
    pub(super) fixed_routes: u32,
    pub(super) methods: Vec<Box<str>>,
    /// Statuses a request must have (sorted, deduplicated); empty = any.
    pub(super) statuses: Vec<u16>,
    pub(super) min_latency: Duration,
    pub(super) max_latency: Option<Duration>,
    /// `min_latency` and `max_latency` in nanoseconds, as [`Rule::qualifies_ns`] compares
    /// them: 0 for no floor; `u128::MAX`, which no latency reaches, for no ceiling.
    pub(super) latency_ns: (u128, u128),
    pub(super) group_by: GroupBy,
    pub(super) window: Duration,
    pub(super) window_kind: WindowKind,
    pub(super) metric: Metric,
    /// Requests, or bytes for byte metrics, that flag a key.
    pub(super) threshold: u64,
    pub(super) severity: SeverityRule,
    pub(super) action: RuleAction,
    /// The risk score of its `detection` events (1..=100).
    pub(super) risk_score: u32,
}

impl Rule {
    /// The rule's unique name (detection log field and metric label).
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The effective configuration, with defaults filled in (for `check-config`).
    #[cfg(test)]
    pub(crate) fn config(&self) -> &RuleConfig {
        &self.config
    }

    /// How windows move.
    pub(crate) fn window_kind(&self) -> WindowKind {
        self.window_kind
    }

    /// The window length.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Qualifying requests in one window that flag a key.
    #[cfg(test)]
    pub(crate) fn threshold(&self) -> u64 {
        self.threshold
    }

    /// The risk score of its `detection` events.
    #[cfg(test)]
    pub(crate) fn risk_score(&self) -> u32 {
        self.risk_score
    }

    /// The severity mode and cut-offs.
    #[cfg(test)]
    pub(crate) fn severity(&self) -> SeverityRule {
        self.severity
    }

    /// `[cluster]`: the name the rule's counters and markers have in Redis: its name and the
    /// first 8 bytes (hex) of the SHA-256 of the validated values that decide what it counts
    /// and what it does (paths, methods and statuses as sets, so their order and repeats do
    /// not matter; `"15m"` and `"900s"` alike). Labels (severity, MITRE, ESCU id, attack type,
    /// risk score) are left out: a change of a label does not split the counting. Replicas
    /// share a rule's windows only when they run the same rule: one with another threshold,
    /// window, action or paths (a canary, a rolling change) counts apart instead of setting
    /// the others' detection markers with its own verdicts. (The global mode is added to the
    /// key by the cluster task.)
    pub(super) fn make_shared_id(&self) -> Arc<str> {
        use sha2::Digest as _;
        // Destructured so that a new field cannot be forgotten here.
        let Rule {
            #[cfg(test)]
                config: _,
            name,
            shared_id: _,
            // Labels.
            escu_id: _,
            mitre: _,
            attack_type: _,
            severity: _,
            risk_score: _,
            paths,
            // Derived from `paths`.
            any_path: _,
            fixed_routes: _,
            methods,
            statuses,
            min_latency,
            max_latency,
            latency_ns: _,
            group_by,
            window,
            window_kind,
            metric,
            threshold,
            action,
        } = self;
        let set = |items: Vec<String>| {
            let mut items = items;
            items.sort_unstable();
            items.dedup();
            items.join(",")
        };
        let text = format!(
            "paths={}|methods={}|statuses={statuses:?}|latency={}..{:?}|group_by={group_by:?}|\
             window={}|kind={window_kind:?}|metric={metric:?}|threshold={threshold}|\
             action={action:?}",
            set(paths.iter().map(|g| g.as_str().to_owned()).collect()),
            set(methods.iter().map(ToString::to_string).collect()),
            min_latency.as_nanos(),
            max_latency.map(|d| d.as_nanos()),
            window.as_millis(),
        );
        let digest = sha2::Sha256::digest(text.as_bytes());
        Arc::from(format!("{name}#{}", hex::encode(&digest[..8])))
    }

    /// Whether `other` is the same rule in effect: every validated value equal, so `"15m"`
    /// and `"900s"`, or `"50s"` and `"50000ms"`, compare equal while any real change (even
    /// of a label or the action) does not. Hot reload keeps the counters of such rules only.
    pub(crate) fn same_effective_config(&self, other: &Rule) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let Rule {
            #[cfg(test)]
                config: _,
            name,
            // Derived from the others.
            shared_id: _,
            escu_id,
            mitre,
            attack_type,
            paths,
            any_path,
            fixed_routes,
            methods,
            statuses,
            min_latency,
            max_latency,
            // Derived from the two above.
            latency_ns: _,
            group_by,
            window,
            window_kind,
            metric,
            threshold,
            severity,
            action,
            risk_score,
        } = self;
        *name == other.name
            && *escu_id == other.escu_id
            && *mitre == other.mitre
            && *attack_type == other.attack_type
            && *paths == other.paths
            && *any_path == other.any_path
            && *fixed_routes == other.fixed_routes
            && *methods == other.methods
            && *statuses == other.statuses
            && *min_latency == other.min_latency
            && *max_latency == other.max_latency
            && *group_by == other.group_by
            && *window == other.window
            && *window_kind == other.window_kind
            && *metric == other.metric
            && *threshold == other.threshold
            && *severity == other.severity
            && *action == other.action
            && *risk_score == other.risk_score
    }

    /// Whether a request answered with `status`, ending with `outcome`, can count for this
    /// rule: its status listed (any status when the list is empty). A request refused by
    /// `[auth]` ([`Outcome::Unauthorized`]) counts only for rules that list its status, so a
    /// stranger's refused requests never feed a rule about what callers do.
    #[inline]
    pub(crate) fn admits(&self, status: u16, outcome: Outcome) -> bool {
        if self.statuses.is_empty() {
            outcome != Outcome::Unauthorized
        } else {
            self.statuses.contains(&status)
        }
    }

    /// Whether the rule has a `status` list (in-flight detection skips such rules: a running
    /// request's status is not final).
    pub(crate) fn filters_status(&self) -> bool {
        !self.statuses.is_empty()
    }

    /// Whether a request counts for this rule: latency strictly above `min_latency` (any
    /// latency when `min_latency` is zero) and strictly below `max_latency` (when set),
    /// method listed (or none listed), and the normalised path matching one of the globs.
    /// Cheapest tests first.
    pub(crate) fn qualifies(&self, target: &Target<'_>, latency: Duration) -> bool {
        self.qualifies_ns(target, latency.as_nanos())
    }

    /// [`Rule::qualifies`] for a latency in nanoseconds (`Duration::as_nanos`, exact).
    ///
    /// Why: the engine converts a request's latency once for all its rules instead of
    /// comparing two `Duration`s (seconds, then nanoseconds) for each. The loops over method
    /// names and globs are functions of their own, so that this stays small enough to be
    /// inlined where the engine calls it for every rule and request: with [`Candidates`],
    /// 48 instructions a `scan` line fewer, and 168 more for the inlining (docs/performance.md).
    #[inline]
    pub(crate) fn qualifies_ns(&self, target: &Target<'_>, latency_ns: u128) -> bool {
        let (min, max) = self.latency_ns;
        if (latency_ns <= min && min != 0) || latency_ns >= max {
            return false;
        }
        if !self.methods.is_empty() && !self.lists_method(target.method) {
            return false;
        }
        match target.fixed {
            Some(bit) => self.fixed_routes & bit != 0,
            None => self.any_path || self.matches_path(target.path),
        }
    }

    #[inline(never)]
    fn lists_method(&self, method: &str) -> bool {
        self.methods.iter().any(|m| **m == *method)
    }

    #[inline(never)]
    fn matches_path(&self, path: &str) -> bool {
        self.paths.iter().any(|g| g.matches(path))
    }
}

/// The fixed routes whose path matches `paths` (or all of them when `any_path`), as the bits
/// of [`Rule::qualifies`]' table.
pub(super) fn fixed_routes(paths: &[Glob], any_path: bool) -> u32 {
    Route::ALL
        .iter()
        .filter_map(|r| r.fixed_path().map(|p| (r.index(), p)))
        .filter(|(_, p)| any_path || paths.iter().any(|g| g.matches(p)))
        .fold(0, |bits, (i, _)| bits | 1 << i)
}

/// The rules a request can count for, by its target: for a request whose path is exactly a
/// fixed route's, the rules whose paths match that route ([`Rule::qualifies`] would turn the
/// others down on the path alone); for any other path, every rule. In index order.
///
/// Why: the engine asked every rule about every request; of the seven built-in rules, two
/// have no interest in an `/api/tags` call and three none in an `/api/pull`, and each
/// question cost a few dozen instructions (docs/performance.md).
#[derive(Debug, Clone, Default)]
pub(crate) struct Candidates {
    /// By the route's bit position in [`Rule::qualifies`]' table.
    by_route: Vec<Box<[u16]>>,
    all: Box<[u16]>,
}

impl Candidates {
    /// The candidates among `rules` (at most `u16::MAX + 1` of them: indexes are `u16`).
    pub(crate) fn new(rules: &[Rule]) -> Candidates {
        let indexed = || (0..rules.len()).filter_map(|i| u16::try_from(i).ok());
        Candidates {
            by_route: (0..u32::BITS)
                .map(|bit| {
                    indexed()
                        .filter(|&i| rules[usize::from(i)].fixed_routes & (1 << bit) != 0)
                        .collect()
                })
                .collect(),
            all: indexed().collect(),
        }
    }

    /// The indexes of the rules `target` can count for.
    pub(crate) fn of(&self, target: &Target<'_>) -> &[u16] {
        match target.fixed {
            Some(bit) => self
                .by_route
                .get(bit.trailing_zeros() as usize)
                .map_or(&self.all, |c| c),
            None => &self.all,
        }
    }
}

/// What [`Rule::qualifies`] reads of a request's target, worked out once per request for all
/// the rules.
///
/// Why: matching every rule's path globs cost about 90 instructions per `scan` line with the
/// built-in rules (callgrind: 874.3 M against 856.2 M for 200 000 lines). A request whose
/// normalised path is exactly a fixed route's (`/api/tags`, `/api/pull`, ...) reads each
/// rule's answer for that route from a table built with the rule; any other path is matched
/// as before. The table holds what the globs answer for that very text, so the result is the
/// same.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    method: &'a str,
    path: &'a str,
    /// The route's bit when `path` is exactly its fixed path.
    fixed: Option<u32>,
}

impl<'a> Target<'a> {
    /// The target of a request with this method text, normalised path and route.
    pub(crate) fn new(method: &'a str, path: &'a str, route: Route) -> Self {
        let fixed = route
            .fixed_path()
            .filter(|p| *p == path)
            .map(|_| 1u32 << route.index());
        Target {
            method,
            path,
            fixed,
        }
    }

    /// The target of `rec`.
    pub(crate) fn of(rec: &'a RequestRecord) -> Self {
        Target::new(&rec.method_text, &rec.path, rec.route)
    }
}
