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
