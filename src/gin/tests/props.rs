//! Property tests: the parser is total, and what we write we read back.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use proptest::prelude::*;

use crate::gin::duration::parse_any_duration;
use crate::gin::read::parse_gin_line_general;
use crate::gin::{
    format_go_duration, gin_latency, parse_gin_line, parse_go_duration, splunk_extract,
    write_gin_line, GinFields,
};

fn any_time() -> impl Strategy<Value = NaiveDateTime> {
    let days = NaiveDate::from_ymd_opt(0, 1, 1).unwrap().num_days_from_ce()
        ..=NaiveDate::from_ymd_opt(9999, 12, 31)
            .unwrap()
            .num_days_from_ce();
    (days, 0u32..86_400).prop_map(|(day, secs)| {
        NaiveDate::from_num_days_from_ce_opt(day)
            .and_then(|d| d.and_hms_opt(secs / 3600, secs / 60 % 60, secs % 60))
            .unwrap()
    })
}

/// Go durations are non-negative `int64` nanoseconds here.
fn any_latency() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..=i64::MAX as u64).prop_map(Duration::from_nanos),
        (0u64..200_000_000_000).prop_map(Duration::from_nanos),
        (0u64..10_000).prop_map(Duration::from_secs),
    ]
}

fn any_method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_owned()),
        Just("POST".to_owned()),
        "[-!#$%&'*+.^_`|~0-9A-Za-z]{1,12}",
    ]
}

fn any_path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "/[a-z/]{0,20}(\\?[a-z=&%0-9]{0,10})?".prop_map(String::into_bytes),
        any::<String>().prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

/// A well-formed line, for mutation.
fn sample_line() -> Vec<u8> {
    b"Dec 11 09:58:58 h ollama[1]: [GIN] 2025/10/02 - 14:47:30 |\x1b[97;42m 200 \x1b[0m| 16.52\xc2\xb5s | ::ffff:10.0.0.1 | POST     \"/a\\\"b\\xff\\u00a0\"\r\n".to_vec()
}

/// Plain lines as gin writes them without a terminal: the straight-line reader's input.
const PLAIN_LINES: [&[u8]; 5] = [
    b"[GIN] 2025/10/02 - 12:00:00 | 200 | 38.855539124s |      10.0.3.184 | POST     \"/v1/chat/completions\"\n",
    b"[GIN] 2025/10/02 - 14:47:30 | 200 |     649.664\xc2\xb5s |      10.0.1.100 | GET      \"/api/tags?x=1\"\n",
    b"Oct 02 12:00:00 gpu-host ollama[1543]: [GIN] 2025/10/02 - 12:00:00 | 404 | 38.855539124s | 2001:db8::1 | POST     \"/v1/chat/completions\"\r\n",
    b"[GIN] 2025/10/02 - 14:47:30 |\t200 |  1m5s | ::ffff:10.0.0.1 | DELETE   \"/api/delete\"",
    b"[GIN] 9999/12/31 - 23:59:59 | 65535 | 1.000000001ms | 255.255.255.255 | PATCH    \"/\xc3\xa9\"  \n",
];

/// Bytes that matter to the readers, to mutate lines with.
const TRICKY: &[u8] = b" \t|\"\\\n\r\x1b[m.:0123456789sm\xc2\xb5\xce\xbcunhx+-/aA\xff";

fn tricky_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => proptest::sample::select(TRICKY),
        1 => any::<u8>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The straight-line reader gives what the general reader gives, on plain lines and on
    /// lines with a few bytes replaced, inserted or removed.
    #[test]
    fn plain_reader_agrees_with_the_general_reader(
        base in 0..PLAIN_LINES.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), tricky_byte(), 0u8..4), 0..4),
    ) {
        let mut line = PLAIN_LINES[base].to_vec();
        for (at, byte, op) in edits {
            let i = at.index(line.len().max(1)).min(line.len());
            match op {
                0 if i < line.len() => line[i] = byte,
                1 => line.insert(i, byte),
                2 if i < line.len() => { line.remove(i); }
                _ => line.truncate(i),
            }
        }
        prop_assert_eq!(parse_gin_line(&line), parse_gin_line_general(&line), "{:?}", String::from_utf8_lossy(&line));
    }

    /// The one-pass duration reader gives what the general reader gives.
    #[test]
    fn short_durations_agree_with_the_general_reader(
        text in proptest::collection::vec(proptest::sample::select(b"0123456789..smunh\xc2\xb5\xce\xbc+".as_slice()), 0..24),
    ) {
        prop_assert_eq!(parse_go_duration(&text), parse_any_duration(&text), "{:?}", String::from_utf8_lossy(&text));
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_gin_line(&bytes);
        let _ = parse_go_duration(&bytes);
        let _ = splunk_extract(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_head_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..120)) {
        let mut line = b"[GIN] 2025/10/02 - 14:47:30 | 200 | 1.5s | 10.0.0.1 | GET ".to_vec();
        line.extend_from_slice(&tail);
        let _ = parse_gin_line(&line);
    }

    #[test]
    fn mutated_lines_never_panic(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6)) {
        let mut line = sample_line();
        prop_assert!(parse_gin_line(&line).is_ok());
        for (at, byte, op) in edits {
            let i = at.index(line.len().max(1)).min(line.len());
            match op {
                0 if i < line.len() => line[i] = byte,
                1 => line.insert(i, byte),
                _ => line.truncate(i),
            }
        }
        let _ = parse_gin_line(&line);
    }

    #[test]
    fn written_lines_parse_back_to_the_same_fields(
        time in any_time(),
        status in any::<u16>(),
        latency in any_latency(),
        ip in any::<IpAddr>(),
        method in any_method(),
        path in any_path(),
        prefix in prop_oneof![Just(""), Just("Dec 11 09:58:58 quorra ollama[1543654]: ")],
    ) {
        let ip_text = ip.to_string();
        let f = GinFields { time, status, latency, client_ip: &ip_text, method: &method, path: &path };
        let mut line = String::from(prefix);
        write_gin_line(&f, &mut line);
        let p = parse_gin_line(line.as_bytes()).unwrap();
        prop_assert_eq!(&p, &parse_gin_line_general(line.as_bytes()).unwrap());
        prop_assert_eq!(p.time, time);
        prop_assert_eq!(p.status, status);
        prop_assert_eq!(p.latency, gin_latency(latency));
        prop_assert_eq!(p.client_ip, ip.to_canonical());
        prop_assert_eq!(p.client_ip_text, ip_text.as_str());
        prop_assert_eq!(p.method, method.as_str());
        prop_assert_eq!(p.path, String::from_utf8_lossy(&path));
    }

    #[test]
    fn go_duration_text_round_trips(latency in any_latency()) {
        let mut text = String::new();
        format_go_duration(latency, &mut text);
        prop_assert_eq!(parse_go_duration(text.as_bytes()), Some(latency));
    }
}
