//! API keys as text: generation, the digest they are stored and looked up by, and the
//! credential a request presents.
//!
//! A key is 256 random bits from the operating system's CSPRNG, written `ogk_` + 64 hex
//! digits (the prefix lets secret scanners and humans recognise a leaked key). Keys are
//! high-entropy secrets, not passwords: a single SHA-256 is the right digest (a password
//! KDF would only add CPU per request, and there is nothing to brute-force), so the store
//! keeps digests only and a request costs one hash of its credential.

use sha2::{Digest as _, Sha256};

/// The text every generated key starts with.
pub(crate) const PREFIX: &str = "ogk_";

/// The SHA-256 digest of a key (what the key file stores and requests are matched by).
pub(crate) type Digest = [u8; 32];

/// A new random key, as shown once to its owner.
pub(crate) fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{PREFIX}{}", hex::encode(bytes)))
}

/// `text` with the hex digits after every `ogk_` replaced by `REDACTED`: a key sent where no
/// key belongs (a URL's query: `?api_key=ogk_...`) is not written to the logs. Borrowed when
/// there is none.
pub(crate) fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(PREFIX) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        let after = at + PREFIX.len();
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        let hex = rest.bytes().take_while(u8::is_ascii_hexdigit).count();
        if hex > 0 {
            out.push_str("REDACTED");
            rest = &rest[hex..];
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// The digest of `key`.
pub(crate) fn digest(key: &[u8]) -> Digest {
    Sha256::digest(key).into()
}

/// The credential of one request, from `Authorization: Bearer <key>` (the way ollama-python's
/// `OLLAMA_API_KEY`, ollama-js `headers` and the OpenAI SDK's `api_key` send it) or
/// `x-api-key: <key>` (the Anthropic SDK, for `/v1/messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    /// No credential header.
    None,
    /// Exactly one credential.
    Key(&'a [u8]),
    /// Something that cannot be a key: another scheme, an empty token, or several
    /// credential headers (ambiguous: which one would Ollama's next proxy believe?).
    Malformed,
}

/// The credential in `headers`. Works on bytes: a header value need not be UTF-8.
pub(crate) fn presented(headers: &http::HeaderMap) -> Presented<'_> {
    let mut auth = headers.get_all(http::header::AUTHORIZATION).iter();
    let mut api = headers.get_all(X_API_KEY).iter();
    let found = match (auth.next(), auth.next(), api.next(), api.next()) {
        (None, _, None, _) => return Presented::None,
        (Some(a), None, None, _) => bearer(a.as_bytes()),
        (None, _, Some(k), None) => Some(k.as_bytes()),
        _ => None,
    };
    match found {
        Some(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => Presented::Key(key),
        _ => Presented::Malformed,
    }
}

/// The Anthropic SDK's credential header.
pub(crate) const X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// Longer credentials are refused without hashing (a generated key is 68 bytes).
const MAX_KEY_LEN: usize = 512;

/// The token of a `Bearer` credential: the scheme in any case, then one or more spaces
/// (RFC 9110 §11.4); trailing spaces are trimmed.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    let end = rest.iter().rposition(|&b| b != b' ')?;
    Some(&rest[start..=end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    #[test]
    fn redact_replaces_the_hex_after_every_prefix() {
        assert!(matches!(
            redact("/api/tags?x=1"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            redact("a=ogk_0aF9&b=ogk_1-ogk_"),
            "a=ogk_REDACTED&b=ogk_REDACTED-ogk_"
        );
        assert_eq!(redact("ogk_ogk_12"), "ogk_ogk_REDACTED");
        assert_eq!(redact("xogk_g1"), "xogk_g1");
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn generated_keys_are_prefixed_256_bit_hex_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 4 + 64);
        assert!(a.starts_with("ogk_"));
        assert!(a[4..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn digest_is_sha256() {
        assert_eq!(
            hex::encode(digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bearer_and_x_api_key_are_read_as_bytes() {
        assert_eq!(presented(&headers(&[])), Presented::None);
        assert_eq!(
            presented(&headers(&[("authorization", b"Bearer ogk_1")])),
            Presented::Key(b"ogk_1")
        );
        assert_eq!(
            presented(&headers(&[("authorization", b"bEaReR   ogk_1  ")])),
            Presented::Key(b"ogk_1")
        );
        assert_eq!(
            presented(&headers(&[("x-api-key", b"ogk_2")])),
            Presented::Key(b"ogk_2")
        );
        // A non-UTF-8 byte is just a wrong key, not a crash or a skipped check.
        assert_eq!(
            presented(&headers(&[("authorization", b"Bearer \xff\xfe")])),
            Presented::Key(b"\xff\xfe")
        );
    }

    #[test]
    fn other_schemes_empty_tokens_and_duplicates_are_malformed() {
        for h in [
            headers(&[("authorization", b"Basic dXNlcjpwYXNz")]),
            headers(&[("authorization", b"Bearer")]),
            headers(&[("authorization", b"Bearer    ")]),
            headers(&[("authorization", b"Bearerogk_1")]),
            headers(&[
                ("authorization", b"Bearer a"),
                ("authorization", b"Bearer b"),
            ]),
            headers(&[("authorization", b"Bearer a"), ("x-api-key", b"a")]),
            headers(&[("x-api-key", b"a"), ("x-api-key", b"b")]),
            headers(&[("x-api-key", b"")]),
            headers(&[("x-api-key", &[b'k'; 513])]),
        ] {
            assert_eq!(presented(&h), Presented::Malformed, "{h:?}");
        }
    }
}
