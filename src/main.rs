//! The `ollama-guard` binary: parse the command line, dispatch to the command.
//!
//! Each subcommand's entry point is in [`commands`], the CLI layer: it calls the library
//! (and, for `demo` and `simulator`, the `ollama-sim` crate) and owns stdout, stderr and
//! the exit code.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ollama_guard::config::{Cli, Command};

mod commands;

/// mimalloc: `scan --threads` allocates records on parser threads and frees them on the engine's
/// thread, where the system allocator's arenas cost about a third more CPU (README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        None => commands::serve::serve(&cli.serve),
        Some(Command::Serve(args)) => commands::serve::serve(args),
        Some(Command::CheckConfig(args)) => commands::serve::check_config(args),
        Some(Command::Simulator(args)) => commands::simulator::main(args),
        Some(Command::Demo(args)) => commands::demo::main(args.mode == "block", args.json),
        Some(Command::Bans(args)) => commands::bans::main(args),
        Some(Command::Keys(args)) => commands::bans::keys(args),
        Some(Command::Status(args)) => commands::bans::status(args),
        Some(Command::Man) => commands::man(),
        Some(Command::Scan(args)) => commands::scan::main(args),
        Some(Command::Healthcheck(args)) => commands::healthcheck::main(args),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "ollama-guard",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}
