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

/// With hyper's real client: an upstream that writes 20 chunks in one segment.
#[tokio::test(flavor = "current_thread")]
async fn hyper_client_burst_is_coalesced() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await.unwrap();
        let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for i in 0..20 {
            let line = format!("{{\"n\":{i}}}\n");
            out.extend_from_slice(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes());
        }
        out.extend_from_slice(b"0\r\n\r\n");
        s.write_all(&out).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    });
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let resp = client
        .get(format!("http://{addr}/").parse().unwrap())
        .await
        .unwrap();
    let n = tokio::spawn(async move {
        let mut body = Coalesce::new(resp.into_body());
        let mut n = 0;
        while let Some(f) = body.frame().await {
            if f.unwrap().is_data() {
                n += 1;
            }
        }
        n
    })
    .await
    .unwrap();
    assert_eq!(n, 1, "frames out");
}

/// hyper polls a body again at once when its write side is ready, within the same turn of
/// the worker: that second poll must not end the wait for the upstream task.
#[tokio::test(flavor = "current_thread")]
async fn an_immediate_repoll_does_not_cut_the_turn_short() {
    let slot = Slot::default();
    slot.0.lock().unwrap().item = Some(Bytes::from_static(b"a\n"));
    let mut body = Box::pin(Coalesce::new(slot.clone()));
    let waker = futures_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(body.as_mut().poll_frame(&mut cx).is_pending());
    assert!(
        body.as_mut().poll_frame(&mut cx).is_pending(),
        "re-polled in the same turn"
    );
    // The upstream task hands over its next frame; then the turn ends.
    slot.0.lock().unwrap().item = Some(Bytes::from_static(b"b\n"));
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    // "b" is taken, and another turn asked for (nothing more came).
    assert!(body.as_mut().poll_frame(&mut cx).is_pending());
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    match body.as_mut().poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(f))) => assert_eq!(f.into_data().unwrap(), "a\nb\n"),
        other => panic!("expected the two frames as one, got {other:?}"),
    }
}

fn futures_waker() -> std::task::Waker {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    std::task::Waker::from(Arc::new(Noop))
}
