//! The detection stage of the record pipeline: every finished request goes to the engine;
//! its verdicts go to the detection log and the metrics (and, in block mode, to enforcement).
//!
//! A background ticker closes windows on wall-clock time, so a flagged key's summary is
//! written when its window ends even if that source never sends another request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::config::Mode;
use crate::detect::{Engine, Event};
use crate::record::{RecordSink, RequestRecord};
use crate::telemetry::{DetectionLog, Metrics};

/// Feeds records to the engine and acts on its events.
pub struct DetectionStage {
    engine: Arc<Engine>,
    log: DetectionLog,
    metrics: Arc<Metrics>,
    mode: Mode,
}

impl DetectionStage {
    /// Builds the stage.
    pub fn new(engine: Arc<Engine>, log: DetectionLog, metrics: Arc<Metrics>, mode: Mode) -> Self {
        DetectionStage {
            engine,
            log,
            metrics,
            mode,
        }
    }

    /// Logs and counts events (a `detection` counts in `detections_total`; a summary does not).
    pub fn handle(&self, events: &[Event]) {
        let now = Utc::now();
        for event in events {
            let d = event.detail();
            let banned = d.action.bans(self.mode == Mode::Block);
            if let Event::Detection(_) = event {
                self.metrics
                    .detections
                    .with_label_values(&[
                        &*d.rule,
                        d.severity.as_str(),
                        if banned { "banned" } else { "logged" },
                    ])
                    .inc();
            }
            self.log.event(now, event, banned);
        }
    }

    /// Closes due windows and refreshes the engine gauges.
    pub fn tick(&self) {
        let mut events = Vec::new();
        self.engine.tick(Utc::now(), &mut events);
        self.handle(&events);
        self.refresh_gauges();
    }

    /// Closes every window (shutdown): flagged keys get their final summary.
    pub fn finish(&self) {
        let mut events = Vec::new();
        self.engine.finish(&mut events);
        self.handle(&events);
        self.refresh_gauges();
    }

    fn refresh_gauges(&self) {
        self.metrics
            .tracked_keys
            .set(i64::try_from(self.engine.tracked_keys()).unwrap_or(i64::MAX));
        let evictions = self.engine.evictions();
        let seen = self.metrics.tracked_key_evictions.get();
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
                _ = timer.tick() => self.tick(),
                () = &mut shutdown => break,
            }
        }
    }
}

impl RecordSink for DetectionStage {
    fn record(&self, record: RequestRecord) {
        let mut events = Vec::new();
        self.engine.observe(&record, &mut events);
        if !events.is_empty() {
            self.handle(&events);
        }
    }
}
