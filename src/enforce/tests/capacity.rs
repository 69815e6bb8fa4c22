//! The cap on the table, and what one change costs the hot path's publisher.

use std::sync::Arc;

use super::*;
use crate::enforce::cap::MAX_OFFENDERS;
use crate::enforce::snapshot::SHARDS;
use crate::enforce::{State, MAX_BANS};

/// A table holding `n` rule bans of IPv4 addresses from 100.64.0.0, until t0 + 1h.
fn filled(n: usize) -> Bans {
    let bans = table();
    let rule: Arc<str> = Arc::from("r");
    let base = u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0));
    let mut state = State::empty(t0());
    state.bans = (0..u32::try_from(n).unwrap())
        .map(|i| Ban {
            src: IpNet::from(IpAddr::from(std::net::Ipv4Addr::from(base + i))),
            until: t0() + mins(60),
            reason: "x".into(),
            offence: 1,
            rule: Arc::clone(&rule),
            since: t0(),
        })
        .collect();
    assert_eq!(bans.restore(state, t0()).len(), n);
    bans
}

/// A full table with the cap lowered to `n`, so a test need not hold 100 000 bans.
fn capped(n: usize) -> Bans {
    let bans = filled(n);
    bans.lock().max_bans = n;
    bans
}

#[test]
fn the_cap_is_one_hundred_thousand_bans() {
    assert_eq!((MAX_BANS, table().lock().max_bans), (100_000, 100_000));
}

#[test]
fn full_table_refuses_an_ipv4_rule_ban_and_records_no_offence() {
    let bans = filled(MAX_BANS);
    let outcome = bans.ban_offender(ip("192.0.2.7"), "r", "x".into(), t0());
    assert_eq!(outcome, BanOutcome::TableFull);
    assert_eq!(bans.len(), MAX_BANS);
    assert_eq!(bans.check(ip("192.0.2.7"), t0()), None);
    assert!(!bans.lock().offences.contains_key(&net("192.0.2.7/32")));
}

#[test]
fn full_table_widens_an_ipv6_rule_ban_to_its_48() {
    let bans = capped(10);
    let b = ban(&bans, "2001:db8:1:2::a", t0());
    assert_eq!(
        (b.src, b.reason.as_str(), b.offence, b.until),
        (
            net("2001:db8:1::/48"),
            "test (ban table full: widened to 2001:db8:1::/48)",
            1,
            t0() + mins(15)
        )
    );
    assert_eq!(bans.len(), 11);
    let hit = bans.check(ip("2001:db8:1:ffff::1"), t0()).unwrap();
    assert_eq!(&*hit.display, "2001:db8:1::/48");
    let again = bans.ban_offender(ip("2001:db8:1:9::9"), "r", "x".into(), t0());
    assert_eq!(again, BanOutcome::AlreadyBanned(b));
}

/// A translated IPv4 client is one address of its NAT64 prefix: a full table refuses its ban,
/// as an IPv4 address's, instead of banning the translator's every client with a /48.
#[test]
fn full_table_never_widens_a_nat64_source() {
    let bans = capped(10);
    let outcome = bans.ban_offender(ip("64:ff9b::198.51.100.7"), "r", "x".into(), t0());
    assert_eq!((outcome, bans.len()), (BanOutcome::TableFull, 10));
    assert_eq!(bans.check(ip("64:ff9b::203.0.113.9"), t0()), None);
}

/// A `manage_from` network as wide as a source group spares nothing, also when a full table
/// widens the ban past it (a helper's run: an office /64 in `manage_from`, the table filled,
/// and the flooder inside it was never refused); a narrower one spares its addresses only.
#[test]
fn a_widened_ban_spares_only_a_manage_from_network_narrower_than_a_group() {
    let bans = capped(10);
    bans.set_spared(vec![net("2001:db8:1:2::/64"), net("2001:db8:1:3::10/128")]);
    ban(&bans, "2001:db8:1:2::a", t0());
    for refused in ["2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:3::11"] {
        assert!(bans.check(ip(refused), t0()).is_some(), "{refused}");
    }
    assert_eq!(bans.check(ip("2001:db8:1:3::10"), t0()), None);
    // The group width is the live one: with /128 groups nothing is narrower.
    bans.set_ipv6_prefix(128);
    assert!(bans.check(ip("2001:db8:1:3::10"), t0()).is_some());
    bans.set_ipv6_prefix(64);
    assert_eq!(bans.check(ip("2001:db8:1:3::10"), t0()), None);
}

#[test]
fn full_table_refuses_an_ipv6_source_whose_48_overlaps_the_allowlist() {
    let bans = capped(10);
    assert_eq!(bans.set_allowlist(vec![net("2001:db8:1:5::/64")]), vec![]);
    let outcome = bans.ban_offender(ip("2001:db8:1:2::a"), "r", "x".into(), t0());
    assert_eq!((outcome, bans.len()), (BanOutcome::TableFull, 10));
}

#[test]
fn widened_bans_stop_at_a_tenth_of_the_cap() {
    let bans = capped(20);
    let first = ban(&bans, "2001:db8:1:2::a", t0());
    let second = ban(&bans, "2001:db8:2:2::a", t0());
    assert_eq!(
        (first.src, second.src),
        (net("2001:db8:1::/48"), net("2001:db8:2::/48"))
    );
    let third = bans.ban_offender(ip("2001:db8:3:2::a"), "r", "x".into(), t0());
    assert_eq!((third, bans.len()), (BanOutcome::TableFull, 22));
}

#[test]
fn full_table_still_replaces_an_ended_ban_of_the_same_source() {
    let bans = capped(2);
    let next = ban(&bans, "100.64.0.1", t0() + mins(60));
    assert_eq!((next.offence, next.until), (2, t0() + mins(90)));
    assert_eq!(bans.len(), 2);
}

#[test]
fn a_change_copies_one_shard_and_leaves_the_previous_generation_intact() {
    let bans = filled(1000);
    let before = bans.published();
    ban(&bans, "192.0.2.7", t0());
    let after = bans.published();
    let shared = (before.shards.iter().zip(&after.shards))
        .filter(|(a, b)| Arc::ptr_eq(a, b))
        .count();
    assert_eq!((after.shards.len(), shared), (SHARDS, SHARDS - 1));
    assert_eq!(before.lookup(ip("192.0.2.7"), t0()), None);
    assert_eq!(
        after.lookup(ip("192.0.2.7"), t0()).map(|h| h.src),
        Some(net("192.0.2.7/32"))
    );
}

#[test]
fn most_specific_active_ban_answers_and_an_ended_one_falls_through() {
    let bans = table();
    ban(&bans, "2001:db8:1:2::a", t0());
    let hour = std::time::Duration::from_secs(3600);
    bans.add_manual(net("2001:db8:1::/48"), hour, "x".into(), false, t0())
        .unwrap();
    let src = |at| bans.check(ip("2001:db8:1:2::b"), at).map(|h| h.src);
    assert_eq!(src(t0()), Some(net("2001:db8:1:2::/64")));
    assert_eq!(src(t0() + mins(15)), Some(net("2001:db8:1::/48")));
}

/// Lowers the cap on offence histories to `n`, so a test need not hold 200 000 of them.
fn cap_offenders(bans: &Bans, n: usize) {
    let mut inner = bans.lock();
    inner.max_offenders = n;
    inner.offences_limit = n;
}

#[test]
fn the_cap_on_offence_histories_is_twice_the_ban_cap() {
    assert_eq!(
        (MAX_OFFENDERS, table().lock().max_offenders),
        (200_000, 200_000)
    );
}

/// Short bans leave their offence histories behind for the ban memory (7 days): a source
/// rotating addresses must not grow them without bound. Past the cap the histories whose
/// last offence is oldest go, a tenth of the cap at a time; a source banned now keeps its
/// history, and so does a recent offender (its next ban still escalates).
#[test]
fn offence_histories_are_capped_forgetting_the_oldest_never_a_banned_source() {
    let bans = table();
    cap_offenders(&bans, 10);
    // 10.0.0.0 offends first and is banned again and again (its ban never ends first);
    // 10.0.0.1 ..= 10.0.0.9 offend an hour apart, each ban ended before the next.
    let hour = |h: i64| t0() + TimeDelta::hours(h);
    bans.add_manual(
        net("10.0.0.0/32"),
        Duration::from_secs(30 * 24 * 3600),
        "held".into(),
        false,
        t0(),
    )
    .unwrap();
    for i in 1..=9 {
        bans.expire(hour(i));
        ban(&bans, &format!("10.0.0.{i}"), hour(i));
    }
    assert_eq!(bans.lock().offences.len(), 10);
    // The eleventh source: the histories are full, so the oldest of the unbanned go until
    // a tenth of the cap is free: 10.0.0.1 and 10.0.0.2 (then 8, and the new one makes 9).
    bans.expire(hour(10));
    ban(&bans, "10.0.0.10", hour(10));
    let kept: std::collections::BTreeSet<String> =
        bans.lock().offences.keys().map(|k| k.to_string()).collect();
    let expected: std::collections::BTreeSet<String> = [0, 3, 4, 5, 6, 7, 8, 9, 10]
        .iter()
        .map(|i| format!("10.0.0.{i}/32"))
        .collect();
    assert_eq!(kept, expected);
    // A kept history still escalates; a forgotten one starts again at offence 1.
    bans.expire(hour(11));
    assert_eq!(ban(&bans, "10.0.0.9", hour(11)).offence, 2);
    assert_eq!(ban(&bans, "10.0.0.1", hour(11)).offence, 1);
    assert_eq!(bans.lock().offences.len(), 10);
}

/// Histories of banned sources fill the cap (in a cluster, other replicas' bans are not
/// capped): nothing can be forgotten, and the next scan of the table waits until a tenth of
/// the cap has been added instead of coming with every new offender.
#[test]
fn when_banned_sources_fill_the_histories_a_trim_waits_for_a_tenth_of_the_cap() {
    let bans = table();
    cap_offenders(&bans, 20);
    for i in 0..20 {
        ban(&bans, &format!("10.0.0.{i}"), t0());
    }
    ban(&bans, "10.0.1.0", t0());
    // The trim found nothing to forget: the limit moved to 20 + a tenth of the cap.
    let sizes = |bans: &Bans| {
        let inner = bans.lock();
        (inner.offences.len(), inner.offences_limit)
    };
    assert_eq!(sizes(&bans), (21, 22));
    ban(&bans, "10.0.1.1", t0());
    assert_eq!(sizes(&bans), (22, 22), "no trim below the limit");
}

/// A restored state with more histories than the cap is trimmed once its bans are back, so
/// a banned source keeps its history (and its next ban escalates from it).
#[test]
fn restore_trims_the_histories_keeping_those_of_the_restored_bans() {
    use crate::enforce::persist::OffenceRecord;
    let bans = table();
    cap_offenders(&bans, 10);
    let hours = TimeDelta::hours;
    let mut state = State::empty(t0());
    // 10.0.1.0 offended longest ago of all, three times, and is banned now.
    state.offences.push(OffenceRecord {
        src: net("10.0.1.0/32"),
        times: vec![t0() - hours(40), t0() - hours(30), t0() - hours(20)],
    });
    for i in 1..12 {
        state.offences.push(OffenceRecord {
            src: net(&format!("10.0.1.{i}/32")),
            times: vec![t0() - hours(12 - i)],
        });
    }
    state.bans.push(Ban {
        src: net("10.0.1.0/32"),
        until: t0() + hours(1),
        reason: "x".into(),
        offence: 3,
        rule: Arc::from("r"),
        since: t0() - hours(20),
    });
    assert_eq!(bans.restore(state, t0()).len(), 1);
    let mut kept: Vec<String> = bans.lock().offences.keys().map(|k| k.to_string()).collect();
    kept.sort();
    let mut want: Vec<String> = [0, 5, 6, 7, 8, 9, 10, 11]
        .iter()
        .map(|i| format!("10.0.1.{i}/32"))
        .collect();
    want.sort();
    assert_eq!(kept, want);
    assert_eq!(bans.lock().offences[&net("10.0.1.0/32")].len(), 3);
    bans.expire(t0() + hours(2));
    assert_eq!(ban(&bans, "10.0.1.0", t0() + hours(2)).offence, 4);
}
