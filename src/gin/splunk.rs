//! The seed rule's Splunk field extraction, reproduced exactly for `scan --splunk-compat`.
//!
//! The ESCU search runs `rex` with the regex in [`SPL_PATTERN`] over each raw event. We run
//! the very same pattern with the `regex` crate: like PCRE it reports the leftmost-first
//! match and the captures a backtracking engine would give. `(?-u)` makes `\s`, `\d` and
//! `\w` ASCII-only, as PCRE's are without UCP, and matching runs on bytes so `[^"]` may
//! cross any character. The consequences are the search's known defects, kept on purpose:
//! `1m5s`, `12.5ms`, `850ns`, `16.52µs` never match, uppercase IPv6 never matches, lines
//! with colour codes never match, and `0s` matches with response time `0`.

use std::sync::LazyLock;

use regex::bytes::Regex;

/// The SPL `rex` pattern of ESCU rule c9fd1a54-0eab-4470-8970-d5fcc3c740fb, verbatim.
pub const SPL_PATTERN: &str = r#"\|\s+(?<status_code>\d+)\s+\|\s+(?<response_time>[\d\.]+)s\s+\|\s+(?<src_ip>[\:\da-f\.]+)\s+\|\s+(?<http_method>\w+)\s+\"(?<uri_path>[^\"]+)\""#;

/// Compiled once. `None` only if the pattern failed to compile, which a unit test rules
/// out; extraction then matches nothing rather than panicking on the scan path.
static SPL_REGEX: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(&format!("(?-u){SPL_PATTERN}")).ok());

/// The five fields the SPL `rex` extracts, as raw text slices of the line.
///
/// Why: `--splunk-compat` groups by the raw text (`src` and `uri_path` are not normalised in
/// the SPL), so the exact spelling matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplunkFields<'a> {
    /// `status_code`: the digits after the first matching `|`.
    pub status_code: &'a str,
    /// `response_time`: digits and dots before an `s` (`57.204518733`, `0`, even `1.2.3`).
    pub response_time: &'a str,
    /// `src_ip`: lowercase hex, digits, `:` and `.` only.
    pub src_ip: &'a str,
    /// `http_method`: ASCII word characters.
    pub http_method: &'a str,
    /// `uri_path`: the raw text between the quotes, escapes not undone.
    pub uri_path: &'a str,
}

/// Runs the SPL extraction on one raw event (the whole line, any prefix included).
///
/// Why: parity with the SOC's Splunk search must be exact, defects included; `None` is an
/// event where `rex` extracts nothing, so the search drops it.
pub fn splunk_extract(line: &str) -> Option<SplunkFields<'_>> {
    let regex = SPL_REGEX.as_ref()?;
    let caps = regex.captures(line.as_bytes())?;
    // Every group is delimited by ASCII bytes, so its bounds are char boundaries.
    let field = |name: &str| caps.name(name).and_then(|m| line.get(m.range()));
    Some(SplunkFields {
        status_code: field("status_code")?,
        response_time: field("response_time")?,
        src_ip: field("src_ip")?,
        http_method: field("http_method")?,
        uri_path: field("uri_path")?,
    })
}

/// Splunk's numeric view of `response_time`, for `response_time > 55`.
///
/// Why: the field is text matched by `[\d\.]+`, so it can be `1.2.3` or `.`; such values are
/// not numbers (`None`) and the comparison is false. Accepted: digits with at most one
/// `.` and at least one digit (`55`, `57.2`, `55.`, `.5`).
pub fn splunk_response_time(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    let dots = bytes.iter().filter(|&&b| b == b'.').count();
    if digits == 0 || dots > 1 || digits + dots != bytes.len() {
        return None;
    }
    text.parse::<f64>().ok()
}
