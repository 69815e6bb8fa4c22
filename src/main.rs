//! The `ollama-guard` binary: parse the command line, build the config, run.

use std::process::ExitCode;

use clap::Parser;
use ollama_guard::config::{self, Cli, Command, Config};
use tracing_subscriber::EnvFilter;

fn init_tracing(level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn serve(args: &config::ServeArgs) -> ExitCode {
    let config = match Config::load(args)
        .and_then(|c| ollama_guard::serve::preflight(&c.bound).map(|()| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ollama-guard: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config.bound.log_level);
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

fn check_config(file: &std::path::Path) -> ExitCode {
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

fn simulator(args: &config::SimulatorArgs) -> ExitCode {
    use ollama_guard::demo::sim;
    init_tracing("warn");
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
    let cfg = sim::SimConfig {
        fast: args.fast,
        host_check: !args.no_host_check,
        chunk_delay: if args.fast {
            std::time::Duration::ZERO
        } else {
            sim::SimConfig::default().chunk_delay
        },
        ..sim::SimConfig::default()
    };
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let listener = ollama_guard::serve::bind(addr).await?;
            let handle = sim::spawn(listener, cfg).await;
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

fn demo() -> ExitCode {
    init_tracing("warn");
    let result = runtime().and_then(|rt| Ok(rt.block_on(ollama_guard::demo::scenario::run())?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ollama-guard: demo: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::CheckConfig { file }) => check_config(file),
        Some(Command::Simulator(args)) => simulator(args),
        Some(Command::Demo) => demo(),
        Some(Command::Bans(args)) => ollama_guard::admin::client::main(args),
        Some(Command::Scan(args)) => ollama_guard::scan::main(args),
    }
}
