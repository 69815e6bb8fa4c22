//! `ollama-guard scan`: [`ollama_guard::scan::scan_logs`] with rows on stdout and the
//! summary on stderr.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use ollama_guard::config::ScanArgs;
use ollama_guard::scan::{scan_logs, ScanError};

/// Exit 0, 2 (bad arguments, one line `ollama-guard: scan: ...`) or 1 (an error during the
/// scan). A closed stdout (`scan ... | head`) ends the scan quietly with exit 0.
pub(crate) fn main(args: &ScanArgs) -> ExitCode {
    let stdout = io::stdout();
    let result = {
        let mut out = io::BufWriter::with_capacity(64 * 1024, stdout.lock());
        scan_logs(args, stdout.is_terminal(), &mut out)
        // `out` is dropped (flushed) here, before anything goes to stderr.
    };
    match result {
        Ok(summary) => {
            eprintln!("{summary}");
            ExitCode::SUCCESS
        }
        Err(ScanError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = io::stdout().flush();
            eprintln!("ollama-guard: scan: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
