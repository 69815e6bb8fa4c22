//! Metrics, the access log and log reopening, through a running stack.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use ollama_guard::config::ServeArgs;
use ollama_guard::gin::{parse_gin_line, splunk::splunk_extract};

async fn traffic(s: &Stack) {
    get(&format!("{}/api/tags", s.proxy)).await;
    get(&format!("{}/api/%74ags?x=1", s.proxy)).await;
    get(&format!("{}/random/path/123", s.proxy)).await;
    send(
        Method::POST,
        &format!("{}/api/show", s.proxy),
        &[("authorization", "Bearer sk-secret-token")],
        r#"{"model":"llama3.2"}"#,
    )
    .await;
    send(Method::HEAD, &format!("{}/", s.proxy), &[], Bytes::new()).await;
}

#[tokio::test]
async fn metrics_pass_promtool_and_labels_stay_bounded() {
    let s = stack().await;
    traffic(&s).await;
    let text = get(&format!("{}/metrics", s.admin)).await.text();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(!l.contains("127.0.0.1"), "client IP in a label: {l}");
        assert!(
            !l.contains("random") && !l.contains("%74") && !l.contains("x=1"),
            "raw path in a label: {l}"
        );
    }
    let tags = r#"ollama_guard_requests_total{method="GET",outcome="forwarded",route="/api/tags",status_class="2xx"}"#;
    assert_eq!(
        metric(&s.admin, tags).await,
        2.0,
        "the percent-encoded path counts as /api/tags"
    );
    let other = r#"ollama_guard_requests_total{method="GET",outcome="forwarded",route="other",status_class="4xx"}"#;
    assert_eq!(metric(&s.admin, other).await, 1.0);
    assert_eq!(
        metric(
            &s.admin,
            r#"ollama_guard_request_duration_seconds_count{route="/api/show"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&s.admin, "ollama_guard_in_flight_requests").await,
        0.0
    );

    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is required for this test (apt-get install prometheus): {e}")
        });
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool reported: {report}"
    );
}

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let s = stack().await;
    assert_eq!(
        get(&format!("{}/healthz", s.admin)).await.status,
        StatusCode::OK
    );
    let mut ready = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        ready = get(&format!("{}/readyz", s.admin)).await.status;
        if ready == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(ready, StatusCode::OK);
}

#[tokio::test]
async fn readyz_is_503_when_the_upstream_is_down() {
    let dead = loopback().await;
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let server = ollama_guard::serve::Server::start(
        config(&url, &dir, ServeArgs::default(), ""),
        loopback().await,
        loopback().await,
    )
    .await
    .unwrap();
    let r = get(&format!("http://{}/readyz", server.admin_addr)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn gin_access_lines_parse_like_ollamas_own_and_never_hold_credentials() {
    let s = stack().await;
    traffic(&s).await;
    let server = s.server;
    let log = s.dir.path().join("access.log");
    server.shutdown().await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("sk-secret-token") && !text.contains("Bearer"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    let expect = [
        ("200", "GET", "/api/tags"),
        ("200", "GET", "/api/tags?x=1"),
        ("404", "GET", "/random/path/123"),
        ("200", "POST", "/api/show"),
        ("200", "HEAD", "/"),
    ];
    for (line, (status, method, path)) in lines.iter().zip(expect) {
        let parsed = parse_gin_line(line.as_bytes()).unwrap();
        assert_eq!(parsed.status.to_string(), status);
        assert_eq!(parsed.method, method);
        assert_eq!(parsed.path, path);
        assert_eq!(parsed.client_ip.to_string(), "127.0.0.1");
        // The seed rule's regex sees the same fields in our lines as in Ollama's, except that
        // sub-millisecond latencies are written in ms/µs (which the regex cannot match, as
        // with Ollama's own lines).
        if let Some(f) = splunk_extract(line) {
            assert_eq!(
                (f.status_code, f.src_ip, f.http_method, f.uri_path),
                (status, "127.0.0.1", method, path)
            );
        } else {
            assert!(
                parsed.latency_text.ends_with("ms") || parsed.latency_text.ends_with("µs"),
                "{line}"
            );
        }
        assert!(line.starts_with("[GIN] "));
    }
}

#[tokio::test]
async fn json_access_log_has_one_object_per_request() {
    let args = ServeArgs {
        access_log_format: Some("json".into()),
        ..ServeArgs::default()
    };
    let s = stack_with(args, "").await;
    get(&format!("{}/api/tags?x=1", s.proxy)).await;
    let server = s.server;
    let log = s.dir.path().join("access.log");
    server.shutdown().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["src"], "127.0.0.1");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["uri"], "/api/tags?x=1");
    assert_eq!(v["path"], "/api/tags");
    assert_eq!(v["route"], "/api/tags");
    assert_eq!(v["status"], 200);
    assert_eq!(v["outcome"], "forwarded");
    assert!(v["duration_seconds"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn reopen_logs_follows_logrotate() {
    let s = stack().await;
    get(&format!("{}/api/version", s.proxy)).await;
    let log = s.dir.path().join("access.log");
    let rotated = s.dir.path().join("access.log.1");
    eventually(|| {
        std::fs::read_to_string(&log)
            .map(|t| t.lines().count() == 1)
            .unwrap_or(false)
    })
    .await;
    std::fs::rename(&log, &rotated).unwrap();
    s.server.reopen_logs();
    get(&format!("{}/api/ps", s.proxy)).await;
    let server = s.server;
    server.shutdown().await;
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("\"/api/version\""));
    let fresh = std::fs::read_to_string(&log).unwrap();
    assert_eq!(fresh.lines().count(), 1);
    assert!(fresh.contains("\"/api/ps\""));
}

#[tokio::test]
async fn build_info_carries_the_version_and_the_git_revision() {
    let s = stack().await;
    let rev = expected_revision();
    assert!(
        rev == "unknown" || (rev.len() == 12 && rev.bytes().all(|b| b.is_ascii_hexdigit())),
        "{rev}"
    );
    let series = format!(
        r#"ollama_guard_build_info{{revision="{rev}",version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(metric(&s.admin, &series).await, 1.0);
    assert_eq!(ollama_guard::REVISION, rev);
}

/// `getconf CLK_TCK`: the clock ticks `/proc/self/stat` counts in.
fn clock_ticks() -> u64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn process_metrics_describe_this_process() {
    let s = stack().await;
    let text = get(&format!("{}/metrics", s.admin)).await.text();
    for family in [
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_virtual_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
        "# TYPE process_max_fds gauge",
        "# TYPE process_start_time_seconds gauge",
        "# TYPE process_threads gauge",
    ] {
        assert!(text.contains(family), "missing {family}");
    }
    assert!(
        !text.contains("ollama_guard_process_"),
        "process families keep their standard names"
    );
    // The server runs in this test process: its soft descriptor limit, exactly.
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    assert_eq!(metric(&s.admin, "process_max_fds").await, soft as f64);
    // Start time: boot time + start ticks / CLK_TCK (whole seconds), as the kernel reports.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let start_ticks: u64 = after_comm.split(' ').nth(19).unwrap().parse().unwrap();
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        metric(&s.admin, "process_start_time_seconds").await,
        (btime + start_ticks / clock_ticks()) as f64
    );
    let open = metric(&s.admin, "process_open_fds").await;
    assert!(open >= 3.0 && open <= soft as f64, "{open}");
    assert!(metric(&s.admin, "process_resident_memory_bytes").await > 1_000_000.0);
}

#[tokio::test]
async fn upstream_up_follows_the_readiness_probe() {
    let s = stack_with(
        ServeArgs::default(),
        "[timeouts]\nreadiness_probe = \"100ms\"\n",
    )
    .await;
    let up = metric_eventually(&s.admin, "ollama_guard_upstream_up", 1.0).await;
    assert_eq!(up, 1.0, "a live simulator answers /api/version");
    assert_eq!(
        get(&format!("{}/readyz", s.admin)).await.status,
        StatusCode::OK
    );
    s.sim.shutdown().await;
    let up = metric_eventually(&s.admin, "ollama_guard_upstream_up", 0.0).await;
    assert_eq!(up, 0.0, "the probe fails once the upstream is gone");
    assert_eq!(
        get(&format!("{}/readyz", s.admin)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn upstream_up_is_0_with_a_dead_upstream() {
    let dead = loopback().await;
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let server = ollama_guard::serve::Server::start(
        config(&url, &dir, ServeArgs::default(), ""),
        loopback().await,
        loopback().await,
    )
    .await
    .unwrap();
    let admin = format!("http://{}", server.admin_addr);
    // The first probe runs at start; wait for its verdict (readyz 503), then read the gauge.
    assert_eq!(
        get(&format!("{admin}/readyz")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(metric(&admin, "ollama_guard_upstream_up").await, 0.0);
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn mode_gauge_and_reload_status_follow_reloads() {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guard.toml");
    std::fs::write(&file, "mode = \"monitor\"\n").unwrap();
    let before_start = unix_now();
    let (args, server) = serve_file(&sim.url(), dir.path(), &file).await;
    let after_start = unix_now();
    let admin = format!("http://{}", server.admin_addr);
    let read = |series: &'static str| {
        let admin = admin.clone();
        async move { metric(&admin, series).await }
    };
    const MONITOR: &str = r#"ollama_guard_mode{mode="monitor"}"#;
    const BLOCK: &str = r#"ollama_guard_mode{mode="block"}"#;
    const OK: &str = "ollama_guard_config_last_reload_successful";
    const AT: &str = "ollama_guard_config_last_reload_success_timestamp_seconds";
    assert_eq!((read(MONITOR).await, read(BLOCK).await), (1.0, 0.0));
    assert_eq!(read(OK).await, 1.0, "the start is a successful load");
    let started = read(AT).await;
    assert!(
        (before_start..=after_start).contains(&started),
        "{before_start} <= {started} <= {after_start}"
    );

    std::fs::write(&file, "mode = \"block\"\n").unwrap();
    let before_reload = unix_now();
    server.reload(&args).unwrap();
    let after_reload = unix_now();
    assert_eq!((read(MONITOR).await, read(BLOCK).await), (0.0, 1.0));
    assert_eq!(read(OK).await, 1.0);
    let reloaded = read(AT).await;
    assert!(
        (before_reload..=after_reload).contains(&reloaded) && reloaded >= started,
        "{before_reload} <= {reloaded} <= {after_reload}"
    );

    // A refused reload: the mode and the last success stay, the status drops to 0.
    std::fs::write(&file, "mode = \"loud\"\n").unwrap();
    server.reload(&args).unwrap_err();
    assert_eq!((read(MONITOR).await, read(BLOCK).await), (0.0, 1.0));
    assert_eq!(read(OK).await, 0.0);
    assert_eq!(read(AT).await, reloaded);

    // And back: a good reload to monitor flips the gauge again and clears the failure.
    std::fs::write(&file, "mode = \"monitor\"\n").unwrap();
    server.reload(&args).unwrap();
    assert_eq!((read(MONITOR).await, read(BLOCK).await), (1.0, 0.0));
    assert_eq!(read(OK).await, 1.0);
    server.shutdown().await;
    sim.shutdown().await;
}

/// Every family the admin listener exports under the `ollama_guard_` prefix has a row in the
/// README's metrics table, and every row names an exported family.
#[tokio::test]
async fn readme_metrics_table_lists_every_family() {
    // With the opt-in per-identity family switched on and used, so it is exported too.
    let keys = tempfile::tempdir().unwrap().keep().join("keys.json");
    let toml = format!(
        "[auth]\nmode = \"observe\"\nkeys_file = \"{}\"\nmetrics_by_identity = true\n",
        keys.display()
    );
    let s = stack_with(ServeArgs::default(), &toml).await;
    let made = admin(&s, Method::POST, "/api/keys", r#"{"name":"app"}"#, None).await;
    let key: serde_json::Value = serde_json::from_slice(&made.body).unwrap();
    let auth = format!("Bearer {}", key["key"].as_str().unwrap());
    send(
        Method::GET,
        &format!("{}/api/tags", s.proxy),
        &[("authorization", &auth)],
        "",
    )
    .await;
    metric_eventually(
        &s.admin,
        r#"ollama_guard_identity_requests_total{identity="app"}"#,
        1.0,
    )
    .await;
    let text = get(&format!("{}/metrics", s.admin)).await.text();
    let mut exported: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ollama_guard_"))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    exported.sort();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("\n## Metrics\n").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    let mut documented: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| !n.starts_with("process_"))
        .map(str::to_owned)
        .collect();
    documented.sort();
    assert_eq!(documented, exported);
}
