//! Configuration: the command line, the environment and the TOML file merged into one
//! validated [`Config`] (precedence CLI > env > file > default).
//!
//! Pure: nothing here listens or opens a log (the one probe is a UDP bind to port 0 that asks
//! whether an upstream address is local, see `addrs`; the one read is of the TLS certificate
//! and key, see `tls`, so that a bad one is refused like any other bad value). Every problem becomes one
//! [`ConfigError`] line naming the key, so `main` can print it and exit 2 before anything
//! starts.

mod addrs;
mod cli;
mod cluster;
mod env;
mod file;
mod parts;
mod policy;
mod render;
mod sinks;
mod tls;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use addrs::admin_warnings;
pub use cli::{
    BansAction, BansArgs, CheckConfigArgs, Cli, Command, DemoArgs, HealthcheckArgs, KeysAction,
    KeysArgs, Output, ScanArgs, ServeArgs, SimulatorArgs, StatusArgs,
};
pub use cluster::{ClusterConfig, ClusterFile, PASSWORD_ENV};
pub use file::{AuthFile, BanFile, EnforcementFile, FileConfig, PolicyFile, TimeoutsFile};
pub use parts::{Bound, Live};
pub(crate) use sinks::load_ca;
pub use sinks::{SinksFile, SplunkHec, SplunkHecFile, TOKEN_ENV as SPLUNK_HEC_TOKEN_ENV};
pub use tls::Tls;
pub use values::{AccessLogFormat, CpuAffinity, LogFormat, LogTarget, Mode, Upstream};

/// The rule types a config holds (defined with the engine that runs them).
pub use crate::detect::{RuleConfig, RuleError, RuleOverride};

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value failed validation.
    #[error("config error: {key}: {problem}")]
    Invalid {
        /// The key as the operator wrote it (`listen`, `ban.duration`, `rule[x].window`).
        key: String,
        /// What is wrong, with the offending value.
        problem: String,
    },
    /// A `[[rule]]` is invalid (the message names `rule[NAME].KEY`).
    #[error("config error: {0}")]
    Rule(#[from] crate::detect::RuleError),
    /// The file could not be read or is not valid TOML for this schema.
    #[error("config error: {path}: {problem}")]
    File {
        /// The file.
        path: String,
        /// The parser's message with the line number.
        problem: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// The ban policy (`[ban]`): first duration, escalation, cap and memory of offences.
#[derive(Debug, Clone, PartialEq)]
pub struct BanPolicy {
    /// First ban.
    pub duration: Duration,
    /// Each repeat offence within `memory` multiplies the duration by this.
    pub increment: f64,
    /// No ban is longer than this.
    pub max: Duration,
    /// How long an offence counts towards escalation.
    pub memory: Duration,
}

/// Timeouts around the proxied exchange. There is deliberately no total or body timeout:
/// generations and pulls legitimately run for minutes to hours.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    /// Upstream TCP connect timeout.
    pub upstream_connect: Duration,
    /// Time a client has to send a complete request head (slowloris guard).
    pub header_read: Duration,
    /// How long in-flight requests may run on after SIGTERM/SIGINT.
    pub grace_period: Duration,
    /// Interval of the background readiness probe.
    pub readiness_probe: Duration,
    /// Idle pooled upstream connections are closed after this long.
    pub upstream_idle: Duration,
    /// Longest pause between two reads of a request body: a trickling upload cannot hold
    /// an upstream connection for ever.
    pub body_idle: Duration,
    /// Longest time a write to a client may wait for progress: a client that stops reading
    /// a response cannot hold its connection, its upstream connection and Ollama's work for
    /// ever (nginx's `send_timeout`).
    pub send_idle: Duration,
}

/// The effective, validated configuration of `serve`, in the two parts `serve` treats
/// differently: [`Bound`] is fixed for the life of the process, [`Live`] is what a reload
/// replaces. Keeping them apart lets a reload swap `live` whole and report changes to
/// `bound` from one comparison, instead of listing the bound keys field by field.
#[derive(Debug, Clone)]
pub struct Config {
    /// Needs a restart to change.
    pub bound: Bound,
    /// Swapped on reload.
    pub live: Live,
    /// The file this came from, re-read on SIGHUP.
    pub config_file: Option<PathBuf>,
    /// Valid but dangerous settings, logged by `serve` at start (see [`Config::warnings`]).
    warnings: Vec<String>,
    /// `workers = 0` was set (or left to its default): `bound.workers` is the CPU count.
    workers_auto: bool,
}

/// Reads and parses a TOML config file; errors name the file and the line.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let file_err = |problem: String| ConfigError::File {
        path: path.display().to_string(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    toml::from_str(&text).map_err(|e| {
        let start = e.span().map(|s| s.start.min(text.len()));
        let line = start.map(|at| text[..at].matches('\n').count() + 1);
        let msg = e.message().replace('\n', " ");
        // A value of the wrong type or range (`ipv6_prefix = 300`): toml names the line, the
        // key is named here too.
        let key = start
            .and_then(|at| key_at(&text, at))
            .filter(|k| !msg.contains(&format!("`{}`", k.rsplit('.').next().unwrap_or(k))));
        match (line, key) {
            (Some(l), Some(k)) => file_err(format!("line {l}: {k}: {msg}")),
            (Some(l), None) => file_err(format!("line {l}: {msg}")),
            (None, _) => file_err(msg),
        }
    })
}

/// The dotted key of the `key = value` line holding byte `at` of `text`, under the table
/// header above it (`cluster.sync_interval`); `None` for any other line.
fn key_at(text: &str, at: usize) -> Option<String> {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let before = &text[..line_start];
    let header = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['));
    // Inside a `[[rule]]`: named by its 1-based position, as rule validation names a rule
    // without a name (`rule[#2].threshold`).
    if header.is_some_and(|h| h.split_whitespace().collect::<String>() == "[[rule]]") {
        let position = before
            .lines()
            .filter(|l| l.split_whitespace().collect::<String>() == "[[rule]]")
            .count();
        return Some(format!("rule[#{position}].{key}"));
    }
    let table = header.map(|h| h.trim_matches(['[', ']']).trim().to_owned());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_owned(),
    })
}

impl Config {
    /// Loads the file named by `--config` (if any), puts the environment's values of its
    /// keys over it (README, "Configuration file": `OLLAMA_GUARD_<SECTION>_<KEY>`) and merges
    /// it under the command line.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let applied = env::overlay(&mut file, |name| std::env::var_os(name))?;
        Config::merge(args, file).map_err(|e| env::annotate(e, &applied))
    }

    /// Merges command-line/env values over file values over defaults, and validates all.
    pub fn merge(args: &ServeArgs, file: FileConfig) -> Result<Config, ConfigError> {
        values::merge(args, file)
    }

    /// The rules in force: the file's `[[rule]]` tables, or the built-in set with its `[rules.NAME]` overrides.
    pub fn effective_rules(&self) -> Vec<RuleConfig> {
        self.live.effective_rules()
    }

    /// Settings that are accepted but almost certainly a mistake (`trusted_proxies`
    /// containing `0.0.0.0/0`): `serve` logs each as a warning when it starts, so an operator
    /// sees them without the config being refused.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The effective configuration as a TOML document (`check-config`), secrets redacted.
    pub fn to_toml(&self) -> String {
        render::to_toml(self)
    }
}

#[cfg(test)]
mod rule_tests;
#[cfg(test)]
mod tests;
