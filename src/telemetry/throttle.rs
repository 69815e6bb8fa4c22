//! Rate-limited warnings: a fault that repeats (a client sending broken bodies every few
//! seconds, an accept loop out of file descriptors) is reported once per period with the
//! number of repeats in between, not once per occurrence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One warning's rate limit.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    /// At most one warning per `every`.
    pub(crate) const fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a warning may be written now (`n` = occurrences suppressed since the
    /// last one); `None` when this occurrence is only counted.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = match self.last.try_lock() {
            Ok(guard) => guard,
            // Another thread is writing the warning right now: this one is a repeat.
            Err(_) => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        match *last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_period_are_counted_not_reported() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        let t2 = Throttle::new(Duration::ZERO);
        assert_eq!(t2.allow(), Some(0));
        assert_eq!(t2.allow(), Some(0));
    }

    #[test]
    fn the_next_report_carries_the_suppressed_count() {
        // A period long enough that a test thread preempted between two calls stays in it.
        let t = Throttle::new(Duration::from_millis(500));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        std::thread::sleep(Duration::from_millis(550));
        assert_eq!(t.allow(), Some(2));
    }
}

/// Keys remembered at most by a [`PerMinute`].
const PER_MINUTE_MAX_KEYS: usize = 10_000;

/// One log line per key (a source, an identity) per minute, with the number not logged
/// since the last one.
///
/// Memory is bounded: at most [`PER_MINUTE_MAX_KEYS`] keys are remembered. When a new key
/// finds the table full, the keys with no line this minute are forgotten (once a minute at
/// most, so a flood of new keys does not sweep the table on every call; a forgotten key loses
/// only a count of lines not written, its next line is due anyway, and so does the shared one
/// below, whose keys are not known); if every key had a line
/// this minute, the new keys share one more: one line a minute for all of them together (a
/// forced line of a new key is written on its own, with a count of 0).
#[derive(Debug)]
pub(crate) struct PerMinute<K> {
    state: Mutex<Seen<K>>,
}

#[derive(Debug)]
struct Seen<K> {
    /// Key → (minute of its last logged line, occurrences since then not logged).
    keys: std::collections::HashMap<K, (i64, u64)>,
    /// The minute of the last sweep of stale keys.
    swept: i64,
    /// The shared key of those that found the table full: (minute, not logged).
    overflow: Option<(i64, u64)>,
}

impl<K> Default for PerMinute<K> {
    fn default() -> Self {
        PerMinute {
            state: Mutex::new(Seen {
                keys: std::collections::HashMap::new(),
                swept: i64::MIN,
                overflow: None,
            }),
        }
    }
}

/// `Some(not logged since the last line)` when a line is due in `minute` (or `forced`) for
/// the key whose entry is `entry`; `None` counts one more not logged.
fn due_in(entry: &mut (i64, u64), minute: i64, forced: bool) -> Option<u64> {
    let (last, skipped) = entry;
    if *last == minute && !forced {
        *skipped += 1;
        None
    } else {
        let n = *skipped;
        *last = minute;
        *skipped = 0;
        Some(n)
    }
}

impl<K: std::hash::Hash + Eq + Clone> PerMinute<K> {
    /// `Some(not logged since the last line)` when a line is due for `key` in `minute`.
    pub(crate) fn due<Q>(&self, key: &Q, minute: i64) -> Option<u64>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.due_or_forced(key, minute, false)
    }

    /// As [`PerMinute::due`], but with `forced` a line is due whatever the minute (a line that
    /// is always written, such as a ban's): it carries the count not logged before it, and
    /// starts the minute over.
    pub(crate) fn due_or_forced<Q>(&self, key: &Q, minute: i64, forced: bool) -> Option<u64>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut seen = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = &mut *seen;
        if let Some(entry) = seen.keys.get_mut(key) {
            return due_in(entry, minute, forced);
        }
        if seen.keys.len() >= PER_MINUTE_MAX_KEYS && seen.swept != minute {
            seen.swept = minute;
            seen.keys.retain(|_, (last, _)| *last == minute);
            // Room made: the shared count belongs to no key that could carry it later.
            if seen.keys.len() < PER_MINUTE_MAX_KEYS {
                seen.overflow = None;
            }
        }
        if seen.keys.len() >= PER_MINUTE_MAX_KEYS {
            // A line written anyway is its own: it does not carry the shared count.
            if forced {
                return Some(0);
            }
            return match &mut seen.overflow {
                Some(entry) => due_in(entry, minute, forced),
                None => {
                    seen.overflow = Some((minute, 0));
                    Some(0)
                }
            };
        }
        seen.keys.insert(key.to_owned(), (minute, 0));
        Some(0)
    }

    /// The keys remembered (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys
            .len()
    }
}

#[cfg(test)]
mod per_minute_tests {
    use super::PerMinute;

    #[test]
    fn one_line_per_key_per_minute_with_the_skipped_count() {
        let l: PerMinute<String> = PerMinute::default();
        assert_eq!(l.due("a", 10), Some(0));
        assert_eq!(l.due("a", 10), None);
        assert_eq!(l.due("a", 10), None);
        assert_eq!(l.due("b", 10), Some(0));
        assert_eq!(l.due("a", 11), Some(2));
        assert_eq!(l.due("a", 11), None);
        // A forced line carries what was not logged before it, and nothing is counted twice.
        assert_eq!(l.due_or_forced("a", 11, true), Some(1));
        assert_eq!(l.due("a", 11), None);
        assert_eq!(l.due("a", 12), Some(1));
        assert_eq!(l.due_or_forced("c", 12, true), Some(0));
    }

    #[test]
    fn a_full_table_forgets_the_quiet_keys_and_the_rest_share_one_line() {
        let l: PerMinute<u32> = PerMinute::default();
        for k in 0..super::PER_MINUTE_MAX_KEYS as u32 {
            assert_eq!(l.due(&k, 10), Some(0));
        }
        // Minute 10, full: a new key shares one line with every other new key.
        assert_eq!(l.due(&1_000_000, 10), Some(0));
        assert_eq!(l.due(&1_000_001, 10), None);
        assert_eq!(l.due(&1_000_002, 10), None);
        // A remembered key keeps its own line.
        assert_eq!(l.due(&7, 10), None);
        assert_eq!(l.len(), super::PER_MINUTE_MAX_KEYS);
        // Minute 11: key 7 speaks again, then a new key finds the table full and the keys
        // quiet since minute 10 are forgotten; key 7 keeps its count.
        assert_eq!(l.due(&7, 11), Some(1));
        assert_eq!(l.due(&1_000_003, 11), Some(0));
        assert_eq!(l.len(), 2);
        assert_eq!(l.due(&7, 11), None);
        assert_eq!(l.due(&7, 12), Some(1));
        // The shared line carries the count of its minute when it next comes due.
        let full: PerMinute<u32> = PerMinute::default();
        for k in 0..super::PER_MINUTE_MAX_KEYS as u32 {
            full.due(&k, 20);
        }
        assert_eq!(full.due(&u32::MAX, 20), Some(0));
        assert_eq!(full.due(&(u32::MAX - 1), 20), None);
        assert_eq!(full.due(&(u32::MAX - 2), 20), None);
        for k in 0..super::PER_MINUTE_MAX_KEYS as u32 {
            full.due(&k, 21);
        }
        // Minute 21: every key spoke this minute, so the sweep forgets none.
        assert_eq!(full.due(&(u32::MAX - 3), 21), Some(2));
        assert_eq!(full.len(), super::PER_MINUTE_MAX_KEYS);
        // A forced line of a new key neither carries nor resets the shared count.
        assert_eq!(full.due(&(u32::MAX - 4), 21), None);
        assert_eq!(full.due_or_forced(&(u32::MAX - 5), 21, true), Some(0));
        for k in 0..super::PER_MINUTE_MAX_KEYS as u32 {
            full.due(&k, 22);
        }
        assert_eq!(full.due(&(u32::MAX - 6), 22), Some(1));
        assert_eq!(full.due(&(u32::MAX - 7), 22), None);
        // Minute 23: the sweep makes room, and the shared count is forgotten with the quiet
        // keys; the shared line starts over when the table is full again.
        assert_eq!(full.due(&(u32::MAX - 8), 23), Some(0));
        assert_eq!(full.len(), 1);
        for k in 0..super::PER_MINUTE_MAX_KEYS as u32 - 1 {
            full.due(&k, 23);
        }
        assert_eq!(full.due(&(u32::MAX - 9), 23), Some(0));
    }
}
