//! The policy stage's rules: what a request to Ollama's model-management routes (and the
//! `_debug_render_only` switch of the generation routes) may ask for, decided before anything
//! is forwarded. Pure: the layer (`proxy::layers::policy`) reads the body and acts; this
//! module only says which rules a request breaks.
//!
//! The rules (each a `detection` event named `policy.<name>`, see README "Threat model"):
//! `manage_from` (management routes only from these networks), `registry_pull` /
//! `registry_push` (model names must reference allowed registries), `insecure` (plain HTTP
//! to the registry on pull/push), `create_from_path` (`/api/create` reading a server-side
//! path — a file oracle), `create_remote_host`, `copy_destination` (a copy, or a create,
//! staged for a push to a foreign registry), `debug_render_only` (the rendered prompt, hidden
//! system prompt included, without running the model), `body_too_large`, and
//! `unreadable_body` (a management body Go's JSON decoder would refuse too: closed, should the
//! two readers ever disagree).

mod body;
mod gojson;
pub(crate) mod inflate;
mod model;
mod modelfile;
pub(crate) mod scan;

use std::net::IpAddr;

use ipnet::IpNet;

pub(crate) use body::Members;
pub(crate) use gojson::Unreadable;
use model::{host_allowed, registry_host, DEFAULT_REGISTRY};

use crate::detect::Severity;
use crate::route::Route;

/// Every policy rule, for pre-initialised metric series.
pub(crate) const RULES: [&str; 10] = [
    "policy.manage_from",
    "policy.registry_pull",
    "policy.registry_push",
    "policy.insecure",
    "policy.create_from_path",
    "policy.create_remote_host",
    "policy.copy_destination",
    "policy.debug_render_only",
    "policy.body_too_large",
    "policy.unreadable_body",
];

/// The severity each policy rule reports.
pub(crate) const RULE_SEVERITIES: [(&str, Severity); 10] = [
    ("policy.manage_from", Severity::High),
    ("policy.registry_pull", Severity::High),
    ("policy.registry_push", Severity::High),
    ("policy.insecure", Severity::High),
    ("policy.create_from_path", Severity::High),
    ("policy.create_remote_host", Severity::High),
    ("policy.copy_destination", Severity::High),
    ("policy.debug_render_only", Severity::Medium),
    ("policy.body_too_large", Severity::Medium),
    ("policy.unreadable_body", Severity::Medium),
];

/// The MITRE ATT&CK technique and attack label a policy rule reports.
pub(crate) fn classify(rule: &str) -> (&'static str, &'static str) {
    match rule {
        "policy.registry_push" | "policy.copy_destination" => {
            ("T1048", "Model Theft via Push to Foreign Registry")
        }
        "policy.registry_pull" => ("T1195", "Model Supply Chain: Untrusted Registry"),
        "policy.insecure" => ("T1195", "Model Supply Chain: Plain-HTTP Registry Transfer"),
        "policy.create_from_path" => ("T1005", "Server File Access via Model Create"),
        "policy.create_remote_host" => ("T1090", "Model Create Pointing at a Remote Host"),
        "policy.debug_render_only" => ("T1552", "Prompt Disclosure via _debug_render_only"),
        "policy.manage_from" => ("T1078", "Model Management from Unauthorised Network"),
        "policy.unreadable_body" => ("T1027", "Unreadable Request Body"),
        _ => ("T1499", "Oversized Management Request"),
    }
}

/// The risk-based-alerting score and `risk_message` template of a policy rule's `detection`
/// (README "Splunk"). A policy verdict is a deterministic fact about one request (it named a
/// foreign registry, a server path, ...), not a statistical guess, so every policy score is
/// above every built-in rule's: a push of a model elsewhere, the very theft the guard
/// exists to stop, scores 80 (with any other finding it crosses Splunk ES's default risk
/// threshold of 100); reading server files through `/api/create` 70; an untrusted pull
/// (supply chain) and management from a foreign network 60; prompt disclosure 40; an
/// oversized body, which an innocent large Modelfile can cause, and a body Ollama could not
/// read either, which a broken client can send, 30.
pub(crate) fn risk(rule: &str) -> (u32, &'static str) {
    match rule {
        "policy.registry_push" => (
            80,
            "Model push to a foreign registry refused: $src$ asked $http_method$ $uri_path$ with $field$ = $value$",
        ),
        "policy.copy_destination" => (
            80,
            "Model named for a foreign registry refused (staged for a push): $src$ asked $http_method$ $uri_path$ with $field$ = $value$",
        ),
        "policy.create_from_path" => (
            70,
            "Server file access via model create from $src$: $http_method$ $uri_path$ with $field$ = $value$",
        ),
        "policy.create_remote_host" => (
            70,
            "Model create pointing at a remote host refused: $src$ asked $http_method$ $uri_path$ with $field$ = $value$",
        ),
        "policy.registry_pull" => (
            60,
            "Model pull from an untrusted registry by $src$: $http_method$ $uri_path$ with $field$ = $value$",
        ),
        "policy.insecure" => (
            60,
            "Plain-HTTP model transfer refused: $src$ asked $http_method$ $uri_path$ with $field$ = $value$",
        ),
        "policy.manage_from" => (
            60,
            "Model management from an unauthorised network: $src$ called $http_method$ $uri_path$",
        ),
        "policy.debug_render_only" => (
            40,
            "Prompt disclosure attempt via _debug_render_only from $src$ on $uri_path$",
        ),
        "policy.unreadable_body" => (
            30,
            "Unreadable request body from $src$ on $uri_path$ ($field$ = $value$)",
        ),
        _ => (
            30,
            "Oversized model-management request from $src$ on $uri_path$ ($field$ = $value$)",
        ),
    }
}

/// `[policy]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PolicyConfig {
    /// Largest body read for a policy decision.
    pub(crate) max_body: u64,
    /// Registries models may be pulled from.
    pub(crate) registries_pull: Vec<String>,
    /// Registries models may be pushed to (none by default: a push is how weights leave).
    pub(crate) registries_push: Vec<String>,
    /// Hosts `/api/create` may name as `remote_host`.
    pub(crate) create_remote_hosts: Vec<String>,
    /// Networks allowed to call the management routes at all (empty = any).
    pub(crate) manage_from: Vec<IpNet>,
    /// Also ban the source on a policy verdict (block mode).
    pub(crate) ban: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            max_body: 1024 * 1024,
            registries_pull: [
                "registry.ollama.ai",
                "ollama.com",
                "hf.co",
                "huggingface.co",
            ]
            .map(str::to_owned)
            .to_vec(),
            registries_push: Vec::new(),
            create_remote_hosts: vec!["ollama.com".to_owned()],
            manage_from: Vec::new(),
            ban: false,
        }
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// `policy.<name>`.
    pub(crate) rule: &'static str,
    /// The request field that carried the offending value (`model`, `from`, … or `source`).
    pub(crate) field: &'static str,
    /// The offending value as sent (capped at 256 bytes).
    pub(crate) value: String,
    /// How serious.
    pub(crate) severity: Severity,
    /// Whether `[policy] ban` bans for it: not for a decompression bomb, which a legitimate
    /// body of extremely repetitive text could be.
    pub(crate) bans: bool,
}

fn verdict(rule: &'static str, field: &'static str, value: &str, severity: Severity) -> Verdict {
    let mut value = value.to_owned();
    if value.len() > 256 {
        let mut cut = 256;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        value.truncate(cut);
    }
    Verdict {
        rule,
        field,
        value,
        bans: true,
        severity,
    }
}

/// Whether the policy stage looks at this request at all, and whether it needs its body.
pub(crate) fn scope(route: Route, method: &http::Method) -> Scope {
    match route {
        Route::Pull | Route::Push | Route::Create | Route::Copy | Route::Delete => {
            Scope::ManageWithBody
        }
        Route::Blobs if method == http::Method::POST => Scope::Manage,
        // Signing the server out of its ollama.com account, or reading who it is signed in as.
        Route::Account => Scope::Manage,
        // Ollama's OpenAI-compatible routes become the same chat/generate requests.
        Route::Generate | Route::Chat | Route::OpenAiChat | Route::OpenAiCompletions => {
            Scope::Generation
        }
        _ => Scope::None,
    }
}

/// What the policy stage does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Not a policy route.
    None,
    /// A management route whose decision needs only the source (blob uploads: the body is
    /// the model file itself, never buffered).
    Manage,
    /// A management route whose JSON body is read (pull, push, create, copy, delete).
    ManageWithBody,
    /// A generation route: the body is read for `_debug_render_only`.
    Generation,
}

/// The verdict on a management body larger than the stage reads.
pub(crate) fn too_large(limit: u64) -> Verdict {
    verdict(
        "policy.body_too_large",
        "body",
        &format!("more than {limit} bytes"),
        Severity::Medium,
    )
}

/// The verdict on a body Ollama could not read: a management body Go's JSON decoder would
/// refuse ([`gojson::Unreadable`] says where), or a zstd body it could not decompress
/// ([`inflate::InflateError`] says why).
pub(crate) fn unreadable(why: &dyn std::fmt::Display) -> Verdict {
    verdict(
        "policy.unreadable_body",
        "body",
        &why.to_string(),
        Severity::Medium,
    )
}

/// The verdict on a zstd body that could not be decoded within Ollama's limits (or the stage's
/// ratio limit: a bomb, which never bans).
pub(crate) fn undecodable(e: &inflate::InflateError) -> Verdict {
    let mut v = unreadable(e);
    v.bans = *e != inflate::InflateError::Bomb;
    v
}

/// Whether Ollama routes this method to the route's handler, which decodes the body: `POST`
/// for pull, push, create and copy, `DELETE` for delete. Any other method never reaches a
/// handler (gin answers 404 or 405), so its body is not judged as unreadable.
pub(crate) fn decodes_body(route: Route, method: &http::Method) -> bool {
    match route {
        Route::Pull | Route::Push | Route::Create | Route::Copy => method == http::Method::POST,
        Route::Delete => method == http::Method::DELETE,
        _ => false,
    }
}

/// The verdict on `"_debug_render_only": true` (also found by the streaming scan).
pub(crate) fn debug_render_only() -> Verdict {
    verdict(
        "policy.debug_render_only",
        "_debug_render_only",
        "true",
        Severity::Medium,
    )
}

/// `manage_from`: the verdict for a management request from `src`, if it may not manage. An
/// `unknown` client (a trusted proxy named it by something that is not an address, and `src` is
/// the last address vouched for) may not: the rights of that address are not its own.
pub(crate) fn check_source(cfg: &PolicyConfig, src: IpAddr, unknown: bool) -> Option<Verdict> {
    if cfg.manage_from.is_empty() {
        return None;
    }
    if unknown {
        return Some(verdict(
            "policy.manage_from",
            "source",
            &format!("unknown client via {src}"),
            Severity::High,
        ));
    }
    if cfg.manage_from.iter().any(|n| n.contains(&src)) {
        return None;
    }
    Some(verdict(
        "policy.manage_from",
        "source",
        &src.to_string(),
        Severity::High,
    ))
}

/// The rules a management or generation body breaks.
pub(crate) fn check_body(cfg: &PolicyConfig, route: Route, m: &Members) -> Vec<Verdict> {
    let mut out = Vec::new();
    // The deprecated `name` alias of `model` counts too: either may carry the name.
    let names = || {
        ["model", "name"]
            .into_iter()
            .filter_map(|f| m.str(f).filter(|v| !v.is_empty()).map(|v| (f, v)))
    };
    match route {
        Route::Pull | Route::Push => {
            let (rule, allowed) = if route == Route::Pull {
                ("policy.registry_pull", &cfg.registries_pull)
            } else {
                ("policy.registry_push", &cfg.registries_push)
            };
            for (field, name) in names() {
                let ok = registry_host(&name).is_some_and(|h| host_allowed(&h, allowed));
                if !ok {
                    out.push(verdict(rule, field, &name, Severity::High));
                }
            }
            if m.is_true("insecure") {
                out.push(verdict(
                    "policy.insecure",
                    "insecure",
                    "true",
                    Severity::High,
                ));
            }
        }
        Route::Create => {
            create(cfg, m, &mut out);
            // The model a create makes is named like a copy's destination: one named for a
            // foreign registry is staged for a push there.
            for (field, name) in names() {
                if !may_stage(cfg, &name) {
                    out.push(verdict(
                        "policy.copy_destination",
                        field,
                        &name,
                        Severity::High,
                    ));
                }
            }
        }
        Route::Copy => {
            if let Some(dest) = m.str("destination") {
                if !may_stage(cfg, &dest) {
                    out.push(verdict(
                        "policy.copy_destination",
                        "destination",
                        &dest,
                        Severity::High,
                    ));
                }
            }
        }
        Route::Generate | Route::Chat | Route::OpenAiChat | Route::OpenAiCompletions
            if m.is_true("_debug_render_only") =>
        {
            out.push(debug_render_only());
        }
        _ => {}
    }
    out
}

/// Whether a model may be named `name` here (a copy's destination, a create's model): on the
/// default registry, or on one pushes may go to.
fn may_stage(cfg: &PolicyConfig, name: &str) -> bool {
    registry_host(name)
        .is_some_and(|h| h == DEFAULT_REGISTRY || host_allowed(&h, &cfg.registries_push))
}

/// `/api/create`: a `from` (or the deprecated `path`, or a Modelfile `FROM` line) that is a
/// server-side path, one that names a model on a registry not in `registries_pull` (Ollama
/// pulls a `from` it does not have), and a `remote_host` outside the allowlist — including the
/// one Ollama (0.12 and later) supplies itself for a cloud `from` (`gpt-oss:20b:cloud`,
/// `gpt-oss:20b-cloud`) sent without one: `ollama.com`.
fn create(cfg: &PolicyConfig, m: &Members, out: &mut Vec<Verdict>) {
    let from = m.str("from").filter(|f| !f.trim().is_empty());
    if let Some(from) = &from {
        base(cfg, "from", from, from, out);
    }
    if let Some(path) = m.str("path").filter(|p| !p.is_empty()) {
        out.push(verdict(
            "policy.create_from_path",
            "path",
            &path,
            Severity::High,
        ));
    }
    if let Some(text) = m.str("modelfile") {
        modelfile_checks(cfg, &text, out);
    }
    if let Some(host) = m.str("remote_host").filter(|h| !h.is_empty()) {
        if !host_allowed(url_host(&host), &cfg.create_remote_hosts) {
            out.push(verdict(
                "policy.create_remote_host",
                "remote_host",
                &host,
                Severity::High,
            ));
        }
    } else if let Some(from) = from.filter(|f| is_cloud_ref(f)) {
        if !host_allowed(CLOUD_HOST, &cfg.create_remote_hosts) {
            out.push(verdict(
                "policy.create_remote_host",
                "from",
                &from,
                Severity::High,
            ));
        }
    }
}

/// The host of the remote model Ollama makes of a cloud `from` sent without a `remote_host`
/// (its cloud base URL, `https://ollama.com:443` unless the server's `OLLAMA_CLOUD_BASE_URL`
/// says otherwise).
const CLOUD_HOST: &str = "ollama.com";

/// Whether Ollama reads the model reference `raw` as a cloud model (`internal/modelref`,
/// `parseSourceSuffix`): after trimming, the text after its last `:`, itself trimmed, is
/// `cloud` in any case, or ends in `-cloud` and holds no `/` (`gpt-oss:20b-cloud`).
fn is_cloud_ref(raw: &str) -> bool {
    let raw = raw.trim();
    let Some((_, suffix)) = raw.rsplit_once(':') else {
        return false;
    };
    let suffix = suffix.trim().to_lowercase();
    suffix == "cloud" || (!suffix.contains('/') && suffix.ends_with("-cloud"))
}

/// The deprecated `modelfile` of a create, which Ollama versions up to 0.5.4 parsed
/// themselves, read as any of their parsers reads it ([`modelfile`]): a `FROM` that one of
/// them would read from the server's disk, or that names a registry not allowed, and every
/// `ADAPTER` that is not a blob reference (a relative adapter path is read from the server's
/// working directory). The first command that breaks a rule is that rule's verdict: a
/// Modelfile of a hundred thousand `FROM /x` lines is one verdict, not a hundred thousand.
fn modelfile_checks(cfg: &PolicyConfig, text: &str, out: &mut Vec<Verdict>) {
    let commands = modelfile::commands(text, MODELFILE_COMMANDS);
    if commands.len() > MODELFILE_COMMANDS {
        // No Modelfile a person writes has that many; checking each would cost about a
        // microsecond apiece, so many that a megabyte of them holds a worker for 0.1 s.
        out.push(verdict(
            "policy.create_from_path",
            "modelfile",
            &format!("more than {MODELFILE_COMMANDS} FROM and ADAPTER commands"),
            Severity::High,
        ));
        return;
    }
    let mut broken: Vec<&'static str> = Vec::new();
    for command in commands {
        let rule = match command.name {
            "from" if !command.value.trim().is_empty() => from_rule(cfg, command.value.trim()),
            "adapter" if !is_blob(&command.value) => Some("policy.create_from_path"),
            _ => None,
        };
        if let Some(rule) = rule.filter(|r| !broken.contains(r)) {
            broken.push(rule);
            out.push(verdict(rule, "modelfile", &command.text, Severity::High));
        }
    }
}

/// What a Modelfile's `FROM value` breaks. A file read from the server's disk: a path; a blob
/// reference that is not a digest (up to 0.1.33 it was joined to the blob directory
/// unchecked: `@../../etc/passwd`); anything that is not a valid model name (0.1.34 to 0.5.4
/// open it as a file); a name whose first part is a top-level directory of a Unix or macOS
/// system (up to 0.1.34 every `FROM` was opened as a file first, relative to the server's
/// working directory, which is `/` for a system service or a container: `FROM etc/shadow`),
/// or whose last part ends in a model file's extension (`FROM Downloads/x.gguf`, from a server
/// started in a home directory).
/// Otherwise a model pulled when the server does not have it: its registry must be allowed.
fn from_rule(cfg: &PolicyConfig, value: &str) -> Option<&'static str> {
    if let Some(digest) = value.strip_prefix('@') {
        return (!is_digest(digest)).then_some("policy.create_from_path");
    }
    let first = value.split('/').next().unwrap_or_default();
    let last = value.rsplit('/').next().unwrap_or_default();
    let last = last
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if is_path(value)
        || !model::is_valid_name(value)
        || ROOT_DIRECTORIES
            .iter()
            .any(|d| d.eq_ignore_ascii_case(first))
        || MODEL_FILES.iter().any(|e| last.ends_with(e))
    {
        Some("policy.create_from_path")
    } else if !pull_allowed(cfg, value) {
        Some("policy.registry_pull")
    } else {
        None
    }
}

/// Top-level directories of Linux and macOS systems, as a model name's first part. Not
/// `library`: it is the default registry's own namespace (`library/llama3.2`).
const ROOT_DIRECTORIES: [&str; 28] = [
    "applications",
    "bin",
    "boot",
    "cores",
    "dev",
    "etc",
    "home",
    "lib",
    "lib32",
    "lib64",
    "libx32",
    "lost+found",
    "media",
    "mnt",
    "opt",
    "private",
    "proc",
    "root",
    "run",
    "sbin",
    "snap",
    "srv",
    "sys",
    "system",
    "tmp",
    "users",
    "usr",
    "var",
];

/// The `FROM` and `ADAPTER` commands a Modelfile may hold, as all of Ollama's parsers read it
/// together (each command read by the three of them counts three times).
const MODELFILE_COMMANDS: usize = 256;

/// The extensions of model and adapter files.
const MODEL_FILES: [&str; 7] = [
    ".gguf",
    ".ggml",
    ".bin",
    ".safetensors",
    ".pth",
    ".pt",
    ".onnx",
];

/// A blob reference: `@` and a digest.
fn is_blob(value: &str) -> bool {
    value.strip_prefix('@').is_some_and(is_digest)
}

/// `sha256:` or `sha256-` and 64 hexadecimal digits, as Ollama's blob paths require.
fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256")
        .and_then(|t| t.strip_prefix([':', '-']))
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The host of a `remote_host` as Ollama reads it (`remoteURL`: `http://` added when the text
/// holds no `://`, a leading `/` meaning the local server, then Go's `url.Parse`): the fragment
/// is cut at the first `#`; the scheme is the text before the first `:` when every byte before
/// it may be in a scheme (a letter first, then letters, digits, `+`, `-`, `.`), and without
/// one, or without `//` after it, the text is a path and the host is the local server
/// (`evil.example?x://ollama.com` is `localhost`, not `ollama.com`); the query is cut at the
/// first `?`; the authority runs to the first `/`, its user information to the **last** `@`
/// (so `ollama.com:443@attacker.example` is `attacker.example`). A port or an IPv6 literal's
/// brackets are not part of the host; a host with several `:` and no brackets, which no
/// server answers, is returned whole (so it matches no allowed host).
fn url_host(text: &str) -> &str {
    if text.starts_with('/') {
        return "localhost";
    }
    let no_fragment = text.split('#').next().unwrap_or_default();
    let after_scheme = if text.contains("://") {
        match go_scheme_rest(no_fragment) {
            Some(rest) => rest,
            None => return "localhost",
        }
    } else {
        // Ollama's `"http://" + raw`: the authority is the text itself.
        return authority_host(no_fragment.split('?').next().unwrap_or_default());
    };
    let no_query = after_scheme.split('?').next().unwrap_or_default();
    match no_query.strip_prefix("//") {
        Some(rest) => authority_host(rest),
        // An opaque URL (`evil.example:80://x`): no host.
        None => "localhost",
    }
}

/// What follows `scheme:` in `text` when it starts with a scheme as Go's `getScheme` reads
/// one; `None` without one.
fn go_scheme_rest(text: &str) -> Option<&str> {
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i > 0 => return Some(&text[i + 1..]),
            _ => return None,
        }
    }
    None
}

/// The host of an authority (and whatever path follows it): user information runs to the
/// last `@`, the authority ends at the first `/`.
fn authority_host(text: &str) -> &str {
    let authority = text.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    if let Some(literal) = host_port.strip_prefix('[') {
        return literal.split(']').next().unwrap_or_default();
    }
    match host_port.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => host_port,
    }
}

/// The base model `from` of a create, which `field` carried as `shown`: a server path, or a
/// model Ollama pulls when it does not have it.
fn base(cfg: &PolicyConfig, field: &'static str, from: &str, shown: &str, out: &mut Vec<Verdict>) {
    let rule = if is_path(from) {
        "policy.create_from_path"
    } else if !pull_allowed(cfg, from) {
        "policy.registry_pull"
    } else {
        return;
    };
    out.push(verdict(rule, field, shown, Severity::High));
}

/// Whether a model name references a registry models may be pulled from.
fn pull_allowed(cfg: &PolicyConfig, name: &str) -> bool {
    registry_host(name).is_some_and(|h| host_allowed(&h, &cfg.registries_pull))
}

/// A filesystem path rather than a model name: absolute, relative, home-relative, or
/// Windows-style.
fn is_path(text: &str) -> bool {
    let t = text.trim();
    let b = t.as_bytes();
    t.starts_with(['/', '.', '~'])
        || t.contains('\\')
        || (b.len() > 2 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'/')
}

#[cfg(test)]
mod tests;
