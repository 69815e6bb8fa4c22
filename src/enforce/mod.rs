//! Enforcement: the ban table the proxy consults on every request, its lifecycle, the
//! allowlist, and persistence across restarts.
//!
//! The design follows fail2ban/CrowdSec (escalating bans with a memory of past offences, an
//! allowlist that always wins) while avoiding their known failure modes:
//!
//! - **No self-feeding bans.** A verdict against a source that is already banned is
//!   [`BanOutcome::AlreadyBanned`]: no new offence, no extension. (The proxy also never feeds
//!   blocked requests to detection, see README "Blocking: the operator's guide".)
//! - **No lost or inflated bans on restart, at a cost that does not grow with the table.**
//!   Each change (ban, unban; a ban also records its offence) is appended to
//!   `state_dir/bans.journal` and fsync'd, changes pending together sharing one write and one
//!   fsync; the whole table is written to `state_dir/bans.json` only at compaction (start-up,
//!   shutdown, a journal longer than max(4096, 2 × bans)), atomically and in an order that a
//!   crash cannot turn into lost or resurrected bans. An admin ban is answered only once it is
//!   durable, so `kill -9` loses at most changes not yet acknowledged. At start the snapshot
//!   is loaded, the journal replayed ([`load_state`]) and the result restored without
//!   counting as new offences ([`Bans::restore`]); bans that ran out while the process was
//!   down are dropped. A corrupt snapshot is moved aside and reported, never fatal, never
//!   ignored; a single unreadable entry or journal line is skipped and reported, the rest is
//!   kept. Ban ends are clamped to [`MAX_UNTIL`] so every ban can be written and read back.
//! - **The allowlist is absolute for rule bans.** An allowlisted address is never banned by a
//!   rule; when an IPv6 group would cover an allowlisted address, the ban narrows to the
//!   offending address alone; rule bans the allowlist covers are not restored and are lifted
//!   when a reload extends it. Admin bans overlapping the allowlist need `force`. A rule's ban
//!   of a network wider than a `manage_from` one never refuses an address in it.
//! - **Bounded.** At most [`MAX_BANS`] rule bans (then IPv6 offenders are banned by /48), and
//!   a change costs the hot path's publisher one shard copy, not a rebuild of the table.
//!
//! Everything here is synchronous, takes time as an argument and knows nothing about HTTP,
//! so it is unit-tested with explicit timestamps. `serve` wires it into the proxy (hot path
//! [`Bans::check`]), the admin API, the record pipeline and the expiry timer
//! ([`Bans::next_expiry`] / [`Bans::expire`]).
//!
//! Enforcement does not decide whether a rule verdict bans: `pipeline::verdict` does (mode,
//! rule action, trusted proxies, allowlist) and then calls [`Enforcement::ban`]. The table
//! still refuses to ban an allowlisted address itself, because a reload can extend the
//! allowlist between that decision and the ban.
//!
//! # Layout
//! - `ban`: the [`Ban`] record, what the hot path returns ([`BanHit`]), source parsing.
//! - `table`: [`Bans`], the table and its lifecycle (ban, unban, expire, escalate).
//! - `snapshot`: the immutable lookup structure behind the lock-free hot path.
//! - `cap`: [`MAX_BANS`] and what a rule ban does when the table is full.
//! - `blocked`: rate limiting of `blocked` events.
//! - `service`: [`Enforcement`], the run-time service: gate, ban/unban/expiry, and the `ban`,
//!   `unban` and `blocked` events of the detection log.
//! - `identity`: bans of identities (API key names), their table and `identity-bans.json`.
//! - `remote`: `[cluster]` — the [`BanSync`] seam, the shared form of both kinds of ban
//!   ([`SharedBan`], [`Subject`]), and bans applied from other replicas.
//! - `persist`: `bans.json`, the snapshot — atomic save, tolerant load (with the journal).
//! - `journal`: `bans.journal` — the change records, their format, replay, and why not an
//!   embedded store.
//! - `durable`: group commit of journal appends, and compaction.
//! - `restore`: the table's side — the change queue, snapshots, restoring a loaded state.

mod ban;
mod blocked;
mod cap;
mod durable;
pub(crate) mod identity;
mod journal;
mod persist;
mod remote;
mod restore;
mod service;
mod snapshot;
mod table;

#[cfg(test)]
mod tests;

pub(crate) use ban::{display_net as display_src, parse_source};
pub(crate) use ban::{Ban, BanOutcome};
pub(crate) use persist::{load_state, sync_dir, LoadReport};
pub(crate) use remote::{BanSync, SharedBan, Subject};
pub(crate) use service::Enforcement;
pub(crate) use table::Bans;
#[cfg(test)]
pub(crate) use {
    ban::{ADMIN_RULE, MAX_UNTIL},
    cap::MAX_BANS,
    journal::{Change, JOURNAL_FILE},
    persist::{save_state, State, STATE_FILE},
};

/// The shortest IPv4 prefix a manual ban takes without `force`.
pub(crate) const WIDEST_UNFORCED_V4: u8 = 8;
/// The shortest IPv6 prefix a manual ban takes without `force`.
pub(crate) const WIDEST_UNFORCED_V6: u8 = 32;

/// Why an enforcement request was refused; each variant maps to a clear admin API answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum EnforceError {
    /// The source overlaps the allowlist and the caller did not `force` the ban.
    #[error("{src} overlaps the allowlist; refusing to ban it without force")]
    Allowlisted {
        /// The refused source, as displayed.
        src: String,
    },
    /// A network wider than [`WIDEST_UNFORCED_V4`] or [`WIDEST_UNFORCED_V6`] and the caller
    /// did not `force` it: `0.0.0.0/0` or `::/0` typed by mistake refuses every client.
    #[error("{src} covers more than a /{WIDEST_UNFORCED_V4} of IPv4 or a /{WIDEST_UNFORCED_V6} of IPv6; refusing to ban it without force")]
    TooWide {
        /// The refused source, as displayed.
        src: String,
    },
    /// The text is not an IP address or a CIDR network.
    #[error("bad source {input:?}: {reason}")]
    BadSource {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A ban of zero length would never block anything.
    #[error("ban duration must be greater than zero")]
    ZeroDuration,
    /// The change is in force but could not be written to `state_dir`: it would not
    /// survive a restart.
    #[error("the change is in force but could not be persisted: {reason}")]
    NotPersisted {
        /// Why the write failed.
        reason: String,
    },
}
