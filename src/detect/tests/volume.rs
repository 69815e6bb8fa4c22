//! Volume rules (`metric = "bytes_out"` / `"bytes_in"`): bytes summed per key, tumbling and
//! sliding, the `bytes` figure and its severity, and the validation of `threshold_bytes`.

use super::*;
use crate::detect::rule::Cutoff;

/// A request of `out` response bytes and `inn` request bytes at `T0 + offset_s`.
fn sized(src: &str, out: u64, inn: u64, offset_s: i64) -> RequestRecord {
    RequestRecord {
        bytes_out: out,
        in_flight_reported: 0,
        identity: None,
        bytes_in: inn,
        ..req(src, "/api/chat", secs(2), offset_s)
    }
}

fn volume(kind: &str, metric: &str, threshold_bytes: i64) -> RuleConfig {
    rule("bulk", |r| {
        r.group_by = "src".into();
        r.window_kind = kind.into();
        r.metric = metric.into();
        r.threshold_bytes = Some(threshold_bytes);
        r.severity_by = "bytes".into();
        r.severity_high = Some(Cutoff::Count(3_000));
        r.severity_medium = Some(Cutoff::Count(1_500));
    })
}

#[test]
fn a_tumbling_volume_rule_fires_on_the_byte_total_not_the_request_count() {
    let e = engine(&[volume("tumbling", "bytes_out", 1_000)]);
    let events = feed(
        &e,
        &[
            sized("10.0.0.1", 400, 9_999, 1),
            sized("10.0.0.1", 500, 0, 2),
            sized("10.0.0.1", 200, 0, 3),
            sized("10.0.0.1", 900, 0, 4),
        ],
    );
    let d = only(&events);
    assert_eq!((d.count, d.bytes), (3, Some(1_100)));
    assert_eq!(d.severity, Severity::Low);
    let mut out = Vec::new();
    e.tick(at(T0 + 900 + 2, 0), &mut out);
    let s = only(&out);
    assert_eq!(
        (s.count, s.bytes, s.severity),
        (4, Some(2_000), Severity::Medium)
    );
}

#[test]
fn bytes_in_counts_request_bodies() {
    let e = engine(&[volume("tumbling", "bytes_in", 10_000)]);
    let events = feed(
        &e,
        &[
            sized("10.0.0.1", 1 << 30, 6_000, 1),
            sized("10.0.0.1", 0, 4_000, 2),
        ],
    );
    assert_eq!(only(&events).bytes, Some(10_000));
}

#[test]
fn a_sliding_volume_rule_expires_bytes_with_their_sub_bucket() {
    let e = engine(&[volume("sliding", "bytes_out", 1_000)]);
    // 15-minute window, one-minute sub-buckets.
    assert!(feed(&e, &[sized("10.0.0.1", 600, 0, 0)]).is_empty());
    // Fifteen minutes later the first 600 bytes have left the window.
    assert!(feed(&e, &[sized("10.0.0.1", 600, 0, 900)]).is_empty());
    let events = feed(&e, &[sized("10.0.0.1", 3_000, 0, 910)]);
    let d = only(&events);
    assert_eq!((d.bytes, d.severity), (Some(3_600), Severity::High));
    let mut out = Vec::new();
    e.tick(at(T0 + 910 + 900, 0), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].kind(), out[0].detail().bytes),
        ("window_summary", Some(3_600))
    );
}

#[test]
fn count_rules_carry_no_bytes_field() {
    let e = engine(&[rule("c", |_| {})]);
    let events = feed(&e, &[sized("10.0.0.1", 123, 0, 1)]);
    assert_eq!(only(&events).bytes, None);
}

#[test]
fn threshold_bytes_is_validated_naming_the_key() {
    let err = |f: fn(&mut RuleConfig)| {
        let mut cfg = volume("sliding", "bytes_out", 1_000);
        f(&mut cfg);
        build_rules(&[cfg]).unwrap_err().to_string()
    };
    assert_eq!(
        err(|r| r.threshold_bytes = None),
        "rule[bulk].threshold_bytes: required for metric = \"bytes_out\""
    );
    assert_eq!(
        err(|r| r.threshold_bytes = Some(0)),
        "rule[bulk].threshold_bytes: must be at least 1"
    );
    assert_eq!(
        err(|r| r.threshold_bytes = Some(1 << 32)),
        "rule[bulk].threshold_bytes: must be at most 4294967295 for a sliding window (use a tumbling window for more)"
    );
    // Tumbling: the 48-bit byte total (256 TiB).
    let tumbling = |bytes: i64| {
        build_rules(&[volume("tumbling", "bytes_out", bytes)]).map(|rules| rules[0].threshold)
    };
    assert_eq!(tumbling((1 << 48) - 1).unwrap(), (1 << 48) - 1);
    assert_eq!(
        tumbling(1 << 48).unwrap_err().to_string(),
        "rule[bulk].threshold_bytes: must be at most 281474976710655 for a tumbling window (its byte total is 48-bit)"
    );
    assert_eq!(
        err(|r| r.threshold = 5),
        "rule[bulk].threshold: must be 1 (or left out) for metric = \"bytes_out\"; set threshold_bytes"
    );
    assert_eq!(
        err(|r| r.metric = "tokens".into()),
        "rule[bulk].metric: unknown value \"tokens\" (expected count, bytes_out or bytes_in)"
    );
    assert_eq!(
        err(|r| {
            r.metric = "count".into();
        }),
        "rule[bulk].threshold_bytes: only for metric = \"bytes_out\" or \"bytes_in\" (count rules use threshold)"
    );
    assert_eq!(
        err(|r| {
            r.metric = "count".into();
            r.threshold_bytes = None;
        }),
        "rule[bulk].severity_by: \"bytes\" needs metric = \"bytes_out\" or \"bytes_in\""
    );
    let mut big = volume("tumbling", "bytes_out", 1 << 40);
    big.severity_by = "avg_latency".into();
    big.severity_high = None;
    big.severity_medium = None;
    assert!(
        build_rules(&[big]).is_ok(),
        "tumbling byte totals are 64-bit"
    );
}
