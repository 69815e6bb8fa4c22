//! The real client libraries' test suites (Python: ollama, openai under pytest; JavaScript:
//! ollama-js, openai under node's test runner), run as child processes by the e2e, auth and
//! TLS tests. `.ci/run` installs them and sets `OLLAMA_GUARD_PYTHON` / `OLLAMA_GUARD_NODE_PATH`.

use std::process::Command;

/// `pytest -q` on `tests/e2e/FILE` with the venv's Python.
pub fn pytest(file: &str) -> Command {
    let python = std::env::var("OLLAMA_GUARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(format!("{}/tests/e2e/{file}", env!("CARGO_MANIFEST_DIR")));
    cmd
}

/// `node --test` on `tests/e2e/FILE` with the installed packages on `NODE_PATH`.
pub fn node_test(file: &str) -> Command {
    let node_path = std::env::var("OLLAMA_GUARD_NODE_PATH").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/ci-node/node_modules").into()
    });
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-reporter=spec"])
        .arg(format!("{}/tests/e2e/{file}", env!("CARGO_MANIFEST_DIR")))
        .env("NODE_PATH", node_path);
    cmd
}

/// Runs `cmd` off the runtime's threads; whether it passed, and its stdout and stderr.
pub async fn run(mut cmd: Command, what: &'static str) -> (bool, String) {
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
