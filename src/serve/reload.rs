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
}

/// What a successful reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Rules whose counters were kept.
    pub kept_rules: Vec<String>,
    /// Rules that are new or changed (counters start from zero).
    pub reset_rules: Vec<String>,
    /// Keys that need a restart to take effect.
    pub needs_restart: Vec<&'static str>,
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kept rules [{}], reset rules [{}]",
            self.kept_rules.join(", "),
            self.reset_rules.join(", ")
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
    keys
}

impl Live {
    pub(crate) fn reload(&self, args: &ServeArgs) -> Result<ReloadReport, ConfigError> {
        let new = Config::load(args)?;
        let rules = build_rules(&new.effective_rules())?;
        let names: Vec<String> = rules.iter().map(|r| r.name().to_string()).collect();
        let engine = crate::detect::Engine::new(rules, engine_options(&new))
            .map_err(|e| ConfigError::invalid("rule", e.to_string()))?;
        struct Report {
            kept_rules: Vec<String>,
            reset_rules: Vec<String>,
        }
        let report = Report {
            kept_rules: Vec::new(),
            reset_rules: names,
        };
        let mut guard = self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let needs_restart = restart_keys(&guard, &new);
        // Everything validated: swap.
        self.detection.reconfigure(engine, new.mode);
        self.proxy.set_trusted_proxies(new.trusted_proxies.clone());
        let bans = self.enforcement.bans();
        bans.set_policy(new.ban.clone());
        bans.set_allowlist(new.allowlist.clone());
        bans.set_ipv6_prefix(new.ipv6_prefix);
        self.admin
            .token
            .store(new.admin_token.clone().map(Arc::new));
        *guard = new;
        Ok(ReloadReport {
            kept_rules: report.kept_rules,
            reset_rules: report.reset_rules,
            needs_restart,
        })
    }
}
