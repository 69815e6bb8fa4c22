//! `state_dir/bans.journal`: every ban change since the last snapshot, one JSON line each,
//! so that persisting a change costs O(change) instead of a rewrite of `bans.json`
//! (O(table): 30 000 bans are an 11 MB file, rewritten and fsync'd after every change).
//!
//! # Format
//! The first line is a header, `{"journal":1,"generation":G}`; every following line is one
//! [`Change`]: `{"op":"ban",<the ban's fields>}` (a ban started or replaced one of the same
//! source) or `{"op":"unban","src":..,"at":..}` (a ban lifted before its end, by the admin
//! API or an allowlist reload). A `ban` record is also the record of the offence it counts
//! (every offence starts a ban: the table records one nowhere else), so replaying it adds
//! its `since` to the source's offence history. Expiry is not journaled: a ban carries its
//! end and is dropped at load once it has passed.
//!
//! # Generations: why a crash during compaction is harmless
//! The snapshot (`bans.json`) names the journal generation that continues it
//! (`journal_generation`; absent in files of older builds, read as 0). Compaction writes the
//! new snapshot with generation G+1 first (atomically), then atomically replaces the journal
//! with an empty one of generation G+1. A crash between the two leaves a snapshot of G+1 and
//! a journal of G: every record of that journal is already in the snapshot, and the loader
//! ignores it (`stale`). Replaying it would not be idempotent in general (a `ban` record
//! followed in the table by an unban that only the snapshot knows would resurrect the ban),
//! which is why generations are compared rather than trusting replay. Within one generation
//! replay is exact and idempotent: a `ban` record replaces the ban of its source and adds
//! an offence time only if absent.
//!
//! # Tolerance
//! A journal is appended to with one `write` and one `fsync` per batch, so a crash can only
//! tear the end of the file: an unreadable last line is ignored and reported (`torn_tail`;
//! it was never acknowledged). An unreadable line elsewhere is skipped and counted, the
//! rest still applies, and a copy of the file is kept as `bans.journal.corrupt-<unix time>`
//! for the operator. An unreadable or future-version header makes the whole journal unusable:
//! it is moved aside like a corrupt snapshot.
//!
//! # Why not an embedded store
//! sled or redb would bring a dependency, its own binary file format and its own recovery
//! rules for a table of at most [`MAX_BANS`](super::MAX_BANS) entries whose whole snapshot is
//! a few megabytes. Two JSON files — a snapshot in the format existing state files already
//! have, plus an append-only JSON-lines journal — need nothing new, stay readable and
//! fixable with a text editor and `jq`, and give the same guarantee for this workload.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::ban::{de_src, de_time, ser_src, ser_time, Ban};
use super::persist::{move_aside, sync_dir, OffenceRecord, State};

/// The journal's file name inside `state_dir`.
pub(crate) const JOURNAL_FILE: &str = "bans.journal";

/// The journal format this build writes and reads (the header's `journal` field).
pub(crate) const JOURNAL_VERSION: u32 = 1;

/// One change of the ban table, as a journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum Change {
    /// A ban started (rule or admin) or replaced the ban of the same source; the offence it
    /// counts is its `since`.
    Ban(Ban),
    /// The ban of exactly `src` was lifted before its end (admin API, allowlist reload).
    Unban {
        /// The source whose ban was lifted.
        #[serde(serialize_with = "ser_src", deserialize_with = "de_src")]
        src: IpNet,
        /// When (for the operator reading the file; replay does not need it).
        #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
        at: DateTime<Utc>,
    },
}

/// The first line of every journal.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    journal: u32,
    generation: u64,
}

/// The changes made to the table and not yet taken by the writer. It lives under the
/// table's lock, so changes are queued in exactly the order they were applied.
#[derive(Debug, Default)]
pub(super) struct ChangeLog {
    /// Off without a `state_dir`: nobody would ever take the changes.
    recording: bool,
    pending: Vec<Change>,
    /// The number of the last change queued (1, 2, ...), for acknowledgement.
    last: u64,
}

impl ChangeLog {
    pub(super) fn start(&mut self) {
        self.recording = true;
    }

    pub(super) fn push(&mut self, change: Change) {
        if self.recording {
            self.pending.push(change);
            self.last += 1;
        }
    }

    /// Empties the queue; returns what it held and the number of its last change.
    pub(super) fn take(&mut self) -> (Vec<Change>, u64) {
        (std::mem::take(&mut self.pending), self.last)
    }

    pub(super) fn last(&self) -> u64 {
        self.last
    }
}

/// What the loader did with the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JournalReport {
    /// The journal's generation, when it had a readable header.
    pub(crate) generation: Option<u64>,
    /// Records applied on top of the snapshot.
    pub(crate) replayed: usize,
    /// Unreadable records before the last one, skipped.
    pub(crate) skipped: usize,
    /// The last record was unreadable (a crash while it was written) and was ignored.
    pub(crate) torn_tail: bool,
    /// The journal is older than the snapshot (a crash during compaction): all its records
    /// are in the snapshot already, so none was replayed.
    pub(crate) stale: bool,
    /// What to warn the operator about, if anything.
    pub(crate) problem: Option<String>,
}

/// Creates an empty journal of `generation` atomically (temp file with the header, fsync,
/// rename over the old journal, fsync the directory) and returns it open for appending.
pub(super) fn create(dir: &Path, generation: u64) -> io::Result<File> {
    let tmp = dir.join(format!(".{JOURNAL_FILE}.{}.tmp", std::process::id()));
    let created = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let header = Header {
            journal: JOURNAL_VERSION,
            generation,
        };
        let mut line = serde_json::to_vec(&header).map_err(io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(JOURNAL_FILE))?;
        Ok(file)
    })();
    match created {
        Ok(file) => sync_dir(dir).map(|()| file),
        Err(e) => {
            // Best effort: the temp file is useless now; the error that matters is `e`.
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Appends `changes` as one write and makes them durable with one fsync (group commit);
/// returns the bytes appended.
pub(super) fn append(file: &mut File, changes: &[Change]) -> io::Result<usize> {
    let mut buf = Vec::with_capacity(changes.len() * 192);
    for change in changes {
        serde_json::to_writer(&mut buf, change).map_err(io::Error::other)?;
        buf.push(b'\n');
    }
    file.write_all(&buf)?;
    file.sync_data()?;
    Ok(buf.len())
}

/// Reads `dir/bans.journal` and applies its records, in order, to `state` (the snapshot
/// just loaded). Never fails: what went wrong is in the report.
pub(super) fn replay_into(dir: &Path, state: &mut State, now: DateTime<Utc>) -> JournalReport {
    let path = dir.join(JOURNAL_FILE);
    let mut report = JournalReport::default();
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return report,
        // Unreadable: moved aside like a corrupt one, never replaced by the next compaction.
        Err(e) => {
            report.problem = Some(set_aside(&path, now, &format!("cannot read it: {e}")));
            return report;
        }
    };
    let lines: Vec<&[u8]> = (bytes.split(|b| *b == b'\n'))
        .filter(|line| !line.is_empty())
        .collect();
    let Some((header, records)) = lines.split_first() else {
        return report;
    };
    let generation = match read_header(header) {
        Ok(generation) => generation,
        Err(why) => {
            report.problem = Some(set_aside(&path, now, &why));
            return report;
        }
    };
    report.generation = Some(generation);
    if generation < state.journal_generation {
        report.stale = true;
        return report;
    }
    let (changes, first_error) = read_records(records, &mut report);
    report.replayed = changes.len();
    apply(state, changes);
    report.problem = describe(&path, &report, first_error, state.journal_generation, now);
    report
}

fn read_header(line: &[u8]) -> Result<u64, String> {
    let header: Header =
        serde_json::from_slice(line).map_err(|e| format!("unreadable header: {e}"))?;
    if header.journal != JOURNAL_VERSION {
        return Err(format!(
            "journal version {} is not the version {JOURNAL_VERSION} this build reads",
            header.journal
        ));
    }
    Ok(header.generation)
}

/// Parses every record; an unreadable last one is a torn tail, any other is skipped.
fn read_records(records: &[&[u8]], report: &mut JournalReport) -> (Vec<Change>, Option<String>) {
    let mut changes = Vec::with_capacity(records.len());
    let mut first_error = None;
    for (i, line) in records.iter().enumerate() {
        match serde_json::from_slice::<Change>(line) {
            Ok(change) => changes.push(change),
            Err(_) if i + 1 == records.len() => report.torn_tail = true,
            Err(e) => {
                report.skipped += 1;
                // Line numbers count from 1 and include the header.
                first_error.get_or_insert_with(|| format!("line {}: {e}", i + 2));
            }
        }
    }
    (changes, first_error)
}

/// Applies `changes` in order: a `ban` replaces the ban of its source and records its
/// offence (once: replaying a record twice changes nothing); an `unban` removes the ban.
pub(super) fn apply(state: &mut State, changes: Vec<Change>) {
    let mut bans: BTreeMap<IpNet, Ban> = state.bans.drain(..).map(|b| (b.src, b)).collect();
    let mut offences: BTreeMap<IpNet, Vec<DateTime<Utc>>> = (state.offences.drain(..))
        .map(|r| (r.src, r.times))
        .collect();
    for change in changes {
        match change {
            Change::Ban(ban) => {
                let times = offences.entry(ban.src).or_default();
                if !times.contains(&ban.since) {
                    times.push(ban.since);
                    times.sort_unstable();
                }
                bans.insert(ban.src, ban);
            }
            Change::Unban { src, .. } => {
                bans.remove(&src);
            }
        }
    }
    state.bans = bans.into_values().collect();
    state.offences = (offences.into_iter())
        .map(|(src, times)| OffenceRecord { src, times })
        .collect();
}

/// The warning for a journal that was used: skipped lines (a copy is kept), a torn tail,
/// or a generation newer than the snapshot's.
fn describe(
    path: &Path,
    report: &JournalReport,
    first_error: Option<String>,
    snapshot_generation: u64,
    now: DateTime<Utc>,
) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(first) = first_error {
        let kept = keep_copy(path, now);
        parts.push(format!(
            "skipped {} unreadable record(s) (first: {first}); the rest was replayed; {kept}",
            report.skipped
        ));
    }
    if report.torn_tail {
        parts.push("the last record was torn by a crash while it was written and was ignored (it had not been acknowledged)".to_string());
    }
    match report.generation {
        Some(g) if g > snapshot_generation => parts.push(format!(
            "journal generation {g} is newer than the snapshot's ({snapshot_generation}): the snapshot was lost or replaced; the journal was replayed on top of what was loaded"
        )),
        _ => {}
    }
    (!parts.is_empty()).then(|| format!("{}: {}", path.display(), parts.join("; ")))
}

/// Copies a journal with unreadable lines (or a snapshot with unreadable entries) aside for
/// inspection (the live one is replaced by the next compaction); says where, or why not.
pub(super) fn keep_copy(path: &Path, now: DateTime<Utc>) -> String {
    let target = format!("{}.corrupt-{}", path.display(), now.timestamp());
    match fs::copy(path, &target) {
        Ok(_) => format!("a copy was kept as {target}"),
        Err(e) => format!("no copy could be kept ({e})"),
    }
}

fn set_aside(path: &Path, now: DateTime<Utc>, why: &str) -> String {
    match move_aside(path, now) {
        Ok(to) => format!(
            "{} is unusable ({why}); moved to {}; its changes were not replayed",
            path.display(),
            to.display()
        ),
        Err(e) => format!(
            "{} is unusable ({why}) and could not be moved aside ({e}); its changes were not replayed",
            path.display()
        ),
    }
}
