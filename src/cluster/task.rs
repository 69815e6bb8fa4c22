//! The background task that owns every Redis connection (see the module docs).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};

use super::{Change, Cluster, Entry, Message, Tomb, RESYNC_EVERY};
use crate::detect::shared::SUB_BUCKETS;
use crate::detect::shared::{Delta, Slide, SlideAnswer, SlideRule};
use crate::detect::{Engine, Event, WindowKey};
use crate::enforce::{Enforcement, Subject};
use crate::pipeline::DetectionStage;

/// Connect and per-command timeout: a slow Redis fails the sync, never a request.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// First reconnect delay; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// At most one outage warning per this long.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Merges one window's delta; returns `{count, sum, max, bytes, won}` where `won` is 1 when
/// this call set the window's fired-marker (merged total at or over the threshold). A field
/// that is no integer (or would overflow) starts over from the delta: one bad value in the
/// store must not fail the pipeline that carries every source's deltas.
const MERGE: &str = r"
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'hash' and t ~= 'none' then redis.call('DEL', KEYS[1]) end
t = redis.call('TYPE', KEYS[2]).ok
if t ~= 'string' and t ~= 'none' then redis.call('DEL', KEYS[2]) end
local function incr(f, by)
  local r = redis.pcall('HINCRBY', KEYS[1], f, by)
  if type(r) == 'table' and r.err then
    redis.call('HSET', KEYS[1], f, by)
    r = tonumber(by)
  end
  return r
end
local c = incr('c', ARGV[1])
local s = incr('s', ARGV[2])
local b = incr('b', ARGV[4])
local m = tonumber(redis.call('HGET', KEYS[1], 'm') or '0') or 0
if tonumber(ARGV[3]) > m then
  m = tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'm', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local v = c
if ARGV[7] == '1' then v = b end
local won = 0
if v >= tonumber(ARGV[6]) then
  if redis.call('SET', KEYS[2], ARGV[8], 'NX', 'PX', ARGV[5]) then won = 1 end
end
return {c, s, m, b, won}
";

/// Merges one sliding key's sub-bucket deltas (or, with none, checks its open episode);
/// KEYS[1] is the key's hash: one field per sub-bucket index (its merged count, or bytes)
/// and the state `h` (newest sub-bucket merged), `f` (episode open), `rs rc rt rx rb rm`
/// (the run: first sub-bucket, requests, latency sum and max in ms, bytes, method).
/// ARGV: threshold, TTL (ms), head, then per sub-bucket oldest first: index, amount, count,
/// sum, max, bytes, method. Mirrors the local ring (`detect::sliding`): an open episode ends
/// at the first sub-bucket after `h` whose window falls below the threshold; a run starts
/// over when the window was empty or an episode ended; the first merge whose window total
/// reaches the threshold opens the episode (`won`). Answers `total, won, flagged, head`, the
/// run, then `ended, end` and the ended run.
const SLIDE: &str = r"
local K = KEYS[1]
local kt = redis.call('TYPE', K).ok
if kt ~= 'hash' and kt ~= 'none' then redis.call('DEL', K) end
local thr = tonumber(ARGV[1])
local head = tonumber(ARGV[3])
local n = (#ARGV - 3) / 7
local raw = redis.call('HGETALL', K)
if #raw == 0 and n == 0 then
  return {0, 0, 0, head, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
end
local subs, names, st = {}, {}, {}
for i = 1, #raw, 2 do
  local idx = tonumber(raw[i])
  if idx and not string.match(raw[i + 1], '^-?%d+$') then
    redis.call('HDEL', K, raw[i])
  elseif idx then
    subs[idx] = tonumber(raw[i + 1])
    names[idx] = raw[i]
  else
    st[raw[i]] = tonumber(raw[i + 1])
  end
end
local function total(at)
  local t = 0
  for idx, v in pairs(subs) do
    if idx <= at and idx > at - 15 then t = t + v end
  end
  return t
end
local h = st.h or 0
local at = math.max(h, head)
local flagged = st.f == 1
local rs, rc, rt, rx, rb, rm = st.rs or 0, st.rc or 0, st.rt or 0, st.rx or 0, st.rb or 0, st.rm or 0
local ended = {0, 0, 0, 0, 0, 0, 0, 0}
if flagged then
  for e = h + 1, math.min(at, h + 15) do
    if total(e) < thr then
      ended = {1, e, rs, rc, rt, rx, rb, rm}
      flagged = false
      rc = 0
      break
    end
  end
end
local lo = at - 14
local fresh = rc == 0 or total(at) == 0
local added = 0
for i = 0, n - 1 do
  local b = 4 + i * 7
  local idx = tonumber(ARGV[b])
  if idx >= lo then
    if fresh and added == 0 then
      rs, rc, rt, rx, rb, rm = idx, 0, 0, 0, 0, tonumber(ARGV[b + 6])
    end
    subs[idx] = (subs[idx] or 0) + tonumber(ARGV[b + 1])
    if type(redis.pcall('HINCRBY', K, ARGV[b], ARGV[b + 1])) == 'table' then
      redis.call('HSET', K, ARGV[b], subs[idx])
    end
    if idx < rs then rs = idx end
    rc = rc + tonumber(ARGV[b + 2])
    rt = rt + tonumber(ARGV[b + 3])
    rx = math.max(rx, tonumber(ARGV[b + 4]))
    rb = rb + tonumber(ARGV[b + 5])
    added = added + 1
  end
end
local tot = total(at)
local won = 0
if added > 0 and not flagged and tot >= thr then
  flagged = true
  won = 1
  if lo < rs then rs = lo end
end
for idx, name in pairs(names) do
  if idx < lo then redis.call('HDEL', K, name) end
end
local f = 0
if flagged then f = 1 end
redis.call('HSET', K, 'h', at, 'f', f, 'rs', rs, 'rc', rc, 'rt', rt, 'rx', rx, 'rb', rb, 'rm', rm)
redis.call('PEXPIRE', K, ARGV[2])
return {tot, won, f, at, rs, rc, rt, rx, rb, rm,
  ended[1], ended[2], ended[3], ended[4], ended[5], ended[6], ended[7], ended[8]}
";

/// Deletes each key (KEYS) whose type is neither `none` nor the one wanted (ARGV, in order);
/// when one of the first two (the bans hashes) goes, the epoch (the fourth) goes with it, so
/// that every replica's next resync takes the loss for one. Answers the names deleted.
const TYPES: &str = r"
local gone = {}
for i, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k).ok
  if t ~= 'none' and t ~= ARGV[i] then
    redis.call('DEL', k)
    table.insert(gone, k)
    if i <= 2 then redis.call('DEL', KEYS[4]) end
  end
end
return gone
";

/// Deletes field ARGV[1] of hash KEYS[1] if it still holds ARGV[2]: what a resync found ended
/// or unreadable goes, a value written since stays.
const DELETE_IF: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";

/// Writes ban entry ARGV[2] to field ARGV[1] of the bans hash KEYS[1] unless the tombstone
/// hash KEYS[2] (`SINCE:AT`) says an unban lifted the subject's ban that started at ARGV[3]
/// (ms) or later:
/// `set` replaces the field and publishes ARGV[6] on channel ARGV[5]; `nx` writes an empty
/// field only, silently. Answers 1 when written.
const WRITE_BACK: &str = r"
local t = redis.call('HGET', KEYS[2], ARGV[1])
local lifted = t and tonumber(string.match(t, '^(%d+):%d+$'))
if lifted and lifted >= tonumber(ARGV[3]) then return 0 end
if ARGV[4] == 'nx' then
  return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return 1
";

/// Sets the tombstone of field ARGV[1] in hash KEYS[1] to `ARGV[2]:ARGV[3]` (the start of
/// the ban lifted, when it was lifted) unless it names a newer ban lifted already.
const TOMB: &str = r"
local t = redis.call('HGET', KEYS[1], ARGV[1])
local old = t and tonumber(string.match(t, '^(%d+):%d+$'))
if old and old >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
return 1
";

/// The largest ban entry or message read from Redis: a ban with its offence times is a few
/// hundred bytes (an offence a ban, within the ban memory); a larger one is taken for
/// unreadable (deleted at resync, ignored as a message), so a hostile value cannot make every
/// replica merge megabytes of offence times every resync.
const MAX_ENTRY: usize = 64 << 10;

/// Open sliding episodes watched at most (each costs one script call per sync until it
/// ends); beyond, a new episode is left to the other replicas' merges.
const MAX_WATCHED: usize = 10_000;

/// Why a session ended.
#[derive(Debug)]
enum Failure {
    Redis(RedisError),
    Timeout,
    Closed,
    /// A probe published on the events channel (named) never reached this replica's
    /// subscription.
    Deaf(String),
}

impl From<RedisError> for Failure {
    fn from(e: RedisError) -> Self {
        Failure::Redis(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Redis(_) if self.tls_refused().is_some() => write!(
                f,
                "Redis's TLS certificate is not trusted: {} (cluster.ca_file names the CA that signs it; without it, the system's store decides)",
                self.tls_refused().map(ToString::to_string).unwrap_or_default()
            ),
            Failure::Redis(e) if e.kind() == redis::ErrorKind::AuthenticationFailed => write!(
                f,
                "Redis refused the credentials (check the password in cluster.redis_url or {}): {e}",
                crate::config::PASSWORD_ENV
            ),
            Failure::Redis(e) if e.code() == Some("NOAUTH") => write!(
                f,
                "Redis requires a password and none was given (put it in cluster.redis_url or {}): {e}",
                crate::config::PASSWORD_ENV
            ),
            Failure::Redis(e) if e.code() == Some("NOPERM") => write!(
                f,
                "the Redis user lacks a permission the cluster needs (see README \"Scaling out\" \
                 for its commands, keys and channel): {e}"
            ),
            Failure::Redis(e) => write!(f, "{e}"),
            Failure::Timeout => write!(f, "Redis did not answer within {IO_TIMEOUT:?}"),
            Failure::Closed => write!(f, "the pub/sub connection was closed"),
            Failure::Deaf(channel) => write!(
                f,
                "a message published on the channel {channel:?} never reached this replica's \
                 subscription within {IO_TIMEOUT:?}: other replicas' bans would not be heard \
                 (check the Redis user's channel permissions, ACL &{channel}, and that nothing \
                 between the guard and Redis drops pub/sub)"
            ),
        }
    }
}

impl Failure {
    /// The TLS error when the handshake with Redis refused its certificate.
    fn tls_refused(&self) -> Option<&rustls::Error> {
        let Failure::Redis(e) = self else { return None };
        let io = std::error::Error::source(e)?.downcast_ref::<std::io::Error>()?;
        io.get_ref()?.downcast_ref::<rustls::Error>()
    }

    /// A failure that retrying cannot heal: an error, not a warning.
    fn is_misconfiguration(&self) -> bool {
        matches!(self, Failure::Redis(e) if e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(e.code(), Some("NOAUTH" | "NOPERM")))
            || matches!(self, Failure::Deaf(_))
            || self.tls_refused().is_some()
    }
}

async fn timed<T, F>(fut: F) -> Result<T, Failure>
where
    F: Future<Output = redis::RedisResult<T>>,
{
    match tokio::time::timeout(IO_TIMEOUT, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Failure::Timeout),
    }
}

async fn connect(cluster: &Cluster) -> Result<MultiplexedConnection, Failure> {
    let client = cluster.client()?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(IO_TIMEOUT)
        .set_response_timeout(IO_TIMEOUT);
    timed(client.get_multiplexed_async_connection_with_config(&config)).await
}

/// `cluster.required`: one connection attempt at start (`Err`: the line to print).
pub(crate) async fn probe(cluster: &Cluster) -> Result<(), String> {
    let mut conn = connect(cluster).await.map_err(|e| e.to_string())?;
    timed(redis::cmd("PING").query_async::<String>(&mut conn))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A window this replica detected: its summary is due once the window has closed.
struct PendingSummary {
    due: chrono::DateTime<Utc>,
    name: String,
    delta: Delta,
    key: (WindowKey, u32),
    src: Option<IpAddr>,
}

/// An open sliding episode this replica merged into: checked every sync until it ends, so
/// its end (and summary) is seen even when no replica counts the key any more.
struct Watch {
    rule: Arc<str>,
    name: String,
    path: Option<String>,
}

/// What the counter syncs keep from one sync (and session) to the next.
#[derive(Default)]
struct Counters {
    summaries: Vec<PendingSummary>,
    watch: HashMap<WindowKey, Watch>,
    /// Windows whose detection this replica wrote itself after their merge was lost or
    /// had to wait ([`detect_withheld`]), by their Redis name (mode, rule and its digest,
    /// window start for a tumbling rule, subject, path: a reload that moves or changes rules
    /// cannot make another rule's window match), with when and for how long: a tumbling window
    /// until it ends (and the summary grace), a sliding key for one window length (a later
    /// episode is another detection) or until its merged episode ends. A later merge of this
    /// replica that wins such a window writes no second detection.
    detected_here: HashMap<String, (Instant, Duration)>,
}

/// Writes the detections this replica left to merges that are lost or must wait (see
/// [`Engine::withheld_detection`]), and notes their windows in `counters`.
fn detect_withheld(
    cluster: &Cluster,
    detection: &DetectionStage,
    counters: &mut Counters,
    withheld: Vec<crate::detect::shared::Withheld>,
) {
    if withheld.is_empty() {
        return;
    }
    let engine = detection.engine();
    let mode = mode_of(detection);
    let grace = summary_grace(cluster);
    let mut new = Vec::with_capacity(withheld.len());
    for (key, start, snap, path) in withheld {
        let (name, keep) = match start {
            Some(start) => (
                engine.shared_name(&key, start, path.as_deref()),
                engine
                    .shared_rule(&key)
                    .map(|(secs, ..)| Duration::from_secs(u64::from(secs)) + grace * 2),
            ),
            None => (
                engine.slide_name(&key, path.as_deref()),
                engine
                    .slide_rule(&key)
                    .map(|r| Duration::from_millis(r.sub_ms * u64::from(SUB_BUCKETS))),
            ),
        };
        let (Some(name), Some(keep)) = (name, keep) else {
            continue;
        };
        // Once per window: a crossing taken at a fallback may come again from a lost merge.
        let fresh = counters
            .detected_here
            .insert(format!("{mode}:{name}"), (Instant::now(), keep))
            .is_none();
        if fresh {
            new.push((key, start, snap, path));
        }
    }
    for (event, src) in engine.withheld_detections(new) {
        detection.handle(std::slice::from_ref(&event), src);
    }
}

/// The global mode's part of a shared window's Redis name: replicas in another mode (a
/// monitor-mode canary) count apart, as a window's marker set by one that only logs would
/// keep the others from banning.
fn mode_of(detection: &DetectionStage) -> &'static str {
    if detection.blocking() {
        "block"
    } else {
        "monitor"
    }
}

/// One sliding merge (or episode check, `slide.subs` empty) of a sync.
struct SlideItem {
    rule: SlideRule,
    name: String,
    path: Option<String>,
    head: u32,
    slide: Slide,
}

/// Runs until `shutdown`: connects, syncs, and reconnects with backoff on any failure.
pub(crate) async fn run(
    cluster: Arc<Cluster>,
    enforcement: Arc<Enforcement>,
    detection: Arc<DetectionStage>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = MIN_BACKOFF;
    // Whether a session ever connected: the `rediss://` hint is for a first connection only.
    let mut ever_connected = false;
    let mut last_warn: Option<Instant> = None;
    let mut counters = Counters::default();
    // What Redis's data was at the last resync (see `resync`).
    let mut epoch = None;
    loop {
        let session = session(
            &cluster,
            &enforcement,
            &detection,
            &mut counters,
            &mut epoch,
        );
        let result = tokio::select! {
            r = session => r,
            () = &mut shutdown => {
                // Counters stay shared: the closing engine must not write local summaries
                // of windows the cluster decides. A crossing still waiting for its merge
                // would be detected by no one: written here.
                cluster.metrics.cluster.connected.set(0);
                detect_withheld(&cluster, &detection, &mut counters, cluster.deltas.take_crossed());
                return;
            }
        };
        let was = cluster.connected();
        ever_connected |= was;
        cluster.set_connected(false);
        // Crossings left to a merge that now waits for Redis: detected here instead.
        detect_withheld(
            &cluster,
            &detection,
            &mut counters,
            cluster.deltas.take_crossed(),
        );
        let Err(failure) = result else { break };
        cluster.metrics.cluster.sync_errors.inc();
        if last_warn.map_or(true, |t| t.elapsed() >= WARN_EVERY) {
            last_warn = Some(Instant::now());
            let url = cluster.config.redis_url_redacted();
            if failure.is_misconfiguration() {
                tracing::error!(redis = %url, "cluster: {failure}; running in local mode");
            } else {
                let tls = cluster.config.redis_url.as_str().starts_with("rediss://");
                if tls && matches!(failure, Failure::Timeout) && !ever_connected {
                    tracing::warn!(redis = %url, error = %failure, "cluster: Redis unreachable; running in local mode and reconnecting (a rediss:// URL needs a TLS port: on a plain-text port the handshake never completes)");
                } else {
                    tracing::warn!(redis = %url, error = %failure, connected_before = was, "cluster: Redis unreachable; running in local mode (local counts and bans) and reconnecting");
                }
            }
        }
        if was {
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = &mut shutdown => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    cluster.set_connected(false);
}

async fn session(
    cluster: &Cluster,
    enforcement: &Enforcement,
    detection: &DetectionStage,
    counters: &mut Counters,
    epoch: &mut Option<Epoch>,
) -> Result<(), Failure> {
    let mut conn = connect(cluster).await?;
    let client = cluster.client()?;
    let mut pubsub = timed(client.get_async_pubsub()).await?;
    let channel = cluster.events_channel().to_owned();
    timed(pubsub.subscribe(&channel)).await?;
    let mut messages = pubsub.into_on_message();
    // A subscription Redis refused (an ACL user without the channel) is not reported by the
    // client: this replica would look connected and never hear another's ban. A probe it
    // publishes must come back to it.
    let nonce = Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let probe = serde_json::to_string(&Message::Probe {
        origin: cluster.config.instance_id.clone(),
        nonce,
    })
    .unwrap_or_default();
    timed(
        redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(&probe)
            .query_async::<i64>(&mut conn),
    )
    .await?;
    let heard = tokio::time::timeout(IO_TIMEOUT, async {
        while let Some(msg) = messages.next().await {
            let Ok(text) = msg.get_payload::<String>() else {
                continue;
            };
            if text == probe {
                return true;
            }
            apply(cluster, enforcement, &text);
        }
        false
    })
    .await;
    if heard != Ok(true) {
        return Err(Failure::Deaf(channel));
    }
    let scripts = Scripts::load(&mut conn).await?;
    // Before anything is written: a key of the wrong type would fail every write.
    repair_keys(cluster, &mut conn).await?;
    publish_queued(cluster, &mut conn, &scripts).await?;
    resync(cluster, enforcement, &mut conn, epoch, &scripts).await?;
    cluster.set_connected(true);
    tracing::info!(redis = %cluster.config.redis_url_redacted(), instance = %cluster.config.instance_id, "cluster: connected; bans and counters are shared");
    let mut tick = tokio::time::interval(cluster.config.sync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_resync = Instant::now();
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return Err(Failure::Closed) };
                if let Ok(text) = msg.get_payload::<String>() {
                    apply(cluster, enforcement, &text);
                }
            }
            () = cluster.wake.notified() => publish_queued(cluster, &mut conn, &scripts).await?,
            _ = tick.tick() => {
                let started = Instant::now();
                let shas = (scripts.merge.as_str(), scripts.slide.as_str());
                // Other replicas' ban changes are applied while the merge waits for Redis
                // (a large one can take up to IO_TIMEOUT): a ban made elsewhere must not wait
                // for this replica's counters. The merge itself is never dropped half-way (it
                // has taken the deltas): a pub/sub connection that ends meanwhile ends the
                // session once the merge is done.
                let mut hearing = true;
                let result = {
                    let sync = sync_counters(cluster, detection, &mut conn, counters, shas);
                    tokio::pin!(sync);
                    loop {
                        tokio::select! {
                            r = &mut sync => break r,
                            msg = messages.next(), if hearing => match msg {
                                Some(msg) => {
                                    if let Ok(text) = msg.get_payload::<String>() {
                                        apply(cluster, enforcement, &text);
                                    }
                                }
                                None => hearing = false,
                            },
                        }
                    }
                };
                cluster.metrics.cluster.sync_duration.observe(started.elapsed().as_secs_f64());
                result?;
                if !hearing {
                    return Err(Failure::Closed);
                }
                publish_queued(cluster, &mut conn, &scripts).await?;
                if last_resync.elapsed() >= RESYNC_EVERY {
                    resync(cluster, enforcement, &mut conn, epoch, &scripts).await?;
                    last_resync = Instant::now();
                }
            }
        }
    }
}

/// Applies another replica's ban change, of an address or an identity (our own messages
/// are ignored).
fn apply(cluster: &Cluster, enforcement: &Enforcement, text: &str) {
    let message = (text.len() <= MAX_ENTRY)
        .then(|| serde_json::from_str::<Message>(text).ok())
        .flatten();
    let Some(message) = message else {
        tracing::warn!("cluster: unreadable ban message ignored");
        return;
    };
    match message {
        Message::Ban(entry) if entry.origin != cluster.config.instance_id => {
            enforcement.merge_offences(&entry.ban, &entry.offences, Utc::now());
            enforcement.apply_remote_ban(entry.ban, &entry.origin);
        }
        Message::Unban { origin, src, since } if origin != cluster.config.instance_id => {
            let Some(who) = Subject::parse(&src) else {
                return;
            };
            let upto = since.and_then(chrono::DateTime::from_timestamp_millis);
            match (since, upto) {
                (Some(since), Some(upto)) => {
                    let now = Utc::now();
                    let tomb = Tomb {
                        since,
                        at: now.timestamp_millis(),
                    };
                    // A ban started in the future: forged or broken, like its tombstone.
                    if !tomb.kept(now) {
                        tracing::warn!(src = %src, "cluster: an unban naming a ban that starts in the future was ignored");
                        return;
                    }
                    cluster.tombs().note(who.clone(), tomb);
                    enforcement.apply_remote_unban_upto(&who, upto);
                }
                // A replica of an earlier version: whatever ban is held goes.
                _ => {
                    enforcement.apply_remote_unban(&who);
                }
            }
        }
        _ => {}
    }
}

/// Publishes the queued local ban changes (entries written, deleted, tombstones, messages:
/// one pipeline); on failure they are queued again for the next connection. An unban deletes
/// the subject's entry only when it is the ban lifted (or older): a ban made since, by another
/// replica while this one was cut off, stays.
async fn publish_queued(
    cluster: &Cluster,
    conn: &mut MultiplexedConnection,
    scripts: &Scripts,
) -> Result<(), Failure> {
    let changes = cluster.take_queue();
    if changes.is_empty() {
        return Ok(());
    }
    match publish_changes(cluster, conn, scripts, &changes).await {
        Ok(()) => Ok(()),
        Err(e) => {
            cluster.requeue(changes);
            Err(e)
        }
    }
}

async fn publish_changes(
    cluster: &Cluster,
    conn: &mut MultiplexedConnection,
    scripts: &Scripts,
    changes: &[Change],
) -> Result<(), Failure> {
    let channel = cluster.events_channel();
    let me = &cluster.config.instance_id;
    // What Redis holds for each subject unbanned: deleted below only if it is that ban.
    let mut read = redis::pipe();
    for change in changes {
        if let Change::Unban(who, ..) = change {
            read.hget(cluster.bans_key(who), who.display());
        }
    }
    let held: Vec<Option<Vec<u8>>> = if read.is_empty() {
        Vec::new()
    } else {
        timed(read.query_async(conn)).await?
    };
    let mut held = held.into_iter();
    let mut pipe = redis::pipe();
    for change in changes {
        match change {
            Change::Ban(ban, offences) => {
                let entry = Entry {
                    ban: ban.clone(),
                    origin: me.clone(),
                    offences: offences.clone(),
                };
                write_back(cluster, &mut pipe, scripts, &entry, channel);
            }
            Change::Unban(who, since, at) => {
                let display = who.display();
                let tomb = Tomb {
                    since: since.timestamp_millis(),
                    at: at.timestamp_millis(),
                };
                cluster.tombs().note(who.clone(), tomb);
                if let Some(value) = held.next().flatten() {
                    let newer = serde_json::from_slice::<Entry>(&value)
                        .is_ok_and(|e| !tomb.covers(e.ban.since()));
                    if !newer {
                        pipe.evalsha_keys(&scripts.delete_if, &[cluster.bans_key(who)])
                            .arg(&display)
                            .arg(value)
                            .ignore();
                    }
                }
                // The tombstone: a replica that missed this unban lifts its copy at its next
                // resync instead of writing the ban back.
                pipe.evalsha_keys(&scripts.tomb, &[cluster.key("unbans")])
                    .arg(&display)
                    .arg(tomb.since)
                    .arg(tomb.at)
                    .ignore();
                let msg = serde_json::to_string(&Message::Unban {
                    origin: me.clone(),
                    src: display,
                    since: Some(tomb.since),
                })
                .unwrap_or_default();
                pipe.publish(channel, msg).ignore();
            }
        }
    }
    timed(pipe.query_async::<()>(conn)).await
}

/// The ban scripts' SHA1s, loaded at every (re)connect (a restarted Redis has none).
struct Scripts {
    merge: String,
    slide: String,
    write_back: String,
    delete_if: String,
    tomb: String,
}

impl Scripts {
    async fn load(conn: &mut MultiplexedConnection) -> Result<Scripts, Failure> {
        let mut pipe = redis::pipe();
        for body in [MERGE, SLIDE, WRITE_BACK, DELETE_IF, TOMB] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(body);
        }
        let (merge, slide, write_back, delete_if, tomb) = timed(pipe.query_async(conn)).await?;
        Ok(Scripts {
            merge,
            slide,
            write_back,
            delete_if,
            tomb,
        })
    }
}

/// `EVALSHA sha N KEYS…` on a pipeline, the arguments to follow.
trait EvalSha {
    fn evalsha_keys(&mut self, sha: &str, keys: &[String]) -> &mut Self;
}

impl EvalSha for redis::Pipeline {
    fn evalsha_keys(&mut self, sha: &str, keys: &[String]) -> &mut Self {
        self.cmd("EVALSHA").arg(sha).arg(keys.len());
        for k in keys {
            self.arg(k);
        }
        self
    }
}

/// Deletes the keys of ours that have the wrong type (a foreign writer, a hand edit): each
/// would fail every write or read of it and keep every replica local. Checked and deleted in
/// one script, so that a key another replica sets meanwhile stays; a bans hash deleted takes
/// the epoch with it.
async fn repair_keys(cluster: &Cluster, conn: &mut MultiplexedConnection) -> Result<(), Failure> {
    let deleted: Vec<String> = timed(
        redis::cmd("EVAL")
            .arg(TYPES)
            .arg(4)
            .arg(cluster.key("bans"))
            .arg(cluster.key("identity-bans"))
            .arg(cluster.key("unbans"))
            .arg(cluster.key("epoch"))
            .arg("hash")
            .arg("hash")
            .arg("hash")
            .arg("string")
            .query_async(conn),
    )
    .await?;
    for key in &deleted {
        tracing::warn!(key = %key, "cluster: a key of the wrong type was deleted");
    }
    Ok(())
}

/// What Redis's data was at a resync: its `epoch` key and the server's `run_id`. The next
/// resync that finds the same knows Redis kept its data in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Epoch {
    key: Vec<u8>,
    run_id: Option<String>,
}

/// The full two-way ban resync, of address and identity bans alike: bans in Redis this
/// replica lacks are applied; bans of this replica Redis lacks (made during an outage, or
/// lost) are published; a ban lifted elsewhere (a tombstone in `unbans`, or one this replica
/// has seen) is lifted here and never written back; ended entries go. When Redis may have
/// lost its data since the last resync (another epoch or `run_id`, or none), nothing missing
/// is taken for an unban, and every ban and tombstone held here goes back.
async fn resync(
    cluster: &Cluster,
    enforcement: &Enforcement,
    conn: &mut MultiplexedConnection,
    epoch: &mut Option<Epoch>,
    scripts: &Scripts,
) -> Result<(), Failure> {
    let hashes = [cluster.key("bans"), cluster.key("identity-bans")];
    let unbans = cluster.key("unbans");
    let epoch_key = cluster.key("epoch");
    // Read as bytes: an entry that is not UTF-8 (a corrupted or foreign value) is one
    // unreadable entry to delete, not a failed resync that would keep every replica local.
    type Raw = Vec<(Vec<u8>, Vec<u8>)>;
    // Taken before the read: a ban applied from a message after it may be newer than the
    // read (its HSET came after our HGETALL) and must not be lifted below.
    let remote_before = enforcement.remote_subjects();
    repair_keys(cluster, conn).await?;
    let (addresses, identities, tombstones, current): (Raw, Raw, Raw, Option<Vec<u8>>) = timed(
        redis::pipe()
            .hgetall(&hashes[0])
            .hgetall(&hashes[1])
            .hgetall(&unbans)
            .get(&epoch_key)
            .query_async(conn),
    )
    .await?;
    // A Redis that refuses INFO (renamed, or denied by an ACL) is judged by its epoch alone:
    // the run_id last seen stands.
    let run_id = timed(redis::cmd("INFO").arg("server").query_async::<String>(conn))
        .await
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("run_id:"))
                .map(|id| id.trim().to_owned())
        })
        .or_else(|| epoch.as_ref().and_then(|e| e.run_id.clone()));
    let now = Utc::now();
    let seen = current.clone().map(|key| Epoch {
        key,
        run_id: run_id.clone(),
    });
    // Redis kept the data of the last resync: the same epoch on the same server. Then a ban
    // missing from Redis was lifted (or ended) elsewhere. Otherwise (restarted, failed over,
    // flushed, or this process's first resync) a missing ban may have been lost, not lifted.
    let continuous = seen.is_some() && seen == *epoch;
    if !continuous && epoch.is_some() {
        tracing::warn!(redis = %cluster.config.redis_url_redacted(), "cluster: Redis restarted or lost its data since the last resync: no ban missing from it is taken for an unban, and the bans and unbans this replica holds are written back");
    }
    // The tombstones: Redis's and those this replica has seen, the newest ban lifted per
    // subject; those past their keep go.
    let mut stale = Vec::new();
    let mut in_redis_tombs: HashMap<Subject, Tomb> = HashMap::new();
    {
        let mut tombs = cluster.tombs();
        for (field, value) in tombstones {
            let tomb = Tomb::parse(&value).filter(|t| t.kept(now));
            let who = std::str::from_utf8(&field).ok().and_then(Subject::parse);
            match (tomb, who) {
                (Some(tomb), Some(who)) => {
                    tombs.note(who.clone(), tomb);
                    in_redis_tombs.insert(who, tomb);
                }
                _ => stale.push((&unbans, field, value)),
            }
        }
    }
    let lifted: HashMap<Subject, Tomb> = cluster.tombs().current(now).into_iter().collect();
    let lifted_at = |who: &Subject, since: chrono::DateTime<Utc>| {
        lifted.get(who).is_some_and(|t| t.covers(since))
    };
    let me = &cluster.config.instance_id;
    let mut in_redis: HashMap<Subject, chrono::DateTime<Utc>> = HashMap::new();
    let all = (addresses.into_iter().map(|e| (&hashes[0], e)))
        .chain(identities.into_iter().map(|e| (&hashes[1], e)));
    for (i, (hash, (field, json))) in all.enumerate() {
        // A table of tens of thousands of bans is applied in slices: the runtime's other
        // tasks (the admin API, the signals) get their turns in between.
        if i % 512 == 511 {
            tokio::task::yield_now().await;
        }
        let entry = (json.len() <= MAX_ENTRY)
            .then(|| serde_json::from_slice::<Entry>(&json).ok())
            .flatten();
        let Some(entry) = entry else {
            stale.push((hash, field, json));
            continue;
        };
        let who = entry.ban.subject();
        // Ended, or the ban an unban lifted (written back by a replica that had missed it).
        if entry.ban.until() <= now || lifted_at(&who, entry.ban.since()) {
            stale.push((hash, field, json));
            continue;
        }
        in_redis.insert(who.clone(), entry.ban.since());
        enforcement.merge_offences(&entry.ban, &entry.offences, now);
        // Not ours, or ours from before a restart without state_dir: in force all the same.
        if entry.origin != *me || !enforcement.holds(&who) {
            enforcement.apply_remote_ban(entry.ban, &entry.origin);
        }
    }
    // A ban held here that an unban elsewhere lifted: this replica missed the unban (cut off,
    // or the message lost).
    for (ban, ..) in enforcement.bans_in_force(now) {
        let who = ban.subject();
        if lifted_at(&who, ban.since()) {
            enforcement.apply_remote_unban(&who);
        }
    }
    // A ban another replica made that Redis no longer holds was lifted (or ended) while this
    // replica missed the message: lift it here too, unless Redis may have lost it.
    if continuous {
        for who in remote_before {
            if !in_redis.contains_key(&who) {
                enforcement.apply_remote_unban(&who);
            }
        }
    }
    let mut pipe = redis::pipe();
    let mut n = 0;
    for (hash, field, value) in &stale {
        pipe.evalsha_keys(&scripts.delete_if, std::slice::from_ref(*hash))
            .arg(field.as_slice())
            .arg(value.as_slice())
            .ignore();
        n += 1;
    }
    // Tombstones Redis lacks (lost with its data, or written by nobody yet) go back first.
    for (who, tomb) in &lifted {
        if in_redis_tombs.get(who) != Some(tomb) {
            pipe.evalsha_keys(&scripts.tomb, std::slice::from_ref(&unbans))
                .arg(who.display())
                .arg(tomb.since)
                .arg(tomb.at)
                .ignore();
            n += 1;
        }
    }
    let channel = cluster.events_channel();
    for (ban, offences, origin) in enforcement.bans_in_force(now) {
        let who = ban.subject();
        let since = ban.since();
        let entry = match origin {
            // Ours, newer than what Redis holds: published (a ban made in an outage, or lost).
            None if in_redis.get(&who).map_or(true, |s| *s < since) => Entry {
                ban,
                origin: me.clone(),
                offences,
            },
            // Another replica's, missing from a Redis that lost its data: written back as
            // it was made, without a message (every replica that holds it still does).
            Some(origin) if !continuous && !in_redis.contains_key(&who) => Entry {
                ban,
                origin: origin.to_string(),
                offences,
            },
            _ => continue,
        };
        write_back(cluster, &mut pipe, scripts, &entry, channel);
        n += 1;
    }
    if n > 0 {
        timed(pipe.query_async::<()>(conn)).await?;
    }
    *epoch = match seen {
        Some(seen) => Some(seen),
        None => {
            // This data's epoch: the first replica to set it wins, every other one reads it.
            let mine = format!(
                "{}:{}",
                cluster.config.instance_id,
                now.timestamp_nanos_opt().unwrap_or_default()
            );
            let (set,): (Option<Vec<u8>>,) = timed(
                redis::pipe()
                    .cmd("SET")
                    .arg(&epoch_key)
                    .arg(&mine)
                    .arg("NX")
                    .ignore()
                    .get(&epoch_key)
                    .query_async(conn),
            )
            .await?;
            set.map(|key| Epoch { key, run_id })
        }
    };
    Ok(())
}

/// Adds to `pipe` the write of `entry` to its bans hash unless an unban lifted it (a
/// tombstone in `unbans` whose ban started at or after it). An entry of this replica's
/// replaces the field and is published; another replica's is written only where the field is
/// empty.
fn write_back(
    cluster: &Cluster,
    pipe: &mut redis::Pipeline,
    scripts: &Scripts,
    entry: &Entry,
    channel: &str,
) {
    let who = entry.ban.subject();
    let json = serde_json::to_string(entry).unwrap_or_default();
    let ours = entry.origin == cluster.config.instance_id;
    let msg = if ours {
        serde_json::to_string(&Message::Ban(entry.clone())).unwrap_or_default()
    } else {
        String::new()
    };
    pipe.evalsha_keys(
        &scripts.write_back,
        &[cluster.bans_key(&who), cluster.key("unbans")],
    )
    .arg(who.display())
    .arg(json)
    .arg(entry.ban.since().timestamp_millis())
    .arg(if ours { "set" } else { "nx" })
    .arg(if ours { channel } else { "" })
    .arg(msg)
    .ignore();
}

/// One counter sync: every pending delta (tumbling windows, sliding sub-buckets) merged in
/// one pipelined round trip, with the checks of the watched sliding episodes; windows whose
/// merged total reached the threshold and whose marker this replica set are detected here,
/// sliding episodes this replica opened or ended too.
async fn sync_counters(
    cluster: &Cluster,
    detection: &DetectionStage,
    conn: &mut MultiplexedConnection,
    counters: &mut Counters,
    (merge_sha, slide_sha): (&str, &str),
) -> Result<(), Failure> {
    let summaries = &mut counters.summaries;
    let dropped = cluster.deltas.take_dropped();
    if dropped > 0 {
        cluster.metrics.cluster.deltas_dropped.inc_by(dropped);
    }
    let engine = detection.engine();
    let mode = mode_of(detection);
    let now = Utc::now();
    let now_s = now.timestamp();
    let grace = summary_grace(cluster);
    counters
        .detected_here
        .retain(|_, (at, keep)| at.elapsed() < *keep);
    let mut items = Vec::new();
    for ((key, start), delta) in cluster.deltas.drain() {
        let Some((window, threshold, by_bytes)) = engine.shared_rule(&key) else {
            cluster.metrics.cluster.deltas_dropped.inc_by(delta.count);
            continue;
        };
        let end = i64::from(start) + i64::from(window);
        // A window that ended during an outage: its merge would come too late to decide.
        if end + crate::pipeline::ticker::CLOSE_GRACE.num_seconds() < now_s - grace.as_secs() as i64
        {
            cluster.metrics.cluster.deltas_dropped.inc_by(delta.count);
            continue;
        }
        let Some(name) = engine.shared_name(&key, start, delta.path.as_deref()) else {
            cluster.metrics.cluster.deltas_dropped.inc_by(delta.count);
            continue;
        };
        let name = format!("{mode}:{name}");
        let ttl_ms = ((end - now_s).max(0) as u64 * 1000) + grace.as_millis() as u64 * 2;
        items.push((
            key,
            start,
            delta,
            name,
            threshold,
            by_bytes,
            ttl_ms.max(1000),
        ));
    }
    let mut pipe = redis::pipe();
    pipe.cmd("PING");
    for (_, _, delta, name, threshold, by_bytes, ttl_ms) in &items {
        pipe.cmd("EVALSHA")
            .arg(merge_sha)
            .arg(2)
            .arg(cluster.key(&format!("c:{name}")))
            .arg(cluster.key(&format!("f:{name}")))
            .arg(delta.count)
            .arg(delta.sum_ns)
            .arg(delta.max_ns)
            .arg(delta.bytes)
            .arg(*ttl_ms)
            .arg(*threshold)
            .arg(if *by_bytes { "1" } else { "0" })
            .arg(&cluster.config.instance_id);
    }
    let slides = slide_items(cluster, &engine, mode, &mut counters.watch, now);
    for item in &slides {
        let window_ms = item.rule.sub_ms * u64::from(SUB_BUCKETS);
        let cmd = pipe
            .cmd("EVALSHA")
            .arg(slide_sha)
            .arg(1)
            .arg(cluster.key(&format!("w:{}:{}", item.rule.sub_ms, item.name)))
            .arg(item.rule.threshold)
            .arg(window_ms + grace.as_millis() as u64 * 2)
            .arg(item.head);
        for (idx, d) in &item.slide.subs {
            let amount = if item.rule.by_bytes { d.bytes } else { d.count };
            cmd.arg(*idx)
                .arg(amount)
                .arg(d.count)
                .arg(d.sum_ms)
                .arg(d.max_ms)
                .arg(d.bytes)
                .arg(d.method);
        }
    }
    let mut answers: Vec<redis::Value> = match timed(pipe.query_async(conn)).await {
        Ok(a) => a,
        Err(e) => {
            // Redis may have run the scripts and only the answer was lost (a timeout): sending
            // the deltas again would count them twice and could flag an innocent source. A
            // failed sync therefore drops its deltas (at most once, counted).
            let lost: u64 = items.iter().map(|(_, _, d, ..)| d.count).sum::<u64>()
                + slides
                    .iter()
                    .flat_map(|i| i.slide.subs.iter().map(|(_, d)| d.count))
                    .sum::<u64>();
            cluster.metrics.cluster.deltas_dropped.inc_by(lost);
            // A crossing of the threshold that this replica left to the lost merge: no
            // replica would detect it (the merge that would have is lost, or its answer is).
            // Detected here, now, as local mode would have at the crossing.
            let withheld: Vec<_> = items
                .iter()
                .filter_map(|(key, start, delta, ..)| {
                    Some((*key, Some(*start), delta.crossed?, delta.path.clone()))
                })
                .chain(slides.iter().filter_map(|item| {
                    Some((
                        item.slide.key,
                        None,
                        item.slide.crossed()?,
                        item.path.clone(),
                    ))
                }))
                .collect();
            detect_withheld(cluster, detection, counters, withheld);
            return Err(e);
        }
    };
    let slide_answers = answers.split_off((1 + items.len()).min(answers.len()));
    let mut found = Vec::new();
    for (answer, (key, start, delta, name, ..)) in answers.into_iter().skip(1).zip(items) {
        let Ok((c, s, m, b, won)) = redis::from_redis_value::<(u64, u64, u64, u64, u8)>(&answer)
        else {
            continue;
        };
        if won != 1 {
            continue;
        }
        // A window this replica already detected in local mode (an outage), or after a lost
        // merge, is not detected again, but its summary is still due: the engine leaves
        // summaries to the merge.
        let ev = if delta.fired_locally || counters.detected_here.contains_key(&name) {
            None
        } else {
            let Some(ev) =
                engine.shared_event(&key, start, (c, s, m, b), delta.method, delta.path.clone())
            else {
                continue;
            };
            Some(ev)
        };
        let src = key
            .src
            .identity_id()
            .is_none()
            .then(|| key.src.network().addr());
        let (window, ..) = engine.shared_rule(&key).unwrap_or((0, 0, false));
        let end = i64::from(start) + i64::from(window);
        summaries.push(PendingSummary {
            due: chrono::DateTime::from_timestamp(end, 0).unwrap_or(now)
                + chrono::TimeDelta::from_std(grace).unwrap_or_default(),
            name,
            delta,
            key: (key, start),
            src,
        });
        if let Some(ev) = ev {
            found.push((Event::Detection(ev), src));
        }
    }
    for (answer, item) in slide_answers.into_iter().zip(slides) {
        let Some(a) = redis::from_redis_value::<Vec<i64>>(&answer)
            .ok()
            .and_then(|v| SlideAnswer::from_values(&v))
        else {
            continue;
        };
        let key = item.slide.key;
        let src = key
            .src
            .identity_id()
            .is_none()
            .then(|| key.src.network().addr());
        if let Some((end, run)) = &a.ended {
            if let Some(ev) = engine.slide_summary(&key, *end, run, item.path.clone()) {
                found.push((Event::WindowSummary(ev), src));
            }
        }
        if a.won && !item.slide.fired_locally() && !counters.detected_here.contains_key(&item.name)
        {
            if let Some(ev) = engine.slide_detection(&key, &a, item.path.clone()) {
                found.push((Event::Detection(ev), src));
            }
        }
        if !a.flagged {
            counters.detected_here.remove(&item.name);
            counters.watch.remove(&key);
        } else if counters.watch.len() < MAX_WATCHED || counters.watch.contains_key(&key) {
            counters.watch.insert(
                key,
                Watch {
                    rule: item.rule.name,
                    name: item.name,
                    path: item.path,
                },
            );
        }
    }
    for (event, src) in found {
        detection.handle(std::slice::from_ref(&event), src);
    }
    due_summaries(cluster, detection, conn, summaries).await
}

/// The sliding merges of a sync: the pending sub-bucket deltas of each key (those already
/// out of their window are dropped, counted), then a check of every watched episode that
/// got no delta this time.
fn slide_items(
    cluster: &Cluster,
    engine: &Engine,
    mode: &str,
    watch: &mut HashMap<WindowKey, Watch>,
    now: chrono::DateTime<Utc>,
) -> Vec<SlideItem> {
    let index = |at: chrono::DateTime<Utc>, sub_ms: u64| {
        let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
        u32::try_from(ms / sub_ms.max(1)).unwrap_or(u32::MAX)
    };
    let mut dropped = 0;
    let mut items = Vec::new();
    let mut merged = HashSet::new();
    for mut slide in cluster.deltas.drain_slides() {
        let Some(rule) = engine.slide_rule(&slide.key) else {
            dropped += slide.count();
            continue;
        };
        let now_idx = index(now, rule.sub_ms);
        slide.subs.retain(|(idx, d)| {
            let inside = idx.saturating_add(SUB_BUCKETS) > now_idx;
            if !inside {
                dropped += d.count;
            }
            inside
        });
        if slide.subs.is_empty() {
            continue;
        }
        let path = slide.path().map(str::to_owned);
        let Some(name) = engine.slide_name(&slide.key, path.as_deref()) else {
            dropped += slide.count();
            continue;
        };
        let name = format!("{mode}:{name}");
        merged.insert(slide.key);
        items.push(SlideItem {
            rule,
            name,
            path,
            head: slide.head(),
            slide,
        });
    }
    if dropped > 0 {
        cluster.metrics.cluster.deltas_dropped.inc_by(dropped);
    }
    // A reload that moved or changed the rule ends the watch (the key is another's now).
    watch.retain(|key, w| engine.slide_rule(key).is_some_and(|r| r.name == w.rule));
    // Episodes end on the clock too: checked with the ticker's close grace, so a request
    // that completed just before still counts.
    let checked_at = now - crate::pipeline::ticker::CLOSE_GRACE;
    for (key, w) in watch.iter() {
        if merged.contains(key) {
            continue;
        }
        let Some(rule) = engine.slide_rule(key) else {
            continue;
        };
        items.push(SlideItem {
            head: index(checked_at, rule.sub_ms),
            rule,
            name: w.name.clone(),
            path: w.path.clone(),
            slide: Slide {
                key: *key,
                subs: Vec::new(),
            },
        });
    }
    items
}

fn summary_grace(cluster: &Cluster) -> Duration {
    (cluster.config.sync_interval * 4).max(Duration::from_secs(5))
}

/// Writes the `window_summary` of each detected window that has closed, from its merged
/// totals, once cluster-wide (`SET NX` summary marker).
async fn due_summaries(
    cluster: &Cluster,
    detection: &DetectionStage,
    conn: &mut MultiplexedConnection,
    summaries: &mut Vec<PendingSummary>,
) -> Result<(), Failure> {
    let now = Utc::now();
    if !summaries.iter().any(|p| p.due <= now) {
        return Ok(());
    }
    let (due, later): (Vec<_>, Vec<_>) = summaries.drain(..).partition(|p| p.due <= now);
    *summaries = later;
    let mut pipe = redis::pipe();
    for p in &due {
        pipe.cmd("HMGET")
            .arg(cluster.key(&format!("c:{}", p.name)))
            .arg(&["c", "s", "m", "b"]);
        pipe.cmd("SET")
            .arg(cluster.key(&format!("s:{}", p.name)))
            .arg(&cluster.config.instance_id)
            .arg("NX")
            .arg("PX")
            .arg(summary_grace(cluster).as_millis() as u64 * 4);
        pipe.cmd("GET").arg(cluster.key(&format!("s:{}", p.name)));
    }
    let answers: Vec<redis::Value> = match timed(pipe.query_async(conn)).await {
        Ok(a) => a,
        Err(e) => {
            // Due again at the next sync; the marker then names this replica if the lost
            // attempt set it (the GET below), so the summary is still written once.
            summaries.extend(due);
            return Err(e);
        }
    };
    let engine = detection.engine();
    let me = cluster.config.instance_id.as_bytes();
    let mut it = answers.into_iter();
    for p in due {
        let (Some(totals), Some(set), Some(holder)) = (it.next(), it.next(), it.next()) else {
            break;
        };
        let Ok([c, s, m, b]) = redis::from_redis_value::<[Option<u64>; 4]>(&totals) else {
            continue;
        };
        let mine = matches!(&holder, redis::Value::BulkString(v) if v.as_slice() == me);
        if !matches!(set, redis::Value::Okay) && !mine {
            continue;
        }
        let figures = (
            c.unwrap_or(0),
            s.unwrap_or(0),
            m.unwrap_or(0),
            b.unwrap_or(0),
        );
        if figures.0 == 0 {
            continue;
        }
        let (key, start) = p.key;
        if let Some(ev) = engine.shared_event(&key, start, figures, p.delta.method, p.delta.path) {
            detection.handle(&[Event::WindowSummary(ev)], p.src);
        }
    }
    Ok(())
}
