//! `[auth]` end to end: keys made through the admin API, required/observe modes, roles,
//! revocation without restart, a hand-edited key file picked up by a reload, and the key
//! never reaching Ollama, a log or `/metrics`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::Method;
use ollama_guard::config::ServeArgs;
use ollama_guard::serve::Server;
use serde_json::Value;
use std::time::Duration;

/// The period of `auth` events: one per source per epoch-aligned minute, the refusals in
/// between counted in the next one (`since_last`).
const MINUTE: Duration = Duration::from_secs(60);

fn auth_toml(mode: &str, dir: &std::path::Path) -> String {
    format!(
        "[auth]\nmode = \"{mode}\"\nkeys_file = \"{}\"\n",
        dir.join("keys.json").display()
    )
}

async fn auth_stack(mode: &str) -> Stack {
    let keys_dir = tempfile::tempdir().unwrap().keep();
    stack_with(ServeArgs::default(), &auth_toml(mode, &keys_dir)).await
}

/// Adds a key through the admin API; returns the key text.
async fn add_key(s: &Stack, name: &str, role: &str) -> String {
    let r = admin(
        s,
        Method::POST,
        "/api/keys",
        &format!(r#"{{"name":"{name}","role":"{role}"}}"#),
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["name"], name);
    assert_eq!(v["role"], role);
    assert_eq!(v["expires"], Value::Null);
    v["key"].as_str().unwrap().to_owned()
}

/// A stack configured by `toml` with a `state_dir` (the key file defaults into it); returns
/// the arguments too, for a restart on the same directory.
async fn stack_with_state_dir(toml: &str) -> (Stack, ServeArgs) {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let args = ServeArgs {
        state_dir: Some(dir.path().join("state")),
        ..ServeArgs::default()
    };
    let config = common::config(&sim.url(), &dir, args.clone(), toml);
    let server = Server::start(config, loopback().await, loopback().await)
        .await
        .unwrap();
    let s = Stack {
        proxy: format!("http://{}", server.proxy_addr),
        admin: format!("http://{}", server.admin_addr),
        sim,
        server,
        dir,
    };
    (s, args)
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[tokio::test]
async fn required_refuses_strangers_serves_key_holders_and_the_key_never_leaves_the_guard() {
    let s = auth_stack("required").await;
    let key = add_key(&s, "alice", "user").await;
    let tags = format!("{}/api/tags", s.proxy);

    // Both refusals in one minute: the second is then counted, not logged (asserted below).
    clear_of_window_end(MINUTE, Duration::from_secs(10)).await;
    let r = send(Method::GET, &tags, &[("x-sim-id", "anon")], "").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer realm=\"ollama-guard\""
    );
    assert_eq!(
        r.text(),
        r#"{"error":"ollama-guard: an API key is required (send Authorization: Bearer <key>)"}"#
    );
    assert!(
        !sim_saw(&s, "anon"),
        "a refused request must not be forwarded"
    );

    let r = send(
        Method::GET,
        &tags,
        &[("x-sim-id", "wrong"), ("authorization", "Bearer ogk_00")],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), r#"{"error":"ollama-guard: invalid API key"}"#);

    let auth = bearer(&key);
    let r = send(
        Method::GET,
        &tags,
        &[("x-sim-id", "alice"), ("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(sim_saw(&s, "alice"));
    assert_eq!(sim_header(&s, "alice", "authorization"), None);
    // The probe routes stay open without a key.
    assert_eq!(get(&format!("{}/api/version", s.proxy)).await.status, 200);
    assert_eq!(get(&format!("{}/", s.proxy)).await.status, 200);

    metric_eventually(
        &s.admin,
        r#"ollama_guard_auth_requests_total{result="valid"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        metric(
            &s.admin,
            r#"ollama_guard_auth_requests_total{result="missing_key"}"#
        )
        .await,
        3.0,
        "the anonymous tags call and the two probes"
    );
    assert_eq!(
        metric(
            &s.admin,
            r#"ollama_guard_auth_requests_total{result="invalid_key"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &s.admin,
            r#"ollama_guard_refused_requests_total{reason="auth"}"#
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &s.admin,
            r#"ollama_guard_requests_total{method="GET",outcome="unauthorized",route="/api/tags",status_class="4xx"}"#
        )
        .await,
        2.0
    );

    // Nowhere: not in the logs, not in the metrics, not in the key file.
    let metrics = get(&format!("{}/metrics", s.admin)).await.text();
    let key_file =
        std::fs::read_to_string(s.server.bound_config().keys_file.clone().unwrap()).unwrap();
    let events = wait_events(&s.detection_log(), |e| {
        e.iter().any(|v| v["event"] == "auth")
    })
    .await;
    eventually(|| {
        std::fs::read_to_string(s.access_log())
            .unwrap_or_default()
            .lines()
            .count()
            >= 5
    })
    .await;
    for (what, text) in [
        ("metrics", metrics),
        ("key file", key_file),
        (
            "access log",
            std::fs::read_to_string(s.access_log()).unwrap(),
        ),
        (
            "detection log",
            std::fs::read_to_string(s.detection_log()).unwrap(),
        ),
    ] {
        assert!(!text.contains(&key), "the key leaked into the {what}");
        assert!(
            !text.contains(&key[4..20]),
            "part of the key leaked into the {what}"
        );
    }
    let auth_events: Vec<&Value> = events.iter().filter(|v| v["event"] == "auth").collect();
    assert_eq!(auth_events[0]["src"], "127.0.0.1");
    assert_eq!(auth_events[0]["uri_path"], "/api/tags");
    assert_eq!(auth_events[0]["status"], 401);
    assert_eq!(auth_events[0]["reason"], "missing_key");
    assert_eq!(auth_events[0]["action"], "refused");
    assert_eq!(auth_events[0]["since_last"], 0);
    // Same source, same minute: the wrong key is counted in the next line, not logged now.
    assert_eq!(auth_events.len(), 1);
    assert_detection_log_valid(&s.detection_log());
}

#[tokio::test]
async fn revocation_and_roles_apply_from_the_next_request_without_a_restart() {
    let s = auth_stack("required").await;
    let user = add_key(&s, "app", "user").await;
    let manager = add_key(&s, "ops", "manager").await;
    let pull = format!("{}/api/pull", s.proxy);
    let body = r#"{"model":"llama3.2","stream":false}"#;

    let u = bearer(&user);
    let r = send(Method::POST, &pull, &[("authorization", &u)], body).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.text(),
        r#"{"error":"ollama-guard: this API key may not manage models (pull, push, create, copy, delete need the manager role)"}"#
    );
    let m = bearer(&manager);
    let r = send(Method::POST, &pull, &[("authorization", &m)], body).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let list = admin(&s, Method::GET, "/api/keys", "", None).await;
    let v: Value = serde_json::from_slice(&list.body).unwrap();
    let names: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["name"].as_str().unwrap(), k["role"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("app", "user"), ("ops", "manager")]);
    assert!(!list.text().contains("ogk_"), "listing never shows keys");

    let tags = format!("{}/api/tags", s.proxy);
    assert_eq!(
        send(Method::GET, &tags, &[("authorization", &u)], "")
            .await
            .status,
        200
    );
    let r = admin(&s, Method::DELETE, "/api/keys/app", "", None).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        send(Method::GET, &tags, &[("authorization", &u)], "")
            .await
            .status,
        401
    );
    assert_eq!(
        admin(&s, Method::DELETE, "/api/keys/app", "", None)
            .await
            .status,
        404
    );
    let dup = admin(
        &s,
        Method::POST,
        "/api/keys",
        r#"{"name":"ops","role":"user"}"#,
        None,
    )
    .await;
    assert_eq!(dup.status, 409);
    let bad = admin(
        &s,
        Method::POST,
        "/api/keys",
        r#"{"name":"a b","role":"user"}"#,
        None,
    )
    .await;
    assert_eq!(bad.status, 400);
    let role = admin(
        &s,
        Method::POST,
        "/api/keys",
        r#"{"name":"x","role":"root"}"#,
        None,
    )
    .await;
    assert_eq!(role.status, 400);
    assert_eq!(
        role.text(),
        r#"{"error":"role \"root\" is not one of user, manager"}"#
    );
}

#[tokio::test]
async fn observe_changes_no_response_and_logs_what_required_would_have_done() {
    let s = auth_stack("observe").await;
    let plain = stack().await;
    // (Routes whose answer has no clock in it, so the two bodies can be compared.)
    for path in ["/api/tags", "/v1/models", "/api/version"] {
        let a = get(&format!("{}{path}", s.proxy)).await;
        let b = get(&format!("{}{path}", plain.proxy)).await;
        assert_eq!(a.status, b.status, "{path}");
        assert_eq!(a.body, b.body, "{path}");
    }
    let r = send(
        Method::POST,
        &format!("{}/api/pull", s.proxy),
        &[("authorization", "Bearer not-a-key"), ("x-sim-id", "obs")],
        r#"{"model":"llama3.2","stream":false}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        sim_header(&s, "obs", "authorization"),
        None,
        "stripped in observe too"
    );
    let ev = wait_events(&s.detection_log(), |e| {
        e.iter().any(|v| v["event"] == "auth")
    })
    .await;
    let first = ev.iter().find(|v| v["event"] == "auth").unwrap();
    assert_eq!(first["action"], "would_refuse");
    assert_eq!(first["status"], 401);
    assert_eq!(first["reason"], "missing_key");
    assert_eq!(
        metric(
            &s.admin,
            r#"ollama_guard_refused_requests_total{reason="auth"}"#
        )
        .await,
        0.0
    );
    assert_detection_log_valid(&s.detection_log());
}

#[tokio::test]
async fn off_is_todays_transparent_proxy_authorization_included() {
    let s = stack().await;
    let r = send(
        Method::GET,
        &format!("{}/api/tags", s.proxy),
        &[("authorization", "Bearer sk-upstream"), ("x-sim-id", "off")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        sim_header(&s, "off", "authorization").as_deref(),
        Some("Bearer sk-upstream")
    );
    let keys = admin(&s, Method::GET, "/api/keys", "", None).await;
    assert_eq!(keys.status, 404);
}

#[tokio::test]
async fn a_hand_edited_key_file_applies_on_reload_and_a_broken_one_is_refused() {
    use sha2::Digest;
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let file = dir.path().join("guard.toml");
    std::fs::write(&file, auth_toml("required", dir.path())).unwrap();
    let (args, server) = serve_file(&sim.url(), dir.path(), &file).await;
    let tags = format!("http://{}/api/tags", server.proxy_addr);
    let key = "ogk_handmade";
    let auth = bearer(key);
    assert_eq!(
        send(Method::GET, &tags, &[("authorization", &auth)], "")
            .await
            .status,
        401
    );
    let sha = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    std::fs::write(
        &keys,
        format!(
            r#"{{"version":1,"keys":[{{"name":"hand","role":"user","sha256":"{sha}","created":"2026-11-29T00:00:00Z"}}]}}"#
        ),
    )
    .unwrap();
    server.reload(&args).unwrap();
    assert_eq!(
        send(Method::GET, &tags, &[("authorization", &auth)], "")
            .await
            .status,
        200
    );
    std::fs::write(&keys, "{broken").unwrap();
    let err = server.reload(&args).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "config error: auth.keys_file: {}: not a valid key file",
            keys.display()
        )),
        "{err}"
    );
    assert_eq!(
        send(Method::GET, &tags, &[("authorization", &auth)], "")
            .await
            .status,
        200,
        "the keys in force stay when the file is broken"
    );
}

#[tokio::test]
async fn an_auth_mode_without_a_key_file_is_a_config_error_naming_the_key() {
    let file: ollama_guard::config::FileConfig =
        toml::from_str("[auth]\nmode = \"required\"\n").unwrap();
    let err = ollama_guard::config::Config::merge(&ServeArgs::default(), file)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "config error: auth.keys_file: auth.mode = \"required\" needs a key file: set auth.keys_file or state_dir"
    );
    let file: ollama_guard::config::FileConfig =
        toml::from_str("[auth]\nmode = \"strict\"\nkeys_file = \"/tmp/k.json\"\n").unwrap();
    let err = ollama_guard::config::Config::merge(&ServeArgs::default(), file)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "config error: auth.mode: 'strict' is not one of off, observe, required"
    );
}

#[tokio::test]
async fn an_identity_ban_locks_out_the_key_not_the_address_and_survives_a_restart() {
    let toml = "mode = \"block\"\n[auth]\nmode = \"required\"\n";
    let (s, args) = stack_with_state_dir(toml).await;
    let alice = bearer(&add_key(&s, "alice", "user").await);
    let bob = bearer(&add_key(&s, "bob", "user").await);
    let tags = format!("{}/api/tags", s.proxy);

    let r = admin(
        &s,
        Method::POST,
        "/api/bans",
        r#"{"src":"identity:alice","duration":"1h","reason":"leaked key"}"#,
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["identity"], "alice");
    assert_eq!(v["rule"], "admin");
    let unknown = admin(
        &s,
        Method::POST,
        "/api/bans",
        r#"{"src":"identity:mallory","duration":"1h"}"#,
        None,
    )
    .await;
    assert_eq!(unknown.status, 404);

    // Same address, two keys: only the banned one is refused.
    let r = send(Method::GET, &tags, &[("authorization", &alice)], "").await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.text(),
        r#"{"error":"ollama-guard: request blocked: this source is banned"}"#
    );
    assert_eq!(
        send(Method::GET, &tags, &[("authorization", &bob)], "")
            .await
            .status,
        200
    );
    let list = admin(&s, Method::GET, "/api/bans", "", None).await;
    let v: Value = serde_json::from_slice(&list.body).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["identity"], "alice");
    assert_eq!(v[0]["reason"], "leaked key");

    // A restart keeps the ban (state_dir).
    let state = s.dir.path().join("state");
    assert!(state.join("identity-bans.json").exists());
    s.server.shutdown().await;
    let config = common::config(&s.sim.url(), &s.dir, args, toml);
    let server = Server::start(config, loopback().await, loopback().await)
        .await
        .unwrap();
    let tags = format!("http://{}/api/tags", server.proxy_addr);
    assert_eq!(
        send(Method::GET, &tags, &[("authorization", &alice)], "")
            .await
            .status,
        403
    );
    let admin_url = format!("http://{}", server.admin_addr);
    let r = send(
        Method::DELETE,
        &format!("{admin_url}/api/bans/identity:alice"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        send(Method::GET, &tags, &[("authorization", &alice)], "")
            .await
            .status,
        200
    );
    let log = s.dir.path().join("detection.log");
    let ev = wait_events(&log, |e| e.iter().any(|v| v["event"] == "unban")).await;
    let bans: Vec<(&str, &str, bool)> = ev
        .iter()
        .filter(|v| v["event"] == "ban" || v["event"] == "unban" || v["event"] == "blocked")
        .map(|v| {
            (
                v["event"].as_str().unwrap(),
                v["identity"].as_str().unwrap(),
                v["restored"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        bans,
        [
            ("ban", "alice", false),
            ("blocked", "alice", false),
            ("ban", "alice", true),
            ("blocked", "alice", false),
            ("unban", "alice", false)
        ]
    );
    assert!(ev
        .iter()
        .all(|v| v["event"] != "ban" || v.get("src").is_none()));
    assert_detection_log_valid(&log);
}

/// Runs `ollama-guard ARGS` (off the runtime's threads).
async fn cli(args: Vec<String>) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ollama-guard"))
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_command_adds_lists_and_revokes_through_the_admin_api() {
    let s = auth_stack("required").await;
    let a = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    // --admin after the action works too (a global option).
    let (code, out, err) = cli(a(&[
        "keys", "add", "ci-bot", "--role", "manager", "--admin", &s.admin,
    ]))
    .await;
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "ci-bot");
    assert_eq!(v["role"], "manager");
    let key = v["key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 68);
    let auth = bearer(&key);
    assert_eq!(
        send(
            Method::POST,
            &format!("{}/api/pull", s.proxy),
            &[("authorization", &auth)],
            r#"{"model":"llama3.2","stream":false}"#
        )
        .await
        .status,
        200
    );
    let (code, out, _) = cli(a(&["keys", "--admin", &s.admin, "list"])).await;
    assert_eq!(code, Some(0));
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], "ci-bot");
    assert!(!out.contains(&key));
    let (code, out, _) = cli(a(&["keys", "revoke", "ci-bot", "--admin", &s.admin])).await;
    assert_eq!((code, out.as_str()), (Some(0), "revoked ci-bot\n"));
    let (code, _, err) = cli(a(&["keys", "revoke", "ci-bot", "--admin", &s.admin])).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "ollama-guard: keys: admin API answered 404: no key named \"ci-bot\"\n"
    );
    let (code, _, err) = cli(a(&[
        "keys", "add", "x", "--role", "root", "--admin", &s.admin,
    ]))
    .await;
    assert_eq!(code, Some(2), "clap refuses an unknown role: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_spray_is_banned_at_the_threshold_and_a_stale_key_poller_is_not() {
    let keys_dir = tempfile::tempdir().unwrap().keep();
    let toml = format!("mode = \"block\"\n{}", auth_toml("required", &keys_dir));
    let s = stack_with(ServeArgs::default(), &toml).await;
    let tags = format!("{}/api/tags", s.proxy);
    // The innocent: a dashboard with a revoked key, a handful of failures.
    let poller = client_from("127.0.0.78");
    for _ in 0..5 {
        let r = call(
            &poller,
            Method::GET,
            &tags,
            &[("authorization", "Bearer ogk_stale")],
        )
        .await;
        assert_eq!(r.status, 401);
    }
    // The spray: 60 wrong keys from one source. The 60th 401 crosses auth_failures' threshold.
    let spray = client_from("127.0.0.77");
    for i in 0..60 {
        let auth = format!("Bearer ogk_guess{i}");
        let r = call(&spray, Method::GET, &tags, &[("authorization", &auth)]).await;
        assert_eq!(r.status, 401, "request {i}");
    }
    let ev = wait_events(&s.detection_log(), |e| {
        e.iter().any(|v| v["event"] == "ban")
    })
    .await;
    let det = ev
        .iter()
        .find(|v| v["event"] == "detection" && v["rule"] == "auth_failures")
        .unwrap();
    assert_eq!(det["src"], "127.0.0.77");
    assert_eq!(det["count"], 60);
    assert_eq!(det["action"], "banned");
    let ban = ev.iter().find(|v| v["event"] == "ban").unwrap();
    assert_eq!(ban["src"], "127.0.0.77");
    assert_eq!(ban["rule"], "auth_failures");
    assert!(
        position(&ev, "detection").unwrap() < position(&ev, "ban").unwrap(),
        "cause before effect"
    );
    // Banned: refused before any key is looked at, even with a valid one.
    let key = add_key(&s, "real", "user").await;
    let auth = bearer(&key);
    let r = call(&spray, Method::GET, &tags, &[("authorization", &auth)]).await;
    assert_eq!(r.status, 403);
    // The poller and everyone else are untouched.
    let r = call(&poller, Method::GET, &tags, &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        ev.iter()
            .filter(|v| v["event"] == "detection" && v["src"] == "127.0.0.78")
            .count(),
        0
    );
    assert_detection_log_valid(&s.detection_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identities_behind_one_address_are_counted_apart_and_only_the_offender_is_banned() {
    let keys_dir = tempfile::tempdir().unwrap().keep();
    let toml = format!(
        "mode = \"block\"\n{}\n[[rule]]\nname = \"per_key_show\"\npaths = [\"/api/show\"]\ngroup_by = \"identity\"\nwindow_kind = \"sliding\"\nthreshold = 3\n",
        auth_toml("required", &keys_dir)
    );
    let s = stack_with(ServeArgs::default(), &toml).await;
    let alice = bearer(&add_key(&s, "alice", "user").await);
    let bob = bearer(&add_key(&s, "bob", "user").await);
    let show = format!("{}/api/show", s.proxy);
    let nat = client_from("127.0.0.90");
    // Together 4 requests from one address, but per key: alice 3 (flagged), bob 1.
    for who in [&alice, &bob, &alice, &alice] {
        let r = call(&nat, Method::POST, &show, &[("authorization", who)]).await;
        assert_eq!(r.status, 200);
    }
    let ev = wait_events(&s.detection_log(), |e| {
        e.iter().any(|v| v["event"] == "ban")
    })
    .await;
    let det: Vec<&Value> = ev.iter().filter(|v| v["event"] == "detection").collect();
    assert_eq!(det.len(), 1, "{det:#?}");
    assert_eq!(det[0]["rule"], "per_key_show");
    assert_eq!(det[0]["identity"], "alice");
    assert_eq!(det[0]["src"], "127.0.0.90");
    assert_eq!(det[0]["count"], 3);
    assert_eq!(det[0]["action"], "banned");
    let ban = ev.iter().find(|v| v["event"] == "ban").unwrap();
    assert_eq!(ban["identity"], "alice");
    assert!(ban.get("src").is_none(), "the address is not banned: {ban}");
    // Same address: alice is refused, bob goes on.
    let r = call(&nat, Method::POST, &show, &[("authorization", &alice)]).await;
    assert_eq!(r.status, 403);
    let r = call(&nat, Method::POST, &show, &[("authorization", &bob)]).await;
    assert_eq!(r.status, 200);
    let list = admin(&s, Method::GET, "/api/bans", "", None).await;
    let v: Value = serde_json::from_slice(&list.body).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["identity"], "alice");
    assert_eq!(v[0]["rule"], "per_key_show");
    assert_detection_log_valid(&s.detection_log());
}

/// A rule bans a key for a request that finishes during the shutdown drain: the ban is
/// saved with the last writes, and the next start keeps refusing the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_ban_made_during_the_shutdown_drain_survives_the_restart() {
    let toml = "mode = \"block\"\n[auth]\nmode = \"required\"\n[[rule]]\nname = \"per_key_show\"\npaths = [\"/api/show\"]\ngroup_by = \"identity\"\nthreshold = 1\n";
    let (s, args) = stack_with_state_dir(toml).await;
    let alice = bearer(&add_key(&s, "alice", "user").await);
    // A request that takes 1.5 s: it is still running when the shutdown starts.
    let show = format!("{}/api/show", s.proxy);
    let slow = {
        let alice = alice.clone();
        tokio::spawn(async move {
            call(
                &client_from("127.0.0.93"),
                Method::POST,
                &show,
                &[("authorization", &alice), ("x-sim-delay-ms", "1500")],
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let Stack {
        sim, server, dir, ..
    } = s;
    server.shutdown().await;
    assert_eq!(slow.await.unwrap().status, 200);
    let ev = events(&dir.path().join("detection.log"));
    let bans: Vec<&Value> = ev.iter().filter(|v| v["event"] == "ban").collect();
    assert_eq!(bans.len(), 1, "{ev:#?}");
    assert_eq!(bans[0]["identity"], "alice");
    // The next start: the ban is back, the key refused.
    let config = common::config(&sim.url(), &dir, args, toml);
    let server = Server::start(config, loopback().await, loopback().await)
        .await
        .unwrap();
    let r = call(
        &client_from("127.0.0.93"),
        Method::GET,
        &format!("http://{}/api/tags", server.proxy_addr),
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let list = send(
        Method::GET,
        &format!("http://{}/api/bans", server.admin_addr),
        &[],
        "",
    )
    .await;
    let v: Value = serde_json::from_slice(&list.body).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["identity"], "alice");
    server.shutdown().await;
}
