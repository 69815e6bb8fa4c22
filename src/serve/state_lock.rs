//! One running instance per `state_dir`.
//!
//! Two instances writing one `state_dir` lose bans: each compacts into its own snapshot and
//! journal, and the other keeps appending to a file that is no longer read at start-up. So
//! `serve` takes an exclusive `flock` on `state_dir/lock` before it restores anything and
//! holds it until it exits (the kernel releases it with the process, even after `kill -9`).
//! A second instance is refused at start (exit 2, naming `state_dir` and, when the file
//! says, the holder's pid). Replicas share bans through `[cluster]`, each with its own
//! `state_dir`. A file system that does not support `flock` is used without the lock, with a
//! warning.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;

use crate::config::ConfigError;

/// The name of the lock file inside `state_dir`.
pub(crate) const LOCK_FILE: &str = "lock";

/// The lock on a `state_dir`, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    _file: Option<File>,
}

/// Takes the lock on `dir` (an existing, writable directory) and writes this process's id
/// into the lock file.
pub(crate) fn lock(dir: &Path) -> Result<StateLock, ConfigError> {
    let path = dir.join(LOCK_FILE);
    let refuse = |why: String| ConfigError::invalid("state_dir", why);
    // A lock file left by another user (a `sudo` run) is locked read-only: flock needs no
    // write access, and the directory is writable (the preflight checked it).
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => File::open(&path),
            _ => Err(e),
        })
        .map_err(|e| refuse(format!("cannot open {}: {e}", path.display())))?;
    match try_lock(&file) {
        Locked::Yes => {
            // The pid is for the operator (and the message below); the lock is the flock.
            let _ = file
                .set_len(0)
                .and_then(|()| writeln!(file, "{}", std::process::id()));
            Ok(StateLock { _file: Some(file) })
        }
        Locked::Held => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok())
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            Err(refuse(format!(
                "{} is in use by another running ollama-guard{holder}: give each instance its own \
                 state_dir (replicas share bans through [cluster])",
                dir.display()
            )))
        }
        Locked::Unsupported(e) => {
            eprintln!(
                "ollama-guard: warning: state_dir: cannot lock {} ({e}): make sure no other \
                 instance uses {}",
                path.display(),
                dir.display()
            );
            Ok(StateLock { _file: None })
        }
    }
}

enum Locked {
    Yes,
    Held,
    Unsupported(std::io::Error),
}

#[cfg(target_os = "linux")]
fn try_lock(file: &File) -> Locked {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Locked::Yes,
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Locked::Held,
        Err(e) => Locked::Unsupported(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn try_lock(_file: &File) -> Locked {
    Locked::Unsupported(std::io::Error::other("no flock on this platform"))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_naming_the_key_and_the_holder() {
        let dir = std::env::temp_dir().join(format!("og-state-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let first = lock(&dir).unwrap();
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap(),
            format!("{pid}\n")
        );
        // A second open file description, as a second process would have: refused.
        let err = lock(&dir).unwrap_err().to_string();
        assert!(err.starts_with("config error: state_dir: "), "{err}");
        assert!(
            err.contains(&format!(
                "is in use by another running ollama-guard (pid {pid})"
            )),
            "{err}"
        );
        // The holder's pid is still in the file; released with the first lock.
        assert_eq!(
            std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap(),
            format!("{pid}\n")
        );
        drop(first);
        let again = lock(&dir).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
