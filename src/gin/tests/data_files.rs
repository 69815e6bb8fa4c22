//! The sample logs of `shared/data`, checked line by line.

use std::time::Duration;

use super::{at, data_file};
use crate::gin::{
    gin_latency, parse_gin_line, parse_go_duration, splunk_extract, splunk_response_time,
    write_gin_line,
};

#[test]
fn synthetic_log_matches_the_expected_splunk_extraction() {
    let log = data_file("gin-synthetic.log");
    let tsv = data_file("gin-synthetic.splunk-expected.tsv");
    let lines: Vec<&str> = log.lines().collect();
    let rows: Vec<Vec<&str>> = tsv
        .lines()
        .skip(1)
        .map(|r| r.split('\t').collect())
        .collect();
    assert_eq!(lines.len(), 13);
    assert_eq!(rows.len(), lines.len());
    for (i, (line, row)) in lines.iter().zip(&rows).enumerate() {
        assert_eq!(row.len(), 7, "row {}", i + 1);
        assert_eq!(row[0], (i + 1).to_string());
        let got = splunk_extract(line);
        assert_eq!(got.is_some(), row[2] == "yes", "line {}: {line}", i + 1);
        let Some(f) = got else {
            assert_eq!(&row[3..], ["", "", "", ""], "line {}", i + 1);
            continue;
        };
        let parsed = parse_gin_line(line.as_bytes()).unwrap();
        assert_eq!(f.status_code, parsed.status.to_string(), "line {}", i + 1);
        assert_eq!(f.http_method, parsed.method, "line {}", i + 1);
        assert_eq!(f.response_time, row[3], "line {}", i + 1);
        let passes = splunk_response_time(f.response_time).is_some_and(|v| v > 55.0);
        assert_eq!(
            if passes { "True" } else { "False" },
            row[4],
            "line {}",
            i + 1
        );
        assert_eq!(f.src_ip, row[5], "line {}", i + 1);
        assert_eq!(f.uri_path, row[6], "line {}", i + 1);
    }
}

#[test]
fn synthetic_log_latencies_are_the_expected_durations_after_gin_truncation() {
    let log = data_file("gin-synthetic.log");
    let tsv = data_file("gin-synthetic.splunk-expected.tsv");
    for (line, row) in log.lines().zip(tsv.lines().skip(1)) {
        let ns: u64 = row.split('\t').nth(1).unwrap().parse().unwrap();
        let parsed = parse_gin_line(line.as_bytes()).unwrap();
        let want = gin_latency(Duration::from_nanos(ns));
        assert_eq!(
            parse_go_duration(parsed.latency_text.as_bytes()),
            Some(want),
            "{line}"
        );
        assert_eq!(parsed.latency, want, "{line}");
    }
}

struct Expected {
    time: (i32, u32, u32, u32, u32, u32),
    status: u16,
    latency: Duration,
    ip: &'static str,
    method: &'static str,
    path: &'static str,
}

const fn row(
    time: (i32, u32, u32, u32, u32, u32),
    status: u16,
    latency: Duration,
    ip: &'static str,
    method: &'static str,
    path: &'static str,
) -> Expected {
    Expected {
        time,
        status,
        latency,
        ip,
        method,
        path,
    }
}

const fn ns(secs: u64, nanos: u32) -> Duration {
    Duration::new(secs, nanos)
}

const REAL: [Expected; 14] = [
    row(
        (2024, 12, 11, 9, 58, 58),
        500,
        ns(1799, 0),
        "10.0.0.123",
        "POST",
        "/api/chat",
    ),
    row(
        (2024, 12, 12, 0, 40, 39),
        500,
        ns(4, 709_180_529),
        "10.0.0.123",
        "POST",
        "/api/chat",
    ),
    row(
        (2024, 12, 13, 1, 17, 21),
        500,
        ns(1800, 0),
        "10.0.0.123",
        "POST",
        "/api/chat",
    ),
    row(
        (2024, 12, 14, 14, 19, 48),
        500,
        ns(49, 968_259_888),
        "10.0.0.123",
        "POST",
        "/api/chat",
    ),
    row(
        (2026, 1, 20, 23, 15, 37),
        200,
        ns(32, 779_561_288),
        "127.0.0.1",
        "POST",
        "/api/generate",
    ),
    row(
        (2026, 1, 20, 23, 15, 46),
        200,
        ns(0, 971_777),
        "127.0.0.1",
        "HEAD",
        "/",
    ),
    row(
        (2026, 1, 20, 23, 15, 46),
        200,
        ns(0, 1_193_025),
        "127.0.0.1",
        "GET",
        "/api/ps",
    ),
    row(
        (2026, 1, 20, 23, 21, 17),
        200,
        ns(0, 16_520),
        "127.0.0.1",
        "HEAD",
        "/",
    ),
    row(
        (2026, 1, 20, 23, 21, 17),
        200,
        ns(0, 219_033_913),
        "127.0.0.1",
        "POST",
        "/api/show",
    ),
    row(
        (2025, 2, 10, 11, 20, 29),
        200,
        ns(35, 684_791_792),
        "127.0.0.1",
        "POST",
        "/api/chat",
    ),
    row(
        (2025, 2, 10, 11, 20, 45),
        500,
        ns(51, 787_708_541),
        "127.0.0.1",
        "POST",
        "/api/chat",
    ),
    row(
        (2024, 7, 21, 15, 52, 40),
        200,
        ns(0, 6_282_600),
        "127.0.0.1",
        "GET",
        "/api/tags",
    ),
    row(
        (2024, 7, 21, 15, 52, 51),
        403,
        ns(0, 0),
        "127.0.0.1",
        "POST",
        "/api/generate",
    ),
    row(
        (2024, 8, 19, 14, 13, 1),
        404,
        ns(0, 414_019),
        "127.0.0.1",
        "POST",
        "/api/chat",
    ),
];

fn real_lines() -> Vec<String> {
    data_file("gin-real-from-issues.log")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn real_log_lines_parse_to_the_values_written_in_them() {
    let lines = real_lines();
    assert_eq!(lines.len(), REAL.len());
    for (line, want) in lines.iter().zip(&REAL) {
        let p = parse_gin_line(line.as_bytes()).unwrap();
        let (y, mo, d, h, mi, s) = want.time;
        assert_eq!(p.time, at(y, mo, d, h, mi, s), "{line}");
        assert_eq!(p.status, want.status, "{line}");
        assert_eq!(p.latency, want.latency, "{line}");
        assert_eq!(p.client_ip.to_string(), want.ip, "{line}");
        assert_eq!(p.client_ip_text, want.ip, "{line}");
        assert_eq!(p.method, want.method, "{line}");
        assert_eq!(p.path, want.path, "{line}");
    }
}

#[test]
fn real_log_lines_are_rewritten_byte_for_byte() {
    for line in real_lines() {
        let gin_part = &line[line.find("[GIN] ").unwrap()..];
        let parsed = parse_gin_line(line.as_bytes()).unwrap();
        let mut out = String::new();
        write_gin_line(&parsed.as_fields(), &mut out);
        assert_eq!(out, format!("{gin_part}\n"));
    }
}

#[test]
fn synthetic_log_lines_are_rewritten_byte_for_byte() {
    for line in data_file("gin-synthetic.log").lines() {
        let parsed = parse_gin_line(line.as_bytes()).unwrap();
        let mut out = String::new();
        write_gin_line(&parsed.as_fields(), &mut out);
        assert_eq!(out, format!("{line}\n"));
    }
}
