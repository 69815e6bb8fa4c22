//! Bans of identities (API key names, `[auth]`): the key's access is revoked for the ban's
//! duration, whatever address it comes from, while the address stays free for everyone else
//! behind it. Made by rules that count per identity (`group_by = "identity"` /
//! `"identity_path"`) and through the admin API (`"src": "identity:NAME"`).
//!
//! Identities are bounded by the key file, so the table is small: a map behind an `ArcSwap`
//! (the hot path reads it without a lock, one atomic load when empty), whole-table writes
//! under a mutex, and persistence as one small JSON file (`identity-bans.json` in
//! `state_dir`) rewritten atomically on every change.
//!
//! With `[cluster]` the table is shared like the address table, through the same seam
//! (`remote`: [`SharedBan`](super::SharedBan)): local changes are published, other replicas'
//! bans are applied here ([`IdentityBans::apply_remote`]) and their offences merged, so
//! escalation counts an identity's offences cluster-wide; the hot path still reads only this
//! table.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ban::{ADMIN_RULE, MAX_UNTIL};
use super::table::{end_of, escalated};
use crate::config::BanPolicy;

/// The text that names an identity where an address could stand (`bans add identity:NAME`,
/// `DELETE /api/bans/identity:NAME`).
pub(crate) const PREFIX: &str = "identity:";

/// The file identity bans persist in, inside `state_dir`.
pub(crate) const FILE: &str = "identity-bans.json";

/// One identity ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdentityBan {
    /// The key's name.
    pub(crate) identity: Arc<str>,
    /// The first instant at which the ban no longer applies.
    pub(crate) until: DateTime<Utc>,
    /// Why, in words.
    pub(crate) reason: String,
    /// Which offence of this identity within the ban memory (1, 2, ...).
    pub(crate) offence: u32,
    /// The rule that banned, or `admin`.
    pub(crate) rule: Arc<str>,
    /// When it started.
    pub(crate) since: DateTime<Utc>,
}

/// The table as written to `state_dir` (a copy, so writing holds no lock).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Stored {
    bans: Vec<IdentityBan>,
    /// Offence times per identity, for escalation across restarts.
    offences: HashMap<String, Vec<DateTime<Utc>>>,
}

/// The identity ban table.
#[derive(Debug, Default)]
pub(crate) struct IdentityBans {
    active: ArcSwap<HashMap<Arc<str>, IdentityBan>>,
    count: AtomicUsize,
    offences: Mutex<HashMap<Arc<str>, Vec<DateTime<Utc>>>>,
}

/// What a rule ban of an identity did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdentityOutcome {
    /// A new ban started.
    Banned(IdentityBan),
    /// Already banned: nothing changed.
    AlreadyBanned(IdentityBan),
}

impl Stored {
    /// Writes it to `dir/identity-bans.json` atomically (temp file, `fsync`, rename, `fsync`
    /// of the directory).
    pub(crate) fn save(&self, dir: &Path) -> io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        bytes.push(b'\n');
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
        super::persist::write_synced(&tmp, &bytes)?;
        std::fs::rename(&tmp, dir.join(FILE))?;
        super::sync_dir(dir)
    }
}

impl IdentityBans {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<DateTime<Utc>>>> {
        self.offences.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// HOT PATH: the ban of `identity` in force at `now`, if any.
    pub(crate) fn check(&self, identity: &str, now: DateTime<Utc>) -> Option<IdentityBan> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.active
            .load()
            .get(identity)
            .filter(|b| b.until > now)
            .cloned()
    }

    /// Bans in force, sorted by identity.
    pub(crate) fn list(&self) -> Vec<IdentityBan> {
        let mut v: Vec<IdentityBan> = self.active.load().values().cloned().collect();
        v.sort_by(|a, b| a.identity.cmp(&b.identity));
        v
    }

    /// Bans in force.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn publish(&self, map: HashMap<Arc<str>, IdentityBan>) {
        let n = map.len();
        self.active.store(Arc::new(map));
        self.count.store(n, Ordering::Release);
    }

    /// A rule bans `identity`: escalates with its offences within `policy.memory`. `announce`
    /// runs before the ban is visible (cause before effect in the log).
    pub(crate) fn ban_offender(
        &self,
        identity: &str,
        rule: &str,
        reason: String,
        policy: &BanPolicy,
        now: DateTime<Utc>,
        announce: impl FnOnce(&IdentityBan),
    ) -> IdentityOutcome {
        let mut offences = self.lock();
        if let Some(b) = self.check(identity, now) {
            return IdentityOutcome::AlreadyBanned(b);
        }
        let memory = chrono::TimeDelta::from_std(policy.memory).unwrap_or(chrono::TimeDelta::MAX);
        let name: Arc<str> = Arc::from(identity);
        let times = offences.entry(name.clone()).or_default();
        times.retain(|t| now.signed_duration_since(*t) < memory);
        times.push(now);
        let offence = u32::try_from(times.len()).unwrap_or(u32::MAX);
        let ban = IdentityBan {
            identity: name.clone(),
            until: end_of(now, escalated(policy, offence)),
            reason,
            offence,
            rule: Arc::from(rule),
            since: now,
        };
        announce(&ban);
        let mut map = (**self.active.load()).clone();
        map.insert(name, ban.clone());
        self.publish(map);
        IdentityOutcome::Banned(ban)
    }

    /// The admin API bans `identity` for `length` (replacing a ban in force).
    pub(crate) fn add_manual(
        &self,
        identity: &str,
        length: std::time::Duration,
        reason: String,
        now: DateTime<Utc>,
        announce: impl FnOnce(&IdentityBan),
    ) -> IdentityBan {
        let mut offences = self.lock();
        let name: Arc<str> = Arc::from(identity);
        let times = offences.entry(name.clone()).or_default();
        times.push(now);
        let ban = IdentityBan {
            identity: name.clone(),
            until: end_of(now, length).min(MAX_UNTIL),
            reason,
            offence: u32::try_from(times.len()).unwrap_or(u32::MAX),
            rule: Arc::from(ADMIN_RULE),
            since: now,
        };
        // Before the request path can see it: its `ban` line comes before any `blocked` one.
        announce(&ban);
        let mut map = (**self.active.load()).clone();
        map.insert(name, ban.clone());
        self.publish(map);
        ban
    }

    /// Lifts the ban of `identity` (`None`: there was none).
    pub(crate) fn remove(&self, identity: &str) -> Option<IdentityBan> {
        self.remove_started_by(identity, None)
    }

    /// Lifts the ban of `identity` if it started by `upto` (ms precision; `None`: whenever),
    /// decided under the table's lock: a ban made since (a newer one) stays.
    pub(crate) fn remove_started_by(
        &self,
        identity: &str,
        upto: Option<DateTime<Utc>>,
    ) -> Option<IdentityBan> {
        let _offences = self.lock();
        let active = self.active.load();
        let ban = active.get(identity)?;
        if upto.is_some_and(|upto| ban.since.timestamp_millis() > upto.timestamp_millis()) {
            return None;
        }
        let mut map = (**active).clone();
        let gone = map.remove(identity)?;
        self.publish(map);
        Some(gone)
    }

    /// Lifts the bans that ended by `now` and returns them.
    pub(crate) fn expire(&self, now: DateTime<Utc>) -> Vec<IdentityBan> {
        if self.len() == 0 {
            return Vec::new();
        }
        let _offences = self.lock();
        let mut map = (**self.active.load()).clone();
        let mut ended: Vec<IdentityBan> = Vec::new();
        map.retain(|_, b| {
            if b.until <= now {
                ended.push(b.clone());
                false
            } else {
                true
            }
        });
        if !ended.is_empty() {
            self.publish(map);
        }
        ended.sort_by(|a, b| a.identity.cmp(&b.identity));
        ended
    }

    /// `[cluster]`: puts a ban made by another replica in the table: `false` when it changes
    /// nothing (ended, the same ban, or a newer ban of the same identity here). Its start is
    /// recorded as an offence of the identity (escalation counts it), not as a new one here.
    #[cfg(test)]
    pub(crate) fn apply_remote(&self, ban: IdentityBan, now: DateTime<Utc>) -> bool {
        self.apply_remote_announced(ban, now, |_| {})
    }

    /// [`IdentityBans::apply_remote`], `announce` called with the ban before the request path
    /// can see it (under the table's lock).
    pub(crate) fn apply_remote_announced(
        &self,
        ban: IdentityBan,
        now: DateTime<Utc>,
        announce: impl FnOnce(&IdentityBan),
    ) -> bool {
        if ban.until <= now {
            return false;
        }
        let mut offences = self.lock();
        if let Some(old) = self.active.load().get(&ban.identity) {
            if *old == ban || old.since > ban.since {
                return false;
            }
        }
        let times = offences.entry(ban.identity.clone()).or_default();
        times.push(ban.since);
        super::remote::same_offences_once(times);
        announce(&ban);
        let mut map = (**self.active.load()).clone();
        map.insert(ban.identity.clone(), ban);
        self.publish(map);
        true
    }

    /// `[cluster]`: the offence times of `identity` (published with its ban), the latest
    /// [`super::remote::MAX_SHARED_OFFENCES`].
    pub(crate) fn offences_of(&self, identity: &str) -> Vec<DateTime<Utc>> {
        super::remote::latest(self.lock().get(identity).map(Vec::as_slice))
    }

    /// `[cluster]`: merges offence times learnt from the cluster into the history of
    /// `identity`, forgetting those older than `memory`.
    pub(crate) fn merge_offences(
        &self,
        identity: &str,
        times: &[DateTime<Utc>],
        memory: std::time::Duration,
        now: DateTime<Utc>,
    ) {
        let memory = chrono::TimeDelta::from_std(memory).unwrap_or(chrono::TimeDelta::MAX);
        let mut offences = self.lock();
        let known = offences.entry(Arc::from(identity)).or_default();
        known.extend_from_slice(times);
        super::remote::same_offences_once(known);
        known.retain(|t| now.signed_duration_since(*t) < memory);
        if known.is_empty() {
            offences.remove(identity);
        }
    }

    /// Whether `identity` has a ban in the table (ended or not yet swept).
    pub(crate) fn holds(&self, identity: &str) -> bool {
        self.active.load().contains_key(identity)
    }

    /// The earliest end of a ban in force.
    pub(crate) fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.active.load().values().map(|b| b.until).min()
    }

    /// A copy of the table for [`Stored::save`].
    pub(crate) fn snapshot(&self) -> Stored {
        let offences = self.lock();
        Stored {
            bans: self.list(),
            offences: offences
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// Writes the table to `dir/identity-bans.json` (atomically).
    #[cfg(test)]
    pub(crate) fn save(&self, dir: &Path) -> io::Result<()> {
        self.snapshot().save(dir)
    }

    /// Restores the table from `dir/identity-bans.json` (missing: nothing), dropping bans that
    /// ended by `now`; returns the bans restored. An unreadable file is reported and ignored.
    pub(crate) fn load(&self, dir: &Path, now: DateTime<Utc>) -> Vec<IdentityBan> {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read the identity bans; starting without them");
                return Vec::new();
            }
        };
        let stored: Stored = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "identity bans unreadable; starting without them");
                return Vec::new();
            }
        };
        let mut offences = self.lock();
        *offences = stored
            .offences
            .into_iter()
            .map(|(k, v)| (Arc::from(k), v))
            .collect();
        let map: HashMap<Arc<str>, IdentityBan> = stored
            .bans
            .into_iter()
            .filter(|b| b.until > now)
            .map(|b| (b.identity.clone(), b))
            .collect();
        let mut restored: Vec<IdentityBan> = map.values().cloned().collect();
        restored.sort_by(|a, b| a.identity.cmp(&b.identity));
        self.publish(map);
        restored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> BanPolicy {
        BanPolicy {
            duration: Duration::from_secs(600),
            increment: 2.0,
            max: Duration::from_secs(3600),
            memory: Duration::from_secs(86_400),
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn rule_bans_escalate_per_identity_and_expire() {
        let bans = IdentityBans::default();
        let now = t("2026-11-29T12:00:00Z");
        assert_eq!(bans.check("alice", now), None);
        let mut announced = Vec::new();
        let IdentityOutcome::Banned(b) =
            bans.ban_offender("alice", "r", "why".into(), &policy(), now, |b| {
                announced.push(b.identity.to_string())
            })
        else {
            panic!("not banned")
        };
        assert_eq!(announced, ["alice"]);
        assert_eq!(b.until, t("2026-11-29T12:10:00Z"));
        assert_eq!(b.offence, 1);
        assert!(bans.check("alice", now).is_some());
        assert_eq!(bans.check("bob", now), None);
        assert!(matches!(
            bans.ban_offender("alice", "r", "again".into(), &policy(), now, |_| {}),
            IdentityOutcome::AlreadyBanned(_)
        ));
        let ended = bans.expire(t("2026-11-29T12:10:00Z"));
        assert_eq!(ended.len(), 1);
        assert_eq!(bans.check("alice", t("2026-11-29T12:10:00Z")), None);
        let later = t("2026-11-29T13:00:00Z");
        let IdentityOutcome::Banned(b) =
            bans.ban_offender("alice", "r", "why".into(), &policy(), later, |_| {})
        else {
            panic!("not banned")
        };
        assert_eq!(b.offence, 2);
        assert_eq!(
            b.until,
            t("2026-11-29T13:20:00Z"),
            "second offence: doubled"
        );
    }

    #[test]
    fn remote_bans_apply_once_keep_the_newer_and_count_as_offences() {
        let bans = IdentityBans::default();
        let now = t("2026-11-29T12:00:00Z");
        let remote = IdentityBan {
            identity: Arc::from("alice"),
            until: t("2026-11-29T12:10:00Z"),
            reason: "r".into(),
            offence: 1,
            rule: Arc::from("per_key"),
            since: t("2026-11-29T11:59:59.500Z"),
        };
        assert!(bans.apply_remote(remote.clone(), now));
        assert!(
            !bans.apply_remote(remote.clone(), now),
            "the same ban again"
        );
        assert_eq!(bans.check("alice", now), Some(remote.clone()));
        assert!(bans.holds("alice"));
        assert_eq!(bans.offences_of("alice"), [remote.since]);
        // An older ban of the same identity does not replace a newer one.
        let older = IdentityBan {
            since: t("2026-11-29T11:00:00Z"),
            until: t("2026-11-29T13:00:00Z"),
            ..remote.clone()
        };
        assert!(!bans.apply_remote(older, now));
        // An ended one changes nothing.
        let ended = IdentityBan {
            identity: Arc::from("bob"),
            until: now,
            ..remote.clone()
        };
        assert!(!bans.apply_remote(ended, now));
        assert!(!bans.holds("bob"));
        // Merged offences: the same millisecond once, older than the memory forgotten.
        bans.merge_offences(
            "alice",
            &[t("2026-11-29T11:59:59.500Z"), t("2026-11-20T12:00:00Z")],
            Duration::from_secs(86_400),
            now,
        );
        assert_eq!(bans.offences_of("alice"), [remote.since]);
        assert_eq!(bans.remove("alice"), Some(remote));
        // The next rule ban of alice is her second offence, cluster-wide.
        let IdentityOutcome::Banned(b) =
            bans.ban_offender("alice", "r", "x".into(), &policy(), now, |_| {})
        else {
            panic!("not banned")
        };
        assert_eq!(b.offence, 2);
    }

    /// A remote unban lifts the ban it names (or an older one), never a newer one.
    #[test]
    fn a_removal_up_to_a_start_keeps_a_newer_identity_ban() {
        let now = t("2026-11-29T12:00:00Z");
        let bans = IdentityBans::default();
        let ban = bans.add_manual("ci", Duration::from_secs(3600), "x".into(), now, |_| {});
        let before = now - chrono::TimeDelta::milliseconds(1);
        assert_eq!(bans.remove_started_by("ci", Some(before)), None);
        assert!(bans.check("ci", now).is_some());
        assert_eq!(bans.remove_started_by("ci", Some(now)), Some(ban));
        assert_eq!(bans.check("ci", now), None);
    }

    /// An operator's identity ban is announced before the request path can see it.
    #[test]
    fn an_admin_identity_ban_is_announced_before_a_request_can_see_it() {
        let now = t("2026-11-29T12:00:00Z");
        let bans = IdentityBans::default();
        let mut seen = None;
        let ban = bans.add_manual("ci", Duration::from_secs(3600), "x".into(), now, |b| {
            seen = Some((b.identity.to_string(), bans.check("ci", now).is_some()));
        });
        assert_eq!(seen, Some(("ci".to_owned(), false)));
        assert_eq!(bans.check("ci", now), Some(ban));
    }

    #[test]
    fn bans_survive_a_restart_through_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let now = t("2026-11-29T12:00:00Z");
        let bans = IdentityBans::default();
        bans.add_manual(
            "ci",
            Duration::from_secs(3600),
            "leaked".into(),
            now,
            |_| {},
        );
        bans.ban_offender("app", "r", "x".into(), &policy(), now, |_| {});
        bans.save(dir.path()).unwrap();
        let again = IdentityBans::default();
        let restored = again.load(dir.path(), t("2026-11-29T12:30:00Z"));
        let names: Vec<&str> = restored.iter().map(|b| &*b.identity).collect();
        assert_eq!(names, ["ci"], "app's 10-minute ban ended while stopped");
        assert_eq!(&*restored[0].rule, "admin");
        // The offence history survives too: app's next ban is its second.
        let IdentityOutcome::Banned(b) = again.ban_offender(
            "app",
            "r",
            "x".into(),
            &policy(),
            t("2026-11-29T12:30:00Z"),
            |_| {},
        ) else {
            panic!("not banned")
        };
        assert_eq!(b.offence, 2);
        assert_eq!(again.remove("ci").map(|b| b.reason), Some("leaked".into()));
        assert_eq!(again.remove("ci"), None);
    }
}
