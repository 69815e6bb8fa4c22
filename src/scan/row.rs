//! One output row of `scan` (README, "scan") and its order.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::detect::Severity;

/// One row: one (rule, window start, source, path) that a rule flagged.
///
/// Why: the same shape for both modes, so a SOC can diff `--splunk-compat` output against
/// its Splunk search and the default mode against it, column for column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    /// The rule's name (`model_exfiltration` in compat mode).
    pub rule: Arc<str>,
    /// Window start, epoch seconds (`_time`).
    pub time: i64,
    /// The source: raw IP text in compat mode; the engine's source identity otherwise
    /// (an IPv4 address, or an IPv6 network such as `2001:db8::/64`).
    pub src: String,
    /// The path (raw text in compat mode, normalised otherwise); `None` for rules grouped
    /// by source only. Shared: the rows of one path hold one text (see `fixed::Counting`).
    pub uri_path: Option<Arc<str>>,
    /// Requests counted in the window.
    pub count: u64,
    /// Mean latency in seconds, rounded to 2 decimals.
    pub avg_response_time: f64,
    /// Largest latency in seconds, rounded to 2 decimals.
    pub max_response_time: f64,
    /// The rule's grading of the window.
    pub severity: Severity,
    /// The rule's attack label.
    pub attack_type: Arc<str>,
}

impl Row {
    /// Output order (README, "scan"): `_time`, then `src`, then `uri_path` (byte order, no path first),
    /// then the rule name.
    pub(crate) fn spec_order(a: &Row, b: &Row) -> Ordering {
        a.time
            .cmp(&b.time)
            .then_with(|| a.src.as_bytes().cmp(b.src.as_bytes()))
            .then_with(|| {
                a.uri_path
                    .as_deref()
                    .map(str::as_bytes)
                    .cmp(&b.uri_path.as_deref().map(str::as_bytes))
            })
            .then_with(|| a.rule.as_bytes().cmp(b.rule.as_bytes()))
    }
}

/// Rows per chunk of [`Rows`] (about 480 KiB).
#[cfg(not(test))]
const CHUNK: usize = 4096;
/// Small in tests, so that the rows of small samples fill several chunks and the sharded
/// scan sorts them in several parts ([`Rows::split`]).
#[cfg(test)]
const CHUNK: usize = 16;

/// Rows in engine order, kept in fixed-size chunks.
///
/// Why: a row-heavy log gives hundreds of thousands of rows. One growing `Vec` copied them
/// at every doubling and first-touched fresh memory each time (the kernel zeroes every new
/// page, which on a VM costs more than the copy); chunks are written once and never moved.
/// The output order is kept as small sort keys with indices ([`Run`]), so rows are not moved
/// for sorting either.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    chunks: Vec<Vec<Row>>,
    len: usize,
}

impl Rows {
    /// Appends a row.
    pub(crate) fn push(&mut self, row: Row) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(row),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(row);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    /// The number of rows.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The rows cut into at most `parts` runs of whole chunks, in order (no empty part).
    ///
    /// Why: sorting is the last work of a sharded scan's shard, and a shard with more rows
    /// sorted alone while the other threads waited (docs/performance.md); its parts are
    /// sorted by whichever thread is free, and merged as runs in this order.
    pub(crate) fn split(self, parts: usize) -> Vec<Rows> {
        let per = self.chunks.len().div_ceil(parts.max(1)).max(1);
        let mut chunks = self.chunks.into_iter().peekable();
        let mut out = Vec::new();
        while chunks.peek().is_some() {
            let part: Vec<Vec<Row>> = chunks.by_ref().take(per).collect();
            let len = part.iter().map(Vec::len).sum();
            out.push(Rows { chunks: part, len });
        }
        out
    }

    /// Row `i` (every chunk but the last is full).
    fn get(&self, i: usize) -> &Row {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl FromIterator<Row> for Rows {
    fn from_iter<I: IntoIterator<Item = Row>>(rows: I) -> Rows {
        let mut all = Rows::default();
        rows.into_iter().for_each(|row| all.push(row));
        all
    }
}

/// Rows at least this many are sorted on two threads (when allowed).
const PARALLEL_SORT_ROWS: usize = 50_000;

/// A row's place in the sort: `_time`, the first 16 bytes of `src` (zero-padded, big-endian,
/// so they compare as the bytes do) and its index. Sorting these small keys instead of the
/// rows moves 32 bytes instead of a whole row, and most comparisons end on the numbers.
///
/// Why 16 bytes: an IPv4 source is at most 15, so two different ones never reach the rows.
/// With 8 (`192.168.`), rows of one second from one network compared their rows, which lie
/// scattered in memory: most of the merge's time after a sharded scan (docs/performance.md).
type SortKey = (i64, [u64; 2], usize);

fn src_prefix(src: &str) -> [u64; 2] {
    let mut head = [0u8; 16];
    let n = src.len().min(16);
    head[..n].copy_from_slice(&src.as_bytes()[..n]);
    let both = u128::from_be_bytes(head);
    // Two halves, not a `u128`: its 16-byte alignment would pad the key to 48 bytes.
    [(both >> 64) as u64, both as u64]
}

fn sort_key(row: &Row, i: usize) -> SortKey {
    (row.time, src_prefix(&row.src), i)
}

/// Whether the row of key `a` goes before the row of key `b` in output order. The keys
/// compare as the rows do: equal times and prefixes fall back to the rows themselves, and a
/// smaller prefix means smaller `src` bytes (a shorter `src` is padded with zeros, which
/// sort first, as a prefix does).
fn key_order(a: (&SortKey, &Row), b: (&SortKey, &Row)) -> Ordering {
    a.0 .0
        .cmp(&b.0 .0)
        .then(a.0 .1.cmp(&b.0 .1))
        .then_with(|| Row::spec_order(a.1, b.1))
}

/// One engine's rows and their output order.
#[derive(Debug)]
pub(crate) struct Run {
    rows: Rows,
    /// The rows' sort keys (each with its index into `rows`), in output order.
    ///
    /// Why the keys and not only the indices: the merge of several runs compares the next
    /// row of each, and recomputing a key read the row and its `src` text, scattered in
    /// memory (rows are stored in engine order), for every row merged.
    order: Vec<SortKey>,
}

impl Run {
    /// `rows` sorted in output order ([`Row::spec_order`]), stably: rows that compare equal
    /// keep their engine order. Large sets as two halves on two threads (with `threads` > 1),
    /// then merged (the left half first on ties), which is the same order.
    pub(crate) fn sorted(rows: Rows, threads: usize) -> Run {
        // Sized up front: a flattened iterator does not tell its length, and growing by
        // doubling first-touched about twice the memory.
        let mut keys: Vec<SortKey> = Vec::with_capacity(rows.len());
        keys.extend(
            rows.chunks
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, r)| sort_key(r, i)),
        );
        let order = |a: &SortKey, b: &SortKey| key_order((a, rows.get(a.2)), (b, rows.get(b.2)));
        if threads < 2 || keys.len() < PARALLEL_SORT_ROWS {
            keys.sort_by(order);
        } else {
            let mut right = keys.split_off(keys.len() / 2);
            let mut left = std::mem::take(&mut keys);
            std::thread::scope(|scope| {
                scope.spawn(|| right.sort_by(order));
                left.sort_by(order);
            });
            keys.reserve_exact(left.len() + right.len());
            let mut right = right.into_iter().peekable();
            for key in left {
                while let Some(r) = right.next_if(|r| order(r, &key).is_lt()) {
                    keys.push(r);
                }
                keys.push(key);
            }
            keys.extend(right);
        }
        Run { rows, order: keys }
    }

    /// The number of rows.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }
}

/// The rows of all `runs` in output order. Rows that compare equal have the same `src`,
/// hence come from one engine shard: from one run, or from parts of one shard's rows
/// ([`Rows::split`]) given as runs in engine order. On a tie the earlier run goes first, so
/// they keep the engine's order.
pub(crate) fn merge(runs: &[Run]) -> Vec<&Row> {
    let mut out = Vec::new();
    if let [run] = runs {
        out.reserve(run.len());
        out.extend(run.order.iter().map(|key| run.rows.get(key.2)));
        return out;
    }
    let whole: Piece = runs.iter().map(|run| 0..run.len()).collect();
    merge_piece(runs, &whole, &mut out);
    out
}

/// One piece of the merged order: of each run, a contiguous range of its order.
pub(crate) type Piece = Vec<std::ops::Range<usize>>;

/// The merged order of `runs` cut into at most `pieces` pieces that can be merged apart:
/// merging each piece ([`merge_piece`]) and putting the pieces one after the other gives
/// [`merge`]'s order.
///
/// Why: after a sharded scan, the merge and the formatting ran on one thread while the others
/// had finished (about 30 ms and 100 ms for 213 000 rows, a sixth of a two-thread run); pieces
/// are merged and formatted on every thread.
///
/// How: a piece ends, in every run, before the first row not below its pivot: of rows
/// sampled from every run, the first with the piece's share of all rows below it (binary
/// search), so that the pieces are of even size even when each run covers a different
/// stretch of the order (the parts of one shard's rows). Rows equal to
/// each other, in one run or several, are all below a pivot or all not: they stay together
/// in one piece, where the merge keeps their order, so every row lands where the whole merge
/// puts it.
pub(crate) fn pieces(runs: &[Run], pieces: usize) -> Vec<Piece> {
    let total: usize = runs.iter().map(Run::len).sum();
    let pieces = pieces.clamp(1, total.max(1));
    // Where each run's rows below `pivot` end.
    let bounds = |pivot: (&SortKey, &Row)| -> Vec<usize> {
        runs.iter()
            .map(|run| {
                run.order
                    .partition_point(|key| key_order((key, run.rows.get(key.2)), pivot).is_lt())
            })
            .collect()
    };
    let below = |pivot: (&SortKey, &Row)| bounds(pivot).iter().sum::<usize>();
    // Candidate pivots: rows of every run at even steps, two per piece in each run, in
    // output order. Between two candidates lie fewer than half a piece's share of rows
    // (fewer than a step in each run), so each piece is within half a share of even.
    let mut candidates: Vec<(SortKey, &Row)> = runs
        .iter()
        .flat_map(|run| {
            let step = (run.len() / (2 * pieces)).max(1);
            (0..run.len()).step_by(step).map(move |at| row_at(run, at))
        })
        .collect();
    candidates.sort_by(|a, b| key_order((&a.0, a.1), (&b.0, b.1)));
    let mut out = Vec::new();
    let mut from = vec![0usize; runs.len()];
    let mut first = 0;
    for p in 1..pieces {
        // The first candidate with at least p / pieces of all rows below it (the number
        // below grows along the candidates; pivots only move forward).
        let want = total * p / pieces;
        let (mut at, mut hi) = (first, candidates.len());
        while at < hi {
            let mid = at + (hi - at) / 2;
            let (key, row) = &candidates[mid];
            if below((key, row)) < want {
                at = mid + 1;
            } else {
                hi = mid;
            }
        }
        first = at;
        let pivot = candidates.get(at);
        let Some((key, row)) = pivot else {
            break;
        };
        let to = bounds((key, row));
        let piece: Piece = from.iter().zip(&to).map(|(&a, &b)| a..b).collect();
        if piece.iter().any(|r| !r.is_empty()) {
            out.push(piece);
            from = to;
        }
    }
    let last: Piece = from
        .iter()
        .zip(runs)
        .map(|(&a, run)| a..run.len())
        .collect();
    if last.iter().any(|r| !r.is_empty()) {
        out.push(last);
    }
    out
}

/// Row `at` of `run`'s output order, with its sort key.
fn row_at(run: &Run, at: usize) -> (SortKey, &Row) {
    let key = run.order[at];
    (key, run.rows.get(key.2))
}

/// The rows of `piece` in output order, into `out` (cleared first).
pub(crate) fn merge_piece<'a>(runs: &'a [Run], piece: &Piece, out: &mut Vec<&'a Row>) {
    out.clear();
    out.reserve(piece.iter().map(|r| r.len()).sum());
    let head = |r: usize, at: usize| -> Option<(SortKey, &'a Row)> {
        (at < piece[r].end).then(|| {
            let key = runs[r].order[at];
            (key, runs[r].rows.get(key.2))
        })
    };
    let mut at: Vec<usize> = piece.iter().map(|r| r.start).collect();
    let mut heads: Vec<Option<(SortKey, &Row)>> = (0..runs.len()).map(|r| head(r, at[r])).collect();
    loop {
        let mut best: Option<usize> = None;
        for (r, h) in heads.iter().enumerate() {
            let Some(h) = h else { continue };
            let better = match best.and_then(|b| heads[b].as_ref()) {
                None => true,
                Some(b) => key_order((&h.0, h.1), (&b.0, b.1)).is_lt(),
            };
            if better {
                best = Some(r);
            }
        }
        let Some(r) = best else { return };
        if let Some((_, row)) = heads[r] {
            out.push(row);
        }
        at[r] += 1;
        heads[r] = head(r, at[r]);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::detect::Severity;

    #[test]
    fn sorted_runs_merge_into_the_stable_sort_of_the_rows() {
        let srcs = [
            "10.0.0.1",
            "10.0.0.10",
            "10.0.0.1\0",
            "10.0.0",
            "2001:db8::/64",
            "2001:db8:1::/64",
            "",
            "é",
            "10.0.0.100",
            // Around the keys' 16 bytes: longer ones equal in them (the rows decide), exactly
            // 16, 15, and 15 with a NUL byte (equal to the 15 in the key).
            "2001:db8:abcd:12::/64",
            "2001:db8:abcd:12::/48",
            "2001:db8:abcd:12",
            "2001:db8:abcd:1",
            "2001:db8:abcd:1\0",
        ];
        let mut seed = 7u64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let rows: Vec<Row> = (0..120_000u64)
            .map(|i| Row {
                rule: Arc::from(["b", "a"][next(2) as usize]),
                time: next(5) as i64 * 900,
                src: srcs[next(srcs.len() as u64) as usize].to_owned(),
                uri_path: [None, Some(Arc::from("/x")), Some(Arc::from("/"))][next(3) as usize]
                    .clone(),
                count: i,
                avg_response_time: 0.0,
                max_response_time: 0.0,
                severity: Severity::Low,
                attack_type: Arc::from("t"),
            })
            .collect();
        let mut want = rows.clone();
        want.sort_by(Row::spec_order);
        let want: Vec<&Row> = want.iter().collect();
        for threads in [1, 2] {
            let run = Run::sorted(rows.iter().cloned().collect(), threads);
            assert!(merge(&[run]) == want, "--threads {threads}");
        }
        // Split by `src` into shards of engine order, as the sharded scan leaves them, and
        // each shard's rows into parts sorted apart, given as runs in engine order.
        for (shards, parts) in [(2, 1), (3, 1), (2, 2), (3, 4)] {
            let runs: Vec<Run> = (0..shards)
                .flat_map(|s| {
                    let mine = rows.iter().filter(move |r| r.src.len() % shards == s);
                    let mine: Rows = mine.cloned().collect();
                    let split = mine.split(parts);
                    assert_eq!(split.len(), parts, "{shards} shards");
                    split.into_iter().map(|part| Run::sorted(part, 1))
                })
                .collect();
            let shards = format!("{shards} shards in {parts} parts");
            assert!(merge(&runs) == want, "{shards}");
            // Cut into pieces merged apart: the same order, whatever the number of pieces.
            for n in [1, 2, 3, 7, 64, 1_000, 200_000] {
                if parts > 1 && n > 1_000 {
                    // One piece per row (clamped) is checked on the unsplit runs; here it
                    // would take minutes in a debug build.
                    continue;
                }
                let cut = pieces(&runs, n);
                assert!(cut.len() <= n, "{n} pieces: {}", cut.len());
                let mut all: Vec<&Row> = Vec::new();
                let mut one = Vec::new();
                for piece in &cut {
                    merge_piece(&runs, piece, &mut one);
                    assert!(!one.is_empty());
                    all.extend(&one);
                }
                assert!(all == want, "{shards}, {n} pieces");
                // Even pieces: none more than twice its share (rows of one key never split).
                if n <= 7 {
                    assert_eq!(cut.len(), n, "{shards}");
                    let most = cut.iter().map(|p| p.iter().map(|r| r.len()).sum::<usize>());
                    assert!(most.max().unwrap() <= 2 * want.len() / n, "{n} pieces");
                }
            }
        }
    }
}
