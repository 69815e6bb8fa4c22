//! The zstd decoder slots of the policy stage: how many compressed request bodies are decoded
//! at once, by everyone and by one source, and how fast a body holding a slot must arrive.
//!
//! Each decoder may hold a window of up to 8 MiB (what Ollama allows), so the slots bound the
//! stage's decoding memory. A bound is something to exhaust, so three rules keep one client
//! from taking every slot:
//! - at most [`DECODERS`] bodies are decoded at once, and at most [`PER_SOURCE`] of them come
//!   from one source (an IPv4 address, an IPv6 /48); a request beyond either is answered `503`
//!   with `Retry-After` before anything is forwarded;
//! - a body holding a slot must keep arriving at [`MIN_RATE`] bytes a second on average, after
//!   a [`GRACE`] (Apache's `mod_reqtimeout` `MinRate`), counting only the time the proxy waits
//!   on the client (as the idle timer does): one that falls behind is cut and answered `408`,
//!   as a stalled body is, and its slot freed;
//! - a body cannot hold a slot forever however fast it trickles: the decoder refuses more
//!   compressed bytes than any encoder makes of what Ollama reads (see
//!   [`crate::policy::inflate::MAX_COMPRESSED`]).
//!
//! Decoding is work on the worker's thread, so it is done in slices of [`SLICE`] bytes of work
//! (decompressed bytes scanned, compressed bytes taken in, and a little for each frame: see
//! [`Inflate::feed_for`]; about half a millisecond at worst), and the worker serves
//! its other connections between two slices: a body that expands to 20 MiB does not stall them
//! for the tenth of a second it takes in all.
//!
//! Only a body decoded *as it streams* (larger than `policy.max_body`) holds a slot from the
//! start. One the stage has read whole is decoded on the spot by its worker's own decoder
//! ([`scratch`]), so a client's small compressed requests never wait for slots that others
//! hold. Should it expand past one slice, its decoder moves, mid-frame, into a slot of a pool of
//! its own ([`Decoders::take_whole`]: [`WHOLE`] slots, [`WHOLE_PER_SOURCE`] to a source). The
//! bodies in that pool are all in hand, so each frees its slot as soon as the CPU has decoded
//! it: a body finding every slot taken waits its turn (first come, first served) instead of
//! being refused, only a source over its share is answered `503`, and bodies trickling into
//! the streaming slots cannot hold these.
//!
//! A slot comes with its decoder. A freed slot's decoder is kept for the next body (creating
//! one costs more than proxying a request), unless a frame made it hold a large window; there
//! are never more decoders, in use or kept, than slots (plus one per worker).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::policy::inflate::{Inflate, InflateError};
use crate::proxy::client_ip::source_key;

/// How many zstd bodies are decoded at once, process-wide: about 260 MiB of windows at most.
pub(crate) const DECODERS: usize = 32;
/// How many of them one source may hold.
pub(crate) const PER_SOURCE: usize = 4;
/// The average rate a body holding a slot must keep, in bytes a second…
pub(crate) const MIN_RATE: u64 = 4 << 10;
/// …counted after this long.
pub(crate) const GRACE: Duration = Duration::from_secs(10);

/// The work (decompressed bytes, mostly) done before the worker lets its other connections
/// run: about 0.6 ms at the scan's worst (10 ns a byte: the shortest top-level members), far
/// less for ordinary text.
pub(crate) const SLICE: u64 = 64 << 10;
/// Slots for bodies read whole that expand past one slice…
pub(crate) const WHOLE: usize = 8;
/// …and how many of them one source may hold.
pub(crate) const WHOLE_PER_SOURCE: usize = 2;

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
    /// The source holds its share (this many slots) already.
    Source(usize),
    /// Every slot (this many) is taken.
    All(usize),
}

/// The slots (shared by every worker).
#[derive(Debug)]
pub(crate) struct Decoders {
    slots: Arc<Semaphore>,
    total: usize,
    per_source: usize,
    held: DashMap<IpAddr, usize>,
    /// Decoders of freed slots, ready for reuse.
    idle: Mutex<Vec<Inflate>>,
    /// The pool for bodies read whole ([`Decoders::take_whole`]); none in that pool itself.
    whole: Option<Arc<Decoders>>,
}

impl Decoders {
    /// `total` slots, `per_source` of them at most to one source, and the standard pool for
    /// bodies read whole.
    pub(crate) fn new(total: usize, per_source: usize) -> Arc<Self> {
        Self::with_whole(total, per_source, (WHOLE, WHOLE_PER_SOURCE))
    }

    /// [`Decoders::new`], with `whole` = (slots, per source) for bodies read whole.
    pub(crate) fn with_whole(total: usize, per_source: usize, whole: (usize, usize)) -> Arc<Self> {
        Self::pool(total, per_source, Some(Self::pool(whole.0, whole.1, None)))
    }

    fn pool(total: usize, per_source: usize, whole: Option<Arc<Decoders>>) -> Arc<Self> {
        Arc::new(Decoders {
            slots: Arc::new(Semaphore::new(total)),
            total,
            per_source,
            held: DashMap::new(),
            idle: Mutex::new(Vec::new()),
            whole,
        })
    }

    /// The production sizes.
    pub(crate) fn standard() -> Arc<Self> {
        Self::new(DECODERS, PER_SOURCE)
    }

    /// A slot for a body from `src`, with its decoder, or why not (a decoder libzstd cannot
    /// allocate counts as every slot taken).
    pub(crate) fn take(self: &Arc<Self>, src: IpAddr) -> Result<Slot, Busy> {
        let share = self.share(src)?;
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return Err(Busy::All(self.total));
        };
        self.slot(share, permit)
    }

    /// Counts one more body of `src`'s against its share; `Busy::Source` when it is full.
    fn share(self: &Arc<Self>, src: IpAddr) -> Result<Share, Busy> {
        let key = source_key(src);
        let mut held = self.held.entry(key).or_insert(0);
        if *held >= self.per_source {
            return Err(Busy::Source(self.per_source));
        }
        *held += 1;
        Ok(Share {
            pool: self.clone(),
            key,
        })
    }

    /// The slot for `share` and `permit`, with its decoder: found without holding the map's
    /// lock; should none be had, dropping the parts gives the count and the permit back.
    fn slot(self: &Arc<Self>, share: Share, permit: OwnedSemaphorePermit) -> Result<Slot, Busy> {
        let kept = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let inflate = kept.or_else(|| Inflate::new().ok());
        Ok(Slot {
            inflate: Some(inflate.ok_or(Busy::All(self.total))?),
            _permit: permit,
            share,
        })
    }

    /// A slot for a body read whole that expands past one [`SLICE`], from the pool kept for
    /// such bodies (see the module docs), without waiting.
    pub(crate) fn try_take_whole(self: &Arc<Self>, src: IpAddr) -> Result<Slot, Busy> {
        self.whole.as_ref().unwrap_or(self).take(src)
    }

    /// [`Decoders::try_take_whole`], waiting in turn (first come, first served) while every
    /// slot of the pool is taken: their bodies are all in hand, so each is freed as soon as the
    /// CPU has decoded it. Only a source over its share is refused.
    pub(crate) async fn take_whole(self: &Arc<Self>, src: IpAddr) -> Result<Slot, Busy> {
        let pool = self.whole.as_ref().unwrap_or(self);
        let share = pool.share(src)?;
        let permit = pool.slots.clone().acquire_owned().await;
        pool.slot(share, permit.map_err(|_| Busy::All(pool.total))?)
    }

    /// Slots free now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// The pool for bodies read whole.
    #[cfg(test)]
    pub(crate) fn whole(&self) -> &Arc<Decoders> {
        self.whole.as_ref().expect("a top-level pool")
    }

    /// Decoders kept for reuse now.
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
    }

    /// Sources holding a slot now.
    #[cfg(test)]
    pub(crate) fn sources(&self) -> usize {
        self.held.len()
    }
}

thread_local! {
    /// This worker's decoder for bodies read whole.
    static SCRATCH: std::cell::RefCell<Option<Inflate>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this worker's decoder for a body read whole (made ready for a new body, and
/// kept for the next one unless a frame made it hold a large window). `f` must not wait: the
/// decoder is the worker's only one.
pub(crate) fn scratch<R>(f: impl FnOnce(&mut Inflate) -> R) -> Result<R, InflateError> {
    let kept = SCRATCH.with(|cell| cell.borrow_mut().take());
    let mut inflate = match kept {
        Some(inflate) => inflate,
        None => Inflate::new()?,
    };
    let out = f(&mut inflate);
    if inflate.reset() {
        SCRATCH.with(|cell| *cell.borrow_mut() = Some(inflate));
    }
    Ok(out)
}

/// A decoder slot and its decoder, freed on drop (the decoder kept for reuse first, then the
/// permit, then the source's count).
#[derive(Debug)]
pub(crate) struct Slot {
    /// Set when the slot is made; taken only on drop.
    inflate: Option<Inflate>,
    _permit: OwnedSemaphorePermit,
    share: Share,
}

/// One body counted against its source's share, until dropped.
#[derive(Debug)]
struct Share {
    pool: Arc<Decoders>,
    key: IpAddr,
}

impl Drop for Share {
    fn drop(&mut self) {
        if let Some(mut n) = self.pool.held.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
        self.pool.held.remove_if(&self.key, |_, n| *n == 0);
    }
}

impl Slot {
    /// The slot's decoder, ready for a new body.
    pub(crate) fn inflate(&mut self) -> &mut Inflate {
        match &mut self.inflate {
            Some(inflate) => inflate,
            None => unreachable!("a slot's decoder is taken only when the slot is dropped"),
        }
    }
}

/// How long a body holding a slot may have waited on its client, in all, once it has sent
/// `taken` compressed bytes: [`GRACE`] plus a second for every [`MIN_RATE`] bytes.
pub(crate) fn allowance(taken: u64) -> Duration {
    let secs = taken / MIN_RATE;
    let part = Duration::from_nanos((taken % MIN_RATE) * 1_000_000_000 / MIN_RATE);
    GRACE + Duration::from_secs(secs) + part
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Kept before the permit is released, so the next slot finds it.
        if let Some(mut inflate) = self.inflate.take() {
            if inflate.reset() {
                if let Ok(mut idle) = self.share.pool.idle.lock() {
                    idle.push(inflate);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_source_holds_at_most_its_share_and_others_still_get_slots() {
        let d = Decoders::new(6, 2);
        let a1 = d.take(ip("192.0.2.1")).unwrap();
        let _a2 = d.take(ip("192.0.2.1")).unwrap();
        assert_eq!(d.take(ip("192.0.2.1")).unwrap_err(), Busy::Source(2));
        // An IPv6 /48 is one source, and a v4-mapped address is its IPv4 address.
        let _b1 = d.take(ip("2001:db8:1:2::1")).unwrap();
        let _b2 = d.take(ip("2001:db8:1:ffff::9")).unwrap();
        assert_eq!(d.take(ip("2001:db8:1:3::7")).unwrap_err(), Busy::Source(2));
        assert_eq!(d.take(ip("::ffff:192.0.2.1")).unwrap_err(), Busy::Source(2));
        let _c = d.take(ip("2001:db8:2::1")).unwrap();
        assert_eq!((d.available(), d.sources()), (1, 3));
        drop(a1);
        assert_eq!(d.available(), 2);
        let _a3 = d.take(ip("192.0.2.1")).unwrap();
        let _e = d.take(ip("198.51.100.5")).unwrap();
        assert_eq!(d.take(ip("198.51.100.6")).unwrap_err(), Busy::All(6));
        // A refused source leaves no entry behind.
        assert_eq!((d.available(), d.sources()), (0, 4));
    }

    #[test]
    fn every_slot_returned_leaves_nothing_held() {
        let d = Decoders::new(3, 3);
        let slots: Vec<_> = (0..3).map(|_| d.take(ip("192.0.2.1")).unwrap()).collect();
        assert_eq!(d.take(ip("192.0.2.2")).unwrap_err(), Busy::All(3));
        drop(slots);
        assert_eq!((d.available(), d.sources()), (3, 0));
    }

    #[test]
    fn a_freed_slots_decoder_is_kept_for_the_next_unless_it_held_a_large_window() {
        let d = Decoders::new(2, 2);
        let src = ip("192.0.2.1");
        let small = zstd::encode_all(&br#"{"model":"m"}"#[..], 3).unwrap();
        let mut s = d.take(src).unwrap();
        s.inflate().feed(&small, &mut |_| true).unwrap();
        drop(s);
        assert_eq!(d.kept(), 1);
        // The kept decoder starts afresh: the next body decodes from its first byte.
        let mut s = d.take(src).unwrap();
        assert_eq!(d.kept(), 0);
        let mut out = Vec::new();
        s.inflate()
            .feed(&small, &mut |p| {
                out.extend_from_slice(p);
                true
            })
            .unwrap();
        assert_eq!(
            (out.as_slice(), s.inflate().finish()),
            (&br#"{"model":"m"}"#[..], Ok(()))
        );
        // A frame that asked for a 2 MiB window: its decoder is not kept.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(21))
            .unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, b"{}").unwrap();
        let wide = enc.finish().unwrap();
        s.inflate().feed(&wide, &mut |_| true).unwrap();
        drop(s);
        assert_eq!((d.kept(), d.available()), (0, 2));
    }

    #[test]
    fn a_worker_decodes_whole_bodies_with_one_decoder_started_afresh_each_time() {
        let z = zstd::encode_all(&br#"{"model":"m"}"#[..], 3).unwrap();
        for _ in 0..3 {
            let out = scratch(|inflate| {
                let mut out = Vec::new();
                // Half a frame, left unfinished: the next run must not see it.
                inflate.feed(&z[..5], &mut |_| true).unwrap();
                assert_eq!(inflate.finish(), Err(InflateError::Truncated));
                inflate.reset();
                inflate
                    .feed(&z, &mut |p| {
                        out.extend_from_slice(p);
                        true
                    })
                    .unwrap();
                out
            })
            .unwrap();
            assert_eq!(out, br#"{"model":"m"}"#);
        }
        // The decoder left half-way through a frame is reset for the next caller.
        scratch(|inflate| inflate.feed(&z[..5], &mut |_| true).unwrap()).unwrap();
        let fresh = scratch(|inflate| inflate.finish()).unwrap();
        assert_eq!(fresh, Ok(()));
    }

    #[test]
    fn the_allowance_grows_by_a_second_per_min_rate_bytes() {
        assert_eq!(allowance(0), GRACE);
        assert_eq!(allowance(MIN_RATE * 3), GRACE + Duration::from_secs(3));
        assert_eq!(allowance(MIN_RATE / 4), GRACE + Duration::from_millis(250));
    }

    #[tokio::test]
    async fn a_body_waiting_for_a_whole_slot_counts_against_its_share_until_served_or_gone() {
        let decoders = Decoders::with_whole(1, 1, (1, 1));
        let whole = decoders.whole().clone();
        let first = decoders.try_take_whole(ip("192.0.2.1")).unwrap();
        assert_eq!(
            decoders.try_take_whole(ip("192.0.2.2")).unwrap_err(),
            Busy::All(1)
        );
        // The streaming pool is another pool.
        let streaming = decoders.take(ip("192.0.2.2")).unwrap();
        // A second client waits; while it waits its share is in use.
        let waiting = tokio::spawn({
            let decoders = decoders.clone();
            async move { decoders.take_whole(ip("192.0.2.2")).await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(whole.sources(), 2);
        assert_eq!(
            decoders.take_whole(ip("192.0.2.2")).await.unwrap_err(),
            Busy::Source(1)
        );
        // Gone while waiting (the client closed): its share is given back.
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        assert_eq!(whole.sources(), 1);
        // Waiting again, it is served once the slot is free.
        let waiting = tokio::spawn({
            let decoders = decoders.clone();
            async move { decoders.take_whole(ip("192.0.2.2")).await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(
            (whole.available(), whole.sources(), whole.kept()),
            (1, 0, 1)
        );
        drop(streaming);
        assert_eq!((decoders.available(), decoders.sources()), (1, 0));
    }
}
