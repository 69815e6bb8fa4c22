use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceBuilder;

use super::*;
use crate::proxy::layers::gate::GateLayer;
use crate::proxy::layers::record::{RecordCtx, RecordLayer};
use crate::proxy::layers::test_support::capture;
use crate::proxy::layers::Client;
use crate::proxy::refusal::Gate;
use crate::proxy::test_io::CountingIo;
use crate::record::{Method, Outcome};
use crate::route::Route;

/// Keeps the records it gets; `written`, when set, is read at each record (the writes the
/// connection had made by then).
#[derive(Default)]
struct Sink {
    records: Mutex<Vec<RequestRecord>>,
    written: Option<Arc<AtomicUsize>>,
    writes_seen: Mutex<Vec<usize>>,
    ended: Mutex<Vec<u64>>,
}

impl RecordSink for Sink {
    fn record(&self, record: RequestRecord) {
        if let Some(w) = &self.written {
            self.writes_seen
                .lock()
                .unwrap()
                .push(w.load(Ordering::SeqCst));
        }
        self.records.lock().unwrap().push(record);
    }

    /// Ticket `t` reported the rules of mask `t`.
    fn end(&self, ticket: u64) -> u64 {
        self.ended.lock().unwrap().push(ticket);
        ticket
    }
}

impl Sink {
    fn count(&self) -> usize {
        self.records.lock().unwrap().len()
    }
}

fn record(src: &str) -> RequestRecord {
    let ip: IpAddr = src.parse().unwrap();
    RequestRecord {
        src: ip,
        peer: ip,
        method: Method::Get,
        method_text: Cow::Borrowed("GET"),
        path: Cow::Borrowed("/api/tags"),
        raw_target: Cow::Borrowed("/api/tags"),
        route: Route::Tags,
        status: 200,
        ttfb: None,
        total: Duration::ZERO,
        completed_at: chrono::Utc::now(),
        outcome: Outcome::Complete,
        bytes_in: 0,
        bytes_out: 0,
        in_flight_reported: 0,
        identity: None,
    }
}

/// Polls `fut` once on this thread (a worker's poll of one connection).
fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    fut.poll(&mut cx)
}

/// Polls once, as worker `worker`'s connection, a future whose poll is `body`.
fn poll_in_scope<T>(
    deferred: &Arc<Deferred>,
    worker: usize,
    body: impl FnMut(&mut Context<'_>) -> Poll<T>,
) -> Poll<T> {
    poll_once(std::pin::pin!(
        deferred.scope(worker, std::future::poll_fn(body))
    ))
}

#[test]
fn outside_a_scope_a_record_runs_at_once() {
    let sink = Arc::new(Sink::default());
    let deferred = Deferred::new(sink.clone(), 2);
    deferred.record(record("192.0.2.1"));
    assert_eq!(sink.count(), 1);
}

#[test]
fn in_a_scope_a_record_runs_when_the_poll_returns() {
    let sink = Arc::new(Sink::default());
    let deferred = Deferred::new(sink.clone(), 2);
    let (d, s) = (deferred.clone(), sink.clone());
    // Kept alive through the checks: the records run when the poll returns, not on drop.
    let fut = deferred.scope(
        1,
        std::future::poll_fn(move |_| {
            d.record(record("192.0.2.1"));
            d.record(record("192.0.2.2"));
            // Queued on worker 1, not run yet.
            assert_eq!(s.count(), 0);
            assert_eq!(d.queues[1].pending.load(Ordering::SeqCst), 2);
            assert_eq!(d.queues[0].pending.load(Ordering::SeqCst), 0);
            Poll::<()>::Pending
        }),
    );
    let mut fut = std::pin::pin!(fut);
    assert!(poll_once(fut.as_mut()).is_pending());
    let got: Vec<String> = sink
        .records
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.src.to_string())
        .collect();
    assert_eq!(got, ["192.0.2.1", "192.0.2.2"], "run in order, once");
    assert_eq!(deferred.queues[1].pending.load(Ordering::SeqCst), 0);
    // After the poll the thread is out of the scope again.
    deferred.record(record("192.0.2.3"));
    assert_eq!(sink.count(), 3);
}

#[test]
fn a_request_leaves_the_in_flight_registry_when_its_record_runs() {
    let sink = Arc::new(Sink::default());
    let deferred = Deferred::new(sink.clone(), 1);
    let (d, s) = (deferred.clone(), sink.clone());
    assert!(poll_in_scope(&deferred, 0, move |_| {
        d.finish(Some(5), record("192.0.2.1"));
        assert!(s.ended.lock().unwrap().is_empty(), "still in flight");
        Poll::Ready(())
    })
    .is_ready());
    assert_eq!(*sink.ended.lock().unwrap(), [5]);
    let records = sink.records.lock().unwrap();
    assert_eq!(
        records
            .iter()
            .map(|r| r.in_flight_reported)
            .collect::<Vec<_>>(),
        [5],
        "the mask `end` returned"
    );
}

#[test]
fn a_record_for_another_sink_runs_at_once_inside_a_scope() {
    let (ours, theirs) = (Arc::new(Sink::default()), Arc::new(Sink::default()));
    let deferred = Deferred::new(ours.clone(), 1);
    let other = Deferred::new(theirs.clone(), 1);
    let (o, t) = (other.clone(), theirs.clone());
    assert!(poll_in_scope(&deferred, 0, move |_| {
        o.record(record("192.0.2.1"));
        assert_eq!(t.count(), 1, "not this scope's sink: not held back");
        Poll::Ready(())
    })
    .is_ready());
    assert_eq!((ours.count(), theirs.count()), (0, 1));
}

#[test]
fn settle_on_another_thread_runs_what_a_worker_still_holds() {
    let sink = Arc::new(Sink::default());
    let deferred = Deferred::new(sink.clone(), 2);
    let (queued_tx, queued) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let d = deferred.clone();
    let worker = std::thread::spawn(move || {
        let d2 = d.clone();
        assert!(poll_in_scope(&d, 0, move |_| {
            d2.record(record("192.0.2.9"));
            // The response is written; the worker has not got back to its queue yet.
            queued_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            Poll::Ready(())
        })
        .is_ready());
    });
    queued.recv().unwrap();
    assert_eq!(sink.count(), 0);
    deferred.settle();
    assert_eq!(sink.count(), 1, "settled by another thread");
    go.send(()).unwrap();
    worker.join().unwrap();
    assert_eq!(sink.count(), 1, "run exactly once");
    assert_eq!(deferred.queues[0].pending.load(Ordering::SeqCst), 0);
}

/// A sink whose records wait for a release: a worker caught running them.
struct Slow {
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
    done: AtomicUsize,
}

impl RecordSink for Slow {
    fn record(&self, _: RequestRecord) {
        self.entered.lock().unwrap().send(()).unwrap();
        self.release.lock().unwrap().recv().unwrap();
        self.done.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn settle_waits_for_the_records_a_worker_is_running() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let sink = Arc::new(Slow {
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
        done: AtomicUsize::new(0),
    });
    let deferred = Deferred::new(sink.clone(), 2);
    let d = deferred.clone();
    let worker = std::thread::spawn(move || {
        let d2 = d.clone();
        assert!(poll_in_scope(&d, 1, move |_| {
            d2.record(record("192.0.2.9"));
            Poll::Ready(())
        })
        .is_ready());
    });
    // The worker is running its record now.
    entered.recv().unwrap();
    let settled = Arc::new(AtomicBool::new(false));
    let (d, s) = (deferred.clone(), settled.clone());
    let settler = std::thread::spawn(move || {
        d.settle();
        s.store(true, Ordering::SeqCst);
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !settled.load(Ordering::SeqCst),
        "settle returned while the record was still running"
    );
    release.send(()).unwrap();
    settler.join().unwrap();
    assert!(settled.load(Ordering::SeqCst));
    assert_eq!(sink.done.load(Ordering::SeqCst), 1);
    worker.join().unwrap();
    assert_eq!(sink.done.load(Ordering::SeqCst), 1);
}

#[test]
fn a_poll_that_panics_leaves_the_scope_and_its_record_runs_on_drop() {
    let sink = Arc::new(Sink::default());
    let deferred = Deferred::new(sink.clone(), 1);
    let d = deferred.clone();
    let mut fut = Box::pin(deferred.scope(
        0,
        std::future::poll_fn(move |_| -> Poll<()> {
            d.record(record("192.0.2.1"));
            panic!("a service bug");
        }),
    ));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = poll_once(fut.as_mut());
    }));
    assert!(caught.is_err());
    assert_eq!(sink.count(), 0, "still queued");
    // The thread left the scope: a record now runs at once.
    deferred.record(record("192.0.2.2"));
    assert_eq!(sink.count(), 1);
    drop(fut);
    assert_eq!(sink.count(), 2, "the dropped connection's record ran");
    assert_eq!(deferred.queues[0].pending.load(Ordering::SeqCst), 0);
}

/// Bans a source once a record of it has run.
#[derive(Default)]
struct BanAfterOne(Mutex<Vec<IpAddr>>);

impl RecordSink for BanAfterOne {
    fn record(&self, record: RequestRecord) {
        self.0.lock().unwrap().push(record.src);
    }
}

impl Gate for BanAfterOne {
    fn refuse(&self, src: IpAddr, _: Option<&str>, _: &str, _: &str) -> Option<Arc<str>> {
        self.0
            .lock()
            .unwrap()
            .contains(&src)
            .then(|| Arc::from("test"))
    }
}

/// What the record layer answers over the test's inner service.
type Answered = crate::proxy::timing::TimingBody<
    crate::proxy::cut::CutBody<crate::proxy::layers::Answer<Empty<Bytes>>>,
>;

type Svc = tower::util::BoxCloneService<
    Request<hyper::body::Incoming>,
    Response<http_body_util::combinators::UnsyncBoxBody<Bytes, crate::proxy::fault::BoxError>>,
    std::convert::Infallible,
>;

/// The record layer over a gate over an inner service that answers 200, every request from
/// 192.0.2.7; records go to `sink`, and the gate settles `deferred` when given.
fn stack(sink: Arc<dyn RecordSink>, gate: Arc<dyn Gate>, deferred: Option<Arc<Deferred>>) -> Svc {
    let mut g = GateLayer::new(gate.clone());
    if let Some(d) = deferred {
        g = g.settling(d);
    }
    let svc = ServiceBuilder::new()
        .map_request(|mut req: Request<hyper::body::Incoming>| {
            let ip = "192.0.2.7".parse().unwrap();
            req.extensions_mut().insert(Client {
                src: ip,
                peer: ip,
                unknown: false,
            });
            req
        })
        .map_response(|resp: Response<Answered>| resp.map(|b| b.map_err(Into::into).boxed_unsync()))
        .layer(RecordLayer::new(RecordCtx {
            sink,
            in_flight: IntGauge::new("g", "g").unwrap(),
            resets: IntCounter::new("r", "r").unwrap(),
            gate,
            bans: None,
        }))
        .layer(g)
        .service(capture().0);
    tower::util::BoxCloneService::new(svc)
}

/// Serves `svc` over an in-memory connection that counts its writes in `writes`, as a worker
/// does: in `deferred`'s scope when given. Returns the client's end.
fn serve(
    svc: Svc,
    deferred: Option<&Arc<Deferred>>,
    writes: &Arc<AtomicUsize>,
) -> tokio::io::DuplexStream {
    let (near, far) = tokio::io::duplex(1 << 16);
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(
        hyper_util::rt::TokioIo::new(CountingIo::new(far, writes.clone())),
        hyper_util::service::TowerToHyperService::new(svc),
    );
    match deferred {
        Some(d) => drop(tokio::spawn(d.scope(0, conn))),
        None => drop(tokio::spawn(conn)),
    }
    near
}

/// Reads until `n` responses (each ends with an empty body: `content-length: 0`) are in.
async fn responses(conn: &mut tokio::io::DuplexStream, n: usize) -> String {
    let mut got = Vec::new();
    while String::from_utf8_lossy(&got).matches("\r\n\r\n").count() < n {
        let mut chunk = [0u8; 4096];
        let k = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
            .await
            .expect("the responses arrive")
            .unwrap();
        assert!(k > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..k]);
    }
    String::from_utf8(got).unwrap()
}

const GET: &[u8] = b"GET /api/tags HTTP/1.1\r\nhost: g\r\n\r\n";

/// Waits until `sink` holds `n` records.
async fn records(sink: &Sink, n: usize) {
    for _ in 0..500 {
        if sink.count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("{} records, not {n}", sink.count());
}

#[tokio::test]
async fn a_response_is_written_before_its_record_runs() {
    // Without the scope the record runs when hyper sees the body end, before its write.
    for (held_back, writes_before_record) in [(false, 0), (true, 1)] {
        let writes = Arc::new(AtomicUsize::new(0));
        let sink = Arc::new(Sink {
            written: Some(writes.clone()),
            ..Sink::default()
        });
        let deferred = Deferred::new(sink.clone(), 1);
        let svc = stack(deferred.clone(), Arc::new(BanAfterOne::default()), None);
        let mut conn = serve(svc, held_back.then_some(&deferred), &writes);
        conn.write_all(GET).await.unwrap();
        let got = responses(&mut conn, 1).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        records(&sink, 1).await;
        assert_eq!(
            *sink.writes_seen.lock().unwrap(),
            [writes_before_record],
            "held back: {held_back}"
        );
        assert_eq!(writes.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn a_pipelined_request_meets_the_ban_its_predecessors_record_decided() {
    let bans = Arc::new(BanAfterOne::default());
    let deferred = Deferred::new(bans.clone(), 1);
    let svc = stack(deferred.clone(), bans.clone(), Some(deferred.clone()));
    let writes = Arc::new(AtomicUsize::new(0));
    let mut conn = serve(svc, Some(&deferred), &writes);
    // Both requests in one write: hyper reads the second in the poll that wrote the first
    // response, before the worker gets back to its queue.
    conn.write_all(&[GET, GET].concat()).await.unwrap();
    let got = responses(&mut conn, 2).await;
    let statuses: Vec<&str> = got
        .split("\r\n")
        .filter(|l| l.starts_with("HTTP/1.1"))
        .collect();
    assert_eq!(
        statuses,
        ["HTTP/1.1 200 OK", "HTTP/1.1 403 Forbidden"],
        "{got}"
    );
}

/// Panics on its first record.
#[derive(Default)]
struct Bug(AtomicUsize);

impl RecordSink for Bug {
    fn record(&self, _: RequestRecord) {
        assert!(self.0.fetch_add(1, Ordering::SeqCst) > 0, "a pipeline bug");
    }
}

#[test]
fn a_record_that_panics_leaves_the_queue_counted_empty() {
    let sink = Arc::new(Bug::default());
    let deferred = Deferred::new(sink.clone(), 1);
    let d = deferred.clone();
    let fut = deferred.scope(
        0,
        std::future::poll_fn(move |_| {
            d.record(record("192.0.2.1"));
            d.record(record("192.0.2.2"));
            Poll::Ready(())
        }),
    );
    let mut fut = Box::pin(fut);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = poll_once(fut.as_mut());
    }));
    assert!(caught.is_err());
    assert_eq!(deferred.queues[0].pending.load(Ordering::SeqCst), 0);
    assert!(deferred.queues[0]
        .jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_empty());
    // Later records still run.
    deferred.record(record("192.0.2.3"));
    assert_eq!(sink.0.load(Ordering::SeqCst), 2);
}
