//! `ollama-guard scan`: the detection engine run offline over Ollama server logs.
//!
//! Two modes (README, "scan"):
//! - default: every `[GIN]` line (any Go duration form, IPv6 in any case, journald or
//!   syslog prefixes, colour codes) becomes a [`RequestRecord`](crate::record::RequestRecord)
//!   for the same [`Engine`](crate::detect::Engine) the proxy runs, with the rules of
//!   `--config` or the built-in set;
//! - `--splunk-compat`: only the seed rule, with the SPL search's exact semantics and
//!   defects (see `compat`), for parity checks against Splunk. `--config` is still
//!   validated there but has no effect.
//!
//! Rows go to stdout (sorted by `_time`, `src`, `uri_path`, rule), a summary to stderr;
//! [`scan_logs`] is the command's work, the binary's `src/commands/scan.rs` its terminal.
//! Bad lines are counted, never fatal. Inputs are read in the order given, as one stream:
//! give rotated files oldest first (`ollama.log.1 ollama.log`).
//!
//! # Layout
//! - `options`: [`ScanOptions`] from [`ScanArgs`] (timezone, format, rules).
//! - `zone`: [`LogZone`], local GIN time → UTC (DST edges documented there).
//! - `input`: [`Input`], opening files/stdin, gzip by magic bytes, bounded line reading.
//! - `driver`: [`run`], the loop, [`ScanSummary`], [`Skip`].
//! - `fixed`: the engine-driven default mode; `compat`: the SPL mode.
//! - `parallel`: `--threads` from stdin and in compat mode, lines parsed on several threads,
//!   fed in order to one engine.
//! - `shard`: `--threads` in the default mode over files, the engine split by source over
//!   threads that also read and parse.
//! - `row`, `output`: [`Row`], rows kept in chunks and sorted runs merged; the `jsonl` /
//!   `csv` / `table` writers.

mod compat;
mod driver;
mod fixed;
mod input;
mod options;
mod output;
mod parallel;
mod row;
mod shard;
mod zone;

#[cfg(test)]
mod tests;

use std::io::{self, Write};

/// The engine's start-up error `ScanError` wraps.
pub use crate::detect::EngineError;
pub(crate) use driver::run;
pub use driver::{ScanSummary, Skip};
pub(crate) use input::open_inputs;
pub use input::OpenError;
pub(crate) use options::ScanOptions;
#[cfg(test)]
pub(crate) use {
    driver::scan_rows,
    input::Input,
    options::ScanMode,
    output::{write_rows, OutputFormat, COLUMNS},
    row::Row,
    zone::LogZone,
};

use crate::config::{ConfigError, ScanArgs};

/// Why `scan` stopped.
///
/// Why: argument problems (exit 2, nothing read) must be told apart from failures half-way
/// (exit 1); see [`ScanError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// `--timezone` is not a zone.
    #[error(
        "--timezone: '{0}' is not UTC, a fixed offset (+02:00, -0530, +02) or an IANA zone \
         name (Europe/Berlin)"
    )]
    Timezone(String),
    /// `--format` is not a format.
    #[error("--format: '{0}' is not one of jsonl, table, csv")]
    Format(String),
    /// `--threads 0`.
    #[error("--threads: must be at least 1")]
    Threads,
    /// `--config` is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The engine refused the settings.
    #[error("config error: {0}")]
    Engine(#[from] EngineError),
    /// An input could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// An input failed half-way (a truncated gzip file, a device error).
    #[error("reading {input}: {source}")]
    Read {
        /// The input's name (`-` for stdin).
        input: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Writing the rows failed.
    #[error("writing output: {0}")]
    Write(#[source] io::Error),
}

impl ScanError {
    /// 2 for bad arguments (nothing was scanned), 1 for a failure during the scan.
    pub fn exit_code(&self) -> u8 {
        match self {
            ScanError::Read { .. } | ScanError::Write(_) => 1,
            _ => 2,
        }
    }
}

/// The `scan` subcommand's work: options from `args`, the inputs opened in order (with a
/// progress bar on stderr when that is a terminal and the inputs are files), the rows
/// written to `out`; returns the summary.
///
/// Why: the command (`src/commands/scan.rs`) only adds stdout, stderr and exit codes (see
/// [`ScanError::exit_code`]); `stdout_is_terminal` picks the default `--format`.
pub fn scan_logs(
    args: &ScanArgs,
    stdout_is_terminal: bool,
    out: &mut dyn Write,
) -> Result<ScanSummary, ScanError> {
    let opts = ScanOptions::from_args(args, stdout_is_terminal)?;
    let (inputs, bar) = open_inputs(&args.files)?;
    let result = run(&opts, inputs, out);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

/// Locks `m` for the scan's threads (the sharded engine, the output writers), going on past
/// a poisoned lock: a panicking worker marks the shared state aborted or stopped before it
/// unwinds, and the scope passes its panic on.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
