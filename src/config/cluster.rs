//! `[cluster]`: several guard replicas share counters and bans through one Redis. Parsed and
//! validated into [`ClusterConfig`] (bound: a restart applies a change), rendered back for
//! `check-config` with the password redacted. No `[cluster]` section: single-instance mode,
//! exactly as without this feature.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The environment variable that supplies the Redis password when the URL has none.
pub const PASSWORD_ENV: &str = "OLLAMA_GUARD_REDIS_PASSWORD";

/// `[cluster]` as written in the file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS) or `unix:///path`.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel (default `ollama-guard:`).
    pub key_prefix: Option<String>,
    /// How often counter deltas are flushed and merged (default `500ms`).
    pub sync_interval: Option<String>,
    /// This replica's name in Redis and in the logs (default `hostname-pid`).
    pub instance_id: Option<String>,
    /// Refuse to start when Redis cannot be reached (default false: start in local mode).
    pub required: Option<bool>,
    /// PEM file of the CA(s) that sign Redis's certificate, trusted for `rediss://` instead
    /// of the system's store (default: the system's store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// The validated `[cluster]` section.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The Redis URL as configured (may hold a password: never log it, see [`Self::redacted_url`]).
    pub redis_url: String,
    /// The password from [`PASSWORD_ENV`], used when the URL carries none.
    pub password: Option<String>,
    /// Prefix of every key and channel.
    pub key_prefix: String,
    /// Flush and merge period of counter deltas.
    pub sync_interval: Duration,
    /// This replica's name.
    pub instance_id: String,
    /// Whether `instance_id` was derived at start (host name and process id), not configured.
    pub instance_id_derived: bool,
    /// Exit 1 at start when Redis is unreachable.
    pub required: bool,
    /// `ca_file`: where the CA certificates trusted for `rediss://` were read from, and what
    /// was read (PEM, checked); `None`: the system's store.
    pub ca: Option<(PathBuf, Vec<u8>)>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &self.redacted_url())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key_prefix", &self.key_prefix)
            .field("sync_interval", &self.sync_interval)
            .field("instance_id", &self.instance_id)
            .field("required", &self.required)
            .field("ca_file", &self.ca.as_ref().map(|(path, _)| path))
            .finish()
    }
}

impl ClusterConfig {
    /// The URL with any password replaced by `<redacted>` (logs, `check-config`).
    pub fn redacted_url(&self) -> String {
        redact(&self.redis_url)
    }

    /// The same (the cluster task's spelling).
    pub(crate) fn redis_url_redacted(&self) -> String {
        self.redacted_url()
    }

    /// The TLS trust of `rediss://` with `ca_file`: the CA certificates only, no client
    /// certificate (`None` without `ca_file`).
    pub(crate) fn tls_certificates(&self) -> Option<redis::TlsCertificates> {
        self.ca.as_ref().map(|(_, pem)| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        })
    }
}

/// Reads and checks `ca_file` (PEM, at least one certificate, usable as a trust anchor of a
/// `rediss://` client).
fn ca_file(path: &str, url: &str) -> Result<(PathBuf, Vec<u8>), ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |problem: String| ConfigError::invalid("cluster.ca_file", problem);
    let path = Path::new(path).to_path_buf();
    if !url.starts_with("rediss://") {
        return Err(bad(format!(
            "is set but cluster.redis_url '{}' is not rediss:// (the CA verifies Redis's TLS certificate)",
            redact(url)
        )));
    }
    let pem =
        std::fs::read(&path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            bad(format!(
                "cannot read a PEM certificate from {}: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(bad(format!(
            "{} holds no CERTIFICATE block",
            path.display()
        )));
    }
    let trust = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.clone()),
    };
    if let Err(e) = redis::Client::build_with_tls(url, trust) {
        return Err(bad(format!(
            "{} is not a usable CA certificate: {e}",
            path.display()
        )));
    }
    Ok((path, pem))
}

/// `scheme://user:secret@host` → `scheme://user:<redacted>@host`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let secret = if userinfo.contains(':') || !user.is_empty() {
                ":<redacted>"
            } else {
                ""
            };
            let user = if userinfo.contains(':') { user } else { "" };
            format!("{scheme}://{user}{secret}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// The default instance id: `hostname-pid`.
fn default_instance_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host = if host.is_empty() {
        "guard".into()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

/// Parses `[cluster]`; `password_env` is the value of [`PASSWORD_ENV`] (passed in so the
/// parser stays pure).
pub(super) fn cluster(
    file: Option<&ClusterFile>,
    password_env: Option<String>,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(f) = file else { return Ok(None) };
    let Some(url) = f
        .redis_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    else {
        return Err(ConfigError::invalid(
            "cluster.redis_url",
            "is required in [cluster] (redis://host:6379, rediss://host:6380 or unix:///path)",
        ));
    };
    let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .any(|s| url.starts_with(s));
    if !scheme_ok {
        return Err(ConfigError::invalid(
            "cluster.redis_url",
            format!(
                "'{}' must start with redis://, rediss:// or unix://",
                redact(url)
            ),
        ));
    }
    if let Err(e) = redis::Client::open(url) {
        return Err(ConfigError::invalid(
            "cluster.redis_url",
            format!("'{}' is not a Redis URL: {e}", redact(url)),
        ));
    }
    let key_prefix = f
        .key_prefix
        .clone()
        .unwrap_or_else(|| "ollama-guard:".to_owned());
    if key_prefix.is_empty()
        || key_prefix.len() > 64
        || !key_prefix.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ConfigError::invalid(
            "cluster.key_prefix",
            format!("'{key_prefix}' must be 1 to 64 printable characters without spaces"),
        ));
    }
    let sync_text = f.sync_interval.as_deref().unwrap_or("500ms");
    let sync_interval = humantime::parse_duration(sync_text.trim()).map_err(|e| {
        ConfigError::invalid(
            "cluster.sync_interval",
            format!("'{sync_text}' is not a duration like 500ms ({e})"),
        )
    })?;
    if !(Duration::from_millis(50)..=Duration::from_secs(10)).contains(&sync_interval) {
        return Err(ConfigError::invalid(
            "cluster.sync_interval",
            format!("'{sync_text}' must be between 50ms and 10s"),
        ));
    }
    let (instance_id, instance_id_derived) = match f.instance_id.as_deref().map(str::trim) {
        None | Some("") => (default_instance_id(), true),
        Some(id) => (id.to_owned(), false),
    };
    if instance_id.len() > 128 || !instance_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::invalid(
            "cluster.instance_id",
            format!("'{instance_id}' must be at most 128 printable characters without spaces"),
        ));
    }
    let ca = match f.ca_file.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(path) => Some(ca_file(path, url)?),
    };
    Ok(Some(ClusterConfig {
        ca,
        redis_url: url.to_owned(),
        password: password_env.filter(|p| !p.is_empty()),
        key_prefix,
        sync_interval,
        instance_id,
        instance_id_derived,
        required: f.required.unwrap_or(false),
    }))
}

/// The effective section, for `check-config` (password redacted).
pub(super) fn render(c: &ClusterConfig) -> ClusterFile {
    ClusterFile {
        redis_url: Some(c.redacted_url()),
        key_prefix: Some(c.key_prefix.clone()),
        sync_interval: Some(humantime::format_duration(c.sync_interval).to_string()),
        // A derived id is left out: it names the process that derived it (check-config's own,
        // here), and replicas started from this file must each derive their own.
        instance_id: (!c.instance_id_derived).then(|| c.instance_id.clone()),
        required: Some(c.required),
        ca_file: c.ca.as_ref().map(|(path, _)| path.display().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> ClusterFile {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn no_section_is_single_instance_mode() {
        assert_eq!(cluster(None, Some("pw".into())).unwrap(), None);
    }

    #[test]
    fn defaults_fill_every_key_but_the_url() {
        let c = cluster(Some(&file("redis_url = \"redis://127.0.0.1:6379\"")), None)
            .unwrap()
            .unwrap();
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(c.key_prefix, "ollama-guard:");
        assert_eq!(c.sync_interval, Duration::from_millis(500));
        assert!(c.instance_id.ends_with(&format!("-{}", std::process::id())));
        assert!(c.instance_id_derived);
        // Not written into the effective file: each replica started from it derives its own.
        assert_eq!(render(&c).instance_id, None);
        assert!(!c.required);
        assert_eq!(c.password, None);
    }

    #[test]
    fn keys_are_parsed() {
        let c = cluster(
            Some(&file(
                "redis_url = \"unix:///run/redis.sock\"\nkey_prefix = \"og:\"\nsync_interval = \"250ms\"\ninstance_id = \"guard-a\"\nrequired = true",
            )),
            Some("s3cret".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.key_prefix, "og:");
        assert_eq!(c.sync_interval, Duration::from_millis(250));
        assert_eq!(c.instance_id, "guard-a");
        assert!(c.required);
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        let c = cluster(Some(&file("redis_url = \"rediss://r.example:6380\"")), None)
            .unwrap()
            .unwrap();
        assert_eq!(c.redis_url, "rediss://r.example:6380");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, want) in [
            (
                "key_prefix = \"x\"",
                "config error: cluster.redis_url: is required",
            ),
            (
                "redis_url = \"http://x:1\"",
                "config error: cluster.redis_url: 'http://x:1' must start with",
            ),
            (
                "redis_url = \"redis://h:1\"\nsync_interval = \"soon\"",
                "config error: cluster.sync_interval: 'soon' is not a duration",
            ),
            (
                "redis_url = \"redis://h:1\"\nsync_interval = \"10ms\"",
                "config error: cluster.sync_interval: '10ms' must be between 50ms and 10s",
            ),
            (
                "redis_url = \"redis://h:1\"\nkey_prefix = \"a b\"",
                "config error: cluster.key_prefix: 'a b' must be",
            ),
            (
                "redis_url = \"redis://h:1\"\ninstance_id = \"a b\"",
                "config error: cluster.instance_id: 'a b' must be",
            ),
        ] {
            let e = cluster(Some(&file(text)), None).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }

    #[test]
    fn a_bad_ca_file_is_one_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for (text, want) in [
            (
                format!("redis_url = \"rediss://h:1\"\nca_file = \"{}\"", missing.display()),
                format!(
                    "config error: cluster.ca_file: cannot read {}: No such file or directory",
                    missing.display()
                ),
            ),
            (
                format!("redis_url = \"rediss://h:1\"\nca_file = \"{}\"", garbage.display()),
                format!(
                    "config error: cluster.ca_file: {} holds no CERTIFICATE block",
                    garbage.display()
                ),
            ),
            (
                format!("redis_url = \"rediss://h:1\"\nca_file = \"{}\"", broken.display()),
                format!(
                    "config error: cluster.ca_file: {} is not a usable CA certificate: ",
                    broken.display()
                ),
            ),
            (
                format!("redis_url = \"redis://:pw@h:1\"\nca_file = \"{}\"", garbage.display()),
                "config error: cluster.ca_file: is set but cluster.redis_url 'redis://:<redacted>@h:1' is not rediss:// (the CA verifies Redis's TLS certificate)".to_owned(),
            ),
        ] {
            let e = cluster(Some(&file(&text)), None).unwrap_err().to_string();
            assert!(e.starts_with(&want), "{text}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://:hunter2@h:6379/0"),
            "redis://:<redacted>@h:6379/0"
        );
        assert_eq!(
            redact("rediss://app:hunter2@h:6380"),
            "rediss://app:<redacted>@h:6380"
        );
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        let c = cluster(
            Some(&file(
                "redis_url = \"redis://:hunter2@h:1\"\ninstance_id = \"i\"",
            )),
            Some("pw".into()),
        )
        .unwrap()
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{c:?}").contains("pw\""));
        let rendered = render(&c);
        assert_eq!(
            rendered.redis_url.as_deref(),
            Some("redis://:<redacted>@h:1")
        );
    }
}

#[cfg(test)]
mod merged_tests {
    use crate::config::{Config, FileConfig, ServeArgs};

    #[test]
    fn check_config_renders_the_section_and_a_change_needs_a_restart() {
        let text = "[cluster]\nredis_url = \"redis://:hunter2@10.0.0.5:6379/2\"\ninstance_id = \"guard-a\"\nsync_interval = \"1s\"\n";
        let file: FileConfig = toml::from_str(text).unwrap();
        let c = Config::merge(&ServeArgs::default(), file).unwrap();
        let rendered = c.to_toml();
        assert!(
            rendered.contains("[cluster]\nredis_url = \"redis://:<redacted>@10.0.0.5:6379/2\"\nkey_prefix = \"ollama-guard:\"\nsync_interval = \"1s\"\ninstance_id = \"guard-a\"\nrequired = false\n"),
            "{rendered}"
        );
        assert!(!rendered.contains("hunter2"));
        let plain = Config::merge(&ServeArgs::default(), FileConfig::default()).unwrap();
        assert!(!plain.to_toml().contains("[cluster]"));
        assert_eq!(plain.bound.changed_keys(&c.bound), ["cluster"]);
        let e = Config::merge(
            &ServeArgs::default(),
            toml::from_str("[cluster]\nredis_url = \"redis://h:1\"\nsync_interval = \"1y\"")
                .unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "config error: cluster.sync_interval: '1y' must be between 50ms and 10s"
        );
    }
}
