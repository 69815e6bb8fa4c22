//! The access log's writer: nginx's `access_log ... buffer=64k flush=1s`.
//!
//! A per-request log line must cost the request path almost nothing. The detection log's
//! writer (one channel message per line, a wake-up of its thread per burst, a `write` per
//! line) costs the proxy about a quarter of its throughput at full load. Here the proxy
//! appends the line to one shared in-memory buffer under a mutex held for a `memcpy`; the
//! writer thread takes the whole buffer and writes it with one `write` when it reaches
//! [`FLUSH_BYTES`], at least every [`FLUSH_EVERY`], on `flush()` (shutdown: nothing is lost on
//! SIGTERM) and before a reopen (SIGUSR1: lines buffered before the rotation go to the old
//! file, as with nginx). A buffer that cannot be written (stalled or full disk) grows to
//! [`MAX_BUFFERED`] and then drops new lines, counted in `log_lines_dropped_total`.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::sync::oneshot;

/// The buffer is written once it holds this much.
pub(crate) const FLUSH_BYTES: usize = 64 * 1024;

/// A line waits at most this long in the buffer.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Past this much unwritten text new lines are dropped (and counted).
pub(crate) const MAX_BUFFERED: usize = 64 * 1024 * 1024;

/// Where the buffered lines go.
pub(crate) enum Target {
    /// Standard output.
    Stdout,
    /// A file, reopened by path on `reopen`.
    File(File, PathBuf),
}

impl Target {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Target::File(f, _) => f.write_all(bytes),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Target::File(f, path) = self {
            *f = OpenOptions::new().create(true).append(true).open(path)?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// The writer was told the buffer is full (no repeated notifications).
    signalled: bool,
    reopen: bool,
    /// What was buffered when `reopen` was asked: it belongs to the old file.
    before_reopen: Vec<u8>,
    flushes: Vec<oneshot::Sender<()>>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: IntCounter,
}

/// A handle to the buffered log; cheap to clone. The writer thread ends when the last handle
/// is dropped (after writing what is buffered).
#[derive(Clone)]
pub(crate) struct BufferedLog {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// Closes the writer when the last handle goes.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.closed = true;
        drop(st);
        self.0.wake.notify_one();
    }
}

thread_local! {
    /// Each thread formats its line here, so a line costs no allocation.
    static SCRATCH: RefCell<String> = RefCell::new(String::with_capacity(512));
}

impl BufferedLog {
    /// Starts the writer thread for `target`.
    pub(crate) fn spawn(
        name: &'static str,
        target: Target,
        dropped: IntCounter,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            dropped,
        });
        let for_thread = shared.clone();
        std::thread::Builder::new()
            .name(format!("{name}-log"))
            .spawn(move || run(name, target, &for_thread))?;
        Ok(BufferedLog {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        })
    }

    /// Appends one line, formatted by `format` into a reused buffer (the newline is added
    /// here). Never blocks on I/O.
    pub(crate) fn write_with(&self, format: impl FnOnce(&mut String)) {
        SCRATCH.with(|cell| {
            let mut line = cell.borrow_mut();
            line.clear();
            format(&mut line);
            line.push('\n');
            self.append(line.as_bytes());
        });
    }

    /// Appends one line (the newline is added here).
    pub(crate) fn write(&self, line: &str) {
        self.write_with(|s| s.push_str(line));
    }

    fn append(&self, line: &[u8]) {
        let mut st = self.lock();
        if st.buf.len() + line.len() > MAX_BUFFERED {
            drop(st);
            self.shared.dropped.inc();
            return;
        }
        st.buf.extend_from_slice(line);
        if st.buf.len() >= FLUSH_BYTES && !st.signalled {
            st.signalled = true;
            drop(st);
            self.shared.wake.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what is buffered, then reopens the file (logrotate's SIGUSR1).
    pub(crate) fn reopen(&self) {
        let mut st = self.lock();
        let buffered = std::mem::take(&mut st.buf);
        st.before_reopen.extend_from_slice(&buffered);
        st.reopen = true;
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Waits until every line appended before this call is written.
    pub(crate) async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        self.lock().flushes.push(ack);
        self.shared.wake.notify_one();
        let _ = done.await;
    }
}

/// The writer thread: takes the buffer when it is due and writes it in one call.
fn run(name: &'static str, mut target: Target, shared: &Shared) {
    let mut spare: Vec<u8> = Vec::with_capacity(FLUSH_BYTES * 2);
    let mut torn = false;
    let mut failing = false;
    loop {
        let (mut chunk, old, reopen, flushes, closed) = {
            let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            if !st.signalled && !st.reopen && st.flushes.is_empty() && !st.closed {
                st = shared
                    .wake
                    .wait_timeout(st, FLUSH_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            st.signalled = false;
            let chunk = std::mem::replace(&mut st.buf, std::mem::take(&mut spare));
            (
                chunk,
                std::mem::take(&mut st.before_reopen),
                std::mem::take(&mut st.reopen),
                std::mem::take(&mut st.flushes),
                st.closed,
            )
        };
        let mut put = |bytes: &[u8], target: &mut Target| {
            if bytes.is_empty() {
                return;
            }
            if torn && target.write_all(b"\n").is_ok() {
                torn = false;
            }
            match target.write_all(bytes) {
                Ok(()) => failing = false,
                Err(e) => {
                    // Whole lines lost are counted; a cut one is terminated before the next.
                    let lines = bytes.iter().filter(|&&b| b == b'\n').count();
                    shared.dropped.inc_by(lines as u64);
                    torn = true;
                    if !failing {
                        tracing::error!(log = name, error = %e, "log write failed; lines are dropped and counted in log_lines_dropped_total until writes succeed again");
                        failing = true;
                    }
                }
            }
        };
        put(&old, &mut target);
        if reopen {
            if let Err(e) = target.reopen() {
                tracing::error!(log = name, error = %e, "log reopen failed");
            }
        }
        put(&chunk, &mut target);
        for ack in flushes {
            let _ = ack.send(());
        }
        chunk.clear();
        spare = chunk;
        if closed {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> IntCounter {
        IntCounter::new("t", "t").unwrap()
    }

    fn file_log(path: &std::path::Path) -> (BufferedLog, IntCounter) {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        let dropped = counter();
        let log =
            BufferedLog::spawn("test", Target::File(f, path.to_owned()), dropped.clone()).unwrap();
        (log, dropped)
    }

    #[tokio::test]
    async fn lines_wait_in_the_buffer_and_flush_writes_them_all_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let (log, _) = file_log(&path);
        for i in 0..100 {
            log.write_with(|s| {
                use std::fmt::Write as _;
                let _ = write!(s, "line {i}");
            });
        }
        // 100 short lines: far below the 64 KiB threshold, not yet written...
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        log.flush().await;
        let want: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
    }

    #[tokio::test]
    async fn a_full_buffer_is_written_without_waiting_for_the_timer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let (log, _) = file_log(&path);
        let line = "x".repeat(1023);
        for _ in 0..64 {
            log.write(&line); // 64 x 1024 bytes = FLUSH_BYTES
        }
        let start = std::time::Instant::now();
        while std::fs::metadata(&path).unwrap().len() < FLUSH_BYTES as u64 {
            assert!(
                start.elapsed() < FLUSH_EVERY / 2,
                "the size trigger did not fire"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[tokio::test]
    async fn the_timer_writes_a_lone_line_within_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let (log, _) = file_log(&path);
        log.write("alone");
        let start = std::time::Instant::now();
        while std::fs::read_to_string(&path).unwrap() != "alone\n" {
            assert!(start.elapsed() < FLUSH_EVERY * 3, "never written");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn reopen_writes_the_buffer_to_the_old_file_then_follows_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let rotated = dir.path().join("a.log.1");
        let (log, _) = file_log(&path);
        log.write("before");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.write("after");
        log.flush().await;
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "before\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
    }

    #[tokio::test]
    async fn dropping_the_last_handle_writes_what_is_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let (log, _) = file_log(&path);
        log.write("last words");
        drop(log);
        let start = std::time::Instant::now();
        while std::fs::read_to_string(&path).unwrap() != "last words\n" {
            assert!(start.elapsed() < Duration::from_secs(2), "lost on drop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_failing_disk_counts_every_line_lost() {
        // /dev/full answers every write with ENOSPC.
        let f = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let dropped = counter();
        let log = BufferedLog::spawn("test", Target::File(f, "/dev/full".into()), dropped.clone())
            .unwrap();
        for i in 0..7 {
            log.write(&format!("l{i}"));
        }
        log.flush().await;
        assert_eq!(dropped.get(), 7);
    }
}
