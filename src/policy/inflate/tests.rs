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
    assert_eq!(
        end,
        Err(InflateError::Corrupt(
            "Frame requires too much memory for decoding".into()
        ))
    );
}

#[test]
fn more_than_20_mib_decompressed_stops_at_the_limit() {
    let z = zstd::encode_all(&vec![b' '; (20 << 20) + 1][..], 3).unwrap();
    assert!(z.len() < 4096, "{} bytes compressed", z.len());
    let (out, end) = decode(&z, z.len());
    assert_eq!(out.len() as u64, MAX_DECODED);
    assert_eq!(end, Err(InflateError::TooLarge));
    // Exactly 20 MiB is what Ollama still reads.
    let z = zstd::encode_all(&vec![b' '; 20 << 20][..], 3).unwrap();
    let (out, end) = decode(&z, 1000);
    assert_eq!((out.len() as u64, end), (MAX_DECODED, Ok(())));
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
