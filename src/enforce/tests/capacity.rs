//! The cap on the table, and what one change costs the hot path's publisher.

use std::sync::Arc;

use super::*;
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
