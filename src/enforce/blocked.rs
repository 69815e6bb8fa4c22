//! Rate limiting of `blocked` events (docs/detection-log.md): a banned client hammering the proxy must not
//! flood the detection log, yet the log must still say how much was refused.
//!
//! Counters are kept per ban (not per client address), so a CIDR ban covering millions of
//! addresses costs one entry, and they are dropped with their ban: memory is bounded by the
//! number of bans.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};
use ipnet::IpNet;

/// At most one `blocked` event per ban per this interval.
pub(super) const BLOCKED_LOG_INTERVAL: TimeDelta = TimeDelta::minutes(1);

#[derive(Debug)]
struct Counter {
    /// When the last `blocked` event of this ban was logged.
    last_logged: DateTime<Utc>,
    /// Blocked requests since then that were not logged.
    suppressed: u64,
}

/// The per-ban counters behind [`Bans::note_blocked`](super::Bans::note_blocked).
#[derive(Debug, Default)]
pub(super) struct BlockedLimiter {
    counters: Mutex<HashMap<IpNet, Counter>>,
}

impl BlockedLimiter {
    /// Counts one blocked request under ban `src`; `Some(not logged since the previous event)`
    /// when this one should be logged.
    pub(super) fn note(&self, src: IpNet, now: DateTime<Utc>) -> Option<u64> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        match counters.get_mut(&src) {
            None => {
                counters.insert(
                    src,
                    Counter {
                        last_logged: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
            Some(c) if now - c.last_logged >= BLOCKED_LOG_INTERVAL => {
                let since_last = c.suppressed;
                c.last_logged = now;
                c.suppressed = 0;
                Some(since_last)
            }
            Some(c) => {
                c.suppressed = c.suppressed.saturating_add(1);
                None
            }
        }
    }

    /// Drops the counters of bans for which `keep` is false.
    pub(super) fn retain(&self, keep: impl Fn(&IpNet) -> bool) {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters.retain(|src, _| keep(src));
    }

    /// Forgets one ban's counter (it was replaced or lifted).
    pub(super) fn forget(&self, src: &IpNet) {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters.remove(src);
    }

    /// How many counters exist (tests check the memory bound).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
