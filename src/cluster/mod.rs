//! `[cluster]`: several replicas share bans (of addresses and of identities) and window
//! counters (tumbling and sliding) through one Redis (README, "Scaling out").
//!
//! Nothing on the request path waits for Redis. The hot path adds to in-memory structures
//! only: a ban change is queued here ([`Cluster`] is the enforcement's [`BanSync`]), a count
//! is added to the engine's [`Deltas`]. One background task ([`run`]) owns every Redis
//! connection: it publishes queued ban changes, applies other replicas' changes from pub/sub,
//! resynchronises the whole ban table on every (re)connect and every
//! [`RESYNC_EVERY`], and every `sync_interval` merges the counter deltas in one pipelined
//! round trip of a Lua script that returns the merged totals and sets the window's
//! fired-marker (`SET NX`) when the merged total reaches the threshold: the replica that
//! sets it writes the detection (and later the window's summary), once cluster-wide. Sliding
//! keys are merged per sub-bucket in the same round trip by a second script, which keeps the
//! key's episode open from the merge that reaches the threshold (that replica writes the
//! detection) to the first sub-bucket where the merged count falls below it (the call that
//! sees it writes the summary); each replica checks the open episodes it merged into every
//! sync, so an episode ends even when nobody counts the key any more.
//!
//! When Redis is down, slow or restarted the replica runs in local mode (its own counts
//! decide, its own table enforces), `cluster_connected` is 0, one warning per minute at
//! most is logged, and it reconnects with a backoff of 100 ms doubling to 5 s.
//!
//! # Redis data (prefix `cluster.key_prefix`)
//! - `bans`: hash, source → `{"ban":…,"origin":…,"offences":[…]}`; ended entries are removed
//!   at resync.
//! - `identity-bans`: the same for identity bans, `identity:NAME` → `{"ban":{"identity":…},…}`.
//!   Both kinds go through one code path ([`SharedBan`], [`Subject`]); a hash of their own
//!   keeps a replica of a version without shared identity bans, whose resync removes the
//!   entries it cannot read, from deleting them.
//! - `events`: pub/sub channel of ban and unban changes of both kinds (an unban names
//!   `identity:NAME` or the source); `events@N` for database N other than 0 (channels are
//!   shared by all of Redis's databases).
//! - `unbans`: hash, subject (as in `events`) → time of its last unban (ms), a tombstone kept
//!   7 days: a replica that missed the unban lifts its copy of a ban that started before it at
//!   its next resync, and no replica writes such a ban back.
//! - `epoch`: the identity of Redis's data, set by the first replica that finds none. A
//!   resync that finds another epoch (or none), or another server `run_id`, than at its last
//!   one knows Redis may have lost its data (restarted without persistence, flushed, failed
//!   over): it lifts nothing that is missing and writes back every ban it holds, other
//!   replicas' with their origin.
//! - `c:RULE:START:SUBJECT:PATH`: hash of a window's merged `c`ount, `s`um (ns), `m`ax (ns),
//!   `b`ytes; `f:…` its detection marker, `s:…` its summary marker. All expire with their
//!   window (plus a grace for the summary).
//! - `w:SUB_MS:RULE:SUBJECT:PATH`: hash of a sliding key (named with its sub-bucket size in
//!   ms, so a changed window starts a new hash): one field per sub-bucket index (merged
//!   requests, or bytes for volume rules; those older than the window are deleted), `h` the
//!   newest sub-bucket merged, `f` 1 while an episode is open (the detection marker, cleared
//!   when it ends), `rs rc rt rx rb rm` the run (first sub-bucket, requests, latency sum and
//!   max in ms, bytes, method). Expires one window (plus a grace) after its last merge.

mod task;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::ClusterConfig;
use crate::detect::shared::Deltas;
use crate::enforce::{BanSync, SharedBan, Subject};
use crate::telemetry::Metrics;

pub(crate) use task::{probe, run};

/// Full ban resynchronisation period (besides every reconnect): heals a lost pub/sub
/// message and removes ended entries.
pub(crate) const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// Ban changes queued while publishing is behind (an outage) at most; older ones are
/// dropped first, the resync on reconnect still publishes the bans in force.
const MAX_QUEUED: usize = 10_000;

/// A ban change made here, waiting to be published.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// A ban, with the offence times of its subject.
    Ban(SharedBan, Vec<DateTime<Utc>>),
    /// An unban made here (through the admin API, or a reload's allowlist), and when.
    Unban(Subject, DateTime<Utc>),
}

/// What the `bans` (`identity-bans`) hash holds per source (identity), and what a `ban`
/// message carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The ban.
    pub(crate) ban: SharedBan,
    /// The replica that made it.
    pub(crate) origin: String,
    /// Offence times of its subject (escalation counts them on every replica).
    #[serde(default)]
    pub(crate) offences: Vec<DateTime<Utc>>,
}

/// A pub/sub message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum Message {
    /// A ban started.
    Ban(Entry),
    /// A ban was lifted through the admin API.
    Unban {
        /// The replica that lifted it.
        origin: String,
        /// The source as displayed, or `identity:NAME`.
        src: String,
    },
}

/// The replica's side of the cluster: shared by enforcement (as its [`BanSync`]), the
/// detection stage (the deltas) and the background task.
pub(crate) struct Cluster {
    pub(crate) config: ClusterConfig,
    queue: Mutex<VecDeque<Change>>,
    wake: Notify,
    connected: AtomicBool,
    channel: String,
    pub(crate) deltas: Arc<Deltas>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Cluster {
    /// The cluster side of one replica.
    pub(crate) fn new(config: ClusterConfig, metrics: Arc<Metrics>) -> Arc<Cluster> {
        metrics.cluster.connected.set(0);
        let channel = events_channel(&config);
        Arc::new(Cluster {
            config,
            queue: Mutex::default(),
            wake: Notify::new(),
            connected: AtomicBool::new(false),
            channel,
            deltas: Arc::new(Deltas::default()),
            metrics,
        })
    }

    /// Whether the replica shares state through Redis now.
    pub(crate) fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn set_connected(&self, on: bool) {
        self.connected.store(on, Ordering::Release);
        self.deltas.set_shared(on);
        self.metrics.cluster.connected.set(i64::from(on));
    }

    fn push(&self, change: Change) {
        {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if q.len() >= MAX_QUEUED {
                q.pop_front();
            }
            q.push_back(change);
        }
        self.wake.notify_one();
    }

    fn take_queue(&self) -> Vec<Change> {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        q.drain(..).collect()
    }

    fn requeue(&self, changes: Vec<Change>) {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        for c in changes.into_iter().rev() {
            if q.len() >= MAX_QUEUED {
                break;
            }
            q.push_front(c);
        }
    }

    /// A Redis key or channel under the prefix.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.config.key_prefix)
    }

    /// The pub/sub channel of ban changes.
    pub(crate) fn events_channel(&self) -> &str {
        &self.channel
    }

    /// The hash that holds the bans of `who`'s kind.
    pub(crate) fn bans_key(&self, who: &Subject) -> String {
        match who {
            Subject::Address(_) => self.key("bans"),
            Subject::Identity(_) => self.key("identity-bans"),
        }
    }

    /// The client for the configured URL, with the password of the environment when the
    /// URL carries none, trusting `ca_file` for `rediss://` when it is set.
    pub(crate) fn client(&self) -> redis::RedisResult<redis::Client> {
        use redis::IntoConnectionInfo;
        let mut info = self.config.redis_url.as_str().into_connection_info()?;
        if info.redis.password.is_none() {
            info.redis.password = self.config.password.clone();
        }
        match self.config.tls_certificates() {
            Some(trust) => redis::Client::build_with_tls(info, trust),
            None => redis::Client::open(info),
        }
    }
}

/// The pub/sub channel of ban changes. Redis's channels are shared by all its databases, so a
/// fleet on another database than 0 (`redis://…/N`) names its channel with it: two fleets told
/// apart by the database alone do not hear each other.
fn events_channel(config: &ClusterConfig) -> String {
    use redis::IntoConnectionInfo;
    let db = config
        .redis_url
        .as_str()
        .into_connection_info()
        .map_or(0, |info| info.redis.db);
    if db == 0 {
        format!("{}events", config.key_prefix)
    } else {
        format!("{}events@{db}", config.key_prefix)
    }
}

impl BanSync for Cluster {
    fn banned(&self, ban: SharedBan, offences: Vec<DateTime<Utc>>) {
        self.push(Change::Ban(ban, offences));
    }

    fn unbanned(&self, who: Subject) {
        self.push(Change::Unban(who, Utc::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let m = Message::Unban {
            origin: "a".into(),
            src: "192.0.2.1".into(),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"op":"unban","origin":"a","src":"192.0.2.1"}"#);
        assert!(matches!(
            serde_json::from_str::<Message>(&text).unwrap(),
            Message::Unban { .. }
        ));
    }

    #[test]
    fn both_kinds_of_ban_round_trip_and_keep_their_subject() {
        let address = r#"{"op":"ban","ban":{"src":"192.0.2.1","until":"2026-11-29T13:00:00.000Z","reason":"r","offence":2,"rule":"admin","since":"2026-11-29T12:00:00.000Z"},"origin":"a","offences":["2026-11-29T12:00:00Z"]}"#;
        let identity = r#"{"op":"ban","ban":{"identity":"alice","until":"2026-11-29T13:00:00Z","reason":"r","offence":1,"rule":"per_key","since":"2026-11-29T12:00:00Z"},"origin":"b","offences":[]}"#;
        for (text, subject, display) in [
            (
                address,
                Subject::Address("192.0.2.1/32".parse().unwrap()),
                "192.0.2.1",
            ),
            (
                identity,
                Subject::Identity("alice".into()),
                "identity:alice",
            ),
        ] {
            let Message::Ban(entry) = serde_json::from_str::<Message>(text).unwrap() else {
                panic!("not a ban: {text}")
            };
            assert_eq!(entry.ban.subject(), subject);
            assert_eq!(subject.display(), display);
            assert_eq!(Subject::parse(display), Some(subject));
            let again = serde_json::to_string(&Message::Ban(entry.clone())).unwrap();
            let Message::Ban(back) = serde_json::from_str::<Message>(&again).unwrap() else {
                panic!("not a ban: {again}")
            };
            assert_eq!(back.ban, entry.ban);
        }
        // The address form on the wire is unchanged by identity bans sharing it.
        let Message::Ban(entry) = serde_json::from_str::<Message>(address).unwrap() else {
            panic!()
        };
        assert_eq!(
            serde_json::to_string(&Message::Ban(entry)).unwrap(),
            address
        );
        assert_eq!(Subject::parse("not a source"), None);
    }
}
