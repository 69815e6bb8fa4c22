//! The CLI layer: one module per subcommand. Each entry point takes the parsed arguments,
//! calls the library, prints, and returns the process's exit code.

pub(crate) mod bans;
pub(crate) mod demo;
pub(crate) mod healthcheck;
pub(crate) mod scan;
pub(crate) mod serve;
pub(crate) mod simulator;

use tracing_subscriber::EnvFilter;

/// Logs to stderr at `level` (an `EnvFilter` directive; `info` if it does not parse).
fn init_tracing(level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The multi-threaded runtime of `serve`, `simulator` and `demo`.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
