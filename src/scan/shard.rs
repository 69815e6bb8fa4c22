//! `--threads N` in the default mode: the engine itself split by source over `N` threads.
//!
//! Every window key holds one source (the engine's [`SourceKey`]: an IPv4 address or an
//! IPv6 network), so the engine's work splits into `N` engines, one per *shard* of the
//! sources, each seeing the records of its sources in log order. What is global stays on
//! the calling thread and is broadcast in line order: the zone conversion, the watermark,
//! ticks and time breaks ([`Clock`]). Each shard therefore sees, for each of its keys,
//! exactly the sequence of records, ticks and breaks the single engine sees, and gives the
//! same rows for it, in the same order.
//!
//! Pipeline: the lines are parsed in parallel batches ([`parse_in_order`]); the calling
//! thread runs the clock over each batch in order and sends the batch (shared, read-only)
//! to every shard thread with that shard's list of steps: record `i`, tick at `t`, break.
//!
//! Merging: the rows of the shards are concatenated and sorted (stable) in output order.
//! Two rows that compare equal have the same `src`, hence come from the same shard, where
//! they keep the single engine's order: the output is byte-identical.
//!
//! The one global state left is the key cap (`max_tracked_keys`): the single engine evicts
//! when its total key count reaches it. Each shard records its peak key count; when the
//! peaks add up to less than the cap, the single engine's total (at any moment the sum of
//! the shards' counts) never reached it, and nothing was evicted either way. Otherwise the
//! sharded result may differ and is thrown away: [`scan`] returns `None`, and the caller
//! scans the inputs again with one engine.

use std::hash::BuildHasher;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use chrono::{DateTime, Utc};

use super::driver::{Counters, Scanner};
use super::fixed::{Clock, Counting, FixedScan};
use super::input::Input;
use super::parallel::parse_in_order;
use super::row::Row;
use super::zone::LogZone;
use super::ScanError;
use crate::detect::{EngineOptions, Rule, SourceKey};

/// One batch as parsed; shared by the shards.
type Parsed = Vec<Result<<FixedScan as Scanner>::Parsed, super::driver::Skip>>;

/// What a shard does next, in log order.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// A time break: close every window.
    Break,
    /// Close the windows ended at this time.
    Tick(DateTime<Utc>),
    /// Count record `i` of the batch, completed at this time (the clock's step).
    Observe(u32, DateTime<Utc>),
}

/// Batches queued per shard: enough to ride out scheduling jitter, bounded so a slow shard
/// holds the pipeline back instead of buffering the input.
const QUEUE: usize = 4;

/// What a shard gives back: its rows (engine order), late records and peak key count.
type ShardResult = (Vec<Row>, u64, usize);

/// Scans `inputs` with `threads` parser threads and `threads` engine shards. `None` when the
/// key cap may have been reached (see the module docs): nothing was written, and the
/// caller must scan again with one engine (and fresh counters).
pub(super) fn scan(
    rules: &[Rule],
    options: &EngineOptions,
    zone: LogZone,
    inputs: Vec<Input>,
    max_line: usize,
    threads: usize,
    counters: &mut Counters,
) -> Result<Option<Vec<Row>>, ScanError> {
    let shards = threads.max(2);
    let mut engines = Vec::with_capacity(shards);
    for _ in 0..shards {
        engines.push(Counting::new(rules.to_vec(), options.clone())?);
    }
    let mut clock = Clock::new(rules, zone);
    let ipv6_prefix = options.ipv6_prefix;
    let hasher = foldhash::fast::FixedState::with_seed(0x5eed);
    let results = thread::scope(|scope| -> Result<Vec<ShardResult>, ScanError> {
        let mut senders = Vec::with_capacity(shards);
        let mut handles = Vec::with_capacity(shards);
        for counting in engines {
            let (tx, rx) = mpsc::sync_channel::<(Arc<Parsed>, Vec<Op>)>(QUEUE);
            senders.push(tx);
            handles.push(scope.spawn(move || run_shard(counting, rx)));
        }
        let mut plans: Vec<Vec<Op>> = vec![Vec::new(); shards];
        let read = parse_in_order::<FixedScan>(inputs, max_line, threads, |parsed| {
            for (i, item) in parsed.iter().enumerate() {
                counters.lines_read += 1;
                let req = match item {
                    Ok(req) => req,
                    Err(why) => {
                        counters.skip(*why);
                        continue;
                    }
                };
                let Some(step) = clock.step(req.local, counters) else {
                    continue;
                };
                if step.time_break {
                    plans.iter_mut().for_each(|p| p.push(Op::Break));
                }
                if let Some(now) = step.tick {
                    plans.iter_mut().for_each(|p| p.push(Op::Tick(now)));
                }
                let key = SourceKey::new(req.src(), ipv6_prefix);
                let shard =
                    usize::try_from(hasher.hash_one(key.words()) % shards as u64).unwrap_or(0);
                // A batch holds far fewer than 2^32 lines (about 1 MiB of text).
                plans[shard].push(Op::Observe(u32::try_from(i).unwrap_or(u32::MAX), step.at));
            }
            let parsed = Arc::new(parsed);
            for (tx, plan) in senders.iter().zip(plans.iter_mut()) {
                if plan.is_empty() {
                    continue;
                }
                // A shard only stops early by panicking, which `join` below re-raises.
                let _ = tx.send((Arc::clone(&parsed), std::mem::take(plan)));
            }
        });
        drop(senders);
        let results = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        read.map(|()| results)
    })?;
    let peaks: usize = results.iter().map(|(_, _, peak)| peak).sum();
    if peaks >= options.max_tracked_keys {
        return Ok(None);
    }
    let mut rows = Vec::with_capacity(results.iter().map(|(r, _, _)| r.len()).sum());
    for (shard_rows, late, _) in results {
        counters.late += late;
        rows.extend(shard_rows);
    }
    Ok(Some(rows))
}

/// One shard: its engine fed the steps it is sent, in order, until the sender is gone.
fn run_shard(mut counting: Counting, rx: mpsc::Receiver<(Arc<Parsed>, Vec<Op>)>) -> ShardResult {
    let mut peak = 0usize;
    for (parsed, plan) in rx {
        for op in plan {
            match op {
                Op::Break => counting.time_break(),
                Op::Tick(now) => counting.tick(now),
                Op::Observe(i, at) => {
                    if let Some(Ok(req)) = usize::try_from(i).ok().and_then(|i| parsed.get(i)) {
                        counting.observe(&req.record(at));
                        peak = peak.max(counting.tracked_keys());
                    }
                }
            }
        }
    }
    let (rows, late) = counting.finish();
    (rows, late, peak)
}
