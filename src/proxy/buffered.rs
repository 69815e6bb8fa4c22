//! How many bytes of request bodies the policy stage holds at once, by everyone and by one
//! source.
//!
//! To refuse a push before a byte leaves, the stage reads a management or generation body (up
//! to `policy.max_body`, 1 MiB) before forwarding it. A client that sends a body's first
//! megabyte and then waits holds that megabyte for `timeouts.body_idle`; a few thousand such
//! connections held gigabytes, and an out-of-memory kill ends every client's access. So:
//! - the first [`FREE`] bytes of every body are not counted (a chat request's JSON, most
//!   bodies in all: they are bounded by the connection limits, 16 KiB a connection);
//! - beyond them, at most [`TOTAL`] bytes are held at once (or four bodies of `max_body`,
//!   when that is more), and at most [`PER_SOURCE`] (or one body of `max_body` and its
//!   free part, when that is more) by one source: an IPv4 address, an IPv6 /48;
//! - a body that would go over either is answered `503` with `Retry-After` at once, before
//!   anything is forwarded, and what it held is given back. It does not wait: waiting would let
//!   whoever holds the bytes hold the waiting clients too.
//!
//! What a body's buffer takes is counted, not what it holds (it grows by doubling), so the
//! memory the stage holds is what is counted, plus one buffer's growth per worker at most. The
//! bytes are given back when the request is answered (its body has gone upstream by then, or
//! been refused).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::decoders::source_key;

/// The bytes of a body not counted.
pub(crate) const FREE: u64 = 16 << 10;
/// The bytes held at once by everyone (beyond each body's free part), at least.
pub(crate) const TOTAL: u64 = 256 << 20;
/// The bytes held at once by one source, at least.
pub(crate) const PER_SOURCE: u64 = 32 << 20;

/// Why a body could not grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// The source holds its share (this many bytes).
    Source(u64),
    /// Everyone together holds this many bytes, the most.
    All(u64),
}

/// The counts (shared by every worker).
#[derive(Debug, Default)]
pub(crate) struct Buffered {
    used: AtomicU64,
    held: DashMap<IpAddr, u64>,
}

impl Buffered {
    /// An empty pool.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Buffered::default())
    }

    /// The bytes held now, by everyone.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// A charge of nothing yet for a body of `src`'s.
    pub(crate) fn charge(self: &Arc<Self>, src: IpAddr) -> Charge {
        Charge {
            pool: self.clone(),
            key: source_key(src),
            bytes: 0,
        }
    }
}

/// What one body holds; given back on drop.
#[derive(Debug)]
pub(crate) struct Charge {
    pool: Arc<Buffered>,
    key: IpAddr,
    bytes: u64,
}

impl Charge {
    /// Counts the body at `len` bytes in all, `max_body` being the stage's limit now.
    pub(crate) fn grow(&mut self, len: u64, max_body: u64) -> Result<(), Over> {
        let want = len.saturating_sub(FREE);
        if want <= self.bytes {
            return Ok(());
        }
        let more = want - self.bytes;
        let per_source = PER_SOURCE.max(max_body.saturating_add(FREE));
        let total = TOTAL.max(max_body.saturating_mul(4));
        let mut held = self.pool.held.entry(self.key).or_insert(0);
        if *held + more > per_source {
            return Err(Over::Source(per_source));
        }
        let all = self.pool.used.fetch_add(more, Ordering::AcqRel) + more;
        if all > total {
            self.pool.used.fetch_sub(more, Ordering::AcqRel);
            return Err(Over::All(total));
        }
        *held += more;
        self.bytes = want;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        self.pool.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.pool.held.remove_if_mut(&self.key, |_, held| {
            *held -= self.bytes;
            *held == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_free_part_is_not_counted_and_growth_counts_only_the_difference() {
        let pool = Buffered::new();
        let mut c = pool.charge(ip("192.0.2.1"));
        c.grow(FREE, MIB).unwrap();
        assert_eq!(pool.used(), 0);
        c.grow(FREE + 100, MIB).unwrap();
        assert_eq!(pool.used(), 100);
        c.grow(FREE + 1000, MIB).unwrap();
        assert_eq!(pool.used(), 1000);
        c.grow(FREE + 10, MIB).unwrap();
        assert_eq!(pool.used(), 1000);
        drop(c);
        assert_eq!(pool.used(), 0);
        assert!(pool.held.is_empty());
    }

    #[test]
    fn one_source_stops_at_its_share_and_others_go_on() {
        let pool = Buffered::new();
        // 32 bodies of a megabyte (beyond the free part) fill one source's share.
        let mut held: Vec<Charge> = (0..32)
            .map(|_| {
                let mut c = pool.charge(ip("192.0.2.1"));
                c.grow(MIB + FREE, MIB).unwrap();
                c
            })
            .collect();
        assert_eq!(pool.used(), 32 * MIB);
        let mut one_more = pool.charge(ip("192.0.2.1"));
        assert_eq!(one_more.grow(FREE + 1, MIB), Err(Over::Source(PER_SOURCE)));
        // A small body of the same source still passes: its free part is not counted.
        let mut small = pool.charge(ip("192.0.2.1"));
        small.grow(FREE, MIB).unwrap();
        // Another source, and an IPv6 address in another /48, are not held up; one in the same
        // /48 is the same source.
        pool.charge(ip("192.0.2.2")).grow(MIB, MIB).unwrap();
        let mut v6 = pool.charge(ip("2001:db8:1::1"));
        v6.grow(PER_SOURCE + FREE, MIB).unwrap();
        let mut same48 = pool.charge(ip("2001:db8:1:ffff::2"));
        assert_eq!(same48.grow(FREE + 1, MIB), Err(Over::Source(PER_SOURCE)));
        pool.charge(ip("2001:db8:2::1"))
            .grow(FREE + 1, MIB)
            .unwrap();
        // Giving one back makes room for exactly that much.
        held.pop();
        one_more.grow(MIB + FREE, MIB).unwrap();
        assert_eq!(
            one_more.grow(MIB + FREE + 1, MIB),
            Err(Over::Source(PER_SOURCE))
        );
        drop((held, one_more, small, v6, same48));
        assert_eq!(pool.used(), 0);
        assert!(pool.held.is_empty());
    }

    #[test]
    fn everyone_together_stops_at_the_total() {
        let pool = Buffered::new();
        let mut held = Vec::new();
        for i in 0..8u8 {
            let mut c = pool.charge(IpAddr::from([198, 51, 100, i]));
            c.grow(PER_SOURCE + FREE, MIB).unwrap();
            held.push(c);
        }
        assert_eq!(pool.used(), TOTAL);
        let mut late = pool.charge(ip("203.0.113.9"));
        assert_eq!(late.grow(FREE + 1, MIB), Err(Over::All(TOTAL)));
        // The refused growth took nothing: the pool is as full as before.
        assert_eq!(pool.used(), TOTAL);
        late.grow(FREE, MIB).unwrap();
        held.truncate(7);
        late.grow(FREE + 1, MIB).unwrap();
    }

    #[test]
    fn a_max_body_above_the_shares_widens_them_to_fit_its_bodies() {
        let pool = Buffered::new();
        let max_body = 100 * MIB;
        let mut c = pool.charge(ip("192.0.2.1"));
        c.grow(max_body + FREE, max_body).unwrap();
        // The share is one such body with a free part's slack (a read stops a frame past
        // the limit).
        let mut d = pool.charge(ip("192.0.2.1"));
        d.grow(2 * FREE, max_body).unwrap();
        assert_eq!(
            d.grow(2 * FREE + 1, max_body),
            Err(Over::Source(max_body + FREE))
        );
        drop(d);
        // Four bodies of max_body fit in all, not a fifth.
        let mut held = Vec::new();
        for i in 2..5u8 {
            let mut c = pool.charge(IpAddr::from([192, 0, 2, i]));
            c.grow(max_body + FREE, max_body).unwrap();
            held.push(c);
        }
        assert_eq!(pool.used(), 4 * max_body);
        let mut fifth = pool.charge(ip("192.0.2.9"));
        assert_eq!(fifth.grow(FREE + 1, max_body), Err(Over::All(4 * max_body)));
    }
}
