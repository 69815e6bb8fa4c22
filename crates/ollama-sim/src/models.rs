//! The simulator's installed models and the metadata routes (`/api/tags`, `/api/ps`,
//! `/api/show`): the very routes an enumeration attack hammers.

use std::collections::BTreeMap;

use http::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};

use super::call::{str_field, Call};
use super::reply::Reply;

/// One installed model.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) name: &'static str,
    pub(crate) size: u64,
    /// Manifest digest (hex, as `/api/tags` shows it).
    pub(crate) digest: &'static str,
    /// Digest of the weights layer (what a pull downloads).
    pub(crate) layer: &'static str,
    family: &'static str,
    parameter_size: &'static str,
    quantization: &'static str,
    modified_at: &'static str,
    context_length: u64,
    pub(crate) embedding_length: u64,
    /// Embedding-only models refuse `/api/generate` and `/api/chat`.
    pub(crate) embed_only: bool,
}

/// What `/api/tags` lists.
pub(crate) const MODELS: [Model; 2] = [
    Model {
        name: "llama3.2:latest",
        size: 2_019_393_189,
        digest: "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        layer: "sha256:dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff",
        family: "llama",
        parameter_size: "3.2B",
        quantization: "Q4_K_M",
        modified_at: "2025-09-28T14:07:11.412345678Z",
        context_length: 131_072,
        embedding_length: 3072,
        embed_only: false,
    },
    Model {
        name: "nomic-embed-text:latest",
        size: 274_302_450,
        digest: "0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f",
        layer: "sha256:970aa74c0a90ef7482477cf803618e776e173c007bf957f635f1015bfcfef0e6",
        family: "nomic-bert",
        parameter_size: "137M",
        quantization: "F16",
        modified_at: "2025-09-28T14:09:52.018273645Z",
        context_length: 2048,
        embedding_length: 768,
        embed_only: true,
    },
];

/// Finds a model the way Ollama resolves names: case-insensitive, `:latest` implied, the
/// default `registry.ollama.ai/library/` prefix optional.
pub(crate) fn find(name: &str) -> Option<&'static Model> {
    let name = name.to_ascii_lowercase();
    let name = name
        .strip_prefix("registry.ollama.ai/")
        .unwrap_or(&name)
        .trim_start_matches("library/");
    let last = name.rsplit('/').next().unwrap_or(name);
    let full = if last.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    };
    MODELS.iter().find(|m| m.name == full)
}

#[derive(Serialize)]
pub(crate) struct Details {
    parent_model: &'static str,
    format: &'static str,
    family: &'static str,
    families: [&'static str; 1],
    parameter_size: &'static str,
    quantization_level: &'static str,
}

impl Model {
    pub(crate) fn details(&self) -> Details {
        Details {
            parent_model: "",
            format: "gguf",
            family: self.family,
            families: [self.family],
            parameter_size: self.parameter_size,
            quantization_level: self.quantization,
        }
    }

    /// Unix seconds of `modified_at` (the OpenAI `created` field).
    pub(crate) fn created(&self) -> i64 {
        chrono::DateTime::parse_from_rfc3339(self.modified_at).map_or(0, |t| t.timestamp())
    }
}

#[derive(Serialize)]
struct ListModel {
    name: &'static str,
    model: &'static str,
    modified_at: &'static str,
    size: u64,
    digest: &'static str,
    details: Details,
}

#[derive(Serialize)]
struct ListResponse<T> {
    models: Vec<T>,
}

/// `GET|HEAD /api/tags`.
pub(crate) fn tags() -> Reply {
    let models = MODELS
        .iter()
        .map(|m| ListModel {
            name: m.name,
            model: m.name,
            modified_at: m.modified_at,
            size: m.size,
            digest: m.digest,
            details: m.details(),
        })
        .collect();
    Reply::json(StatusCode::OK, &ListResponse { models })
}

#[derive(Serialize)]
struct PsModel {
    name: &'static str,
    model: &'static str,
    size: u64,
    digest: &'static str,
    details: Details,
    expires_at: String,
    size_vram: u64,
    context_length: u64,
}

/// `GET /api/ps`: the chat model is loaded, expiring five minutes from now.
pub(crate) fn ps() -> Reply {
    let m = &MODELS[0];
    let expires = chrono::Utc::now() + chrono::Duration::minutes(5);
    let loaded = PsModel {
        name: m.name,
        model: m.name,
        size: 3_487_295_488,
        digest: m.digest,
        details: m.details(),
        expires_at: expires.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        size_vram: 3_487_295_488,
        context_length: 4096,
    };
    Reply::json(
        StatusCode::OK,
        &ListResponse {
            models: vec![loaded],
        },
    )
}

#[derive(Serialize)]
struct Tensor {
    name: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    shape: Vec<u64>,
}

#[derive(Serialize)]
struct ShowResponse {
    license: &'static str,
    modelfile: String,
    parameters: &'static str,
    template: &'static str,
    system: &'static str,
    details: Details,
    model_info: BTreeMap<String, Value>,
    tensors: Vec<Tensor>,
    capabilities: Vec<&'static str>,
    modified_at: &'static str,
}

const TEMPLATE: &str = "<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>\
{{ range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>\
{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n";
const PARAMETERS: &str = "stop                           \"<|start_header_id|>\"\n\
stop                           \"<|end_header_id|>\"\nstop                           \"<|eot_id|>\"";
const LICENSE: &str =
    "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT\nLlama 3.2 Version Release Date: September 25, 2024";
const SYSTEM: &str = "You are a helpful assistant.";

/// `POST /api/show`.
pub(crate) async fn show(call: &mut Call) -> Reply {
    let body = match call.native_json("api.ShowRequest").await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let model = str_field(&body, "model", "ShowRequest")
        .and_then(|m| Ok(m.or(str_field(&body, "name", "ShowRequest")?)));
    let name = match model {
        Ok(Some(name)) if !name.is_empty() => name,
        Ok(_) => return Reply::error(StatusCode::BAD_REQUEST, "model is required"),
        Err(e) => return Reply::error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match find(name) {
        Some(m) => Reply::json(StatusCode::OK, &show_response(m)),
        None => Reply::error(StatusCode::NOT_FOUND, &format!("model '{name}' not found")),
    }
}

fn show_response(m: &Model) -> ShowResponse {
    let arch = m.family;
    let mut info = BTreeMap::new();
    info.insert("general.architecture".to_owned(), json!(arch));
    info.insert("general.file_type".to_owned(), json!(15));
    info.insert(
        "general.parameter_count".to_owned(),
        json!(3_212_749_888u64),
    );
    info.insert("general.quantization_version".to_owned(), json!(2));
    info.insert(format!("{arch}.block_count"), json!(28));
    info.insert(format!("{arch}.context_length"), json!(m.context_length));
    info.insert(
        format!("{arch}.embedding_length"),
        json!(m.embedding_length),
    );
    info.insert(format!("{arch}.attention.head_count"), json!(24));
    let width = m.embedding_length;
    let params: String = PARAMETERS
        .lines()
        .map(|line| format!("PARAMETER {line}\n"))
        .collect();
    ShowResponse {
        license: LICENSE,
        modelfile: format!(
            "# Modelfile generated by \"ollama show\"\n# To build a new Modelfile based on this, \
             replace FROM with:\n# FROM {}\n\nFROM /root/.ollama/models/blobs/{}\n\
             TEMPLATE \"\"\"{TEMPLATE}\"\"\"\n{params}LICENSE \"\"\"{LICENSE}\"\"\"\n",
            m.name,
            m.layer.replace(':', "-"),
        ),
        parameters: PARAMETERS,
        template: TEMPLATE,
        system: SYSTEM,
        details: m.details(),
        model_info: info,
        tensors: vec![
            Tensor {
                name: "token_embd.weight",
                kind: "Q6_K",
                shape: vec![width, 128_256],
            },
            Tensor {
                name: "blk.0.attn_q.weight",
                kind: "Q4_K",
                shape: vec![width, width],
            },
            Tensor {
                name: "output_norm.weight",
                kind: "F32",
                shape: vec![width],
            },
        ],
        capabilities: if m.embed_only {
            vec!["embedding"]
        } else {
            vec!["completion", "tools"]
        },
        modified_at: m.modified_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_resolves_names_like_ollama() {
        assert_eq!(find("llama3.2").map(|m| m.name), Some("llama3.2:latest"));
        assert_eq!(
            find("Llama3.2:Latest").map(|m| m.name),
            Some("llama3.2:latest")
        );
        assert_eq!(
            find("registry.ollama.ai/library/nomic-embed-text").map(|m| m.name),
            Some("nomic-embed-text:latest")
        );
        assert!(find("llama3.2:1b").is_none());
        assert!(find("mistral").is_none());
    }

    #[test]
    fn created_is_modified_at_in_unix_seconds() {
        assert_eq!(MODELS[0].created(), 1_759_068_431);
    }
}
