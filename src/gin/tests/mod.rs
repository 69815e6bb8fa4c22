//! Tests of the `[GIN]` line format, Go duration text, Go quoting and the SPL extraction.

mod data_files;
mod duration;
mod line;
mod props;
mod quote;
mod splunk;

use std::path::PathBuf;

use chrono::{NaiveDate, NaiveDateTime};

/// A sample file of `tests/data` (see its README for where each comes from).
fn data_file(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "data", name]
        .iter()
        .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, mo, d)
        .and_then(|date| date.and_hms_opt(h, mi, s))
        .unwrap()
}
