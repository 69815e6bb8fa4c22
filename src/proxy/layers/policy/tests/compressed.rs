use crate::proxy::decoders::{DECODERS, PER_SOURCE};

use super::*;

const SWITCH_ON: &[u8] = br#"{"model":"m","messages":[],"_debug_render_only":true}"#;
const SWITCH_OFF: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn z(plain: &[u8]) -> Vec<u8> {
    ::zstd::encode_all(plain, 3).unwrap()
}

/// `body` with `Content-Encoding: value`, in frames of `size` bytes.
fn encoded(
    route: Route,
    path: &'static str,
    body: &[u8],
    size: usize,
    value: &str,
) -> Request<Frames> {
    let mut req = framed(route, path, body, size, true);
    req.headers_mut()
        .insert(http::header::CONTENT_ENCODING, value.parse().unwrap());
    req
}

fn zstd_req(route: Route, path: &'static str, body: &[u8], size: usize) -> Request<Frames> {
    encoded(route, path, body, size, "zstd")
}

/// A generation body decompressing to more than `small()`'s 16 bytes, the switch at its end.
fn padded(tail: &str) -> Vec<u8> {
    format!(r#"{{"model":"m","prompt":"{}",{tail}}}"#, "x".repeat(4096)).into_bytes()
}

fn small() -> PolicyConfig {
    PolicyConfig {
        max_body: 16,
        ..PolicyConfig::default()
    }
}

async fn error_of(resp: Response<Answer<http_body_util::Empty<Bytes>>>) -> serde_json::Value {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    json["error"].clone()
}

#[tokio::test]
async fn a_compressed_switch_is_refused_before_anything_is_forwarded() {
    let body = z(SWITCH_ON);
    for (route, path, value) in [
        (Route::OpenAiChat, "/v1/chat/completions", "zstd"),
        (Route::OpenAiCompletions, "/v1/completions", " zstd\t"),
    ] {
        let (svc, sink, up) = service(true, PolicyConfig::default());
        let resp = svc
            .oneshot(encoded(route, path, &body, 3, value))
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{path}");
        assert_eq!(
            resp.extensions().get::<Disposition>().map(|d| d.outcome),
            Some(Outcome::Blocked)
        );
        assert!(up.0.lock().unwrap().is_empty(), "{path}: nothing forwarded");
        assert_eq!(
            sink.seen.lock().unwrap().clone(),
            [("policy.debug_render_only".to_owned(), "true".to_owned())]
        );
    }
}

#[tokio::test]
async fn a_compressed_benign_body_is_forwarded_compressed_byte_identical() {
    let body = z(SWITCH_OFF);
    for size in [1, 5, body.len()] {
        let (svc, sink, up) = service(true, PolicyConfig::default());
        let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &body, size);
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let sent = up.0.lock().unwrap().clone();
        assert_eq!(sent, [(Bytes::from(body.clone()), Some(body.len() as u64))]);
        assert!(sink.seen.lock().unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_switch_deep_in_a_large_compressed_body_is_refused_as_it_streams() {
    let plain = padded(r#""_debug_render_only":true"#);
    let body = z(&plain);
    assert!(body.len() > 16 && body.len() < 100, "{} bytes", body.len());
    for size in [1, 7, 20] {
        let (svc, sink, up) = service(true, small());
        let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &body, size);
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 403, "frames of {size}");
        assert_eq!(
            error_of(resp).await["message"],
            "ollama-guard: request refused by policy.debug_render_only: _debug_render_only \"true\" is not allowed"
        );
        let sent = up.0.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert!(
            sent[0].0.len() < body.len(),
            "frames of {size}: the end withheld"
        );
        assert!(body.starts_with(&sent[0].0));
        assert_eq!(
            sink.seen.lock().unwrap().clone(),
            [("policy.debug_render_only".to_owned(), "true".to_owned())]
        );
    }
}

#[tokio::test]
async fn monitor_mode_forwards_a_compressed_switch_byte_identical_and_reports_it_once() {
    for plain in [SWITCH_ON.to_vec(), padded(r#""_debug_render_only":true"#)] {
        let body = z(&plain);
        let (svc, sink, up) = service(false, small());
        let req = zstd_req(Route::OpenAiCompletions, "/v1/completions", &body, 3);
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let sent = up.0.lock().unwrap().clone();
        assert_eq!(sent, [(Bytes::from(body.clone()), Some(body.len() as u64))]);
        assert_eq!(
            sink.seen.lock().unwrap().clone(),
            [("policy.debug_render_only".to_owned(), "true".to_owned())]
        );
    }
}

#[tokio::test]
async fn a_large_compressed_benign_body_passes_whole_and_frees_its_decoder() {
    let decoders = Decoders::standard();
    for tail in [r#""_debug_render_only":false"#, r#""stream":true"#] {
        let body = z(&padded(tail));
        let (svc, sink, up) = service_with(true, small(), decoders.clone());
        let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &body, 4);
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{tail}");
        assert_eq!(up.0.lock().unwrap().clone()[0].0, Bytes::from(body));
        assert!(sink.seen.lock().unwrap().is_empty());
        assert_eq!((decoders.available(), decoders.sources()), (DECODERS, 0));
    }
}

#[tokio::test]
async fn what_ollama_could_not_decompress_is_refused_400_in_block_mode_and_forwarded_in_monitor() {
    let json = SWITCH_ON.to_vec();
    let whole = z(SWITCH_ON);
    let mut wide = ::zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    wide.set_parameter(::zstd::stream::raw::CParameter::WindowLog(24))
        .unwrap();
    wide.include_contentsize(false).unwrap();
    std::io::Write::write_all(&mut wide, SWITCH_ON).unwrap();
    let wide = wide.finish().unwrap();
    let bomb = z(&vec![b' '; 8 << 20]);
    let cases = [
        (json, "zstd: Unknown frame descriptor"),
        (
            whole[..whole.len() - 1].to_vec(),
            "zstd: the body ends inside a frame",
        ),
        (
            wide,
            "zstd: a frame needs a 16777216-byte window; Ollama's decoder allows 8388608",
        ),
        (
            bomb,
            "zstd: expands more than 200-fold (a decompression bomb)",
        ),
    ];
    for (body, why) in cases {
        let (svc, sink, up) = service(true, PolicyConfig::default());
        let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &body, 64);
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 400, "{why}");
        assert!(up.0.lock().unwrap().is_empty(), "{why}");
        assert_eq!(
            sink.seen.lock().unwrap().clone(),
            [("policy.unreadable_body".to_owned(), why.to_owned())]
        );
        let (svc, sink, up) = service(false, PolicyConfig::default());
        let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &body, 64);
        assert_eq!(svc.oneshot(req).await.unwrap().status(), 200, "{why}");
        assert_eq!(up.0.lock().unwrap().clone()[0].0, Bytes::from(body));
        assert_eq!(sink.seen.lock().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_corrupt_frame_after_a_clean_start_withholds_the_end() {
    // A first frame that opens the object, then bytes that are no frame: Ollama answers 400,
    // and the guard refuses the same, the end never forwarded.
    let mut body = z(&padded("")[..4000]);
    body.extend_from_slice(b"not a frame at all");
    let (svc, sink, up) = service(true, small());
    let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &body, 8);
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let sent = up.0.lock().unwrap().clone();
    assert!(sent[0].0.len() < body.len());
    assert_eq!(
        sink.seen.lock().unwrap().clone(),
        [(
            "policy.unreadable_body".to_owned(),
            "zstd: Unknown frame descriptor".to_owned()
        )]
    );
}

#[tokio::test]
async fn a_body_ollama_would_not_decompress_is_not_decompressed() {
    // Ollama decompresses only when the first Content-Encoding is exactly `zstd`: with
    // `ZSTD` or `gzip, zstd` it reads the compressed bytes as JSON and answers 400 itself.
    let body = z(SWITCH_ON);
    for value in ["ZSTD", "gzip, zstd", "zstd, gzip"] {
        let (svc, sink, up) = service(true, PolicyConfig::default());
        let req = encoded(Route::OpenAiChat, "/v1/chat/completions", &body, 3, value);
        assert_eq!(svc.oneshot(req).await.unwrap().status(), 200, "{value}");
        assert_eq!(up.0.lock().unwrap().len(), 1);
        assert!(sink.seen.lock().unwrap().is_empty());
    }
}

#[tokio::test]
async fn with_every_decoder_taken_a_compressed_body_is_answered_503_and_not_forwarded() {
    let decoders = Decoders::standard();
    // Eight other clients hold every slot.
    let _held: Vec<_> = (0..DECODERS)
        .map(|i| {
            let src = format!("198.51.100.{}", i / PER_SOURCE).parse().unwrap();
            decoders.take(src).unwrap()
        })
        .collect();
    let large = z(&padded(r#""stream":true"#));
    for block in [true, false] {
        let (svc, sink, up) = service_with(block, small(), decoders.clone());
        let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &large, 8);
        let resp = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(
            resp.extensions().get::<Disposition>().map(|d| d.outcome),
            Some(Outcome::Refused)
        );
        assert!(error_of(resp).await["message"]
            .as_str()
            .unwrap()
            .starts_with("ollama-guard: 32 compressed bodies are already being inspected"));
        assert!(up.0.lock().unwrap().is_empty());
        assert!(sink.seen.lock().unwrap().is_empty());
        // A body that is not compressed needs no decoder.
        let plain = padded(r#""stream":true"#);
        let req = framed(Route::OpenAiChat, "/v1/chat/completions", &plain, 8, true);
        assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
    }
    // Nor does a compressed body the stage reads whole: it is judged (and refused) at once.
    let (svc, sink, up) = service_with(true, PolicyConfig::default(), decoders.clone());
    let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &z(SWITCH_OFF), 8);
    assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 200);
    let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &z(SWITCH_ON), 8);
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 403);
    assert_eq!(up.0.lock().unwrap().len(), 1);
    assert_eq!(sink.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_client_holding_its_share_of_decoders_gets_503_and_another_client_does_not() {
    let decoders = Decoders::new(DECODERS, 2);
    // This client (192.0.2.9, as every test request) already has two bodies being decoded.
    let held = [
        decoders.take("192.0.2.9".parse().unwrap()).unwrap(),
        decoders.take("192.0.2.9".parse().unwrap()).unwrap(),
    ];
    let (svc, sink, up) = service_with(true, small(), decoders.clone());
    let large = z(&padded(r#""stream":true"#));
    let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &large, 8);
    let resp = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        error_of(resp).await["message"],
        "ollama-guard: 2 compressed bodies from this client are already being inspected; retry shortly"
    );
    assert!(up.0.lock().unwrap().is_empty());
    assert!(sink.seen.lock().unwrap().is_empty());
    // Another client is served, and so is this one once a body is done.
    let flagged = z(&padded(r#""_debug_render_only":true"#));
    let mut req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &flagged, 8);
    req.extensions_mut().insert(Client {
        src: "192.0.2.10".parse().unwrap(),
        peer: "192.0.2.10".parse().unwrap(),
        unknown: false,
    });
    assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 403);
    drop(held);
    let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &large, 8);
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
    assert_eq!((decoders.available(), decoders.sources()), (DECODERS, 0));
}

#[tokio::test]
async fn native_routes_never_decompress_as_ollama_does_not() {
    // /api/generate and /api/chat read a compressed body as JSON (Ollama answers it 400): it is
    // judged as sent, needs no decoder, and is never a decompression bomb's target.
    let decoders = Decoders::new(0, PER_SOURCE);
    for (route, path) in [
        (Route::Chat, "/api/chat"),
        (Route::Generate, "/api/generate"),
    ] {
        for body in [z(SWITCH_ON), z(&vec![b' '; 4 << 20])] {
            let (svc, sink, up) = service_with(true, small(), decoders.clone());
            let resp = svc.oneshot(zstd_req(route, path, &body, 64)).await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            assert_eq!(up.0.lock().unwrap().clone()[0].0, Bytes::from(body));
            assert!(sink.seen.lock().unwrap().is_empty(), "{path}");
        }
        // The same body sent plain is judged.
        let (svc, sink, _) = service(true, PolicyConfig::default());
        let resp = svc
            .oneshot(framed(route, path, SWITCH_ON, 8, true))
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(sink.seen.lock().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_bomb_is_refused_but_never_bans_while_a_body_that_is_no_zstd_does() {
    // A legitimate body of extremely repetitive text could be taken for a bomb: it is refused
    // (the limit keeps the stage's work bounded) but `[policy] ban` does not ban for it.
    for (body, bans) in [(z(&vec![b' '; 8 << 20]), false), (SWITCH_ON.to_vec(), true)] {
        let cfg = PolicyConfig {
            ban: true,
            ..PolicyConfig::default()
        };
        let (svc, sink, up) = service(true, cfg);
        let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &body, 64);
        assert_eq!(svc.oneshot(req).await.unwrap().status(), 400);
        assert!(up.0.lock().unwrap().is_empty());
        assert_eq!(sink.seen.lock().unwrap()[0].0, "policy.unreadable_body");
        assert_eq!(sink.bans.lock().unwrap().clone(), [bans]);
    }
}

/// A chat whose message is `mib` MiB of text (compressing far within the ratio limit), with
/// `tail` after the messages.
fn long_chat(mib: usize, tail: &str) -> Vec<u8> {
    let text: String = "lorem ipsum dolor sit amet "
        .chars()
        .cycle()
        .take(mib << 20)
        .collect();
    format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}],{tail}}}"#)
        .into_bytes()
}

#[tokio::test]
async fn a_body_read_whole_that_expands_past_a_slice_is_judged_in_slices_while_the_worker_serves_others(
) {
    let decoders = Decoders::standard();
    // Another connection on this (one-threaded) runtime.
    let (turns, ticker) = ticker().await;
    for (tail, status) in [
        (r#""_debug_render_only":true"#, 403),
        (r#""stream":false"#, 200),
    ] {
        let plain = long_chat(3, tail);
        let body = z(&plain);
        assert!(body.len() < 1 << 20, "read whole: {} bytes", body.len());
        let (svc, sink, up) = service_with(true, PolicyConfig::default(), decoders.clone());
        let before = turns.load(std::sync::atomic::Ordering::Relaxed);
        let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &body, 1 << 16);
        let resp = svc.oneshot(req).await.unwrap();
        let turns = turns.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert_eq!(resp.status(), status, "{tail}");
        // 3 MiB and some in slices of 64 KiB: the first on the worker's own decoder, then a
        // turn for the others before each of the 48 more.
        assert_eq!(plain.len().div_ceil(64 << 10), 49);
        assert!(turns >= 48, "{tail}: {turns} turns");
        let forwarded = up.0.lock().unwrap().clone();
        if status == 200 {
            assert_eq!(forwarded[0].0, Bytes::from(body));
            assert!(sink.seen.lock().unwrap().is_empty());
        } else {
            assert!(forwarded.is_empty());
            assert_eq!(sink.seen.lock().unwrap().len(), 1);
        }
        // The slot it moved into is free again, its decoder kept.
        assert_eq!(decoders.whole().available(), super::decoders::WHOLE);
        assert_eq!(decoders.whole().sources(), 0);
        assert_eq!(decoders.available(), DECODERS);
    }
    // A body larger than the stage reads, sent without a length (so the stage reads its first
    // MiB): what it read (just over 1 MiB compressed, about 1.7 MiB of text that does not
    // compress well) is decoded in its slot, a slice a turn.
    let noise = crate::policy::inflate::tests::incompressible(2 << 20);
    let noise = std::str::from_utf8(&noise).unwrap();
    let plain = format!(r#"{{"model":"m","prompt":"{noise}","stream":true}}"#);
    let body = z(plain.as_bytes());
    assert!(body.len() > 1 << 20, "streamed: {} bytes", body.len());
    let (svc, sink, up) = service_with(true, PolicyConfig::default(), decoders.clone());
    let before = turns.load(std::sync::atomic::Ordering::Relaxed);
    let mut req = framed(
        Route::OpenAiCompletions,
        "/v1/completions",
        &body,
        1 << 16,
        false,
    );
    req.headers_mut()
        .insert(http::header::CONTENT_ENCODING, "zstd".parse().unwrap());
    let resp = svc.oneshot(req).await.unwrap();
    let turns = turns.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert_eq!(resp.status(), 200);
    assert!(turns >= 16, "{turns} turns");
    assert_eq!(up.0.lock().unwrap().clone()[0].0, Bytes::from(body));
    assert!(sink.seen.lock().unwrap().is_empty());
    assert_eq!(decoders.available(), DECODERS);
    ticker.abort();
}

#[tokio::test]
async fn a_body_read_whole_needs_a_slot_only_past_a_slice_waits_its_turn_for_one_and_never_for_a_trickling_body(
) {
    let decoders = Decoders::with_whole(1, 1, (1, 1));
    let large = z(&long_chat(1, r#""stream":false"#));
    let send = |body: &[u8]| {
        let (svc, _, up) = service_with(true, PolicyConfig::default(), decoders.clone());
        let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", body, 1 << 16);
        async move { (svc.oneshot(req).await.unwrap(), up) }
    };
    // A body trickling in holds the one streaming slot: bodies read whole are still judged.
    let trickling = decoders.take("198.51.100.1".parse().unwrap()).unwrap();
    assert_eq!(send(&large).await.0.status(), 200);
    assert_eq!(send(&z(SWITCH_ON)).await.0.status(), 403);
    drop(trickling);
    // Another client's body holds the one slot for bodies read whole: this one, which expands
    // past a slice, waits (nothing forwarded) until the slot is free, then is judged; one
    // within a slice needs no slot and is served meanwhile.
    let other = decoders
        .try_take_whole("198.51.100.2".parse().unwrap())
        .unwrap();
    let waiting = tokio::spawn(send(&large));
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished());
    let (resp, up) = send(&z(SWITCH_OFF)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.0.lock().unwrap().len(), 1);
    assert_eq!(
        decoders.whole().sources(),
        2,
        "the other client and the waiting body"
    );
    drop(other);
    let (resp, up) = waiting.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.0.lock().unwrap().len(), 1);
    // This client's share (one body here) is in use: its next such body is answered 503 at
    // once, and not forwarded.
    let mine = decoders
        .try_take_whole("192.0.2.9".parse().unwrap())
        .unwrap();
    let (resp, up) = send(&large).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        error_of(resp).await["message"],
        "ollama-guard: 1 compressed bodies from this client are already being inspected; retry shortly"
    );
    assert!(up.0.lock().unwrap().is_empty());
    drop(mine);
    assert_eq!(send(&large).await.0.status(), 200);
    assert_eq!(
        (decoders.whole().available(), decoders.whole().sources()),
        (1, 0)
    );
}

#[tokio::test]
async fn a_body_of_frames_that_decode_to_nothing_is_still_judged_a_slice_per_turn() {
    let (turns, ticker) = ticker().await;
    // Just under 1 MiB of empty frames (read whole), then the switch.
    let empty_frame = [0x28, 0xB5, 0x2F, 0xFD, 0x20, 0x00, 0x01, 0x00, 0x00];
    let mut body = empty_frame.repeat(((1 << 20) - 100) / 9);
    body.extend(z(SWITCH_ON));
    assert!(body.len() <= 1 << 20);
    let (svc, sink, up) = service(true, PolicyConfig::default());
    let before = turns.load(std::sync::atomic::Ordering::Relaxed);
    let req = zstd_req(Route::OpenAiChat, "/v1/chat/completions", &body, 1 << 16);
    let resp = svc.oneshot(req).await.unwrap();
    let turns = turns.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert_eq!(resp.status(), 403);
    assert!(up.0.lock().unwrap().is_empty());
    assert_eq!(sink.seen.lock().unwrap().len(), 1);
    // About 116 000 frames at 9 bytes and 64 a frame: some 130 slices of 64 KiB.
    assert!(turns >= 100, "{turns} turns");
    ticker.abort();
}
