//! `[sinks.splunk_hec]`: the detection log (and, opt-in, one event per request) delivered to
//! a Splunk HTTP Event Collector. Parsed and validated here into a [`SplunkHec`], rendered
//! back for `check-config` with the token redacted.
//!
//! The whole section is [`super::Bound`]: the sink's queue, connection and TLS roots are
//! built once at start, so a change needs a restart (a reload reports `sinks.splunk_hec`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The environment variable that carries the HEC token (it wins over the file's `token`,
/// so the file can stay world-readable).
pub const TOKEN_ENV: &str = "OLLAMA_GUARD_SPLUNK_HEC_TOKEN";

/// `[sinks]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinksFile {
    /// `[sinks.splunk_hec]`.
    pub splunk_hec: Option<SplunkHecFile>,
}

/// `[sinks.splunk_hec]` as written.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SplunkHecFile {
    /// `https://splunk.example:8088/services/collector/event`.
    pub url: Option<String>,
    /// The HEC token (or `OLLAMA_GUARD_SPLUNK_HEC_TOKEN`).
    pub token: Option<String>,
    /// Index to write to (default: the token's default index).
    pub index: Option<String>,
    /// Sourcetype of detection-log events (`ollama:guard:detection`).
    pub sourcetype: Option<String>,
    /// `source` of every event (`ollama-guard`).
    pub source: Option<String>,
    /// `host` of every event (default: this machine's host name).
    pub host: Option<String>,
    /// Verify the HEC's certificate (default true).
    pub tls_verify: Option<bool>,
    /// PEM file of the CA(s) to trust instead of the built-in Mozilla roots.
    pub ca_file: Option<String>,
    /// Also send one `ollama:api` event per finished request (default false).
    pub requests: Option<bool>,
    /// Use indexer acknowledgement (the token must have it on; default false).
    pub ack: Option<bool>,
    /// Events per request at most (default 100).
    pub batch_size: Option<usize>,
    /// Longest wait before a partial batch is sent (default `1s`).
    pub batch_interval: Option<String>,
    /// Events waiting at most; more are dropped and counted (default 10000).
    pub queue: Option<usize>,
    /// Timeout of one HTTP exchange, connect included (default `10s`).
    pub request_timeout: Option<String>,
    /// First retry delay, doubled per failure up to 30 s (default `500ms`).
    pub retry_backoff: Option<String>,
    /// With `ack`: a batch not acknowledged this long after it was accepted is sent again
    /// (default `60s`).
    pub ack_timeout: Option<String>,
    /// How long shutdown waits for the queue to drain (default `5s`).
    pub shutdown_timeout: Option<String>,
}

impl fmt::Debug for SplunkHecFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SplunkHecFile")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// The validated `[sinks.splunk_hec]`.
#[derive(Clone, PartialEq)]
pub struct SplunkHec {
    /// The event endpoint (`…/services/collector/event`).
    pub url: Uri,
    /// The acknowledgement endpoint on the same host (`…/services/collector/ack`).
    pub ack_url: Uri,
    /// The token (never logged; `Debug` and `check-config` redact it).
    pub token: String,
    /// Index, when set.
    pub index: Option<String>,
    /// Sourcetype of detection-log events.
    pub sourcetype: String,
    /// `source` of every event.
    pub source: String,
    /// `host` of every event.
    pub host: String,
    /// Verify the server certificate.
    pub tls_verify: bool,
    /// CA file replacing the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Send `ollama:api` request events too.
    pub requests: bool,
    /// Indexer acknowledgement.
    pub ack: bool,
    /// Events per HTTP request at most.
    pub batch_size: usize,
    /// Longest wait before a partial batch goes.
    pub batch_interval: Duration,
    /// Queue capacity (events).
    pub queue: usize,
    /// Timeout of one HTTP exchange.
    pub request_timeout: Duration,
    /// First retry delay.
    pub retry_backoff: Duration,
    /// Re-send a batch not acknowledged after this long.
    pub ack_timeout: Duration,
    /// Shutdown waits this long for the queue to drain.
    pub shutdown_timeout: Duration,
}

impl fmt::Debug for SplunkHec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SplunkHec")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("index", &self.index)
            .field("sourcetype", &self.sourcetype)
            .field("source", &self.source)
            .field("host", &self.host)
            .field("tls_verify", &self.tls_verify)
            .field("ca_file", &self.ca_file)
            .field("requests", &self.requests)
            .field("ack", &self.ack)
            .finish_non_exhaustive()
    }
}

/// The default sourcetype of detection-log events.
pub(super) const DEFAULT_SOURCETYPE: &str = "ollama:guard:detection";

const KEY: &str = "sinks.splunk_hec";

fn key(name: &str) -> String {
    format!("{KEY}.{name}")
}

fn duration(name: &str, text: Option<&str>, default: &str) -> Result<Duration, ConfigError> {
    let text = text.unwrap_or(default);
    let d = humantime::parse_duration(text).map_err(|e| {
        ConfigError::invalid(
            key(name),
            format!("'{text}' is not a duration like 250ms, 1s, 1m ({e})"),
        )
    })?;
    if d.is_zero() {
        return Err(ConfigError::invalid(key(name), "must be greater than zero"));
    }
    Ok(d)
}

fn label(name: &str, value: Option<&str>, default: &str) -> Result<String, ConfigError> {
    let v = value.unwrap_or(default).trim();
    if v.is_empty() || v.chars().any(char::is_control) {
        return Err(ConfigError::invalid(
            key(name),
            "must be a non-empty text without control characters",
        ));
    }
    Ok(v.to_owned())
}

/// The section, with `env_token` (the value of [`TOKEN_ENV`], if set) over the file's token.
/// Returns the sink (none when the section is absent) and warnings for `serve` to log.
pub(super) fn splunk_hec(
    file: Option<&SinksFile>,
    env_token: Option<String>,
) -> Result<(Option<SplunkHec>, Vec<String>), ConfigError> {
    let Some(f) = file.and_then(|s| s.splunk_hec.as_ref()) else {
        return Ok((None, Vec::new()));
    };
    let mut warnings = Vec::new();
    let url_text = f
        .url
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ConfigError::invalid(
                key("url"),
                "required (e.g. https://splunk.example:8088/services/collector/event)",
            )
        })?;
    let (url, ack_url) = urls(url_text)?;
    if url.scheme() == Some(&http::uri::Scheme::HTTP) {
        warnings.push(format!(
            "{KEY}.url is http://: the HEC token and every event cross the network in clear"
        ));
    }
    let token = env_token
        .filter(|t| !t.trim().is_empty())
        .or_else(|| f.token.clone())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ConfigError::invalid(key("token"), format!("required (or set {TOKEN_ENV})"))
        })?;
    if http::HeaderValue::from_str(&format!("Splunk {token}")).is_err() || token.contains(' ') {
        return Err(ConfigError::invalid(
            key("token"),
            "is not a valid HEC token (printable characters, no spaces)",
        ));
    }
    // `index = ""` is the token's default index, as leaving the key out.
    let index = match f.index.as_deref().filter(|i| !i.is_empty()) {
        Some(i) => Some(label("index", Some(i), "")?),
        None => None,
    };
    let host = match &f.host {
        Some(h) => label("host", Some(h), "")?,
        None => gethostname::gethostname().to_string_lossy().into_owned(),
    };
    let tls_verify = f.tls_verify.unwrap_or(true);
    if !tls_verify {
        warnings.push(format!(
            "{KEY}.tls_verify = false: the HEC's certificate is not checked, so anyone on the \
             path can read the token and the events"
        ));
    }
    let ca_file = match f.ca_file.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => {
            let path = PathBuf::from(p);
            load_ca(&path)?;
            Some(path)
        }
        None => None,
    };
    let batch_size = f.batch_size.unwrap_or(100);
    if !(1..=10_000).contains(&batch_size) {
        return Err(ConfigError::invalid(
            key("batch_size"),
            format!("{batch_size} must be between 1 and 10000"),
        ));
    }
    let queue = f.queue.unwrap_or(10_000);
    if !(1..=10_000_000).contains(&queue) {
        return Err(ConfigError::invalid(
            key("queue"),
            format!("{queue} must be between 1 and 10000000"),
        ));
    }
    Ok((
        Some(SplunkHec {
            url,
            ack_url,
            token,
            index,
            sourcetype: label("sourcetype", f.sourcetype.as_deref(), DEFAULT_SOURCETYPE)?,
            source: label("source", f.source.as_deref(), "ollama-guard")?,
            host,
            tls_verify,
            ca_file,
            requests: f.requests.unwrap_or(false),
            ack: f.ack.unwrap_or(false),
            batch_size,
            batch_interval: duration("batch_interval", f.batch_interval.as_deref(), "1s")?,
            queue,
            request_timeout: duration("request_timeout", f.request_timeout.as_deref(), "10s")?,
            retry_backoff: duration("retry_backoff", f.retry_backoff.as_deref(), "500ms")?,
            ack_timeout: duration("ack_timeout", f.ack_timeout.as_deref(), "60s")?,
            shutdown_timeout: duration("shutdown_timeout", f.shutdown_timeout.as_deref(), "5s")?,
        }),
        warnings,
    ))
}

/// The event URL (a bare host gets `/services/collector/event`) and the ack URL beside it.
fn urls(text: &str) -> Result<(Uri, Uri), ConfigError> {
    let bad = |problem: String| ConfigError::invalid(key("url"), problem);
    let uri: Uri = text
        .parse()
        .map_err(|e| bad(format!("'{text}' is not a URL ({e})")))?;
    let scheme = uri.scheme_str().ok_or_else(|| {
        bad(format!(
            "'{text}' has no scheme (write https://host:8088/...)"
        ))
    })?;
    if scheme != "https" && scheme != "http" {
        return Err(bad(format!("'{text}': the scheme must be https or http")));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| bad(format!("'{text}' has no host")))?;
    if authority.as_str().contains('@') {
        return Err(bad(format!(
            "'{text}': credentials in the URL are not supported (set token)"
        )));
    }
    if uri.query().is_some() {
        return Err(bad(format!(
            "'{text}': a query is not supported (set index/sourcetype/source/host instead)"
        )));
    }
    let path = match uri.path() {
        "" | "/" => "/services/collector/event",
        p => p,
    };
    let prefix = path
        .find("/services/collector")
        .map_or("", |i| &path[..i])
        .to_owned();
    let build = |p: &str| -> Result<Uri, ConfigError> {
        format!("{scheme}://{authority}{p}")
            .parse()
            .map_err(|e| bad(format!("'{text}': {e}")))
    };
    Ok((
        build(path)?,
        build(&format!("{prefix}/services/collector/ack"))?,
    ))
}

/// The certificates of a CA file (at least one).
pub(crate) fn load_ca(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    let bad = |problem: String| ConfigError::invalid(key("ca_file"), problem);
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certs)
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The effective section for `check-config` (token redacted).
pub(super) fn render(s: Option<&SplunkHec>) -> Option<SinksFile> {
    let s = s?;
    Some(SinksFile {
        splunk_hec: Some(SplunkHecFile {
            url: Some(s.url.to_string()),
            token: Some("<redacted>".to_owned()),
            index: s.index.clone(),
            sourcetype: Some(s.sourcetype.clone()),
            source: Some(s.source.clone()),
            host: Some(s.host.clone()),
            tls_verify: Some(s.tls_verify),
            ca_file: s.ca_file.as_ref().map(|p| p.display().to_string()),
            requests: Some(s.requests),
            ack: Some(s.ack),
            batch_size: Some(s.batch_size),
            batch_interval: Some(human(s.batch_interval)),
            queue: Some(s.queue),
            request_timeout: Some(human(s.request_timeout)),
            retry_backoff: Some(human(s.retry_backoff)),
            ack_timeout: Some(human(s.ack_timeout)),
            shutdown_timeout: Some(human(s.shutdown_timeout)),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: Option<&str>) -> Result<SplunkHec, String> {
        let file: SinksFile = toml::from_str(text).map_err(|e| e.to_string())?;
        splunk_hec(Some(&file), env.map(str::to_owned))
            .map(|(s, _)| s.expect("section present"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_index_and_token_are_unset() {
        // The README's commented example: `token = ""` with the token in the environment,
        // `index = ""` for the token's default index.
        let text = "[splunk_hec]\nurl = \"https://s:8088/services/collector/event\"\ntoken = \"\"\nindex = \"\"";
        let s = parse(text, Some("from-env")).unwrap();
        assert_eq!(s.index, None);
        assert_eq!(s.token, "from-env");
        assert_eq!(
            parse(text, None).unwrap_err(),
            "config error: sinks.splunk_hec.token: required (or set OLLAMA_GUARD_SPLUNK_HEC_TOKEN)"
        );
    }

    #[test]
    fn defaults_fill_every_key_but_url_and_token() {
        let s = parse(
            "[splunk_hec]\nurl = \"https://splunk.example:8088/services/collector/event\"\ntoken = \"abc-123\"",
            None,
        )
        .unwrap();
        assert_eq!(
            s.url.to_string(),
            "https://splunk.example:8088/services/collector/event"
        );
        assert_eq!(
            s.ack_url.to_string(),
            "https://splunk.example:8088/services/collector/ack"
        );
        assert_eq!(s.token, "abc-123");
        assert_eq!(s.index, None);
        assert_eq!(s.sourcetype, "ollama:guard:detection");
        assert_eq!(s.source, "ollama-guard");
        assert_eq!(
            s.host,
            gethostname::gethostname().to_string_lossy().into_owned()
        );
        assert!(s.tls_verify);
        assert!(!s.requests);
        assert!(!s.ack);
        assert_eq!(s.batch_size, 100);
        assert_eq!(s.batch_interval, Duration::from_secs(1));
        assert_eq!(s.queue, 10_000);
        assert_eq!(s.retry_backoff, Duration::from_millis(500));
        assert_eq!(s.ack_timeout, Duration::from_secs(60));
        assert_eq!(s.shutdown_timeout, Duration::from_secs(5));
    }

    #[test]
    fn a_bare_host_gets_the_event_path_and_the_env_token_wins() {
        let s = parse(
            "[splunk_hec]\nurl = \"https://http-inputs-acme.splunkcloud.com\"\ntoken = \"file\"",
            Some("from-env"),
        )
        .unwrap();
        assert_eq!(
            s.url.to_string(),
            "https://http-inputs-acme.splunkcloud.com/services/collector/event"
        );
        assert_eq!(
            s.ack_url.to_string(),
            "https://http-inputs-acme.splunkcloud.com/services/collector/ack"
        );
        assert_eq!(s.token, "from-env");
        assert!(!format!("{s:?}").contains("from-env"));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, want) in [
            (
                "[splunk_hec]\ntoken = \"t\"",
                "config error: sinks.splunk_hec.url: required",
            ),
            (
                "[splunk_hec]\nurl = \"ftp://x/y\"\ntoken = \"t\"",
                "config error: sinks.splunk_hec.url: 'ftp://x/y': the scheme must be https or http",
            ),
            (
                "[splunk_hec]\nurl = \"splunk:8088\"\ntoken = \"t\"",
                "config error: sinks.splunk_hec.url: 'splunk:8088'",
            ),
            (
                "[splunk_hec]\nurl = \"https://s:8088\"",
                "config error: sinks.splunk_hec.token: required (or set OLLAMA_GUARD_SPLUNK_HEC_TOKEN)",
            ),
            (
                "[splunk_hec]\nurl = \"https://s:8088\"\ntoken = \"a b\"",
                "config error: sinks.splunk_hec.token: is not a valid HEC token",
            ),
            (
                "[splunk_hec]\nurl = \"https://s:8088\"\ntoken = \"t\"\nindex = \" \"",
                "config error: sinks.splunk_hec.index: must be a non-empty text",
            ),
            (
                "[splunk_hec]\nurl = \"https://s:8088\"\ntoken = \"t\"\nbatch_size = 0",
                "config error: sinks.splunk_hec.batch_size: 0 must be between 1 and 10000",
            ),
            (
                "[splunk_hec]\nurl = \"https://s:8088\"\ntoken = \"t\"\nbatch_interval = \"soon\"",
                "config error: sinks.splunk_hec.batch_interval: 'soon' is not a duration",
            ),
            (
                "[splunk_hec]\nurl = \"https://s:8088\"\ntoken = \"t\"\nca_file = \"/nonexistent/ca.pem\"",
                "config error: sinks.splunk_hec.ca_file: cannot read /nonexistent/ca.pem",
            ),
        ] {
            let e = parse(text, None).unwrap_err();
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }

    #[test]
    fn rendering_redacts_the_token_and_round_trips_the_rest() {
        let s = parse(
            "[splunk_hec]\nurl = \"https://s:8088/services/collector/event\"\ntoken = \"secret\"\nindex = \"ollama\"\nack = true\nrequests = true\nhost = \"guard-1\"",
            None,
        )
        .unwrap();
        let file = render(Some(&s)).unwrap();
        let text = toml::to_string(&file).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("token = \"<redacted>\""), "{text}");
        let (again, _) = splunk_hec(Some(&file), Some("secret".into())).unwrap();
        assert_eq!(again.unwrap(), s);
    }
}
