//! How many bytes of request bodies the policy stage holds at once, by everyone and by one
//! source.
//!
//! To refuse a push before a byte leaves, the stage reads a management or generation body (up
//! to `policy.max_body`, 1 MiB) before forwarding it. A client that sends a body's first
//! megabyte and then waits holds that megabyte for `timeouts.body_idle`; a few thousand such
//! connections held gigabytes, and an out-of-memory kill ends every client's access. So:
//! - the first [`FREE`] bytes of each body (a chat request's JSON, most bodies) count toward
//!   their own pool of [`FREE_TOTAL`] (64 MiB: 4 096 such bodies being read at one moment),
//!   one source holding at most [`FREE_PER_SOURCE`] of it (1 MiB: 64 such bodies), and
//!   nothing else: no one who fills the rest can refuse a small body, and it takes 64 sources
//!   holding small bodies open to fill this pool;
//! - the bytes beyond them count toward [`TOTAL`] (256 MiB; or four sources' shares, when that
//!   is more), and one source holds at most [`PER_SOURCE`] of them (32 MiB; or one body of
//!   `max_body` and [`SLACK`], when that is more): an IPv4 address, an IPv6 /48;
//! - a body that would go over any of them is answered `503` with `Retry-After` at once, before
//!   anything is forwarded, and what it held is given back. It does not wait: waiting would let
//!   whoever holds the bytes hold the waiting clients too;
//! - a source's only body is never refused by the source's share: a body the stage reads is
//!   bounded by the limit it reads to (`max_body` and the one read that crosses it).
//!
//! What a body's buffer takes is counted, not only what it holds, before it is taken. A body
//! that declares its `Content-Length` (within the limit) gets one buffer of that length at its
//! first frame, counted whole: the body is admitted only if it can be held whole, and it is
//! never copied. Counting only what has arrived was tried and measured worse: in a burst of
//! 2 040 such bodies every one was admitted, each wrote into its own buffer until the count
//! filled, and the refused ones' pages stayed with the allocator (RSS 385–903 MB in five runs,
//! against 334–335 MB in three; `tests/perf/held_bodies.sh`). A client may so reserve a body it does not send, for `timeouts.body_idle`: that
//! holds what sending it would (a source's share at most, everyone's 256 MiB with eight
//! sources), and small bodies have their own pool. A body without one (chunked) grows with what
//! arrives (at least a kilobyte, then doubling, never past the limit and one byte), counted by
//! its capacity. The bytes are given back once the body's read part has been handed to the
//! upstream connection and the rest, if any, has ended, or once the request is answered.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::client_ip::source_key;

/// The bytes of each body counted in the pool of free parts, not toward [`TOTAL`] or a share.
pub(crate) const FREE: u64 = 16 << 10;
/// The bytes of free parts held at once by everyone.
pub(crate) const FREE_TOTAL: u64 = 64 << 20;
/// The bytes of free parts held at once by one source.
pub(crate) const FREE_PER_SOURCE: u64 = 1 << 20;
/// The bytes beyond the free parts held at once by everyone, at least.
pub(crate) const TOTAL: u64 = 256 << 20;
/// The bytes beyond the free parts held at once by one source, at least.
pub(crate) const PER_SOURCE: u64 = 32 << 20;
/// What a source may hold beside one body of `max_body`, when that is above [`PER_SOURCE`]:
/// more than one read of the server's connection buffer (about 400 KiB at most), by which a
/// body can cross its limit.
pub(crate) const SLACK: u64 = 1 << 20;

/// One source's share and everyone's total, for a stage reading to `max_body`.
pub(crate) fn limits(max_body: u64) -> (u64, u64) {
    let share = PER_SOURCE.max(max_body.saturating_add(SLACK));
    (share, TOTAL.max(share.saturating_mul(4)))
}

/// The capacity to give a body's buffer that holds `cap` bytes and must take `need`, reading
/// to `limit` (a body is read until it is over the limit by one byte or more), `declared` its
/// `Content-Length`: the declared length at once, else at least a kilobyte, then double, but
/// never past the limit and one byte, unless a read needs it.
pub(crate) fn capacity(cap: usize, need: usize, declared: Option<u64>, limit: u64) -> usize {
    if let Some(n) = declared.and_then(|n| usize::try_from(n).ok()) {
        if n >= need {
            return n;
        }
    }
    let most = usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX);
    need.max(cap.saturating_mul(2).max(1024).min(most))
}

/// Why a body could not grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// The source holds its share (this many bytes).
    Source(u64),
    /// Everyone together holds this many bytes, the most (of free parts, or beyond them).
    All(u64),
}

/// The counts (shared by every worker).
#[derive(Debug, Default)]
pub(crate) struct Buffered {
    /// The free parts held, by everyone.
    free: AtomicU64,
    /// The bytes beyond the free parts held, by everyone.
    used: AtomicU64,
    /// What each source holds (no entry: nothing).
    held: DashMap<IpAddr, Held>,
}

/// What one source holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Held {
    /// Of its bodies' free parts.
    free: u64,
    /// Beyond them.
    beyond: u64,
}

/// Adds `n` to `count` unless that takes it past `most` (never past it, not even for a moment:
/// a growth that fails does not refuse a concurrent one).
fn take(count: &AtomicU64, n: u64, most: u64) -> bool {
    n == 0
        || count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(n).filter(|&then| then <= most)
            })
            .is_ok()
}

impl Buffered {
    /// An empty pool.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Buffered::default())
    }

    /// Every byte held now, by everyone (free parts included).
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.free.load(Ordering::Acquire) + self.used.load(Ordering::Acquire)
    }

    /// The sources holding anything now.
    #[cfg(test)]
    pub(crate) fn sources(&self) -> usize {
        self.held.len()
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
    /// Every byte the body's buffer takes.
    bytes: u64,
}

impl Charge {
    /// Counts the body's buffer at `len` bytes in all, `max_body` being the stage's limit now.
    /// A refused growth counts nothing.
    pub(crate) fn grow(&mut self, len: u64, max_body: u64) -> Result<(), Over> {
        if len <= self.bytes {
            return Ok(());
        }
        let (share, total) = limits(max_body);
        let free = len.min(FREE) - self.bytes.min(FREE);
        let mine = self.bytes.saturating_sub(FREE);
        let more = len.saturating_sub(FREE) - mine;
        let pool = &*self.pool;
        let take_both = || {
            if !take(&pool.free, free, FREE_TOTAL) {
                return Err(Over::All(FREE_TOTAL));
            }
            if !take(&pool.used, more, total) {
                pool.free.fetch_sub(free, Ordering::AcqRel);
                return Err(Over::All(total));
            }
            Ok(())
        };
        match pool.held.entry(self.key) {
            Entry::Occupied(mut held) => {
                let h = *held.get();
                if h.free + free > FREE_PER_SOURCE {
                    return Err(Over::Source(FREE_PER_SOURCE));
                }
                // Only what the source's other bodies hold can refuse this one.
                if more > 0 && h.beyond > mine && h.beyond + more > share {
                    return Err(Over::Source(share));
                }
                take_both()?;
                let h = held.get_mut();
                h.free += free;
                h.beyond += more;
            }
            Entry::Vacant(vacant) => {
                take_both()?;
                vacant.insert(Held { free, beyond: more });
            }
        }
        self.bytes = len;
        Ok(())
    }

    /// Gives back what the body holds.
    fn release(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let free = self.bytes.min(FREE);
        let mine = self.bytes - free;
        self.pool.free.fetch_sub(free, Ordering::AcqRel);
        self.pool.used.fetch_sub(mine, Ordering::AcqRel);
        self.pool.held.remove_if_mut(&self.key, |_, held| {
            held.free -= free;
            held.beyond -= mine;
            *held == Held::default()
        });
        self.bytes = 0;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release();
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
    fn the_free_part_counts_in_its_own_pool_and_growth_counts_the_difference() {
        let pool = Buffered::new();
        let mut c = pool.charge(ip("192.0.2.1"));
        c.grow(FREE, MIB).unwrap();
        assert_eq!((pool.used(), pool.sources()), (FREE, 1));
        c.grow(FREE + 100, MIB).unwrap();
        assert_eq!(
            (
                pool.used(),
                pool.held.get(&ip("192.0.2.1")).map(|h| h.beyond)
            ),
            (FREE + 100, Some(100))
        );
        c.grow(FREE + 1000, MIB).unwrap();
        assert_eq!(pool.used(), FREE + 1000);
        c.grow(FREE + 10, MIB).unwrap();
        assert_eq!(pool.used(), FREE + 1000);
        drop(c);
        assert_eq!((pool.used(), pool.sources()), (0, 0));
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
        assert_eq!(pool.used(), 32 * (MIB + FREE));
        let mut one_more = pool.charge(ip("192.0.2.1"));
        assert_eq!(one_more.grow(FREE + 1, MIB), Err(Over::Source(PER_SOURCE)));
        // A small body of the same source still passes: its free part is not its source's.
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
        assert_eq!((pool.used(), pool.sources()), (0, 0));
    }

    #[test]
    fn everyone_together_stops_at_the_total_and_small_bodies_still_pass() {
        let pool = Buffered::new();
        let mut held = Vec::new();
        for i in 0..8u8 {
            let mut c = pool.charge(IpAddr::from([198, 51, 100, i]));
            c.grow(PER_SOURCE + FREE, MIB).unwrap();
            held.push(c);
        }
        assert_eq!(pool.used.load(Ordering::Acquire), TOTAL);
        let before = pool.used();
        let mut late = pool.charge(ip("203.0.113.9"));
        assert_eq!(late.grow(FREE + 1, MIB), Err(Over::All(TOTAL)));
        // The refused growth took nothing, not even its free part, and left no entry.
        assert_eq!(pool.used(), before);
        assert!(pool.held.get(&ip("203.0.113.9")).is_none());
        // A small body is not refused for what others hold beyond their free parts.
        late.grow(FREE, MIB).unwrap();
        assert_eq!(late.grow(FREE + 1, MIB), Err(Over::All(TOTAL)));
        held.pop();
        late.grow(FREE + MIB, MIB).unwrap();
        drop((held, late));
        assert_eq!((pool.used(), pool.sources()), (0, 0));
    }

    #[test]
    fn one_source_holds_at_most_its_share_of_free_parts() {
        let pool = Buffered::new();
        // 16 sources with 256 connections each, every one holding a body's free part: each
        // source stops at 64, and another client's small body passes.
        let mut held = Vec::new();
        for i in 0..16u8 {
            for n in 0..256 {
                let mut c = pool.charge(IpAddr::from([198, 51, 100, i]));
                let grown = c.grow(FREE, MIB);
                if n < 64 {
                    grown.unwrap();
                    held.push(c);
                } else {
                    assert_eq!(grown, Err(Over::Source(FREE_PER_SOURCE)));
                }
            }
        }
        assert_eq!(pool.used(), 16 * FREE_PER_SOURCE);
        let mut chat = pool.charge(ip("203.0.113.9"));
        chat.grow(FREE, MIB).unwrap();
        drop((held, chat));
        assert_eq!((pool.used(), pool.sources()), (0, 0));
    }

    #[test]
    fn free_parts_stop_at_their_own_pool() {
        let pool = Buffered::new();
        let n = FREE_TOTAL / FREE;
        let free: Vec<Charge> = (0..n)
            .map(|i| {
                let mut c = pool.charge(IpAddr::from((0xc000_0200 + i as u32).to_be_bytes()));
                c.grow(FREE, MIB).unwrap();
                c
            })
            .collect();
        assert_eq!(pool.used(), FREE_TOTAL);
        let mut late = pool.charge(ip("203.0.113.9"));
        assert_eq!(late.grow(1, MIB), Err(Over::All(FREE_TOTAL)));
        assert_eq!(late.grow(FREE + 1, MIB), Err(Over::All(FREE_TOTAL)));
        assert_eq!(pool.used(), FREE_TOTAL);
        drop(free);
        late.grow(FREE + 1, MIB).unwrap();
        drop(late);
        assert_eq!((pool.used(), pool.sources()), (0, 0));
    }

    #[test]
    fn a_refused_growth_of_a_source_with_an_entry_keeps_its_count_exact() {
        let pool = Buffered::new();
        let mut a = pool.charge(ip("192.0.2.1"));
        a.grow(PER_SOURCE + FREE, MIB).unwrap();
        let mut b = pool.charge(ip("192.0.2.1"));
        assert_eq!(b.grow(FREE + 1, MIB), Err(Over::Source(PER_SOURCE)));
        assert_eq!(pool.held.get(&ip("192.0.2.1")).unwrap().beyond, PER_SOURCE);
        drop(a);
        assert_eq!((pool.used(), pool.sources()), (0, 0));
        drop(b);
        assert_eq!((pool.used(), pool.sources()), (0, 0));
    }

    #[test]
    fn a_large_max_body_fits_one_body_and_its_crossing_read_and_four_sources_in_all() {
        let pool = Buffered::new();
        let max_body = 100 * MIB;
        let (share, total) = limits(max_body);
        assert_eq!((share, total), (max_body + SLACK, 4 * (max_body + SLACK)));
        // A body read to its limit and over it by a 400 KiB read.
        let mut c = pool.charge(ip("192.0.2.1"));
        c.grow(max_body + (400 << 10), max_body).unwrap();
        // The source's second body has what is left of the share.
        let mut d = pool.charge(ip("192.0.2.1"));
        let left = share - (max_body + (400 << 10) - FREE);
        d.grow(FREE + left, max_body).unwrap();
        assert_eq!(d.grow(FREE + left + 1, max_body), Err(Over::Source(share)));
        drop(d);
        // A source's only body is not refused by the share, whatever read crossed the limit.
        let mut alone = pool.charge(ip("192.0.2.7"));
        alone.grow(share + MIB, max_body).unwrap();
        drop(alone);
        // Four sources' shares fit in all, not a byte more.
        let mut held = vec![c];
        for i in 2..5u8 {
            let mut c = pool.charge(IpAddr::from([192, 0, 2, i]));
            c.grow(share + FREE, max_body).unwrap();
            held.push(c);
        }
        let mut last = pool.charge(ip("192.0.2.9"));
        let left = total - pool.used.load(Ordering::Acquire);
        last.grow(FREE + left, max_body).unwrap();
        let mut fifth = pool.charge(ip("192.0.2.10"));
        assert_eq!(fifth.grow(FREE + 1, max_body), Err(Over::All(total)));
    }

    #[test]
    fn released_bytes_are_given_back_once() {
        let pool = Buffered::new();
        let mut c = pool.charge(ip("192.0.2.1"));
        c.grow(MIB, MIB).unwrap();
        c.release();
        assert_eq!((pool.used(), pool.sources()), (0, 0));
        let mut other = pool.charge(ip("192.0.2.1"));
        other.grow(MIB, MIB).unwrap();
        drop(c);
        assert_eq!(pool.used(), MIB);
        assert_eq!(
            *pool.held.get(&ip("192.0.2.1")).unwrap(),
            Held {
                free: FREE,
                beyond: MIB - FREE
            }
        );
    }

    #[test]
    fn a_buffer_takes_the_declared_length_at_once_else_doubles_up_to_the_limit() {
        const K: usize = 1024;
        let limit = (1 << 20) as u64;
        // A declared length within the limit: exactly it, at the first frame.
        assert_eq!(capacity(0, 1, Some(5000), limit), 5000);
        // A declared length the body has outgrown (never with hyper): doubling as below.
        assert_eq!(capacity(5000, 5001, Some(5000), limit), 10_000);
        // None declared: at least a kilobyte, then doubling.
        assert_eq!(capacity(0, 100, None, limit), K);
        assert_eq!(capacity(K, K + 1, None, limit), 2 * K);
        assert_eq!(capacity(0, 3000, None, limit), 3000);
        // Never past one byte over the limit, unless a read needs it.
        assert_eq!(capacity(768 * K, 768 * K + 1, None, limit), (1 << 20) + 1);
        assert_eq!(
            capacity((1 << 20) + 1, (1 << 20) + 9000, None, limit),
            (1 << 20) + 9000
        );
    }
}
