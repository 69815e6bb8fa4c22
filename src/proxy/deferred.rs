//! Records that run after the response is written.
//!
//! A request's end (its release from the in-flight registry, then its record: metrics, access
//! log, detection, a ban it decides; about 3 k instructions in all) is known when its
//! response body ends, inside hyper's poll of the connection and before hyper writes the
//! response's last bytes. [`Deferred`] moves that work behind the write without giving up any
//! ordering a client can observe:
//!
//! - while a worker polls one of its connections ([`Deferred::scope`]), an ended request is
//!   queued on that worker's queue instead of run;
//! - when that poll returns, which is after hyper has written what it could (its poll loop
//!   writes and flushes before it waits for the next read), the worker runs what it queued.
//!   No task is spawned and nothing waits for the scheduler: the record runs on the same
//!   thread, in the same turn, right after the write;
//! - a record queued on one worker and read on another waits for nobody either:
//!   [`Deferred::settle`] runs every queued record of every worker, or waits for the worker
//!   that is running them. The enforcement gate settles before it asks about a request (so a
//!   request sent after a response was received meets the ban that response's record
//!   decided, on whichever worker and connection it arrives), and so do the admin API, a log
//!   reopen and the shutdown.
//!
//! Outside a scope (tests, and anything not polled by a worker's connection) a record runs
//! at once, as before.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use crate::record::{RecordSink, RequestRecord};

thread_local! {
    /// The queue this thread's records go to while it polls a connection: the address of
    /// the [`Deferred`] that owns it and the worker's index.
    static SCOPE: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// One worker's queued records, on a cache line of its own (the other workers read its
/// count before each request).
#[repr(align(128))]
struct Queue {
    /// Records queued and not yet run (read without the lock).
    pending: AtomicUsize,
    /// The ended requests: the in-flight ticket to end and the record. Held while they
    /// run, so a worker that settles waits for them.
    jobs: Mutex<Vec<(Option<u64>, RequestRecord)>>,
}

/// A record sink that runs records after the response write (see the module doc); every
/// other call goes straight to the sink it wraps.
pub(crate) struct Deferred {
    sink: Arc<dyn RecordSink>,
    queues: Box<[Queue]>,
}

impl Deferred {
    /// Wraps `sink` for `workers` workers (worker `i` queues on queue `i`).
    pub(crate) fn new(sink: Arc<dyn RecordSink>, workers: usize) -> Arc<Deferred> {
        Arc::new(Deferred {
            sink,
            queues: (0..workers.max(1))
                .map(|_| Queue {
                    pending: AtomicUsize::new(0),
                    jobs: Mutex::new(Vec::new()),
                })
                .collect(),
        })
    }

    fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// `fut` polled as worker `worker`'s connection: records it finishes are queued while
    /// it polls and run when each poll returns (and when it is dropped).
    pub(crate) fn scope<F: Future>(self: &Arc<Self>, worker: usize, fut: F) -> Scoped<F> {
        Scoped {
            fut,
            deferred: self.clone(),
            worker: worker.min(self.queues.len() - 1),
        }
    }

    /// Runs every queued record, of every worker; a worker's records that are running
    /// elsewhere are waited for. When this returns, every record queued before it was
    /// called has run.
    pub(crate) fn settle(&self) {
        for queue in &self.queues {
            if queue.pending.load(Ordering::Acquire) != 0 {
                self.run(
                    &mut queue.jobs.lock().unwrap_or_else(PoisonError::into_inner),
                    queue,
                );
            }
        }
    }

    /// The worker's own run after a poll of its connection. It never waits: when its queue
    /// is locked, whoever holds the lock took it after the worker's last push (a push takes
    /// the lock too) and runs what was queued.
    fn run_own(&self, worker: usize) {
        let queue = &self.queues[worker];
        if queue.pending.load(Ordering::Acquire) == 0 {
            return;
        }
        match queue.jobs.try_lock() {
            Ok(mut jobs) => self.run(&mut jobs, queue),
            Err(std::sync::TryLockError::Poisoned(p)) => self.run(&mut p.into_inner(), queue),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
    }

    /// Runs `jobs` (`queue`'s, locked) in order.
    fn run(&self, jobs: &mut Vec<(Option<u64>, RequestRecord)>, queue: &Queue) {
        // Counted down once they have run (a settler that reads 0 must find them done), and
        // also when a record panics: the queue is empty then, and settlers stop locking it.
        struct Done<'a>(&'a AtomicUsize, usize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(self.1, Ordering::Release);
            }
        }
        let _done = Done(&queue.pending, jobs.len());
        for (ticket, record) in jobs.drain(..) {
            self.sink.finish(ticket, record);
        }
    }
}

impl RecordSink for Deferred {
    fn record(&self, record: RequestRecord) {
        self.finish(None, record);
    }

    fn begin(&self, record: &RequestRecord, start: tokio::time::Instant) -> Option<u64> {
        self.sink.begin(record, start)
    }

    fn end(&self, ticket: u64) -> u64 {
        self.sink.end(ticket)
    }

    /// Queued whole: the in-flight registry lets go of the request when its record runs.
    fn finish(&self, ticket: Option<u64>, record: RequestRecord) {
        match SCOPE.get() {
            Some((id, i)) if id == self.id() => {
                let queue = &self.queues[i];
                let mut jobs = queue.jobs.lock().unwrap_or_else(PoisonError::into_inner);
                jobs.push((ticket, record));
                queue.pending.fetch_add(1, Ordering::Release);
            }
            _ => self.sink.finish(ticket, record),
        }
    }
}

pin_project_lite::pin_project! {
    /// A worker's connection future under [`Deferred::scope`].
    pub(crate) struct Scoped<F> {
        #[pin]
        fut: F,
        deferred: Arc<Deferred>,
        worker: usize,
    }

    impl<F> PinnedDrop for Scoped<F> {
        fn drop(this: Pin<&mut Self>) {
            // Only a poll that unwound (a panic) can have left records queued: they run
            // here. What dropping the connection itself ends (a response still running) is
            // recorded after this, outside any scope, so at once.
            this.deferred.run_own(this.worker);
        }
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = {
            let _scope = Enter(SCOPE.replace(Some((this.deferred.id(), *this.worker))));
            this.fut.poll(cx)
        };
        this.deferred.run_own(*this.worker);
        out
    }
}

/// Restores the thread's previous scope, also when the poll unwinds.
struct Enter(Option<(usize, usize)>);

impl Drop for Enter {
    fn drop(&mut self) {
        SCOPE.set(self.0);
    }
}

#[cfg(test)]
mod tests;
