//! Output formats and row order.

use std::sync::Arc;

use super::{exfil, BIN_1445, BIN_1500};
use crate::detect::Severity;
use crate::scan::{write_rows, OutputFormat, Row, COLUMNS};

fn render(format: OutputFormat, rows: &[Row]) -> String {
    let mut out = Vec::new();
    write_rows(format, rows, 1, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn grouped_by_src() -> Row {
    Row {
        rule: Arc::from("excessive_requests"),
        uri_path: None,
        count: 130,
        avg_response_time: 1.5,
        max_response_time: 1.5,
        attack_type: Arc::from("Rate Limit Abuse / DDoS"),
        ..exfil(BIN_1445, "10.0.0.9", "", 0, 0.0, 0.0)
    }
}

#[test]
fn jsonl_has_the_spec_fields_in_order_with_two_decimal_numbers() {
    let text = render(
        OutputFormat::Jsonl,
        &[exfil(
            BIN_1445,
            "192.168.1.50",
            "/api/generate",
            2,
            57.2,
            58.0,
        )],
    );
    assert_eq!(
        text,
        concat!(
            r#"{"rule":"model_exfiltration","_time":1759416300,"src":"192.168.1.50","#,
            r#""uri_path":"/api/generate","count":2,"avg_response_time":57.20,"#,
            r#""max_response_time":58.00,"severity":"high","#,
            r#""attack_type":"Potential Data Exfiltration"}"#,
            "\n"
        )
    );
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = COLUMNS.to_vec();
    want.sort_unstable();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, want);
    assert_eq!(value["avg_response_time"], serde_json::json!(57.2));
}

#[test]
fn jsonl_uri_path_is_null_for_rules_grouped_by_source() {
    let text = render(OutputFormat::Jsonl, &[grouped_by_src()]);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["uri_path"], serde_json::Value::Null);
    assert_eq!(value["count"], serde_json::json!(130));
}

#[test]
fn jsonl_escapes_control_characters_and_quotes_in_text_fields() {
    let text = render(
        OutputFormat::Jsonl,
        &[exfil(
            BIN_1445,
            "10.0.0.1",
            "/a\"b\\c\u{1b}[31m",
            1,
            56.0,
            56.0,
        )],
    );
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["uri_path"], "/a\"b\\c\u{1b}[31m");
    assert!(!text.contains('\u{1b}'));
}

#[test]
fn jsonl_strings_are_escaped_exactly_as_serde_json_escapes_them() {
    let path: String = (0u8..0x80)
        .map(char::from)
        .chain(['é', '€', '\u{2028}', '"'])
        .collect();
    let text = render(
        OutputFormat::Jsonl,
        &[exfil(BIN_1445, "10.0.0.1", &path, 1, 56.0, 56.0)],
    );
    let want = format!("\"uri_path\":{},", serde_json::to_string(&path).unwrap());
    assert!(text.contains(&want), "{text}");
}

#[test]
fn csv_has_a_header_and_quotes_fields_per_rfc_4180() {
    let mut row = exfil(BIN_1500, "10.0.0.1", "/a,b", 1, 56.1, 56.1);
    row.attack_type = Arc::from("Data \"Leak\"");
    let text = render(OutputFormat::Csv, &[row, grouped_by_src()]);
    assert_eq!(
        text,
        "rule,_time,src,uri_path,count,avg_response_time,max_response_time,severity,attack_type\n\
         model_exfiltration,1759417200,10.0.0.1,\"/a,b\",1,56.10,56.10,high,\"Data \"\"Leak\"\"\"\n\
         excessive_requests,1759416300,10.0.0.9,,130,1.50,1.50,high,Rate Limit Abuse / DDoS\n"
    );
}

#[test]
fn csv_without_rows_is_the_header_alone() {
    assert_eq!(
        render(OutputFormat::Csv, &[]),
        format!("{}\n", COLUMNS.join(","))
    );
}

#[test]
fn table_aligns_columns_and_shows_utc_time() {
    let rows = [
        exfil(BIN_1445, "192.168.1.50", "/api/generate", 1, 57.2, 57.2),
        exfil(BIN_1500, "10.0.0.123", "/api/chat", 12, 1799.0, 1799.0),
    ];
    let text = render(OutputFormat::Table, &rows);
    let want = "\
RULE                TIME (UTC)           SRC           URI_PATH       COUNT    AVG_S    MAX_S  SEVERITY  ATTACK_TYPE
model_exfiltration  2025-10-02 14:45:00  192.168.1.50  /api/generate      1    57.20    57.20  high      Potential Data Exfiltration
model_exfiltration  2025-10-02 15:00:00  10.0.0.123    /api/chat         12  1799.00  1799.00  high      Potential Data Exfiltration
";
    assert_eq!(text, want);
}

#[test]
fn table_shows_a_dash_for_no_path_and_neutralises_control_characters() {
    let mut row = exfil(
        BIN_1445,
        "10.0.0.1",
        "/x\u{1b}[2J\u{7}/\u{202e}gpj.exe\u{200b}",
        1,
        56.0,
        56.0,
    );
    let text = render(OutputFormat::Table, &[row.clone(), grouped_by_src()]);
    assert!(!text.contains(['\u{1b}', '\u{7}', '\u{202e}', '\u{200b}']));
    assert!(
        text.contains("/x\\u{1b}[2J\\u{7}/\\u{202e}gpj.exe\\u{200b}"),
        "{text}"
    );
    row.uri_path = None;
    let text = render(OutputFormat::Table, &[row]);
    let data_line = text.lines().nth(1).unwrap();
    assert!(data_line.contains("  10.0.0.1  -  "), "{data_line}");
}

#[test]
fn rows_sort_by_time_then_src_bytes_then_path_then_rule() {
    let mut a = exfil(BIN_1445, "10.0.0.7", "/b", 1, 56.0, 56.0);
    let b = exfil(BIN_1445, "10.0.0.123", "/z", 1, 56.0, 56.0);
    let c = exfil(BIN_1445, "10.0.0.7", "/a", 1, 56.0, 56.0);
    let d = exfil(BIN_1500 - 1, "0.0.0.1", "/a", 1, 56.0, 56.0);
    let mut e = grouped_by_src();
    e.src = "10.0.0.7".to_owned();
    a.rule = Arc::from("aaa");
    let mut f = a.clone();
    f.rule = Arc::from("zzz");
    let mut rows = vec![
        f.clone(),
        d.clone(),
        a.clone(),
        c.clone(),
        e.clone(),
        b.clone(),
    ];
    rows.sort_by(Row::spec_order);
    // "10.0.0.123" < "10.0.0.7" in byte order; no path sorts before any path.
    assert_eq!(rows, vec![b, e, c, a, f, d]);
    assert_eq!(rows[1].severity, Severity::High);
}

/// Accepts `ok` writes, then panics (a `Write` that fails by unwinding).
struct PanicsAfter {
    ok: usize,
    written: Vec<u8>,
}

impl std::io::Write for PanicsAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        assert!(self.ok > 0, "the writer gives up");
        self.ok -= 1;
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Rows formatted on threads, one of them written at a time: a writer that panics after
/// the first chunk must pass its panic on, not leave the formatting threads waiting for a
/// buffer forever (the scope would then never end).
#[test]
fn a_writer_that_panics_ends_the_threaded_output_with_that_panic() {
    let rows: Vec<Row> = (0..2_000)
        .map(|i| {
            exfil(
                BIN_1500,
                &format!("10.0.{}.{}", i / 256, i % 256),
                "/api/pull",
                1,
                60.0,
                60.0,
            )
        })
        .collect();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(move || {
            let mut out = PanicsAfter {
                ok: 1,
                written: Vec::new(),
            };
            let _ = write_rows(OutputFormat::Jsonl, &rows, 2, &mut out);
        });
        let _ = done_tx.send(result.is_err());
    });
    let panicked = done_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the output did not end within 60 s");
    assert!(panicked, "the writer's panic was not passed on");
}
