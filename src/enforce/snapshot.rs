//! The immutable lookup structure behind the hot path.
//!
//! Every proxied request asks whether its source is banned, while bans change only a few
//! times a minute at most. So the table is rebuilt into a fresh `Snapshot` on every change
//! (under the table's lock, O(bans)) and published through an `ArcSwap`; readers never lock.
//! Lookups are two hash probes (the exact address, then its IPv6 group) and a scan of the
//! few bans that are neither (admin CIDRs, IPv6 groups of another prefix length).

use std::collections::HashMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use super::ban::BanHit;
use crate::detect::SourceKey;

/// One published generation of the ban table.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    /// The IPv6 grouping the `keyed` map was built for.
    ipv6_prefix: u8,
    /// Single-address bans and IPv6 group bans of exactly `ipv6_prefix` bits.
    keyed: HashMap<IpNet, BanHit>,
    /// All other networks: matched by containment.
    wide: Vec<BanHit>,
    /// The earliest `until` of all bans, for the expiry timer.
    next_expiry: Option<DateTime<Utc>>,
}

impl Snapshot {
    /// A table with no bans (the start state).
    pub(super) fn empty(ipv6_prefix: u8) -> Snapshot {
        Snapshot {
            ipv6_prefix,
            ..Snapshot::default()
        }
    }

    /// Indexes `hits` for lookups under IPv6 grouping `ipv6_prefix`.
    pub(super) fn build<'a>(hits: impl Iterator<Item = &'a BanHit>, ipv6_prefix: u8) -> Snapshot {
        let mut snap = Snapshot::empty(ipv6_prefix);
        for hit in hits {
            let keyed = hit.src.prefix_len() == hit.src.max_prefix_len()
                || (matches!(hit.src, IpNet::V6(_)) && hit.src.prefix_len() == ipv6_prefix);
            if keyed {
                snap.keyed.insert(hit.src, hit.clone());
            } else {
                snap.wide.push(hit.clone());
            }
            snap.next_expiry = Some(match snap.next_expiry {
                Some(t) => t.min(hit.until),
                None => hit.until,
            });
        }
        snap
    }

    /// The active ban covering `ip` (already canonical: IPv4-mapped is IPv4), if any. A ban
    /// whose `until` has passed no longer matches even before the sweep removes it.
    pub(super) fn lookup(&self, ip: IpAddr, now: DateTime<Utc>) -> Option<&BanHit> {
        let active = |hit: &&BanHit| hit.until > now;
        if let Some(hit) = self.keyed.get(&IpNet::from(ip)).filter(active) {
            return Some(hit);
        }
        if ip.is_ipv6() && self.ipv6_prefix < 128 {
            let group = SourceKey::new(ip, self.ipv6_prefix).network();
            if let Some(hit) = self.keyed.get(&group).filter(active) {
                return Some(hit);
            }
        }
        self.wide
            .iter()
            .find(|hit| hit.until > now && hit.src.contains(&ip))
    }

    /// The earliest end of any ban in this generation.
    pub(super) fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.next_expiry
    }
}
