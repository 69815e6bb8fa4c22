//! The command line (clap). Every `serve` option is also read from `OLLAMA_GUARD_<NAME>`;
//! values stay text here and are validated once, with the config file, in [`super::Config`],
//! except numbers and the options with a fixed set of values, which clap checks. clap reads
//! the top-level options' variables for every subcommand, so a bad `OLLAMA_GUARD_MODE` stops
//! `bans` or `scan` too (as a bad `OLLAMA_GUARD_WORKERS` always did): the environment `serve`
//! would refuse is refused wherever it is.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};

/// ollama-guard: a transparent reverse proxy for Ollama that detects and blocks model
/// exfiltration.
#[derive(Debug, Parser)]
#[command(name = "ollama-guard", version = crate::LONG_VERSION, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to run; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the default `serve` command.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
// Built once per process: boxing `ServeArgs` to shrink it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Serve(ServeArgs),
    /// Run the detection engine over existing Ollama logs.
    Scan(ScanArgs),
    /// Validate what `serve` would run (options, environment and file merged) and print the
    /// effective configuration (exit 0, or 2).
    CheckConfig(CheckConfigArgs),
    /// List, add or remove bans through the admin API.
    Bans(BansArgs),
    /// Show the running guard's state (mode, upstream, bans, flagged sources) from the admin
    /// API.
    Status(StatusArgs),
    /// Add, list or revoke API keys through the admin API ([auth]).
    Keys(KeysArgs),
    /// Run the embedded Ollama simulator, the proxy and a scripted attack.
    Demo(DemoArgs),
    /// Probe GET /readyz on the admin listener: exit 0 when ready (200), else 1.
    Healthcheck(HealthcheckArgs),
    /// Print the manual page (roff) on stdout: `ollama-guard man | man -l -`.
    Man,
    /// Print shell completions for ollama-guard on stdout.
    Completions {
        /// The shell to generate completions for
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Run only the embedded Ollama simulator (benchmarks and manual testing).
    #[command(hide = true)]
    Simulator(SimulatorArgs),
}

/// Options of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// monitor (detect and log) | block (refuse a foreign push, ban the attacker and cut its
    /// running transfer)
    #[arg(long, value_name = "MODE", default_value = "monitor", value_parser = ["monitor", "block"])]
    pub mode: String,
    /// Print the detection log's raw JSON lines on stdout instead of one sentence per event
    #[arg(long)]
    pub json: bool,
}

/// Options of `check-config`: the file and every `serve` option, merged as `serve` merges
/// them (CLI > env > file > default).
#[derive(Debug, Clone, Args)]
pub struct CheckConfigArgs {
    /// The TOML file to check [default: --config / OLLAMA_GUARD_CONFIG, else none]
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The `serve` options, as `serve` would take them.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// How `bans list` and `status` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for a person.
    Table,
    /// The API's JSON, for scripts.
    Json,
}

/// Options of `status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Where the admin API is, and its token.
    #[command(flatten)]
    pub conn: AdminConn,
    /// table | json [default: table on a terminal, json otherwise]
    #[arg(long, value_name = "FORMAT")]
    pub output: Option<Output>,
}

/// Options of the hidden `simulator` command.
#[derive(Debug, Clone, Args)]
pub struct SimulatorArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:11435")]
    pub listen: String,
    /// Benchmark mode: no stream delays
    #[arg(long)]
    pub fast: bool,
    /// Do not emulate Ollama's loopback Host check
    #[arg(long)]
    pub no_host_check: bool,
}

/// Options of `serve` (CLI > env > config file > default).
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Client-facing listener [default: 0.0.0.0:11434]
    #[arg(long, env = "OLLAMA_GUARD_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// The Ollama to forward to [default: http://127.0.0.1:11435]
    #[arg(long, env = "OLLAMA_GUARD_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// Listener for /metrics, /healthz, /readyz and /api/bans [default: 127.0.0.1:9464]
    #[arg(long, env = "OLLAMA_GUARD_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// TOML configuration file
    #[arg(long, env = "OLLAMA_GUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// monitor (detect and log, never change a response) | block (rules ban) [default: monitor]
    #[arg(long, env = "OLLAMA_GUARD_MODE", value_name = "MODE",
          value_parser = PossibleValuesParser::new(["monitor", "block"]))]
    pub mode: Option<String>,
    /// JSON-lines detection log; `-` = stdout [default: -]
    #[arg(long, env = "OLLAMA_GUARD_DETECTION_LOG", value_name = "PATH")]
    pub detection_log: Option<String>,
    /// One line per request; `-` = stdout [default: off]
    #[arg(long, env = "OLLAMA_GUARD_ACCESS_LOG", value_name = "PATH")]
    pub access_log: Option<String>,
    /// Access log format: gin | json [default: gin]
    #[arg(long, env = "OLLAMA_GUARD_ACCESS_LOG_FORMAT", value_name = "FORMAT",
          value_parser = PossibleValuesParser::new(["gin", "json"]))]
    pub access_log_format: Option<String>,
    /// Peers whose X-Forwarded-For is believed (repeatable; env: comma-separated, spaces
    /// around each element ignored)
    #[arg(
        long = "trusted-proxy",
        env = "OLLAMA_GUARD_TRUSTED_PROXY",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxy: Vec<String>,
    /// Host names clients may address: exact, `*.suffix` or `*` (repeatable; env:
    /// comma-separated) [default: Ollama's own rule for the listen address]
    #[arg(
        long = "allowed-host",
        env = "OLLAMA_GUARD_ALLOWED_HOST",
        value_name = "HOST",
        value_delimiter = ','
    )]
    pub allowed_host: Vec<String>,
    /// Open client connections at most; 0 = derived from the file-descriptor limit [default: 0]
    #[arg(long, env = "OLLAMA_GUARD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Open client connections per source address at most; 0 = no limit [default: 256]
    #[arg(
        long,
        env = "OLLAMA_GUARD_MAX_CONNECTIONS_PER_SOURCE",
        value_name = "N"
    )]
    pub max_connections_per_source: Option<usize>,
    /// API keys: off, observe or required (config `auth.mode`) [default: off]
    #[arg(long, env = "OLLAMA_GUARD_AUTH_MODE", value_name = "MODE",
          value_parser = PossibleValuesParser::new(["off", "observe", "required"]))]
    pub auth_mode: Option<String>,
    /// PEM certificate chain of the proxy listener; with --tls-key, the listener speaks HTTPS
    /// only [default: none, plain HTTP]
    #[arg(long, env = "OLLAMA_GUARD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [default: none]
    #[arg(long, env = "OLLAMA_GUARD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Where bans persist across restarts [default: none]
    #[arg(long, env = "OLLAMA_GUARD_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Proxy worker threads; 0 = one per CPU [default: 0]
    #[arg(long, env = "OLLAMA_GUARD_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Pin each proxy worker to one CPU, a different one each, when there are as many
    /// workers as CPUs: auto | off [default: auto]
    #[arg(long, env = "OLLAMA_GUARD_CPU_AFFINITY", value_name = "auto|off",
          value_parser = PossibleValuesParser::new(["auto", "off"]))]
    pub cpu_affinity: Option<String>,
    /// Tracing filter for the program's own diagnostics on stderr [default: info]
    #[arg(long, env = "OLLAMA_GUARD_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Diagnostics format on stderr: text | json (one JSON object per line) [default: text]
    #[arg(long, env = "OLLAMA_GUARD_LOG_FORMAT", value_name = "FORMAT",
          value_parser = PossibleValuesParser::new(["text", "json"]))]
    pub log_format: Option<String>,
}

/// Options of `scan`.
#[derive(Debug, Clone, Args)]
pub struct ScanArgs {
    /// Reproduce the seed rule's Splunk search exactly
    #[arg(long)]
    pub splunk_compat: bool,
    /// Rules as in the config file [default: the built-in rule set]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Zone of the GIN timestamps: UTC, a fixed offset (+02:00, -08:00) or an IANA name
    // A negative offset starts with `-`: take it as the value, not as a flag.
    #[arg(
        long,
        default_value = "UTC",
        value_name = "TZ",
        allow_hyphen_values = true
    )]
    pub timezone: String,
    /// Output format: jsonl | table | csv [default: jsonl unless stdout is a terminal]
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Threads for parsing lines, the detection engine (split by source, for files) and
    /// sorting and writing rows (1 = one thread) [default: the available CPUs]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Log files (`-` or none = stdin; `.gz` is decompressed)
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Options of `healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The admin listener's base URL
    #[arg(
        long,
        env = "OLLAMA_GUARD_ADMIN",
        default_value = "http://127.0.0.1:9464",
        value_name = "URL"
    )]
    pub admin: String,
}

/// How the admin commands (`bans`, `keys`, `status`) reach the admin API; accepted anywhere
/// on their command line.
#[derive(Debug, Clone, Args)]
pub struct AdminConn {
    /// The admin listener's base URL
    #[arg(
        long,
        global = true,
        env = "OLLAMA_GUARD_ADMIN",
        default_value = "http://127.0.0.1:9464",
        value_name = "URL"
    )]
    pub admin: String,
    /// Bearer token, when the admin API requires one
    #[arg(
        long,
        global = true,
        env = "OLLAMA_GUARD_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// Options of `bans`.
#[derive(Debug, Clone, Args)]
pub struct BansArgs {
    /// Where the admin API is, and its token.
    #[command(flatten)]
    pub conn: AdminConn,
    /// What to do.
    #[command(subcommand)]
    pub action: BansAction,
}

/// Options of `keys`.
#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    /// Where the admin API is, and its token.
    #[command(flatten)]
    pub conn: AdminConn,
    /// What to do.
    #[command(subcommand)]
    pub action: KeysAction,
}

/// `keys` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysAction {
    /// Make a new key and print it (once: only its SHA-256 is kept)
    Add {
        /// The key's name: the `identity` in logs (1-64 of A-Z a-z 0-9 . _ @ -)
        name: String,
        /// user (generate, chat, embed, list) | manager (also pull, push, create, copy, delete)
        #[arg(long, default_value = "user", value_parser = ["user", "manager"])]
        role: String,
        /// The key stops working after this long (humantime: 30d, 12h) [default: never]
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List keys (names, roles, expiry; never the keys)
    List,
    /// Revoke a key: refused from the next request on
    Revoke {
        /// The key's name
        name: String,
    },
}

/// `bans` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum BansAction {
    /// List active bans
    List {
        /// Only the bans of this rule (`admin` for manual bans)
        #[arg(long, value_name = "NAME")]
        rule: Option<String>,
        /// table | json [default: table on a terminal, json otherwise]
        #[arg(long, value_name = "FORMAT")]
        output: Option<Output>,
    },
    /// Ban an IP or CIDR
    Add {
        /// IP or CIDR
        src: String,
        /// How long (humantime: 15m, 1h, 7d)
        #[arg(long, default_value = "1h")]
        duration: String,
        /// Why (copied into the detection log)
        #[arg(long, default_value = "manual")]
        reason: String,
        /// Ban even an allowlisted source, or a network wider than a /8 (IPv4) or a /32 (IPv6)
        #[arg(long)]
        force: bool,
    },
    /// Lift a ban, or every ban with --all
    Remove {
        /// IP or CIDR exactly as listed (or identity:NAME)
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        src: Option<String>,
        /// Lift every ban (address and identity bans) and print how many
        #[arg(long)]
        all: bool,
    },
}
