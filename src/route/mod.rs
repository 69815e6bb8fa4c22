//! Ollama's route table and path normalisation.
//!
//! Metric labels must be bounded, so every request is classified into one of Ollama's known
//! routes or `other`. A request is attributed to the route *Ollama itself* would serve it
//! from, so that `serve` and `scan` count the same request the same way and an attacker can
//! neither dodge a rule by spelling a path differently nor inflate a count by spelling it
//! oddly:
//!
//! - `serve` sees the request target: it is percent-decoded once, as Go does, so
//!   `/api/%73how?x=1` counts as `/api/show` and `/api/%2573how` as `/api/%73how` (`other`;
//!   Ollama answers it 404). See [`normalize`].
//! - `scan` sees gin's log text, which is already the decoded path: it is used as-is (only
//!   the `?query` is dropped), never decoded a second time. See [`normalize_logged`].
//! - Unclean paths (`//api/show`, `/api/./show`) never reach Ollama's handlers: its
//!   `net/http` mux answers them with a 301 to the clean path. That redirect is the
//!   request's own record (`other`, the path as sent); the client's follow-up to the clean
//!   path is a request of its own.

mod normalize;

#[cfg(test)]
pub(crate) use normalize::normalize;
pub(crate) use normalize::{normalize_fast, normalize_logged};

/// One of Ollama's known routes (README, "Metrics"), or [`Route::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Route {
    /// `/`
    Root,
    /// `/api/version`
    Version,
    /// `/api/status` (whether the server's cloud features are disabled, and by what)
    Status,
    /// `/api/tags`
    Tags,
    /// `/api/show`
    Show,
    /// `/api/ps`
    Ps,
    /// `/api/generate`
    Generate,
    /// `/api/chat`
    Chat,
    /// `/api/embed`
    Embed,
    /// `/api/embeddings`
    Embeddings,
    /// `/api/pull`
    Pull,
    /// `/api/push`
    Push,
    /// `/api/create`
    Create,
    /// `/api/copy`
    Copy,
    /// `/api/delete`
    Delete,
    /// `/api/blobs/:digest`
    Blobs,
    /// `/api/experimental/model-recommendations` (a list of models to pull)
    ModelRecommendations,
    /// `/api/experimental/web_search` (a search on ollama.com, signed as the server's account)
    WebSearch,
    /// `/api/experimental/web_fetch` (a page fetched by ollama.com, signed as the server's
    /// account)
    WebFetch,
    /// `/v1/chat/completions`
    OpenAiChat,
    /// `/v1/completions`
    OpenAiCompletions,
    /// `/v1/embeddings`
    OpenAiEmbeddings,
    /// `/v1/models`
    OpenAiModels,
    /// `/v1/models/:model`
    OpenAiModel,
    /// `/v1/responses`
    OpenAiResponses,
    /// `/v1/audio/transcriptions` (a multipart audio upload, answered by the chat handler)
    OpenAiTranscriptions,
    /// `/v1/messages`
    AnthropicMessages,
    /// Ollama's ollama.com account routes: `/api/me` (who the server is signed in as),
    /// `/api/signout` and `/api/user/keys/:key` (sign the server out: its `:cloud` models stop).
    Account,
    /// Anything else.
    Other,
}

impl Route {
    /// Every route, in label-table order.
    pub(crate) const ALL: [Route; 29] = [
        Route::Root,
        Route::Version,
        Route::Status,
        Route::Tags,
        Route::Show,
        Route::Ps,
        Route::Generate,
        Route::Chat,
        Route::Embed,
        Route::Embeddings,
        Route::Pull,
        Route::Push,
        Route::Create,
        Route::Copy,
        Route::Delete,
        Route::Blobs,
        Route::ModelRecommendations,
        Route::WebSearch,
        Route::WebFetch,
        Route::OpenAiChat,
        Route::OpenAiCompletions,
        Route::OpenAiEmbeddings,
        Route::OpenAiModels,
        Route::OpenAiModel,
        Route::OpenAiResponses,
        Route::OpenAiTranscriptions,
        Route::AnthropicMessages,
        Route::Account,
        Route::Other,
    ];

    /// The metric label (the route pattern, as README "Metrics" lists it).
    pub(crate) fn label(self) -> &'static str {
        match self {
            Route::Root => "/",
            Route::Version => "/api/version",
            Route::Status => "/api/status",
            Route::Tags => "/api/tags",
            Route::Show => "/api/show",
            Route::Ps => "/api/ps",
            Route::Generate => "/api/generate",
            Route::Chat => "/api/chat",
            Route::Embed => "/api/embed",
            Route::Embeddings => "/api/embeddings",
            Route::Pull => "/api/pull",
            Route::Push => "/api/push",
            Route::Create => "/api/create",
            Route::Copy => "/api/copy",
            Route::Delete => "/api/delete",
            Route::Blobs => "/api/blobs/:digest",
            Route::ModelRecommendations => "/api/experimental/model-recommendations",
            Route::WebSearch => "/api/experimental/web_search",
            Route::WebFetch => "/api/experimental/web_fetch",
            Route::OpenAiChat => "/v1/chat/completions",
            Route::OpenAiCompletions => "/v1/completions",
            Route::OpenAiEmbeddings => "/v1/embeddings",
            Route::OpenAiModels => "/v1/models",
            Route::OpenAiModel => "/v1/models/:model",
            Route::OpenAiResponses => "/v1/responses",
            Route::OpenAiTranscriptions => "/v1/audio/transcriptions",
            Route::AnthropicMessages => "/v1/messages",
            Route::Account => "account",
            Route::Other => "other",
        }
    }

    /// Position in [`Route::ALL`], for pre-resolved handle tables.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The exact static path of a fixed route (none for pattern routes and `other`).
    pub(crate) fn fixed_path(self) -> Option<&'static str> {
        match self {
            Route::Blobs | Route::OpenAiModel | Route::Account | Route::Other => None,
            r => Some(r.label()),
        }
    }

    /// Classifies a *normalised* path.
    pub(crate) fn classify(path: &str) -> Route {
        if let Some(rest) = path.strip_prefix("/api/") {
            return match rest {
                "version" => Route::Version,
                "status" => Route::Status,
                "tags" => Route::Tags,
                "show" => Route::Show,
                "ps" => Route::Ps,
                "generate" => Route::Generate,
                "chat" => Route::Chat,
                "embed" => Route::Embed,
                "embeddings" => Route::Embeddings,
                "pull" => Route::Pull,
                "push" => Route::Push,
                "create" => Route::Create,
                "copy" => Route::Copy,
                "delete" => Route::Delete,
                "experimental/model-recommendations" => Route::ModelRecommendations,
                "experimental/web_search" => Route::WebSearch,
                "experimental/web_fetch" => Route::WebFetch,
                r if is_param(r, "blobs/") => Route::Blobs,
                "me" | "signout" => Route::Account,
                r if is_param(r, "user/keys/") => Route::Account,
                _ => Route::Other,
            };
        }
        if let Some(rest) = path.strip_prefix("/v1/") {
            return match rest {
                "chat/completions" => Route::OpenAiChat,
                "completions" => Route::OpenAiCompletions,
                "embeddings" => Route::OpenAiEmbeddings,
                "models" => Route::OpenAiModels,
                "responses" => Route::OpenAiResponses,
                "messages" => Route::AnthropicMessages,
                "audio/transcriptions" => Route::OpenAiTranscriptions,
                r if is_param(r, "models/") => Route::OpenAiModel,
                _ => Route::Other,
            };
        }
        if path == "/" {
            Route::Root
        } else {
            Route::Other
        }
    }
}

/// Whether `rest` is `prefix` and one gin `:param` segment: not empty and without a `/` (gin's
/// parameters never span one; `/api/blobs/a/b` is a 404, `/api/blobs/a/` a redirect).
fn is_param(rest: &str, prefix: &str) -> bool {
    rest.strip_prefix(prefix)
        .is_some_and(|p| !p.is_empty() && !p.contains('/'))
}
