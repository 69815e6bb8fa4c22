//! The ban table: who is banned, the offence history that drives escalation, and the
//! lifecycle operations (rule ban, admin ban, unban, expiry, hot reload).
//!
//! Writers take one `Mutex` and publish an immutable snapshot (copy-on-write of the one
//! shard a change touches, see `snapshot`); the hot path ([`Bans::check`]) reads it without
//! locking. A `std` mutex is right here, as in mini-redis' `db.rs`: critical sections are
//! short (no work proportional to the table on a single-ban change), synchronous and never
//! span an `.await`.
//!
//! The table is capped at [`MAX_BANS`] so a source rotating addresses cannot grow it (and
//! the cost of keeping it) without bound; see [`Bans::ban_offender`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, TimeDelta, Utc};
use ipnet::IpNet;

use super::ban::{
    canonical_net, display_net, overlaps, Ban, BanHit, BanOutcome, ADMIN_RULE, MAX_UNTIL,
};
use super::blocked::BlockedLimiter;
use super::cap::{MAX_BANS, MAX_OFFENDERS};
use super::journal::{Change, ChangeLog};
use super::snapshot::{Index, Snapshot};
use super::EnforceError;
use crate::config::BanPolicy;
use crate::detect::SourceKey;
use crate::ip::canonical;

/// The ban table, shared behind an `Arc` by the proxy, the detection stage, the admin API
/// and the expiry timer. All methods take `&self`.
#[derive(Debug)]
pub(crate) struct Bans {
    pub(super) inner: Mutex<Inner>,
    snapshot: ArcSwap<Snapshot>,
    /// Number of bans in the table, read first by the hot path (one atomic load when empty).
    count: AtomicUsize,
    blocked: BlockedLimiter,
    /// The source groups whose rule ban was narrowed to one address because the group holds an
    /// allowlisted one, read by the hot path like `snapshot` (see [`Bans::check_narrowed`]).
    narrowed: ArcSwap<Narrowed>,
    /// The `manage_from` networks narrower than a source group, read by [`Bans::check`] on a
    /// hit only (see [`Bans::set_spared`]).
    spared: ArcSwap<Spared>,
    /// Serialises [`Bans::save`] (the whole-table snapshot the tests write) so the last
    /// write always holds the latest table.
    #[cfg(test)]
    pub(super) save_lock: Mutex<()>,
}

/// Source groups under a narrowed ban: each group's offender, rule and end, and the
/// allowlisted networks inside it (never refused).
#[derive(Debug, Default)]
pub(crate) struct Narrowed {
    ipv6_prefix: u8,
    groups: HashMap<IpNet, NarrowedGroup>,
}

#[derive(Debug, Clone)]
struct NarrowedGroup {
    /// The narrowed ban's source (the offending address) and rule.
    offender: IpNet,
    rule: Arc<str>,
    /// When the narrowed ban ends.
    until: DateTime<Utc>,
    allowlisted: Vec<IpNet>,
}

/// The `manage_from` networks ([`Bans::set_spared`]) and the trusted proxies
/// ([`Bans::set_trusted_proxies`]).
#[derive(Debug, Default)]
struct Spared {
    /// All of them, as configured (canonical).
    all: Vec<IpNet>,
    /// Those narrower than a source group (an IPv6 one longer than `ipv6_prefix`; no IPv4
    /// one, an IPv4 source being one address): only those spare their addresses. A network
    /// as wide as a group, or wider, holds whole groups, whose offences are their own: were
    /// it spared, a ban widened past it (a full table bans a /48) would exempt the offender.
    narrow: Vec<IpNet>,
    /// The trusted proxies (canonical): a rule's ban never refuses an address in one.
    trusted: Vec<IpNet>,
}

impl Spared {
    fn new(all: Vec<IpNet>, ipv6_prefix: u8, trusted: Vec<IpNet>) -> Spared {
        let narrow = (all.iter())
            .filter(|n| matches!(n, IpNet::V6(v6) if v6.prefix_len() > ipv6_prefix))
            .copied()
            .collect();
        Spared {
            all,
            narrow,
            trusted,
        }
    }

    /// Whether a rule's ban of `banned` spares `ip` (canonical), an address inside it.
    fn spares(&self, ip: IpAddr, banned: &IpNet) -> bool {
        self.trusted.iter().any(|t| t.contains(&ip))
            || (self.narrow.iter()).any(|s| s.contains(&ip) && s.prefix_len() > banned.prefix_len())
    }
}

/// The mutable state behind the lock.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) policy: BanPolicy,
    allowlist: Vec<IpNet>,
    ipv6_prefix: u8,
    /// The cap on rule bans ([`MAX_BANS`]; lowered by tests).
    pub(super) max_bans: usize,
    /// The cap on offence histories ([`MAX_OFFENDERS`]; lowered by tests).
    pub(super) max_offenders: usize,
    /// How many histories trigger the next trim: the cap, or more while the histories of
    /// banned sources alone fill it.
    pub(super) offences_limit: usize,
    /// Sorted by source, which is the order [`Bans::list`] promises.
    pub(super) bans: BTreeMap<IpNet, Ban>,
    /// The same bans indexed for the hot path and the expiry sweep.
    index: Index,
    /// When each source offended, pruned to the ban memory.
    pub(super) offences: HashMap<IpNet, Vec<DateTime<Utc>>>,
    /// Changes not yet taken by the journal writer, queued in the order they were applied.
    pub(super) changes: ChangeLog,
    /// When an operator (here or on another replica) last lifted the ban of each source, for
    /// [`Bans::may_ban_again`]; at most [`MAX_PARDONS`], none older than a day.
    pardons: HashMap<IpNet, DateTime<Utc>>,
}

/// The most lifted bans remembered for [`Bans::may_ban_again`].
const MAX_PARDONS: usize = 1024;

impl Bans {
    /// An empty table with the configured policy, allowlist and IPv6 grouping.
    pub(crate) fn new(policy: BanPolicy, allowlist: Vec<IpNet>, ipv6_prefix: u8) -> Bans {
        Bans {
            inner: Mutex::new(Inner {
                policy,
                allowlist: allowlist.into_iter().map(canonical_net).collect(),
                ipv6_prefix,
                max_bans: MAX_BANS,
                max_offenders: MAX_OFFENDERS,
                offences_limit: MAX_OFFENDERS,
                bans: BTreeMap::new(),
                index: Index::default(),
                offences: HashMap::new(),
                changes: ChangeLog::default(),
                pardons: HashMap::new(),
            }),
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            count: AtomicUsize::new(0),
            blocked: BlockedLimiter::default(),
            narrowed: ArcSwap::from_pointee(Narrowed::default()),
            spared: ArcSwap::from_pointee(Spared::default()),
            #[cfg(test)]
            save_lock: Mutex::new(()),
        }
    }

    /// The ban policy in force (identity bans escalate by it too).
    pub(crate) fn policy(&self) -> BanPolicy {
        self.lock().policy.clone()
    }

    /// Hot reload of `[ban]`: applies to later bans; existing bans keep their end.
    pub(crate) fn set_policy(&self, policy: BanPolicy) {
        self.lock().policy = policy;
    }

    /// Hot reload of `allowlist`. Allowlisted sources are never banned by a rule, so
    /// rule bans the new allowlist overlaps are lifted now and returned, sorted by source,
    /// for `unban` events (their `until` is still the scheduled end; the event's time is the
    /// reload). Admin bans stay: they overlap the allowlist only because they were forced.
    /// The offence history is kept.
    pub(crate) fn set_allowlist(&self, allowlist: Vec<IpNet>) -> Vec<Ban> {
        let mut inner = self.lock();
        inner.allowlist = allowlist.into_iter().map(canonical_net).collect();
        self.narrowed.store(Arc::new(Narrowed::default()));
        let lifted: Vec<Ban> = inner
            .rule_bans_allowlisted()
            .iter()
            .filter_map(|src| inner.take(src))
            .collect();
        if !lifted.is_empty() {
            let now = Utc::now();
            for ban in &lifted {
                self.blocked.forget(&ban.src);
                inner.changes.push(Change::Unban {
                    src: ban.src,
                    at: now,
                });
            }
            self.publish(&inner);
        }
        lifted
    }

    /// The `manage_from` networks (start and reload): a rule's ban of a wider network never
    /// refuses an address in one of them ([`Bans::check`]). A group's count is shared, so
    /// whose request crossed its threshold says nothing about who sent the rest: a neighbour's
    /// ordinary pull refused by `manage_from` (with `[policy] ban = true`), or a neighbour's
    /// flood that the admin's next request tips over, must not lock the management hosts out.
    /// A ban of the address itself (or of a network inside the `manage_from` one) still
    /// applies, as do admin bans; a `manage_from` network as wide as the group spares nothing.
    /// Applies to every ban in force, made before or after, here or on another replica.
    pub(crate) fn set_spared(&self, spared: Vec<IpNet>) {
        let inner = self.lock();
        let trusted = self.spared.load().trusted.clone();
        self.spared.store(Arc::new(Spared::new(
            spared.into_iter().map(canonical_net).collect(),
            inner.ipv6_prefix,
            trusted,
        )));
    }

    /// The trusted proxies (start and reload): a rule's ban never refuses an address in one,
    /// as a rule never bans one. A source group (an IPv6 /`ipv6_prefix`) holding a proxy may
    /// be banned for a neighbour's offence, or by another replica; the proxy's own requests,
    /// and those of clients it forwards without a readable address (counted under its
    /// address), must not then be refused, or one neighbour locks out everyone behind it.
    /// Admin bans still apply.
    pub(crate) fn set_trusted_proxies(&self, trusted: Vec<IpNet>) {
        let inner = self.lock();
        let all = self.spared.load().all.clone();
        self.spared.store(Arc::new(Spared::new(
            all,
            inner.ipv6_prefix,
            trusted.into_iter().map(canonical_net).collect(),
        )));
    }

    /// Hot reload of `ipv6_prefix`: later rule bans use the new grouping; existing group bans
    /// keep their network and still match.
    pub(crate) fn set_ipv6_prefix(&self, ipv6_prefix: u8) {
        let mut inner = self.lock();
        inner.ipv6_prefix = ipv6_prefix;
        let old = self.spared.load();
        let spared = Spared::new(old.all.clone(), ipv6_prefix, old.trusted.clone());
        self.spared.store(Arc::new(spared));
    }

    /// Whether the allowlist covers `ip`: a rule never bans it.
    pub(crate) fn allowlists(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.lock().allowlists(ip)
    }

    /// HOT PATH, once per proxied request: the active ban covering `ip`, if any. Lock-free;
    /// with no bans it is a single atomic load. A ban whose `until` is not after `now` no
    /// longer matches, even before [`Bans::expire`] sweeps it.
    pub(crate) fn check(&self, ip: IpAddr, now: DateTime<Utc>) -> Option<BanHit> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let ip = canonical(ip);
        let hit = self.snapshot.load().lookup(ip, now).cloned()?;
        // Only on a hit: a rule's ban of a network wider than a `manage_from` one holding `ip`
        // that is itself narrower than a source group; a rule's ban of a group holding a
        // trusted proxy (a neighbour in its IPv6 /64 offended, or another replica banned it).
        let spared = &*hit.rule != ADMIN_RULE && self.spared.load().spares(ip, &hit.src);
        (!spared).then_some(hit)
    }

    /// Acts on a rule's `block` verdict against the source `ip`. The ban covers the source
    /// group (IPv4 address, IPv6 /`ipv6_prefix`), narrowed to the single address when the
    /// group would cover an allowlisted address. Repeat offences within the ban memory
    /// escalate: `duration * increment^(offence-1)`, capped at `max`; the end is clamped to
    /// [`MAX_UNTIL`]. A source already under an active ban is left alone: no new offence, no
    /// extension.
    ///
    /// When the table holds [`MAX_BANS`] bans, an IPv6 source is banned with its /48 instead
    /// (one ban for a whole rotating allocation; the reason says so), unless that /48
    /// overlaps the allowlist or the widened bans have used up their headroom (a tenth of the
    /// cap); otherwise, and for IPv4, the answer is [`BanOutcome::TableFull`].
    #[cfg(test)]
    pub(crate) fn ban_offender(
        &self,
        ip: IpAddr,
        rule: &str,
        reason: String,
        now: DateTime<Utc>,
    ) -> BanOutcome {
        self.ban_offender_announced(ip, rule, reason, now, |_| {})
    }

    /// [`Bans::ban_offender`], calling `announce` with a new ban before it is published to
    /// the hot path, so what it logs precedes any `blocked` event the ban causes. It runs
    /// under the table's lock: it must only queue log lines.
    pub(crate) fn ban_offender_announced(
        &self,
        ip: IpAddr,
        rule: &str,
        reason: String,
        now: DateTime<Utc>,
        announce: impl FnOnce(&Ban),
    ) -> BanOutcome {
        let ip = canonical(ip);
        let mut inner = self.lock();
        let Some(key) = inner.offender_key(ip) else {
            return BanOutcome::Allowlisted;
        };
        if let Some(hit) = self.snapshot.load().lookup(ip, now) {
            if let Some(ban) = inner.bans.get(&hit.src) {
                return BanOutcome::AlreadyBanned(ban.clone());
            }
        }
        let Some((key, reason)) = inner.fit(key, ip, reason) else {
            return BanOutcome::TableFull;
        };
        let offence = inner.record_offence(key, now);
        let length = escalated(&inner.policy, offence);
        let ban = Ban {
            src: key,
            until: end_of(now, length),
            reason,
            offence,
            rule: Arc::from(rule),
            since: now,
        };
        announce(&ban);
        let group = SourceKey::new(ip, inner.ipv6_prefix).network();
        if key.prefix_len() == key.max_prefix_len() && group != key {
            self.remember_narrowed(&inner, group, &ban, now);
        }
        self.install(&mut inner, ban.clone());
        BanOutcome::Banned(ban)
    }

    /// Remembers that `group`'s ban was narrowed to `ban`'s address, so the group's other
    /// addresses are refused too ([`Bans::check_narrowed`]) until that ban ends; forgets ended
    /// groups. A group already remembered is left as it is.
    fn remember_narrowed(&self, inner: &Inner, group: IpNet, ban: &Ban, now: DateTime<Utc>) {
        let old = self.narrowed.load();
        if old.groups.get(&group).is_some_and(|g| g.until > now) {
            return;
        }
        let mut groups: HashMap<IpNet, NarrowedGroup> = (old.groups.iter())
            .filter(|(_, g)| g.until > now)
            .map(|(k, g)| (*k, g.clone()))
            .collect();
        groups.insert(
            group,
            NarrowedGroup {
                offender: ban.src,
                rule: ban.rule.clone(),
                until: ban.until,
                allowlisted: (inner.allowlist.iter())
                    .filter(|a| overlaps(a, &group))
                    .copied()
                    .collect(),
            },
        );
        self.narrowed.store(Arc::new(Narrowed {
            ipv6_prefix: inner.ipv6_prefix,
            groups,
        }));
    }

    /// Forgets the narrowed groups `src` overlaps: an unban of the offender, of a neighbour or
    /// of the network ends the group's memory.
    fn forget_narrowed(&self, src: &IpNet) {
        let old = self.narrowed.load();
        if !old.groups.keys().any(|g| overlaps(g, src)) {
            return;
        }
        let groups = (old.groups.iter())
            .filter(|(g, _)| !overlaps(g, src))
            .map(|(k, g)| (*k, g.clone()))
            .collect();
        self.narrowed.store(Arc::new(Narrowed {
            ipv6_prefix: old.ipv6_prefix,
            groups,
        }));
    }

    /// Whether `ip`, not banned itself, is refused because its source group is under a ban
    /// narrowed to another address of it (the group holds an allowlisted address, never
    /// refused): counting is per group and a rule fires once per window, so the group's other
    /// addresses would otherwise go on unrefused, an attacker rotating through them. Answers
    /// the narrowed ban's rule, and `Some(n)` when a `blocked` event is due (counted with the
    /// narrowed ban's, as [`Bans::note_blocked`] does). No ban is added, so rotating grows no
    /// table; it ends with the narrowed ban, or when an unban touches the group. One atomic
    /// load when no ban is narrowed.
    pub(crate) fn check_narrowed(
        &self,
        ip: IpAddr,
        now: DateTime<Utc>,
    ) -> Option<(Arc<str>, Option<u64>)> {
        let ip = canonical(ip);
        let narrowed = self.narrowed.load();
        if narrowed.groups.is_empty() {
            return None;
        }
        let group = SourceKey::new(ip, narrowed.ipv6_prefix).network();
        let g = narrowed.groups.get(&group)?;
        if g.until <= now
            || g.allowlisted.iter().any(|a| a.contains(&ip))
            || self.spared.load().trusted.iter().any(|t| t.contains(&ip))
        {
            return None;
        }
        Some((g.rule.clone(), self.blocked.note(g.offender, now)))
    }

    /// An operator's ban (admin API) of an address or network for exactly `duration` (the end
    /// clamped to [`MAX_UNTIL`], as the returned ban shows). It counts as an offence of `src`
    /// (the number is reported) and replaces any ban of the same `src`. A source overlapping
    /// the allowlist is refused unless `force`. Not subject to [`MAX_BANS`].
    #[cfg(test)]
    pub(crate) fn add_manual(
        &self,
        src: IpNet,
        duration: Duration,
        reason: String,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<Ban, EnforceError> {
        self.add_manual_announced(src, duration, reason, force, now, |_| {})
    }

    /// [`Bans::add_manual`], `announce` called with the ban before the request path can see
    /// it (its `ban` line is written before any `blocked` line of it, as for a rule's ban).
    pub(crate) fn add_manual_announced(
        &self,
        src: IpNet,
        duration: Duration,
        reason: String,
        force: bool,
        now: DateTime<Utc>,
        announce: impl FnOnce(&Ban),
    ) -> Result<Ban, EnforceError> {
        if duration.is_zero() {
            return Err(EnforceError::ZeroDuration);
        }
        let until = end_of(now, duration);
        let src = canonical_net(src);
        let widest = match src {
            IpNet::V4(_) => super::WIDEST_UNFORCED_V4,
            IpNet::V6(_) => super::WIDEST_UNFORCED_V6,
        };
        if !force && src.prefix_len() < widest {
            return Err(EnforceError::TooWide {
                src: display_net(&src),
            });
        }
        let mut inner = self.lock();
        if !force && inner.allowlisted(&src) {
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
        announce(&ban);
        self.install(&mut inner, ban.clone());
        Ok(ban)
    }

    /// Lifts the ban of exactly `src` (as listed) for the admin API; `None` when there is
    /// none (404). The returned ban's `until` is when it actually ended (at most `now`), for
    /// the `unban` event. The offence history is kept: a re-offence still escalates.
    pub(crate) fn remove(&self, src: &IpNet, now: DateTime<Utc>) -> Option<Ban> {
        self.remove_started_by(src, None, now)
    }

    /// [`Bans::remove`] if the ban started by `upto` (ms precision; `None`: whenever),
    /// decided under the table's lock: a ban made since (a newer one) stays.
    pub(crate) fn remove_started_by(
        &self,
        src: &IpNet,
        upto: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<Ban> {
        let src = canonical_net(*src);
        let mut inner = self.lock();
        let since = inner.bans.get(&src)?.since;
        if upto.is_some_and(|upto| since.timestamp_millis() > upto.timestamp_millis()) {
            return None;
        }
        let mut ban = inner.take(&src)?;
        self.forget_narrowed(&src);
        inner.pardon(src, now);
        inner.changes.push(Change::Unban { src, at: now });
        self.blocked.forget(&src);
        self.publish(&inner);
        ban.until = ban.until.min(now);
        Some(ban)
    }

    /// Whether a request from `ip` that started at `started`, counted in a window (from
    /// `window_start`) that its rule had already flagged, may ban `ip` again (in block mode a
    /// flagged key bans a source that is not banned now, see `Verdicts::sustained`). Not when
    /// the request started before the source's last ban did: it was sent before that ban, in
    /// flight when it began, and is not a new offence. Not when an operator lifted a ban of
    /// the source since the window began: lifting it lets the source go for the rest of the
    /// window, as before the flag re-banned (its next window that crosses bans it again).
    ///
    /// And only when the flag predates the source's state now: a ban of the source began in
    /// this window (and has ended), or block mode was turned on (`switched_to_block`) in it.
    /// Otherwise the key was flagged by a crossing in block mode that bans by itself, perhaps
    /// on another worker this very moment: banning here too would write its detection twice.
    pub(crate) fn may_ban_again(
        &self,
        ip: IpAddr,
        started: DateTime<Utc>,
        window_start: DateTime<Utc>,
        switched_to_block: Option<DateTime<Utc>>,
    ) -> bool {
        let ip = canonical(ip);
        let inner = self.lock();
        let group = SourceKey::new(ip, inner.ipv6_prefix).network();
        let last = |net: &IpNet| (inner.offences.get(net)).and_then(|times| times.last().copied());
        let last = last(&group).max(last(&IpNet::from(ip)));
        if last.is_some_and(|last| last >= started) {
            return false;
        }
        if (inner.pardons.iter()).any(|(net, at)| net.contains(&ip) && *at >= window_start) {
            return false;
        }
        last.is_some_and(|last| last >= window_start)
            || switched_to_block.is_some_and(|at| at >= window_start)
    }

    /// Sweeps bans that have ended (`until <= now`) and returns them, sorted by source, for
    /// `unban` events; also forgets offences older than the ban memory and the `blocked`
    /// counters of bans that are gone. Each end is journaled (at its `until`): a ban whose
    /// `unban` event was logged is not found ended again, and logged again, at the next start.
    pub(crate) fn expire(&self, now: DateTime<Utc>) -> Vec<Ban> {
        let mut inner = self.lock();
        let mut ended = inner.index.ended(now);
        ended.sort_unstable();
        let expired: Vec<Ban> = ended.iter().filter_map(|src| inner.take(src)).collect();
        for ban in &expired {
            inner.changes.push(Change::Unban {
                src: ban.src,
                at: ban.until,
            });
        }
        inner.prune_offences(now);
        if !expired.is_empty() {
            self.publish(&inner);
        }
        self.blocked.retain(|src| inner.bans.contains_key(src));
        expired
    }

    /// When the next ban ends, so the expiry timer can sleep exactly until then.
    pub(crate) fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.snapshot.load().next_expiry()
    }

    /// All bans in the table (including any that ended but were not swept yet), sorted by
    /// source: `GET /api/bans`.
    pub(crate) fn list(&self) -> Vec<Ban> {
        self.lock().bans.values().cloned().collect()
    }

    /// Number of bans in the table (the `active_bans` gauge).
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether the table is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one refused request of `ip`; `Some(n)` when a `blocked` event should be logged
    /// (the first of its ban per minute), `n` being the blocked requests not logged since
    /// that ban's previous event. `None` also when `ip` is not banned.
    pub(crate) fn note_blocked(&self, ip: IpAddr, now: DateTime<Utc>) -> Option<u64> {
        let hit = self.check(ip, now)?;
        self.blocked.note(hit.src, now)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `ban` in the table (replacing one of the same source), queues it for the
    /// journal and publishes.
    pub(super) fn install(&self, inner: &mut Inner, ban: Ban) {
        let src = ban.src;
        inner.changes.push(Change::Ban(ban.clone()));
        inner.put(ban);
        self.blocked.forget(&src);
        self.publish(inner);
    }

    /// Publishes the current index to the hot path: O(shards), the changed shards having
    /// been copied as they changed. Called with the lock held, so generations are published
    /// in order.
    pub(super) fn publish(&self, inner: &Inner) {
        self.snapshot.store(Arc::new(inner.index.snapshot()));
        self.count.store(inner.bans.len(), Ordering::Release);
    }

    /// The published generation (tests check what a change copies).
    #[cfg(test)]
    pub(super) fn published(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    #[cfg(test)]
    pub(super) fn blocked_counters(&self) -> usize {
        self.blocked.len()
    }
}

impl Inner {
    /// Puts `ban` in the table and the index, replacing a ban of the same source.
    pub(super) fn put(&mut self, ban: Ban) {
        if let Some(old) = self.bans.remove(&ban.src) {
            self.index.remove(&old);
        }
        self.index.insert(&ban);
        self.bans.insert(ban.src, ban);
    }

    /// Takes the ban of exactly `src` out of the table and the index.
    pub(super) fn take(&mut self, src: &IpNet) -> Option<Ban> {
        let ban = self.bans.remove(src)?;
        self.index.remove(&ban);
        Some(ban)
    }

    /// Whether `src` overlaps the allowlist.
    pub(super) fn allowlisted(&self, src: &IpNet) -> bool {
        self.allowlist.iter().any(|a| overlaps(a, src))
    }

    /// The sources of rule (not admin) bans that the allowlist overlaps.
    fn rule_bans_allowlisted(&self) -> Vec<IpNet> {
        (self.bans.values())
            .filter(|b| &*b.rule != ADMIN_RULE && self.allowlisted(&b.src))
            .map(|b| b.src)
            .collect()
    }

    /// Whether the allowlist covers the address `ip` (canonical).
    fn allowlists(&self, ip: IpAddr) -> bool {
        self.allowlist.iter().any(|a| a.contains(&ip))
    }

    /// The network a rule ban of `ip` (canonical) covers, or `None` when `ip` is allowlisted.
    fn offender_key(&self, ip: IpAddr) -> Option<IpNet> {
        if self.allowlists(ip) {
            return None;
        }
        let group = SourceKey::new(ip, self.ipv6_prefix).network();
        if self.allowlisted(&group) {
            return Some(IpNet::from(ip));
        }
        Some(group)
    }

    /// Remembers that an operator lifted the ban of `src` at `now` ([`Bans::may_ban_again`]).
    fn pardon(&mut self, src: IpNet, now: DateTime<Utc>) {
        if self.pardons.len() >= MAX_PARDONS {
            let day = chrono::Duration::days(1);
            self.pardons.retain(|_, at| now - *at < day);
            if self.pardons.len() >= MAX_PARDONS {
                // The oldest goes: at worst, a source lifted long ago is banned again one
                // window early, as without this memory.
                let oldest = (self.pardons.iter())
                    .min_by_key(|(_, at)| **at)
                    .map(|(n, _)| *n);
                if let Some(net) = oldest {
                    self.pardons.remove(&net);
                }
            }
        }
        self.pardons.insert(src, now);
    }

    /// Records an offence of `src` at `now`; returns its number within the ban memory.
    fn record_offence(&mut self, src: IpNet, now: DateTime<Utc>) -> u32 {
        let memory = self.memory();
        let times = self.history(src, now);
        times.retain(|t| now - *t < memory);
        times.push(now);
        u32::try_from(times.len()).unwrap_or(u32::MAX)
    }

    /// The offence history of `src`, made room for under [`MAX_OFFENDERS`]: when the
    /// histories are full and `src` has none, offences older than the ban memory are
    /// forgotten and then the histories whose last offence is oldest, down to nine tenths of
    /// the cap, except those of sources banned now.
    pub(super) fn history(&mut self, src: IpNet, now: DateTime<Utc>) -> &mut Vec<DateTime<Utc>> {
        if self.offences.len() >= self.offences_limit && !self.offences.contains_key(&src) {
            self.make_room_for_offenders(now);
        }
        self.offences.entry(src).or_default()
    }

    /// Trims the histories to nine tenths of the cap (see [`Inner::history`]). The next trim
    /// waits until a tenth of the cap has been added again, even when the histories of
    /// banned sources leave nothing to forget: each scan of the table is paid for by that
    /// many new histories, never one per offence.
    pub(super) fn make_room_for_offenders(&mut self, now: DateTime<Utc>) {
        self.prune_offences(now);
        let cap = self.max_offenders;
        let target = cap - cap / 10;
        let excess = (self.offences.len() + 1).saturating_sub(target);
        if excess > 0 {
            let bans = &self.bans;
            let mut candidates: Vec<(DateTime<Utc>, IpNet)> = (self.offences.iter())
                .filter(|(src, _)| !bans.contains_key(src))
                .filter_map(|(src, times)| times.iter().max().map(|last| (*last, *src)))
                .collect();
            let excess = excess.min(candidates.len());
            if excess > 0 {
                // Exactly `excess` of them, oldest last offence first (ties by source).
                candidates.select_nth_unstable(excess - 1);
                for (_, src) in &candidates[..excess] {
                    self.offences.remove(src);
                }
                tracing::warn!(
                    forgotten = excess,
                    cap,
                    "offence histories full: the oldest were forgotten (their next ban starts at offence 1)"
                );
            }
        }
        self.offences_limit = cap.max(self.offences.len() + cap / 10);
    }

    /// Forgets offences older than the ban memory.
    pub(super) fn prune_offences(&mut self, now: DateTime<Utc>) {
        let memory = self.memory();
        self.offences.retain(|_, times| {
            times.retain(|t| now - *t < memory);
            !times.is_empty()
        });
    }

    pub(super) fn memory(&self) -> TimeDelta {
        TimeDelta::from_std(self.policy.memory).unwrap_or(TimeDelta::MAX)
    }
}

/// Length of ban number `offence`: `duration * increment^(offence-1)`, capped at `max`.
pub(super) fn escalated(policy: &BanPolicy, offence: u32) -> Duration {
    let exponent = i32::try_from(offence.saturating_sub(1)).unwrap_or(i32::MAX);
    let secs = policy.duration.as_secs_f64() * policy.increment.powi(exponent);
    Duration::try_from_secs_f64(secs).map_or(policy.max, |d| d.min(policy.max))
}

/// `now + length`, clamped to [`MAX_UNTIL`] (which also stands for "past the calendar").
pub(super) fn end_of(now: DateTime<Utc>, length: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(length)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .map_or(MAX_UNTIL, |t| t.min(MAX_UNTIL))
}
