//! `--threads N` in the default mode: the engine itself split by source over `N` threads.
//!
//! Every window key holds one source (the engine's [`SourceKey`]: an IPv4 address or an
//! IPv6 network), so the engine's work splits into `N` engines, one per *shard* of the
//! sources, each seeing the records of its sources in log order. What is global (the zone
//! conversion, the watermark, ticks and time breaks: the [`Clock`]; and which shard counts
//! which source: the [`Balance`]) is worked out once per batch, in batch order, by the
//! [`Walker`], from each line's [`Stamp`] (its time, already converted while parsing when
//! the zone is a fixed offset, and its source's bucket). The batch's [`Walk`] gives each
//! shard its own list: the ticks and time breaks, and the lines of its sources with their
//! times. Each shard therefore sees, for each of its keys, exactly the sequence of records,
//! ticks and breaks the single engine sees, and gives the same rows for it, in the same
//! order.
//!
//! Pipeline: `N` workers, each of them one shard, and no other thread. A worker's next job
//! is, in this order of preference:
//! - *consume* the next batch in input order once it is parsed: take the batch's walk (the
//!   first shard to reach the batch makes it, the others wait for it) and count the lines
//!   its list names;
//! - else *produce*: read the next batch of lines (one reader at a time, so batches are
//!   numbered in input order), parse it, and publish it, shared read-only, for all shards;
//! - else wait for a batch another worker is parsing.
//!
//! Parsing thus goes to whichever worker has time: a shard whose sources are quiet parses
//! more of the batches. A batch is freed when the last shard has counted it, and reading
//! stops a few batches per worker ([`AHEAD_PER_WORKER`]) in front of the slowest shard, so
//! memory stays bounded.
//! The counters (lines, skips, time breaks) are the walker's; late records are summed over
//! the shards.
//!
//! Why this shape: an earlier pipeline ran a reader thread, `N` parser threads and the clock
//! on the calling thread besides the `N` shards (2N + 2 threads), each parsed batch written
//! on one core and read on another. On the row-heavy benchmark corpus `--threads 2` went
//! from 1.52× to 1.70× one thread with this shape (docs/performance.md).
//!
//! Which shard counts a source is decided as the records come ([`Balance`]), by the walker.
//!
//! Why one walk per batch: every shard used to run its own clock and balance over every
//! line. With two shards that was the same per-line work done twice, over stamps written
//! by the other core (docs/performance.md).
//!
//! Sorting and merging: when a shard has counted every batch, it cuts its rows into
//! [`SORT_PARTS`] parts in engine order and leaves them to be sorted (stable, in output
//! order) by whichever worker is free, the largest first; a worker waits for the others'
//! rows until every shard has left its own. The sorted parts are merged as runs, by shard
//! and part. Two rows that compare equal have the same `src`, hence come from the same
//! shard, where the merge keeps them in the order of its parts, and each part in the single
//! engine's order: the output is byte-identical.
//!
//! The one global state left is the key cap (`max_tracked_keys`): the single engine evicts
//! when its total key count reaches it. Each shard records its peak key count; when the
//! peaks add up to less than the cap, the single engine's total (at any moment the sum of
//! the shards' counts) never reached it, and nothing was evicted either way. Otherwise the
//! sharded result may differ and is thrown away: [`scan`] returns `None`, and the caller
//! scans the inputs again with one engine.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::driver::{Counters, Scanner, Skip};
use super::fixed::{Clock, Counting, FixedScan, Request};
use super::input::Input;
use super::parallel::{Batch, Batches};
use super::row::{Rows, Run};
use super::zone::LogZone;
use super::{lock, ScanError};
use crate::detect::{EngineOptions, Rule, SourceKey};

/// Batches read in front of the slowest shard, per worker (plus [`AHEAD`] once): enough
/// that every worker can parse one while the others count, and none waits on a momentarily
/// slow one; few enough that memory stays a few MiB per worker.
const AHEAD_PER_WORKER: u64 = 1;
const AHEAD: u64 = 2;

/// Source buckets: a source's bucket is a hash of its [`SourceKey`], and whole buckets are
/// given to shards ([`Balance`]). Many more buckets than busy sources, so that two heavy
/// sources seldom share one.
const BUCKET_BITS: u32 = 12;
const BUCKETS: usize = 1 << BUCKET_BITS;

/// One batch as parsed, shared by the shards: each line's request (or why it is skipped),
/// and for each line the little the walker reads of it.
struct Parsed {
    /// The batch's number (batches are walked in this order).
    seq: u64,
    lines: Vec<Result<Request, Skip>>,
    stamps: Vec<Stamp>,
    /// The batch's walk, made by the first shard to count the batch.
    walk: OnceLock<Walk>,
    /// The item lists of an earlier walk, cleared, for this batch's (the walk takes them).
    lists: Mutex<Vec<Vec<Item>>>,
}

impl Parsed {
    fn empty() -> Parsed {
        Parsed {
            seq: 0,
            lines: Vec::new(),
            stamps: Vec::new(),
            walk: OnceLock::new(),
            lists: Mutex::new(Vec::new()),
        }
    }
}

/// What the clock and the balance made of one batch: per shard, in log order, the time
/// breaks and ticks (in every shard's list) and the lines of its own sources.
struct Walk {
    items: Vec<Vec<Item>>,
}

#[derive(Clone, Copy)]
enum Item {
    /// Close every window.
    Break,
    /// Tick the engine at this time.
    Tick(DateTime<Utc>),
    /// Count the record of line `line` of the batch, completed at `at`.
    Count { line: u32, at: DateTime<Utc> },
}

/// The order-dependent state of the scan, run once over every line in log order: the
/// clock, the balance, and the counters (lines, skips, time breaks).
struct Walker {
    clock: Clock,
    balance: Balance,
    counters: Counters,
    /// The number of the batch to walk next.
    next: u64,
}

impl Walker {
    /// Walks the next batch (the one after the last walked).
    fn walk(&mut self, parsed: &Parsed) -> Walk {
        debug_assert_eq!(parsed.seq, self.next, "batches are walked in order");
        self.next += 1;
        let shards = self.balance.load.len();
        let mut items = std::mem::take(&mut *lock(&parsed.lists));
        items.resize_with(shards, Vec::new);
        let counters = &mut self.counters;
        for (line, stamp) in parsed.stamps.iter().enumerate() {
            counters.lines_read += 1;
            let step = match stamp.when {
                When::At(at) => self.clock.step_secs(stamp.secs, at, counters),
                When::Local(local) => self.clock.step(local, counters),
                When::Skipped(why) => {
                    counters.skip(why);
                    continue;
                }
            };
            let Some(step) = step else {
                continue;
            };
            if step.time_break {
                items.iter_mut().for_each(|list| list.push(Item::Break));
            }
            if let Some(now) = step.tick {
                items.iter_mut().for_each(|list| list.push(Item::Tick(now)));
            }
            // A batch holds far fewer lines than `u32::MAX` (a few MiB of text at most).
            let line = line as u32;
            items[self.balance.assign(stamp.bucket)].push(Item::Count { line, at: step.at });
        }
        Walk { items }
    }
}

/// What the walker reads of every line: its time for the clock, and its source's bucket.
/// A shard reads the line's [`Request`] only for the records it counts itself.
///
/// Why: walking the requests themselves (about 100 bytes each, written by the core that
/// parsed them) and converting each line's time on the walking thread cost the two-thread
/// scan 9 % more instructions than one thread (docs/performance.md).
#[derive(Clone, Copy)]
struct Stamp {
    when: When,
    /// The epoch second of `When::At`'s instant (0 for the other kinds), computed on the
    /// parsing thread.
    secs: i64,
    bucket: u16,
}

#[derive(Clone, Copy)]
enum When {
    /// Skipped while parsing.
    Skipped(Skip),
    /// The line's instant: the zone is a fixed offset, converted while parsing.
    At(DateTime<Utc>),
    /// The line's local time in a named zone, converted in log order by the clock.
    Local(NaiveDateTime),
}

/// The bucket of a source: the top bits of a multiplicative hash of its key.
///
/// Why not the engine's hasher: a general hash of the 24-byte key cost 76 instructions a
/// line; any spread of sources over buckets gives the same rows (each source lives in one
/// shard), and a skewed one costs only balance.
fn bucket(key: &SourceKey) -> u16 {
    let [a, b, c] = key.words();
    let mixed = (a ^ b.rotate_left(32) ^ c.rotate_left(48)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // The top `BUCKET_BITS` bits: below `BUCKETS`, which fits in a u16.
    (mixed >> (u64::BITS - BUCKET_BITS)) as u16
}

/// Which shard counts each bucket, decided the first time a bucket is seen: the shard with
/// the fewest records so far (the lowest on a tie). The [`Walker`] runs this over every
/// record in log order.
///
/// Why: the load is a few sources (in the benchmark corpus one of ~50 clients sends a
/// quarter of all requests); a fixed hash split of its sources gave one of 2 shards 63 % of
/// the engine's `observe` work. Balancing on first sight gives the next new sources to the
/// shard the heavy ones did not go to. Any split gives the same rows: each source lives in
/// one shard.
struct Balance {
    owner: Vec<u8>,
    load: Vec<u64>,
}

impl Balance {
    const NONE: u8 = u8::MAX;

    fn new(shards: usize) -> Balance {
        Balance {
            owner: vec![Balance::NONE; BUCKETS],
            load: vec![0; shards],
        }
    }

    /// The shard of a record in `bucket`, which it is counted against.
    fn assign(&mut self, bucket: u16) -> usize {
        let slot = &mut self.owner[usize::from(bucket) % BUCKETS];
        if *slot == Balance::NONE {
            let lightest = (0..self.load.len())
                .min_by_key(|&s| self.load[s])
                .unwrap_or(0);
            // Shards are fewer than `NONE` (see `scan`).
            *slot = lightest as u8;
        }
        let shard = usize::from(*slot);
        self.load[shard] += 1;
        shard
    }
}

/// What the workers share, under one lock.
struct State {
    /// Parsed batches by number, with the number of shards yet to take them.
    published: BTreeMap<u64, (Arc<Parsed>, usize)>,
    /// Buffers of batches already parsed, and of parsed batches every shard has counted,
    /// for the next ones.
    ///
    /// Why: a fresh megabyte for each batch, and as much again for its parsed lines, was
    /// taken from the allocator and first-touched for each batch: in one profile of
    /// `--threads 2`, 3 % of all samples were the kernel zeroing pages for those two.
    spare_batches: Vec<Batch>,
    spare_parsed: Vec<Parsed>,
    /// The number the next batch read gets.
    next_read: u64,
    /// Per shard, the number of the next batch it counts.
    consumed: Vec<u64>,
    /// Some worker is reading a batch.
    reading: bool,
    /// How many batches there are, once the input has ended (or failed).
    end: Option<u64>,
    /// The read error that ended the input early.
    error: Option<ScanError>,
    /// A worker panicked: the others stop waiting.
    aborted: bool,
    /// Batch 0, read by the calling thread to see whether threads are worth starting.
    first: Option<Batch>,
    /// Parts of the shards' rows to sort, by (shard, part): each shard leaves its rows here
    /// once it has counted every batch.
    to_sort: Vec<((usize, usize), Rows)>,
    /// The sorted parts, by (shard, part).
    sorted: Vec<((usize, usize), Run)>,
    /// Shards that have left their rows.
    rows_left: usize,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// The inputs, cut into batches; only the worker with `reading` set touches them.
    batches: Mutex<Batches>,
    /// Walks each batch once, in batch order: only inside [`Parsed::walk`]'s
    /// initialisation, which the first shard to count a batch runs.
    walker: Mutex<Walker>,
    shards: usize,
    ipv6_prefix: u8,
    zone: LogZone,
}

/// What a worker gives back: its late records and its peak key count. (Its rows, sorted,
/// are in [`State::sorted`].)
type ShardResult = (u64, usize);

/// Parts a shard's rows are cut into for sorting: the shard that finishes first sorts part
/// of the other's rows.
const SORT_PARTS: usize = 2;

/// Scans `inputs` with `threads` workers, each an engine shard that also reads and parses.
/// `None` when the key cap may have been reached (see the module docs): nothing was
/// written, and the caller must scan again with one engine (and fresh counters).
pub(super) fn scan(
    rules: &[Rule],
    options: &EngineOptions,
    zone: LogZone,
    inputs: Vec<Input>,
    max_line: usize,
    threads: usize,
    counters: &mut Counters,
) -> Result<Option<Vec<Run>>, ScanError> {
    let shards = threads.clamp(2, usize::from(Balance::NONE) - 1);
    let mut batches = Batches::new(inputs, max_line);
    let (first, done) = batches.next()?;
    if done {
        // One batch: no thread is worth starting.
        let mut scanner = FixedScan::new(rules.to_vec(), options.clone(), zone)?;
        for line in first.lines.iter() {
            counters.lines_read += 1;
            match line {
                Some(range) => match FixedScan::parse(&first.data[range.clone()]) {
                    Ok(req) => scanner.feed(req, counters),
                    Err(why) => counters.skip(why),
                },
                None => counters.skip(Skip::TooLong),
            }
        }
        return Ok(Some(vec![Run::sorted(scanner.finish(counters), 1)]));
    }
    let mut workers = Vec::with_capacity(shards);
    for _ in 0..shards {
        workers.push(Counting::new(rules.to_vec(), options.clone())?);
    }
    let shared = Shared {
        state: Mutex::new(State {
            published: BTreeMap::new(),
            spare_batches: Vec::new(),
            spare_parsed: Vec::new(),
            next_read: 1,
            consumed: vec![0; shards],
            reading: false,
            end: None,
            error: None,
            aborted: false,
            first: Some(first),
            to_sort: Vec::new(),
            sorted: Vec::new(),
            rows_left: 0,
        }),
        changed: Condvar::new(),
        batches: Mutex::new(batches),
        walker: Mutex::new(Walker {
            clock: Clock::new(rules, zone),
            balance: Balance::new(shards),
            counters: Counters::default(),
            next: 0,
        }),
        shards,
        ipv6_prefix: options.ipv6_prefix,
        zone,
    };
    // One worker per CPU when there are as many workers as CPUs: a shard's window maps stay
    // in its core's caches (see `crate::affinity`).
    let cpus = crate::affinity::plan(shards);
    let results: Vec<ShardResult> = thread::scope(|scope| {
        let handles: Vec<_> = workers
            .into_iter()
            .enumerate()
            .map(|(shard, counting)| {
                let shared = &shared;
                let cpu = cpus.as_ref().map(|cpus| cpus[shard]);
                scope.spawn(move || {
                    // Best effort: a refused pin (a seccomp filter, say) only leaves the
                    // thread where the scheduler puts it.
                    if let Some(cpu) = cpu {
                        crate::affinity::pin_current(cpu);
                    }
                    shared.work(shard, counting)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut st = lock(&shared.state);
    if let Some(error) = st.error.take() {
        return Err(error);
    }
    let peaks: usize = results.iter().map(|(_, peak)| peak).sum();
    if peaks >= options.max_tracked_keys {
        return Ok(None);
    }
    counters.absorb(&lock(&shared.walker).counters);
    counters.late += results.iter().map(|(late, _)| late).sum::<u64>();
    // Runs in engine order: by shard, and a shard's parts in their order.
    let mut sorted = std::mem::take(&mut st.sorted);
    sorted.sort_unstable_by_key(|(at, _)| *at);
    Ok(Some(sorted.into_iter().map(|(_, run)| run).collect()))
}

/// Sets `aborted` when a worker unwinds, so the others stop waiting for its batch.
struct AbortOnPanic<'a>(&'a Shared);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            lock(&self.0.state).aborted = true;
            self.0.changed.notify_all();
        }
    }
}

/// A worker's next job, decided under the lock.
enum Job {
    Count(Arc<Parsed>),
    Read,
    Parse(u64, Batch),
    Done,
}

impl Shared {
    /// Parses one batch, with each line's stamp, into `parsed` (empty).
    fn parse(&self, seq: u64, batch: &Batch, parsed: Parsed) -> Parsed {
        let Parsed {
            mut lines,
            mut stamps,
            lists,
            ..
        } = parsed;
        lines.reserve(batch.lines.len());
        stamps.reserve(batch.lines.len());
        for line in &batch.lines {
            let parsed = match line {
                Some(range) => FixedScan::parse(&batch.data[range.clone()]),
                None => Err(Skip::TooLong),
            };
            let stamp = match &parsed {
                Ok(req) => {
                    let (when, secs) = match self.zone.fixed_utc_of(req.local) {
                        Some(at) => (When::At(at), at.timestamp()),
                        None => (When::Local(req.local), 0),
                    };
                    Stamp {
                        when,
                        secs,
                        bucket: bucket(&SourceKey::new(req.src(), self.ipv6_prefix)),
                    }
                }
                Err(why) => Stamp {
                    when: When::Skipped(*why),
                    secs: 0,
                    bucket: 0,
                },
            };
            lines.push(parsed);
            stamps.push(stamp);
        }
        Parsed {
            seq,
            lines,
            stamps,
            walk: OnceLock::new(),
            lists,
        }
    }

    fn next_job(&self, shard: usize, next: u64) -> Job {
        let mut st = lock(&self.state);
        loop {
            if st.aborted {
                return Job::Done;
            }
            if let Some((batch, left)) = st.published.get_mut(&next) {
                let batch = Arc::clone(batch);
                *left -= 1;
                if *left == 0 {
                    st.published.remove(&next);
                }
                st.consumed[shard] = next + 1;
                drop(st);
                // A slot opened for reading ahead.
                self.changed.notify_all();
                return Job::Count(batch);
            }
            if st.end == Some(next) {
                return Job::Done;
            }
            if let Some(first) = st.first.take() {
                return Job::Parse(0, first);
            }
            let slowest = st.consumed.iter().copied().min().unwrap_or(0);
            let ahead = AHEAD + AHEAD_PER_WORKER * self.shards as u64;
            if !st.reading && st.end.is_none() && st.next_read - slowest < ahead {
                st.reading = true;
                return Job::Read;
            }
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Reads the next batch (this worker holds `reading`), parses and publishes it.
    fn read(&self) {
        let spare = lock(&self.state).spare_batches.pop();
        let read = {
            let mut batches = lock(&self.batches);
            match spare {
                Some(batch) => batches.refill(batch),
                None => batches.next(),
            }
        };
        let mut st = lock(&self.state);
        st.reading = false;
        let batch = match read {
            Ok((batch, done)) => {
                let seq = (!batch.lines.is_empty()).then_some(st.next_read);
                if seq.is_some() {
                    st.next_read += 1;
                }
                if done {
                    st.end = Some(st.next_read);
                }
                seq.map(|seq| (seq, batch))
            }
            Err(error) => {
                st.error = Some(error);
                st.end = Some(st.next_read);
                None
            }
        };
        drop(st);
        self.changed.notify_all();
        if let Some((seq, batch)) = batch {
            self.publish(seq, batch);
        }
    }

    /// Parses batch `seq` and hands it to the shards.
    fn publish(&self, seq: u64, batch: Batch) {
        let spare = lock(&self.state)
            .spare_parsed
            .pop()
            .unwrap_or_else(Parsed::empty);
        let parsed = Arc::new(self.parse(seq, &batch, spare));
        let mut st = lock(&self.state);
        st.published.insert(seq, (parsed, self.shards));
        st.spare_batches.push(batch);
        drop(st);
        self.changed.notify_all();
    }

    /// Keeps the buffers of a parsed batch every shard has counted (this one holds the
    /// last reference) for a next batch.
    fn recycle(&self, parsed: Arc<Parsed>) {
        if let Ok(mut parsed) = Arc::try_unwrap(parsed) {
            if let Some(walk) = parsed.walk.take() {
                let mut items = walk.items;
                items.iter_mut().for_each(Vec::clear);
                *parsed
                    .lists
                    .get_mut()
                    .unwrap_or_else(PoisonError::into_inner) = items;
            }
            parsed.lines.clear();
            parsed.stamps.clear();
            lock(&self.state).spare_parsed.push(parsed);
        }
    }

    /// Worker `shard`: counts every batch in order (its own sources), reading and parsing
    /// batches when it would otherwise wait.
    fn work(&self, shard: usize, mut counting: Counting) -> ShardResult {
        let _abort = AbortOnPanic(self);
        let mut peak = 0usize;
        let mut next = 0u64;
        loop {
            match self.next_job(shard, next) {
                Job::Done => break,
                Job::Read => self.read(),
                Job::Parse(seq, batch) => self.publish(seq, batch),
                Job::Count(batch) => {
                    next += 1;
                    // This shard has counted every batch before this one, so their walks
                    // are done: the walker is at this batch.
                    let walk = batch.walk.get_or_init(|| lock(&self.walker).walk(&batch));
                    for item in &walk.items[shard] {
                        match *item {
                            Item::Break => counting.time_break(),
                            Item::Tick(now) => counting.tick(now),
                            Item::Count { line, at } => {
                                // A line with a step was parsed: it is `Ok`.
                                if let Some(Ok(req)) = batch.lines.get(line as usize) {
                                    counting.observe(&req.record(at));
                                    peak = peak.max(counting.tracked_keys());
                                }
                            }
                        }
                    }
                    self.recycle(batch);
                }
            }
        }
        // A shard that evicted is thrown away (its peak says so): the single engine's scan
        // counts evictions.
        let (rows, late, _evicted) = counting.finish();
        self.sort_rows(shard, rows);
        (late, peak)
    }

    /// Leaves the parts of `shard`'s rows to sort, then sorts parts (the largest first) until
    /// every shard has left its rows and none is left to sort; the caller merges the sorted
    /// runs.
    fn sort_rows(&self, shard: usize, rows: Rows) {
        let mut st = lock(&self.state);
        for (part, rows) in rows.split(SORT_PARTS).into_iter().enumerate() {
            st.to_sort.push(((shard, part), rows));
        }
        st.rows_left += 1;
        self.changed.notify_all();
        loop {
            if st.aborted {
                return;
            }
            let largest = (0..st.to_sort.len()).max_by_key(|&i| st.to_sort[i].1.len());
            if let Some(i) = largest {
                let (at, rows) = st.to_sort.swap_remove(i);
                drop(st);
                let run = Run::sorted(rows, 1);
                st = lock(&self.state);
                st.sorted.push((at, run));
                continue;
            }
            if st.rows_left == self.shards {
                drop(st);
                // The others may be waiting for rows to sort: there will be none.
                self.changed.notify_all();
                return;
            }
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Balance;

    #[test]
    fn a_new_source_goes_to_the_shard_with_the_fewest_records_so_far() {
        let mut balance = Balance::new(2);
        // The first bucket: both shards at 0, the lowest takes it, and keeps it.
        for _ in 0..10 {
            assert_eq!(balance.assign(7), 0);
        }
        // New buckets go to shard 1 while it has fewer records.
        assert_eq!(balance.assign(8), 1);
        assert_eq!(balance.assign(9), 1);
        for _ in 0..10 {
            assert_eq!(balance.assign(8), 1);
        }
        assert_eq!(balance.load, vec![10, 12]);
        assert_eq!(balance.assign(10), 0);
        // A bucket keeps its shard whatever the loads become.
        assert_eq!(balance.assign(9), 1);
        assert_eq!(balance.assign(7), 0);
        assert_eq!(balance.load, vec![12, 13]);
        // Three shards: a tie goes to the lowest of the lightest.
        let mut three = Balance::new(3);
        assert_eq!(
            [1, 2, 3, 4, 1, 5].map(|b| three.assign(b)),
            [0, 1, 2, 0, 0, 1]
        );
    }
}
