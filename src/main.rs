//! The `ollama-guard` binary: parse the command line, dispatch to the command.
//!
//! Each subcommand's entry point is in [`commands`], the CLI layer: it calls the library
//! (and, for `demo` and `simulator`, the `ollama-sim` crate) and owns stdout, stderr and
//! the exit code.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ollama_guard::config::{Cli, Command};

mod commands;

/// Turns transparent huge pages off for `serve`, unless `MIMALLOC_ALLOW_THP` is set (then
/// mimalloc's own setting decides). mimalloc asks for huge pages on its arenas, and a 2 MiB page
/// is resident as soon as one byte of it is touched: a long-running proxy's detection tables,
/// allocated a chunk at a time, then cost about 40 % more RSS at 1 M keys and an idle proxy
/// more than half again (docs/performance.md, "Memory per tracked key"). `scan`, a batch job
/// over hash tables it fills once, keeps them: it runs faster with them.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // Best effort: a kernel without the prctl leaves huge pages as they were.
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}

/// mimalloc: `scan --threads` allocates records on parser threads and frees them on the engine's
/// thread, where the system allocator's arenas cost about a third more CPU (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    if matches!(cli.command, None | Some(Command::Serve(_))) {
        no_huge_pages();
    }
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

/// A command line (or `OLLAMA_GUARD_*` variable) clap refused. A value that does not parse is
/// a config error like any other: one line naming the key, the option and the variable, exit
/// 2. Help, version and the other usage errors are clap's own.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let (ErrorKind::InvalidValue | ErrorKind::ValueValidation) = e.kind() else {
        e.exit()
    };
    let (Some(arg), Some(value)) = (
        context(ContextKind::InvalidArg),
        context(ContextKind::InvalidValue),
    ) else {
        e.exit()
    };
    // `--max-connections <N>` is the key `max_connections`, read from
    // `OLLAMA_GUARD_MAX_CONNECTIONS` too.
    let long = arg.split_whitespace().next().unwrap_or_default();
    let key = match long.trim_start_matches('-') {
        // The option whose config key is spelled otherwise.
        "auth-mode" => "auth.mode".to_owned(),
        other => other.replace('-', "_"),
    };
    let cli = Cli::command();
    let named = |a: &&clap::Arg| a.get_long().is_some_and(|l| long == format!("--{l}"));
    // The serve options (also those of `serve` and `check-config`) are config keys; another
    // subcommand's are its own arguments, and its own come first (`demo --mode` is not the
    // config key `mode`).
    let sub = std::env::args()
        .skip(1)
        .find_map(|a| cli.find_subcommand(a));
    let own = sub
        .filter(|c| !matches!(c.get_name(), "serve" | "check-config"))
        .and_then(|c| c.get_arguments().find(named));
    let serve = match own {
        Some(_) => None,
        None => cli.get_arguments().find(named),
    };
    let Some(arg) = own.or(serve) else { e.exit() };
    let env = arg.get_env().map(|v| v.to_string_lossy().into_owned());
    let from = env.map_or_else(|| long.to_owned(), |env| format!("{long} or {env}"));
    let valid = match e.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(names)) => Some(names.join(", ")),
        _ => None,
    };
    let why = std::error::Error::source(e).map_or_else(
        || match valid {
            _ if value.is_empty() => "is empty".to_owned(),
            Some(names) => format!("is not one of {names}"),
            None => "is not a valid value".to_owned(),
        },
        |s| format!("is not valid: {s}"),
    );
    if serve.is_some() {
        eprintln!("ollama-guard: config error: {key}: '{value}' {why} (from {from})");
    } else {
        let sub = sub.map_or("", clap::Command::get_name);
        eprintln!("ollama-guard: {sub}: {long}: '{value}' {why}");
    }
    ExitCode::from(2)
}
