//! The configuration file's keys from the environment.
//!
//! Every `serve` option has its variable through clap (`OLLAMA_GUARD_LISTEN`, …). The file's
//! other keys are read here, over the file and under the command line: a top-level key as
//! `OLLAMA_GUARD_<KEY>` (`OLLAMA_GUARD_IPV6_PREFIX`), a key of a section as
//! `OLLAMA_GUARD_<SECTION>_<KEY>` (`OLLAMA_GUARD_TIMEOUTS_BODY_IDLE`,
//! `OLLAMA_GUARD_SPLUNK_HEC_URL` for `[sinks.splunk_hec] url`). A key whose name is used by no
//! other key may also be written without its section (`OLLAMA_GUARD_BODY_IDLE`,
//! `OLLAMA_GUARD_REDIS_URL`); the two spellings set to different values are an error. Lists
//! are comma-separated. Rules (`[[rule]]`, `[rules.NAME]`) are read from the file only.
//!
//! The values are validated with the file's, so a bad one is refused the same way; the
//! error then says which variable set it ([`annotate`]).

use std::ffi::OsString;

use super::cluster::ClusterFile;
use super::file::{AuthFile, BanFile, EnforcementFile, FileConfig, PolicyFile, TimeoutsFile};
use super::sinks::{SinksFile, SplunkHecFile};
use super::ConfigError;

/// The prefix of every variable.
const PREFIX: &str = "OLLAMA_GUARD_";

/// One key: its variable (without [`PREFIX`]), the spelling without the section when that
/// is unambiguous, the key's dotted name, and how a value is stored.
struct Var {
    name: &'static str,
    alias: Option<&'static str>,
    key: &'static str,
    set: fn(&mut FileConfig, &str) -> Result<(), String>,
}

fn timeouts(f: &mut FileConfig) -> &mut TimeoutsFile {
    f.timeouts.get_or_insert_with(Default::default)
}
fn ban(f: &mut FileConfig) -> &mut BanFile {
    f.ban.get_or_insert_with(Default::default)
}
fn policy(f: &mut FileConfig) -> &mut PolicyFile {
    f.policy.get_or_insert_with(Default::default)
}
fn enforcement(f: &mut FileConfig) -> &mut EnforcementFile {
    f.enforcement.get_or_insert_with(Default::default)
}
fn auth(f: &mut FileConfig) -> &mut AuthFile {
    f.auth.get_or_insert_with(Default::default)
}
fn cluster(f: &mut FileConfig) -> &mut ClusterFile {
    f.cluster.get_or_insert_with(Default::default)
}
fn hec(f: &mut FileConfig) -> &mut SplunkHecFile {
    f.sinks
        .get_or_insert_with(SinksFile::default)
        .splunk_hec
        .get_or_insert_with(Default::default)
}

fn text(v: &str) -> Result<Option<String>, String> {
    Ok(Some(v.to_owned()))
}

fn flag(v: &str) -> Result<Option<bool>, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(Some(true)),
        "false" | "0" | "no" | "off" => Ok(Some(false)),
        _ => Err(format!("'{v}' is not true or false")),
    }
}

fn number<T: std::str::FromStr>(v: &str) -> Result<Option<T>, String> {
    v.trim()
        .parse()
        .map(Some)
        .map_err(|_| format!("'{v}' is not a number of the right range"))
}

fn list(v: &str) -> Result<Option<Vec<String>>, String> {
    Ok(Some(
        v.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect(),
    ))
}

/// `var!(NAME, alias, "key", section, field, parser)`: the table's rows.
macro_rules! var {
    ($name:literal, $alias:expr, $key:literal, top, $field:ident, $parse:ident) => {
        Var {
            name: $name,
            alias: $alias,
            key: $key,
            set: |f, v| {
                f.$field = $parse(v)?;
                Ok(())
            },
        }
    };
    ($name:literal, $alias:expr, $key:literal, $section:ident, $field:ident, $parse:ident) => {
        Var {
            name: $name,
            alias: $alias,
            key: $key,
            set: |f, v| {
                $section(f).$field = $parse(v)?;
                Ok(())
            },
        }
    };
}

/// Every key of the file that is not also a command-line option (those have their variable
/// through clap) and not a rule's.
const VARS: &[Var] = &[
    var!("ALLOWLIST", None, "allowlist", top, allowlist, list),
    // The lists of two options under the keys' own names; the option's variable
    // (`OLLAMA_GUARD_TRUSTED_PROXY`, `OLLAMA_GUARD_ALLOWED_HOST`) wins over these.
    var!(
        "TRUSTED_PROXIES",
        None,
        "trusted_proxies",
        top,
        trusted_proxies,
        list
    ),
    var!(
        "ALLOWED_HOSTS",
        None,
        "allowed_hosts",
        top,
        allowed_hosts,
        list
    ),
    var!("IPV6_PREFIX", None, "ipv6_prefix", top, ipv6_prefix, number),
    var!(
        "MAX_TRACKED_KEYS",
        None,
        "max_tracked_keys",
        top,
        max_tracked_keys,
        number
    ),
    var!("ADMIN_TOKEN", None, "admin_token", top, admin_token, text),
    var!(
        "TIMEOUTS_UPSTREAM_CONNECT",
        Some("UPSTREAM_CONNECT"),
        "timeouts.upstream_connect",
        timeouts,
        upstream_connect,
        text
    ),
    var!(
        "TIMEOUTS_HEADER_READ",
        Some("HEADER_READ"),
        "timeouts.header_read",
        timeouts,
        header_read,
        text
    ),
    var!(
        "TIMEOUTS_GRACE_PERIOD",
        Some("GRACE_PERIOD"),
        "timeouts.grace_period",
        timeouts,
        grace_period,
        text
    ),
    var!(
        "TIMEOUTS_READINESS_PROBE",
        Some("READINESS_PROBE"),
        "timeouts.readiness_probe",
        timeouts,
        readiness_probe,
        text
    ),
    var!(
        "TIMEOUTS_UPSTREAM_IDLE",
        Some("UPSTREAM_IDLE"),
        "timeouts.upstream_idle",
        timeouts,
        upstream_idle,
        text
    ),
    var!(
        "TIMEOUTS_BODY_IDLE",
        Some("BODY_IDLE"),
        "timeouts.body_idle",
        timeouts,
        body_idle,
        text
    ),
    var!(
        "TIMEOUTS_SEND_IDLE",
        Some("SEND_IDLE"),
        "timeouts.send_idle",
        timeouts,
        send_idle,
        text
    ),
    var!("BAN_DURATION", None, "ban.duration", ban, duration, text),
    var!(
        "BAN_INCREMENT",
        None,
        "ban.increment",
        ban,
        increment,
        number
    ),
    var!("BAN_MAX", None, "ban.max", ban, max, text),
    var!("BAN_MEMORY", None, "ban.memory", ban, memory, text),
    var!(
        "POLICY_MAX_BODY",
        Some("MAX_BODY"),
        "policy.max_body",
        policy,
        max_body,
        text
    ),
    var!(
        "POLICY_REGISTRIES_PULL",
        Some("REGISTRIES_PULL"),
        "policy.registries_pull",
        policy,
        registries_pull,
        list
    ),
    var!(
        "POLICY_REGISTRIES_PUSH",
        Some("REGISTRIES_PUSH"),
        "policy.registries_push",
        policy,
        registries_push,
        list
    ),
    var!(
        "POLICY_CREATE_REMOTE_HOSTS",
        Some("CREATE_REMOTE_HOSTS"),
        "policy.create_remote_hosts",
        policy,
        create_remote_hosts,
        list
    ),
    var!(
        "POLICY_MANAGE_FROM",
        Some("MANAGE_FROM"),
        "policy.manage_from",
        policy,
        manage_from,
        list
    ),
    var!("POLICY_BAN", None, "policy.ban", policy, ban, flag),
    var!(
        "ENFORCEMENT_ABORT_IN_FLIGHT",
        Some("ABORT_IN_FLIGHT"),
        "enforcement.abort_in_flight",
        enforcement,
        abort_in_flight,
        flag
    ),
    var!(
        "AUTH_KEYS_FILE",
        Some("KEYS_FILE"),
        "auth.keys_file",
        auth,
        keys_file,
        text
    ),
    var!(
        "AUTH_PROTECT_PROBES",
        Some("PROTECT_PROBES"),
        "auth.protect_probes",
        auth,
        protect_probes,
        flag
    ),
    var!(
        "AUTH_METRICS_BY_IDENTITY",
        Some("METRICS_BY_IDENTITY"),
        "auth.metrics_by_identity",
        auth,
        metrics_by_identity,
        flag
    ),
    var!(
        "CLUSTER_REDIS_URL",
        Some("REDIS_URL"),
        "cluster.redis_url",
        cluster,
        redis_url,
        text
    ),
    var!(
        "CLUSTER_KEY_PREFIX",
        Some("KEY_PREFIX"),
        "cluster.key_prefix",
        cluster,
        key_prefix,
        text
    ),
    var!(
        "CLUSTER_SYNC_INTERVAL",
        Some("SYNC_INTERVAL"),
        "cluster.sync_interval",
        cluster,
        sync_interval,
        text
    ),
    var!(
        "CLUSTER_INSTANCE_ID",
        Some("INSTANCE_ID"),
        "cluster.instance_id",
        cluster,
        instance_id,
        text
    ),
    var!(
        "CLUSTER_REQUIRED",
        None,
        "cluster.required",
        cluster,
        required,
        flag
    ),
    var!(
        "CLUSTER_CA_FILE",
        None,
        "cluster.ca_file",
        cluster,
        ca_file,
        text
    ),
    var!(
        "SPLUNK_HEC_URL",
        None,
        "sinks.splunk_hec.url",
        hec,
        url,
        text
    ),
    var!(
        "SPLUNK_HEC_INDEX",
        None,
        "sinks.splunk_hec.index",
        hec,
        index,
        text
    ),
    var!(
        "SPLUNK_HEC_SOURCETYPE",
        None,
        "sinks.splunk_hec.sourcetype",
        hec,
        sourcetype,
        text
    ),
    var!(
        "SPLUNK_HEC_SOURCE",
        None,
        "sinks.splunk_hec.source",
        hec,
        source,
        text
    ),
    var!(
        "SPLUNK_HEC_HOST",
        None,
        "sinks.splunk_hec.host",
        hec,
        host,
        text
    ),
    var!(
        "SPLUNK_HEC_TLS_VERIFY",
        None,
        "sinks.splunk_hec.tls_verify",
        hec,
        tls_verify,
        flag
    ),
    var!(
        "SPLUNK_HEC_CA_FILE",
        None,
        "sinks.splunk_hec.ca_file",
        hec,
        ca_file,
        text
    ),
    var!(
        "SPLUNK_HEC_REQUESTS",
        None,
        "sinks.splunk_hec.requests",
        hec,
        requests,
        flag
    ),
    var!(
        "SPLUNK_HEC_ACK",
        None,
        "sinks.splunk_hec.ack",
        hec,
        ack,
        flag
    ),
    var!(
        "SPLUNK_HEC_BATCH_SIZE",
        None,
        "sinks.splunk_hec.batch_size",
        hec,
        batch_size,
        number
    ),
    var!(
        "SPLUNK_HEC_BATCH_INTERVAL",
        None,
        "sinks.splunk_hec.batch_interval",
        hec,
        batch_interval,
        text
    ),
    var!(
        "SPLUNK_HEC_QUEUE",
        None,
        "sinks.splunk_hec.queue",
        hec,
        queue,
        number
    ),
    var!(
        "SPLUNK_HEC_REQUEST_TIMEOUT",
        None,
        "sinks.splunk_hec.request_timeout",
        hec,
        request_timeout,
        text
    ),
    var!(
        "SPLUNK_HEC_RETRY_BACKOFF",
        None,
        "sinks.splunk_hec.retry_backoff",
        hec,
        retry_backoff,
        text
    ),
    var!(
        "SPLUNK_HEC_ACK_TIMEOUT",
        None,
        "sinks.splunk_hec.ack_timeout",
        hec,
        ack_timeout,
        text
    ),
    var!(
        "SPLUNK_HEC_SHUTDOWN_TIMEOUT",
        None,
        "sinks.splunk_hec.shutdown_timeout",
        hec,
        shutdown_timeout,
        text
    ),
];

/// Which file keys the environment set, and by which variable (for [`annotate`]).
#[derive(Debug, Default)]
pub(super) struct Applied(Vec<(&'static str, String)>);

/// Puts every variable that is set over `file`. `lookup` reads one variable (the process
/// environment, or a test's map).
pub(super) fn overlay(
    file: &mut FileConfig,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<Applied, ConfigError> {
    let mut applied = Applied::default();
    for var in VARS {
        let read = |name: &str| -> Result<Option<(String, String)>, ConfigError> {
            let full = format!("{PREFIX}{name}");
            match lookup(&full) {
                None => Ok(None),
                Some(v) => match v.into_string() {
                    Ok(v) => Ok(Some((full, v))),
                    Err(_) => Err(ConfigError::invalid(
                        var.key,
                        format!("{full} is not valid UTF-8"),
                    )),
                },
            }
        };
        let main = read(var.name)?;
        let alias = match var.alias {
            Some(a) => read(a)?,
            None => None,
        };
        let (name, value) = match (main, alias) {
            (Some((n, v)), Some((a, w))) if v != w => {
                return Err(ConfigError::invalid(
                    var.key,
                    format!("{n} and {a} are set to different values; set one"),
                ))
            }
            (Some(set), _) | (None, Some(set)) => set,
            (None, None) => continue,
        };
        (var.set)(file, &value)
            .map_err(|problem| ConfigError::invalid(var.key, format!("{name}: {problem}")))?;
        applied.0.push((var.key, name));
    }
    Ok(applied)
}

/// Names the variable behind a refused value: `config error: timeouts.body_idle: … (from
/// OLLAMA_GUARD_TIMEOUTS_BODY_IDLE)`.
pub(super) fn annotate(error: ConfigError, applied: &Applied) -> ConfigError {
    match error {
        ConfigError::Invalid { key, problem } => {
            let from = applied
                .0
                .iter()
                .find(|(k, _)| key == *k || key.starts_with(&format!("{k}[")));
            match from {
                Some((_, var)) => ConfigError::Invalid {
                    problem: format!("{problem} (from {var})"),
                    key,
                },
                None => ConfigError::Invalid { key, problem },
            }
        }
        other => other,
    }
}

/// The variables, for the README's table and its test.
#[cfg(test)]
pub(super) fn names() -> impl Iterator<Item = (&'static str, Option<&'static str>, &'static str)> {
    VARS.iter().map(|v| (v.name, v.alias, v.key))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn section_keys_are_read_with_and_without_their_section() {
        let mut f = FileConfig::default();
        let applied = overlay(
            &mut f,
            env(&[
                ("OLLAMA_GUARD_TIMEOUTS_BODY_IDLE", "2m"),
                ("OLLAMA_GUARD_REDIS_URL", "redis://10.0.0.1:6379"),
                ("OLLAMA_GUARD_ENFORCEMENT_ABORT_IN_FLIGHT", "false"),
                ("OLLAMA_GUARD_MAX_TRACKED_KEYS", "5000"),
                ("OLLAMA_GUARD_ALLOWLIST", "10.0.0.0/8, ::1/128,"),
                ("OLLAMA_GUARD_SPLUNK_HEC_BATCH_SIZE", "7"),
                ("OLLAMA_GUARD_BAN_INCREMENT", "1.5"),
            ]),
        )
        .unwrap();
        assert_eq!(
            f.timeouts.as_ref().unwrap().body_idle.as_deref(),
            Some("2m")
        );
        assert_eq!(
            f.cluster.as_ref().unwrap().redis_url.as_deref(),
            Some("redis://10.0.0.1:6379")
        );
        assert_eq!(f.enforcement.as_ref().unwrap().abort_in_flight, Some(false));
        assert_eq!(f.max_tracked_keys, Some(5000));
        assert_eq!(
            f.allowlist,
            Some(vec!["10.0.0.0/8".to_string(), "::1/128".to_string()])
        );
        let hec = f.sinks.as_ref().unwrap().splunk_hec.as_ref().unwrap();
        assert_eq!(hec.batch_size, Some(7));
        assert_eq!(f.ban.as_ref().unwrap().increment, Some(1.5));
        assert_eq!(applied.0.len(), 7);
        // Nothing else was created: a section no variable named stays absent.
        assert!(f.policy.is_none() && f.auth.is_none());
    }

    #[test]
    fn the_environment_replaces_the_file_value() {
        let mut f: FileConfig =
            toml::from_str("[timeouts]\nbody_idle = \"5m\"\nheader_read = \"9s\"").unwrap();
        overlay(&mut f, env(&[("OLLAMA_GUARD_BODY_IDLE", "30s")])).unwrap();
        let t = f.timeouts.unwrap();
        assert_eq!(t.body_idle.as_deref(), Some("30s"));
        assert_eq!(t.header_read.as_deref(), Some("9s"));
    }

    #[test]
    fn bad_values_and_conflicting_spellings_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("OLLAMA_GUARD_POLICY_BAN", "maybe")],
                "config error: policy.ban: OLLAMA_GUARD_POLICY_BAN: 'maybe' is not true or false",
            ),
            (
                &[("OLLAMA_GUARD_IPV6_PREFIX", "300")],
                "config error: ipv6_prefix: OLLAMA_GUARD_IPV6_PREFIX: '300' is not a number of the right range",
            ),
            (
                &[
                    ("OLLAMA_GUARD_CLUSTER_KEY_PREFIX", "a:"),
                    ("OLLAMA_GUARD_KEY_PREFIX", "b:"),
                ],
                "config error: cluster.key_prefix: OLLAMA_GUARD_CLUSTER_KEY_PREFIX and \
                 OLLAMA_GUARD_KEY_PREFIX are set to different values; set one",
            ),
        ];
        for (vars, want) in cases {
            let e = overlay(&mut FileConfig::default(), env(vars)).unwrap_err();
            assert_eq!(e.to_string(), *want);
        }
        // The same value under both spellings is no conflict.
        let mut f = FileConfig::default();
        overlay(
            &mut f,
            env(&[
                ("OLLAMA_GUARD_CLUSTER_KEY_PREFIX", "a:"),
                ("OLLAMA_GUARD_KEY_PREFIX", "a:"),
            ]),
        )
        .unwrap();
        assert_eq!(f.cluster.unwrap().key_prefix.as_deref(), Some("a:"));
    }

    #[test]
    fn a_refused_value_says_which_variable_set_it() {
        let mut f = FileConfig::default();
        let applied = overlay(&mut f, env(&[("OLLAMA_GUARD_SEND_IDLE", "soon")])).unwrap();
        let e = annotate(
            ConfigError::invalid("timeouts.send_idle", "'soon' is not a duration"),
            &applied,
        );
        assert_eq!(
            e.to_string(),
            "config error: timeouts.send_idle: 'soon' is not a duration (from OLLAMA_GUARD_SEND_IDLE)"
        );
        let other = annotate(ConfigError::invalid("listen", "bad"), &applied);
        assert_eq!(other.to_string(), "config error: listen: bad");
    }

    #[test]
    fn names_are_unique_and_no_alias_is_another_keys_name() {
        let mut seen = std::collections::HashSet::new();
        for (name, alias, _) in names() {
            assert!(seen.insert(name), "{name}");
            if let Some(a) = alias {
                assert!(seen.insert(a), "{a}");
            }
        }
        // Nor a command-line option's variable.
        for cli in [
            "LISTEN",
            "UPSTREAM",
            "ADMIN_LISTEN",
            "CONFIG",
            "MODE",
            "DETECTION_LOG",
            "ACCESS_LOG",
            "ACCESS_LOG_FORMAT",
            "TRUSTED_PROXY",
            "ALLOWED_HOST",
            "MAX_CONNECTIONS",
            "MAX_CONNECTIONS_PER_SOURCE",
            "AUTH_MODE",
            "TLS_CERT",
            "TLS_KEY",
            "STATE_DIR",
            "WORKERS",
            "CPU_AFFINITY",
            "LOG_LEVEL",
            "LOG_FORMAT",
            "REDIS_PASSWORD",
            "SPLUNK_HEC_TOKEN",
        ] {
            assert!(!seen.contains(cli), "{cli}");
        }
    }
}
