//! End-to-end: real client libraries through the proxy, against the simulator — the official
//! `ollama` Python package and the `openai` Python SDK (`.ci/run` installs them into a venv and
//! sets `OLLAMA_GUARD_PYTHON`), and ollama-js and the `openai` Node SDK (`.ci/run` installs them
//! with npm and sets `OLLAMA_GUARD_NODE_PATH`).
#![allow(clippy::unwrap_used)]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_python_clients_work_through_the_proxy() {
    let s = common::stack().await;
    let python = std::env::var("OLLAMA_GUARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/test_clients.py");
    let proxy = s.proxy.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", tests])
            .env("OLLAMA_GUARD_URL", proxy)
            .env_remove("OLLAMA_API_KEY")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python} (set OLLAMA_GUARD_PYTHON to a venv with pytest, ollama, openai): {e}"))
    })
    .await
    .unwrap();
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pytest failed:\n{report}");
    assert!(
        report.contains("12 passed"),
        "expected all 12 client tests to run:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_javascript_clients_work_through_the_proxy() {
    let s = common::stack().await;
    let node_path = std::env::var("OLLAMA_GUARD_NODE_PATH").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/ci-node/node_modules").into()
    });
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/clients.test.cjs");
    let proxy = s.proxy.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .args(["--test", "--test-reporter=spec", tests])
            .env("OLLAMA_GUARD_URL", proxy)
            .env("NODE_PATH", &node_path)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run node (install Node.js, and ollama + openai into {node_path}): {e}"
                )
            })
    })
    .await
    .unwrap();
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "node --test failed:\n{report}");
    assert!(
        report.contains("ℹ pass 10"),
        "expected all 10 client tests to pass:\n{report}"
    );
}
