//! A `Content-Encoding: zstd` request body, decompressed the way Ollama decompresses it, so
//! the policy stage judges what Ollama will read.
//!
//! Ollama (0.18 and later) decompresses such a body on its OpenAI- and Anthropic-compatible
//! routes before reading the JSON (`/v1/chat/completions` and `/v1/completions` carry
//! `_debug_render_only`):
//! - only when the *first* `Content-Encoding` value is exactly `zstd` (Go's `Header.Get`, the
//!   value trimmed of spaces and tabs);
//! - with a window of at most 8 MiB (`WithDecoderMaxMemory(8<<20)`);
//! - reading at most 20 MiB of decompressed bytes (`MaxBytesReader(20<<20)`), and the whole
//!   body before acting on any of it;
//! - refusing with `400` whatever it cannot decompress.
//!
//! This decoder is libzstd's streaming decoder with the same window limit. A zstd frame begins
//! with bytes no JSON text can begin with, so a body both readers would take as JSON is never a
//! frame, and the reverse. Where the two decoders could disagree (a stream libzstd refuses), the
//! stage refuses too (`policy.unreadable_body`): Ollama answers what it cannot decompress `400`,
//! so closing there costs no client anything.

use http::header::CONTENT_ENCODING;
use http::HeaderMap;
use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

/// The largest window Ollama's decoder accepts: 2^23 = 8 MiB.
pub(crate) const WINDOW_LOG_MAX: u32 = 23;
/// The most decompressed bytes Ollama reads (20 MiB); one more and it answers `400`.
pub(crate) const MAX_DECODED: u64 = 20 << 20;
/// The decoder's output buffer: decompressed bytes are handed on in pieces of this size.
const OUT: usize = 32 << 10;

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

/// Why a body could not be read as Ollama would read it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InflateError {
    /// Not a zstd stream libzstd decodes with an 8 MiB window.
    #[error("zstd: {0}")]
    Corrupt(String),
    /// More decompressed bytes than Ollama reads.
    #[error("zstd: more than {MAX_DECODED} bytes once decompressed")]
    TooLarge,
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
    /// A frame was started and has not ended.
    in_frame: bool,
}

impl std::fmt::Debug for Inflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflate")
            .field("total", &self.total)
            .field("in_frame", &self.in_frame)
            .finish_non_exhaustive()
    }
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
            in_frame: false,
        })
    }

    /// Decompresses `input`, handing each piece of output to `sink` until it answers `false`
    /// (it has seen enough; the rest of `input` is then not decoded). Past [`MAX_DECODED`]
    /// bytes the pieces stop, the last one cut at the limit, and the answer is
    /// [`InflateError::TooLarge`].
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), InflateError> {
        let mut input = InBuffer::around(input);
        loop {
            let mut output = OutBuffer::around(&mut self.out[..]);
            let read_before = input.pos();
            let hint = self
                .decoder
                .run(&mut input, &mut output)
                .map_err(|e| InflateError::Corrupt(e.to_string()))?;
            let written = output.pos();
            // libzstd answers 0 once a frame is decoded and flushed, and a size hint otherwise
            // — also when it merely waits for the next frame, so a frame is under way only once
            // it has taken bytes.
            if hint == 0 {
                self.in_frame = false;
            } else if input.pos() > read_before || written > 0 {
                self.in_frame = true;
            }
            if written > 0 {
                let room = MAX_DECODED - self.total;
                let keep = written.min(usize::try_from(room).unwrap_or(usize::MAX));
                self.total += keep as u64;
                if keep > 0 && !sink(&self.out[..keep]) {
                    return Ok(());
                }
                if keep < written {
                    return Err(InflateError::TooLarge);
                }
            }
            // Done when the input is used up and the output buffer was not filled (libzstd
            // holds nothing more back).
            if input.pos() == input.src.len() && written < self.out.len() {
                return Ok(());
            }
        }
    }

    /// The body has ended: an error if it ended inside a frame.
    pub(crate) fn finish(&self) -> Result<(), InflateError> {
        if self.in_frame {
            Err(InflateError::Truncated)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
