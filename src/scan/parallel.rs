//! `--threads N` from stdin and in compat mode: the lines parsed on several threads, the
//! engine fed in log order on one. (Over files, the default mode uses `shard`, which also
//! reuses the batches cut here.)
//!
//! What is order-independent runs in parallel: splitting a line into fields, unquoting and
//! normalising the path, building the record (or the skip reason). What depends on order
//! stays on the calling thread, exactly as in the single-threaded loop: the zone
//! conversion (the repeated DST hour is read relative to the previous line), the time
//! watermark, ticks and time breaks, and every window of the engine. So the rows, the
//! summary and the errors are the same as with `--threads 1`, byte for byte.
//!
//! Pipeline (std scoped threads and bounded channels, no new dependency):
//! - a reader thread reads the inputs into batches of about [`BATCH_BYTES`] ([`Batches`]:
//!   read straight into the batch and cut into lines in place, the same lines as the
//!   single-threaded path's splitter gives), numbered in input order;
//! - `N` parser threads: batch `i` goes to parser `i % N`, which returns one
//!   `Result<Parsed, Skip>` per line;
//! - the calling thread takes the results from parser `0, 1, .., N-1, 0, ..` in turn — the
//!   batch order, hence the line order — and feeds them to the scanner.
//!
//! Small inputs pay no thread start-up: the calling thread reads the first batch itself,
//! and when the inputs end inside it, scans it inline.

use std::io::{self, BufRead};
use std::ops::Range;
use std::sync::mpsc;
use std::thread;

use super::driver::{Counters, Scanner, Skip};
use super::input::Input;
use super::row::Rows;
use super::ScanError;

/// Bytes read per batch (about 5 000 lines): large enough that a batch costs far more to
/// parse than to pass between threads, small enough that the batches in flight stay in
/// cache-sized memory. Above the inputs' read buffer (`input::BUF_BYTES`), so that a batch
/// is read from the file straight into its own buffer, not copied through that one.
/// (Tests: 4 KiB, so that small samples run through many batches and every parser.)
#[cfg(not(test))]
pub(super) const BATCH_BYTES: usize = 256 * 1024;
#[cfg(test)]
pub(super) const BATCH_BYTES: usize = 4096;

/// Batches queued per parser, each way: enough to ride out scheduling jitter, bounded so a
/// slow engine holds back the reader instead of buffering the whole input.
const QUEUE: usize = 2;

/// A run of input read in one piece, and the lines in it; `None` stands for a line over
/// the limit.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// The bytes read are `data[..filled]`; the rest was zeroed once and is reused when the
    /// batch is refilled ([`Batches::refill`]: reading into it needs no zeroing again).
    pub(super) data: Vec<u8>,
    filled: usize,
    pub(super) lines: Vec<Option<Range<usize>>>,
}

impl Batch {
    fn parse<S: Scanner>(&self) -> Vec<Result<S::Parsed, Skip>> {
        self.lines
            .iter()
            .map(|line| match line {
                Some(range) => S::parse(&self.data[range.clone()]),
                None => Err(Skip::TooLong),
            })
            .collect()
    }
}

/// The inputs, one after the other, read into batches and cut into lines in place: the
/// same lines as [`LineSplitter`](super::input::LineSplitter) gives (a line holds its `\n`
/// if it had one; a line whose text, `\n` excluded, is over the limit is a `None`; the
/// last line of an input may lack its `\n`; inputs do not run into each other).
///
/// Why: the batches were filled line by line from the splitter, each line copied out of
/// the read buffer; on the row-heavy corpus that copy and its bookkeeping were 4 % of a
/// two-thread scan's CPU (docs/performance.md).
pub(super) struct Batches {
    inputs: std::vec::IntoIter<Input>,
    current: Option<Input>,
    max_line: usize,
    /// The start of the line the previous batch ended in, to begin the next one.
    carry: Vec<u8>,
    /// Inside a line already given as too long: its bytes up to its `\n` are dropped.
    skipping: bool,
}

impl Batches {
    pub(super) fn new(inputs: Vec<Input>, max_line: usize) -> Batches {
        Batches {
            inputs: inputs.into_iter(),
            current: None,
            max_line: max_line.max(1),
            carry: Vec::new(),
            skipping: false,
        }
    }

    /// The next batch: full, or the last one (then `done` is true). Empty only at the end.
    pub(super) fn next(&mut self) -> Result<(Batch, bool), ScanError> {
        self.refill(Batch {
            data: Vec::new(),
            filled: 0,
            lines: Vec::with_capacity(BATCH_BYTES / 64),
        })
    }

    /// [`Batches::next`] into a batch that held an earlier one (its buffers are reused).
    pub(super) fn refill(&mut self, mut batch: Batch) -> Result<(Batch, bool), ScanError> {
        batch.lines.clear();
        batch.filled = 0;
        grow(&mut batch, self.carry.len());
        batch.data[..self.carry.len()].copy_from_slice(&self.carry);
        batch.filled = self.carry.len();
        self.carry.clear();
        // `data[..cut]` is cut into lines; `data[cut..searched]` holds no `\n`.
        let (mut cut, mut searched) = (0, 0);
        loop {
            if batch.filled >= BATCH_BYTES && !batch.lines.is_empty() {
                self.carry.extend_from_slice(&batch.data[cut..batch.filled]);
                batch.filled = cut;
                return Ok((batch, false));
            }
            let input = match &mut self.current {
                Some(input) => input,
                None => match self.inputs.next() {
                    Some(input) => self.current.insert(input),
                    None => return Ok((batch, true)),
                },
            };
            // Up to the batch size; one batch size more when the batch is one unfinished
            // line (a line may be longer than a batch).
            let room = BATCH_BYTES - batch.filled % BATCH_BYTES;
            let got = read_into(&mut *input.reader, &mut batch, room).map_err(|source| {
                ScanError::Read {
                    input: input.name.clone(),
                    source,
                }
            })?;
            self.cut(&mut batch, &mut cut, &mut searched);
            if got < room {
                // The end of this input: its last line may lack its `\n`.
                if !self.skipping && batch.filled > cut {
                    let end = batch.filled;
                    batch
                        .lines
                        .push((end - cut <= self.max_line).then_some(cut..end));
                }
                self.skipping = false;
                cut = batch.filled;
                searched = cut;
                self.current = None;
            }
        }
    }

    /// Cuts the whole lines after `cut` into `batch.lines`, moving `cut` past them. An
    /// unfinished line already over the limit is given as too long now and its bytes dropped
    /// (with those that follow up to its `\n`: `skipping`).
    fn cut(&mut self, batch: &mut Batch, cut: &mut usize, searched: &mut usize) {
        loop {
            let from = (*cut).max(*searched);
            let Some(off) = memchr::memchr(b'\n', &batch.data[from..batch.filled]) else {
                *searched = batch.filled;
                if !self.skipping && batch.filled - *cut > self.max_line {
                    batch.lines.push(None);
                    self.skipping = true;
                }
                if self.skipping {
                    batch.filled = *cut;
                    *searched = *cut;
                }
                return;
            };
            let end = from + off + 1;
            if self.skipping {
                batch.data.copy_within(end..batch.filled, *cut);
                batch.filled -= end - *cut;
                self.skipping = false;
                *searched = *cut;
                continue;
            }
            let text = end - 1 - *cut;
            batch
                .lines
                .push((text <= self.max_line).then_some(*cut..end));
            *cut = end;
            *searched = end;
        }
    }
}

/// Makes room for `more` bytes after `batch.filled` (zeroed the first time only).
fn grow(batch: &mut Batch, more: usize) {
    let want = batch.filled + more;
    if batch.data.len() < want {
        batch.data.resize(want, 0);
    }
}

/// Reads up to `room` bytes into `batch` after what it holds: fewer only at the end of the
/// input. Reads of at least the inputs' buffer size go from the file straight into the
/// batch ([`std::io::BufReader`] passes them through).
fn read_into(reader: &mut dyn BufRead, batch: &mut Batch, room: usize) -> io::Result<usize> {
    grow(batch, room);
    let start = batch.filled;
    let mut got = 0;
    while got < room {
        match reader.read(&mut batch.data[start + got..start + room]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    batch.filled += got;
    Ok(got)
}

/// Scans `inputs` with `threads` parser threads (at least 2), feeding `scanner` in order.
pub(super) fn scan_all<S>(
    mut scanner: S,
    inputs: Vec<Input>,
    max_line: usize,
    threads: usize,
    counters: &mut Counters,
) -> Result<Rows, ScanError>
where
    S: Scanner,
    S::Parsed: Send,
{
    parse_in_order::<S>(inputs, max_line, threads, |parsed| {
        feed(&mut scanner, parsed, counters);
    })?;
    Ok(scanner.finish(counters))
}

/// Parses `inputs` on `threads` parser threads (at least 2) and hands each batch's results
/// to `consume` on the calling thread, in input order.
pub(super) fn parse_in_order<S>(
    inputs: Vec<Input>,
    max_line: usize,
    threads: usize,
    mut consume: impl FnMut(Vec<Result<S::Parsed, Skip>>),
) -> Result<(), ScanError>
where
    S: Scanner,
    S::Parsed: Send,
{
    let mut batches = Batches::new(inputs, max_line);
    let (first, done) = batches.next()?;
    if done {
        consume(first.parse::<S>());
        return Ok(());
    }
    let threads = threads.max(2);
    thread::scope(|scope| {
        let mut to_parsers = Vec::with_capacity(threads);
        let mut from_parsers = Vec::with_capacity(threads);
        // Parsed batches go back to the reader, whose buffers are then not zeroed again.
        let (spare_tx, spare_rx) = mpsc::channel::<Batch>();
        for _ in 0..threads {
            let (batch_tx, batch_rx) = mpsc::sync_channel::<Batch>(QUEUE);
            let (parsed_tx, parsed_rx) = mpsc::sync_channel(QUEUE);
            let spare_tx = spare_tx.clone();
            scope.spawn(move || {
                for batch in batch_rx {
                    if parsed_tx.send(batch.parse::<S>()).is_err() {
                        break;
                    }
                    // The reader may have finished: the batch is then just dropped.
                    let _ = spare_tx.send(batch);
                }
            });
            to_parsers.push(batch_tx);
            from_parsers.push(parsed_rx);
        }
        let reader = scope.spawn(move || -> Result<(), ScanError> {
            let mut batch = first;
            for seq in 0.. {
                // A closed channel means the consumer stopped: nothing left to do.
                if to_parsers[seq % to_parsers.len()].send(batch).is_err() {
                    return Ok(());
                }
                let (next, done) = match spare_rx.try_recv() {
                    Ok(spare) => batches.refill(spare)?,
                    Err(_) => batches.next()?,
                };
                if done && next.lines.is_empty() {
                    return Ok(());
                }
                batch = next;
            }
            Ok(())
        });
        // Parser `i % N` got batch `i`; the first closed channel in turn is the end.
        for seq in 0.. {
            let Ok(parsed) = from_parsers[seq % from_parsers.len()].recv() else {
                break;
            };
            consume(parsed);
        }
        reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Feeds one batch's results in order, as the single-threaded loop would.
fn feed<S: Scanner>(
    scanner: &mut S,
    parsed: Vec<Result<S::Parsed, Skip>>,
    counters: &mut Counters,
) {
    for item in parsed {
        counters.lines_read += 1;
        match item {
            Ok(p) => scanner.feed(p, counters),
            Err(why) => counters.skip(why),
        }
    }
}
