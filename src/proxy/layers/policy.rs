//! Policy layer: Ollama's model-management routes (pull, push, create, copy, delete, blob
//! uploads) and the `_debug_render_only` switch of generate/chat are checked *before* anything
//! is forwarded ([`crate::policy`] holds the rules).
//!
//! What is buffered, and why: to refuse a push before a byte of the model leaves, the JSON
//! body must be read before the request is forwarded. Management bodies are small; they are
//! read up to `policy.max_body` (1 MiB), parsed the way Ollama's Go server parses them, and
//! then forwarded byte-identical ([`PolicyBody::replay`]). A larger management body is itself
//! a verdict (`policy.body_too_large`: `413` in block mode), and so is one Go's decoder would
//! refuse (`policy.unreadable_body`: `400`). Generation bodies are read up to
//! the same size to see `_debug_render_only`; one larger than that (an image) is forwarded as
//! read plus the rest of the stream, which is scanned for the switch as it passes (never
//! buffered): in block mode the body withholds its final frame and the exchange's failure is
//! answered `403` here, exactly as for a small body ([`PolicyBody::guarded`]). A generation body
//! sent `Content-Encoding: zstd` is decompressed first, as Ollama decompresses it
//! ([`crate::policy::inflate`]), and judged as the same body sent plain; it is forwarded as
//! sent; [`crate::proxy::decoders`] bounds how many are decoded at once, and how slowly. Blob uploads (the model file itself) are never
//! buffered: only `manage_from` applies to them. Every other route passes untouched. What the
//! stage holds at once is counted ([`crate::proxy::buffered`]): a body that would take it past
//! its source's share or everyone's is answered `503` before anything is forwarded.
//!
//! Only requests in scope pay for a boxed future; the rest keep the stack's concrete types.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use prometheus::IntCounter;
use tower::{Layer, Service};

use super::{answered, declares_no_body, refusal_of, Answer, Client, Meta};
use crate::auth::Caller;
use crate::policy::inflate::{self, Inflate, InflateError, Progress};
use crate::policy::scan::{Scan, Scanner};
use crate::policy::{self, Members, PolicyConfig, Scope, Unreadable, Verdict};
use crate::proxy::buffered::{self, Buffered, Charge, Over};
use crate::proxy::decoders::{self, Busy, Decoders, Slot, SLICE};
use crate::proxy::fault::{BoxError, ClientBodyError, ClientFault};
use crate::proxy::policy_body::{Decoding, Guard, PolicyBody, ScanCell};
use crate::proxy::timing::CLIENT_CLOSED_REQUEST;
use crate::proxy::{refusal as refuse, upstream};
use crate::record::Outcome;
use crate::telemetry::log_event::Action;

/// Where policy verdicts go: the pipeline decides and logs (and bans), and says what it did.
pub(crate) trait PolicySink: Send + Sync + 'static {
    /// Acts on `v` against `src`; `ban` is `[policy] ban`.
    fn verdict(&self, v: &Verdict, src: IpAddr, path: &str, method: &str, ban: bool) -> Action;
}

/// What the layer shares.
pub(crate) struct PolicyCtx {
    /// `[policy]`, swapped on reload.
    pub(crate) config: Arc<ArcSwap<PolicyConfig>>,
    /// The pipeline.
    pub(crate) sink: Arc<dyn PolicySink>,
    /// `refused_requests_total{reason="policy"}`.
    pub(crate) refused: IntCounter,
    /// `timeouts.body_idle`, while the layer reads a body.
    pub(crate) body_idle: Duration,
    /// The zstd decoder slots (shared by every worker).
    pub(crate) decoders: Arc<Decoders>,
    /// The bytes of bodies the stage holds (shared by every worker).
    pub(crate) buffered: Arc<Buffered>,
    /// `refused_requests_total{reason="busy"}`.
    pub(crate) busy: IntCounter,
}

/// Checks policy routes.
#[derive(Clone)]
pub(crate) struct PolicyLayer {
    ctx: Arc<PolicyCtx>,
}

impl PolicyLayer {
    /// A policy stage acting through `ctx`.
    pub(crate) fn new(ctx: PolicyCtx) -> Self {
        PolicyLayer { ctx: Arc::new(ctx) }
    }
}

impl<S> Layer<S> for PolicyLayer {
    type Service = PolicyService<S>;
    fn layer(&self, inner: S) -> PolicyService<S> {
        PolicyService {
            inner,
            ctx: self.ctx.clone(),
        }
    }
}

/// The policy service.
#[derive(Clone)]
pub(crate) struct PolicyService<S> {
    inner: S,
    ctx: Arc<PolicyCtx>,
}

/// The future: the inner one for requests out of scope, boxed for those the layer reads.
pub(crate) type PolicyFuture<F, RB> = futures_either::Either<
    F,
    Pin<Box<dyn Future<Output = Result<Response<Answer<RB>>, Infallible>> + Send>>,
>;

/// The two-variant future (local, to keep the dependency list short).
pub(crate) mod futures_either {
    use super::*;
    use pin_project_lite::pin_project;

    pin_project! {
        /// One of two futures with the same output.
        #[project = EitherProj]
        pub(crate) enum Either<A, B> {
            /// The first.
            Left { #[pin] a: A },
            /// The second.
            Right { #[pin] b: B },
        }
    }

    impl<A: Future, B: Future<Output = A::Output>> Future for Either<A, B> {
        type Output = A::Output;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<A::Output> {
            match self.project() {
                EitherProj::Left { a } => a.poll(cx),
                EitherProj::Right { b } => b.poll(cx),
            }
        }
    }
}

use futures_either::Either as Fut;

impl<S, B, RB> Service<Request<B>> for PolicyService<S>
where
    S: Service<Request<PolicyBody<B>>, Response = Response<Answer<RB>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Response = Response<Answer<RB>>;
    type Error = Infallible;
    type Future = PolicyFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The route alone says whether the policy reads anything (a request without the
        // record layer's meta counts as `Route::Other`, as below): the client and the meta
        // are taken only when it does. The fallback meta was built (two strings and a
        // cell allocated and freed) for every request before.
        let route = req
            .extensions()
            .get::<Meta>()
            .map_or(crate::route::Route::Other, |m| m.route);
        let scope = policy::scope(route, req.method());
        if scope == Scope::None {
            return Fut::Left {
                a: self.inner.call(req.map(PolicyBody::stream)),
            };
        }
        let (client, meta) = request_info(&req);
        // The inner service was made ready for this call; the clone is not, so swap them.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let ctx = self.ctx.clone();
        Fut::Right {
            b: Box::pin(check(ctx, inner, req, scope, client, meta)),
        }
    }
}

fn request_info<B>(req: &Request<B>) -> (Client, Meta) {
    let unknown = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let client = req.extensions().get::<Client>().copied().unwrap_or(Client {
        src: unknown,
        peer: unknown,
        unknown: false,
    });
    // `unwrap_or_else`: the fallback allocates (two strings and a cell), so it is built only
    // when there is no meta.
    let meta = req
        .extensions()
        .get::<Meta>()
        .cloned()
        .unwrap_or_else(|| Meta {
            path: req.uri().path().to_owned().into(),
            method_text: req.method().as_str().to_owned().into(),
            route: crate::route::Route::Other,
            fault: Arc::default(),
            cross_site: false,
        });
    (client, meta)
}

/// Reads what the scope needs, decides, and forwards or refuses.
async fn check<S, B, RB>(
    ctx: Arc<PolicyCtx>,
    mut inner: S,
    req: Request<B>,
    scope: Scope,
    client: Client,
    meta: Meta,
) -> Result<Response<Answer<RB>>, Infallible>
where
    S: Service<Request<PolicyBody<B>>, Response = Response<Answer<RB>>, Error = Infallible>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let cfg = ctx.config.load_full();
    let src = client.src;
    // A browser's cross-site request is refused but never bans: a web page could otherwise
    // get its visitor's address banned by sending a foreign push in its name (Ollama, for
    // its part, would refuse a site it does not allow). Unless it carries a key (`[auth]`):
    // a page can send one to another site only after a preflight that site's CORS answers,
    // so such a request comes from a page Ollama allows, or from a script that added the
    // mark to dodge the ban.
    let keyed = req.extensions().get::<Caller>().is_some_and(|c| c.key);
    let ban = cfg.ban && (!meta.cross_site || keyed);
    let judge = |v: &Verdict| {
        let action = ctx
            .sink
            .verdict(v, src, &meta.path, &meta.method_text, ban && v.bans);
        matches!(action, Action::Blocked | Action::Banned)
    };
    if matches!(scope, Scope::Manage | Scope::ManageWithBody) {
        if let Some(v) = policy::check_source(&cfg, src, client.unknown) {
            if judge(&v) {
                let done = declares_no_body(req.headers());
                return Ok(refused(
                    &ctx,
                    &meta,
                    &client,
                    done,
                    &v,
                    StatusCode::FORBIDDEN,
                ));
            }
        }
    }
    if scope == Scope::Manage {
        return inner.call(req.map(PolicyBody::stream)).await;
    }
    let (parts, body) = req.into_parts();
    let exact = content_length(&parts.headers);
    // Held until the body's prefix is handed to the upstream connection, or the request is
    // answered.
    let mut charge = ctx.buffered.charge(src);
    let read = match read_prefix(body, cfg.max_body, exact, ctx.body_idle, &mut charge).await {
        Ok(read) => read,
        Err(Unread::Fault(fault)) => return Ok(client_fault(fault)),
        Err(Unread::Over(why)) => return Ok(over(&ctx, &meta, &client, why)),
    };
    // Read to its end: a refusal may leave a trusted proxy's connection open.
    let whole = read.rest.is_none();
    // A generation body larger than the stage reads: its prefix is scanned here, its rest
    // as it streams. A zstd one is decompressed first, on the routes where Ollama decompresses
    // it.
    let mut scanner = None;
    let mut decoding = None;
    let verdicts = if scope == Scope::Generation
        && inflate::decodes(meta.route)
        && inflate::is_zstd(&parts.headers)
    {
        let slot = match read.rest {
            // Read whole: decoded here by the worker's own decoder; a slot only should it
            // expand past a slice.
            None => None,
            Some(_) => match ctx.decoders.take(src) {
                Ok(slot) => Some(slot),
                Err(why) => return Ok(busy(&ctx, &meta, &client, whole, why)),
            },
        };
        match zstd_prefix(&ctx, src, &read.prefix, slot).await {
            Ok((Zstd::Judged(verdicts), _)) => verdicts,
            Ok((Zstd::Pending(s), slot)) => {
                scanner = Some(s);
                // The rate is counted from here on: the prefix read before earns no credit
                // (else a burst would buy minutes of silence).
                decoding = slot.map(Decoding::new);
                Vec::new()
            }
            Err(why) => return Ok(busy(&ctx, &meta, &client, whole, why)),
        }
    } else {
        match (&read.rest, scope) {
            (None, _) => match members(&read.prefix).await {
                Ok(m) => policy::check_body(&cfg, meta.route, &m),
                // A management body Go's decoder would refuse too: Ollama answers it 400, so
                // refusing it costs no client anything, and it keeps the stage closed should
                // this reader ever refuse what Go accepts. A generation body goes on to
                // Ollama's own 400. (A small generation body is read by this reader, not the
                // scan: 35 368 against 36 418 instructions per request, callgrind; a test holds
                // the two to the same verdicts.)
                Err(e) if policy::decodes_body(meta.route, &parts.method) => {
                    vec![policy::unreadable(&e)]
                }
                Err(_) => Vec::new(),
            },
            (Some(_), Scope::ManageWithBody) => vec![policy::too_large(cfg.max_body)],
            (Some(_), _) => {
                let s = scan_prefix(&read.prefix).await;
                match s.outcome() {
                    Scan::Flagged => vec![policy::debug_render_only()],
                    Scan::Pending => {
                        scanner = Some(s);
                        Vec::new()
                    }
                    Scan::Clear => Vec::new(),
                }
            }
        }
    };
    let mut refusal = None;
    for v in &verdicts {
        if judge(v) && refusal.is_none() {
            refusal = Some(v);
        }
    }
    if let Some(v) = refusal {
        return Ok(refused(&ctx, &meta, &client, whole, v, status_of(v)));
    }
    let (scanner, rest) = match (scanner, read.rest) {
        (Some(scanner), Some(rest)) => (scanner, rest),
        (_, rest) => {
            let body = PolicyBody::replay(read.prefix.into(), rest, exact).holding(charge);
            return inner.call(Request::from_parts(parts, body)).await;
        }
    };
    let cell = {
        let (ctx, meta) = (ctx.clone(), meta.clone());
        ScanCell::new(move |v: &Verdict| {
            let action = ctx
                .sink
                .verdict(v, src, &meta.path, &meta.method_text, ban && v.bans);
            matches!(action, Action::Blocked | Action::Banned)
        })
    };
    let guard = Guard::new(scanner, decoding, cell.clone());
    let body = PolicyBody::guarded(read.prefix.into(), rest, exact, guard).holding(charge);
    let resp = inner.call(Request::from_parts(parts, body)).await;
    // The body withheld its end: the exchange failed (or the upstream answered early); either
    // way the client gets the refusal a small body would have got.
    if let Some(v) = cell.refused() {
        return Ok(refused(&ctx, &meta, &client, false, v, status_of(v)));
    }
    resp
}

/// A body read whole, read into its members a [`SLICE`] at a time, the worker serving its other
/// connections between slices: a megabyte of one-byte members is several milliseconds of work.
async fn members(body: &[u8]) -> Result<Members<'_>, Unreadable> {
    let mut reading = Members::reading(body);
    loop {
        if let Some(done) = reading.step(SLICE as usize) {
            return done;
        }
        tokio::task::yield_now().await;
    }
}

/// The prefix of a generation body larger than the stage reads, scanned a [`SLICE`] at a time.
async fn scan_prefix(prefix: &[u8]) -> Scanner {
    let mut s = Scanner::new(SWITCH);
    let mut pieces = prefix.chunks(SLICE as usize).peekable();
    while let Some(piece) = pieces.next() {
        s.feed(piece);
        if s.outcome() != Scan::Pending || pieces.peek().is_none() {
            break;
        }
        tokio::task::yield_now().await;
    }
    s
}

/// The top-level switch a generation body is scanned for.
const SWITCH: &str = "_debug_render_only";

/// The status a refusing verdict is answered with.
fn status_of(v: &Verdict) -> StatusCode {
    match v.rule {
        "policy.body_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "policy.unreadable_body" => StatusCode::BAD_REQUEST,
        _ => StatusCode::FORBIDDEN,
    }
}

/// What the first part of a zstd generation body says.
enum Zstd {
    /// Decided: these verdicts (none = forward).
    Judged(Vec<Verdict>),
    /// Undecided: the rest is decoded (by the same decoder) and scanned as it streams.
    Pending(Scanner),
}

/// Decompresses the part of a zstd generation body the stage read and scans what comes out, as
/// the same body sent plain is scanned; `slot` is the body's decoder slot when there is more to
/// come, none when the stage read it all. What Ollama could not decompress, before the scan has
/// decided, is `policy.unreadable_body` (it answers `400` itself).
///
/// The work is done a [`SLICE`] at a time, the worker serving its other connections between
/// slices. A body read whole starts on the worker's own decoder, which cannot wait: should it
/// expand past one slice, the decoder moves, as it stands, into a slot of the pool for such
/// bodies (the slot's own decoder taking its place); with every slot of that pool taken, the
/// body waits its turn and starts again in its slot; a source over its share is `Busy`.
/// Answers the verdict and the slot, which decodes the rest of a body that is not all here.
async fn zstd_prefix(
    ctx: &PolicyCtx,
    src: IpAddr,
    prefix: &[u8],
    mut slot: Option<Slot>,
) -> Result<(Zstd, Option<Slot>), Busy> {
    let ended = slot.is_none();
    let mut s = Scanner::new(SWITCH);
    let mut step = match slot.as_mut() {
        Some(slot) => zstd_slice(slot.inflate(), prefix, &mut s, true, ended),
        None => {
            let first = decoders::scratch(|inflate| {
                let step = zstd_slice(inflate, prefix, &mut s, true, ended);
                if let Step::Paused(_) = step {
                    match ctx.decoders.try_take_whole(src) {
                        Ok(mut taken) => {
                            std::mem::swap(taken.inflate(), inflate);
                            slot = Some(taken);
                        }
                        Err(Busy::All(_)) => return Ok(None),
                        Err(why) => return Err(why),
                    }
                }
                Ok(Some(step))
            });
            match first {
                Ok(first) => match first? {
                    Some(step) => step,
                    // Every slot is taken: the body waits its turn, then starts again in its
                    // slot (the worker's decoder cannot wait with it).
                    None => {
                        let taken = slot.insert(ctx.decoders.take_whole(src).await?);
                        s = Scanner::new(SWITCH);
                        zstd_slice(taken.inflate(), prefix, &mut s, true, ended)
                    }
                },
                Err(e) => Step::Ended(Err(e)),
            }
        }
    };
    let mut at = 0;
    while let Step::Paused(used) = step {
        at += used;
        tokio::task::yield_now().await;
        let inflate = match slot.as_mut() {
            Some(slot) => slot.inflate(),
            None => unreachable!("a paused body has moved into a slot"),
        };
        step = zstd_slice(inflate, &prefix[at..], &mut s, false, ended);
    }
    let Step::Ended(fed) = step else {
        unreachable!("the loop ends on an ended step")
    };
    let verdict = match (s.outcome(), fed) {
        (Scan::Flagged, _) => Zstd::Judged(vec![policy::debug_render_only()]),
        (Scan::Clear, _) => Zstd::Judged(Vec::new()),
        (Scan::Pending, Err(e)) => Zstd::Judged(vec![policy::undecodable(&e)]),
        (Scan::Pending, Ok(())) if ended => Zstd::Judged(Vec::new()),
        (Scan::Pending, Ok(())) => Zstd::Pending(s),
    };
    Ok((verdict, slot))
}

/// How far one slice of decoding went.
enum Step {
    /// The slice is spent; the input from this offset on is left.
    Paused(usize),
    /// The input is used up (or the scan has decided): whether it decoded (and, when the body
    /// `ended`, ended outside a frame).
    Ended(Result<(), InflateError>),
}

/// Decodes one [`SLICE`] of `input` into `s`; `fresh` = `input` was not fed before (else it is
/// what a pause left); `ended` = it is the whole body.
fn zstd_slice(
    inflate: &mut Inflate,
    input: &[u8],
    s: &mut Scanner,
    fresh: bool,
    ended: bool,
) -> Step {
    let mut sink = |out: &[u8]| {
        s.feed(out);
        s.outcome() == Scan::Pending
    };
    let progress = if fresh {
        inflate.feed_for(input, &mut sink, SLICE)
    } else {
        inflate.resume_for(input, &mut sink, SLICE)
    };
    match progress {
        Ok(Progress::Paused(at)) => Step::Paused(at),
        Ok(Progress::Done) if ended && s.outcome() == Scan::Pending => {
            Step::Ended(inflate.finish())
        }
        Ok(Progress::Done) => Step::Ended(Ok(())),
        Err(e) => Step::Ended(Err(e)),
    }
}

/// The answer to a zstd body while every decoder slot is taken, or its source's share is:
/// `503` with `Retry-After`, in either mode (a capacity limit, like the connection limits),
/// never forwarded unjudged.
fn busy<RB>(
    ctx: &PolicyCtx,
    meta: &Meta,
    client: &Client,
    body_done: bool,
    why: Busy,
) -> Response<Answer<RB>> {
    ctx.busy.inc();
    let message = match why {
        Busy::All(n) => format!(
            "ollama-guard: {n} compressed bodies are already being inspected; retry shortly"
        ),
        Busy::Source(n) => format!(
            "ollama-guard: {n} compressed bodies from this client are already being inspected; \
             retry shortly"
        ),
    };
    unavailable(meta, client, body_done, &message)
}

/// `503` with `Retry-After: 1`, shaped for the route: the stage cannot take the body now.
fn unavailable<RB>(
    meta: &Meta,
    client: &Client,
    body_done: bool,
    message: &str,
) -> Response<Answer<RB>> {
    let mut resp = refuse::shaped(&meta.path, message);
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    refusal_of(resp, Outcome::Refused, Some(client), body_done)
}

/// A body the stage cannot hold now: `503` with `Retry-After`, as for the decoders. The body
/// is left unread, so the connection closes.
fn over<RB>(ctx: &PolicyCtx, meta: &Meta, client: &Client, why: Over) -> Response<Answer<RB>> {
    ctx.busy.inc();
    let mib = |n: u64| n >> 20;
    let message = match why {
        Over::All(n) => format!(
            "ollama-guard: {} MiB of request bodies are already being inspected; retry shortly",
            mib(n)
        ),
        Over::Source(n) => format!(
            "ollama-guard: {} MiB of request bodies from this client are already being \
             inspected; retry shortly",
            mib(n)
        ),
    };
    unavailable(meta, client, false, &message)
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Why a body was not read.
enum Unread {
    /// The client's doing (stalled, cut, malformed).
    Fault(ClientFault),
    /// Holding more would take the stage over what it may hold, for the source or for all.
    Over(Over),
}

/// What was read: the bytes, and the unread rest when the body is larger than the limit.
struct Prefix<B> {
    prefix: Vec<u8>,
    rest: Option<B>,
}

/// Reads `body` until its end or until more than `limit` bytes are in (a declared
/// `Content-Length` above the limit is not read at all), each frame within `idle`, counting what
/// its buffer takes in `charge` before the buffer takes it.
async fn read_prefix<B>(
    mut body: B,
    limit: u64,
    exact: Option<u64>,
    idle: Duration,
    charge: &mut Charge,
) -> Result<Prefix<B>, Unread>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut prefix = Vec::new();
    if exact.is_some_and(|n| n > limit) {
        return Ok(Prefix {
            prefix,
            rest: Some(body),
        });
    }
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(Unread::Fault(ClientFault::Idle)),
            Ok(None) => return Ok(Prefix { prefix, rest: None }),
            Ok(Some(Err(e))) => return Err(Unread::Fault(ClientBodyError::Read(e.into()).fault())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            let need = prefix.len() + data.len();
            if need > prefix.capacity() {
                let cap = buffered::capacity(prefix.capacity(), need, exact, limit);
                charge.grow(cap as u64, limit).map_err(Unread::Over)?;
                prefix.reserve_exact(cap - prefix.len());
            }
            prefix.extend_from_slice(&data);
        }
        if prefix.len() as u64 > limit {
            return Ok(Prefix {
                prefix,
                rest: Some(body),
            });
        }
    }
}

/// The refusal of a policy verdict: the route family's shape, with the rule and the value.
fn refused<RB>(
    ctx: &PolicyCtx,
    meta: &Meta,
    client: &Client,
    body_done: bool,
    v: &Verdict,
    status: StatusCode,
) -> Response<Answer<RB>> {
    ctx.refused.inc();
    let message = format!(
        "ollama-guard: request refused by {}: {} {:?} is not allowed",
        v.rule, v.field, v.value
    );
    let mut resp = refuse::shaped(&meta.path, &message);
    *resp.status_mut() = status;
    refusal_of(resp, Outcome::Blocked, Some(client), body_done)
}

fn client_fault<RB>(fault: ClientFault) -> Response<Answer<RB>> {
    let resp = upstream::client_fault(fault, "while the policy stage read it")
        .map(http_body_util::Either::Right);
    match fault {
        ClientFault::Aborted => {
            answered(resp, Outcome::ClientCancelled, Some(CLIENT_CLOSED_REQUEST))
        }
        _ => answered(resp, Outcome::Complete, None),
    }
}

#[cfg(test)]
mod tests;
