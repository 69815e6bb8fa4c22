//! The binary as an operator runs it: exit codes, one-line config errors, signals, demo.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::process::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_ollama-guard");

/// The built-in rules, in the order `check-config` prints them.
const BUILT_IN_RULES: [&str; 7] = [
    "model_exfiltration",
    "metadata_enumeration",
    "jailbreak_long_generation",
    "excessive_requests",
    "endpoint_scan",
    "bulk_generation",
    "auth_failures",
];

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` to `name` in `dir` and runs `check-config` on it.
fn check_config(dir: &tempfile::TempDir, name: &str, text: &str) -> (i32, String, String) {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    run(&["check-config", path.to_str().unwrap()], &[])
}

#[test]
fn check_config_prints_the_effective_config_with_built_in_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = check_config(
        &dir,
        "c.toml",
        "mode = \"block\"\n[ban]\nduration = \"1h\"\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("mode = \"block\""));
    assert!(out.contains("duration = \"1h\""));
    for rule in BUILT_IN_RULES {
        assert!(
            out.contains(&format!("name = \"{rule}\"")),
            "{rule} missing:\n{out}"
        );
    }
}

#[test]
fn bad_config_is_one_line_naming_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = check_config(&dir, "c.toml", "[[rule]]\nname = \"x\"\nthreshold = 0\n");
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("rule[x].threshold"), "{err}");
    let path = dir.path().join("c.toml");
    let (code, _, err) = run(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "serve refuses the same config before starting");
    assert!(err.contains("rule[x].threshold"), "{err}");
}

#[test]
fn env_overrides_are_validated_like_flags() {
    let (code, _, err) = run(&[], &[("OLLAMA_GUARD_MODE", "loud")]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "ollama-guard: config error: mode: 'loud' is not one of monitor, block (from --mode or OLLAMA_GUARD_MODE)"
    );
    // The flag wins over the environment.
    let (code, _, err) = run(&["--mode", "bogus"], &[("OLLAMA_GUARD_MODE", "monitor")]);
    assert_eq!(code, 2);
    assert!(err.contains("'bogus'"), "{err}");
}

/// The README's sample config, as an operator copies it (the TLS files it names left out):
/// valid, and it keeps the built-in rules and every default it shows.
#[test]
fn the_readme_s_sample_config_is_valid_and_keeps_the_built_in_rules() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("\n## Configuration file").unwrap()..];
    let block = &section[section.find("```toml\n").unwrap() + 8..];
    let block = &block[..block.find("```").unwrap()];
    let sample: String = block
        .lines()
        .filter(|l| !l.starts_with("tls_cert") && !l.starts_with("tls_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = check_config(&dir, "sample.toml", &sample);
    assert_eq!(code, 0, "{err}");
    let rules: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert_eq!(rules, BUILT_IN_RULES, "{out}");
    let (code, defaults, err) = check_config(&dir, "empty.toml", "");
    assert_eq!(code, 0, "{err}");
    for table in ["[policy]", "[enforcement]", "[ban]"] {
        let part = |text: &str| -> String {
            let from = &text[text.find(&format!("\n{table}\n")).unwrap() + 1..];
            let to = from[1..].find("\n[").map_or(from.len(), |at| at + 1);
            from[..to].to_owned()
        };
        assert_eq!(part(&out), part(&defaults), "{table}");
    }
}

#[test]
fn a_value_clap_cannot_parse_is_one_line_naming_the_key_the_option_and_the_variable() {
    for (env, args, line) in [
        (
            ("OLLAMA_GUARD_WORKERS", "abc"),
            &["check-config"][..],
            "ollama-guard: config error: workers: 'abc' is not valid: invalid digit found in string (from --workers or OLLAMA_GUARD_WORKERS)",
        ),
        (
            ("OLLAMA_GUARD_MAX_CONNECTIONS", "-1"),
            &[][..],
            "ollama-guard: config error: max_connections: '-1' is not valid: invalid digit found in string (from --max-connections or OLLAMA_GUARD_MAX_CONNECTIONS)",
        ),
        (
            ("OLLAMA_GUARD_STATE_DIR", ""),
            &["check-config"][..],
            "ollama-guard: config error: state_dir: '' is empty (from --state-dir or OLLAMA_GUARD_STATE_DIR)",
        ),
        (
            ("OLLAMA_GUARD_MODE", "blok"),
            &["check-config"][..],
            "ollama-guard: config error: mode: 'blok' is not one of monitor, block (from --mode or OLLAMA_GUARD_MODE)",
        ),
        (
            ("OLLAMA_GUARD_MODE", ""),
            &["check-config"][..],
            "ollama-guard: config error: mode: '' is empty (from --mode or OLLAMA_GUARD_MODE)",
        ),
        (
            ("OLLAMA_GUARD_UNUSED", ""),
            &["check-config", "--auth-mode", "on"][..],
            "ollama-guard: config error: auth.mode: 'on' is not one of off, observe, required (from --auth-mode or OLLAMA_GUARD_AUTH_MODE)",
        ),
        (
            ("OLLAMA_GUARD_CPU_AFFINITY", "on"),
            &["check-config"][..],
            "ollama-guard: config error: cpu_affinity: 'on' is not one of auto, off (from --cpu-affinity or OLLAMA_GUARD_CPU_AFFINITY)",
        ),
        (
            ("OLLAMA_GUARD_UNUSED", ""),
            &["check-config", "--log-format", "xml"][..],
            "ollama-guard: config error: log_format: 'xml' is not one of text, json (from --log-format or OLLAMA_GUARD_LOG_FORMAT)",
        ),
        (
            ("OLLAMA_GUARD_ACCESS_LOG_FORMAT", "combined"),
            &["check-config"][..],
            "ollama-guard: config error: access_log_format: 'combined' is not one of gin, json (from --access-log-format or OLLAMA_GUARD_ACCESS_LOG_FORMAT)",
        ),
        (
            ("OLLAMA_GUARD_UNUSED", ""),
            &["demo", "--mode", "x"][..],
            "ollama-guard: demo: --mode: 'x' is not one of monitor, block",
        ),
        (
            ("OLLAMA_GUARD_UNUSED", ""),
            &["scan", "--threads", "x", "/dev/null"][..],
            "ollama-guard: scan: --threads: 'x' is not valid: invalid digit found in string",
        ),
    ] {
        let (code, out, err) = run(args, &[env]);
        assert_eq!(code, 2, "{env:?}");
        assert!(out.is_empty());
        assert_eq!(err, format!("{line}\n"), "{env:?}");
    }
}

#[test]
fn address_in_use_is_exit_1_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) = run(
        &[
            "--listen",
            &addr,
            "--admin-listen",
            "127.0.0.1:0",
            "--detection-log",
            "/dev/null",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("listen: cannot listen on {addr}")),
        "{err}"
    );
    // The OS error is printed once, not once per level of the error chain.
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    assert!(
        err.trim().starts_with(&format!(
            "ollama-guard: listen: cannot listen on {addr}: Address already in use"
        )),
        "{err}"
    );
    // The admin listener's port taken: the line names that key.
    let (code, _, err) = run(
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            &addr,
            "--detection-log",
            "/dev/null",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        err.trim().starts_with(&format!(
            "ollama-guard: admin_listen: cannot listen on {addr}: Address already in use"
        )),
        "{err}"
    );
}

#[test]
fn upstream_pointing_at_the_guard_itself_is_exit_2() {
    let (code, _, err) = run(
        &[
            "--listen",
            "127.0.0.1:18080",
            "--upstream",
            "http://localhost:18080",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "ollama-guard: config error: upstream: 'http://localhost:18080' is this guard's own \
         listen (127.0.0.1:18080): requests would loop; point it at Ollama"
    );
}

#[test]
fn trusting_everyone_starts_with_a_loud_warning_and_env_lists_take_spaces() {
    let (port, admin) = (free_port(), free_port());
    let mut child = serve_cmd(port, admin)
        .env("OLLAMA_GUARD_TRUSTED_PROXY", "10.0.0.0/8, 0.0.0.0/0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    signal(&child, "TERM");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{err}");
    let warning = "trusted_proxies contains 0.0.0.0/0: every client can forge X-Forwarded-For";
    assert_eq!(err.matches(warning).count(), 1, "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("WARN") && l.contains(warning)),
        "{err}"
    );
    assert!(
        !err.contains("\x1b["),
        "no colour when stderr is not a terminal: {err:?}"
    );
}

/// What start warns about, a reload that brings it warns about: an exposed admin listener
/// losing its token, a trust list widened to everyone, `[auth]` turned off, `required` with an
/// empty key file; `check-config` prints the same warnings, and refuses a key file `serve`
/// would refuse.
#[test]
fn a_reload_warns_like_a_start_and_check_config_reads_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("guard.toml");
    let (port, admin) = (free_port(), free_port());
    let head = format!(
        "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"0.0.0.0:{admin}\"\n\
         upstream = \"http://127.0.0.1:9\"\ndetection_log = \"/dev/null\"\n\
         state_dir = \"{}\"\n",
        state.display()
    );
    let token = "admin_token = \"0123456789abcdef0123456789abcdef\"\n";
    std::fs::write(
        &config,
        format!("{head}{token}[auth]\nmode = \"required\"\n"),
    )
    .unwrap();
    let no_key = format!(
        "auth.mode = \"required\" and the key file {} holds no key: every request will be \
         refused 401; add one with `ollama-guard keys add NAME`",
        state.join("keys.json").display()
    );
    let (code, _, err) = run(&["check-config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches(&no_key).count(), 1, "{err}");
    let mut child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    wait_for_port(admin);
    // The token removed, everyone trusted, [auth] off: one reload. It also moves
    // admin_listen to loopback, which waits for a restart: the listener that runs is still
    // the exposed one, and the warning says so.
    let moved = head.replace(&format!("0.0.0.0:{admin}"), &format!("127.0.0.1:{admin}"));
    std::fs::write(
        &config,
        format!("{moved}trusted_proxies = [\"0.0.0.0/0\"]\n[auth]\nmode = \"off\"\n"),
    )
    .unwrap();
    signal(&child, "HUP");
    for _ in 0..200 {
        if config_reloads(admin) > 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    signal(&child, "TERM");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{err}");
    let exposed = format!(
        "admin_listen 0.0.0.0:{admin} is not on loopback and admin_token is not set: anyone \
         who can reach it can ban and unban, and make and revoke API keys; set admin_token"
    );
    let warned = |text: &str| {
        err.lines()
            .filter(|l| l.contains("WARN") && l.contains(text))
            .count()
    };
    // At start: only the empty key file (the listener had its token).
    assert_eq!(warned(&no_key), 1, "{err}");
    assert_eq!(warned(&exposed), 1, "{err}");
    assert_eq!(
        warned("trusted_proxies contains 0.0.0.0/0: every client can forge X-Forwarded-For"),
        1,
        "{err}"
    );
    assert_eq!(
        warned("auth.mode is now off: requests are no longer checked for API keys"),
        1,
        "{err}"
    );
    let start = err.find("ollama-guard started").expect("started line");
    assert!(
        err.find(&exposed).unwrap() > start,
        "warned on the reload: {err}"
    );

    // A key file serve refuses, check-config refuses the same way.
    std::fs::write(
        state.join("keys.json"),
        r#"{"version":1,"keys":[{"name":"a","role":"user","sha256":"zz","created":"2026-01-01T00:00:00Z"}]}"#,
    )
    .unwrap();
    std::fs::write(
        &config,
        format!("{head}{token}[auth]\nmode = \"observe\"\n"),
    )
    .unwrap();
    let (code, out, err) = run(&["check-config", config.to_str().unwrap()], &[]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(
        err,
        format!(
            "ollama-guard: config error: auth.keys_file: {}: not a valid key file: keys[0] (a): \
             sha256 must be 64 hex digits\n",
            state.join("keys.json").display()
        )
    );
}

#[test]
fn log_format_json_prints_json_lines_on_stderr() {
    let (port, admin) = (free_port(), free_port());
    let mut child = serve_cmd(port, admin)
        .args(["--log-format", "json"])
        .env("OLLAMA_GUARD_TRUSTED_PROXY", "0.0.0.0/0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    signal(&child, "TERM");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{err}");
    assert!(!err.contains("\x1b["), "{err:?}");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("trusted_proxies contains 0.0.0.0/0"))),
        "{err}"
    );
    // The environment selects it too; a bad value is a config error naming the key.
    let (code, _, err) = run(&[], &[("OLLAMA_GUARD_LOG_FORMAT", "xml")]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "ollama-guard: config error: log_format: 'xml' is not one of text, json (from --log-format or OLLAMA_GUARD_LOG_FORMAT)"
    );
}

fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("port {port} never opened");
}

/// `serve` on loopback `port`/`admin` in front of a closed upstream, writing its access log to
/// `access`; `extra` goes first on the command line.
/// `ollama-guard` serving on `port` (admin on `admin`) in front of a dead upstream, no
/// detection log; callers add their own options.
fn serve_cmd(port: u16, admin: u16) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
        "--upstream",
        "http://127.0.0.1:9",
        "--detection-log",
        "/dev/null",
    ]);
    cmd
}

fn serve_with_access_log(
    extra: &[&str],
    port: u16,
    admin: u16,
    access: &std::path::Path,
) -> std::process::Child {
    serve_cmd(port, admin)
        .args(extra)
        .args(["--access-log", access.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A raw `GET path` to the proxy on `port` (connection closed after it); the whole answer.
fn raw_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn sighup_reopens_logs_and_sigterm_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let (port, admin) = (free_port(), free_port());
    let mut child = serve_with_access_log(&[], port, admin, &access);
    wait_for_port(port);
    let get = |p: &str| raw_get(port, p);
    assert!(get("/api/version").starts_with("HTTP/1.1 502"));
    let rotated = dir.path().join("access.log.1");
    for _ in 0..100 {
        if std::fs::metadata(&access)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::rename(&access, &rotated).unwrap();
    signal(&child, "HUP");
    for _ in 0..100 {
        if access.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    get("/api/ps");
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("\"/api/version\""));
    let fresh = std::fs::read_to_string(&access).unwrap();
    assert!(
        fresh.contains("\"/api/ps\"") && !fresh.contains("/api/version"),
        "{fresh}"
    );
}

/// `THP_enabled` of a process (Linux: 0 once `prctl(PR_SET_THP_DISABLE)` was called).
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled line: {status}"))
        .trim()
        .to_owned()
}

/// `serve` turns transparent huge pages off for itself (they made a loaded proxy's RSS about
/// 40 % larger), unless `MIMALLOC_ALLOW_THP` is set: then mimalloc's setting decides.
#[test]
fn serve_runs_without_transparent_huge_pages_unless_mimalloc_is_told_otherwise() {
    assert_eq!(
        thp_enabled(std::process::id()),
        "1",
        "the test process itself has them"
    );
    for (env, want) in [(None, "0"), (Some("1"), "1"), (Some("0"), "0")] {
        let (port, admin) = (free_port(), free_port());
        let mut cmd = serve_cmd(port, admin);
        cmd.env_remove("MIMALLOC_ALLOW_THP").stderr(Stdio::null());
        if let Some(v) = env {
            cmd.env("MIMALLOC_ALLOW_THP", v);
        }
        let mut child = cmd.spawn().unwrap();
        wait_for_port(port);
        assert_eq!(thp_enabled(child.id()), want, "MIMALLOC_ALLOW_THP={env:?}");
        signal(&child, "TERM");
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }
}

/// The access log is buffered (nginx's `buffer=64k flush=1s`): a SIGTERM right after a burst
/// still writes every line.
#[test]
fn sigterm_writes_every_buffered_access_line() {
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let (port, admin) = (free_port(), free_port());
    let mut child = serve_with_access_log(&[], port, admin, &access);
    wait_for_port(port);
    for i in 0..300 {
        let answer = raw_get(port, &format!("/api/tags?n={i}"));
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    }
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let text = std::fs::read_to_string(&access).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 300);
    for (i, line) in lines.iter().enumerate() {
        assert!(line.ends_with(&format!("\"/api/tags?n={i}\"")), "{line}");
    }
}

/// A second SIGTERM stops without waiting for the drain (here a slow upload that would hold
/// it for the whole grace period), but still writes the lines of the requests already
/// answered. The writer also writes on its own once a second: an attempt whose lines were
/// already in the file before the second signal proves nothing and is made again.
#[test]
fn a_second_sigterm_still_writes_the_lines_of_answered_requests() {
    use std::io::Write;
    for _attempt in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let access = dir.path().join("access.log");
        let (port, admin) = (free_port(), free_port());
        let mut child = serve_with_access_log(&[], port, admin, &access);
        wait_for_port(port);
        let mut upload = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            upload,
            "POST /api/create HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\nx"
        )
        .unwrap();
        for i in 0..50 {
            let answer = raw_get(port, &format!("/api/tags?n={i}"));
            assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        }
        signal(&child, "TERM");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            child.try_wait().unwrap(),
            None,
            "the upload holds the drain"
        );
        let written_before = std::fs::metadata(&access).map_or(0, |m| m.len());
        signal(&child, "TERM");
        assert_eq!(child.wait().unwrap().code(), Some(0));
        drop(upload);
        if written_before > 0 {
            continue;
        }
        let text = std::fs::read_to_string(&access).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 50, "{text}");
        for (i, line) in lines.iter().enumerate() {
            assert!(line.ends_with(&format!("\"/api/tags?n={i}\"")), "{line}");
        }
        return;
    }
    panic!("in 10 attempts the writer's own timer always wrote the lines first");
}

/// The last flush of the logs is bounded: an access log on a stdout nobody reads (a full
/// pipe) must not keep the process from exiting after SIGTERM.
#[test]
fn sigterm_exits_although_nobody_reads_the_stdout_log() {
    let (port, admin) = (free_port(), free_port());
    let mut child = serve_cmd(port, admin)
        .args(["--access-log", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _unread = child.stdout.take();
    wait_for_port(port);
    // About 100 bytes a line: 2 000 lines fill a 64 KiB pipe three times over.
    for i in 0..2000 {
        raw_get(port, &format!("/api/tags?n={i}"));
    }
    signal(&child, "TERM");
    let mut code = None;
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            code = status.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if code.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("still running 15 s after SIGTERM with a blocked stdout");
    }
    assert_eq!(code, Some(0));
}

/// Reads `ollama_guard_config_reloads_total` (all its series summed) from the admin port.
fn config_reloads(admin: u16) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let values: Vec<f64> = buf
        .lines()
        .filter(|l| l.starts_with("ollama_guard_config_reloads_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    assert!(!values.is_empty(), "no config_reloads_total series:\n{buf}");
    values.into_iter().sum()
}

#[test]
fn sigusr1_reopens_logs_without_reloading_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let config = dir.path().join("guard.toml");
    std::fs::write(&config, "mode = \"monitor\"\n").unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut child = serve_with_access_log(
        &["--config", config.to_str().unwrap()],
        port,
        admin,
        &access,
    );
    wait_for_port(port);
    wait_for_port(admin);
    let get = |p: &str| raw_get(port, p);
    assert!(get("/api/version").starts_with("HTTP/1.1 502"));
    for _ in 0..100 {
        if std::fs::metadata(&access).is_ok_and(|m| m.len() > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&access, &rotated).unwrap();
    // A changed config file that USR1 must not apply.
    std::fs::write(&config, "mode = \"block\"\n").unwrap();
    signal(&child, "USR1");
    for _ in 0..100 {
        if access.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(access.exists(), "USR1 reopened (recreated) the access log");
    get("/api/ps");
    let after_usr1 = config_reloads(admin);
    // HUP, by contrast, does reload: the counter the assertion above reads does move.
    signal(&child, "HUP");
    let mut after_hup = 0.0;
    for _ in 0..100 {
        after_hup = config_reloads(admin);
        if after_hup > 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(after_usr1, 0.0, "USR1 does not reload the config");
    assert_eq!(after_hup, 1.0, "HUP reloads it");
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("\"/api/version\""));
    let fresh = std::fs::read_to_string(&access).unwrap();
    assert!(
        fresh.contains("\"/api/ps\"") && !fresh.contains("/api/version"),
        "{fresh}"
    );
}

#[test]
fn demo_runs_the_scripted_attack_and_exits_0() {
    let (code, out, err) = run(&["demo"], &[]);
    assert_eq!(code, 0, "{err}");
    // One sentence per event (time, kind, who, rule), no raw JSON.
    assert!(out.lines().all(|l| !l.starts_with('{')), "{out}");
    let has = |kind: &str, text: &str| {
        out.lines().any(|l| {
            l.split_once(' ')
                .is_some_and(|(_, rest)| rest.starts_with(kind) && l.contains(text))
        })
    };
    assert!(
        has(
            "detection: ",
            "127.0.0.66 flagged by model_exfiltration (Potential Data Exfiltration) on "
        ),
        "{out}"
    );
    assert!(has("detection: ", "; severity so far "), "{out}");
    assert!(
        has(
            "window_summary: ",
            "127.0.0.66 in model_exfiltration's window "
        ),
        "{out}"
    );
    assert!(
        has(
            "detection: ",
            "127.0.0.66 flagged by metadata_enumeration (Model Metadata Enumeration): "
        ),
        "{out}"
    );
    assert!(
        !out.contains("127.0.0.1 "),
        "normal traffic is never flagged: {out}"
    );
    assert!(err.contains("ollama_guard_detections_total"), "{err}");
    assert!(
        err.lines().any(|l| l
            == "demo: 127.0.0.66 flagged by metadata_enumeration and model_exfiltration; 127.0.0.1 not flagged"),
        "{err}"
    );
    assert!(
        err.contains("demo: two kinds of detection lines follow: a `detection` is written the moment a key crosses its rule's threshold, with the figures known so far (so its severity is the severity so far); a `window_summary` is written when that window closes"),
        "{err}"
    );
    assert!(
        !err.contains("\x1b[") && !out.contains("\x1b["),
        "no colour when not a terminal: {err:?}"
    );
}

#[test]
fn unopenable_log_or_state_dir_is_a_config_error_before_anything_binds() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (code, _, err) = run(
        &[
            "--listen",
            &listen,
            "--admin-listen",
            "127.0.0.1:0",
            "--detection-log",
            "/nonexistent/dir/d.log",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        err.starts_with(
            "ollama-guard: config error: detection_log: cannot open /nonexistent/dir/d.log"
        ),
        "{err}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let (code, _, err) = run(
        &[
            "--listen",
            &listen,
            "--admin-listen",
            "127.0.0.1:0",
            "--detection-log",
            "/dev/null",
            "--state-dir",
            file.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("config error: state_dir:"), "{err}");
    // A state directory whose parent does not exist (a typo) is refused, not created with its
    // parents.
    let parent = tempfile::tempdir().unwrap();
    let typo = parent.path().join("no-such-dir").join("state");
    let (code, _, err) = run(
        &[
            "--listen",
            &listen,
            "--admin-listen",
            "127.0.0.1:0",
            "--detection-log",
            "/dev/null",
            "--state-dir",
            typo.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert_eq!(
        err,
        format!(
            "ollama-guard: config error: state_dir: {} cannot be created: its parent directory \
             does not exist\n",
            typo.display()
        )
    );
    assert!(!parent.path().join("no-such-dir").exists());
    assert!(
        std::net::TcpListener::bind(&listen).is_ok(),
        "nothing was bound"
    );
}

#[test]
fn check_config_output_is_itself_a_valid_config_with_the_same_effect() {
    let dir = tempfile::tempdir().unwrap();
    let text = "mode = \"block\"\nallowlist = [\"10.0.0.0/8\"]\n";
    let (code, out1, err) = check_config(&dir, "a.toml", text);
    assert_eq!(code, 0, "{err}");
    let (code, out2, err) = check_config(&dir, "b.toml", &out1);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out1, out2, "the effective config is a fixed point");
}

#[test]
fn demo_in_block_mode_refuses_the_push_bans_and_cuts_the_transfer() {
    let (code, out, err) = run(&["demo", "--mode", "block", "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |src: &str, event: &str| {
        events
            .iter()
            .filter(|e| e["src"] == src && e["event"] == event)
            .count()
    };
    assert!(
        events.iter().any(|e| e["rule"] == "policy.registry_push"
            && e["action"] == "blocked"
            && e["src"] == "127.0.0.66"),
        "{out}"
    );
    assert_eq!(of("127.0.0.66", "ban"), 1, "{out}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "aborted" && e["uri_path"] == "/api/pull"),
        "the running transfer was cut: {out}"
    );
    assert!(err.contains("background pull: cut after"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("demo: 127.0.0.66 flagged by ")
                && l.contains("policy.registry_push (banned by ")
                && l.ends_with("); 127.0.0.1 not flagged")),
        "{err}"
    );
    assert!(
        events.iter().all(|e| e["src"] != "127.0.0.1"),
        "normal traffic is never touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_is_0_when_ready_and_1_when_not() {
    let s = common::stack().await;
    let mut ready = http::StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        ready = common::get(&format!("{}/readyz", s.admin)).await.status;
        if ready == http::StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ready, http::StatusCode::OK);
    let admin = s.admin.clone();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run(&["healthcheck", "--admin", &admin], &[]))
            .await
            .unwrap();
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));

    // A closed port: exit 1, one line saying why.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run(&["healthcheck", "--admin", &closed], &[]))
            .await
            .unwrap();
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert!(
        err.starts_with("ollama-guard: healthcheck: not ready: cannot reach http://127.0.0.1:")
            && err.ends_with('\n')
            && err.lines().count() == 1,
        "{err}"
    );

    // A listener that never answers: exit 1 after the 3 s timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let (code, _, err) =
        tokio::task::spawn_blocking(move || run(&["healthcheck", "--admin", &url], &[]))
            .await
            .unwrap();
    drop(silent);
    assert_eq!(code, 1);
    assert!(err.contains("did not answer within 3s"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_is_1_when_the_upstream_is_down() {
    let dead = common::loopback().await;
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let server = ollama_guard::serve::Server::start(
        common::config(&url, &dir, ollama_guard::config::ServeArgs::default(), ""),
        common::loopback().await,
        common::loopback().await,
    )
    .await
    .unwrap();
    let admin = format!("http://{}", server.admin_addr);
    let (code, _, err) =
        tokio::task::spawn_blocking(move || run(&["healthcheck", "--admin", &admin], &[]))
            .await
            .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("answered 503"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn completions_bash_names_the_subcommands() {
    let (code, out, err) = run(&["completions", "bash"], &[]);
    assert_eq!(code, 0, "{err}");
    for sub in ["healthcheck", "scan", "bans", "check-config"] {
        assert!(out.contains(sub), "{sub} missing");
    }
    let (code, _, _) = run(&["completions", "tcsh"], &[]);
    assert_eq!(code, 2);
}

#[test]
fn version_names_the_revision() {
    let (code, out, err) = run(&["--version"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "ollama-guard {} (rev {})\n",
            env!("CARGO_PKG_VERSION"),
            common::expected_revision()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_holding_the_listen_port_is_named_with_the_fix() {
    // Ollama itself (the simulator answers /api/version like it) holds the guard's port.
    let sim = ollama_sim::spawn(common::loopback().await, ollama_sim::SimConfig::default()).await;
    let addr = sim.url().trim_start_matches("http://").to_owned();
    let listen = addr.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run(
            &[
                "--listen",
                &listen,
                "--admin-listen",
                "127.0.0.1:0",
                "--upstream",
                "http://127.0.0.1:9",
                "--detection-log",
                "/dev/null",
            ],
            &[],
        )
    })
    .await
    .unwrap();
    sim.shutdown().await;
    assert_eq!(code, 1, "exit code as for other bind errors");
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "ollama-guard: listen: cannot listen on {addr}: the port is held by Ollama itself \
             (version 0.12.3 answers GET /api/version there), so clients reach Ollama unguarded; \
             move Ollama to the upstream the guard forwards to, 127.0.0.1:9, with \
             OLLAMA_HOST=127.0.0.1:9 on the host it names (systemd: the drop-in \
             /etc/systemd/system/ollama.service.d/zz-ollama-guard.conf, its OLLAMA_HOST set to \
             that address, which must sort after override.conf), then run: systemctl \
             daemon-reload && systemctl restart ollama\n"
        )
    );
}

#[test]
fn check_config_merges_env_and_options_like_serve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    std::fs::write(&path, "admin_token = \"s3cret\"\n[ban]\nmax = \"48h\"\n").unwrap();
    let file = path.to_str().unwrap();
    let (code, out, err) = run(&["check-config", file], &[("OLLAMA_GUARD_MODE", "blok")]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(
        err,
        "ollama-guard: config error: mode: 'blok' is not one of monitor, block (from --mode or OLLAMA_GUARD_MODE)\n"
    );
    let (code, out, err) = run(
        &["check-config", file, "--listen", "127.0.0.1:18111"],
        &[("OLLAMA_GUARD_MODE", "block")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, format!("ollama-guard: config ok: {file}\n"));
    let cpus = std::thread::available_parallelism().unwrap().get();
    for line in [
        "listen = \"127.0.0.1:18111\"".to_owned(),
        "mode = \"block\"".to_owned(),
        "admin_token = \"<redacted>\"".to_owned(),
        format!("workers = 0 # {cpus} on this host (one per CPU)"),
        "duration = \"15m\"".to_owned(),
        "max = \"2d\"".to_owned(),
        "memory = \"7d\"".to_owned(),
        "upstream_idle = \"90s\"".to_owned(),
        "body_idle = \"5m\"".to_owned(),
        "send_idle = \"1m\"".to_owned(),
        "attack_type = \"Potential Data Exfiltration\"".to_owned(),
    ] {
        assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
    }
    assert!(!out.contains("s3cret"), "{out}");
    // The options given to check-config are checked too.
    let (code, _, err) = run(&["check-config", file, "--workers", "5000"], &[]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "ollama-guard: config error: workers: 5000 is more than 1024\n"
    );
    // An explicit worker count is printed as is; the output is a config check-config accepts.
    let (code, out, _) = run(&["check-config", file, "--workers", "3"], &[]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l == "workers = 3"), "{out}");
    // A rule without attack_type: the detection log writes its name, and so does check-config.
    let (code, out, _) = check_config(&dir, "r.toml", "[[rule]]\nname = \"probe\"\n");
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l == "attack_type = \"probe\""), "{out}");
    // No file: the defaults, environment and options.
    let (code, _, err) = run(&["check-config"], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        err,
        "ollama-guard: config ok: no file (defaults, environment and options)\n"
    );
}

#[test]
fn the_file_keys_are_read_from_the_environment_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    std::fs::write(
        &path,
        "[timeouts]\nbody_idle = \"5m\"\n[policy]\nmax_body = \"1MiB\"\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let (code, out, err) = run(
        &["check-config", file],
        &[
            ("OLLAMA_GUARD_TIMEOUTS_BODY_IDLE", "2m"),
            ("OLLAMA_GUARD_MAX_BODY", "2MiB"),
            ("OLLAMA_GUARD_ENFORCEMENT_ABORT_IN_FLIGHT", "false"),
            ("OLLAMA_GUARD_MAX_TRACKED_KEYS", "5000"),
            ("OLLAMA_GUARD_BAN_DURATION", "1h"),
            ("OLLAMA_GUARD_ALLOWLIST", "10.9.0.0/16, 10.8.0.1"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    for line in [
        "body_idle = \"2m\"",
        "max_body = \"2MiB\"",
        "abort_in_flight = false",
        "max_tracked_keys = 5000",
        "duration = \"1h\"",
        "allowlist = [\"10.9.0.0/16\", \"10.8.0.1/32\"]",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
    }
    // A bad value is refused like the file's, naming the variable that set it.
    let (code, out, err) = run(
        &["check-config", file],
        &[("OLLAMA_GUARD_BODY_IDLE", "soon")],
    );
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(
        err,
        "ollama-guard: config error: timeouts.body_idle: 'soon' is not a duration like 250ms, 55s, 15m \
         (expected number at 0) (from OLLAMA_GUARD_BODY_IDLE)\n"
    );
    let (code, _, err) = run(
        &["check-config", file],
        &[("OLLAMA_GUARD_POLICY_BAN", "perhaps")],
    );
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "ollama-guard: config error: policy.ban: OLLAMA_GUARD_POLICY_BAN: 'perhaps' is not true or false\n"
    );
}

#[test]
fn the_sink_example_with_empty_token_and_index_takes_the_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[sinks.splunk_hec]\nurl = \"https://splunk.example:8088/services/collector/event\"\n\
                token = \"\"\nindex = \"\"\nsourcetype = \"ollama:guard:detection\"\nrequests = false\n";
    let path = dir.path().join("hec.toml");
    std::fs::write(&path, text).unwrap();
    let file = path.to_str().unwrap();
    let (code, out, err) = run(
        &["check-config", file],
        &[("OLLAMA_GUARD_SPLUNK_HEC_TOKEN", "abc")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("abc"), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("index")), "{out}");
    let (code, _, err) = run(&["check-config", file], &[]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "ollama-guard: config error: sinks.splunk_hec.token: required (or set OLLAMA_GUARD_SPLUNK_HEC_TOKEN)\n"
    );
}

#[test]
fn man_prints_a_manual_page_naming_every_command() {
    let (code, out, err) = run(&["man"], &[]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(
        out.lines().any(|l| l.starts_with(".TH ollama-guard 1")),
        "{out}"
    );
    for cmd in [
        "status",
        "bans",
        "check\\-config",
        "demo",
        "healthcheck",
        "man",
    ] {
        assert!(
            out.lines()
                .any(|l| l == format!("ollama\\-guard\\-{cmd}(1)")),
            "{cmd} missing:\n{out}"
        );
    }
}

#[test]
fn a_manual_ban_in_monitor_mode_is_a_warn_line_of_the_server() {
    let (port, admin) = (free_port(), free_port());
    let mut child = serve_cmd(port, admin)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(admin);
    let url = format!("http://127.0.0.1:{admin}");
    let (code, _, err) = run(&["bans", "add", "127.0.0.72", "--admin", &url], &[]);
    assert_eq!(code, 0, "{err}");
    signal(&child, "TERM");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{log}");
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("manual ban stored but not enforced: mode is monitor; bans are enforced in block mode"))
        .collect();
    assert_eq!(warns.len(), 1, "{log}");
    assert!(warns[0].contains("src=127.0.0.72"), "{log}");
}

/// CPU numbers in a kernel CPU list ("0-3,6").
#[cfg(target_os = "linux")]
fn cpu_list(text: &str) -> Vec<usize> {
    text.trim()
        .split(',')
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            lo.parse().unwrap()..=hi.parse().unwrap()
        })
        .collect()
}

/// `Cpus_allowed_list` of a `/proc` status file.
#[cfg(target_os = "linux")]
fn allowed_in(status: &std::path::Path) -> Option<Vec<usize>> {
    let text = std::fs::read_to_string(status).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(cpu_list)
}

/// The CPUs each proxy worker thread of `pid` may run on (threads named
/// `ollama-guard-proxy-N`, which the kernel shortens to 15 bytes), sorted.
#[cfg(target_os = "linux")]
fn worker_cpus(pid: u32) -> Vec<Vec<usize>> {
    let mut lists: Vec<Vec<usize>> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| dir.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == "ollama-guard-pr")
        })
        .filter_map(|task| allowed_in(&task.path().join("status")))
        .collect();
    lists.sort();
    lists
}

/// Serves with `extra` options and returns the workers' CPU lists and the diagnostics. The
/// lists are read once they equal `want` (5 s at most), and again 300 ms later: a worker
/// pins itself when it starts, so a list that was right before a wrong pin is read again.
#[cfg(target_os = "linux")]
fn served_worker_cpus(extra: &[&str], want: &[Vec<usize>]) -> (Vec<Vec<usize>>, String) {
    let (port, admin) = (free_port(), free_port());
    let mut child = serve_cmd(port, admin)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    for _ in 0..200 {
        if worker_cpus(child.id()) == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    std::thread::sleep(Duration::from_millis(300));
    let seen = worker_cpus(child.id());
    signal(&child, "TERM");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{err}");
    (seen, err)
}

#[cfg(target_os = "linux")]
#[test]
fn proxy_workers_are_pinned_one_per_cpu_only_when_there_are_as_many_as_cpus() {
    const PINNING: &str = "pinning the proxy workers, one per CPU";
    // The CPUs a child may run on: this test's own (a child inherits them).
    let cpus = allowed_in(std::path::Path::new("/proc/thread-self/status")).unwrap();
    let n = cpus.len();
    let workers = n.to_string();
    let unpinned = |count: usize| vec![cpus.clone(); count];
    // As many workers as CPUs: one CPU each, a different one, all of them covered. (On a
    // one-CPU machine one worker is never pinned: there is nothing to choose.)
    let pinned: Vec<Vec<usize>> = if n > 1 {
        cpus.iter().map(|&c| vec![c]).collect()
    } else {
        unpinned(1)
    };
    let (seen, err) = served_worker_cpus(&["--workers", &workers], &pinned);
    assert_eq!(seen, pinned);
    assert_eq!(err.contains(PINNING), n > 1, "{err}");
    // The default (workers = 0: one per available CPU) is the same, unless a CPU quota
    // makes the available CPUs fewer than the allowed ones: then it is not pinned.
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let default = if available == n {
        pinned.clone()
    } else {
        unpinned(available)
    };
    assert_eq!(served_worker_cpus(&[], &default).0, default);
    // Off: every worker keeps every CPU.
    let (seen, err) = served_worker_cpus(
        &["--workers", &workers, "--cpu-affinity", "off"],
        &unpinned(n),
    );
    assert_eq!(seen, unpinned(n));
    assert!(!err.contains(PINNING), "{err}");
    // More workers than CPUs: left to the scheduler, never two pinned to one CPU.
    let more = (n + 1).to_string();
    let (seen, err) = served_worker_cpus(&["--workers", &more], &unpinned(n + 1));
    assert_eq!(seen, unpinned(n + 1));
    assert!(!err.contains(PINNING), "{err}");
    // From the environment too; a bad value names the key.
    let (code, _, err) = run(&[], &[("OLLAMA_GUARD_CPU_AFFINITY", "always")]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "ollama-guard: config error: cpu_affinity: 'always' is not one of auto, off (from --cpu-affinity or OLLAMA_GUARD_CPU_AFFINITY)"
    );
}
