//! Text from outside (a log line, a ban's reason) shown on a terminal.

/// Whether `c` is a control character or one of the invisible marks that reorder, break or
/// hide text: Unicode bidirectional overrides and isolates, zero-width characters, the line and
/// paragraph separators, tag characters, and the characters that show as nothing or as blank
/// (soft hyphen, combining grapheme joiner, Hangul fillers, interlinear annotation marks,
/// variation selectors).
pub(crate) fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}'
            | '\u{061c}' | '\u{feff}' | '\u{e0000}'..='\u{e007f}'
            | '\u{00ad}' | '\u{034f}' | '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}'
            | '\u{fff9}'..='\u{fffb}' | '\u{fe00}'..='\u{fe0f}' | '\u{e0100}'..='\u{e01ef}'
            | '\u{180e}')
}

/// A value's text for a terminal: control characters (a newline, an escape sequence given as
/// a ban's reason through the API) and the invisible marks that reorder, break or hide text
/// (Unicode bidirectional overrides and isolates, zero-width characters, the line and
/// paragraph separators, tag characters: a reason could make the table show another source
/// than the one banned) are shown escaped, `\n`, `\u{1b}`, `\u{202e}`, never sent as they are.
pub(crate) fn printable(s: &str) -> String {
    if !s.chars().any(hidden) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else if hidden(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `value` as one line of compact JSON, with the characters [`hidden`] finds written as `\u`
/// escapes (the detection log, the JSON access log).
pub(crate) fn json_line<T: serde::Serialize + ?Sized>(
    value: &T,
) -> Result<String, serde_json::Error> {
    let mut line = Vec::with_capacity(512);
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut line, Escaping,
    ))?;
    // The formatter writes only what serde_json writes, or ASCII escapes.
    String::from_utf8(line).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

/// serde_json's compact output, with the characters that reorder or hide text on a screen
/// ([`hidden`]: bidirectional overrides, zero-width characters, line separators,
/// tag characters, the controls JSON lets through) written as `\u` escapes.
///
/// Why: a client chooses the path a log line carries; a SOC reading lines with `jq -r` or
/// `tail` must not be shown another path, source or rule than the one logged (an `U+202E`
/// reverses what follows it). The value a JSON reader gets is unchanged.
struct Escaping;

impl serde_json::ser::Formatter for Escaping {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if hidden(c) {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}
