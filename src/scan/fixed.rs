//! Default mode: every `[GIN]` line becomes a [`RequestRecord`] for the same detection
//! [`Engine`] the proxy runs, with the rules of `--config` (or the built-in set).
//!
//! Rows: a tumbling rule gives one row per `window_summary` (the window's final figures,
//! like the Splunk search's rows); a sliding rule gives one row per `detection`, its `_time`
//! being the start of the window in which the threshold was reached.
//!
//! Time comes from the log. Every [`TICK_STEP_SECS`] of log time the engine is ticked at
//! *newest timestamp − largest window* (the watermark), which closes finished windows so
//! memory stays bounded on logs of any length.
//!
//! A record older than the watermark (the log's time jumped back by more than the largest
//! window: logs concatenated out of order, or one line dated far in the future) is a *time
//! break*: every window is closed and reported as at end of input, the watermark restarts
//! from that record, and counting goes on. No line is dropped, at the price that a window
//! straddling the break may be reported in two parts. Breaks are counted in the summary.
//! (A record less than a window behind the newest is counted by the engine as usual, or as
//! late when its key's window has already moved on.)
//!
//! Lines whose time is outside what the engine holds
//! ([`SUPPORTED_EPOCH_SECS`]: 1970 to 2106-02-07) are skipped as `time_out_of_range`.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::driver::{Counters, Scanner, Skip};
use super::row::{Row, Rows};
use super::zone::{LogZone, ZoneResolver};
use crate::detect::{
    Engine, EngineError, EngineOptions, Event, Local, Rule, WindowKind, SUPPORTED_EPOCH_SECS,
};
use crate::gin::parse_gin_line;
use crate::record::{Method, Outcome, RequestRecord};
use crate::route::{self, Route};

/// How much log time passes between engine ticks.
pub(super) const TICK_STEP_SECS: i64 = 60;

/// The engine-driven scanner: the log's clock and the engine, on one thread.
pub(super) struct FixedScan {
    clock: Clock,
    counting: Counting,
}

impl FixedScan {
    /// An engine over `rules`.
    pub(super) fn new(
        rules: Vec<Rule>,
        options: EngineOptions,
        zone: LogZone,
    ) -> Result<FixedScan, EngineError> {
        Ok(FixedScan {
            clock: Clock::new(&rules, zone),
            counting: Counting::new(rules, options)?,
        })
    }
}

/// What the clock decided for one line, for the engine to carry out in this order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    /// A time break: close every window first.
    pub(super) time_break: bool,
    /// Then tick the engine at this time.
    pub(super) tick: Option<DateTime<Utc>>,
    /// Then count the record, completed at this time.
    pub(super) at: DateTime<Utc>,
}

/// The order-dependent part of the default mode: the zone conversion (a repeated DST hour
/// is read relative to the previous line), the log-time watermark, ticks and time breaks.
/// It sees every line; the engine work it schedules is per key, so it can be split by
/// source ([`super::shard`]).
#[derive(Debug)]
pub(super) struct Clock {
    zone: ZoneResolver,
    /// The largest rule window, in seconds.
    max_window: i64,
    /// Records before this epoch second are late (the last tick point).
    watermark: i64,
    /// The newest record time seen.
    newest: i64,
    /// The last local time [`Clock::step`] converted, its instant and epoch second.
    ///
    /// Why: most lines share their second with the line before, and the zone conversion
    /// and the epoch second cost about 50 instructions a line. The resolver's answer for
    /// the same local time right after it is the same instant (its only state is the
    /// previous line's instant, which is that instant), so the cache changes nothing.
    last: Option<(NaiveDateTime, i64, DateTime<Utc>)>,
}

impl Clock {
    pub(super) fn new(rules: &[Rule], zone: LogZone) -> Clock {
        let max_window = rules
            .iter()
            .map(|r| i64::try_from(r.window().as_secs()).unwrap_or(i64::MAX))
            .max()
            .unwrap_or(0);
        Clock {
            zone: zone.resolver(),
            max_window,
            watermark: i64::MIN,
            newest: i64::MIN,
            last: None,
        }
    }

    /// The steps for a line of local time `local`, in log order; `None` (counted as
    /// skipped) when its time is outside what the engine holds.
    pub(super) fn step(&mut self, local: NaiveDateTime, counters: &mut Counters) -> Option<Step> {
        let (t, at) = match self.last {
            Some((last, t, at)) if last == local => (t, at),
            _ => {
                let at = self.zone.utc_of(local);
                let t = at.timestamp();
                self.last = Some((local, t, at));
                (t, at)
            }
        };
        self.step_secs(t, at, counters)
    }

    /// [`Clock::step`] for a line whose instant `at` and its epoch second `t` are already
    /// known (a fixed zone's lines are converted while parsing: [`LogZone::fixed_utc_of`]).
    #[inline]
    pub(super) fn step_secs(
        &mut self,
        t: i64,
        at: DateTime<Utc>,
        counters: &mut Counters,
    ) -> Option<Step> {
        debug_assert_eq!(t, at.timestamp());
        if !SUPPORTED_EPOCH_SECS.contains(&t) {
            counters.skip(Skip::TimeOutOfRange);
            return None;
        }
        counters.lines_parsed += 1;
        let time_break = t < self.watermark;
        if time_break {
            // Forget the log's time, so this record restarts the watermark.
            self.watermark = i64::MIN;
            self.newest = i64::MIN;
            counters.time_breaks += 1;
        }
        Some(Step {
            time_break,
            tick: self.advance(t),
            at,
        })
    }

    /// Moves the tick point when the log's time has moved far enough: the time to tick at.
    fn advance(&mut self, t: i64) -> Option<DateTime<Utc>> {
        if t <= self.newest {
            return None;
        }
        self.newest = t;
        let point = t.saturating_sub(self.max_window);
        if self.watermark != i64::MIN && point < self.watermark.saturating_add(TICK_STEP_SECS) {
            return None;
        }
        self.watermark = point;
        DateTime::<Utc>::from_timestamp(point, 0)
    }
}

/// The engine and the rows it gave: the whole engine, or the share of one source shard.
pub(super) struct Counting {
    /// Plain maps: each engine (or shard) lives on one thread.
    engine: Engine<Local>,
    /// Window kind per rule, in engine order (events name their rule).
    kinds: Vec<(std::sync::Arc<str>, WindowKind)>,
    events: Vec<Event>,
    rows: Rows,
    /// The path texts of the rows so far, one of each: a path's rows share it.
    ///
    /// Why: rows are most of what a row-heavy scan keeps (213 723 on the benchmark corpus,
    /// with 4 distinct paths), and on a VM every fresh page costs (docs/performance.md); a
    /// shared path makes a row 8 bytes smaller and saves an allocation (32 bytes) per row.
    /// Sources are not shared: that corpus's rows have 180 540 distinct ones, and a set of
    /// them cost more in cache misses (5 % of a scan's samples) than it saved.
    paths: hashbrown::HashSet<Arc<str>, foldhash::fast::RandomState>,
}

impl Counting {
    /// An engine over `rules`.
    pub(super) fn new(rules: Vec<Rule>, options: EngineOptions) -> Result<Counting, EngineError> {
        let kinds = rules
            .iter()
            .map(|r| (r.name().clone(), r.window_kind()))
            .collect();
        Ok(Counting {
            engine: Engine::new_local(rules, options)?.rows_only(),
            kinds,
            events: Vec::new(),
            rows: Rows::default(),
            paths: hashbrown::HashSet::default(),
        })
    }

    /// Carries out `step` for `rec` (its `completed_at` already set to `step.at`).
    pub(super) fn apply(&mut self, step: Step, rec: &RequestRecord) {
        if step.time_break {
            self.time_break();
        }
        if let Some(now) = step.tick {
            self.tick(now);
        }
        self.observe(rec);
    }

    /// A time break: closes every window (rows as at end of input).
    pub(super) fn time_break(&mut self) {
        self.engine.finish(&mut self.events);
        self.collect_events();
    }

    /// Closes the windows that ended at `now`.
    pub(super) fn tick(&mut self, now: DateTime<Utc>) {
        self.engine.tick(now, &mut self.events);
        if !self.events.is_empty() {
            self.collect_events();
        }
    }

    /// Counts one record.
    pub(super) fn observe(&mut self, rec: &RequestRecord) {
        self.engine.observe(rec, &mut self.events);
        if !self.events.is_empty() {
            self.collect_events();
        }
    }

    /// Live keys now (the sharded scan checks the key cap with it).
    pub(super) fn tracked_keys(&self) -> usize {
        self.engine.tracked_keys()
    }

    /// End of input: closes everything; the rows in engine order and the late records.
    /// The rows, the late records and the keys the key cap evicted.
    pub(super) fn finish(mut self) -> (Rows, u64, u64) {
        self.time_break();
        let late = self.engine.late_records();
        let evicted = self.engine.evictions();
        (self.rows, late, evicted)
    }

    /// Turns the pending engine events into rows (tumbling summaries, sliding detections).
    fn collect_events(&mut self) {
        for event in self.events.drain(..) {
            let (want, ev) = match event {
                Event::Detection(ev) => (WindowKind::Sliding, ev),
                Event::WindowSummary(ev) => (WindowKind::Tumbling, ev),
            };
            let kind = self
                .kinds
                .iter()
                // The event's name is the rule's own `Arc` (the text compare is the fallback).
                .find(|(name, _)| Arc::ptr_eq(name, &ev.rule) || *name == ev.rule)
                .map(|(_, k)| *k);
            if kind != Some(want) {
                continue;
            }
            let uri_path = ev.uri_path.map(|path| intern(&mut self.paths, path));
            self.rows.push(Row {
                rule: ev.rule,
                time: ev.window_start.timestamp(),
                src: ev.src,
                uri_path,
                count: ev.count,
                avg_response_time: ev.avg_response_time,
                max_response_time: ev.max_response_time,
                severity: ev.severity,
                attack_type: ev.attack_type,
            });
        }
    }
}

/// The shared copy of `text` in `texts` (added when new).
fn intern(
    texts: &mut hashbrown::HashSet<Arc<str>, foldhash::fast::RandomState>,
    text: String,
) -> Arc<str> {
    if let Some(shared) = texts.get(text.as_str()) {
        return Arc::clone(shared);
    }
    let shared: Arc<str> = Arc::from(text);
    texts.insert(Arc::clone(&shared));
    shared
}

/// What a `[GIN]` line says about its request: the parts of a [`RequestRecord`] a line
/// gives, about half its size (the record is built from it when it is counted).
///
/// Why: with `--threads`, a batch of these is written on a parser thread and read on the
/// engine's threads; the full record (about 230 bytes, mostly fields a log line never
/// fills) made that hand-over cost more than it needed to, and in the single-threaded loop
/// it was moved twice per line.
#[derive(Debug)]
pub(super) struct Request {
    /// The line's local time (the zone is resolved in log order, see [`ZoneResolver::utc_of`]).
    pub(super) local: NaiveDateTime,
    src: IpAddr,
    method: Method,
    /// The method's text when it is not one of [`Method`]'s.
    other_method: Option<Box<str>>,
    path: Cow<'static, str>,
    route: Route,
    status: u16,
    total: Duration,
}

impl Request {
    /// The request of a parsed line.
    fn new(parsed: crate::gin::ParsedLine<'_>) -> Request {
        let (path, route) = route::normalize_logged(&parsed.path);
        let method = Method::parse(parsed.method);
        Request {
            local: parsed.time,
            src: parsed.client_ip,
            method,
            other_method: (method == Method::Other).then(|| Box::from(parsed.method)),
            path,
            route,
            status: parsed.status,
            total: parsed.latency,
        }
    }

    /// The client address (the engine's source).
    pub(super) fn src(&self) -> IpAddr {
        self.src
    }

    /// The record this line stands for: the GIN time is when the response finished, at
    /// `completed_at`. Copies what the record owns (the path when it is not a known route,
    /// a method outside [`Method`]'s); the sharded scan reads shared batches, so it must.
    pub(super) fn record(&self, completed_at: DateTime<Utc>) -> RequestRecord {
        let method_text = match &self.other_method {
            Some(text) => Cow::Owned(text.to_string()),
            None => Cow::Borrowed(self.method.as_str()),
        };
        self.record_with(method_text, self.path.clone(), completed_at)
    }

    /// [`Request::record`], moving the owned texts instead of copying them.
    fn into_record(mut self, completed_at: DateTime<Utc>) -> RequestRecord {
        let method_text = match self.other_method.take() {
            Some(text) => Cow::Owned(text.into_string()),
            None => Cow::Borrowed(self.method.as_str()),
        };
        let path = std::mem::take(&mut self.path);
        self.record_with(method_text, path, completed_at)
    }

    fn record_with(
        &self,
        method_text: Cow<'static, str>,
        path: Cow<'static, str>,
        completed_at: DateTime<Utc>,
    ) -> RequestRecord {
        RequestRecord {
            src: self.src,
            peer: self.src,
            method: self.method,
            method_text,
            path,
            // The engine never reads the raw target; keeping it would cost an allocation a line.
            raw_target: Cow::Borrowed(""),
            route: self.route,
            status: self.status,
            ttfb: None,
            total: self.total,
            completed_at,
            outcome: Outcome::Complete,
            bytes_in: 0,
            bytes_out: 0,
            in_flight_reported: 0,
            identity: None,
        }
    }
}

impl Scanner for FixedScan {
    type Parsed = Request;

    fn parse(line: &[u8]) -> Result<Self::Parsed, Skip> {
        Ok(Request::new(parse_gin_line(line).map_err(Skip::Gin)?))
    }

    fn feed(&mut self, req: Self::Parsed, counters: &mut Counters) {
        if let Some(step) = self.clock.step(req.local, counters) {
            let at = step.at;
            self.counting.apply(step, &req.into_record(at));
        }
    }

    fn finish(self, counters: &mut Counters) -> Rows {
        let (rows, late, evicted) = self.counting.finish();
        counters.late += late;
        counters.evicted += evicted;
        rows
    }
}
