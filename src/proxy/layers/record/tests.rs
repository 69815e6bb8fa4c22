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
