use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use super::*;
use http_body_util::BodyExt;

/// A body fed by a test like hyper's client feeds `Incoming`: one slot, refilled only by the
/// "connection" (another task) after the previous frame was taken.
#[derive(Clone, Default)]
struct Slot(Arc<Mutex<SlotState>>);

#[derive(Default)]
struct SlotState {
    item: Option<Bytes>,
    done: bool,
    waker: Option<std::task::Waker>,
    taken: Option<std::task::Waker>,
}

impl Body for Slot {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut s = self.0.lock().unwrap();
        if let Some(b) = s.item.take() {
            if let Some(w) = s.taken.take() {
                w.wake();
            }
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if s.done {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Slot {
    /// The "connection" side: puts `frames` in the slot one by one, each as soon as the
    /// previous one was taken (what hyper's dispatcher does with bytes already read).
    async fn feed(self, frames: Vec<&'static str>, end: bool) {
        let mut frames: VecDeque<_> = frames.into();
        while let Some(f) = frames.pop_front() {
            std::future::poll_fn(|cx| {
                let mut s = self.0.lock().unwrap();
                if s.item.is_some() {
                    s.taken = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                s.item = Some(Bytes::from_static(f.as_bytes()));
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
                Poll::Ready(())
            })
            .await;
        }
        if end {
            let mut s = self.0.lock().unwrap();
            s.done = true;
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }
}

async fn frames_out<B: Body<Data = Bytes> + Unpin>(body: &mut B) -> Vec<Bytes>
where
    B::Error: std::fmt::Debug,
{
    let mut out = Vec::new();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            out.push(d);
        }
    }
    out
}

#[tokio::test(flavor = "current_thread")]
async fn a_burst_the_connection_already_holds_leaves_as_one_frame() {
    let slot = Slot::default();
    let frames: Vec<&'static str> = (0..20)
        .map(|i| &*Box::leak(format!("{{\"n\":{i}}}\n").into_boxed_str()))
        .collect();
    let want: String = frames.concat();
    tokio::spawn(slot.clone().feed(frames, true));
    let mut body = Coalesce::new(slot);
    let out = frames_out(&mut body).await;
    assert_eq!(out.len(), 1, "20 frames became {} writes", out.len());
    assert_eq!(out[0], want.as_bytes());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_lone_frame_is_not_held_back() {
    let slot = Slot::default();
    let feeder = slot.clone();
    tokio::spawn(async move {
        feeder.clone().feed(vec!["first\n"], false).await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        feeder.feed(vec!["second\n"], true).await;
    });
    let mut body = Coalesce::new(slot);
    let start = tokio::time::Instant::now();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first\n");
    // Paused time: any timer would show; the first frame came without the clock moving.
    assert_eq!(start.elapsed(), std::time::Duration::ZERO);
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(second, "second\n");
    assert_eq!(start.elapsed(), std::time::Duration::from_millis(500));
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn trailers_errors_and_the_end_follow_the_held_data_unchanged() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-t", "1".parse().unwrap());
    let items: Vec<Result<Frame<Bytes>, &'static str>> = vec![
        Ok(Frame::data(Bytes::from_static(b"a"))),
        Ok(Frame::data(Bytes::from_static(b"b"))),
        Ok(Frame::trailers(trailers.clone())),
    ];
    let mut body = Coalesce::new(ready_body(items));
    let f = body.frame().await.unwrap().unwrap();
    assert_eq!(f.into_data().unwrap(), "ab");
    let f = body.frame().await.unwrap().unwrap();
    assert_eq!(f.into_trailers().unwrap(), trailers);
    assert!(body.frame().await.is_none());

    let items: Vec<Result<Frame<Bytes>, &'static str>> = vec![
        Ok(Frame::data(Bytes::from_static(b"a"))),
        Err("upstream reset"),
    ];
    let mut body = Coalesce::new(ready_body(items));
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "a"
    );
    assert_eq!(body.frame().await.unwrap().unwrap_err(), "upstream reset");
}

#[tokio::test]
async fn a_full_body_is_one_frame_and_a_content_length_body_needs_no_turn() {
    let mut body = Coalesce::new(http_body_util::Full::new(Bytes::from_static(b"{}")));
    assert_eq!(frames_out(&mut body).await, [Bytes::from_static(b"{}")]);
}

#[tokio::test]
async fn large_bursts_are_cut_at_max_bytes() {
    let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
    let items: Vec<Result<Frame<Bytes>, Infallible>> =
        (0..10).map(|_| Ok(Frame::data(chunk.clone()))).collect();
    let mut body = Coalesce::new(ready_body(items));
    let out = frames_out(&mut body).await;
    let sizes: Vec<usize> = out.iter().map(Bytes::len).collect();
    assert_eq!(sizes, [MAX_BYTES, MAX_BYTES, 32 * 1024]);
}

/// A body that yields `items` one by one, always ready.
struct Ready<E>(VecDeque<Result<Frame<Bytes>, E>>);

impl<E: Unpin> Body for Ready<E> {
    type Data = Bytes;
    type Error = E;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        Poll::Ready(self.0.pop_front())
    }
}

fn ready_body<E>(items: Vec<Result<Frame<Bytes>, E>>) -> Ready<E> {
    Ready(items.into())
}
