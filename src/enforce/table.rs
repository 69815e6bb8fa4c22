//! The ban table: who is banned, the offence history that drives escalation, and the
//! lifecycle operations (rule ban, admin ban, unban, expiry, hot reload).
//!
//! Writers (a handful per minute) take one `Mutex` and republish an immutable snapshot;
//! the hot path ([`Bans::check`]) reads the snapshot without locking. A `std` mutex is right
//! here, as in mini-redis' `db.rs`: critical sections are short, synchronous and never span
//! an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, TimeDelta, Utc};
use ipnet::IpNet;

use super::ban::{canonical_net, display_net, overlaps, Ban, BanHit, BanOutcome, ADMIN_RULE};
use super::blocked::BlockedLimiter;
use super::snapshot::Snapshot;
use super::EnforceError;
use crate::config::BanPolicy;
use crate::detect::source::canonical;
use crate::detect::SourceKey;

/// The ban table, shared behind an `Arc` by the proxy, the detection stage, the admin API
/// and the expiry timer. All methods take `&self`.
#[derive(Debug)]
pub struct Bans {
    pub(super) inner: Mutex<Inner>,
    snapshot: ArcSwap<Snapshot>,
    /// Number of bans in the table, read first by the hot path (one atomic load when empty).
    count: AtomicUsize,
    blocked: BlockedLimiter,
    /// Serialises [`Bans::save`] so the last write always holds the latest table.
    pub(super) save_lock: Mutex<()>,
}

/// The mutable state behind the lock.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) policy: BanPolicy,
    allowlist: Vec<IpNet>,
    ipv6_prefix: u8,
    /// Sorted by source, which is the order [`Bans::list`] promises.
    pub(super) bans: BTreeMap<IpNet, Entry>,
    /// When each source offended, pruned to the ban memory.
    pub(super) offences: HashMap<IpNet, Vec<DateTime<Utc>>>,
}

/// A ban and its precomputed hot-path answer.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) ban: Ban,
    hit: BanHit,
}

impl Entry {
    pub(super) fn new(ban: Ban) -> Entry {
        let hit = BanHit {
            src: ban.src,
            display: Arc::from(display_net(&ban.src)),
            rule: Arc::clone(&ban.rule),
            until: ban.until,
        };
        Entry { ban, hit }
    }
}

impl Bans {
    /// An empty table with the configured policy, allowlist and IPv6 grouping.
    pub fn new(policy: BanPolicy, allowlist: Vec<IpNet>, ipv6_prefix: u8) -> Bans {
        Bans {
            inner: Mutex::new(Inner {
                policy,
                allowlist: allowlist.into_iter().map(canonical_net).collect(),
                ipv6_prefix,
                bans: BTreeMap::new(),
                offences: HashMap::new(),
            }),
            snapshot: ArcSwap::from_pointee(Snapshot::empty(ipv6_prefix)),
            count: AtomicUsize::new(0),
            blocked: BlockedLimiter::default(),
            save_lock: Mutex::new(()),
        }
    }

    /// Hot reload of `[ban]`: applies to later bans; existing bans keep their end.
    pub fn set_policy(&self, policy: BanPolicy) {
        self.lock().policy = policy;
    }

    /// Hot reload of `allowlist`: applies to later bans; existing bans stay (lift them through
    /// the admin API if needed).
    pub fn set_allowlist(&self, allowlist: Vec<IpNet>) {
        self.lock().allowlist = allowlist.into_iter().map(canonical_net).collect();
    }

    /// Hot reload of `ipv6_prefix`: later rule bans use the new grouping; existing group bans
    /// keep their network and still match.
    pub fn set_ipv6_prefix(&self, ipv6_prefix: u8) {
        let mut inner = self.lock();
        inner.ipv6_prefix = ipv6_prefix;
        self.publish(&inner);
    }

    /// HOT PATH, once per proxied request: the active ban covering `ip`, if any. Lock-free;
    /// with no bans it is a single atomic load. A ban whose `until` is not after `now` no
    /// longer matches, even before [`Bans::expire`] sweeps it.
    pub fn check(&self, ip: IpAddr, now: DateTime<Utc>) -> Option<BanHit> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.snapshot.load().lookup(canonical(ip), now).cloned()
    }

    /// Acts on a rule's `block` verdict against the source `ip`. The ban covers the source
    /// group (IPv4 address, IPv6 /`ipv6_prefix`), narrowed to the single address when the
    /// group would cover an allowlisted address. Repeat offences within the ban memory
    /// escalate: `duration * increment^(offence-1)`, capped at `max`. A source already under
    /// an active ban is left alone: no new offence, no extension.
    pub fn ban_offender(
        &self,
        ip: IpAddr,
        rule: &str,
        reason: String,
        now: DateTime<Utc>,
    ) -> BanOutcome {
        let ip = canonical(ip);
        let mut inner = self.lock();
        let Some(key) = inner.offender_key(ip) else {
            return BanOutcome::Allowlisted;
        };
        if let Some(hit) = self.snapshot.load().lookup(ip, now) {
            if let Some(entry) = inner.bans.get(&hit.src) {
                return BanOutcome::AlreadyBanned(entry.ban.clone());
            }
        }
        let offence = inner.record_offence(key, now);
        let length = escalated(&inner.policy, offence);
        let ban = Ban {
            src: key,
            until: end_of(now, length).unwrap_or(DateTime::<Utc>::MAX_UTC),
            reason,
            offence,
            rule: Arc::from(rule),
            since: now,
        };
        self.install(&mut inner, ban.clone());
        BanOutcome::Banned(ban)
    }

    /// An operator's ban (admin API) of an address or network for exactly `duration`. It
    /// counts as an offence of `src` (the number is reported) and replaces any ban of the same
    /// `src`. A source overlapping the allowlist is refused unless `force`.
    pub fn add_manual(
        &self,
        src: IpNet,
        duration: Duration,
        reason: String,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<Ban, EnforceError> {
        if duration.is_zero() {
            return Err(EnforceError::ZeroDuration);
        }
        let until = end_of(now, duration).ok_or(EnforceError::DurationTooLong(duration))?;
        let src = canonical_net(src);
        let mut inner = self.lock();
        if !force && inner.allowlist.iter().any(|a| overlaps(a, &src)) {
            return Err(EnforceError::Allowlisted {
                src: display_net(&src),
            });
        }
        let offence = inner.record_offence(src, now);
        let ban = Ban {
            src,
            until,
            reason,
            offence,
            rule: Arc::from(ADMIN_RULE),
            since: now,
        };
        self.install(&mut inner, ban.clone());
        Ok(ban)
    }

    /// Lifts the ban of exactly `src` (as listed) for the admin API; `None` when there is
    /// none (404). The returned ban's `until` is when it actually ended (at most `now`), for
    /// the `unban` event. The offence history is kept: a re-offence still escalates.
    pub fn remove(&self, src: &IpNet, now: DateTime<Utc>) -> Option<Ban> {
        let src = canonical_net(*src);
        let mut inner = self.lock();
        let entry = inner.bans.remove(&src)?;
        self.blocked.forget(&src);
        self.publish(&inner);
        let mut ban = entry.ban;
        ban.until = ban.until.min(now);
        Some(ban)
    }

    /// Sweeps bans that have ended (`until <= now`) and returns them, sorted by source, for
    /// `unban` events; also forgets offences older than the ban memory and the `blocked`
    /// counters of bans that are gone.
    pub fn expire(&self, now: DateTime<Utc>) -> Vec<Ban> {
        let mut inner = self.lock();
        let ended: Vec<IpNet> = inner
            .bans
            .iter()
            .filter(|(_, e)| e.ban.until <= now)
            .map(|(src, _)| *src)
            .collect();
        let expired: Vec<Ban> = ended
            .iter()
            .filter_map(|src| inner.bans.remove(src))
            .map(|e| e.ban)
            .collect();
        inner.prune_offences(now);
        if !expired.is_empty() {
            self.publish(&inner);
        }
        self.blocked.retain(|src| inner.bans.contains_key(src));
        expired
    }

    /// When the next ban ends, so the expiry timer can sleep exactly until then.
    pub fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.snapshot.load().next_expiry()
    }

    /// All bans in the table (including any that ended but were not swept yet), sorted by
    /// source: `GET /api/bans`.
    pub fn list(&self) -> Vec<Ban> {
        self.lock().bans.values().map(|e| e.ban.clone()).collect()
    }

    /// Number of bans in the table (the `active_bans` gauge).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one refused request of `ip`; `Some(n)` when a `blocked` event should be logged
    /// (the first of its ban per minute), `n` being the blocked requests not logged since
    /// that ban's previous event. `None` also when `ip` is not banned.
    pub fn note_blocked(&self, ip: IpAddr, now: DateTime<Utc>) -> Option<u64> {
        let hit = self.check(ip, now)?;
        self.blocked.note(hit.src, now)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `ban` in the table (replacing one of the same source) and publishes.
    pub(super) fn install(&self, inner: &mut Inner, ban: Ban) {
        let src = ban.src;
        inner.bans.insert(src, Entry::new(ban));
        self.blocked.forget(&src);
        self.publish(inner);
    }

    /// Rebuilds the hot-path snapshot from the table. Called with the lock held, so
    /// generations are published in order.
    pub(super) fn publish(&self, inner: &Inner) {
        let snap = Snapshot::build(inner.bans.values().map(|e| &e.hit), inner.ipv6_prefix);
        self.snapshot.store(Arc::new(snap));
        self.count.store(inner.bans.len(), Ordering::Release);
    }

    #[cfg(test)]
    pub(super) fn blocked_counters(&self) -> usize {
        self.blocked.len()
    }
}

impl Inner {
    /// The network a rule ban of `ip` (canonical) covers, or `None` when `ip` is allowlisted.
    fn offender_key(&self, ip: IpAddr) -> Option<IpNet> {
        if self.allowlist.iter().any(|a| a.contains(&ip)) {
            return None;
        }
        let group = SourceKey::new(ip, self.ipv6_prefix).network();
        if self.allowlist.iter().any(|a| overlaps(a, &group)) {
            return Some(IpNet::from(ip));
        }
        Some(group)
    }

    /// Records an offence of `src` at `now`; returns its number within the ban memory.
    fn record_offence(&mut self, src: IpNet, now: DateTime<Utc>) -> u32 {
        let memory = self.memory();
        let times = self.offences.entry(src).or_default();
        times.retain(|t| now - *t < memory);
        times.push(now);
        u32::try_from(times.len()).unwrap_or(u32::MAX)
    }

    /// Forgets offences older than the ban memory.
    pub(super) fn prune_offences(&mut self, now: DateTime<Utc>) {
        let memory = self.memory();
        self.offences.retain(|_, times| {
            times.retain(|t| now - *t < memory);
            !times.is_empty()
        });
    }

    fn memory(&self) -> TimeDelta {
        TimeDelta::from_std(self.policy.memory).unwrap_or(TimeDelta::MAX)
    }
}

/// Length of ban number `offence`: `duration * increment^(offence-1)`, capped at `max`.
fn escalated(policy: &BanPolicy, offence: u32) -> Duration {
    let exponent = i32::try_from(offence.saturating_sub(1)).unwrap_or(i32::MAX);
    let secs = policy.duration.as_secs_f64() * policy.increment.powi(exponent);
    Duration::try_from_secs_f64(secs).map_or(policy.max, |d| d.min(policy.max))
}

/// `now + length`, or `None` past the representable calendar.
fn end_of(now: DateTime<Utc>, length: Duration) -> Option<DateTime<Utc>> {
    TimeDelta::from_std(length)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
}
