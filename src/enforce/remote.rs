//! `[cluster]`: bans shared with other replicas, of addresses and of identities (API key
//! names) alike. Local bans and unbans are handed to a [`BanSync`] (the cluster task, which
//! publishes them through Redis off the request path); bans and unbans made by other replicas
//! are applied here without being published again and without counting as new offences of
//! this replica (the ban's own offence is recorded in the history, so escalation counts
//! offences cluster-wide). In the detection log they carry `"origin": "<instance_id>"` — for
//! the `ban` when applied, and for its `unban`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::ban::{canonical_net, ADMIN_RULE};
use super::identity::{IdentityBan, PREFIX};
use super::{Ban, Bans, Enforcement};
use crate::telemetry::log_event::{Ended, LogEvent, UnbanEvent};

/// A ban in force with its subject's offence times and the replica that made it (`None`:
/// this one).
pub(crate) type HeldBan = (SharedBan, Vec<DateTime<Utc>>, Option<Arc<str>>);

/// Who a shared ban is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Subject {
    /// An address or a network.
    Address(IpNet),
    /// An identity (API key name).
    Identity(Arc<str>),
}

impl Subject {
    /// As the admin API takes it: `192.0.2.1`, `2001:db8::/48`, `identity:NAME`.
    pub(crate) fn display(&self) -> String {
        match self {
            Subject::Address(net) => super::display_src(net),
            Subject::Identity(name) => format!("{PREFIX}{name}"),
        }
    }

    /// The reverse of [`Subject::display`] (`None`: neither an identity nor a source).
    pub(crate) fn parse(text: &str) -> Option<Subject> {
        match text.strip_prefix(PREFIX) {
            Some(name) => Some(Subject::Identity(Arc::from(name))),
            None => super::parse_source(text).ok().map(Subject::Address),
        }
    }
}

/// A ban as the cluster shares it. JSON: the [`Ban`] (with `src`) or the [`IdentityBan`]
/// (with `identity`) as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum SharedBan {
    /// The ban of an address or a network.
    Address(Ban),
    /// The ban of an identity.
    Identity(IdentityBan),
}

impl SharedBan {
    /// Who it is on.
    pub(crate) fn subject(&self) -> Subject {
        match self {
            SharedBan::Address(b) => Subject::Address(b.src),
            SharedBan::Identity(b) => Subject::Identity(b.identity.clone()),
        }
    }

    /// The first instant at which it no longer applies.
    pub(crate) fn until(&self) -> DateTime<Utc> {
        match self {
            SharedBan::Address(b) => b.until,
            SharedBan::Identity(b) => b.until,
        }
    }

    /// When it started.
    pub(crate) fn since(&self) -> DateTime<Utc> {
        match self {
            SharedBan::Address(b) => b.since,
            SharedBan::Identity(b) => b.since,
        }
    }
}

/// Where local ban changes go in cluster mode.
pub(crate) trait BanSync: Send + Sync {
    /// A ban made here (rule or admin API), with its subject's offence times: publish it.
    fn banned(&self, ban: SharedBan, offences: Vec<DateTime<Utc>>);
    /// A ban lifted here (admin API, allowlist reload), the one that started at `since`:
    /// publish the unban. Its start, not the time of the unban, tells the other replicas
    /// which ban went: one made since (elsewhere, or in an outage) stays.
    fn unbanned(&self, who: Subject, since: DateTime<Utc>);
}

/// Which bans in the tables were made by another replica, and by which.
#[derive(Default)]
pub(super) struct Origins(Mutex<HashMap<Subject, Arc<str>>>);

impl Origins {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Subject, Arc<str>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The replica that made the ban of `who`, when it was not this one.
    pub(super) fn of(&self, who: &Subject) -> Option<Arc<str>> {
        self.lock().get(who).cloned()
    }

    pub(super) fn set(&self, who: Subject, origin: Option<Arc<str>>) {
        match origin {
            Some(o) => self.lock().insert(who, o),
            None => self.lock().remove(&who),
        };
    }

    pub(super) fn forget(&self, who: &Subject) -> Option<Arc<str>> {
        self.lock().remove(who)
    }

    fn subjects(&self) -> Vec<Subject> {
        self.lock().keys().cloned().collect()
    }
}

impl Bans {
    /// Puts a ban made by another replica in the table: `false` when it changes nothing
    /// (ended, the same ban, or a newer local ban of the same source), and for a rule ban the
    /// allowlist here overlaps (a rule never bans an allowlisted source, whatever another
    /// replica or the shared store says; an operator's forced ban is applied). Its start is
    /// recorded as an offence of its source (escalation counts it), not as a new one here.
    #[cfg(test)]
    pub(crate) fn apply_remote(&self, ban: Ban, now: DateTime<Utc>) -> bool {
        self.apply_remote_announced(ban, now, |_| {})
    }

    /// [`Bans::apply_remote`], `announce` called with the ban before the request path can
    /// see it (under the table's lock: its origin and `ban` line come first).
    pub(crate) fn apply_remote_announced(
        &self,
        ban: Ban,
        now: DateTime<Utc>,
        announce: impl FnOnce(&Ban),
    ) -> bool {
        if ban.until <= now {
            return false;
        }
        let ban = Ban {
            src: canonical_net(ban.src),
            ..ban
        };
        let mut inner = self.lock();
        if &*ban.rule != ADMIN_RULE && inner.allowlisted(&ban.src) {
            return false;
        }
        if let Some(old) = inner.bans.get(&ban.src) {
            if *old == ban || old.since > ban.since {
                return false;
            }
        }
        let times = inner.history(ban.src, now);
        times.push(ban.since);
        same_offences_once(times);
        announce(&ban);
        self.install(&mut inner, ban);
        true
    }

    /// Whether exactly `src` has a ban in the table (ended or not yet swept).
    pub(crate) fn holds(&self, src: &IpNet) -> bool {
        self.lock().bans.contains_key(&canonical_net(*src))
    }

    /// The offence times of `src` within the ban memory (published with its ban), the
    /// latest [`MAX_SHARED_OFFENCES`].
    pub(crate) fn offences_of(&self, src: &IpNet) -> Vec<DateTime<Utc>> {
        latest(self.lock().offences.get(src).map(Vec::as_slice))
    }

    /// Merges offence times learnt from the cluster into the history of `src`.
    /// Only this source's history is pruned to the ban memory: a resync merges every ban in
    /// Redis one after another, and pruning the whole table each time made it quadratic (a
    /// table of 50 000 shared bans held a replica's sync for minutes). The others are pruned
    /// by the expiry sweep.
    pub(crate) fn merge_offences(&self, src: IpNet, times: &[DateTime<Utc>], now: DateTime<Utc>) {
        let mut inner = self.lock();
        let memory = inner.memory();
        let src = canonical_net(src);
        let known = inner.history(src, now);
        known.extend_from_slice(times);
        same_offences_once(known);
        known.retain(|t| now - *t < memory);
        if known.is_empty() {
            inner.offences.remove(&src);
        }
    }
}

/// Offence times published with a ban at most: escalation reaches the longest ban within a
/// handful of offences, and a subject banned thousands of times in the ban memory (an operator's
/// script) must not make its entry too large for the other replicas to read (64 KiB).
pub(crate) const MAX_SHARED_OFFENCES: usize = 100;

/// The latest [`MAX_SHARED_OFFENCES`] of `times` (sorted, oldest first).
pub(super) fn latest(times: Option<&[DateTime<Utc>]>) -> Vec<DateTime<Utc>> {
    let times = times.unwrap_or_default();
    times[times.len().saturating_sub(MAX_SHARED_OFFENCES)..].to_vec()
}

/// Sorts offence times and keeps one per millisecond: a ban's `since` travels with
/// millisecond precision, its offence time with full precision, and they are one offence.
pub(super) fn same_offences_once(times: &mut Vec<DateTime<Utc>>) {
    times.sort_unstable();
    times.dedup_by(|a, b| a.timestamp_millis() == b.timestamp_millis());
}

impl Enforcement {
    /// Cluster mode: local ban changes are handed to `sync` from now on.
    pub(crate) fn set_sync(&self, sync: Arc<dyn BanSync>) {
        let _ = self.sync.set(sync);
    }

    /// Hands a local ban to the cluster. (Its subject's origin was forgotten when it was
    /// announced, under the table's lock.)
    pub(super) fn publish_ban(&self, ban: &Ban) {
        if let Some(sync) = self.sync.get() {
            sync.banned(
                SharedBan::Address(ban.clone()),
                self.bans.offences_of(&ban.src),
            );
        }
    }

    pub(super) fn publish_identity_ban(&self, ban: &IdentityBan) {
        if let Some(sync) = self.sync.get() {
            sync.banned(
                SharedBan::Identity(ban.clone()),
                self.identities.offences_of(&ban.identity),
            );
        }
    }

    pub(super) fn publish_unban(&self, who: Subject, since: DateTime<Utc>) {
        if let Some(sync) = self.sync.get() {
            sync.unbanned(who, since);
        }
    }

    /// Merges offence times learnt from the cluster into the history of `ban`'s subject.
    pub(crate) fn merge_offences(
        &self,
        ban: &SharedBan,
        times: &[DateTime<Utc>],
        now: DateTime<Utc>,
    ) {
        match ban {
            SharedBan::Address(b) => self.bans.merge_offences(b.src, times, now),
            SharedBan::Identity(b) => {
                let memory = self.bans.policy().memory;
                self.identities
                    .merge_offences(&b.identity, times, memory, now);
            }
        }
    }

    /// Applies a ban made by replica `origin` (from Redis): logged as a `ban` with
    /// `"origin"`, never published again. `false` when it changed nothing.
    pub(crate) fn apply_remote_ban(&self, ban: SharedBan, origin: &str) -> bool {
        let now = Utc::now();
        // A ban that starts more than the tolerated clock skew from now (a replica's clock far
        // ahead, or a forged entry) would last that much longer here than it was made for:
        // ignored, as such a tombstone is.
        if ban.since() > now + crate::cluster::CLOCK_SKEW {
            // At most one line a minute: such an entry left in Redis comes back at every resync.
            static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
            let minute = now.timestamp() / 60;
            if LAST.swap(minute, std::sync::atomic::Ordering::Relaxed) != minute {
                tracing::warn!(subject = ?ban.subject(), origin, since = %ban.since(), "cluster: a ban that starts more than an hour in the future was ignored (a replica's clock far ahead; more such bans this minute are ignored without a line)");
            }
            return false;
        }
        let origin: Arc<str> = Arc::from(origin);
        match ban {
            // The origin and the `ban` line are set under the table's lock, before the
            // request path sees the ban: a local ban racing it cannot end up with its origin,
            // and no `blocked` line comes before the `ban`.
            SharedBan::Address(ban) => {
                let applied = self.bans.apply_remote_announced(ban, now, |ban| {
                    self.origins
                        .set(Subject::Address(ban.src), Some(origin.clone()));
                    let mut event = super::service::ban_event(ban, false);
                    event.origin = Some(&origin);
                    self.log.write(now, &LogEvent::Ban(event));
                });
                if !applied {
                    return false;
                }
            }
            SharedBan::Identity(ban) => {
                let applied = self.identities.apply_remote_announced(ban, now, |ban| {
                    self.origins.set(
                        Subject::Identity(ban.identity.clone()),
                        Some(origin.clone()),
                    );
                    let mut event = super::service::identity_event(ban, false);
                    event.origin = Some(&origin);
                    self.log.write(now, &LogEvent::Ban(event));
                });
                if !applied {
                    return false;
                }
                self.identities_changed();
            }
        }
        self.changed();
        true
    }

    /// Lifts the ban of `who` because another replica lifted it: logged as an `unban`
    /// (`"ended": "admin"`). `false` when there was none.
    pub(crate) fn apply_remote_unban(&self, who: &Subject) -> bool {
        self.lift_remote(who, None)
    }

    /// [`Enforcement::apply_remote_unban`] of the ban that started by `upto`, or none.
    fn lift_remote(&self, who: &Subject, upto: Option<DateTime<Utc>>) -> bool {
        let now = Utc::now();
        match who {
            Subject::Address(src) => {
                let Some(ban) = self.bans.remove_started_by(src, upto, now) else {
                    return false;
                };
                self.log_unban(now, &ban, Ended::Admin);
            }
            Subject::Identity(name) => {
                let Some(mut ban) = self.identities.remove_started_by(name, upto) else {
                    return false;
                };
                ban.until = ban.until.min(now);
                self.identity_unban_write(now, &ban, Ended::Admin);
                self.identities_changed();
            }
        }
        self.changed();
        true
    }

    /// Lifts the ban of `who` because another replica lifted the one that started at `upto`
    /// (or before): a ban here that started later is another, and stays. `false` when none
    /// went. Decided under the table's lock: a ban made here between the check and the removal
    /// (an admin or rule ban racing the message) is not lifted.
    pub(crate) fn apply_remote_unban_upto(&self, who: &Subject, upto: DateTime<Utc>) -> bool {
        self.lift_remote(who, Some(upto))
    }

    /// The subjects whose ban in force here was made by another replica.
    pub(crate) fn remote_subjects(&self) -> Vec<Subject> {
        self.origins.subjects()
    }

    /// Whether `who` has a ban in this replica's tables.
    pub(crate) fn holds(&self, who: &Subject) -> bool {
        match who {
            Subject::Address(src) => self.bans.holds(src),
            Subject::Identity(name) => self.identities.holds(name),
        }
    }

    /// Every ban in force here, of addresses and identities, with its subject's offence
    /// history and the replica that made it (`None`: this one). What a resync writes back
    /// when Redis has lost its data.
    pub(crate) fn bans_in_force(&self, now: DateTime<Utc>) -> Vec<HeldBan> {
        let addresses = self
            .bans
            .list()
            .into_iter()
            .filter(|b| b.until > now)
            .map(|b| {
                let times = self.bans.offences_of(&b.src);
                let origin = self.origins.of(&Subject::Address(b.src));
                (SharedBan::Address(b), times, origin)
            });
        let identities = self
            .identities
            .list()
            .into_iter()
            .filter(|b| b.until > now)
            .map(|b| {
                let times = self.identities.offences_of(&b.identity);
                let origin = self.origins.of(&Subject::Identity(b.identity.clone()));
                (SharedBan::Identity(b), times, origin)
            });
        addresses.chain(identities).collect()
    }

    /// The `unban` event of `ban`, naming the replica that made it when it was another one.
    pub(super) fn unban_event_write(&self, now: DateTime<Utc>, ban: &Ban, ended: Ended) {
        let origin = self.origins.forget(&Subject::Address(ban.src));
        let mut event = super::service::ban_event(ban, false);
        event.origin = origin.as_deref();
        self.log
            .write(now, &LogEvent::Unban(UnbanEvent { ban: event, ended }));
    }

    /// The `unban` event of an identity ban, naming the replica that made it when it was
    /// another one.
    pub(super) fn identity_unban_write(&self, now: DateTime<Utc>, ban: &IdentityBan, ended: Ended) {
        let origin = self
            .origins
            .forget(&Subject::Identity(ban.identity.clone()));
        let mut event = super::service::identity_event(ban, false);
        event.origin = origin.as_deref();
        self.log
            .write(now, &LogEvent::Unban(UnbanEvent { ban: event, ended }));
    }
}
