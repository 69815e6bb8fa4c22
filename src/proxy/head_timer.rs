//! hyper's header-read timer, kept per worker in a table its periodic sweep fires.
//!
//! hyper arms the header-read timer (`timeouts.header_read`, the slowloris defence) for every
//! request head it waits for, and drops it once the head is in: with hyper-util's
//! `TokioTimer` that is a boxed tokio `Sleep` registered in tokio's timer wheel and taken out
//! of it again for every request, for a deadline that almost never passes; this table costs
//! about 470 instructions per proxied request less (1.4 %, callgrind; docs/performance.md).
//!
//! Here a deadline is an entry in the worker's own table (a [`Slab`]): the first poll of a
//! waiting head inserts it with the connection's waker, the drop removes it, and the worker's
//! sweep (every half `header_read`, at most every second, see `server.rs`) wakes the
//! connections whose deadline has passed; hyper then polls its timer, sees it fired and closes
//! the connection. A head therefore has at least `header_read` and at most `header_read` plus
//! one sweep period; nothing on the request path reads the clock or touches tokio's wheel.
//!
//! A worker is one thread running one current-thread runtime, so the table is thread-local.
//! A timer polled or dropped on another thread (nothing in the proxy does that) registers
//! again there, or leaves its entry to be swept at its deadline: never a wrong wake-up of a
//! live entry, since entries are matched by thread, slot and generation.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use slab::Slab;

/// Gives each thread's table its own number.
static TABLES: AtomicU64 = AtomicU64::new(0);

std::thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table {
        id: TABLES.fetch_add(1, Ordering::Relaxed),
        next_gen: 0,
        entries: Slab::new(),
    });
}

/// A thread's armed deadlines.
struct Table {
    id: u64,
    next_gen: u64,
    entries: Slab<Entry>,
}

struct Entry {
    deadline: Instant,
    /// Told to the entry's own [`HeadSleep`] only.
    gen: u64,
    waker: Waker,
}

/// Where a [`HeadSleep`]'s entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    table: u64,
    slot: usize,
    gen: u64,
}

/// The [`Timer`] for hyper's server connections (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HeadTimer;

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadSleep {
            deadline,
            key: None,
        })
    }
}

/// A deadline of [`HeadTimer`]: pending until the sweep finds it passed.
#[derive(Debug)]
pub(crate) struct HeadSleep {
    deadline: Instant,
    /// Its entry, once polled.
    key: Option<Key>,
}

impl Sleep for HeadSleep {}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        TABLE.with_borrow_mut(|t| {
            if let Some(key) = this.key.filter(|k| k.table == t.id) {
                return match t.entries.get_mut(key.slot) {
                    Some(e) if e.gen == key.gen => {
                        if !e.waker.will_wake(cx.waker()) {
                            e.waker = cx.waker().clone();
                        }
                        Poll::Pending
                    }
                    // The sweep took the entry out: the deadline passed.
                    _ => Poll::Ready(()),
                };
            }
            let gen = t.next_gen;
            t.next_gen += 1;
            let slot = t.entries.insert(Entry {
                deadline: this.deadline,
                gen,
                waker: cx.waker().clone(),
            });
            this.key = Some(Key {
                table: t.id,
                slot,
                gen,
            });
            Poll::Pending
        })
    }
}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        // `try_with`: the thread may be exiting (its table already gone).
        let _ = TABLE.try_with(|t| {
            let Ok(mut t) = t.try_borrow_mut() else {
                return;
            };
            if t.id == key.table && t.entries.get(key.slot).is_some_and(|e| e.gen == key.gen) {
                t.entries.remove(key.slot);
            }
        });
    }
}

/// Fires this thread's deadlines that are at or before `now`: takes them out of the table and
/// wakes their connections.
pub(crate) fn sweep(now: Instant) {
    let mut due = Vec::new();
    TABLE.with_borrow_mut(|t| {
        t.entries.retain(|_, e| {
            if e.deadline <= now {
                due.push(e.waker.clone());
                false
            } else {
                true
            }
        });
    });
    // Woken outside the borrow: a waker may run code that arms or drops a timer.
    for waker in due {
        waker.wake();
    }
}

/// Entries armed on this thread (tests).
#[cfg(test)]
fn armed() -> usize {
    TABLE.with_borrow(|t| t.entries.len())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    fn poll(sleep: &mut Pin<Box<dyn Sleep>>, waker: &Waker) -> Poll<()> {
        sleep.as_mut().poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_deadline_fires_at_the_first_sweep_at_or_after_it_and_not_before() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(30);
        let mut sleep = HeadTimer.sleep_until(deadline);
        let (count, w) = waker();
        assert_eq!(poll(&mut sleep, &w), Poll::Pending);
        assert_eq!(armed(), 1);
        sweep(deadline - Duration::from_nanos(1));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        assert_eq!(poll(&mut sleep, &w), Poll::Pending);
        sweep(deadline);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(armed(), 0);
        assert_eq!(poll(&mut sleep, &w), Poll::Ready(()));
        assert_eq!(poll(&mut sleep, &w), Poll::Ready(()));
        drop(sleep);
        sweep(deadline + Duration::from_secs(60));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "fired once");
    }

    #[test]
    fn a_dropped_timer_leaves_the_table_and_is_never_woken() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (count, w) = waker();
        let mut sleeps: Vec<_> = (0..100).map(|_| HeadTimer.sleep_until(deadline)).collect();
        for s in &mut sleeps {
            assert_eq!(poll(s, &w), Poll::Pending);
        }
        assert_eq!(armed(), 100);
        sleeps.truncate(40);
        assert_eq!(armed(), 40);
        // Slots freed by the drops are reused by new timers, which get new generations.
        let mut late = HeadTimer.sleep_until(deadline + Duration::from_secs(1));
        assert_eq!(poll(&mut late, &w), Poll::Pending);
        assert_eq!(armed(), 41);
        sweep(deadline);
        assert_eq!(count.0.load(Ordering::SeqCst), 40);
        assert_eq!(armed(), 1);
        assert!(sleeps.iter_mut().all(|s| poll(s, &w).is_ready()));
        assert_eq!(poll(&mut late, &w), Poll::Pending);
        drop(late);
        assert_eq!(armed(), 0);
    }

    #[test]
    fn an_unpolled_timer_is_not_armed_and_the_last_waker_is_the_one_woken() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let sleep = HeadTimer.sleep_until(deadline);
        assert_eq!(armed(), 0);
        drop(sleep);
        let mut sleep = HeadTimer.sleep_until(deadline);
        let (first, w1) = waker();
        let (second, w2) = waker();
        assert_eq!(poll(&mut sleep, &w1), Poll::Pending);
        assert_eq!(poll(&mut sleep, &w2), Poll::Pending);
        assert_eq!(armed(), 1);
        sweep(deadline);
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut sleep, &w2), Poll::Ready(()));
    }

    /// A timer is only ever matched with its own entry: one polled on another thread is armed
    /// there, and its drop there leaves this thread's entries alone.
    #[test]
    fn a_timer_moved_to_another_thread_is_armed_there_and_touches_no_entry_here() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (count, w) = waker();
        let mut here = HeadTimer.sleep_until(deadline);
        assert_eq!(poll(&mut here, &w), Poll::Pending);
        let mut moved = HeadTimer.sleep_until(deadline);
        assert_eq!(poll(&mut moved, &w), Poll::Pending);
        assert_eq!(armed(), 2);
        let w2 = w.clone();
        let there = std::thread::spawn(move || {
            // Same slot numbers exist in a fresh table: the thread's id keeps them apart.
            let mut other = HeadTimer.sleep_until(deadline);
            assert_eq!(poll(&mut other, &w2), Poll::Pending);
            assert_eq!(poll(&mut moved, &w2), Poll::Pending);
            assert_eq!(armed(), 2);
            sweep(deadline);
            assert_eq!(armed(), 0);
            assert_eq!(poll(&mut moved, &w2), Poll::Ready(()));
            drop(moved);
            drop(other);
        });
        there.join().unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "the other thread's two");
        assert_eq!(armed(), 2, "this thread's entries are untouched");
        drop(here);
        assert_eq!(
            armed(),
            1,
            "the moved timer's first entry waits for its deadline"
        );
        sweep(deadline);
        assert_eq!(armed(), 0);
        assert_eq!(count.0.load(Ordering::SeqCst), 3);
    }
}
