//! The built-in rule set, used when the config file has no `[[rule]]` (README, "Detection rules").
//!
//! Four rules mirror published Splunk ESCU detections of the "Suspicious Ollama Activities"
//! story (splunk/security_content, `detections/application/ollama_*.yml`, author Rod Soto,
//! 2025-10-05); one (`metadata_enumeration`) implements what the seed rule's *description*
//! promises but its search never checks. Each function documents every parameter and the
//! reason for it, including where the product deliberately differs from the SPL.

use super::rule::{Cutoff, RuleConfig};

/// The built-in rules, in this order: `model_exfiltration`, `metadata_enumeration`,
/// `jailbreak_long_generation`, `excessive_requests`, `endpoint_scan`.
pub(crate) fn default_rules() -> Vec<RuleConfig> {
    vec![
        model_exfiltration(),
        metadata_enumeration(),
        jailbreak_long_generation(),
        excessive_requests(),
        endpoint_scan(),
    ]
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// ESCU "Ollama Possible Model Exfiltration Data Leakage"
/// (`c9fd1a54-0eab-4470-8970-d5fcc3c740fb`, T1048), exactly the seed rule (docs/seed-rule.md).
///
/// - `paths = ["*"]`: the SPL has no path filter (`stats ... by _time, src, uri_path` over
///   every `[GIN]` line).
/// - `min_latency = "55s"`: the SPL's `where response_time > 55`, strict. Unlike the SPL,
///   latencies are exact here, so 60 s and longer count too (the SPL's regex only sees the
///   `NN.NNNs` form, i.e. 55 s < latency < 60 s).
/// - `group_by = "src_path"`: `by src, uri_path`.
/// - `window = "15m"`, tumbling: `bin _time span=15m`, epoch-aligned.
/// - `threshold = 1`: the SPL keeps every row, so one slow request already flags the key.
/// - `severity_by = "avg_latency"`, high > 50 s, medium > 40 s: the SPL's `case()` on the
///   rounded average (always "high" in practice, since every counted request is > 55 s).
/// - `attack_type = "Potential Data Exfiltration"`: the SPL's `eval attack_type`.
pub(crate) fn model_exfiltration() -> RuleConfig {
    RuleConfig {
        name: "model_exfiltration".into(),
        escu_id: Some("c9fd1a54-0eab-4470-8970-d5fcc3c740fb".into()),
        attack_type: "Potential Data Exfiltration".into(),
        mitre: Some("T1048".into()),
        min_latency: "55s".into(),
        severity_high: Some(Cutoff::Text("50s".into())),
        severity_medium: Some(Cutoff::Text("40s".into())),
        ..RuleConfig::default()
    }
}

/// Repeated model-metadata queries from one source: what the seed's description ("adversaries
/// repeatedly query /api/show, /api/tags, and /api/v1/models ... within a 15-minute window")
/// describes but its search never checks. Not an ESCU search, so no `escu_id`.
///
/// - `paths`: `/api/show`, `/api/tags`, `/api/ps`, and the OpenAI-compatible listing
///   `/v1/models`, `/v1/models/*` (the description's `/api/v1/models` is not an Ollama route).
/// - `min_latency = "0s"`: these calls are fast; the count is the signal, not the latency.
/// - `group_by = "src"`: enumeration spreads over several endpoints; counting them together
///   catches a client that alternates `/api/tags` and `/api/show`.
/// - `window = "15m"`, sliding: the description's 15-minute window, sliding so a burst
///   straddling a quarter-hour boundary is not split in two.
/// - `threshold = 100`: well above a UI or dashboard polling the model list (a poll every
///   10 s is 90 calls in 15 minutes), far below a scripted dump of every model's Modelfile.
/// - severity by count, high > 500, medium > 200: five and two times the threshold.
/// - `mitre = "T1048"`: the seed's technique; the harvested metadata is what leaks.
pub(crate) fn metadata_enumeration() -> RuleConfig {
    RuleConfig {
        name: "metadata_enumeration".into(),
        attack_type: "Model Metadata Enumeration".into(),
        mitre: Some("T1048".into()),
        paths: strings(&[
            "/api/show",
            "/api/tags",
            "/api/ps",
            "/v1/models",
            "/v1/models/*",
        ]),
        group_by: "src".into(),
        window_kind: "sliding".into(),
        threshold: 100,
        severity_by: "count".into(),
        severity_high: Some(Cutoff::Count(500)),
        severity_medium: Some(Cutoff::Count(200)),
        ..RuleConfig::default()
    }
}

/// ESCU "Ollama Suspicious Prompt Injection Jailbreak"
/// (`aac5df6f-9151-4da6-bdb2-5691aa6e376f`, T1190 and T1059).
///
/// - `paths = ["/api/generate", "/v1/chat/completions"]`: the search's filter terms (its
///   description also names `/api/chat`, which the search does not look for).
/// - `min_latency = "30s"`: `where response_time_seconds > 30`, strict.
/// - `group_by = "src"`: `stats ... by _time, src, host`.
/// - `window = "10m"`, tumbling: `bin _time span=10m`.
/// - `threshold = 171`: `where long_request_count > 170`.
/// - severity by count, high > 50, medium > 20: the SPL grades `count > 50` "critical",
///   `> 20` "high", else "medium"; this engine's scale tops out at "high", so each SPL level
///   maps one step down. Since a flagged key always has more than 170 requests, the SPL
///   always says "critical" and this rule always says "high". (The SPL's alternative
///   `max_response_time > 55` trigger cannot change the outcome for the same reason.)
/// - `attack_type = "Potential Prompt Injection / Jailbreak"`: the SPL's `eval attack_type`.
pub(crate) fn jailbreak_long_generation() -> RuleConfig {
    RuleConfig {
        name: "jailbreak_long_generation".into(),
        escu_id: Some("aac5df6f-9151-4da6-bdb2-5691aa6e376f".into()),
        attack_type: "Potential Prompt Injection / Jailbreak".into(),
        mitre: Some("T1190,T1059".into()),
        paths: strings(&["/api/generate", "/v1/chat/completions"]),
        min_latency: "30s".into(),
        group_by: "src".into(),
        window: "10m".into(),
        threshold: 171,
        severity_by: "count".into(),
        severity_high: Some(Cutoff::Count(50)),
        severity_medium: Some(Cutoff::Count(20)),
        ..RuleConfig::default()
    }
}

/// ESCU "Ollama Excessive API Requests" (`1cfab663-9adc-4169-a88c-6bae29ba3c70`, T1498).
///
/// - `paths = ["*"]`, `min_latency = "0s"`: every `[GIN]` line counts.
/// - `group_by = "src"`: the SPL groups `by _time, src, dest, host`, where `dest` is the
///   CIM destination (the Ollama server), so per source in practice.
/// - `window = "5m"`, tumbling: `bin _time span=5m`.
/// - `threshold = 121`: `where request_count > 120`.
/// - severity by count with both cut-offs at 120: every flagged key is "high", the SPL's
///   constant `eval severity="high"`.
/// - `attack_type = "Rate Limit Abuse / DDoS"`: the SPL's `eval attack_type`.
///
/// The SPL's client-IP regex only matches dotted IPv4; this rule counts IPv6 sources too.
pub(crate) fn excessive_requests() -> RuleConfig {
    RuleConfig {
        name: "excessive_requests".into(),
        escu_id: Some("1cfab663-9adc-4169-a88c-6bae29ba3c70".into()),
        attack_type: "Rate Limit Abuse / DDoS".into(),
        mitre: Some("T1498".into()),
        group_by: "src".into(),
        window: "5m".into(),
        threshold: 121,
        severity_by: "count".into(),
        severity_high: Some(Cutoff::Count(120)),
        severity_medium: Some(Cutoff::Count(120)),
        ..RuleConfig::default()
    }
}

/// ESCU "Ollama Possible API Endpoint Scan Reconnaissance"
/// (`ad3f352a-0347-48ee-86b9-670b5025a548`, T1595).
///
/// Despite its name, the published search counts *all* requests per source, not distinct
/// endpoints (`stats count as total_requests, values(dest) ... by _time, src, host | where
/// total_requests > 120`; `values(dest)` is only displayed). This rule reproduces that
/// honestly, which makes it fire together with `excessive_requests`; operators who want a
/// distinct-path scan detector can narrow `paths` or raise the threshold.
///
/// - `paths = ["*"]`, `min_latency = "0s"`: every `[GIN]` line.
/// - `group_by = "src"`, `window = "5m"` tumbling: `bin _time span=5m ... by src`.
/// - `threshold = 121`: `where total_requests > 120`.
/// - severity by count, high > 4294967295 (unreachable), medium > 120: every flagged key is
///   "medium", the SPL's constant `eval severity="medium"`.
/// - `attack_type = "API Activity Surge"`: the SPL's `eval attack_type`.
pub(crate) fn endpoint_scan() -> RuleConfig {
    RuleConfig {
        name: "endpoint_scan".into(),
        escu_id: Some("ad3f352a-0347-48ee-86b9-670b5025a548".into()),
        attack_type: "API Activity Surge".into(),
        mitre: Some("T1595".into()),
        group_by: "src".into(),
        window: "5m".into(),
        threshold: 121,
        severity_by: "count".into(),
        severity_high: Some(Cutoff::Count(i64::from(u32::MAX))),
        severity_medium: Some(Cutoff::Count(120)),
        ..RuleConfig::default()
    }
}
