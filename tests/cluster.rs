//! `[cluster]` end to end: three guard replicas sharing one real `redis-server` (started per
//! test on a free loopback port, no persistence, killed on drop).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::process::free_port;
use common::*;
use http::{Method, StatusCode};
use ollama_guard::config::ServeArgs;
use serde_json::Value;
use tempfile::TempDir;

/// A `redis-server` on a free port; killed (SIGKILL) on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    password: Option<String>,
}

impl Redis {
    fn start(password: Option<&str>) -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            password: password.map(str::to_owned),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        self.child = Some(cmd.spawn().expect("redis-server must be installed"));
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command through `redis-cli --raw`: its output lines.
    fn cli(&self, args: &[&str]) -> Vec<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .expect("redis-cli must be installed");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

const RULE: &str = r#"
mode = "block"
[[rule]]
name = "tags_burst"
escu_id = "c9fd1a54-0eab-4470-8970-d5fcc3c740fb"
mitre = "T1048"
attack_type = "Potential Data Exfiltration"
paths = ["/api/tags"]
window = "1h"
threshold = 6
severity_high = "50s"
severity_medium = "40s"
"#;

/// The tumbling window of `RULE`.
const HOUR: Duration = Duration::from_secs(3600);

fn cluster_file(url: &str, id: &str) -> String {
    format!("{RULE}\n[cluster]\nredis_url = \"{url}\"\ninstance_id = \"{id}\"\nsync_interval = \"100ms\"\n")
}

async fn replicas(url: &str, n: usize) -> Vec<Stack> {
    let mut out = Vec::new();
    for i in 0..n {
        let id = format!("guard-{}", (b'a' + u8::try_from(i).unwrap()) as char);
        out.push(stack_with(ServeArgs::default(), &cluster_file(url, &id)).await);
    }
    for s in &out {
        assert_eq!(
            metric_eventually(&s.admin, "ollama_guard_cluster_connected", 1.0).await,
            1.0
        );
    }
    out
}

fn all_events(stacks: &[Stack], kind: &str) -> Vec<Value> {
    stacks
        .iter()
        .flat_map(|s| events(&s.detection_log()))
        .filter(|e| e["event"] == kind)
        .collect()
}

async fn wait_all(stacks: &[Stack], pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..250 {
        let ev: Vec<Value> = stacks
            .iter()
            .flat_map(|s| events(&s.detection_log()))
            .collect();
        if pred(&ev) {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("expected events never appeared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_spread_over_three_replicas_is_detected_once_at_the_threshold() {
    let redis = Redis::start(None);
    let stacks = replicas(&redis.url(), 3).await;
    clear_of_window_end(HOUR, Duration::from_secs(60)).await;
    // 5 requests: under the threshold of 6, on every replica and merged.
    tags_round_robin(&stacks, "127.0.0.7", 0, 5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(all_events(&stacks, "detection").is_empty());
    // The sixth (2 on each replica, this one on the third): the merged count reaches 6.
    tags_round_robin(&stacks, "127.0.0.7", 5, 1).await;
    let ev = wait_all(&stacks, |ev| ev.iter().any(|e| e["event"] == "detection")).await;
    let _ = ev;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let detections = all_events(&stacks, "detection");
    assert_eq!(detections.len(), 1, "{detections:#?}");
    let d = &detections[0];
    assert_eq!(d["rule"], "tags_burst");
    assert_eq!(d["src"], "127.0.0.7");
    assert_eq!(d["count"], 6);
    assert_eq!(d["action"], "banned");
    let start = d["window_start"].as_str().unwrap();
    assert!(start.ends_with(":00:00.000Z"), "{start}");
    // The ban of the detecting replica is in force on all three.
    for s in &stacks {
        assert!(version_status_within_1s(s, "127.0.0.7", StatusCode::FORBIDDEN).await);
    }
    let ev = wait_all(&stacks, |ev| {
        ev.iter().filter(|e| e["event"] == "ban").count() >= 3
    })
    .await;
    let bans: Vec<&Value> = ev.iter().filter(|e| e["event"] == "ban").collect();
    assert_eq!(bans.len(), 3, "{bans:#?}");
    assert_eq!(bans.iter().filter(|b| b.get("origin").is_none()).count(), 1);
    for s in &stacks {
        assert_detection_log_valid(&s.detection_log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_ban_and_unban_on_one_replica_apply_on_the_others_and_offences_escalate() {
    let redis = Redis::start(None);
    let stacks = replicas(&redis.url(), 3).await;
    ban_through(
        &stacks[0],
        r#"{"src":"127.0.0.9","duration":"10m","reason":"test"}"#,
    )
    .await;
    assert!(version_status_within_1s(&stacks[1], "127.0.0.9", StatusCode::FORBIDDEN).await);
    assert!(version_status_within_1s(&stacks[2], "127.0.0.9", StatusCode::FORBIDDEN).await);
    // Listed on every replica, with the same end.
    let lists: Vec<Value> = futures_list(&stacks).await;
    assert_eq!(lists[0], lists[1]);
    assert_eq!(lists[1], lists[2]);
    unban_through(&stacks[2], "127.0.0.9").await;
    assert!(version_status_within_1s(&stacks[0], "127.0.0.9", StatusCode::OK).await);
    assert!(version_status_within_1s(&stacks[1], "127.0.0.9", StatusCode::OK).await);
    // A second ban, through replica B, is offence 2: A's first counted.
    let r = ban_through(
        &stacks[1],
        r#"{"src":"127.0.0.9","duration":"10m","reason":"again"}"#,
    )
    .await;
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["offence"], 2, "{body}");
    let ev = wait_all(&stacks[2..], |ev| {
        ev.iter().filter(|e| e["event"] == "ban").count() == 2
    })
    .await;
    let bans: Vec<&Value> = ev.iter().filter(|e| e["event"] == "ban").collect();
    assert_eq!(bans[0]["origin"], "guard-a");
    assert_eq!(bans[1]["origin"], "guard-b");
    assert_eq!(bans[1]["offence"], 2);
    let unbans: Vec<&Value> = ev.iter().filter(|e| e["event"] == "unban").collect();
    assert_eq!(unbans.len(), 1);
    assert_eq!(unbans[0]["ended"], "admin");
}

/// `POST /api/bans` with `body` through `s`'s admin API, which must answer 201.
async fn ban_through(s: &Stack, body: &str) -> Reply {
    let r = admin(s, Method::POST, "/api/bans", body, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r
}

async fn futures_list(stacks: &[Stack]) -> Vec<Value> {
    let mut out = Vec::new();
    for s in stacks {
        let r = admin(s, Method::GET, "/api/bans", "", None).await;
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        out.push(v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_traffic_fails_no_request_and_a_restart_resynchronises() {
    let mut redis = Redis::start(None);
    let stacks = replicas(&redis.url(), 2).await;
    let c = client_from("127.0.0.11");
    let mut failed = 0;
    for i in 0..20 {
        if i == 5 {
            redis.kill();
        }
        let r = call(
            &c,
            Method::GET,
            &format!("{}/api/version", stacks[i % 2].proxy),
            &[],
        )
        .await;
        if r.status != StatusCode::OK {
            failed += 1;
        }
    }
    assert_eq!(failed, 0);
    for s in &stacks {
        assert_eq!(
            metric_eventually(&s.admin, "ollama_guard_cluster_connected", 0.0).await,
            0.0
        );
    }
    // Local mode: a ban on A holds on A; published when Redis is back.
    ban_through(&stacks[0], r#"{"src":"127.0.0.12","duration":"10m"}"#).await;
    assert!(version_status_within_1s(&stacks[0], "127.0.0.12", StatusCode::FORBIDDEN).await);
    redis.spawn();
    for s in &stacks {
        // Backoff is at most 5 s.
        for _ in 0..4 {
            if metric_eventually(&s.admin, "ollama_guard_cluster_connected", 1.0).await == 1.0 {
                break;
            }
        }
        assert_eq!(
            metric(&s.admin, "ollama_guard_cluster_connected").await,
            1.0
        );
    }
    assert!(version_status_within_1s(&stacks[1], "127.0.0.12", StatusCode::FORBIDDEN).await);
    assert!(metric(&stacks[0].admin, "ollama_guard_cluster_sync_errors_total").await >= 1.0);
    // Detections resume on merged counts: 6 requests spread over the two replicas.
    clear_of_window_end(HOUR, Duration::from_secs(60)).await;
    tags_round_robin(&stacks, "127.0.0.13", 0, 6).await;
    wait_all(&stacks, |ev| {
        ev.iter()
            .any(|e| e["event"] == "detection" && e["src"] == "127.0.0.13")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d: Vec<Value> = all_events(&stacks, "detection")
        .into_iter()
        .filter(|e| e["src"] == "127.0.0.13")
        .collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["count"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_does_not_hold_up_requests() {
    let redis = Redis::start(None);
    let stacks = replicas(&redis.url(), 2).await;
    // DEBUG SLEEP blocks the whole server for 3 s (beyond the 2 s command timeout).
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    std::io::Write::write_all(&mut raw, b"DEBUG SLEEP 3\r\n").unwrap();
    let c = client_from("127.0.0.21");
    for i in 0..10 {
        let r = tokio::time::timeout(
            Duration::from_secs(1),
            call(
                &c,
                Method::GET,
                &format!("{}/api/version", stacks[i % 2].proxy),
                &[],
            ),
        )
        .await
        .expect("a request waited for Redis");
        assert_eq!(r.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_leaves_the_replica_in_local_mode() {
    let redis = Redis::start(Some("right"));
    let url = format!("redis://:wrong@127.0.0.1:{}", redis.port);
    let s = stack_with(ServeArgs::default(), &cluster_file(&url, "guard-x")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metric(&s.admin, "ollama_guard_cluster_connected").await,
        0.0
    );
    assert!(metric(&s.admin, "ollama_guard_cluster_sync_errors_total").await >= 1.0);
    let r = get(&format!("{}/api/version", s.proxy)).await;
    assert_eq!(r.status, StatusCode::OK);
    // Local enforcement still works.
    ban_through(&s, r#"{"src":"127.0.0.31","duration":"10m"}"#).await;
    assert!(version_status_within_1s(&s, "127.0.0.31", StatusCode::FORBIDDEN).await);
    // The right password through the environment-free URL works.
    let good = format!("redis://:right@127.0.0.1:{}", redis.port);
    let t = stack_with(ServeArgs::default(), &cluster_file(&good, "guard-y")).await;
    assert_eq!(
        metric_eventually(&t.admin, "ollama_guard_cluster_connected", 1.0).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_summary_of_a_shared_detection_is_written_once_with_merged_figures() {
    let redis = Redis::start(None);
    let file = |id: &str| {
        cluster_file(&redis.url(), id)
            .replace("mode = \"block\"", "mode = \"monitor\"")
            .replace("window = \"1h\"", "window = \"2s\"")
            .replace("threshold = 6", "threshold = 3")
    };
    let a = stack_with(ServeArgs::default(), &file("guard-a")).await;
    let b = stack_with(ServeArgs::default(), &file("guard-b")).await;
    let stacks = [a, b];
    for s in &stacks {
        assert_eq!(
            metric_eventually(&s.admin, "ollama_guard_cluster_connected", 1.0).await,
            1.0
        );
    }
    // Start right after a 2 s boundary so all four requests share one window.
    clear_of_window_end(Duration::from_secs(2), Duration::from_millis(1700)).await;
    tags_round_robin(&stacks, "127.0.0.41", 0, 4).await;
    // Window end (≤ 2 s) + the summary grace (5 s) + a sync.
    for _ in 0..60 {
        if !all_events(&stacks, "window_summary").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let detections = all_events(&stacks, "detection");
    let summaries = all_events(&stacks, "window_summary");
    assert_eq!(detections.len(), 1, "{detections:#?}");
    assert_eq!(summaries.len(), 1, "{summaries:#?}");
    assert_eq!(summaries[0]["count"], 4);
    assert_eq!(summaries[0]["window_start"], detections[0]["window_start"]);
    assert_eq!(summaries[0]["action"], "would_block");
}

/// A Redis that wants a password when none is configured answers `NOAUTH`: the message says
/// where the password goes, not only that Redis is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_password_is_named_as_one() {
    let redis = Redis::start(Some("right"));
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = format!(
        "[cluster]\nredis_url = \"redis://127.0.0.1:{}\"\nrequired = true\ninstance_id = \"r\"\n",
        redis.port
    );
    let config = config(&sim.url(), &dir, ServeArgs::default(), &file);
    let Err(e) =
        ollama_guard::serve::Server::start(config, loopback().await, loopback().await).await
    else {
        panic!("started without the password");
    };
    let text = e.to_string();
    assert!(
        text.starts_with(
            "cluster.redis_url: Redis is unreachable and cluster.required = true: Redis requires a \
             password and none was given (put it in cluster.redis_url or \
             OLLAMA_GUARD_REDIS_PASSWORD): NOAUTH"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_cluster_refuses_to_start_without_redis() {
    let port = free_port();
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = format!(
        "[cluster]\nredis_url = \"redis://127.0.0.1:{port}\"\nrequired = true\ninstance_id = \"r\"\n"
    );
    let config = config(&sim.url(), &dir, ServeArgs::default(), &file);
    let Err(e) =
        ollama_guard::serve::Server::start(config, loopback().await, loopback().await).await
    else {
        panic!("started without Redis");
    };
    let text = e.to_string();
    assert!(
        text.starts_with("cluster.redis_url: Redis is unreachable and cluster.required = true: "),
        "{text}"
    );
    // Not required: starts in local mode.
    let file =
        format!("[cluster]\nredis_url = \"redis://127.0.0.1:{port}\"\ninstance_id = \"r\"\n");
    let s = stack_with(ServeArgs::default(), &file).await;
    assert_eq!(
        metric(&s.admin, "ollama_guard_cluster_connected").await,
        0.0
    );
    assert_eq!(
        get(&format!("{}/api/version", s.proxy)).await.status,
        StatusCode::OK
    );
}

/// A sliding rule on `/api/tags` (1-hour window, 4-minute sub-buckets), monitor mode so an
/// attacker keeps being counted after its detection.
const SLIDING_RULE: &str = r#"
mode = "monitor"
[[rule]]
name = "tags_slide"
mitre = "T1048"
attack_type = "Model Metadata Enumeration"
paths = ["/api/tags"]
window = "1h"
window_kind = "sliding"
threshold = 6
"#;

fn sliding_file(url: &str, id: &str, window: &str, threshold: u32) -> String {
    let rule = SLIDING_RULE
        .replace("window = \"1h\"", &format!("window = \"{window}\""))
        .replace("threshold = 6", &format!("threshold = {threshold}"));
    format!("{rule}\n[cluster]\nredis_url = \"{url}\"\ninstance_id = \"{id}\"\nsync_interval = \"100ms\"\n")
}

async fn sliding_replicas(url: &str, n: usize, window: &str, threshold: u32) -> Vec<Stack> {
    let mut out = Vec::new();
    for i in 0..n {
        let id = format!("guard-{}", (b'a' + u8::try_from(i).unwrap()) as char);
        let file = sliding_file(url, &id, window, threshold);
        out.push(stack_with(ServeArgs::default(), &file).await);
    }
    for s in &out {
        assert_eq!(
            metric_eventually(&s.admin, "ollama_guard_cluster_connected", 1.0).await,
            1.0
        );
    }
    out
}

/// `n` calls to `/api/tags` from `who`, round-robin over `stacks` starting at `first`.
async fn tags_round_robin(stacks: &[Stack], who: &str, first: usize, n: usize) {
    let c = client_from(who);
    for i in first..first + n {
        let r = call(
            &c,
            Method::GET,
            &format!("{}/api/tags", stacks[i % stacks.len()].proxy),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
}

fn detections_of(stacks: &[Stack], src: &str) -> Vec<Value> {
    all_events(stacks, "detection")
        .into_iter()
        .filter(|e| e["src"] == src)
        .collect()
}

fn window_secs(e: &Value) -> i64 {
    let t = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(e[k].as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    t("window_end") - t("window_start")
}

/// The sum of a sliding key's sub-bucket counts (its numeric fields) in an `HGETALL` reply.
fn sub_bucket_sum(fields: &[String]) -> u64 {
    fields
        .chunks(2)
        .filter(|p| p.len() == 2 && p[0].parse::<u64>().is_ok())
        .map(|p| p[1].parse::<u64>().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliding_attacker_spread_over_three_replicas_is_detected_once_as_by_one_instance() {
    // One instance, no cluster: the sixth request is detected, count 6.
    let single = stack_with(ServeArgs::default(), SLIDING_RULE).await;
    tags_round_robin(std::slice::from_ref(&single), "127.0.0.51", 0, 6).await;
    let ev = wait_all(std::slice::from_ref(&single), |ev| {
        ev.iter().any(|e| e["event"] == "detection")
    })
    .await;
    let alone: Vec<&Value> = ev.iter().filter(|e| e["event"] == "detection").collect();
    assert_eq!(alone.len(), 1, "{alone:#?}");
    assert_eq!(alone[0]["count"], 6);

    // Three replicas: 5 requests (under the threshold everywhere, merged too), then the
    // sixth: the merged sliding count reaches 6 although no replica saw more than 2.
    let redis = Redis::start(None);
    let stacks = sliding_replicas(&redis.url(), 3, "1h", 6).await;
    tags_round_robin(&stacks, "127.0.0.52", 0, 5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(detections_of(&stacks, "127.0.0.52").is_empty());
    tags_round_robin(&stacks, "127.0.0.52", 5, 1).await;
    wait_all(&stacks, |ev| ev.iter().any(|e| e["event"] == "detection")).await;
    // The episode goes on: more requests on every replica write no second detection.
    tags_round_robin(&stacks, "127.0.0.52", 6, 3).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let d = detections_of(&stacks, "127.0.0.52");
    assert_eq!(d.len(), 1, "{d:#?}");
    for field in ["rule", "count", "action", "http_method", "severity"] {
        assert_eq!(d[0][field], alone[0][field], "{field}");
    }
    assert_eq!(d[0]["rule"], "tags_slide");
    assert_eq!(d[0]["count"], 6);
    assert_eq!(d[0]["action"], "would_block");
    assert_eq!((window_secs(&d[0]), window_secs(alone[0])), (3600, 3600));
    assert!(all_events(&stacks, "window_summary").is_empty());
    // Redis holds the key's sub-buckets (4-minute ones: all 9 requests in one or two), its
    // open episode and its run, expiring one window (plus the 2 × 5 s grace) from now.
    // (`group_by` defaults to source and path.)
    // The rule is named with the digest of its configuration (16 hex digits), the same on
    // every replica that runs it.
    let pattern = "ollama-guard:w:240000:*:tags_slide#*:127.0.0.52/32:/api/tags";
    // The replicas merge their counts every 100 ms: polled until the 9 are in (or 2 s).
    let mut fields = Vec::new();
    let mut key = String::new();
    for _ in 0..100 {
        if let [one] = redis.cli(&["KEYS", pattern]).as_slice() {
            key = one.clone();
            fields = redis.cli(&["HGETALL", &key]);
            if fields.len() > 1 && sub_bucket_sum(&fields) == 9 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `w:SUB_MS:MODE:RULE#DIGEST:SUBJECT:PATH`: the replicas run in monitor mode.
    let digest = key
        .trim_start_matches("ollama-guard:w:240000:monitor:tags_slide#")
        .split(':')
        .next()
        .unwrap_or_default();
    assert!(
        digest.len() == 16 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    let key = key.as_str();
    assert!(fields.len() > 1, "{:?}", redis.cli(&["KEYS", "*"]));
    let pairs: Vec<(&str, u64)> = fields
        .chunks(2)
        .map(|p| (p[0].as_str(), p[1].parse().unwrap()))
        .collect();
    let subs = sub_bucket_sum(&fields);
    let state = |name: &str| pairs.iter().find(|(f, _)| *f == name).map(|(_, v)| *v);
    assert_eq!(
        (subs, state("f"), state("rc")),
        (9, Some(1), Some(9)),
        "{pairs:?}"
    );
    let ttl: u64 = redis.cli(&["PTTL", key])[0].parse().unwrap();
    assert!(ttl > 3_600_000 && ttl <= 3_610_000, "{ttl}");
    for s in &stacks {
        assert_detection_log_valid(&s.detection_log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_under_the_sliding_threshold_across_replicas_is_never_detected() {
    let redis = Redis::start(None);
    let stacks = sliding_replicas(&redis.url(), 3, "1h", 6).await;
    // 5 in all (2 + 2 + 1), several syncs apart: the merged count stays at 5.
    tags_round_robin(&stacks, "127.0.0.53", 0, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    tags_round_robin(&stacks, "127.0.0.53", 3, 2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(all_events(&stacks, "detection").is_empty());
    // Another source's sixth request is its own: still nothing for either.
    tags_round_robin(&stacks, "127.0.0.54", 0, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(all_events(&stacks, "detection").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliding_episode_ends_with_one_merged_summary() {
    // 15 s window, 1 s sub-buckets: the episode ends about 15 s after the burst.
    let redis = Redis::start(None);
    let stacks = sliding_replicas(&redis.url(), 2, "15s", 3).await;
    tags_round_robin(&stacks, "127.0.0.55", 0, 3).await;
    wait_all(&stacks, |ev| ev.iter().any(|e| e["event"] == "detection")).await;
    tags_round_robin(&stacks, "127.0.0.55", 3, 1).await;
    let ev = {
        let mut found = Vec::new();
        for _ in 0..120 {
            found = all_events(&stacks, "window_summary");
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        found
    };
    assert!(!ev.is_empty(), "no window_summary within 30 s");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let detections = all_events(&stacks, "detection");
    let summaries = all_events(&stacks, "window_summary");
    assert_eq!(detections.len(), 1, "{detections:#?}");
    assert_eq!(summaries.len(), 1, "{summaries:#?}");
    assert_eq!(detections[0]["count"], 3);
    assert_eq!(window_secs(&detections[0]), 15);
    assert_eq!(summaries[0]["count"], 4);
    assert_eq!(summaries[0]["window_start"], detections[0]["window_start"]);
    assert_eq!(summaries[0]["src"], "127.0.0.55");
    for s in &stacks {
        assert_detection_log_valid(&s.detection_log());
    }
}

fn volume_file(threshold_bytes: u64) -> String {
    format!(
        "mode = \"monitor\"\n[[rule]]\nname = \"tags_volume\"\npaths = [\"/api/tags\"]\n\
         group_by = \"src\"\nwindow = \"1h\"\nwindow_kind = \"sliding\"\nmetric = \"bytes_out\"\n\
         threshold_bytes = {threshold_bytes}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliding_volume_rule_merges_bytes_across_replicas() {
    // One response's size, from one instance whose threshold is a single byte.
    let single = stack_with(ServeArgs::default(), &volume_file(1)).await;
    tags_round_robin(std::slice::from_ref(&single), "127.0.0.61", 0, 1).await;
    let ev = wait_all(std::slice::from_ref(&single), |ev| {
        ev.iter().any(|e| e["event"] == "detection")
    })
    .await;
    let one = ev.iter().find(|e| e["event"] == "detection").unwrap()["bytes"]
        .as_u64()
        .unwrap();
    assert!(one > 0);
    // Three such responses over two replicas reach a threshold of three.
    let redis = Redis::start(None);
    let mut stacks = Vec::new();
    for id in ["guard-a", "guard-b"] {
        let file = format!(
            "{}\n[cluster]\nredis_url = \"{}\"\ninstance_id = \"{id}\"\nsync_interval = \"100ms\"\n",
            volume_file(3 * one),
            redis.url()
        );
        stacks.push(stack_with(ServeArgs::default(), &file).await);
    }
    for s in &stacks {
        assert_eq!(
            metric_eventually(&s.admin, "ollama_guard_cluster_connected", 1.0).await,
            1.0
        );
    }
    tags_round_robin(&stacks, "127.0.0.62", 0, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(all_events(&stacks, "detection").is_empty());
    tags_round_robin(&stacks, "127.0.0.62", 2, 1).await;
    wait_all(&stacks, |ev| ev.iter().any(|e| e["event"] == "detection")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = all_events(&stacks, "detection");
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        (d[0]["bytes"].as_u64(), d[0]["count"].as_u64()),
        (Some(3 * one), Some(3))
    );
    assert_eq!(d[0]["rule"], "tags_volume");
}

// Identity bans (`[auth]`, bans of an API key name) across the cluster.

/// Runs `ollama-guard ARGS` (off the runtime's threads): exit code and stdout.
async fn guard_cli(args: &[&str]) -> (Option<i32>, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_ollama-guard"))
            .args(&args)
            .env_remove("OLLAMA_GUARD_ADMIN")
            .env_remove("OLLAMA_GUARD_ADMIN_TOKEN")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The config of replica `id`: block mode, `rules`, `[auth] mode = "required"` with the key
/// file in `keys`, `[cluster]` on `url`.
fn keyed_file(url: &str, keys: &std::path::Path, id: &str, rules: &str) -> String {
    format!(
       "mode = \"block\"\n{rules}\n[auth]\nmode = \"required\"\nkeys_file = \"{}\"\n[cluster]\nredis_url = \"{url}\"\ninstance_id = \"{id}\"\nsync_interval = \"100ms\"\n",
       keys.join("keys.json").display()
   )
}

/// `n` replicas with `[auth] mode = "required"` sharing one key file (made on the first
/// through its admin API before the others start, so they load it) with the keys `alice`
/// and `bob`; `rules` adds TOML. Returns the replicas, the key directory (kept alive) and
/// the two `Authorization` values.
async fn keyed_replicas(url: &str, n: usize, rules: &str) -> (Vec<Stack>, TempDir, String, String) {
    let keys = tempfile::tempdir().unwrap();
    let file = |id: &str| keyed_file(url, keys.path(), id, rules);
    let first = stack_with(ServeArgs::default(), &file("guard-a")).await;
    let mut auth = Vec::new();
    for name in ["alice", "bob"] {
        let r = admin(
            &first,
            Method::POST,
            "/api/keys",
            &format!(r#"{{"name":"{name}","role":"user"}}"#),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        auth.push(format!("Bearer {}", v["key"].as_str().unwrap()));
    }
    let mut out = vec![first];
    for i in 1..n {
        let id = format!("guard-{}", (b'a' + u8::try_from(i).unwrap()) as char);
        out.push(stack_with(ServeArgs::default(), &file(&id)).await);
    }
    for s in &out {
        assert_eq!(
            metric_eventually(&s.admin, "ollama_guard_cluster_connected", 1.0).await,
            1.0
        );
    }
    let bob = auth.pop().unwrap();
    let alice = auth.pop().unwrap();
    (out, keys, alice, bob)
}

/// The status of `GET /api/tags` on `s` from `who` with the `Authorization` value `auth`.
async fn tags_status(s: &Stack, who: &str, auth: &str) -> StatusCode {
    call(
        &client_from(who),
        Method::GET,
        &format!("{}/api/tags", s.proxy),
        &[("authorization", auth)],
    )
    .await
    .status
}

/// Whether `s` answers `want` to `auth` from `who` within 1 s.
async fn key_gets_within_1s(s: &Stack, who: &str, auth: &str, want: StatusCode) -> bool {
    for _ in 0..50 {
        if tags_status(s, who, auth).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The `ban` and `unban` lines of `s`'s detection log: (event, identity, origin, offence or
/// ended, rule).
fn identity_changes(s: &Stack) -> Vec<(String, String, String, String, String)> {
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    events(&s.detection_log())
        .iter()
        .filter(|e| e["event"] == "ban" || e["event"] == "unban")
        .map(|e| {
            assert!(
                e.get("src").is_none(),
                "an identity ban names no address: {e}"
            );
            let detail = if e["event"] == "ban" {
                e["offence"].to_string()
            } else {
                text(&e["ended"])
            };
            (
                text(&e["event"]),
                text(&e["identity"]),
                text(&e["origin"]),
                detail,
                text(&e["rule"]),
            )
        })
        .collect()
}

/// One rule that never fires: no built-in rule counts the polling of the identity tests.
const QUIET: &str = "[[rule]]\nname = \"quiet\"\npaths = [\"/api/delete\"]\nthreshold = 1000\n";

fn change(
    event: &str,
    origin: &str,
    detail: &str,
    rule: &str,
) -> (String, String, String, String, String) {
    (
        event.to_owned(),
        "alice".to_owned(),
        origin.to_owned(),
        detail.to_owned(),
        rule.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_ban_and_unban_through_one_replica_apply_on_the_others_and_escalate() {
    let redis = Redis::start(None);
    let (stacks, _keys, alice, bob) = keyed_replicas(&redis.url(), 3, QUIET).await;
    let nat = "127.0.0.60";
    for s in &stacks {
        assert_eq!(tags_status(s, nat, &alice).await, StatusCode::OK);
    }
    ban_through(
        &stacks[0],
        r#"{"src":"identity:alice","duration":"10m","reason":"leaked key"}"#,
    )
    .await;
    // Refused on B and C within 1 s; bob, behind the same address, is still served.
    for s in &stacks[1..] {
        assert!(key_gets_within_1s(s, nat, &alice, StatusCode::FORBIDDEN).await);
        assert_eq!(tags_status(s, nat, &bob).await, StatusCode::OK);
    }
    // Listed alike on every replica (the CLI reads the same API).
    let lists = futures_list(&stacks).await;
    assert_eq!(lists[0], lists[1]);
    assert_eq!(lists[1], lists[2]);
    let list = lists[2].as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["identity"], "alice");
    assert_eq!(list[0]["reason"], "leaked key");
    assert_eq!(list[0]["offence"], 1);
    // Lifted through C's `bans` command: served again on A and B within 1 s.
    let (code, out) = guard_cli(&[
        "bans",
        "remove",
        "identity:alice",
        "--admin",
        &stacks[2].admin,
    ])
    .await;
    assert_eq!((code, out.as_str()), (Some(0), "unbanned identity:alice\n"));
    for s in &stacks[..2] {
        assert!(key_gets_within_1s(s, nat, &alice, StatusCode::OK).await);
    }
    for s in &stacks {
        let r = admin(s, Method::GET, "/api/bans", "", None).await;
        assert_eq!(r.text(), "[]");
    }
    // A second ban, through B, is alice's offence 2 there: A's ban counted cluster-wide.
    let r = ban_through(
        &stacks[1],
        r#"{"src":"identity:alice","duration":"10m","reason":"again"}"#,
    )
    .await;
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["offence"], 2, "{body}");
    assert!(key_gets_within_1s(&stacks[0], nat, &alice, StatusCode::FORBIDDEN).await);
    assert!(key_gets_within_1s(&stacks[2], nat, &alice, StatusCode::FORBIDDEN).await);
    wait_all(&stacks, |ev| {
        ev.iter()
            .filter(|e| e["event"] == "ban" && e["offence"] == 2)
            .count()
            == 3
    })
    .await;
    let none = "null";
    assert_eq!(
        identity_changes(&stacks[0]),
        [
            change("ban", none, "1", "admin"),
            change("unban", none, "admin", "admin"),
            change("ban", "guard-b", "2", "admin"),
        ]
    );
    assert_eq!(
        identity_changes(&stacks[1]),
        [
            change("ban", "guard-a", "1", "admin"),
            change("unban", "guard-a", "admin", "admin"),
            change("ban", none, "2", "admin"),
        ]
    );
    assert_eq!(
        identity_changes(&stacks[2]),
        [
            change("ban", "guard-a", "1", "admin"),
            change("unban", "guard-a", "admin", "admin"),
            change("ban", "guard-b", "2", "admin"),
        ]
    );
    for s in &stacks {
        assert_detection_log_valid(&s.detection_log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_ban_made_by_a_rule_on_one_replica_applies_on_the_others() {
    let redis = Redis::start(None);
    let rule = "[[rule]]\nname = \"per_key_show\"\npaths = [\"/api/show\"]\ngroup_by = \"identity\"\nwindow_kind = \"sliding\"\nthreshold = 3\n";
    let (stacks, _keys, alice, bob) = keyed_replicas(&redis.url(), 3, rule).await;
    let nat = client_from("127.0.0.61");
    let show = format!("{}/api/show", stacks[0].proxy);
    // On A, from one address: alice 3 (the threshold), bob 1.
    for who in [&alice, &bob, &alice, &alice] {
        let r = call(&nat, Method::POST, &show, &[("authorization", who)]).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    wait_events(&stacks[0].detection_log(), |e| {
        e.iter().any(|v| v["event"] == "ban")
    })
    .await;
    for s in &stacks[1..] {
        assert!(key_gets_within_1s(s, "127.0.0.61", &alice, StatusCode::FORBIDDEN).await);
        assert_eq!(tags_status(s, "127.0.0.61", &bob).await, StatusCode::OK);
        let r = admin(s, Method::GET, "/api/bans", "", None).await;
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v[0]["identity"], "alice");
        assert_eq!(v[0]["rule"], "per_key_show");
    }
    // A replica applies a ban it hears of before its log writer writes the line.
    for s in &stacks[1..] {
        wait_events(&s.detection_log(), |e| {
            e.iter().any(|v| v["event"] == "ban")
        })
        .await;
    }
    let detections = all_events(&stacks, "detection");
    assert_eq!(detections.len(), 1, "{detections:#?}");
    assert_eq!(detections[0]["identity"], "alice");
    assert_eq!(detections[0]["count"], 3);
    assert_eq!(
        identity_changes(&stacks[0]),
        [change("ban", "null", "1", "per_key_show")]
    );
    for s in &stacks[1..] {
        assert_eq!(
            identity_changes(s),
            [change("ban", "guard-a", "1", "per_key_show")]
        );
        assert_detection_log_valid(&s.detection_log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_ban_made_during_an_outage_is_published_on_reconnect_and_a_new_replica_takes_it(
) {
    let mut redis = Redis::start(None);
    let (stacks, keys, alice, bob) = keyed_replicas(&redis.url(), 2, QUIET).await;
    let nat = "127.0.0.62";
    redis.kill();
    for s in &stacks {
        assert_eq!(
            metric_eventually(&s.admin, "ollama_guard_cluster_connected", 0.0).await,
            0.0
        );
    }
    // Local mode: the ban holds on A at once, B cannot know of it yet.
    ban_through(
        &stacks[0],
        r#"{"src":"identity:alice","duration":"10m","reason":"outage"}"#,
    )
    .await;
    assert_eq!(
        tags_status(&stacks[0], nat, &alice).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(tags_status(&stacks[1], nat, &alice).await, StatusCode::OK);
    redis.spawn();
    for s in &stacks {
        // Backoff is at most 5 s.
        for _ in 0..4 {
            if metric_eventually(&s.admin, "ollama_guard_cluster_connected", 1.0).await == 1.0 {
                break;
            }
        }
        assert_eq!(
            metric(&s.admin, "ollama_guard_cluster_connected").await,
            1.0
        );
    }
    assert!(key_gets_within_1s(&stacks[1], nat, &alice, StatusCode::FORBIDDEN).await);
    assert_eq!(tags_status(&stacks[1], nat, &bob).await, StatusCode::OK);
    // A replica that starts now takes the ban from Redis before it reports connected.
    let c = stack_with(
        ServeArgs::default(),
        &keyed_file(&redis.url(), keys.path(), "guard-c", QUIET),
    )
    .await;
    assert_eq!(
        metric_eventually(&c.admin, "ollama_guard_cluster_connected", 1.0).await,
        1.0
    );
    assert_eq!(tags_status(&c, nat, &alice).await, StatusCode::FORBIDDEN);
    assert_eq!(tags_status(&c, nat, &bob).await, StatusCode::OK);
    for s in [&stacks[1], &c] {
        let ev = wait_events(&s.detection_log(), |e| {
            e.iter().any(|v| v["event"] == "ban")
        })
        .await;
        let bans: Vec<&Value> = ev.iter().filter(|v| v["event"] == "ban").collect();
        assert_eq!(bans.len(), 1, "{bans:#?}");
        assert_eq!(bans[0]["identity"], "alice");
        assert_eq!(bans[0]["origin"], "guard-a");
        assert_eq!(bans[0]["reason"], "outage");
    }
}

// A sync whose answer is lost (Redis stalled past the command timeout, then resumed) is
// never sent again: Redis may have run it, and counting twice could flag an innocent source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_lost_in_a_stall_is_never_counted_twice() {
    let redis = Redis::start(None);
    let file = cluster_file(&redis.url(), "guard-a").replace("threshold = 6", "threshold = 1000");
    let s = stack_with(ServeArgs::default(), &file).await;
    assert_eq!(
        metric_eventually(&s.admin, "ollama_guard_cluster_connected", 1.0).await,
        1.0
    );
    let c = client_from("127.0.0.41");
    let tags = format!("{}/api/tags", s.proxy);
    for _ in 0..10 {
        assert_eq!(
            call(&c, Method::GET, &tags, &[]).await.status,
            StatusCode::OK
        );
    }
    let count = |redis: &Redis| -> u64 {
        let keys = redis.cli(&["--scan", "--pattern", "ollama-guard:c:*127.0.0.41*"]);
        keys.iter()
            .map(|k| {
                redis
                    .cli(&["HGET", k, "c"])
                    .first()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    };
    for _ in 0..100 {
        if count(&redis) == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(&redis), 10);
    let pid = redis.child.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        let st = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(st.success());
    };
    signal("-STOP");
    for _ in 0..3 {
        assert_eq!(
            call(&c, Method::GET, &tags, &[]).await.status,
            StatusCode::OK
        );
    }
    // The sync carrying them times out (2 s) while Redis is stopped.
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal("-CONT");
    assert_eq!(
        metric_eventually(&s.admin, "ollama_guard_cluster_connected", 1.0).await,
        1.0
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let merged = count(&redis);
    let dropped = metric(&s.admin, "ollama_guard_cluster_deltas_dropped_total").await as u64;
    // Each of the 3 requests is in Redis at most once; a sync that failed in flight was
    // dropped and counted, whether or not Redis ran it when it resumed.
    assert!(merged <= 13, "counted twice: {merged}");
    assert!(
        merged + dropped >= 13,
        "lost without a count: {merged} + {dropped}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_that_is_no_number_in_redis_breaks_no_other_sources_detection() {
    let redis = Redis::start(None);
    let stacks = replicas(&redis.url(), 1).await;
    clear_of_window_end(HOUR, Duration::from_secs(60)).await;
    tags_round_robin(&stacks, "127.0.0.4", 0, 1).await;
    let mut keys = Vec::new();
    for _ in 0..100 {
        keys = redis.cli(&["--scan", "--pattern", "ollama-guard:c:*127.0.0.4*"]);
        if !keys.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(keys.len(), 1, "{keys:?}");
    // Garbage in one source's counter (a hostile or broken writer of the store).
    redis.cli(&["HSET", &keys[0], "c", "abc", "s", "9223372036854775807"]);
    // Another source crosses the threshold while the poisoned one keeps sending: its deltas
    // travel in the same pipeline.
    for i in 0..6 {
        if i < 3 {
            tags_round_robin(&stacks, "127.0.0.4", i, 1).await;
        }
        tags_round_robin(&stacks, "127.0.0.6", i, 1).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(version_status_within_1s(&stacks[0], "127.0.0.6", StatusCode::FORBIDDEN).await);
    // The detection line is written by the log writer, maybe after the ban is in force.
    wait_all(&stacks, |ev| ev.iter().any(|e| e["event"] == "detection")).await;
    let detections = all_events(&stacks, "detection");
    assert_eq!(detections.len(), 1, "{detections:#?}");
    assert_eq!(detections[0]["src"], "127.0.0.6");
    assert_eq!(detections[0]["count"], 6);
    assert_eq!(
        metric(&stacks[0].admin, "ollama_guard_cluster_sync_errors_total").await,
        0.0
    );
    // The poisoned field started over from the deltas that came after it.
    assert_eq!(redis.cli(&["HGET", &keys[0], "c"]), ["3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_key_of_the_wrong_type_or_an_oversized_entry_in_redis_is_dropped_not_obeyed() {
    let redis = Redis::start(None);
    // A foreign writer left a string where the bans hash goes.
    redis.cli(&["SET", "ollama-guard:bans", "not a hash"]);
    let a = replicas(&redis.url(), 1).await;
    assert_eq!(redis.cli(&["TYPE", "ollama-guard:bans"]), ["none"]);
    ban_through(
        &a[0],
        r#"{"src":"127.0.0.9","duration":"10m","reason":"test"}"#,
    )
    .await;
    let mut fields = Vec::new();
    for _ in 0..100 {
        fields = redis.cli(&["HKEYS", "ollama-guard:bans"]);
        if !fields.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fields.len(), 1, "{fields:?}");
    let field = fields[0].clone();
    let entry = redis.cli(&["HGET", "ollama-guard:bans", &field]);
    // The same entry with 3 000 offence times (a hostile store: megabytes would be merged by
    // every replica at every resync).
    let mut v: Value = serde_json::from_str(&entry[0]).unwrap();
    let time = v["offences"][0].clone();
    v["offences"] = Value::Array(vec![time; 3000]);
    let big = v.to_string();
    assert!(big.len() > 64 << 10, "{}", big.len());
    redis.cli(&["HSET", "ollama-guard:bans", &field, &big]);
    // A replica joining now reads it at its first resync: too large to be a ban, deleted.
    let b = stack_with(ServeArgs::default(), &cluster_file(&redis.url(), "guard-b")).await;
    assert_eq!(
        metric_eventually(&b.admin, "ollama_guard_cluster_connected", 1.0).await,
        1.0
    );
    let mut gone = false;
    for _ in 0..100 {
        if redis.cli(&["HEXISTS", "ollama-guard:bans", &field]) == ["0"] {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone);
    assert!(version_status_within_1s(&b, "127.0.0.9", StatusCode::OK).await);
}

/// Waits until `s` is connected to Redis (through the reconnect backoff of at most 5 s,
/// four times `metric_eventually`'s wait).
async fn reconnected(s: &Stack) {
    for _ in 0..4 {
        if metric_eventually(&s.admin, "ollama_guard_cluster_connected", 1.0).await == 1.0 {
            return;
        }
    }
    panic!("the replica did not reconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_its_data_lifts_no_ban_and_gets_every_ban_back() {
    let mut redis = Redis::start(None);
    // A foreign value where the epoch goes is replaced, not obeyed (nor a failed resync).
    redis.cli(&["RPUSH", "ollama-guard:epoch", "x"]);
    let mut stacks = replicas(&redis.url(), 2).await;
    let epoch = redis.cli(&["GET", "ollama-guard:epoch"]);
    assert_eq!(epoch.len(), 1, "{epoch:?}");
    assert!(
        epoch[0].starts_with("guard-a:") || epoch[0].starts_with("guard-b:"),
        "{epoch:?}"
    );
    ban_through(
        &stacks[0],
        r#"{"src":"127.0.0.21","duration":"10m","reason":"theft"}"#,
    )
    .await;
    assert!(version_status_within_1s(&stacks[1], "127.0.0.21", StatusCode::FORBIDDEN).await);
    // The replica that made the ban goes away for good; Redis restarts empty.
    drop(stacks.remove(0));
    let b = stacks.remove(0);
    redis.kill();
    assert_eq!(
        metric_eventually(&b.admin, "ollama_guard_cluster_connected", 0.0).await,
        0.0
    );
    redis.spawn();
    reconnected(&b).await;
    // B's resync after the loss kept A's ban (an empty Redis is no unban) and wrote it back
    // as A made it.
    assert!(version_status_within_1s(&b, "127.0.0.21", StatusCode::FORBIDDEN).await);
    let entry = redis.cli(&["HGET", "ollama-guard:bans", "127.0.0.21"]);
    assert_eq!(entry.len(), 1, "{entry:?}");
    let entry: Value = serde_json::from_str(&entry[0]).unwrap();
    assert_eq!(entry["origin"], "guard-a", "{entry}");
    assert_eq!(entry["ban"]["reason"], "theft", "{entry}");
    assert_eq!(entry["ban"]["offence"], 1, "{entry}");
    assert!(
        redis.cli(&["GET", "ollama-guard:epoch"])[0].starts_with("guard-b:"),
        "a new epoch, B's"
    );
    let b_events = events(&b.detection_log());
    assert_eq!(
        b_events.iter().filter(|e| e["event"] == "unban").count(),
        0,
        "{b_events:?}"
    );
    // A replica that starts now takes the ban from Redis.
    let c = stack_with(ServeArgs::default(), &cluster_file(&redis.url(), "guard-c")).await;
    reconnected(&c).await;
    assert!(version_status_within_1s(&c, "127.0.0.21", StatusCode::FORBIDDEN).await);
    // An unban after the loss still travels.
    unban_through(&c, "127.0.0.21").await;
    assert!(version_status_within_1s(&b, "127.0.0.21", StatusCode::OK).await);
    assert_eq!(redis.cli(&["HLEN", "ollama-guard:bans"]), ["0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleets_on_two_databases_of_one_redis_do_not_hear_each_other() {
    let redis = Redis::start(None);
    let one = stack_with(
        ServeArgs::default(),
        &cluster_file(&format!("{}/1", redis.url()), "fleet1-a"),
    )
    .await;
    let one_b = stack_with(
        ServeArgs::default(),
        &cluster_file(&format!("{}/1", redis.url()), "fleet1-b"),
    )
    .await;
    let two = stack_with(
        ServeArgs::default(),
        &cluster_file(&format!("{}/2", redis.url()), "fleet2-a"),
    )
    .await;
    reconnected(&one).await;
    reconnected(&one_b).await;
    reconnected(&two).await;
    ban_through(&one, r#"{"src":"127.0.0.22","duration":"10m"}"#).await;
    let mut stored = false;
    for _ in 0..100 {
        if redis.cli(&["-n", "1", "HEXISTS", "ollama-guard:bans", "127.0.0.22"]) == ["1"] {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stored);
    // The other replica of its fleet heard it (a resync is 30 s away: the message did it).
    assert!(version_status_within_1s(&one_b, "127.0.0.22", StatusCode::FORBIDDEN).await);
    // The message went out with the entry; the other fleet did not apply it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(version_status_within_1s(&two, "127.0.0.22", StatusCode::OK).await);
    assert_eq!(
        admin(&two, Method::GET, "/api/bans", "", None).await.text(),
        "[]"
    );
    assert_eq!(redis.cli(&["-n", "2", "HLEN", "ollama-guard:bans"]), ["0"]);
}

/// A replica connecting as its own Redis user `id` (password `pw`), so that a test can cut it
/// off (`ACL SETUSER id off`) while the others stay connected.
async fn replica_as_user(redis: &Redis, id: &str) -> Stack {
    let url = format!("redis://{id}:pw@127.0.0.1:{}", redis.port);
    stack_with(ServeArgs::default(), &cluster_file(&url, id)).await
}

fn create_user(redis: &Redis, id: &str) {
    assert_eq!(
        redis.cli(&["ACL", "SETUSER", id, "on", ">pw", "~*", "&*", "+@all"]),
        ["OK"]
    );
}

/// Cuts replica `s`, connected as Redis user `id`, off: the user disabled, its connections
/// killed; waits until the replica knows.
async fn cut_off(redis: &Redis, s: &Stack, id: &str) {
    assert_eq!(redis.cli(&["ACL", "SETUSER", id, "off"]), ["OK"]);
    redis.cli(&["CLIENT", "KILL", "USER", id]);
    assert_eq!(
        metric_eventually(&s.admin, "ollama_guard_cluster_connected", 0.0).await,
        0.0
    );
}

/// `DELETE /api/bans/SRC` through `s`'s admin API, which must answer 204.
async fn unban_through(s: &Stack, src: &str) {
    let r = admin(s, Method::DELETE, &format!("/api/bans/{src}"), "", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
}

/// `back` reconnects after missing the unban of `src`: it lifts its copy, `other` stays
/// without it (nobody wrote it back), Redis holds no entry. Answers `back`'s `unban` lines.
async fn back_and_lifted(redis: &Redis, back: &Stack, other: &Stack, src: &str) -> Vec<Value> {
    reconnected(back).await;
    assert!(version_status_within_1s(back, src, StatusCode::OK).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(version_status_within_1s(other, src, StatusCode::OK).await);
    assert_eq!(redis.cli(&["HEXISTS", "ollama-guard:bans", src]), ["0"]);
    unbans_in(back)
}

/// A Redis, replica A as its own Redis user (so it can be cut off) and replica B, both
/// connected.
async fn cuttable_a_and_b() -> (Redis, Stack, Stack) {
    let redis = Redis::start(None);
    create_user(&redis, "guard-a");
    let a = replica_as_user(&redis, "guard-a").await;
    let b = stack_with(ServeArgs::default(), &cluster_file(&redis.url(), "guard-b")).await;
    reconnected(&a).await;
    reconnected(&b).await;
    (redis, a, b)
}

/// `HGET key field`, polled every 20 ms for up to 1 s until the field exists (a replica
/// publishes its ban changes after the admin API has answered).
async fn hget_within_1s(redis: &Redis, key: &str, field: &str) -> Vec<String> {
    for _ in 0..50 {
        if redis.cli(&["HEXISTS", key, field]) == ["1"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.cli(&["HGET", key, field])
}

fn unbans_in(s: &Stack) -> Vec<Value> {
    events(&s.detection_log())
        .into_iter()
        .filter(|e| e["event"] == "unban")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unban_the_banning_replica_missed_is_not_undone_when_it_comes_back() {
    let (redis, a, b) = cuttable_a_and_b().await;
    ban_through(&a, r#"{"src":"127.0.0.23","duration":"10m"}"#).await;
    assert!(version_status_within_1s(&b, "127.0.0.23", StatusCode::FORBIDDEN).await);
    // A is cut off; B lifts the ban, and A misses the message.
    cut_off(&redis, &a, "guard-a").await;
    unban_through(&b, "127.0.0.23").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(version_status_within_1s(&a, "127.0.0.23", StatusCode::FORBIDDEN).await);
    // A comes back: its resync finds the unban's tombstone, lifts its own ban and does not
    // publish it again.
    redis.cli(&["ACL", "SETUSER", "guard-a", "on"]);
    let lifted = back_and_lifted(&redis, &a, &b, "127.0.0.23").await;
    assert_eq!(lifted.len(), 1, "{lifted:?}");
    assert_eq!(lifted[0]["src"], "127.0.0.23");
    assert_eq!(lifted[0]["ended"], "admin");
    assert_eq!(unbans_in(&b).len(), 1);
    // A ban made after the unban is not held back by its tombstone.
    let r = ban_through(&a, r#"{"src":"127.0.0.23","duration":"10m"}"#).await;
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["offence"], 2, "{body}");
    assert!(version_status_within_1s(&b, "127.0.0.23", StatusCode::FORBIDDEN).await);
}

/// Replicas A, B and C (C as its own Redis user, so it can be kept out); A bans, then goes
/// for good; Redis restarts empty (without C's user); an operator lifts A's ban through B,
/// after the loss or (`before`) just before it while C is already away. C comes back to a
/// Redis with another epoch: it would write A's ban back, but the unban's tombstone (in Redis,
/// or written back from B's memory) lifts C's copy instead.
async fn an_unban_c_missed_survives_a_data_loss(before: bool) {
    let mut redis = Redis::start(None);
    create_user(&redis, "guard-c");
    let a = stack_with(ServeArgs::default(), &cluster_file(&redis.url(), "guard-a")).await;
    let b = stack_with(ServeArgs::default(), &cluster_file(&redis.url(), "guard-b")).await;
    let c = replica_as_user(&redis, "guard-c").await;
    for s in [&a, &b, &c] {
        reconnected(s).await;
    }
    ban_through(&a, r#"{"src":"127.0.0.24","duration":"10m"}"#).await;
    assert!(version_status_within_1s(&b, "127.0.0.24", StatusCode::FORBIDDEN).await);
    assert!(version_status_within_1s(&c, "127.0.0.24", StatusCode::FORBIDDEN).await);
    drop(a);
    if before {
        cut_off(&redis, &c, "guard-c").await;
        unban_through(&b, "127.0.0.24").await;
        // B publishes its unban after answering the admin call: wait for its tombstone.
        let tomb = hget_within_1s(&redis, "ollama-guard:unbans", "127.0.0.24").await;
        assert_eq!(tomb.len(), 1, "{tomb:?}");
        assert!(tomb[0].contains(':'), "{tomb:?}");
    }
    redis.kill();
    for s in [&b, &c] {
        assert_eq!(
            metric_eventually(&s.admin, "ollama_guard_cluster_connected", 0.0).await,
            0.0
        );
    }
    redis.spawn();
    reconnected(&b).await;
    if before {
        // B wrote the tombstone back from its memory; the ban is not back.
        let tomb = redis.cli(&["HGET", "ollama-guard:unbans", "127.0.0.24"]);
        assert_eq!(tomb.len(), 1, "{tomb:?}");
        assert!(version_status_within_1s(&b, "127.0.0.24", StatusCode::OK).await);
    } else {
        // B wrote A's ban back; then the operator lifts it while C is still away.
        assert_eq!(
            redis.cli(&["HEXISTS", "ollama-guard:bans", "127.0.0.24"]),
            ["1"]
        );
        assert!(version_status_within_1s(&b, "127.0.0.24", StatusCode::FORBIDDEN).await);
        unban_through(&b, "127.0.0.24").await;
    }
    assert!(version_status_within_1s(&c, "127.0.0.24", StatusCode::FORBIDDEN).await);
    create_user(&redis, "guard-c");
    let lifted = back_and_lifted(&redis, &c, &b, "127.0.0.24").await;
    assert_eq!(lifted.len(), 1, "{lifted:?}");
    assert_eq!(lifted[0]["origin"], "guard-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_data_loss_an_unban_a_reconnecting_replica_missed_is_not_undone() {
    an_unban_c_missed_survives_a_data_loss(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unban_made_before_a_data_loss_is_not_undone_by_a_replica_that_missed_it() {
    an_unban_c_missed_survives_a_data_loss(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unban_queued_in_an_outage_lifts_only_the_ban_it_lifted_not_a_newer_one() {
    let (redis, a, b) = cuttable_a_and_b().await;
    ban_through(
        &b,
        r#"{"src":"127.0.0.26","duration":"10m","reason":"first"}"#,
    )
    .await;
    assert!(version_status_within_1s(&a, "127.0.0.26", StatusCode::FORBIDDEN).await);
    // A is cut off and lifts the first ban there (queued); meanwhile B bans again.
    cut_off(&redis, &a, "guard-a").await;
    unban_through(&a, "127.0.0.26").await;
    // A ban's start has millisecond precision: the second starts in a later millisecond.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let r = ban_through(
        &b,
        r#"{"src":"127.0.0.26","duration":"10m","reason":"second"}"#,
    )
    .await;
    let second: Value = serde_json::from_slice(&r.body).unwrap();
    // A comes back: its queued unban names the first ban; the second stays everywhere, and A
    // takes it at its resync.
    redis.cli(&["ACL", "SETUSER", "guard-a", "on"]);
    reconnected(&a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(version_status_within_1s(&b, "127.0.0.26", StatusCode::FORBIDDEN).await);
    assert!(version_status_within_1s(&a, "127.0.0.26", StatusCode::FORBIDDEN).await);
    let entry = redis.cli(&["HGET", "ollama-guard:bans", "127.0.0.26"]);
    assert_eq!(entry.len(), 1, "{entry:?}");
    let entry: Value = serde_json::from_str(&entry[0]).unwrap();
    assert_eq!(entry["ban"]["reason"], "second", "{entry}");
    assert_eq!(entry["ban"]["since"], second["since"], "{entry}");
    let listed = admin(&a, Method::GET, "/api/bans", "", None).await;
    let listed: Value = serde_json::from_slice(&listed.body).unwrap();
    assert_eq!(listed[0]["reason"], "second", "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_lifts_no_ban_at_the_next_resync() {
    let redis = Redis::start(None);
    let mut stacks = replicas(&redis.url(), 2).await;
    ban_through(&stacks[0], r#"{"src":"127.0.0.25","duration":"10m"}"#).await;
    assert!(version_status_within_1s(&stacks[1], "127.0.0.25", StatusCode::FORBIDDEN).await);
    drop(stacks.remove(0));
    let b = stacks.remove(0);
    // The same server, its data gone; B's connections are cut so that it resyncs now rather
    // than in 30 s.
    assert_eq!(redis.cli(&["FLUSHALL"]), ["OK"]);
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let mut back = false;
    for _ in 0..250 {
        if redis.cli(&["HEXISTS", "ollama-guard:bans", "127.0.0.25"]) == ["1"] {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "B wrote the ban back");
    assert!(version_status_within_1s(&b, "127.0.0.25", StatusCode::FORBIDDEN).await);
    assert!(unbans_in(&b).is_empty());
}

/// A Redis user without the events channel (an ACL without `&...`): Redis refuses its
/// subscription, which the client does not report, so before the connect-time probe such a
/// replica reported connected and heard no ban (a black-box review). The probe (refused here
/// with `NOPERM`; on a connection that drops pub/sub it would never come back) keeps it in
/// local mode (`cluster_connected` 0, a sync error); once the user may use the channel, it
/// connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_hear_the_channel_does_not_report_connected() {
    let redis = Redis::start(None);
    assert_eq!(
        redis.cli(&[
            "ACL",
            "SETUSER",
            "deaf",
            "on",
            ">pw",
            "~*",
            "resetchannels",
            "+@all"
        ]),
        ["OK"]
    );
    let s = replica_as_user(&redis, "deaf").await;
    // The probe waits 2 s for its message; well past it, and past a second attempt.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        metric(&s.admin, "ollama_guard_cluster_connected").await,
        0.0
    );
    assert!(metric(&s.admin, "ollama_guard_cluster_sync_errors_total").await >= 1.0);
    assert_eq!(redis.cli(&["ACL", "SETUSER", "deaf", "&*"]), ["OK"]);
    reconnected(&s).await;
}

/// A sync that fails after Redis ran it (here: its writes held by `CLIENT PAUSE` past the
/// 2 s timeout, then run) loses the answer that says this replica's crossing won the
/// window: Redis holds the window's marker, and nobody would write the detection (a
/// black-box review made such losses at will with a spray of sources). The replica writes
/// the detection it withheld for the merge as soon as the merge is lost, with the figures of
/// the crossing, and bans; no further request is needed, and none after the reconnect makes a
/// second detection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossing_whose_merge_is_lost_is_detected_at_once() {
    let redis = Redis::start(None);
    let stacks = replicas(&redis.url(), 1).await;
    clear_of_window_end(HOUR, Duration::from_secs(60)).await;
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "3000", "WRITE"]), ["OK"]);
    // The threshold (6) crossed here while counters are shared: the detection waits for the
    // merge, which times out.
    tags_round_robin(&stacks, "127.0.0.31", 0, 6).await;
    wait_all(&stacks, |ev| {
        ev.iter()
            .any(|e| e["event"] == "detection" && e["src"] == "127.0.0.31")
    })
    .await;
    let d = detections_of(&stacks, "127.0.0.31");
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        (
            d[0]["rule"].as_str(),
            d[0]["count"].as_u64(),
            d[0]["action"].as_str()
        ),
        (Some("tags_burst"), Some(6), Some("banned"))
    );
    assert!(version_status_within_1s(&stacks[0], "127.0.0.31", StatusCode::FORBIDDEN).await);
    // Redis did run the paused merge: the window's marker is there.
    reconnected(&stacks[0]).await;
    let markers = redis.cli(&["KEYS", "ollama-guard:f:block:tags_burst#*"]);
    assert_eq!(markers.len(), 1, "{markers:?}");
    // Connected again: the source stays banned, and no merge writes a second detection.
    tags_from_status(&stacks[0], "127.0.0.31", StatusCode::FORBIDDEN).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(detections_of(&stacks, "127.0.0.31").len(), 1);
}

/// `GET /api/tags` from `who` through `s`, answered `want`.
async fn tags_from_status(s: &Stack, who: &str, want: StatusCode) {
    let r = call(
        &client_from(who),
        Method::GET,
        &format!("{}/api/tags", s.proxy),
        &[],
    )
    .await;
    assert_eq!(r.status, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_replica_with_other_rule_settings_does_not_disarm_the_others() {
    let redis = Redis::start(None);
    let canary_file = cluster_file(&redis.url(), "canary")
        .replace("threshold = 6", "threshold = 5\naction = \"log\"");
    canary_does_not_disarm(&redis, &canary_file, "127.0.0.33", 4).await;
}

/// The same for a canary in monitor mode, the same rule: the global mode is part of a shared
/// window's name (a review found the monitor canary's merge winning the marker and logging).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_mode_canary_does_not_disarm_the_block_mode_replicas() {
    let redis = Redis::start(None);
    let canary_file =
        cluster_file(&redis.url(), "canary").replace("mode = \"block\"", "mode = \"monitor\"");
    canary_does_not_disarm(&redis, &canary_file, "127.0.0.36", 5).await;
}

/// A replica of `RULE` (threshold 6) in block mode and a canary of `canary_file`: `first`
/// requests of `src` on the main one, 1 on the canary (together the canary's threshold: its
/// merge would win the shared window's marker and only log), then the main one's rest to its
/// own sixth. The main one detects and bans at its own sixth; the canary detects nothing (it
/// counted 1).
async fn canary_does_not_disarm(redis: &Redis, canary_file: &str, src: &str, first: usize) {
    let main = stack_with(ServeArgs::default(), &cluster_file(&redis.url(), "main")).await;
    let canary = stack_with(ServeArgs::default(), canary_file).await;
    for s in [&main, &canary] {
        assert_eq!(
            metric_eventually(&s.admin, "ollama_guard_cluster_connected", 1.0).await,
            1.0
        );
    }
    clear_of_window_end(HOUR, Duration::from_secs(60)).await;
    let stacks = [main, canary];
    tags_round_robin(&stacks[..1], src, 0, first).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    tags_round_robin(&stacks[1..], src, 0, 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    tags_round_robin(&stacks[..1], src, first, 6 - first).await;
    wait_all(&stacks[..1], |ev| {
        ev.iter()
            .any(|e| e["event"] == "detection" && e["src"] == src)
    })
    .await;
    let d = detections_of(&stacks[..1], src);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        (d[0]["count"].as_u64(), d[0]["action"].as_str()),
        (Some(6), Some("banned"))
    );
    assert!(version_status_within_1s(&stacks[0], src, StatusCode::FORBIDDEN).await);
    // The canary counted its one request alone: no detection of its own.
    assert!(detections_of(&stacks[1..], src).is_empty());
    let windows = redis.cli(&["KEYS", &format!("ollama-guard:c:*tags_burst#*{src}*")]);
    assert_eq!(
        windows.len(),
        2,
        "one window per rule and mode: {windows:?}"
    );
}

/// A ban message whose ban starts more than an hour from now (a replica's clock far ahead,
/// or a forged message) is ignored, as such a tombstone is: it would have lasted that much
/// longer everywhere than it was made for. One starting a few minutes ahead is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_from_a_clock_far_ahead_is_ignored() {
    let redis = Redis::start(None);
    let stacks = replicas(&redis.url(), 1).await;
    let message = |src: &str, ahead: chrono::TimeDelta| {
        let since = chrono::Utc::now() + ahead;
        let until = since + chrono::TimeDelta::minutes(1);
        let t = |d: chrono::DateTime<chrono::Utc>| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        format!(
            r#"{{"op":"ban","ban":{{"src":"{src}","until":"{}","reason":"skewed","offence":1,"rule":"tags_burst","since":"{}"}},"origin":"skewed","offences":["{}"]}}"#,
            t(until),
            t(since),
            t(since)
        )
    };
    redis.cli(&[
        "PUBLISH",
        "ollama-guard:events",
        &message("127.0.0.34", chrono::TimeDelta::hours(3)),
    ]);
    redis.cli(&[
        "PUBLISH",
        "ollama-guard:events",
        &message("127.0.0.35", chrono::TimeDelta::minutes(5)),
    ]);
    assert!(version_status_within_1s(&stacks[0], "127.0.0.35", StatusCode::FORBIDDEN).await);
    assert!(version_status_within_1s(&stacks[0], "127.0.0.34", StatusCode::OK).await);
    let bans = admin(&stacks[0], Method::GET, "/api/bans", "", None)
        .await
        .text();
    assert!(
        bans.contains("127.0.0.35") && !bans.contains("127.0.0.34"),
        "{bans}"
    );
}

/// The pub/sub connection ending while a merge waits for Redis does not drop the merge half
/// way (it has taken the deltas): the merge finishes, its detection is written, then the
/// replica reconnects (a review's repro: the split loop had lost the six counts, the
/// detection and the ban).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubsub_connection_lost_during_a_merge_loses_no_count() {
    let redis = Redis::start(None);
    let stacks = replicas(&redis.url(), 1).await;
    clear_of_window_end(HOUR, Duration::from_secs(60)).await;
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "1500", "WRITE"]), ["OK"]);
    tags_round_robin(&stacks, "127.0.0.32", 0, 6).await;
    // The next sync's merge is held by the pause; the pub/sub connection goes meanwhile.
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    wait_all(&stacks, |ev| {
        ev.iter()
            .any(|e| e["event"] == "detection" && e["src"] == "127.0.0.32")
    })
    .await;
    let d = detections_of(&stacks, "127.0.0.32");
    assert_eq!((d.len(), d[0]["count"].as_u64()), (1, Some(6)), "{d:#?}");
    assert!(version_status_within_1s(&stacks[0], "127.0.0.32", StatusCode::FORBIDDEN).await);
    reconnected(&stacks[0]).await;
    assert_eq!(
        metric(
            &stacks[0].admin,
            "ollama_guard_cluster_deltas_dropped_total"
        )
        .await,
        0.0
    );
}

/// A reload that changes the rules drops the pending deltas (their rule indexes may now name
/// other rules): a crossing one of them carried for its merge is detected first, by the
/// engine it was counted with (a review's repro: six requests, then a rule added, and no
/// replica ever detected them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_drops_pending_deltas_detects_their_crossings() {
    let redis = Redis::start(None);
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("guard.toml");
    // A sync every 3 s: the crossing's delta is still pending when the reload comes.
    let text = cluster_file(&redis.url(), "r").replace("100ms", "3s");
    std::fs::write(&file, &text).unwrap();
    let (args, server) = common::serve_file(&sim.url(), dir.path(), &file).await;
    let admin = format!("http://{}", server.admin_addr);
    assert_eq!(
        metric_eventually(&admin, "ollama_guard_cluster_connected", 1.0).await,
        1.0
    );
    clear_of_window_end(HOUR, Duration::from_secs(60)).await;
    let c = client_from("127.0.0.37");
    for _ in 0..6 {
        let r = call(
            &c,
            Method::GET,
            &format!("http://{}/api/tags", server.proxy_addr),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    std::fs::write(
        &file,
        format!("{text}\n[[rule]]\nname = \"other\"\npaths = [\"/api/ps\"]\nthreshold = 9\n"),
    )
    .unwrap();
    let report = server.reload(&args).unwrap();
    assert_eq!(report.kept_rules, ["tags_burst"]);
    let log = dir.path().join("detection.log");
    let mut found = Vec::new();
    // Up to 10 s: a loaded machine (the whole suite on 2 cores) took more than 2.
    for _ in 0..500 {
        found = events(&log)
            .into_iter()
            .filter(|e| e["event"] == "detection" && e["src"] == "127.0.0.37")
            .collect();
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        (found[0]["count"].as_u64(), found[0]["action"].as_str()),
        (Some(6), Some("banned"))
    );
}
