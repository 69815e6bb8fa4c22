//! End-to-end: real client libraries through the proxy, against the simulator — the official
//! `ollama` Python package and the `openai` Python SDK (`.ci/run` installs them into a venv and
//! sets `OLLAMA_GUARD_PYTHON`), and ollama-js and the `openai` Node SDK (`.ci/run` installs them
//! with npm and sets `OLLAMA_GUARD_NODE_PATH`).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::clients::{node_test, pytest, run};

/// Runs a client test suite against a fresh proxy stack; returns its exit status and output.
async fn run_suite(mut cmd: Command, what: &'static str) -> (bool, String) {
    let s = common::stack().await;
    cmd.env("OLLAMA_GUARD_URL", &s.proxy)
        .env_remove("OLLAMA_API_KEY");
    run(cmd, what).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_python_clients_work_through_the_proxy() {
    let (ok, report) = run_suite(
        pytest("test_clients.py"),
        "Python (OLLAMA_GUARD_PYTHON: a venv with pytest, ollama, openai)",
    )
    .await;
    assert!(ok, "pytest failed:\n{report}");
    assert!(
        report.contains("12 passed"),
        "expected all 12 client tests to run:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_javascript_clients_work_through_the_proxy() {
    let (ok, report) = run_suite(
        node_test("clients.test.cjs"),
        "JavaScript (Node.js; OLLAMA_GUARD_NODE_PATH: ollama, openai)",
    )
    .await;
    assert!(ok, "node --test failed:\n{report}");
    assert!(
        report.contains("ℹ pass 10"),
        "expected all 10 client tests to pass:\n{report}"
    );
}

/// A proxy stack with `[auth] mode = "required"` and three keys made through the admin API:
/// the environment the auth client suites read.
async fn auth_suite(mut cmd: Command, what: &'static str) -> (bool, String, common::Stack) {
    let keys = tempfile::tempdir().unwrap().keep().join("keys.json");
    let toml = format!(
        "[auth]\nmode = \"required\"\nkeys_file = \"{}\"\n",
        keys.display()
    );
    let s = common::stack_with(ollama_guard::config::ServeArgs::default(), &toml).await;
    for (name, role, var) in [
        ("app", "user", "OLLAMA_GUARD_USER_KEY"),
        ("ops", "manager", "OLLAMA_GUARD_MANAGER_KEY"),
        ("spare", "user", "OLLAMA_GUARD_SPARE_KEY"),
    ] {
        let r = common::admin(
            &s,
            http::Method::POST,
            "/api/keys",
            &format!(r#"{{"name":"{name}","role":"{role}"}}"#),
            None,
        )
        .await;
        assert_eq!(r.status, 201);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        cmd.env(var, v["key"].as_str().unwrap());
    }
    cmd.env("OLLAMA_GUARD_URL", &s.proxy)
        .env("OLLAMA_GUARD_ADMIN", &s.admin)
        .env_remove("OLLAMA_API_KEY");
    let (ok, report) = run(cmd, what).await;
    (ok, report, s)
}

/// No request the simulator (Ollama's stand-in) received carried a credential.
fn assert_no_credential_reached_the_upstream(s: &common::Stack) {
    let seen = s.sim.log.requests();
    assert!(!seen.is_empty());
    for r in &seen {
        assert!(
            r.headers.get("authorization").is_none() && r.headers.get("x-api-key").is_none(),
            "a credential reached the upstream: {} {}",
            r.method,
            r.target
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_python_clients_send_their_keys_the_sdk_way() {
    let python = std::env::var("OLLAMA_GUARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/test_auth.py"
        ));
    let (ok, report, s) = auth_suite(cmd, "Python auth").await;
    assert!(ok, "pytest failed:\n{report}");
    assert!(report.contains("7 passed"), "expected 7 tests:\n{report}");
    assert_no_credential_reached_the_upstream(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_javascript_clients_send_their_keys_the_sdk_way() {
    let node_path = std::env::var("OLLAMA_GUARD_NODE_PATH").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/ci-node/node_modules").into()
    });
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-reporter=spec"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/auth.test.cjs"
        ))
        .env("NODE_PATH", node_path);
    let (ok, report, s) = auth_suite(cmd, "JavaScript auth").await;
    assert!(ok, "node --test failed:\n{report}");
    assert!(report.contains("ℹ pass 3"), "expected 3 tests:\n{report}");
    assert_no_credential_reached_the_upstream(&s);
}
