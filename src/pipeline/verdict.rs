//! What is done about the engine's verdicts: the one place that decides whether a verdict
//! bans, and that writes `detection` / `window_summary` lines and counts detections.
//!
//! The decision: the global mode (monitor/block) and the rule's `action` say whether the
//! verdict would ban; a source inside `trusted_proxies` or the allowlist is exempt. A verdict
//! that bans is handed to enforcement ([`Enforcement::ban`]), which keeps the table and
//! reports what became of the ban; the `action` logged (`logged` / `banned`) is that outcome.
//!
//! # Identity bans: the seam
//! A verdict of a key grouped by identity ([`DetectionEvent::by_identity`]) is about an API
//! key, not an address: [`ban_target`] gives [`BanTarget::Identity`] for it, and no address
//! is ever banned for it (the same key may call from many places, and one address may carry
//! many keys). Such a ban goes to the [`IdentityBans`] set with
//! [`Verdicts::set_identity_bans`] (the `[auth]` key store); without one it is logged only
//! (`action = "logged"`). The trusted-proxy and allowlist exemptions are about addresses and
//! do not apply to identities.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use ipnet::IpNet;

use crate::detect::{DetectionEvent, Event};
use crate::enforce::{BanOutcome, Enforcement};
use crate::telemetry::log_event::{Action, Finding, LogEvent};
use crate::telemetry::throttle::PerMinute;
use crate::telemetry::{DetectionLog, Metrics};

/// Why a verdict that would ban does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exemption {
    /// Monitor mode, or a log-only rule.
    LogOnly,
    /// The source is a trusted proxy: banning it would ban every client behind it.
    TrustedProxy,
    /// The source is allowlisted.
    Allowlisted,
}

/// The decision about one verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Ban the source (its address, or its IPv6 group).
    Ban,
    /// Only log it, for this reason.
    Log(Exemption),
}

/// Whom a ban is aimed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BanTarget {
    /// A client address (its IPv6 group): [`Enforcement::ban`].
    Addr(IpAddr),
    /// An API key's identity, wherever it calls from: [`IdentityBans::ban`].
    Identity(Arc<str>),
}

/// Whom detection `d` would ban: its identity when its key is one, else `src`, the client of
/// the request that triggered it (`None` without a request: a window closed on time).
pub(crate) fn ban_target(d: &DetectionEvent, src: Option<IpAddr>) -> Option<BanTarget> {
    match (&d.identity, d.by_identity) {
        (Some(name), true) => Some(BanTarget::Identity(name.clone())),
        _ => src.map(BanTarget::Addr),
    }
}

/// What bans identities: the seam for the `[auth]` key store. Called only for a verdict
/// that bans (block mode and a rule whose action bans).
pub(crate) trait IdentityBans: Send + Sync {
    /// Bans identity `name` for `rule`, with `reason` in words (as an address ban's). Calls
    /// `before` exactly once before a *new* ban takes effect or is logged, so the detection
    /// line comes first; returns whether the identity is banned now (new or already).
    fn ban(
        &self,
        name: &str,
        rule: &str,
        reason: &str,
        now: DateTime<Utc>,
        before: &mut dyn FnMut(),
    ) -> bool;
}

/// Whether a verdict of a rule with `rule_bans` (its action resolved under the mode) against
/// `src` bans, given the exemptions. Monitor mode never changes a response, so in it no rule
/// bans, whatever its action (README "Blocking: the operator's guide").
pub(crate) fn decide(
    block_mode: bool,
    rule_bans: bool,
    src: IpAddr,
    trusted: &[IpNet],
    allowlisted: impl FnOnce(IpAddr) -> bool,
) -> Decision {
    if !(block_mode && rule_bans) {
        Decision::Log(Exemption::LogOnly)
    } else if trusted.iter().any(|n| n.contains(&src)) {
        Decision::Log(Exemption::TrustedProxy)
    } else if allowlisted(src) {
        Decision::Log(Exemption::Allowlisted)
    } else {
        Decision::Ban
    }
}

/// Acts on verdicts: decides, bans through enforcement, logs and counts.
pub(crate) struct Verdicts {
    log: DetectionLog,
    metrics: Arc<Metrics>,
    enforcement: Arc<Enforcement>,
    trusted: ArcSwap<Vec<IpNet>>,
    identity_bans: OnceLock<Arc<dyn IdentityBans>>,
    /// One policy `detection` line per source and rule per minute.
    policy_lines: PerMinute<(IpAddr, &'static str)>,
}

impl Verdicts {
    /// Acts through `enforcement`, writing to `log`; no trusted proxies yet.
    pub(crate) fn new(
        log: DetectionLog,
        metrics: Arc<Metrics>,
        enforcement: Arc<Enforcement>,
    ) -> Self {
        Verdicts {
            log,
            metrics,
            enforcement,
            trusted: ArcSwap::from_pointee(Vec::new()),
            identity_bans: OnceLock::new(),
            policy_lines: PerMinute::default(),
        }
    }

    /// The limiter of policy `detection` lines.
    pub(crate) fn policy_lines(&self) -> &PerMinute<(IpAddr, &'static str)> {
        &self.policy_lines
    }

    /// The detection log.
    pub(crate) fn log(&self) -> &DetectionLog {
        &self.log
    }

    /// The metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Enforcement.
    pub(crate) fn enforcement(&self) -> &Enforcement {
        &self.enforcement
    }

    /// The trusted proxies now.
    pub(crate) fn trusted(&self) -> arc_swap::Guard<Arc<Vec<IpNet>>> {
        self.trusted.load()
    }

    /// The trusted proxies (start-up and reload): a rule never bans one.
    pub(crate) fn set_trusted_proxies(&self, trusted: Vec<IpNet>) {
        self.enforcement.set_trusted_proxies(trusted.clone());
        self.trusted.store(Arc::new(trusted));
    }

    /// Where identity bans go (once, at start-up); until then they are logged only.
    /// Returns `false` when one was already set.
    pub(crate) fn set_identity_bans(&self, bans: Arc<dyn IdentityBans>) -> bool {
        self.identity_bans.set(bans).is_ok()
    }

    /// Acts on `events`; `src` is the client of the request that triggered them (`None`
    /// when a window closed on time, a reload or shutdown).
    pub(crate) fn handle(&self, events: &[Event], src: Option<IpAddr>) {
        let now = Utc::now();
        for event in events {
            match event {
                Event::Detection(d) => self.detection(now, d, src),
                Event::WindowSummary(d) => {
                    // A summary bans nothing: it says what the rule does in the current mode
                    // (in monitor mode, whether block mode would ban).
                    let block_mode = self.enforcement.block_mode();
                    // An identity's verdict bans only where identity bans are wired in.
                    let can_ban = !d.by_identity || self.identity_bans.get().is_some();
                    let action = match (block_mode, d.action.bans(true) && can_ban) {
                        (true, true) => Action::Banned,
                        (false, true) => Action::WouldBlock,
                        (_, false) => Action::Logged,
                    };
                    self.log
                        .write(now, &LogEvent::WindowSummary(Finding::new(d, action)));
                }
            }
        }
    }

    /// Requests counted in keys already flagged in their window, from `src`, which is not
    /// banned (its requests would be refused and not counted): each verdict that bans now
    /// bans again, with a `detection` line of the window's figures written before the new
    /// `ban` line. Nothing is written when nothing new is banned (an exempt source, a full
    /// table, a ban that started meanwhile), so an exempt source's requests write no line.
    ///
    /// Why: a detection fires once per window (sliding: per episode above the threshold); a
    /// source that keeps its rate up after its ban expired, or after block mode was turned on,
    /// would otherwise stay unbanned while its key stays flagged.
    ///
    /// A request that started before the source's last ban began (in flight when it was
    /// banned), or a window that began before an operator lifted the source's ban, bans
    /// nothing ([`crate::enforce::Bans::may_ban_again`]).
    pub(crate) fn sustained(
        &self,
        verdicts: &[DetectionEvent],
        src: IpAddr,
        started: DateTime<Utc>,
    ) {
        if !self.enforcement.block_mode() {
            return;
        }
        let now = Utc::now();
        let switched = self.enforcement.switched_to_block();
        for d in verdicts {
            if !d.action.bans(true) {
                continue;
            }
            let mut written = false;
            let write = |action| {
                self.log
                    .write(now, &LogEvent::Detection(Finding::detection(d, action)));
                written = true;
            };
            match ban_target(d, Some(src)) {
                Some(BanTarget::Identity(name)) => {
                    let Some(bans) = self.identity_bans.get() else {
                        continue;
                    };
                    let mut write = write;
                    bans.ban(&name, &d.rule, &reason(d), now, &mut || {
                        write(Action::Banned)
                    });
                }
                Some(BanTarget::Addr(ip)) => {
                    // Lock-free checks first: a busy trusted proxy's every request may come
                    // here, and must not take the ban table's lock.
                    let trusted = self.trusted.load();
                    let bans = self.enforcement.bans();
                    if trusted.iter().any(|n| n.contains(&ip))
                        || bans.check(ip, now).is_some()
                        || !bans.may_ban_again(ip, started, d.window_start, switched)
                    {
                        continue;
                    }
                    let allowlisted = |ip| self.enforcement.allowlisted(ip);
                    if decide(true, true, ip, &trusted, allowlisted) != Decision::Ban {
                        continue;
                    }
                    let mut write = write;
                    self.enforcement
                        .ban(ip, &d.rule, reason(d), now, || write(Action::Banned));
                }
                None => continue,
            }
            if written {
                self.metrics
                    .detections
                    .with_label_values(&[&*d.rule, d.severity.as_str(), "banned"])
                    .inc();
            }
        }
    }

    /// A `detection`: decide, ban if so, log the detection before the ban, count it. In
    /// monitor mode the line says `would_block` where block mode would ban (the rule's action
    /// bans there and the source is not exempt), `logged` otherwise.
    fn detection(&self, now: DateTime<Utc>, d: &DetectionEvent, src: Option<IpAddr>) {
        let block_mode = self.enforcement.block_mode();
        let rule_bans = d.action.bans(block_mode);
        // Monitor mode, and block mode would ban.
        let would = !block_mode && d.action.bans(true);
        let write = |action| {
            self.log
                .write(now, &LogEvent::Detection(Finding::detection(d, action)));
            action
        };
        let action = match ban_target(d, src) {
            // Without a request there is no one to ban; the line says what the rule does.
            None if block_mode && rule_bans => write(Action::Banned),
            None if would => write(Action::WouldBlock),
            None => write(Action::Logged),
            Some(BanTarget::Identity(name)) if block_mode && rule_bans => {
                self.ban_identity(now, d, &name, write)
            }
            Some(BanTarget::Identity(_)) if would && self.identity_bans.get().is_some() => {
                write(Action::WouldBlock)
            }
            Some(BanTarget::Identity(_)) => write(Action::Logged),
            Some(BanTarget::Addr(ip)) if would => {
                let trusted = self.trusted.load();
                match decide(true, true, ip, &trusted, |ip| {
                    self.enforcement.allowlisted(ip)
                }) {
                    Decision::Ban => write(Action::WouldBlock),
                    Decision::Log(_) => write(Action::Logged),
                }
            }
            Some(BanTarget::Addr(ip)) => {
                let trusted = self.trusted.load();
                match decide(block_mode, rule_bans, ip, &trusted, |ip| {
                    self.enforcement.allowlisted(ip)
                }) {
                    Decision::Ban => self.ban(now, d, ip, write),
                    Decision::Log(why) => {
                        if why == Exemption::TrustedProxy {
                            tracing::warn!(%ip, rule = %d.rule, "not banning a trusted proxy; is it sending X-Forwarded-For?");
                        }
                        write(Action::Logged)
                    }
                }
            }
        };
        self.metrics
            .detections
            .with_label_values(&[&*d.rule, d.severity.as_str(), action.as_str()])
            .inc();
    }

    /// Hands identity `name` to the identity bans for verdict `d` (logged only without
    /// any); the detection line comes before a new ban, as for addresses.
    fn ban_identity(
        &self,
        now: DateTime<Utc>,
        d: &DetectionEvent,
        name: &str,
        write: impl Fn(Action) -> Action,
    ) -> Action {
        let Some(bans) = self.identity_bans.get() else {
            tracing::debug!(identity = name, rule = %d.rule, "no identity bans configured; logged only");
            return write(Action::Logged);
        };
        let mut written = None;
        let banned = bans.ban(name, &d.rule, &reason(d), now, &mut || {
            if written.is_none() {
                written = Some(write(Action::Banned));
            }
        });
        match written {
            Some(action) => action,
            None => write(if banned {
                Action::Banned
            } else {
                Action::Logged
            }),
        }
    }

    /// Tells enforcement to ban `ip` for verdict `d`. The detection line is written through
    /// `write` before the `ban` line when a new ban starts, after the outcome otherwise.
    fn ban(
        &self,
        now: DateTime<Utc>,
        d: &DetectionEvent,
        ip: IpAddr,
        write: impl Fn(Action) -> Action,
    ) -> Action {
        let mut written = None;
        let outcome = self.enforcement.ban(ip, &d.rule, reason(d), now, || {
            written = Some(write(Action::Banned));
        });
        if let Some(action) = written {
            return action;
        }
        write(match outcome {
            BanOutcome::Banned(_) | BanOutcome::AlreadyBanned(_) => Action::Banned,
            // A reload extended the allowlist since the decision, or the table is full.
            BanOutcome::Allowlisted | BanOutcome::TableFull => Action::Logged,
        })
    }
}

/// The `reason` of a rule ban: the verdict's figures in words.
fn reason(d: &DetectionEvent) -> String {
    if let Some(bytes) = d.bytes {
        return format!(
            "{}: {bytes} bytes in {} qualifying requests (avg {:.2}s, max {:.2}s) in the window from {}",
            d.rule,
            d.count,
            d.avg_response_time,
            d.max_response_time,
            crate::time::rfc3339_ms(&d.window_start)
        );
    }
    format!(
        "{}: {} qualifying requests (avg {:.2}s, max {:.2}s) in the window from {}",
        d.rule,
        d.count,
        d.avg_response_time,
        d.max_response_time,
        crate::time::rfc3339_ms(&d.window_start)
    )
}
