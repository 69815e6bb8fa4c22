//! Path normalisation: which route, and which detection key, a request target or a logged
//! path stands for (see the parent module and README, "Path normalisation").

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use super::Route;

/// Normalises a request target as the proxy received it (path and query) for detection.
///
/// Drops the query, percent-decodes once (invalid UTF-8 is replaced, never rejected) and
/// classifies the result exactly — no slash collapsing, no dot resolution — because that is
/// what Ollama routes on: its gin engine (`RemoveExtraSlash` and `RedirectFixedPath` off)
/// matches the decoded `URL.Path`. A path that is not clean is [`Route::Other`]: Ollama
/// registers gin on Go's `http.DefaultServeMux` (`http.Handle("/", h)`, `Handler: nil`,
/// for pprof), and since Go 1.22 the mux answers a target whose *escaped* path differs
/// from `path.Clean` of it (trailing slash kept) with a 301 to the clean path, before gin
/// runs. So `//api/show` and `/api/../api/show` are redirects, not `/api/show`, while
/// `/api/%2e/show` is clean as escaped and reaches gin as `/api/./show` (404): `other` too.
///
/// A raw `#` never gets here: the `http` crate cuts the target at `#` as a fragment, and the
/// proxy forwards what it parsed, so Ollama receives the path without it. (Go's own server
/// would keep the `#` in the path and answer 404, which is what `scan` sees in its logs.)
///
/// Returns the route's static path when the result is a fixed route, so the common case
/// does not allocate.
pub(crate) fn normalize(raw_target: &str) -> (Cow<'static, str>, Route) {
    let path = raw_target.split_once('?').map_or(raw_target, |(p, _)| p);
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let mut out = String::with_capacity(decoded.len() + 1);
    if !decoded.starts_with('/') {
        out.push('/');
    }
    out.push_str(&decoded);
    // Go's EscapedPath is the target's own spelling when that is a valid encoding, else the
    // decoded path re-escaped (which escapes neither `/` nor `.`).
    let escaped = if go_valid_path_encoding(path) {
        path
    } else {
        &out
    };
    if !is_clean(escaped) {
        return (Cow::Owned(out), Route::Other);
    }
    classified(out)
}

/// Normalises a path as gin logged it (`scan`): the text is already Go's decoded
/// `URL.Path` plus `?` and the raw query, so only the query is dropped — decoding again
/// would turn a logged `/api/%73how` (a request for `/api/%2573how`, 404 in Ollama) into
/// `/api/show`. A `?` that gin logged inside the path (decoded from `%3F`) cannot be told
/// from the query separator; it is taken as the separator.
///
/// A known route is a borrowed static text, also with a query (`/api/tags?refresh=1`): no
/// allocation for the lines `scan` reads most.
///
/// The `?` is found with a plain byte loop: paths are short, and `split_once('?')` cost
/// about 100 instructions a line in `scan` (a `char` searcher set up for each call).
pub(crate) fn normalize_logged(logged: &str) -> (Cow<'static, str>, Route) {
    let bytes = logged.as_bytes();
    let path = match bytes.iter().position(|&b| b == b'?') {
        // `?` is ASCII: the text before it ends on a character boundary.
        Some(at) => logged.get(..at).unwrap_or(logged),
        None => logged,
    };
    let route = Route::classify(path);
    match route.fixed_path() {
        Some(fixed) => (Cow::Borrowed(fixed), route),
        None => (Cow::Owned(path.to_owned()), route),
    }
}

fn classified(path: String) -> (Cow<'static, str>, Route) {
    let route = Route::classify(&path);
    match route.fixed_path() {
        Some(fixed) => (Cow::Borrowed(fixed), route),
        None => (Cow::Owned(path), route),
    }
}

/// Whether Go's `cleanPath` leaves `path` unchanged: it starts with `/` and has no empty,
/// `.` or `..` segment (a single trailing `/` is kept by `cleanPath`, so it is allowed).
fn is_clean(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return true; // "/"
    }
    rest.split('/').all(|seg| !matches!(seg, "" | "." | ".."))
}

/// Go's `validEncoding(s, encodePath)`: no byte that Go would percent-escape in a path,
/// except the sub-delimiters it tolerates. Decides whether `URL.EscapedPath` is the
/// target's own spelling.
fn go_valid_path_encoding(path: &str) -> bool {
    path.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'~'
                    | b'$'
                    | b'&'
                    | b'+'
                    | b','
                    | b'/'
                    | b':'
                    | b';'
                    | b'='
                    | b'@'
                    | b'!'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'['
                    | b']'
                    | b'%'
            )
    })
}

/// Like [`normalize`], but avoids the work (and the allocation) when `raw_target` is already
/// a fixed route path with no query — the proxy's hot path.
pub(crate) fn normalize_fast(raw_target: &str) -> (Cow<'static, str>, Route) {
    let route = Route::classify(raw_target);
    if let Some(fixed) = route.fixed_path() {
        return (Cow::Borrowed(fixed), route);
    }
    normalize(raw_target)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn owned(path: &str, route: Route) -> (Cow<'static, str>, Route) {
        (Cow::Owned(path.to_owned()), route)
    }

    #[test]
    fn percent_encoding_is_decoded_once_and_the_query_dropped() {
        assert_eq!(
            normalize("/api/%73how?x=1"),
            (Cow::Borrowed("/api/show"), Route::Show)
        );
        // Go decodes once: Ollama routes `/api/%73how`, a 404, and gin logs that text.
        assert_eq!(
            normalize_fast("/api/%2573how"),
            owned("/api/%73how", Route::Other)
        );
        assert_eq!(
            normalize("/api/show%3Fx"),
            owned("/api/show?x", Route::Other)
        );
    }

    #[test]
    fn unclean_paths_are_ollamas_301_redirect_not_the_target_route() {
        for unclean in [
            "//api/show",
            "/api//show",
            "/api/./show",
            "/api/../api/show",
            "/api/show/.",
        ] {
            assert_eq!(
                normalize_fast(unclean),
                owned(unclean, Route::Other),
                "{unclean}"
            );
        }
        // Clean as escaped, so gin sees the decoded dots and slashes: a 404, also `other`.
        assert_eq!(
            normalize("/api/%2e/show"),
            owned("/api/./show", Route::Other)
        );
        assert_eq!(
            normalize("/api%2F%2Fshow"),
            owned("/api//show", Route::Other)
        );
        // The query does not make a path unclean; a trailing slash is gin's redirect.
        assert_eq!(
            normalize("/api/tags?a=//./"),
            (Cow::Borrowed("/api/tags"), Route::Tags)
        );
        assert_eq!(normalize("/api/show/"), owned("/api/show/", Route::Other));
    }

    /// Decision: the `http` crate drops a raw `#fragment` while parsing the target and the
    /// proxy forwards the parsed target, so Ollama serves `/api/show#x` through the guard as
    /// `/api/show`; `normalize` itself keeps a `#` (only a decoded `%23` can reach it), as Go
    /// keeps it in the path.
    #[test]
    fn raw_hash_is_cut_by_the_http_parser_before_normalisation() {
        let uri: http::Uri = "/api/show#x".parse().unwrap();
        let target = uri.path_and_query().unwrap().as_str();
        assert_eq!(target, "/api/show");
        assert_eq!(
            normalize_fast(target),
            (Cow::Borrowed("/api/show"), Route::Show)
        );
        assert_eq!(
            normalize("/api/show%23x"),
            owned("/api/show#x", Route::Other)
        );
    }

    #[test]
    fn logged_paths_are_used_as_is_without_decoding_again() {
        assert_eq!(
            normalize_logged("/api/%73how"),
            owned("/api/%73how", Route::Other)
        );
        assert_eq!(
            normalize_logged("/api/show?verbose=true"),
            (Cow::Borrowed("/api/show"), Route::Show)
        );
        assert_eq!(
            normalize_logged("//api//chat"),
            owned("//api//chat", Route::Other)
        );
        assert_eq!(
            normalize_logged("/api/show#x"),
            owned("/api/show#x", Route::Other)
        );
        assert_eq!(
            normalize_logged("/api/blobs/sha256:ab?x"),
            owned("/api/blobs/sha256:ab", Route::Blobs)
        );
    }

    #[test]
    fn pattern_routes_keep_their_path() {
        let (p, r) = normalize("/api/blobs/sha256:abc?x");
        assert_eq!((p.as_ref(), r), ("/api/blobs/sha256:abc", Route::Blobs));
        let (p, r) = normalize("/v1/models/llama3%3A8b");
        assert_eq!(
            (p.as_ref(), r),
            ("/v1/models/llama3:8b", Route::OpenAiModel)
        );
        // gin routes the decoded path and a `:param` never spans a `/`: Ollama answers these
        // 404 (a trailing slash: a redirect), so they are `other` under their own path.
        for (target, path) in [
            ("/v1/models/llama3%2F8b", "/v1/models/llama3/8b"),
            ("/v1/models/hf.co/x/y", "/v1/models/hf.co/x/y"),
            ("/api/blobs/sha256:ab/x", "/api/blobs/sha256:ab/x"),
            ("/api/blobs/sha256:ab/", "/api/blobs/sha256:ab/"),
            ("/api/user/keys/", "/api/user/keys/"),
            ("/api/user/keys/a/b", "/api/user/keys/a/b"),
        ] {
            assert_eq!(normalize(target), owned(path, Route::Other), "{target}");
            assert_eq!(normalize_logged(path).1, Route::Other, "{path}");
        }
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

    /// Every path Ollama 0.32's router registers (`server/routes.go`, `GenerateRoutes`) has a
    /// route of its own, labelled by Ollama's pattern.
    #[test]
    fn every_route_ollama_registers_has_its_own_label() {
        let registered = [
            ("/", "/"),
            ("/api/version", "/api/version"),
            ("/api/status", "/api/status"),
            ("/api/pull", "/api/pull"),
            ("/api/push", "/api/push"),
            ("/api/tags", "/api/tags"),
            ("/api/show", "/api/show"),
            ("/api/delete", "/api/delete"),
            ("/api/me", "account"),
            ("/api/signout", "account"),
            ("/api/user/keys/c3NoLWVkMjU1MTk", "account"),
            ("/api/create", "/api/create"),
            ("/api/blobs/sha256:00", "/api/blobs/:digest"),
            ("/api/copy", "/api/copy"),
            (
                "/api/experimental/web_search",
                "/api/experimental/web_search",
            ),
            ("/api/experimental/web_fetch", "/api/experimental/web_fetch"),
            (
                "/api/experimental/model-recommendations",
                "/api/experimental/model-recommendations",
            ),
            ("/api/ps", "/api/ps"),
            ("/api/generate", "/api/generate"),
            ("/api/chat", "/api/chat"),
            ("/api/embed", "/api/embed"),
            ("/api/embeddings", "/api/embeddings"),
            ("/v1/chat/completions", "/v1/chat/completions"),
            ("/v1/completions", "/v1/completions"),
            ("/v1/embeddings", "/v1/embeddings"),
            ("/v1/models", "/v1/models"),
            ("/v1/models/llama3", "/v1/models/:model"),
            ("/v1/responses", "/v1/responses"),
            ("/v1/audio/transcriptions", "/v1/audio/transcriptions"),
            ("/v1/messages", "/v1/messages"),
        ];
        for (path, label) in registered {
            assert_eq!(normalize_fast(path).1.label(), label, "{path}");
            assert_eq!(normalize_logged(path).1.label(), label, "{path}");
        }
        // Neighbours of the new routes are not them.
        for path in [
            "/api/experimental/web_search/",
            "/api/experimental/",
            "/api/experimental/web_searchx",
            "/v1/audio/transcriptions/x",
            "/v1/audio",
            "/api/status/",
        ] {
            assert_eq!(normalize_fast(path).1, Route::Other, "{path}");
        }
        assert_eq!(
            normalize("/api/experimental/web%5Fsearch?q=1"),
            (
                Cow::Borrowed("/api/experimental/web_search"),
                Route::WebSearch
            )
        );
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
