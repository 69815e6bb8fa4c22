//! Hot reload: a new engine for a new config that takes over the live counters of the rules
//! that did not change.
//!
//! On SIGHUP the caller validates the new config, calls [`Engine::rebuild`] on the running
//! engine and swaps the result in (`ArcSwap<Engine>`). The old engine stays usable until the
//! swap, so nothing blocks: its maps are read shard by shard, under the same read locks a
//! `tick` would contend with.
//!
//! # What is carried over
//! - The tumbling and sliding keys of every rule whose effective config is unchanged
//!   ([`Rule::same_effective_config`]: same name, every validated value equal), with their
//!   `flagged` state, so an already-flagged key gets no second `detection`. Keys are
//!   re-indexed to the rule's position in the new list; their path texts are taken over
//!   (the new path table shares the old one's hash key, so path hashes stay valid).
//! - The eviction and late-record totals, so the `tracked_key_evictions_total` counter,
//!   fed from [`Engine::evictions`], never goes backwards.
//!
//! # What is dropped
//! - Keys of changed rules (they count from zero under the new parameters) and of removed
//!   rules.
//! - When `ipv6_prefix` changed: every IPv6 key, since it now stands for another network.
//!   IPv4 keys do not depend on the prefix and are kept.
//! - Keys of sources the new allowlist covers entirely: they could never count again.
//! - When the new `max_tracked_keys` is lower than the keys kept: the least recently
//!   updated, as the cap always does (counted as evictions).
//!
//! A dropped key that was flagged gives its `window_summary` now (in
//! [`ReloadReport::summaries`]), so no detection is left without its closing line.
//!
//! # Caveats for the caller
//! Requests the old engine counts after its shard was copied are not in the new one: swap
//! promptly after `rebuild`. After the swap, do not `tick` or `finish` the old engine (its
//! kept keys would give their summaries twice); just drop it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::engine::{Engine, EngineError, EngineOptions, KeyMap, KeyStore};
use super::event::Event;
use super::rule::Rule;
use super::sliding::{Ring, Sliding};
use super::window::WindowKey;

/// A rule and a number of its keys, for the reload log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleKeys {
    /// The rule's name.
    pub(crate) name: Arc<str>,
    /// Keys carried over (in [`ReloadReport::kept_rules`]) or dropped (in the other lists).
    pub(crate) keys: usize,
}

/// What [`Engine::rebuild`] kept and what it reset, for the operator's reload log line.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ReloadReport {
    /// Rules whose effective config is unchanged, with the keys carried over.
    pub(crate) kept_rules: Vec<RuleKeys>,
    /// Rules still configured but changed, with the keys dropped: they count from zero.
    pub(crate) reset_rules: Vec<RuleKeys>,
    /// Rules no longer configured, with the keys dropped.
    pub(crate) removed_rules: Vec<RuleKeys>,
    /// Rules new in the config.
    pub(crate) added_rules: Vec<Arc<str>>,
    /// Keys carried over into the new engine.
    pub(crate) keys_kept: usize,
    /// Keys not carried over, for whatever reason.
    pub(crate) keys_dropped: usize,
    /// `ipv6_prefix` changed, so every IPv6 source key was dropped.
    pub(crate) ipv6_prefix_changed: bool,
    /// Of `keys_dropped`: IPv6 keys of unchanged rules, dropped for the new prefix.
    pub(crate) ipv6_keys_dropped: usize,
    /// Of `keys_dropped`: keys of unchanged rules whose source the new allowlist covers.
    pub(crate) allowlisted_keys_dropped: usize,
    /// Of `keys_dropped`: keys of unchanged rules evicted to fit a lower `max_tracked_keys`.
    pub(crate) keys_evicted: usize,
    /// `window_summary` events of the flagged keys that were dropped, sorted like `tick`'s;
    /// write them to the detection log like any other.
    pub(crate) summaries: Vec<Event>,
}

/// Why a key of an unchanged rule is not carried over.
enum Skip {
    Regrouped,
    Allowlisted,
}

impl Engine {
    /// A new engine running `rules` under `options`, holding the live window state of this
    /// one for every rule whose effective config is unchanged (see the module docs of
    /// `reload` for exactly what is kept). `self` is left untouched and usable.
    ///
    /// Fails like [`Engine::new`] on unusable options; the running engine then stays in
    /// force.
    pub(crate) fn rebuild(
        &self,
        rules: Vec<Rule>,
        options: EngineOptions,
    ) -> Result<(Engine, ReloadReport), EngineError> {
        let regrouped = options.ipv6_prefix != self.ipv6_prefix;
        let next = Engine::with_tables(
            rules,
            options,
            self.paths.empty_sharing_key(),
            self.identities.clone(),
        )?;
        let fates = fates(&self.rules, &next.rules);
        let mut report = ReloadReport {
            ipv6_prefix_changed: regrouped,
            ..ReloadReport::default()
        };
        // Keys of each old rule that are dropped with their rule (changed or removed).
        let mut reset = vec![0usize; self.rules.len()];
        let mut count = |key: &WindowKey| {
            if fates[usize::from(key.rule)].is_none() {
                reset[usize::from(key.rule)] += 1;
            }
        };
        let mut total = 0usize;
        self.tumbling.each(|key, st| {
            total += 1;
            let kept = match self.carry(key, &fates, &next, &mut report) {
                Some(new_key) => next.tumbling.put(new_key, *st),
                None => false,
            };
            if !kept {
                report.summaries.extend(self.tumbling_summary(key, st));
            }
            count(key);
        });
        total += self.carry_sliding(
            &self.sliding,
            &next.sliding,
            &fates,
            &next,
            &mut report,
            &mut count,
        );
        total += self.carry_sliding(
            &self.sliding_bytes,
            &next.sliding_bytes,
            &fates,
            &next,
            &mut report,
            &mut count,
        );
        self.settle(&next, total, &mut report);
        self.classify(&next, &fates, &reset, &mut report);
        Ok((next, report))
    }

    /// Whether `next` counts exactly as this engine: as many rules, each kept (same
    /// counting definition) at the same index.
    pub(crate) fn same_rules(&self, next: &Engine) -> bool {
        self.rules.len() == next.rules.len()
            && fates(&self.rules, &next.rules)
                .iter()
                .enumerate()
                .all(|(i, fate)| *fate == u16::try_from(i).ok())
    }

    /// Copies the keys of one sliding map into `to` (of `next`) under their new rule index,
    /// or closes them (summary) when their rule changed; returns how many keys there were.
    fn carry_sliding<R: Ring>(
        &self,
        from: &KeyMap<Sliding<R>>,
        to: &KeyMap<Sliding<R>>,
        fates: &[Option<u16>],
        next: &Engine,
        report: &mut ReloadReport,
        count: &mut impl FnMut(&WindowKey),
    ) -> usize {
        let mut total = 0usize;
        from.each(|key, st| {
            let mut st = *st;
            total += 1;
            let kept = match self.carry(key, fates, next, report) {
                Some(new_key) => to.put(new_key, st),
                None => false,
            };
            if !kept {
                report.summaries.extend(self.sliding_summary(key, &mut st));
            }
            count(key);
        });
        total
    }

    /// The key under which `key` lives on in `next` (its path reference taken over), or
    /// `None` when it is dropped (the reason counted in `report`).
    fn carry(
        &self,
        key: &WindowKey,
        fates: &[Option<u16>],
        next: &Engine,
        report: &mut ReloadReport,
    ) -> Option<WindowKey> {
        let new_rule = fates[usize::from(key.rule)]?;
        let identity = key.src.identity_id().is_some();
        // An identity key stands for no address: neither the prefix nor the allowlist
        // changes what it counts (its remembered address is regrouped when displayed).
        let ipv6 = !identity && key.src.network().addr().is_ipv6();
        let skip = if ipv6 && next.ipv6_prefix != self.ipv6_prefix {
            Some(Skip::Regrouped)
        } else if !identity && next.allowlist.covers(&key.src) {
            Some(Skip::Allowlisted)
        } else {
            None
        };
        match skip {
            Some(Skip::Regrouped) => report.ipv6_keys_dropped += 1,
            Some(Skip::Allowlisted) => report.allowlisted_keys_dropped += 1,
            None if next.paths.acquire_from(&self.paths, key.path()) => {
                let new_key = key.with_rule(new_rule);
                if let Some(ip) = self.last_src.copied(key) {
                    next.last_src.put(new_key, ip);
                }
                return Some(new_key);
            }
            None => {}
        }
        None
    }

    /// Sets `next`'s key count and carried totals, then enforces its cap.
    fn settle(&self, next: &Engine, total: usize, report: &mut ReloadReport) {
        let kept = next.tumbling.count() + next.sliding.count() + next.sliding_bytes.count();
        next.keys.store(kept, Ordering::Relaxed);
        next.evictions.store(self.evictions(), Ordering::Relaxed);
        next.late.store(self.late_records(), Ordering::Relaxed);
        if kept > next.max_keys {
            // Down to the cap, plus the usual 1% batch so the next new key finds room.
            let batch = kept - next.max_keys + next.max_keys / 100;
            next.evict(batch, &mut report.summaries);
        }
        report.keys_kept = next.tracked_keys();
        report.keys_evicted = kept - report.keys_kept;
        report.keys_dropped = total - report.keys_kept;
        super::sweep::sort_events(&mut report.summaries);
    }

    /// Fills the per-rule lists of `report`: kept rules with the keys `next` holds for them,
    /// reset and removed ones with the keys dropped (`reset`, by old index).
    fn classify(
        &self,
        next: &Engine,
        fates: &[Option<u16>],
        reset: &[usize],
        report: &mut ReloadReport,
    ) {
        let mut held = vec![0usize; next.rules.len()];
        next.tumbling
            .each(|key, _| held[usize::from(key.rule)] += 1);
        next.sliding.each(|key, _| held[usize::from(key.rule)] += 1);
        next.sliding_bytes
            .each(|key, _| held[usize::from(key.rule)] += 1);
        for ((rule, fate), &dropped) in self.rules.iter().zip(fates).zip(reset) {
            let name = rule.name.clone();
            match fate {
                Some(ix) => report.kept_rules.push(RuleKeys {
                    name,
                    keys: held[usize::from(*ix)],
                }),
                None if next.rules.iter().any(|r| r.name == name) => {
                    report.reset_rules.push(RuleKeys {
                        name,
                        keys: dropped,
                    });
                }
                None => report.removed_rules.push(RuleKeys {
                    name,
                    keys: dropped,
                }),
            }
        }
        let old: HashSet<&str> = self.rules.iter().map(|r| &*r.name).collect();
        report.added_rules = next
            .rules
            .iter()
            .filter(|r| !old.contains(&*r.name))
            .map(|r| r.name.clone())
            .collect();
    }
}

/// For each old rule, its index in `new` when it is there with the same effective config.
fn fates(old: &[Rule], new: &[Rule]) -> Vec<Option<u16>> {
    let by_name: HashMap<&str, usize> =
        new.iter().enumerate().map(|(i, r)| (&*r.name, i)).collect();
    old.iter()
        .map(|r| {
            let ix = *by_name.get(&*r.name)?;
            let same = r.same_effective_config(&new[ix]);
            // `Engine::new` checked that new indexes fit 16 bits.
            same.then(|| u16::try_from(ix).ok()).flatten()
        })
        .collect()
}
