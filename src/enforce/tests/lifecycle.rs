//! Ban lifecycle: escalation, no self-feeding, allowlist, admin bans, unban, expiry.

use std::time::Duration;

use super::*;
use crate::enforce::EnforceError;

#[test]
fn repeat_offences_within_memory_escalate_15m_30m_60m() {
    let bans = table();
    let first = ban(&bans, "192.0.2.7", t0());
    assert_eq!((first.offence, first.until), (1, t0() + mins(15)));
    assert_eq!(bans.expire(t0() + mins(15)), vec![first]);

    let second = ban(&bans, "192.0.2.7", t0() + mins(60));
    assert_eq!((second.offence, second.until), (2, t0() + mins(90)));
    bans.expire(t0() + mins(90));

    let third = ban(&bans, "192.0.2.7", t0() + mins(120));
    assert_eq!((third.offence, third.until), (3, t0() + mins(180)));
}

#[test]
fn offences_older_than_memory_no_longer_escalate() {
    let bans = table();
    ban(&bans, "192.0.2.7", t0());
    bans.expire(t0() + mins(15));
    ban(&bans, "192.0.2.7", t0() + mins(60));
    bans.expire(t0() + mins(90));
    // Exactly 7 days after the second offence: both have left the memory.
    let now = t0() + mins(60) + TimeDelta::days(7);
    let again = ban(&bans, "192.0.2.7", now);
    assert_eq!((again.offence, again.until), (1, now + mins(15)));
}

#[test]
fn escalation_is_capped_at_max() {
    let bans = Bans::new(
        BanPolicy {
            max: Duration::from_secs(45 * 60),
            ..policy()
        },
        Vec::new(),
        64,
    );
    let mut lengths = Vec::new();
    for i in 0..4 {
        let now = t0() + TimeDelta::hours(2 * i);
        let b = ban(&bans, "192.0.2.7", now);
        lengths.push(((b.until - now).num_minutes(), b.offence));
        bans.expire(b.until);
    }
    assert_eq!(lengths, vec![(15, 1), (30, 2), (45, 3), (45, 4)]);
}

#[test]
fn verdict_against_banned_source_neither_extends_nor_counts() {
    let bans = table();
    let first = ban(&bans, "192.0.2.7", t0());
    let again = bans.ban_offender(ip("192.0.2.7"), "other_rule", "late".into(), t0() + mins(5));
    assert_eq!(again, BanOutcome::AlreadyBanned(first.clone()));
    assert_eq!(bans.list(), vec![first]);

    bans.expire(t0() + mins(15));
    let next = ban(&bans, "192.0.2.7", t0() + mins(20));
    assert_eq!(next.offence, 2);
}

#[test]
fn verdict_inside_admin_cidr_ban_is_already_banned() {
    let bans = table();
    let cidr = bans
        .add_manual(
            net("203.0.113.0/24"),
            Duration::from_secs(3600),
            "ops".into(),
            false,
            t0(),
        )
        .unwrap();
    let outcome = bans.ban_offender(ip("203.0.113.9"), "r", "x".into(), t0() + mins(1));
    assert_eq!(outcome, BanOutcome::AlreadyBanned(cidr));
    assert_eq!(bans.len(), 1);
}

#[test]
fn allowlisted_source_is_never_banned_by_a_rule() {
    let bans = table();
    for addr in ["127.0.0.1", "::ffff:127.0.0.1", "::1"] {
        let outcome = bans.ban_offender(ip(addr), "r", "x".into(), t0());
        assert_eq!(outcome, BanOutcome::Allowlisted, "{addr}");
    }
    assert_eq!(bans.len(), 0);
    assert_eq!(bans.check(ip("127.0.0.1"), t0()), None);
}

#[test]
fn ipv6_group_covering_an_allowlisted_address_narrows_to_the_offender() {
    let bans = table(); // ::1/128 is allowlisted and lies in ::/64
    let b = ban(&bans, "::2", t0());
    assert_eq!(b.src_display(), "::2");
    assert_eq!(bans.check(ip("::1"), t0()), None);
    assert!(bans.check(ip("::2"), t0()).is_some());
    // The group's other addresses are refused too (counting is per group, so the rule would
    // not fire again for them within its window), with a `blocked` event due once a minute
    // for the lot; never the allowlisted one, nor another group, nor anyone once the narrowed
    // ban has ended. Nothing is added to the table.
    let rule = |(rule, _): (std::sync::Arc<str>, Option<u64>)| rule.to_string();
    assert_eq!(
        bans.check_narrowed(ip("::3"), t0()).map(rule).as_deref(),
        Some("model_exfiltration")
    );
    assert_eq!(
        bans.check_narrowed(ip("::1:0:3"), t0()).map(|(_, due)| due),
        Some(None)
    );
    assert_eq!(bans.len(), 1);
    assert_eq!(bans.check_narrowed(ip("::1"), t0()), None);
    assert_eq!(bans.check_narrowed(ip("1::3"), t0()), None);
    assert_eq!(bans.check_narrowed(ip("10.0.0.3"), t0()), None);
    assert_eq!(bans.check_narrowed(ip("::3"), b.until), None);
    // A ban of a whole group remembers nothing.
    ban(&bans, "2001:db8::1", t0());
    assert_eq!(bans.check_narrowed(ip("2001:db8::2"), t0()), None);
    // An unban that touches the group ends its memory, as does a reloaded allowlist.
    bans.remove(&net("::2/128"), t0()).unwrap();
    assert_eq!(bans.check_narrowed(ip("::3"), t0()), None);
    ban(&bans, "::2", t0());
    assert!(bans.check_narrowed(ip("::3"), t0()).is_some());
    bans.set_allowlist(vec![net("::1/128")]);
    assert_eq!(bans.check_narrowed(ip("::3"), t0()), None);
}

/// A `manage_from` address is never refused by a rule's ban of a wider network: the group's
/// count is shared, so whose request crossed the threshold says nothing about who sent the rest
/// (reviews: one user's pull refused by `manage_from` banned an office /64 with the admin's host
/// in it; a neighbour's 120 requests and the admin's 121st did the same). The group stays banned
/// for everyone else, rotation gains nothing; a ban of the address itself, an admin ban, or a
/// `manage_from` network as wide as the group still apply.
#[test]
fn a_rule_ban_of_a_wider_network_never_refuses_a_manage_from_address() {
    let bans = table();
    bans.set_spared(vec![net("2001:db8::10/128"), net("2001:db8:5::/64")]);
    // A neighbour offends, or the admin's request is the one that crosses: the group is banned
    // either way, the admin is not refused, its neighbours are.
    for offender in ["2001:db8::11", "2001:db8::10"] {
        bans.remove(&net("2001:db8::/64"), t0());
        assert_eq!(ban(&bans, offender, t0()).src_display(), "2001:db8::/64");
        assert_eq!(bans.check(ip("2001:db8::10"), t0()), None, "{offender}");
        assert!(bans.check(ip("2001:db8::11"), t0()).is_some(), "{offender}");
        assert!(bans.check(ip("2001:db8::12"), t0()).is_some(), "{offender}");
    }
    // A `manage_from` network as wide as the group spares nothing.
    ban(&bans, "2001:db8:5::7", t0());
    assert!(bans.check(ip("2001:db8:5::8"), t0()).is_some());
    // An admin ban of the network, and a ban of the address itself, apply.
    let hour = Duration::from_secs(3600);
    bans.add_manual(net("2001:db8:7::/64"), hour, "ops".into(), false, t0())
        .unwrap();
    bans.set_spared(vec![net("2001:db8:7::10/128"), net("2001:db8:8::10/128")]);
    assert!(bans.check(ip("2001:db8:7::10"), t0()).is_some());
    bans.add_manual(net("2001:db8:8::10/128"), hour, "ops".into(), false, t0())
        .unwrap();
    assert!(bans.check(ip("2001:db8:8::10"), t0()).is_some());
    // The exemption reads the networks in force: a reload that adds the address spares it
    // from a ban made before; one that drops it refuses it again.
    let bans = table();
    ban(&bans, "2001:db8:9::11", t0());
    assert!(bans.check(ip("2001:db8:9::10"), t0()).is_some());
    bans.set_spared(vec![net("2001:db8:9::10/128")]);
    assert_eq!(bans.check(ip("2001:db8:9::10"), t0()), None);
    bans.set_spared(vec![]);
    assert!(bans.check(ip("2001:db8:9::10"), t0()).is_some());
}

#[test]
fn reloaded_allowlist_applies_to_later_verdicts() {
    let bans = table();
    bans.set_allowlist(vec![net("192.0.2.0/24")]);
    let outcome = bans.ban_offender(ip("192.0.2.5"), "r", "x".into(), t0());
    assert_eq!(outcome, BanOutcome::Allowlisted);
}

#[test]
fn reloaded_allowlist_lifts_the_rule_bans_it_overlaps_and_returns_them() {
    let bans = table();
    let v4 = ban(&bans, "10.1.2.3", t0());
    let group = ban(&bans, "2001:db8:1:2::a", t0());
    let kept = ban(&bans, "192.0.2.7", t0());
    let hour = Duration::from_secs(3600);
    let admin = bans
        .add_manual(net("10.9.0.0/16"), hour, "ops".into(), false, t0())
        .unwrap();
    bans.note_blocked(ip("10.1.2.3"), t0());

    let lifted = bans.set_allowlist(vec![net("10.0.0.0/8"), net("2001:db8:1:2::5/128")]);
    assert_eq!(lifted, vec![v4, group]);
    assert_eq!(bans.list(), vec![admin, kept]);
    assert_eq!(bans.check(ip("10.1.2.3"), t0()), None);
    assert_eq!(bans.check(ip("2001:db8:1:2::a"), t0()), None);
    assert_eq!(bans.blocked_counters(), 0);
    assert_eq!(bans.set_allowlist(vec![net("10.0.0.0/8")]), vec![]);
}

#[test]
fn admin_ban_overlapping_allowlist_needs_force() {
    let bans = table();
    let refused = bans.add_manual(
        net("127.0.0.0/8"),
        Duration::from_secs(600),
        "x".into(),
        false,
        t0(),
    );
    assert_eq!(
        refused,
        Err(EnforceError::Allowlisted {
            src: "127.0.0.0/8".into()
        })
    );
    let forced = bans
        .add_manual(
            net("127.0.0.0/8"),
            Duration::from_secs(600),
            "x".into(),
            true,
            t0(),
        )
        .unwrap();
    assert_eq!(forced.until, t0() + mins(10));
    assert_eq!(&*bans.check(ip("127.0.0.1"), t0()).unwrap().rule, "admin");
}

/// `0.0.0.0/0` typed by mistake would refuse every client: a network wider than a /8 of IPv4
/// or a /32 of IPv6 (a mapped IPv4 network counts as IPv4) needs force; one as wide does not.
#[test]
fn admin_ban_of_a_network_wider_than_a_slash_8_or_slash_32_needs_force() {
    let bans = table();
    let ten = Duration::from_secs(600);
    for (text, shown) in [
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("10.0.0.0/7", "10.0.0.0/7"),
        ("::/0", "::/0"),
        ("::ffff:0.0.0.0/96", "0.0.0.0/0"),
        ("2001:d00::/24", "2001:d00::/24"),
        ("2001:db8::/31", "2001:db8::/31"),
    ] {
        assert_eq!(
            bans.add_manual(net(text), ten, "x".into(), false, t0()),
            Err(EnforceError::TooWide { src: shown.into() }),
            "{text}"
        );
    }
    assert_eq!(
        EnforceError::TooWide { src: "::/0".into() }.to_string(),
        "::/0 covers more than a /8 of IPv4 or a /32 of IPv6; refusing to ban it without force"
    );
    assert_eq!(bans.check(ip("192.0.2.1"), t0()), None);
    for text in ["10.0.0.0/8", "2001:db8::/32"] {
        bans.add_manual(net(text), ten, "x".into(), false, t0())
            .unwrap();
    }
    bans.add_manual(net("0.0.0.0/0"), ten, "x".into(), true, t0())
        .unwrap();
    assert_eq!(&*bans.check(ip("192.0.2.1"), t0()).unwrap().rule, "admin");
}

#[test]
fn admin_ban_counts_as_offence_uses_its_duration_and_replaces_same_src() {
    let bans = table();
    ban(&bans, "192.0.2.7", t0());
    bans.expire(t0() + mins(15));
    let hour = Duration::from_secs(3600);
    let manual = bans
        .add_manual(
            net("192.0.2.7/32"),
            hour,
            "ops".into(),
            false,
            t0() + mins(60),
        )
        .unwrap();
    assert_eq!((manual.offence, manual.until), (2, t0() + mins(120)));
    let replaced = bans
        .add_manual(
            net("192.0.2.7/32"),
            Duration::from_secs(600),
            "ops".into(),
            false,
            t0() + mins(70),
        )
        .unwrap();
    assert_eq!((replaced.offence, replaced.until), (3, t0() + mins(80)));
    assert_eq!(bans.list(), vec![replaced]);
}

#[test]
fn admin_ban_of_zero_length_is_refused() {
    let bans = table();
    let result = bans.add_manual(net("192.0.2.7/32"), Duration::ZERO, "x".into(), false, t0());
    assert_eq!(result, Err(EnforceError::ZeroDuration));
}

#[test]
fn remove_lifts_only_the_exact_src_and_reports_when_it_ended() {
    let bans = table();
    bans.add_manual(
        net("10.0.0.0/8"),
        Duration::from_secs(3600),
        "x".into(),
        false,
        t0(),
    )
    .unwrap();
    assert_eq!(bans.remove(&net("10.0.0.1/32"), t0() + mins(5)), None);
    let lifted = bans.remove(&net("10.0.0.0/8"), t0() + mins(5)).unwrap();
    assert_eq!(lifted.until, t0() + mins(5));
    assert_eq!(bans.check(ip("10.0.0.1"), t0() + mins(6)), None);
    assert_eq!(bans.len(), 0);
}

#[test]
fn expire_sweeps_ended_bans_and_next_expiry_tracks_the_earliest() {
    let bans = table();
    assert_eq!(bans.next_expiry(), None);
    let rule = ban(&bans, "192.0.2.7", t0());
    let admin = bans
        .add_manual(
            net("10.0.0.0/8"),
            Duration::from_secs(3600),
            "x".into(),
            false,
            t0(),
        )
        .unwrap();
    assert_eq!(bans.next_expiry(), Some(t0() + mins(15)));
    assert_eq!(bans.expire(t0() + mins(15) - TimeDelta::seconds(1)), vec![]);
    assert_eq!(bans.expire(t0() + mins(15)), vec![rule]);
    assert_eq!(bans.next_expiry(), Some(t0() + mins(60)));
    assert_eq!(bans.expire(t0() + mins(60)), vec![admin]);
    assert_eq!((bans.next_expiry(), bans.len()), (None, 0));
}

#[test]
fn expire_forgets_offences_older_than_memory() {
    let bans = table();
    ban(&bans, "192.0.2.7", t0());
    ban(&bans, "192.0.2.8", t0() + TimeDelta::days(1));
    bans.expire(t0() + TimeDelta::days(7));
    let remembered: Vec<IpNet> = bans.lock().offences.keys().copied().collect();
    assert_eq!(remembered, vec![net("192.0.2.8/32")]);
}

#[test]
fn list_is_sorted_by_source() {
    let bans = table();
    for addr in ["192.0.2.9", "2001:db8::1", "10.0.0.1"] {
        ban(&bans, addr, t0());
    }
    let srcs: Vec<String> = bans.list().iter().map(Ban::src_display).collect();
    assert_eq!(srcs, vec!["10.0.0.1", "192.0.2.9", "2001:db8::/64"]);
}

#[test]
fn ban_serialises_for_the_admin_api() {
    let bans = table();
    let b = ban(&bans, "2001:db8:1:2::7", t0());
    assert_eq!(
        serde_json::to_string(&b).unwrap(),
        r#"{"src":"2001:db8:1:2::/64","until":"2025-10-02T14:15:00.000Z","reason":"test","offence":1,"rule":"model_exfiltration","since":"2025-10-02T14:00:00.000Z"}"#
    );
    let back: Ban = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
    assert_eq!(back, b);
}

#[test]
fn parse_source_accepts_addresses_and_networks_and_refuses_host_bits() {
    use crate::enforce::parse_source;
    assert_eq!(parse_source("192.0.2.1").unwrap(), net("192.0.2.1/32"));
    assert_eq!(
        parse_source("::ffff:192.0.2.1").unwrap(),
        net("192.0.2.1/32")
    );
    assert_eq!(
        parse_source(" 2001:db8::/48 ").unwrap(),
        net("2001:db8::/48")
    );
    let err = parse_source("192.0.2.5/24").unwrap_err().to_string();
    assert_eq!(
        err,
        r#"bad source "192.0.2.5/24": host bits set; did you mean 192.0.2.0/24?"#
    );
    assert!(matches!(
        parse_source("nope"),
        Err(EnforceError::BadSource { .. })
    ));
}

/// A remote unban names the ban it lifted by its start: a ban here that started later (made
/// while the message travelled) stays; the one it names, or an older one, goes.
#[test]
fn a_removal_up_to_a_start_keeps_a_newer_ban() {
    let bans = table();
    let hour = Duration::from_secs(3600);
    bans.add_manual(net("10.9.0.0/16"), hour, "ops".into(), false, t0())
        .unwrap();
    let before = t0() - TimeDelta::milliseconds(1);
    assert_eq!(
        bans.remove_started_by(&net("10.9.0.0/16"), Some(before), t0()),
        None
    );
    assert!(bans.check(ip("10.9.1.1"), t0()).is_some());
    let gone = bans
        .remove_started_by(&net("10.9.0.0/16"), Some(t0()), t0() + mins(1))
        .unwrap();
    assert_eq!(
        (gone.src_display(), gone.until),
        ("10.9.0.0/16".to_owned(), t0() + mins(1))
    );
    assert!(bans.check(ip("10.9.1.1"), t0() + mins(1)).is_none());
}

#[test]
fn a_rule_ban_of_a_group_never_refuses_a_trusted_proxy_inside_it() {
    let bans = table();
    bans.set_trusted_proxies(vec![net("2001:db8:a::1/128")]);
    // A neighbour of the proxy offends: its /64 is banned, the proxy (and whoever it forwards
    // without a readable address, counted under its address) is not refused.
    assert_eq!(
        ban(&bans, "2001:db8:a::2", t0()).src_display(),
        "2001:db8:a::/64"
    );
    assert_eq!(bans.check(ip("2001:db8:a::1"), t0()), None);
    assert!(bans.check(ip("2001:db8:a::2"), t0()).is_some());
    assert!(bans.check(ip("2001:db8:a::3"), t0()).is_some());
    // A group narrowed for an allowlisted address spares the proxy too.
    bans.set_allowlist(vec![net("2001:db8:b::5/128")]);
    bans.set_trusted_proxies(vec![net("2001:db8:b::1/128")]);
    assert_eq!(
        ban(&bans, "2001:db8:b::2", t0()).src_display(),
        "2001:db8:b::2"
    );
    assert!(bans.check_narrowed(ip("2001:db8:b::3"), t0()).is_some());
    assert_eq!(bans.check_narrowed(ip("2001:db8:b::1"), t0()), None);
    // The list in force decides (reload), and an admin ban still applies.
    bans.set_trusted_proxies(vec![]);
    assert!(bans.check(ip("2001:db8:a::1"), t0()).is_some());
    assert!(bans.check_narrowed(ip("2001:db8:b::1"), t0()).is_some());
    bans.set_trusted_proxies(vec![net("2001:db8:c::1/128")]);
    let hour = Duration::from_secs(3600);
    bans.add_manual(net("2001:db8:c::/64"), hour, "ops".into(), false, t0())
        .unwrap();
    assert!(bans.check(ip("2001:db8:c::1"), t0()).is_some());
}
