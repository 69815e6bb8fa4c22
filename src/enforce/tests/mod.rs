//! Unit tests of enforcement, all with explicit timestamps.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use ipnet::IpNet;

use super::{Ban, BanOutcome, Bans};
use crate::config::BanPolicy;

mod capacity;
mod journal;
mod lifecycle;
mod matching;
mod persistence;

/// 2025-10-02T14:00:00Z: the start of every scenario.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 10, 2, 14, 0, 0).unwrap()
}

fn mins(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

/// The documented `[ban]` defaults (README, "Configuration file"): 15m, x2, max 24h, memory 7d.
fn policy() -> BanPolicy {
    BanPolicy {
        duration: Duration::from_secs(15 * 60),
        increment: 2.0,
        max: Duration::from_secs(24 * 3600),
        memory: Duration::from_secs(7 * 24 * 3600),
    }
}

/// The default policy and allowlist (loopback), IPv6 grouped by /64.
fn table() -> Bans {
    Bans::new(policy(), vec![net("127.0.0.1/32"), net("::1/128")], 64)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

/// A rule ban of `addr` at `now`, which must start a new ban.
fn ban(bans: &Bans, addr: &str, now: DateTime<Utc>) -> Ban {
    match bans.ban_offender(ip(addr), "model_exfiltration", "test".into(), now) {
        BanOutcome::Banned(ban) => ban,
        other => panic!("expected a new ban of {addr}, got {other:?}"),
    }
}
