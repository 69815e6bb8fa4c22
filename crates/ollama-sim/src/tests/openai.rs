//! The OpenAI-compatible routes' fixed bodies and errors.

use serde_json::json;

use super::{fetch, post, quick, req, start};

#[tokio::test]
async fn openai_models_list_and_retrieve() {
    let sim = start(quick()).await;
    let list = fetch(&sim, req("GET", "/v1/models")).await;
    assert_eq!(list.header("content-type"), Some("application/json"));
    let v = list.json();
    assert_eq!(v["object"], "list");
    assert_eq!(
        v["data"][0],
        json!({"id":"llama3.2:latest","object":"model","created":1_759_068_431,"owned_by":"library"})
    );
    let one = fetch(&sim, req("GET", "/v1/models/llama3.2")).await.json();
    assert_eq!(
        (one["id"].clone(), one["object"].clone()),
        (json!("llama3.2"), json!("model"))
    );
    let missing = fetch(&sim, req("GET", "/v1/models/nope")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.body(),
        "{\"error\":{\"message\":\"model 'nope' not found\",\"type\":\"not_found_error\",\"param\":null,\"code\":null}}\n"
    );
}

#[tokio::test]
async fn openai_chat_completion_object() {
    let sim = start(quick()).await;
    let body = r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}"#;
    let got = post(&sim, req("POST", "/v1/chat/completions"), body).await;
    assert_eq!(got.header("content-type"), Some("application/json"));
    let v = got.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["system_fingerprint"], "fp_ollama");
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role":"assistant","content":"The sky looks"})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn openai_errors_are_openai_shaped() {
    let sim = start(quick()).await;
    let body = r#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#;
    let got = post(&sim, req("POST", "/v1/chat/completions"), body).await;
    assert_eq!(got.status, 404);
    assert_eq!(got.json()["error"]["type"], "not_found_error");
    let empty = post(
        &sim,
        req("POST", "/v1/chat/completions"),
        r#"{"model":"llama3.2","messages":[]}"#,
    )
    .await;
    assert_eq!(empty.status, 400);
    assert_eq!(
        empty.json()["error"]["message"],
        "[] is too short - 'messages'"
    );
}

#[tokio::test]
async fn openai_completions_and_embeddings() {
    let sim = start(quick()).await;
    let v = post(
        &sim,
        req("POST", "/v1/completions"),
        r#"{"model":"llama3.2","prompt":"hi"}"#,
    )
    .await
    .json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "The sky looks");
    let body = r#"{"model":"nomic-embed-text","input":"hello"}"#;
    let e = post(&sim, req("POST", "/v1/embeddings"), body).await.json();
    assert_eq!(
        (e["object"].clone(), e["data"][0]["object"].clone()),
        (json!("list"), json!("embedding"))
    );
    assert_eq!(e["data"][0]["embedding"].as_array().unwrap().len(), 16);
}
