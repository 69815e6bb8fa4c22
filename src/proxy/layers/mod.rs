//! The request path as a tower stack: one concern per layer, in the order written once in
//! [`super::Proxy::stack`].
//!
//! Each layer is a `Layer` plus a `Service` (plus a `Future` where it answers by itself), in
//! the style of tower-http, and is unit-tested with `ServiceExt::oneshot` against a mock inner
//! service. Layers talk to each other only through request and response extensions:
//! [`Client`] (who is calling, set by the client-IP layer), [`Meta`] (the normalised target
//! and the request's fault cell, set by the record layer) and [`Disposition`] (how a layer
//! that answered by itself wants the exchange recorded).

pub(crate) mod auth;
pub(crate) mod client_ip;
pub(crate) mod gate;
pub(crate) mod host_guard;
pub(crate) mod identify;
pub(crate) mod policy;
pub(crate) mod record;
pub(crate) mod rewrite;
pub(crate) mod upstream_error;

use std::borrow::Cow;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;

use super::fault::FaultCell;
use crate::record::Outcome;

/// A response body: the upstream's own (`Left`) or one the guard wrote (`Right`).
pub(crate) type Answer<B> = Either<B, Full<Bytes>>;

/// Who is calling: set by the client-IP layer, read by every layer below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Client {
    /// The resolved client (the socket peer, or the hop a trusted proxy vouched for).
    pub(crate) src: IpAddr,
    /// The socket peer.
    pub(crate) peer: IpAddr,
    /// A trusted proxy named the client by something that is not an address: `src` is the
    /// last address vouched for, and its rights (`manage_from`) are not the request's.
    pub(crate) unknown: bool,
}

impl Client {
    /// Whether a trusted proxy vouched for the client: the connection is then the proxy's,
    /// shared by every client behind it, not the client's own. So it is when the proxy named
    /// its client by something that is not an address.
    pub(crate) fn vouched(&self) -> bool {
        self.src != self.peer || self.unknown
    }
}

/// What the record layer learned about the request, for the layers below it.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    /// The normalised path (the detection key).
    pub(crate) path: Cow<'static, str>,
    /// The method text.
    pub(crate) method_text: Cow<'static, str>,
    /// The known route the path belongs to.
    pub(crate) route: crate::route::Route,
    /// Where the request body notes a client fault (read by the response side).
    pub(crate) fault: Arc<FaultCell>,
    /// A browser's cross-site request ([`crate::proxy::headers::cross_site`]), read once.
    pub(crate) cross_site: bool,
}

/// How an exchange a layer answered itself is recorded: its outcome, and the status the
/// logs show when it differs from the one sent (499 for a client that is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Disposition {
    /// The record's outcome.
    pub(crate) outcome: Outcome,
    /// The logged status, when not the response's.
    pub(crate) status: Option<u16>,
}

/// Marks `resp` as answered by the guard with `outcome`.
pub(crate) fn answered<B>(
    mut resp: Response<B>,
    outcome: Outcome,
    status: Option<u16>,
) -> Response<B> {
    resp.extensions_mut()
        .insert(Disposition { outcome, status });
    resp
}

/// A refusal: recorded with `outcome`, and the connection closed after it, so a refused
/// client cannot park keep-alive connections on the guard's slots.
pub(crate) fn refusal<B>(resp: Response<Full<Bytes>>, outcome: Outcome) -> Response<Answer<B>> {
    let mut resp = answered(resp.map(Either::Right), outcome, None);
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

/// A refusal of `client`: as [`refusal`], except that a connection a trusted proxy holds
/// stays open (as nginx's `deny` leaves it) when the refused request's body is known to have
/// ended (`body_done`: none was declared, or the guard read it to its end). That connection is
/// the proxy's, shared by every client behind it: closing it would not hinder the refused
/// client (the proxy dials again) and would cost the proxy a new connection for each refused
/// request. With a body still unread the connection must close, and the refusal says so: hyper
/// would otherwise close it after a response that announced keep-alive, and a proxy that sent
/// the next client's request on it would answer that client `502`.
pub(crate) fn refusal_of<B>(
    resp: Response<Full<Bytes>>,
    outcome: Outcome,
    client: Option<&Client>,
    body_done: bool,
) -> Response<Answer<B>> {
    if body_done && client.is_some_and(Client::vouched) {
        answered(resp.map(Either::Right), outcome, None)
    } else {
        refusal(resp, outcome)
    }
}

/// Whether a request declares no body: no `Transfer-Encoding`, and no `Content-Length` or
/// one of zero (`0`, `00`: hyper reads its digits as a number). A `Content-Length` list
/// (`0, 0`) or anything else counts as a body: the answer is then only more cautious (the
/// connection closes), never less.
pub(crate) fn declares_no_body(headers: &http::HeaderMap) -> bool {
    !headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers.get(http::header::CONTENT_LENGTH).map_or(true, |v| {
            !v.as_bytes().is_empty() && v.as_bytes().iter().all(|&b| b == b'0')
        })
}

pin_project! {
    /// The future of a layer that either answers at once or asks the inner service.
    ///
    /// The answer is boxed: a response is 264 bytes, and unboxed it would make every
    /// forwarded request's future (three of these nested in the record layer's) that much
    /// larger, copied with it on each move. Only refusals pay the allocation.
    #[project = ShortCircuitProj]
    #[allow(missing_docs)] // variant fields; pin-project-lite takes no docs there
    pub(crate) enum ShortCircuit<F, B> {
        /// Answered by the layer (the answer, until it is taken).
        Answer { resp: Option<Box<Response<Answer<B>>>> },
        /// Forwarded (the inner service's future).
        Inner { #[pin] fut: F },
    }
}

impl<F, B> ShortCircuit<F, B> {
    /// A future that yields `resp`.
    pub(crate) fn answer(resp: Response<Answer<B>>) -> Self {
        ShortCircuit::Answer {
            resp: Some(Box::new(resp)),
        }
    }
}

impl<F, B, E> Future for ShortCircuit<F, B>
where
    F: Future<Output = Result<Response<Answer<B>>, E>>,
{
    type Output = Result<Response<Answer<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShortCircuitProj::Answer { resp } => match resp.take() {
                Some(r) => Poll::Ready(Ok(*r)),
                // Polled again after completion: a caller bug; stay pending rather than panic.
                None => Poll::Pending,
            },
            ShortCircuitProj::Inner { fut } => fut.poll(cx),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_declares_no_body_only_without_framing_or_with_a_zero_length() {
        let with = |pairs: &[(&str, &str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            declares_no_body(&h)
        };
        assert!(with(&[]));
        assert!(with(&[("content-length", "0")]));
        assert!(with(&[("content-length", "00")]));
        assert!(!with(&[("content-length", "1")]));
        assert!(!with(&[("content-length", "10")]));
        assert!(!with(&[("content-length", "")]));
        assert!(!with(&[("content-length", "0, 0")]));
        assert!(!with(&[("transfer-encoding", "chunked")]));
        assert!(!with(&[
            ("transfer-encoding", "chunked"),
            ("content-length", "0")
        ]));
    }

    #[test]
    fn a_refusal_leaves_the_connection_open_only_for_a_vouched_client_whose_body_ended() {
        let (direct, behind) = (
            Client {
                src: "192.0.2.1".parse().unwrap(),
                peer: "192.0.2.1".parse().unwrap(),
                unknown: false,
            },
            Client {
                src: "192.0.2.1".parse().unwrap(),
                peer: "10.0.0.1".parse().unwrap(),
                unknown: false,
            },
        );
        // A client the trusted proxy named by something not an address: the connection is
        // the proxy's too, though the request is counted under its address.
        let unnamed = Client {
            src: "10.0.0.1".parse().unwrap(),
            peer: "10.0.0.1".parse().unwrap(),
            unknown: true,
        };
        for (client, body_done, closes) in [
            (None, true, true),
            (Some(&direct), true, true),
            (Some(&direct), false, true),
            (Some(&behind), false, true),
            (Some(&behind), true, false),
            (Some(&unnamed), false, true),
            (Some(&unnamed), true, false),
        ] {
            let resp: Response<Answer<Full<Bytes>>> = refusal_of(
                Response::new(Full::new(Bytes::new())),
                Outcome::Blocked,
                client,
                body_done,
            );
            let close = resp.headers().get(http::header::CONNECTION);
            assert_eq!(
                close.is_some_and(|v| v == "close"),
                closes,
                "{client:?} {body_done}"
            );
            assert_eq!(
                resp.extensions().get::<Disposition>().map(|d| d.outcome),
                Some(Outcome::Blocked)
            );
        }
    }
}
