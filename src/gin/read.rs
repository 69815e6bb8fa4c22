//! Reading `[GIN]` access lines: a hand-written byte parser, fast and total (any input
//! gives a value or a [`SkipReason`], never a panic).
//!
//! Accepted around gin's own text: any prefix before `[GIN] ` (journald, syslog, localised
//! month names), ANSI colour sequences (`ESC [ ... m`, which gin puts around status and
//! method on a TTY) wherever padding may stand, any amount of padding between columns (IPs
//! longer than 15 characters push the column), and a trailing `\n`, `\r\n` or spaces.
//! The only allocation is the unquoted path, when it holds an escape.

use std::borrow::Cow;
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};

use super::duration::parse_go_duration;
use super::quote::go_unquote;
use super::write::GinFields;

const MARKER: &[u8] = b"[GIN] ";
const ESC: u8 = 0x1b;

/// One parsed access line; text fields borrow from the line.
///
/// Why: `scan` turns each into a `RequestRecord`; the borrowed texts let reports quote the
/// line's own spelling (the Splunk-compatible mode keys on raw text) without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLine<'a> {
    /// The line's timestamp (local time of the Ollama host, no zone).
    pub time: NaiveDateTime,
    /// The HTTP status code.
    pub status: u16,
    /// The latency as printed (gin truncated it to whole seconds above one minute).
    pub latency: Duration,
    /// The latency column's text, e.g. `16.52µs`.
    pub latency_text: &'a str,
    /// The client address: IPv6 read case-insensitively, IPv4-mapped IPv6 shown as IPv4.
    pub client_ip: IpAddr,
    /// The client column's text, as written.
    pub client_ip_text: &'a str,
    /// The request method (an HTTP token).
    pub method: &'a str,
    /// The path and query, Go-unquoted; escapes of bytes that are not UTF-8 become U+FFFD.
    /// Borrowed from the line unless it held an escape.
    pub path: Cow<'a, str>,
}

impl ParsedLine<'_> {
    /// The fields to write this line again with [`super::write_gin_line`].
    ///
    /// Why: proves the round trip and lets `scan` re-emit normalised lines.
    pub fn as_fields(&self) -> GinFields<'_> {
        GinFields {
            time: self.time,
            status: self.status,
            latency: self.latency,
            client_ip: self.client_ip_text,
            method: self.method,
            path: self.path.as_bytes(),
        }
    }
}

/// Why a line was not read as an access line.
///
/// Why: `scan` counts skipped lines by reason in its summary, so an operator can tell "not
/// Ollama's log at all" from "a column we do not understand".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SkipReason {
    /// No `[GIN] ` marker: another log line (model loading, `[GIN-debug]`, blank...).
    #[error("no [GIN] marker")]
    NoGinMarker,
    /// The text after the marker is not a valid `2006/01/02 - 15:04:05` time.
    #[error("bad timestamp")]
    BadTimestamp,
    /// The status column is missing or not a number up to 65535.
    #[error("bad status")]
    BadStatus,
    /// The latency column is not Go duration text.
    #[error("bad latency")]
    BadLatency,
    /// The client column is not an IP address.
    #[error("bad client ip")]
    BadClientIp,
    /// The method column is missing or not an HTTP token.
    #[error("bad method")]
    BadMethod,
    /// The path is not a well-formed Go quoted string, or text follows it.
    #[error("bad path")]
    BadPath,
    /// The text after the marker is not UTF-8 (gin escapes invalid bytes in the path, so
    /// the line is damaged or not gin's).
    #[error("not utf-8")]
    NotUtf8,
    /// A column separator `|` is missing where the format has one.
    #[error("missing column separator")]
    MissingSeparator,
}

impl SkipReason {
    /// Every reason, in a fixed order (for summary tables).
    pub const ALL: [SkipReason; 9] = [
        SkipReason::NoGinMarker,
        SkipReason::BadTimestamp,
        SkipReason::BadStatus,
        SkipReason::BadLatency,
        SkipReason::BadClientIp,
        SkipReason::BadMethod,
        SkipReason::BadPath,
        SkipReason::NotUtf8,
        SkipReason::MissingSeparator,
    ];

    /// A stable snake_case label for the scan summary and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::NoGinMarker => "no_gin_marker",
            SkipReason::BadTimestamp => "bad_timestamp",
            SkipReason::BadStatus => "bad_status",
            SkipReason::BadLatency => "bad_latency",
            SkipReason::BadClientIp => "bad_client_ip",
            SkipReason::BadMethod => "bad_method",
            SkipReason::BadPath => "bad_path",
            SkipReason::NotUtf8 => "not_utf8",
            SkipReason::MissingSeparator => "missing_separator",
        }
    }
}

/// Parses one line (with or without its line ending) of an Ollama server log.
///
/// Why: the offline `scan` reads millions of lines; this is a single pass over the bytes
/// with no regex and no allocation besides a path with escapes. Everything from the marker on must
/// be UTF-8, as everything gin writes is (it escapes invalid bytes in the path).
///
/// The line as gin writes it without a terminal (no colour codes, no escape in the path)
/// is read by a straight-line reader first ([`parse_plain`]); anything else, including
/// every line that is skipped, by the general column reader ([`parse_columns`]), which
/// gives the same result for every line the first one reads.
pub fn parse_gin_line(line: &[u8]) -> Result<ParsedLine<'_>, SkipReason> {
    let text = after_marker(line)?;
    match parse_aligned(text).or_else(|| parse_plain(text)) {
        Some(parsed) => Ok(parsed),
        None => parse_columns(text),
    }
}

/// [`parse_gin_line`] without the straight-line reader, to compare the two in tests.
#[cfg(test)]
pub(super) fn parse_gin_line_general(line: &[u8]) -> Result<ParsedLine<'_>, SkipReason> {
    parse_columns(after_marker(line)?)
}

/// The text after the `[GIN] ` marker, which must be UTF-8.
fn after_marker(line: &[u8]) -> Result<&str, SkipReason> {
    let start = find_marker(line).ok_or(SkipReason::NoGinMarker)? + MARKER.len();
    simdutf8::basic::from_utf8(&line[start..]).map_err(|_| SkipReason::NotUtf8)
}

/// The general reader: columns separated by `|`, any padding and colour codes between them.
fn parse_columns(text: &str) -> Result<ParsedLine<'_>, SkipReason> {
    let mut cur = Cursor { text, pos: 0 };
    let time = cur.timestamp().ok_or(SkipReason::BadTimestamp)?;
    cur.separator()?;
    let status = cur.status().ok_or(SkipReason::BadStatus)?;
    cur.separator()?;
    let latency_text = cur.token(true);
    let latency = parse_go_duration(latency_text.as_bytes()).ok_or(SkipReason::BadLatency)?;
    cur.separator()?;
    let client_ip_text = cur.token(true);
    let client_ip = parse_ip(client_ip_text).ok_or(SkipReason::BadClientIp)?;
    cur.separator()?;
    let method = cur.token(false);
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(SkipReason::BadMethod);
    }
    cur.skip_filler();
    let path = cur.quoted_path().ok_or(SkipReason::BadPath)?;
    Ok(ParsedLine {
        time,
        status,
        latency,
        latency_text,
        client_ip,
        client_ip_text,
        method,
        path,
    })
}

/// Gin's own layout, every column in its place (`%3d`, `%13v`, `%15s`, `%-7s`: a status of
/// 3 digits, a latency up to 13 characters, an address up to 15, a method up to 7),
/// without colour codes: the columns are read at fixed offsets, without walking the
/// padding. `None` for anything else ([`parse_plain`] then reads it).
///
/// Each column's text is accepted only when its reader (duration, address, `tchar`s)
/// takes every byte of it, so it holds no byte that would end a token early: the
/// general reader would find the same tokens.
fn parse_aligned(text: &str) -> Option<ParsedLine<'_>> {
    const BAR: &[u8; 3] = b" | ";
    let b = text.as_bytes();
    if b.len() < 47 || b[21..24] != *BAR || b[27..30] != *BAR {
        return None;
    }
    // Gin pads by characters: a latency in `µs` takes one byte more than its width.
    let end = if b[43..46] == *BAR {
        43
    } else if b[44..47] == *BAR {
        44
    } else {
        return None;
    };
    let (ip, method) = (end + 3, end + 21);
    // `%-7s %s %#v`: the method, a space, an empty colour code, a space, the path.
    if b.len() < method + 11
        || b[ip + 15..ip + 18] != *BAR
        || b[method + 7..method + 10] != *b"  \""
    {
        return None;
    }
    let time = timestamp(&b[..21])?;
    let mut status = 0u16;
    for &c in &b[24..27] {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        status = status * 10 + u16::from(d);
    }
    let latency_text = text.get(30 + leading_spaces(&b[30..end])?..end)?;
    let latency = parse_go_duration(latency_text.as_bytes())?;
    let client_ip_text = text.get(ip + leading_spaces(&b[ip..ip + 15])?..ip + 15)?;
    let client_ip = parse_ip(client_ip_text)?;
    let field = &b[method..method + 7];
    let method_len = field
        .iter()
        .position(|&c| !TCHAR[usize::from(c)])
        .unwrap_or(7);
    if method_len == 0 || field[method_len..].iter().any(|&c| c != b' ') {
        return None;
    }
    let method_text = text.get(method..method + method_len)?;
    let path = plain_path(text, method + 10)?;
    Some(ParsedLine {
        time,
        status,
        latency,
        latency_text,
        client_ip,
        client_ip_text,
        method: method_text,
        path,
    })
}

/// The spaces before a right-aligned column's text; `None` when the column is all spaces.
fn leading_spaces(field: &[u8]) -> Option<usize> {
    field.iter().position(|&c| c != b' ')
}

/// The path whose text starts at `body` (after its opening quote), when it has no escape
/// and only blanks and a line ending follow its closing quote.
fn plain_path(text: &str, body: usize) -> Option<Cow<'_, str>> {
    let b = text.as_bytes();
    // A byte loop and not `memchr3`: a path is a few dozen bytes, where the vector
    // search's set-up cost more than the loop (about 120 instructions a line).
    let close = body
        + b.get(body..)?
            .iter()
            .position(|&c| PATH_STOP[usize::from(c)])?;
    if b[close] != b'"' {
        return None;
    }
    let end = close + 1;
    let end = end + blank_len(&b[end..]);
    if !b[end..].iter().all(|&c| c == b'\r' || c == b'\n') {
        return None;
    }
    Some(Cow::Borrowed(text.get(body..close)?))
}

/// The straight-line reader for the text after the marker: gin's columns with spaces or
/// tabs as padding, no colour code, a path without escapes. `None` for anything else
/// (a colour code, an escape, any error), which [`parse_columns`] then reads.
///
/// Why: about half of `scan`'s per-line parsing cost was the general reader's per-byte
/// bookkeeping (filler, token and separator steps); this reads the same columns in one
/// pass with byte tables. It accepts a line only where the general reader takes the same
/// steps (padding is blanks, every token ends where the general one ends), so it gives
/// the same result; the tests compare the two on mutated lines.
fn parse_plain(text: &str) -> Option<ParsedLine<'_>> {
    let b = text.as_bytes();
    let time = timestamp(b.get(..21)?)?;
    let mut i = column_start(b, 21)?;
    let digits = i;
    let mut status = 0u32;
    while let Some(&c) = b.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if i - digits == 5 {
            return None;
        }
        status = status * 10 + u32::from(d);
        i += 1;
    }
    if i == digits || !matches!(b.get(i), Some(b' ' | b'\t' | b'|')) {
        return None;
    }
    let status = u16::try_from(status).ok()?;
    i = column_start(b, i)?;
    let from = i;
    i += token_len(&b[i..]);
    let latency_text = text.get(from..i)?;
    let latency = parse_go_duration(latency_text.as_bytes())?;
    i = column_start(b, i)?;
    let from = i;
    i += token_len(&b[i..]);
    let client_ip_text = text.get(from..i)?;
    let client_ip = parse_ip(client_ip_text)?;
    i = column_start(b, i)?;
    let from = i;
    while b.get(i).is_some_and(|&c| TCHAR[usize::from(c)]) {
        i += 1;
    }
    if i == from || !matches!(b.get(i), Some(b' ' | b'\t' | b'"')) {
        return None;
    }
    let method = text.get(from..i)?;
    i += blank_len(&b[i..]);
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let path = plain_path(text, i + 1)?;
    Some(ParsedLine {
        time,
        status,
        latency,
        latency_text,
        client_ip,
        client_ip_text,
        method,
        path,
    })
}

/// A byte table: `true` for the bytes listed.
const fn byte_set(bytes: &[u8]) -> [bool; 256] {
    let mut set = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        set[bytes[i] as usize] = true;
        i += 1;
    }
    set
}

/// Where a path without escapes ends, or is found to have one ([`plain_path`]).
const PATH_STOP: [bool; 256] = byte_set(b"\"\\\n");

/// Where the general reader's `token(true)` stops.
const TOKEN_END: [bool; 256] = byte_set(b" \t\x1b\"|");

/// RFC 9110 `tchar`: what Go's net/http accepts in a method.
const TCHAR: [bool; 256] =
    byte_set(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");

/// Length of the token at the start of `b` (up to a [`TOKEN_END`] byte or the end).
fn token_len(b: &[u8]) -> usize {
    b.iter()
        .position(|&c| TOKEN_END[usize::from(c)])
        .unwrap_or(b.len())
}

/// Length of the spaces and tabs at the start of `b`.
fn blank_len(b: &[u8]) -> usize {
    b.iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(b.len())
}

/// After a token ending at `i`: blanks, `|`, blanks; where the next column starts. `None`
/// when anything else stands there, or a colour code follows (the general reader's case).
fn column_start(b: &[u8], mut i: usize) -> Option<usize> {
    i += blank_len(b.get(i..)?);
    if b.get(i) != Some(&b'|') {
        return None;
    }
    i += 1;
    i += blank_len(&b[i..]);
    (b.get(i) != Some(&ESC)).then_some(i)
}

thread_local! {
    /// The last timestamp text [`timestamp`] read on this thread (as [`TimeText`]), and what
    /// it gave.
    static LAST_TIME: Cell<(TimeText, Option<NaiveDateTime>)> =
        const { Cell::new(((0, 0), None)) };
}

/// A 21-byte timestamp text as two machine words: bytes 0..16 and 13..21 (they overlap),
/// so two texts are equal exactly when their words are.
type TimeText = (u128, u64);

/// `YYYY/MM/DD - HH:MM:SS` in `t`, exactly 21 bytes.
///
/// Why the cache: a log's lines come in time order, many to a second (the row-heavy
/// benchmark corpus has 23 a second on average), and reading the 14 digits and the
/// calendar date cost about 170 instructions a `scan` line; comparing the text with the
/// last one read, as two words, costs a few. (All-zero words, the empty cache's, are the
/// text of 21 zero bytes, which is no timestamp: its `None` is right too.)
fn timestamp(t: &[u8]) -> Option<NaiveDateTime> {
    let t: &[u8; 21] = t.try_into().ok()?;
    let mut head = [0u8; 16];
    head.copy_from_slice(&t[..16]);
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&t[13..]);
    let text = (u128::from_ne_bytes(head), u64::from_ne_bytes(tail));
    LAST_TIME.with(|last| {
        let (last_text, last_time) = last.get();
        if last_text == text {
            return last_time;
        }
        let time = read_timestamp(t);
        last.set((text, time));
        time
    })
}

/// [`timestamp`] without the cache.
fn read_timestamp(t: &[u8; 21]) -> Option<NaiveDateTime> {
    /// Where the 14 digits stand.
    const DIGITS: [usize; 14] = [0, 1, 2, 3, 5, 6, 8, 9, 13, 14, 16, 17, 19, 20];
    if t[4] != b'/' || t[7] != b'/' || t[10..13] != *b" - " || t[15] != b':' || t[18] != b':' {
        return None;
    }
    let mut n = [0u32; 14];
    for (value, &at) in n.iter_mut().zip(&DIGITS) {
        let d = t[at].wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        *value = u32::from(d);
    }
    let year = n[0] * 1000 + n[1] * 100 + n[2] * 10 + n[3];
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        n[4] * 10 + n[5],
        n[6] * 10 + n[7],
    )?;
    date.and_hms_opt(n[8] * 10 + n[9], n[10] * 10 + n[11], n[12] * 10 + n[13])
}

fn find_marker(line: &[u8]) -> Option<usize> {
    if line.starts_with(MARKER) {
        return Some(0);
    }
    let mut from = 0;
    while let Some(off) = memchr::memchr(b'[', line.get(from..)?) {
        let at = from + off;
        if line.get(at..at + MARKER.len()) == Some(MARKER) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// An IP address, IPv4-mapped IPv6 shown as IPv4. Dotted quads (most lines) take a fast
/// path; everything else goes to the standard parser, which reads hex in any case and,
/// like Go's `net.ParseIP`, rejects zones and leading zeros.
fn parse_ip(text: &str) -> Option<IpAddr> {
    if let Some(v4) = parse_dotted_quad(text.as_bytes()) {
        return Some(IpAddr::V4(v4));
    }
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// Four dot-separated decimal octets of one to three digits, no leading zeros, each up to
/// 255, nothing else; one pass over the bytes.
fn parse_dotted_quad(text: &[u8]) -> Option<Ipv4Addr> {
    if !(7..=15).contains(&text.len()) {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut n = 0;
    let mut value = 0u16;
    let mut digits = 0u8;
    for &b in text {
        if b == b'.' {
            if digits == 0 || n == 3 {
                return None;
            }
            octets[n] = u8::try_from(value).ok()?;
            n += 1;
            (value, digits) = (0, 0);
            continue;
        }
        let d = b.wrapping_sub(b'0');
        // Not a digit, a fourth digit, or a digit after a leading zero.
        if d > 9 || digits == 3 || (digits == 1 && value == 0) {
            return None;
        }
        value = value * 10 + u16::from(d);
        digits += 1;
    }
    if digits == 0 || n != 3 {
        return None;
    }
    octets[3] = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(octets))
}

/// RFC 9110 `tchar`: what Go's net/http accepts in a method.
fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    /// Skips spaces, tabs and complete ANSI CSI sequences (`ESC [ params final`).
    fn skip_filler(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' => self.pos += 1,
                ESC => match csi_len(&self.bytes()[self.pos..]) {
                    Some(len) => self.pos += len,
                    None => return,
                },
                _ => return,
            }
        }
    }

    fn separator(&mut self) -> Result<(), SkipReason> {
        self.skip_filler();
        if self.peek() != Some(b'|') {
            return Err(SkipReason::MissingSeparator);
        }
        self.pos += 1;
        self.skip_filler();
        Ok(())
    }

    /// The run of text up to the next space, tab, `ESC` or `"` (and `|` when `stop_at_bar`).
    /// Those are ASCII, so the run ends on a character boundary.
    fn token(&mut self, stop_at_bar: bool) -> &'a str {
        let start = self.pos;
        let rest = &self.bytes()[start..];
        let len = rest
            .iter()
            .position(|&b| matches!(b, b' ' | b'\t' | ESC | b'"') || (stop_at_bar && b == b'|'))
            .unwrap_or(rest.len());
        self.pos += len;
        self.text.get(start..start + len).unwrap_or("")
    }

    fn status(&mut self) -> Option<u16> {
        let digits = self.token(true).as_bytes();
        if digits.is_empty() || digits.len() > 5 {
            return None;
        }
        let value = digits.iter().try_fold(0u32, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
        })?;
        u16::try_from(value).ok()
    }

    /// `YYYY/MM/DD - HH:MM:SS`, exactly 21 bytes.
    fn timestamp(&mut self) -> Option<NaiveDateTime> {
        let time = timestamp(self.bytes().get(self.pos..self.pos + 21)?)?;
        self.pos += 21;
        Some(time)
    }

    /// The quoted path, unquoted; only filler and a line ending may follow it.
    fn quoted_path(&mut self) -> Option<Cow<'a, str>> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let body_start = self.pos + 1;
        let mut i = body_start;
        let close = loop {
            match self.bytes().get(i)? {
                b'\n' => return None,
                b'"' => break i,
                b'\\' => i += 2,
                _ => i += 1,
            }
        };
        self.pos = close + 1;
        self.skip_filler();
        if !self.bytes()[self.pos..]
            .iter()
            .all(|&b| matches!(b, b'\r' | b'\n'))
        {
            return None;
        }
        go_unquote(self.text.get(body_start..close)?)
    }
}

/// Length of a complete CSI sequence at the start of `bytes`, `None` if there is none.
fn csi_len(bytes: &[u8]) -> Option<usize> {
    if bytes.get(1) != Some(&b'[') {
        return None;
    }
    let body = bytes.get(2..)?;
    let end = body.iter().position(|&b| !(0x20..=0x3f).contains(&b))?;
    (0x40..=0x7e).contains(&body[end]).then_some(end + 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached reader gives what the uncached one gives, whatever came before: the same
    /// text again, another second, a text that is no timestamp, the empty cache's text.
    #[test]
    fn a_cached_timestamp_is_the_one_the_text_gives() {
        let texts: [&[u8]; 9] = [
            b"2025/10/02 - 14:47:30",
            b"2025/10/02 - 14:47:30",
            b"2025/10/02 - 14:47:31",
            b"2025/02/30 - 14:47:31",
            b"2025/02/30 - 14:47:31",
            &[0; 21],
            b"2025/10/02 - 14:47:31",
            b"2025/10/02 - 14:47:3",
            b"2024/02/29 - 23:59:59",
        ];
        let expected = [
            Some((2025, 10, 2, 14, 47, 30)),
            Some((2025, 10, 2, 14, 47, 30)),
            Some((2025, 10, 2, 14, 47, 31)),
            None,
            None,
            None,
            Some((2025, 10, 2, 14, 47, 31)),
            None,
            Some((2024, 2, 29, 23, 59, 59)),
        ];
        for (text, want) in texts.iter().zip(expected) {
            let want = want.map(|(y, mo, d, h, mi, s)| {
                NaiveDate::from_ymd_opt(y, mo, d)
                    .and_then(|date| date.and_hms_opt(h, mi, s))
                    .unwrap()
            });
            assert_eq!(timestamp(text), want, "{}", String::from_utf8_lossy(text));
        }
    }

    /// The dotted-quad reader agrees with the standard library's (which, like Go's, refuses
    /// leading zeros) on every string over a small alphabet, and on real addresses.
    #[test]
    fn dotted_quads_are_read_as_the_standard_library_reads_them() {
        const ALPHABET: &[u8] = b"0125.9x";
        let mut text = Vec::new();
        for len in 0..=7u32 {
            for mut n in 0..(ALPHABET.len() as u64).pow(len) {
                text.clear();
                for _ in 0..len {
                    text.push(ALPHABET[(n % ALPHABET.len() as u64) as usize]);
                    n /= ALPHABET.len() as u64;
                }
                let std = std::str::from_utf8(&text).unwrap().parse::<Ipv4Addr>().ok();
                assert_eq!(
                    parse_dotted_quad(&text),
                    std,
                    "{:?}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
        for ip in [
            "255.255.255.255",
            "256.1.1.1",
            "10.0.1.100",
            "1.2.3.4.",
            "1.2.3.04",
            "1.2.3.1000",
            "0.0.0.0",
            "100.200.250.255",
            "192.168.100.200",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.00",
            "1..2.3",
            ".1.2.3.4",
            "1.2.3.4 ",
            "999.1.1.1",
            "1.2.3.256",
            "1.2.3.4x",
            "255.255.255.2555",
        ] {
            assert_eq!(parse_dotted_quad(ip.as_bytes()), ip.parse().ok(), "{ip}");
        }
    }
}
