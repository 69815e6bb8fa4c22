//! Which registry a model name points at, as Ollama's `model.ParseName` reads it.
//!
//! A name is `[scheme://][host/][namespace/]model[:tag][@digest]`; a name without a host
//! means `registry.ollama.ai`. Three parts (`host/ns/model`) name a host; fewer do not (`ns/model`
//! is a namespace on the default registry). Anything that does not parse as such a name is
//! treated as naming an unknown host: a policy must fail closed, not open.

/// Ollama's default registry.
pub(crate) const DEFAULT_REGISTRY: &str = "registry.ollama.ai";

/// The registry host a model name refers to (lower case, without port), or `None` when the
/// name cannot be read (treated as foreign by the policy).
pub(crate) fn registry_host(name: &str) -> Option<String> {
    let name = name.trim();
    // Ollama up to 0.1.39 on Windows read `\` as `/` (`ParseModelPath` replaced the path
    // separator): `evil.example\ns\m` named `evil.example` there. Read so everywhere; later
    // versions refuse such a name.
    let lower: String = (name.chars())
        .map(|c| match c {
            '\\' => '/',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    // `@digest` ends a name. An `@` anywhere else (`registry.ollama.ai@evil.example/x/y`,
    // which a URL parser reads as user information before a host) names no registry.
    let rest = match rest.rsplit_once('@') {
        None => rest,
        Some((name, digest)) if !name.contains('@') && !digest.contains('/') => name,
        Some(_) => return None,
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [model] | [_, model] if !model.is_empty() => Some(DEFAULT_REGISTRY.to_owned()),
        [host, ns, model] if !host.is_empty() && !ns.is_empty() && !model.is_empty() => {
            // A port is digits: `hf.co:evil.example/ns/m` names no registry at all.
            let (host, port) = host.split_once(':').unwrap_or((host, "0"));
            let valid = !host.is_empty()
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
            valid.then(|| host.to_owned())
        }
        _ => None,
    }
}

/// Whether `host` is one of `allowed` (exact, case-insensitive; ports ignored).
pub(crate) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| {
        let a = a.split(':').next().unwrap_or(a);
        a.eq_ignore_ascii_case(host)
    })
}

/// The parts of a model name, for their validity.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Host,
    Namespace,
    Model,
    Tag,
}

/// Whether Ollama reads `name` as a model name, as its `model.ParseName(name).IsValid()` does
/// (0.1.34 to 0.5.4 open a Modelfile's `FROM` that is not one as a file): `[scheme://][host/]
/// [namespace/]model[:tag]`, missing parts defaulted, each part present one or more letters,
/// digits, `_`, `-`, `.` (not in a namespace) and `:` (in a host only), starting with a letter,
/// a digit or `_`; at most 350 bytes for a host, 80 for the others.
pub(crate) fn is_valid_name(name: &str) -> bool {
    let (rest, tag) = if name.rfind(':') > name.rfind('/') {
        name.rsplit_once(':').unwrap_or((name, ""))
    } else {
        (name, "latest")
    };
    let (mut host, mut namespace, model) = (DEFAULT_REGISTRY, "library", rest);
    let model = match rest.rsplit_once('/') {
        None => model,
        Some((before, model)) => {
            match before.rsplit_once('/') {
                None => namespace = before,
                Some((h, ns)) => {
                    namespace = ns;
                    host = h.split_once("://").map_or(h, |(_, after)| after);
                }
            }
            model
        }
    };
    valid_part(Part::Host, host)
        && valid_part(Part::Namespace, namespace)
        && valid_part(Part::Model, model)
        && valid_part(Part::Tag, tag)
}

fn valid_part(kind: Part, s: &str) -> bool {
    let most = if kind == Part::Host { 350 } else { 80 };
    !s.is_empty()
        && s.len() <= most
        && s.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric()
                || b == b'_'
                || (i > 0
                    && (b == b'-'
                        || (b == b'.' && kind != Part::Namespace)
                        || (b == b':' && kind == Part::Host)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_a_host_mean_the_default_registry() {
        for n in [
            "llama3.2",
            "llama3.2:1b",
            "library/llama3.2",
            "user/model:tag",
            "m@sha256:00",
        ] {
            assert_eq!(registry_host(n).as_deref(), Some(DEFAULT_REGISTRY), "{n}");
        }
    }

    #[test]
    fn three_part_names_and_schemes_name_their_host() {
        for (n, h) in [
            ("attacker.example/ns/llama3", "attacker.example"),
            (
                "https://Attacker.Example:5000/ns/llama3:latest",
                "attacker.example",
            ),
            ("http://10.0.0.5/x/y", "10.0.0.5"),
            ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "hf.co"),
            ("registry.ollama.ai/library/llama3", "registry.ollama.ai"),
            ("evil.example\\ns\\m", "evil.example"),
            ("evil.example/ns\\m", "evil.example"),
        ] {
            assert_eq!(registry_host(n).as_deref(), Some(h), "{n}");
        }
    }

    #[test]
    fn unreadable_names_fail_closed() {
        for n in [
            "a/b/c/d",
            "",
            "/x/y",
            "evil host/ns/m",
            "a//b",
            "registry.ollama.ai@attacker.example/x/y",
            "https://registry.ollama.ai@attacker.example/x/y:latest",
            "hf.co/ns/m@x@sha256:00",
        ] {
            assert_eq!(registry_host(n), None, "{n}");
        }
    }

    #[test]
    fn valid_names_are_those_ollama_does_not_open_as_files() {
        for n in [
            "llama3.2",
            "llama3.2:1b",
            "library/llama3.2",
            "user/model:tag",
            "_x/m_1",
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            "https://registry.ollama.ai/library/llama3:latest",
            "localhost:5000/ns/m",
            "etc/shadow",
        ] {
            assert!(is_valid_name(n), "{n}");
        }
        for n in [
            "root/.bashrc",
            "etc/.pwd.lock",
            ".hidden",
            "m:",
            ":tag",
            "a/b/c/d",
            "ns.x/m",
            "my model",
            "\u{378}/x",
            "m@sha256:00",
            "/etc/passwd",
            "-m",
            "m:a:b",
            "",
        ] {
            assert!(!is_valid_name(n), "{n}");
        }
        assert!(is_valid_name(&"m".repeat(80)));
        assert!(!is_valid_name(&"m".repeat(81)));
    }

    #[test]
    fn allowed_hosts_compare_without_case_and_port() {
        let allowed = vec!["registry.ollama.ai".to_owned(), "hf.co".to_owned()];
        assert!(host_allowed("hf.co", &allowed));
        assert!(host_allowed("REGISTRY.ollama.ai", &allowed));
        assert!(!host_allowed(
            "registry.ollama.ai.attacker.example",
            &allowed
        ));
    }
}
