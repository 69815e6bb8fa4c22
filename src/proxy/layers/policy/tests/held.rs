//! What the stage's count of held bytes takes for a body, and for how long.

use super::*;
use crate::proxy::buffered::{FREE, SLACK};
use tokio::sync::{oneshot, Notify};

#[tokio::test]
async fn a_body_waiting_upstream_holds_nothing_of_the_count_once_its_prefix_is_handed_on() {
    let pool = Buffered::new();
    let (tell, told) = oneshot::channel();
    let tell = Arc::new(Mutex::new(Some(tell)));
    let go_on = Arc::new(Notify::new());
    // An upstream that reads the body's first frame, says how many bytes it had, waits until
    // told to go on (a model busy with other prompts), then reads the rest and answers `200`.
    let up = tower::service_fn({
        let go_on = go_on.clone();
        move |req: Request<PolicyBody<Frames>>| {
            let (tell, go_on) = (tell.clone(), go_on.clone());
            async move {
                let mut body = req.into_body();
                let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
                let tell = tell.lock().unwrap().take().unwrap();
                tell.send(first.len()).unwrap();
                go_on.notified().await;
                while body.frame().await.is_some() {}
                let answer: Answer<http_body_util::Empty<Bytes>> =
                    http_body_util::Either::Left(http_body_util::Empty::new());
                Ok::<_, Infallible>(Response::new(answer))
            }
        }
    });
    let (layer, _) = layer_full(
        true,
        PolicyConfig::default(),
        Decoders::standard(),
        pool.clone(),
    );
    let svc = layer.layer(up);
    let prompt = format!(r#"{{"model":"m","prompt":"{}"}}"#, "a".repeat(100 << 10));
    let len = prompt.len();
    let req = framed(Route::Chat, "/api/chat", prompt.as_bytes(), 4096, true);
    let answer = tokio::spawn(svc.oneshot(req));
    // The stage read the whole body (into one buffer of its declared length) and handed it on
    // in one frame; the upstream holds it now, and the stage's count is back to nothing.
    assert_eq!(told.await.unwrap(), len);
    assert_eq!((pool.used(), pool.sources()), (0, 0));
    go_on.notify_one();
    assert_eq!(answer.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn a_body_of_a_large_max_body_read_in_frames_takes_at_most_its_limit_and_one_byte() {
    const MIB: u64 = 1 << 20;
    let max_body = 40 * MIB;
    let pool = Buffered::new();
    let src: IpAddr = "192.0.2.9".parse().unwrap();
    let body: Vec<Bytes> = (0..640)
        .map(|_| Bytes::from(vec![b' '; 64 << 10]))
        .collect();
    let mut charge = pool.charge(src);
    let read = read_prefix(
        Frames(body.into()),
        max_body,
        None,
        Duration::from_secs(5),
        &mut charge,
    )
    .await
    .ok()
    .unwrap();
    assert!(read.rest.is_none());
    assert_eq!(read.prefix.len() as u64, max_body);
    // Doubling would have taken 64 MiB, past the source's share: it stops at the limit.
    assert_eq!(read.prefix.capacity() as u64, max_body + 1);
    assert_eq!(pool.used(), max_body + 1);
    // The source's next body has the rest of its share beside it.
    let mut next = pool.charge(src);
    let left = SLACK + FREE - 1;
    next.grow(FREE + left, max_body).unwrap();
    assert_eq!(
        next.grow(FREE + left + 1, max_body),
        Err(Over::Source(max_body + SLACK))
    );
}

#[tokio::test]
async fn a_chunked_body_of_a_large_max_body_passes_whole_and_its_bytes_come_back() {
    let max_body = 40 << 20;
    let pool = Buffered::new();
    let cfg = PolicyConfig {
        max_body,
        ..PolicyConfig::default()
    };
    let (svc, _, up) = service_full(true, cfg, Decoders::standard(), pool.clone());
    let body = format!(
        r#"{{"model":"m","prompt":"{}"}}"#,
        "a".repeat(max_body as usize - 64)
    );
    for _ in 0..2 {
        let req = framed(
            Route::Generate,
            "/api/generate",
            body.as_bytes(),
            64 << 10,
            false,
        );
        assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 200);
    }
    let sent = up.0.lock().unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!((sent[1].0.len(), sent[1].1), (body.len(), None));
    assert_eq!(sent[1].0, body.as_bytes());
    assert_eq!((pool.used(), pool.sources()), (0, 0));
}

/// A body that sends `first` and then nothing, for ever.
fn trickle(first: &'static [u8]) -> impl Body<Data = Bytes, Error = Infallible> + Unpin {
    use futures_util::stream::{self, StreamExt};
    http_body_util::StreamBody::new(
        stream::iter([Ok(Frame::data(Bytes::from_static(first)))]).chain(stream::pending()),
    )
}

#[tokio::test]
async fn bodies_declaring_a_megabyte_and_sending_a_byte_reserve_it_and_small_bodies_still_pass() {
    const MIB: u64 = 1 << 20;
    let pool = Buffered::new();
    // 8 sources, 40 connections each: each declares a megabyte and sends one byte. Each is
    // counted its declared megabyte (beyond its free part) until its source's share is full.
    let mut stalled = Vec::new();
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..320u32 {
        let (pool, refused) = (pool.clone(), refused.clone());
        stalled.push(tokio::spawn(async move {
            let mut charge = pool.charge(IpAddr::from([198, 51, 100, (i % 8) as u8]));
            let read = read_prefix(
                trickle(b"{"),
                MIB,
                Some(MIB),
                Duration::from_secs(60),
                &mut charge,
            )
            .await;
            if let Err(Unread::Over(Over::Source(_))) = read {
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    let each = MIB - FREE;
    let held = 8 * (crate::proxy::buffered::PER_SOURCE / each);
    tokio::time::timeout(Duration::from_secs(10), async {
        while refused.load(std::sync::atomic::Ordering::Relaxed) < 320 - held as usize {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("counted {} bytes", pool.used()));
    assert_eq!(held, 256);
    assert_eq!((pool.used(), pool.sources()), (held * MIB, 8));
    // Another client's chats pass meanwhile: a small one, and one of 100 KiB in the 4 MiB of
    // the total that 8 sources' shares of 1 008 KiB bodies leave.
    let (svc, _, up) = service_full(
        true,
        PolicyConfig::default(),
        Decoders::standard(),
        pool.clone(),
    );
    for (size, status) in [(64, 200), (100 << 10, 200)] {
        let prompt = format!(r#"{{"model":"m","prompt":"{}"}}"#, "a".repeat(size));
        let req = framed(Route::Chat, "/api/chat", prompt.as_bytes(), 16 << 10, true);
        assert_eq!(
            svc.clone().oneshot(req).await.unwrap().status(),
            status,
            "{size}"
        );
    }
    assert_eq!(up.0.lock().unwrap().len(), 2);
    for task in &stalled {
        task.abort();
    }
    for task in stalled {
        let _ = task.await;
    }
    assert_eq!((pool.used(), pool.sources()), (0, 0));
}

#[tokio::test]
async fn a_body_whose_rest_still_streams_keeps_its_count_until_the_rest_has_ended() {
    let max_body: u64 = 64 << 10;
    let pool = Buffered::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    // An upstream that notes the stage's count when the first frame arrives and after the end.
    let up = tower::service_fn({
        let (pool, seen) = (pool.clone(), seen.clone());
        move |req: Request<PolicyBody<Frames>>| {
            let (pool, seen) = (pool.clone(), seen.clone());
            async move {
                let mut body = req.into_body();
                let mut frames = 0;
                while let Some(frame) = body.frame().await {
                    frame.unwrap();
                    if frames == 0 {
                        seen.lock().unwrap().push(pool.used());
                    }
                    frames += 1;
                }
                seen.lock().unwrap().push(pool.used());
                let answer: Answer<http_body_util::Empty<Bytes>> =
                    http_body_util::Either::Left(http_body_util::Empty::new());
                Ok::<_, Infallible>(Response::new(answer))
            }
        }
    });
    let cfg = PolicyConfig {
        max_body,
        ..PolicyConfig::default()
    };
    let (layer, _) = layer_full(true, cfg, Decoders::standard(), pool.clone());
    let prompt = format!(r#"{{"model":"m","prompt":"{}"}}"#, "a".repeat(200 << 10));
    let req = framed(
        Route::Generate,
        "/api/generate",
        prompt.as_bytes(),
        4096,
        false,
    );
    assert_eq!(layer.layer(up).oneshot(req).await.unwrap().status(), 200);
    // The prefix read to the limit and over it by one frame (17 frames of 4 KiB), counted
    // while the rest streamed, given back at its end.
    assert_eq!(*seen.lock().unwrap(), [17 * 4096, 0]);
    assert_eq!((pool.used(), pool.sources()), (0, 0));
}
