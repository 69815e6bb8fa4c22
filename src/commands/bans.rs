//! `ollama-guard bans list|add|remove`: the admin API client
//! ([`ollama_guard::admin::client`]) on a terminal.

use std::io::IsTerminal;
use std::process::ExitCode;

use ollama_guard::admin::client;
use ollama_guard::config::BansArgs;

/// Exit 0 on success, 1 when the API refused or was unreachable.
pub(crate) fn main(args: &BansArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ollama-guard: bans: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(client::run(args, std::io::stdout().is_terminal())) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ollama-guard: bans: {e}");
            ExitCode::from(1)
        }
    }
}
