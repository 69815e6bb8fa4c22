use super::*;

/// A generation body padded past `max_body`, the switch after the padding.
fn padded(tail: &str) -> Vec<u8> {
    format!(r#"{{"model":"m","prompt":"{}",{tail}}}"#, "x".repeat(64)).into_bytes()
}

fn small() -> PolicyConfig {
    PolicyConfig {
        max_body: 16,
        ..PolicyConfig::default()
    }
}

#[tokio::test]
async fn a_padded_switch_is_refused_and_the_upstream_never_gets_the_whole_body() {
    let body = padded(r#""_debug_render_only":true"#);
    for (size, length) in [(1, false), (7, true), (10, false), (40, true)] {
        let (svc, sink, up) = service(true, small());
        let req = framed(Route::Generate, "/api/generate", &body, size, length);
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 403, "frames of {size}");
        let answer = resp.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(
            json["error"],
            "ollama-guard: request refused by policy.debug_render_only: _debug_render_only \"true\" is not allowed"
        );
        let sent = up.0.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].0.len() < body.len(), "frames of {size}: {sent:?}");
        assert!(body.starts_with(&sent[0].0));
        let seen = sink.seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [("policy.debug_render_only".to_owned(), "true".to_owned())]
        );
    }
}

#[tokio::test]
async fn a_padded_switch_read_whole_is_refused_before_anything_is_forwarded() {
    let body: &'static [u8] = padded(r#""_debug_render_only":true"#).leak();
    let (svc, sink, up) = service(true, small());
    let resp = svc
        .oneshot(request(
            Route::OpenAiChat,
            "/v1/chat/completions",
            body,
            false,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(up.0.lock().unwrap().is_empty());
    assert_eq!(sink.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn monitor_mode_forwards_a_padded_switch_byte_identical_and_reports_it_once() {
    let body = padded(r#""_debug_render_only":true"#);
    for length in [true, false] {
        let (svc, sink, up) = service(false, small());
        let req = framed(Route::Chat, "/api/chat", &body, 5, length);
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let sent = up.0.lock().unwrap().clone();
        let hint = length.then_some(body.len() as u64);
        assert_eq!(sent, [(Bytes::from(body.clone()), hint)]);
        let seen = sink.seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [("policy.debug_render_only".to_owned(), "true".to_owned())]
        );
    }
}

#[tokio::test]
async fn a_padded_benign_body_is_forwarded_byte_identical_without_a_verdict() {
    for tail in [
        r#""system":"never honour \"_debug_render_only\": true""#,
        r#""_debug_render_only":true,"options":{"x":[1]},"_Debug_Render_Only":false"#,
        r#""options":{"_debug_render_only":true}"#,
    ] {
        let body = padded(tail);
        let (svc, sink, up) = service(true, small());
        let req = framed(Route::Generate, "/api/generate", &body, 3, true);
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{tail}");
        let sent = up.0.lock().unwrap().clone();
        assert_eq!(sent, [(Bytes::from(body.clone()), Some(body.len() as u64))]);
        assert!(sink.seen.lock().unwrap().is_empty(), "{tail}");
    }
}

/// `n` one-byte members (`"a":0,`, the most work a byte for a reader), then `tail`.
fn short_members(route_body: &str, n: usize, tail: &str) -> Vec<u8> {
    format!(r#"{{{route_body},{}{tail}}}"#, r#""a":0,"#.repeat(n)).into_bytes()
}

#[tokio::test]
async fn a_large_plain_body_is_read_a_slice_per_turn_while_the_worker_serves_others() {
    use std::sync::atomic::Ordering::Relaxed;
    // Another connection on this (one-threaded) runtime.
    let (turns, ticker) = ticker().await;
    // Read whole: 170 000 one-byte members (just under 1 MiB) are 16 slices of 64 KiB.
    for (route, path, head, tail, status) in [
        (
            Route::Chat,
            "/api/chat",
            r#""model":"m""#,
            r#""_debug_render_only":true"#,
            403,
        ),
        (
            Route::Chat,
            "/api/chat",
            r#""model":"m""#,
            r#""stream":false"#,
            200,
        ),
        (
            Route::Push,
            "/api/push",
            r#""model":"llama3""#,
            r#""MODEL":"attacker.example/x/y""#,
            403,
        ),
        (
            Route::Pull,
            "/api/pull",
            r#""model":"attacker.example/x/y""#,
            r#""model":"llama3""#,
            200,
        ),
    ] {
        let body = short_members(head, 170_000, tail);
        assert!(
            body.len() < 1 << 20 && body.len() > 15 << 16,
            "{}",
            body.len()
        );
        let (svc, sink, up) = service(true, PolicyConfig::default());
        let before = turns.load(Relaxed);
        let resp = svc
            .oneshot(framed(route, path, &body, 1 << 20, true))
            .await
            .unwrap();
        let turns = turns.load(Relaxed) - before;
        assert_eq!(resp.status(), status, "{path} {tail}");
        assert!(turns >= 15, "{path} {tail}: {turns} turns");
        let forwarded = up.0.lock().unwrap().clone();
        if status == 200 {
            let length = body.len() as u64;
            assert_eq!(forwarded, [(Bytes::from(body), Some(length))]);
            assert!(sink.seen.lock().unwrap().is_empty());
        } else {
            assert!(forwarded.is_empty());
            assert_eq!(sink.seen.lock().unwrap().len(), 1);
        }
    }
    // Larger than the stage reads, in frames of 1 MiB: the first MiB is scanned as the prefix
    // (16 slices), each later frame a slice a turn before it is sent or withheld.
    for (tail, status) in [
        (r#""_debug_render_only":true"#, 403),
        (r#""stream":true"#, 200),
    ] {
        let body = short_members(r#""model":"m""#, 3 * 180_000, tail);
        let (svc, sink, up) = service(true, PolicyConfig::default());
        let before = turns.load(Relaxed);
        let resp = svc
            .oneshot(framed(
                Route::Generate,
                "/api/generate",
                &body,
                1 << 20,
                false,
            ))
            .await
            .unwrap();
        let turns = turns.load(Relaxed) - before;
        assert_eq!(resp.status(), status, "{tail}");
        // 3 MiB in slices: a turn for the others before each slice but the first.
        assert!(turns >= 45, "{tail}: {turns} turns");
        let sent = up.0.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        if status == 200 {
            assert_eq!(sent[0].0, Bytes::from(body));
            assert!(sink.seen.lock().unwrap().is_empty());
        } else {
            // The last frame, which holds the switch, is withheld.
            assert_eq!(sent[0].0, Bytes::copy_from_slice(&body[..3 << 20]));
            assert_eq!(sink.seen.lock().unwrap().len(), 1);
        }
    }
    ticker.abort();
}
