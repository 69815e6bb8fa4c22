//! The requests still running, for in-flight detection (`detect::inflight`): the proxy
//! registers each request when its head is read and removes it when its record fires; the
//! ticker asks the engine about those older than the shortest eligible `min_latency`.
//!
//! Cheap on the hot path: nothing is registered while no rule is eligible, and otherwise a
//! registration is one shard-locked insert of the start record (whose texts borrow static
//! tables in the common case), a completion one remove.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use tokio::time::Instant;

use crate::detect::{Engine, Event};
use crate::record::RequestRecord;

/// No eligible rule: nothing is registered.
const NONE: u64 = u64::MAX;

/// One running request.
struct Entry {
    start: Instant,
    record: RequestRecord,
    /// Rule indexes already asked about (see `Engine::in_flight`).
    reported: u64,
    /// Sliding rules that reported it: the completed record's `in_flight_reported`.
    sliding: u64,
}

/// The registry of running requests.
pub(crate) struct Running {
    next: AtomicU64,
    /// Nanoseconds of the shortest eligible `min_latency`, or [`NONE`].
    after_ns: AtomicU64,
    /// Keyed by ticket with foldhash: the tickets are our own counter, so SipHash's defence
    /// against chosen keys buys nothing, and it cost about 200 instructions per request
    /// (an insert and a remove, callgrind).
    map: DashMap<u64, Entry, foldhash::fast::RandomState>,
}

impl Running {
    /// An empty registry tracking for `engine`'s rules.
    pub(crate) fn new(engine: &Engine) -> Self {
        let running = Running {
            next: AtomicU64::new(0),
            after_ns: AtomicU64::new(NONE),
            map: DashMap::default(),
        };
        running.configure(engine);
        running
    }

    /// Follows a new rule set (start-up, reload).
    pub(crate) fn configure(&self, engine: &Engine) {
        let ns = engine
            .in_flight_after()
            .map_or(NONE, |d| u64::try_from(d.as_nanos()).unwrap_or(NONE - 1));
        self.after_ns.store(ns, Ordering::Relaxed);
    }

    /// Registers a request that started at `start`; `None` when no rule can report it in
    /// flight.
    pub(crate) fn begin(&self, record: &RequestRecord, start: Instant) -> Option<u64> {
        if self.after_ns.load(Ordering::Relaxed) == NONE || record.outcome.is_refusal() {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            start,
            record: record.clone(),
            reported: 0,
            sliding: 0,
        };
        self.map.insert(id, entry);
        Some(id)
    }

    /// The request of ticket `id` ended; the sliding rules that reported it in flight.
    pub(crate) fn end(&self, id: u64) -> u64 {
        self.map.remove(&id).map_or(0, |(_, e)| e.sliding)
    }

    /// Asks `engine` about every request running longer than the shortest eligible
    /// `min_latency`; returns the in-flight detections with the source of each.
    pub(crate) fn scan(
        &self,
        engine: &Engine,
        now: DateTime<Utc>,
    ) -> Vec<(Vec<Event>, RequestRecord)> {
        let after = self.after_ns.load(Ordering::Relaxed);
        if after == NONE || self.map.is_empty() {
            return Vec::new();
        }
        let after = Duration::from_nanos(after);
        let clock = Instant::now();
        let mut found = Vec::new();
        for mut e in self.map.iter_mut() {
            let elapsed = clock.saturating_duration_since(e.start);
            if elapsed <= after {
                continue;
            }
            let Entry {
                record,
                reported,
                sliding,
                ..
            } = &mut *e;
            let mut events = Vec::new();
            engine.in_flight(record, elapsed, now, reported, sliding, &mut events);
            if !events.is_empty() {
                found.push((events, record.clone()));
            }
        }
        found
    }
}
