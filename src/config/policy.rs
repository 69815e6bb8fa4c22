//! `[policy]`: parsed and validated into the policy stage's [`PolicyConfig`], and rendered
//! back for `check-config`.

use super::{ConfigError, PolicyFile};
use crate::policy::PolicyConfig;

/// The `[policy]` section (defaults for every key it leaves out).
pub(super) fn policy(file: Option<&PolicyFile>) -> Result<PolicyConfig, ConfigError> {
    let d = PolicyConfig::default();
    let Some(f) = file else { return Ok(d) };
    let max_body = match &f.max_body {
        Some(text) => size("policy.max_body", text)?,
        None => d.max_body,
    };
    let hosts = |key: &str, v: &Option<Vec<String>>, default: Vec<String>| match v {
        Some(list) => registries(key, list),
        None => Ok(default),
    };
    let manage_from = f
        .manage_from
        .iter()
        .flatten()
        .map(|s| {
            crate::ip::parse_cidr(s)
                .map_err(|e| ConfigError::invalid("policy.manage_from", e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok(PolicyConfig {
        max_body,
        registries_pull: hosts(
            "policy.registries_pull",
            &f.registries_pull,
            d.registries_pull,
        )?,
        registries_push: hosts(
            "policy.registries_push",
            &f.registries_push,
            d.registries_push,
        )?,
        create_remote_hosts: hosts(
            "policy.create_remote_hosts",
            &f.create_remote_hosts,
            d.create_remote_hosts,
        )?,
        manage_from,
        ban: f.ban.unwrap_or(d.ban),
    })
}

/// A byte size such as `1MiB`, `512KB` or `1048576`: at least 1 KiB, at most 1 GiB.
fn size(key: &str, text: &str) -> Result<u64, ConfigError> {
    let bytes = text
        .trim()
        .parse::<bytesize::ByteSize>()
        .map_err(|e| ConfigError::invalid(key, format!("'{text}' is not a size like 1MiB ({e})")))?
        .as_u64();
    if !(1024..=1 << 30).contains(&bytes) {
        return Err(ConfigError::invalid(
            key,
            format!("'{text}' must be between 1KiB and 1GiB"),
        ));
    }
    Ok(bytes)
}

/// Registry host names: lower-cased; no scheme, no path.
fn registries(key: &str, list: &[String]) -> Result<Vec<String>, ConfigError> {
    list.iter()
        .map(|raw| {
            let host = raw.trim().to_ascii_lowercase();
            let ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
            if ok {
                Ok(host)
            } else {
                Err(ConfigError::invalid(
                    key,
                    format!("'{raw}' is not a registry host name (no scheme, no path)"),
                ))
            }
        })
        .collect()
}

/// The effective section, for `check-config`.
pub(super) fn render(p: &PolicyConfig) -> PolicyFile {
    PolicyFile {
        max_body: Some(super::render::exact_size(p.max_body)),
        registries_pull: Some(p.registries_pull.clone()),
        registries_push: Some(p.registries_push.clone()),
        create_remote_hosts: Some(p.create_remote_hosts.clone()),
        manage_from: Some(p.manage_from.iter().map(ToString::to_string).collect()),
        ban: Some(p.ban),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> PolicyFile {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_allow_official_and_hugging_face_pulls_and_no_pushes() {
        let p = policy(None).unwrap();
        assert_eq!(p.max_body, 1_048_576);
        assert_eq!(
            p.registries_pull,
            [
                "registry.ollama.ai",
                "ollama.com",
                "hf.co",
                "huggingface.co"
            ]
        );
        assert!(p.registries_push.is_empty());
        assert!(!p.ban);
    }

    #[test]
    fn keys_are_parsed_and_bad_values_name_their_key() {
        let p = policy(Some(&file(
            "max_body = \"64KiB\"\nregistries_push = [\"Registry.Internal\"]\nmanage_from = [\"10.0.0.0/8\"]\nban = true",
        )))
        .unwrap();
        assert_eq!(p.max_body, 65_536);
        assert_eq!(p.registries_push, ["registry.internal"]);
        assert_eq!(p.manage_from[0].to_string(), "10.0.0.0/8");
        assert!(p.ban);
        for (text, want) in [
            (
                "max_body = \"lots\"",
                "config error: policy.max_body: 'lots' is not a size",
            ),
            (
                "max_body = \"10\"",
                "config error: policy.max_body: '10' must be between",
            ),
            (
                "registries_pull = [\"https://x/y\"]",
                "config error: policy.registries_pull: 'https://x/y'",
            ),
            (
                "manage_from = [\"10.0.0.5/8\"]",
                "config error: policy.manage_from: '10.0.0.5/8' has host bits",
            ),
        ] {
            let e = policy(Some(&file(text))).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }

    #[test]
    fn rendering_round_trips() {
        let p = policy(Some(&file(
            "max_body = \"2MiB\"\nregistries_push = [\"r.example\"]",
        )))
        .unwrap();
        let again = policy(Some(&render(&p))).unwrap();
        assert_eq!(again, p);
    }
}
