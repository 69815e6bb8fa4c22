//! End-to-end: the official `ollama` Python package and the `openai` SDK through the proxy,
//! against the simulator. `.ci/run` installs both into a venv and sets `OLLAMA_GUARD_PYTHON`.
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
