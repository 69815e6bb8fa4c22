//! `ollama-guard [serve]` and `ollama-guard check-config`.

use std::path::Path;
use std::process::ExitCode;

use ollama_guard::config::{self, Config};

use super::{init_tracing, runtime};

/// `serve` (also the default command): exit 2 for a config the preflight refuses, 1 when
/// the server fails, 0 after a clean shutdown.
pub(crate) fn serve(args: &config::ServeArgs) -> ExitCode {
    let config = match Config::load(args)
        .and_then(|c| ollama_guard::serve::preflight(&c.bound, &c.live).map(|()| c))
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

/// `check-config FILE`: the merged config as TOML on stdout, or exit 2 with the error.
pub(crate) fn check_config(file: &Path) -> ExitCode {
    let args = config::ServeArgs {
        config: Some(file.to_path_buf()),
        ..config::ServeArgs::default()
    };
    match config::read_file(file).and_then(|f| Config::merge(&args, f)) {
        Ok(c) => {
            print!("{}", c.to_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ollama-guard: {e}");
            ExitCode::from(2)
        }
    }
}
