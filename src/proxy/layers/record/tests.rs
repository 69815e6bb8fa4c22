use std::future::{pending, ready};

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use tower::ServiceExt;

use super::*;
use crate::proxy::layers::answered;
use crate::proxy::layers::test_support::{capture, request_from, Records};
use crate::route::Route;

/// A gate with no bans.
struct NoBans;

impl crate::proxy::refusal::Gate for NoBans {
    fn refuse(&self, _: std::net::IpAddr, _: Option<&str>, _: &str, _: &str) -> Option<Arc<str>> {
        None
    }
}

fn layer(records: &Arc<Records>) -> (RecordLayer, IntGauge, IntCounter) {
    let gauge = IntGauge::new("g", "g").unwrap();
    let resets = IntCounter::new("r", "r").unwrap();
    let l = RecordLayer::new(RecordCtx {
        sink: records.clone(),
        in_flight: gauge.clone(),
        resets: resets.clone(),
        gate: Arc::new(NoBans),
        bans: None,
    });
    (l, gauge, resets)
}

#[tokio::test]
async fn a_forwarded_response_becomes_exactly_one_record() {
    let records = Arc::new(Records::default());
    let (l, gauge, _) = layer(&records);
    let (inner, seen) = capture();
    let resp = l
        .layer(inner)
        .oneshot(request_from("198.51.100.7", "/api/%74ags?x=1"))
        .await
        .unwrap();
    assert_eq!(gauge.get(), 1, "in flight until the body ends");
    let meta = seen.lock().unwrap()[0].meta.clone().unwrap();
    assert_eq!(meta.path, "/api/tags");
    drop(resp);
    let recs = records.take();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(
        (r.src.to_string().as_str(), r.route, r.status, r.outcome),
        ("198.51.100.7", Route::Tags, 200, Outcome::Complete)
    );
    assert_eq!(r.raw_target, "/api/%74ags?x=1");
    assert_eq!(gauge.get(), 0);
}

#[tokio::test]
async fn a_layer_answer_is_recorded_with_its_disposition() {
    let records = Arc::new(Records::default());
    let (l, _, _) = layer(&records);
    let inner = tower::service_fn(|_req: Request<Empty<Bytes>>| {
        let mut resp = Response::new(Either::<Empty<Bytes>, _>::Right(Full::new(Bytes::new())));
        *resp.status_mut() = http::StatusCode::BAD_REQUEST;
        ready(Ok::<_, Infallible>(answered(
            resp,
            Outcome::ClientCancelled,
            Some(499),
        )))
    });
    let resp = l
        .layer(inner)
        .oneshot(request_from("192.0.2.1", "/api/blobs/x"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "the client gets what the layer sent");
    assert!(resp.extensions().get::<Disposition>().is_none(), "consumed");
    drop(resp);
    let r = &records.take()[0];
    assert_eq!((r.status, r.outcome), (499, Outcome::ClientCancelled));
}

#[tokio::test]
async fn a_client_leaving_before_the_head_is_recorded_as_499() {
    let records = Arc::new(Records::default());
    let (l, gauge, _) = layer(&records);
    let inner = tower::service_fn(|_req: Request<Empty<Bytes>>| {
        pending::<Result<Response<Empty<Bytes>>, Infallible>>()
    });
    let mut svc = l.layer(inner);
    let fut = svc.call(request_from("192.0.2.1", "/api/generate"));
    assert_eq!(gauge.get(), 1);
    drop(fut);
    let r = &records.take()[0];
    assert_eq!((r.status, r.outcome), (499, Outcome::ClientCancelled));
    assert_eq!(gauge.get(), 0);
}

/// A gate that has banned everyone, and says whether a ban can cut (block mode,
/// `abort_in_flight`) as `cuts` is set.
struct BannedAll {
    cuts: std::sync::atomic::AtomicBool,
}

impl crate::proxy::refusal::Gate for BannedAll {
    fn refuse(&self, _: std::net::IpAddr, _: Option<&str>, _: &str, _: &str) -> Option<Arc<str>> {
        None
    }
    fn cuts_now(&self) -> bool {
        self.cuts.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn cut(&self, _: std::net::IpAddr, _: Option<&str>) -> Option<Arc<str>> {
        self.cuts_now().then(|| Arc::from("admin"))
    }
}

/// Whether it was woken.
#[derive(Default)]
struct Woken(std::sync::atomic::AtomicBool);

impl futures_util::task::ArcWake for Woken {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A request waiting for its head listens for bans only while a ban can cut: in block mode
/// the ban signal wakes it and it is answered 403 at once; in monitor mode (or without
/// `abort_in_flight`) the signal does not wake it, it stays waiting for its head, and it is
/// recorded as a client that left when dropped (nothing was cut).
#[tokio::test]
async fn a_request_listens_for_bans_before_its_head_only_while_a_ban_can_cut() {
    for cuts in [true, false] {
        let records = Arc::new(Records::default());
        let gate = Arc::new(BannedAll {
            cuts: std::sync::atomic::AtomicBool::new(cuts),
        });
        let bans = Arc::new(Notify::new());
        let l = RecordLayer::new(RecordCtx {
            sink: records.clone(),
            in_flight: IntGauge::new("g", "g").unwrap(),
            resets: IntCounter::new("r", "r").unwrap(),
            gate: gate.clone(),
            bans: Some(bans.clone()),
        });
        let inner = tower::service_fn(|_req: Request<Empty<Bytes>>| {
            pending::<Result<Response<Empty<Bytes>>, Infallible>>()
        });
        let mut svc = l.layer(inner);
        let mut fut = Box::pin(svc.call(request_from("192.0.2.1", "/api/pull")));
        let woken = Arc::new(Woken::default());
        let waker = futures_util::task::waker(woken.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending(), "cuts {cuts}");
        bans.notify_waiters();
        assert_eq!(
            woken.0.load(std::sync::atomic::Ordering::SeqCst),
            cuts,
            "woken by the ban signal, cuts {cuts}"
        );
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(resp)) => {
                assert!(cuts);
                assert_eq!(resp.status(), 403);
                drop(resp);
                let r = &records.take()[0];
                assert_eq!((r.status, r.outcome), (403, Outcome::Blocked));
            }
            Poll::Pending => {
                assert!(!cuts);
                drop(fut);
                let r = &records.take()[0];
                assert_eq!((r.status, r.outcome), (499, Outcome::ClientCancelled));
            }
            Poll::Ready(Err(never)) => match never {},
        }
    }
}

#[test]
fn an_absolute_form_target_is_recorded_as_forwarded() {
    for (target, path, raw) in [
        ("http://localhost?x=1", "/", "/?x=1"),
        (
            "http://localhost:11434/api/tags?a",
            "/api/tags",
            "/api/tags?a",
        ),
        ("/api/tags", "/api/tags", "/api/tags"),
    ] {
        let rec = start_record(&request_from("192.0.2.1", target));
        assert_eq!((&*rec.path, &*rec.raw_target), (path, raw), "{target}");
    }
}

/// A key sent in a query (not a way to send one, but clients do) never reaches the logs: the
/// record every log line is written from holds it redacted.
#[test]
fn an_api_key_in_the_query_is_recorded_redacted() {
    let key = format!("ogk_{}", "0a".repeat(32));
    for (target, raw) in [
        (
            format!("/api/tags?api_key={key}"),
            "/api/tags?api_key=ogk_REDACTED".to_owned(),
        ),
        (
            format!("/api/%74ags?k={key}&x={key}"),
            "/api/%74ags?k=ogk_REDACTED&x=ogk_REDACTED".to_owned(),
        ),
        (
            "/api/tags?q=ogk_&r=ogk_zz".to_owned(),
            "/api/tags?q=ogk_&r=ogk_zz".to_owned(),
        ),
    ] {
        let rec = start_record(&request_from("192.0.2.1", &target));
        assert_eq!(&*rec.raw_target, raw, "{target}");
        assert!(!rec.raw_target.contains(&key));
    }
}

#[tokio::test]
async fn ollama_s_403_to_a_browser_s_cross_site_request_is_recorded_as_a_refusal() {
    // (Sec-Fetch-Site, Ollama's status) → the outcome recorded.
    for (site, status, outcome) in [
        (Some("cross-site"), 403, Outcome::Refused),
        (Some("same-site"), 403, Outcome::Refused),
        (Some("cross-site"), 200, Outcome::Complete),
        (Some("cross-site"), 404, Outcome::Complete),
        (Some("same-origin"), 403, Outcome::Complete),
        (Some("none"), 403, Outcome::Complete),
        (None, 403, Outcome::Complete),
    ] {
        let records = Arc::new(Records::default());
        let (l, _, _) = layer(&records);
        let inner = tower::service_fn(move |_: Request<Empty<Bytes>>| {
            let mut resp = Response::new(Empty::<Bytes>::new());
            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
            ready(Ok::<_, Infallible>(resp))
        });
        let mut req = request_from("198.51.100.7", "/api/tags");
        if let Some(site) = site {
            req.headers_mut()
                .insert("sec-fetch-site", http::HeaderValue::from_static(site));
        }
        drop(l.layer(inner).oneshot(req).await.unwrap());
        let recs = records.take();
        assert_eq!(
            (recs.len(), recs[0].status, recs[0].outcome),
            (1, status, outcome),
            "{site:?} {status}"
        );
    }
}
