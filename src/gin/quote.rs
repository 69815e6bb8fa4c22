//! Go string literals: `strconv.Quote` for writing the path column and the matching
//! unquote for reading it back.
//!
//! gin prints the request path with `%#v`, which for a Go string is `strconv.Quote`: the
//! text between double quotes, `\"` and `\\` escaped, printable Unicode kept as is,
//! `\a \b \f \n \r \t \v` for those controls, `\xNN` for other ASCII controls, DEL and every
//! byte that is not valid UTF-8, `\uNNNN` / `\UNNNNNNNN` for other non-printable runes.

use std::borrow::Cow;
use std::sync::LazyLock;

const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes` as a Go double-quoted string literal, exactly like `strconv.Quote`.
///
/// Why: gin's access line prints the path with `%#v`, and the access log must be
/// byte-compatible with Ollama's. The path is bytes because Go strings may hold invalid
/// UTF-8 (a percent-decoded `%ff`), which Go escapes byte by byte as `\xff`.
pub fn go_quote(bytes: &[u8], out: &mut String) {
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        quote_str(chunk.valid(), out);
        for &b in chunk.invalid() {
            push_hex_escape(out, 'x', u32::from(b), 2);
        }
    }
    out.push('"');
}

fn quote_str(text: &str, out: &mut String) {
    let plain = text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if plain {
        out.push_str(text);
        return;
    }
    text.chars().for_each(|c| quote_char(c, out));
}

fn quote_char(c: char, out: &mut String) {
    match c {
        '"' | '\\' => {
            out.push('\\');
            out.push(c);
        }
        _ if is_go_print(c) => out.push(c),
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        _ if c < ' ' || c == '\x7f' => push_hex_escape(out, 'x', u32::from(c), 2),
        _ if u32::from(c) < 0x10000 => push_hex_escape(out, 'u', u32::from(c), 4),
        _ => push_hex_escape(out, 'U', u32::from(c), 8),
    }
}

fn push_hex_escape(out: &mut String, kind: char, value: u32, digits: u32) {
    out.push('\\');
    out.push(kind);
    for shift in (0..digits).rev() {
        let nibble = (value >> (shift * 4)) & 0xf;
        out.push(char::from(LOWER_HEX[nibble as usize]));
    }
}

/// The Unicode edition of the Go toolchain Ollama is built with (Go 1.21 and later ship
/// Unicode 15.0.0); characters assigned after it are not printable to Go and get escaped.
const GO_UNICODE_AGE: &str = "15.0";

/// Code point ranges Go's `unicode.IsPrint` accepts above Latin-1: general categories L, M,
/// N, P and S, restricted to characters assigned by [`GO_UNICODE_AGE`]. Built once from
/// regex-syntax's Unicode tables rather than a copied table.
static GO_PRINT_RANGES: LazyLock<Vec<(char, char)>> = LazyLock::new(|| {
    use regex_syntax::hir::{Class, HirKind};
    let pattern = format!(r"[[\p{{L}}\p{{M}}\p{{N}}\p{{P}}\p{{S}}]&&\p{{Age={GO_UNICODE_AGE}}}]");
    let Ok(hir) = regex_syntax::Parser::new().parse(&pattern) else {
        return Vec::new();
    };
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .map(|r| (r.start(), r.end()))
            .collect(),
        _ => Vec::new(),
    }
});

/// Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and ASCII space.
pub(super) fn is_go_print(c: char) -> bool {
    let code = u32::from(c);
    if code <= 0xff {
        return (0x20..=0x7e).contains(&code) || ((0xa1..=0xff).contains(&code) && code != 0xad);
    }
    let ranges = &*GO_PRINT_RANGES;
    let idx = ranges.partition_point(|&(_, end)| end < c);
    ranges.get(idx).is_some_and(|&(start, _)| start <= c)
}

/// Reads back the inside of a Go double-quoted literal (without its quotes), as
/// `strconv.Unquote` does; `None` for an escape Go rejects (`\q`, `\x4`, `\400`, `\'`...).
/// The caller has already found the closing quote, so `inner` holds no unescaped `"`.
/// Escapes that yield invalid UTF-8 (`\xff`) become U+FFFD.
/// Borrows `inner` when it holds no escape (the common case: no allocation).
pub(super) fn go_unquote(inner: &str) -> Option<Cow<'_, str>> {
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    let mut buf: Vec<u8> = Vec::with_capacity(inner.len());
    let mut rest = inner.as_bytes();
    while let Some(pos) = rest.iter().position(|&b| b == b'\\') {
        buf.extend_from_slice(&rest[..pos]);
        rest = unescape(&rest[pos + 1..], &mut buf)?;
    }
    buf.extend_from_slice(rest);
    Some(Cow::Owned(match String::from_utf8(buf) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }))
}

/// Decodes one escape (the text after its backslash) into `buf`; returns what follows it.
fn unescape<'a>(text: &'a [u8], buf: &mut Vec<u8>) -> Option<&'a [u8]> {
    let (&kind, rest) = text.split_first()?;
    let simple = match kind {
        b'a' => Some(0x07),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        b'v' => Some(0x0b),
        b'\\' | b'"' => Some(kind),
        _ => None,
    };
    if let Some(byte) = simple {
        buf.push(byte);
        return Some(rest);
    }
    // Octal escapes count their first digit, which is `kind` itself.
    let (number, width, radix) = match kind {
        b'x' => (rest, 2, 16),
        b'u' => (rest, 4, 16),
        b'U' => (rest, 8, 16),
        b'0'..=b'7' => (text, 3, 8),
        _ => return None,
    };
    let field = number.get(..width)?;
    let value = field.iter().try_fold(0u32, |acc, &b| {
        Some(acc * radix + char::from(b).to_digit(radix)?)
    })?;
    push_escaped_value(kind, value, buf)?;
    Some(&number[width..])
}

fn push_escaped_value(kind: u8, value: u32, buf: &mut Vec<u8>) -> Option<()> {
    match kind {
        b'x' => buf.push(value as u8),
        b'0'..=b'7' => buf.push(u8::try_from(value).ok()?),
        _ => {
            if value > 0x10_ffff {
                return None;
            }
            // Surrogates are accepted by Go and encoded as U+FFFD.
            let c = char::from_u32(value).unwrap_or(char::REPLACEMENT_CHARACTER);
            let mut tmp = [0u8; 4];
            buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
        }
    }
    Some(())
}
