//! What is done about a policy verdict — decided here, next to the rule verdicts, so the
//! pipeline stays the one owner of "does this ban?".
//!
//! Monitor mode never changes a response: the verdict is logged `would_block`. Block mode
//! refuses the request (`blocked`) and, with `[policy] ban = true`, also bans the source
//! (`banned`) unless it is a trusted proxy or allowlisted (those are refused, not banned).
//! The `detection` line is written before the `ban` it causes. One line per source and rule per
//! minute at most (a flood of refused pushes is not a flood of lines), with the number of
//! verdicts not logged since; a verdict that bans is always written.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::verdict::{decide, Decision, Verdicts};
use super::DetectionStage;
use crate::enforce::BanOutcome;
use crate::policy::{classify, Verdict};
use crate::proxy::client_ip::source_key;
use crate::proxy::layers::policy::PolicySink;
use crate::telemetry::log_event::{Action, LogEvent, PolicyFinding};

impl Verdicts {
    /// Acts on a policy verdict against `src` (`method` `path`) at `now`; `ban` = `[policy]
    /// ban`.
    pub(crate) fn policy_at(
        &self,
        now: DateTime<Utc>,
        v: &Verdict,
        src: IpAddr,
        path: &str,
        method: &str,
        ban: bool,
    ) -> Action {
        let src_text = src.to_string();
        let (mitre, attack_type) = classify(v.rule);
        let write = |action: Action| {
            self.metrics()
                .detections
                .with_label_values(&[v.rule, v.severity.as_str(), action.as_str()])
                .inc();
            // A ban is written whatever the minute: it happens once.
            let Some(since_last) = self.policy_lines().due_or_forced(
                &(source_key(src), v.rule),
                now.timestamp() / 60,
                action == Action::Banned,
            ) else {
                return action;
            };
            let finding = PolicyFinding {
                rule: v.rule,
                mitre,
                attack_type,
                src: &src_text,
                uri_path: path,
                http_method: method,
                field: v.field,
                value: &v.value,
                severity: v.severity,
                action,
                risk: PolicyFinding::risk_of(v.rule, &src_text, path, method, v.field, &v.value),
                since_last,
            };
            self.log().write(now, &LogEvent::Policy(finding));
            action
        };
        if !self.enforcement().block_mode() {
            return write(Action::WouldBlock);
        }
        if !ban {
            return write(Action::Blocked);
        }
        let trusted = self.trusted();
        match decide(true, true, src, &trusted, |ip| {
            self.enforcement().allowlisted(ip)
        }) {
            Decision::Log(_) => write(Action::Blocked),
            Decision::Ban => {
                let mut written = None;
                let reason = format!("{}: {} = {}", v.rule, v.field, v.value);
                let outcome = self.enforcement().ban(src, v.rule, reason, now, || {
                    written = Some(write(Action::Banned));
                });
                written.unwrap_or_else(|| {
                    write(match outcome {
                        BanOutcome::Banned(_) | BanOutcome::AlreadyBanned(_) => Action::Banned,
                        BanOutcome::Allowlisted | BanOutcome::TableFull => Action::Blocked,
                    })
                })
            }
        }
    }
}

impl PolicySink for DetectionStage {
    fn verdict(&self, v: &Verdict, src: IpAddr, path: &str, method: &str, ban: bool) -> Action {
        self.verdicts()
            .policy_at(Utc::now(), v, src, path, method, ban)
    }
}
