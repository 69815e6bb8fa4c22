//! The ban record, what the hot path returns, and source text parsing.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::EnforceError;

/// The `rule` of bans made through the admin API, so metrics and logs can tell them apart.
pub(crate) const ADMIN_RULE: &str = "admin";

/// The latest end a ban can have, 9999-12-31T23:59:59.999Z: the last instant RFC 3339 can
/// write. Every computed `until` is clamped to it, so a very long ban (admin `10000y`, a huge
/// `ban.max`) still round-trips through `bans.json` instead of making the file unreadable.
pub(crate) const MAX_UNTIL: DateTime<Utc> =
    match DateTime::from_timestamp_millis(253_402_300_799_999) {
        Some(t) => t,
        None => DateTime::<Utc>::MAX_UTC,
    };

/// One ban: who, until when, and why. This is what the admin API lists, what `ban`/`unban`
/// events carry and what `bans.json` stores.
///
/// JSON: `{"src","until","reason","offence","rule","since"}` with `src` as displayed
/// ([`Ban::src_display`]) and times in RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ban {
    /// The banned source: a single address (/32, /128), an IPv6 group or an admin CIDR.
    #[serde(serialize_with = "ser_src", deserialize_with = "de_src")]
    pub(crate) src: IpNet,
    /// The first instant at which the ban no longer applies.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub(crate) until: DateTime<Utc>,
    /// Why, in words (the rule's verdict or the operator's note).
    pub(crate) reason: String,
    /// Which offence of this source within the ban memory this is (1, 2, ...).
    pub(crate) offence: u32,
    /// The rule that banned, or [`ADMIN_RULE`]; shared with the hot path, hence `Arc`.
    #[serde(serialize_with = "ser_rule", deserialize_with = "de_rule")]
    pub(crate) rule: Arc<str>,
    /// When the ban started.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub(crate) since: DateTime<Utc>,
}

impl Ban {
    /// The `src` field of logs and the API: `192.0.2.1`, `2001:db8::1`, `2001:db8:1:2::/64`.
    pub(crate) fn src_display(&self) -> String {
        display_net(&self.src)
    }
}

/// What [`Bans::check`](super::Bans::check) returns for a banned request: enough to answer
/// 403, label `blocked_requests_total{rule}` and log a `blocked` event, all without locking or
/// allocating (cloning is two reference-count increments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BanHit {
    /// The matching ban's source.
    pub(crate) src: IpNet,
    /// The same, as displayed in logs.
    pub(crate) display: Arc<str>,
    /// The rule that banned, or [`ADMIN_RULE`].
    pub(crate) rule: Arc<str>,
    /// When the ban ends.
    pub(crate) until: DateTime<Utc>,
}

/// What a rule verdict did, so the detection stage can log `action` and a `ban` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BanOutcome {
    /// A new ban started; log a `ban` event.
    Banned(Ban),
    /// The source was already under this (still active) ban: nothing changed, no new offence.
    AlreadyBanned(Ban),
    /// The source is allowlisted and is never banned by a rule.
    Allowlisted,
    /// The table holds [`MAX_BANS`](super::MAX_BANS) bans and this source could not be
    /// widened into a ban that fits (IPv4, allowlisted IPv6 /48, or no headroom left): no ban,
    /// no offence recorded. Log it: detection goes on, enforcement of this source does not.
    TableFull,
}

/// Parses admin input: an address (`192.0.2.1`, `2001:db8::1`) or a network
/// (`192.0.2.0/24`). A network with host bits set (`192.0.2.5/24`) is refused rather than
/// guessed at; IPv4-mapped IPv6 becomes IPv4, as everywhere else.
pub(crate) fn parse_source(text: &str) -> Result<IpNet, EnforceError> {
    let text = text.trim();
    let bad = |reason: String| EnforceError::BadSource {
        input: text.to_string(),
        reason,
    };
    let net = if text.contains('/') {
        let net: IpNet = text.parse().map_err(|e| bad(format!("{e}")))?;
        if net.trunc() != net {
            return Err(bad(format!("host bits set; did you mean {}?", net.trunc())));
        }
        net
    } else {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| bad("not an IP address or CIDR network".to_string()))?;
        IpNet::from(ip)
    };
    Ok(canonical_net(net))
}

pub(super) use crate::ip::canonical_net;

/// A single address without its `/32` or `/128`; a network as CIDR.
pub(crate) fn display_net(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// Whether two networks share any address (for the allowlist overlap check).
pub(super) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

pub(super) fn format_time(t: &DateTime<Utc>) -> String {
    crate::time::rfc3339_ms(t)
}

pub(super) fn ser_src<S: Serializer>(src: &IpNet, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&display_net(src))
}

pub(super) fn de_src<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
    let text = String::deserialize(d)?;
    parse_source(&text).map_err(serde::de::Error::custom)
}

pub(super) fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(t))
}

pub(super) fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(d)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| serde::de::Error::custom(format!("bad time {text:?}: {e}")))
}

fn ser_rule<S: Serializer>(rule: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(rule)
}

fn de_rule<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    String::deserialize(d).map(Arc::from)
}
