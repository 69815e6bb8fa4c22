//! The access log: one line per finished request, as Ollama's own `[GIN]` line (byte
//! compatible, so existing Splunk searches and `scan` read it unchanged) or as JSON.
//!
//! Never logs credentials: only the method, the request target, the resolved client and
//! the measured times — no header is ever written.

use std::fmt::Write as _;

use chrono::Local;
use percent_encoding::percent_decode_str;

use crate::config::AccessLogFormat;
use crate::gin::{write_gin_line, GinFields};
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
        AccessLogFormat::Gin => gin_into(
            rec,
            rec.completed_at.with_timezone(&Local).naive_local(),
            out,
        ),
        AccessLogFormat::Json => out.push_str(&json_line(rec)),
    }
}

/// gin logs `URL.Path` (percent-decoded) plus `?RawQuery` when there is a query.
fn gin_path(raw_target: &str) -> Vec<u8> {
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

/// The gin line of `rec` stamped with `local` (gin prints the host's local time).
#[cfg(test)]
fn gin_line_at(rec: &RequestRecord, local: chrono::NaiveDateTime) -> String {
    let mut line = String::new();
    gin_into(rec, local, &mut line);
    line
}

/// Appends the gin line of `rec` stamped with `local` to `out` (no newline).
fn gin_into(rec: &RequestRecord, local: chrono::NaiveDateTime, out: &mut String) {
    let ip = rec.src.to_string();
    let path = gin_path(&rec.raw_target);
    let fields = GinFields {
        time: local,
        status: rec.status,
        latency: rec.total,
        client_ip: &ip,
        method: &rec.method_text,
        path: &path,
    };
    write_gin_line(&fields, out);
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
    let mut s = String::with_capacity(256);
    let _ = write!(s, "{v}");
    s
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

    #[test]
    fn the_json_line_names_the_identity_and_omits_it_when_none() {
        let (path, route) = crate::route::normalize("/api/tags");
        let anonymous = RequestRecord {
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
        };
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
    fn gin_path_is_decoded_and_keeps_the_raw_query() {
        assert_eq!(gin_path("/api/%73how?x=%41"), b"/api/show?x=%41".to_vec());
        assert_eq!(gin_path("/api/tags?"), b"/api/tags".to_vec());
        assert_eq!(gin_path("/a%ffb"), b"/a\xffb".to_vec());
    }
}
