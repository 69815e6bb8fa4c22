//! The access log: one line per finished request, as Ollama's own `[GIN]` line (byte
//! compatible, so existing Splunk searches and `scan` read it unchanged) or as JSON.
//!
//! Never logs credentials: only the method, the request target, the resolved client and
//! the measured times — no header is ever written.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

use std::cell::RefCell;

use chrono::{Local, NaiveDateTime};
use percent_encoding::percent_decode_str;

use crate::config::AccessLogFormat;
use crate::gin::{write_gin_after_time, write_gin_time, GinFields};
use crate::record::RequestRecord;

/// Formats `rec` as one access-log line (without the newline).
#[cfg(test)]
pub(crate) fn format_line(format: AccessLogFormat, rec: &RequestRecord) -> String {
    let mut line = String::new();
    format_into(format, rec, &mut line);
    line
}

/// Appends `rec` as one access-log line (without the newline) to `out`.
pub(crate) fn format_into(format: AccessLogFormat, rec: &RequestRecord, out: &mut String) {
    match format {
        AccessLogFormat::Gin => gin_into_stamped(rec, out),
        AccessLogFormat::Json => out.push_str(&json_line(rec)),
    }
}

/// gin logs `URL.Path` (percent-decoded) plus `?RawQuery` when there is one. A path
/// without `%` is its own decoding: then the line borrows the target (all of it, or the path
/// alone when the query is empty) instead of building a copy.
fn gin_path(raw_target: &str) -> Cow<'_, [u8]> {
    let (path, query) = match raw_target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw_target, None),
    };
    let query = query.filter(|q| !q.is_empty());
    if !path.contains('%') {
        return Cow::Borrowed(match query {
            Some(_) => raw_target.as_bytes(),
            None => path.as_bytes(),
        });
    }
    let mut out: Vec<u8> = percent_decode_str(path).collect();
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    Cow::Owned(out)
}

/// An IP address as its `Display` text, on the stack. IPv4 (nearly every line) is written
/// digit by digit: through the formatter it cost more than the rest of the line.
struct IpText {
    buf: [u8; IpText::MAX],
    len: usize,
}

impl IpText {
    /// The longest text an address has: eight groups of four hex digits and seven colons.
    const MAX: usize = 39;

    fn new(ip: IpAddr) -> IpText {
        let mut text = IpText {
            buf: [0; IpText::MAX],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                let _ = write!(text, "{v6}");
            }
        }
        text
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The gin line of `rec` stamped with `local` (gin prints the host's local time).
#[cfg(test)]
fn gin_line_at(rec: &RequestRecord, local: chrono::NaiveDateTime) -> String {
    let mut line = String::new();
    gin_into(rec, local, &mut line);
    line
}

/// Appends the gin line of `rec` stamped with `local` to `out` (no newline).
#[cfg(test)]
fn gin_into(rec: &RequestRecord, local: chrono::NaiveDateTime, out: &mut String) {
    out.push_str("[GIN] ");
    write_gin_time(local, out);
    gin_after_time(rec, local, out);
}

/// The time column of the last line a thread wrote: gin prints whole seconds, so the lines
/// of one second share it, and the conversion to local time and the digits are done once a
/// second instead of once a line.
struct Stamp {
    /// The UTC second the text is for.
    second: i64,
    /// That second in local time.
    local: NaiveDateTime,
    text: String,
}

thread_local! {
    static STAMP: RefCell<Option<Stamp>> = const { RefCell::new(None) };
}

/// Appends the gin line of `rec` (no newline), stamped with `rec.completed_at` in local
/// time. The same UTC second always has the same local text (a zone changes its offset on
/// a second's boundary), so a cached column is the one that would be computed.
fn gin_into_stamped(rec: &RequestRecord, out: &mut String) {
    let second = rec.completed_at.timestamp();
    out.push_str("[GIN] ");
    let local = STAMP.with(|cell| {
        let mut cached = cell.borrow_mut();
        let stamp = match &mut *cached {
            Some(stamp) if stamp.second == second => stamp,
            slot => {
                let local = rec.completed_at.with_timezone(&Local).naive_local();
                let mut text = String::with_capacity(24);
                write_gin_time(local, &mut text);
                slot.insert(Stamp {
                    second,
                    local,
                    text,
                })
            }
        };
        out.push_str(&stamp.text);
        stamp.local
    });
    gin_after_time(rec, local, out);
}

/// Appends the columns after the time of `rec`'s gin line (no newline).
fn gin_after_time(rec: &RequestRecord, local: NaiveDateTime, out: &mut String) {
    let ip = IpText::new(rec.src);
    let path = gin_path(&rec.raw_target);
    let fields = GinFields {
        time: local,
        status: rec.status,
        latency: rec.total,
        client_ip: ip.as_str(),
        method: &rec.method_text,
        path: &path,
    };
    write_gin_after_time(&fields, out);
    if out.ends_with('\n') {
        out.pop();
    }
}

fn json_line(rec: &RequestRecord) -> String {
    let mut v = serde_json::json!({
        "time": crate::time::rfc3339_ms(&rec.completed_at),
        "src": rec.src.to_string(),
        "peer": rec.peer.to_string(),
        "method": rec.method_text,
        "uri": rec.raw_target,
        "path": rec.path,
        "route": rec.route.label(),
        "status": rec.status,
        "duration_seconds": rec.total.as_secs_f64(),
        "outcome": rec.outcome.label(),
        "bytes_in": rec.bytes_in,
        "bytes_out": rec.bytes_out,
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(t) = rec.ttfb {
            obj.insert("ttfb_seconds".into(), t.as_secs_f64().into());
        }
        // The API key's name, never the key itself; absent for anonymous requests.
        if let Some(identity) = &rec.identity {
            obj.insert("identity".into(), identity.as_ref().into());
        }
    }
    crate::text::json_line(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gin::parse_gin_line;
    use crate::record::{Method, Outcome};
    use std::borrow::Cow;

    /// The proxy's gin line for the request an Ollama line describes is that very line.
    #[test]
    fn gin_lines_are_byte_identical_to_ollamas_for_the_sample_lines() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/gin-synthetic.log");
        let text = std::fs::read_to_string(path).expect("tests/data/gin-synthetic.log");
        let mut checked = 0;
        for line in text.lines() {
            let p = parse_gin_line(line.as_bytes()).unwrap();
            // We show IPv4-mapped IPv6 as IPv4 and IPv6 in lowercase (Go's net does too;
            // other spellings only come from client-supplied X-Forwarded-For text).
            if p.client_ip.to_string() != p.client_ip_text {
                continue;
            }
            let (norm, route) = crate::route::normalize(&p.path);
            let rec = RequestRecord {
                src: p.client_ip,
                peer: p.client_ip,
                method: Method::parse(p.method),
                method_text: Cow::Owned(p.method.to_owned()),
                path: norm,
                raw_target: Cow::Owned(p.path.to_string()),
                route,
                status: p.status,
                ttfb: None,
                total: p.latency,
                completed_at: chrono::Utc::now(),
                outcome: Outcome::Complete,
                bytes_in: 0,
                bytes_out: 0,
                in_flight_reported: 0,
                identity: None,
            };
            assert_eq!(gin_line_at(&rec, p.time), line);
            checked += 1;
        }
        assert_eq!(
            checked, 11,
            "13 sample lines, 2 with non-canonical IP spellings"
        );
    }

    /// An anonymous `GET /api/tags` from 192.0.2.1 refused 401 after 1 ms, completed now.
    fn tags_request() -> RequestRecord {
        let (path, route) = crate::route::normalize("/api/tags");
        RequestRecord {
            src: "192.0.2.1".parse().unwrap(),
            peer: "192.0.2.1".parse().unwrap(),
            method: Method::Get,
            method_text: Cow::Borrowed("GET"),
            path,
            raw_target: Cow::Borrowed("/api/tags"),
            route,
            status: 401,
            ttfb: None,
            total: std::time::Duration::from_millis(1),
            completed_at: chrono::Utc::now(),
            outcome: Outcome::Unauthorized,
            bytes_in: 0,
            bytes_out: 0,
            in_flight_reported: 0,
            identity: None,
        }
    }

    /// The production path keeps the last second's time column; every line is still the line
    /// computed from its own time, whichever order the seconds come in.
    #[test]
    fn a_cached_time_column_is_the_column_of_the_line_s_own_second() {
        use chrono::{TimeZone, Utc};
        let base = RequestRecord {
            status: 200,
            total: std::time::Duration::from_micros(1234),
            outcome: Outcome::Complete,
            ..tags_request()
        };
        let t0 = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let ms = chrono::Duration::milliseconds;
        // Same second twice, the next second (a new day and year), back to the first.
        let times = [t0, t0 + ms(999), t0 + ms(1000), t0 + ms(1500), t0 + ms(10)];
        let mut seen = Vec::new();
        for at in times {
            let rec = RequestRecord {
                completed_at: at,
                ..base.clone()
            };
            let expected = gin_line_at(&rec, at.with_timezone(&Local).naive_local());
            let got = format_line(AccessLogFormat::Gin, &rec);
            assert_eq!(got, expected);
            seen.push(got);
        }
        assert_eq!(seen[0], seen[1]);
        assert_eq!(seen[0], seen[4]);
        assert_ne!(seen[1], seen[2]);
        assert_eq!(seen[2], seen[3]);
        if Local
            .offset_from_utc_datetime(&t0.naive_utc())
            .local_minus_utc()
            == 0
        {
            assert_eq!(
                seen[2],
                "[GIN] 2027/01/01 - 00:00:00 | 200 |       1.234ms |       192.0.2.1 | GET      \"/api/tags\""
            );
        }
    }

    #[test]
    fn the_json_line_names_the_identity_and_omits_it_when_none() {
        let anonymous = tags_request();
        let keyed = RequestRecord {
            status: 200,
            outcome: Outcome::Complete,
            identity: Some("ci-runner".into()),
            ..anonymous.clone()
        };
        let parse = |rec: &RequestRecord| -> serde_json::Value {
            serde_json::from_str(&format_line(AccessLogFormat::Json, rec)).unwrap()
        };
        let a = parse(&anonymous);
        assert_eq!(
            (a.get("identity"), &a["outcome"]),
            (None, &"unauthorized".into())
        );
        assert_eq!(parse(&keyed)["identity"], "ci-runner");
        // The gin format is Ollama's line: no identity in it.
        let gin = format_line(AccessLogFormat::Gin, &keyed);
        assert!(!gin.contains("ci-runner"), "{gin}");
    }

    #[test]
    fn the_json_line_escapes_marks_that_reorder_text() {
        let rec = RequestRecord {
            raw_target: Cow::Borrowed("/api/\u{202e}wohs"),
            ..tags_request()
        };
        let line = format_line(AccessLogFormat::Json, &rec);
        assert!(line.contains(r#""uri":"/api/\u202ewohs""#), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["uri"], "/api/\u{202e}wohs");
    }

    #[test]
    fn gin_path_is_decoded_and_keeps_the_raw_query() {
        assert_eq!(&*gin_path("/api/%73how?x=%41"), b"/api/show?x=%41");
        assert_eq!(&*gin_path("/api/tags?"), b"/api/tags");
        assert_eq!(&*gin_path("/a%ffb"), b"/a\xffb");
        assert_eq!(&*gin_path("/api/%73how?"), b"/api/show");
    }

    #[test]
    fn a_path_without_percent_is_borrowed_with_or_without_its_query() {
        for (target, want) in [
            ("/api/tags", &b"/api/tags"[..]),
            ("/api/tags?x=1&y", b"/api/tags?x=1&y"),
            ("/api/tags?", b"/api/tags"),
            ("/?%41", b"/?%41"),
        ] {
            let got = gin_path(target);
            assert!(matches!(got, Cow::Borrowed(_)), "{target}");
            assert_eq!(&*got, want, "{target}");
        }
        assert!(matches!(gin_path("/%41"), Cow::Owned(_)));
    }

    #[test]
    fn ip_text_is_the_display_text_at_the_edges() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.7",
            "1.20.199.9",
            "::",
            "::1",
            "::ffff:1.2.3.4",
            "fe80::1ff:fe23:4567:890a",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
    }

    /// What the path column was before borrowing: always decoded into a copy.
    fn gin_path_reference(raw_target: &str) -> Vec<u8> {
        let (path, query) = match raw_target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (raw_target, None),
        };
        let mut out: Vec<u8> = percent_decode_str(path).collect();
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            out.push(b'?');
            out.extend_from_slice(q.as_bytes());
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn ip_text_is_the_display_text(v4 in proptest::prelude::any::<u32>(), v6 in proptest::prelude::any::<u128>()) {
            for ip in [IpAddr::from(std::net::Ipv4Addr::from(v4)), IpAddr::from(std::net::Ipv6Addr::from(v6))] {
                let text = IpText::new(ip);
                proptest::prop_assert_eq!(text.as_str(), ip.to_string());
            }
        }

        #[test]
        fn gin_path_is_the_decoded_copy(target in "[/a%4?1f=&]{0,12}") {
            proptest::prop_assert_eq!(&*gin_path(&target), &gin_path_reference(&target)[..]);
        }
    }
}
