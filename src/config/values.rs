//! Value types of the configuration and the merge/validation of every key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use ipnet::IpNet;

use super::{
    addrs, BanFile, BanPolicy, Bound, Config, ConfigError, FileConfig, Live, ServeArgs, Timeouts,
    TimeoutsFile,
};

/// Default action of rules that set none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Detect and log; never change a response.
    Monitor,
    /// Ban flagged sources and refuse their requests.
    Block,
}

impl Mode {
    /// The config text.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Block => "block",
        }
    }
}

/// Where a log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output (`-`).
    Stdout,
    /// A file, appended to and reopened on SIGUSR1 (and SIGHUP).
    File(PathBuf),
}

impl LogTarget {
    fn parse(text: &str) -> LogTarget {
        if text == "-" {
            LogTarget::Stdout
        } else {
            LogTarget::File(PathBuf::from(text))
        }
    }

    /// The config text.
    pub fn display(&self) -> String {
        match self {
            LogTarget::Stdout => "-".to_owned(),
            LogTarget::File(p) => p.display().to_string(),
        }
    }
}

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// Byte-compatible with Ollama's own `[GIN]` line.
    Gin,
    /// One JSON object per request.
    Json,
}

/// Format of the program's own diagnostics on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (coloured only when stderr is a terminal and `NO_COLOR` is unset).
    Text,
    /// One JSON object per event (never coloured).
    Json,
}

impl LogFormat {
    /// The config text.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Whether proxy workers are pinned to CPUs (`cpu_affinity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuAffinity {
    /// One worker per CPU, pinned, when there are exactly as many workers as CPUs the
    /// process may run on; otherwise left to the scheduler.
    Auto,
    /// Never pinned.
    Off,
}

impl CpuAffinity {
    /// The config text.
    pub fn as_str(self) -> &'static str {
        match self {
            CpuAffinity::Auto => "auto",
            CpuAffinity::Off => "off",
        }
    }
}

impl AccessLogFormat {
    /// The config text.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLogFormat::Gin => "gin",
            AccessLogFormat::Json => "json",
        }
    }
}

/// The upstream Ollama: plain HTTP, scheme and authority only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http`.
    pub scheme: Scheme,
    /// `host:port` (port defaulted to 80 when absent).
    pub authority: Authority,
}

impl Upstream {
    /// Parses `http://host:port` (a trailing `/` is accepted; a path prefix is not).
    pub fn parse(text: &str) -> Result<Upstream, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("'{text}' is not a URL ({e})"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("'{text}' has no scheme (write http://host:port)"))?;
        if scheme != Scheme::HTTP {
            return Err(format!(
                "'{text}': only http:// upstreams are supported (Ollama speaks plain HTTP)"
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("'{text}' has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "'{text}': credentials in the URL are not supported"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("'{text}': a path prefix is not supported"));
        }
        if authority.host().is_empty() {
            return Err(format!("'{text}' has no host"));
        }
        // `port_u16` is `None` both without a port and with one that is no port number
        // (`:99999`, `:1143x`, a bare `:`): only the first defaults to 80.
        let authority = match (authority.port_u16(), authority.as_str().rsplit_once(':')) {
            (Some(_), _) => authority,
            (None, Some((_, port))) if !authority.as_str().ends_with(']') => {
                return Err(format!("'{text}': '{port}' is not a port number (1-65535)"));
            }
            (None, _) => format!("{}:80", authority.host())
                .parse()
                .map_err(|e| format!("'{text}': {e}"))?,
        };
        if authority.port_u16() == Some(0) {
            return Err(format!("'{text}': '0' is not a port number (1-65535)"));
        }
        Ok(Upstream { scheme, authority })
    }

    /// The URL text.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

fn socket_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::invalid(
            key,
            format!("'{text}' is not an address like 127.0.0.1:11434 or [::1]:11434"),
        )
    })
}

fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| {
        ConfigError::invalid(
            key,
            format!("'{text}' is not a duration like 250ms, 55s, 15m ({e})"),
        )
    })
}

fn positive_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let d = duration(key, text)?;
    if d.is_zero() {
        return Err(ConfigError::invalid(key, "must be greater than zero"));
    }
    Ok(d)
}

/// A duration of at least `min`: the readiness probe asks Ollama `GET /api/version` once per
/// period, and a probe more than ten times a second is load on Ollama, not a check of it.
fn at_least(key: &str, text: &str, min: Duration) -> Result<Duration, ConfigError> {
    let d = duration(key, text)?;
    if d < min {
        return Err(ConfigError::invalid(
            key,
            format!("must be at least {}", super::render::human(min)),
        ));
    }
    Ok(d)
}

/// Every entry through the shared parser (the admin API uses the same one, see README).
fn cidrs(key: &str, items: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    items
        .iter()
        .map(|s| crate::ip::parse_cidr(s).map_err(|e| ConfigError::invalid(key, e.to_string())))
        .collect()
}

/// The value `text` names among a key's `choices`, or an error naming the key and listing
/// them.
fn one_of<T: Copy>(key: &str, text: &str, choices: &[(&str, T)]) -> Result<T, ConfigError> {
    match choices.iter().find(|(name, _)| *name == text) {
        Some(&(_, value)) => Ok(value),
        None => {
            let names: Vec<&str> = choices.iter().map(|&(name, _)| name).collect();
            Err(ConfigError::invalid(
                key,
                format!("'{text}' is not one of {}", names.join(", ")),
            ))
        }
    }
}

fn mode(text: &str) -> Result<Mode, ConfigError> {
    one_of(
        "mode",
        text,
        &[("monitor", Mode::Monitor), ("block", Mode::Block)],
    )
}

/// `[auth]`: the reloadable settings and the key file's place. A mode that reads keys needs a
/// key file: `auth.keys_file`, or `keys.json` in `state_dir`.
fn auth(
    file: Option<&super::AuthFile>,
    cli_mode: Option<&str>,
    state_dir: Option<&std::path::Path>,
) -> Result<(crate::auth::AuthConfig, Option<PathBuf>), ConfigError> {
    use crate::auth::{AuthConfig, AuthMode};
    let f = file.cloned().unwrap_or_default();
    let text = cli_mode
        .map(str::to_owned)
        .or(f.mode)
        .unwrap_or_else(|| "off".to_owned());
    let mode = AuthMode::parse(&text).ok_or_else(|| {
        ConfigError::invalid(
            "auth.mode",
            format!("'{text}' is not one of off, observe, required"),
        )
    })?;
    let keys_file = match f.keys_file.filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => state_dir.map(|d| d.join("keys.json")),
    };
    if mode != AuthMode::Off && keys_file.is_none() {
        return Err(ConfigError::invalid(
            "auth.keys_file",
            format!("auth.mode = \"{text}\" needs a key file: set auth.keys_file or state_dir"),
        ));
    }
    Ok((
        AuthConfig {
            mode,
            protect_probes: f.protect_probes.unwrap_or(false),
            metrics_by_identity: f.metrics_by_identity.unwrap_or(false),
        },
        keys_file,
    ))
}

fn access_log_format(text: &str) -> Result<AccessLogFormat, ConfigError> {
    one_of(
        "access_log_format",
        text,
        &[
            ("gin", AccessLogFormat::Gin),
            ("json", AccessLogFormat::Json),
        ],
    )
}

fn log_format(text: &str) -> Result<LogFormat, ConfigError> {
    one_of(
        "log_format",
        text,
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
    )
}

fn cpu_affinity(text: &str) -> Result<CpuAffinity, ConfigError> {
    one_of(
        "cpu_affinity",
        text,
        &[("auto", CpuAffinity::Auto), ("off", CpuAffinity::Off)],
    )
}

fn ban_policy(file: &BanFile) -> Result<BanPolicy, ConfigError> {
    let duration = positive_duration("ban.duration", file.duration.as_deref().unwrap_or("15m"))?;
    let increment = file.increment.unwrap_or(2.0);
    if !increment.is_finite() || increment < 1.0 {
        return Err(ConfigError::invalid(
            "ban.increment",
            format!("{increment} must be a number >= 1.0"),
        ));
    }
    let max = positive_duration("ban.max", file.max.as_deref().unwrap_or("24h"))?;
    if max < duration {
        return Err(ConfigError::invalid(
            "ban.max",
            "must be at least ban.duration",
        ));
    }
    let memory = duration_or("ban.memory", file.memory.as_deref(), "7d")?;
    Ok(BanPolicy {
        duration,
        increment,
        max,
        memory,
    })
}

fn duration_or(key: &str, text: Option<&str>, default: &str) -> Result<Duration, ConfigError> {
    duration(key, text.unwrap_or(default))
}

fn timeouts(file: &TimeoutsFile) -> Result<Timeouts, ConfigError> {
    Ok(Timeouts {
        upstream_connect: positive_duration(
            "timeouts.upstream_connect",
            file.upstream_connect.as_deref().unwrap_or("5s"),
        )?,
        header_read: positive_duration(
            "timeouts.header_read",
            file.header_read.as_deref().unwrap_or("30s"),
        )?,
        grace_period: duration_or("timeouts.grace_period", file.grace_period.as_deref(), "30s")?,
        readiness_probe: at_least(
            "timeouts.readiness_probe",
            file.readiness_probe.as_deref().unwrap_or("5s"),
            Duration::from_millis(100),
        )?,
        upstream_idle: positive_duration(
            "timeouts.upstream_idle",
            file.upstream_idle.as_deref().unwrap_or("90s"),
        )?,
        body_idle: positive_duration(
            "timeouts.body_idle",
            file.body_idle.as_deref().unwrap_or("5m"),
        )?,
        send_idle: positive_duration(
            "timeouts.send_idle",
            file.send_idle.as_deref().unwrap_or("60s"),
        )?,
    })
}

/// List flags split on `,` (environment variables) may carry spaces around each element:
/// `"10.0.0.0/8, 192.168.0.0/16"`. Empty elements (a trailing comma) are dropped.
fn trimmed(items: &[String]) -> Vec<String> {
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn log_level(text: &str) -> Result<String, ConfigError> {
    // An empty filter turns every diagnostic off, warnings included (an unset variable in a
    // template gives one): not a level.
    if text.trim().is_empty() {
        return Err(ConfigError::invalid(
            "log_level",
            "'' is empty (error, warn, info, debug, trace, or a filter like info,ollama_guard=debug)",
        ));
    }
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| text.to_owned())
        .map_err(|e| ConfigError::invalid("log_level", format!("'{text}': {e}")))
}

pub(super) fn merge(args: &ServeArgs, file: FileConfig) -> Result<Config, ConfigError> {
    let pick = |cli: &Option<String>, file: &Option<String>, default: &str| -> String {
        cli.clone()
            .or_else(|| file.clone())
            .unwrap_or_else(|| default.to_owned())
    };
    let listen = socket_addr("listen", &pick(&args.listen, &file.listen, "0.0.0.0:11434"))?;
    let upstream_text = pick(&args.upstream, &file.upstream, "http://127.0.0.1:11435");
    let upstream =
        Upstream::parse(&upstream_text).map_err(|p| ConfigError::invalid("upstream", p))?;
    let admin_listen = socket_addr(
        "admin_listen",
        &pick(&args.admin_listen, &file.admin_listen, "127.0.0.1:9464"),
    )?;
    let mode = mode(&pick(&args.mode, &file.mode, "monitor"))?;
    let trusted = if args.trusted_proxy.is_empty() {
        file.trusted_proxies.clone().unwrap_or_default()
    } else {
        trimmed(&args.trusted_proxy)
    };
    let trusted_proxies = cidrs("trusted_proxies", &trusted)?;
    let allowlist = cidrs("allowlist", file.allowlist.as_deref().unwrap_or(&[]))?;
    let ipv6_prefix = file.ipv6_prefix.unwrap_or(64);
    if ipv6_prefix == 0 || ipv6_prefix > 128 {
        return Err(ConfigError::invalid(
            "ipv6_prefix",
            format!("{ipv6_prefix} must be between 1 and 128"),
        ));
    }
    let max_tracked_keys = file.max_tracked_keys.unwrap_or(1_000_000);
    if max_tracked_keys == 0 {
        return Err(ConfigError::invalid(
            "max_tracked_keys",
            "must be at least 1",
        ));
    }
    let detection_log = LogTarget::parse(&pick(&args.detection_log, &file.detection_log, "-"));
    let access_log = args.access_log.clone().or_else(|| file.access_log.clone());
    let access_log = access_log
        .filter(|s| !s.is_empty())
        .map(|s| LogTarget::parse(&s));
    let access_log_format = access_log_format(&pick(
        &args.access_log_format,
        &file.access_log_format,
        "gin",
    ))?;
    let state_dir = args
        .state_dir
        .clone()
        .or_else(|| file.state_dir.as_ref().map(PathBuf::from));
    if state_dir
        .as_ref()
        .is_some_and(|d| d.as_os_str().to_string_lossy().trim().is_empty())
    {
        return Err(ConfigError::invalid(
            "state_dir",
            "'' is empty (leave it out to keep no state, or name a directory)",
        ));
    }
    let log_level = log_level(&pick(&args.log_level, &file.log_level, "info"))?;
    let log_format = log_format(&pick(&args.log_format, &file.log_format, "text"))?;
    let workers_auto = args.workers.or(file.workers).unwrap_or(0) == 0;
    let workers = match args.workers.or(file.workers).unwrap_or(0) {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n if n > 1024 => {
            return Err(ConfigError::invalid(
                "workers",
                format!("{n} is more than 1024"),
            ));
        }
        n => n,
    };
    let cpu_affinity = cpu_affinity(&pick(&args.cpu_affinity, &file.cpu_affinity, "auto"))?;
    let admin_token = file.admin_token.clone().filter(|t| !t.is_empty());
    let (auth, keys_file) = auth(
        file.auth.as_ref(),
        args.auth_mode.as_deref(),
        state_dir.as_deref(),
    )?;
    let timeouts = timeouts(&file.timeouts.clone().unwrap_or_default())?;
    let policy = super::policy::policy(file.policy.as_ref())?;
    let cluster = super::cluster::cluster(
        file.cluster.as_ref(),
        std::env::var(super::PASSWORD_ENV).ok(),
    )?;
    let ban = ban_policy(&file.ban.clone().unwrap_or_default())?;
    let allowed_hosts = match (args.allowed_host.is_empty(), &file.allowed_hosts) {
        (false, _) => Some(addrs::allowed_hosts(&trimmed(&args.allowed_host))?),
        (true, Some(list)) => Some(addrs::allowed_hosts(list)?),
        (true, None) => None,
    };
    let max_connections = args.max_connections.or(file.max_connections).unwrap_or(0);
    let max_connections_per_source = args
        .max_connections_per_source
        .or(file.max_connections_per_source)
        .unwrap_or(256);
    let tls = super::tls::tls(
        args.tls_cert
            .clone()
            .or_else(|| file.tls_cert.as_ref().map(PathBuf::from)),
        args.tls_key
            .clone()
            .or_else(|| file.tls_key.as_ref().map(PathBuf::from)),
    )?;
    addrs::check_listeners(listen, admin_listen, &upstream)?;
    let mut warnings = addrs::trust_warnings(&trusted_proxies);
    warnings.extend(addrs::admin_warnings(admin_listen, admin_token.as_deref()));
    if let Some(t) = &tls {
        let now = chrono::Utc::now().timestamp();
        warnings.extend(
            t.validity
                .and_then(|v| super::tls::validity_warning(&t.cert, v, now)),
        );
    }
    let (splunk_hec, sink_warnings) = super::sinks::splunk_hec(
        file.sinks.as_ref(),
        std::env::var(super::SPLUNK_HEC_TOKEN_ENV).ok(),
    )?;
    warnings.extend(sink_warnings);
    let rules = crate::detect::effective_rules(&file.rules, &file.rule_overrides)
        .map_err(|(key, problem)| ConfigError::invalid(key, problem))?;
    crate::detect::build_rules(&rules)?;
    Ok(Config {
        bound: Bound {
            listen,
            upstream,
            admin_listen,
            detection_log,
            access_log,
            access_log_format,
            state_dir,
            log_level,
            log_format,
            workers,
            cpu_affinity,
            timeouts,
            max_connections,
            max_connections_per_source,
            keys_file,
            tls: tls.is_some(),
            splunk_hec,
            cluster,
        },
        live: Live {
            mode,
            trusted_proxies,
            allowlist,
            allowed_hosts,
            ipv6_prefix,
            max_tracked_keys,
            ban,
            admin_token,
            rules,
            policy,
            abort_in_flight: file
                .enforcement
                .as_ref()
                .and_then(|e| e.abort_in_flight)
                .unwrap_or(true),
            auth,
            tls,
        },
        config_file: args.config.clone(),
        warnings,
        workers_auto,
    })
}
