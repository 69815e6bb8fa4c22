//! Request dispatch, in gin's order: host check middleware, route lookup (404, or 405 with
//! `Allow`), handler, then the `x-sim-delay-ms` pause before the response head.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, HOST, ORIGIN};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;

use super::body::SimBody;
use super::call::Call;
use super::hostcheck::host_allowed;
use super::native::{self, Kind};
use super::openai::{self, Completion};
use super::reply::{Reply, JSON_UTF8, TEXT_PLAIN, TEXT_UTF8};
use super::transfer::{self, Transfer};
use super::{blobs, models, SimState};

/// Ollama's routes (version 0.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Root,
    Version,
    Tags,
    Show,
    Ps,
    Generate,
    Chat,
    Embed,
    Embeddings,
    Pull,
    Push,
    Create,
    Copy,
    Delete,
    Blobs,
    OpenAiChat,
    OpenAiCompletions,
    OpenAiEmbeddings,
    OpenAiModels,
    OpenAiModel,
}

impl Endpoint {
    /// Resolves a decoded path to an endpoint and its path parameter.
    fn resolve(path: &str) -> Option<(Endpoint, &str)> {
        use Endpoint::*;
        let fixed = match path {
            "/" => Root,
            "/api/version" => Version,
            "/api/tags" => Tags,
            "/api/show" => Show,
            "/api/ps" => Ps,
            "/api/generate" => Generate,
            "/api/chat" => Chat,
            "/api/embed" => Embed,
            "/api/embeddings" => Embeddings,
            "/api/pull" => Pull,
            "/api/push" => Push,
            "/api/create" => Create,
            "/api/copy" => Copy,
            "/api/delete" => Delete,
            "/v1/chat/completions" => OpenAiChat,
            "/v1/completions" => OpenAiCompletions,
            "/v1/embeddings" => OpenAiEmbeddings,
            "/v1/models" => OpenAiModels,
            other => {
                let param = |prefix: &str| {
                    other
                        .strip_prefix(prefix)
                        .filter(|p| !p.is_empty() && !p.contains('/'))
                };
                if let Some(digest) = param("/api/blobs/") {
                    return Some((Blobs, digest));
                }
                return param("/v1/models/").map(|model| (OpenAiModel, model));
            }
        };
        Some((fixed, ""))
    }

    /// Registered methods, in the order of gin's method trees in Ollama (HEAD, GET, POST,
    /// DELETE), which is the order of the `Allow` header on a 405.
    fn methods(self) -> &'static [Method] {
        use Endpoint::*;
        match self {
            Root | Version | Tags => &[Method::HEAD, Method::GET],
            Ps | OpenAiModels | OpenAiModel => &[Method::GET],
            Blobs => &[Method::HEAD, Method::POST],
            Delete => &[Method::DELETE],
            _ => &[Method::POST],
        }
    }

    async fn handle(self, call: &mut Call) -> Reply {
        use Endpoint::*;
        match self {
            Root => Reply::bytes(
                StatusCode::OK,
                TEXT_UTF8,
                Bytes::from_static(b"Ollama is running"),
            ),
            Version => Reply::bytes(
                StatusCode::OK,
                JSON_UTF8,
                Bytes::from_static(br#"{"version":"0.12.3"}"#),
            ),
            Tags => models::tags(),
            Show => models::show(call).await,
            Ps => models::ps(),
            Generate => native::generate(call, Kind::Generate).await,
            Chat => native::generate(call, Kind::Chat).await,
            Embed => native::embed(call).await,
            Embeddings => native::embeddings(call).await,
            Pull => transfer::transfer(call, Transfer::Pull).await,
            Push => transfer::transfer(call, Transfer::Push).await,
            Create => transfer::transfer(call, Transfer::Create).await,
            Copy => blobs::copy(call).await,
            Delete => blobs::delete(call).await,
            Blobs if call.parts.method == Method::HEAD => blobs::head(call),
            Blobs => blobs::upload(call).await,
            OpenAiChat => openai::completions(call, Completion::Chat).await,
            OpenAiCompletions => openai::completions(call, Completion::Text).await,
            OpenAiEmbeddings => openai::embeddings(call).await,
            OpenAiModels => openai::list(),
            OpenAiModel => openai::retrieve(call),
        }
    }
}

/// Serves one request: logs it, answers it, and hands the tracker to the response body.
pub(crate) async fn handle(state: Arc<SimState>, req: Request<Incoming>) -> Response<SimBody> {
    let (parts, body) = req.into_parts();
    let tracker = state.log.begin(&parts);
    let mut call = Call::new(state, parts, body, tracker);
    let reply = dispatch(&mut call).await;
    let delay = call.controls.delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let Call { parts, tracker, .. } = call;
    reply.into_response(&parts.method, tracker)
}

async fn dispatch(call: &mut Call) -> Reply {
    // Ollama's CORS middleware runs before its host check, preflights included.
    if let Some(origin) = call.parts.headers.get(ORIGIN) {
        let host = call
            .parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let allowed = origin
            .to_str()
            .is_ok_and(|o| crate::origin::origin_allowed(o, host));
        if !allowed {
            return Reply::empty(StatusCode::FORBIDDEN);
        }
    }
    if call.state.check_hosts {
        let host = call
            .parts
            .headers
            .get(HOST)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        let allowed = std::str::from_utf8(host).is_ok_and(host_allowed);
        if !allowed {
            return Reply::empty(StatusCode::FORBIDDEN);
        }
        if call.parts.method == Method::OPTIONS {
            return Reply::empty(StatusCode::NO_CONTENT);
        }
    }
    let raw_path = call.parts.uri.path().to_owned();
    let path = percent_decode_str(&raw_path).decode_utf8_lossy();
    let Some((endpoint, param)) = Endpoint::resolve(&path) else {
        return Reply::bytes(
            StatusCode::NOT_FOUND,
            TEXT_PLAIN,
            Bytes::from_static(b"404 page not found"),
        );
    };
    let methods = endpoint.methods();
    if !methods.contains(&call.parts.method) {
        let allow = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut reply = Reply::bytes(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT_PLAIN,
            Bytes::from_static(b"405 method not allowed"),
        );
        if let Ok(value) = HeaderValue::from_str(&allow) {
            reply.headers.push((ALLOW, value));
        }
        return reply;
    }
    call.param = param.to_owned();
    endpoint.handle(call).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_extracts_path_parameters() {
        assert_eq!(Endpoint::resolve("/api/tags"), Some((Endpoint::Tags, "")));
        assert_eq!(
            Endpoint::resolve("/api/blobs/sha256:ab"),
            Some((Endpoint::Blobs, "sha256:ab"))
        );
        assert_eq!(
            Endpoint::resolve("/v1/models/llama3.2:latest"),
            Some((Endpoint::OpenAiModel, "llama3.2:latest"))
        );
    }

    #[test]
    fn resolve_rejects_unknown_and_nested_paths() {
        assert_eq!(Endpoint::resolve("/api/nope"), None);
        assert_eq!(Endpoint::resolve("/api/blobs/"), None);
        assert_eq!(Endpoint::resolve("/v1/models/a/b"), None);
        assert_eq!(Endpoint::resolve("/api/tags/"), None);
    }
}
