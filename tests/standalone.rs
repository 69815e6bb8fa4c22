//! The repository stands alone: a clean clone, with nothing beside it, has every file the
//! tests read. Proven on a temporary copy of the tracked files only (what `git clone` gives).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The files git tracks (plus new, not ignored ones), copied to a fresh directory.
fn clean_copy() -> (tempfile::TempDir, Vec<PathBuf>) {
    let out = Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "-z",
        ])
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert!(out.status.success(), "git ls-files failed");
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let rel = PathBuf::from(std::str::from_utf8(name).unwrap());
        let src = Path::new(ROOT).join(&rel);
        if !src.is_file() {
            continue; // deleted in the work tree
        }
        let dst = dir.path().join(&rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&src, &dst).unwrap();
        files.push(rel);
    }
    (dir, files)
}

/// Every data file the Rust tests name: `data_file("x")`, `tests/data/x`, `{DATA}/x`.
fn data_lookups(copy: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut names = Vec::new();
    let is_test_source =
        |f: &&PathBuf| f.extension().is_some_and(|e| e == "rs") && !f.ends_with("standalone.rs");
    for rel in files.iter().filter(is_test_source) {
        let text = std::fs::read_to_string(copy.join(rel)).unwrap();
        for (open, close) in [
            ("data_file(\"", "\""),
            ("tests/data/", "\""),
            ("{DATA}/", "\""),
        ] {
            for piece in text.split(open).skip(1) {
                let name = piece.split(close).next().unwrap();
                if !name.is_empty() && !name.contains(['{', ' ', '(']) {
                    names.push(name.to_owned());
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_data_file_the_tests_read_is_in_a_clean_copy_of_the_repository() {
    let (copy, files) = clean_copy();
    let names = data_lookups(copy.path(), &files);
    assert!(
        names.len() >= 3,
        "the scan found too few lookups to mean anything: {names:?}"
    );
    for name in &names {
        let path = copy.path().join("tests/data").join(name);
        assert!(
            path.is_file(),
            "{name} is read by a test but not in tests/data"
        );
        assert!(
            std::fs::metadata(&path).unwrap().len() > 0,
            "{name} is empty"
        );
    }
}

#[test]
fn no_tracked_file_reaches_outside_the_repository_for_data() {
    let (copy, files) = clean_copy();
    let outside = ["../shared", "/shared/data"];
    for rel in &files {
        let Ok(text) = std::fs::read_to_string(copy.path().join(rel)) else {
            continue; // binary
        };
        if rel == Path::new("tests/standalone.rs") {
            continue; // names the forbidden paths to look for them
        }
        for needle in outside {
            assert!(
                !text.contains(needle),
                "{} refers to {needle}, which a clean clone does not have",
                rel.display()
            );
        }
    }
}
