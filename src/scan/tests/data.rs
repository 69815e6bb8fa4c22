//! The sample logs of `shared/data` through both modes, with exact rows.

use super::{builtin, compat, data_file, exfil, scan, BIN_1445, BIN_1500};

/// 2024-12-11T09:45:00Z and 2024-12-13T01:15:00Z.
const BIN_20241211_0945: i64 = 1_733_910_300;
const BIN_20241213_0115: i64 = 1_734_052_500;

#[test]
fn compat_mode_on_synthetic_log_gives_the_rows_of_the_splunk_search() {
    let (rows, summary) = scan(&compat("UTC"), &data_file("gin-synthetic.log"));
    // Lines 5, 7 and 13 pass `> 55`: 14:47:30 and 14:49:05 fall in the 14:45 bin, 15:02:00
    // in the 15:00 bin. 59.999999999 rounds to 60.00.
    assert_eq!(
        rows,
        vec![
            exfil(BIN_1445, "192.168.1.50", "/api/generate", 1, 57.2, 57.2),
            exfil(BIN_1445, "2001:db8::1f", "/api/chat", 1, 60.0, 60.0),
            exfil(
                BIN_1500,
                "::ffff:192.0.2.10",
                "/api/tags?x=1",
                1,
                58.0,
                58.0
            ),
        ]
    );
    // Matched by the regex: lines 5, 6, 7, 11, 13; the other eight are invisible to Splunk.
    assert_eq!(summary.lines_read, 13);
    assert_eq!(summary.lines_parsed, 5);
    assert_eq!(summary.skipped, vec![("no_match", 8)]);
    assert_eq!(summary.rows_emitted, 3);
}

#[test]
fn compat_rows_are_exactly_the_tsv_lines_that_pass_gt55() {
    let tsv = String::from_utf8(data_file("gin-synthetic.splunk-expected.tsv")).unwrap();
    let mut expected: Vec<(String, String)> = tsv
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f[4] == "True")
        .map(|f| (f[5].to_owned(), f[6].to_owned()))
        .collect();
    expected.sort();
    let (rows, _) = scan(&compat("UTC"), &data_file("gin-synthetic.log"));
    let mut got: Vec<(String, String)> = rows
        .into_iter()
        .map(|r| (r.src, r.uri_path.unwrap().to_string()))
        .collect();
    got.sort();
    assert_eq!(expected.len(), 3);
    assert_eq!(got, expected);
}

#[test]
fn default_mode_on_synthetic_log_also_counts_what_the_spl_regex_misses() {
    let (rows, summary) = scan(&builtin("UTC"), &data_file("gin-synthetic.log"));
    // Beyond the compat rows: 1m0s (line 8), 1m5s (line 9, link-local IPv6), 29m59s (line
    // 10) and 56.1s from an upper-case IPv6 (line 12). IPv6 sources are /64 networks but a
    // link-local address is itself (every link has the same fe80::/64), IPv4-mapped IPv6 is
    // the IPv4 address, and the query is dropped from the path.
    // 55s exactly (line 6) is not > 55 s.
    assert_eq!(
        rows,
        vec![
            exfil(BIN_1445, "10.0.0.123", "/api/chat", 1, 1799.0, 1799.0),
            exfil(BIN_1445, "10.0.0.7", "/api/chat", 1, 60.0, 60.0),
            exfil(BIN_1445, "192.168.1.50", "/api/generate", 1, 57.2, 57.2),
            exfil(BIN_1445, "2001:db8::/64", "/api/chat", 1, 60.0, 60.0),
            exfil(
                BIN_1445,
                "fe80::1ff:fe23:4567:890a",
                "/v1/chat/completions",
                1,
                65.0,
                65.0,
            ),
            exfil(BIN_1500, "192.0.2.10", "/api/tags", 1, 58.0, 58.0),
            exfil(BIN_1500, "2001:db8::/64", "/api/generate", 1, 56.1, 56.1),
        ]
    );
    assert_eq!(summary.lines_read, 13);
    assert_eq!(summary.lines_parsed, 13);
    assert_eq!(summary.lines_skipped(), 0);
    assert_eq!(summary.late_records, 0);
}

#[test]
fn compat_mode_on_real_log_matches_journald_lines_but_finds_nothing_over_55s() {
    let (rows, summary) = scan(&compat("UTC"), &data_file("gin-real-from-issues.log"));
    assert_eq!(rows, vec![]);
    // Seconds-form latencies match, prefixed or not: 4.709180529s and 49.968259888s
    // (journald), 32.779561288s, 35.684791792s, 51.787708541s and 0s. The 29m59s and 30m0s
    // lines, the real exfiltration-length requests, are invisible to the SPL.
    assert_eq!(summary.lines_read, 20);
    assert_eq!(summary.lines_parsed, 6);
    assert_eq!(summary.skipped, vec![("no_match", 14)]);
}

#[test]
fn default_mode_on_real_log_flags_the_half_hour_requests_behind_journald_prefixes() {
    let (rows, summary) = scan(&builtin("UTC"), &data_file("gin-real-from-issues.log"));
    assert_eq!(
        rows,
        vec![
            exfil(
                BIN_20241211_0945,
                "10.0.0.123",
                "/api/chat",
                1,
                1799.0,
                1799.0
            ),
            exfil(
                BIN_20241213_0115,
                "10.0.0.123",
                "/api/chat",
                1,
                1800.0,
                1800.0
            ),
        ]
    );
    assert_eq!(summary.lines_read, 20);
    assert_eq!(summary.lines_parsed, 14);
    // Six comment lines; one of them quotes "[GIN] access-log" (a marker without a time).
    assert_eq!(
        summary.skipped,
        vec![("no_gin_marker", 5), ("bad_timestamp", 1)]
    );
    // The file collects issues out of date order: after the 2026 lines, the 2025 ones and
    // then the 2024 ones jump back by more than a window, two time breaks; nothing is late.
    assert_eq!((summary.late_records, summary.time_breaks), (0, 2));
}
