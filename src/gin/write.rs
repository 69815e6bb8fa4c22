//! Writing one `[GIN]` access line exactly as gin v1.10's default formatter does.

use std::time::Duration;

use chrono::{Datelike, NaiveDateTime, Timelike};

use super::duration::{gin_latency, GoDurationText};
use super::quote::go_quote;

/// What one access line says about a finished request, borrowed from the caller.
///
/// Why: the access log in `gin` format writes these, and `scan` tests rewrite parsed lines
/// through the same struct to prove the round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GinFields<'a> {
    /// When the response finished, in the zone the log is written in (gin prints local
    /// time without a zone; only whole seconds are printed).
    pub time: NaiveDateTime,
    /// The HTTP status code the client received.
    pub status: u16,
    /// The request's measured latency, before gin's truncation (applied when writing).
    pub latency: Duration,
    /// The client IP as text (gin prints `c.ClientIP()` unchanged).
    pub client_ip: &'a str,
    /// The request method as received.
    pub method: &'a str,
    /// The percent-decoded path plus `?` and the raw query when there is one, as bytes
    /// (Go strings may hold invalid UTF-8).
    pub path: &'a [u8],
}

/// Appends one access line, trailing `'\n'` included, byte-compatible with gin's
/// `"[GIN] %v |%s %3d %s| %13v | %15s |%s %-7s %s %#v\n%s"` without colours and without an
/// error message.
///
/// Why: operators keep their existing Ollama log tooling (and the Splunk rule) pointed at
/// the proxy's access log. Go pads `%13v`, `%15s` and `%-7s` by rune count, so a `µs`
/// latency gets one more byte than its width suggests.
pub fn write_gin_line(f: &GinFields<'_>, out: &mut String) {
    out.push_str("[GIN] ");
    write_gin_time(f.time, out);
    write_gin_after_time(f, out);
}

/// Appends everything of an access line after its time column (`f.time` is not read), the
/// trailing `'\n'` included: `"[GIN] "`, the time column and this make [`write_gin_line`].
pub fn write_gin_after_time(f: &GinFields<'_>, out: &mut String) {
    // One reservation instead of a capacity check growing the line piece by piece.
    out.reserve(64 + f.client_ip.len() + f.method.len() + f.path.len());
    out.push_str(" | ");
    push_right(out, 3, itoa::Buffer::new().format(f.status));
    out.push_str(" | ");
    push_right(
        out,
        13,
        GoDurationText::new(gin_latency(f.latency)).as_str(),
    );
    out.push_str(" | ");
    push_right(out, 15, f.client_ip);
    out.push_str(" | ");
    out.push_str(f.method);
    push_spaces(out, 7usize.saturating_sub(runes(f.method)));
    out.push_str("  ");
    go_quote(f.path, out);
    out.push('\n');
}

/// Appends `text` right-aligned to `width` runes (Go's `%Nv`).
fn push_right(out: &mut String, width: usize, text: &str) {
    push_spaces(out, width.saturating_sub(runes(text)));
    out.push_str(text);
}

/// Appends `count` spaces (at most 16: no column of the line is wider).
fn push_spaces(out: &mut String, count: usize) {
    const SPACES: &str = "                ";
    out.push_str(&SPACES[..count.min(SPACES.len())]);
}

/// The number of runes in `text`, as Go counts them for padding.
fn runes(text: &str) -> usize {
    if text.is_ascii() {
        text.len()
    } else {
        text.chars().count()
    }
}

/// Appends the time column of an access line, `2006/01/02 - 15:04:05`, as
/// [`write_gin_line`] writes it; years outside 0..=9999 are written the way Go's `appendInt`
/// does (sign, then at least four digits).
///
/// Why: the proxy's access log writes many lines a second with the same time column and
/// keeps the last one's text (nginx caches its log time the same way).
pub fn write_gin_time(t: NaiveDateTime, out: &mut String) {
    let year = t.year();
    if year < 0 {
        out.push('-');
    }
    let abs_year = year.unsigned_abs();
    if abs_year > 9999 {
        out.push_str(&abs_year.to_string());
    } else {
        push_digits(out, abs_year, 4);
    }
    out.push('/');
    push_digits(out, t.month(), 2);
    out.push('/');
    push_digits(out, t.day(), 2);
    out.push_str(" - ");
    push_digits(out, t.hour(), 2);
    out.push(':');
    push_digits(out, t.minute(), 2);
    out.push(':');
    push_digits(out, t.second(), 2);
}

/// Appends the low `width` decimal digits of `value`, zero-padded.
fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10u32.pow(place)) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}
