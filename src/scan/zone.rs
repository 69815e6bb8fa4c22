//! The zone of the `[GIN]` timestamps (`--timezone`) and the local → UTC conversion.
//!
//! gin prints `time.Now()` in the Ollama host's local zone without naming it, so `scan` must
//! be told the zone. Accepted: `UTC` (also `Z`), a fixed offset (`+02:00`, `-0530`, `+02`)
//! or an IANA name (`Europe/Berlin`, via chrono-tz).
//!
//! Daylight-saving edges, for named zones:
//! - an *ambiguous* local time (the repeated hour when clocks go back) is read in the
//!   order the log runs: as the **earlier** instant (the first pass through that hour),
//!   unless that would put it further before the previous line than the later instant puts
//!   it after — then it is the **later** instant (the second pass). So a log running
//!   `01:30 → 02:59 → 02:00 → 03:30` on Berlin's fall-back day stays in time order, while a
//!   line a few seconds out of order inside the first pass (concurrent requests) stays in
//!   the first pass. Without a previous line the earlier instant is taken;
//! - a *nonexistent* local time (the skipped hour when clocks go forward) is shifted
//!   **forward** by the gap: it is read with the offset in force just before the gap, so
//!   Berlin's `02:30` on a spring-forward day is `01:30Z` (= `03:30` summer time).
//!
//! Converting through chrono-tz costs a binary search per call, so [`ZoneResolver`] caches
//! the offset of the current local hour when that whole hour has one offset (every hour but
//! the transition hours, which are resolved line by line).

use chrono::{
    DateTime, Duration, FixedOffset, LocalResult, NaiveDateTime, Offset, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// A parsed `--timezone` value.
///
/// Why: the GIN timestamp has no zone, and Splunk's `_time` (and every window) depends on
/// reading it in the right one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LogZone {
    /// `UTC` or a fixed offset east of UTC.
    Fixed(FixedOffset),
    /// An IANA zone with its daylight-saving rules.
    Named(Tz),
}

impl LogZone {
    /// UTC, the default.
    pub(crate) fn utc() -> LogZone {
        LogZone::Fixed(Utc.fix())
    }

    /// Parses `UTC`, `Z`, `+HH:MM`, `-HHMM`, `+HH` or an IANA name; `None` when it is none
    /// of these (an offset of 24 hours or more, minutes of 60 or more, an unknown name).
    pub(crate) fn parse(text: &str) -> Option<LogZone> {
        if text.eq_ignore_ascii_case("utc") || text == "Z" {
            return Some(LogZone::utc());
        }
        if text.starts_with(['+', '-']) {
            return parse_offset(text).map(LogZone::Fixed);
        }
        text.parse::<Tz>().ok().map(LogZone::Named)
    }

    /// The instant `local` denotes when the zone is a fixed offset (no state: any line, any
    /// order, any thread); `None` for a named zone, whose lines are resolved in log order by
    /// [`ZoneResolver::utc_of`].
    pub(crate) fn fixed_utc_of(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self {
            LogZone::Fixed(off) => Some(shift(local, off.local_minus_utc())),
            LogZone::Named(_) => None,
        }
    }

    /// A converter with its own cache (one per scan).
    pub(crate) fn resolver(&self) -> ZoneResolver {
        ZoneResolver {
            zone: *self,
            cached_hour: None,
            cached_offset: None,
            last: None,
        }
    }
}

/// `+HH:MM`, `-HHMM` or `+HH` (hours 0..=23, minutes 0..=59).
fn parse_offset(text: &str) -> Option<FixedOffset> {
    let (sign, rest) = text.split_at(1);
    let digits: String = match rest.len() {
        2 | 4 => rest.to_owned(),
        5 if rest.as_bytes()[2] == b':' => rest.replacen(':', "", 1),
        _ => return None,
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits.get(..2)?.parse().ok()?;
    let minutes: i32 = digits
        .get(2..)
        .filter(|m| !m.is_empty())
        .map_or(Some(0), |m| m.parse().ok())?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let secs = (hours * 60 + minutes) * 60;
    FixedOffset::east_opt(if sign == "-" { -secs } else { secs })
}

/// Converts GIN local times to UTC instants, caching the offset of the current hour.
///
/// Why: a log holds millions of lines in a few hours; resolving each through the zone's
/// transition table would cost more than parsing the line.
#[derive(Debug, Clone)]
pub(crate) struct ZoneResolver {
    zone: LogZone,
    /// The local hour (`YYYY-MM-DD HH:00:00`) the cache describes.
    cached_hour: Option<NaiveDateTime>,
    /// Its offset in seconds east of UTC, when the whole hour has one.
    cached_offset: Option<i32>,
    /// The instant returned for the previous line (picks the pass of a repeated hour).
    last: Option<DateTime<Utc>>,
}

impl ZoneResolver {
    /// The instant a GIN timestamp denotes (see the module docs for DST edges). Call it for
    /// the lines in log order: in a repeated hour the answer depends on the previous line.
    pub(crate) fn utc_of(&mut self, local: NaiveDateTime) -> DateTime<Utc> {
        let tz = match self.zone {
            LogZone::Fixed(off) => return shift(local, off.local_minus_utc()),
            LogZone::Named(tz) => tz,
        };
        let hour = local
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .unwrap_or(local);
        if self.cached_hour != Some(hour) {
            self.cached_hour = Some(hour);
            self.cached_offset = uniform_offset(&tz, hour);
        }
        let instant = match self.cached_offset {
            Some(off) => shift(local, off),
            None => resolve(&tz, local, self.last),
        };
        self.last = Some(instant);
        instant
    }

    /// A resolver whose previous line resolved to `last` (tests compare a resolver with a
    /// history against a fresh one with the same history).
    #[cfg(test)]
    pub(super) fn after(mut self, last: DateTime<Utc>) -> ZoneResolver {
        self.last = Some(last);
        self
    }
}

/// `local - offset`, as a UTC instant.
fn shift(local: NaiveDateTime, offset_secs: i32) -> DateTime<Utc> {
    if offset_secs == 0 {
        return local.and_utc();
    }
    (local - Duration::seconds(i64::from(offset_secs))).and_utc()
}

/// The offset of the local hour starting at `hour` when its first and last second both
/// exist, are unambiguous and share one offset (no zone changes offset twice in an hour).
fn uniform_offset(tz: &Tz, hour: NaiveDateTime) -> Option<i32> {
    let first = tz.offset_from_local_datetime(&hour).single()?;
    let last = tz
        .offset_from_local_datetime(&(hour + Duration::seconds(3599)))
        .single()?;
    let (a, b) = (first.fix().local_minus_utc(), last.fix().local_minus_utc());
    (a == b).then_some(a)
}

/// One local time through the zone rules: when ambiguous, the reading nearer to `last`
/// (the earlier one on a tie or without `last`); when in a gap, shifted forward.
fn resolve(tz: &Tz, local: NaiveDateTime, last: Option<DateTime<Utc>>) -> DateTime<Utc> {
    match tz.offset_from_local_datetime(&local) {
        LocalResult::Single(off) => return shift(local, off.fix().local_minus_utc()),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (
                shift(local, a.fix().local_minus_utc()),
                shift(local, b.fix().local_minus_utc()),
            );
            let (earlier, later) = if a <= b { (a, b) } else { (b, a) };
            return match last {
                Some(last) if later - last < last - earlier => later,
                _ => earlier,
            };
        }
        LocalResult::None => {}
    }
    // In a gap: the offset in force before it. Gaps are at most a few hours long.
    for back in 1..=48 {
        let before = local - Duration::minutes(30 * back);
        if let Some(off) = tz.offset_from_local_datetime(&before).earliest() {
            return shift(local, off.fix().local_minus_utc());
        }
    }
    local.and_utc()
}
