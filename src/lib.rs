//! ollama-guard: a transparent reverse proxy for Ollama that measures every request and
//! detects (and, in block mode, stops) model exfiltration.
//!
//! # Layout
//! - [`config`]: command line, environment and TOML merged into one validated `Config`.
//! - `ip`: the canonical form of addresses and the one parser of operator-written IPs and
//!   CIDRs (config and admin API); `time`: the one machine timestamp format; `respond`: the
//!   one builder of responses the guard writes itself.
//! - `record`: the `RequestRecord` every finished request becomes — the one type the proxy
//!   and `scan` hand to everything downstream.
//! - `route`: Ollama's route table (bounded metric labels) and path normalisation.
//! - `proxy`: the request path as a tower stack (client IP, record, host guard, gate,
//!   upstream-error mapping, rewrite, pooled client), connection limits, the accept side.
//! - [`gin`]: Ollama's `[GIN]` access-line format and Go duration text, written by the access
//!   log and read by `scan`.
//! - `detect`: rules, window store and engine; pure, time passed in.
//! - [`scan`]: the offline driver of the same engine over Ollama logs.
//! - `cluster`: `[cluster]`, bans and counters shared across replicas through Redis, all
//!   Redis I/O on one background task.
//! - `enforce`: the ban table (allowlist, escalation, IPv6 grouping), its state file, and the
//!   run-time service that is the proxy's gate, bans when the pipeline says so and expires bans.
//! - `pipeline`: the record pipeline after the proxy: telemetry, then the detection
//!   engine, the one decision whether a verdict bans, the detection log; the window ticker.
//! - `telemetry`: Prometheus metrics, the access log and the detection log (typed events,
//!   one serialiser).
//! - [`admin`]: the admin listener (`/metrics`, `/healthz`, `/readyz`, `/api/bans`) and the
//!   `bans` command's client.
//! - [`serve`]: wires everything together for the `serve` command: logs, the pipeline,
//!   enforcement, the proxy, hot reload and shutdown.
//!
//! Only what the binary and the integration tests use is public (`config`, `serve`,
//! `scan::scan_logs`, `admin::client`, `gin`); the rest is `pub(crate)`. ARCHITECTURE.md
//! draws the request and record paths.
//!
//! The command line itself (one module per subcommand; stdout, stderr and exit codes) is the
//! binary's `src/commands/`, which calls this library. The fake Ollama behind `demo`,
//! `simulator`, the tests and the benchmarks is the separate `ollama-sim` crate
//! (`crates/ollama-sim`); this library does not depend on it.

pub mod admin;
pub(crate) mod affinity;
pub(crate) mod auth;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod detect;
pub(crate) mod enforce;
pub mod gin;
pub(crate) mod ip;
pub(crate) mod pipeline;
pub(crate) mod policy;
pub(crate) mod proxy;
pub(crate) mod record;
pub(crate) mod respond;
pub(crate) mod route;
pub mod scan;
pub mod serve;
pub(crate) mod telemetry;
pub(crate) mod text;
pub(crate) mod time;

/// The package version (`Cargo.toml`), as `ollama_guard_build_info{version}` reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The source revision this binary was built from: the 12-digit short commit of the git
/// checkout, else `OLLAMA_GUARD_REVISION` at build time, else `unknown` (`build.rs`);
/// `ollama_guard_build_info{revision}`.
pub const REVISION: &str = env!("OLLAMA_GUARD_BUILD_REVISION");

/// What `ollama-guard --version` prints after the name: `0.1.0 (rev abcdef123456)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (rev ",
    env!("OLLAMA_GUARD_BUILD_REVISION"),
    ")"
);
