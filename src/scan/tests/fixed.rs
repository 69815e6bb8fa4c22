//! Default mode: engine rows for sliding and tumbling rules, lateness, and `--config`.

use std::io::Write;
use std::sync::Arc;

use super::{builtin, data_file, exfil, gin_line, scan, with_rules, BIN_1445, BIN_1500};
use crate::config::ScanArgs;
use crate::detect::builtin::{metadata_enumeration, model_exfiltration};
use crate::detect::{EngineOptions, Severity};
use crate::scan::{OutputFormat, Row, ScanError, ScanMode, ScanOptions};

fn lines(items: impl IntoIterator<Item = String>) -> Vec<u8> {
    items.into_iter().collect::<String>().into_bytes()
}

fn by_src(rule: &str, attack: &str, time: i64, src: &str, count: u64, sev: Severity) -> Row {
    Row {
        rule: Arc::from(rule),
        time,
        src: src.to_owned(),
        uri_path: None,
        count,
        avg_response_time: 0.0,
        max_response_time: 0.0,
        severity: sev,
        attack_type: Arc::from(attack),
    }
}

#[test]
fn sliding_rule_gives_one_row_per_detection_at_the_start_of_its_window() {
    let opts = with_rules(vec![metadata_enumeration()], EngineOptions::default());
    let log =
        lines((0..150).map(|i| gin_line(BIN_1445 + 5 * i, "10ms", "10.0.0.1", "GET", "/api/tags")));
    let (rows, _) = scan(&opts, &log);
    // The 100th request (14:53:15) reaches the threshold; the window then covers the 15
    // one-minute sub-buckets ending with 14:53, i.e. it starts at 14:39:00.
    let want = Row {
        avg_response_time: 0.01,
        max_response_time: 0.01,
        ..by_src(
            "metadata_enumeration",
            "Model Metadata Enumeration",
            BIN_1445 - 6 * 60,
            "10.0.0.1",
            100,
            Severity::Low,
        )
    };
    assert_eq!(rows, vec![want]);
}

#[test]
fn tumbling_rules_give_one_row_per_window_with_its_final_count() {
    let log = lines((0..130).map(|i| {
        gin_line(
            BIN_1445 + 2 * i,
            "1.5s",
            "10.0.0.9",
            "POST",
            "/api/generate",
        )
    }));
    let (rows, _) = scan(&builtin("UTC"), &log);
    let row = |rule: &str, attack: &str, sev| Row {
        avg_response_time: 1.5,
        max_response_time: 1.5,
        ..by_src(rule, attack, BIN_1445, "10.0.0.9", 130, sev)
    };
    // Same time, source and (no) path: ordered by rule name.
    assert_eq!(
        rows,
        vec![
            row("endpoint_scan", "API Activity Surge", Severity::Medium),
            row(
                "excessive_requests",
                "Rate Limit Abuse / DDoS",
                Severity::High
            ),
        ]
    );
}

#[test]
fn a_jump_back_by_more_than_a_window_is_a_time_break_that_drops_no_line() {
    let opts = with_rules(vec![model_exfiltration()], EngineOptions::default());
    let log = lines([
        gin_line(BIN_1500, "57s", "10.0.0.5", "POST", "/api/generate"),
        gin_line(BIN_1500 + 3600, "57s", "10.0.0.6", "POST", "/api/generate"),
        // 50 minutes behind the newest: a time break. Everything open is closed and
        // reported, then counting restarts here, so 15:00 of 10.0.0.5 comes in two parts.
        gin_line(BIN_1500 + 600, "59s", "10.0.0.5", "POST", "/api/generate"),
        gin_line(BIN_1500 + 3500, "58s", "10.0.0.5", "POST", "/api/chat"),
    ]);
    let (rows, summary) = scan(&opts, &log);
    assert_eq!(
        rows,
        vec![
            exfil(BIN_1500, "10.0.0.5", "/api/generate", 1, 57.0, 57.0),
            exfil(BIN_1500, "10.0.0.5", "/api/generate", 1, 59.0, 59.0),
            exfil(BIN_1500 + 2700, "10.0.0.5", "/api/chat", 1, 58.0, 58.0),
            exfil(BIN_1500 + 3600, "10.0.0.6", "/api/generate", 1, 57.0, 57.0),
        ]
    );
    assert_eq!(summary.lines_parsed, 4);
    assert_eq!((summary.late_records, summary.time_breaks), (0, 1));
}

#[test]
fn one_future_dated_line_does_not_drop_the_normal_lines_after_it() {
    let opts = with_rules(vec![model_exfiltration()], EngineOptions::default());
    // 2099-01-01T00:00:00Z.
    let future = 4_070_908_800;
    let log = lines([
        gin_line(BIN_1500, "57s", "10.0.0.5", "POST", "/api/generate"),
        gin_line(future, "57s", "10.0.0.9", "POST", "/api/generate"),
        gin_line(BIN_1500 + 60, "58s", "10.0.0.6", "POST", "/api/generate"),
        gin_line(BIN_1500 + 120, "60s", "10.0.0.6", "POST", "/api/generate"),
    ]);
    let (rows, summary) = scan(&opts, &log);
    assert_eq!(
        rows,
        vec![
            exfil(BIN_1500, "10.0.0.5", "/api/generate", 1, 57.0, 57.0),
            exfil(BIN_1500, "10.0.0.6", "/api/generate", 2, 59.0, 60.0),
            exfil(future, "10.0.0.9", "/api/generate", 1, 57.0, 57.0),
        ]
    );
    assert_eq!((summary.late_records, summary.time_breaks), (0, 1));
    assert_eq!(
        summary.to_string(),
        "scan: 4 lines read, 4 parsed, 0 skipped, 0 late records, 3 rows emitted\n\
         scan: 1 time breaks: the log's time jumped back by more than the longest window, all \
         windows were closed there (inputs out of time order? give rotated files oldest first)"
    );
}

#[test]
fn a_line_behind_its_keys_window_by_less_than_a_window_is_late() {
    let opts = with_rules(vec![model_exfiltration()], EngineOptions::default());
    let log = lines([
        gin_line(BIN_1500 + 10, "57s", "10.0.0.5", "POST", "/api/generate"),
        // 20 s behind the newest, but in the 14:45 window this key has left: late.
        gin_line(BIN_1500 - 10, "59s", "10.0.0.5", "POST", "/api/generate"),
    ]);
    let (rows, summary) = scan(&opts, &log);
    assert_eq!(
        rows,
        vec![exfil(BIN_1500, "10.0.0.5", "/api/generate", 1, 57.0, 57.0)]
    );
    assert_eq!((summary.late_records, summary.time_breaks), (1, 0));
}

#[test]
fn lines_outside_1970_to_2106_are_skipped_as_time_out_of_range() {
    let opts = with_rules(vec![model_exfiltration()], EngineOptions::default());
    let last = i64::from(u32::MAX); // 2106-02-07T06:28:15Z
    let log = lines([
        gin_line(-1, "57s", "10.0.0.1", "POST", "/api/generate"),
        gin_line(0, "58s", "10.0.0.1", "POST", "/api/generate"),
        gin_line(BIN_1500, "57s", "10.0.0.5", "POST", "/api/generate"),
        gin_line(last, "59s", "10.0.0.2", "POST", "/api/generate"),
        gin_line(last + 1, "60s", "10.0.0.2", "POST", "/api/generate"),
    ]);
    let (rows, summary) = scan(&opts, &log);
    assert_eq!(
        rows,
        vec![
            exfil(0, "10.0.0.1", "/api/generate", 1, 58.0, 58.0),
            exfil(BIN_1500, "10.0.0.5", "/api/generate", 1, 57.0, 57.0),
            exfil(4_294_966_500, "10.0.0.2", "/api/generate", 1, 59.0, 59.0),
        ]
    );
    assert_eq!(summary.lines_parsed, 3);
    assert_eq!(summary.skipped, vec![("time_out_of_range", 2)]);
}

fn args(config: Option<std::path::PathBuf>) -> ScanArgs {
    ScanArgs {
        splunk_compat: false,
        config,
        timezone: "UTC".to_owned(),
        format: None,
        threads: None,
        files: Vec::new(),
    }
}

#[test]
fn config_file_supplies_rules_allowlist_and_ipv6_prefix() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let toml = "ipv6_prefix = 128\nallowlist = [\"192.168.1.0/24\"]\n\n[[rule]]\n\
                name = \"slow\"\nattack_type = \"Slow\"\nmin_latency = \"50s\"\n";
    file.write_all(toml.as_bytes()).unwrap();
    let opts = ScanOptions::from_args(&args(Some(file.path().to_owned())), false).unwrap();
    let (rows, _) = scan(&opts, &data_file("gin-synthetic.log"));
    let slow = |time, src: &str, path: &str, count, avg, max| Row {
        rule: Arc::from("slow"),
        attack_type: Arc::from("Slow"),
        ..exfil(time, src, path, count, avg, max)
    };
    // 192.168.1.50 is allowlisted; 55 s now counts (> 50 s); IPv6 sources are exact.
    assert_eq!(
        rows,
        vec![
            slow(BIN_1445, "10.0.0.123", "/api/chat", 1, 1799.0, 1799.0),
            slow(BIN_1445, "10.0.0.7", "/api/chat", 2, 57.5, 60.0),
            slow(BIN_1445, "2001:db8::1f", "/api/chat", 1, 60.0, 60.0),
            slow(
                BIN_1445,
                "fe80::1ff:fe23:4567:890a",
                "/v1/chat/completions",
                1,
                65.0,
                65.0
            ),
            slow(BIN_1500, "192.0.2.10", "/api/tags", 1, 58.0, 58.0),
            slow(BIN_1500, "2001:db8::1", "/api/generate", 1, 56.1, 56.1),
        ]
    );
}

#[test]
fn default_format_is_table_on_a_terminal_and_jsonl_otherwise() {
    let on_tty = ScanOptions::from_args(&args(None), true).unwrap();
    let piped = ScanOptions::from_args(&args(None), false).unwrap();
    assert_eq!(on_tty.format, OutputFormat::Table);
    assert_eq!(piped.format, OutputFormat::Jsonl);
    assert_eq!(
        piped.proxy_only_rules,
        ["bulk_generation"],
        "volume rules need byte counts"
    );
    let ScanMode::Rules { rules, .. } = piped.mode else {
        panic!("default mode runs rules");
    };
    assert_eq!(rules.len(), 6);
}

#[test]
fn bad_arguments_are_errors_with_exit_code_2() {
    let bad_tz = ScanArgs {
        timezone: "Mars/Olympus_Mons".to_owned(),
        ..args(None)
    };
    let err = ScanOptions::from_args(&bad_tz, false).unwrap_err();
    assert!(matches!(&err, ScanError::Timezone(tz) if tz == "Mars/Olympus_Mons"));
    assert_eq!(err.exit_code(), 2);

    let bad_format = ScanArgs {
        format: Some("xml".to_owned()),
        ..args(None)
    };
    let err = ScanOptions::from_args(&bad_format, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--format: 'xml' is not one of jsonl, table, csv"
    );
    assert_eq!(err.exit_code(), 2);

    let missing = args(Some("/nonexistent/scan.toml".into()));
    let err = ScanOptions::from_args(&missing, false).unwrap_err();
    assert!(matches!(err, ScanError::Config(_)), "{err}");
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn invalid_rule_in_config_names_the_rule_and_key() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"[[rule]]\nname = \"x\"\nwindow = \"banana\"\n")
        .unwrap();
    let err = ScanOptions::from_args(&args(Some(file.path().to_owned())), false).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("rule[x].window"), "{err}");
}

/// A logged `/api/%73how` is Ollama's record of a request for `/api/%2573how` (gin logs the
/// path decoded once; Ollama answered 404): it is not a `/api/show`, and its key is the
/// logged text as-is, the same key `serve` gives that request.
#[test]
fn logged_paths_are_never_percent_decoded_a_second_time() {
    let opts = with_rules(vec![metadata_enumeration()], EngineOptions::default());
    let log = lines((0..150).map(|i| {
        let path = if i % 2 == 0 {
            "/api/%73how"
        } else {
            "/api/tags"
        };
        gin_line(BIN_1445 + 2 * i, "10ms", "10.0.0.1", "GET", path)
    }));
    let (rows, summary) = scan(&opts, &log);
    assert_eq!(summary.lines_parsed, 150);
    // Only the 75 /api/tags lines qualify: below metadata_enumeration's threshold of 100.
    assert_eq!(rows, vec![]);
    let (path, route) = crate::route::normalize_logged("/api/%73how");
    assert_eq!(
        (path.as_ref(), route),
        ("/api/%73how", crate::route::Route::Other)
    );
    assert_eq!(crate::route::normalize("/api/%2573how").0, path);
}
