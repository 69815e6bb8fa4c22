//! Reading `[GIN]` access lines: a hand-written byte parser, fast and total (any input
//! gives a value or a [`SkipReason`], never a panic).
//!
//! Accepted around gin's own text: any prefix before `[GIN] ` (journald, syslog, localised
//! month names), ANSI colour sequences (`ESC [ ... m`, which gin puts around status and
//! method on a TTY) wherever padding may stand, any amount of padding between columns (IPs
//! longer than 15 characters push the column), and a trailing `\n`, `\r\n` or spaces.
//! The only allocation is the unquoted path, when it holds an escape.

use std::borrow::Cow;
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
pub fn parse_gin_line(line: &[u8]) -> Result<ParsedLine<'_>, SkipReason> {
    let start = find_marker(line).ok_or(SkipReason::NoGinMarker)? + MARKER.len();
    let text = std::str::from_utf8(&line[start..]).map_err(|_| SkipReason::NotUtf8)?;
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

fn find_marker(line: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(off) = line.get(from..)?.iter().position(|&b| b == b'[') {
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
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if text.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut value = 0u16;
        while let Some(&b) = text.get(i) {
            if !b.is_ascii_digit() {
                break;
            }
            if i - start == 3 {
                return None;
            }
            value = value * 10 + u16::from(b - b'0');
            i += 1;
        }
        let len = i - start;
        if len == 0 || (len > 1 && text[start] == b'0') {
            return None;
        }
        *octet = u8::try_from(value).ok()?;
    }
    (i == text.len()).then_some(Ipv4Addr::from(octets))
}

/// RFC 9110 `tchar`: what Go's net/http accepts in a method.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
        let t = self.bytes().get(self.pos..self.pos + 21)?;
        let fixed = [
            (4, b'/'),
            (7, b'/'),
            (10, b' '),
            (11, b'-'),
            (12, b' '),
            (15, b':'),
            (18, b':'),
        ];
        if fixed.iter().any(|&(i, c)| t[i] != c) {
            return None;
        }
        let num = |from: usize, len: usize| -> Option<u32> {
            t[from..from + len].iter().try_fold(0u32, |acc, &b| {
                b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
            })
        };
        let year = i32::try_from(num(0, 4)?).ok()?;
        let date = NaiveDate::from_ymd_opt(year, num(5, 2)?, num(8, 2)?)?;
        let time = date.and_hms_opt(num(13, 2)?, num(16, 2)?, num(19, 2)?)?;
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
        ] {
            assert_eq!(parse_dotted_quad(ip.as_bytes()), ip.parse().ok(), "{ip}");
        }
    }
}
