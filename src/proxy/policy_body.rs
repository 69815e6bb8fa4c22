//! The request body after the policy stage: the client's stream untouched, or the bytes the
//! stage read, replayed byte-identical — followed, for a body larger than the stage reads,
//! by the rest of the stream.
//!
//! A generation body larger than the stage reads carries a [`Guard`]: the rest is scanned
//! for `"_debug_render_only": true` as it streams ([`crate::policy::scan`]). Ollama cannot act
//! on a JSON body before it has the object's closing brace, so when the frame holding that
//! brace shows the switch set and the verdict is to block, the body yields an error *instead*
//! of that frame: the upstream never receives a complete body, the exchange fails, and the
//! policy layer (which shares the [`ScanCell`]) answers the client `403`. Nothing else is held
//! back; in monitor mode every frame passes unchanged. A zstd body's rest is decompressed before
//! it is scanned (Ollama reads such a body whole before acting); a frame that does not
//! decompress is withheld the same way, and answered `400`. While it holds a decoder slot, such
//! a body must keep the slots' minimum rate ([`crate::proxy::decoders`]): one that falls behind
//! ends with [`TooSlow`], a stall (`408`), and frees its slot.
//!
//! Framing is kept: a body that came with `Content-Length` (the header is forwarded) reports
//! its exact size; a chunked one reports none, so hyper sends it chunked again.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::buffered::Charge;
use super::decoders::{allowance, Slot, MIN_RATE, SLICE};
use super::fault::BoxError;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

use crate::policy::inflate::Progress;
use crate::policy::scan::{Scan, Scanner};
use crate::policy::{self, Verdict};

/// The hand-off between a scanned body and the policy layer: the body reports its verdict
/// through `judge` (once) and notes here the verdict that refused the body's end.
pub(crate) struct ScanCell {
    /// Reports a verdict (the pipeline logs it); `true` = refuse (block mode).
    judge: Box<dyn Fn(&Verdict) -> bool + Send + Sync>,
    refused: OnceLock<Verdict>,
}

impl ScanCell {
    /// A cell whose verdicts are reported by `judge`.
    pub(crate) fn new(judge: impl Fn(&Verdict) -> bool + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(ScanCell {
            judge: Box::new(judge),
            refused: OnceLock::new(),
        })
    }

    /// The verdict that made the body withhold its end, if one did.
    pub(crate) fn refused(&self) -> Option<&Verdict> {
        self.refused.get()
    }
}

/// A zstd body's decoder, and the slot it holds while it decodes
/// ([`crate::proxy::decoders`]).
pub(crate) struct Decoding {
    /// The slot, and its decoder (freed together).
    slot: Slot,
    /// Compressed bytes taken since the slot was given.
    taken: u64,
    /// The time spent waiting on the client so far (while the body was pending), and since
    /// when it has been waiting now.
    waited: Duration,
    waiting_since: Option<Instant>,
    /// Fires when the body falls behind the slot's minimum rate.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Decoding {
    /// `slot`, whose decoder has decoded the prefix.
    pub(crate) fn new(slot: Slot) -> Self {
        Decoding {
            slot,
            taken: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
        }
    }
}

/// The streaming check of a body's remainder (see the module docs).
pub(crate) struct Guard {
    scanner: Scanner,
    /// A zstd body: the rest is decompressed before it is scanned (dropped once decided).
    decoding: Option<Decoding>,
    cell: Arc<ScanCell>,
    /// Nothing more to look at: a verdict was reported, or the object closed clean.
    decided: bool,
    refused: bool,
    /// Cut: it fell behind the decoder slot's minimum rate.
    slow: bool,
    /// A frame whose decoding paused, and how far it got.
    paused: Option<(Frame<Bytes>, usize)>,
}

impl Guard {
    /// Continues `scanner` (which has seen the prefix) over the rest, reporting to `cell`;
    /// with `decoding`, over the rest decompressed.
    pub(crate) fn new(scanner: Scanner, decoding: Option<Decoding>, cell: Arc<ScanCell>) -> Self {
        Guard {
            scanner,
            decoding,
            cell,
            decided: false,
            refused: false,
            slow: false,
            paused: None,
        }
    }

    /// Called while the client's body has nothing new: whether a body holding a decoder slot
    /// has fallen behind the minimum rate (it is then cut, and the slot freed). Only the time
    /// spent waiting on the client counts, as for the idle timer: while the upstream does not
    /// read the body, the clock stands still.
    fn too_slow(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(d) = self.decoding.as_mut() else {
            return false;
        };
        let since = *d.waiting_since.get_or_insert_with(Instant::now);
        let deadline = since + allowance(d.taken).saturating_sub(d.waited);
        let timer = d
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.decoding = None;
        self.decided = true;
        self.slow = true;
        true
    }

    /// A frame came: the wait for it is over.
    fn arrived(&mut self) {
        if let Some(d) = self.decoding.as_mut() {
            if let Some(since) = d.waiting_since.take() {
                d.waited += since.elapsed();
            }
        }
    }

    /// Scans `data`, a frame's bytes (`fresh`) or what a pause left of them: whether the frame
    /// may be sent, must be withheld, or is paused with its bytes from the given offset on
    /// still to decode (a zstd body is decoded a [`SLICE`] at a time).
    fn look(&mut self, data: &[u8], fresh: bool) -> Look {
        if self.decided {
            return if self.refused {
                Look::Withhold
            } else {
                Look::Send
            };
        }
        let scanner = &mut self.scanner;
        let verdict = match &mut self.decoding {
            // A plain frame is scanned a slice at a time too (a frame holds what one read of
            // the client took in).
            None => {
                let piece = &data[..data.len().min(SLICE as usize)];
                scanner.feed(piece);
                match scanner.outcome() {
                    Scan::Pending if piece.len() < data.len() => return Look::Paused(piece.len()),
                    outcome => (outcome == Scan::Flagged).then(policy::debug_render_only),
                }
            }
            Some(d) => {
                let mut sink = |plain: &[u8]| {
                    scanner.feed(plain);
                    scanner.outcome() == Scan::Pending
                };
                let fed = if fresh {
                    d.taken += data.len() as u64;
                    d.slot.inflate().feed_for(data, &mut sink, SLICE)
                } else {
                    d.slot.inflate().resume_for(data, &mut sink, SLICE)
                };
                match (scanner.outcome(), fed) {
                    (Scan::Pending, Ok(Progress::Paused(at))) => return Look::Paused(at),
                    (Scan::Flagged, _) => Some(policy::debug_render_only()),
                    (Scan::Clear, _) => {
                        self.decided = true;
                        self.decoding = None;
                        None
                    }
                    (Scan::Pending, Err(e)) => Some(policy::undecodable(&e)),
                    (Scan::Pending, Ok(_)) => None,
                }
            }
        };
        if let Some(v) = verdict {
            self.decided = true;
            self.decoding = None;
            self.refused = (self.cell.judge)(&v);
            if self.refused {
                let _ = self.cell.refused.set(v);
            }
        }
        if self.refused {
            Look::Withhold
        } else {
            Look::Send
        }
    }

    /// Goes on with the frame a pause left (if any): `Some` when it is decided — sent, or
    /// withheld — and `None` while it is paused again (the task is woken to go on: the worker
    /// serves its other connections first).
    fn go_on(&mut self, cx: &mut Context<'_>) -> Option<Result<Frame<Bytes>, BoxError>> {
        let (frame, at) = self.paused.take()?;
        let data = frame.data_ref().map_or(&[][..], |d| &d[at..]);
        match self.look(data, false) {
            Look::Send => Some(Ok(frame)),
            Look::Withhold => Some(Err(Box::new(Refused))),
            Look::Paused(more) => {
                self.paused = Some((frame, at + more));
                cx.waker().wake_by_ref();
                None
            }
        }
    }
}

/// What the guard says of a frame.
enum Look {
    Send,
    Withhold,
    /// A slice was spent: the frame's bytes from this offset on are still to decode.
    Paused(usize),
}

/// The error a refused body ends with (the exchange fails; the policy layer answers).
#[derive(Debug, thiserror::Error)]
#[error("request body refused by the policy stage")]
pub(crate) struct Refused;

/// The error a body ends with when it fell behind a decoder slot's minimum rate (a client
/// fault: answered `408`, as a stalled body).
#[derive(Debug, thiserror::Error)]
#[error("compressed request body slower than {MIN_RATE} bytes a second while inspected")]
pub(crate) struct TooSlow;

pin_project! {
    /// See the module docs.
    #[project = PolicyBodyProj]
    pub(crate) enum PolicyBody<B> {
        /// Not read by the policy stage.
        Stream { #[pin] body: B },
        /// Read (in part or whole) by the policy stage: `prefix` first, then `rest`.
        Replay {
            prefix: Option<Bytes>,
            #[pin] rest: Option<B>,
            exact: Option<u64>,
            guard: Option<Box<Guard>>,
            // What the prefix holds of the stage's count, given back once it is handed on and
            // the rest has ended.
            charge: Option<Charge>,
        },
    }
}

impl<B> PolicyBody<B> {
    /// The client's body, untouched.
    pub(crate) fn stream(body: B) -> Self {
        PolicyBody::Stream { body }
    }

    /// `prefix` (already read), then `rest` (`None` when the body ended); `exact` = the
    /// `Content-Length` the client sent, if any.
    pub(crate) fn replay(prefix: Bytes, rest: Option<B>, exact: Option<u64>) -> Self {
        PolicyBody::Replay {
            prefix: Some(prefix).filter(|p| !p.is_empty()),
            rest,
            exact,
            guard: None,
            charge: None,
        }
    }

    /// [`PolicyBody::replay`], with the rest checked by `guard` as it streams.
    pub(crate) fn guarded(prefix: Bytes, rest: B, exact: Option<u64>, guard: Guard) -> Self {
        PolicyBody::Replay {
            prefix: Some(prefix).filter(|p| !p.is_empty()),
            rest: Some(rest),
            exact,
            guard: Some(Box::new(guard)),
            charge: None,
        }
    }

    /// The body, holding `held` (the prefix's part of the stage's count) until the prefix is
    /// handed on and the rest, if any, has ended: the upstream has the whole body then, and a
    /// body queued behind a busy model holds nothing of the count while it waits. A body whose
    /// rest still streams keeps the count: a client stalling its rest would otherwise leave the
    /// prefix in the upstream connection's buffers, counted nowhere.
    pub(crate) fn holding(mut self, held: Charge) -> Self {
        if let PolicyBody::Replay {
            prefix: Some(_),
            charge,
            ..
        } = &mut self
        {
            *charge = Some(held);
        }
        self
    }
}

impl<B> Body for PolicyBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            PolicyBodyProj::Stream { body } => body.poll_frame(cx).map_err(Into::into),
            PolicyBodyProj::Replay {
                prefix,
                rest,
                guard,
                charge,
                ..
            } => {
                if let Some(p) = prefix.take() {
                    if rest.is_none() {
                        *charge = None;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                if let Some(g) = guard.as_mut().filter(|g| g.paused.is_some()) {
                    return match g.go_on(cx) {
                        Some(decided) => Poll::Ready(Some(decided)),
                        None => Poll::Pending,
                    };
                }
                if guard.as_ref().is_some_and(|g| g.refused) {
                    return Poll::Ready(Some(Err(Box::new(Refused))));
                }
                if guard.as_ref().is_some_and(|g| g.slow) {
                    return Poll::Ready(Some(Err(Box::new(TooSlow))));
                }
                let Some(r) = rest.as_pin_mut() else {
                    *charge = None;
                    return Poll::Ready(None);
                };
                let frame = match r.poll_frame(cx) {
                    Poll::Ready(frame) => {
                        if let Some(g) = guard.as_mut() {
                            g.arrived();
                        }
                        frame
                    }
                    Poll::Pending => {
                        if guard.as_mut().is_some_and(|g| g.too_slow(cx)) {
                            return Poll::Ready(Some(Err(Box::new(TooSlow))));
                        }
                        return Poll::Pending;
                    }
                };
                match (frame, guard.as_mut()) {
                    (Some(Ok(f)), Some(g)) => match f.data_ref().map(|d| g.look(d, true)) {
                        None | Some(Look::Send) => Poll::Ready(Some(Ok(f))),
                        Some(Look::Withhold) => Poll::Ready(Some(Err(Box::new(Refused)))),
                        Some(Look::Paused(at)) => {
                            // The worker's other connections first.
                            g.paused = Some((f, at));
                            cx.waker().wake_by_ref();
                            Poll::Pending
                        }
                    },
                    (frame, _) => {
                        if frame.is_none() {
                            *charge = None;
                        }
                        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PolicyBody::Stream { body } => body.is_end_stream(),
            PolicyBody::Replay {
                prefix,
                rest,
                guard,
                ..
            } => {
                // A refused body still has its error to give, a paused one its frame.
                let held = guard
                    .as_ref()
                    .is_some_and(|g| g.refused || g.paused.is_some());
                !held && prefix.is_none() && rest.as_ref().map_or(true, Body::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PolicyBody::Stream { body } => body.size_hint(),
            PolicyBody::Replay { exact: Some(n), .. } => SizeHint::with_exact(*n),
            PolicyBody::Replay { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::decoders::{Decoders, GRACE};
    use http_body_util::{BodyExt, Full};
    use std::collections::VecDeque;

    #[tokio::test]
    async fn replay_yields_the_prefix_then_the_rest_byte_identical() {
        let rest = Full::new(Bytes::from_static(b" world"));
        let body = PolicyBody::replay(Bytes::from_static(b"hello"), Some(rest), Some(11));
        assert_eq!(body.size_hint().exact(), Some(11));
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"hello world");
    }

    #[tokio::test]
    async fn a_chunked_body_stays_without_a_size() {
        let body = PolicyBody::<Full<Bytes>>::replay(Bytes::from_static(b"{}"), None, None);
        assert_eq!(body.size_hint().exact(), None);
        assert!(!body.is_end_stream());
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"{}");
        let empty = PolicyBody::<Full<Bytes>>::replay(Bytes::new(), None, Some(0));
        assert!(empty.is_end_stream());
    }

    /// A body that yields each frame after its delay, then ends, or stalls for ever.
    struct Paced {
        frames: VecDeque<(Duration, Bytes)>,
        sleep: Option<Pin<Box<Sleep>>>,
        stall: bool,
    }

    impl Body for Paced {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            let Some(&(delay, _)) = self.frames.front() else {
                return if self.stall {
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                };
            };
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            std::task::ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
            let (_, data) = self.frames.pop_front().unwrap();
            Poll::Ready(Some(Ok(Frame::data(data))))
        }
    }

    /// A skippable zstd frame `len` bytes long (it decodes to nothing).
    fn skippable(len: usize) -> Bytes {
        let mut f = vec![0x50, 0x2A, 0x4D, 0x18];
        f.extend_from_slice(&u32::try_from(len - 8).unwrap().to_le_bytes());
        f.resize(len, b'.');
        f.into()
    }

    /// A guarded zstd body whose scanner has seen a prompt open, then `frames`.
    fn inspected(
        decoders: &Arc<Decoders>,
        frames: VecDeque<(Duration, Bytes)>,
        stall: bool,
    ) -> PolicyBody<Paced> {
        let slot = decoders.take("192.0.2.1".parse().unwrap()).unwrap();
        let mut scanner = Scanner::new("_debug_render_only");
        scanner.feed(br#"{"model":"m","prompt":"x"#);
        let decoding = Decoding::new(slot);
        let cell = ScanCell::new(|_: &Verdict| true);
        let rest = Paced {
            frames,
            sleep: None,
            stall,
        };
        PolicyBody::guarded(
            Bytes::new(),
            rest,
            None,
            Guard::new(scanner, Some(decoding), cell),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_compressed_body_behind_the_minimum_rate_is_cut_and_frees_its_slot() {
        let decoders = Decoders::new(1, 1);
        let start = tokio::time::Instant::now();
        // 1000 bytes a second: after frame k (at k s) the body must have its next bytes by
        // 10 s + k × 1000 / 4096 s; frame 12 is the first whose successor comes too late.
        let frames = (0..40)
            .map(|_| (Duration::from_secs(1), skippable(1000)))
            .collect();
        let mut body = inspected(&decoders, frames, false);
        let mut got = 0;
        let err = loop {
            match body.frame().await {
                Some(Ok(f)) => got += f.into_data().unwrap().len(),
                Some(Err(e)) => break e,
                None => panic!("the body ended"),
            }
        };
        assert!(err.is::<TooSlow>(), "{err}");
        assert_eq!(got, 12_000);
        // 10 s + 12 000 / 4096 s = 12.9296875 s, which tokio's millisecond timer rounds up.
        assert_eq!(start.elapsed(), Duration::from_millis(12_930));
        assert_eq!(decoders.available(), 1, "the slot is freed");
        assert!(body.frame().await.unwrap().unwrap_err().is::<TooSlow>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_keeping_the_minimum_rate_streams_to_its_end_and_a_stall_is_cut() {
        let decoders = Decoders::new(1, 1);
        let start = tokio::time::Instant::now();
        // 8 KiB a second for a minute, then the prompt closes: never cut.
        let mut frames: VecDeque<_> = (0..60)
            .map(|_| (Duration::from_secs(1), skippable(8192)))
            .collect();
        let close = Bytes::from(::zstd::encode_all(&br#"y"}"#[..], 3).unwrap());
        frames.push_back((Duration::from_secs(1), close.clone()));
        let body = inspected(&decoders, frames, false);
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 60 * 8192 + close.len());
        assert!(all.ends_with(&close));
        assert_eq!(start.elapsed(), Duration::from_secs(61));
        assert_eq!(decoders.available(), 1);
        // A body that sends nothing at all is cut after the grace.
        let start = tokio::time::Instant::now();
        let mut body = inspected(&decoders, VecDeque::new(), true);
        assert!(body.frame().await.unwrap().unwrap_err().is::<TooSlow>());
        assert_eq!(start.elapsed(), GRACE);
        assert_eq!(decoders.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_upstream_does_not_read_the_body_does_not_count_against_the_client() {
        let decoders = Decoders::new(1, 1);
        let frames = (0..2)
            .map(|_| (Duration::from_secs(1), skippable(1000)))
            .collect();
        let mut body = inspected(&decoders, frames, false);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap().len(), 1000);
        // The upstream stops reading for a minute: hyper does not poll the body.
        tokio::time::sleep(Duration::from_secs(60)).await;
        // The client's next frame takes a second: two seconds of waiting in all, well within
        // the allowance.
        let second = body.frame().await.unwrap().unwrap();
        assert_eq!(second.into_data().unwrap().len(), 1000);
        assert!(body.frame().await.is_none());
    }

    /// A body whose frames are all there at once.
    struct Ready(VecDeque<Bytes>);

    impl Body for Ready {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn a_frame_expanding_past_a_slice_is_decoded_a_slice_a_turn_and_then_sent_or_withheld() {
        // The last frame of a body whose prompt is open: 3 MiB of text, then the prompt
        // closes and (or not) the switch follows.
        for (tail, refused) in [
            (r#"","stream":true}"#, false),
            (r#"","_debug_render_only":true}"#, true),
        ] {
            let mut plain = "lorem ipsum ".repeat((3 << 20) / 12).into_bytes();
            plain.extend_from_slice(tail.as_bytes());
            let frame = Bytes::from(::zstd::encode_all(&plain[..], 3).unwrap());
            let decoders = Decoders::new(1, 1);
            let slot = decoders.take("192.0.2.1".parse().unwrap()).unwrap();
            let mut scanner = Scanner::new("_debug_render_only");
            scanner.feed(br#"{"model":"m","prompt":"x"#);
            let judged = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let cell = ScanCell::new({
                let judged = judged.clone();
                move |_: &Verdict| {
                    judged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    true
                }
            });
            let guard = Guard::new(scanner, Some(Decoding::new(slot)), cell);
            let rest = Ready(VecDeque::from([frame.clone()]));
            let mut body = PolicyBody::guarded(Bytes::new(), rest, None, guard);
            let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
            let waker = std::task::Waker::from(count.clone());
            let mut cx = Context::from_waker(&waker);
            let mut pendings = 0;
            let last = loop {
                match Pin::new(&mut body).poll_frame(&mut cx) {
                    Poll::Pending => {
                        pendings += 1;
                        // Paused with the client's body used up: not the end yet.
                        assert!(!body.is_end_stream());
                    }
                    Poll::Ready(r) => break r.unwrap(),
                }
            };
            // 3 MiB in slices of 64 KiB: a turn for others before each of the last 47, each
            // one asked for by the body itself.
            assert!(pendings >= 47, "{pendings}");
            assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), pendings);
            if refused {
                assert!(last.unwrap_err().is::<Refused>());
                assert_eq!(judged.load(std::sync::atomic::Ordering::Relaxed), 1);
            } else {
                assert_eq!(last.unwrap().into_data().unwrap(), frame);
                assert_eq!(judged.load(std::sync::atomic::Ordering::Relaxed), 0);
                assert!(body.is_end_stream());
            }
            assert_eq!(decoders.available(), 1, "the slot is freed once decided");
        }
    }
}
