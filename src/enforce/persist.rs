//! `state_dir/bans.json`: the snapshot of the bans and offence history that survive a
//! restart; the changes made since it are in `bans.journal` (see `journal`), replayed on top
//! of it by [`load_state`].
//!
//! The snapshot is written only at compaction (start-up, shutdown, and when the journal has
//! grown past its threshold; see `durable`), never per change. Writes are atomic (temp file in the same directory, `fsync`, rename over, `fsync` the
//! directory), so a crash leaves either the old or the new file, never a torn one. Loading is
//! tolerant: a missing file is an empty table; an unreadable, corrupt, truncated or
//! future-version file is reported and moved aside to `bans.json.corrupt-<unix time>` for the
//! operator to inspect — never fatal (the proxy must come up), never silently ignored. A
//! well-formed file with some unreadable entries (a ban or offence record) keeps the rest:
//! those entries are skipped, counted and reported, and the file is copied to
//! `bans.json.corrupt-<unix time>` before the next compaction replaces it; one bad entry never
//! costs every ban.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ban::{de_src, de_time, format_time, ser_src, ser_time, Ban};
use super::journal::{self, JournalReport};

/// The file name inside `state_dir`.
pub(crate) const STATE_FILE: &str = "bans.json";

/// The format version this build writes and reads. A file with another version is not
/// guessed at: it is moved aside and reported.
pub(crate) const STATE_VERSION: u32 = 1;

/// Everything that must survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    /// [`STATE_VERSION`] when written by this build.
    pub(crate) version: u32,
    /// When the snapshot was taken.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub(crate) saved_at: DateTime<Utc>,
    /// Bans still running at `saved_at`, sorted by source.
    pub(crate) bans: Vec<Ban>,
    /// Offences within the ban memory, so escalation continues across restarts.
    pub(crate) offences: Vec<OffenceRecord>,
    /// The generation of the journal that continues this snapshot; a journal of an older
    /// generation is already contained in it. Absent (0) in files of older builds.
    #[serde(default)]
    pub(crate) journal_generation: u64,
}

/// The offence times of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OffenceRecord {
    /// The offending source (as displayed, like [`Ban::src`]).
    #[serde(serialize_with = "ser_src", deserialize_with = "de_src")]
    pub(crate) src: IpNet,
    /// When it offended, oldest first.
    #[serde(serialize_with = "ser_times", deserialize_with = "de_times")]
    pub(crate) times: Vec<DateTime<Utc>>,
}

/// What [`load_state`] found, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadReport {
    /// The usable state (empty when there was none or it was unusable).
    pub(crate) state: State,
    /// Why the file, or some of its entries, could not be used; log it as a warning.
    pub(crate) problem: Option<String>,
    /// Entries (bans and offence records) skipped as unreadable from a file otherwise used.
    pub(crate) skipped: usize,
    /// Where an unusable file was moved.
    pub(crate) moved_to: Option<PathBuf>,
    /// Bans that ended while the process was down (dropped, not restored; each gets its
    /// `unban` event at start).
    pub(crate) expired: Vec<Ban>,
    /// What replaying the journal did (its own problems are reported there).
    pub(crate) journal: JournalReport,
}

impl LoadReport {
    /// The highest journal generation on disk: the next compaction must write a higher one.
    pub(crate) fn generation(&self) -> u64 {
        (self.journal.generation.unwrap_or(0)).max(self.state.journal_generation)
    }
}

impl State {
    /// A state with nothing in it.
    pub(crate) fn empty(now: DateTime<Utc>) -> State {
        State {
            version: STATE_VERSION,
            saved_at: now,
            bans: Vec::new(),
            offences: Vec::new(),
            journal_generation: 0,
        }
    }
}

/// Distinguishes temp files of concurrent saves within one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `state` to `dir/bans.json` atomically (creating `dir` if needed). Prefer
/// [`Bans::save`](super::Bans::save), which also orders concurrent saves.
pub(crate) fn save_state(dir: &Path, state: &State) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{STATE_FILE}.{}.{seq}.tmp", std::process::id()));
    let written = write_synced(&tmp, &bytes).and_then(|()| fs::rename(&tmp, dir.join(STATE_FILE)));
    if let Err(e) = written {
        // Best effort: the temp file is useless now; the error that matters is `e`.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

pub(super) fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes the rename durable: the directory entry itself must reach the disk.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Reads `dir/bans.json` at start-up and replays `dir/bans.journal` on top of it. Bans that
/// ended by `now` are dropped; an unusable snapshot is moved aside and explained in
/// [`LoadReport::problem`], journal trouble in [`LoadReport::journal`]. Never fails.
pub(crate) fn load_state(dir: &Path, now: DateTime<Utc>) -> LoadReport {
    let mut report = load_snapshot(dir, now);
    report.journal = journal::replay_into(dir, &mut report.state, now);
    let (running, expired) = std::mem::take(&mut report.state.bans)
        .into_iter()
        .partition(|b| b.until > now);
    report.state.bans = running;
    report.expired = expired;
    report
}

/// Reads `dir/bans.json` alone; an unusable file is moved aside.
fn load_snapshot(dir: &Path, now: DateTime<Utc>) -> LoadReport {
    let path = dir.join(STATE_FILE);
    let mut report = LoadReport {
        state: State::empty(now),
        problem: None,
        moved_to: None,
        skipped: 0,
        expired: Vec::new(),
        journal: JournalReport::default(),
    };
    let bytes = match fs::read(&path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return report,
        // Unreadable (its permissions changed, an I/O error): moved aside like a corrupt
        // file, never left for the first compaction to replace.
        Err(e) => Err(format!("cannot read it: {e}")),
    };
    match bytes.and_then(|bytes| parse_state(&bytes)) {
        Ok((state, skipped)) => {
            report.state = state;
            report.skipped = skipped.count;
            // The next compaction replaces the file without its unreadable entries: a copy
            // keeps them for the operator to repair.
            report.problem = skipped
                .describe(&path)
                .map(|what| format!("{what}; {}", journal::keep_copy(&path, now)));
        }
        Err(why) => match move_aside(&path, now) {
            Ok(to) => {
                report.problem = Some(format!(
                    "{} is unusable ({why}); moved to {}; starting with no bans",
                    path.display(),
                    to.display()
                ));
                report.moved_to = Some(to);
            }
            Err(e) => {
                report.problem = Some(format!(
                    "{} is unusable ({why}) and could not be moved aside ({e}); starting with no bans",
                    path.display()
                ));
            }
        },
    }
    report
}

/// The shape of the file with its entries left unparsed, so each is read on its own.
#[derive(Deserialize)]
struct RawState {
    version: u32,
    #[serde(deserialize_with = "de_time")]
    saved_at: DateTime<Utc>,
    bans: Vec<serde_json::Value>,
    offences: Vec<serde_json::Value>,
    #[serde(default)]
    journal_generation: u64,
}

/// Entries of a usable file that could not be read.
#[derive(Debug, Default)]
struct Skipped {
    count: usize,
    /// The first one, as `bans[3]: <error>`.
    first: Option<String>,
}

impl Skipped {
    /// Reads each entry of `list` (named `field` in messages), skipping unreadable ones.
    fn read<T: serde::de::DeserializeOwned>(
        &mut self,
        field: &str,
        list: Vec<serde_json::Value>,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(list.len());
        for (i, value) in list.into_iter().enumerate() {
            match serde_json::from_value(value) {
                Ok(item) => out.push(item),
                Err(e) => {
                    self.count += 1;
                    self.first
                        .get_or_insert_with(|| format!("{field}[{i}]: {e}"));
                }
            }
        }
        out
    }

    fn describe(&self, path: &Path) -> Option<String> {
        let first = self.first.as_deref()?;
        Some(format!(
            "{}: skipped {} unreadable {} (first: {first}); the rest was loaded",
            path.display(),
            self.count,
            if self.count == 1 { "entry" } else { "entries" }
        ))
    }
}

/// Checks the version before the schema so a newer format gets a clear message; then reads
/// each entry on its own.
fn parse_state(bytes: &[u8]) -> Result<(State, Skipped), String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let version = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| "no numeric \"version\" field".to_string())?;
    if version > u64::from(STATE_VERSION) {
        return Err(format!(
            "state version {version} was written by a newer ollama-guard; this build reads version {STATE_VERSION}"
        ));
    }
    if version != u64::from(STATE_VERSION) {
        return Err(format!(
            "unknown state version {version}; this build reads version {STATE_VERSION}"
        ));
    }
    let raw: RawState = serde_json::from_value(value).map_err(|e| format!("bad content: {e}"))?;
    let mut skipped = Skipped::default();
    let state = State {
        version: raw.version,
        saved_at: raw.saved_at,
        bans: skipped.read("bans", raw.bans),
        offences: skipped.read("offences", raw.offences),
        journal_generation: raw.journal_generation,
    };
    Ok((state, skipped))
}

/// Renames `path` to `path.corrupt-<unix time>` (with `-1`, `-2`, ... if that exists).
pub(super) fn move_aside(path: &Path, now: DateTime<Utc>) -> io::Result<PathBuf> {
    let base = format!("{}.corrupt-{}", path.display(), now.timestamp());
    let mut target = PathBuf::from(&base);
    let mut n = 0u32;
    while target.exists() {
        n += 1;
        target = PathBuf::from(format!("{base}-{n}"));
    }
    fs::rename(path, &target)?;
    Ok(target)
}

fn ser_times<S: Serializer>(times: &[DateTime<Utc>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(times.iter().map(format_time))
}

fn de_times<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DateTime<Utc>>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| serde::de::Error::custom(format!("bad time {text:?}: {e}")))
        })
        .collect()
}
