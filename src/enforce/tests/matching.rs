//! The hot path: what a ban matches, and `blocked` event rate limiting.

use std::time::Duration;

use super::*;

#[test]
fn empty_table_matches_nothing() {
    let bans = table();
    assert_eq!(bans.check(ip("192.0.2.7"), t0()), None);
    assert!(bans.is_empty());
}

#[test]
fn hit_carries_rule_display_and_end() {
    let bans = table();
    ban(&bans, "192.0.2.7", t0());
    let hit = bans.check(ip("192.0.2.7"), t0() + mins(1)).unwrap();
    assert_eq!(
        (&*hit.rule, &*hit.display, hit.src, hit.until),
        (
            "model_exfiltration",
            "192.0.2.7",
            net("192.0.2.7/32"),
            t0() + mins(15)
        )
    );
    assert_eq!(bans.check(ip("192.0.2.8"), t0() + mins(1)), None);
}

#[test]
fn two_addresses_of_one_ipv6_64_share_a_ban_and_another_64_does_not() {
    let bans = table();
    let b = ban(&bans, "2001:db8:1:2::a", t0());
    assert_eq!(b.src_display(), "2001:db8:1:2::/64");
    let hit = bans.check(ip("2001:db8:1:2:ffff::1"), t0()).unwrap();
    assert_eq!(&*hit.display, "2001:db8:1:2::/64");
    assert_eq!(bans.check(ip("2001:db8:1:3::a"), t0()), None);
    let again = bans.ban_offender(ip("2001:db8:1:2::b"), "r", "x".into(), t0());
    assert_eq!(again, BanOutcome::AlreadyBanned(b));
}

#[test]
fn ipv6_prefix_128_bans_the_single_address() {
    let bans = Bans::new(policy(), Vec::new(), 128);
    let b = ban(&bans, "2001:db8::1", t0());
    assert_eq!(b.src_display(), "2001:db8::1");
    assert!(bans.check(ip("2001:db8::1"), t0()).is_some());
    assert_eq!(bans.check(ip("2001:db8::2"), t0()), None);
}

#[test]
fn group_bans_keep_matching_after_ipv6_prefix_reload() {
    let bans = table();
    ban(&bans, "2001:db8:1:2::a", t0());
    bans.set_ipv6_prefix(48);
    assert!(bans.check(ip("2001:db8:1:2::ff"), t0()).is_some());
    assert_eq!(bans.check(ip("2001:db8:1:3::1"), t0()), None);
    let wider = ban(&bans, "2001:db8:2:5::1", t0());
    assert_eq!(wider.src_display(), "2001:db8:2::/48");
    assert!(bans.check(ip("2001:db8:2:9::9"), t0()).is_some());
}

#[test]
fn admin_cidr_ban_matches_addresses_inside_it() {
    let bans = table();
    let hour = Duration::from_secs(3600);
    bans.add_manual(net("203.0.113.0/24"), hour, "x".into(), false, t0())
        .unwrap();
    bans.add_manual(net("2001:db8:aa::/48"), hour, "x".into(), false, t0())
        .unwrap();
    let hit = bans.check(ip("203.0.113.77"), t0()).unwrap();
    assert_eq!((&*hit.rule, &*hit.display), ("admin", "203.0.113.0/24"));
    assert_eq!(bans.check(ip("203.0.114.1"), t0()), None);
    assert!(bans.check(ip("2001:db8:aa:1::5"), t0()).is_some());
    assert_eq!(bans.check(ip("2001:db8:ab::5"), t0()), None);
}

/// An operator's ban is announced (its `ban` line written) before the request path can see
/// it: no request is refused by a ban whose line is not written yet.
#[test]
fn an_admin_ban_is_announced_before_a_request_can_see_it() {
    let bans = table();
    let hour = Duration::from_secs(3600);
    let mut seen = None;
    let ban = bans
        .add_manual_announced(net("203.0.113.0/24"), hour, "x".into(), false, t0(), |b| {
            seen = Some((
                b.src_display(),
                bans.check(ip("203.0.113.77"), t0()).is_some(),
            ));
        })
        .unwrap();
    assert_eq!(seen, Some(("203.0.113.0/24".to_owned(), false)));
    assert_eq!(ban.src_display(), "203.0.113.0/24");
    assert!(bans.check(ip("203.0.113.77"), t0()).is_some());
}

#[test]
fn ipv4_mapped_client_is_the_ipv4_source() {
    let bans = table();
    let b = ban(&bans, "::ffff:192.0.2.7", t0());
    assert_eq!(b.src_display(), "192.0.2.7");
    assert!(bans.check(ip("192.0.2.7"), t0()).is_some());
    assert!(bans.check(ip("::ffff:192.0.2.7"), t0()).is_some());
}

#[test]
fn ended_but_unswept_ban_no_longer_matches() {
    let bans = table();
    ban(&bans, "192.0.2.7", t0());
    let end = t0() + mins(15);
    assert!(bans
        .check(ip("192.0.2.7"), end - TimeDelta::milliseconds(1))
        .is_some());
    assert_eq!(bans.check(ip("192.0.2.7"), end), None);
    assert_eq!(bans.len(), 1);
}

#[test]
fn ended_ban_is_replaced_by_a_new_offence_before_the_sweep() {
    let bans = table();
    ban(&bans, "192.0.2.7", t0());
    let next = ban(&bans, "192.0.2.7", t0() + mins(20));
    assert_eq!((next.offence, next.until), (2, t0() + mins(50)));
    assert_eq!(bans.len(), 1);
}

#[test]
fn blocked_events_are_logged_once_per_minute_with_the_suppressed_count() {
    let bans = table();
    ban(&bans, "192.0.2.7", t0());
    let src = ip("192.0.2.7");
    let sec = TimeDelta::seconds;
    assert_eq!(bans.note_blocked(src, t0() + sec(1)), Some(0));
    for s in [2, 10, 60] {
        assert_eq!(bans.note_blocked(src, t0() + sec(s)), None, "at {s}s");
    }
    assert_eq!(bans.note_blocked(src, t0() + sec(61)), Some(3));
    assert_eq!(bans.note_blocked(src, t0() + sec(62)), None);
}

#[test]
fn blocked_counter_is_per_ban_so_a_cidr_costs_one_entry() {
    let bans = table();
    bans.add_manual(
        net("203.0.113.0/24"),
        Duration::from_secs(3600),
        "x".into(),
        false,
        t0(),
    )
    .unwrap();
    assert_eq!(bans.note_blocked(ip("203.0.113.1"), t0()), Some(0));
    assert_eq!(bans.note_blocked(ip("203.0.113.2"), t0()), None);
    assert_eq!(bans.blocked_counters(), 1);
}

#[test]
fn unbanned_source_is_not_counted_as_blocked() {
    let bans = table();
    assert_eq!(bans.note_blocked(ip("192.0.2.7"), t0()), None);
    assert_eq!(bans.blocked_counters(), 0);
}

#[test]
fn blocked_counters_are_dropped_with_their_ban() {
    let bans = table();
    ban(&bans, "192.0.2.7", t0());
    bans.note_blocked(ip("192.0.2.7"), t0());
    assert_eq!(bans.blocked_counters(), 1);
    bans.expire(t0() + mins(15));
    assert_eq!(bans.blocked_counters(), 0);
}

#[test]
fn a_ban_carries_its_source_s_latest_hundred_offences_to_the_cluster() {
    let bans = table();
    let hour = Duration::from_secs(3600);
    let src = net("192.0.2.77/32");
    let at = |i: i64| t0() + chrono::TimeDelta::seconds(i);
    for i in 0..150 {
        bans.add_manual(src, hour, "again".into(), false, at(i))
            .unwrap();
    }
    let shared = bans.offences_of(&src);
    assert_eq!(shared.len(), crate::enforce::remote::MAX_SHARED_OFFENCES);
    assert_eq!(shared.first(), Some(&at(50)));
    assert_eq!(shared.last(), Some(&at(149)));
    // Fewer than the cap go whole.
    let other = net("192.0.2.78/32");
    bans.add_manual(other, hour, "once".into(), false, at(0))
        .unwrap();
    assert_eq!(bans.offences_of(&other), [at(0)]);
}
