//! `--timezone`: parsing, fixed offsets, IANA zones and their DST edges, the hour cache.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::{builtin, compat, data_file, gin_line, scan, with_rules};
use crate::detect::{EngineOptions, RuleConfig};
use crate::scan::driver::Counters;
use crate::scan::fixed::Clock;
use crate::scan::{LogZone, ScanOptions};

fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, mo, d)
        .unwrap()
        .and_hms_opt(h, mi, s)
        .unwrap()
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn offset_secs(text: &str) -> Option<i32> {
    match LogZone::parse(text)? {
        LogZone::Fixed(off) => Some(off.local_minus_utc()),
        LogZone::Named(_) => None,
    }
}

#[test]
fn utc_and_fixed_offsets_parse_in_every_documented_spelling() {
    assert_eq!(offset_secs("UTC"), Some(0));
    assert_eq!(offset_secs("utc"), Some(0));
    assert_eq!(offset_secs("Z"), Some(0));
    assert_eq!(offset_secs("+02:00"), Some(7200));
    assert_eq!(offset_secs("-0530"), Some(-19800));
    assert_eq!(offset_secs("+02"), Some(7200));
    assert_eq!(offset_secs("-23:59"), Some(-86340));
}

#[test]
fn iana_names_parse_and_nonsense_does_not() {
    assert_eq!(
        LogZone::parse("Europe/Berlin"),
        Some(LogZone::Named(Tz::Europe__Berlin))
    );
    for bad in [
        "",
        "+24:00",
        "+02:60",
        "02:00",
        "+2",
        "+02:0",
        "+0a:00",
        "Mars/Olympus",
        "+02:00x",
    ] {
        assert_eq!(LogZone::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn plus_two_hours_shifts_every_time_by_minus_7200_seconds_in_both_modes() {
    let log = data_file("gin-synthetic.log");
    for (utc_opts, shifted_opts) in [
        (compat("UTC"), compat("+02:00")),
        (builtin("UTC"), builtin("+02:00")),
    ] {
        let (base, _) = scan(&utc_opts, &log);
        let (shifted, _) = scan(&shifted_opts, &log);
        assert!(!base.is_empty());
        let moved: Vec<_> = base
            .into_iter()
            .map(|mut r| {
                r.time -= 7200;
                r
            })
            .collect();
        assert_eq!(shifted, moved);
    }
}

#[test]
fn europe_berlin_in_winter_equals_plus_one_hour() {
    // 2025-01-15 12:00:00 UTC and on, written in local time.
    let base = 1_736_942_400;
    let log: String = (0..40)
        .map(|i| gin_line(base + 97 * i, "57.3s", "10.0.0.5", "POST", "/api/generate"))
        .collect();
    for (a, b) in [
        (compat("Europe/Berlin"), compat("+01:00")),
        (builtin("Europe/Berlin"), builtin("+01:00")),
    ] {
        let (named, _) = scan(&a, log.as_bytes());
        let (fixed, _) = scan(&b, log.as_bytes());
        assert_eq!(named.len(), 5);
        assert_eq!(named, fixed);
        assert_eq!(named[0].time, base - 3600);
    }
}

#[test]
fn ambiguous_local_time_without_a_previous_line_is_the_earlier_instant() {
    // Berlin, 2025-10-26: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    let mut r = LogZone::Named(Tz::Europe__Berlin).resolver();
    assert_eq!(
        r.utc_of(local(2025, 10, 26, 2, 30, 0)),
        utc(2025, 10, 26, 0, 30, 0)
    );
    assert_eq!(
        r.utc_of(local(2025, 10, 26, 3, 0, 0)),
        utc(2025, 10, 26, 2, 0, 0)
    );
}

#[test]
fn nonexistent_local_time_is_shifted_forward_by_the_gap() {
    // Berlin, 2025-03-30: 02:00 CET jumps to 03:00 CEST; 02:30 is read as CET (= 03:30 CEST).
    let mut r = LogZone::Named(Tz::Europe__Berlin).resolver();
    assert_eq!(
        r.utc_of(local(2025, 3, 30, 2, 30, 0)),
        utc(2025, 3, 30, 1, 30, 0)
    );
    assert_eq!(
        r.utc_of(local(2025, 3, 30, 1, 59, 59)),
        utc(2025, 3, 30, 0, 59, 59)
    );
    assert_eq!(
        r.utc_of(local(2025, 3, 30, 3, 0, 0)),
        utc(2025, 3, 30, 1, 0, 0)
    );
}

#[test]
fn cached_resolution_equals_fresh_resolution_across_transitions() {
    let zones = [
        Tz::Europe__Berlin,
        Tz::America__St_Johns,
        Tz::Australia__Lord_Howe,
        Tz::Asia__Kolkata,
    ];
    let days = [
        local(2025, 3, 29, 0, 0, 0),
        local(2025, 4, 5, 0, 0, 0),
        local(2025, 10, 4, 0, 0, 0),
        local(2025, 10, 25, 0, 0, 0),
        local(2025, 11, 1, 0, 0, 0),
    ];
    for tz in zones {
        let mut cached = LogZone::Named(tz).resolver();
        let mut prev = None;
        for day in days {
            // Every 7 minutes 13 seconds over three days, in order, then backwards.
            let steps: Vec<i64> = (0..(3 * 86_400 / 433)).collect();
            for &k in steps.iter().chain(steps.iter().rev()) {
                let t = day + chrono::Duration::seconds(433 * k);
                let mut fresh = LogZone::Named(tz).resolver();
                if let Some(prev) = prev {
                    fresh = fresh.after(prev);
                }
                let got = cached.utc_of(t);
                let fresh = fresh.utc_of(t);
                assert_eq!(got, fresh, "{tz} {t}");
                prev = Some(got);
                if let Some(exact) = tz.from_local_datetime(&t).single() {
                    assert_eq!(fresh, exact.with_timezone(&Utc), "{tz} {t}");
                }
            }
        }
    }
}

/// Every minute from 2025-10-25T23:30Z to 2025-10-26T02:30Z, written in Berlin time: 01:30
/// CEST → 02:59 CEST (first pass), then 02:00 CET → 03:30 CET (second pass).
fn berlin_fall_back_minutes() -> Vec<i64> {
    let start = utc(2025, 10, 25, 23, 30, 0).timestamp();
    (0..=180).map(|i| start + 60 * i).collect()
}

#[test]
fn repeated_hour_is_read_in_log_order_first_pass_then_second_pass() {
    let mut r = LogZone::Named(Tz::Europe__Berlin).resolver();
    let got: Vec<i64> = berlin_fall_back_minutes()
        .into_iter()
        .map(|epoch| {
            let t = DateTime::from_timestamp(epoch, 0).unwrap();
            r.utc_of(t.with_timezone(&Tz::Europe__Berlin).naive_local())
                .timestamp()
        })
        .collect();
    assert_eq!(got, berlin_fall_back_minutes());
}

#[test]
fn a_line_slightly_out_of_order_in_the_first_pass_stays_in_the_first_pass() {
    let mut r = LogZone::Named(Tz::Europe__Berlin).resolver();
    let seq = [
        (local(2025, 10, 26, 2, 30, 5), utc(2025, 10, 26, 0, 30, 5)),
        (local(2025, 10, 26, 2, 30, 4), utc(2025, 10, 26, 0, 30, 4)),
        (local(2025, 10, 26, 2, 59, 59), utc(2025, 10, 26, 0, 59, 59)),
        (local(2025, 10, 26, 2, 0, 0), utc(2025, 10, 26, 1, 0, 0)),
        (local(2025, 10, 26, 2, 0, 3), utc(2025, 10, 26, 1, 0, 3)),
        (local(2025, 10, 26, 2, 0, 2), utc(2025, 10, 26, 1, 0, 2)),
        (local(2025, 10, 26, 3, 0, 0), utc(2025, 10, 26, 2, 0, 0)),
    ];
    for (t, want) in seq {
        assert_eq!(r.utc_of(t), want, "{t}");
    }
}

/// The clock keeps the last line's local time and instant: a line repeating it gets the same
/// instant, in either pass through the repeated hour, as the resolver gives line by line.
#[test]
fn a_repeated_local_time_keeps_its_pass_through_the_repeated_hour() {
    let mut clock = Clock::new(&[], LogZone::Named(Tz::Europe__Berlin));
    let mut counters = Counters::default();
    let seq = [
        (local(2025, 10, 26, 2, 30, 5), utc(2025, 10, 26, 0, 30, 5)),
        (local(2025, 10, 26, 2, 30, 5), utc(2025, 10, 26, 0, 30, 5)),
        (local(2025, 10, 26, 2, 59, 59), utc(2025, 10, 26, 0, 59, 59)),
        (local(2025, 10, 26, 2, 0, 0), utc(2025, 10, 26, 1, 0, 0)),
        (local(2025, 10, 26, 2, 0, 0), utc(2025, 10, 26, 1, 0, 0)),
        (local(2025, 10, 26, 2, 20, 0), utc(2025, 10, 26, 1, 20, 0)),
        (local(2025, 10, 26, 2, 20, 0), utc(2025, 10, 26, 1, 20, 0)),
        (local(2025, 10, 26, 3, 0, 0), utc(2025, 10, 26, 2, 0, 0)),
    ];
    let mut resolver = LogZone::Named(Tz::Europe__Berlin).resolver();
    for (t, want) in seq {
        let step = clock.step(t, &mut counters).expect("in range");
        assert_eq!((step.at, resolver.utc_of(t)), (want, want), "{t}");
    }
    assert_eq!((counters.lines_parsed, counters.time_breaks), (8, 0));
}

#[test]
fn berlin_fall_back_day_loses_no_line_in_default_mode() {
    let rule = RuleConfig {
        name: "all".to_owned(),
        group_by: "src".to_owned(),
        ..RuleConfig::default()
    };
    let opts = ScanOptions {
        zone: LogZone::parse("Europe/Berlin").unwrap(),
        ..with_rules(vec![rule], EngineOptions::default())
    };
    let log: String = berlin_fall_back_minutes()
        .into_iter()
        .map(|epoch| {
            let t = DateTime::from_timestamp(epoch, 0).unwrap();
            let local = t.with_timezone(&Tz::Europe__Berlin);
            format!(
                "[GIN] {} | 200 |            1s |        10.0.0.5 | POST     \"/api/chat\"\n",
                local.format("%Y/%m/%d - %H:%M:%S")
            )
        })
        .collect();
    let (rows, summary) = scan(&opts, log.as_bytes());
    assert_eq!((summary.lines_parsed, summary.late_records), (181, 0));
    let start = utc(2025, 10, 25, 23, 30, 0).timestamp();
    let want: Vec<(i64, u64)> = (0..13)
        .map(|i| (start + 900 * i, if i < 12 { 15 } else { 1 }))
        .collect();
    let got: Vec<(i64, u64)> = rows.iter().map(|r| (r.time, r.count)).collect();
    assert_eq!(got, want);
}
