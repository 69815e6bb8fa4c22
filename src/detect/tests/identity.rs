//! Identities: rules grouped by `identity` / `identity_path`, identity in events, and the
//! `status` filter (requests refused by `[auth]` count only where their status is listed).

use std::sync::Arc;

use super::*;
use crate::detect::identity::MAX_IDENTITIES;

/// `rec` as sent with the API key named `name`.
fn keyed(name: &str, rec: RequestRecord) -> RequestRecord {
    RequestRecord {
        identity: Some(Arc::from(name)),
        ..rec
    }
}

/// A request the `[auth]` layer refused with `status` (never forwarded).
fn refused(src: &str, path: &str, status: u16, offset_s: i64) -> RequestRecord {
    RequestRecord {
        status,
        outcome: Outcome::Unauthorized,
        ..req(src, path, Duration::from_millis(1), offset_s)
    }
}

fn grouped(name: &str, by: &str, threshold: i64) -> RuleConfig {
    rule(name, |r| {
        r.group_by = by.into();
        r.threshold = threshold;
    })
}

/// `(rule, kind, count, src, identity, by_identity, uri_path)` of each event.
type Row = (
    String,
    &'static str,
    u64,
    String,
    Option<String>,
    bool,
    Option<String>,
);

fn rows(events: &[Event]) -> Vec<Row> {
    events
        .iter()
        .map(|e| {
            let d = e.detail();
            (
                d.rule.to_string(),
                e.kind(),
                d.count,
                d.src.clone(),
                d.identity.as_deref().map(str::to_owned),
                d.by_identity,
                d.uri_path.clone(),
            )
        })
        .collect()
}

fn row(
    rule: &str,
    kind: &'static str,
    count: u64,
    src: &str,
    identity: Option<&str>,
    by_identity: bool,
    path: Option<&str>,
) -> Row {
    (
        rule.to_owned(),
        kind,
        count,
        src.to_owned(),
        identity.map(str::to_owned),
        by_identity,
        path.map(str::to_owned),
    )
}

#[test]
fn two_identities_behind_one_address_are_counted_apart_and_together_by_address() {
    let e = engine(&[
        grouped("per_key", "identity", 3),
        grouped("per_addr", "src", 3),
    ]);
    let a = |t| keyed("alice", req("10.0.0.1", "/api/chat", secs(1), t));
    let b = |t| keyed("bob", req("10.0.0.1", "/api/tags", secs(1), t));
    let mut out = Vec::new();
    let mut step = |rec: RequestRecord| {
        let before = out.len();
        e.observe(&rec, &mut out);
        rows(&out[before..])
    };
    assert_eq!(step(a(1)), []);
    assert_eq!(step(b(2)), []);
    // The third request of the address, alice's second: the address crosses, naming the
    // identity of the request that crossed; neither identity has reached 3.
    assert_eq!(
        step(a(3)),
        [row(
            "per_addr",
            "detection",
            3,
            "10.0.0.1",
            Some("alice"),
            false,
            None
        )]
    );
    assert_eq!(step(b(4)), []);
    assert_eq!(
        step(a(5)),
        [row(
            "per_key",
            "detection",
            3,
            "10.0.0.1",
            Some("alice"),
            true,
            None
        )]
    );
    assert_eq!(
        step(b(6)),
        [row(
            "per_key",
            "detection",
            3,
            "10.0.0.1",
            Some("bob"),
            true,
            None
        )]
    );
    assert_eq!(e.tracked_keys(), 3, "alice, bob, and the address");
    let mut closed = Vec::new();
    e.tick(at(T0 + 900, 0), &mut closed);
    assert_eq!(
        rows(&closed),
        [
            // Sorted by src, then identity: the address key names no identity.
            row(
                "per_addr",
                "window_summary",
                6,
                "10.0.0.1",
                None,
                false,
                None
            ),
            row(
                "per_key",
                "window_summary",
                3,
                "10.0.0.1",
                Some("alice"),
                true,
                None
            ),
            row(
                "per_key",
                "window_summary",
                3,
                "10.0.0.1",
                Some("bob"),
                true,
                None
            ),
        ]
    );
    assert_eq!((e.tracked_keys(), e.last_src.len()), (0, 0));
}

#[test]
fn requests_without_identity_count_by_source_under_an_identity_rule() {
    let e = engine(&[grouped("per_key", "identity", 2)]);
    let anon = |t| req("10.0.0.2", "/api/tags", secs(1), t);
    assert!(feed(&e, &[anon(1)]).is_empty());
    // Carol calls from the same address with her key: her own counter, not the address's.
    assert!(feed(&e, &[keyed("carol", anon(2))]).is_empty());
    assert_eq!(
        rows(&feed(&e, &[anon(3)])),
        [row(
            "per_key",
            "detection",
            2,
            "10.0.0.2",
            None,
            false,
            None
        )]
    );
    assert_eq!(
        rows(&feed(
            &e,
            &[keyed("carol", req("10.0.0.3", "/x", secs(1), 4))]
        )),
        [row(
            "per_key",
            "detection",
            2,
            "10.0.0.3",
            Some("carol"),
            true,
            None
        )]
    );
}

#[test]
fn identity_path_keys_count_per_identity_and_path_wherever_it_calls_from() {
    let e = engine(&[grouped("per_key_path", "identity_path", 2)]);
    let out = feed(
        &e,
        &[
            keyed("alice", req("10.0.0.1", "/api/tags", secs(1), 1)),
            keyed("alice", req("10.0.0.2", "/api/show", secs(1), 2)),
            keyed("alice", req("10.0.0.3", "/api/tags", secs(1), 3)),
            req("10.0.0.4", "/api/tags", secs(1), 4),
            req("10.0.0.4", "/api/tags", secs(1), 5),
        ],
    );
    assert_eq!(
        rows(&out),
        [
            row(
                "per_key_path",
                "detection",
                2,
                "10.0.0.3",
                Some("alice"),
                true,
                Some("/api/tags")
            ),
            row(
                "per_key_path",
                "detection",
                2,
                "10.0.0.4",
                None,
                false,
                Some("/api/tags")
            ),
        ]
    );
    assert_eq!((e.tracked_keys(), e.tracked_paths()), (3, 2));
}

#[test]
fn an_identity_keys_summary_names_the_last_address_counted() {
    let e = engine(&[
        grouped("tumbling", "identity", 1),
        rule("sliding", |r| {
            r.group_by = "identity".into();
            r.window_kind = "sliding".into();
            r.window = "1m".into();
            r.threshold = 2;
        }),
    ]);
    let out = feed(
        &e,
        &[
            keyed("alice", req("10.0.0.1", "/a", secs(1), 1)),
            keyed("alice", req("2001:db8:0:1::5", "/a", secs(3), 5)),
        ],
    );
    assert_eq!(
        rows(&out),
        [
            row(
                "tumbling",
                "detection",
                1,
                "10.0.0.1",
                Some("alice"),
                true,
                None
            ),
            row(
                "sliding",
                "detection",
                2,
                "2001:db8:0:1::/64",
                Some("alice"),
                true,
                None
            ),
        ]
    );
    assert_eq!(e.last_src.len(), 2);
    let mut closed = Vec::new();
    e.tick(at(T0 + 900, 0), &mut closed);
    assert_eq!(
        rows(&closed),
        [
            row(
                "sliding",
                "window_summary",
                2,
                "2001:db8:0:1::/64",
                Some("alice"),
                true,
                None
            ),
            row(
                "tumbling",
                "window_summary",
                2,
                "2001:db8:0:1::/64",
                Some("alice"),
                true,
                None
            ),
        ]
    );
    assert_eq!((closed[1].detail().avg_response_time), 2.0);
    assert_eq!((e.tracked_keys(), e.last_src.len()), (0, 0));
}

#[test]
fn identity_keys_are_evicted_with_their_last_address() {
    let options = EngineOptions {
        max_tracked_keys: 2,
        ..EngineOptions::default()
    };
    let e = engine_with(&[grouped("pairs", "identity", 2)], options);
    for (i, name) in ["k1", "k2", "k3"].into_iter().enumerate() {
        let t = i64::try_from(i).unwrap();
        feed(&e, &[keyed(name, req("10.0.0.1", "/a", secs(1), t))]);
    }
    assert_eq!(
        (e.tracked_keys(), e.evictions(), e.last_src.len()),
        (2, 1, 2)
    );
    // k1 went (the oldest): it starts again from zero; k3 is kept.
    assert!(feed(&e, &[keyed("k1", req("10.0.0.1", "/a", secs(1), 10))]).is_empty());
    assert_eq!(
        rows(&feed(
            &e,
            &[keyed("k3", req("10.0.0.9", "/a", secs(1), 11))]
        )),
        [row(
            "pairs",
            "detection",
            2,
            "10.0.0.9",
            Some("k3"),
            true,
            None
        )]
    );
    assert_eq!(e.last_src.len(), e.tracked_keys());
}

#[test]
fn identities_beyond_the_table_count_by_source() {
    let e = engine(&[grouped("per_key", "identity", 1)]);
    for i in 0..MAX_IDENTITIES {
        assert!(e.identities.intern(&Arc::from(format!("k{i}"))).is_some());
    }
    let out = feed(&e, &[keyed("late", req("10.0.0.5", "/a", secs(1), 1))]);
    assert_eq!(
        rows(&out),
        [row(
            "per_key",
            "detection",
            1,
            "10.0.0.5",
            Some("late"),
            false,
            None
        )]
    );
    assert_eq!(e.identities_overflowed(), 1);
    let out = feed(&e, &[keyed("k0", req("10.0.0.5", "/a", secs(1), 2))]);
    assert_eq!(
        rows(&out),
        [row(
            "per_key",
            "detection",
            1,
            "10.0.0.5",
            Some("k0"),
            true,
            None
        )]
    );
}

#[test]
fn a_status_list_admits_only_its_statuses_and_refusals_by_auth_only_there() {
    let e2 = engine(&[
        rule("unauthorized", |r| {
            r.group_by = "src".into();
            r.status = vec![401];
        }),
        grouped("any", "src", 1),
        rule("not_found", |r| {
            r.group_by = "src".into();
            r.status = vec![404];
        }),
    ]);
    let names = |events: &[Event]| -> Vec<String> {
        events.iter().map(|e| e.detail().rule.to_string()).collect()
    };
    // A 401 from the auth layer: only the rule that lists 401.
    assert_eq!(
        names(&feed(&e2, &[refused("10.0.0.1", "/api/tags", 401, 1)])),
        ["unauthorized"]
    );
    // A 403 from the auth layer: no rule lists it, none counts it.
    assert!(feed(&e2, &[refused("10.0.0.2", "/api/tags", 403, 2)]).is_empty());
    // A forwarded 404: the rule without a list and the one listing 404.
    let not_found = RequestRecord {
        status: 404,
        ..req("10.0.0.3", "/api/show", secs(1), 3)
    };
    assert_eq!(names(&feed(&e2, &[not_found])), ["any", "not_found"]);
    // A forwarded 200: only the rule without a list.
    assert_eq!(
        names(&feed(&e2, &[req("10.0.0.4", "/api/show", secs(1), 4)])),
        ["any"]
    );
    assert_eq!(e2.tracked_keys(), 4);
}

#[test]
fn an_in_flight_detection_of_an_identity_key_names_the_identity_and_its_address() {
    let e = engine(&[rule("slow_key", |r| {
        r.group_by = "identity".into();
        r.min_latency = "55s".into();
    })]);
    let start = |src: &str| keyed("alice", req(src, "/api/pull", Duration::ZERO, 0));
    let mut out = Vec::new();
    let mut reported = 0;
    e.in_flight(
        &start("10.0.0.7"),
        secs(60),
        at(T0 + 70, 0),
        &mut reported,
        &mut 0,
        &mut out,
    );
    assert_eq!(
        rows(&out),
        [row(
            "slow_key",
            "detection",
            1,
            "10.0.0.7",
            Some("alice"),
            true,
            None
        )]
    );
    assert!(out[0].detail().in_flight);
    // The same key running from elsewhere: the identity's window is already flagged.
    let mut again = Vec::new();
    e.in_flight(
        &start("10.0.0.8"),
        secs(60),
        at(T0 + 80, 0),
        &mut 0,
        &mut 0,
        &mut again,
    );
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn a_reload_resets_a_rule_whose_grouping_changed_and_keeps_an_unchanged_one() {
    let e = engine(&[
        grouped("regrouped", "identity", 3),
        grouped("same", "identity", 3),
    ]);
    let a = |src: &str, t| keyed("alice", req(src, "/a", secs(1), t));
    assert!(feed(&e, &[a("10.0.0.1", 1), a("10.0.0.2", 2)]).is_empty());
    let rules = [
        grouped("regrouped", "src", 3),
        grouped("same", "identity", 3),
    ];
    let (e, report) = e
        .rebuild(build_rules(&rules).unwrap(), EngineOptions::default())
        .unwrap();
    let names = |v: &[crate::detect::RuleKeys]| -> Vec<(String, usize)> {
        v.iter().map(|k| (k.name.to_string(), k.keys)).collect()
    };
    assert_eq!(names(&report.kept_rules), [("same".to_owned(), 1)]);
    assert_eq!(names(&report.reset_rules), [("regrouped".to_owned(), 1)]);
    assert_eq!(
        rows(&feed(&e, &[a("10.0.0.2", 3)])),
        [row(
            "same",
            "detection",
            3,
            "10.0.0.2",
            Some("alice"),
            true,
            None
        )]
    );
    // The regrouped rule counts by address from zero: 10.0.0.2 has one request there.
    assert!(feed(&e, &[a("10.0.0.2", 4)]).is_empty());
    assert_eq!(
        rows(&feed(&e, &[a("10.0.0.2", 5)])),
        [row(
            "regrouped",
            "detection",
            3,
            "10.0.0.2",
            Some("alice"),
            false,
            None
        )]
    );
    // The kept key's last address came along: its summary names it.
    let mut closed = Vec::new();
    e.tick(at(T0 + 900, 0), &mut closed);
    assert_eq!(
        rows(&closed),
        [
            row(
                "regrouped",
                "window_summary",
                3,
                "10.0.0.2",
                None,
                false,
                None
            ),
            row(
                "same",
                "window_summary",
                5,
                "10.0.0.2",
                Some("alice"),
                true,
                None
            ),
        ]
    );
}

#[test]
fn a_late_record_is_not_the_last_address_of_an_identity_key() {
    let e = engine(&[grouped("per_key", "identity", 1)]);
    let out = feed(
        &e,
        &[
            keyed("alice", req("10.0.0.1", "/a", secs(1), 901)),
            // Completed in the previous window, arriving after the key moved on: not counted.
            keyed("alice", req("10.0.0.2", "/a", secs(1), 5)),
        ],
    );
    assert_eq!(
        rows(&out),
        [row(
            "per_key",
            "detection",
            1,
            "10.0.0.1",
            Some("alice"),
            true,
            None
        )]
    );
    assert_eq!(e.late_records(), 1);
    let mut closed = Vec::new();
    e.tick(at(T0 + 1_800, 0), &mut closed);
    assert_eq!(
        rows(&closed),
        [row(
            "per_key",
            "window_summary",
            1,
            "10.0.0.1",
            Some("alice"),
            true,
            None
        )]
    );
}
