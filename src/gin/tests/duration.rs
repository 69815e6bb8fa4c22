use std::time::Duration;

use crate::gin::{format_go_duration, gin_latency, parse_go_duration};

fn go_string(d: Duration) -> String {
    let mut out = String::new();
    format_go_duration(d, &mut out);
    out
}

fn secs_f(secs: u64, nanos: u32) -> Duration {
    Duration::new(secs, nanos)
}

#[test]
fn format_go_duration_matches_go_duration_string() {
    let cases = [
        (Duration::ZERO, "0s"),
        (Duration::from_nanos(1), "1ns"),
        (Duration::from_nanos(850), "850ns"),
        (Duration::from_nanos(999), "999ns"),
        (Duration::from_micros(1), "1µs"),
        (Duration::from_nanos(16_520), "16.52µs"),
        (Duration::from_nanos(971_777), "971.777µs"),
        (Duration::from_millis(1), "1ms"),
        (Duration::from_nanos(1_193_025), "1.193025ms"),
        (Duration::from_nanos(6_282_600), "6.2826ms"),
        (Duration::from_nanos(999_999_999), "999.999999ms"),
        (Duration::from_secs(1), "1s"),
        (Duration::from_secs(55), "55s"),
        (secs_f(56, 100_000_000), "56.1s"),
        (secs_f(57, 204_518_733), "57.204518733s"),
        (secs_f(59, 999_999_999), "59.999999999s"),
        (Duration::from_secs(60), "1m0s"),
        (secs_f(65, 432_100_000), "1m5.4321s"),
        (Duration::from_secs(1799), "29m59s"),
        (Duration::from_secs(3600), "1h0m0s"),
        (secs_f(3723, 500_000_000), "1h2m3.5s"),
        (
            Duration::from_nanos(i64::MAX as u64),
            "2562047h47m16.854775807s",
        ),
    ];
    for (d, want) in cases {
        assert_eq!(go_string(d), want, "{d:?}");
    }
}

#[test]
fn format_go_duration_appends_to_existing_text() {
    let mut out = String::from("took ");
    format_go_duration(Duration::from_millis(1500), &mut out);
    assert_eq!(out, "took 1.5s");
}

#[test]
fn gin_latency_truncates_to_whole_seconds_only_above_one_minute() {
    assert_eq!(
        gin_latency(secs_f(59, 999_999_999)),
        secs_f(59, 999_999_999)
    );
    assert_eq!(
        gin_latency(Duration::from_secs(60)),
        Duration::from_secs(60)
    );
    assert_eq!(gin_latency(secs_f(60, 1)), Duration::from_secs(60));
    assert_eq!(
        gin_latency(secs_f(65, 432_100_000)),
        Duration::from_secs(65)
    );
    assert_eq!(
        gin_latency(secs_f(1799, 999_000_000)),
        Duration::from_secs(1799)
    );
}

#[test]
fn parse_go_duration_reads_every_form_go_prints_and_accepts() {
    let cases: [(&str, Duration); 22] = [
        ("0s", Duration::ZERO),
        ("0", Duration::ZERO),
        ("+0", Duration::ZERO),
        ("850ns", Duration::from_nanos(850)),
        ("16.52µs", Duration::from_nanos(16_520)),
        ("16.52μs", Duration::from_nanos(16_520)),
        ("16.52us", Duration::from_nanos(16_520)),
        ("1.193025ms", Duration::from_nanos(1_193_025)),
        ("12.5ms", Duration::from_micros(12_500)),
        ("57.204518733s", secs_f(57, 204_518_733)),
        ("55s", Duration::from_secs(55)),
        ("1m0s", Duration::from_secs(60)),
        ("1m5s", Duration::from_secs(65)),
        ("1m5.4321s", secs_f(65, 432_100_000)),
        ("29m59s", Duration::from_secs(1799)),
        ("1h2m3s", Duration::from_secs(3723)),
        ("1h2m3.5s", secs_f(3723, 500_000_000)),
        ("1.5h", Duration::from_secs(5400)),
        (".5s", Duration::from_millis(500)),
        ("1.s", Duration::from_secs(1)),
        ("+5s", Duration::from_secs(5)),
        (
            "2562047h47m16.854775807s",
            Duration::from_nanos(i64::MAX as u64),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_go_duration(text.as_bytes()), Some(want), "{text}");
    }
}

#[test]
fn parse_go_duration_truncates_fractions_finer_than_a_nanosecond() {
    assert_eq!(parse_go_duration(b"1.9ns"), Some(Duration::from_nanos(1)));
    assert_eq!(
        parse_go_duration(b"0.0000000019s"),
        Some(Duration::from_nanos(1))
    );
    assert_eq!(
        parse_go_duration(b"1.0000000000000000000000000001s"),
        Some(Duration::from_secs(1))
    );
}

#[test]
fn parse_go_duration_rejects_garbage_and_overflow() {
    let rejects = [
        "",
        "s",
        "1",
        "00",
        "+",
        "-1s",
        "-0s",
        "1x",
        "1S",
        "1sec",
        "1 s",
        " 1s",
        "1s ",
        "1.5.5s",
        ".s",
        ".",
        "1h2",
        "µs",
        "1m5",
        "s1",
        "1,5s",
        "１s",
        "2562047h47m16.854775808s",
        "9223372036854775808ns",
        "99999999999999999999999999h",
        "2562048h",
        "20000000000000000000ns",
        "2000000000000000000.5s",
        "1h20000000000000000000ns",
    ];
    for text in rejects {
        assert_eq!(parse_go_duration(text.as_bytes()), None, "{text:?}");
    }
    assert_eq!(parse_go_duration(b"1\xffs"), None);
}
