//! Ollama's OpenAI-compatible routes (`/v1/*`), shaped as `openai/openai.go` and
//! `middleware/openai.go` shape them: `chat.completion` objects, SSE chunk streams ending in
//! `data: [DONE]`, OpenAI error objects.

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use serde_json::Value;

use super::body::Chunk;
use super::call::{BodyError, Call};
use super::models::{self, MODELS};
use super::native::{self, answer, embed_inputs, embedding, token, Metrics};
use super::reply::{sse_event, Reply, EVENT_STREAM};

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<()>,
    code: Option<()>,
}

#[derive(Serialize)]
struct ErrorResponse<'a> {
    error: ErrorObject<'a>,
}

fn error_object(status: StatusCode, message: &str) -> ErrorResponse<'_> {
    let kind = match status {
        StatusCode::BAD_REQUEST => "invalid_request_error",
        StatusCode::NOT_FOUND => "not_found_error",
        _ => "api_error",
    };
    ErrorResponse {
        error: ErrorObject {
            message,
            kind,
            param: None,
            code: None,
        },
    }
}

/// An error raised by the OpenAI middleware itself (gin `AbortWithStatusJSON`).
fn middleware_error(status: StatusCode, message: &str) -> Reply {
    Reply::json(status, &error_object(status, message))
}

/// An error from the native handler, rewritten by the middleware's writer.
fn handler_error(status: StatusCode, message: &str) -> Reply {
    Reply::json_line(status, &error_object(status, message))
}

async fn request(call: &mut Call, go_type: &str) -> Result<Value, Reply> {
    call.json(go_type).await.map_err(|e| match e {
        BodyError::Missing => middleware_error(StatusCode::BAD_REQUEST, "EOF"),
        other => middleware_error(StatusCode::BAD_REQUEST, &other.to_string()),
    })
}

/// The requested model's name as given, if it is installed.
fn model_of(body: &Value) -> Result<String, Reply> {
    let name = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match models::find(name) {
        Some(_) => Ok(name.to_owned()),
        None => Err(handler_error(
            StatusCode::NOT_FOUND,
            &format!("model '{name}' not found"),
        )),
    }
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
}

impl From<Metrics> for Usage {
    fn from(m: Metrics) -> Self {
        Usage {
            prompt_tokens: m.prompt_eval_count,
            completion_tokens: m.eval_count,
            total_tokens: m.prompt_eval_count + m.eval_count,
        }
    }
}

/// Which completion route is answering; they differ only in object names and choice shape.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completion {
    Chat,
    Text,
}

/// Common envelope of completion objects and chunks.
#[derive(Serialize)]
struct Envelope<'a, C> {
    id: &'a str,
    object: &'a str,
    created: i64,
    model: &'a str,
    system_fingerprint: &'a str,
    choices: Vec<C>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

impl Completion {
    /// One choice: `text` with `finish`, as a delta (stream) or a whole message.
    fn choice(self, text: Option<&str>, role: bool, finish: Option<&str>, stream: bool) -> Value {
        let mut choice = serde_json::json!({"index": 0});
        match (self, stream) {
            (Completion::Text, _) => choice["text"] = text.unwrap_or_default().into(),
            (Completion::Chat, false) => {
                choice["message"] = serde_json::json!({"role": "assistant", "content": text});
            }
            (Completion::Chat, true) => {
                let mut delta = serde_json::Map::new();
                if role {
                    delta.insert("role".into(), "assistant".into());
                }
                if let Some(text) = text {
                    delta.insert("content".into(), text.into());
                }
                choice["delta"] = delta.into();
            }
        }
        choice["finish_reason"] = finish.into();
        choice
    }

    fn object(self, stream: bool) -> &'static str {
        match (self, stream) {
            (Completion::Chat, false) => "chat.completion",
            (Completion::Chat, true) => "chat.completion.chunk",
            (Completion::Text, _) => "text_completion",
        }
    }
}

/// One completion being answered: what every object and chunk of it shares.
struct Answer {
    kind: Completion,
    id: String,
    model: String,
    created: i64,
    metrics: Metrics,
}

impl Answer {
    fn envelope(
        &self,
        choices: Vec<Value>,
        stream: bool,
        usage: Option<Usage>,
    ) -> Envelope<'_, Value> {
        Envelope {
            id: &self.id,
            object: self.kind.object(stream),
            created: self.created,
            model: &self.model,
            system_fingerprint: "fp_ollama",
            choices,
            usage,
        }
    }

    /// The whole answer as one object (`"stream": false`, the default here).
    fn object(&self, chunks: usize) -> Reply {
        let text = answer(chunks);
        let choice = self.kind.choice(Some(&text), true, Some("stop"), false);
        let usage = Some(self.metrics.into());
        Reply::json_line(StatusCode::OK, &self.envelope(vec![choice], false, usage))
    }

    /// Content chunks, the finish chunk, the optional usage chunk, then `[DONE]`.
    fn events(&self, chunks: usize, include_usage: bool) -> Vec<Chunk> {
        let mut events: Vec<Chunk> = (0..chunks)
            .map(|i| {
                let choice = self.kind.choice(Some(token(i)), i == 0, None, true);
                Chunk::delayed(sse_event(&self.envelope(vec![choice], true, None)))
            })
            .collect();
        let finish = self.kind.choice(None, false, Some("stop"), true);
        events.push(Chunk::now(sse_event(&self.envelope(
            vec![finish],
            true,
            None,
        ))));
        if include_usage {
            let usage = Some(self.metrics.into());
            events.push(Chunk::now(sse_event(&self.envelope(vec![], true, usage))));
        }
        events.push(Chunk::now(Bytes::from_static(b"data: [DONE]\n\n")));
        events
    }
}

/// `POST /v1/chat/completions` and `POST /v1/completions`.
pub(crate) async fn completions(call: &mut Call, kind: Completion) -> Reply {
    let (go_type, id_prefix, prompt_field) = match kind {
        Completion::Chat => ("openai.ChatCompletionRequest", "chatcmpl", "messages"),
        Completion::Text => ("openai.CompletionRequest", "cmpl", "prompt"),
    };
    let body = match request(call, go_type).await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let prompt = body.get(prompt_field).unwrap_or(&Value::Null);
    if kind == Completion::Chat && prompt.as_array().map_or(true, Vec::is_empty) {
        return middleware_error(StatusCode::BAD_REQUEST, "[] is too short - 'messages'");
    }
    let model = match model_of(&body) {
        Ok(model) => model,
        Err(reply) => return reply,
    };
    let prompt_words = prompt.to_string().split_whitespace().count();
    let answer = Answer {
        kind,
        id: format!("{id_prefix}-{}", call.tracker.seq() % 1000),
        model,
        created: chrono::Utc::now().timestamp(),
        metrics: Metrics::new(call, prompt_words),
    };
    if !body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        call.generate_time().await;
        return answer.object(call.controls.chunks);
    }
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let events = answer.events(call.controls.chunks, include_usage);
    let error = error_object(StatusCode::INTERNAL_SERVER_ERROR, native::RUNNER_ERROR);
    Reply::stream(EVENT_STREAM, call.plan(events, sse_event(&error)))
}

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(call: &mut Call) -> Reply {
    let body = match request(call, "openai.EmbedRequest").await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let inputs = match embed_inputs(body.get("input")) {
        Some(inputs) if !inputs.is_empty() => inputs,
        _ => return middleware_error(StatusCode::BAD_REQUEST, "invalid input"),
    };
    let name = match model_of(&body) {
        Ok(name) => name,
        Err(reply) => return reply,
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| serde_json::json!({"object": "embedding", "embedding": embedding(text), "index": i}))
        .collect();
    let tokens: usize = inputs.iter().map(|s| s.split_whitespace().count()).sum();
    let list = serde_json::json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Reply::json_line(StatusCode::OK, &list)
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'a str,
    created: i64,
    owned_by: &'a str,
}

fn model_object(m: &models::Model) -> ModelObject<'_> {
    ModelObject {
        id: m.name,
        object: "model",
        created: m.created(),
        owned_by: "library",
    }
}

/// `GET /v1/models`.
pub(crate) fn list() -> Reply {
    let data: Vec<ModelObject<'_>> = MODELS.iter().map(model_object).collect();
    let body = serde_json::json!({"object": "list", "data": data});
    Reply::json_line(StatusCode::OK, &body)
}

/// `GET /v1/models/:model`.
pub(crate) fn retrieve(call: &Call) -> Reply {
    let name = call.param.as_str();
    match models::find(name) {
        Some(m) => {
            let object = ModelObject {
                id: name,
                ..model_object(m)
            };
            Reply::json_line(StatusCode::OK, &object)
        }
        None => handler_error(StatusCode::NOT_FOUND, &format!("model '{name}' not found")),
    }
}
