//! Text from outside (a log line, a ban's reason) shown on a terminal.

/// A value's text for a terminal: control characters (a newline, an escape sequence given as
/// a ban's reason through the API) and the invisible marks that reorder, break or hide text
/// (Unicode bidirectional overrides and isolates, zero-width characters, the line and
/// paragraph separators, tag characters: a reason could make the table show another source
/// than the one banned) are shown escaped, `\n`, `\u{1b}`, `\u{202e}`, never sent as they are.
pub(crate) fn printable(s: &str) -> String {
    fn hidden(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{061c}' | '\u{feff}' | '\u{e0000}'..='\u{e007f}')
    }
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
