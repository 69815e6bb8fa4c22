//! Source identity inside the engine: IPv6 grouping, IPv4-mapped addresses, allowlist.

use super::*;

fn per_src(threshold: i64) -> RuleConfig {
    rule("per_src", |r| {
        r.group_by = "src".into();
        r.threshold = threshold;
    })
}

#[test]
fn ipv6_sources_in_one_slash_64_are_one_source() {
    let e = engine(&[per_src(2)]);
    let out = feed(
        &e,
        &[
            req("2001:db8:1:2::1", "/a", secs(1), 1),
            req("2001:db8:1:2:ffff::9", "/a", secs(1), 2),
        ],
    );
    assert_eq!(only(&out).src, "2001:db8:1:2::/64");
}

#[test]
fn ipv6_prefix_128_counts_addresses_separately_and_shows_them_plainly() {
    let options = EngineOptions {
        ipv6_prefix: 128,
        ..EngineOptions::default()
    };
    let e = engine_with(&[per_src(2)], options);
    let two = [
        req("2001:db8::1", "/a", secs(1), 1),
        req("2001:db8::2", "/a", secs(1), 2),
    ];
    assert!(feed(&e, &two).is_empty());
    let out = feed(&e, &[req("2001:db8::1", "/a", secs(1), 3)]);
    assert_eq!(only(&out).src, "2001:db8::1");
}

#[test]
fn ipv4_mapped_ipv6_counts_as_the_ipv4_source() {
    let e = engine(&[per_src(2)]);
    let out = feed(
        &e,
        &[
            req("::ffff:192.0.2.7", "/a", secs(1), 1),
            req("192.0.2.7", "/a", secs(1), 2),
        ],
    );
    assert_eq!(only(&out).src, "192.0.2.7");
}

#[test]
fn allowlisted_sources_are_never_counted() {
    let options = EngineOptions {
        allowlist: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        ..EngineOptions::default()
    };
    let e = engine_with(&[per_src(1)], options);
    let out = feed(
        &e,
        &[
            req("127.0.0.1", "/a", secs(1), 1),
            req("::1", "/a", secs(1), 2),
            req("::ffff:127.0.0.5", "/a", secs(1), 3),
        ],
    );
    assert!(out.is_empty());
    assert_eq!(e.tracked_keys(), 0);
    assert_eq!(
        only(&feed(&e, &[req("10.0.0.1", "/a", secs(1), 4)])).src,
        "10.0.0.1"
    );
}

#[test]
fn engine_options_are_validated() {
    let bad_prefix = EngineOptions {
        ipv6_prefix: 129,
        ..EngineOptions::default()
    };
    let err = Engine::new(Vec::new(), bad_prefix).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ipv6_prefix: must be between 0 and 128, got 129"
    );
    let zero = EngineOptions {
        max_tracked_keys: 0,
        ..EngineOptions::default()
    };
    let err = Engine::new(Vec::new(), zero).unwrap_err();
    assert_eq!(err.to_string(), "max_tracked_keys: must be at least 1");
}
