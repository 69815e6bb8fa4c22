//! `ollama-guard scan` through the real binary: formats, stdin, gzip, exit codes.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ollama-guard");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

fn synthetic() -> String {
    format!("{DATA}/gin-synthetic.log")
}

fn scan(args: &[&str]) -> Output {
    Command::new(BIN).arg("scan").args(args).output().unwrap()
}

fn scan_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg("scan")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

const COMPAT_CSV: &str = "\
rule,_time,src,uri_path,count,avg_response_time,max_response_time,severity,attack_type
model_exfiltration,1759416300,192.168.1.50,/api/generate,1,57.20,57.20,high,Potential Data Exfiltration
model_exfiltration,1759416300,2001:db8::1f,/api/chat,1,60.00,60.00,high,Potential Data Exfiltration
model_exfiltration,1759417200,::ffff:192.0.2.10,/api/tags?x=1,1,58.00,58.00,high,Potential Data Exfiltration
";

#[test]
fn compat_csv_on_the_synthetic_log_is_the_splunk_rows_and_a_summary() {
    let out = scan(&["--splunk-compat", "--format", "csv", &synthetic()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), COMPAT_CSV);
    assert_eq!(
        text(&out.stderr),
        "scan: 13 lines read, 5 parsed, 8 skipped, 0 late records, 3 rows emitted\n\
         scan: skipped by reason: no_match=8\n"
    );
}

#[test]
fn jsonl_is_the_default_when_stdout_is_not_a_terminal() {
    let out = scan(&[&synthetic()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 7);
    let first = rows[0].as_object().unwrap();
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    let mut want = vec![
        "rule",
        "_time",
        "src",
        "uri_path",
        "count",
        "avg_response_time",
        "max_response_time",
        "severity",
        "attack_type",
    ];
    let mut got = keys.clone();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(rows[0]["_time"], 1_759_416_300);
    assert_eq!(rows[0]["src"], "10.0.0.123");
    assert_eq!(rows[0]["max_response_time"], 1799.0);
    assert_eq!(rows[6]["src"], "2001:db8::/64");
    assert_eq!(rows[6]["uri_path"], "/api/generate");
}

#[test]
fn stdin_is_read_for_a_dash_and_for_no_file() {
    let log = std::fs::read(synthetic()).unwrap();
    for args in [
        &["--splunk-compat", "--format", "csv", "-"][..],
        &["--splunk-compat", "--format", "csv"][..],
    ] {
        let out = scan_stdin(args, &log);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), COMPAT_CSV);
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn gzip_files_are_decompressed_whatever_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ollama.log.1");
    std::fs::write(&path, gzip(&std::fs::read(synthetic()).unwrap())).unwrap();
    let out = scan(&["--splunk-compat", "--format", "csv", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), COMPAT_CSV);
}

#[test]
fn gzip_members_one_after_the_other_and_zero_padding_read_as_gzip_reads_them() {
    let log = std::fs::read(synthetic()).unwrap();
    let half = log
        .iter()
        .take(log.len() / 2)
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let dir = tempfile::tempdir().unwrap();
    // Two members (`cat a.gz b.gz`), then the zero padding of a tape archive or a shipper.
    let mut padded = gzip(&log[..half]);
    padded.extend(gzip(&log[half..]));
    padded.extend([0u8; 512]);
    let path = dir.path().join("padded.log.gz");
    std::fs::write(&path, &padded).unwrap();
    let out = scan(&["--splunk-compat", "--format", "csv", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), COMPAT_CSV);
    // Anything else after the data is an error naming the file, as before.
    let mut garbage = gzip(&log);
    garbage.extend(b"\0\0junk");
    std::fs::write(&path, &garbage).unwrap();
    let out = scan(&[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "ollama-guard: scan: reading {}: bytes after the gzip data",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn table_format_has_a_header_and_one_line_per_row() {
    let out = scan(&["--format", "table", &synthetic()]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 8);
    assert!(lines[0].starts_with("RULE  "), "{}", lines[0]);
    assert!(lines[1].contains("2025-10-02 14:45:00"), "{}", lines[1]);
}

fn assert_argument_error(out: &Output, starts: &str) {
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(starts), "{stderr}");
}

#[test]
fn bad_arguments_exit_2_with_one_line_and_no_output() {
    let log = synthetic();
    assert_argument_error(
        &scan(&["--timezone", "Mars/Olympus_Mons", &log]),
        "ollama-guard: scan: --timezone: 'Mars/Olympus_Mons'",
    );
    assert_argument_error(
        &scan(&["--format", "xml", &log]),
        "ollama-guard: scan: --format: 'xml' is not one of jsonl, table, csv",
    );
    assert_argument_error(
        &scan(&[&log, "/nonexistent/ollama.log"]),
        "ollama-guard: scan: cannot read /nonexistent/ollama.log:",
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[[rule]]\nname = \"x\"\ntreshold = 3\n").unwrap();
    assert_argument_error(
        &scan(&["--config", cfg.to_str().unwrap(), &log]),
        "ollama-guard: scan: config error:",
    );
    assert_argument_error(
        &scan(&[dir.path().to_str().unwrap()]),
        "ollama-guard: scan: cannot read",
    );
}

#[test]
fn a_truncated_gzip_file_exits_1_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.log.gz");
    let gz = gzip(&std::fs::read(synthetic()).unwrap());
    std::fs::write(&path, &gz[..gz.len() - 12]).unwrap();
    let out = scan(&[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("ollama-guard: scan: reading {}:", path.display())),
        "{stderr}"
    );
}

#[test]
fn timezone_offset_moves_every_time_by_the_offset() {
    let utc = scan(&["--splunk-compat", "--format", "csv", &synthetic()]);
    let east = scan(&[
        "--splunk-compat",
        "--format",
        "csv",
        "--timezone",
        "+02:00",
        &synthetic(),
    ]);
    let shifted = text(&utc.stdout)
        .replace("1759416300", "1759409100")
        .replace("1759417200", "1759410000");
    assert_eq!(text(&east.stdout), shifted);
}

#[test]
fn negative_timezone_offset_is_a_value_not_a_flag() {
    let want = "\
rule,_time,src,uri_path,count,avg_response_time,max_response_time,severity,attack_type
model_exfiltration,1759445100,192.168.1.50,/api/generate,1,57.20,57.20,high,Potential Data Exfiltration
model_exfiltration,1759445100,2001:db8::1f,/api/chat,1,60.00,60.00,high,Potential Data Exfiltration
model_exfiltration,1759446000,::ffff:192.0.2.10,/api/tags?x=1,1,58.00,58.00,high,Potential Data Exfiltration
";
    for tz in [&["--timezone", "-08:00"][..], &["--timezone=-08:00"][..]] {
        let mut args = vec!["--splunk-compat", "--format", "csv"];
        args.extend_from_slice(tz);
        let log = synthetic();
        args.push(&log);
        let out = scan(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), want, "{tz:?}");
    }
}
