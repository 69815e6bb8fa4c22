//! Ollama's native inference routes: `/api/generate`, `/api/chat`, `/api/embed`,
//! `/api/embeddings`. Generation streams NDJSON by default, one line per body frame, paced by
//! the request's controls, and ends with the `done` line carrying Ollama's metrics.

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::body::Chunk;
use super::call::{str_field, wants_stream, Call};
use super::models;
use super::reply::{error_line, go_json_line, now_rfc3339, Reply, JSON_UTF8, NDJSON};

/// The canned answer, one token per chunk (cycled for long streams).
const TOKENS: [&str; 12] = [
    "The",
    " sky",
    " looks",
    " blue",
    " because",
    " air",
    " scatters",
    " short",
    " blue",
    " wavelengths",
    " more",
    ".",
];

/// Ollama's message when a runner dies mid-generation.
pub(crate) const RUNNER_ERROR: &str =
    "an error was encountered while running the model: unexpected EOF";

/// Dimensions of simulated embedding vectors (compact, unlike real models).
const EMBEDDING_DIMS: usize = 16;

/// Token `i` of the canned answer.
pub(crate) fn token(i: usize) -> &'static str {
    TOKENS[i % TOKENS.len()]
}

/// The whole canned answer for `chunks` tokens.
pub(crate) fn answer(chunks: usize) -> String {
    (0..chunks).map(token).collect()
}

/// Ollama's timing and token counters of the final line.
#[derive(Serialize, Clone, Copy)]
pub(crate) struct Metrics {
    total_duration: u64,
    load_duration: u64,
    pub(crate) prompt_eval_count: usize,
    prompt_eval_duration: u64,
    pub(crate) eval_count: usize,
    eval_duration: u64,
}

impl Metrics {
    /// Deterministic, plausible numbers: ~15 ms per generated token plus the schedule.
    pub(crate) fn new(call: &Call, prompt_words: usize) -> Self {
        let eval = call.controls.chunks as u64 * 15_000_000
            + u64::try_from(call.controls.stream_duration().as_nanos()).unwrap_or(u64::MAX);
        let (load, prompt) = (18_230_511, 41_529_000);
        Metrics {
            total_duration: load + prompt + eval,
            load_duration: load,
            prompt_eval_count: prompt_words + 26,
            prompt_eval_duration: prompt,
            eval_count: call.controls.chunks,
            eval_duration: eval,
        }
    }
}

#[derive(Serialize)]
struct GenerateLine<'a> {
    model: &'a str,
    created_at: String,
    response: &'a str,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<[u32; 4]>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    metrics: Option<Metrics>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Serialize)]
struct ChatLine<'a> {
    model: &'a str,
    created_at: String,
    message: Message<'a>,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    metrics: Option<Metrics>,
}

/// Which native generation route is answering.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Generate,
    Chat,
}

impl Kind {
    fn go_type(self) -> &'static str {
        match self {
            Kind::Generate => "api.GenerateRequest",
            Kind::Chat => "api.ChatRequest",
        }
    }

    /// One NDJSON line; `done_reason` marks the final line, which carries `metrics`.
    fn line(
        self,
        model: &str,
        text: &str,
        done_reason: Option<&str>,
        metrics: Option<Metrics>,
    ) -> Bytes {
        let created_at = now_rfc3339();
        let done = done_reason.is_some();
        match self {
            Kind::Generate => go_json_line(&GenerateLine {
                model,
                created_at,
                response: text,
                done,
                done_reason,
                context: metrics.map(|_| [128_006, 9125, 128_007, 271]),
                metrics,
            }),
            Kind::Chat => go_json_line(&ChatLine {
                model,
                created_at,
                message: Message {
                    role: "assistant",
                    content: text,
                },
                done,
                done_reason,
                metrics,
            }),
        }
    }

    /// The same object as a non-streamed `c.JSON` body (no trailing newline).
    fn object(self, model: &str, text: &str, done_reason: &str, metrics: Option<Metrics>) -> Reply {
        let line = self.line(model, text, Some(done_reason), metrics);
        let body = line.slice(..line.len().saturating_sub(1));
        Reply::bytes(StatusCode::OK, JSON_UTF8, body)
    }
}

/// `POST /api/generate` and `POST /api/chat`.
pub(crate) async fn generate(call: &mut Call, kind: Kind) -> Reply {
    let body = match call.native_json(kind.go_type()).await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let name = match generation_model(&body, kind) {
        Ok(name) => name,
        Err(reply) => return reply,
    };
    let prompt = prompt_text(&body, kind);
    if prompt.is_empty() {
        // An empty prompt only loads the model.
        return kind.object(&name, "", "load", None);
    }
    let metrics = Metrics::new(call, prompt.split_whitespace().count());
    if !wants_stream(&body) {
        call.generate_time().await;
        return kind.object(&name, &answer(call.controls.chunks), "stop", Some(metrics));
    }
    let mut chunks: Vec<Chunk> = (0..call.controls.chunks)
        .map(|i| Chunk::delayed(kind.line(&name, token(i), None, None)))
        .collect();
    let last = kind.line(&name, "", Some("stop"), Some(metrics));
    chunks.push(Chunk::now(last));
    Reply::stream(NDJSON, call.plan(chunks, error_line(RUNNER_ERROR)))
}

/// The requested model name, or the error Ollama answers for it.
fn generation_model(body: &Value, kind: Kind) -> Result<String, Reply> {
    let name = str_field(body, "model", &kind.go_type()[4..])
        .map_err(|e| Reply::error(StatusCode::BAD_REQUEST, &e.to_string()))?
        .unwrap_or_default();
    let Some(model) = models::find(name) else {
        return Err(match (kind, name.is_empty()) {
            (Kind::Chat, true) => Reply::error(StatusCode::BAD_REQUEST, "model is required"),
            _ => Reply::error(StatusCode::NOT_FOUND, &format!("model '{name}' not found")),
        });
    };
    if model.embed_only {
        let verb = match kind {
            Kind::Generate => "generate",
            Kind::Chat => "chat",
        };
        let message = format!("\"{name}\" does not support {verb}");
        return Err(Reply::error(StatusCode::BAD_REQUEST, &message));
    }
    Ok(name.to_owned())
}

/// The text a request asks about: the prompt, or every message's content.
fn prompt_text(body: &Value, kind: Kind) -> String {
    match kind {
        Kind::Generate => body
            .get("prompt")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        Kind::Chat => body
            .get("messages")
            .and_then(Value::as_array)
            .map(|msgs| {
                msgs.iter()
                    .filter_map(|m| m.get("content").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
    }
}

/// A deterministic unit vector for `text`, so equal inputs embed equally.
pub(crate) fn embedding(text: &str) -> Vec<f32> {
    let digest = Sha256::digest(text.as_bytes());
    let raw: Vec<f32> = digest
        .chunks(2)
        .take(EMBEDDING_DIMS)
        .map(|p| f32::from(u16::from_be_bytes([p[0], p[1]])) / 32_768.0 - 1.0)
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    raw.iter().map(|x| x / norm).collect()
}

/// The inputs of an embed request: a string or an array of strings.
pub(crate) fn embed_inputs(input: Option<&Value>) -> Option<Vec<String>> {
    match input {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Some(Vec::new()),
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(_) => None,
    }
}

#[derive(Serialize)]
struct EmbedResponse<'a> {
    model: &'a str,
    embeddings: Vec<Vec<f32>>,
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: usize,
}

/// `POST /api/embed`.
pub(crate) async fn embed(call: &mut Call) -> Reply {
    let body = match call.native_json("api.EmbedRequest").await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let name = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(inputs) = embed_inputs(body.get("input")) else {
        return Reply::error(StatusCode::BAD_REQUEST, "invalid input type");
    };
    if models::find(name).is_none() {
        return Reply::error(StatusCode::NOT_FOUND, &format!("model '{name}' not found"));
    }
    let tokens = inputs.iter().map(|s| s.split_whitespace().count()).sum();
    Reply::json(
        StatusCode::OK,
        &EmbedResponse {
            model: name,
            embeddings: inputs.iter().map(|s| embedding(s)).collect(),
            total_duration: 14_143_917,
            load_duration: 1_019_500,
            prompt_eval_count: tokens,
        },
    )
}

#[derive(Serialize)]
struct EmbeddingResponse {
    embedding: Vec<f64>,
}

/// `POST /api/embeddings` (the legacy single-prompt form).
pub(crate) async fn embeddings(call: &mut Call) -> Reply {
    let body = match call.native_json("api.EmbeddingRequest").await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let name = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() {
        return Reply::error(StatusCode::BAD_REQUEST, "model is required");
    }
    if models::find(name).is_none() {
        return Reply::error(StatusCode::NOT_FOUND, &format!("model '{name}' not found"));
    }
    let prompt = body
        .get("prompt")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let embedding = if prompt.is_empty() {
        Vec::new()
    } else {
        embedding(prompt).into_iter().map(f64::from).collect()
    };
    Reply::json(StatusCode::OK, &EmbeddingResponse { embedding })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_concatenates_cycled_tokens() {
        assert_eq!(answer(3), "The sky looks");
        assert_eq!(token(12), "The");
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("hello");
        assert_eq!(a.len(), EMBEDDING_DIMS);
        assert_eq!(a, embedding("hello"));
        assert_ne!(a, embedding("world"));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn embed_inputs_accepts_strings_and_string_arrays_only() {
        let v = serde_json::json!(["a", "b"]);
        assert_eq!(embed_inputs(Some(&v)), Some(vec!["a".into(), "b".into()]));
        assert_eq!(embed_inputs(Some(&serde_json::json!(""))), Some(vec![]));
        assert_eq!(embed_inputs(Some(&serde_json::json!([1]))), None);
        assert_eq!(embed_inputs(Some(&serde_json::json!(3))), None);
    }
}
