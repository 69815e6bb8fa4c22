//! A log writer on its own thread behind a bounded channel.
//!
//! The request path only does a `try_send`: a slow or stuck disk can never stall the proxy.
//! When the channel is full the line is dropped, counted in `log_lines_dropped_total` and
//! warned about (at most once per second), never lost silently. The thread writes each batch
//! of queued lines and flushes before waiting again, so every line is on disk (or stdout)
//! as soon as the writer is idle. `reopen()` (SIGUSR1 or SIGHUP) closes and reopens the file,
//! which is what logrotate's `postrotate` expects.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use tokio::sync::{mpsc, oneshot};

use crate::config::LogTarget;

/// Lines queued per log before new lines are dropped.
pub(crate) const DEFAULT_CAPACITY: usize = 65_536;

/// Bytes queued per log before new lines are dropped: long request targets must not turn a
/// stalled disk into gigabytes of queue.
pub(crate) const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

enum Msg {
    Line(String),
    Reopen,
    Flush(oneshot::Sender<()>),
}

/// A handle to one log; cheap to clone: the detection log writes each line as it comes
/// ([`LogWriter::spawn`]), the access log through a buffer ([`LogWriter::spawn_buffered`]).
#[derive(Clone)]
pub(crate) struct LogWriter(Kind);

#[derive(Clone)]
enum Kind {
    Lines(LineWriter),
    Buffered(super::buffered::BufferedLog),
}

/// The per-line writer.
#[derive(Clone)]
struct LineWriter {
    tx: mpsc::Sender<Msg>,
    dropped: IntCounter,
    name: &'static str,
    queued: Arc<AtomicUsize>,
    reopen: Arc<AtomicBool>,
}

/// Opening the log failed (named, so `serve` can say which). The OS error is the `source`,
/// not part of this message: `serve` prints the whole chain, which would otherwise repeat it.
#[derive(Debug, thiserror::Error)]
#[error("cannot open {name} log {path}")]
pub struct LogOpenError {
    name: &'static str,
    path: String,
    #[source]
    source: io::Error,
}

enum Sink {
    Stdout,
    File(File, PathBuf),
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Sink {
    /// Writes one line; on failure says how many of its bytes reached the file (a partial
    /// line must be terminated before the next one, or it would corrupt it too).
    fn write_line(&mut self, bytes: &[u8]) -> Result<(), (usize, io::Error)> {
        let mut written = 0;
        while written < bytes.len() {
            let r = match self {
                Sink::Stdout => io::stdout().lock().write(&bytes[written..]),
                Sink::File(f, _) => f.write(&bytes[written..]),
            };
            match r {
                Ok(0) => return Err((written, io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err((written, e)),
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout => io::stdout().lock().flush(),
            Sink::File(f, _) => f.flush(),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Sink::File(f, path) = self {
            *f = open(path)?;
        }
        Ok(())
    }
}

static LAST_WARN: AtomicU64 = AtomicU64::new(0);

impl LogWriter {
    /// Opens `target` (failing now, not later) and starts a writer thread that writes and
    /// flushes every line as soon as it is idle (the detection log: a SOC tails it).
    pub(crate) fn spawn(
        name: &'static str,
        target: &LogTarget,
        capacity: usize,
        dropped: IntCounter,
    ) -> Result<LogWriter, LogOpenError> {
        LineWriter::spawn(name, target, capacity, dropped).map(|w| LogWriter(Kind::Lines(w)))
    }

    /// Opens `target` and starts a buffered writer (the access log: nginx's
    /// `buffer=64k flush=1s`, see [`super::buffered`]).
    pub(crate) fn spawn_buffered(
        name: &'static str,
        target: &LogTarget,
        dropped: IntCounter,
    ) -> Result<LogWriter, LogOpenError> {
        let opened = match target {
            LogTarget::Stdout => Ok(super::buffered::Target::Stdout),
            LogTarget::File(p) => open(p).map(|f| super::buffered::Target::File(f, p.clone())),
        };
        opened
            .and_then(|t| super::buffered::BufferedLog::spawn(name, t, dropped))
            .map(|b| LogWriter(Kind::Buffered(b)))
            .map_err(|source| LogOpenError {
                name,
                path: target.display(),
                source,
            })
    }

    /// Queues one line (the newline is added here). Never blocks.
    pub(crate) fn write(&self, line: String) {
        match &self.0 {
            Kind::Lines(w) => w.write(line),
            Kind::Buffered(b) => b.write(&line),
        }
    }

    /// Queues one line that `format` writes into a reused buffer (no allocation on the
    /// buffered writer).
    pub(crate) fn write_with(&self, format: impl FnOnce(&mut String)) {
        match &self.0 {
            Kind::Lines(w) => {
                let mut line = String::with_capacity(256);
                format(&mut line);
                w.write(line);
            }
            Kind::Buffered(b) => b.write_with(format),
        }
    }

    /// Asks the writer to reopen its file (logrotate); a buffered writer first writes what it
    /// holds to the old file.
    pub(crate) fn reopen(&self) {
        match &self.0 {
            Kind::Lines(w) => w.reopen(),
            Kind::Buffered(b) => b.reopen(),
        }
    }

    /// Waits until every line queued before this call is written and flushed.
    pub(crate) async fn flush(&self) {
        match &self.0 {
            Kind::Lines(w) => w.flush().await,
            Kind::Buffered(b) => b.flush().await,
        }
    }
}

impl LineWriter {
    fn spawn(
        name: &'static str,
        target: &LogTarget,
        capacity: usize,
        dropped: IntCounter,
    ) -> Result<LineWriter, LogOpenError> {
        let sink = match target {
            LogTarget::Stdout => Sink::Stdout,
            LogTarget::File(p) => Sink::File(
                open(p).map_err(|source| LogOpenError {
                    name,
                    path: p.display().to_string(),
                    source,
                })?,
                p.clone(),
            ),
        };
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let reopen = Arc::new(AtomicBool::new(false));
        let shared = (queued.clone(), reopen.clone());
        std::thread::Builder::new()
            .name(format!("{name}-log"))
            .spawn({
                let dropped = dropped.clone();
                move || run(name, sink, rx, &shared.0, &shared.1, &dropped)
            })
            .map_err(|source| LogOpenError {
                name,
                path: target.display(),
                source,
            })?;
        Ok(LineWriter {
            tx,
            dropped,
            name,
            queued,
            reopen,
        })
    }

    fn write(&self, mut line: String) {
        line.push('\n');
        let len = line.len();
        let over = self.queued.fetch_add(len, Ordering::AcqRel) + len > MAX_QUEUED_BYTES;
        if over || self.tx.try_send(Msg::Line(line)).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.dropped.inc();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if LAST_WARN.swap(now, Ordering::Relaxed) != now {
                tracing::warn!(
                    log = self.name,
                    "log writer is behind; dropping lines (see log_lines_dropped_total)"
                );
            }
        }
    }

    /// The request is a flag the writer checks before every batch, so it is never lost, even
    /// when the queue is full.
    fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        let _ = self.tx.try_send(Msg::Reopen);
    }

    async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// The writer thread. A line that cannot be written (disk full, I/O error) is counted in
/// `dropped` like a line the queue had no room for: nothing is lost silently. A line cut
/// short by the failure is terminated by a newline before the next line is written, so one
/// failure costs at most that line.
fn run(
    name: &'static str,
    mut sink: Sink,
    mut rx: mpsc::Receiver<Msg>,
    queued: &AtomicUsize,
    reopen: &AtomicBool,
    dropped: &IntCounter,
) {
    let mut failed = false;
    let mut torn = false;
    while let Some(msg) = rx.blocking_recv() {
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            // Checked before every message: a line queued after `reopen()` must land in the
            // new file even when it arrives in the same batch.
            if reopen.load(Ordering::Acquire) && reopen.swap(false, Ordering::AcqRel) {
                if let Err(e) = sink.reopen() {
                    tracing::error!(log = name, error = %e, "log reopen failed");
                }
            }
            let result = match msg {
                Msg::Line(line) => {
                    queued.fetch_sub(line.len(), Ordering::AcqRel);
                    if torn && sink.write_line(b"\n").is_ok() {
                        torn = false;
                    }
                    match sink.write_line(line.as_bytes()) {
                        Ok(()) => Ok(()),
                        Err((written, e)) => {
                            dropped.inc();
                            torn |= written > 0;
                            Err(e)
                        }
                    }
                }
                Msg::Reopen => Ok(()),
                Msg::Flush(ack) => {
                    let r = sink.flush();
                    let _ = ack.send(());
                    r
                }
            };
            match result {
                Err(e) if !failed => {
                    tracing::error!(log = name, error = %e, "log write failed; lines are dropped and counted in log_lines_dropped_total until writes succeed again");
                    failed = true;
                }
                Ok(()) => failed = false,
                Err(_) => {}
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = sink.flush() {
            tracing::error!(log = name, error = %e, "log flush failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> IntCounter {
        IntCounter::new("t", "t").unwrap()
    }

    #[test]
    fn an_unopenable_log_names_the_os_error_once() {
        let Err(e) = LogWriter::spawn(
            "detection",
            &LogTarget::File("/nonexistent/dir/d.log".into()),
            16,
            counter(),
        ) else {
            panic!("opened a log in a directory that does not exist");
        };
        // How `serve` prints it: the whole chain.
        assert_eq!(
            format!("{:#}", anyhow::Error::from(e)),
            "cannot open detection log /nonexistent/dir/d.log: No such file or directory (os error 2)"
        );
    }

    #[tokio::test]
    async fn lines_are_written_in_order_and_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let w = LogWriter::spawn("test", &LogTarget::File(path.clone()), 16, counter()).unwrap();
        for i in 0..10 {
            w.write(format!("line {i}"));
        }
        w.flush().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: String = (0..10).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
    }

    #[tokio::test]
    async fn lines_that_fail_to_write_are_counted_as_dropped() {
        // /dev/full fails every write with ENOSPC.
        let c = counter();
        let w =
            LogWriter::spawn("test", &LogTarget::File("/dev/full".into()), 16, c.clone()).unwrap();
        for i in 0..5 {
            w.write(format!("line {i}"));
        }
        w.flush().await;
        assert_eq!(c.get(), 5);
    }

    #[tokio::test]
    async fn reopen_follows_a_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let w = LogWriter::spawn("test", &LogTarget::File(path.clone()), 16, counter()).unwrap();
        w.write("before".into());
        w.flush().await;
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        w.reopen();
        w.write("after".into());
        w.flush().await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.log.1")).unwrap(),
            "before\n"
        );
    }

    #[test]
    fn unopenable_path_is_an_error_naming_the_log() {
        let err = LogWriter::spawn(
            "access",
            &LogTarget::File("/nonexistent/dir/x.log".into()),
            1,
            counter(),
        )
        .err()
        .unwrap();
        assert!(err
            .to_string()
            .starts_with("cannot open access log /nonexistent/dir/x.log"));
    }

    #[test]
    fn queue_is_bounded_in_bytes_not_only_lines() {
        let (tx, _rx) = mpsc::channel(1000);
        let w = LineWriter {
            tx,
            dropped: counter(),
            name: "test",
            queued: Arc::new(AtomicUsize::new(MAX_QUEUED_BYTES - 10)),
            reopen: Arc::new(AtomicBool::new(false)),
        };
        w.write("x".repeat(20));
        assert_eq!(w.dropped.get(), 1, "20 bytes would pass the cap");
        w.write("abc".into());
        assert_eq!(w.dropped.get(), 1, "4 bytes fit");
        assert_eq!(w.queued.load(Ordering::Acquire), MAX_QUEUED_BYTES - 6);
    }

    #[test]
    fn full_channel_counts_dropped_lines() {
        let (tx, _rx) = mpsc::channel(1);
        let w = LineWriter {
            tx,
            dropped: counter(),
            name: "test",
            queued: Arc::new(AtomicUsize::new(0)),
            reopen: Arc::new(AtomicBool::new(false)),
        };
        w.write("a".into());
        w.write("b".into());
        w.write("c".into());
        assert_eq!(w.dropped.get(), 2);
    }
}
