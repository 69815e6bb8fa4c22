use std::sync::Mutex;

use std::collections::VecDeque;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;

use super::*;
use crate::auth::Credential;
use crate::proxy::layers::Disposition;
use crate::route::Route;
use bytes::BytesMut;

/// Records verdicts; answers as monitor (`would_block`) or block mode would.
struct Sink {
    block: bool,
    seen: Mutex<Vec<(String, String)>>,
    /// The `ban` each verdict was given.
    bans: Mutex<Vec<bool>>,
}

impl PolicySink for Sink {
    fn verdict(&self, v: &Verdict, _: IpAddr, _: &str, _: &str, ban: bool) -> Action {
        self.bans.lock().unwrap().push(ban);
        self.seen
            .lock()
            .unwrap()
            .push((v.rule.to_owned(), v.value.clone()));
        if self.block {
            Action::Blocked
        } else {
            Action::WouldBlock
        }
    }
}

/// An inner service that records the body it was sent, byte for byte, and its size hint.
#[derive(Clone, Default)]
struct Upstream(Arc<Mutex<Vec<Sent>>>);

/// A body the upstream received, and its exact size hint (the framing).
type Sent = (Bytes, Option<u64>);

impl<B> Service<Request<PolicyBody<B>>> for Upstream
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Answer<http_body_util::Empty<Bytes>>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    /// Records what arrived, even when the body fails part-way (as hyper's client would fail
    /// the exchange).
    fn call(&mut self, req: Request<PolicyBody<B>>) -> Self::Future {
        let log = self.0.clone();
        Box::pin(async move {
            let hint = req.body().size_hint().exact();
            let mut body = req.into_body();
            let mut got = BytesMut::new();
            let mut failed = false;
            while let Some(frame) = body.frame().await {
                match frame.map(Frame::into_data) {
                    Ok(Ok(data)) => got.extend_from_slice(&data),
                    Ok(Err(_)) => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            log.lock().unwrap().push((got.freeze(), hint));
            let mut resp =
                Response::new(http_body_util::Either::Left(http_body_util::Empty::new()));
            if failed {
                *resp.status_mut() = StatusCode::BAD_REQUEST;
            }
            Ok(resp)
        })
    }
}

/// A body delivered in the given frames.
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn service(block: bool, cfg: PolicyConfig) -> (PolicyService<Upstream>, Arc<Sink>, Upstream) {
    service_with(block, cfg, Decoders::standard())
}

/// [`service`], with these zstd decoder slots.
fn service_with(
    block: bool,
    cfg: PolicyConfig,
    decoders: Arc<Decoders>,
) -> (PolicyService<Upstream>, Arc<Sink>, Upstream) {
    service_full(block, cfg, decoders, Buffered::new())
}

/// [`service_with`], with this count of the bytes held.
fn service_full(
    block: bool,
    cfg: PolicyConfig,
    decoders: Arc<Decoders>,
    buffered: Arc<Buffered>,
) -> (PolicyService<Upstream>, Arc<Sink>, Upstream) {
    let (layer, sink) = layer_full(block, cfg, decoders, buffered);
    let up = Upstream::default();
    (layer.layer(up.clone()), sink, up)
}

/// The stage, before its inner service, and its sink.
fn layer_full(
    block: bool,
    cfg: PolicyConfig,
    decoders: Arc<Decoders>,
    buffered: Arc<Buffered>,
) -> (PolicyLayer, Arc<Sink>) {
    let sink = Arc::new(Sink {
        block,
        seen: Mutex::default(),
        bans: Mutex::default(),
    });
    let layer = PolicyLayer::new(PolicyCtx {
        config: Arc::new(ArcSwap::from_pointee(cfg)),
        sink: sink.clone(),
        refused: IntCounter::new("r", "r").unwrap(),
        body_idle: Duration::from_secs(5),
        decoders,
        buffered,
        busy: IntCounter::new("b", "b").unwrap(),
    });
    (layer, sink)
}

fn request(
    route: Route,
    path: &'static str,
    body: &'static [u8],
    length: bool,
) -> Request<Full<Bytes>> {
    let length = length.then_some(body.len());
    with_meta(route, path, length, Full::new(Bytes::from_static(body)))
}

/// `body` in frames of `size` bytes.
fn framed(
    route: Route,
    path: &'static str,
    body: &[u8],
    size: usize,
    length: bool,
) -> Request<Frames> {
    let frames = body.chunks(size).map(Bytes::copy_from_slice).collect();
    with_meta(route, path, length.then_some(body.len()), Frames(frames))
}

fn with_meta<B>(route: Route, path: &'static str, length: Option<usize>, body: B) -> Request<B> {
    let mut b = Request::post(path);
    if let Some(n) = length {
        b = b.header("content-length", n);
    }
    let mut req = b.body(body).unwrap();
    req.extensions_mut().insert(Meta {
        path: path.into(),
        method_text: "POST".into(),
        route,
        fault: Arc::default(),
        cross_site: false,
    });
    req.extensions_mut().insert(Client {
        src: "192.0.2.9".parse().unwrap(),
        peer: "192.0.2.9".parse().unwrap(),
        unknown: false,
    });
    req
}

/// A task on this (one-threaded) runtime that counts each turn it gets, running.
async fn ticker() -> (
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let turns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let task = tokio::spawn({
        let turns = turns.clone();
        async move {
            loop {
                turns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    tokio::task::yield_now().await;
    (turns, task)
}

const FOREIGN_PUSH: &[u8] = br#"{"model":"attacker.example/x/y","insecure":true}"#;

#[tokio::test]
async fn block_mode_refuses_a_foreign_push_before_anything_is_forwarded() {
    let (svc, sink, up) = service(true, PolicyConfig::default());
    let resp = svc
        .oneshot(request(Route::Push, "/api/push", FOREIGN_PUSH, true))
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.extensions().get::<Disposition>().map(|d| d.outcome),
        Some(Outcome::Blocked)
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["error"],
        "ollama-guard: request refused by policy.registry_push: model \"attacker.example/x/y\" is not allowed"
    );
    assert!(
        up.0.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );
    let seen = sink.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (
                "policy.registry_push".to_owned(),
                "attacker.example/x/y".to_owned()
            ),
            ("policy.insecure".to_owned(), "true".to_owned())
        ]
    );
}

#[tokio::test]
async fn monitor_mode_forwards_the_body_byte_identical_with_its_framing() {
    for length in [true, false] {
        let (svc, sink, up) = service(false, PolicyConfig::default());
        let resp = svc
            .oneshot(request(Route::Push, "/api/push", FOREIGN_PUSH, length))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let sent = up.0.lock().unwrap().clone();
        let expected_hint = length.then_some(FOREIGN_PUSH.len() as u64);
        assert_eq!(sent, [(Bytes::from_static(FOREIGN_PUSH), expected_hint)]);
        assert_eq!(sink.seen.lock().unwrap().len(), 2);
    }
}

#[tokio::test]
async fn an_official_pull_passes_and_other_routes_are_not_read() {
    let (svc, sink, up) = service(true, PolicyConfig::default());
    let resp = svc
        .clone()
        .oneshot(request(
            Route::Pull,
            "/api/pull",
            br#"{"model":"llama3.2"}"#,
            true,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = svc
        .oneshot(request(
            Route::Show,
            "/api/show",
            br#"{"model":"x/y/z"}"#,
            true,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(sink.seen.lock().unwrap().is_empty());
    assert_eq!(up.0.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn oversized_management_bodies_are_413_in_block_mode_and_forwarded_whole_in_monitor() {
    let cfg = PolicyConfig {
        max_body: 16,
        ..PolicyConfig::default()
    };
    let big: &'static [u8] = br#"{"model":"llama3.2","padding":"xxxxxxxxxxxxxxxx"}"#;
    let (svc, _, up) = service(true, cfg.clone());
    let resp = svc
        .oneshot(request(Route::Pull, "/api/pull", big, false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(up.0.lock().unwrap().is_empty());
    let (svc, sink, up) = service(false, cfg);
    let resp = svc
        .oneshot(request(Route::Pull, "/api/pull", big, true))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.0.lock().unwrap()[0].0, Bytes::from_static(big));
    assert_eq!(sink.seen.lock().unwrap()[0].0, "policy.body_too_large");
}

#[tokio::test]
async fn invalid_duplicate_and_non_utf8_bodies_never_change_what_is_forwarded() {
    for (body, rule) in [
        (&b"{not json"[..], "policy.unreadable_body"),
        (b"\xff\xfe\x00", "policy.unreadable_body"),
        (
            br#"{"model":"llama3","MODEL":"attacker.example/x/y"}"#,
            "policy.registry_pull",
        ),
    ] {
        let (svc, sink, up) = service(false, PolicyConfig::default());
        let resp = svc
            .oneshot(request(Route::Pull, "/api/pull", body, true))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{body:?}");
        assert_eq!(up.0.lock().unwrap()[0].0, Bytes::from_static(body));
        let seen = sink.seen.lock().unwrap().clone();
        let rules: Vec<&str> = seen.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(rules, [rule], "{body:?}");
    }
}

/// Sends `body` to `path` in block mode: the status, and whether anything reached the
/// upstream.
async fn blocked(
    route: Route,
    path: &'static str,
    body: &'static [u8],
) -> (u16, bool, Vec<String>) {
    let (svc, sink, up) = service(true, PolicyConfig::default());
    let resp = svc.oneshot(request(route, path, body, true)).await.unwrap();
    let forwarded = !up.0.lock().unwrap().is_empty();
    let rules = sink
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(r, _)| r.clone())
        .collect();
    (resp.status().as_u16(), forwarded, rules)
}

#[tokio::test]
async fn bodies_go_reads_but_a_stricter_parser_would_not_are_judged_as_go_reads_them() {
    // Each is a push to attacker.example as Ollama's Go decoder reads it: the first value
    // only, broken UTF-8 and surrogates replaced, deep nesting and huge numbers in fields
    // no one reads.
    let deep: &'static [u8] = {
        let mut b = br#"{"model":"attacker.example/x/y","pad":"#.to_vec();
        b.extend(std::iter::repeat_n(b'[', 200));
        b.extend(std::iter::repeat_n(b']', 200));
        b.push(b'}');
        b.leak()
    };
    for body in [
        &br#"{"model":"attacker.example/x/y"} x"#[..],
        br#"{"model":"attacker.example/x/y"}{"model":"llama3"}"#,
        b"{\"model\":\"attacker.example/x/y\",\"note\":\"\xff\"}",
        br#"{"model":"attacker.example/x/y","note":"\ud800"}"#,
        br#"{"model":"attacker.example/x/y","x":1e400}"#,
        deep,
    ] {
        assert_eq!(
            blocked(Route::Push, "/api/push", body).await,
            (403, false, vec!["policy.registry_push".to_owned()]),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test]
async fn a_later_null_does_not_hide_the_value_go_keeps() {
    for (route, path, body, rule) in [
        (
            Route::Push,
            "/api/push",
            &br#"{"model":"attacker.example/x/y","model":null}"#[..],
            "policy.registry_push",
        ),
        (
            Route::Pull,
            "/api/pull",
            br#"{"model":"evil.example/a/b","MODEL":null}"#,
            "policy.registry_pull",
        ),
        (
            Route::Copy,
            "/api/copy",
            br#"{"source":"llama3","destination":"attacker.example/x/y","destination":null}"#,
            "policy.copy_destination",
        ),
        (
            Route::Create,
            "/api/create",
            br#"{"model":"m","from":"/etc/passwd","from":null}"#,
            "policy.create_from_path",
        ),
        (
            Route::Create,
            "/api/create",
            br#"{"model":"m","remote_host":"evil.example","remote_host":null}"#,
            "policy.create_remote_host",
        ),
    ] {
        assert_eq!(
            blocked(route, path, body).await,
            (403, false, vec![rule.to_owned()]),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test]
async fn a_management_body_go_would_refuse_is_refused_400_and_never_forwarded() {
    for body in [&b"{not json"[..], b"", b"[]", b"{\"model\":\"a\nb\"}"] {
        let (svc, sink, up) = service(true, PolicyConfig::default());
        let resp = svc
            .oneshot(request(Route::Push, "/api/push", body, true))
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body:?}");
        assert!(up.0.lock().unwrap().is_empty(), "{body:?}");
        let seen = sink.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{body:?}");
        assert_eq!(seen[0].0, "policy.unreadable_body");
        let json: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(
            json["error"],
            format!(
                "ollama-guard: request refused by policy.unreadable_body: body {:?} is not allowed",
                seen[0].1
            )
        );
    }
    assert_eq!(
        blocked(Route::Push, "/api/push", b"{not json").await.2,
        ["policy.unreadable_body"]
    );
    // `null` is a body Go reads (into an empty request, which Ollama answers itself).
    assert_eq!(
        blocked(Route::Push, "/api/push", b"null").await,
        (200, true, vec![])
    );
}

#[tokio::test]
async fn an_unreadable_body_is_judged_only_where_ollama_would_decode_it() {
    // A method Ollama does not route to the handler (gin answers it 404/405) and a
    // generation body (Ollama answers its own 400) go on unjudged.
    let (svc, sink, up) = service(true, PolicyConfig::default());
    let mut req = request(Route::Push, "/api/push", b"", true);
    *req.method_mut() = http::Method::GET;
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
    assert_eq!(up.0.lock().unwrap().len(), 1);
    assert!(sink.seen.lock().unwrap().is_empty());
    assert_eq!(
        blocked(Route::Generate, "/api/generate", b"{not json").await,
        (200, true, vec![])
    );
    let (svc, sink, _) = service(true, PolicyConfig::default());
    let mut req = request(Route::Delete, "/api/delete", b"{", true);
    *req.method_mut() = http::Method::DELETE;
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 400);
    assert_eq!(sink.seen.lock().unwrap()[0].0, "policy.unreadable_body");
}

#[tokio::test]
async fn debug_render_only_is_flagged_and_refused_in_block_mode() {
    let (svc, sink, _) = service(true, PolicyConfig::default());
    let resp = svc
        .oneshot(request(
            Route::Chat,
            "/v1/chat/completions",
            br#"{"model":"m","messages":[],"_debug_render_only":true}"#,
            true,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"]["type"], "permission_error");
    assert_eq!(sink.seen.lock().unwrap()[0].0, "policy.debug_render_only");
}

#[tokio::test]
async fn manage_from_refuses_other_networks_even_for_blob_uploads() {
    let (svc, sink, up) = service(true, cfg_from());
    let resp = svc
        .oneshot(request(
            Route::Blobs,
            "/api/blobs/sha256:00",
            b"GGUF....",
            true,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(up.0.lock().unwrap().is_empty());
    assert_eq!(sink.seen.lock().unwrap()[0].0, "policy.manage_from");
    // The server's ollama.com account is managed only from there too.
    for path in ["/api/signout", "/api/me", "/api/user/keys/c3NoLWVkMjU1MTk"] {
        let route = Route::classify(path);
        assert_eq!(route, Route::Account, "{path}");
        let (svc, sink, up) = service(true, cfg_from());
        let resp = svc.oneshot(request(route, path, b"", true)).await.unwrap();
        assert_eq!(resp.status(), 403, "{path}");
        assert!(up.0.lock().unwrap().is_empty());
        assert_eq!(sink.seen.lock().unwrap()[0].0, "policy.manage_from");
    }
}

fn cfg_from() -> PolicyConfig {
    PolicyConfig {
        manage_from: vec!["10.0.0.0/8".parse().unwrap()],
        ..PolicyConfig::default()
    }
}

/// Generation bodies sent `Content-Encoding: zstd`: decompressed, then judged.
mod compressed;
/// Generation bodies padded past `max_body`: the streamed scan.
mod padded;

/// The count of held bytes.
mod held;

#[tokio::test]
async fn a_browser_s_cross_site_violation_is_refused_but_never_bans() {
    // `[policy] ban = true`: a foreign pull bans its source, unless a browser sent it for
    // another site's page (a web page must not get its visitor banned).
    let cfg = PolicyConfig {
        ban: true,
        ..PolicyConfig::default()
    };
    // With a key ([auth]), a cross-site request bans all the same: a page cannot send
    // a key to another site unless that site's CORS lets it, so it is a page Ollama allows or
    // a script that added the mark.
    for (cross_site, credential, bans) in [
        (false, None, true),
        (true, None, false),
        (true, Some(Credential::Missing), false),
        (true, Some(Credential::Valid), true),
        // `observe`: a wrong key is forwarded, and is still a key no page could send.
        (true, Some(Credential::Invalid), true),
        (false, Some(Credential::Valid), true),
    ] {
        let (svc, sink, up) = service(true, cfg.clone());
        let mut req = request(
            Route::Pull,
            "/api/pull",
            br#"{"model":"evil.example/ns/m"}"#,
            true,
        );
        req.extensions_mut().get_mut::<Meta>().unwrap().cross_site = cross_site;
        if let Some(credential) = credential {
            req.extensions_mut().insert(Caller {
                identity: None,
                role: None,
                credential,
                key: credential != Credential::Missing,
            });
        }
        assert_eq!(svc.oneshot(req).await.unwrap().status(), 403);
        assert!(up.0.lock().unwrap().is_empty());
        assert_eq!(
            *sink.bans.lock().unwrap(),
            [bans],
            "cross_site={cross_site} {credential:?}"
        );
    }
}

#[tokio::test]
async fn a_body_over_what_the_stage_may_hold_is_503_unforwarded_and_its_bytes_come_back() {
    use crate::proxy::buffered::{FREE, PER_SOURCE};
    let pool = Buffered::new();
    let (svc, sink, up) = service_full(
        true,
        PolicyConfig::default(),
        Decoders::standard(),
        pool.clone(),
    );
    // The source (192.0.2.9) already holds its share: a megabyte a body, 32 bodies waiting.
    let mut held = pool.charge("192.0.2.9".parse().unwrap());
    held.grow(PER_SOURCE + FREE, 1 << 20).unwrap();
    let big: &'static [u8] = Box::leak(
        format!(r#"{{"model":"m","prompt":"{}"}}"#, "a".repeat(20 << 10))
            .into_bytes()
            .into_boxed_slice(),
    );
    let resp = svc
        .clone()
        .oneshot(request(Route::Generate, "/api/generate", big, true))
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        resp.extensions().get::<Disposition>().map(|d| d.outcome),
        Some(Outcome::Refused)
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["error"],
        "ollama-guard: 32 MiB of request bodies from this client are already being inspected; retry shortly"
    );
    assert!(up.0.lock().unwrap().is_empty(), "nothing was forwarded");
    assert!(sink.seen.lock().unwrap().is_empty(), "no verdict");
    // A small body of the same source is not held up (its bytes are not counted).
    let small: &'static [u8] = br#"{"model":"m","prompt":"hi"}"#;
    let resp = svc
        .clone()
        .oneshot(request(Route::Generate, "/api/generate", small, true))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // With the share given back, the large body passes, forwarded whole; once it is answered
    // the stage holds nothing.
    drop(held);
    let resp = svc
        .oneshot(request(Route::Generate, "/api/generate", big, true))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = up.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].0, Bytes::from_static(big));
    assert_eq!(pool.used(), 0);
}
