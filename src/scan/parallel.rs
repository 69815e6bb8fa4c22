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
//! - a reader thread splits the inputs into lines ([`LineSplitter`], the same bounded
//!   splitter as the single-threaded path) and packs them into batches of about
//!   [`BATCH_BYTES`], numbered in input order;
//! - `N` parser threads: batch `i` goes to parser `i % N`, which returns one
//!   `Result<Parsed, Skip>` per line;
//! - the calling thread takes the results from parser `0, 1, .., N-1, 0, ..` in turn — the
//!   batch order, hence the line order — and feeds them to the scanner.
//!
//! Small inputs pay no thread start-up: the calling thread reads the first batch itself,
//! and when the inputs end inside it, scans it inline.

use std::ops::Range;
use std::sync::mpsc;
use std::thread;

use super::driver::{Counters, Scanner, Skip};
use super::input::{Input, Line, LineSplitter};
use super::row::Rows;
use super::ScanError;

/// Bytes of line text per batch: large enough that a batch (about 10 000 lines) costs far
/// more to parse than to pass between threads, small enough that several fit in cache-sized
/// memory per thread.
/// (Tests: 4 KiB, so that small samples run through many batches and every parser.)
#[cfg(not(test))]
pub(super) const BATCH_BYTES: usize = 1 << 20;
#[cfg(test)]
pub(super) const BATCH_BYTES: usize = 4096;

/// Batches queued per parser, each way: enough to ride out scheduling jitter, bounded so a
/// slow engine holds back the reader instead of buffering the whole input.
const QUEUE: usize = 2;

/// Lines packed end to end; `None` stands for a line over the limit.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) data: Vec<u8>,
    pub(super) lines: Vec<Option<Range<usize>>>,
}

impl Batch {
    fn push(&mut self, kind: Line, line: &[u8]) {
        match kind {
            Line::Text => {
                let start = self.data.len();
                self.data.extend_from_slice(line);
                self.lines.push(Some(start..self.data.len()));
            }
            Line::TooLong => self.lines.push(None),
        }
    }

    fn full(&self) -> bool {
        self.data.len() >= BATCH_BYTES
    }

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

/// The inputs, one after the other, cut into batches.
pub(super) struct Batches {
    inputs: std::vec::IntoIter<Input>,
    current: Option<Input>,
    lines: LineSplitter,
    max_line: usize,
}

impl Batches {
    pub(super) fn new(inputs: Vec<Input>, max_line: usize) -> Batches {
        Batches {
            inputs: inputs.into_iter(),
            current: None,
            lines: LineSplitter::new(max_line),
            max_line,
        }
    }

    /// The next batch: full, or the last one (then `done` is true). Empty only at the end.
    pub(super) fn next(&mut self) -> Result<(Batch, bool), ScanError> {
        self.refill(Batch {
            data: Vec::with_capacity(BATCH_BYTES + 4096),
            lines: Vec::with_capacity(BATCH_BYTES / 64),
        })
    }

    /// [`Batches::next`] into a batch that held an earlier one (its buffers are reused).
    pub(super) fn refill(&mut self, mut batch: Batch) -> Result<(Batch, bool), ScanError> {
        batch.data.clear();
        batch.lines.clear();
        loop {
            let input = match &mut self.current {
                Some(input) => input,
                None => match self.inputs.next() {
                    Some(input) => {
                        self.lines = LineSplitter::new(self.max_line);
                        self.current.insert(input)
                    }
                    None => return Ok((batch, true)),
                },
            };
            let ended = self
                .lines
                .each_until(&mut *input.reader, |kind, line| {
                    batch.push(kind, line);
                    !batch.full()
                })
                .map_err(|source| ScanError::Read {
                    input: input.name.clone(),
                    source,
                })?;
            if ended {
                self.current = None;
            }
            if batch.full() {
                return Ok((batch, false));
            }
        }
    }
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
        for _ in 0..threads {
            let (batch_tx, batch_rx) = mpsc::sync_channel::<Batch>(QUEUE);
            let (parsed_tx, parsed_rx) = mpsc::sync_channel(QUEUE);
            scope.spawn(move || {
                for batch in batch_rx {
                    if parsed_tx.send(batch.parse::<S>()).is_err() {
                        break;
                    }
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
                let (next, done) = batches.next()?;
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
