//! Per-request controls, read from `x-sim-*` request headers.
//!
//! They are headers (not simulator configuration) so a test can make one request slow,
//! long or broken *through the proxy*, which forwards headers untouched.

use std::time::Duration;

use http::HeaderMap;

use super::SimConfig;

/// Upper bound on `x-sim-chunks`: streams are planned up front, so an absurd count must not
/// exhaust memory.
const MAX_CHUNKS: usize = 100_000;

/// How a streamed response should break, if at all (`x-sim-fail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// Stream normally.
    None,
    /// Emit an in-band error line after two frames and end the stream cleanly, as Ollama
    /// does when a runner fails mid-generation.
    ErrorLine,
    /// Cut the connection after two frames, without the chunked terminator.
    Abort,
}

/// The schedule one request is served with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Controls {
    /// Wait before sending the response head (`x-sim-delay-ms`).
    pub(crate) delay: Duration,
    /// Wait before each streamed chunk (`x-sim-chunk-delay-ms`).
    pub(crate) chunk_delay: Duration,
    /// Number of content chunks in a stream (`x-sim-chunks`).
    pub(crate) chunks: usize,
    /// Deliberate failure (`x-sim-fail`).
    pub(crate) fail: Fail,
}

impl Controls {
    /// The configuration's defaults (no delays at all in `fast` mode), overridden by any
    /// well-formed `x-sim-*` header; malformed values are ignored.
    pub(crate) fn from_headers(headers: &HeaderMap, cfg: &SimConfig) -> Self {
        let default_chunk_delay = if cfg.fast {
            Duration::ZERO
        } else {
            cfg.chunk_delay
        };
        let millis = |name: &str| number(headers, name).map(Duration::from_millis);
        let fail = match headers.get("x-sim-fail").map(|v| v.as_bytes()) {
            Some(b"error-line") => Fail::ErrorLine,
            Some(b"abort") => Fail::Abort,
            _ => Fail::None,
        };
        Controls {
            delay: millis("x-sim-delay-ms").unwrap_or(Duration::ZERO),
            chunk_delay: millis("x-sim-chunk-delay-ms").unwrap_or(default_chunk_delay),
            chunks: number(headers, "x-sim-chunks")
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(cfg.chunks)
                .min(MAX_CHUNKS),
            fail,
        }
    }

    /// How long a whole stream takes; non-streamed answers (`"stream": false`) wait this long
    /// before their head, as a real generation would.
    pub(crate) fn stream_duration(&self) -> Duration {
        self.chunk_delay
            .saturating_mul(u32::try_from(self.chunks).unwrap_or(u32::MAX))
    }
}

fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn defaults_come_from_the_config() {
        let c = Controls::from_headers(&HeaderMap::new(), &SimConfig::default());
        assert_eq!(
            c,
            Controls {
                delay: Duration::ZERO,
                chunk_delay: Duration::from_millis(10),
                chunks: 5,
                fail: Fail::None
            }
        );
    }

    #[test]
    fn fast_mode_zeroes_the_default_chunk_delay_but_honours_headers() {
        let cfg = SimConfig {
            fast: true,
            ..SimConfig::default()
        };
        let c = Controls::from_headers(&HeaderMap::new(), &cfg);
        assert_eq!(c.chunk_delay, Duration::ZERO);
        let h = headers(&[("x-sim-delay-ms", "250"), ("x-sim-chunk-delay-ms", "7")]);
        let c = Controls::from_headers(&h, &cfg);
        assert_eq!(c.delay, Duration::from_millis(250));
        assert_eq!(c.chunk_delay, Duration::from_millis(7));
    }

    #[test]
    fn headers_override_chunks_and_fail_mode() {
        let h = headers(&[("x-sim-chunks", "12"), ("x-sim-fail", "abort")]);
        let c = Controls::from_headers(&h, &SimConfig::default());
        assert_eq!((c.chunks, c.fail), (12, Fail::Abort));
        let h = headers(&[("x-sim-fail", "error-line")]);
        let c = Controls::from_headers(&h, &SimConfig::default());
        assert_eq!(c.fail, Fail::ErrorLine);
    }

    #[test]
    fn malformed_values_fall_back_to_defaults_and_chunks_are_capped() {
        let h = headers(&[
            ("x-sim-chunks", "many"),
            ("x-sim-delay-ms", "-1"),
            ("x-sim-fail", "explode"),
        ]);
        let c = Controls::from_headers(&h, &SimConfig::default());
        assert_eq!((c.chunks, c.delay, c.fail), (5, Duration::ZERO, Fail::None));
        let h = headers(&[("x-sim-chunks", "99999999999")]);
        assert_eq!(
            Controls::from_headers(&h, &SimConfig::default()).chunks,
            MAX_CHUNKS
        );
    }

    #[test]
    fn stream_duration_is_chunks_times_chunk_delay() {
        let c = Controls::from_headers(&HeaderMap::new(), &SimConfig::default());
        assert_eq!(c.stream_duration(), Duration::from_millis(50));
    }
}
