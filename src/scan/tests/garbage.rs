//! Hostile input: binary data, NULs, overlong lines, invalid UTF-8, gzip (good and broken).

use std::io::{Cursor, Write};

use flate2::write::GzEncoder;
use flate2::Compression;

use super::{builtin, compat, data_file, exfil, gin_line, input, scan, BIN_1500};
use crate::scan::{scan_rows, Input, ScanError, ScanOptions};

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

fn line_count(bytes: &[u8]) -> u64 {
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    newlines + u64::from(!bytes.is_empty() && bytes.last() != Some(&b'\n'))
}

#[test]
fn random_bytes_with_nuls_are_skipped_in_both_modes() {
    let mut bytes = noise(200_000, 0x9e37_79b9_7f4a_7c15);
    bytes.extend_from_slice(b"\0\0\0\n[GIN] \0\0\n\xff\xfe[GIN] 2025/10/02 - 14:47:30 | \0");
    let lines = line_count(&bytes);
    for opts in [builtin("UTC"), compat("UTC")] {
        let (rows, summary) = scan(&opts, &bytes);
        assert_eq!(rows, vec![]);
        assert_eq!(summary.lines_read, lines);
        assert_eq!(summary.lines_parsed, 0);
        assert_eq!(summary.lines_skipped(), lines);
    }
}

#[test]
fn a_one_megabyte_line_without_newline_is_one_skipped_line() {
    let bytes = vec![b'x'; 1 << 20];
    let (_, summary) = scan(&builtin("UTC"), &bytes);
    assert_eq!(summary.lines_read, 1);
    assert_eq!(summary.skipped, vec![("no_gin_marker", 1)]);
    let (_, summary) = scan(&compat("UTC"), &bytes);
    assert_eq!(summary.skipped, vec![("no_match", 1)]);
}

#[test]
fn lines_over_the_limit_are_skipped_and_the_next_line_is_read() {
    let opts = ScanOptions {
        max_line_bytes: 1024,
        proxy_only_rules: Vec::new(),
        ..builtin("UTC")
    };
    let mut bytes = noise(5000, 7)
        .into_iter()
        .filter(|&b| b != b'\n')
        .collect::<Vec<_>>();
    bytes.push(b'\n');
    bytes.extend_from_slice(
        gin_line(BIN_1500, "57s", "10.0.0.5", "POST", "/api/generate").as_bytes(),
    );
    bytes.extend(std::iter::repeat(b'y').take(3000)); // overlong again, at end of input
    let (rows, summary) = scan(&opts, &bytes);
    assert_eq!(
        rows,
        vec![exfil(BIN_1500, "10.0.0.5", "/api/generate", 1, 57.0, 57.0)]
    );
    assert_eq!(summary.lines_read, 3);
    assert_eq!(summary.skipped, vec![("line_too_long", 2)]);
}

#[test]
fn a_last_line_of_exactly_the_limit_is_read_whole() {
    let line = gin_line(BIN_1500, "57s", "10.0.0.5", "POST", "/api/generate");
    let body = line.trim_end_matches('\n');
    let opts = ScanOptions {
        max_line_bytes: body.len(),
        proxy_only_rules: Vec::new(),
        ..builtin("UTC")
    };
    let (rows, summary) = scan(&opts, body.as_bytes());
    assert_eq!(rows.len(), 1);
    assert_eq!(summary.lines_skipped(), 0);
}

#[test]
fn invalid_utf8_is_lossy_in_compat_mode_and_skipped_in_default_mode() {
    let mut bytes = gin_line(BIN_1500, "57.5s", "10.0.0.5", "POST", "/aXb").into_bytes();
    let x = bytes.iter().position(|&b| b == b'X').unwrap();
    bytes[x] = 0xff;
    let (rows, _) = scan(&compat("UTC"), &bytes);
    assert_eq!(
        rows,
        vec![exfil(BIN_1500, "10.0.0.5", "/a\u{fffd}b", 1, 57.5, 57.5)]
    );
    let (rows, summary) = scan(&builtin("UTC"), &bytes);
    assert_eq!(rows, vec![]);
    assert_eq!(summary.skipped, vec![("not_utf8", 1)]);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn gzip_input_is_recognised_by_its_magic_bytes_and_may_have_several_members() {
    let log = data_file("gin-synthetic.log");
    let (plain_rows, plain) = scan(&builtin("UTC"), &log);
    let (half_a, half_b) = log.split_at(log.len() / 2);
    let mut two_members = gzip(half_a);
    two_members.extend(gzip(half_b));
    let (rows, summary) = scan(&builtin("UTC"), &two_members);
    assert_eq!(rows, plain_rows);
    assert_eq!(summary, plain);
}

/// zstd input (`compresscmd zstd` in logrotate) is read too, frames one after the other, as
/// `zstd -d` reads them; a truncated one is a read error like a truncated gzip.
#[test]
fn zstd_input_is_recognised_by_its_magic_bytes_and_may_have_several_frames() {
    let log = data_file("gin-synthetic.log");
    let (plain_rows, plain) = scan(&builtin("UTC"), &log);
    let (half_a, half_b) = log.split_at(log.len() / 2);
    let mut two_frames = zstd::stream::encode_all(half_a, 3).unwrap();
    two_frames.extend(zstd::stream::encode_all(half_b, 3).unwrap());
    let (rows, summary) = scan(&builtin("UTC"), &two_frames);
    assert_eq!(rows, plain_rows);
    assert_eq!(summary, plain);
    let whole = zstd::stream::encode_all(&log[..], 3).unwrap();
    let cut = whole[..whole.len() - 12].to_vec();
    let err = scan_rows(&builtin("UTC"), vec![input(cut)]).unwrap_err();
    assert!(
        matches!(&err, ScanError::Read { input, .. } if input == "test"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 1);
}

#[test]
fn truncated_gzip_is_a_read_error_with_exit_code_1() {
    let log = data_file("gin-synthetic.log");
    let gz = gzip(&log);
    let cut = gz[..gz.len() - 12].to_vec();
    let err = scan_rows(&builtin("UTC"), vec![input(cut)]).unwrap_err();
    assert!(
        matches!(&err, ScanError::Read { input, .. } if input == "test"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 1);
}

#[test]
fn several_inputs_are_one_stream_in_the_given_order() {
    let log = data_file("gin-synthetic.log");
    let (whole, _) = scan(&compat("UTC"), &log);
    // Split after line 6, so lines 5, 7 and 13 (the rows) come from different inputs.
    let cut = log
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(5)
        .unwrap()
        .0
        + 1;
    let (a, b) = log.split_at(cut);
    let inputs = vec![
        Input::sniffed("a", Box::new(Cursor::new(a.to_vec()))).unwrap(),
        Input::sniffed("b", Box::new(Cursor::new(gzip(b)))).unwrap(),
    ];
    let (rows, summary) = scan_rows(&compat("UTC"), inputs).unwrap();
    assert_eq!(rows, whole);
    assert_eq!(summary.lines_read, 13);
}

#[test]
fn lines_are_split_the_same_whatever_the_read_buffer_size() {
    use crate::scan::input::{Line, LineSplitter};
    let bytes = b"ab\n123456\n12345\n\nxyz1234567";
    let want: Vec<(Line, Vec<u8>)> = vec![
        (Line::Text, b"ab\n".to_vec()),
        (Line::TooLong, b"12345".to_vec()),
        (Line::Text, b"12345\n".to_vec()),
        (Line::Text, b"\n".to_vec()),
        (Line::TooLong, b"xyz12".to_vec()),
    ];
    for capacity in 1..=bytes.len() + 1 {
        let mut reader = std::io::BufReader::with_capacity(capacity, &bytes[..]);
        let mut got = Vec::new();
        LineSplitter::new(5)
            .each(&mut reader, |kind, line| got.push((kind, line.to_vec())))
            .unwrap();
        assert_eq!(got, want, "buffer of {capacity} bytes");
    }
}

#[test]
fn lines_straddling_buffer_fills_give_the_same_rows() {
    let log = data_file("gin-synthetic.log");
    let (whole, whole_summary) = scan(&builtin("UTC"), &log);
    let small = std::io::BufReader::with_capacity(7, Cursor::new(log));
    let (rows, summary) =
        scan_rows(&builtin("UTC"), vec![Input::new("small", Box::new(small))]).unwrap();
    assert_eq!(rows, whole);
    assert_eq!(summary, whole_summary);
}

/// The lines of `inputs` as the batches cut them: `None` for a line over the limit.
fn batched_lines(inputs: &[(Vec<u8>, usize)], max: usize) -> Vec<Option<Vec<u8>>> {
    use crate::scan::parallel::Batches;
    let inputs = inputs
        .iter()
        .map(|(bytes, capacity)| {
            let reader = std::io::BufReader::with_capacity(*capacity, Cursor::new(bytes.clone()));
            Input::new("mem", Box::new(reader))
        })
        .collect();
    let mut batches = Batches::new(inputs, max);
    let mut got = Vec::new();
    loop {
        let (batch, done) = batches.next().unwrap();
        assert!(
            done || !batch.lines.is_empty(),
            "an empty batch before the end"
        );
        for line in &batch.lines {
            got.push(line.clone().map(|range| batch.data[range].to_vec()));
        }
        if done {
            return got;
        }
    }
}

#[test]
fn batches_cut_the_lines_the_splitter_gives() {
    use crate::scan::input::{Line, LineSplitter};
    use crate::scan::parallel::BATCH_BYTES;
    let mut seed = 0x5eed_u64;
    let mut next = move |n: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) as usize % n
    };
    for case in 0..300 {
        let max = [1, 5, 60, 700, BATCH_BYTES - 1, BATCH_BYTES, 3 * BATCH_BYTES][case % 7];
        let inputs: Vec<(Vec<u8>, usize)> = (0..1 + next(3))
            .map(|_| {
                let mut bytes = Vec::new();
                for _ in 0..next(40) {
                    // Lengths around the limit, the batch size and several batches.
                    let len = match next(6) {
                        0 => max.saturating_sub(1) + next(3),
                        1 => BATCH_BYTES - 2 + next(4),
                        2 => next(3 * BATCH_BYTES + 10),
                        _ => next(80),
                    };
                    bytes.extend((0..len).map(|i| b'a' + (i % 26) as u8));
                    bytes.push(b'\n');
                }
                if next(2) == 0 {
                    // A last line without its newline, maybe over the limit.
                    bytes.extend((0..next(2 * max + 2)).map(|_| b'z'));
                }
                (bytes, [1, 7, 4096, 256 * 1024][next(4)])
            })
            .collect();
        let mut want = Vec::new();
        for (bytes, _) in &inputs {
            LineSplitter::new(max)
                .each(&mut Cursor::new(bytes), |kind, line| {
                    want.push((kind == Line::Text).then(|| line.to_vec()));
                })
                .unwrap();
        }
        assert!(
            batched_lines(&inputs, max) == want,
            "case {case}: max {max}, {} inputs",
            inputs.len()
        );
    }
}

#[test]
fn batches_of_an_overlong_line_split_across_reads_give_one_too_long_line() {
    use crate::scan::parallel::BATCH_BYTES;
    // A line of 5 batches with no newline, then two short lines; a limit of one batch.
    let mut bytes = vec![b'x'; 5 * BATCH_BYTES];
    bytes.extend_from_slice(b"\nab\ncd");
    let got = batched_lines(&[(bytes, 7)], BATCH_BYTES);
    assert_eq!(
        got,
        vec![None, Some(b"ab\n".to_vec()), Some(b"cd".to_vec())]
    );
    // Just under the limit, across several reads: one whole line.
    let mut bytes = vec![b'y'; 3 * BATCH_BYTES];
    bytes.push(b'\n');
    let got = batched_lines(&[(bytes.clone(), 7)], 3 * BATCH_BYTES);
    assert_eq!(got, vec![Some(bytes)]);
}

/// A reader whose every other read is cut short by a signal (`Interrupted`), handing over
/// at most 1 000 bytes a read.
struct Interrupting {
    bytes: Cursor<Vec<u8>>,
    calls: usize,
}

impl std::io::Read for Interrupting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.calls += 1;
        if self.calls % 2 == 1 {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        let n = buf.len().min(1_000);
        std::io::Read::read(&mut self.bytes, &mut buf[..n])
    }
}

#[test]
fn interrupted_reads_are_read_again_by_both_line_readers() {
    use crate::scan::input::LineSplitter;
    use crate::scan::parallel::{Batches, BATCH_BYTES};
    let mut log = Vec::new();
    for i in 0..3 * BATCH_BYTES / 40 {
        log.extend_from_slice(format!("line {i:06} of the interrupted input\n").as_bytes());
    }
    let interrupting = || {
        std::io::BufReader::with_capacity(
            512,
            Interrupting {
                bytes: Cursor::new(log.clone()),
                calls: 0,
            },
        )
    };
    let want: Vec<Vec<u8>> = log
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let mut split = Vec::new();
    LineSplitter::new(1_000)
        .each(&mut interrupting(), |_, line| split.push(line.to_vec()))
        .unwrap();
    assert!(split == want, "the splitter: {} lines", split.len());
    let mut batches = Batches::new(vec![Input::new("eintr", Box::new(interrupting()))], 1_000);
    let mut batched = Vec::new();
    loop {
        let (batch, done) = batches.next().unwrap();
        batched.extend(
            batch
                .lines
                .iter()
                .map(|l| batch.data[l.clone().unwrap()].to_vec()),
        );
        if done {
            break;
        }
    }
    assert!(batched == want, "the batches: {} lines", batched.len());
}
