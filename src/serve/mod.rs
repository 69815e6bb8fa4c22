//! Wires the `serve` command together: logs, metrics, the record pipeline, the proxy, the
//! admin listener, the readiness probe — and their orderly shutdown.
//!
//! [`Server::start`] takes already-bound listeners, so tests run everything on ephemeral
//! ports; [`run`] binds the configured addresses and handles the process signals.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

mod holder;
mod reload;
mod state_lock;

pub use state_lock::StateLock;

pub(crate) use crate::pipeline::DetectionStage;
/// The start-up errors `ServeError` wraps.
pub use crate::telemetry::{logfile::LogOpenError, metrics::MetricsError, splunk_hec::SinkError};

use crate::admin::{self, AdminState};
use crate::config::{AccessLogFormat, Bound, Config, Live};
use crate::detect::{build_rules, Engine, EngineError, EngineOptions};
use crate::enforce::{Bans, Enforcement};
use crate::pipeline::{self, ticker};
use crate::proxy::refusal::Gate;
use crate::proxy::Proxy;
use crate::telemetry::logfile::DEFAULT_CAPACITY;
use crate::telemetry::{DetectionLog, LogWriter, Metrics};

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound. The OS error is the `source`, not part of this
    /// message: `main` prints the whole chain, which would otherwise repeat it.
    #[error("{key}: cannot listen on {addr}")]
    Bind {
        /// The config key of the listener (`listen`, `admin_listen`), or the option of a
        /// command that has no config (`simulator --listen`).
        key: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// The OS error (address in use, permission denied).
        #[source]
        source: std::io::Error,
    },
    /// `listen` is taken by Ollama itself (it answers `GET /api/version` there): clients
    /// reach it unguarded. One line saying so and how to move Ollama.
    #[error(
        "listen: cannot listen on {addr}: the port is held by Ollama itself (version {version} \
         answers GET /api/version there), so clients reach Ollama unguarded; move Ollama to \
         the upstream the guard forwards to, {upstream}, with OLLAMA_HOST={upstream} on the \
         host it names (systemd: the drop-in \
         /etc/systemd/system/ollama.service.d/zz-ollama-guard.conf, its OLLAMA_HOST set to \
         that address, which must sort after override.conf), then run: systemctl \
         daemon-reload && systemctl restart ollama"
    )]
    OllamaHoldsPort {
        /// The configured `listen` address.
        addr: SocketAddr,
        /// The configured upstream's `host:port`, where Ollama belongs.
        upstream: String,
        /// What Ollama's `/api/version` answered.
        version: String,
    },
    /// A log could not be opened.
    #[error(transparent)]
    Log(#[from] LogOpenError),
    /// Metrics registration failed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The rules or engine options are invalid.
    #[error("config error: {0}")]
    Rules(String),
    /// The TLS configuration of the proxy listener could not be built.
    // rustls's error is the source: `serve` prints the chain, so it is not repeated here.
    #[error("cannot set up TLS")]
    Tls(#[from] rustls::Error),
    /// Installing a signal handler failed.
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    /// The Splunk HEC sink could not start.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The API key file cannot be read.
    #[error("auth.keys_file: {0}")]
    Keys(String),
    /// `cluster.required = true` and Redis cannot be reached at start.
    #[error("cluster.redis_url: Redis is unreachable and cluster.required = true: {0}")]
    Cluster(String),
}

/// Binds `addr`, the listener of config key `key`, naming both in the error.
pub async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { key, addr, source })
}

/// Binds the client-facing `listen` address; when it is in use and Ollama itself answers
/// there, the error says so and names `upstream` (`host:port`) as where Ollama belongs
/// ([`ServeError::OllamaHoldsPort`]).
pub async fn bind_listen(addr: SocketAddr, upstream: &str) -> Result<TcpListener, ServeError> {
    let key = "listen";
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(source) if source.kind() == std::io::ErrorKind::AddrInUse => {
            match holder::ollama_on(addr).await {
                Some(version) => Err(ServeError::OllamaHoldsPort {
                    addr,
                    upstream: upstream.to_owned(),
                    version,
                }),
                None => Err(ServeError::Bind { key, addr, source }),
            }
        }
        Err(source) => Err(ServeError::Bind { key, addr, source }),
    }
}

/// A running server.
pub struct Server {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    metrics: Arc<Metrics>,
    logs: Vec<LogWriter>,
    splunk: Option<Arc<crate::telemetry::splunk_hec::HecSink>>,
    detection: Arc<DetectionStage>,
    reloader: reload::Reloader,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

fn signalled(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

impl Server {
    /// Starts every part of `serve` on the given listeners.
    pub async fn start(
        config: Config,
        proxy_listener: TcpListener,
        admin_listener: TcpListener,
    ) -> Result<Server, ServeError> {
        let proxy_addr = proxy_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                key: "listen",
                addr: config.bound.listen,
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                key: "admin_listen",
                addr: config.bound.admin_listen,
                source,
            })?;
        let engine = build_engine(&config.live)?;
        let rule_names: Vec<String> = engine
            .rules()
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        let metrics = Arc::new(Metrics::new(&rule_names)?);
        metrics.set_mode(config.live.mode);
        metrics.config_loaded(true, unix_now());
        let (detection_log, access, logs) = open_logs(&config.bound, &metrics)?;
        let splunk = match &config.bound.splunk_hec {
            Some(hec) => Some(crate::telemetry::splunk_hec::HecSink::start(
                hec,
                config.bound.upstream.authority.to_string(),
                crate::telemetry::splunk_hec::SinkMetrics::of(&metrics),
            )?),
            None => None,
        };
        let dlog = DetectionLog::new(detection_log).with_splunk(splunk.clone());
        let enforcement = start_enforcement(
            &config.live,
            config.bound.state_dir.clone(),
            dlog.clone(),
            &metrics,
        );
        let detection = Arc::new(DetectionStage::new(
            engine,
            dlog,
            metrics.clone(),
            config.live.mode,
            enforcement.clone(),
        ));
        detection.set_trusted_proxies(config.live.trusted_proxies.clone());
        let cluster = match &config.bound.cluster {
            Some(c) => {
                let cluster = crate::cluster::Cluster::new(c.clone(), metrics.clone());
                if c.required {
                    crate::cluster::probe(&cluster)
                        .await
                        .map_err(ServeError::Cluster)?;
                }
                enforcement.set_sync(cluster.clone());
                detection.share_counters(cluster.deltas.clone());
                Some(cluster)
            }
            None => None,
        };
        detection.verdicts().set_identity_bans(enforcement.clone());
        let sink = pipeline::chain(metrics.clone(), access, splunk.clone(), detection.clone());
        let gate: Arc<dyn Gate> = enforcement.clone();
        let policy_sink: Arc<dyn crate::proxy::layers::policy::PolicySink> = detection.clone();
        let keys = match &config.bound.keys_file {
            Some(path) => match crate::auth::store::KeyStore::open(path) {
                Ok(store) => Some(Arc::new(store)),
                Err(e) if config.live.auth.mode == crate::auth::AuthMode::Off => {
                    // Keys are not in use: an unreadable file must not stop the proxy.
                    tracing::warn!(error = %e, "API key file unreadable; /api/keys is unavailable until a restart");
                    None
                }
                Err(e) => return Err(ServeError::Keys(e.to_string())),
            },
            None => None,
        };
        if let (Some(store), Some(path)) = (&keys, &config.bound.keys_file) {
            if let Some(w) = no_key_warning(config.live.auth.mode, store.list().len(), path) {
                tracing::warn!("{w}");
            }
        }
        let auth = crate::proxy::AuthParts {
            config: Arc::new(arc_swap::ArcSwap::from_pointee(config.live.auth)),
            store: keys.clone(),
            sink: detection.clone(),
        };
        let proxy = Proxy::new(
            &config.bound,
            &config.live,
            sink,
            gate,
            policy_sink,
            auth.clone(),
            metrics.clone(),
        )?;
        let (shutdown, rx) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        tasks.spawn(proxy.clone().serve(
            proxy_listener,
            signalled(&rx),
            config.bound.timeouts.grace_period,
        ));
        tasks.spawn(enforcement.clone().run(signalled(&rx)));
        if let Some(cluster) = cluster {
            tasks.spawn(crate::cluster::run(
                cluster,
                enforcement.clone(),
                detection.clone(),
                signalled(&rx),
            ));
        }
        let admin_state = Arc::new(AdminState {
            metrics: metrics.clone(),
            ready: ready.clone(),
            enforcement: enforcement.clone(),
            token: arc_swap::ArcSwapOption::from_pointee(config.live.admin_token.clone()),
            keys,
            detection: detection.clone(),
            upstream: config.bound.upstream.url(),
            started: std::time::Instant::now(),
            started_at: chrono::Utc::now(),
            records: proxy.records(),
        });
        tasks.spawn(admin::serve(
            admin_listener,
            admin_state.clone(),
            signalled(&rx),
        ));
        tasks.spawn(ticker::run(
            detection.clone(),
            ticker::TICK_INTERVAL,
            signalled(&rx),
        ));
        tasks.spawn(admin::probe_upstream(
            config.bound.upstream.clone(),
            config.bound.timeouts.readiness_probe,
            ready,
            metrics.upstream_up.clone(),
            signalled(&rx),
        ));
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let scheme = if config.bound.tls { "https" } else { "http" };
        tracing::info!(listen = %proxy_addr, scheme, admin = %admin_addr, upstream = %config.bound.upstream.url(), mode = config.live.mode.as_str(), "ollama-guard started");
        Ok(Server {
            proxy_addr,
            admin_addr,
            metrics: metrics.clone(),
            logs,
            splunk,
            reloader: reload::Reloader::new(
                proxy,
                admin_state,
                enforcement,
                detection.clone(),
                metrics.clone(),
                config.bound,
                config.live,
            ),
            detection,
            shutdown,
            tasks,
        })
    }

    /// Re-reads the config file named by `args` (with the same command line and environment)
    /// and swaps what can change at run time; a bad file is refused and the old config stays.
    pub fn reload(
        &self,
        args: &crate::config::ServeArgs,
    ) -> Result<reload::ReloadReport, crate::config::ConfigError> {
        let result = self.reloader.reload(args);
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        self.metrics.config_loaded(result.is_ok(), unix_now());
        result
    }

    /// The settings bound at start: a reload never changes them (it reports a changed one
    /// as needing a restart).
    pub fn bound_config(&self) -> &Bound {
        self.reloader.bound()
    }

    /// The live settings in force: those `start` was given, or of the last successful reload.
    pub fn live_config(&self) -> Arc<Live> {
        self.reloader.live()
    }

    /// Reopens every log file (SIGUSR1 from logrotate, and SIGHUP).
    pub fn reopen_logs(&self) {
        // Lines of requests already answered belong in the file being rotated out.
        self.reloader.proxy.settle();
        for log in &self.logs {
            log.reopen();
        }
    }

    /// What a second signal during [`Server::shutdown`] still writes ([`Hurry::flush`]).
    pub fn hurry(&self) -> Hurry {
        Hurry {
            proxy: self.reloader.proxy.clone(),
            logs: self.logs.clone(),
        }
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), flushes the
    /// logs (for at most [`FINAL_FLUSH_LIMIT`]), and returns when everything has stopped.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.reloader.proxy.settle();
        self.detection.finish();
        // Bans made by requests that finished during the drain are saved too.
        self.reloader.enforcement.persist().await;
        flush_logs(&self.logs, FINAL_FLUSH_LIMIT).await;
        // Last: the events of the drain (summaries, bans) are queued by now.
        if let Some(sink) = &self.splunk {
            sink.shutdown().await;
        }
    }
}

/// What a second signal still does: writes out the lines of requests already answered.
pub struct Hurry {
    proxy: Arc<Proxy>,
    logs: Vec<LogWriter>,
}

impl Hurry {
    /// Writes what the logs hold (no summaries of open windows: the drain did not end), for
    /// at most [`HURRIED_FLUSH_LIMIT`].
    pub async fn flush(&self) {
        self.proxy.settle();
        flush_logs(&self.logs, HURRIED_FLUSH_LIMIT).await;
    }
}

/// The most the last flush of the logs waits at shutdown: a log nobody reads (a blocked
/// stdout) must not keep the process from exiting.
pub const FINAL_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The most the flush after a second signal waits.
pub const HURRIED_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits until every log has written what it holds, or `limit` has passed (then says so:
/// what is left is lost when the process exits).
async fn flush_logs(logs: &[LogWriter], limit: std::time::Duration) {
    // Together: one log that cannot be written must not keep the others from theirs.
    let all = futures_util::future::join_all(logs.iter().map(LogWriter::flush));
    if tokio::time::timeout(limit, all).await.is_err() {
        tracing::error!(
            limit = ?limit,
            "the logs could not be written in time (a stalled disk or an unread stdout): their last lines are lost"
        );
    }
}

/// Wall-clock time as Unix seconds (for `config_last_reload_success_timestamp_seconds`).
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Opens the detection log and, if configured, the access log (each on its writer thread).
type OpenedLogs = (
    LogWriter,
    Option<(LogWriter, AccessLogFormat)>,
    Vec<LogWriter>,
);

fn open_logs(bound: &Bound, metrics: &Metrics) -> Result<OpenedLogs, ServeError> {
    let open = |name: &'static str, target| {
        LogWriter::spawn(
            name,
            target,
            DEFAULT_CAPACITY,
            metrics.log_lines_dropped.with_label_values(&[name]),
        )
    };
    let detection = open("detection", &bound.detection_log)?;
    let mut all = vec![detection.clone()];
    let access = match &bound.access_log {
        Some(target) => {
            let w = LogWriter::spawn_buffered(
                "access",
                target,
                metrics.log_lines_dropped.with_label_values(&["access"]),
            )?;
            all.push(w.clone());
            Some((w, bound.access_log_format))
        }
        None => None,
    };
    Ok((detection, access, all))
}

/// The ban table and its service, with the bans of the state file restored. It takes the
/// live settings it enforces (ban policy, allowlist, IPv6 grouping, trusted proxies) and the
/// one bound setting it opens files in (`state_dir`).
fn start_enforcement(
    live: &Live,
    state_dir: Option<std::path::PathBuf>,
    log: DetectionLog,
    metrics: &Arc<Metrics>,
) -> Arc<Enforcement> {
    let bans = Arc::new(Bans::new(
        live.ban.clone(),
        live.allowlist.clone(),
        live.ipv6_prefix,
    ));
    bans.set_spared(live.policy.manage_from.clone());
    let enforcement = Arc::new(Enforcement::new(bans, log, metrics.clone(), state_dir));
    enforcement.set_abort_in_flight(live.abort_in_flight);
    enforcement.restore(chrono::Utc::now());
    enforcement
}

/// The warning for `auth.mode = "required"` with no key in the key file: every request is
/// refused `401` (and in block mode every client banned by `auth_failures`).
pub(crate) fn no_key_warning(
    mode: crate::auth::AuthMode,
    keys: usize,
    path: &std::path::Path,
) -> Option<String> {
    (mode == crate::auth::AuthMode::Required && keys == 0).then(|| {
        format!(
            "auth.mode = \"required\" and the key file {} holds no key: every request will be \
             refused 401; add one with `ollama-guard keys add NAME`",
            path.display()
        )
    })
}

/// What `check-config` adds to [`crate::config::Config::load`]'s checks without touching
/// anything: the key file a mode that reads keys would open is read (an error names
/// `auth.keys_file`, as `serve` would exit), and its warnings. Returns the warnings.
pub fn check_key_file(
    bound: &Bound,
    live: &Live,
) -> Result<Vec<String>, crate::config::ConfigError> {
    let (Some(path), true) = (
        &bound.keys_file,
        live.auth.mode != crate::auth::AuthMode::Off,
    ) else {
        return Ok(Vec::new());
    };
    let store = crate::auth::store::KeyStore::open(path)
        .map_err(|e| crate::config::ConfigError::invalid("auth.keys_file", e.to_string()))?;
    Ok(no_key_warning(live.auth.mode, store.list().len(), path)
        .into_iter()
        .collect())
}

/// Checks, before anything is bound, what would otherwise fail only later: the logs can be
/// opened for appending and `state_dir` is a writable directory (created if missing) that no
/// other running instance holds. Only bound keys name files, so only they are checked.
/// Returns the lock on `state_dir` ([`StateLock`]), to be held until the server exits.
pub fn preflight(
    bound: &Bound,
    live: &Live,
) -> Result<Option<StateLock>, crate::config::ConfigError> {
    use crate::config::{ConfigError, LogTarget};
    let open = |key: &str, target: &LogTarget| match target {
        LogTarget::Stdout => Ok(()),
        LogTarget::File(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| {
                ConfigError::invalid(
                    key,
                    format!("cannot open {} for appending: {e}", path.display()),
                )
            }),
    };
    open("detection_log", &bound.detection_log)?;
    if let Some(access) = &bound.access_log {
        open("access_log", access)?;
    }
    if let Some(dir) = &bound.state_dir {
        let probe = dir.join(".ollama-guard-write-test");
        // The directory itself may be made here (as `install -d` would), its parents not: a
        // mistyped path must not quietly start with no bans in a new tree.
        let made = match std::fs::create_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::invalid(
                    "state_dir",
                    format!(
                        "{} cannot be created: its parent directory does not exist",
                        dir.display()
                    ),
                ))
            }
            made => made,
        };
        made.and_then(|()| std::fs::write(&probe, b""))
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| {
                ConfigError::invalid(
                    "state_dir",
                    format!("{} is not a writable directory: {e}", dir.display()),
                )
            })?;
    }
    let state_lock = bound
        .state_dir
        .as_deref()
        .map(state_lock::lock)
        .transpose()?;
    // A mode that reads keys needs a readable key file (a missing one is an empty store).
    if let (Some(path), true) = (
        &bound.keys_file,
        live.auth.mode != crate::auth::AuthMode::Off,
    ) {
        crate::auth::store::KeyStore::open(path)
            .map_err(|e| ConfigError::invalid("auth.keys_file", e.to_string()))?;
    }
    Ok(state_lock)
}

/// Builds the detection engine of the live settings (rules, grouping, allowlist, cap).
pub(crate) fn build_engine(live: &Live) -> Result<Engine, ServeError> {
    let rules =
        build_rules(&live.effective_rules()).map_err(|e| ServeError::Rules(e.to_string()))?;
    Engine::new(rules, engine_options(live))
        .map_err(|e: EngineError| ServeError::Rules(e.to_string()))
}

/// The engine options of the live settings: all three are rebuilt into the engine on reload.
pub(crate) fn engine_options(live: &Live) -> EngineOptions {
    EngineOptions {
        ipv6_prefix: live.ipv6_prefix,
        allowlist: live.allowlist.clone(),
        max_tracked_keys: live.max_tracked_keys,
    }
}

/// Runs `serve` until SIGTERM or SIGINT. As in nginx, SIGUSR1 reopens the log files
/// (logrotate) and nothing else; SIGHUP reloads the config file named by `args` and reopens
/// the logs too.
pub async fn run(args: crate::config::ServeArgs, config: Config) -> Result<(), ServeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(ServeError::Signal)?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(ServeError::Signal)?;
    let upstream = config.bound.upstream.authority.to_string();
    let proxy_listener = bind_listen(config.bound.listen, &upstream).await?;
    let admin_listener = bind("admin_listen", config.bound.admin_listen).await?;
    let server = Server::start(config, proxy_listener, admin_listener).await?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reopening logs and reloading the config");
                server.reopen_logs();
                match server.reload(&args) {
                    Ok(report) => tracing::info!(%report, "config reloaded"),
                    Err(e) => tracing::error!(error = %e, "config reload refused; the old config stays in force"),
                }
            }
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: reopening logs");
                server.reopen_logs();
            }
        }
    }
    tracing::info!(
        "shutting down: draining in-flight requests (send the signal again to stop at once)"
    );
    let hurry = server.hurry();
    let drain = server.shutdown();
    tokio::pin!(drain);
    let hurried = tokio::select! {
        () = &mut drain => false,
        _ = term.recv() => true,
        _ = int.recv() => true,
    };
    if hurried {
        tracing::warn!("second signal: stopping without waiting for the drain; writing the lines of answered requests (at most 1s)");
        hurry.flush().await;
    } else {
        tracing::info!("stopped");
    }
    Ok(())
}
