//! The detection stage of the record pipeline: every finished request goes to the engine;
//! its verdicts go to the detection log and the metrics (and, in block mode, to enforcement).
//!
//! A background ticker closes windows on wall-clock time, so a flagged key's summary is
//! written when its window ends even if that source never sends another request.

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;

use crate::config::Mode;
use crate::detect::{Engine, Event};
use crate::enforce::Enforcement;
use crate::record::{RecordSink, RequestRecord};
use crate::telemetry::{DetectionLog, Metrics};

/// How long after its end a window is closed by the ticker.
pub(crate) const CLOSE_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

/// Feeds records to the engine and acts on its events.
pub struct DetectionStage {
    engine: ArcSwap<Engine>,
    log: DetectionLog,
    metrics: Arc<Metrics>,
    enforcement: Arc<Enforcement>,
    evictions_seen: AtomicU64,
    /// Held by `tick`/`finish` and by a reload's rebuild-and-swap, so a window is never
    /// closed in the old engine after its state was copied into the new one.
    sweep: std::sync::Mutex<()>,
}

impl DetectionStage {
    /// Builds the stage.
    pub fn new(
        engine: Engine,
        log: DetectionLog,
        metrics: Arc<Metrics>,
        mode: Mode,
        enforcement: Arc<Enforcement>,
    ) -> Self {
        enforcement.set_mode(mode);
        DetectionStage {
            engine: ArcSwap::from_pointee(engine),
            log,
            metrics,
            enforcement,
            evictions_seen: AtomicU64::new(0),
            sweep: std::sync::Mutex::new(()),
        }
    }

    /// Rebuilds the engine for new rules/options, keeping the counters of unchanged rules,
    /// and swaps it in with the global mode (config reload). Flagged keys of dropped rules
    /// get their `window_summary`.
    pub fn reconfigure(
        &self,
        rules: Vec<crate::detect::Rule>,
        options: crate::detect::EngineOptions,
        mode: Mode,
    ) -> Result<crate::detect::ReloadReport, crate::detect::EngineError> {
        let report = {
            let _sweep = self
                .sweep
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (engine, report) = self.engine.load().rebuild(rules, options)?;
            // The rebuilt engine carries the eviction total over, so `evictions_seen` stays.
            self.engine.store(Arc::new(engine));
            report
        };
        self.enforcement.set_mode(mode);
        self.handle(&report.summaries, None);
        Ok(report)
    }

    /// Logs and counts events (a `detection` counts in `detections_total`; a summary does
    /// not). A detection whose action bans bans `src`, the client of the request that
    /// triggered it.
    pub fn handle(&self, events: &[Event], src: Option<IpAddr>) {
        let now = Utc::now();
        // Monitor mode never changes a response, so no rule bans in it (whatever its action).
        let block_mode = self.enforcement.block_mode();
        for event in events {
            let d = event.detail();
            let mut banned = block_mode && d.action.bans(block_mode);
            if let Event::Detection(_) = event {
                if let (true, Some(ip)) = (banned, src) {
                    banned = self.enforcement.on_verdict(ip, d, now);
                }
                let action = if banned { "banned" } else { "logged" };
                self.metrics
                    .detections
                    .with_label_values(&[&*d.rule, d.severity.as_str(), action])
                    .inc();
            }
            self.log.event(now, event, banned);
        }
    }

    /// Closes due windows and refreshes the engine gauges.
    pub fn tick(&self) {
        let mut events = Vec::new();
        {
            let _sweep = self
                .sweep
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let engine = self.engine.load();
            // Windows close CLOSE_GRACE after their end: a request that completed just before
            // the boundary and reaches the engine a moment later still counts in its window
            // instead of opening a second one.
            engine.tick(Utc::now() - CLOSE_GRACE, &mut events);
            engine.trim(&mut events);
        }
        self.handle(&events, None);
        self.refresh_gauges();
    }

    /// Closes every window (shutdown): flagged keys get their final summary.
    pub fn finish(&self) {
        let mut events = Vec::new();
        {
            let _sweep = self
                .sweep
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
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

    /// Ticks every `interval` until `shutdown` resolves.
    pub async fn run_ticker(
        self: Arc<Self>,
        interval: Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut timer = tokio::time::interval(interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Sweeping and trimming walk every key: keep them off the async workers.
                _ = timer.tick() => {
                    let stage = self.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || stage.tick()).await {
                        tracing::error!(error = %e, "detection ticker failed");
                    }
                }
                () = &mut shutdown => break,
            }
        }
    }
}

impl RecordSink for DetectionStage {
    fn record(&self, record: RequestRecord) {
        let mut events = Vec::new();
        self.engine.load().observe(&record, &mut events);
        if !events.is_empty() {
            self.handle(&events, Some(record.src));
        }
    }
}
