//! `ollama-guard simulator` (hidden): the `ollama-sim` fake Ollama on its own, for manual
//! testing and the benchmarks (`tests/perf/`).

use std::process::ExitCode;

use ollama_guard::config::SimulatorArgs;
use ollama_sim::SimConfig;

use super::{init_tracing, runtime};

/// Serves until Ctrl-C: exit 2 for a bad `--listen`, 1 when binding fails.
pub(crate) fn main(args: &SimulatorArgs) -> ExitCode {
    init_tracing("warn", ollama_guard::config::LogFormat::Text);
    let addr: std::net::SocketAddr = match args.listen.parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!(
                "ollama-guard: config error: listen: '{}' is not an address",
                args.listen
            );
            return ExitCode::from(2);
        }
    };
    let cfg = SimConfig {
        fast: args.fast,
        host_check: !args.no_host_check,
        chunk_delay: if args.fast {
            std::time::Duration::ZERO
        } else {
            SimConfig::default().chunk_delay
        },
        ..SimConfig::default()
    };
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let listener = ollama_guard::serve::bind("--listen", addr).await?;
            let handle = ollama_sim::spawn(listener, cfg).await;
            eprintln!("simulator listening on {}", handle.url());
            tokio::signal::ctrl_c().await?;
            handle.shutdown().await;
            anyhow::Ok(())
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ollama-guard: {e:#}");
            ExitCode::from(1)
        }
    }
}
