//! Ollama's `[GIN]` access line: written byte for byte like gin v1.10, read back fast, and
//! matched the way the seed rule's Splunk search matches it.
//!
//! Ollama logs every request through gin's default formatter:
//!
//! ```text
//! [GIN] 2025/10/02 - 14:47:30 | 200 | 57.204518733s |    192.168.1.50 | POST     "/api/generate"
//! ```
//!
//! i.e. `"[GIN] %v |%s %3d %s| %13v | %15s |%s %-7s %s %#v\n%s"` with the local time, the
//! status, the latency as Go duration text (truncated to whole seconds above one minute),
//! the client IP, the method and the Go-quoted path with its query. The `%s` slots are
//! colour codes on a TTY and empty otherwise; the last one is gin's private error text,
//! which follows on its own lines.
//!
//! # Layout
//! - [`duration`]: Go's `Duration.String()` and `ParseDuration`, gin's latency truncation.
//! - `quote`: Go's `strconv.Quote` and its inverse, with Go's notion of printable.
//! - `write`: [`write_gin_line`] for the access log.
//! - `read`: [`parse_gin_line`] for `scan`, a hand-written byte parser.
//! - [`splunk`]: the SPL `rex` extraction, exactly, for `scan --splunk-compat`.

pub mod duration;
mod quote;
mod read;
pub mod splunk;
mod write;

pub use duration::{format_go_duration, gin_latency, parse_go_duration};
pub use quote::go_quote;
pub use read::{parse_gin_line, ParsedLine, SkipReason};
pub use splunk::{splunk_extract, splunk_response_time, SplunkFields};
pub use write::{write_gin_after_time, write_gin_line, write_gin_time, GinFields};

#[cfg(test)]
mod tests;
