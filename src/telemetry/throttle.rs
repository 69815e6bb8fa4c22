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
