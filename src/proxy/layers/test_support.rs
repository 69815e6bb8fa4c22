//! Mock inner services for the layers' unit tests: no sockets, no upstream.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Empty};
use tower::Service;

use super::{Answer, Client, Meta};

/// What the inner service saw of one request.
pub(crate) struct Seen {
    pub(crate) client: Option<Client>,
    pub(crate) meta: Option<Meta>,
}

/// The requests an inner service saw.
pub(crate) type Log = Arc<Mutex<Vec<Seen>>>;

/// An inner service that records each request and answers `200` with an empty upstream body.
#[derive(Clone)]
pub(crate) struct Capture(Log);

/// A capturing inner service and its log.
pub(crate) fn capture() -> (Capture, Log) {
    let log = Log::default();
    (Capture(log.clone()), log)
}

impl<B> Service<Request<B>> for Capture {
    type Response = Response<Answer<Empty<Bytes>>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.0.lock().unwrap().push(Seen {
            client: req.extensions().get::<Client>().copied(),
            meta: req.extensions().get::<Meta>().cloned(),
        });
        ready(Ok(Response::new(Either::Left(Empty::new()))))
    }
}

/// A bodiless GET of `target`.
pub(crate) fn empty_request(target: &str) -> Request<Empty<Bytes>> {
    Request::get(target).body(Empty::new()).unwrap()
}

/// A request from `src` as the client-IP layer would have tagged it.
pub(crate) fn request_from(src: &str, target: &str) -> Request<Empty<Bytes>> {
    let mut req = empty_request(target);
    let ip = src.parse().unwrap();
    req.extensions_mut().insert(Client {
        src: ip,
        peer: ip,
        unknown: false,
    });
    req
}

/// A record sink that keeps what it gets.
#[derive(Default)]
pub(crate) struct Records(Mutex<Vec<crate::record::RequestRecord>>);

impl crate::record::RecordSink for Records {
    fn record(&self, record: crate::record::RequestRecord) {
        self.0.lock().unwrap().push(record);
    }
}

impl Records {
    pub(crate) fn take(&self) -> Vec<crate::record::RequestRecord> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}
