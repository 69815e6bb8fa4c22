//! `[cluster]`: bans shared with other replicas. Local bans and unbans are handed to a
//! [`BanSync`] (the cluster task, which publishes them through Redis off the request path);
//! bans and unbans made by other replicas are applied here without being published again and
//! without counting as new offences of this replica (the ban's own offence is recorded in
//! the history, so escalation counts offences cluster-wide). In the detection log they carry
//! `"origin": "<instance_id>"` — for the `ban` when applied, and for its `unban`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use super::ban::canonical_net;
use super::{Ban, Bans, Enforcement};
use crate::telemetry::log_event::{Ended, LogEvent, UnbanEvent};

/// Where local ban changes go in cluster mode.
pub(crate) trait BanSync: Send + Sync {
    /// A ban made here (rule or admin API), with its source's offence times: publish it.
    fn banned(&self, ban: &Ban, offences: Vec<DateTime<Utc>>);
    /// A ban lifted here through the admin API: publish the unban.
    fn unbanned(&self, src: IpNet);
}

/// Which bans in the table were made by another replica, and by which.
#[derive(Default)]
pub(super) struct Origins(Mutex<HashMap<IpNet, Arc<str>>>);

impl Origins {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpNet, Arc<str>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The replica that made the ban of `src`, when it was not this one.
    pub(super) fn of(&self, src: &IpNet) -> Option<Arc<str>> {
        self.lock().get(src).cloned()
    }

    pub(super) fn set(&self, src: IpNet, origin: Option<Arc<str>>) {
        match origin {
            Some(o) => self.lock().insert(src, o),
            None => self.lock().remove(&src),
        };
    }

    pub(super) fn forget(&self, src: &IpNet) -> Option<Arc<str>> {
        self.lock().remove(src)
    }
}

impl Bans {
    /// Puts a ban made by another replica in the table: `false` when it changes nothing
    /// (ended, the same ban, or a newer local ban of the same source). Its start is recorded
    /// as an offence of its source (escalation counts it), not as a new one here.
    pub(crate) fn apply_remote(&self, ban: Ban, now: DateTime<Utc>) -> bool {
        if ban.until <= now {
            return false;
        }
        let ban = Ban {
            src: canonical_net(ban.src),
            ..ban
        };
        let mut inner = self.lock();
        if let Some(old) = inner.bans.get(&ban.src) {
            if *old == ban || old.since > ban.since {
                return false;
            }
        }
        let times = inner.offences.entry(ban.src).or_default();
        times.push(ban.since);
        same_offences_once(times);
        self.install(&mut inner, ban);
        true
    }

    /// The offence times of `src` within the ban memory (published with its ban).
    pub(crate) fn offences_of(&self, src: &IpNet) -> Vec<DateTime<Utc>> {
        self.lock().offences.get(src).cloned().unwrap_or_default()
    }

    /// Merges offence times learnt from the cluster into the history of `src`.
    pub(crate) fn merge_offences(&self, src: IpNet, times: &[DateTime<Utc>], now: DateTime<Utc>) {
        let mut inner = self.lock();
        let known = inner.offences.entry(canonical_net(src)).or_default();
        known.extend_from_slice(times);
        same_offences_once(known);
        inner.prune_offences(now);
    }
}

/// Sorts offence times and keeps one per millisecond: a ban's `since` travels with
/// millisecond precision, its offence time with full precision, and they are one offence.
fn same_offences_once(times: &mut Vec<DateTime<Utc>>) {
    times.sort_unstable();
    times.dedup_by(|a, b| a.timestamp_millis() == b.timestamp_millis());
}

impl Enforcement {
    /// Cluster mode: local ban changes are handed to `sync` from now on.
    pub(crate) fn set_sync(&self, sync: Arc<dyn BanSync>) {
        let _ = self.sync.set(sync);
    }

    pub(super) fn publish_ban(&self, ban: &Ban) {
        self.origins.forget(&ban.src);
        if let Some(sync) = self.sync.get() {
            sync.banned(ban, self.bans.offences_of(&ban.src));
        }
    }

    pub(super) fn publish_unban(&self, src: IpNet) {
        if let Some(sync) = self.sync.get() {
            sync.unbanned(src);
        }
    }

    /// Applies a ban made by replica `origin` (from Redis): logged as a `ban` with
    /// `"origin"`, never published again. `false` when it changed nothing.
    pub(crate) fn apply_remote_ban(&self, ban: Ban, origin: &str) -> bool {
        let now = Utc::now();
        if !self.bans.apply_remote(ban.clone(), now) {
            return false;
        }
        let origin: Arc<str> = Arc::from(origin);
        self.origins.set(ban.src, Some(origin.clone()));
        let mut event = super::service::ban_event(&ban, false);
        event.origin = Some(&origin);
        self.log.write(now, &LogEvent::Ban(event));
        self.changed();
        true
    }

    /// Lifts the ban of `src` because another replica lifted it: logged as an `unban`
    /// (`"ended": "admin"`). `false` when there was none.
    pub(crate) fn apply_remote_unban(&self, src: &IpNet) -> bool {
        let now = Utc::now();
        let Some(ban) = self.bans.remove(src, now) else {
            return false;
        };
        self.log_unban(now, &ban, Ended::Admin);
        self.changed();
        true
    }

    /// The bans in force made by this replica (what a resync publishes), with their
    /// offence histories.
    pub(crate) fn own_bans(&self, now: DateTime<Utc>) -> Vec<(Ban, Vec<DateTime<Utc>>)> {
        self.bans
            .list()
            .into_iter()
            .filter(|b| b.until > now && self.origins.of(&b.src).is_none())
            .map(|b| {
                let times = self.bans.offences_of(&b.src);
                (b, times)
            })
            .collect()
    }

    /// The `unban` event of `ban`, naming the replica that made it when it was another one.
    pub(super) fn unban_event_write(&self, now: DateTime<Utc>, ban: &Ban, ended: Ended) {
        let origin = self.origins.forget(&ban.src);
        let mut event = super::service::ban_event(ban, false);
        event.origin = origin.as_deref();
        self.log
            .write(now, &LogEvent::Unban(UnbanEvent { ban: event, ended }));
    }
}
