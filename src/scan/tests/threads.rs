//! `--threads`: the output, the summary and the errors are the same for every thread count.

use std::fmt::Write as _;
use std::io::{self, Read};

use super::corpus::corpus;
use super::{builtin, compat, data_file, gin_line, input};
use crate::scan::{run, Input, OutputFormat, ScanMode, ScanOptions, ScanSummary};

/// `run` over `inputs` (each a byte string) with `threads` threads: output bytes, summary.
fn run_with(opts: &ScanOptions, threads: usize, inputs: &[Vec<u8>]) -> (Vec<u8>, ScanSummary) {
    let opts = ScanOptions {
        threads,
        ..opts.clone()
    };
    let inputs = inputs.iter().map(|b| input(b.clone())).collect();
    let mut out = Vec::new();
    let summary = run(&opts, inputs, &mut out).unwrap();
    (out, summary)
}

/// A row-heavy log: every fifth line a >55 s generation from a source of its own (one row
/// each), the rest fast calls from a few sources; timestamps jittered a few seconds out of
/// order, one jump back by more than the longest window (a time break) and forward again,
/// a line longer than the limit the tests set, and a CRLF line.
fn row_heavy(lines: usize) -> Vec<u8> {
    let mut out = String::new();
    let start = 1_759_406_400;
    for i in 0..lines {
        let jitter = [0, 3, -2, 5, -4][i % 5];
        let mut t = start + i as i64 * 2 + jitter;
        if (lines / 2..lines / 2 + 50).contains(&i) {
            t -= 7200; // a time break
        }
        let line = if i % 35 == 7 {
            // IPv6 sources grouped by /64: several addresses, one source (one shard).
            let ip = format!("2001:db8:{:x}::{:x}", i % 11, i % 97);
            gin_line(t, "56.5s", &ip, "POST", "/api/chat")
        } else if i % 5 == 0 {
            let ip = format!("10.{}.{}.{}", 128 + i / 65536, (i / 256) % 256, i % 256);
            gin_line(
                t,
                &format!("{}.5s", 55 + i % 7),
                &ip,
                "POST",
                "/api/generate",
            )
        } else {
            let ip = format!("192.168.1.{}", 2 + i % 3);
            gin_line(t, "1.2ms", &ip, "GET", "/api/tags")
        };
        out.push_str(&line);
        if i == 100 {
            let _ = writeln!(out, "[GIN] {}", "x".repeat(5000));
        }
        if i == 200 {
            out.push_str(&line.replace('\n', "\r\n"));
        }
    }
    out.into_bytes()
}

fn assert_same_for_every_thread_count(name: &str, opts: &ScanOptions, inputs: &[Vec<u8>]) {
    for format in [OutputFormat::Jsonl, OutputFormat::Csv] {
        let opts = ScanOptions {
            format,
            ..opts.clone()
        };
        let (want, want_summary) = run_with(&opts, 1, inputs);
        for threads in [2, 3] {
            let (got, summary) = run_with(&opts, threads, inputs);
            assert_eq!(
                summary, want_summary,
                "{name} {format:?} --threads {threads}"
            );
            assert!(
                got == want,
                "{name} {format:?} --threads {threads}: output differs ({} vs {} bytes)",
                got.len(),
                want.len()
            );
        }
    }
}

#[test]
fn rows_and_summary_are_byte_identical_for_any_thread_count() {
    let heavy = row_heavy(40_000);
    let (mixed, _) = corpus(7, 20_000);
    let samples = [
        data_file("gin-synthetic.log"),
        data_file("gin-real-from-issues.log"),
    ];
    let small_lines = ScanOptions {
        max_line_bytes: 4096,
        ..builtin("UTC")
    };
    let cases: Vec<(&str, ScanOptions)> = vec![
        ("default", small_lines.clone()),
        ("berlin", builtin("Europe/Berlin")),
        (
            "compat",
            ScanOptions {
                max_line_bytes: 4096,
                ..compat("UTC")
            },
        ),
        ("compat berlin", compat("Europe/Berlin")),
    ];
    for (name, opts) in &cases {
        let (_, summary) = run_with(opts, 1, std::slice::from_ref(&heavy));
        if name.starts_with("default") {
            assert!(summary.rows_emitted > 7_000, "{summary}");
            assert!(summary.time_breaks >= 1, "{summary}");
            assert_eq!(summary.skipped, vec![("line_too_long", 1)], "{summary}");
        }
        assert_same_for_every_thread_count(name, opts, std::slice::from_ref(&heavy));
        assert_same_for_every_thread_count(name, opts, std::slice::from_ref(&mixed));
        // Several inputs as one stream: a batch may hold the end of one and the start of
        // the next; an input without a final newline ends its last line.
        let cut = heavy.len() / 3;
        let parts = [
            heavy[..cut].to_vec(),
            mixed.clone(),
            heavy[cut..].to_vec(),
            samples[0].clone(),
        ];
        assert_same_for_every_thread_count(name, opts, &parts);
        for sample in &samples {
            assert_same_for_every_thread_count(name, opts, std::slice::from_ref(sample));
        }
        assert_same_for_every_thread_count(name, opts, &[Vec::new()]);
    }
}

/// A key cap the row-heavy log exceeds: the single engine evicts, so the sharded scan must
/// notice and start over with one engine, with fresh counts: each sharded run opens its
/// input once more. (Which of several equally old keys an eviction takes follows the maps'
/// random hash order, so the rows themselves are not compared here: two single-threaded
/// runs may differ too.)
#[test]
fn a_key_cap_the_shards_reach_starts_the_scan_over_with_one_engine() {
    let heavy: std::sync::Arc<[u8]> = row_heavy(20_000).into();
    let mut opts = builtin("UTC");
    if let ScanMode::Rules { engine, .. } = &mut opts.mode {
        engine.max_tracked_keys = 100;
    }
    let (reopened, input) = counted_input(heavy);
    let run_counted = |threads: usize| {
        let opts = ScanOptions {
            threads,
            ..opts.clone()
        };
        let mut out = Vec::new();
        let summary = run(&opts, vec![input()], &mut out).unwrap();
        (out, summary)
    };
    let (_, want) = run_counted(1);
    assert_eq!(reopened(), 0);
    // The summary says that rows may be missing.
    assert!(want.keys_evicted > 0, "{want}");
    assert!(
        want.to_string().contains(&format!(
            "scan: {} counter keys evicted at max_tracked_keys: rows of their windows may be \
             missing or undercounted (raise max_tracked_keys)",
            want.keys_evicted
        )),
        "{want}"
    );
    for threads in [2, 3] {
        let (out, got) = run_counted(threads);
        assert_eq!(
            reopened(),
            threads - 1,
            "--threads {threads}: started over once"
        );
        assert_eq!(
            (
                got.lines_read,
                got.lines_parsed,
                &got.skipped,
                got.time_breaks
            ),
            (
                want.lines_read,
                want.lines_parsed,
                &want.skipped,
                want.time_breaks
            ),
            "--threads {threads}"
        );
        assert!(got.rows_emitted > 1_000 && !out.is_empty(), "{got}");
        assert!(got.keys_evicted > 0, "{got}");
    }
    // Under the default cap nothing is evicted, and the summary says nothing of it.
    let (_, fine) = {
        let (_, input) = counted_input(row_heavy(20_000).into());
        let mut out = Vec::new();
        let summary = run(&builtin("UTC"), vec![input()], &mut out).unwrap();
        (out, summary)
    };
    assert_eq!(fine.keys_evicted, 0);
    assert!(!fine.to_string().contains("evicted"), "{fine}");
}

/// An input over `bytes` that can be opened again, and how often it was: `(count, open)`.
fn counted_input(bytes: std::sync::Arc<[u8]>) -> (impl Fn() -> usize, impl Fn() -> Input) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let reopened = std::sync::Arc::new(AtomicUsize::new(0));
    let open = move || Input::sniffed("test", Box::new(io::Cursor::new(bytes.to_vec())));
    let again = {
        let (open, reopened) = (open.clone(), std::sync::Arc::clone(&reopened));
        std::sync::Arc::new(move || {
            reopened.fetch_add(1, Ordering::SeqCst);
            open()
        })
    };
    let count = move || reopened.load(Ordering::SeqCst);
    (count, move || open().unwrap().reopenable(again.clone()))
}

/// Every shard ticks where the single engine does: its windows close as the log's time
/// moves on, so its keys stay few and a key cap the single engine never reaches does not
/// make the sharded scan start over. (Ticks change no row: windows closed at the end give
/// the same rows. A shard that missed its ticks would keep every key of its sources: the
/// row-heavy log has a source of its own every fifth line.) The inputs count how often they
/// are opened again. The cap sits between the two: the shards' peaks add up to under 1 200
/// keys here; with the ticks given to shard 0 only, to over 6 000. (A tick given late, a
/// batch after its place, would go unnoticed here.)
#[test]
fn every_shard_ticks_so_a_cap_the_single_engine_never_reaches_keeps_the_shards() {
    let mut opts = builtin("UTC");
    if let ScanMode::Rules { engine, .. } = &mut opts.mode {
        engine.max_tracked_keys = 2_000;
    }
    let (reopened, input) = counted_input(row_heavy(40_000).into());
    let mut runs = Vec::new();
    for threads in [1, 2, 3] {
        let opts = ScanOptions {
            threads,
            ..opts.clone()
        };
        let mut out = Vec::new();
        let summary = run(&opts, vec![input()], &mut out).unwrap();
        runs.push((out, summary));
    }
    assert_eq!(reopened(), 0);
    assert!(runs[0].1.rows_emitted > 7_000, "{}", runs[0].1);
    for (threads, (out, summary)) in [(2, &runs[1]), (3, &runs[2])] {
        assert_eq!(summary, &runs[0].1, "--threads {threads}");
        assert!(out == &runs[0].0, "--threads {threads}: output differs");
    }
}

/// Inputs that cannot be opened again (stdin) are scanned with one engine (parsing still
/// in parallel): the same output as the sharded scan and one thread.
#[test]
fn an_input_that_cannot_be_reopened_gives_the_same_rows() {
    let heavy = row_heavy(20_000);
    let opts = builtin("UTC");
    let (want, want_summary) = run_with(&opts, 1, std::slice::from_ref(&heavy));
    for threads in [2, 3] {
        let opts = ScanOptions {
            threads,
            ..opts.clone()
        };
        let once = Input::sniffed("-", Box::new(io::Cursor::new(heavy.clone()))).unwrap();
        let mut out = Vec::new();
        let summary = run(&opts, vec![once], &mut out).unwrap();
        assert_eq!(summary, want_summary, "--threads {threads}");
        assert!(out == want, "--threads {threads}: output differs");
    }
}

/// An input that fails after `ok` bytes.
struct FailsAfter {
    data: io::Cursor<Vec<u8>>,
}

impl Read for FailsAfter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.data.read(buf)? {
            0 => Err(io::Error::other("device gone")),
            n => Ok(n),
        }
    }
}

#[test]
fn a_read_error_half_way_is_the_same_error_with_threads() {
    for threads in [1, 2] {
        let opts = ScanOptions {
            threads,
            ..builtin("UTC")
        };
        let reader = FailsAfter {
            data: io::Cursor::new(row_heavy(2_000)),
        };
        let failing = Input::sniffed("broken.log", Box::new(reader)).unwrap();
        let mut out = Vec::new();
        let err = run(&opts, vec![input(row_heavy(100)), failing], &mut out).unwrap_err();
        assert_eq!(err.exit_code(), 1, "--threads {threads}");
        assert!(
            err.to_string().starts_with("reading broken.log: "),
            "--threads {threads}: {err}"
        );
        assert!(
            out.is_empty(),
            "--threads {threads}: no output on a read error"
        );
    }
}

/// The same on the sharded path (inputs that can be opened again), with the error many
/// batches in: the workers stop, the error is the read error, and nothing is written.
#[test]
fn a_read_error_in_the_sharded_scan_stops_it_with_that_error() {
    let heavy = row_heavy(20_000);
    assert!(heavy.len() > 40 * super::super::parallel::BATCH_BYTES);
    for threads in [2, 3] {
        let opts = ScanOptions {
            threads,
            ..builtin("UTC")
        };
        let open = {
            let heavy = heavy.clone();
            move || {
                let reader = FailsAfter {
                    data: io::Cursor::new(heavy.clone()),
                };
                Input::sniffed("broken.log", Box::new(reader))
            }
        };
        let failing = open().unwrap().reopenable(std::sync::Arc::new(open));
        let mut out = Vec::new();
        let err = run(&opts, vec![input(row_heavy(100)), failing], &mut out).unwrap_err();
        assert_eq!(err.exit_code(), 1, "--threads {threads}");
        assert_eq!(
            err.to_string(),
            "reading broken.log: device gone",
            "--threads {threads}"
        );
        assert!(
            out.is_empty(),
            "--threads {threads}: no output on a read error"
        );
    }
}
