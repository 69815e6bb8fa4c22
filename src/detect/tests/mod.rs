//! Behaviour tests of the engine, driven by explicit timestamps (virtual time).

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::{build_rules, DetectionEvent, Engine, EngineOptions, Event, RuleConfig, Severity};
use crate::record::{Method, Outcome, RequestRecord};
use crate::route::{normalize, Route};

mod builtin;
mod concurrency;
mod due;
mod eviction;
mod identity;
mod inflight;
mod reload;
mod shared;
mod sliding;
mod sources;
mod targets;
mod tumbling;
mod validation;
mod volume;

/// 2025-10-02T14:45:00Z, a multiple of 900 s (a 15-minute boundary).
const T0: i64 = 1_759_416_300;

fn at(secs: i64, ms: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, ms * 1_000_000).unwrap()
}

/// A finished request from `src` to `path`, taking `latency`, completing at `T0 + offset_s`.
fn req(src: &str, path: &str, latency: Duration, offset_s: i64) -> RequestRecord {
    req_at(src, Method::Post, path, latency, at(T0 + offset_s, 0))
}

fn req_at(
    src: &str,
    method: Method,
    path: &str,
    latency: Duration,
    when: DateTime<Utc>,
) -> RequestRecord {
    let (norm, route): (Cow<'static, str>, Route) = normalize(path);
    RequestRecord {
        src: src.parse().unwrap(),
        peer: src.parse().unwrap(),
        method,
        method_text: Cow::Borrowed(method.as_str()),
        path: norm,
        raw_target: Cow::Owned(path.to_owned()),
        route,
        status: 200,
        ttfb: Some(Duration::from_millis(5)),
        total: latency,
        completed_at: when,
        outcome: Outcome::Complete,
        bytes_in: 0,
        bytes_out: 0,
        in_flight_reported: 0,
        identity: None,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A rule named `name`, adjusted by `f`.
fn rule(name: &str, f: impl FnOnce(&mut RuleConfig)) -> RuleConfig {
    let mut cfg = RuleConfig {
        name: name.to_owned(),
        ..RuleConfig::default()
    };
    f(&mut cfg);
    cfg
}

fn engine(rules: &[RuleConfig]) -> Engine {
    engine_with(rules, EngineOptions::default())
}

fn engine_with(rules: &[RuleConfig], options: EngineOptions) -> Engine {
    Engine::new(build_rules(rules).unwrap(), options).unwrap()
}

/// Feeds records, returning the events they produced.
fn feed(engine: &Engine, records: &[RequestRecord]) -> Vec<Event> {
    let mut out = Vec::new();
    for r in records {
        engine.observe(r, &mut out);
    }
    out
}

/// `(kind, count)` of each event, the most common assertion.
fn kinds(events: &[Event]) -> Vec<(&'static str, u64)> {
    events
        .iter()
        .map(|e| (e.kind(), e.detail().count))
        .collect()
}

fn only(events: &[Event]) -> &DetectionEvent {
    assert_eq!(events.len(), 1, "{events:?}");
    events[0].detail()
}
