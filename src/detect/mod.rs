//! Detection: rules, window store and engine — pure, with time passed in.
//!
//! Nothing here knows about HTTP, files or clocks. The proxy and `scan` turn requests into
//! [`RequestRecord`](crate::record::RequestRecord)s and hand them to [`Engine::observe`];
//! a background task (or `scan`, with log time) calls [`Engine::tick`]; the returned
//! [`Event`]s go to the detection log, the metrics and `enforce`.
//!
//! # Layout
//! - [`rule`]: the `[[rule]]` config table ([`RuleConfig`]) and its validated form ([`Rule`]).
//! - `validate`: config → rule, with `rule[NAME].KEY: problem` errors ([`RuleError`]).
//! - [`builtin`]: the default rule set ([`default_rules`]) with the reason for every value
//!   and its block-safe default action.
//! - `overrides`: `[rules.NAME]` tables tuning the built-ins ([`effective_rules`]).
//! - [`glob`]: the `*` / `?` path patterns.
//! - [`source`]: source identity (IPv6 prefix grouping, IPv4-mapped addresses, allowlist).
//! - `identity`: API key names interned to the 16-bit ids of identity keys.
//! - `window`: the fixed-size map key and the tumbling state.
//! - `sliding`: the sliding state (12-bit sub-bucket ring, latency figures per run).
//! - `paths`: reference-counted path texts behind the fixed-size keys.
//! - [`engine`]: [`Engine::observe`]; `sweep`: [`Engine::tick`], [`Engine::finish`], eviction.
//! - `reload`: [`Engine::rebuild`] for SIGHUP, keeping the counters of unchanged rules
//!   ([`ReloadReport`]).
//! - [`event`]: [`Event`], [`DetectionEvent`] (detection-log fields, docs/detection-log.md), [`Severity`], [`RuleAction`].
//!
//! # Memory
//! The window maps' budget is 100 bytes per tracked key of a count rule. A key is 28 bytes
//! (rule index, source, 64-bit path hash; 4-aligned). A tumbling entry is 64 bytes (a
//! 36-byte state, 4-aligned: 48-bit maximum latency and byte total, see `window`); a sliding
//! entry is 72 bytes (44-byte state). The maps (`keytable`) pack entries densely in 32 KiB chunks
//! and find them through a hash table of 4-byte positions (5 bytes a bucket with its control
//! byte), so a key costs its entry plus 5.7–11.4 bytes of table (7/8 to 7/16 load) plus the
//! unused part of each shard's last chunk. Measured with 100 000 keys
//! (`tests::eviction::memory_per_*`): **72 bytes per tumbling key, 79–80 per sliding
//! key** (95 each when 72-byte entries sat in the hash table's own buckets, whose load factor
//! also made the figure swing from 83 to 167 bytes across doublings). Sliding keys of volume
//! rules (`metric = "bytes_*"`) keep one 32-bit byte total per sub-bucket instead of 12-bit
//! counts: a 128-byte entry in a map of their own, **137 bytes** measured, paid by volume
//! keys only.
//!
//! The sliding state got there by giving up two things, documented in `sliding`:
//! - sub-bucket counts are 12-bit (saturating at 4095), so sliding thresholds are capped at
//!   4095 (validation says so; tumbling thresholds stop at `u32::MAX`, their count's
//!   width). Counting is otherwise unchanged, error ≤ 1/15 of the window.
//! - latency sum and maximum are no longer kept per sub-bucket but once per *run* (the
//!   requests since the key's window was last empty, or since its last episode ended).
//!   Summaries are exact for the span they state (their `window_start` widens to the run's
//!   start when that is earlier); a detection's avg/max are the run's, equal to the
//!   window's for a burst after a quiet window.
//!
//! Path texts come on top, for `src_path` rules only: one entry per distinct path of the live
//! keys, shared by every key on that path and freed with the last one. Route paths are
//! static (no text stored); other texts are capped at 1 KiB plus `…` (see `paths`), so the
//! worst case, every key on its own maximal random path, adds about 1.1 KB per key: at most
//! ~1.2 KB per tracked key in all, bounded by `max_tracked_keys`.
//!
//! Identity keys (`group_by = "identity"` / `"identity_path"`) are the same 28-byte keys: the
//! identity, interned to a 16-bit id (`identity`), takes the source's place
//! ([`SourceKey::identity`]). Each also keeps the address of its last request (`last_src`, a
//! 48-byte entry, ~55 bytes with the map's overhead) for the lines written when its window
//! closes; address keys pay nothing for it.
//! [`Engine::approx_memory_bytes`] reports the live figure.

pub(crate) mod builtin;
pub(crate) mod engine;
pub(crate) mod event;
mod flagged;
pub(crate) mod glob;
mod identity;
mod inflight;
mod keytable;
mod overrides;
pub(crate) mod paths;
mod reload;
pub(crate) mod rule;
pub(crate) mod shared;
mod sliding;
pub(crate) mod source;
mod sweep;
mod validate;
mod window;

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) use builtin::default_rules;
pub use engine::EngineError;
pub(crate) use engine::{Engine, EngineOptions, Local, SUPPORTED_EPOCH_SECS};
pub(crate) use event::{DetectionEvent, Event, Severity};
pub(crate) use flagged::Flagged;
pub(crate) use overrides::effective_rules;
pub use overrides::RuleOverride;
pub(crate) use reload::{ReloadReport, RuleKeys};
pub(crate) use rule::{build_rules, Rule, WindowKind};
pub use rule::{RuleConfig, RuleError};
pub(crate) use source::SourceKey;
pub(crate) use window::WindowKey;
