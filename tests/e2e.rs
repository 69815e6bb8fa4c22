//! End-to-end: real client libraries through the proxy, against the simulator — the official
//! `ollama` Python package and the `openai` Python SDK (`.ci/run` installs them into a venv and
//! sets `OLLAMA_GUARD_PYTHON`), and ollama-js and the `openai` Node SDK (`.ci/run` installs them
//! with npm and sets `OLLAMA_GUARD_NODE_PATH`).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

/// Runs a client test suite against a fresh proxy stack; returns its exit status and output.
async fn run_suite(mut cmd: Command, what: &'static str) -> (bool, String) {
    let s = common::stack().await;
    cmd.env("OLLAMA_GUARD_URL", &s.proxy)
        .env_remove("OLLAMA_API_KEY");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run the {what} client tests: {e}"));
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_python_clients_work_through_the_proxy() {
    let python = std::env::var("OLLAMA_GUARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/test_clients.py"
        ));
    let (ok, report) = run_suite(
        cmd,
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
    let node_path = std::env::var("OLLAMA_GUARD_NODE_PATH").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/ci-node/node_modules").into()
    });
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-reporter=spec"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/clients.test.cjs"
        ))
        .env("NODE_PATH", node_path);
    let (ok, report) = run_suite(
        cmd,
        "JavaScript (Node.js; OLLAMA_GUARD_NODE_PATH: ollama, openai)",
    )
    .await;
    assert!(ok, "node --test failed:\n{report}");
    assert!(
        report.contains("ℹ pass 10"),
        "expected all 10 client tests to pass:\n{report}"
    );
}
