//! `[auth]` refusals in the detection log: one `auth` event per source (an IPv4 address, an
//! IPv6 /48) per minute (a spray of wrong keys must not become a spray of log lines, from one
//! address or from many of one allocation), carrying how many were not logged.
//! Counting them toward a ban is the `auth_failures` rule's job, from the records.

use std::net::IpAddr;

use chrono::Utc;

use super::DetectionStage;
use crate::proxy::client_ip::source_key;
use crate::proxy::layers::auth::{AuthNote, AuthSink};
use crate::telemetry::log_event::{AuthEvent, LogEvent};
use crate::telemetry::throttle::PerMinute;

/// The per-source, per-minute limiter of `auth` events.
pub(crate) type AuthLimiter = PerMinute<IpAddr>;

impl AuthSink for DetectionStage {
    fn auth_refusal(&self, note: &AuthNote<'_>) {
        let now = Utc::now();
        let Some(since_last) = self
            .auth_limiter()
            .due(&source_key(note.src), now.timestamp() / 60)
        else {
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
