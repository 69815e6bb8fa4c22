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
        let t = Throttle::new(Duration::from_millis(30));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(t.allow(), Some(2));
    }
}

/// Keys remembered at most by a [`PerMinute`]; past it the memory starts over (some extra
/// lines, never unbounded memory).
const PER_MINUTE_MAX_KEYS: usize = 10_000;

/// One log line per key (a source, an identity) per minute, with the number not logged
/// since the last one.
#[derive(Debug)]
pub(crate) struct PerMinute<K> {
    /// Key → (minute of its last logged line, occurrences since then not logged).
    seen: Mutex<std::collections::HashMap<K, (i64, u64)>>,
}

impl<K> Default for PerMinute<K> {
    fn default() -> Self {
        PerMinute {
            seen: Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> PerMinute<K> {
    /// `Some(not logged since the last line)` when a line is due for `key` in `minute`.
    pub(crate) fn due<Q>(&self, key: &Q, minute: i64) -> Option<u64>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= PER_MINUTE_MAX_KEYS && !seen.contains_key(key) {
            seen.clear();
        }
        match seen.get_mut(key) {
            Some((last, skipped)) if *last == minute => {
                *skipped += 1;
                None
            }
            Some((last, skipped)) => {
                let n = *skipped;
                *last = minute;
                *skipped = 0;
                Some(n)
            }
            None => {
                seen.insert(key.to_owned(), (minute, 0));
                Some(0)
            }
        }
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
    }
}
