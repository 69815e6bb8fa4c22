//! The cap on the ban table: a source rotating addresses (IPv6 /64s inside one /48 give
//! 65 536 of them) must not grow the table, and the work of keeping it, without bound.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};

use super::ban::display_net;
use super::table::Inner;

/// The most bans the table holds before rule bans are widened or refused
/// ([`BanOutcome::TableFull`](super::BanOutcome::TableFull)). Admin bans and restored bans
/// are not refused.
pub(crate) const MAX_BANS: usize = 100_000;

/// The most sources whose offence history (what escalation counts) is kept. Bans that end
/// quickly leave their histories behind for the ban memory (`[ban] memory`, 7 days by
/// default): a source rotating addresses would grow them without bound. Past the cap the
/// histories whose last offence is oldest are forgotten, never those of sources banned now.
pub(crate) const MAX_OFFENDERS: usize = 2 * MAX_BANS;

/// When the table is full, an IPv6 offender is banned with its network of this length.
const WIDENED_PREFIX: u8 = 48;

impl Inner {
    /// Where a rule ban of `key` (for `ip`) goes given [`MAX_BANS`]: `key` while there is
    /// room or it replaces an (ended) ban of the same source; when full, `ip`'s /48 with the
    /// reason saying so; `None` when there is no room. An IPv4 client's address in a NAT64
    /// prefix is never widened, like an IPv4 address: its /48 holds every IPv4 client of the
    /// translator.
    pub(super) fn fit(&self, key: IpNet, ip: IpAddr, reason: String) -> Option<(IpNet, String)> {
        if self.bans.len() < self.max_bans || self.bans.contains_key(&key) {
            return Some((key, reason));
        }
        let IpAddr::V6(v6) = ip else { return None };
        if crate::ip::is_own_source_v6(v6) {
            return None;
        }
        let wide = widened(v6)?;
        let headroom = self.max_bans / 10;
        let room = self.bans.len() < self.max_bans + headroom || self.bans.contains_key(&wide);
        if key.prefix_len() <= WIDENED_PREFIX || self.allowlisted(&wide) || !room {
            return None;
        }
        let reason = format!(
            "{reason} (ban table full: widened to {})",
            display_net(&wide)
        );
        Some((wide, reason))
    }
}

/// The /48 of an IPv6 address.
fn widened(ip: Ipv6Addr) -> Option<IpNet> {
    Ipv6Net::new(ip, WIDENED_PREFIX)
        .ok()
        .map(|n| IpNet::V6(n.trunc()))
}
