//! Hot reload (SIGHUP): re-read the config file, validate all of it, then swap rules, mode,
//! allowlist, trusted proxies, ban policy and admin token — or refuse and keep the old
//! config. In-flight requests are untouched (every request reads the config through an
//! `ArcSwap` snapshot). Listeners, upstream, log paths, state dir and timeouts are bound at
//! start: a change to them is reported as needing a restart.

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::admin::AdminState;
use crate::config::{Config, ConfigError, ServeArgs};
use crate::detect::build_rules;
use crate::enforce::Enforcement;
use crate::proxy::Proxy;

use super::{engine_options, DetectionStage};

/// Everything a reload can reach.
pub(crate) struct Live {
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) admin: Arc<AdminState>,
    pub(crate) enforcement: Arc<Enforcement>,
    pub(crate) detection: Arc<DetectionStage>,
    pub(crate) config: Mutex<Config>,
    pub(crate) metrics: Arc<crate::telemetry::Metrics>,
}

/// What a successful reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Rules whose counters were kept.
    pub kept_rules: Vec<String>,
    /// Rules that are new or changed (counters start from zero).
    pub reset_rules: Vec<String>,
    /// Rules that are gone.
    pub removed_rules: Vec<String>,
    /// Counter keys carried over.
    pub keys_kept: usize,
    /// Counter keys dropped (removed or changed rules, changed IPv6 grouping, new allowlist).
    pub keys_dropped: usize,
    /// Keys that need a restart to take effect.
    pub needs_restart: Vec<&'static str>,
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kept rules [{}], reset rules [{}], removed rules [{}]; {} counter keys kept, {} dropped",
            self.kept_rules.join(", "),
            self.reset_rules.join(", "),
            self.removed_rules.join(", "),
            self.keys_kept,
            self.keys_dropped
        )?;
        if !self.needs_restart.is_empty() {
            write!(f, "; restart needed for: {}", self.needs_restart.join(", "))?;
        }
        Ok(())
    }
}

fn restart_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key| {
        if changed {
            keys.push(key);
        }
    };
    check(old.listen != new.listen, "listen");
    check(old.admin_listen != new.admin_listen, "admin_listen");
    check(old.upstream != new.upstream, "upstream");
    check(old.detection_log != new.detection_log, "detection_log");
    check(old.access_log != new.access_log, "access_log");
    check(
        old.access_log_format != new.access_log_format,
        "access_log_format",
    );
    check(old.state_dir != new.state_dir, "state_dir");
    check(old.timeouts != new.timeouts, "timeouts");
    check(old.log_level != new.log_level, "log_level");
    check(old.workers != new.workers, "workers");
    check(
        old.max_connections != new.max_connections,
        "max_connections",
    );
    check(
        old.max_connections_per_source != new.max_connections_per_source,
        "max_connections_per_source",
    );
    keys
}

impl Live {
    pub(crate) fn reload(&self, args: &ServeArgs) -> Result<ReloadReport, ConfigError> {
        let new = Config::load(args)?;
        let rules = build_rules(&new.effective_rules())?;
        // One reload at a time; the engine swap must follow its rebuild directly.
        let mut guard = self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for rule in &rules {
            self.metrics.init_rule(rule.name());
        }
        let needs_restart = restart_keys(&guard, &new);
        // Everything validated; options were checked by `Config::load`, so the rebuild
        // cannot fail half-way: swap.
        let report = self
            .detection
            .reconfigure(rules, engine_options(&new), new.mode)
            .map_err(|e| ConfigError::invalid("rule", e.to_string()))?;
        self.proxy.set_trusted_proxies(new.trusted_proxies.clone());
        self.proxy.set_allowed_hosts(new.allowed_hosts.as_deref());
        self.detection
            .set_trusted_proxies(new.trusted_proxies.clone());
        let bans = self.enforcement.bans();
        bans.set_policy(new.ban.clone());
        self.enforcement.set_allowlist(new.allowlist.clone());
        bans.set_ipv6_prefix(new.ipv6_prefix);
        self.admin
            .token
            .store(new.admin_token.clone().map(Arc::new));
        // Keys bound at start keep their running values, so a later reload still reports them.
        let mut new = new;
        new.listen = guard.listen;
        new.admin_listen = guard.admin_listen;
        new.upstream = guard.upstream.clone();
        new.detection_log = guard.detection_log.clone();
        new.access_log = guard.access_log.clone();
        new.access_log_format = guard.access_log_format;
        new.state_dir = guard.state_dir.clone();
        new.timeouts = guard.timeouts.clone();
        new.log_level = guard.log_level.clone();
        new.workers = guard.workers;
        new.max_connections = guard.max_connections;
        new.max_connections_per_source = guard.max_connections_per_source;
        *guard = new;
        let names = |v: &[crate::detect::RuleKeys]| {
            v.iter().map(|r| r.name.to_string()).collect::<Vec<_>>()
        };
        let mut reset_rules = names(&report.reset_rules);
        reset_rules.extend(report.added_rules.iter().map(|n| n.to_string()));
        Ok(ReloadReport {
            kept_rules: names(&report.kept_rules),
            reset_rules,
            removed_rules: names(&report.removed_rules),
            keys_kept: report.keys_kept,
            keys_dropped: report.keys_dropped,
            needs_restart,
        })
    }
}
