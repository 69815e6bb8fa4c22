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
//! - [`builtin`]: the default rule set ([`default_rules`]) with the reason for every value.
//! - [`glob`]: the `*` / `?` path patterns.
//! - [`source`]: source identity (IPv6 prefix grouping, IPv4-mapped addresses, allowlist).
//! - `window`: compact per-key tumbling and sliding state.
//! - `paths`: reference-counted path texts behind the fixed-size keys.
//! - [`engine`]: [`Engine::observe`]; `sweep`: [`Engine::tick`], [`Engine::finish`], eviction.
//! - [`event`]: [`Event`], [`DetectionEvent`] (SPEC §5 fields), [`Severity`], [`RuleAction`].
//!
//! # Memory
//! A tumbling key is 64 bytes (32-byte key, 32-byte state) plus one hashbrown control byte;
//! at hashbrown's 7/8 maximum load that is 74 bytes per key, 149 bytes just after a table
//! doubles (7/16 load), about 103 bytes averaged over a doubling cycle (85 bytes measured
//! with 100 000 keys by `tests::eviction::memory_per_tumbling_key_is_bounded`). A sliding key is
//! 248 bytes (its 15 sub-buckets are inline). Path texts are shared by every key on that
//! path and freed with the last one. [`Engine::approx_memory_bytes`] reports the live figure.

pub mod builtin;
pub mod engine;
pub mod event;
pub mod glob;
mod paths;
pub mod rule;
pub mod source;
mod sweep;
mod validate;
mod window;

#[cfg(test)]
mod tests;

pub use builtin::default_rules;
pub use engine::{Engine, EngineError, EngineOptions};
pub use event::{DetectionEvent, Event, RuleAction, Severity};
pub use rule::{
    build_rules, Cutoff, GroupBy, Rule, RuleConfig, RuleError, SeverityRule, WindowKind,
};
pub use source::{Allowlist, SourceKey};
