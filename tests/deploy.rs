//! The deploy kit (`deploy/`, `Dockerfile`) stays consistent: the alert rules pass `promtool
//! check` and their unit tests, every alert is tested, has a runbook section and the agreed
//! severity, the Kubernetes PrometheusRule carries the same rules, images are pinned, and the
//! Ollama drop-in sorts after `systemctl edit`'s `override.conf`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Runs `promtool ARGS` in `dir`; panics with its output unless it succeeds.
fn promtool(dir: &str, args: &[&str]) -> String {
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let out = Command::new(&promtool)
        .args(args)
        .current_dir(path(dir))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is required for this test (apt-get install prometheus): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// `(alert name, severity, runbook_url)` of every rule in the rules file, in order.
fn alerts() -> Vec<(String, String, String)> {
    let text = read("deploy/prometheus/ollama-guard.rules.yml");
    let mut out = Vec::new();
    for block in text.split("- alert: ").skip(1) {
        let name = block.lines().next().unwrap().trim().to_owned();
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .unwrap_or_else(|| panic!("{name}: no {key}"))
                .trim()
                .trim_matches('"')
                .to_owned()
        };
        out.push((name.clone(), field("severity:"), field("runbook_url:")));
    }
    out
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let check = promtool(
        "deploy/prometheus",
        &["check", "rules", "ollama-guard.rules.yml"],
    );
    assert!(
        check.contains(&format!("SUCCESS: {} rules found", alerts().len())),
        "{check}"
    );
    let test = promtool(
        "deploy/prometheus",
        &["test", "rules", "ollama-guard.rules.test.yml"],
    );
    assert!(test.contains("SUCCESS"), "{test}");
    promtool("deploy/prometheus", &["check", "config", "prometheus.yml"]);
}

#[test]
fn every_alert_fires_in_the_rule_tests() {
    let tests = read("deploy/prometheus/ollama-guard.rules.test.yml");
    for (name, _, _) in alerts() {
        // A test case whose exp_alerts is a non-empty list: the alert fires there.
        let fires = tests
            .split("alertname: ")
            .skip(1)
            .filter(|case| case.lines().next().unwrap().trim() == name)
            .any(|case| {
                let mut lines = case.lines().skip(1);
                let exp = lines.next().unwrap().trim();
                exp == "exp_alerts:" && lines.next().unwrap().trim().starts_with("- exp_labels:")
            });
        assert!(fires, "{name} never fires in ollama-guard.rules.test.yml");
    }
}

#[test]
fn only_prevention_class_alerts_are_critical() {
    let critical: Vec<String> = alerts()
        .into_iter()
        .filter(|(_, sev, _)| sev == "critical")
        .map(|(name, _, _)| name)
        .collect();
    assert_eq!(
        critical,
        [
            "OllamaGuardPolicyRefusal",
            "OllamaGuardPolicyViolationNotBlocked",
            "OllamaGuardBanStorm"
        ]
    );
    for (name, sev, _) in alerts() {
        assert!(
            ["critical", "warning", "info"].contains(&sev.as_str()),
            "{name}: {sev}"
        );
    }
}

#[test]
fn every_alert_has_a_runbook_section_in_the_readme() {
    let readme = read("README.md");
    let runbook = readme.split("\n## Alerts / runbook\n").nth(1).unwrap();
    let runbook = runbook.split("\n## ").next().unwrap();
    let mut sections: Vec<&str> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .collect();
    let mut names: Vec<String> = Vec::new();
    for (name, _, url) in alerts() {
        // GitHub's anchor of "### OllamaGuardX" is "#ollamaguardx".
        assert_eq!(
            url,
            format!(
                "https://ollama-guard.example/README.md#{}",
                name.to_lowercase()
            ),
            "{name}"
        );
        names.push(name);
    }
    sections.sort_unstable();
    names.sort();
    assert_eq!(sections, names, "one README runbook section per alert");
}

#[test]
fn the_prometheusrule_carries_the_rules_file() {
    let rules = read("deploy/prometheus/ollama-guard.rules.yml");
    let groups = &rules[rules.find("\ngroups:\n").unwrap() + 1..];
    let indented: String = groups
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("  {l}\n")
            }
        })
        .collect();
    let cr = read("deploy/kubernetes/prometheusrule.yaml");
    let spec = cr.split("\nspec:\n").nth(1).unwrap();
    assert!(
        spec == indented,
        "deploy/kubernetes/prometheusrule.yaml differs from the rules file: regenerate it with \
         the command at its top"
    );
}

#[test]
fn kustomization_lists_every_manifest() {
    let kustomization = read("deploy/kubernetes/kustomization.yaml");
    let mut files: Vec<String> = std::fs::read_dir(path("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in &files {
        assert!(
            kustomization.contains(&format!("  - {f}\n")),
            "{f} is not in kustomization.yaml"
        );
    }
}

/// `image:` and `FROM` references in the deploy kit name a version, never `latest` or none.
#[test]
fn images_are_pinned() {
    let mut refs = Vec::new();
    for file in [
        "deploy/compose/docker-compose.yml",
        "deploy/kubernetes/deployment.yaml",
    ] {
        for l in read(file).lines() {
            if let Some(image) = l.trim().strip_prefix("image: ") {
                refs.push((file, image.split_whitespace().next().unwrap().to_owned()));
            }
        }
    }
    for l in read("Dockerfile").lines() {
        if let Some(from) = l.strip_prefix("FROM ") {
            refs.push((
                "Dockerfile",
                from.split_whitespace().next().unwrap().to_owned(),
            ));
        }
    }
    assert!(refs.len() >= 8, "{refs:?}");
    for (file, image) in refs {
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()),
            "{file}: {image} is not pinned to a version"
        );
        // rust:1-bookworm or debian:bookworm-slim would move: a version has a dot.
        assert!(tag.contains('.'), "{file}: {image} names no exact version");
    }
}

#[test]
fn the_ollama_drop_in_sorts_after_systemctl_edits_override() {
    let dir = path("deploy/systemd/ollama.service.d");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["zz-ollama-guard.conf"]);
    // systemd applies drop-ins in lexical (byte) order; the last OLLAMA_HOST wins.
    assert!("zz-ollama-guard.conf" > "override.conf");
    let conf = read("deploy/systemd/ollama.service.d/zz-ollama-guard.conf");
    assert!(conf.contains("\nEnvironment=OLLAMA_HOST=127.0.0.1:11435\n"));
    // Every mention of a drop-in in the repository uses the new name.
    let out = Command::new("git")
        .args([
            "grep",
            "-n",
            "10-ollama-guard",
            "--",
            ".",
            ":!tests/deploy.rs",
        ])
        .current_dir(ROOT)
        .output()
        .unwrap();
    let hits = String::from_utf8_lossy(&out.stdout);
    // Only the upgrade notes that tell operators to delete the old file may name it.
    for hit in hits.lines() {
        assert!(
            ["remove", "rm ", "delete"].iter().any(|w| hit.contains(w)),
            "stale reference: {hit}"
        );
    }
}

#[test]
fn the_license_file_matches_cargo_toml() {
    let cargo = read("Cargo.toml");
    assert!(cargo.contains("\nlicense = \"Apache-2.0\"\n"));
    let license = read("LICENSE");
    assert!(
        license.contains("Apache License\n                           Version 2.0, January 2004")
    );
    assert!(license.contains("END OF TERMS AND CONDITIONS"));
    assert!(read("Dockerfile").contains("org.opencontainers.image.licenses=\"Apache-2.0\""));
}

/// Runs a script of `deploy/pgo/` with bash; returns (exit code, stderr).
fn pgo_script(script: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new("bash")
        .arg(path(&format!("deploy/pgo/{script}")))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(ROOT)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The profile-guided build's training run works against the binary as it is today: the calls
/// that must succeed do (curl -f), block mode bans and refuses, the guard logs every call, and
/// `scan` reads the generated log. A CLI change that broke the training would otherwise only
/// show when someone builds the image.
#[test]
fn the_pgo_training_run_drives_the_proxy_and_scan() {
    let (code, err) = pgo_script("train.sh", &[env!("CARGO_BIN_EXE_ollama-guard"), "30"], &[]);
    assert_eq!(code, 0, "{err}");
    // Monitor mode: 9 kinds of call x 30, 200 foreign-Host calls (403), 200 PATCH calls (405)
    // and the readiness probe (671). Block mode: 30 new sources, 4 x (130 + 30) calls of the
    // sources banned at their 121st call (4 x 39 refused), 30 pushes refused by the policy and
    // the probe (701). Then 30 x 60 generated lines plus the access log.
    assert_eq!(
        err.lines().last(),
        Some(
            "train.sh: 1372 requests in the access log, 386 of them refused (403), \
             3172 log lines scanned three times"
        ),
        "{err}"
    );
}

#[test]
fn the_pgo_training_run_fails_at_once_when_the_binary_does_not_start() {
    let (code, err) = pgo_script("train.sh", &["/bin/false", "30"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("train.sh: the simulator did not start"),
        "{err}"
    );
    let (code, err) = pgo_script("train.sh", &["/nonexistent/ollama-guard"], &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "train.sh: /nonexistent/ollama-guard is not an executable\n"
    );
}

/// build.sh refuses, before building anything, an llvm-profdata that is missing or of another
/// LLVM major version than rustc's (its profile would be unreadable or silently ignored).
#[test]
fn the_pgo_build_refuses_a_missing_or_mismatched_llvm_profdata() {
    let (code, err) = pgo_script(
        "build.sh",
        &[],
        &[("LLVM_PROFDATA", "/nonexistent/llvm-profdata")],
    );
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "pgo: llvm-profdata not found at /nonexistent/llvm-profdata: run `rustup component add llvm-tools` or set LLVM_PROFDATA\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("llvm-profdata");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'LLVM (http://llvm.org/):'\necho '  LLVM version 3.4.0'\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let rustc = Command::new("rustc").arg("-vV").output().unwrap();
    let llvm = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next().map(str::to_owned))
        .unwrap();
    let (code, err) = pgo_script(
        "build.sh",
        &[],
        &[("LLVM_PROFDATA", fake.to_str().unwrap())],
    );
    assert_eq!(code, 2);
    assert_eq!(
        err,
        format!(
            "pgo: {} is LLVM 3, rustc uses LLVM {llvm}: the profile would not be read\n",
            fake.display()
        )
    );
}
