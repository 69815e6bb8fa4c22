//! Fixed-body routes: status, content type, `Content-Length` and body shape.

use serde_json::json;

use super::{fetch, post, quick, req, start};

#[tokio::test]
async fn root_says_ollama_is_running_as_gin_text() {
    let sim = start(quick()).await;
    let got = fetch(&sim, req("GET", "/")).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(got.header("content-length"), Some("17"));
    assert_eq!(got.body(), "Ollama is running");
}

#[tokio::test]
async fn head_root_keeps_content_length_but_sends_no_body() {
    let sim = start(quick()).await;
    let got = fetch(&sim, req("HEAD", "/")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-length"), Some("17"));
    assert_eq!(got.body(), "");
    let logged = sim.log.requests();
    assert_eq!(
        (logged[0].method.as_str(), logged[0].finished),
        ("HEAD", true)
    );
}

#[tokio::test]
async fn version_is_gin_json() {
    let sim = start(quick()).await;
    let got = fetch(&sim, req("GET", "/api/version")).await;
    assert_eq!(
        got.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(got.body(), r#"{"version":"0.12.3"}"#);
}

#[tokio::test]
async fn tags_lists_two_models_with_details() {
    let sim = start(quick()).await;
    let got = fetch(&sim, req("GET", "/api/tags")).await;
    let v = got.json();
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["name"], "llama3.2:latest");
    assert_eq!(models[0]["model"], "llama3.2:latest");
    assert_eq!(models[0]["size"], 2_019_393_189u64);
    assert_eq!(models[0]["details"]["quantization_level"], "Q4_K_M");
    assert_eq!(models[1]["details"]["family"], "nomic-bert");
    assert!(got
        .body()
        .starts_with(r#"{"models":[{"name":"llama3.2:latest","model":"#));
}

#[tokio::test]
async fn ps_lists_the_loaded_model() {
    let sim = start(quick()).await;
    let v = fetch(&sim, req("GET", "/api/ps")).await.json();
    assert_eq!(v["models"][0]["name"], "llama3.2:latest");
    assert_eq!(v["models"][0]["size_vram"], 3_487_295_488u64);
    assert_eq!(v["models"][0]["context_length"], 4096);
}

#[tokio::test]
async fn show_returns_model_metadata_with_go_escaping() {
    let sim = start(quick()).await;
    let got = post(&sim, req("POST", "/api/show"), r#"{"model":"llama3.2"}"#).await;
    assert_eq!(got.status, 200);
    let v = got.json();
    assert_eq!(v["details"]["family"], "llama");
    assert_eq!(v["model_info"]["general.architecture"], "llama");
    assert_eq!(v["model_info"]["llama.context_length"], 131_072);
    assert_eq!(v["tensors"][0]["name"], "token_embd.weight");
    assert_eq!(v["capabilities"], json!(["completion", "tools"]));
    for key in [
        "modelfile",
        "template",
        "system",
        "parameters",
        "license",
        "modified_at",
    ] {
        assert!(v[key].is_string(), "{key}");
    }
    assert!(got.body().contains(r"\u003c|start_header_id|\u003e"));
}

#[tokio::test]
async fn show_accepts_the_deprecated_name_field() {
    let sim = start(quick()).await;
    let got = post(
        &sim,
        req("POST", "/api/show"),
        r#"{"name":"nomic-embed-text"}"#,
    )
    .await;
    assert_eq!(got.json()["capabilities"], json!(["embedding"]));
}

#[tokio::test]
async fn show_errors_are_native_json() {
    let sim = start(quick()).await;
    let cases = [
        (
            "{\"model\":\"mistral\"}",
            404,
            r#"{"error":"model 'mistral' not found"}"#,
        ),
        ("{}", 400, r#"{"error":"model is required"}"#),
        ("", 400, r#"{"error":"missing request body"}"#),
        (
            "oops",
            400,
            r#"{"error":"invalid character 'o' looking for beginning of value"}"#,
        ),
    ];
    for (body, status, expected) in cases {
        let got = post(&sim, req("POST", "/api/show"), body).await;
        assert_eq!(
            (got.status.as_u16(), got.body().as_str()),
            (status, expected),
            "{body}"
        );
        assert_eq!(
            got.header("content-type"),
            Some("application/json; charset=utf-8")
        );
    }
}

#[tokio::test]
async fn request_body_length_and_digest_are_logged() {
    let sim = start(quick()).await;
    let body = r#"{"model":"llama3.2"}"#;
    post(
        &sim,
        req("POST", "/api/show?verbose=1").header("x-sim-id", "s"),
        body,
    )
    .await;
    let logged = sim.log.wait_done("s").await;
    assert_eq!(logged.target, "/api/show?verbose=1");
    assert_eq!(logged.body_len, body.len() as u64);
    assert_eq!(
        logged.body_sha256.as_deref(),
        Some(crate::call::hex(&<sha2::Sha256 as sha2::Digest>::digest(body)).as_str())
    );
    assert!(logged.finished);
}

#[tokio::test]
async fn generate_with_stream_false_is_one_json_object() {
    let sim = start(quick()).await;
    let body = r#"{"model":"llama3.2","prompt":"why is the sky blue","stream":false}"#;
    let got = post(&sim, req("POST", "/api/generate"), body).await;
    assert_eq!(
        got.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert!(got.header("content-length").is_some());
    let v = got.json();
    assert_eq!(v["model"], "llama3.2");
    assert_eq!(v["response"], "The sky looks");
    assert_eq!(
        (v["done"].clone(), v["done_reason"].clone()),
        (json!(true), json!("stop"))
    );
    assert_eq!(v["eval_count"], 3);
    assert_eq!(v["prompt_eval_count"], 5 + 26);
}

#[tokio::test]
async fn generate_and_chat_errors_match_ollama() {
    let sim = start(quick()).await;
    let cases = [
        (
            "/api/generate",
            r#"{"model":"nope","prompt":"x"}"#,
            404,
            r#"{"error":"model 'nope' not found"}"#,
        ),
        (
            "/api/chat",
            r#"{"messages":[]}"#,
            400,
            r#"{"error":"model is required"}"#,
        ),
        (
            "/api/chat",
            "[1]",
            400,
            r#"{"error":"json: cannot unmarshal array into Go value of type api.ChatRequest"}"#,
        ),
        (
            "/api/generate",
            r#"{"model":"nomic-embed-text","prompt":"x"}"#,
            400,
            r#"{"error":"\"nomic-embed-text\" does not support generate"}"#,
        ),
    ];
    for (path, body, status, expected) in cases {
        let got = post(&sim, req("POST", path), body).await;
        assert_eq!(
            (got.status.as_u16(), got.body().as_str()),
            (status, expected),
            "{path} {body}"
        );
    }
}

#[tokio::test]
async fn generate_with_empty_prompt_only_loads_the_model() {
    let sim = start(quick()).await;
    let got = post(
        &sim,
        req("POST", "/api/generate"),
        r#"{"model":"llama3.2"}"#,
    )
    .await;
    let v = got.json();
    assert_eq!(
        (v["done"].clone(), v["done_reason"].clone()),
        (json!(true), json!("load"))
    );
}

#[tokio::test]
async fn embed_and_embeddings_return_vectors() {
    let sim = start(quick()).await;
    let body = r#"{"model":"nomic-embed-text","input":["a b","c"]}"#;
    let v = post(&sim, req("POST", "/api/embed"), body).await.json();
    assert_eq!(v["model"], "nomic-embed-text");
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(v["embeddings"][0].as_array().unwrap().len(), 16);
    assert_eq!(v["prompt_eval_count"], 3);
    let body = r#"{"model":"nomic-embed-text","prompt":"a b"}"#;
    let legacy = post(&sim, req("POST", "/api/embeddings"), body)
        .await
        .json();
    assert_eq!(legacy["embedding"].as_array().unwrap().len(), 16);
    let bad = post(
        &sim,
        req("POST", "/api/embed"),
        r#"{"model":"nomic-embed-text","input":3}"#,
    )
    .await;
    assert_eq!(bad.body(), r#"{"error":"invalid input type"}"#);
}

#[tokio::test]
async fn copy_and_delete_answer_empty_200_or_json_404() {
    let sim = start(quick()).await;
    let ok = post(
        &sim,
        req("POST", "/api/copy"),
        r#"{"source":"llama3.2","destination":"mine"}"#,
    )
    .await;
    assert_eq!(
        (
            ok.status.as_u16(),
            ok.header("content-length"),
            ok.body().as_str()
        ),
        (200, Some("0"), "")
    );
    let missing = post(
        &sim,
        req("POST", "/api/copy"),
        r#"{"source":"x","destination":"y"}"#,
    )
    .await;
    assert_eq!(
        (missing.status.as_u16(), missing.body().as_str()),
        (404, r#"{"error":"model \"x\" not found"}"#)
    );
    let deleted = post(
        &sim,
        req("DELETE", "/api/delete"),
        r#"{"model":"llama3.2"}"#,
    )
    .await;
    assert_eq!(
        (deleted.status.as_u16(), deleted.body().as_str()),
        (200, "")
    );
    let gone = post(&sim, req("DELETE", "/api/delete"), r#"{"model":"x"}"#).await;
    assert_eq!(
        (gone.status.as_u16(), gone.body().as_str()),
        (404, r#"{"error":"model 'x' not found"}"#)
    );
}

#[tokio::test]
async fn unknown_path_is_gin_404_text() {
    let sim = start(quick()).await;
    let got = fetch(&sim, req("GET", "/api/nope")).await;
    assert_eq!(
        (got.status.as_u16(), got.body().as_str()),
        (404, "404 page not found")
    );
    assert_eq!(got.header("content-type"), Some("text/plain"));
}

#[tokio::test]
async fn wrong_method_is_gin_405_with_allow() {
    let sim = start(quick()).await;
    let got = fetch(&sim, req("POST", "/api/tags")).await;
    assert_eq!(
        (got.status.as_u16(), got.body().as_str()),
        (405, "405 method not allowed")
    );
    assert_eq!(got.header("content-type"), Some("text/plain"));
    assert_eq!(got.header("allow"), Some("HEAD, GET"));
    let head_ps = fetch(&sim, req("HEAD", "/api/ps")).await;
    assert_eq!(
        (head_ps.status.as_u16(), head_ps.header("allow")),
        (405, Some("GET"))
    );
}

#[tokio::test]
async fn percent_encoded_paths_route_like_go() {
    let sim = start(quick()).await;
    let got = fetch(&sim, req("GET", "/api/%74ags")).await;
    assert_eq!(got.status, 200);
    assert_eq!(sim.log.requests()[0].target, "/api/%74ags");
}

#[tokio::test]
async fn pull_with_stream_false_answers_success_only() {
    let sim = start(quick()).await;
    let got = post(
        &sim,
        req("POST", "/api/pull"),
        r#"{"model":"llama3.2","stream":false}"#,
    )
    .await;
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.body(), r#"{"status":"success"}"#);
}
