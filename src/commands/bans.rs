//! `ollama-guard bans list|add|remove` and `keys add|list|revoke`: the admin API client
//! ([`ollama_guard::admin::client`]) on a terminal.

use std::io::IsTerminal;
use std::process::ExitCode;

use ollama_guard::admin::client;
use ollama_guard::config::BansArgs;

/// `ollama-guard keys add|list|revoke`: exit 0 on success, 1 when the API refused or was
/// unreachable.
pub(crate) fn keys(args: &ollama_guard::config::KeysArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ollama-guard: keys: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(client::run_keys(args, std::io::stdout().is_terminal())) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ollama-guard: keys: {e}");
            ExitCode::from(1)
        }
    }
}

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
