//! Model transfer routes with NDJSON progress: `/api/pull`, `/api/push`, `/api/create`.
//!
//! A pull or push of a multi-GB model is exactly the long-running request the exfiltration
//! rule measures, so these stream progress on the request's schedule like the real thing.
//! Pulls and pushes run for a total duration ([`SimConfig::transfer_duration`], or
//! `x-sim-transfer-ms` per request; see [`Controls::transfer_schedule`]), so a test can
//! start a transfer that lasts minutes and cut it.
//!
//! Names may carry a registry host (`attacker.example/ns/model:tag`, `hf.co/user/repo`).
//! A pull of any name succeeds. A push succeeds for an installed model, and for any name
//! qualified with a registry host (as if `ollama cp` had made it); an unqualified unknown
//! name is refused before any progress, as Ollama refuses a model it does not have.
//!
//! [`SimConfig::transfer_duration`]: crate::SimConfig::transfer_duration
//! [`Controls::transfer_schedule`]: super::controls::Controls::transfer_schedule

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::body::Chunk;
use super::call::{bool_field, hex, str_field, wants_stream, Call};
use super::models;
use super::reply::{error_line, go_json, go_json_line, Reply, JSON_PLAIN, NDJSON};

/// Size reported for layers of models the simulator does not have.
const UNKNOWN_LAYER_SIZE: u64 = 1_000_000_000;

/// Ollama's `api.ProgressResponse`.
#[derive(Serialize)]
struct Progress<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    digest: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    total: u64,
    #[serde(skip_serializing_if = "is_zero")]
    completed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn only_status(text: &str) -> Progress<'_> {
    Progress {
        status: text,
        digest: "",
        total: 0,
        completed: 0,
    }
}

fn status(text: &str) -> Bytes {
    go_json_line(&only_status(text))
}

/// Which transfer route is answering.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transfer {
    Pull,
    Push,
    Create,
}

impl Transfer {
    fn go_type(self) -> &'static str {
        match self {
            Transfer::Pull => "api.PullRequest",
            Transfer::Push => "api.PushRequest",
            Transfer::Create => "api.CreateRequest",
        }
    }

    /// The installed model behind `name`. A pushed name is a copy of an installed model
    /// under a registry host and namespace, so its last path component is tried too.
    fn local_model(self, name: &str) -> Option<&'static models::Model> {
        let base = || name.rsplit('/').next().and_then(models::find);
        match self {
            Transfer::Push => models::find(name).or_else(base),
            _ => models::find(name),
        }
    }

    /// The progress lines for `name`: opening status, one delayed line per chunk, closing
    /// statuses ending in `success`.
    fn chunks(self, name: &str, count: usize) -> Vec<Chunk> {
        let (digest, total) = match self.local_model(name) {
            Some(m) => (m.layer.to_owned(), m.size),
            None => (
                format!("sha256:{}", hex(&Sha256::digest(name.as_bytes()))),
                UNKNOWN_LAYER_SIZE,
            ),
        };
        let short = digest.get(7..19).unwrap_or_default();
        let (opening, verb, closing): (&str, &str, &[&str]) = match self {
            Transfer::Pull => (
                "pulling manifest",
                "pulling",
                &["verifying sha256 digest", "writing manifest", "success"],
            ),
            Transfer::Push => (
                "retrieving manifest",
                "pushing",
                &["pushing manifest", "success"],
            ),
            Transfer::Create => (
                "gathering model components",
                "",
                &["writing manifest", "success"],
            ),
        };
        let mut chunks = vec![Chunk::now(status(opening))];
        for k in 1..=count as u64 {
            let line = match self {
                Transfer::Create => status(&format!("using existing layer {digest}")),
                _ => go_json_line(&Progress {
                    status: &format!("{verb} {short}"),
                    digest: &digest,
                    total,
                    completed: total * k / count as u64,
                }),
            };
            chunks.push(Chunk::delayed(line));
        }
        chunks.extend(closing.iter().map(|s| Chunk::now(status(s))));
        chunks
    }
}

/// `POST /api/pull`, `/api/push`, `/api/create`.
pub(crate) async fn transfer(call: &mut Call, kind: Transfer) -> Reply {
    let body = match call.native_json(kind.go_type()).await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let go_struct = &kind.go_type()[4..];
    let name = str_field(&body, "model", go_struct)
        .and_then(|m| Ok(m.or(str_field(&body, "name", go_struct)?)));
    let name = match name {
        Ok(Some(name)) if !name.is_empty() => name.to_owned(),
        Ok(_) => return Reply::error(StatusCode::BAD_REQUEST, "model is required"),
        Err(e) => return Reply::error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if let Err(e) = bool_field(&body, "insecure", go_struct) {
        return Reply::error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    if kind == Transfer::Push && kind.local_model(&name).is_none() && !has_registry_host(&name) {
        // Ollama reports a failure that happens before any progress as a plain JSON error.
        return Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("model '{name}' not found"),
        );
    }
    if kind != Transfer::Create {
        call.controls = call.controls.transfer_schedule();
    }
    if !wants_stream(&body) {
        call.generate_time().await;
        return Reply::bytes(StatusCode::OK, JSON_PLAIN, go_json(&only_status("success")));
    }
    let chunks = kind.chunks(&name, call.controls.chunks);
    Reply::stream(
        NDJSON,
        call.plan(chunks, error_line("max retries exceeded: unexpected EOF")),
    )
}

/// Whether `name` names its registry: a first path component that is a host (has a dot or
/// a port, or is `localhost`), as in Ollama's `model.ParseName`.
fn has_registry_host(name: &str) -> bool {
    match name.split_once('/') {
        Some((host, rest)) => {
            !rest.is_empty() && (host.contains('.') || host.contains(':') || host == "localhost")
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_of_a_known_model_reports_its_layer_and_size() {
        let chunks = Transfer::Pull.chunks("llama3.2", 2);
        let lines: Vec<&[u8]> = chunks.iter().map(|c| &c.data()[..]).collect();
        assert_eq!(
            lines,
            [
                &b"{\"status\":\"pulling manifest\"}\n"[..],
                b"{\"status\":\"pulling dde5aa3fc5ff\",\"digest\":\"sha256:dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff\",\"total\":2019393189,\"completed\":1009696594}\n",
                b"{\"status\":\"pulling dde5aa3fc5ff\",\"digest\":\"sha256:dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff\",\"total\":2019393189,\"completed\":2019393189}\n",
                b"{\"status\":\"verifying sha256 digest\"}\n",
                b"{\"status\":\"writing manifest\"}\n",
                b"{\"status\":\"success\"}\n",
            ]
        );
    }

    #[test]
    fn push_progress_uses_push_statuses() {
        let chunks = Transfer::Push.chunks("llama3.2", 1);
        assert_eq!(
            &chunks[0].data()[..],
            b"{\"status\":\"retrieving manifest\"}\n"
        );
        assert!(chunks[1]
            .data()
            .starts_with(b"{\"status\":\"pushing dde5aa3fc5ff\""));
        assert_eq!(
            &chunks[2].data()[..],
            b"{\"status\":\"pushing manifest\"}\n"
        );
    }

    #[test]
    fn registry_hosts_are_recognised() {
        assert!(has_registry_host("attacker.example/ns/model:tag"));
        assert!(has_registry_host("hf.co/user/repo"));
        assert!(has_registry_host("localhost/ns/model"));
        assert!(has_registry_host("10.0.0.9:5000/ns/model"));
        assert!(!has_registry_host("ns/model"));
        assert!(!has_registry_host("llama3.2"));
        assert!(!has_registry_host("attacker.example/"));
    }

    #[test]
    fn a_pushed_copy_reports_the_installed_model_it_copies() {
        let chunks = Transfer::Push.chunks("attacker.example/ns/llama3.2:latest", 1);
        assert!(chunks[1]
            .data()
            .starts_with(b"{\"status\":\"pushing dde5aa3fc5ff\""));
        // A pull of the same name is a different model.
        let chunks = Transfer::Pull.chunks("attacker.example/ns/llama3.2:latest", 1);
        assert!(!chunks[1]
            .data()
            .starts_with(b"{\"status\":\"pulling dde5aa3fc5ff\""));
    }
}
