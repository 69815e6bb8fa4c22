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

/// A pull or push given a duration but no line count (`x-sim-transfer-ms` without
/// `x-sim-chunks`) reports progress about this often, like a real download does.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Upper bound on the number of progress lines derived from `x-sim-transfer-ms`.
const MAX_PROGRESS_LINES: usize = 10_000;

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
    /// What the request said about its schedule, for [`Controls::transfer_schedule`].
    transfer: TransferHints,
}

/// The inputs of a pull's or push's schedule, which is set by its total duration rather
/// than by a per-line delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TransferHints {
    /// `x-sim-transfer-ms`.
    total: Option<Duration>,
    /// [`SimConfig::transfer_duration`] (zero in `fast` mode).
    default_total: Duration,
    /// `x-sim-chunks` was given.
    chunks_given: bool,
    /// `x-sim-chunk-delay-ms` was given.
    chunk_delay_given: bool,
}

impl Controls {
    /// The configuration's defaults (no delays at all in `fast` mode), overridden by any
    /// well-formed `x-sim-*` header; malformed values are ignored.
    pub(crate) fn from_headers(headers: &HeaderMap, cfg: &SimConfig) -> Self {
        let (default_chunk_delay, default_transfer) = if cfg.fast {
            (Duration::ZERO, Duration::ZERO)
        } else {
            (cfg.chunk_delay, cfg.transfer_duration)
        };
        let millis = |name: &str| number(headers, name).map(Duration::from_millis);
        let chunks = number(headers, "x-sim-chunks").and_then(|n| usize::try_from(n).ok());
        let chunk_delay = millis("x-sim-chunk-delay-ms");
        let fail = match headers.get("x-sim-fail").map(|v| v.as_bytes()) {
            Some(b"error-line") => Fail::ErrorLine,
            Some(b"abort") => Fail::Abort,
            _ => Fail::None,
        };
        Controls {
            delay: millis("x-sim-delay-ms").unwrap_or(Duration::ZERO),
            chunk_delay: chunk_delay.unwrap_or(default_chunk_delay),
            chunks: chunks.unwrap_or(cfg.chunks).min(MAX_CHUNKS),
            fail,
            transfer: TransferHints {
                total: millis("x-sim-transfer-ms"),
                default_total: default_transfer,
                chunks_given: chunks.is_some(),
                chunk_delay_given: chunk_delay.is_some(),
            },
        }
    }

    /// The schedule of a pull or push, which runs for a total duration:
    /// - `x-sim-transfer-ms: N` spreads its progress lines evenly over N ms: `x-sim-chunks`
    ///   of them if given, else one every 250 ms (at least the configured number);
    /// - otherwise an explicit `x-sim-chunk-delay-ms` keeps the ordinary schedule;
    /// - otherwise the lines are spread over [`SimConfig::transfer_duration`].
    pub(crate) fn transfer_schedule(self) -> Self {
        let hints = self.transfer;
        let (total, chunks) = match hints.total {
            Some(total) if hints.chunks_given => (total, self.chunks),
            Some(total) => {
                let paced = total.as_millis() / PROGRESS_INTERVAL.as_millis();
                let paced = usize::try_from(paced).unwrap_or(usize::MAX);
                (total, paced.max(self.chunks).min(MAX_PROGRESS_LINES))
            }
            None if hints.chunk_delay_given => return self,
            None => (hints.default_total, self.chunks),
        };
        let lines = u32::try_from(chunks.max(1)).unwrap_or(u32::MAX);
        Controls {
            chunks,
            chunk_delay: total / lines,
            ..self
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
            (c.delay, c.chunk_delay, c.chunks, c.fail),
            (Duration::ZERO, Duration::from_millis(10), 5, Fail::None)
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

    #[test]
    fn transfers_default_to_the_configured_duration() {
        let c =
            Controls::from_headers(&HeaderMap::new(), &SimConfig::default()).transfer_schedule();
        assert_eq!(c.chunks, 5);
        assert_eq!(c.stream_duration(), SimConfig::default().transfer_duration);
        let fast = SimConfig {
            fast: true,
            ..SimConfig::default()
        };
        let c = Controls::from_headers(&HeaderMap::new(), &fast).transfer_schedule();
        assert_eq!(c.stream_duration(), Duration::ZERO);
    }

    #[test]
    fn transfer_header_sets_the_total_and_paces_the_lines() {
        let h = headers(&[("x-sim-transfer-ms", "30000")]);
        let c = Controls::from_headers(&h, &SimConfig::default()).transfer_schedule();
        assert_eq!((c.chunks, c.chunk_delay), (120, Duration::from_millis(250)));
        // Short transfers keep at least the configured number of lines.
        let h = headers(&[("x-sim-transfer-ms", "300")]);
        let c = Controls::from_headers(&h, &SimConfig::default()).transfer_schedule();
        assert_eq!((c.chunks, c.chunk_delay), (5, Duration::from_millis(60)));
        // An explicit line count wins, and the total is still honoured.
        let h = headers(&[("x-sim-transfer-ms", "1000"), ("x-sim-chunks", "4")]);
        let c = Controls::from_headers(&h, &SimConfig::default()).transfer_schedule();
        assert_eq!((c.chunks, c.chunk_delay), (4, Duration::from_millis(250)));
        // So is the header in fast mode, like every other header.
        let fast = SimConfig {
            fast: true,
            ..SimConfig::default()
        };
        let h = headers(&[("x-sim-transfer-ms", "1000")]);
        let c = Controls::from_headers(&h, &fast).transfer_schedule();
        assert_eq!(c.stream_duration(), Duration::from_millis(1000));
        // Very long transfers are capped in lines, not in time.
        let h = headers(&[("x-sim-transfer-ms", "100000000")]);
        let c = Controls::from_headers(&h, &SimConfig::default()).transfer_schedule();
        assert_eq!(c.chunks, MAX_PROGRESS_LINES);
        assert_eq!(c.stream_duration(), Duration::from_millis(100_000_000));
    }

    #[test]
    fn chunk_delay_header_keeps_the_ordinary_schedule_for_transfers() {
        let h = headers(&[("x-sim-chunk-delay-ms", "7"), ("x-sim-chunks", "3")]);
        let c = Controls::from_headers(&h, &SimConfig::default()).transfer_schedule();
        assert_eq!((c.chunks, c.chunk_delay), (3, Duration::from_millis(7)));
    }
}
