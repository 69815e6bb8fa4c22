use std::io::Write;

use http::HeaderValue;
use zstd::stream::raw::CParameter;

use super::*;

/// All of `input` decoded, fed `piece` bytes at a time.
fn decode(input: &[u8], piece: usize) -> (Vec<u8>, Result<(), InflateError>) {
    let mut inflate = Inflate::new().unwrap();
    let mut out = Vec::new();
    for chunk in input.chunks(piece.max(1)) {
        if let Err(e) = inflate.feed(chunk, &mut |d| {
            out.extend_from_slice(d);
            true
        }) {
            return (out, Err(e));
        }
    }
    let end = inflate.finish();
    (out, end)
}

/// `data` compressed as one frame whose header declares a window of 2^`log` bytes and no
/// content size (a streaming compressor that does not know the size in advance).
fn with_window(data: &[u8], log: u32) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.set_parameter(CParameter::WindowLog(log)).unwrap();
    enc.include_contentsize(false).unwrap();
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn headers(values: &[&'static [u8]]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(CONTENT_ENCODING, HeaderValue::from_bytes(v).unwrap());
    }
    h
}

#[test]
fn zstd_is_the_first_content_encoding_exactly_as_go_reads_it() {
    assert!(is_zstd(&headers(&[b"zstd"])));
    assert!(is_zstd(&headers(&[b" \tzstd \t"])));
    assert!(is_zstd(&headers(&[b"zstd", b"gzip"])));
    assert!(!is_zstd(&headers(&[])));
    assert!(!is_zstd(&headers(&[b"ZSTD"])));
    assert!(!is_zstd(&headers(&[b"gzip", b"zstd"])));
    assert!(!is_zstd(&headers(&[b"zstd, gzip"])));
    assert!(!is_zstd(&headers(&[b"x-zstd"])));
    assert!(!is_zstd(&headers(&[b""])));
}

#[test]
fn a_body_decodes_whole_in_any_pieces() {
    let json = br#"{"model":"llama3","messages":[{"role":"user","content":"hi"}],"_debug_render_only":true}"#;
    let z = zstd::encode_all(&json[..], 3).unwrap();
    for piece in [1, 2, 7, z.len()] {
        let (out, end) = decode(&z, piece);
        assert_eq!(out, json, "pieces of {piece}");
        assert_eq!(end, Ok(()));
    }
}

#[test]
fn concatenated_and_skippable_frames_decode_as_one_stream() {
    let mut z = zstd::encode_all(&b"{\"model\":"[..], 1).unwrap();
    // A skippable frame: magic 0x184D2A50 (little-endian), 4-byte length, that many bytes.
    z.extend_from_slice(&[0x50, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, b'x', b'y', b'z']);
    z.extend(zstd::encode_all(&b"\"m\"}"[..], 19).unwrap());
    let (out, end) = decode(&z, 5);
    assert_eq!(out, b"{\"model\":\"m\"}");
    assert_eq!(end, Ok(()));
}

#[test]
fn a_window_above_8_mib_is_refused_as_ollama_refuses_it() {
    let data = vec![b'a'; 1000];
    let (out, end) = decode(&with_window(&data, 23), 64);
    assert_eq!((out, end), (data.clone(), Ok(())));
    let (out, end) = decode(&with_window(&data, 24), 64);
    assert_eq!(out, b"");
    assert_eq!(end, Err(InflateError::Window(1 << 24)));
}

/// `n` bytes that do not compress (xorshift), as JSON string content.
pub(crate) fn incompressible(n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

#[test]
fn more_than_20_mib_decompressed_stops_at_the_limit() {
    let data = incompressible((20 << 20) + 1);
    let z = zstd::encode_all(&data[..], 1).unwrap();
    let (out, end) = decode(&z, 1 << 16);
    assert_eq!(out.len() as u64, MAX_DECODED);
    assert_eq!(out[..], data[..out.len()]);
    assert_eq!(end, Err(InflateError::TooLarge));
    // Exactly 20 MiB is what Ollama still reads.
    let z = zstd::encode_all(&data[..20 << 20], 1).unwrap();
    let (out, end) = decode(&z, 1 << 16);
    assert_eq!((out.len() as u64, end), (MAX_DECODED, Ok(())));
}

#[test]
fn a_decompression_bomb_is_refused_once_it_expands_200_fold() {
    // 20 MiB of spaces compress to a few hundred bytes: refused after the slack plus 200 times
    // what was read, long before 20 MiB were decoded.
    let z = zstd::encode_all(&vec![b' '; 20 << 20][..], 3).unwrap();
    assert!(z.len() < 4096, "{} bytes compressed", z.len());
    let (out, end) = decode(&z, z.len());
    assert_eq!(end, Err(InflateError::Bomb));
    let limit = RATIO_SLACK + RATIO_LIMIT * z.len() as u64;
    assert!(out.len() as u64 <= limit, "{} decoded", out.len());
    assert!(
        out.len() as u64 > limit - OUT as u64,
        "{} decoded",
        out.len()
    );
    // Repeated text within the slack is not a bomb, however well it compresses.
    let small = vec![b' '; RATIO_SLACK as usize];
    let z = zstd::encode_all(&small[..], 3).unwrap();
    assert_eq!(decode(&z, 7), (small, Ok(())));
    // A chat carrying a long document (this repository's README, sent three times as an agent
    // resends its history), at zstd's strongest level, is far from a bomb.
    let doc = include_str!("../../../README.md");
    let turn = serde_json::json!({"role": "user", "content": doc});
    let body = serde_json::json!({"model": "m", "messages": [turn, turn, turn]}).to_string();
    let z = zstd::encode_all(body.as_bytes(), 19).unwrap();
    assert!(
        body.len() as u64 > 5 * z.len() as u64,
        "{} -> {}",
        body.len(),
        z.len()
    );
    assert_eq!(decode(&z, 1 << 14), (body.into_bytes(), Ok(())));
    // A tool message carrying a repeating log (20 000 lines, timestamps cycling every 60)
    // compresses thousands-fold; within the slack it is no bomb.
    let log: String = (0..20_000)
        .map(|i| {
            format!(
                "2026-12-02T03:{:02}:00Z worker ok: batch done, 0 errors\n",
                i % 60
            )
        })
        .collect();
    let tool = serde_json::json!({"role": "tool", "content": log});
    let body = serde_json::json!({"model": "m", "messages": [tool]}).to_string();
    assert!(body.len() > 900_000 && (body.len() as u64) < RATIO_SLACK);
    for level in [3, 19] {
        let z = zstd::encode_all(body.as_bytes(), level).unwrap();
        assert!(body.len() > 1000 * z.len(), "{} -> {}", body.len(), z.len());
        assert_eq!(decode(&z, 1 << 14), (body.clone().into_bytes(), Ok(())));
    }
}

#[test]
fn a_decoder_whose_sink_has_seen_enough_decodes_nothing_more_until_reset() {
    let z = zstd::encode_all(&br#"{"model":"m"}"#[..], 3).unwrap();
    let mut inflate = Inflate::new().unwrap();
    let mut seen = Vec::new();
    inflate.feed(&z, &mut |_| false).unwrap();
    let mut sink = |d: &[u8]| {
        seen.extend_from_slice(d);
        true
    };
    inflate.feed(&z, &mut sink).unwrap();
    assert!(inflate.reset());
    inflate.feed(&z, &mut sink).unwrap();
    assert_eq!(inflate.finish(), Ok(()));
    assert_eq!(seen, br#"{"model":"m"}"#);
}

#[test]
fn more_compressed_bytes_than_any_encoder_makes_are_refused() {
    // Skippable frames decode to nothing; a body of them could otherwise hold a decoder forever.
    let mut skip = vec![0x50, 0x2A, 0x4D, 0x18];
    skip.extend_from_slice(&(1u32 << 20).to_le_bytes());
    skip.resize(8 + (1 << 20), 0);
    let mut inflate = Inflate::new().unwrap();
    let mut fed = 0u64;
    let end = loop {
        match inflate.feed(&skip, &mut |_| true) {
            Ok(()) => fed += skip.len() as u64,
            Err(e) => break e,
        }
    };
    assert_eq!(end, InflateError::TooLong);
    assert!(fed <= MAX_COMPRESSED && fed + skip.len() as u64 > MAX_COMPRESSED);
}

#[test]
fn a_frame_header_gives_its_window() {
    let magic = MAGIC.to_le_bytes();
    let with = |rest: &[u8]| [&magic[..], rest].concat();
    assert_eq!(head(&magic[..3]), Head::Short);
    assert_eq!(head(b"{\"mo"), Head::Other);
    // Skippable frames are libzstd's to read.
    assert_eq!(head(&[0x5F, 0x2A, 0x4D, 0x18, 0]), Head::Other);
    assert_eq!(head(&magic), Head::Short);
    // Window descriptor: exponent 13 (2^23), mantissa 0, then mantissa 1 (+1/8).
    assert_eq!(head(&with(&[0x00])), Head::Short);
    assert_eq!(
        head(&with(&[0x00, 13 << 3])),
        Head::Frame {
            len: 6,
            window: 8 << 20
        }
    );
    assert_eq!(
        head(&with(&[0x00, (13 << 3) | 1])),
        Head::Frame {
            len: 6,
            window: (8 << 20) + (1 << 20)
        }
    );
    // Single segment: the window is the content size (1, 2 with +256, 4, 8 bytes), at least
    // 1 KiB.
    assert_eq!(
        head(&with(&[0x20, 5])),
        Head::Frame {
            len: 6,
            window: 1024
        }
    );
    assert_eq!(
        head(&with(&[0x60, 0xFF, 0xFF])),
        Head::Frame {
            len: 7,
            window: 65_791
        }
    );
    assert_eq!(
        head(&with(&[0xA0, 0, 0, 0x90, 0])),
        Head::Frame {
            len: 9,
            window: 9 << 20
        }
    );
    assert_eq!(
        head(&with(&[0xE0, 0, 0, 0, 0, 0, 0, 0, 1])),
        Head::Frame {
            len: 13,
            window: 1 << 56
        }
    );
    // A dictionary ID (4 bytes) and a 4-byte content size beside a window descriptor.
    assert_eq!(
        head(&with(&[0x83, 10 << 3, 1, 2, 3, 4, 9, 9, 9, 9])),
        Head::Frame {
            len: 14,
            window: 1 << 20
        }
    );
    assert_eq!(
        head(&with(&[0x83, 10 << 3, 1, 2, 3, 4, 9, 9, 9])),
        Head::Short
    );
}

/// `data` as one frame whose header declares a 2^`log`-byte window *and* its content size (a
/// header no stock encoder writes: it would shrink the window to the content).
fn declaring(data: &[u8], log: u8) -> Vec<u8> {
    let plain = with_window(data, 10);
    // magic, descriptor 0x00 (no content size, not single-segment), window descriptor, blocks.
    assert_eq!(plain[4], 0x00);
    let mut z = plain[..4].to_vec();
    z.push(0x80); // a 4-byte content size
    z.push((log - 10) << 3);
    z.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    z.extend_from_slice(&plain[6..]);
    z
}

#[test]
fn a_whole_frame_asking_for_a_huge_window_is_refused_however_small_its_content() {
    let data = br#"{"model":"m","_debug_render_only":true}"#;
    // The crafted header is sound: with a legal window the frame decodes.
    assert_eq!(
        decode(&declaring(data, 23), 1 << 16),
        (data.to_vec(), Ok(()))
    );
    for log in [24u8, 31] {
        let z = declaring(data, log);
        for piece in [1, 5, z.len()] {
            let (out, end) = decode(&z, piece);
            assert_eq!(out, b"", "2^{log}, pieces of {piece}");
            assert_eq!(end, Err(InflateError::Window(1 << log)));
        }
    }
    // The same after an innocent first frame, in one piece.
    let mut z = zstd::encode_all(&b"{\"model\":"[..], 3).unwrap();
    z.extend(declaring(b"\"m\"}", 31));
    let (out, end) = decode(&z, z.len());
    assert_eq!(
        (out, end),
        (b"{\"model\":".to_vec(), Err(InflateError::Window(1 << 31)))
    );
}

#[test]
fn tiny_frames_back_to_back_decode_in_any_pieces() {
    let mut z = Vec::new();
    let mut want = Vec::new();
    for part in [&b"{"[..], b"", b"\"model\"", b":", b"\"m\"", b"}"] {
        z.extend(zstd::encode_all(part, 3).unwrap());
        want.extend_from_slice(part);
    }
    for piece in [1, 2, 3, 17, z.len()] {
        assert_eq!(
            decode(&z, piece),
            (want.clone(), Ok(())),
            "pieces of {piece}"
        );
    }
}

#[test]
fn a_body_ending_inside_a_frame_is_truncated() {
    let z = zstd::encode_all(&br#"{"model":"m"}"#[..], 3).unwrap();
    for cut in [1, 4, z.len() - 1] {
        let (_, end) = decode(&z[..cut], 3);
        assert_eq!(end, Err(InflateError::Truncated), "cut at {cut}");
    }
    let (_, end) = decode(b"", 1);
    assert_eq!(end, Ok(()));
}

#[test]
fn json_sent_as_zstd_is_not_a_frame() {
    let (out, end) = decode(br#"{"model":"m"}"#, 64);
    assert_eq!(out, b"");
    assert_eq!(
        end,
        Err(InflateError::Corrupt("Unknown frame descriptor".into()))
    );
}

#[test]
fn a_sink_that_has_seen_enough_stops_the_decoding() {
    let z = zstd::encode_all(&vec![b'x'; 1 << 20][..], 3).unwrap();
    let mut inflate = Inflate::new().unwrap();
    let mut seen = 0;
    let r = inflate.feed(&z, &mut |d| {
        seen += d.len();
        false
    });
    assert_eq!(r, Ok(()));
    assert_eq!(seen, OUT);
}

#[test]
fn a_frame_whose_checksum_does_not_match_is_refused() {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    enc.write_all(br#"{"model":"m"}"#).unwrap();
    let mut z = enc.finish().unwrap();
    let (out, end) = decode(&z, 4);
    assert_eq!((out, end), (br#"{"model":"m"}"#.to_vec(), Ok(())));
    let last = z.len() - 1;
    z[last] ^= 1;
    let (_, end) = decode(&z, 4);
    assert_eq!(
        end,
        Err(InflateError::Corrupt(
            "Restored data doesn't match checksum".into()
        ))
    );
}

/// What [`decode`] gives, each piece decoded in slices of `slice` bytes (resumed after every
/// pause), with the most output one slice handed on and the number of pauses.
fn decode_sliced(
    input: &[u8],
    piece: usize,
    slice: u64,
) -> ((Vec<u8>, Result<(), InflateError>), usize, usize) {
    let mut inflate = Inflate::new().unwrap();
    let out = std::cell::RefCell::new(Vec::new());
    let this = std::cell::Cell::new(0);
    let (mut largest, mut pauses) = (0, 0);
    let mut sink = |d: &[u8]| {
        out.borrow_mut().extend_from_slice(d);
        this.set(this.get() + d.len());
        true
    };
    for chunk in input.chunks(piece.max(1)) {
        let mut left = chunk;
        let mut progress = inflate.feed_for(left, &mut sink, slice);
        loop {
            largest = largest.max(this.take());
            match progress {
                Ok(Progress::Done) => break,
                Ok(Progress::Paused(at)) => {
                    pauses += 1;
                    left = &left[at..];
                    progress = inflate.resume_for(left, &mut sink, slice);
                }
                Err(e) => return ((out.take(), Err(e)), largest, pauses),
            }
        }
    }
    let end = inflate.finish();
    ((out.take(), end), largest, pauses)
}

#[test]
fn a_body_decoded_in_slices_gives_what_it_gives_whole_and_pauses_within_a_piece_of_its_slice() {
    // One large frame of text; the same body as 90 frames of 32 KiB each (each frame ends
    // within one piece of output, so the pause must come between frames too); concatenated and
    // skippable frames; a frame whose window Ollama refuses after an innocent one; a bomb; a
    // body cut inside a frame.
    let text: Vec<u8> = (0..3u32 << 20)
        .map(|i| b"lorem ipsum dolor sit amet, "[(i % 28) as usize] ^ (i >> 16 & 1) as u8)
        .collect();
    let one = zstd::encode_all(&text[..], 3).unwrap();
    let mut many = Vec::new();
    for part in text[..90 << 15].chunks(1 << 15) {
        many.extend(zstd::encode_all(part, 1).unwrap());
    }
    let mut mixed = zstd::encode_all(&b"{\"model\":"[..], 1).unwrap();
    mixed.extend_from_slice(&[0x50, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, b'x', b'y', b'z']);
    mixed.extend(zstd::encode_all(&b"\"m\"}"[..], 19).unwrap());
    let mut window = zstd::encode_all(&text[..1 << 16], 3).unwrap();
    window.extend(with_window(&text[..1000], 24));
    let bomb = zstd::encode_all(&vec![b' '; 20 << 20][..], 3).unwrap();
    let cut = one[..one.len() - 3].to_vec();
    let cases: [(&str, &[u8], &[usize]); 6] = [
        ("one frame", &one, &[4096, 1 << 16, one.len()]),
        ("many frames", &many, &[1000, many.len()]),
        ("mixed", &mixed, &[1, 5, mixed.len()]),
        ("window", &window, &[7, window.len()]),
        ("bomb", &bomb, &[100, bomb.len()]),
        ("cut", &cut, &[1 << 16, cut.len()]),
    ];
    for (name, z, pieces) in cases {
        for &piece in pieces {
            let whole = decode(z, piece);
            for slice in [1, 1000, 64 << 10, 1 << 20] {
                let (sliced, largest, pauses) = decode_sliced(z, piece, slice);
                assert_eq!(
                    sliced.1, whole.1,
                    "{name}, pieces of {piece}, slices of {slice}"
                );
                assert!(
                    sliced.0 == whole.0,
                    "{name}, pieces of {piece}, slices of {slice}: {} against {}",
                    sliced.0.len(),
                    whole.0.len()
                );
                assert!(
                    largest as u64 <= slice + OUT as u64,
                    "{name}, pieces of {piece}, slices of {slice}: {largest} in one slice"
                );
                // A body fed whole must pause (fed in pieces, each piece bounds a call's work).
                if piece == z.len() && whole.0.len() as u64 > 2 * (slice + OUT as u64) {
                    assert!(pauses > 0, "{name}, pieces of {piece}, slices of {slice}");
                }
            }
        }
    }
    assert_eq!(decode(&one, one.len()), (text.clone(), Ok(())));
    assert_eq!(decode(&many, 4096).0, text[..90 << 15]);
    assert_eq!(decode(&window, 7).1, Err(InflateError::Window(1 << 24)));
    assert_eq!(decode(&bomb, 100).1, Err(InflateError::Bomb));
    assert_eq!(decode(&cut, 1 << 16).1, Err(InflateError::Truncated));
}

#[test]
fn input_that_decodes_to_little_or_nothing_still_spends_the_slice() {
    const SLICE: u64 = 64 << 10;
    let mib = 1 << 20;
    // Empty frames (9 bytes each), 8-byte skippable frames, one frame of empty raw blocks,
    // 1-byte frames: about 1 MiB of each, fed whole.
    let empty_frame = [0x28, 0xB5, 0x2F, 0xFD, 0x20, 0x00, 0x01, 0x00, 0x00];
    let skippable = [0x50, 0x2A, 0x4D, 0x18, 0, 0, 0, 0];
    let mut blocks = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x00];
    while blocks.len() < mib {
        blocks.extend_from_slice(&[0, 0, 0]);
    }
    blocks.extend_from_slice(&[1, 0, 0]);
    let one = zstd::encode_all(&b"x"[..], 3).unwrap();
    let cases: [(&str, Vec<u8>); 4] = [
        ("empty frames", empty_frame.repeat(mib / 9)),
        ("skippable frames", skippable.repeat(mib / 8)),
        ("empty blocks", blocks),
        ("1-byte frames", one.repeat(mib / one.len())),
    ];
    for (name, z) in cases {
        let whole = decode(&z, z.len());
        assert_eq!(whole.1, Ok(()), "{name}");
        let mut inflate = Inflate::new().unwrap();
        let mut out = Vec::new();
        let mut sink = |d: &[u8]| {
            out.extend_from_slice(d);
            true
        };
        let (mut left, mut calls, mut most) = (&z[..], 0, 0);
        let mut progress = inflate.feed_for(left, &mut sink, SLICE);
        loop {
            calls += 1;
            match progress.unwrap() {
                Progress::Done => {
                    most = most.max(left.len());
                    break;
                }
                Progress::Paused(at) => {
                    most = most.max(at);
                    left = &left[at..];
                    progress = inflate.resume_for(left, &mut sink, SLICE);
                }
            }
        }
        assert_eq!(inflate.finish(), Ok(()), "{name}");
        assert_eq!(out, whole.0, "{name}");
        // No call took in more than a slice and a piece of input.
        assert!(
            most as u64 <= SLICE + IN_PIECE as u64,
            "{name}: {most} bytes in one call"
        );
        assert!(
            calls as u64 >= z.len() as u64 / (SLICE + IN_PIECE as u64),
            "{name}: {calls} calls"
        );
    }
}
