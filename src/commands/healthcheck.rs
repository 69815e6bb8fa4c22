//! `ollama-guard healthcheck`: a container probe (the runtime image has no curl). GET
//! `/readyz` on the admin listener; exit 0 when it answers 200, else 1 with one line on
//! stderr saying why.

use std::process::ExitCode;
use std::time::Duration;

use ollama_guard::admin::client;
use ollama_guard::config::HealthcheckArgs;

/// How long the whole probe may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Exit 0 when ready, 1 otherwise (unreachable, not 200, or no answer within 3 s).
pub(crate) fn main(args: &HealthcheckArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ollama-guard: healthcheck: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(client::readyz(&args.admin, TIMEOUT)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ollama-guard: healthcheck: not ready: {e}");
            ExitCode::from(1)
        }
    }
}
