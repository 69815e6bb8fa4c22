//! What the simulator saw: one [`SimRequest`] per request, updated as the request runs.
//!
//! Tests drive the simulator through the proxy and then ask the log what actually reached
//! "Ollama" and how it ended (completed, aborted, or abandoned by its client). The log is a
//! plain `Mutex`: every critical section is a few field writes, never held across an
//! `.await`, and contention is one lock per request state change. Waiters are woken through
//! a [`Notify`] rather than by polling with sleeps.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::request::Parts;
use tokio::sync::Notify;

/// How many requests the log keeps; the oldest are forgotten first, so a long benchmark
/// run cannot grow the simulator's memory without bound.
const LOG_CAPACITY: usize = 100_000;

/// One request as the simulator received it, and how its response ended.
///
/// Cloned out of the log so a test can assert on it without holding any lock.
#[derive(Clone, Debug)]
pub struct SimRequest {
    /// The `x-sim-id` header, which tests use to find their request among many.
    pub id: Option<String>,
    /// The request method, as received.
    pub method: String,
    /// The request target (`path?query`) exactly as received, to prove the proxy forwarded
    /// it untouched.
    pub target: String,
    /// The request headers as received (after the proxy's rewriting, if any).
    pub headers: http::HeaderMap,
    /// Bytes of request body the simulator consumed (0 when the route does not read it).
    pub body_len: u64,
    /// Lower-case hex SHA-256 of the consumed body; `None` when the route did not read it.
    pub body_sha256: Option<String>,
    /// The response body was produced to its end.
    pub finished: bool,
    /// The response (or the handler still preparing it) was dropped before its end: the
    /// client, or the proxy in front of the simulator, went away.
    pub client_disconnected: bool,
}

/// A logged request plus whether it is over (finished, disconnected, or deliberately
/// aborted with `x-sim-fail: abort`, which sets neither public flag).
#[derive(Debug)]
struct Entry {
    req: SimRequest,
    over: bool,
}

#[derive(Debug, Default)]
struct Entries {
    /// Sequence number of `list[0]`.
    base: u64,
    list: VecDeque<Entry>,
}

/// The record of every request the simulator saw (the most recent 100 000).
#[derive(Debug, Default)]
pub struct SimLog {
    entries: Mutex<Entries>,
    changed: Notify,
}

// === impl SimLog ===

impl SimLog {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A snapshot of every logged request, oldest first, so a test can check what reached
    /// the upstream (and what did not).
    pub fn requests(&self) -> Vec<SimRequest> {
        self.lock().list.iter().map(|e| e.req.clone()).collect()
    }

    /// Waits until the first request whose `x-sim-id` is `id` is over (its body finished,
    /// its client disconnected, or it was aborted on purpose) and returns it.
    ///
    /// Tests need this because a proxy finishes with the client before the upstream side is
    /// torn down; awaiting the simulator's own view avoids racing it. The request need not
    /// have arrived yet when this is called.
    pub async fn wait_done(&self, id: &str) -> SimRequest {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register before looking, so a change between the look and the await is not lost.
            notified.as_mut().enable();
            if let Some(found) = self.find_over(id) {
                return found;
            }
            notified.await;
        }
    }

    fn find_over(&self, id: &str) -> Option<SimRequest> {
        self.lock()
            .list
            .iter()
            .find(|e| e.over && e.req.id.as_deref() == Some(id))
            .map(|e| e.req.clone())
    }

    /// Records a new request and returns the tracker that follows it to its end.
    pub(crate) fn begin(self: &Arc<Self>, parts: &Parts) -> Tracker {
        let req = SimRequest {
            id: parts
                .headers
                .get("x-sim-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            method: parts.method.to_string(),
            target: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body_len: 0,
            body_sha256: None,
            finished: false,
            client_disconnected: false,
        };
        let seq = {
            let mut entries = self.lock();
            if entries.list.len() >= LOG_CAPACITY {
                entries.list.pop_front();
                entries.base += 1;
            }
            entries.list.push_back(Entry { req, over: false });
            entries.base + entries.list.len() as u64 - 1
        };
        Tracker {
            log: Arc::clone(self),
            seq,
            settled: false,
        }
    }

    fn update(&self, seq: u64, change: impl FnOnce(&mut Entry)) {
        {
            let mut entries = self.lock();
            let Some(index) = seq.checked_sub(entries.base) else {
                return;
            };
            if let Some(entry) = usize::try_from(index)
                .ok()
                .and_then(|i| entries.list.get_mut(i))
            {
                change(entry);
            }
        }
        self.changed.notify_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves only plain data behind; keep serving.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Follows one request from arrival to its end; dropping it before it is settled records a
/// client disconnect (the handler future or the response body was dropped by hyper).
#[derive(Debug)]
pub(crate) struct Tracker {
    log: Arc<SimLog>,
    seq: u64,
    settled: bool,
}

// === impl Tracker ===

impl Tracker {
    /// Position of the request in arrival order (used to derive response ids).
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    pub(crate) fn record_body(&self, len: u64, sha256: String) {
        self.log.update(self.seq, |e| {
            e.req.body_len = len;
            e.req.body_sha256 = Some(sha256);
        });
    }

    /// The response body has been produced to its end.
    pub(crate) fn finish(&mut self) {
        self.settle(|e| e.req.finished = true);
    }

    /// The response was cut on purpose (`x-sim-fail: abort`).
    pub(crate) fn abort(&mut self) {
        self.settle(|_| {});
    }

    /// The client went away (seen while reading its request body, or on drop).
    pub(crate) fn client_gone(&mut self) {
        self.settle(|e| e.req.client_disconnected = true);
    }

    fn settle(&mut self, change: impl FnOnce(&mut Entry)) {
        if self.settled {
            return;
        }
        self.settled = true;
        self.log.update(self.seq, |e| {
            change(e);
            e.over = true;
        });
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.client_gone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(id: &str) -> Parts {
        let (parts, ()) = http::Request::post("/api/chat?x=1")
            .header("x-sim-id", id)
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    #[test]
    fn begin_records_id_method_and_target() {
        let log = Arc::new(SimLog::new());
        let mut tracker = log.begin(&parts("a"));
        tracker.finish();
        let reqs = log.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].id.as_deref(), Some("a"));
        assert_eq!(reqs[0].method, "POST");
        assert_eq!(reqs[0].target, "/api/chat?x=1");
        assert!(reqs[0].finished);
        assert!(!reqs[0].client_disconnected);
    }

    #[test]
    fn dropping_an_unsettled_tracker_records_a_disconnect() {
        let log = Arc::new(SimLog::new());
        drop(log.begin(&parts("a")));
        let req = &log.requests()[0];
        assert!(req.client_disconnected);
        assert!(!req.finished);
    }

    #[test]
    fn settling_twice_keeps_the_first_outcome() {
        let log = Arc::new(SimLog::new());
        let mut tracker = log.begin(&parts("a"));
        tracker.finish();
        tracker.client_gone();
        drop(tracker);
        assert!(!log.requests()[0].client_disconnected);
    }

    #[tokio::test]
    async fn wait_done_wakes_when_a_later_request_finishes() {
        let log = Arc::new(SimLog::new());
        let waiter = tokio::spawn({
            let log = Arc::clone(&log);
            async move { log.wait_done("late").await }
        });
        tokio::task::yield_now().await;
        let mut other = log.begin(&parts("other"));
        other.finish();
        let mut late = log.begin(&parts("late"));
        late.record_body(3, "abc".into());
        late.abort();
        let got = waiter.await.unwrap();
        assert_eq!(got.id.as_deref(), Some("late"));
        assert_eq!(got.body_len, 3);
        assert!(!got.finished);
        assert!(!got.client_disconnected);
    }
}
