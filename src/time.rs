//! The one timestamp format of everything the guard writes for machines: RFC 3339 in UTC with
//! milliseconds (`2026-11-29T10:48:17.587Z`) — detection log, JSON access log, state files,
//! the admin API. (The GIN access line keeps Ollama's own local-time format, in `gin`.)

use chrono::{DateTime, SecondsFormat, Utc};

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn rfc3339_ms(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_and_a_z_suffix() {
        let t = DateTime::from_timestamp_millis(1_795_000_000_587).unwrap();
        assert_eq!(rfc3339_ms(&t), "2026-11-18T11:06:40.587Z");
    }
}
