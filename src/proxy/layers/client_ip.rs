//! Client-IP layer: who is calling. Bound to one connection (it knows the socket peer) and
//! outermost, since every other layer needs the answer; it resolves the client once and
//! puts it in the request's extensions as [`Client`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::Request;
use ipnet::IpNet;
use tower::{Layer, Service};

use super::Client;
use crate::proxy::client_ip::{canonical, resolve};

/// Resolves the client of each request on one connection.
#[derive(Clone)]
pub(crate) struct ClientIpLayer {
    peer: SocketAddr,
    trusted: Arc<ArcSwap<Vec<IpNet>>>,
}

impl ClientIpLayer {
    /// For the connection from `peer`; `trusted` is the live trusted-proxy list.
    pub(crate) fn new(peer: SocketAddr, trusted: Arc<ArcSwap<Vec<IpNet>>>) -> Self {
        ClientIpLayer { peer, trusted }
    }
}

impl<S> Layer<S> for ClientIpLayer {
    type Service = ClientIp<S>;
    fn layer(&self, inner: S) -> ClientIp<S> {
        ClientIp {
            inner,
            layer: self.clone(),
        }
    }
}

/// The client-IP service.
#[derive(Clone)]
pub(crate) struct ClientIp<S> {
    inner: S,
    layer: ClientIpLayer,
}

impl<S, B> Service<Request<B>> for ClientIp<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        let peer = self.layer.peer.ip();
        let client = resolve(peer, req.headers(), &self.layer.trusted.load());
        req.extensions_mut().insert(Client {
            src: client.src,
            peer: canonical(peer),
            unknown: client.unknown,
        });
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::layers::test_support::{capture, empty_request};
    use tower::ServiceExt;

    #[tokio::test]
    async fn trusted_peer_forwarded_client_is_put_in_the_extensions() {
        let trusted = Arc::new(ArcSwap::from_pointee(vec!["127.0.0.1/32".parse().unwrap()]));
        let (inner, seen) = capture();
        let svc = ClientIpLayer::new("127.0.0.1:5000".parse().unwrap(), trusted).layer(inner);
        let mut req = empty_request("/api/tags");
        req.headers_mut().insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"caf\xe9, 198.51.100.7").unwrap(),
        );
        svc.oneshot(req).await.unwrap();
        let client = seen.lock().unwrap()[0].client.unwrap();
        assert_eq!(client.src.to_string(), "198.51.100.7");
        assert_eq!(client.peer.to_string(), "127.0.0.1");
    }

    #[tokio::test]
    async fn untrusted_peer_is_the_client_and_mapped_addresses_are_ipv4() {
        let trusted = Arc::new(ArcSwap::from_pointee(Vec::new()));
        let (inner, seen) = capture();
        let svc =
            ClientIpLayer::new("[::ffff:203.0.113.9]:1".parse().unwrap(), trusted).layer(inner);
        let mut req = empty_request("/");
        req.headers_mut()
            .insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        svc.oneshot(req).await.unwrap();
        let client = seen.lock().unwrap()[0].client.unwrap();
        assert_eq!(client.src.to_string(), "203.0.113.9");
    }
}
