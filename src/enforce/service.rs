//! Enforcement at run time: the ban table wired to the proxy (as its [`Gate`]), the record
//! pipeline (which decides that a verdict bans and says so through [`Enforcement::ban`]), the
//! admin API, the detection log, the metrics, the expiry timer and the state file.
//!
//! Nothing slow happens on the proxied request path: a refusal is a snapshot lookup; a rule
//! ban is an in-memory change (queued for the journal) plus a wake-up of the background
//! task, which appends the queued changes to the journal (off the runtime's worker threads,
//! see `durable`) and lifts bans when they expire — on a timer, not on the next request.
//!
//! An admin ban or unban is acknowledged (201/204) only once its change is durable: the
//! handler waits for the journal append and fsync that contains it (group commit: one
//! fsync covers every change pending at that moment), so a `kill -9` after the answer
//! cannot lose it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use tokio::sync::Notify;

use super::durable::{Flush, Persister};
use super::identity::{IdentityBan, IdentityBans, IdentityOutcome};
use super::remote::Subject;
use super::{load_state, Ban, BanOutcome, Bans, EnforceError, LoadReport};
use crate::config::Mode;
use crate::proxy::refusal::Gate;
use crate::telemetry::log_event::{BanEvent, BlockedEvent, Ended, LogEvent};
use crate::telemetry::throttle::{PerMinute, Throttle};
use crate::telemetry::{DetectionLog, Metrics};

/// Longest sleep of the background task when no ban is due (it also wakes on every change).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The run-time enforcement service.
pub(crate) struct Enforcement {
    pub(super) bans: Arc<Bans>,
    pub(super) log: DetectionLog,
    metrics: Arc<Metrics>,
    /// Writes changes to `state_dir`; `None` without one (bans live in memory only).
    persister: Option<Persister>,
    wake: Notify,
    block_mode: AtomicBool,
    /// When a reload last turned block mode on (epoch milliseconds; `i64::MIN`: never).
    block_since_ms: AtomicI64,
    /// Whether the mode was set once (the start's mode is no switch).
    mode_set: AtomicBool,
    /// `enforcement.abort_in_flight`: a ban cuts the source's running requests.
    abort_in_flight: AtomicBool,
    /// One per proxy worker: woken on every ban change, so requests still waiting for their
    /// response head are cut too, not only streaming ones.
    listeners: std::sync::Mutex<Vec<Arc<tokio::sync::Notify>>>,
    /// Bans of identities (API key names).
    pub(super) identities: IdentityBans,
    /// One `blocked` event per banned identity per minute.
    identity_blocked: PerMinute<String>,
    /// Identity bans changed since they were last written to `state_dir`.
    identities_dirty: AtomicBool,
    /// Held across one save of the identity bans (flag taken, file written): a second save
    /// waits for the first, so "saved" means on disk for every caller, and two writers never
    /// share the temporary file.
    identities_saving: tokio::sync::Mutex<()>,
    /// `[cluster]`: where local ban changes are published (unset in single-instance mode).
    pub(super) sync: std::sync::OnceLock<Arc<dyn super::remote::BanSync>>,
    /// `[cluster]`: bans in the table that another replica made.
    pub(super) origins: super::remote::Origins,
}

/// The `ban` event fields of an identity ban.
pub(super) fn identity_event(ban: &IdentityBan, restored: bool) -> BanEvent<'_> {
    BanEvent {
        src: None,
        identity: Some(&ban.identity),
        until: ban.until,
        reason: &ban.reason,
        offence: ban.offence,
        restored,
        rule: &ban.rule,
        origin: None,
    }
}

/// The `ban` event fields of `ban`.
pub(super) fn ban_event(ban: &Ban, restored: bool) -> BanEvent<'_> {
    BanEvent {
        src: Some(ban.src_display()),
        identity: None,
        until: ban.until,
        reason: &ban.reason,
        offence: ban.offence,
        restored,
        rule: &ban.rule,
        origin: None,
    }
}

impl Enforcement {
    /// Builds the service around `bans`; with a `state_dir`, the table starts queueing its
    /// changes for the journal.
    pub(crate) fn new(
        bans: Arc<Bans>,
        log: DetectionLog,
        metrics: Arc<Metrics>,
        state_dir: Option<PathBuf>,
    ) -> Self {
        if state_dir.is_some() {
            bans.record_changes();
        }
        Enforcement {
            bans,
            log,
            metrics,
            persister: state_dir.map(Persister::new),
            wake: Notify::new(),
            block_mode: AtomicBool::new(false),
            block_since_ms: AtomicI64::new(i64::MIN),
            mode_set: AtomicBool::new(false),
            abort_in_flight: AtomicBool::new(true),
            listeners: std::sync::Mutex::default(),
            identities: IdentityBans::default(),
            identity_blocked: PerMinute::default(),
            identities_dirty: AtomicBool::new(false),
            identities_saving: tokio::sync::Mutex::new(()),
            sync: std::sync::OnceLock::new(),
            origins: super::remote::Origins::default(),
        }
    }

    /// Sets the global mode: only in block mode is any request refused.
    pub(crate) fn set_mode(&self, mode: Mode) {
        let block = mode == Mode::Block;
        let was = self.block_mode.swap(block, Ordering::Relaxed);
        let first = !self.mode_set.swap(true, Ordering::Relaxed);
        if block && !was && !first {
            let now = Utc::now().timestamp_millis();
            self.block_since_ms.store(now, Ordering::Relaxed);
        }
    }

    /// When a reload last turned block mode on (not the mode the process started in): keys
    /// flagged before it were flagged in monitor mode, and their sources never banned.
    pub(crate) fn switched_to_block(&self) -> Option<DateTime<Utc>> {
        match self.block_since_ms.load(Ordering::Relaxed) {
            i64::MIN => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }

    /// Sets `enforcement.abort_in_flight` (start-up and reload).
    pub(crate) fn set_abort_in_flight(&self, on: bool) {
        self.abort_in_flight.store(on, Ordering::Relaxed);
    }

    /// Whether the global mode is `block`.
    pub(crate) fn block_mode(&self) -> bool {
        self.block_mode.load(Ordering::Relaxed)
    }

    /// The ban table (reload swaps its policy, allowlist and prefix in place).
    pub(crate) fn bans(&self) -> &Arc<Bans> {
        &self.bans
    }

    /// Loads the state (snapshot and journal, if `state_dir` is set) and restores its running
    /// bans, logging each as a `ban` event with `restored: true`. A corrupt file is reported
    /// and moved aside by the loader; start-up goes on. The first write of the run compacts,
    /// so the files are rewritten from the restored table.
    pub(crate) fn restore(&self, now: DateTime<Utc>) {
        let Some(persister) = &self.persister else {
            return;
        };
        let report = load_state(persister.dir(), now);
        persister.set_generation(report.generation());
        log_load(persister.dir(), &report);
        // A ban that ran out while the process was down ends now in the log too, stamped
        // with its end, so a SIEM that tracks bans by their events sees every one end.
        for ban in &report.expired {
            self.log_unban(ban.until, ban, Ended::Expired);
        }
        for ban in self.bans.restore(report.state, now) {
            self.log_ban(now, &ban, true);
        }
        for ban in self.identities.load(persister.dir(), now) {
            self.log
                .write(now, &LogEvent::Ban(identity_event(&ban, true)));
        }
        self.refresh_gauge();
    }

    pub(super) fn changed(&self) {
        self.refresh_gauge();
        self.wake.notify_one();
        // Running requests waiting for their head look again: one of them may be banned now.
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for l in listeners.iter() {
            l.notify_waiters();
        }
    }

    /// Waits until every change made so far is durable (nothing to wait for without a
    /// `state_dir`): what an admin API answer promises.
    async fn acknowledge(&self) -> Result<(), EnforceError> {
        let Some(persister) = &self.persister else {
            return Ok(());
        };
        let through = Flush::Through(self.bans.last_change());
        persister.flush(&self.bans, through).await.map_err(|e| {
            tracing::error!(error = %e, "a ban change is in force but could not be persisted");
            EnforceError::NotPersisted {
                reason: e.to_string(),
            }
        })
    }

    fn refresh_gauge(&self) {
        let n = self.bans.len() + self.identities.len();
        self.metrics
            .active_bans
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn log_ban(&self, now: DateTime<Utc>, ban: &Ban, restored: bool) {
        self.log
            .write(now, &LogEvent::Ban(ban_event(ban, restored)));
    }

    pub(super) fn log_unban(&self, now: DateTime<Utc>, ban: &Ban, ended: Ended) {
        self.unban_event_write(now, ban, ended);
    }

    /// Whether `ip` is allowlisted: a rule never bans it (the pipeline asks before deciding).
    pub(crate) fn allowlisted(&self, ip: IpAddr) -> bool {
        self.bans.allowlists(ip)
    }

    /// Bans `ip`'s source group for `rule`: the pipeline decided that the verdict bans.
    /// `announce` runs once the ban is settled but before the gate can see it, and before the
    /// `ban` event is written, so the cause the pipeline logs there (the `detection`) comes
    /// first in the log, then the `ban`, then any `blocked`. It does not run when nothing
    /// new is banned (already banned, allowlisted, table full); the outcome says which.
    pub(crate) fn ban(
        &self,
        ip: IpAddr,
        rule: &str,
        reason: String,
        now: DateTime<Utc>,
        announce: impl FnOnce(),
    ) -> BanOutcome {
        let outcome = self
            .bans
            .ban_offender_announced(ip, rule, reason, now, |ban| {
                announce();
                self.origins.forget(&Subject::Address(ban.src));
                self.log_ban(now, ban, false);
            });
        match &outcome {
            BanOutcome::Banned(ban) => {
                self.publish_ban(ban);
                self.changed();
            }
            BanOutcome::TableFull => {
                // Every request of a flagged source tries again (see `Verdicts::sustained`):
                // one warning a minute.
                static FULL: Throttle = Throttle::new(Duration::from_secs(60));
                if let Some(repeats) = FULL.allow() {
                    tracing::warn!(%ip, %rule, repeats, "ban table full; source not banned");
                }
            }
            BanOutcome::AlreadyBanned(_) | BanOutcome::Allowlisted => {}
        }
        outcome
    }

    /// Admin API: ban `src` for `duration`. Returns once the ban is durable;
    /// [`EnforceError::NotPersisted`] when it is in force but could not be written.
    pub(crate) async fn admin_add(
        &self,
        src: IpNet,
        duration: Duration,
        reason: String,
        force: bool,
    ) -> Result<Ban, EnforceError> {
        let now = Utc::now();
        let ban = self
            .bans
            .add_manual_announced(src, duration, reason, force, now, |ban| {
                self.origins.forget(&Subject::Address(ban.src));
                self.log_ban(now, ban, false);
            })?;
        self.publish_ban(&ban);
        self.changed();
        self.acknowledge().await?;
        Ok(ban)
    }

    /// Admin API: lift the ban of exactly `src` (`Ok(None)`: there was none). Returns once
    /// the unban is durable, like [`Enforcement::admin_add`].
    pub(crate) async fn admin_remove(&self, src: &IpNet) -> Result<Option<Ban>, EnforceError> {
        let now = Utc::now();
        let Some(ban) = self.bans.remove(src, now) else {
            return Ok(None);
        };
        self.log_unban(now, &ban, Ended::Admin);
        self.publish_unban(Subject::Address(ban.src), ban.since);
        self.changed();
        self.acknowledge().await?;
        Ok(Some(ban))
    }

    /// The trusted proxies (start and reload): see [`Bans::set_trusted_proxies`].
    pub(crate) fn set_trusted_proxies(&self, trusted: Vec<IpNet>) {
        self.bans.set_trusted_proxies(trusted);
    }

    /// Replaces the allowlist (reload); rule bans the new allowlist covers are lifted and
    /// logged as `unban` with `"ended": "allowlist"`.
    pub(crate) fn set_allowlist(&self, allowlist: Vec<IpNet>) {
        let lifted = self.bans.set_allowlist(allowlist);
        if lifted.is_empty() {
            return;
        }
        let now = Utc::now();
        for mut ban in lifted {
            ban.until = ban.until.min(now);
            self.log_unban(now, &ban, Ended::Allowlist);
            // Lifted in the cluster too, or the next resync would bring it back from Redis.
            self.publish_unban(Subject::Address(ban.src), ban.since);
        }
        self.changed();
    }

    /// Admin API: the bans in force.
    pub(crate) fn list(&self) -> Vec<Ban> {
        self.bans.list()
    }

    /// Admin API: the identity bans in force, sorted by identity.
    pub(crate) fn list_identities(&self) -> Vec<IdentityBan> {
        self.identities.list()
    }

    /// A rule that counts per identity decided to ban `identity` (the API key's access is
    /// revoked for the ban's duration; its address stays free). `announce` runs before the
    /// `ban` event is written and before the gate sees the ban (cause before effect).
    pub(crate) fn ban_identity(
        &self,
        identity: &str,
        rule: &str,
        reason: String,
        now: DateTime<Utc>,
        announce: impl FnOnce(),
    ) -> IdentityOutcome {
        let policy = self.bans.policy();
        let outcome = self
            .identities
            .ban_offender(identity, rule, reason, &policy, now, |ban| {
                announce();
                self.origins
                    .forget(&Subject::Identity(ban.identity.clone()));
                self.log
                    .write(now, &LogEvent::Ban(identity_event(ban, false)));
            });
        if let IdentityOutcome::Banned(ban) = &outcome {
            self.publish_identity_ban(ban);
            self.identities_changed();
            self.changed();
        }
        outcome
    }

    /// Admin API: ban `identity` for `duration`; returns once the ban is durable.
    pub(crate) async fn admin_add_identity(
        &self,
        identity: &str,
        duration: Duration,
        reason: String,
    ) -> Result<IdentityBan, EnforceError> {
        let now = Utc::now();
        let ban = self
            .identities
            .add_manual(identity, duration, reason, now, |ban| {
                self.origins
                    .forget(&Subject::Identity(ban.identity.clone()));
                self.log
                    .write(now, &LogEvent::Ban(identity_event(ban, false)));
            });
        self.publish_identity_ban(&ban);
        self.identities_changed();
        self.changed();
        self.save_identities().await?;
        Ok(ban)
    }

    /// Admin API: lift the ban of `identity` (`Ok(None)`: there was none).
    pub(crate) async fn admin_remove_identity(
        &self,
        identity: &str,
    ) -> Result<Option<IdentityBan>, EnforceError> {
        let now = Utc::now();
        let Some(mut ban) = self.identities.remove(identity) else {
            return Ok(None);
        };
        ban.until = ban.until.min(now);
        self.identity_unban_write(now, &ban, Ended::Admin);
        self.publish_unban(Subject::Identity(ban.identity.clone()), ban.since);
        self.identities_changed();
        self.changed();
        self.save_identities().await?;
        Ok(Some(ban))
    }

    /// The identity bans changed: written to `state_dir` by the next save.
    pub(super) fn identities_changed(&self) {
        self.identities_dirty.store(true, Ordering::Release);
    }

    /// Writes the identity bans to `state_dir` when they changed (off the runtime threads).
    async fn save_identities(&self) -> Result<(), EnforceError> {
        let Some(persister) = &self.persister else {
            return Ok(());
        };
        // A save in progress may have taken the flag after this caller's change, and be
        // writing it still: waiting for it is waiting for the change to be on disk.
        let _saving = self.identities_saving.lock().await;
        if !self.identities_dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let dir = persister.dir().to_path_buf();
        let snapshot = self.identities.snapshot();
        let written = tokio::task::spawn_blocking(move || snapshot.save(&dir))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        written.map_err(|e| {
            self.identities_dirty.store(true, Ordering::Release);
            tracing::error!(error = %e, "an identity ban change is in force but could not be persisted");
            EnforceError::NotPersisted {
                reason: e.to_string(),
            }
        })
    }

    fn sweep(&self, now: DateTime<Utc>) {
        let expired = self.bans.expire(now);
        for ban in &expired {
            self.log_unban(now, ban, Ended::Expired);
        }
        let expired_identities = self.identities.expire(now);
        for ban in &expired_identities {
            self.identity_unban_write(now, ban, Ended::Expired);
        }
        if !expired.is_empty() || !expired_identities.is_empty() {
            // Their ends are journaled (see `Bans::expire`), written with the next change.
            self.refresh_gauge();
        }
    }

    /// Appends the changes queued since the last write to the journal (compacting when due),
    /// if there are any, and writes the identity bans if they changed. A failure is logged;
    /// the next write compacts from the table. `serve` calls it once more after the shutdown
    /// drain: a ban a rule made for a request that finished then is saved too.
    pub(crate) async fn persist(&self) {
        self.write(Flush::Pending).await;
        // A failure is logged and retried on the next change.
        let _ = self.save_identities().await;
    }

    async fn write(&self, what: Flush) {
        let Some(persister) = &self.persister else {
            return;
        };
        if let Err(e) = persister.flush(&self.bans, what).await {
            tracing::error!(error = %e, "cannot write the ban state; will retry on the next change");
        }
    }

    /// Lifts expired bans on time and appends every change to the journal, until
    /// `shutdown`; then compacts one last time (a short journal for the next start).
    pub(crate) async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.sweep(Utc::now());
            self.persist().await;
            let sleep = [self.bans.next_expiry(), self.identities.next_expiry()]
                .into_iter()
                .flatten()
                .min()
                .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => {}
                () = &mut shutdown => break,
            }
        }
        self.write(Flush::Compact).await;
        let _ = self.save_identities().await;
    }
}

/// Logs what the loader found: problems with the snapshot or the journal, dropped bans.
fn log_load(dir: &std::path::Path, report: &LoadReport) {
    match (&report.problem, &report.moved_to) {
        (Some(problem), Some(moved_to)) => tracing::error!(
            state_dir = %dir.display(), moved_to = %moved_to.display(), %problem,
            "ban state file unusable; moved aside, starting without it"
        ),
        (Some(problem), None) => tracing::warn!(
            state_dir = %dir.display(), skipped = report.skipped, %problem,
            "ban state file partly unreadable; the readable entries were restored"
        ),
        (None, _) => {}
    }
    let journal = &report.journal;
    if let Some(problem) = &journal.problem {
        tracing::warn!(
            state_dir = %dir.display(), skipped = journal.skipped, torn_tail = journal.torn_tail, %problem,
            "ban journal partly unusable; the readable changes were replayed"
        );
    }
    if journal.stale {
        tracing::info!("ban journal older than the snapshot (compaction was interrupted); already contained, not replayed");
    }
    if !report.expired.is_empty() {
        tracing::info!(
            count = report.expired.len(),
            "bans that expired while stopped were dropped"
        );
    }
}

impl Gate for Enforcement {
    fn ban_listener(&self) -> Option<Arc<tokio::sync::Notify>> {
        let notify = Arc::new(tokio::sync::Notify::new());
        self.listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(notify.clone());
        Some(notify)
    }

    fn cuts_now(&self) -> bool {
        self.abort_in_flight.load(Ordering::Relaxed) && self.block_mode()
    }

    fn blocking(&self) -> bool {
        self.block_mode()
    }

    fn cut(&self, src: IpAddr, identity: Option<&str>) -> Option<Arc<str>> {
        if !self.cuts_now() {
            return None;
        }
        let now = Utc::now();
        if let Some(hit) = self.bans.check(src, now) {
            return Some(hit.rule);
        }
        identity
            .and_then(|name| self.identities.check(name, now))
            .map(|b| b.rule)
    }

    fn aborted(&self, src: IpAddr, identity: Option<&str>, method: &str, path: &str, rule: &str) {
        let src = src.to_string();
        self.log.write(
            Utc::now(),
            &crate::telemetry::log_event::LogEvent::Aborted(
                crate::telemetry::log_event::AbortedEvent {
                    src: &src,
                    identity,
                    uri_path: path,
                    http_method: method,
                    rule,
                },
            ),
        );
        self.metrics.aborted.inc();
    }

    fn refuse(
        &self,
        src: IpAddr,
        identity: Option<&str>,
        method: &str,
        path: &str,
    ) -> Option<Arc<str>> {
        if !self.block_mode() {
            return None;
        }
        let now = Utc::now();
        if !self.bans.is_empty() {
            if let Some(hit) = self.bans.check(src, now) {
                self.metrics.blocked.with_label_values(&[&*hit.rule]).inc();
                if let Some(n) = self.bans.note_blocked(src, now) {
                    let event = BlockedEvent {
                        src: &hit.display,
                        identity: None,
                        uri_path: path,
                        http_method: method,
                        blocked_since_last: n,
                        rule: &hit.rule,
                    };
                    self.log.write(now, &LogEvent::Blocked(event));
                }
                return Some(hit.rule);
            }
            // A group's ban narrowed around an allowlisted address covers the group's other
            // addresses as they come.
            if let Some((rule, due)) = self.bans.check_narrowed(src, now) {
                self.metrics.blocked.with_label_values(&[&*rule]).inc();
                if let Some(n) = due {
                    let shown = crate::ip::canonical(src).to_string();
                    let event = BlockedEvent {
                        src: &shown,
                        identity: None,
                        uri_path: path,
                        http_method: method,
                        blocked_since_last: n,
                        rule: &rule,
                    };
                    self.log.write(now, &LogEvent::Blocked(event));
                }
                return Some(rule);
            }
        }
        let name = identity?;
        let ban = self.identities.check(name, now)?;
        self.metrics.blocked.with_label_values(&[&*ban.rule]).inc();
        if let Some(n) = self.identity_blocked.due(name, now.timestamp() / 60) {
            let src = src.to_string();
            let event = BlockedEvent {
                src: &src,
                identity: Some(name),
                uri_path: path,
                http_method: method,
                blocked_since_last: n,
                rule: &ban.rule,
            };
            self.log.write(now, &LogEvent::Blocked(event));
        }
        Some(ban.rule)
    }
}

/// Rules that count per identity ban the identity, not an address.
impl crate::pipeline::verdict::IdentityBans for Enforcement {
    fn ban(
        &self,
        name: &str,
        rule: &str,
        reason: &str,
        now: DateTime<Utc>,
        before: &mut dyn FnMut(),
    ) -> bool {
        match self.ban_identity(name, rule, reason.to_owned(), now, before) {
            IdentityOutcome::Banned(_) | IdentityOutcome::AlreadyBanned(_) => true,
        }
    }
}
