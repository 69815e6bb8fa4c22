//! The ticker: closes windows on wall-clock time, so a flagged key's summary is written when
//! its window ends even if that source never sends another request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::DetectionStage;

/// How often windows are closed on wall-clock time.
pub(crate) const TICK_INTERVAL: Duration = Duration::from_secs(1);

/// How long after its end a window is closed by the ticker.
pub(crate) const CLOSE_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

/// Ticks `stage` every `interval` until `shutdown` resolves.
pub(crate) async fn run(
    stage: Arc<DetectionStage>,
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
                let stage = stage.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || stage.tick()).await {
                    tracing::error!(error = %e, "detection ticker failed");
                }
            }
            () = &mut shutdown => break,
        }
    }
}
