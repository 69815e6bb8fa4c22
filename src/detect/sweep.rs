//! Closing windows and keeping the key count under the cap.
//!
//! [`Engine::tick`] and [`Engine::finish`] close windows (emitting the summaries of flagged
//! keys) and forget idle keys. The cap is enforced on insertion: when a *new* key would
//! exceed `max_tracked_keys`, the oldest ~1% of keys (by last update) are evicted in one
//! pass, so the full scan happens once per ~1% of inserts, never per insert. Evicted flagged
//! keys emit their summary first, so a detection is never left without its closing line.

use std::sync::atomic::Ordering;
use std::sync::TryLockError;

use chrono::{DateTime, Utc};

use super::engine::{bucket_index, sub_bucket_ms, window_secs, Engine, KeyStore, Maps};
use super::event::Event;
use super::sliding::{Ring, Sliding, SUB_BUCKETS};
use super::source::SourceKey;
use super::window::{Snapshot, Tumbling, WindowKey};

impl<M: Maps> Engine<M> {
    /// Closes every tumbling window that ended at or before `now` (emitting summaries for
    /// flagged keys and forgetting the keys), moves sliding windows up to `now` (emitting a
    /// summary when a flagged key has fallen below its threshold), and forgets sliding keys
    /// whose windows are empty. Events are appended to `out` sorted by window start, source,
    /// path and rule.
    ///
    /// The tumbling keys are walked only when one of them may be due: `tumbling_due` holds
    /// the earliest window end any of them can have. Tumbling windows are clock-aligned, so
    /// with 5-minute windows and a tick every second (`serve`) or every minute of log time
    /// (`scan`) nearly every tick skips that walk, which held each shard's lock for the whole
    /// shard: with 200 000 tracked keys, about a millisecond per shard, every second.
    ///
    /// Why the skip never misses a due key: before walking, `tumbling_due` is set to "none";
    /// every key that outlives the walk lowers it to its end. A key inserted meanwhile lowers
    /// it itself, under its shard's lock and before it is in the map: either the walk
    /// visits its shard after that (and sees the key), or the insert comes after the walk
    /// left the shard, hence after the reset. A window only ever moves later (a new window
    /// replaces an ended one in `observe`), so a stale lower value costs one empty walk.
    ///
    /// Sliding keys (`sliding_due`, epoch ms): moving a key up to now changes it only when
    /// its oldest request leaves the ring (its count can fall, its episode end, or, empty, it
    /// is forgotten). Every counted request, and every in-flight report that moves a key,
    /// lowers the bound to the time its key next changes; a walk sets it to the earliest such
    /// time of the keys it keeps. A walk moves only the keys whose change has come, and
    /// leaves every other key's newest sub-bucket where its newest request put it. So a key
    /// is moved at the same ticks whether or not unrelated keys made the tick walk, and a
    /// skipped walk changes nothing a walk would have: not even for a record older than the
    /// last tick (a wall clock stepped back, a record delayed past `serve`'s grace), which
    /// is then counted or late by the key's own newest request, never by when a walk ran.
    pub(crate) fn tick(&self, now: DateTime<Utc>, out: &mut Vec<Event>) {
        let first = out.len();
        let now_secs = now.timestamp();
        let mut removed = 0usize;
        let due = self.tumbling_due.load(Ordering::Acquire);
        if i64::try_from(due).unwrap_or(i64::MAX) <= now_secs {
            self.tumbling_due.store(u64::MAX, Ordering::Release);
            let mut earliest = u64::MAX;
            self.tumbling.keep(|key, st| {
                let end = st.window_end(window_secs(&self.rules[usize::from(key.rule)]));
                if i64::try_from(end).unwrap_or(i64::MAX) > now_secs {
                    earliest = earliest.min(end);
                    return true;
                }
                self.close_tumbling(key, st, out);
                removed += 1;
                false
            });
            self.tumbling_due.fetch_min(earliest, Ordering::AcqRel);
        }
        // The sliding keys likewise, with `sliding_due`: a key changes when moved up to now
        // only once its oldest request leaves its ring.
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        let due = self.sliding_due.load(Ordering::Acquire);
        if due <= now_ms {
            self.sliding_due.store(u64::MAX, Ordering::Release);
            let mut earliest = u64::MAX;
            removed += self.tick_sliding(&self.sliding, now, &mut earliest, out);
            removed += self.tick_sliding(&self.sliding_bytes, now, &mut earliest, out);
            self.sliding_due.fetch_min(earliest, Ordering::AcqRel);
        }
        self.keys.fetch_sub(removed, Ordering::Relaxed);
        // `scan` sorts its rows itself (one per key and batch, so the order within a batch
        // cannot show).
        if !self.rows_only {
            sort_events(&mut out[first..]);
        }
    }

    /// [`Engine::tick`] for one sliding map; returns the keys forgotten, and lowers
    /// `earliest` (epoch ms) to the next change of every key kept.
    fn tick_sliding<R: Ring>(
        &self,
        map: &M::Map<Sliding<R>>,
        now: DateTime<Utc>,
        earliest: &mut u64,
        out: &mut Vec<Event>,
    ) -> usize {
        let mut removed = 0usize;
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        // Shared counters: the cluster ends episodes on the merged counts and writes their
        // summaries; the ring still moves on (local mode may take over).
        let local = !self.counters_shared();
        map.keep(|key, st| {
            let rule = &self.rules[usize::from(key.rule)];
            let sub = sub_bucket_ms(rule);
            // Only a key whose change has come moves (see `tick`); moving any other would
            // only shift its newest sub-bucket.
            let due = u64::from(st.next_change()).saturating_mul(sub) <= now_ms;
            if let Some(snap) = due
                .then(|| st.advance(bucket_index(&now, sub), rule.threshold, sub))
                .flatten()
            {
                if local {
                    out.push(self.summary(key, snap));
                }
            }
            if st.flagged() || st.total() > 0 {
                let at = u64::from(st.next_change()).saturating_mul(sub);
                *earliest = (*earliest).min(at);
                return true;
            }
            self.forget(key);
            removed += 1;
            false
        });
        removed
    }

    /// Closes everything, as if time ran out: summaries for every flagged key (a sliding
    /// episode ends where its count would fall below threshold with no further requests).
    /// For `scan` at end of input. The engine is empty afterwards.
    pub(crate) fn finish(&self, out: &mut Vec<Event>) {
        let first = out.len();
        let mut removed = 0usize;
        self.tumbling.keep(|key, st| {
            self.close_tumbling(key, st, out);
            removed += 1;
            false
        });
        removed += self.evict_sliding(&self.sliding, &mut |_| true, out);
        removed += self.evict_sliding(&self.sliding_bytes, &mut |_| true, out);
        self.keys.fetch_sub(removed, Ordering::Relaxed);
        // `scan` sorts its rows itself (one per key and batch, so the order within a batch
        // cannot show).
        if !self.rows_only {
            sort_events(&mut out[first..]);
        }
    }

    /// Approximate bytes held by the counter maps and the path table: each map's allocated
    /// entry chunks and position table (see `keytable`), plus the path texts. For sizing
    /// `max_tracked_keys`.
    #[cfg(test)]
    pub(crate) fn approx_memory_bytes(&self) -> usize {
        map_bytes(&self.tumbling)
            + map_bytes(&self.sliding)
            + map_bytes(&self.sliding_bytes)
            + self.paths.approx_bytes()
            + map_bytes(&self.last_src)
    }

    /// Evicts ahead of the cap, from a background task: above 95 % of `max_tracked_keys`, the
    /// least recently updated keys go until 90 % remain. A flood of new sources (a client
    /// rotating IPv6 /64s) then rarely reaches the cap, where eviction would run inline on
    /// the request path.
    pub(crate) fn trim(&self, out: &mut Vec<Event>) {
        let high = self.max_keys - self.max_keys / 20;
        if self.keys.load(Ordering::Relaxed) < high {
            return;
        }
        let _running = match self.evicting.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let target = self.max_keys - self.max_keys / 10;
        let keys = self.keys.load(Ordering::Relaxed);
        if keys > target {
            self.evict(keys - target, out);
        }
    }

    /// Before inserting `key` into `map`: when the cap is reached and `key` is new, evict.
    pub(super) fn make_room<V>(&self, map: &M::Map<V>, key: &WindowKey, out: &mut Vec<Event>) {
        if self.keys.load(Ordering::Relaxed) < self.max_keys || map.has(key) {
            return;
        }
        let _running = match self.evicting.try_lock() {
            Ok(guard) => guard,
            // The guard protects no data; a panic elsewhere must not stop eviction for good.
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if self.keys.load(Ordering::Relaxed) < self.max_keys {
            return;
        }
        self.evict((self.max_keys / 100).max(1), out);
    }

    /// Removes the `batch` least recently updated keys (all of them when fewer). Callers
    /// hold `evicting`: concurrent inserters do not queue behind an eviction, they go on
    /// (the cap may be exceeded by the few keys inserted meanwhile).
    pub(super) fn evict(&self, batch: usize, out: &mut Vec<Event>) {
        let mut ages: Vec<u32> = Vec::with_capacity(self.tracked_keys());
        self.tumbling.each(|_, st| ages.push(st.last_seen()));
        self.sliding
            .each(|key, st| ages.push(self.sliding_seen(key, st)));
        self.sliding_bytes
            .each(|key, st| ages.push(self.sliding_seen(key, st)));
        if ages.is_empty() || batch == 0 {
            return;
        }
        let batch = batch.min(ages.len());
        let cutoff = *ages.select_nth_unstable(batch - 1).1;
        let older = ages.iter().filter(|a| **a < cutoff).count();
        let mut ties = batch - older;
        let mut take = |seen: u32| {
            let yes = seen < cutoff || (seen == cutoff && ties > 0);
            if seen == cutoff && yes {
                ties -= 1;
            }
            yes
        };
        let mut removed = 0usize;
        self.tumbling.keep(|key, st| {
            if !take(st.last_seen()) {
                return true;
            }
            self.close_tumbling(key, st, out);
            removed += 1;
            false
        });
        removed += self.evict_sliding(&self.sliding, &mut take, out);
        removed += self.evict_sliding(&self.sliding_bytes, &mut take, out);
        self.keys.fetch_sub(removed, Ordering::Relaxed);
        self.evictions.fetch_add(removed as u64, Ordering::Relaxed);
    }

    /// Closes and removes the keys of one sliding map whose recency `take` picks; returns
    /// how many.
    fn evict_sliding<R: Ring>(
        &self,
        map: &M::Map<Sliding<R>>,
        take: &mut impl FnMut(u32) -> bool,
        out: &mut Vec<Event>,
    ) -> usize {
        let mut removed = 0usize;
        map.keep(|key, st| {
            if !take(self.sliding_seen(key, st)) {
                return true;
            }
            self.close_sliding(key, st, out);
            removed += 1;
            false
        });
        removed
    }

    /// A tumbling key is going away: its summary if flagged, and its path reference.
    fn close_tumbling(&self, key: &WindowKey, st: &Tumbling, out: &mut Vec<Event>) {
        out.extend(self.tumbling_summary(key, st));
        self.forget(key);
    }

    /// A sliding key is going away: its episode summary if flagged, and its path reference.
    fn close_sliding<R: Ring>(&self, key: &WindowKey, st: &mut Sliding<R>, out: &mut Vec<Event>) {
        out.extend(self.sliding_summary(key, st));
        self.forget(key);
    }

    /// The summary a flagged tumbling key gives when it goes away. A window flagged by an
    /// in-flight request that closes before any completed request gives none: a summary
    /// keeps Splunk's figures over completed requests, and there are none.
    pub(super) fn tumbling_summary(&self, key: &WindowKey, st: &Tumbling) -> Option<Event> {
        let rule = &self.rules[usize::from(key.rule)];
        // Shared counters: the cluster writes the merged summary instead.
        (st.flagged && st.count() > 0 && !self.counters_shared())
            .then(|| self.summary(key, st.snapshot(window_secs(rule))))
    }

    /// The summary a flagged sliding key gives when it goes away early: its episode ends
    /// where its count would fall below threshold with no further requests.
    pub(super) fn sliding_summary<R: Ring>(
        &self,
        key: &WindowKey,
        st: &mut Sliding<R>,
    ) -> Option<Event> {
        let rule = &self.rules[usize::from(key.rule)];
        let horizon = st.head().saturating_add(SUB_BUCKETS);
        st.advance(horizon, rule.threshold, sub_bucket_ms(rule))
            .filter(|_| !self.counters_shared()) // the cluster writes the merged one
            .map(|snap| self.summary(key, snap))
    }

    /// The summary of `key` closing on its own (a tick, eviction, a reload, shutdown): an
    /// identity key names the last address counted under it.
    fn summary(&self, key: &WindowKey, snap: Snapshot) -> Event {
        let rule = &self.rules[usize::from(key.rule)];
        let src = match key.src.identity_id() {
            Some(_) => self
                .last_src
                .copied(key)
                .map_or(key.src, |ip| SourceKey::new(ip, self.ipv6_prefix)),
            None => key.src,
        };
        let text = self.paths.text(key.path());
        Event::WindowSummary(self.event(rule, key, &src, None, text, snap))
    }

    /// Eviction recency of a sliding key, in epoch seconds.
    fn sliding_seen<R: Ring>(&self, key: &WindowKey, st: &Sliding<R>) -> u32 {
        st.last_seen(sub_bucket_ms(&self.rules[usize::from(key.rule)]))
    }
}

#[cfg(test)]
fn map_bytes<V>(map: &impl KeyStore<V>) -> usize {
    map.bytes_now()
}

/// Deterministic order for batches of summaries (the maps iterate in hash order).
pub(super) fn sort_events(events: &mut [Event]) {
    events.sort_by(|a, b| {
        let (a, b) = (a.detail(), b.detail());
        (a.window_start, &a.src, &a.identity, &a.uri_path, &a.rule).cmp(&(
            b.window_start,
            &b.src,
            &b.identity,
            &b.uri_path,
            &b.rule,
        ))
    });
}
