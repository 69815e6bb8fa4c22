//! Go's `time.Duration` text: written exactly as `Duration.String()` prints it, read back
//! by a hand-written parser of every form Go's `time.ParseDuration` accepts.
//!
//! Ollama's access line carries its latency in this text, so the access log must print it
//! byte for byte like Go, and `scan` must read every unit (`ns`, `µs`, `ms`, `s`, `m`, `h`)
//! that Go can emit, including the compound `1h2m3.5s` forms.

use std::time::Duration;

/// The largest duration Go can represent (`1<<63 - 1` ns); longer texts are rejected as
/// overflow, exactly like `time.ParseDuration`.
const GO_MAX_NANOS: u64 = i64::MAX as u64;

/// Appends `d` formatted exactly like Go's `time.Duration.String()`.
///
/// Why: the gin access line right-aligns this text in a 13-rune column, and Splunk searches
/// and our parser both key on its exact shape (`57.204518733s`, `16.52µs`, `1m5s`).
/// Sub-second values use the largest unit below one second (`ns`, `µs` with U+00B5, `ms`);
/// from one second on the form is `[Nh][Nm]S[.frac]s`, trailing zeros of the fraction
/// dropped. `Duration::ZERO` is `0s`.
pub fn format_go_duration(d: Duration, out: &mut String) {
    out.push_str(GoDurationText::new(d).as_str());
}

/// Go's `Duration.String()` text of one duration, built on the stack.
///
/// Why: the access log writes one per request; digits written into a fixed buffer and
/// appended once cost about a third of pushing them to the line one by one.
pub(crate) struct GoDurationText {
    buf: [u8; GoDurationText::MAX],
    len: usize,
}

impl GoDurationText {
    /// The longest text: `u64::MAX` seconds are 5 124 095 576 030 431 hours (16 digits), then
    /// `59m59.999999999s`.
    const MAX: usize = 40;

    /// The text of `d` (see [`format_go_duration`]).
    pub(crate) fn new(d: Duration) -> GoDurationText {
        let mut text = GoDurationText {
            buf: [0; GoDurationText::MAX],
            len: 0,
        };
        let secs = d.as_secs();
        let sub = u64::from(d.subsec_nanos());
        if secs == 0 {
            match sub {
                0 => text.extend(b"0s"),
                1..=999 => {
                    text.uint(sub);
                    text.extend(b"ns");
                }
                1_000..=999_999 => {
                    text.uint(sub / 1_000);
                    text.fraction(sub % 1_000, 3);
                    text.extend("µs".as_bytes());
                }
                _ => {
                    text.uint(sub / 1_000_000);
                    text.fraction(sub % 1_000_000, 6);
                    text.extend(b"ms");
                }
            }
            return text;
        }
        let (hours, minutes, seconds) = (secs / 3600, (secs / 60) % 60, secs % 60);
        if hours > 0 {
            text.uint(hours);
            text.extend(b"h");
        }
        if secs >= 60 {
            text.uint(minutes);
            text.extend(b"m");
        }
        text.uint(seconds);
        text.fraction(sub, 9);
        text.extend(b"s");
        text
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }

    fn extend(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }

    fn uint(&mut self, value: u64) {
        self.extend(itoa::Buffer::new().format(value).as_bytes());
    }

    /// `.ddd` for `frac` written with `prec` (at most 9) digits, trailing zeros removed;
    /// nothing when `frac` is zero (Go's `fmtFrac`).
    fn fraction(&mut self, frac: u64, prec: usize) {
        if frac == 0 {
            return;
        }
        let mut digits = [b'0'; 10];
        digits[0] = b'.';
        let mut rest = frac;
        for digit in digits[1..=prec].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let mut end = prec + 1;
        while digits[end - 1] == b'0' {
            end -= 1;
        }
        self.extend(&digits[..end]);
    }
}

/// Gin's own rounding of the latency it prints: above one minute the value is truncated to
/// whole seconds (`param.Latency.Truncate(time.Second)` in gin's default formatter).
///
/// Why: the access log must print what gin prints, and tests compare a parsed line with
/// the exact latency it was written from.
pub fn gin_latency(d: Duration) -> Duration {
    if d > Duration::from_secs(60) {
        Duration::from_secs(d.as_secs())
    } else {
        d
    }
}

/// Parses Go duration text: every form `Duration.String()` prints plus everything
/// `time.ParseDuration` accepts for non-negative values (`us`, `μs` U+03BC, `+` sign,
/// `1.5h`, `.5s`, `1h2m3s`, a bare `0`).
///
/// Why: `scan` must turn each `[GIN]` latency into an exact duration, whatever unit gin
/// chose. Returns `None` for garbage, negative values, missing or unknown units, and
/// values beyond Go's range (about 292 years). Fraction digits finer than a nanosecond are
/// truncated.
pub fn parse_go_duration(text: &[u8]) -> Option<Duration> {
    parse_short_duration(text).or_else(|| parse_any_duration(text))
}

/// [`parse_go_duration`]'s general reader: any number of components, any unit, a sign.
pub(super) fn parse_any_duration(text: &[u8]) -> Option<Duration> {
    let rest = text.strip_prefix(b"+").unwrap_or(text);
    if rest == b"0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = rest;
    while !rest.is_empty() {
        let (nanos, tail) = parse_component(rest)?;
        total = total.checked_add(nanos).filter(|t| *t <= GO_MAX_NANOS)?;
        rest = tail;
    }
    Some(Duration::from_nanos(total))
}

/// The forms gin prints below a minute in one pass: `<int>[.<frac>]<unit>`, the integer of 1
/// to 9 digits, a fraction of 1 to 9 digits no finer than a nanosecond in `unit` (`s`, `ms`,
/// `µs`/`μs`/`us`, `ns`). `None` for every other text, which the general reader then
/// decides; for the texts it reads, the value is the general reader's (no overflow is
/// possible: at most 999 999 999 s plus a fraction).
///
/// Why: every `[GIN]` line carries a latency; the general reader's component loop cost
/// about 300 instructions a line in `scan`'s profile.
fn parse_short_duration(text: &[u8]) -> Option<Duration> {
    let mut i = 0;
    let mut whole = 0u64;
    while let Some(&c) = text.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if i == 9 {
            return None;
        }
        whole = whole * 10 + u64::from(d);
        i += 1;
    }
    if i == 0 {
        return None;
    }
    let (mut frac, mut frac_len) = (0u64, 0usize);
    if text.get(i) == Some(&b'.') {
        i += 1;
        while let Some(&c) = text.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            if frac_len == 9 {
                return None;
            }
            frac = frac * 10 + u64::from(d);
            frac_len += 1;
            i += 1;
        }
        if frac_len == 0 {
            return None;
        }
    }
    let (unit, digits) = match &text[i..] {
        b"s" => (1_000_000_000, 9),
        b"ms" => (1_000_000, 6),
        b"us" | [0xc2, 0xb5, b's'] | [0xce, 0xbc, b's'] => (1_000, 3),
        b"ns" => (1, 0),
        _ => return None,
    };
    if frac_len > digits {
        return None;
    }
    let frac_unit = unit / 10u64.pow(u32::try_from(frac_len).ok()?);
    Some(Duration::from_nanos(whole * unit + frac * frac_unit))
}

/// One `<digits>[.<digits>]<unit>` component, in nanoseconds, and the text after it.
fn parse_component(text: &[u8]) -> Option<(u64, &[u8])> {
    let int_len = digit_run(text);
    let (whole, mut rest) = text.split_at(int_len);
    let mut frac: &[u8] = &[];
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let frac_len = digit_run(after_dot);
        (frac, rest) = after_dot.split_at(frac_len);
    }
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let unit_len = rest
        .iter()
        .position(|&b| b == b'.' || b.is_ascii_digit())
        .unwrap_or(rest.len());
    let (unit_text, tail) = rest.split_at(unit_len);
    let unit = unit_nanos(unit_text)?;
    let whole_nanos = decimal_value(whole)?.checked_mul(unit)?;
    if whole_nanos > GO_MAX_NANOS {
        return None;
    }
    Some((whole_nanos.checked_add(fraction_nanos(frac, unit))?, tail))
}

fn digit_run(text: &[u8]) -> usize {
    text.iter().take_while(|b| b.is_ascii_digit()).count()
}

fn unit_nanos(unit: &[u8]) -> Option<u64> {
    Some(match unit {
        b"ns" => 1,
        // `us`, `µs` (U+00B5 MICRO SIGN) and `μs` (U+03BC GREEK SMALL LETTER MU).
        b"us" | [0xc2, 0xb5, b's'] | [0xce, 0xbc, b's'] => 1_000,
        b"ms" => 1_000_000,
        b"s" => 1_000_000_000,
        b"m" => 60_000_000_000,
        b"h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// The value of a run of ASCII digits; `None` once it exceeds Go's range in any unit.
fn decimal_value(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &b| {
        let v = acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        (v <= GO_MAX_NANOS).then_some(v)
    })
}

/// `0.<digits>` of one `unit`, in whole nanoseconds (truncated). Only the first 18 digits
/// count: the rest adds less than a thousandth of a nanosecond to any unit up to an hour.
fn fraction_nanos(digits: &[u8], unit: u64) -> u64 {
    let digits = &digits[..digits.len().min(18)];
    let (value, scale) = digits.iter().fold((0u64, 1u64), |(v, s), &b| {
        (v * 10 + u64::from(b - b'0'), s * 10)
    });
    if unit % scale == 0 {
        // Every fraction Go prints lands here: at most 9, 6 or 3 digits for s, ms, µs.
        return value * (unit / scale);
    }
    let nanos = u128::from(value) * u128::from(unit) / u128::from(scale);
    u64::try_from(nanos).unwrap_or(u64::MAX)
}
