//! The ban table's side of persistence: what a snapshot holds, the change queue the
//! journal is fed from, and putting a loaded state back at start-up.

#[cfg(test)]
use std::{io, path::Path, sync::PoisonError};

use chrono::{DateTime, Utc};

use super::ban::{Ban, ADMIN_RULE};
use super::journal::Change;
#[cfg(test)]
use super::persist::save_state;
use super::persist::{OffenceRecord, State, STATE_VERSION};
use super::table::{Bans, Inner};

impl Bans {
    /// The state to persist: bans still running at `now` and offences within the memory.
    #[cfg(test)]
    pub(crate) fn snapshot(&self, now: DateTime<Utc>) -> State {
        state_of(&mut self.lock(), now)
    }

    /// For compaction: the state to persist, and the number of the last change it contains.
    /// The queued changes are dropped, as the state contains them; both happen under the
    /// lock, so no change can fall between the snapshot and the journal that follows it.
    pub(super) fn checkpoint(&self, now: DateTime<Utc>) -> (State, u64) {
        let mut inner = self.lock();
        let state = state_of(&mut inner, now);
        let (_, last) = inner.changes.take();
        (state, last)
    }

    /// From now on, queue every change for the journal (only with a `state_dir`: without
    /// one nothing would ever take them).
    pub(crate) fn record_changes(&self) {
        self.lock().changes.start();
    }

    /// The changes queued since the last call, in the order they were made, and the number
    /// of the last one.
    pub(super) fn take_changes(&self) -> (Vec<Change>, u64) {
        self.lock().changes.take()
    }

    /// The number of the last change queued: it is durable once the writer has written
    /// through it.
    pub(super) fn last_change(&self) -> u64 {
        self.lock().changes.last()
    }

    /// Snapshots and writes `dir/bans.json` alone (no journal); concurrent calls are
    /// serialised so the file always ends up with the latest table. The service persists
    /// through the journal instead (see `durable`).
    #[cfg(test)]
    pub(crate) fn save(&self, dir: &Path, now: DateTime<Utc>) -> io::Result<()> {
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
    pub(crate) fn restore(&self, state: State, now: DateTime<Utc>) -> Vec<Ban> {
        let mut inner = self.lock();
        // Loaded whole, trimmed to the cap once the bans are in (whose histories it keeps).
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
        if inner.offences.len() > inner.max_offenders {
            inner.make_room_for_offenders(now);
        }
        self.publish(&inner);
        restored
    }
}

/// The state to persist: bans still running at `now` and offences within the memory.
fn state_of(inner: &mut Inner, now: DateTime<Utc>) -> State {
    inner.prune_offences(now);
    let bans = (inner.bans.values())
        .filter(|b| b.until > now)
        .cloned()
        .collect();
    let mut offences: Vec<OffenceRecord> = (inner.offences.iter())
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
        journal_generation: 0,
    }
}
