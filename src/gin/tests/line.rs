use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::at;
use crate::gin::{parse_gin_line, write_gin_line, GinFields, SkipReason};

const EXAMPLE: &str =
    "[GIN] 2025/10/02 - 14:47:30 | 200 | 57.204518733s |    192.168.1.50 | POST     \"/api/generate\"\n";

fn fields<'a>(latency: Duration, ip: &'a str, method: &'a str, path: &'a [u8]) -> GinFields<'a> {
    GinFields {
        time: at(2025, 10, 2, 14, 47, 30),
        status: 200,
        latency,
        client_ip: ip,
        method,
        path,
    }
}

fn written(f: &GinFields<'_>) -> String {
    let mut out = String::new();
    write_gin_line(f, &mut out);
    out
}

#[test]
fn write_gin_line_reproduces_ollamas_line() {
    let f = fields(
        Duration::new(57, 204_518_733),
        "192.168.1.50",
        "POST",
        b"/api/generate",
    );
    assert_eq!(written(&f), EXAMPLE);
}

#[test]
fn write_gin_line_pads_latency_by_runes_not_bytes() {
    let f = fields(Duration::from_nanos(16_520), "127.0.0.1", "HEAD", b"/");
    assert_eq!(
        written(&f),
        "[GIN] 2025/10/02 - 14:47:30 | 200 |       16.52µs |       127.0.0.1 | HEAD     \"/\"\n"
    );
}

#[test]
fn write_gin_line_truncates_latency_above_a_minute() {
    let f = fields(
        Duration::new(65, 432_100_000),
        "10.0.0.7",
        "POST",
        b"/api/chat",
    );
    assert_eq!(
        written(&f),
        "[GIN] 2025/10/02 - 14:47:30 | 200 |          1m5s |        10.0.0.7 | POST     \"/api/chat\"\n"
    );
}

#[test]
fn write_gin_line_lets_long_columns_push_the_next_one() {
    let ip = "fe80::1ff:fe23:4567:890a";
    let f = GinFields {
        status: 7,
        ..fields(Duration::ZERO, ip, "PROPFIND", b"/x\"y")
    };
    assert_eq!(
        written(&f),
        "[GIN] 2025/10/02 - 14:47:30 |   7 |            0s | fe80::1ff:fe23:4567:890a | PROPFIND  \"/x\\\"y\"\n"
    );
}

#[test]
fn write_gin_line_pads_years_to_four_digits() {
    let f = GinFields {
        time: at(987, 1, 2, 3, 4, 5),
        ..fields(Duration::ZERO, "::1", "GET", b"/")
    };
    assert!(written(&f).starts_with("[GIN] 0987/01/02 - 03:04:05 | "));
}

#[test]
fn parse_gin_line_reads_every_column() {
    let p = parse_gin_line(EXAMPLE.as_bytes()).unwrap();
    assert_eq!(p.time, at(2025, 10, 2, 14, 47, 30));
    assert_eq!(p.status, 200);
    assert_eq!(p.latency, Duration::new(57, 204_518_733));
    assert_eq!(p.latency_text, "57.204518733s");
    assert_eq!(p.client_ip, IpAddr::V4(Ipv4Addr::new(192, 168, 1, 50)));
    assert_eq!(p.client_ip_text, "192.168.1.50");
    assert_eq!(p.method, "POST");
    assert_eq!(p.path, "/api/generate");
}

#[test]
fn parse_gin_line_skips_journald_and_localised_prefixes() {
    for prefix in [
        "Dec 11 09:58:58 quorra ollama[1543654]: ",
        "janv. 20 23:15:37 jarvis ollama[1232]: ",
        "[x] ",
    ] {
        let line = format!("{prefix}{EXAMPLE}");
        assert_eq!(
            parse_gin_line(line.as_bytes()).unwrap().path,
            "/api/generate",
            "{prefix}"
        );
    }
}

#[test]
fn parse_gin_line_ignores_gins_tty_colour_codes() {
    let line = "[GIN] 2025/10/02 - 14:47:30 |\x1b[97;42m 200 \x1b[0m| 57.204518733s |    192.168.1.50 |\x1b[97;46m POST    \x1b[0m \"/api/generate\"\x1b[0m\r\n";
    let p = parse_gin_line(line.as_bytes()).unwrap();
    assert_eq!(
        (p.status, p.method, &*p.path),
        (200, "POST", "/api/generate")
    );
}

#[test]
fn parse_gin_line_accepts_crlf_and_any_padding() {
    let line = b"[GIN] 2025/10/02 - 14:47:30|200|1m5s|2001:DB8::1|GET \"/api/tags?x=1\"  \r\n";
    let p = parse_gin_line(line).unwrap();
    assert_eq!(p.latency, Duration::from_secs(65));
    assert_eq!(p.client_ip_text, "2001:DB8::1");
    assert_eq!(
        p.client_ip,
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
    );
    assert_eq!(p.path, "/api/tags?x=1");
}

#[test]
fn parse_gin_line_shows_ipv4_mapped_clients_as_ipv4() {
    let line = b"[GIN] 2025/10/02 - 15:02:00 | 200 |           58s | ::ffff:192.0.2.10 | GET      \"/api/tags\"";
    let p = parse_gin_line(line).unwrap();
    assert_eq!(p.client_ip, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)));
    assert_eq!(p.client_ip_text, "::ffff:192.0.2.10");
}

#[test]
fn parse_gin_line_unquotes_the_path() {
    let line = r#"[GIN] 2025/10/02 - 14:47:30 | 404 |     414.019µs |       127.0.0.1 | GET      "/a\"b\\c\t\u00a0\xff""#;
    assert_eq!(
        parse_gin_line(line.as_bytes()).unwrap().path,
        "/a\"b\\c\t\u{a0}\u{fffd}"
    );
}

#[test]
fn parse_gin_line_names_why_a_line_is_skipped() {
    let ok = "[GIN] 2025/10/02 - 14:47:30 | 200 |          1m5s |       127.0.0.1 | POST     \"/api/chat\"";
    let cases: [(&str, &[u8], SkipReason); 14] = [
        ("[GIN] ", b"[GIN-debug] GET /", SkipReason::NoGinMarker),
        ("[GIN] ", b"", SkipReason::NoGinMarker),
        ("2025/10/02", b"2025/13/02", SkipReason::BadTimestamp),
        ("2025/10/02 - ", b"2025/10/02 _ ", SkipReason::BadTimestamp),
        ("14:47:30", b"24:47:30", SkipReason::BadTimestamp),
        ("| 200 |", b"| 2x0 |", SkipReason::BadStatus),
        ("| 200 |", b"| 70000 |", SkipReason::BadStatus),
        ("1m5s", b"1m5x", SkipReason::BadLatency),
        ("127.0.0.1", b"127.0.0.256", SkipReason::BadClientIp),
        (
            "      127.0.0.1",
            b"               ",
            SkipReason::BadClientIp,
        ),
        ("POST", b"PO(T", SkipReason::BadMethod),
        ("\"/api/chat\"", b"\"/api/chat", SkipReason::BadPath),
        (
            "\"/api/chat\"",
            b"\"/api/chat\" trailing",
            SkipReason::BadPath,
        ),
        ("\"/api/chat\"", b"\"/api/\xffchat\"", SkipReason::NotUtf8),
    ];
    assert!(parse_gin_line(ok.as_bytes()).is_ok());
    for (from, to, want) in cases {
        let at = ok.find(from).unwrap();
        let mut line = ok.as_bytes()[..at].to_vec();
        line.extend_from_slice(to);
        line.extend_from_slice(&ok.as_bytes()[at + from.len()..]);
        assert_eq!(
            parse_gin_line(&line).unwrap_err(),
            want,
            "{}",
            String::from_utf8_lossy(&line)
        );
    }
    let no_bar = ok.replacen(" | 200 |", "   200 |", 1);
    assert_eq!(
        parse_gin_line(no_bar.as_bytes()).unwrap_err(),
        SkipReason::MissingSeparator
    );
}

#[test]
fn skip_reason_labels_are_distinct_snake_case() {
    let labels: Vec<&str> = SkipReason::ALL.iter().map(SkipReason::label).collect();
    assert_eq!(
        labels,
        [
            "no_gin_marker",
            "bad_timestamp",
            "bad_status",
            "bad_latency",
            "bad_client_ip",
            "bad_method",
            "bad_path",
            "not_utf8",
            "missing_separator"
        ]
    );
}

#[test]
fn parsed_line_as_fields_writes_the_same_line() {
    let p = parse_gin_line(EXAMPLE.as_bytes()).unwrap();
    assert_eq!(written(&p.as_fields()), EXAMPLE);
}

#[test]
fn parse_gin_line_reads_ipv4_strictly_like_go() {
    let line = |ip: &str| {
        format!("[GIN] 2025/10/02 - 14:47:30 | 200 |            0s | {ip:>15} | GET      \"/\"")
    };
    for good in ["0.0.0.0", "255.255.255.255", "10.0.0.7"] {
        let text = line(good);
        let p = parse_gin_line(text.as_bytes()).unwrap();
        assert_eq!(p.client_ip, good.parse::<IpAddr>().unwrap(), "{good}");
    }
    for bad in [
        "010.0.0.1",
        "1.2.3",
        "1.2.3.4.5",
        "1..2.3",
        "256.0.0.1",
        "1.2.3.4%eth0",
        "fe80::1%eth0",
    ] {
        assert_eq!(
            parse_gin_line(line(bad).as_bytes()).unwrap_err(),
            SkipReason::BadClientIp,
            "{bad}"
        );
    }
}

#[test]
fn parse_gin_line_rejects_a_latency_whose_digits_overflow_u64() {
    let line = "[GIN] 2025/10/02 - 14:47:30 | 200 | 20000000000000000000ns |       127.0.0.1 | POST     \"/api/chat\"";
    assert_eq!(
        parse_gin_line(line.as_bytes()).unwrap_err(),
        SkipReason::BadLatency
    );
}
