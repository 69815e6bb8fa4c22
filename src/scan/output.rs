//! Writing rows as JSON lines, CSV or an aligned table (README, "scan").
//!
//! Latencies are written with exactly two decimals in every format (`57.20`): they are
//! rounded to two decimals, and printing them so keeps `jsonl`, `csv` and `table` byte-equal
//! for the same value (`57.20` is a valid JSON number; JSON readers see `57.2`).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Condvar, Mutex, PoisonError};

use chrono::DateTime;

use super::lock;
use super::row::{merge, merge_piece, pieces, Row, Run};

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

/// Rows per formatting chunk: each chunk is written to a buffer of its own (on its own
/// thread when `threads` > 1), then the buffers go out in order.
#[cfg(not(test))]
const CHUNK_ROWS: usize = 4 * 1024;
/// Small in tests, so that small inputs take the chunked and piecewise paths too.
#[cfg(test)]
const CHUNK_ROWS: usize = 64;

/// Writes the rows of sorted `runs` (one per engine shard) in output order, as
/// [`write_rows`] writes them merged: the same bytes. With several runs and `threads` > 1,
/// the merge is cut into pieces ([`pieces`]) that are merged and formatted on `threads`
/// threads and written in order; `table` (which measures every
/// row first) is merged whole.
pub(crate) fn write_runs<'a>(
    format: OutputFormat,
    runs: &'a [Run],
    threads: usize,
    out: &mut dyn Write,
) -> io::Result<()> {
    let total: usize = runs.iter().map(Run::len).sum();
    let piecewise = runs.len() > 1 && threads > 1 && total > CHUNK_ROWS;
    let one: fn(&Row, &mut Vec<u8>) = match format {
        OutputFormat::Jsonl if piecewise => write_jsonl,
        OutputFormat::Csv if piecewise => {
            writeln!(out, "{}", COLUMNS.join(","))?;
            write_csv
        }
        _ => return write_rows(format, &merge(runs), threads, out),
    };
    let cut = pieces(runs, total.div_ceil(CHUNK_ROWS));
    // Per buffer: a piece's rows in order, and their bytes; both reused piece after piece.
    in_order(
        &cut,
        threads,
        || (Vec::<&'a Row>::new(), Vec::new()),
        |piece, (rows, bytes)| {
            merge_piece(runs, piece, rows);
            bytes.clear();
            bytes.reserve(rows.len() * 256);
            for row in rows.iter() {
                one(row, bytes);
            }
        },
        |(_, bytes)| bytes,
        out,
    )
}

/// Runs `work` on every job on `threads` threads of their own, each taking the next job
/// and a free buffer, and writes what each job left in its buffer (`bytes`) in job order on
/// the calling thread, as soon as that job is done. `threads` + 2 buffers circulate, so
/// at most that many jobs' bytes are held at once.
///
/// Why: jobs ran in rounds of one per thread, with the bytes written between rounds, and
/// a round lasted as long as its slowest job: on two cores, one thread worked while the
/// other waited for most of the output phase (docs/performance.md).
fn in_order<J: Sync, B: Send>(
    jobs: &[J],
    threads: usize,
    new_buf: impl Fn() -> B,
    work: impl Fn(&J, &mut B) + Sync,
    bytes: impl Fn(&B) -> &[u8],
    out: &mut dyn Write,
) -> io::Result<()> {
    let threads = threads.clamp(1, jobs.len().max(1));
    let pool = Mutex::new(Pool {
        free: (0..threads + 2).map(|_| new_buf()).collect(),
        next: 0,
        done: BTreeMap::new(),
        stop: false,
    });
    let changed = Condvar::new();
    let (pool, changed, work) = (&pool, &changed, &work);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(move || {
                let _stop = StopOnPanic(pool, changed);
                while let Some((job, mut buf)) = Pool::take(pool, changed, jobs.len()) {
                    work(&jobs[job], &mut buf);
                    lock(pool).done.insert(job, buf);
                    changed.notify_all();
                }
            });
        }
        // A panic while writing stops the workers too, so that the scope can end.
        let _stop = StopOnPanic(pool, changed);
        let mut written = Ok(());
        for job in 0..jobs.len() {
            let Some(buf) = Pool::finished(pool, changed, job) else {
                // A worker panicked: the scope passes the panic on.
                break;
            };
            written = out.write_all(bytes(&buf));
            let mut st = lock(pool);
            st.free.push(buf);
            st.stop |= written.is_err();
            drop(st);
            changed.notify_all();
            if written.is_err() {
                break;
            }
        }
        written
    })
}

/// The buffers and jobs [`in_order`]'s threads share.
struct Pool<B> {
    /// Buffers free for a next job.
    free: Vec<B>,
    /// The next job to take.
    next: usize,
    /// Jobs done and not yet written, with their buffers.
    done: BTreeMap<usize, B>,
    /// Writing failed or a worker panicked: nobody takes another job.
    stop: bool,
}

impl<B> Pool<B> {
    /// The next job and a buffer for it; `None` when there is none left (or `stop`). A
    /// job is taken only with a buffer, in job order: the lowest job not yet written always
    /// has its buffer, so the writer never waits on a job that waits for a buffer.
    fn take(pool: &Mutex<Pool<B>>, changed: &Condvar, jobs: usize) -> Option<(usize, B)> {
        let mut st = lock(pool);
        loop {
            if st.stop || st.next >= jobs {
                return None;
            }
            if let Some(buf) = st.free.pop() {
                st.next += 1;
                return Some((st.next - 1, buf));
            }
            st = changed.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The buffer of `job` once it is done; `None` when a worker panicked.
    fn finished(pool: &Mutex<Pool<B>>, changed: &Condvar, job: usize) -> Option<B> {
        let mut st = lock(pool);
        loop {
            if let Some(buf) = st.done.remove(&job) {
                return Some(buf);
            }
            if st.stop {
                return None;
            }
            st = changed.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Sets `stop` when a worker unwinds, so that the writer stops waiting for its job (or the
/// writer does, so that the workers stop waiting for buffers).
struct StopOnPanic<'a, B>(&'a Mutex<Pool<B>>, &'a Condvar);

impl<B> Drop for StopOnPanic<'_, B> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(self.0).stop = true;
            self.1.notify_all();
        }
    }
}

/// Writes `rows` (already in output order (README, "scan")) in `format`. `jsonl` and `csv`
/// are formatted on up to `threads` threads, chunk by chunk, and written in order: the
/// bytes are the same for any `threads`.
/// `rows` are rows or references to them (the scan orders references, see `driver`).
pub(crate) fn write_rows<R: Borrow<Row> + Sync>(
    format: OutputFormat,
    rows: &[R],
    threads: usize,
    out: &mut dyn Write,
) -> io::Result<()> {
    let one: fn(&Row, &mut Vec<u8>) = match format {
        OutputFormat::Table => return write_table(rows, out),
        OutputFormat::Jsonl => write_jsonl,
        OutputFormat::Csv => {
            writeln!(out, "{}", COLUMNS.join(","))?;
            write_csv
        }
    };
    // Each chunk is formatted into a buffer that is cleared and reused for the next one,
    // instead of a fresh buffer of about 4 MiB per chunk: one allocation per writer, not one
    // per chunk. (mimalloc's purge statistics did not move measurably with it: the saving is
    // the allocator's work, not shown in page faults.)
    let format_chunk = |chunk: &[R], buf: &mut Vec<u8>| {
        buf.clear();
        buf.reserve(chunk.len() * 256);
        for row in chunk {
            one(row.borrow(), buf);
        }
    };
    if threads < 2 || rows.len() <= CHUNK_ROWS {
        let mut buf = Vec::new();
        return rows.chunks(CHUNK_ROWS).try_for_each(|chunk| {
            format_chunk(chunk, &mut buf);
            out.write_all(&buf)
        });
    }
    // Chunks formatted in parallel, written in order.
    let chunks: Vec<&[R]> = rows.chunks(CHUNK_ROWS).collect();
    in_order(
        &chunks,
        threads,
        Vec::new,
        |chunk, buf| format_chunk(chunk, buf),
        |buf| buf,
        out,
    )
}

/// Appends `v` with two decimals.
///
/// Row figures are already rounded to two decimals, i.e. the `f64` nearest some `k / 100`;
/// that one is printed from the integer `k` (what `{:.2}` prints for it: the exact binary
/// value is within half an ulp of `k / 100`, far from a rounding boundary). Anything else
/// (negative, huge, not so rounded) goes through `{:.2}` itself.
fn push_number(buf: &mut Vec<u8>, v: f64) {
    let k = (v * 100.0).round();
    if v.is_sign_positive() && k < 1e15 && k / 100.0 == v {
        // `k` is a whole number in 0..1e15: exact as an integer.
        let k = k as u64;
        push_u64(buf, k / 100);
        let cents = (k % 100) as u8;
        buf.extend_from_slice(&[b'.', b'0' + cents / 10, b'0' + cents % 10]);
        return;
    }
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "{v:.2}");
}

/// Appends `n` in decimal.
fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// Appends `n` in decimal.
fn push_i64(buf: &mut Vec<u8>, n: i64) {
    if n < 0 {
        buf.push(b'-');
    }
    push_u64(buf, n.unsigned_abs());
}

fn number(v: f64) -> String {
    format!("{v:.2}")
}

/// Appends `s` as a JSON string, escaped exactly as `serde_json` writes it: `"` and `\\`
/// escaped, `\b \t \n \f \r` by name, other control characters below 0x20 as `\u00xx`
/// (lower-case hex), everything else (DEL, non-ASCII) as is.
///
/// The bytes between escapes are found with a byte table and copied in one piece.
fn push_json_str(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    /// The bytes `serde_json` escapes: control characters, `"` and `\\`.
    const ESCAPED: [bool; 256] = {
        let mut set = [false; 256];
        let mut b = 0;
        while b < 0x20 {
            set[b] = true;
            b += 1;
        }
        set[b'"' as usize] = true;
        set[b'\\' as usize] = true;
        set
    };
    buf.push(b'"');
    let mut rest = s.as_bytes();
    while let Some(at) = rest.iter().position(|&b| ESCAPED[usize::from(b)]) {
        buf.extend_from_slice(&rest[..at]);
        let b = rest[at];
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            _ => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
        };
        buf.extend_from_slice(escape);
        rest = &rest[at + 1..];
    }
    buf.extend_from_slice(rest);
    buf.push(b'"');
}

fn push_json_number(buf: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        push_number(buf, v);
    } else {
        buf.extend_from_slice(b"null");
    }
}

fn write_jsonl(r: &Row, buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"{\"rule\":");
    push_json_str(buf, &r.rule);
    buf.extend_from_slice(b",\"_time\":");
    push_i64(buf, r.time);
    buf.extend_from_slice(b",\"src\":");
    push_json_str(buf, &r.src);
    buf.extend_from_slice(b",\"uri_path\":");
    match r.uri_path.as_deref() {
        Some(path) => push_json_str(buf, path),
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"count\":");
    push_u64(buf, r.count);
    buf.extend_from_slice(b",\"avg_response_time\":");
    push_json_number(buf, r.avg_response_time);
    buf.extend_from_slice(b",\"max_response_time\":");
    push_json_number(buf, r.max_response_time);
    buf.extend_from_slice(b",\"severity\":\"");
    buf.extend_from_slice(r.severity.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"attack_type\":");
    push_json_str(buf, &r.attack_type);
    buf.extend_from_slice(b"}\n");
}

/// The row's fields as text, in [`COLUMNS`] order (`time` as given).
fn fields(r: &Row, time: String) -> [String; 9] {
    [
        r.rule.to_string(),
        time,
        r.src.clone(),
        r.uri_path.as_deref().unwrap_or_default().to_owned(),
        r.count.to_string(),
        number(r.avg_response_time),
        number(r.max_response_time),
        r.severity.as_str().to_owned(),
        r.attack_type.to_string(),
    ]
}

/// Appends one RFC 4180 field: quoted (with `"` doubled) when it holds `,`, `"`, CR or LF.
fn push_csv_field(buf: &mut Vec<u8>, text: &str) {
    if text.contains([',', '"', '\r', '\n']) {
        buf.push(b'"');
        buf.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        buf.push(b'"');
    } else {
        buf.extend_from_slice(text.as_bytes());
    }
}

/// One CSV line (numbers never need quoting).
fn write_csv(r: &Row, buf: &mut Vec<u8>) {
    push_csv_field(buf, &r.rule);
    let _ = write!(buf, ",{},", r.time);
    push_csv_field(buf, &r.src);
    buf.push(b',');
    push_csv_field(buf, r.uri_path.as_deref().unwrap_or_default());
    let _ = write!(buf, ",{},", r.count);
    push_number(buf, r.avg_response_time);
    buf.push(b',');
    push_number(buf, r.max_response_time);
    buf.push(b',');
    push_csv_field(buf, r.severity.as_str());
    buf.push(b',');
    push_csv_field(buf, &r.attack_type);
    buf.push(b'\n');
}

/// A crafted log line may carry escape sequences or marks that reorder text: shown escaped
/// ([`crate::text::printable`]), so the table cannot drive the terminal or show another path
/// than the one logged.
fn printable(text: &str) -> String {
    crate::text::printable(text)
}

fn human_time(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0).map_or_else(
        || secs.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

fn write_table<R: Borrow<Row>>(rows: &[R], out: &mut dyn Write) -> io::Result<()> {
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
        let r = r.borrow();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::event::round2;

    #[test]
    fn numbers_print_as_two_decimal_format_does() {
        let mut values = vec![
            0.0,
            -0.0,
            0.005,
            0.015,
            57.2,
            1e14,
            1e15,
            1e300,
            -3.25,
            f64::NAN,
            f64::INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
        ];
        let mut x = 0.001_f64;
        while x < 1e16 {
            values.extend([x, round2(x), round2(x * 1.0137), x * 0.999_999_7]);
            x *= 1.011;
        }
        values.extend((0..200_000).map(|k| round2(f64::from(k) * 0.0037)));
        for v in values {
            let mut got = Vec::new();
            push_number(&mut got, v);
            assert_eq!(String::from_utf8(got).unwrap(), format!("{v:.2}"), "{v:e}");
        }
        for n in [0, 7, -7, 10, 99, 100, i64::MAX, i64::MIN] {
            let mut got = Vec::new();
            push_i64(&mut got, n);
            assert_eq!(String::from_utf8(got).unwrap(), n.to_string());
        }
    }
}
