//! The CLI layer: one module per subcommand. Each entry point takes the parsed arguments,
//! calls the library, prints, and returns the process's exit code.

pub(crate) mod bans;
pub(crate) mod demo;
pub(crate) mod healthcheck;
pub(crate) mod scan;
pub(crate) mod serve;
pub(crate) mod simulator;

use std::io::IsTerminal;
use std::process::ExitCode;

use ollama_guard::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Whether diagnostics on stderr may carry ANSI colour: only when stderr is a terminal and
/// `NO_COLOR` is unset or empty (<https://no-color.org>).
fn stderr_colour() -> bool {
    colour_allowed(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// The rule of [`stderr_colour`], apart from the process state it reads.
fn colour_allowed(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.map_or(true, |v| v.is_empty())
}

/// Logs to stderr at `level` (an `EnvFilter` directive; `info` if it does not parse), as
/// text lines (coloured per [`stderr_colour`]) or JSON lines.
fn init_tracing(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(stderr_colour()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// `ollama-guard man`: the manual page (roff, from the same clap definition as `--help`) on
/// stdout.
pub(crate) fn man() -> ExitCode {
    use clap::CommandFactory;
    let page = clap_mangen::Man::new(ollama_guard::config::Cli::command());
    let mut out = Vec::new();
    if let Err(e) = page.render(&mut out) {
        eprintln!("ollama-guard: man: cannot render the manual page: {e}");
        return ExitCode::from(1);
    }
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ollama-guard: man: cannot write to stdout: {e}");
            ExitCode::from(1)
        }
    }
}

/// The multi-threaded runtime of `serve`, `simulator` and `demo`.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colour_allowed;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_allowed(true, None));
        assert!(colour_allowed(true, Some(OsStr::new(""))));
        assert!(!colour_allowed(true, Some(OsStr::new("1"))));
        assert!(!colour_allowed(false, None));
        assert!(!colour_allowed(false, Some(OsStr::new(""))));
    }
}
