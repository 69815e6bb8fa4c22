//! Build script: the revision `ollama_guard_build_info{revision}` and `--version` report.
//!
//! In a git checkout (`.git` present, a directory or a worktree's file) it is
//! `git rev-parse --short=12 HEAD`; otherwise the `OLLAMA_GUARD_REVISION` environment variable
//! at build time (the Dockerfile passes its `REVISION` build argument, since `.git` is not in
//! the build context); otherwise `unknown`. Exported to the crate as
//! `OLLAMA_GUARD_BUILD_REVISION`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// A revision as a label may carry it: short, and only `[0-9A-Za-z._-]`.
fn sanitise(rev: &str) -> Option<String> {
    let rev = rev.trim();
    let ok = !rev.is_empty()
        && rev.len() <= 64
        && rev
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then(|| rev.to_owned())
}

/// The revision of the checkout at `root`, registering the files whose change must rerun
/// this script (HEAD, the branch it names, packed refs).
fn from_git(root: &Path) -> Option<String> {
    if !root.join(".git").exists() {
        return None;
    }
    let rev = git(&["-C", root.to_str()?, "rev-parse", "--short=12", "HEAD"])?;
    let abs = |p: String| -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            root.join(p)
        }
    };
    let root_s = root.to_str()?;
    // Only files that exist: cargo reruns a script on every build while a listed path is
    // missing (a packed branch has no loose ref file; a worktree's `.git` is a file).
    let watch = |p: PathBuf| {
        if p.is_file() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    };
    if let Some(head) = git(&["-C", root_s, "rev-parse", "--git-path", "HEAD"]) {
        watch(abs(head));
    }
    if let Some(branch) = git(&["-C", root_s, "symbolic-ref", "-q", "HEAD"]) {
        if let Some(reference) = git(&["-C", root_s, "rev-parse", "--git-path", &branch]) {
            watch(abs(reference));
        }
    }
    if let Some(packed) = git(&["-C", root_s, "rev-parse", "--git-path", "packed-refs"]) {
        watch(abs(packed));
    }
    sanitise(&rev)
}

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=OLLAMA_GUARD_REVISION");
    let revision = from_git(&root)
        .or_else(|| {
            std::env::var("OLLAMA_GUARD_REVISION")
                .ok()
                .and_then(|r| sanitise(&r))
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=OLLAMA_GUARD_BUILD_REVISION={revision}");
}
