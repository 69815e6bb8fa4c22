//! Hot reload (SIGHUP): re-read the config file, validate all of it, then swap the
//! [`Live`] settings (rules, mode, allowlist, IPv6 grouping, counter cap, trusted proxies,
//! allowed hosts, ban policy, admin token, the TLS certificate and key, re-read from their
//! files) — or refuse and keep the old config (and the old certificate: a bad PEM refuses
//! the reload naming `tls_cert` or `tls_key`). In-flight
//! requests are untouched: every request reads what it needs through an `ArcSwap` snapshot.
//!
//! The [`Bound`] settings (listeners, upstream, logs, state dir, timeouts, workers,
//! CPU affinity, connection limits) are fixed at start. [`Reloader`] holds the running
//! `Bound` for the life of the process and never replaces it, so a change to one is
//! reported as needing a restart on this reload and on every later one, until the process
//! restarts.

use std::fmt;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::admin::AdminState;
use crate::config::{Bound, Config, ConfigError, Live, ServeArgs};
use crate::detect::build_rules;
use crate::enforce::Enforcement;
use crate::proxy::Proxy;

use super::{engine_options, DetectionStage};

/// Everything a reload can reach, and the configuration in force.
pub(crate) struct Reloader {
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) admin: Arc<AdminState>,
    pub(crate) enforcement: Arc<Enforcement>,
    pub(crate) detection: Arc<DetectionStage>,
    pub(crate) metrics: Arc<crate::telemetry::Metrics>,
    /// The settings bound at start: what a new file is compared against.
    bound: Bound,
    /// The live settings in force: swapped whole by a successful reload.
    live: ArcSwap<Live>,
    /// One reload at a time: the engine swap must follow its rebuild directly, and two
    /// reloads must not interleave their pushes to the components.
    reloading: Mutex<()>,
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

impl Reloader {
    /// The reloader for a server started with `bound` and `live`.
    pub(crate) fn new(
        proxy: Arc<Proxy>,
        admin: Arc<AdminState>,
        enforcement: Arc<Enforcement>,
        detection: Arc<DetectionStage>,
        metrics: Arc<crate::telemetry::Metrics>,
        bound: Bound,
        live: Live,
    ) -> Self {
        Reloader {
            proxy,
            admin,
            enforcement,
            detection,
            metrics,
            bound,
            live: ArcSwap::from_pointee(live),
            reloading: Mutex::new(()),
        }
    }

    /// The settings bound at start.
    pub(crate) fn bound(&self) -> &Bound {
        &self.bound
    }

    /// The live settings in force (those of the last successful reload).
    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Loads and validates the file named by `args`, then pushes each component its part of
    /// the new [`Live`] and stores it; bound keys that differ from the running ones are only
    /// reported. A bad file changes nothing.
    pub(crate) fn reload(&self, args: &ServeArgs) -> Result<ReloadReport, ConfigError> {
        let config = Config::load(args)?;
        // The admin listener's warnings are about the listener that runs (a changed
        // `admin_listen` waits for a restart), with the token this reload brings.
        let admin_listen = config.bound.admin_listen;
        let mut warnings: Vec<String> = config
            .warnings()
            .iter()
            .filter(|w| {
                !crate::config::admin_warnings(admin_listen, config.live.admin_token.as_deref())
                    .contains(w)
            })
            .cloned()
            .collect();
        warnings.extend(crate::config::admin_warnings(
            self.bound.admin_listen,
            config.live.admin_token.as_deref(),
        ));
        let Config {
            bound: new_bound,
            live: new,
            ..
        } = config;
        let rules = build_rules(&new.effective_rules())?;
        let _reloading = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for rule in &rules {
            self.metrics.init_rule(rule.name());
        }
        let needs_restart = self.bound.changed_keys(&new_bound);
        // The key file is re-read too (an operator may have edited it); a broken one fails
        // the reload before anything changed, and the keys in force stay.
        if let Some(keys) = self.proxy.keys() {
            let n = keys
                .reload()
                .map_err(|e| ConfigError::invalid("auth.keys_file", e.to_string()))?;
            tracing::info!(keys = n, file = %keys.path().display(), "API keys re-read");
            if let Some(w) = super::no_key_warning(new.auth.mode, n, keys.path()) {
                tracing::warn!("{w}");
            }
        } else if new.auth.mode != crate::auth::AuthMode::Off {
            // Turning [auth] on needs the key file the server started without.
            return Err(ConfigError::invalid(
                "auth.keys_file",
                "the server started without a key file (auth.keys_file or state_dir): restart to turn auth on",
            ));
        }
        // Everything validated; options were checked by `Config::load`, so the rebuild
        // cannot fail half-way: swap.
        let report = self
            .detection
            .reconfigure(rules, engine_options(&new), new.mode)
            .map_err(|e| ConfigError::invalid("rule", e.to_string()))?;
        self.proxy.set_trusted_proxies(new.trusted_proxies.clone());
        self.proxy.set_allowed_hosts(new.allowed_hosts.as_deref());
        self.proxy.set_policy(new.policy.clone());
        self.proxy.set_auth(new.auth);
        self.proxy.set_tls(new.tls.as_ref());
        self.enforcement.set_abort_in_flight(new.abort_in_flight);
        self.detection
            .set_trusted_proxies(new.trusted_proxies.clone());
        let bans = self.enforcement.bans();
        bans.set_policy(new.ban.clone());
        self.enforcement.set_allowlist(new.allowlist.clone());
        bans.set_spared(new.policy.manage_from.clone());
        bans.set_ipv6_prefix(new.ipv6_prefix);
        self.admin
            .token
            .store(new.admin_token.clone().map(Arc::new));
        self.metrics.set_mode(new.mode);
        // What start warns about, a reload warns about too: it is how such a setting
        // usually changes (a token removed, a trust list widened).
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        let old = self.live.swap(Arc::new(new));
        let now = self.live.load();
        if old.auth.mode != crate::auth::AuthMode::Off
            && now.auth.mode == crate::auth::AuthMode::Off
        {
            tracing::warn!(
                was = old.auth.mode.as_str(),
                "auth.mode is now off: requests are no longer checked for API keys"
            );
        }
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
