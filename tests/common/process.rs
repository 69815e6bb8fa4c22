//! Helpers for tests that run the real binary as a separate process (the guard or the
//! simulator): free ports, spawning with stderr captured to a file, signals, and a tmpfs
//! mount that is always unmounted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_ollama-guard");

/// First port [`free_port`] hands out, and how many it cycles through: below the kernel's
/// ephemeral range (32768 and up by default on Linux), where every `bind(…:0)` of the
/// tests' in-process servers and clients takes its port.
const PORTS_FROM: u16 = 20_000;
const PORTS: u16 = 10_000;

/// A loopback port nobody listens on right now, for a child process to bind.
///
/// Why not a port the kernel picks (`bind(…:0)`, then released): between the release and
/// the child's bind, another test of the same binary could be given the same port by the
/// kernel, and a test then talked to the wrong server (it happened once in CI, with nginx).
/// These ports are outside the kernel's range, and this process never hands one out twice
/// (a counter from a start that differs between test binaries).
/// Whether `port` can be bound on loopback: a socket is bound (with `SO_REUSEADDR`, as every
/// server the tests start binds) but never listens. A listening probe could be inherited by a
/// child another test spawns at that moment and live until the child's `exec`; a client of
/// this port then connected to it and was reset when it closed (a test flaked that way).
/// Bound only, an inherited probe accepts nothing and the real server's bind still succeeds.
fn probe(port: u16) -> bool {
    use socket2::{Domain, Socket, Type};
    let Ok(socket) = Socket::new(Domain::IPV4, Type::STREAM, None) else {
        return false;
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    socket.set_reuse_address(true).is_ok() && socket.bind(&addr.into()).is_ok()
}

pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % u32::from(PORTS)) as u16;
    for _ in 0..PORTS {
        let port = PORTS_FROM + (start + NEXT.fetch_add(1, Ordering::Relaxed) % PORTS) % PORTS;
        if probe(port) {
            return port;
        }
    }
    panic!(
        "no free loopback port in {PORTS_FROM}..{}",
        PORTS_FROM + PORTS
    );
}

/// Waits (bounded, 10 s) until something accepts connections on `addr`.
pub async fn wait_for_port(addr: SocketAddr) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{addr} never accepted a connection");
}

/// A child process of this test, killed (SIGKILL, by its own id) when dropped.
pub struct Proc {
    pub child: Child,
    pub stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Spawns `program args`, stdout discarded, stderr written to a file.
    pub fn spawn(program: &str, args: &[&str]) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr");
        let file = std::fs::File::create(&stderr).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Proc {
            child,
            stderr,
            _dir: dir,
        }
    }

    /// The simulator subcommand listening on `addr`.
    pub fn simulator(addr: SocketAddr) -> Proc {
        Proc::spawn(BIN, &["simulator", "--listen", &addr.to_string()])
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (a name: HUP, TERM, KILL) to this process only.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -s {sig} failed");
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (bounded, 15 s) for the exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("process {} did not exit", self.pid());
    }

    /// What the process wrote to stderr so far, terminal colour codes removed.
    pub fn stderr_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.stderr).unwrap_or_default())
    }

    /// Lines of stderr containing any of `needles`.
    pub fn stderr_lines_with(&self, needles: &[&str]) -> usize {
        self.stderr_text()
            .lines()
            .filter(|l| needles.iter().any(|n| l.contains(n)))
            .count()
    }

    /// Waits (bounded, 10 s) until stderr has a line containing `needle`.
    pub async fn wait_stderr(&self, needle: &str) -> String {
        for _ in 0..400 {
            let text = self.stderr_text();
            if text.contains(needle) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("stderr never said {needle:?}:\n{}", self.stderr_text());
    }
}

/// Removes `ESC [ ... m` colour sequences (tracing colours its output even into a file).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A tmpfs mounted on a directory, lazily unmounted on drop (a writer thread may still hold
/// a file open on it).
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "64k") on `dir`; `None` when this environment cannot
    /// (not root, no CAP_SYS_ADMIN, no `mount`).
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// Remounts read-only (`true`) or read-write; whether it worked.
    pub fn set_read_only(&self, ro: bool) -> bool {
        let opt = if ro { "remount,ro" } else { "remount,rw" };
        Command::new("mount")
            .args(["-o", opt])
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
    }
}
