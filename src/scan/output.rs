//! Writing rows as JSON lines, CSV or an aligned table (README, "scan").
//!
//! Latencies are written with exactly two decimals in every format (`57.20`): they are
//! rounded to two decimals, and printing them so keeps `jsonl`, `csv` and `table` byte-equal
//! for the same value (`57.20` is a valid JSON number; JSON readers see `57.2`).

use std::io::{self, Write};

use chrono::DateTime;

use super::row::Row;

/// The column names, in output order (`csv` header, `jsonl` keys).
pub(crate) const COLUMNS: [&str; 9] = [
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

/// The `--format` values.
///
/// Why: `jsonl` for pipelines and Splunk, `csv` for spreadsheets and diffing against a
/// Splunk export, `table` for a person at a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    /// One JSON object per line; `uri_path` is `null` for rules grouped by source.
    Jsonl,
    /// Aligned columns with a human-readable UTC time.
    Table,
    /// A header line, then RFC 4180 fields (quoted when they hold `,`, `"`, CR or LF),
    /// lines ending in `\n`.
    Csv,
}

impl OutputFormat {
    /// `jsonl`, `table` or `csv`; `None` otherwise.
    pub(crate) fn parse(text: &str) -> Option<OutputFormat> {
        match text {
            "jsonl" => Some(OutputFormat::Jsonl),
            "table" => Some(OutputFormat::Table),
            "csv" => Some(OutputFormat::Csv),
            _ => None,
        }
    }
}

/// Writes `rows` (already in output order (README, "scan")) in `format`.
pub(crate) fn write_rows(
    format: OutputFormat,
    rows: &[Row],
    out: &mut dyn Write,
) -> io::Result<()> {
    match format {
        OutputFormat::Jsonl => rows.iter().try_for_each(|r| write_jsonl(r, out)),
        OutputFormat::Csv => write_csv(rows, out),
        OutputFormat::Table => write_table(rows, out),
    }
}

fn number(v: f64) -> String {
    format!("{v:.2}")
}

fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn json_number(v: f64) -> String {
    if v.is_finite() {
        number(v)
    } else {
        "null".to_owned()
    }
}

fn write_jsonl(r: &Row, out: &mut dyn Write) -> io::Result<()> {
    let path = r
        .uri_path
        .as_deref()
        .map_or_else(|| "null".to_owned(), json_str);
    writeln!(
        out,
        "{{\"rule\":{},\"_time\":{},\"src\":{},\"uri_path\":{},\"count\":{},\
         \"avg_response_time\":{},\"max_response_time\":{},\"severity\":\"{}\",\
         \"attack_type\":{}}}",
        json_str(&r.rule),
        r.time,
        json_str(&r.src),
        path,
        r.count,
        json_number(r.avg_response_time),
        json_number(r.max_response_time),
        r.severity.as_str(),
        json_str(&r.attack_type),
    )
}

/// The row's fields as text, in [`COLUMNS`] order (`time` as given).
fn fields(r: &Row, time: String) -> [String; 9] {
    [
        r.rule.to_string(),
        time,
        r.src.clone(),
        r.uri_path.clone().unwrap_or_default(),
        r.count.to_string(),
        number(r.avg_response_time),
        number(r.max_response_time),
        r.severity.as_str().to_owned(),
        r.attack_type.to_string(),
    ]
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn write_csv(rows: &[Row], out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{}", COLUMNS.join(","))?;
    for r in rows {
        let line: Vec<String> = fields(r, r.time.to_string())
            .iter()
            .map(|f| csv_field(f))
            .collect();
        writeln!(out, "{}", line.join(","))?;
    }
    Ok(())
}

/// Control characters (a crafted log line may carry escape sequences) are shown as U+FFFD so
/// the table cannot drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

fn human_time(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0).map_or_else(
        || secs.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

fn write_table(rows: &[Row], out: &mut dyn Write) -> io::Result<()> {
    const HEADER: [&str; 9] = [
        "RULE",
        "TIME (UTC)",
        "SRC",
        "URI_PATH",
        "COUNT",
        "AVG_S",
        "MAX_S",
        "SEVERITY",
        "ATTACK_TYPE",
    ];
    const RIGHT: [bool; 9] = [false, false, false, false, true, true, true, false, false];
    let mut cells: Vec<[String; 9]> = vec![HEADER.map(str::to_owned)];
    for r in rows {
        let mut f = fields(r, human_time(r.time)).map(|s| printable(&s));
        if r.uri_path.is_none() {
            f[3] = "-".to_owned();
        }
        cells.push(f);
    }
    let mut widths = [0usize; 9];
    for line in &cells {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for line in &cells {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i > 0 {
                text.push_str("  ");
            }
            if RIGHT[i] {
                text.extend(std::iter::repeat(' ').take(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.extend(std::iter::repeat(' ').take(pad));
            }
        }
        writeln!(out, "{}", text.trim_end())?;
    }
    Ok(())
}
