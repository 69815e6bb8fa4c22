//! Ollama's route table and path normalisation.
//!
//! Metric labels must be bounded, so every request is classified into one of Ollama's known
//! routes or `other`. Detection keys use the *normalised* path: percent-decoded, `//`
//! collapsed, query dropped, so that `/api/%73how?x=1` counts as `/api/show` and an attacker
//! cannot dodge a rule by spelling a path differently.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// One of Ollama's known routes (SPEC §7), or [`Route::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// `/`
    Root,
    /// `/api/version`
    Version,
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
    /// `/v1/messages`
    AnthropicMessages,
    /// Anything else.
    Other,
}

impl Route {
    /// Every route, in label-table order.
    pub const ALL: [Route; 23] = [
        Route::Root,
        Route::Version,
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
        Route::OpenAiChat,
        Route::OpenAiCompletions,
        Route::OpenAiEmbeddings,
        Route::OpenAiModels,
        Route::OpenAiModel,
        Route::OpenAiResponses,
        Route::AnthropicMessages,
        Route::Other,
    ];

    /// The metric label (the route pattern as SPEC §7 writes it).
    pub fn label(self) -> &'static str {
        match self {
            Route::Root => "/",
            Route::Version => "/api/version",
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
            Route::OpenAiChat => "/v1/chat/completions",
            Route::OpenAiCompletions => "/v1/completions",
            Route::OpenAiEmbeddings => "/v1/embeddings",
            Route::OpenAiModels => "/v1/models",
            Route::OpenAiModel => "/v1/models/:model",
            Route::OpenAiResponses => "/v1/responses",
            Route::AnthropicMessages => "/v1/messages",
            Route::Other => "other",
        }
    }

    /// Position in [`Route::ALL`], for pre-resolved handle tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The exact static path of a fixed route (none for pattern routes and `other`).
    fn fixed_path(self) -> Option<&'static str> {
        match self {
            Route::Blobs | Route::OpenAiModel | Route::Other => None,
            r => Some(r.label()),
        }
    }

    /// Classifies a *normalised* path.
    pub fn classify(path: &str) -> Route {
        if let Some(rest) = path.strip_prefix("/api/") {
            return match rest {
                "version" => Route::Version,
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
                r if r.starts_with("blobs/") && r.len() > "blobs/".len() => Route::Blobs,
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
                r if r.starts_with("models/") && r.len() > "models/".len() => Route::OpenAiModel,
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

/// Normalises a request path for detection: drops the query (and fragment), percent-decodes
/// (invalid UTF-8 is replaced, never rejected), and collapses runs of `/`.
///
/// Returns the route's static path when the result is a fixed route, so the common case
/// does not allocate.
pub fn normalize(raw_target: &str) -> (Cow<'static, str>, Route) {
    let path = match raw_target.find(['?', '#']) {
        Some(i) => &raw_target[..i],
        None => raw_target,
    };
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let mut out = String::with_capacity(decoded.len() + 1);
    if !decoded.starts_with('/') {
        out.push('/');
    }
    let mut prev_slash = false;
    for c in decoded.chars() {
        if c == '/' && prev_slash {
            continue;
        }
        prev_slash = c == '/';
        out.push(c);
    }
    let route = Route::classify(&out);
    match route.fixed_path() {
        Some(fixed) => (Cow::Borrowed(fixed), route),
        None => (Cow::Owned(out), route),
    }
}

/// Like [`normalize`], but avoids the work (and the allocation) when `raw_target` is already
/// a fixed route path with no query — the proxy's hot path.
pub fn normalize_fast(raw_target: &str) -> (Cow<'static, str>, Route) {
    let route = Route::classify(raw_target);
    if let Some(fixed) = route.fixed_path() {
        return (Cow::Borrowed(fixed), route);
    }
    normalize(raw_target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoded_query_and_double_slash_normalise_to_show() {
        assert_eq!(
            normalize("/api/%73how?x=1"),
            (Cow::Borrowed("/api/show"), Route::Show)
        );
        assert_eq!(
            normalize("//api//show"),
            (Cow::Borrowed("/api/show"), Route::Show)
        );
        assert_eq!(normalize("/api/show#frag").1, Route::Show);
    }

    #[test]
    fn pattern_routes_keep_their_path() {
        let (p, r) = normalize("/api/blobs/sha256:abc?x");
        assert_eq!((p.as_ref(), r), ("/api/blobs/sha256:abc", Route::Blobs));
        let (p, r) = normalize("/v1/models/llama3%2F8b");
        assert_eq!(
            (p.as_ref(), r),
            ("/v1/models/llama3/8b", Route::OpenAiModel)
        );
    }

    #[test]
    fn unknown_paths_are_other_and_empty_suffixes_are_not_pattern_routes() {
        assert_eq!(normalize("/api/blobs/").1, Route::Other);
        assert_eq!(normalize("/v1/models/").1, Route::Other);
        assert_eq!(normalize("/favicon.ico").1, Route::Other);
        assert_eq!(normalize("").0, "/");
    }

    #[test]
    fn invalid_utf8_escapes_are_replaced_not_rejected() {
        assert_eq!(normalize("/api/%ff").0, "/api/\u{fffd}");
    }

    #[test]
    fn labels_are_unique_and_index_matches_table_order() {
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut labels: Vec<_> = Route::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Route::ALL.len());
    }

    #[test]
    fn fast_path_borrows_for_fixed_routes() {
        assert!(matches!(
            normalize_fast("/api/tags").0,
            Cow::Borrowed("/api/tags")
        ));
        assert_eq!(normalize_fast("/api/tags?x=1").0, "/api/tags");
    }
}
