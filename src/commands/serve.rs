//! `ollama-guard [serve]` and `ollama-guard check-config`.

use std::process::ExitCode;

use ollama_guard::config::{self, Config};

use super::{init_tracing, runtime};

/// `serve` (also the default command): exit 2 for a config the preflight refuses, 1 when
/// the server fails, 0 after a clean shutdown.
pub(crate) fn serve(args: &config::ServeArgs) -> ExitCode {
    // The lock on `state_dir` is held until this function returns.
    let (config, _state_lock) = match Config::load(args)
        .and_then(|c| ollama_guard::serve::preflight(&c.bound, &c.live).map(|lock| (c, lock)))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ollama-guard: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config.bound.log_level, config.bound.log_format);
    let result =
        runtime().and_then(|rt| Ok(rt.block_on(ollama_guard::serve::run(args.clone(), config))?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ollama-guard: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `check-config [FILE] [serve options]`: validates what `serve` would run with the same
/// options and environment (CLI > env > file > default). On success the effective config as
/// TOML on stdout and one `config ok` line (plus any warning `serve` would log) on stderr;
/// otherwise exit 2 with the error, as `serve` exits.
pub(crate) fn check_config(args: &config::CheckConfigArgs) -> ExitCode {
    let serve = config::ServeArgs {
        config: args.file.clone().or_else(|| args.serve.config.clone()),
        ..args.serve.clone()
    };
    let checked = Config::load(&serve).and_then(|c| {
        let more = ollama_guard::serve::check_key_file(&c.bound, &c.live)?;
        Ok((c, more))
    });
    match checked {
        Ok((c, more)) => {
            print!("{}", c.to_toml());
            for warning in c.warnings().iter().chain(&more) {
                eprintln!("ollama-guard: warning: {warning}");
            }
            match &serve.config {
                Some(file) => eprintln!("ollama-guard: config ok: {}", file.display()),
                None => eprintln!(
                    "ollama-guard: config ok: no file (defaults, environment and options)"
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ollama-guard: {e}");
            ExitCode::from(2)
        }
    }
}
