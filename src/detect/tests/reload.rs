//! Hot reload: `Engine::rebuild` keeps the counters of unchanged rules, and only those.

use std::sync::Arc;

use super::*;
use crate::detect::{ReloadReport, RuleKeys};

fn counting(name: &str, threshold: i64) -> RuleConfig {
    rule(name, |r| r.threshold = threshold)
}

fn per_src(name: &str, threshold: i64) -> RuleConfig {
    rule(name, |r| {
        r.group_by = "src".into();
        r.threshold = threshold;
    })
}

fn sliding(name: &str, threshold: i64) -> RuleConfig {
    rule(name, |r| {
        r.group_by = "src".into();
        r.window_kind = "sliding".into();
        r.threshold = threshold;
    })
}

fn rebuild(e: &Engine, rules: &[RuleConfig]) -> (Engine, ReloadReport) {
    rebuild_with(e, rules, EngineOptions::default())
}

fn rebuild_with(
    e: &Engine,
    rules: &[RuleConfig],
    options: EngineOptions,
) -> (Engine, ReloadReport) {
    e.rebuild(build_rules(rules).unwrap(), options).unwrap()
}

fn keys(name: &str, keys: usize) -> RuleKeys {
    RuleKeys {
        name: name.into(),
        keys,
    }
}

fn a(offset: i64) -> RequestRecord {
    req("10.0.0.1", "/api/show", secs(1), offset)
}

fn rules_of(events: &[Event]) -> Vec<(&str, &'static str, u64)> {
    events
        .iter()
        .map(|e| (&*e.detail().rule, e.kind(), e.detail().count))
        .collect()
}

#[test]
fn an_unchanged_rule_keeps_its_count_across_rebuild() {
    let e = engine(&[counting("c", 3)]);
    assert!(feed(&e, &[a(1), a(2)]).is_empty());
    // "900s" is "15m": the effective config is unchanged.
    let same = rule("c", |r| {
        r.threshold = 3;
        r.window = "900s".into();
    });
    let (e, report) = rebuild(&e, &[same]);
    assert_eq!(report.kept_rules, [keys("c", 1)]);
    assert_eq!((report.keys_kept, report.keys_dropped), (1, 0));
    let out = feed(&e, &[a(3)]);
    assert_eq!(kinds(&out), [("detection", 3)]);
    assert_eq!(only(&out).avg_response_time, 1.0);
}

#[test]
fn a_flagged_key_does_not_detect_again_after_rebuild() {
    let e = engine(&[counting("c", 1)]);
    assert_eq!(kinds(&feed(&e, &[a(1)])), [("detection", 1)]);
    let (e, report) = rebuild(&e, &[counting("c", 1)]);
    assert!(report.summaries.is_empty());
    assert!(feed(&e, &[a(2)]).is_empty());
    let mut out = Vec::new();
    e.tick(at(T0 + 900, 0), &mut out);
    assert_eq!(kinds(&out), [("window_summary", 2)]);
}

#[test]
fn a_changed_threshold_resets_that_rule_only() {
    let e = engine(&[counting("changed", 3), counting("same", 3)]);
    feed(&e, &[a(1), a(2)]);
    let (e, report) = rebuild(&e, &[counting("changed", 4), counting("same", 3)]);
    assert_eq!(report.kept_rules, [keys("same", 1)]);
    assert_eq!(report.reset_rules, [keys("changed", 1)]);
    assert_eq!((report.keys_kept, report.keys_dropped), (1, 1));
    assert_eq!(rules_of(&feed(&e, &[a(3)])), [("same", "detection", 3)]);
    assert!(feed(&e, &[a(4), a(5)]).is_empty());
    assert_eq!(rules_of(&feed(&e, &[a(6)])), [("changed", "detection", 4)]);
}

#[test]
fn a_removed_rules_keys_and_paths_are_dropped() {
    let e = engine(&[counting("gone", 5), per_src("stays", 5)]);
    feed(&e, &[a(1), req("10.0.0.2", "/api/tags", secs(1), 2), a(3)]);
    assert_eq!((e.tracked_keys(), e.tracked_paths()), (4, 2));
    let (next, report) = rebuild(&e, &[per_src("stays", 5)]);
    assert_eq!(report.removed_rules, [keys("gone", 2)]);
    assert_eq!(report.kept_rules, [keys("stays", 2)]);
    assert_eq!((next.tracked_keys(), next.tracked_paths()), (2, 0));
    assert_eq!((report.keys_kept, report.keys_dropped), (2, 2));
    // The old engine is untouched until the caller drops it.
    assert_eq!((e.tracked_keys(), e.tracked_paths()), (4, 2));
}

#[test]
fn a_reordered_rule_list_maps_each_key_to_its_rule() {
    let e = engine(&[counting("first", 3), per_src("second", 4)]);
    feed(&e, &[a(1), a(2), req("10.0.0.1", "/api/tags", secs(1), 3)]);
    let (e, report) = rebuild(
        &e,
        &[
            per_src("new", 1),
            per_src("second", 4),
            counting("first", 3),
        ],
    );
    assert_eq!(report.added_rules, [Arc::<str>::from("new")]);
    assert_eq!(report.kept_rules, [keys("first", 2), keys("second", 1)]);
    let out = feed(&e, &[a(4)]);
    assert_eq!(
        rules_of(&out),
        [
            ("new", "detection", 1),
            ("second", "detection", 4),
            ("first", "detection", 3),
        ]
    );
    assert_eq!(out[2].detail().uri_path.as_deref(), Some("/api/show"));
}

#[test]
fn a_flagged_sliding_key_keeps_its_episode_across_rebuild() {
    let e = engine(&[sliding("s", 2)]);
    assert_eq!(kinds(&feed(&e, &[a(0), a(10)])), [("detection", 2)]);
    let (e, report) = rebuild(&e, &[sliding("s", 2)]);
    assert_eq!(report.kept_rules, [keys("s", 1)]);
    assert!(feed(&e, &[a(20)]).is_empty());
    let mut out = Vec::new();
    e.tick(at(T0 + 900, 0), &mut out);
    assert_eq!(kinds(&out), [("window_summary", 3)]);
}

#[test]
fn a_dropped_flagged_key_gives_its_summary_in_the_report() {
    let e = engine(&[counting("c", 1), sliding("s", 1)]);
    feed(&e, &[a(1), a(2)]);
    let (next, report) = rebuild(&e, &[]);
    assert_eq!(report.removed_rules, [keys("c", 1), keys("s", 1)]);
    // Sorted by window start: the sliding summary starts 14 sub-buckets earlier.
    assert_eq!(
        rules_of(&report.summaries),
        [("s", "window_summary", 2), ("c", "window_summary", 2)]
    );
    assert_eq!(next.tracked_keys(), 0);
}

#[test]
fn a_new_ipv6_prefix_drops_ipv6_keys_and_keeps_ipv4_ones() {
    let e = engine(&[per_src("p", 3)]);
    feed(
        &e,
        &[
            req("2001:db8:1:2::1", "/a", secs(1), 1),
            req("2001:db8:1:2::2", "/a", secs(1), 2),
            req("10.0.0.1", "/a", secs(1), 3),
            req("10.0.0.1", "/a", secs(1), 4),
        ],
    );
    let options = EngineOptions {
        ipv6_prefix: 128,
        ..EngineOptions::default()
    };
    let (e, report) = rebuild_with(&e, &[per_src("p", 3)], options);
    assert!(report.ipv6_prefix_changed);
    assert_eq!((report.ipv6_keys_dropped, report.keys_kept), (1, 1));
    let out = feed(
        &e,
        &[
            req("2001:db8:1:2::1", "/a", secs(1), 5),
            req("10.0.0.1", "/a", secs(1), 6),
        ],
    );
    assert_eq!(rules_of(&out), [("p", "detection", 3)]);
    assert_eq!(out[0].detail().src, "10.0.0.1");
}

#[test]
fn keys_of_newly_allowlisted_sources_are_dropped_with_their_summary() {
    let e = engine(&[per_src("p", 1)]);
    feed(&e, &[a(1), req("10.0.0.2", "/a", secs(1), 2)]);
    let options = EngineOptions {
        allowlist: vec!["10.0.0.1/32".parse().unwrap()],
        ..EngineOptions::default()
    };
    let (e, report) = rebuild_with(&e, &[per_src("p", 1)], options);
    assert_eq!((report.allowlisted_keys_dropped, report.keys_kept), (1, 1));
    assert_eq!(report.kept_rules, [keys("p", 1)]);
    assert_eq!(report.summaries.len(), 1);
    assert_eq!(report.summaries[0].detail().src, "10.0.0.1");
    assert!(feed(&e, &[a(3)]).is_empty());
}

#[test]
fn a_lower_cap_evicts_on_rebuild_and_eviction_totals_carry_over() {
    let capped = |n| EngineOptions {
        max_tracked_keys: n,
        ..EngineOptions::default()
    };
    let e = engine_with(&[per_src("p", 5)], capped(3));
    for i in 0..4 {
        feed(&e, &[req(&format!("10.0.0.{i}"), "/a", secs(1), i)]);
    }
    assert_eq!(e.evictions(), 1);
    let (next, report) = rebuild_with(&e, &[per_src("p", 5)], capped(2));
    assert_eq!((report.keys_evicted, report.keys_kept), (1, 2));
    assert_eq!((next.tracked_keys(), next.evictions()), (2, 2));
    assert_eq!(report.kept_rules, [keys("p", 2)]);
}

#[test]
fn unusable_options_fail_the_rebuild() {
    let e = engine(&[per_src("p", 5)]);
    let options = EngineOptions {
        ipv6_prefix: 129,
        ..EngineOptions::default()
    };
    let err = e.rebuild(build_rules(&[per_src("p", 5)]).unwrap(), options);
    assert_eq!(
        err.unwrap_err(),
        crate::detect::EngineError::Ipv6Prefix(129)
    );
}

#[test]
fn same_rules_only_when_every_rule_keeps_its_counting_and_its_index() {
    let e = engine(&[counting("a", 3), sliding("b", 5)]);
    let (same, _) = rebuild(&e, &[counting("a", 3), sliding("b", 5)]);
    assert!(e.same_rules(&same));
    let (swapped, _) = rebuild(&e, &[sliding("b", 5), counting("a", 3)]);
    assert!(!e.same_rules(&swapped));
    let (changed, _) = rebuild(&e, &[counting("a", 4), sliding("b", 5)]);
    assert!(!e.same_rules(&changed));
    let (fewer, _) = rebuild(&e, &[counting("a", 3)]);
    assert!(!e.same_rules(&fewer));
}
