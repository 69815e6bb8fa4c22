//! A `Content-Encoding: zstd` request body, decompressed the way Ollama decompresses it, so
//! the policy stage judges what Ollama will read.
//!
//! Ollama (0.18 and later) decompresses such a body on its OpenAI- and Anthropic-compatible
//! routes before reading the JSON (of those, `/v1/chat/completions` and `/v1/completions` carry
//! `_debug_render_only`; [`decodes`]):
//! - only when the *first* `Content-Encoding` value is exactly `zstd` (Go's `Header.Get`, the
//!   value trimmed of spaces and tabs);
//! - with a window of at most 8 MiB (`WithDecoderMaxMemory(8<<20)`), checked on every frame;
//! - reading at most 20 MiB of decompressed bytes (`MaxBytesReader(20<<20)`), and the whole
//!   body before acting on any of it;
//! - refusing with `400` whatever it cannot decompress.
//!
//! This decoder is libzstd's streaming decoder with the same window limit, plus the window check
//! on each frame header done here: libzstd decodes a frame that arrives whole in one pass and
//! skips its own check then. A zstd frame begins with bytes no JSON text can begin with, so a
//! body both readers would take as JSON is never a frame, and the reverse. Where the two decoders
//! could disagree (a stream libzstd refuses), the stage refuses too (`policy.unreadable_body`):
//! Ollama answers what it cannot decompress `400`, so closing there costs no client anything.
//!
//! Decoding work is bounded by what the client sends: a body that expands more than
//! [`RATIO_LIMIT`] times (plus [`RATIO_SLACK`]) is a decompression bomb, and one longer than
//! [`MAX_COMPRESSED`] is no encoder's output; both are refused.

use http::header::CONTENT_ENCODING;
use http::HeaderMap;

use crate::route::Route;
use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

/// The largest window Ollama's decoder accepts: 2^23 = 8 MiB.
pub(crate) const WINDOW_LOG_MAX: u32 = 23;
/// The most decompressed bytes Ollama reads (20 MiB); one more and it answers `400`.
pub(crate) const MAX_DECODED: u64 = 20 << 20;
/// The decoder's output buffer: decompressed bytes are handed on in pieces of this size.
const OUT: usize = 32 << 10;
/// The most compressed bytes handed to libzstd at once within a frame (a sliced decode pauses
/// between pieces).
const IN_PIECE: usize = 16 << 10;
/// What starting a frame counts for in a slice's work, in bytes (frames as small as 9 bytes
/// that decode to nothing cost their header's checks and libzstd's frame set-up).
pub(crate) const FRAME_COST: u64 = 64;
/// The largest window of a decoder kept for reuse ([`Inflate::reset`]).
pub(crate) const KEEP_WINDOW: u64 = 1 << 20;

/// Whether Ollama decompresses a zstd body on this route (of those whose bodies the policy
/// stage reads): its OpenAI-compatible chat and completions routes. `/api/generate` and
/// `/api/chat` read the body as JSON whatever its `Content-Encoding` (a compressed one is
/// answered `400`), so it is judged as sent there.
pub(crate) fn decodes(route: Route) -> bool {
    matches!(route, Route::OpenAiChat | Route::OpenAiCompletions)
}

/// Whether Ollama decompresses this request's body: the first `Content-Encoding` value, trimmed
/// of spaces and tabs, is exactly `zstd` (Go compares case-sensitively).
pub(crate) fn is_zstd(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_ENCODING)
        .is_some_and(|v| trim_ows(v.as_bytes()) == b"zstd")
}

/// `v` without leading and trailing spaces and tabs (what Go's header reader trims).
fn trim_ows(v: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    &v[start..end]
}

/// How many times its compressed size a body may grow once decompressed, beyond
/// [`RATIO_SLACK`] (Apache httpd's `DeflateInflateRatioLimit` default). A decompression bomb
/// (a few hundred bytes that expand to megabytes) goes far above it, and is refused before it
/// costs more than that ratio in decoding and scanning work.
pub(crate) const RATIO_LIMIT: u64 = 200;
/// Decompressed bytes allowed whatever the ratio: repetitive text compresses far beyond 200-fold
/// (a chat carrying a 940 KB repeating log: 2 800-fold at zstd level 3), so the ratio applies
/// only past this much, which the scan reads in about 10 ms at worst.
pub(crate) const RATIO_SLACK: u64 = 4 << 20;
/// The most compressed bytes read: no encoder makes a stream larger than its content plus a
/// little framing (a 128 KiB allowance), so a body past this (padding, endless skippable
/// frames) is not one a client compressed.
pub(crate) const MAX_COMPRESSED: u64 = MAX_DECODED + (128 << 10);

/// Why a body could not be read as Ollama would read it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InflateError {
    /// Not a zstd stream libzstd decodes with an 8 MiB window.
    #[error("zstd: {0}")]
    Corrupt(String),
    /// A frame's header asks for a window larger than Ollama's decoder allows.
    #[error("zstd: a frame needs a {0}-byte window; Ollama's decoder allows 8388608")]
    Window(u64),
    /// More decompressed bytes than Ollama reads.
    #[error("zstd: more than {MAX_DECODED} bytes once decompressed")]
    TooLarge,
    /// More compressed bytes than any encoder makes of what Ollama reads.
    #[error("zstd: more than {MAX_COMPRESSED} bytes compressed")]
    TooLong,
    /// Expanded more than [`RATIO_LIMIT`] times (a decompression bomb).
    #[error("zstd: expands more than {RATIO_LIMIT}-fold (a decompression bomb)")]
    Bomb,
    /// The body ended inside a frame.
    #[error("zstd: the body ends inside a frame")]
    Truncated,
}

/// A streaming decoder (see the module docs).
pub(crate) struct Inflate {
    decoder: Decoder<'static>,
    out: Box<[u8]>,
    /// Decompressed bytes so far.
    total: u64,
    /// Compressed bytes taken so far.
    taken: u64,
    /// A frame was started and has not ended.
    in_frame: bool,
    /// The start of the next frame, gathered until its header is whole (then checked).
    head: Vec<u8>,
    /// The largest window a frame has asked for (what libzstd may still hold allocated).
    window_max: u64,
    /// The sink has seen enough: nothing more is decoded until [`Inflate::reset`].
    stopped: bool,
    /// Decompressed bytes the current slice may still hand on.
    slice_left: u64,
    /// Paused inside a frame: libzstd may hold output of input it has already taken.
    held_back: bool,
}

/// How far a sliced decode went ([`Inflate::feed_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// The input is used up (or the sink has seen enough).
    Done,
    /// The slice is spent: the input from this offset on is still to be decoded.
    Paused(usize),
}

/// How one run of libzstd over some input ended.
enum Run {
    /// Used this much of it: all of it, or up to a frame's end.
    Used(usize),
    /// The slice is spent after this much of it.
    Paused(usize),
    /// The sink has seen enough.
    Stopped,
}

impl std::fmt::Debug for Inflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflate")
            .field("total", &self.total)
            .field("taken", &self.taken)
            .field("in_frame", &self.in_frame)
            .finish_non_exhaustive()
    }
}

/// The zstd frame magic number (little-endian on the wire).
const MAGIC: u32 = 0xFD2F_B528;
/// The longest frame header: magic, descriptor, window, dictionary ID, content size.
const HEADER_MAX: usize = 4 + 1 + 1 + 4 + 8;
/// The smallest window a decoder uses (1 KiB).
const WINDOW_MIN: u64 = 1 << 10;

/// What the start of a frame says (RFC 8878, section 3.1.1.1).
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// More bytes are needed to tell.
    Short,
    /// A zstd frame whose header is this long, with this window.
    Frame { len: usize, window: u64 },
    /// Not a zstd frame header (a skippable frame, or bytes libzstd will refuse).
    Other,
}

/// Reads the frame header at the start of `b`. A single-segment frame's window is its content
/// size, as in both Ollama's decoder and libzstd.
fn head(b: &[u8]) -> Head {
    let Some(magic) = b.get(..4) else {
        return Head::Short;
    };
    if u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]) != MAGIC {
        return Head::Other;
    }
    let Some(&fhd) = b.get(4) else {
        return Head::Short;
    };
    let single = fhd & 0x20 != 0;
    let fcs_len = match fhd >> 6 {
        0 => usize::from(single),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let dict_len = [0, 1, 2, 4][usize::from(fhd & 3)];
    let len = 5 + usize::from(!single) + dict_len + fcs_len;
    let Some(header) = b.get(..len) else {
        return Head::Short;
    };
    let window = if single {
        let fcs = &header[len - fcs_len..];
        let mut v = [0u8; 8];
        v[..fcs_len].copy_from_slice(fcs);
        let size = u64::from_le_bytes(v) + if fcs_len == 2 { 256 } else { 0 };
        size.max(WINDOW_MIN)
    } else {
        let wd = header[5];
        let log = 10 + u32::from(wd >> 3);
        let base = 1u64 << log;
        base + (base / 8) * u64::from(wd & 7)
    };
    Head::Frame { len, window }
}

impl Inflate {
    /// A decoder with Ollama's window limit.
    pub(crate) fn new() -> Result<Self, InflateError> {
        let corrupt = |e: std::io::Error| InflateError::Corrupt(e.to_string());
        let mut decoder = Decoder::new().map_err(corrupt)?;
        decoder
            .set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))
            .map_err(corrupt)?;
        Ok(Inflate {
            decoder,
            out: vec![0; OUT].into_boxed_slice(),
            total: 0,
            taken: 0,
            in_frame: false,
            head: Vec::with_capacity(HEADER_MAX),
            window_max: 0,
            stopped: false,
            slice_left: u64::MAX,
            held_back: false,
        })
    }

    /// Makes the decoder ready for another body, keeping its allocations (creating one costs
    /// about 9 µs, most of it libzstd's context; reusing one, 0.1 µs). Answers whether it is
    /// worth keeping: not once a frame asked for a window above [`KEEP_WINDOW`], whose buffers
    /// libzstd would hold on to while the decoder sits idle.
    pub(crate) fn reset(&mut self) -> bool {
        if self.window_max > KEEP_WINDOW || self.decoder.reinit().is_err() {
            return false;
        }
        self.total = 0;
        self.taken = 0;
        self.in_frame = false;
        self.head.clear();
        self.stopped = false;
        self.held_back = false;
        true
    }

    /// Decompresses `input`, handing each piece of output to `sink` until it answers `false`
    /// (it has seen enough; the rest of `input` is then not decoded). Past [`MAX_DECODED`]
    /// bytes the pieces stop, the last one cut at the limit, and the answer is
    /// [`InflateError::TooLarge`]; past the ratio limit, [`InflateError::Bomb`]. Once the sink
    /// has answered `false`, nothing more is decoded until [`Inflate::reset`].
    #[cfg(test)]
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), InflateError> {
        self.feed_for(input, sink, u64::MAX).map(|_| ())
    }

    /// [`Inflate::feed`], stopping for a pause once about `slice` bytes of work are done (at most
    /// one output piece, or one piece of input, more): the caller lets others run, then hands
    /// the rest of `input` (from the answer's offset on) to [`Inflate::resume_for`]. Work is
    /// what goes to the sink plus what libzstd takes in plus [`FRAME_COST`] a frame, so neither
    /// a body that expands to megabytes nor one that decodes to nothing (skippable or empty
    /// frames, empty blocks) is decoded in one go.
    pub(crate) fn feed_for(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> bool,
        slice: u64,
    ) -> Result<Progress, InflateError> {
        if self.stopped {
            return Ok(Progress::Done);
        }
        self.taken += input.len() as u64;
        if self.taken > MAX_COMPRESSED {
            return Err(InflateError::TooLong);
        }
        self.resume_for(input, sink, slice)
    }

    /// Goes on after [`Progress::Paused`] with what was left of the input (the bytes were
    /// counted when first fed).
    pub(crate) fn resume_for(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> bool,
        slice: u64,
    ) -> Result<Progress, InflateError> {
        if self.stopped {
            return Ok(Progress::Done);
        }
        self.slice_left = slice.max(1);
        let mut rest = input;
        let paused = |rest: &[u8]| Ok(Progress::Paused(input.len() - rest.len()));
        loop {
            // Checked here too, not only inside a frame: tiny frames back to back each end
            // within one piece of output.
            if self.slice_left == 0 {
                return paused(rest);
            }
            // A pause inside bytes gathered for a header leaves the frame's next bytes here:
            // they come before the new input.
            if self.in_frame && !self.head.is_empty() {
                match self.run_gathered(sink)? {
                    Run::Used(_) => continue,
                    Run::Paused(_) => return paused(rest),
                    Run::Stopped => return Ok(Progress::Done),
                }
            }
            if self.in_frame {
                // After a pause libzstd may still hold output of input it has taken.
                if rest.is_empty() && !self.held_back {
                    return Ok(Progress::Done);
                }
                // A piece at a time: blocks that decode to nothing are work too.
                let piece = &rest[..rest.len().min(IN_PIECE)];
                match self.run(piece, sink)? {
                    Run::Used(used) => rest = &rest[used..],
                    Run::Paused(used) => return paused(&rest[used..]),
                    Run::Stopped => return Ok(Progress::Done),
                }
                continue;
            }
            // Between frames: the next frame's header is gathered whole and checked before
            // libzstd sees it. (libzstd decodes a frame that arrives whole in one pass without
            // checking its window; Ollama's decoder checks every frame's.)
            let take = (HEADER_MAX - self.head.len()).min(rest.len());
            self.head.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.head.is_empty() {
                return Ok(Progress::Done);
            }
            match head(&self.head) {
                Head::Short => return Ok(Progress::Done),
                Head::Frame { window, .. } if window > 1 << WINDOW_LOG_MAX => {
                    return Err(InflateError::Window(window));
                }
                Head::Frame { window, .. } => self.window_max = self.window_max.max(window),
                Head::Other => {}
            }
            self.slice_left = self.slice_left.saturating_sub(FRAME_COST);
            // The gathered bytes go to libzstd; it stops where a frame ends, and what follows
            // is kept for the next header check (or, after a pause, for the frame).
            match self.run_gathered(sink)? {
                Run::Used(_) => {}
                Run::Paused(_) => return paused(rest),
                Run::Stopped => return Ok(Progress::Done),
            }
        }
    }

    /// Runs libzstd over the bytes gathered in `head`, keeping there what it did not take.
    fn run_gathered(&mut self, sink: &mut dyn FnMut(&[u8]) -> bool) -> Result<Run, InflateError> {
        let mut gathered = std::mem::take(&mut self.head);
        let ran = self.run(&gathered, sink)?;
        if let Run::Used(used) | Run::Paused(used) = ran {
            gathered.drain(..used);
            self.head = gathered;
        }
        Ok(ran)
    }

    /// Runs libzstd over `input` until it is used up, a frame ends, the sink has seen enough
    /// or the slice is spent.
    fn run(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<Run, InflateError> {
        let mut input = InBuffer::around(input);
        self.held_back = false;
        loop {
            let mut output = OutBuffer::around(&mut self.out[..]);
            let read_before = input.pos();
            let hint = self
                .decoder
                .run(&mut input, &mut output)
                .map_err(|e| InflateError::Corrupt(e.to_string()))?;
            let written = output.pos();
            let took = input.pos() - read_before;
            self.slice_left = self.slice_left.saturating_sub(took as u64);
            // libzstd answers 0 once a frame is decoded and flushed, and a size hint otherwise
            // — also when it merely waits for the next frame, so a frame is under way only once
            // it has taken bytes.
            let ended = hint == 0;
            if ended {
                self.in_frame = false;
            } else if input.pos() > read_before || written > 0 {
                self.in_frame = true;
            }
            if written > 0 {
                let room = MAX_DECODED - self.total;
                let keep = written.min(usize::try_from(room).unwrap_or(usize::MAX));
                if self.total + keep as u64 > RATIO_SLACK + RATIO_LIMIT * self.taken {
                    return Err(InflateError::Bomb);
                }
                self.total += keep as u64;
                if keep > 0 && !sink(&self.out[..keep]) {
                    self.stopped = true;
                    return Ok(Run::Stopped);
                }
                self.slice_left = self.slice_left.saturating_sub(keep as u64);
                if keep < written {
                    return Err(InflateError::TooLarge);
                }
            }
            // Done when a frame ended (the next one's header is checked first), or when the
            // input is used up and the output buffer was not filled (libzstd holds nothing
            // more back).
            let used = input.pos();
            if ended || (used == input.src.len() && written < self.out.len()) {
                return Ok(Run::Used(used));
            }
            if self.slice_left == 0 {
                self.held_back = true;
                return Ok(Run::Paused(used));
            }
        }
    }

    /// The body has ended: an error if it ended inside a frame.
    pub(crate) fn finish(&self) -> Result<(), InflateError> {
        if self.in_frame || !self.head.is_empty() {
            Err(InflateError::Truncated)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
