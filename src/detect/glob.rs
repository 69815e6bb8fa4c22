//! The tiny glob language of rule `paths`.
//!
//! Paths are matched *after* normalisation (see [`crate::route::normalize`]), so the pattern
//! language only needs two wildcards: `*` matches any run of characters, `/` included (so
//! `/v1/models/*` also covers `/v1/models/org/name`), and `?` matches exactly one character.
//! Everything else is literal. A hand-written matcher keeps the dependency list short and the
//! semantics obvious; `[`, `]`, `{` and `}` are refused so nobody believes character classes or
//! alternations work.

use std::fmt;

/// A validated path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    pattern: Box<str>,
    /// `"*"` alone: every path, without running the matcher.
    any: bool,
    /// Without wildcards, or with one `*` at the very end: the pattern up to that star,
    /// with whether it must be the whole path (no star) or a prefix. Matched by a plain
    /// comparison (rules list such paths, and every request is matched against them).
    plain: Option<(usize, bool)>,
}

/// Why a pattern was refused (shown after the key name in a config error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GlobError {
    /// An empty pattern matches nothing and is certainly a typo.
    #[error("bad glob \"\": must not be empty")]
    Empty,
    /// Normalised paths always start with `/`, so `api/show` could never match.
    #[error("bad glob {0:?}: must start with '/' or a wildcard")]
    NotAbsolute(String),
    /// Character classes and alternations are not supported.
    #[error("bad glob {0:?}: {1:?} is not supported (only * and ? are special)")]
    Unsupported(String, char),
}

impl Glob {
    /// Validates a pattern.
    pub(crate) fn new(pattern: &str) -> Result<Glob, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        if !pattern.starts_with(['/', '*', '?']) {
            return Err(GlobError::NotAbsolute(pattern.to_owned()));
        }
        if let Some(c) = pattern.chars().find(|c| matches!(c, '[' | ']' | '{' | '}')) {
            return Err(GlobError::Unsupported(pattern.to_owned(), c));
        }
        let body = pattern.strip_suffix('*').unwrap_or(pattern);
        let plain =
            (!body.contains(['*', '?'])).then_some((body.len(), body.len() == pattern.len()));
        Ok(Glob {
            any: pattern.bytes().all(|b| b == b'*'),
            pattern: pattern.into(),
            plain,
        })
    }

    /// The pattern text as configured.
    pub(crate) fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `path` matches the whole pattern.
    ///
    /// Iterative matching with one backtrack point (the last `*`): linear for patterns with
    /// a single star, `O(pattern × path)` at worst, and it never allocates.
    pub(crate) fn matches(&self, path: &str) -> bool {
        if self.any {
            return true;
        }
        if let Some((len, whole)) = self.plain {
            let body = &self.pattern.as_bytes()[..len];
            return if whole {
                path.as_bytes() == body
            } else {
                path.as_bytes().starts_with(body)
            };
        }
        let (p, t) = (self.pattern.as_bytes(), path.as_bytes());
        let (mut pi, mut ti) = (0usize, 0usize);
        // (pattern index after the star, text index the star's run currently ends at)
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            match p.get(pi) {
                Some(b'*') => {
                    pi += 1;
                    star = Some((pi, ti));
                }
                Some(b'?') => {
                    pi += 1;
                    ti += char_len(t[ti]);
                }
                Some(&c) if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        let next = st + char_len(t[st]);
                        star = Some((sp, next));
                        pi = sp;
                        ti = next;
                    }
                    None => return false,
                },
            }
        }
        p[pi.min(p.len())..].iter().all(|&b| b == b'*')
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// Length of the UTF-8 sequence a leading byte starts (1 for stray continuation bytes, so the
/// matcher always makes progress).
fn char_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        Glob::new(pattern).unwrap().matches(path)
    }

    #[test]
    fn star_alone_matches_every_path() {
        assert!(m("*", "/"));
        assert!(m("*", "/api/show"));
        assert!(m("**", "/x/y"));
    }

    #[test]
    fn literal_pattern_matches_only_itself() {
        assert!(m("/api/show", "/api/show"));
        assert!(!m("/api/show", "/api/shows"));
        assert!(!m("/api/show", "/api/sho"));
        assert!(!m("/api/show", "/API/show"));
    }

    #[test]
    fn trailing_star_crosses_slashes_but_needs_the_prefix() {
        assert!(m("/v1/models/*", "/v1/models/llama3"));
        assert!(m("/v1/models/*", "/v1/models/org/name"));
        assert!(m("/v1/models/*", "/v1/models/"));
        assert!(!m("/v1/models/*", "/v1/models"));
    }

    #[test]
    fn inner_star_backtracks() {
        assert!(m("/api/*/x", "/api/a/b/x"));
        assert!(m("/a*b*c", "/aXbYbZc"));
        assert!(!m("/a*b*c", "/aXbYbZ"));
        assert!(m("*show", "/api/show"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character_even_multibyte() {
        assert!(m("/api/sh?w", "/api/show"));
        assert!(!m("/api/sh?w", "/api/shw"));
        assert!(m("/?", "/é"));
        assert!(!m("/?", "/éé"));
        assert!(m("/*?", "/\u{fffd}"));
    }

    #[test]
    fn invalid_patterns_are_refused_with_a_reason() {
        assert_eq!(Glob::new(""), Err(GlobError::Empty));
        assert_eq!(
            Glob::new("api/show").unwrap_err().to_string(),
            "bad glob \"api/show\": must start with '/' or a wildcard"
        );
        assert_eq!(
            Glob::new("/api/[st]how").unwrap_err().to_string(),
            "bad glob \"/api/[st]how\": '[' is not supported (only * and ? are special)"
        );
    }
}
