//! `state_dir/bans.json`: bans and offence history survive restarts (SPEC §2 `--state-dir`).
//!
//! Writes are atomic (temp file in the same directory, `fsync`, rename over, `fsync` the
//! directory), so a crash leaves either the old or the new file, never a torn one. Loading is
//! tolerant: a missing file is an empty table; an unreadable, corrupt, truncated or
//! future-version file is reported and moved aside to `bans.json.corrupt-<unix time>` for the
//! operator to inspect — never fatal (the proxy must come up), never silently ignored. A
//! well-formed file with some unreadable entries (a ban or offence record) keeps the rest:
//! those entries are skipped, counted and reported; one bad entry never costs every ban.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::PoisonError;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ban::{de_src, de_time, format_time, ser_src, ser_time, Ban, ADMIN_RULE};
use super::table::Bans;

/// The file name inside `state_dir`.
pub const STATE_FILE: &str = "bans.json";

/// The format version this build writes and reads. A file with another version is not
/// guessed at: it is moved aside and reported.
pub const STATE_VERSION: u32 = 1;

/// Everything that must survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// [`STATE_VERSION`] when written by this build.
    pub version: u32,
    /// When the snapshot was taken.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub saved_at: DateTime<Utc>,
    /// Bans still running at `saved_at`, sorted by source.
    pub bans: Vec<Ban>,
    /// Offences within the ban memory, so escalation continues across restarts.
    pub offences: Vec<OffenceRecord>,
}

/// The offence times of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffenceRecord {
    /// The offending source (as displayed, like [`Ban::src`]).
    #[serde(serialize_with = "ser_src", deserialize_with = "de_src")]
    pub src: IpNet,
    /// When it offended, oldest first.
    #[serde(serialize_with = "ser_times", deserialize_with = "de_times")]
    pub times: Vec<DateTime<Utc>>,
}

/// What [`load_state`] found, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// The usable state (empty when there was none or it was unusable).
    pub state: State,
    /// Why the file, or some of its entries, could not be used; log it as a warning.
    pub problem: Option<String>,
    /// Entries (bans and offence records) skipped as unreadable from a file otherwise used.
    pub skipped: usize,
    /// Where an unusable file was moved.
    pub moved_to: Option<PathBuf>,
    /// Bans that ended while the process was down (dropped, not restored).
    pub dropped_expired: usize,
}

impl State {
    /// A state with nothing in it.
    pub fn empty(now: DateTime<Utc>) -> State {
        State {
            version: STATE_VERSION,
            saved_at: now,
            bans: Vec::new(),
            offences: Vec::new(),
        }
    }
}

/// Distinguishes temp files of concurrent saves within one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `state` to `dir/bans.json` atomically (creating `dir` if needed). Prefer
/// [`Bans::save`], which also orders concurrent saves.
pub fn save_state(dir: &Path, state: &State) -> io::Result<()> {
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

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes the rename durable: the directory entry itself must reach the disk.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Reads `dir/bans.json` at start-up. Bans that ended by `now` are dropped; an unusable file
/// is moved aside and explained in [`LoadReport::problem`]. Never fails.
pub fn load_state(dir: &Path, now: DateTime<Utc>) -> LoadReport {
    let path = dir.join(STATE_FILE);
    let mut report = LoadReport {
        state: State::empty(now),
        problem: None,
        moved_to: None,
        skipped: 0,
        dropped_expired: 0,
    };
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return report,
        Err(e) => {
            report.problem = Some(format!("cannot read {}: {e}", path.display()));
            return report;
        }
    };
    match parse_state(&bytes) {
        Ok((mut state, skipped)) => {
            let before = state.bans.len();
            state.bans.retain(|b| b.until > now);
            report.dropped_expired = before - state.bans.len();
            report.state = state;
            report.skipped = skipped.count;
            report.problem = skipped.describe(&path);
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
    };
    Ok((state, skipped))
}

/// Renames `path` to `path.corrupt-<unix time>` (with `-1`, `-2`, ... if that exists).
fn move_aside(path: &Path, now: DateTime<Utc>) -> io::Result<PathBuf> {
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

impl Bans {
    /// The state to persist: bans still running at `now` and offences within the memory.
    pub fn snapshot(&self, now: DateTime<Utc>) -> State {
        let mut inner = self.lock();
        inner.prune_offences(now);
        let bans = (inner.bans.values())
            .filter(|b| b.until > now)
            .cloned()
            .collect();
        let mut offences: Vec<OffenceRecord> = inner
            .offences
            .iter()
            .map(|(src, times)| OffenceRecord {
                src: *src,
                times: times.clone(),
            })
            .collect();
        offences.sort_by_key(|r| r.src);
        State {
            version: STATE_VERSION,
            saved_at: now,
            bans,
            offences,
        }
    }

    /// Snapshots and writes `dir/bans.json`; concurrent calls are serialised so the file
    /// always ends up with the latest table. Call after every ban change.
    pub fn save(&self, dir: &Path, now: DateTime<Utc>) -> io::Result<()> {
        let _one_writer = self
            .save_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        save_state(dir, &self.snapshot(now))
    }

    /// Puts a loaded state back at start-up and returns the bans restored (for `ban` events
    /// with `restored: true`). Nothing here is a new offence: numbers and history are kept
    /// as saved, so a re-offence escalates exactly as if there had been no restart. Bans
    /// that ended by `now` and offences older than the memory are dropped; a ban already in
    /// the table wins over the saved one. Rule bans that the current allowlist overlaps are
    /// not restored (allowlisted sources are never banned by a rule; the count is logged);
    /// admin bans are, as they were forced. Not subject to [`MAX_BANS`](super::MAX_BANS).
    pub fn restore(&self, state: State, now: DateTime<Utc>) -> Vec<Ban> {
        let mut inner = self.lock();
        for record in state.offences {
            inner
                .offences
                .entry(record.src)
                .or_default()
                .extend(record.times);
        }
        let mut restored = Vec::new();
        let mut allowlisted = Vec::new();
        for ban in state.bans {
            if ban.until <= now || inner.bans.contains_key(&ban.src) {
                continue;
            }
            if &*ban.rule != ADMIN_RULE && inner.allowlisted(&ban.src) {
                allowlisted.push(ban.src_display());
                continue;
            }
            // A ban is itself an offence: keep that fact even if the history was lost.
            inner.offences.entry(ban.src).or_default().push(ban.since);
            inner.put(ban.clone());
            restored.push(ban);
        }
        if !allowlisted.is_empty() {
            tracing::info!(
                count = allowlisted.len(),
                first = %allowlisted[0],
                "saved rule bans of sources now allowlisted were not restored"
            );
        }
        for times in inner.offences.values_mut() {
            times.sort_unstable();
            times.dedup();
        }
        inner.prune_offences(now);
        self.publish(&inner);
        restored
    }
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
