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
//! - `unbans`: hash, subject (as in `events`) → `SINCE:AT` (ms): the start of the ban an unban
//!   lifted, and when. Kept 7 days, here and in every replica's memory ([`Tombs`]): a replica
//!   that missed the unban lifts its copy of that ban (or an older one) at its next resync, no
//!   replica writes it back, and a Redis that lost its data gets the tombstones back.
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
//!
//! `RULE` in both is `MODE:NAME#DIGEST`: the global mode (`block` or `monitor`) and
//! `Rule::make_shared_id` (16 hex digits of the SHA-256 of the settings that decide what the
//! rule counts and does), so replicas running one name with other settings, or in the other
//! mode, count apart.

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
    /// An unban made here (through the admin API, or a reload's allowlist): the subject,
    /// the start of the ban lifted, and when it was lifted.
    Unban(Subject, DateTime<Utc>, DateTime<Utc>),
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
    /// A ban was lifted through the admin API (or an allowlist).
    Unban {
        /// The replica that lifted it.
        origin: String,
        /// The source as displayed, or `identity:NAME`.
        src: String,
        /// The start of the ban lifted (ms since the epoch): a ban that started later is
        /// another and stays. Absent from replicas of earlier versions (then any ban goes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<i64>,
    },
    /// A replica checking, as it connects, that its subscription hears the channel (every
    /// replica ignores it).
    Probe {
        /// The replica that published it.
        origin: String,
        /// Tells its probes apart.
        nonce: i64,
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
    tombs: Mutex<Tombs>,
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
            tombs: Mutex::default(),
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

    /// The tombstones this replica has seen.
    pub(crate) fn tombs(&self) -> std::sync::MutexGuard<'_, Tombs> {
        self.tombs.lock().unwrap_or_else(PoisonError::into_inner)
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

/// How long an unban's tombstone is kept: a replica cut off from Redis for longer than this
/// can bring back a ban lifted while it was away.
pub(crate) const TOMBSTONE_KEEP: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// How far ahead of this replica's clock another replica's may run: a tombstone further in
/// the future is forged or broken.
pub(crate) const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Tombstones held in memory at most (they come from operators' unbans and allowlist
/// reloads; past this, the oldest unban's goes).
const MAX_TOMBS: usize = 100_000;

/// An unban: the start of the ban lifted and when it was lifted (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tomb {
    pub(crate) since: i64,
    pub(crate) at: i64,
}

impl Tomb {
    /// As the `unbans` hash holds it: `SINCE:AT` (`None`: anything else).
    pub(crate) fn parse(text: &[u8]) -> Option<Tomb> {
        let text = std::str::from_utf8(text).ok()?;
        let (since, at) = text.split_once(':')?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(since) || !digits(at) {
            return None;
        }
        Some(Tomb {
            since: since.parse().ok()?,
            at: at.parse().ok()?,
        })
    }

    /// Whether a ban that started at `since` is the one lifted (or older).
    pub(crate) fn covers(self, since: DateTime<Utc>) -> bool {
        since.timestamp_millis() <= self.since
    }

    /// Whether it is still kept at `now`: lifted less than [`TOMBSTONE_KEEP`] ago, and
    /// neither lifted nor naming a ban started more than [`CLOCK_SKEW`] in the future (a forged
    /// one would otherwise never expire, and keep its subject from being banned anywhere).
    pub(crate) fn kept(self, now: DateTime<Utc>) -> bool {
        let now = now.timestamp_millis();
        let skew = CLOCK_SKEW.num_milliseconds();
        now.saturating_sub(self.at) < TOMBSTONE_KEEP.num_milliseconds()
            && self.at <= now.saturating_add(skew)
            && self.since <= now.saturating_add(skew)
    }
}

/// The tombstones this replica has seen (its own unbans, other replicas' messages, Redis at
/// resyncs), kept [`TOMBSTONE_KEEP`]: a Redis that lost its data gets them back, so an unban
/// made before the loss is not undone by a replica that missed it.
#[derive(Default)]
pub(crate) struct Tombs(std::collections::HashMap<Subject, Tomb>);

impl Tombs {
    /// Notes `tomb` for `who` (the newest ban lifted wins).
    pub(crate) fn note(&mut self, who: Subject, tomb: Tomb) {
        let newer = self.0.get(&who).map_or(true, |t| t.since < tomb.since);
        if !newer {
            return;
        }
        if self.0.len() >= MAX_TOMBS && !self.0.contains_key(&who) {
            let oldest = self
                .0
                .iter()
                .min_by_key(|(_, t)| t.at)
                .map(|(w, _)| w.clone());
            if let Some(oldest) = oldest {
                self.0.remove(&oldest);
            }
        }
        self.0.insert(who, tomb);
    }

    /// Drops the tombstones past their keep; the others, to merge with Redis's.
    pub(crate) fn current(&mut self, now: DateTime<Utc>) -> Vec<(Subject, Tomb)> {
        self.0.retain(|_, t| t.kept(now));
        self.0.iter().map(|(w, t)| (w.clone(), *t)).collect()
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

    fn unbanned(&self, who: Subject, since: DateTime<Utc>) {
        self.push(Change::Unban(who, since, Utc::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_is_read_exactly_and_covers_the_ban_it_lifted_and_older_ones() {
        assert_eq!(
            Tomb::parse(b"1764590400000:1764594000000"),
            Some(Tomb {
                since: 1_764_590_400_000,
                at: 1_764_594_000_000
            })
        );
        for bad in [
            &b""[..],
            b"1764590400000",
            b"1e13:5",
            b" 5:5",
            b"0x10:5",
            b"-5:5",
            b"5:",
            b"5:5:5",
            b"\xff:5",
            b"99999999999999999999:5",
        ] {
            assert_eq!(Tomb::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let tomb = Tomb {
            since: 1_764_590_400_000,
            at: 1_764_594_000_000,
        };
        let at = |ms| DateTime::from_timestamp_millis(ms).unwrap();
        assert!(tomb.covers(at(1_764_590_400_000)));
        assert!(tomb.covers(at(1_764_590_399_999)));
        assert!(!tomb.covers(at(1_764_590_400_001)));
        // Kept seven days after the unban, to the millisecond; a garbage time expires.
        assert!(tomb.kept(at(1_764_594_000_000 + TOMBSTONE_KEEP.num_milliseconds() - 1)));
        assert!(!tomb.kept(at(1_764_594_000_000 + TOMBSTONE_KEEP.num_milliseconds())));
        assert!(!Tomb {
            since: 0,
            at: i64::MIN
        }
        .kept(at(1_764_594_000_000)));
        // One from the future (forged, or a clock far off) is not kept: it would never expire.
        let now = at(1_764_594_000_000);
        let hour = CLOCK_SKEW.num_milliseconds();
        let ahead = |since: i64, at: i64| Tomb {
            since: 1_764_594_000_000 + since,
            at: 1_764_594_000_000 + at,
        };
        assert!(ahead(hour, hour).kept(now));
        assert!(!ahead(0, hour + 1).kept(now));
        assert!(!ahead(hour + 1, 0).kept(now));
        let forged = Tomb {
            since: 9_999_999_999_999,
            at: 9_999_999_999_999,
        };
        assert!(!forged.kept(now));
    }

    #[test]
    fn the_newest_ban_lifted_wins_and_expired_tombstones_go() {
        let mut tombs = Tombs::default();
        let x = Subject::parse("192.0.2.1").unwrap();
        let y = Subject::parse("identity:alice").unwrap();
        tombs.note(x.clone(), Tomb { since: 20, at: 30 });
        tombs.note(x.clone(), Tomb { since: 10, at: 40 });
        tombs.note(y.clone(), Tomb { since: 5, at: 6 });
        let now = DateTime::from_timestamp_millis(35).unwrap();
        let mut got = tombs.current(now);
        got.sort_by_key(|(_, t)| t.since);
        assert_eq!(
            got,
            [
                (y.clone(), Tomb { since: 5, at: 6 }),
                (x.clone(), Tomb { since: 20, at: 30 })
            ]
        );
        let later = DateTime::from_timestamp_millis(6 + TOMBSTONE_KEEP.num_milliseconds()).unwrap();
        assert_eq!(tombs.current(later), [(x, Tomb { since: 20, at: 30 })]);
    }

    #[test]
    fn an_unban_message_carries_the_start_of_the_ban_lifted_and_reads_without_it() {
        let m = Message::Unban {
            origin: "a".into(),
            src: "192.0.2.1".into(),
            since: Some(1_764_590_400_000),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"op":"unban","origin":"a","src":"192.0.2.1","since":1764590400000}"#
        );
        let Message::Unban { since, .. } =
            serde_json::from_str(r#"{"op":"unban","origin":"a","src":"192.0.2.1"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(since, None);
    }

    #[test]
    fn messages_round_trip_as_json() {
        let m = Message::Unban {
            origin: "a".into(),
            src: "192.0.2.1".into(),
            since: None,
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
