//! The detection engine: rules applied to finished requests over per-key windows.
//!
//! # Using it
//! - Build the rules with [`build_rules`](super::build_rules) (or
//!   [`default_rules`](super::default_rules) first), then [`Engine::new`].
//! - Call [`Engine::observe`] once per finished request, from any task (`&self`, lock-free
//!   apart from a key table's shard lock held for a few field updates). It pushes a
//!   [`Event::Detection`] the first time a key reaches its threshold in a window, and a
//!   [`Event::WindowSummary`] when a request rolls a flagged key into a newer window.
//! - Call [`Engine::tick`] periodically (e.g. every second) with the current time: it closes
//!   windows that have ended, emits their summaries and forgets idle keys. `scan` calls it
//!   with the log's own timestamps instead, and [`Engine::finish`] at end of input.
//! - On a config reload, [`Engine::rebuild`] gives the engine to swap in, holding the
//!   counters of the rules that did not change.
//!
//! Time only ever comes in from outside (`completed_at` of records, `now` of `tick`), so the
//! engine is deterministic and tests drive it with explicit timestamps.
//!
//! # Concurrency
//! Window state lives in sharded key tables ([`KeyMap`], tumbling and sliding keys). No method holds a map
//! reference while calling the same map again; the only nesting is window map → path table,
//! never the reverse. The key count is an atomic, so the cap check costs one load.
//!
//! `scan` runs each engine (or source shard) on one thread: there the maps are unlocked
//! tables in `RefCell`s ([`Local`], through the [`KeyStore`] operations), which the same
//! no-reentry rule keeps from ever being borrowed twice.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};

pub(super) use super::keytable::KeyTable as KeyMap;
use super::keytable::LocalTable;

/// How an engine stores its keys: [`Concurrent`] (sharded, locked [`KeyMap`]s, for `serve`,
/// where every task calls the engine) or [`Local`] (one unlocked table behind a `RefCell`,
/// for `scan`, whose engines — one per shard — each live on one thread and pay nothing for
/// shard locks). Both pack entries densely (see [`super::keytable`]).
pub(crate) trait Maps: 'static {
    /// The map of one kind of key state.
    type Map<V>: KeyStore<V>;
}

/// Sharded, locked tables: the engine is `Sync` and every method takes `&self` from any
/// thread.
#[derive(Debug)]
pub(crate) struct Concurrent;

/// Plain tables in `RefCell`s: the engine is `Send` but not `Sync` (one thread at a time).
#[derive(Debug)]
pub(crate) struct Local;

impl Maps for Concurrent {
    type Map<V> = KeyMap<V>;
}

impl Maps for Local {
    type Map<V> = RefCell<LocalTable<V>>;
}

/// The operations the engine needs from a key map. No method is called from inside a
/// closure given to the same map (the engine nests only window map → `last_src`/paths).
pub(crate) trait KeyStore<V>: Default {
    /// Whether `key` is present.
    fn has(&self, key: &WindowKey) -> bool;
    /// Runs `occupied` on `key`'s state; when absent, inserts the state `vacant` builds.
    /// Either closure runs with the key's entry held (a shard lock).
    /// `cx` is lent to whichever runs (the caller's output, e.g. the pending events, which
    /// are large enough that returning them by value costs more than the map lookup).
    fn upsert<C, R>(
        &self,
        key: WindowKey,
        cx: &mut C,
        occupied: impl FnOnce(&mut V, &mut C) -> R,
        vacant: impl FnOnce(&mut C) -> (V, R),
    ) -> R;
    /// Keeps the entries for which `f` is true.
    fn keep(&self, f: impl FnMut(&WindowKey, &mut V) -> bool);
    /// Calls `f` on every entry.
    fn each(&self, f: impl FnMut(&WindowKey, &V));
    /// Inserts or replaces; true when `key` was new.
    fn put(&self, key: WindowKey, value: V) -> bool;
    /// Removes `key`.
    fn drop_key(&self, key: &WindowKey);
    /// A copy of `key`'s value.
    fn copied(&self, key: &WindowKey) -> Option<V>
    where
        V: Copy;
    /// Entries held.
    fn count(&self) -> usize;
    /// Bytes held by the map (entries, slack, position table).
    #[cfg(test)]
    fn bytes_now(&self) -> usize;
}

impl<V> KeyStore<V> for KeyMap<V> {
    fn has(&self, key: &WindowKey) -> bool {
        self.contains(key)
    }
    #[inline]
    fn upsert<C, R>(
        &self,
        key: WindowKey,
        cx: &mut C,
        occupied: impl FnOnce(&mut V, &mut C) -> R,
        vacant: impl FnOnce(&mut C) -> (V, R),
    ) -> R {
        KeyMap::upsert(self, key, cx, occupied, vacant)
    }
    fn keep(&self, f: impl FnMut(&WindowKey, &mut V) -> bool) {
        self.retain(f);
    }
    fn each(&self, f: impl FnMut(&WindowKey, &V)) {
        self.for_each(f);
    }
    fn put(&self, key: WindowKey, value: V) -> bool {
        KeyMap::put(self, key, value)
    }
    fn drop_key(&self, key: &WindowKey) {
        self.remove(key);
    }
    fn copied(&self, key: &WindowKey) -> Option<V>
    where
        V: Copy,
    {
        self.get_copy(key)
    }
    fn count(&self) -> usize {
        self.len()
    }
    #[cfg(test)]
    fn bytes_now(&self) -> usize {
        self.bytes()
    }
}

impl<V> KeyStore<V> for RefCell<LocalTable<V>> {
    fn has(&self, key: &WindowKey) -> bool {
        self.borrow().contains(key)
    }
    #[inline]
    fn upsert<C, R>(
        &self,
        key: WindowKey,
        cx: &mut C,
        occupied: impl FnOnce(&mut V, &mut C) -> R,
        vacant: impl FnOnce(&mut C) -> (V, R),
    ) -> R {
        self.borrow_mut().upsert(key, cx, occupied, vacant)
    }
    fn keep(&self, f: impl FnMut(&WindowKey, &mut V) -> bool) {
        self.borrow_mut().retain(f);
    }
    fn each(&self, mut f: impl FnMut(&WindowKey, &V)) {
        for (k, v) in self.borrow().iter() {
            f(k, v);
        }
    }
    fn put(&self, key: WindowKey, value: V) -> bool {
        self.borrow_mut().put(key, value)
    }
    fn drop_key(&self, key: &WindowKey) {
        self.borrow_mut().remove(key);
    }
    fn copied(&self, key: &WindowKey) -> Option<V>
    where
        V: Copy,
    {
        self.borrow().get(key).copied()
    }
    fn count(&self) -> usize {
        self.borrow().len()
    }
    #[cfg(test)]
    fn bytes_now(&self) -> usize {
        self.borrow().bytes()
    }
}
use ipnet::IpNet;

use super::event::{round2, DetectionEvent, Event};
use super::identity::Identities;
use super::paths::{capped, PathStore, NO_PATH};
use super::rule::{Candidates, GroupBy, Rule, Target, WindowKind};
use super::sliding::{ByteRing, Ring, Sliding, SUB_BUCKETS};
use super::source::{Allowlist, SourceKey};
use super::window::{align, Added, Snapshot, Tumbling, WindowKey};
use crate::record::{Method, RequestRecord};

/// The request times the engine can count, in epoch seconds: 1970-01-01T00:00:00Z to
/// 2106-02-07T06:28:15Z.
///
/// Why: window state stores times as `u32` epoch seconds to stay small (see `window`).
/// [`Engine::observe`] ignores records outside this range and counts them
/// ([`Engine::out_of_range_records`]) rather than clamping them into a wrong window; `scan`
/// skips such lines before they reach the engine.
pub(crate) const SUPPORTED_EPOCH_SECS: std::ops::RangeInclusive<i64> = 0..=u32::MAX as i64;

/// Engine-wide settings (the top-level config keys).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EngineOptions {
    /// IPv6 sources are grouped by this many leading bits (128 = exact address). Default 64:
    /// one customer network is one source.
    pub(crate) ipv6_prefix: u8,
    /// Sources that are never counted.
    pub(crate) allowlist: Vec<IpNet>,
    /// Hard cap on live counter keys; the least recently updated are evicted first.
    /// Default 1 000 000. It bounds memory: under 100 bytes per key for the counters, plus
    /// in the worst case (each key on its own long random path) about 1.1 KB of path text
    /// per key, path texts being capped at 1 KiB (see the `detect` module docs).
    pub(crate) max_tracked_keys: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            ipv6_prefix: 64,
            allowlist: Vec::new(),
            max_tracked_keys: 1_000_000,
        }
    }
}

/// Engine settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// An IPv6 prefix longer than the address.
    #[error("ipv6_prefix: must be between 0 and 128, got {0}")]
    Ipv6Prefix(u8),
    /// A cap of zero would evict every key before it is counted.
    #[error("max_tracked_keys: must be at least 1")]
    ZeroKeys,
    /// Rule indexes are 16-bit inside the keys.
    #[error("rule: at most 65535 rules are supported, got {0}")]
    TooManyRules(usize),
}

/// The detection engine. Cheap to share behind an `Arc`; every method takes `&self`.
/// `M` is how it stores its keys: [`Concurrent`] for `serve`, [`Local`] for `scan`.
pub(crate) struct Engine<M: Maps = Concurrent> {
    pub(super) rules: Vec<Rule>,
    /// Which rules a request can count for, by its route (built from `rules`).
    candidates: Candidates,
    pub(super) tumbling: M::Map<Tumbling>,
    pub(super) sliding: M::Map<Sliding>,
    /// Sliding keys of volume rules (`metric = "bytes_*"`): wider sub-buckets, own map.
    pub(super) sliding_bytes: M::Map<Sliding<ByteRing>>,
    pub(super) paths: PathStore,
    /// Identity names behind the ids of identity keys (shared with rebuilt engines).
    pub(super) identities: Arc<Identities>,
    /// Identity keys only: the address of the last request counted under the key, named as
    /// `src` by the events written when the key's window closes. Entries live and die with
    /// their key (see `forget`).
    pub(super) last_src: M::Map<IpAddr>,
    pub(super) allowlist: Allowlist,
    pub(super) ipv6_prefix: u8,
    pub(super) max_keys: usize,
    pub(super) keys: AtomicUsize,
    pub(super) evictions: AtomicU64,
    pub(super) late: AtomicU64,
    pub(super) out_of_range: AtomicU64,
    pub(super) evicting: Mutex<()>,
    /// The earliest end (epoch seconds) a tumbling window held in `tumbling` can have: no
    /// tumbling key is due before it, so `tick` skips the walk of every tumbling key until
    /// then ([`Engine::tick`]). Lower than the truth is allowed (a walk that closes nothing),
    /// never higher. `0`: unknown, walk at the next tick.
    pub(super) tumbling_due: AtomicU64,
    /// The same for the sliding keys of both sliding maps, in epoch milliseconds: the
    /// earliest time at which moving a sliding key up to now can change it (its oldest
    /// request leaves the ring). `0`: unknown, walk at the next tick.
    pub(super) sliding_due: AtomicU64,
    /// `[cluster]`: the deltas of tumbling and sliding counts, when counters are shared.
    pub(super) shared: std::sync::OnceLock<Arc<super::shared::Deltas>>,
    /// `scan`: `observe` builds only the events that become rows (tumbling summaries,
    /// sliding detections), see [`Engine::rows_only`].
    pub(super) rows_only: bool,
}

impl<M: Maps> std::fmt::Debug for Engine<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.rules)
            .field("keys", &self.keys)
            .field("max_keys", &self.max_keys)
            .field("rows_only", &self.rows_only)
            .finish_non_exhaustive()
    }
}

/// A counted record's time: epoch seconds (in [`SUPPORTED_EPOCH_SECS`]) and milliseconds.
#[derive(Debug, Clone, Copy)]
struct At {
    secs: u32,
    ms: u64,
}

/// Up to two events per rule and request (a summary of the old window, then a detection),
/// and a third slot for a request counted in a key that is already flagged, when the caller
/// asked for those ([`Engine::observe_with`]).
type Pending = [Option<(bool, Snapshot)>; 3];

/// The slot of [`Pending`] for a request counted in an already flagged key.
const SUSTAINED: usize = 2;

impl Engine {
    /// An engine running `rules` (in order; the position is the rule's index in keys).
    pub(crate) fn new(rules: Vec<Rule>, options: EngineOptions) -> Result<Engine, EngineError> {
        Engine::with_tables(rules, options, PathStore::default(), Arc::default())
    }
}

impl Engine<Local> {
    /// [`Engine::new`] with plain maps, for one thread (`scan`).
    pub(crate) fn new_local(
        rules: Vec<Rule>,
        options: EngineOptions,
    ) -> Result<Engine<Local>, EngineError> {
        Engine::with_tables(rules, options, PathStore::default(), Arc::default())
    }
}

impl<M: Maps> Engine<M> {
    /// [`Engine::new`] over a given (empty) path table and identity table: a rebuilt engine
    /// shares the old one's path hash key and identity ids, so copied keys keep their path
    /// hashes and identities.
    pub(super) fn with_tables(
        rules: Vec<Rule>,
        options: EngineOptions,
        paths: PathStore,
        identities: Arc<Identities>,
    ) -> Result<Engine<M>, EngineError> {
        if options.ipv6_prefix > 128 {
            return Err(EngineError::Ipv6Prefix(options.ipv6_prefix));
        }
        if options.max_tracked_keys == 0 {
            return Err(EngineError::ZeroKeys);
        }
        if rules.len() > usize::from(u16::MAX) {
            return Err(EngineError::TooManyRules(rules.len()));
        }
        Ok(Engine {
            candidates: Candidates::new(&rules),
            rules,
            tumbling: Default::default(),
            sliding: Default::default(),
            sliding_bytes: Default::default(),
            paths,
            identities,
            last_src: Default::default(),
            allowlist: Allowlist::new(options.allowlist),
            ipv6_prefix: options.ipv6_prefix,
            max_keys: options.max_tracked_keys,
            keys: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
            late: AtomicU64::new(0),
            out_of_range: AtomicU64::new(0),
            evicting: Mutex::new(()),
            // A rebuilt engine is handed copied keys (`put`): the first tick finds their ends.
            tumbling_due: AtomicU64::new(0),
            sliding_due: AtomicU64::new(0),
            shared: std::sync::OnceLock::new(),
            rows_only: false,
        })
    }

    /// For `scan`, which reports tumbling windows by their summary and sliding ones by their
    /// detection: `observe` no longer builds the other events (a tumbling rule of threshold
    /// 1 would build a detection for every new key, only for it to be dropped), and `tick`
    /// and `finish` leave their events in map order (`scan` sorts its rows).
    pub(crate) fn rows_only(mut self) -> Engine<M> {
        self.rows_only = true;
        self
    }

    /// The rules, in index order (for metric label tables and `check-config`).
    pub(crate) fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Live counter keys (the `tracked_keys` gauge).
    pub(crate) fn tracked_keys(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    /// A tumbling key whose window ends at `end` is being inserted: `tick` must not skip
    /// past `end`. Called under the key's shard lock, before the key is in the map (see
    /// [`Engine::tick`] for why that order makes the skip safe).
    pub(super) fn tumbling_ends_by(&self, end: u64) {
        // Nearly every new key ends with or after the earliest one: one load, no write.
        if end < self.tumbling_due.load(Ordering::Acquire) {
            self.tumbling_due.fetch_min(end, Ordering::AcqRel);
        }
    }

    /// A sliding key may change when moved up to sub-bucket `idx` (of `sub_ms`): `tick` must
    /// not skip past it. Called under the key's shard lock (see [`Engine::tick`]).
    pub(super) fn sliding_changes_by(&self, idx: u32, sub_ms: u64) {
        let at = u64::from(idx).saturating_mul(sub_ms);
        if at < self.sliding_due.load(Ordering::Acquire) {
            self.sliding_due.fetch_min(at, Ordering::AcqRel);
        }
    }

    /// Keys evicted by the cap so far (the `tracked_key_evictions_total` counter).
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Distinct paths whose text is held for live keys.
    #[cfg(test)]
    pub(crate) fn tracked_paths(&self) -> usize {
        self.paths.len()
    }

    /// Records ignored because they were older than their key's current window (out-of-order
    /// arrival across a window boundary).
    pub(crate) fn late_records(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }

    /// Requests whose identity found the identity table full (counted by source instead).
    #[cfg(test)]
    pub(crate) fn identities_overflowed(&self) -> u64 {
        self.identities.overflowed()
    }

    /// Records ignored because their `completed_at` lies outside [`SUPPORTED_EPOCH_SECS`].
    #[cfg(test)]
    pub(crate) fn out_of_range_records(&self) -> u64 {
        self.out_of_range.load(Ordering::Relaxed)
    }

    /// Feeds one finished request; pushes any resulting events onto `out`.
    ///
    /// Refused requests (never forwarded) and allowlisted sources are ignored; requests
    /// refused by `[auth]` count only for rules that list their status. Each rule whose
    /// filters the request passes counts it under its own key: its source (and path), or
    /// for rules grouped by identity its identity (and path) when it has one.
    ///
    /// Supported times: `rec.completed_at` must lie in [`SUPPORTED_EPOCH_SECS`] (1970 to
    /// 2106-02-07). A record outside it is not counted, never clamped into the first or last
    /// window; it is counted in [`Engine::out_of_range_records`] instead.
    pub(crate) fn observe(&self, rec: &RequestRecord, out: &mut Vec<Event>) {
        self.observe_with(rec, out, None);
    }

    /// [`Engine::observe`], and with `sustained`, for each rule whose action bans in block
    /// mode that counts `rec` in a key already flagged in its window (no new crossing), the
    /// window's figures as a detection in `sustained`.
    ///
    /// Why: a detection fires when a key crosses its threshold, once per window (sliding: per
    /// episode above it). A source whose ban expired, or that was flagged in
    /// monitor mode before block mode was turned on, would otherwise go on above the
    /// threshold unbanned until its key fell below it, which an attacker keeping up the rate
    /// never lets happen. A request from a banned source is refused and never counted, so
    /// such a request comes from a source that is not banned now; the caller bans it again
    /// ([`crate::pipeline::verdict::Verdicts::sustained`]). Not while counters are shared
    /// (`[cluster]`): the merged totals decide there.
    pub(crate) fn observe_with(
        &self,
        rec: &RequestRecord,
        out: &mut Vec<Event>,
        mut sustained: Option<&mut Vec<DetectionEvent>>,
    ) {
        if rec.outcome.is_refusal() {
            return;
        }
        let secs = rec.completed_at.timestamp();
        if !SUPPORTED_EPOCH_SECS.contains(&secs) {
            self.out_of_range.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The record's time, read once (chrono computes it from the date each time): epoch
        // seconds and milliseconds, as `epoch_secs` and `bucket_index` would.
        let at = At {
            secs: u32::try_from(secs).unwrap_or(u32::MAX),
            ms: u64::try_from(secs * 1000 + i64::from(rec.completed_at.timestamp_subsec_millis()))
                .unwrap_or(0),
        };
        if !self.allowlist.is_empty() && self.allowlist.contains(rec.src) {
            return;
        }
        let src = SourceKey::new(rec.src, self.ipv6_prefix);
        let mut path_hash = None;
        let mut ident = None;
        let target = Target::of(rec);
        let latency_ns = rec.total.as_nanos();
        for &rule_ix in self.candidates.of(&target) {
            let index = usize::from(rule_ix);
            let Some(rule) = self.rules.get(index) else {
                continue;
            };
            if !rule.admits(rec.status, rec.outcome) || !rule.qualifies_ns(&target, latency_ns) {
                continue;
            }
            let path = if rule.group_by.by_path() {
                *path_hash.get_or_insert_with(|| self.paths.hash(&rec.path))
            } else {
                NO_PATH
            };
            let who = self.subject(rule.group_by, src, rec, &mut ident);
            let key = WindowKey::new(path, who, rule_ix);
            let rearm = sustained.is_some() && rule.action.bans(true);
            let mut pending = match rule.window_kind {
                WindowKind::Tumbling => self.count_tumbling(rule, key, (rec, at, rearm), out),
                WindowKind::Sliding if rule.metric.is_bytes() => {
                    self.count_sliding(&self.sliding_bytes, rule, key, (rec, at, rearm), out)
                }
                WindowKind::Sliding => {
                    self.count_sliding(&self.sliding, rule, key, (rec, at, rearm), out)
                }
            };
            if let Some(snap) = pending[SUSTAINED].take().map(|(_, snap)| snap) {
                if let Some(sustained) = sustained.as_deref_mut() {
                    let text = (path != NO_PATH).then(|| capped(&rec.path));
                    let identity = rec.identity.as_ref();
                    sustained.push(self.event(rule, &key, &src, identity, text, snap));
                }
            }
            if self.rows_only {
                // pending[0] is a summary, pending[1] a detection.
                let unused = usize::from(rule.window_kind == WindowKind::Tumbling);
                pending[unused] = None;
            }
            if pending.iter().all(Option::is_none) {
                continue; // the common case: no event, no allocation
            }
            // Already reported while it ran (sliding: see `inflight`): counted, no detection.
            if rec.in_flight_reported != 0
                && rule.window_kind == WindowKind::Sliding
                && 1u64
                    .checked_shl(u32::try_from(index).unwrap_or(u32::MAX))
                    .is_some_and(|bit| rec.in_flight_reported & bit != 0)
            {
                pending[1] = None;
            }
            let text = (path != NO_PATH).then(|| capped(&rec.path));
            for (detection, snap) in pending.into_iter().flatten() {
                // A summary names the request's identity only when the key is an identity.
                let identity = rec.identity.as_ref().filter(|_| detection);
                let ev = self.event(rule, &key, &src, identity, text.clone(), snap);
                out.push(if detection {
                    Event::Detection(ev)
                } else {
                    Event::WindowSummary(ev)
                });
            }
        }
    }

    fn count_tumbling(
        &self,
        rule: &Rule,
        key: WindowKey,
        (rec, at, rearm): (&RequestRecord, At, bool),
        out: &mut Vec<Event>,
    ) -> Pending {
        let window = window_secs(rule);
        let now = at.secs;
        let start = align(now, window);
        let latency = u64::try_from(rec.total.as_nanos()).unwrap_or(u64::MAX);
        let method = method_code(rec.method);
        let bytes = (rule.metric.bytes(rec), rule.metric.is_bytes());
        self.make_room(&self.tumbling, &key, out);
        let mut pending: Pending = [None, None, None];
        let counted = self.tumbling.upsert(
            key,
            &mut pending,
            |st, pending| {
                if start > st.window_start {
                    // A window flagged only by an in-flight request has nothing to summarise.
                    if st.flagged && st.count() > 0 {
                        pending[0] = Some((false, st.snapshot(window)));
                    }
                    *st = Tumbling::new(start, method);
                }
                match st.add(start, now, latency, bytes, rule.threshold) {
                    Added::Crossed => pending[1] = Some((true, st.snapshot(window))),
                    Added::Late => return false,
                    Added::Counted if rearm && st.flagged => {
                        pending[SUSTAINED] = Some((true, st.snapshot(window)));
                    }
                    Added::Counted => {}
                }
                self.note_src(&key, rec.src);
                true
            },
            |pending| {
                self.paths.acquire(key.path(), &rec.path);
                self.tumbling_ends_by(u64::from(start) + u64::from(window));
                let mut st = Tumbling::new(start, method);
                if st.add(start, now, latency, bytes, rule.threshold) == Added::Crossed {
                    pending[1] = Some((true, st.snapshot(window)));
                }
                // Count before inserting: a concurrent sweep may remove (and subtract) the key
                // as soon as it is in the map, and the count must never dip below the truth.
                self.keys.fetch_add(1, Ordering::Relaxed);
                self.note_src(&key, rec.src);
                (st, true)
            },
        );
        if !counted {
            return self.note_late(pending);
        }
        self.share(key, start, latency, bytes.0, method, rec, &mut pending);
        pending
    }

    /// `[cluster]`: adds a tumbling count to its window's delta; while counters are shared,
    /// the engine's own events of the window are withheld (the merged ones replace them).
    #[allow(clippy::too_many_arguments)]
    fn share(
        &self,
        key: WindowKey,
        start: u32,
        latency: u64,
        bytes: u64,
        method: u8,
        rec: &RequestRecord,
        pending: &mut Pending,
    ) {
        let Some(deltas) = self.shared.get() else {
            return;
        };
        let shared = deltas.is_shared();
        let crossed = pending[1].map(|(_, snap)| snap);
        let fired_locally = !shared && crossed.is_some();
        let kept = deltas.add(
            key,
            start,
            latency,
            bytes,
            method,
            (fired_locally, crossed.filter(|_| shared)),
            || (key.path() != NO_PATH).then(|| capped(&rec.path)),
        );
        // A delta dropped for the cap reaches no merge: its window's events stay local.
        if shared && kept {
            *pending = [None, None, None];
        }
    }

    /// `[cluster]`: attaches the deltas the cluster task drains (start-up and each rebuilt
    /// engine).
    pub(crate) fn attach_deltas(&self, deltas: Arc<super::shared::Deltas>) {
        let _ = self.shared.set(deltas);
    }

    /// Whether tumbling decisions are made on merged totals now.
    pub(super) fn counters_shared(&self) -> bool {
        self.shared.get().is_some_and(|d| d.is_shared())
    }

    /// `[cluster]`: the stable name of a tumbling key's window across replicas:
    /// `rule:window_start:subject:path` (the path hash is per process, its text is not).
    pub(crate) fn shared_name(
        &self,
        key: &WindowKey,
        start: u32,
        path: Option<&str>,
    ) -> Option<String> {
        let rule = self.rules.get(usize::from(key.rule))?;
        let subject = match key.src.identity_id() {
            Some(id) => format!("id={}", self.identities.name(id)?),
            None => key.src.network().to_string(),
        };
        Some(format!(
            "{}:{start}:{subject}:{}",
            rule.shared_id,
            path.unwrap_or("")
        ))
    }

    /// `[cluster]`: the rule of a delta key: its window length (seconds), threshold and
    /// whether it counts bytes.
    pub(crate) fn shared_rule(&self, key: &WindowKey) -> Option<(u32, u64, bool)> {
        let rule = self.rules.get(usize::from(key.rule))?;
        (rule.window_kind == WindowKind::Tumbling)
            .then(|| (window_secs(rule), rule.threshold, rule.metric.is_bytes()))
    }

    /// `[cluster]`: the event of a window from its merged totals.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn shared_event(
        &self,
        key: &WindowKey,
        start: u32,
        (count, sum_ns, max_ns, bytes): (u64, u64, u64, u64),
        method: u8,
        path: Option<String>,
    ) -> Option<DetectionEvent> {
        let rule = self.rules.get(usize::from(key.rule))?;
        let window = window_secs(rule);
        let snap = Snapshot {
            start_ms: i64::from(start) * 1000,
            end_ms: (i64::from(start) + i64::from(window)) * 1000,
            count,
            bytes,
            avg_secs: sum_ns as f64 / count.max(1) as f64 / 1e9,
            max_secs: max_ns as f64 / 1e9,
            method,
        };
        let src = match (key.src.identity_id(), self.last_src.copied(key)) {
            (Some(_), Some(ip)) => SourceKey::new(ip, self.ipv6_prefix),
            _ => key.src,
        };
        Some(self.event(rule, key, &src, None, path, snap))
    }

    fn count_sliding<R: Ring>(
        &self,
        map: &M::Map<Sliding<R>>,
        rule: &Rule,
        key: WindowKey,
        (rec, at, rearm): (&RequestRecord, At, bool),
        out: &mut Vec<Event>,
    ) -> Pending {
        let sub = sub_bucket_ms(rule);
        let idx = u32::try_from(at.ms / sub).unwrap_or(u32::MAX);
        let latency = u32::try_from(rec.total.as_millis()).unwrap_or(u32::MAX);
        let method = method_code(rec.method);
        let bytes = rule.metric.bytes(rec);
        self.make_room(map, &key, out);
        // Still under the key's shard lock: a sweep removing the key cannot interleave.
        let count = |st: &mut Sliding<R>, pending: &mut Pending| {
            if let Some(summary) = st.advance(idx, rule.threshold, sub) {
                pending[0] = Some((false, summary));
            }
            match st.add(idx, latency, bytes, rule.threshold, method) {
                Added::Crossed => pending[1] = Some((true, st.window_snapshot(sub))),
                Added::Late => return false,
                Added::Counted if rearm && st.flagged() => {
                    pending[SUSTAINED] = Some((true, st.window_snapshot(sub)));
                }
                Added::Counted => {}
            }
            // The request leaves the ring at `idx + SUB_BUCKETS`. One that added nothing (no
            // bytes, for a volume rule) may leave the key empty, to be forgotten at the next
            // tick.
            let changes = if R::BYTES && bytes == 0 {
                st.next_change()
            } else {
                idx.saturating_add(SUB_BUCKETS)
            };
            self.sliding_changes_by(changes, sub);
            self.note_src(&key, rec.src);
            true
        };
        let mut pending: Pending = [None, None, None];
        let counted = map.upsert(key, &mut pending, count, |pending| {
            self.paths.acquire(key.path(), &rec.path);
            self.keys.fetch_add(1, Ordering::Relaxed);
            let mut st = Sliding::new(idx);
            let counted = count(&mut st, pending);
            if !counted {
                // A late record leaves the new key empty: the next tick forgets it.
                self.sliding_changes_by(0, sub);
            }
            (st, counted)
        });
        if !counted {
            return self.note_late(pending);
        }
        let crossed = pending[1].map(|(_, snap)| snap);
        if self.share_slide(rule, (key, idx), latency, method, rec, crossed) {
            pending = [None, None, None];
        }
        pending
    }

    /// Counts a late record (not counted in its key), passing `pending` through.
    fn note_late(&self, pending: Pending) -> Pending {
        self.late.fetch_add(1, Ordering::Relaxed);
        pending
    }

    /// What `rec` is counted under for a rule grouped `by`: its identity's key when the rule
    /// groups by identity and the request has one (interned once per record, in `ident`),
    /// else its source `src` — so sending no key (or a name beyond the identity table's
    /// cap) cannot evade an identity rule.
    pub(super) fn subject(
        &self,
        by: GroupBy,
        src: SourceKey,
        rec: &RequestRecord,
        ident: &mut Option<Option<u16>>,
    ) -> SourceKey {
        if !by.by_identity() {
            return src;
        }
        let Some(name) = rec.identity.as_ref() else {
            return src;
        };
        let id = *ident.get_or_insert_with(|| self.identities.intern(name));
        id.map_or(src, SourceKey::identity)
    }

    /// Remembers the address of a request counted under identity key `key` (called with the
    /// key's map entry locked: window map → `last_src`, never the reverse).
    pub(super) fn note_src(&self, key: &WindowKey, ip: IpAddr) {
        if key.src.identity_id().is_some() {
            self.last_src.put(*key, ip);
        }
    }

    /// A key is going away: its path reference and, for an identity key, its last address.
    pub(super) fn forget(&self, key: &WindowKey) {
        self.paths.release(key.path());
        if key.src.identity_id().is_some() {
            self.last_src.drop_key(key);
        }
    }

    /// Builds the event fields of `key` under `rule` from a window snapshot. `src` is the
    /// address to name: the key's own source for address keys; for identity keys the
    /// request that produced the event (or, at window close, the last one counted).
    /// `identity` is the request's identity, named by detections of address keys; identity
    /// keys always name their own.
    pub(super) fn event(
        &self,
        rule: &Rule,
        key: &WindowKey,
        src: &SourceKey,
        identity: Option<&Arc<str>>,
        uri_path: Option<String>,
        snap: Snapshot,
    ) -> DetectionEvent {
        let avg = round2(snap.avg_secs);
        let max = round2(snap.max_secs);
        let (identity, by_identity) = match key.src.identity_id() {
            Some(id) => (self.identities.name(id), true),
            None => (identity.cloned(), false),
        };
        DetectionEvent {
            rule: rule.name.clone(),
            escu_id: rule.escu_id.clone(),
            mitre: rule.mitre.clone(),
            attack_type: rule.attack_type.clone(),
            src: src.text(),
            identity,
            by_identity,
            uri_path,
            http_method: Method::ALL
                .get(usize::from(snap.method))
                .map_or("OTHER", |m| m.as_str()),
            window_start: time_ms(snap.start_ms),
            window_end: time_ms(snap.end_ms),
            count: snap.count,
            bytes: rule.metric.is_bytes().then_some(snap.bytes),
            avg_response_time: avg,
            max_response_time: max,
            severity: rule.severity.grade(snap.count, snap.bytes, avg, max),
            action: rule.action,
            in_flight: false,
            risk_score: rule.risk_score,
        }
    }
}

/// The tumbling window length in seconds (validated to fit `u32`).
pub(super) fn window_secs(rule: &Rule) -> u32 {
    u32::try_from(rule.window.as_secs()).unwrap_or(u32::MAX)
}

/// The sliding sub-bucket length in milliseconds (≥ 1000: sliding windows are ≥ 15 s).
pub(super) fn sub_bucket_ms(rule: &Rule) -> u64 {
    let ms = u64::try_from(rule.window.as_millis()).unwrap_or(u64::MAX);
    (ms / u64::from(SUB_BUCKETS)).max(1)
}

/// Epoch seconds in the `u32` the window state stores. `observe` checks
/// [`SUPPORTED_EPOCH_SECS`] first, so the saturation here never happens for a counted record.
pub(super) fn epoch_secs(t: &DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp().max(0)).unwrap_or(u32::MAX)
}

/// The sliding sub-bucket `t` falls in. For a `tick` time outside [`SUPPORTED_EPOCH_SECS`]
/// it saturates: before 1970 moves no window, after 2106 moves every window past its end,
/// which is what such a clock means for windows that only hold supported times.
pub(super) fn bucket_index(t: &DateTime<Utc>, sub_ms: u64) -> u32 {
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
    u32::try_from(ms / sub_ms).unwrap_or(u32::MAX)
}

fn time_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn method_code(m: Method) -> u8 {
    u8::try_from(m.index()).unwrap_or(u8::MAX)
}
