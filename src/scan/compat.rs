//! `--splunk-compat`: the seed rule's Splunk search, reproduced exactly (docs/seed-rule.md).
//!
//! ```text
//! rex "<SPL_PATTERN>" | where response_time > 55 | bin _time span=15m
//! | stats count avg(response_time) max(response_time) by _time, src, uri_path
//! | eval avg/max = round(.., 2), severity = case(avg>50,"high", avg>40,"medium", true,"low")
//! ```
//!
//! - Fields are the regex's raw captures ([`splunk_extract`]): `src` is the IP text as
//!   written (no case folding, no IPv4-mapped unwrapping), `uri_path` the quoted text with its
//!   query and escapes.
//! - The line's text is what Splunk indexes: without its line ending. A line that is not
//!   UTF-8 is converted lossily first (each invalid byte becomes U+FFFD, as an indexer
//!   reading it as UTF-8 would show it); gin never writes such bytes.
//! - `response_time` must be a number (`1.2.3` is not) and strictly greater than 55.
//! - `_time` is the line's `[GIN] YYYY/MM/DD - HH:MM:SS` (the first `[GIN] ` marker) in
//!   `--timezone`; bins are `floor(epoch / 900) * 900`.
//! - avg and max are rounded to 2 decimals with the engine's `round2`; severity is graded
//!   on the rounded average.
//!
//! No engine: a sorted map of (bin, src, uri_path) → count, sum, max.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime};

use super::driver::{Counters, Scanner, Skip};
use super::row::{Row, Rows};
use super::zone::{LogZone, ZoneResolver};
use crate::detect::event::round2;
use crate::detect::Severity;
use crate::gin::{splunk_extract, splunk_response_time};

/// The seed's `bin _time span=15m`.
pub(super) const BIN_SECS: i64 = 900;
/// The seed's `where response_time > 55`.
pub(super) const MIN_RESPONSE_TIME: f64 = 55.0;
const RULE: &str = "model_exfiltration";
const ATTACK_TYPE: &str = "Potential Data Exfiltration";

#[derive(Debug, Default)]
struct Stats {
    count: u64,
    sum: f64,
    max: f64,
}

/// The Splunk-compatible scanner.
pub(super) struct CompatScan {
    zone: ZoneResolver,
    groups: BTreeMap<(i64, String, String), Stats>,
}

impl CompatScan {
    pub(super) fn new(zone: LogZone) -> CompatScan {
        CompatScan {
            zone: zone.resolver(),
            groups: BTreeMap::new(),
        }
    }
}

/// A line the search counts: its local time, `response_time`, and the raw `src` and
/// `uri_path` texts.
pub(super) type Counted = (NaiveDateTime, f64, String, String);

impl Scanner for CompatScan {
    /// `None`: matched and numeric, but not above the threshold.
    type Parsed = Option<Counted>;

    fn parse(line: &[u8]) -> Result<Self::Parsed, Skip> {
        let line = strip_line_ending(line);
        let text = String::from_utf8_lossy(line);
        let fields = splunk_extract(&text).ok_or(Skip::NoMatch)?;
        let local = gin_timestamp(line).ok_or(Skip::NoTimestamp)?;
        let response_time = splunk_response_time(fields.response_time).ok_or(Skip::NotNumeric)?;
        if response_time <= MIN_RESPONSE_TIME {
            return Ok(None);
        }
        let (src, path) = (fields.src_ip.to_owned(), fields.uri_path.to_owned());
        Ok(Some((local, response_time, src, path)))
    }

    fn feed(&mut self, parsed: Self::Parsed, counters: &mut Counters) {
        counters.lines_parsed += 1;
        let Some((local, response_time, src, path)) = parsed else {
            return;
        };
        let epoch = self.zone.utc_of(local).timestamp();
        let bin = epoch.div_euclid(BIN_SECS) * BIN_SECS;
        let stats = self.groups.entry((bin, src, path)).or_default();
        stats.count += 1;
        stats.sum += response_time;
        stats.max = stats.max.max(response_time);
    }

    fn finish(self, _counters: &mut Counters) -> Rows {
        let rule: Arc<str> = Arc::from(RULE);
        let attack_type: Arc<str> = Arc::from(ATTACK_TYPE);
        self.groups
            .into_iter()
            .map(|((time, src, path), s)| {
                let avg = round2(s.sum / s.count as f64);
                Row {
                    rule: rule.clone(),
                    time,
                    src,
                    uri_path: Some(Arc::from(path)),
                    count: s.count,
                    avg_response_time: avg,
                    max_response_time: round2(s.max),
                    severity: grade(avg),
                    attack_type: attack_type.clone(),
                }
            })
            .collect()
    }
}

/// The SPL's `case(avg_response_time>50, "high", avg_response_time>40, "medium", true, "low")`
/// on the rounded average.
fn grade(rounded_avg: f64) -> Severity {
    if rounded_avg > 50.0 {
        Severity::High
    } else if rounded_avg > 40.0 {
        Severity::Medium
    } else {
        Severity::Low
    }
}

fn strip_line_ending(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &line[..end]
}

/// The `YYYY/MM/DD - HH:MM:SS` right after the first `[GIN] ` of the line.
pub(super) fn gin_timestamp(line: &[u8]) -> Option<NaiveDateTime> {
    const MARKER: &[u8] = b"[GIN] ";
    let at = line.windows(MARKER.len()).position(|w| w == MARKER)? + MARKER.len();
    let t = line.get(at..at + 21)?;
    let layout = b"dddd/dd/dd - dd:dd:dd";
    let shape_ok = t.iter().zip(layout).all(|(&b, &l)| {
        if l == b'd' {
            b.is_ascii_digit()
        } else {
            b == l
        }
    });
    if !shape_ok {
        return None;
    }
    let num = |from: usize, len: usize| {
        t[from..from + len]
            .iter()
            .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'))
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)).ok()?, num(5, 2), num(8, 2))?;
    date.and_hms_opt(num(13, 2), num(16, 2), num(19, 2))
}
