//! Behaviour tests of `scan`, driven through [`super::scan_rows`] / [`super::run`] on
//! in-memory inputs.

mod corpus;
mod data;
mod fixed;
mod garbage;
mod output;
mod threads;
mod zone;

use std::io::Cursor;
use std::sync::Arc;

use super::{scan_rows, Input, LogZone, Row, ScanMode, ScanOptions, ScanSummary};
use crate::detect::{build_rules, EngineOptions, RuleConfig, Severity};

/// A sample file of `tests/data` (see its README for where each comes from).
fn data_file(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/{name}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// An in-memory input that can be opened again, like a file.
fn input(bytes: Vec<u8>) -> Input {
    let bytes: std::sync::Arc<[u8]> = bytes.into();
    let again = std::sync::Arc::clone(&bytes);
    Input::sniffed("test", Box::new(Cursor::new(bytes.to_vec())))
        .unwrap()
        .reopenable(std::sync::Arc::new(move || {
            Input::sniffed("test", Box::new(Cursor::new(again.to_vec())))
        }))
}

fn compat(zone: &str) -> ScanOptions {
    ScanOptions {
        mode: ScanMode::SplunkCompat,
        zone: LogZone::parse(zone).unwrap(),
        ..ScanOptions::builtin().unwrap()
    }
}

fn builtin(zone: &str) -> ScanOptions {
    ScanOptions {
        zone: LogZone::parse(zone).unwrap(),
        ..ScanOptions::builtin().unwrap()
    }
}

fn with_rules(rules: Vec<RuleConfig>, engine: EngineOptions) -> ScanOptions {
    ScanOptions {
        mode: ScanMode::Rules {
            rules: build_rules(&rules).unwrap(),
            engine,
        },
        ..ScanOptions::builtin().unwrap()
    }
}

/// Scans `bytes` as one input; panics on an error.
fn scan(opts: &ScanOptions, bytes: &[u8]) -> (Vec<Row>, ScanSummary) {
    scan_rows(opts, vec![input(bytes.to_vec())]).unwrap()
}

/// A `model_exfiltration` row as both modes report it (always "high" here).
fn exfil(time: i64, src: &str, path: &str, count: u64, avg: f64, max: f64) -> Row {
    Row {
        rule: Arc::from("model_exfiltration"),
        time,
        src: src.to_owned(),
        uri_path: Some(path.into()),
        count,
        avg_response_time: avg,
        max_response_time: max,
        severity: Severity::High,
        attack_type: Arc::from("Potential Data Exfiltration"),
    }
}

/// 2025-10-02T14:45:00Z and the next 15-minute bin.
const BIN_1445: i64 = 1_759_416_300;
const BIN_1500: i64 = 1_759_417_200;

/// One access line in gin's layout, at `epoch` (UTC) with `latency` text.
fn gin_line(epoch: i64, latency: &str, ip: &str, method: &str, path: &str) -> String {
    let ts = chrono::DateTime::from_timestamp(epoch, 0).unwrap();
    format!(
        "[GIN] {} | 200 | {latency:>13} | {ip:>15} | {method:<7} \"{path}\"\n",
        ts.format("%Y/%m/%d - %H:%M:%S")
    )
}
