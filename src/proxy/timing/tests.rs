use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full};

use super::*;
use crate::record::Method;
use crate::route::Route;

#[derive(Default)]
struct Collect(Mutex<Vec<RequestRecord>>);

impl RecordSink for Collect {
    fn record(&self, record: RequestRecord) {
        self.0.lock().unwrap().push(record);
    }
}

impl Collect {
    fn take(&self) -> Vec<RequestRecord> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A body that yields scripted frames and never reports its end early.
struct Script(VecDeque<Result<Frame<Bytes>, &'static str>>);

impl Body for Script {
    type Data = Bytes;
    type Error = &'static str;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
        Poll::Ready(self.0.pop_front())
    }
}

fn script(items: Vec<Result<&'static str, &'static str>>) -> Script {
    Script(
        items
            .into_iter()
            .map(|i| i.map(|s| Frame::data(Bytes::from_static(s.as_bytes()))))
            .collect(),
    )
}

fn completion(sink: &Arc<Collect>) -> Completion {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    Completion {
        record: RequestRecord {
            src: ip,
            peer: ip,
            method: Method::Post,
            method_text: Cow::Borrowed("POST"),
            path: Cow::Borrowed("/api/chat"),
            raw_target: Cow::Borrowed("/api/chat"),
            route: Route::Chat,
            status: 0,
            ttfb: None,
            total: Duration::ZERO,
            completed_at: Utc::now(),
            outcome: Outcome::Complete,
            bytes_in: 0,
            bytes_out: 0,
            in_flight_reported: 0,
            identity: None,
        },
        start: Instant::now(),
        sink: sink.clone(),
        ticket: None,
        in_flight: None,
        upstream_resets: None,
        fault: None,
    }
}

fn body<B: Body>(sink: &Arc<Collect>, inner: B) -> TimingBody<B> {
    HeadGuard::new(completion(sink)).into_body(200, Outcome::Complete, inner)
}

#[tokio::test(start_paused = true)]
async fn end_of_stream_records_complete_once_with_ttfb_and_total() {
    let sink = Arc::new(Collect::default());
    let mut b = body(&sink, script(vec![Ok("a"), Ok("b")]));
    tokio::time::advance(Duration::from_millis(100)).await;
    b.frame().await.unwrap().unwrap();
    tokio::time::advance(Duration::from_millis(250)).await;
    b.frame().await.unwrap().unwrap();
    assert!(sink.take().is_empty(), "not ended yet");
    assert!(b.frame().await.is_none());
    drop(b);
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].outcome, Outcome::Complete);
    assert_eq!(recs[0].status, 200);
    assert_eq!(recs[0].ttfb, Some(Duration::from_millis(100)));
    assert_eq!(recs[0].total, Duration::from_millis(350));
}

#[tokio::test(start_paused = true)]
async fn error_frame_records_upstream_error() {
    let sink = Arc::new(Collect::default());
    let mut b = body(&sink, script(vec![Ok("a"), Err("reset")]));
    b.frame().await.unwrap().unwrap();
    assert!(b.frame().await.unwrap().is_err());
    drop(b);
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].outcome, Outcome::UpstreamError);
    assert_eq!(recs[0].ttfb, Some(Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn is_end_stream_after_last_frame_fires_without_polling_to_none() {
    let sink = Arc::new(Collect::default());
    let mut b = body(&sink, Full::new(Bytes::from_static(b"{}")));
    tokio::time::advance(Duration::from_millis(7)).await;
    b.frame().await.unwrap().unwrap();
    // hyper stops here once Content-Length is reached; the record must already exist.
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].outcome, Outcome::Complete);
    assert_eq!(recs[0].total, Duration::from_millis(7));
    drop(b);
    assert!(sink.take().is_empty(), "fires exactly once");
}

#[tokio::test(start_paused = true)]
async fn drop_mid_stream_records_client_cancelled() {
    let sink = Arc::new(Collect::default());
    let mut b = body(&sink, script(vec![Ok("a"), Ok("b"), Ok("c")]));
    b.frame().await.unwrap().unwrap();
    tokio::time::advance(Duration::from_secs(3)).await;
    drop(b);
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].outcome, Outcome::ClientCancelled);
    assert_eq!(recs[0].status, 200);
    assert_eq!(recs[0].total, Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn empty_body_dropped_unpolled_records_complete_without_ttfb() {
    let sink = Arc::new(Collect::default());
    let b = body(&sink, Empty::<Bytes>::new());
    drop(b);
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].outcome, Outcome::Complete);
    assert_eq!(recs[0].ttfb, None);
}

#[tokio::test(start_paused = true)]
async fn head_guard_dropped_records_499_client_cancelled() {
    let sink = Arc::new(Collect::default());
    let guard = HeadGuard::new(completion(&sink));
    tokio::time::advance(Duration::from_secs(58)).await;
    drop(guard);
    let recs = sink.take();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].status, CLIENT_CLOSED_REQUEST);
    assert_eq!(recs[0].outcome, Outcome::ClientCancelled);
    assert_eq!(recs[0].total, Duration::from_secs(58));
}

#[tokio::test(start_paused = true)]
async fn outcome_given_at_head_is_kept_for_local_responses() {
    let sink = Arc::new(Collect::default());
    let guard = HeadGuard::new(completion(&sink));
    let mut b = guard.into_body(
        502,
        Outcome::UpstreamError,
        Full::new(Bytes::from_static(b"x")),
    );
    b.frame().await.unwrap().unwrap();
    let recs = sink.take();
    assert_eq!(
        (recs[0].status, recs[0].outcome),
        (502, Outcome::UpstreamError)
    );
}

#[tokio::test(start_paused = true)]
async fn head_response_dropped_unpolled_keeps_its_outcome() {
    let sink = Arc::new(Collect::default());
    let mut c = completion(&sink);
    c.record.method = Method::Head;
    let b =
        HeadGuard::new(c).into_body(403, Outcome::Blocked, Full::new(Bytes::from_static(b"{}")));
    drop(b);
    let recs = sink.take();
    assert_eq!((recs[0].status, recs[0].outcome), (403, Outcome::Blocked));
}

#[tokio::test(start_paused = true)]
async fn no_content_response_dropped_unpolled_is_complete() {
    let sink = Arc::new(Collect::default());
    let b = HeadGuard::new(completion(&sink)).into_body(
        204,
        Outcome::Complete,
        Full::new(Bytes::from_static(b"x")),
    );
    drop(b);
    assert_eq!(sink.take()[0].outcome, Outcome::Complete);
}
