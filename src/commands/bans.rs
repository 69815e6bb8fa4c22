//! `ollama-guard bans list|add|remove`, `keys add|list|revoke` and `status`: the admin API
//! client ([`ollama_guard::admin::client`]) on a terminal.

use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;

use ollama_guard::admin::client::{self, BansError, Printed};
use ollama_guard::config::{BansArgs, KeysArgs, StatusArgs};

/// Runs `action` on a one-thread runtime and prints its result: exit 0 on success, 1 when
/// the API refused or was unreachable (one line `ollama-guard: WHAT: why`).
fn print_outcome<F>(what: &str, action: impl FnOnce(bool) -> F) -> ExitCode
where
    F: Future<Output = Result<Printed, BansError>>,
{
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ollama-guard: {what}: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(action(std::io::stdout().is_terminal())) {
        Ok(printed) => {
            print!("{}", printed.out);
            for w in &printed.warnings {
                eprintln!("ollama-guard: warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ollama-guard: {what}: {e}");
            ExitCode::from(1)
        }
    }
}

/// `ollama-guard keys add|list|revoke`.
pub(crate) fn keys(args: &KeysArgs) -> ExitCode {
    print_outcome("keys", |tty| client::run_keys(args, tty))
}

/// `ollama-guard bans list|add|remove`.
pub(crate) fn main(args: &BansArgs) -> ExitCode {
    print_outcome("bans", |tty| client::run(args, tty))
}

/// `ollama-guard status`.
pub(crate) fn status(args: &StatusArgs) -> ExitCode {
    print_outcome("status", |tty| client::status(args, tty))
}
