//! The lookup structure behind the hot path, and its copy-on-write maintenance.
//!
//! Every proxied request asks whether its source is banned; bans change far less often, but
//! an attacker rotating addresses can make them change often while the table is large. So
//! the writer side ([`Index`], under the table's lock) keeps the bans in [`SHARDS`] hash
//! shards, each behind an `Arc`, and publishes a [`Snapshot`] that shares them. A change
//! copies only the one shard it touches (`Arc::make_mut`: readers of the previous
//! generation keep the old copy), so publishing costs O(bans / SHARDS + SHARDS) instead of
//! a rebuild of the whole table; a batch (expiry sweep, restore, allowlist reload) copies
//! each touched shard once and publishes once. Shards are chosen by a keyed hash, so an
//! attacker cannot aim all its bans at one shard.
//!
//! Lookups never scan: for each prefix length present in the table (longest first; usually
//! one or two: /32, or /128 and the IPv6 group) the address is truncated and probed.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use super::ban::{display_net, Ban, BanHit};

/// Number of shards: enough that one shard of a full table (100 000 bans) is a few hundred
/// entries, few enough that sharing them all costs little per publication.
pub(super) const SHARDS: usize = 256;

type Shard = Arc<HashMap<IpNet, BanHit>>;

/// Picks a shard; the same keyed hasher is used by the writer and by its snapshots.
fn shard_of(hasher: &RandomState, src: &IpNet) -> usize {
    (hasher.hash_one(src) % SHARDS as u64) as usize
}

/// The writer side: the bans indexed for lookup and expiry, kept under the table's lock.
#[derive(Debug)]
pub(super) struct Index {
    hasher: RandomState,
    shards: Vec<Shard>,
    /// How many bans there are of each (IPv6?, prefix length): the lengths lookups probe.
    prefixes: BTreeMap<(bool, u8), usize>,
    /// Every ban's end, earliest first: the sweep and the expiry timer read it in order.
    expiries: BTreeSet<(DateTime<Utc>, IpNet)>,
}

impl Default for Index {
    fn default() -> Index {
        Index {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            prefixes: BTreeMap::new(),
            expiries: BTreeSet::new(),
        }
    }
}

impl Index {
    /// Indexes `ban`, whose source must not be indexed yet.
    pub(super) fn insert(&mut self, ban: &Ban) {
        let hit = BanHit {
            src: ban.src,
            display: Arc::from(display_net(&ban.src)),
            rule: Arc::clone(&ban.rule),
            until: ban.until,
        };
        let shard = shard_of(&self.hasher, &ban.src);
        Arc::make_mut(&mut self.shards[shard]).insert(ban.src, hit);
        *self.prefixes.entry(family_len(&ban.src)).or_default() += 1;
        self.expiries.insert((ban.until, ban.src));
    }

    /// Forgets `ban` (as it was indexed).
    pub(super) fn remove(&mut self, ban: &Ban) {
        let shard = shard_of(&self.hasher, &ban.src);
        Arc::make_mut(&mut self.shards[shard]).remove(&ban.src);
        let key = family_len(&ban.src);
        if let Some(n) = self.prefixes.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.prefixes.remove(&key);
            }
        }
        self.expiries.remove(&(ban.until, ban.src));
    }

    /// The sources of bans that ended by `now`, earliest end first.
    pub(super) fn ended(&self, now: DateTime<Utc>) -> Vec<IpNet> {
        self.expiries
            .iter()
            .take_while(|(until, _)| *until <= now)
            .map(|(_, src)| *src)
            .collect()
    }

    /// A generation for readers, sharing the current shards.
    pub(super) fn snapshot(&self) -> Snapshot {
        let lengths = |v6: bool| -> Vec<u8> {
            let mut lens: Vec<u8> = (self.prefixes.keys())
                .filter(|(is_v6, _)| *is_v6 == v6)
                .map(|(_, len)| *len)
                .collect();
            lens.reverse();
            lens
        };
        Snapshot {
            hasher: self.hasher.clone(),
            shards: self.shards.clone(),
            v4_lengths: lengths(false),
            v6_lengths: lengths(true),
            next_expiry: self.expiries.first().map(|(until, _)| *until),
        }
    }
}

fn family_len(net: &IpNet) -> (bool, u8) {
    (matches!(net, IpNet::V6(_)), net.prefix_len())
}

/// One published generation of the ban table, immutable.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    hasher: RandomState,
    pub(super) shards: Vec<Shard>,
    /// Prefix lengths of IPv4 bans present, longest first.
    v4_lengths: Vec<u8>,
    /// Prefix lengths of IPv6 bans present, longest first.
    v6_lengths: Vec<u8>,
    /// The earliest `until` of all bans, for the expiry timer.
    next_expiry: Option<DateTime<Utc>>,
}

impl Snapshot {
    /// The active ban covering `ip` (already canonical: IPv4-mapped is IPv4), the most
    /// specific first, if any. A ban whose `until` has passed no longer matches even before
    /// the sweep removes it.
    pub(super) fn lookup(&self, ip: IpAddr, now: DateTime<Utc>) -> Option<&BanHit> {
        let lengths = if ip.is_ipv4() {
            &self.v4_lengths
        } else {
            &self.v6_lengths
        };
        lengths.iter().find_map(|&len| {
            let key = IpNet::new(ip, len).ok()?.trunc();
            self.shards[shard_of(&self.hasher, &key)]
                .get(&key)
                .filter(|hit| hit.until > now)
        })
    }

    /// The earliest end of any ban in this generation.
    pub(super) fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.next_expiry
    }
}
