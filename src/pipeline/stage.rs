//! The detection stage: every finished request goes to the engine, whose verdicts go to
//! [`Verdicts`]. It also closes windows when the [ticker](super::ticker) says so, at a
//! reload (rules that changed or went away) and at shutdown.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use chrono::Utc;
use ipnet::IpNet;

use super::running::Running;
use super::ticker::CLOSE_GRACE;
use super::verdict::Verdicts;
use crate::config::Mode;
use crate::detect::{Engine, EngineError, EngineOptions, Event, ReloadReport, Rule};
use crate::enforce::Enforcement;
use crate::record::{RecordSink, RequestRecord};
use crate::telemetry::{DetectionLog, Metrics};

/// Feeds records to the engine and hands its verdicts on.
pub(crate) struct DetectionStage {
    engine: ArcSwap<Engine>,
    verdicts: Verdicts,
    metrics: Arc<Metrics>,
    enforcement: Arc<Enforcement>,
    evictions_seen: AtomicU64,
    /// Requests still running, for in-flight detection.
    running: Running,
    /// Held by `tick`/`finish` and by a reload's rebuild-and-swap, so a window is never
    /// closed in the old engine after its state was copied into the new one.
    sweep: Mutex<()>,
    /// One `auth` event per source per minute.
    auth_limiter: super::auth::AuthLimiter,
    /// `[cluster]`: the deltas every engine (also a rebuilt one) adds its window counts to.
    deltas: std::sync::OnceLock<Arc<crate::detect::shared::Deltas>>,
}

impl DetectionStage {
    /// Builds the stage; `mode` is the global mode, set on the gate too.
    pub(crate) fn new(
        engine: Engine,
        log: DetectionLog,
        metrics: Arc<Metrics>,
        mode: Mode,
        enforcement: Arc<Enforcement>,
    ) -> Self {
        enforcement.set_mode(mode);
        DetectionStage {
            running: Running::new(&engine),
            engine: ArcSwap::from_pointee(engine),
            verdicts: Verdicts::new(log, metrics.clone(), enforcement.clone()),
            metrics,
            enforcement,
            evictions_seen: AtomicU64::new(0),
            sweep: Mutex::new(()),
            auth_limiter: super::auth::AuthLimiter::default(),
            deltas: std::sync::OnceLock::new(),
        }
    }

    /// `[cluster]`: counts of tumbling and sliding windows are also added to `deltas`, which the cluster
    /// task merges in Redis.
    pub(crate) fn share_counters(&self, deltas: Arc<crate::detect::shared::Deltas>) {
        self.engine.load().attach_deltas(deltas.clone());
        let _ = self.deltas.set(deltas);
    }

    /// The engine in force (the cluster task names and judges deltas with it).
    pub(crate) fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    /// Whether the global mode is `block` (the cluster task names shared windows with it).
    pub(crate) fn blocking(&self) -> bool {
        self.enforcement.block_mode()
    }

    fn sweep_lock(&self) -> MutexGuard<'_, ()> {
        self.sweep.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The `auth` event limiter.
    pub(crate) fn auth_limiter(&self) -> &super::auth::AuthLimiter {
        &self.auth_limiter
    }

    /// What is done about verdicts (rule and policy).
    pub(crate) fn verdicts(&self) -> &Verdicts {
        &self.verdicts
    }

    /// The trusted proxies (start-up and reload): a rule never bans one.
    pub(crate) fn set_trusted_proxies(&self, trusted: Vec<IpNet>) {
        self.verdicts.set_trusted_proxies(trusted);
    }

    /// Rebuilds the engine for new rules/options, keeping the counters of unchanged rules,
    /// and swaps it in with the global mode (config reload). Flagged keys of dropped rules
    /// get their `window_summary`.
    pub(crate) fn reconfigure(
        &self,
        rules: Vec<Rule>,
        options: EngineOptions,
        mode: Mode,
    ) -> Result<ReloadReport, EngineError> {
        let mut withheld = Vec::new();
        let report = {
            let _sweep = self.sweep_lock();
            let old = self.engine.load();
            let (engine, report) = old.rebuild(rules, options)?;
            self.running.configure(&engine);
            if let Some(deltas) = self.deltas.get() {
                // Pending deltas are keyed by rule index: when the rules changed, an index may
                // now name another rule, so they are dropped (counted), never merged into it.
                // A crossing one of them carried for a merge is detected here first, by the
                // engine it was counted with: dropped, it would be detected by no one.
                if !old.same_rules(&engine) {
                    withheld = old.withheld_detections(deltas.take_crossed());
                    deltas.discard_all();
                }
                engine.attach_deltas(deltas.clone());
            }
            // The rebuilt engine carries the eviction total over, so `evictions_seen` stays.
            self.engine.store(Arc::new(engine));
            report
        };
        for (event, src) in withheld {
            self.handle(std::slice::from_ref(&event), src);
        }
        self.enforcement.set_mode(mode);
        self.handle(&report.summaries, None);
        Ok(report)
    }

    /// Acts on events (see [`Verdicts::handle`]).
    pub(crate) fn handle(&self, events: &[Event], src: Option<IpAddr>) {
        self.verdicts.handle(events, src);
    }

    /// Closes due windows, reports running requests past an eligible rule's `min_latency`
    /// (in-flight detection) and refreshes the engine gauges.
    pub(crate) fn tick(&self) {
        let mut events = Vec::new();
        let in_flight = {
            let _sweep = self.sweep_lock();
            let engine = self.engine.load();
            // Windows close CLOSE_GRACE after their end: a request that completed just before
            // the boundary and reaches the engine a moment later still counts in its window
            // instead of opening a second one.
            let now = Utc::now();
            engine.tick(now - CLOSE_GRACE, &mut events);
            engine.trim(&mut events);
            self.running.scan(&engine, now)
        };
        self.handle(&events, None);
        // In-flight detections name their request's client: they ban like any detection.
        for (found, record) in &in_flight {
            self.handle(found, Some(record.src));
        }
        self.refresh_gauges();
    }

    /// The keys flagged in the current windows (`GET /api/status`).
    pub(crate) fn flagged(&self) -> Vec<crate::detect::Flagged> {
        self.engine.load().flagged()
    }

    /// Closes every window (shutdown): flagged keys get their final summary.
    pub(crate) fn finish(&self) {
        let mut events = Vec::new();
        {
            let _sweep = self.sweep_lock();
            self.engine.load().finish(&mut events);
        }
        self.handle(&events, None);
        self.refresh_gauges();
    }

    fn refresh_gauges(&self) {
        let engine = self.engine.load();
        self.metrics
            .tracked_keys
            .set(i64::try_from(engine.tracked_keys()).unwrap_or(i64::MAX));
        // A rebuilt engine counts evictions from zero again; count only what is new.
        let evictions = engine.evictions();
        let seen = self.evictions_seen.swap(evictions, Ordering::Relaxed);
        if evictions > seen {
            self.metrics.tracked_key_evictions.inc_by(evictions - seen);
        }
    }
}

impl RecordSink for DetectionStage {
    fn begin(&self, record: &RequestRecord, start: tokio::time::Instant) -> Option<u64> {
        self.running.begin(record, start)
    }

    fn end(&self, ticket: u64) -> u64 {
        self.running.end(ticket)
    }

    #[inline]
    fn record(&self, record: RequestRecord) {
        let mut events = Vec::new();
        // In block mode, a source counted in a key its rule has already flagged is banned
        // again when it is not banned now (its ban expired, or block mode was turned on since;
        // not after an operator lifted its ban: see `Bans::may_ban_again`).
        let mut sustained = Vec::new();
        let rearm = self.enforcement.block_mode().then_some(&mut sustained);
        self.engine.load().observe_with(&record, &mut events, rearm);
        if !events.is_empty() {
            self.handle(&events, Some(record.src));
        }
        if !sustained.is_empty() {
            let ran = chrono::Duration::from_std(record.total).unwrap_or_default();
            let started = record.completed_at - ran;
            self.verdicts.sustained(&sustained, record.src, started);
        }
    }
}
