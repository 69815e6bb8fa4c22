//! `scan`'s validated options, built from the command line (and `--config`).

use super::output::OutputFormat;
use super::zone::LogZone;
use super::ScanError;
use crate::config::{self, Config, ScanArgs, ServeArgs};
use crate::detect::{build_rules, EngineOptions, Rule};

/// Default line limit: far above any real `[GIN]` line (Go caps request heads at 1 MB, and
/// quoting can at most quadruple a path), low enough that binary junk cannot exhaust memory.
pub(crate) const DEFAULT_MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// The rules `scan` can run, and the names of those it cannot: volume rules
/// (`metric = "bytes_*"`) need byte counts, which a `[GIN]` line does not carry; run over
/// records whose sizes are all 0 they would silently never fire.
fn gin_rules(
    configs: Vec<crate::detect::RuleConfig>,
) -> (Vec<crate::detect::RuleConfig>, Vec<String>) {
    let (bytes, count): (Vec<_>, Vec<_>) = configs
        .into_iter()
        .partition(|r| r.metric.starts_with("bytes"));
    (count, bytes.into_iter().map(|r| r.name).collect())
}

/// Which search to run.
///
/// Why: the default mode runs the real rule set over exact latencies; compat mode answers
/// "what does our Splunk search say about this log", defects included.
#[derive(Debug, Clone)]
pub(crate) enum ScanMode {
    /// The detection engine with these rules and engine settings.
    Rules {
        /// Validated rules, in engine order.
        rules: Vec<Rule>,
        /// `ipv6_prefix`, `allowlist`, `max_tracked_keys`.
        engine: EngineOptions,
    },
    /// The seed rule's SPL, exactly (`--splunk-compat`).
    SplunkCompat,
}

/// Everything [`super::run`] needs, already validated.
///
/// Why: argument errors must all surface (exit 2) before a single line is read.
#[derive(Debug, Clone)]
pub(crate) struct ScanOptions {
    /// Which search.
    pub mode: ScanMode,
    /// The zone of the GIN timestamps.
    pub zone: LogZone,
    /// How rows are written.
    pub format: OutputFormat,
    /// Lines longer than this are skipped as `line_too_long`.
    pub max_line_bytes: usize,
    /// Rules of the set that `scan` cannot run (proxy-only volume rules), named in the
    /// summary on stderr.
    pub proxy_only_rules: Vec<String>,
    /// Threads for parsing, sorting and formatting (`--threads`; 1 = all on the calling
    /// thread); in the default mode over files, also engine shards (see `shard`).
    pub threads: usize,
}

/// `--threads` when not given: the available parallelism (1 when unknown).
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl ScanOptions {
    /// The built-in rules, UTC, JSON lines: the defaults of `scan` with stdout not a
    /// terminal.
    #[cfg(test)]
    pub(crate) fn builtin() -> Result<ScanOptions, ScanError> {
        let (configs, _) = gin_rules(crate::detect::default_rules());
        let rules = build_rules(&configs).map_err(config::ConfigError::from)?;
        Ok(ScanOptions {
            mode: ScanMode::Rules {
                rules,
                engine: EngineOptions::default(),
            },
            zone: LogZone::utc(),
            format: OutputFormat::Jsonl,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            proxy_only_rules: Vec::new(),
            threads: 1,
        })
    }

    /// Validates the command line. `stdout_is_terminal` picks the default format (`table`
    /// on a terminal, `jsonl` otherwise). `--config` is read and validated like `serve`
    /// reads it (a file `serve` accepts, `scan` accepts); in compat mode it is validated but
    /// has no effect, since the SPL has no parameters.
    pub(crate) fn from_args(
        args: &ScanArgs,
        stdout_is_terminal: bool,
    ) -> Result<ScanOptions, ScanError> {
        let zone = LogZone::parse(&args.timezone)
            .ok_or_else(|| ScanError::Timezone(args.timezone.clone()))?;
        let format = match &args.format {
            Some(text) => {
                OutputFormat::parse(text).ok_or_else(|| ScanError::Format(text.clone()))?
            }
            None if stdout_is_terminal => OutputFormat::Table,
            None => OutputFormat::Jsonl,
        };
        let file = match &args.config {
            Some(path) => config::read_file(path)?,
            None => config::FileConfig::default(),
        };
        let merged = Config::merge(&ServeArgs::default(), file)?;
        let mut proxy_only = Vec::new();
        let mode = if args.splunk_compat {
            ScanMode::SplunkCompat
        } else {
            // Validated whole first, so a file `serve` refuses is refused here too.
            build_rules(&merged.effective_rules()).map_err(config::ConfigError::from)?;
            let (configs, skipped) = gin_rules(merged.effective_rules());
            proxy_only = skipped;
            ScanMode::Rules {
                rules: build_rules(&configs).map_err(config::ConfigError::from)?,
                engine: EngineOptions {
                    ipv6_prefix: merged.live.ipv6_prefix,
                    allowlist: merged.live.allowlist.clone(),
                    max_tracked_keys: merged.live.max_tracked_keys,
                },
            }
        };
        Ok(ScanOptions {
            mode,
            zone,
            format,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            proxy_only_rules: proxy_only,
            threads: match args.threads {
                Some(0) => return Err(ScanError::Threads),
                Some(n) => n,
                None => default_threads(),
            },
        })
    }
}
