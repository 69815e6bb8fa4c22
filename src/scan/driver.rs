//! The scan loop shared by both modes: lines in, counters kept, rows sorted and written.

use std::fmt;
use std::io::Write;
use std::thread;

use super::compat::CompatScan;
use super::fixed::FixedScan;
use super::input::{Input, Line, LineSplitter, Reopen};
use super::options::{ScanMode, ScanOptions};
use super::output::write_runs;
use super::parallel;
#[cfg(test)]
use super::row::Row;
use super::row::{Rows, Run};
use super::shard;
use super::ScanError;
use crate::gin::SkipReason;

/// Why `scan` skipped a line.
///
/// Why: the summary tells an operator whether the file was not Ollama's log at all, or a
/// column the parser (or, in compat mode, the SPL regex) does not accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Default mode: the `[GIN]` reader refused the line.
    Gin(SkipReason),
    /// Compat mode: the SPL regex does not match (the search never sees the event).
    NoMatch,
    /// Compat mode: the regex matches but there is no `[GIN] YYYY/MM/DD - HH:MM:SS` time.
    NoTimestamp,
    /// Compat mode: `response_time` is not a number (`1.2.3`), so `> 55` is false.
    NotNumeric,
    /// Default mode: the time (in `--timezone`) is before 1970 or after 2106-02-07, outside
    /// what the engine's windows can hold
    /// ([`SUPPORTED_EPOCH_SECS`](crate::detect::SUPPORTED_EPOCH_SECS)).
    TimeOutOfRange,
    /// The line is longer than the line limit (binary data, or not a log).
    TooLong,
}

const SLOTS: usize = SkipReason::ALL.len() + 5;

impl Skip {
    /// The summary label (the `[GIN]` reader's labels, or `no_match`, `no_timestamp`,
    /// `not_numeric`, `time_out_of_range`, `line_too_long`).
    pub(crate) fn label(self) -> &'static str {
        match self {
            Skip::Gin(r) => r.label(),
            Skip::NoMatch => "no_match",
            Skip::NoTimestamp => "no_timestamp",
            Skip::NotNumeric => "not_numeric",
            Skip::TimeOutOfRange => "time_out_of_range",
            Skip::TooLong => "line_too_long",
        }
    }

    fn slot(self) -> usize {
        let gin = SkipReason::ALL.len();
        match self {
            Skip::Gin(r) => SkipReason::ALL.iter().position(|x| *x == r).unwrap_or(0),
            Skip::NoMatch => gin,
            Skip::NoTimestamp => gin + 1,
            Skip::NotNumeric => gin + 2,
            Skip::TimeOutOfRange => gin + 3,
            Skip::TooLong => gin + 4,
        }
    }

    fn all() -> [Skip; SLOTS] {
        let mut all = [Skip::TooLong; SLOTS];
        for (slot, r) in all.iter_mut().zip(SkipReason::ALL) {
            *slot = Skip::Gin(r);
        }
        let gin = SkipReason::ALL.len();
        all[gin] = Skip::NoMatch;
        all[gin + 1] = Skip::NoTimestamp;
        all[gin + 2] = Skip::NotNumeric;
        all[gin + 3] = Skip::TimeOutOfRange;
        all
    }
}

/// Running counts, updated by the loop and the mode.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) lines_read: u64,
    pub(super) lines_parsed: u64,
    pub(super) late: u64,
    pub(super) time_breaks: u64,
    /// Keys the key cap (`max_tracked_keys`) evicted.
    pub(super) evicted: u64,
    skipped: [u64; SLOTS],
}

impl Counters {
    pub(super) fn skip(&mut self, why: Skip) {
        self.skipped[why.slot()] += 1;
    }

    /// Adds `other`'s counts to these.
    pub(super) fn absorb(&mut self, other: &Counters) {
        self.lines_read += other.lines_read;
        self.lines_parsed += other.lines_parsed;
        self.late += other.late;
        self.time_breaks += other.time_breaks;
        self.evicted += other.evicted;
        for (mine, theirs) in self.skipped.iter_mut().zip(other.skipped) {
            *mine += theirs;
        }
    }
}

/// What a scan saw, for the summary on stderr.
///
/// Why: bad lines are never fatal, so the summary is where an operator learns that half a
/// file was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSummary {
    /// Lines read from all inputs.
    pub lines_read: u64,
    /// Lines turned into requests (compat mode: matched by the regex with a time and a
    /// numeric response time).
    pub lines_parsed: u64,
    /// Skipped lines by reason label, non-zero reasons only, in a fixed order.
    pub skipped: Vec<(&'static str, u64)>,
    /// Requests not counted because their key's window had already moved on (default
    /// mode: a line out of time order by less than a window, across a window boundary).
    pub late_records: u64,
    /// Times the log's time jumped back by more than the longest window (default mode):
    /// every window was closed there and counting started afresh, so no line was dropped.
    pub time_breaks: u64,
    /// Counter keys the key cap (`max_tracked_keys`) evicted: their windows' rows may be
    /// missing or undercounted.
    pub keys_evicted: u64,
    /// Rows written.
    pub rows_emitted: u64,
    /// Rules not run because they are proxy-only (volume rules: a `[GIN]` line has no sizes).
    pub proxy_only_rules: Vec<String>,
}

impl ScanSummary {
    /// All skipped lines.
    pub(crate) fn lines_skipped(&self) -> u64 {
        self.skipped.iter().map(|(_, n)| n).sum()
    }
}

impl fmt::Display for ScanSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scan: {} lines read, {} parsed, {} skipped, {} late records, {} rows emitted",
            self.lines_read,
            self.lines_parsed,
            self.lines_skipped(),
            self.late_records,
            self.rows_emitted
        )?;
        if self.late_records > 0 {
            write!(
                f,
                "\nscan: late records came after their window had moved on (lines out of \
                 time order by less than a window)"
            )?;
        }
        if self.time_breaks > 0 {
            write!(
                f,
                "\nscan: {} time breaks: the log's time jumped back by more than the longest \
                 window, all windows were closed there (inputs out of time order? give rotated \
                 files oldest first)",
                self.time_breaks
            )?;
        }
        if self.keys_evicted > 0 {
            write!(
                f,
                "\nscan: {} counter keys evicted at max_tracked_keys: rows of their windows may \
                 be missing or undercounted (raise max_tracked_keys)",
                self.keys_evicted
            )?;
        }
        if !self.proxy_only_rules.is_empty() {
            write!(
                f,
                "\nscan: proxy-only rules not run (GIN lines carry no byte counts): {}",
                self.proxy_only_rules.join(", ")
            )?;
        }
        if !self.skipped.is_empty() {
            let parts: Vec<String> = self
                .skipped
                .iter()
                .map(|(l, n)| format!("{l}={n}"))
                .collect();
            write!(f, "\nscan: skipped by reason: {}", parts.join(" "))?;
        }
        Ok(())
    }
}

/// One scan mode: takes lines, gives rows at the end.
///
/// A line goes through [`Scanner::parse`] (no state: any thread, any order) and then
/// [`Scanner::feed`] (in line order), so `--threads` can parse in parallel and still feed
/// the mode exactly as the single-threaded loop does.
pub(super) trait Scanner {
    /// What a line is, as far as it can be told without looking at other lines.
    type Parsed: Send;
    /// One line (with its `\n` if it had one), or why it is skipped.
    fn parse(line: &[u8]) -> Result<Self::Parsed, Skip>;
    /// The next parsed line, in input order.
    fn feed(&mut self, parsed: Self::Parsed, counters: &mut Counters);
    /// End of input: every remaining row.
    fn finish(self, counters: &mut Counters) -> Rows;
}

/// Scans `inputs` in order as one stream, then writes the rows in output order (README, "scan") to `out`.
///
/// Why: the testable core of `ollama-guard scan`; [`super::scan_logs`] only adds argument
/// handling, and the command stdout/stderr and exit codes. A read error stops the scan with no output.
pub(crate) fn run(
    opts: &ScanOptions,
    inputs: Vec<Input>,
    out: &mut dyn Write,
) -> Result<ScanSummary, ScanError> {
    let (runs, summary) = collect_rows(opts, inputs)?;
    let written = write_runs(opts.format, &runs, opts.threads, out).and_then(|()| out.flush());
    if summary.rows_emitted >= DROP_APART_ROWS {
        // Why: freeing 200 000 rows (two strings each, allocated on the shard threads) took
        // a quarter of the calling thread's work after the scan; the command exits right
        // after this, so that work is done apart, and is cut short by the exit.
        thread::spawn(move || drop(runs));
    }
    written.map_err(ScanError::Write)?;
    Ok(summary)
}

/// Rows at least this many are freed on a thread of their own (see [`run`]).
const DROP_APART_ROWS: u64 = 10_000;

/// Scans `inputs` in order as one stream and returns the rows in output order (README, "scan").
#[cfg(test)]
pub(crate) fn scan_rows(
    opts: &ScanOptions,
    inputs: Vec<Input>,
) -> Result<(Vec<Row>, ScanSummary), ScanError> {
    let (runs, summary) = collect_rows(opts, inputs)?;
    let ordered = super::row::merge(&runs).into_iter().cloned().collect();
    Ok((ordered, summary))
}

/// Scans `inputs` in order as one stream: the rows (one sorted run per engine), and the
/// summary.
///
/// Why: rows are collected and sorted before anything is written, so both modes share one
/// order. Memory grows with the rows, not with the lines: the engine's windows are closed
/// as the log's time moves on.
fn collect_rows(
    opts: &ScanOptions,
    inputs: Vec<Input>,
) -> Result<(Vec<Run>, ScanSummary), ScanError> {
    let mut counters = Counters::default();
    let runs = match &opts.mode {
        ScanMode::Rules { rules, engine } => {
            let again: Option<Vec<(String, Reopen)>> = inputs
                .iter()
                .map(|i| Some((i.name.clone(), i.reopen.clone()?)))
                .collect();
            let sharded = match again {
                // The sharded engine may have to start over (see `shard`): inputs that can
                // be opened again only (not stdin).
                Some(again) if opts.threads > 1 => {
                    let runs = shard::scan(
                        rules,
                        engine,
                        opts.zone,
                        inputs,
                        opts.max_line_bytes,
                        opts.threads,
                        &mut counters,
                    )?;
                    match runs {
                        Some(runs) => Ok(runs),
                        None => {
                            counters = Counters::default();
                            again
                                .iter()
                                .map(|(name, open)| {
                                    open().map_err(|source| ScanError::Read {
                                        input: name.clone(),
                                        source,
                                    })
                                })
                                .collect::<Result<Vec<Input>, ScanError>>()
                                .map(Err)?
                        }
                    }
                }
                _ => Err(inputs),
            };
            match sharded {
                Ok(runs) => runs,
                Err(inputs) => {
                    let scanner = FixedScan::new(rules.clone(), engine.clone(), opts.zone)?;
                    let rows = scan_all(scanner, inputs, opts, &mut counters)?;
                    vec![Run::sorted(rows, opts.threads)]
                }
            }
        }
        ScanMode::SplunkCompat => {
            let scanner = CompatScan::new(opts.zone);
            let rows = scan_all(scanner, inputs, opts, &mut counters)?;
            vec![Run::sorted(rows, opts.threads)]
        }
    };
    let skipped = Skip::all()
        .into_iter()
        .filter_map(|s| {
            let n = counters.skipped[s.slot()];
            (n > 0).then_some((s.label(), n))
        })
        .collect();
    let summary = ScanSummary {
        lines_read: counters.lines_read,
        lines_parsed: counters.lines_parsed,
        skipped,
        late_records: counters.late,
        time_breaks: counters.time_breaks,
        keys_evicted: counters.evicted,
        rows_emitted: runs.iter().map(Run::len).sum::<usize>() as u64,
        proxy_only_rules: opts.proxy_only_rules.clone(),
    };
    Ok((runs, summary))
}

fn scan_all<S: Scanner>(
    mut scanner: S,
    inputs: Vec<Input>,
    opts: &ScanOptions,
    counters: &mut Counters,
) -> Result<Rows, ScanError> {
    if opts.threads > 1 {
        return parallel::scan_all(scanner, inputs, opts.max_line_bytes, opts.threads, counters);
    }
    for mut input in inputs {
        let mut lines = LineSplitter::new(opts.max_line_bytes);
        let result = lines.each(&mut *input.reader, |kind, line| {
            counters.lines_read += 1;
            match kind {
                Line::Text => match S::parse(line) {
                    Ok(parsed) => scanner.feed(parsed, counters),
                    Err(why) => counters.skip(why),
                },
                Line::TooLong => counters.skip(Skip::TooLong),
            }
        });
        result.map_err(|source| ScanError::Read {
            input: input.name.clone(),
            source,
        })?;
    }
    Ok(scanner.finish(counters))
}
