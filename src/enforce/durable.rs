//! Getting ban changes to disk: group commit to the journal, and compaction.
//!
//! The table queues every change under its lock (`ChangeLog`); the [`Writer`] takes all
//! that is queued and appends it to `bans.journal` with one write and one fsync, so a storm
//! of changes costs one fsync per batch, and a change costs bytes proportional to itself
//! whatever the size of the table. Whoever needs a change durable — the background task
//! after a wake-up, or an admin request before it answers — calls [`Persister::flush`]; the
//! first caller to get the writer writes everything pending, later callers find their change
//! already durable and return at once (leader/follower group commit, no dedicated thread).
//!
//! Compaction rewrites the snapshot from the table and starts an empty journal of the next
//! generation (see `journal` for why that order is crash-safe). It runs at the first write
//! of a run (so a torn tail left by a crash is never appended to, and a legacy state file
//! gets its journal), at shutdown, after any failed write (the journal may then lack
//! changes the table has: the table is the truth), and when the journal holds more than
//! [`compact_after`] records, which keeps replay time and disk use proportional to the
//! table while the amortised cost of a change stays O(1).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::journal;
use super::persist::save_state;
use super::table::Bans;

/// A journal shorter than this is never compacted: compaction writes the whole table, and
/// a few thousand lines replay in milliseconds.
pub(super) const COMPACT_MIN_RECORDS: usize = 4096;

/// The journal length (records) past which the next write compacts:
/// `max(COMPACT_MIN_RECORDS, 2 × bans)`. Relative to the table so that compaction (O(table))
/// happens at most once per O(table) changes.
pub(super) fn compact_after(bans: usize) -> usize {
    COMPACT_MIN_RECORDS.max(bans.saturating_mul(2))
}

/// Why changes could not be made durable.
#[derive(Debug, thiserror::Error)]
pub(super) enum PersistError {
    /// The journal or snapshot could not be written; the next write compacts.
    #[error("cannot write the ban state in {dir}: {source}")]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// What the file system said.
        source: io::Error,
    },
    /// The blocking write task panicked.
    #[error("the ban state writer failed: {0}")]
    Task(String),
}

/// The files of `state_dir` and what is known about them; owned by one writer at a time.
#[derive(Debug)]
pub(super) struct Writer {
    dir: PathBuf,
    /// The journal of the current generation, open for appending. `None` until the first
    /// compaction of this run and after a failed write: then the next write compacts.
    journal: Option<File>,
    /// The highest generation on disk; the next compaction writes the one after.
    generation: u64,
    /// Change records in the current journal.
    records: usize,
    /// The number of the last change known durable (shared with [`Persister`]).
    durable: Arc<AtomicU64>,
}

impl Writer {
    /// A writer for `dir`, whose files are of `generation` (from the loader).
    pub(super) fn new(dir: PathBuf, generation: u64) -> Writer {
        Writer {
            dir,
            journal: None,
            generation,
            records: 0,
            durable: Arc::default(),
        }
    }

    /// Whether a write would do anything: changes are queued, or the journal must be
    /// (re)built.
    pub(super) fn has_work(&self, bans: &Bans) -> bool {
        self.journal.is_none() || bans.last_change() > self.durable.load(Ordering::Acquire)
    }

    /// Makes every queued change durable: appends them to the journal, or compacts when
    /// asked to, when the journal is not open, or when it is long enough
    /// ([`compact_after`]). Returns the number of the last change now on disk.
    pub(super) fn write(
        &mut self,
        bans: &Bans,
        now: DateTime<Utc>,
        compact: bool,
    ) -> io::Result<u64> {
        let compact = compact
            || self.records >= compact_after(bans.len())
            || self
                .journal
                .as_ref()
                .is_some_and(|file| moved(file, &self.dir.join(journal::JOURNAL_FILE)));
        let written = match self.journal.as_mut() {
            Some(file) if !compact => append(file, &mut self.records, bans),
            _ => self.compact(bans, now),
        };
        match written {
            Ok(last) => {
                self.durable.fetch_max(last, Ordering::AcqRel);
                Ok(last)
            }
            Err(e) => {
                // Changes taken from the queue may be missing on disk now: rebuild from the
                // table on the next write.
                self.journal = None;
                Err(e)
            }
        }
    }

    /// Snapshot first (naming the next generation), then a new empty journal of it.
    fn compact(&mut self, bans: &Bans, now: DateTime<Utc>) -> io::Result<u64> {
        self.journal = None;
        let next = self.generation + 1;
        let (mut state, last) = bans.checkpoint(now);
        state.journal_generation = next;
        save_state(&self.dir, &state)?;
        self.generation = next;
        self.journal = Some(journal::create(&self.dir, next)?);
        self.records = 0;
        Ok(last)
    }
}

/// Whether the open journal is no longer the file at `path`: deleted, renamed away, or
/// replaced by another file. What is appended to it would not be read at the next start, so
/// the writer compacts into a new snapshot and journal instead.
fn moved(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let same = match (file.metadata(), std::fs::metadata(path)) {
            (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
            // The open file cannot be inspected: keep appending, as before the check.
            (Err(_), _) => true,
            (Ok(_), Err(_)) => false,
        };
        if !same {
            tracing::warn!(
                "the ban journal in state_dir was removed or replaced: writing a new snapshot"
            );
        }
        !same
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        false
    }
}

/// Appends everything queued in `bans` to `file`.
fn append(file: &mut File, records: &mut usize, bans: &Bans) -> io::Result<u64> {
    let (changes, last) = bans.take_changes();
    if !changes.is_empty() {
        journal::append(file, &changes)?;
        *records += changes.len();
    }
    Ok(last)
}

/// What a [`Persister::flush`] must achieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flush {
    /// Change number `n` and every one before it are durable (an acknowledgement).
    Through(u64),
    /// Whatever is queued is written (the background task).
    Pending,
    /// A compaction, whatever the journal's length (shutdown).
    Compact,
}

/// The async face of the [`Writer`]: one write at a time, off the runtime's worker threads.
#[derive(Debug)]
pub(super) struct Persister {
    writer: Arc<tokio::sync::Mutex<Writer>>,
    durable: Arc<AtomicU64>,
    dir: PathBuf,
}

impl Persister {
    /// A persister for `dir`, not yet knowing its generation ([`Persister::set_generation`]).
    pub(super) fn new(dir: PathBuf) -> Persister {
        let writer = Writer::new(dir.clone(), 0);
        Persister {
            durable: Arc::clone(&writer.durable),
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            dir,
        }
    }

    /// The state directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records the generation found at load (before anything is written: the writer is
    /// free then; if it were not, the generation is left as is and logged).
    pub(super) fn set_generation(&self, generation: u64) {
        match self.writer.try_lock() {
            Ok(mut writer) => writer.generation = writer.generation.max(generation),
            Err(_) => tracing::error!(generation, "ban state writer busy at load"),
        }
    }

    /// Does what `what` asks; returns at once when it is already done (another caller's
    /// write covered it).
    pub(super) async fn flush(&self, bans: &Arc<Bans>, what: Flush) -> Result<(), PersistError> {
        if let Flush::Through(n) = what {
            if self.durable.load(Ordering::Acquire) >= n {
                return Ok(());
            }
        }
        let mut writer = Arc::clone(&self.writer).lock_owned().await;
        let done = match what {
            Flush::Through(n) => self.durable.load(Ordering::Acquire) >= n,
            Flush::Pending => !writer.has_work(bans),
            Flush::Compact => false,
        };
        if done {
            return Ok(());
        }
        let bans = Arc::clone(bans);
        let compact = what == Flush::Compact;
        let written =
            tokio::task::spawn_blocking(move || writer.write(&bans, Utc::now(), compact)).await;
        match written {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(PersistError::Io {
                dir: self.dir.clone(),
                source,
            }),
            Err(e) => Err(PersistError::Task(e.to_string())),
        }
    }
}
