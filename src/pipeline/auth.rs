//! `[auth]` refusals in the detection log: one `auth` event per source per minute (a spray
//! of wrong keys must not become a spray of log lines), carrying how many were not logged.
//! Counting them toward a ban is the `auth_failures` rule's job, from the records.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use chrono::Utc;

use super::DetectionStage;
use crate::proxy::layers::auth::{AuthNote, AuthSink};
use crate::telemetry::log_event::{AuthEvent, LogEvent};

/// Sources remembered at most; past it the memory starts over (some extra lines, never
/// unbounded memory).
const MAX_SOURCES: usize = 10_000;

/// The per-source, per-minute limiter.
#[derive(Debug, Default)]
pub(crate) struct AuthLimiter {
    /// Source → (minute of its last logged event, refusals since then not logged).
    seen: Mutex<HashMap<IpAddr, (i64, u64)>>,
}

impl AuthLimiter {
    /// `Some(not logged since the last event)` when a line is due for `src` in `minute`.
    pub(crate) fn due(&self, src: IpAddr, minute: i64) -> Option<u64> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= MAX_SOURCES && !seen.contains_key(&src) {
            seen.clear();
        }
        match seen.get_mut(&src) {
            Some((last, skipped)) if *last == minute => {
                *skipped += 1;
                None
            }
            Some((last, skipped)) => {
                let n = *skipped;
                *last = minute;
                *skipped = 0;
                Some(n)
            }
            None => {
                seen.insert(src, (minute, 0));
                Some(0)
            }
        }
    }
}

impl AuthSink for DetectionStage {
    fn auth_refusal(&self, note: &AuthNote<'_>) {
        let now = Utc::now();
        let Some(since_last) = self.auth_limiter().due(note.src, now.timestamp() / 60) else {
            return;
        };
        let src = note.src.to_string();
        let event = AuthEvent {
            src: &src,
            identity: note.identity,
            uri_path: note.path,
            http_method: note.method,
            status: note.status,
            reason: note.reason,
            action: if note.enforced {
                "refused"
            } else {
                "would_refuse"
            },
            since_last,
        };
        self.verdicts().log().write(now, &LogEvent::Auth(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_per_minute_with_the_skipped_count() {
        let l = AuthLimiter::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(l.due(a, 10), Some(0));
        assert_eq!(l.due(a, 10), None);
        assert_eq!(l.due(a, 10), None);
        assert_eq!(l.due(b, 10), Some(0));
        assert_eq!(l.due(a, 11), Some(2));
        assert_eq!(l.due(a, 11), None);
    }
}
