//! The built-in rule set, used when the config file has no `[[rule]]` (README, "Detection rules").
//!
//! Four rules mirror published Splunk ESCU detections of the "Suspicious Ollama Activities"
//! story (splunk/security_content, `detections/application/ollama_*.yml`, author Rod Soto,
//! 2025-10-05); one (`metadata_enumeration`) implements what the seed rule's *description*
//! promises but its search never checks; one (`bulk_generation`) is a volume rule of our own
//! against output harvesting (distillation); one (`auth_failures`) stops credential sprays
//! against `[auth]`. Each function documents every parameter and the
//! reason for it, including where the product deliberately differs from the SPL.
//!
//! # Block-safe defaults
//! Every built-in carries its own `action`, chosen by its false-positive profile, so that
//! `mode = "block"` with the built-in set bans only what an innocent client cannot trip:
//! `excessive_requests` and `auth_failures` ban (`block`); the others log (`log`) until an operator opts in
//! with `[rules.NAME] action = "block"`. Rules written with `[[rule]]` keep `action = ""`
//! (follow the mode): an operator's own rule is meant to ban in block mode.

use super::rule::{Cutoff, RuleConfig};

/// The built-in rules, in this order: `model_exfiltration`, `metadata_enumeration`,
/// `jailbreak_long_generation`, `excessive_requests`, `endpoint_scan`, `bulk_generation`,
/// `auth_failures`.
pub(crate) fn default_rules() -> Vec<RuleConfig> {
    vec![
        model_exfiltration(),
        metadata_enumeration(),
        jailbreak_long_generation(),
        excessive_requests(),
        endpoint_scan(),
        bulk_generation(),
        auth_failures(),
    ]
}

/// One MiB.
const MIB: i64 = 1024 * 1024;

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
/// - `action = "log"`, even in block mode: the only signal is one request slower than 55 s,
///   and a minute-long chat on a CPU-only box, a long `/api/pull` or a model load is
///   ordinary. Banning on it would lock out innocent users.
/// - `risk_score = 20`: the ESCU rule's own `rba` score: one slow request is weak evidence
///   alone, so five windows (or this plus a stronger signal) reach Splunk ES's default risk
///   threshold of 100.
pub(crate) fn model_exfiltration() -> RuleConfig {
    RuleConfig {
        name: "model_exfiltration".into(),
        escu_id: Some("c9fd1a54-0eab-4470-8970-d5fcc3c740fb".into()),
        attack_type: "Potential Data Exfiltration".into(),
        mitre: Some("T1048".into()),
        min_latency: "55s".into(),
        severity_high: Some(Cutoff::Text("50s".into())),
        severity_medium: Some(Cutoff::Text("40s".into())),
        action: "log".into(),
        risk_score: Some(20),
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
/// - `action = "log"`: several browser tabs of a UI (or several users behind one NAT) each
///   polling `/api/tags` and `/api/ps` pass 100 in 15 minutes, and what is read is
///   low-value metadata; a scripted dump fast enough to matter also trips
///   `excessive_requests`, which bans.
/// - `risk_score = 15`: reconnaissance of low-value metadata that a polling UI can trip;
///   lower than the seed rule's 20, so it only matters next to other findings.
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
        action: "log".into(),
        risk_score: Some(15),
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
/// - `action = "log"`, even in block mode: latency is its only signal, and on a CPU box or
///   with a large model every ordinary chat takes more than 30 s; a busy team behind one
///   NAT reaches 171 of them in 10 minutes without any jailbreak.
/// - `risk_score = 25`: a step above the seed rule (171 long generations in 10 minutes is
///   more than one slow request) but still latency-only evidence.
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
        action: "log".into(),
        risk_score: Some(25),
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
/// - severity by count with both cut-offs at 0: every flagged key is "high", the SPL's
///   constant `eval severity="high"`, whatever `threshold` an operator tunes it to.
/// - `attack_type = "Rate Limit Abuse / DDoS"`: the SPL's `eval attack_type`.
///
/// The SPL's client-IP regex only matches dotted IPv4; this rule counts IPv6 sources too.
///
/// `action = "block"` (bans in block mode; in monitor mode nothing bans): more than 120
/// requests in 5 minutes is a sustained 0.4 requests per second, above what a person at a
/// chat UI or an IDE assistant sends (a busy interactive session stays well below 100), and
/// the flood it catches is the harm itself. Batch pipelines (embedding a corpus) legitimately
/// exceed it: allowlist them, or set `[rules.excessive_requests] action = "log"`.
/// - `risk_score = 40`: a flood that this rule bans; twice the seed rule, since a count over
///   120 in 5 minutes is hard to trip by accident, yet it is abuse, not theft.
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
        severity_high: Some(Cutoff::Count(0)),
        severity_medium: Some(Cutoff::Count(0)),
        action: "block".into(),
        risk_score: Some(40),
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
/// - severity by count, high > 4294967295 (unreachable), medium > 0: every flagged key is
///   "medium", the SPL's constant `eval severity="medium"`, whatever `threshold` an operator
///   tunes it to.
/// - `attack_type = "API Activity Surge"`: the SPL's `eval attack_type`.
/// - `action = "log"`: it counts exactly what `excessive_requests` counts, so it fires on
///   the same burst; that rule already bans it, and a second ban decision for one burst
///   would add nothing but a second escalation step.
/// - `risk_score = 30`: reconnaissance that precedes an attack; more telling than the
///   latency rules, less than a flood or a spray.
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
        severity_medium: Some(Cutoff::Count(0)),
        action: "log".into(),
        risk_score: Some(30),
        ..RuleConfig::default()
    }
}

/// Bulk generation from one source: output harvesting for distillation, measured in bytes
/// sent. Not an ESCU search (gin logs no sizes, so Splunk cannot run it); proxy-only.
///
/// - `metric = "bytes_out"`: response body bytes written to the client.
/// - `paths`: every generation route — `/api/generate`, `/api/chat`, `/v1/chat/completions`,
///   `/v1/completions`, `/v1/responses`, `/v1/messages`, `/v1/audio/transcriptions` (Ollama
///   answers a transcription with its chat handler: the text is generated output too).
/// - `group_by = "src"`: a harvest spreads over routes and prompts; the source is the actor.
/// - `window = "15m"`, sliding: long enough to integrate a harvest, sliding so a run across
///   a quarter-hour boundary is not split in two.
/// - `threshold_bytes = 32 MiB` (33 554 432). A streamed NDJSON token line is about 100–150
///   bytes (the JSON envelope dominates; SSE chunks of the OpenAI routes are larger). A heavy
///   legitimate user produces about 100 000 tokens in 15 minutes: 100 000 × 150 B = 15 MB,
///   under half the threshold. The threshold is 32 MiB / 130 B ≈ 258 000 tokens in 15
///   minutes (≈ 290 tokens/s sustained, several parallel streams on a GPU box); a
///   distillation harvest of millions of tokens crosses it within its first quarter (1 M
///   tokens × 130 B = 130 MB). Limits: a harvest with `"stream": false` sends ≈ 5–6 bytes
///   per token (the text alone), ≈ 25× less, and one slower than ≈ 290 tokens/s stays
///   under it; lower `threshold_bytes` where generation is that slow.
/// - severity by bytes: high > 128 MiB (≈ 1 M streamed tokens), medium > 64 MiB.
/// - `action = "log"`: new and tuned from arithmetic, not from field data; a legitimate
///   batch job (synthetic data, evaluation runs) can produce this volume. Opt in with
///   `[rules.bulk_generation] action = "block"`.
/// - `mitre = "T1048"`: the generated output is what leaves.
/// - `risk_score = 50`: 32 MiB of generated output in 15 minutes is a direct measure of
///   harvesting (distillation), the model's value leaving as text; two such windows reach
///   the default risk threshold.
pub(crate) fn bulk_generation() -> RuleConfig {
    RuleConfig {
        name: "bulk_generation".into(),
        attack_type: "Bulk Generation / Distillation".into(),
        mitre: Some("T1048".into()),
        paths: strings(&[
            "/api/generate",
            "/api/chat",
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/responses",
            "/v1/messages",
            "/v1/audio/transcriptions",
        ]),
        group_by: "src".into(),
        window_kind: "sliding".into(),
        metric: "bytes_out".into(),
        threshold_bytes: Some(32 * MIB),
        severity_by: "bytes".into(),
        severity_high: Some(Cutoff::Count(128 * MIB)),
        severity_medium: Some(Cutoff::Count(64 * MIB)),
        action: "log".into(),
        risk_score: Some(50),
        ..RuleConfig::default()
    }
}

/// Requests refused for a missing or wrong API key (401), from one source: a credential
/// spray or a scanner. Not an ESCU search; our own, in the spirit of fail2ban's `sshd` jail.
///
/// Only the `[auth]` layer answers 401 (Ollama itself does not), so without `[auth]` this
/// rule sees nothing. Keys are 256-bit random values: guessing one is hopeless, so unlike
/// fail2ban (`maxretry = 5` in `findtime = 10m`, tuned against password guessing) the rule
/// does not protect the keys. It stops what a spray costs: CPU spent refusing it and
/// detection/access logs filled with it.
///
/// - `status = [401]`: the refusals of a missing or unknown key; a 403 (a valid key
///   without the role a route needs) is a caller we know, not a spray. Requests refused by
///   `[auth]` count for no rule without a `status` list, so they feed only this one.
/// - `paths = ["*"]`, `min_latency = "0s"`: a spray hits whatever route it likes.
/// - `group_by = "src"`: a spray carries no valid key, hence no identity; the address is
///   all there is.
/// - `window = "10m"`, sliding: fail2ban's `findtime`; sliding so a spray across a boundary
///   is not split in two.
/// - `threshold = 60`: one refusal every 10 s sustained for 10 minutes. A legitimate client
///   left with a stale key that polls `/api/tags` every 30 s fails 20 times in 10 minutes,
///   three times below it; a spray or a scanner (many per second) crosses it within its first
///   minute.
/// - severity by count, high > 1200 (2 per second for 10 minutes), medium > 240 (four times
///   the threshold): the summary's count says how hard the source kept trying.
/// - `mitre = "T1110"`: Brute Force (credential spraying is T1110.003).
/// - `action = "block"`: no valid user gets 401s at that rate; a client retrying a stale key
///   faster than every 10 s (or several such clients behind one NAT) would be banned, and
///   its requests were failing anyway. Limit: a spray rotating its source addresses (a
///   botnet, IPv6 privacy addresses beyond the `ipv6_prefix` group) stays under the
///   threshold per source; the per-source connection limits are the answer to that.
/// - `risk_score = 60`: a credential spray is unambiguous (60 refused keys in 10 minutes
///   is no typo) and is the step before an authenticated theft.
pub(crate) fn auth_failures() -> RuleConfig {
    RuleConfig {
        name: "auth_failures".into(),
        attack_type: "Credential Spray / Unauthorized Access".into(),
        mitre: Some("T1110".into()),
        status: vec![401],
        group_by: "src".into(),
        window: "10m".into(),
        window_kind: "sliding".into(),
        threshold: 60,
        severity_by: "count".into(),
        severity_high: Some(Cutoff::Count(1200)),
        severity_medium: Some(Cutoff::Count(240)),
        action: "block".into(),
        risk_score: Some(60),
        ..RuleConfig::default()
    }
}

/// The `risk_message` template of a rule's `detection` events (risk-based alerting):
/// `$field$` is replaced by the event's field of that name (`-` when the event has none).
/// Built-in rules, and operator rules that reuse a built-in's name, get their own sentence;
/// other rules a generic one. The ESCU seed's is "Potential model data exfiltration detected
/// from $src$ with $avg_response_time$ ...".
pub(crate) fn risk_message_template(rule: &str) -> &'static str {
    match rule {
        "model_exfiltration" => {
            "Potential model data exfiltration detected from $src$ with $avg_response_time$ \
             seconds average response time on $uri_path$"
        }
        "metadata_enumeration" => {
            "Model metadata enumeration from $src$: $count$ metadata queries since $window_start$"
        }
        "jailbreak_long_generation" => {
            "Possible prompt injection or jailbreak from $src$: $count$ long generations \
             since $window_start$, longest $max_response_time$ seconds"
        }
        "excessive_requests" => {
            "Excessive API requests from $src$: $count$ requests since $window_start$"
        }
        "endpoint_scan" => {
            "Possible API endpoint scan from $src$: $count$ requests since $window_start$"
        }
        "bulk_generation" => {
            "Bulk generation (possible distillation) by $src$: $bytes$ bytes of model output \
             since $window_start$"
        }
        "auth_failures" => {
            "API key spray from $src$: $count$ requests refused for a missing or unknown key \
             since $window_start$"
        }
        _ => {
            "$attack_type$ detected from $risk_object$ by rule $rule$: $count$ requests since \
             $window_start$"
        }
    }
}
