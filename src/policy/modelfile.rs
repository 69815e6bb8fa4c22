//! The commands of a Modelfile sent in `/api/create`'s deprecated `modelfile` field, read as
//! the Ollama versions that parsed it themselves read it, so that no spelling the server
//! accepts hides a `FROM` or an `ADAPTER` from the check.
//!
//! Ollama's Modelfile grammar (its `parser` package): a line ends at `\r` or `\n`; `#` starts a
//! comment line; a command is letters ended by a space or a tab (`PARAMETER` and `MESSAGE`
//! take one more word); the value runs to the end of the line, spaces included, unless it
//! opens a quote (`"` or `"""`) that the line does not close, in which case it runs on to the
//! line that does; the quotes are then taken off. Characters that are not printable (control
//! and format characters, spaces other than U+0020) are dropped from a value. A Modelfile the
//! parser rejects (an unknown command, a stray character in a command) creates nothing; what
//! came before the rejected command is still returned, so the check never reads less.

/// One command: its name in lower case (`from`, `adapter`, ...), its value as the server
/// reads it, and its text as sent (for the detection log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Command<'a> {
    pub(super) name: String,
    pub(super) value: String,
    pub(super) text: &'a str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between commands.
    Nil,
    /// In a command's name.
    Name,
    /// In `PARAMETER`'s or `MESSAGE`'s extra word.
    Word,
    /// In a value.
    Value,
    /// In a comment line.
    Comment,
}

/// The commands of `text`, in order.
pub(super) fn commands(text: &str) -> Vec<Command<'_>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut state = State::Nil;
    let mut buf = String::new();
    let mut name = String::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match state {
            State::Nil => match c {
                '#' => state = State::Comment,
                ' ' | '\t' | '\r' | '\n' => {}
                _ => {
                    // The first character is kept only when printable: one format character
                    // in front of a command does not make it another.
                    start = i;
                    buf.clear();
                    if printable(c) {
                        buf.push(c);
                    }
                    state = State::Name;
                }
            },
            State::Comment => {
                if newline(c) {
                    state = State::Nil;
                }
            }
            State::Name => {
                if c.is_ascii_alphabetic() {
                    buf.push(c);
                } else if space(c) {
                    name = buf.to_ascii_lowercase();
                    if !COMMANDS.contains(&name.as_str()) {
                        break;
                    }
                    buf.clear();
                    state = if matches!(name.as_str(), "parameter" | "message") {
                        State::Word
                    } else {
                        State::Value
                    };
                } else {
                    break;
                }
            }
            State::Word => {
                if c.is_ascii_alphanumeric() || c == '_' {
                    buf.push(c);
                } else if space(c) {
                    buf.clear();
                    state = State::Value;
                } else {
                    break;
                }
            }
            State::Value => {
                if newline(c) {
                    if let Some(value) = unquote(buf.trim_matches(blank)) {
                        out.push(Command {
                            name: name.clone(),
                            value: value.to_owned(),
                            text: text[start..i].trim_matches(space),
                        });
                        buf.clear();
                        state = State::Nil;
                        continue;
                    }
                    // An open quote: the line break is part of the value.
                    buf.push(c);
                } else if space(c) || printable(c) {
                    buf.push(c);
                }
            }
        }
    }
    if state == State::Value {
        if let Some(value) = unquote(buf.trim_matches(blank)) {
            out.push(Command {
                name,
                value: value.to_owned(),
                text: text[start..].trim_matches(space),
            });
        }
    }
    out
}

/// The commands the parser knows; any other ends the Modelfile.
const COMMANDS: [&str; 11] = [
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
];

fn newline(c: char) -> bool {
    matches!(c, '\r' | '\n')
}

fn space(c: char) -> bool {
    matches!(c, ' ' | '\t')
}

/// What is trimmed off a value before its quotes are looked at.
fn blank(c: char) -> bool {
    space(c) || newline(c)
}

/// Whether the parser keeps `c` in a value: not a control character, not a format character
/// (zero-width, direction marks, the soft hyphen, tag characters), not a space other than
/// U+0020. Unlisted unassigned code points are kept: the check then sees a character the
/// server drops, which makes a path look less like one to both of them only when it is in
/// front, and a value starting with one is never a blob reference.
fn printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c,
            '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
            | '\u{e000}'..='\u{f8ff}'
            | '\u{f0000}'..='\u{10ffff}'))
}

/// A value without its quotes: `"""x"""` and `"x"` are `x`; a quote left open is `None`.
fn unquote(s: &str) -> Option<&str> {
    if let Some(rest) = s.strip_prefix("\"\"\"") {
        return (s.len() >= 6)
            .then(|| rest.strip_suffix("\"\"\""))
            .flatten();
    }
    if let Some(rest) = s.strip_prefix('"') {
        return rest.strip_suffix('"');
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<(String, String, String)> {
        commands(text)
            .into_iter()
            .map(|c| (c.name, c.value, c.text.to_owned()))
            .collect()
    }

    fn one(name: &str, value: &str, text: &str) -> (String, String, String) {
        (name.to_owned(), value.to_owned(), text.to_owned())
    }

    #[test]
    fn commands_end_at_either_line_break_and_lose_their_quotes() {
        assert_eq!(
            read("FROM llama3.2\rADAPTER \"/etc/shadow\"\r\nsystem \"\"\"be\nbrief\"\"\"\n"),
            [
                one("from", "llama3.2", "FROM llama3.2"),
                one("adapter", "/etc/shadow", "ADAPTER \"/etc/shadow\""),
                one("system", "be\nbrief", "system \"\"\"be\nbrief\"\"\""),
            ]
        );
        // A quote left open runs on to the line that closes it.
        assert_eq!(
            read("ADAPTER \"\n/etc/shadow\"\nFROM x"),
            [
                one("adapter", "\n/etc/shadow", "ADAPTER \"\n/etc/shadow\""),
                one("from", "x", "FROM x"),
            ]
        );
        // `""""""` is the empty value; `"""x"` is a quote still open at the end.
        assert_eq!(
            read("SYSTEM \"\"\"\"\"\""),
            [one("system", "", "SYSTEM \"\"\"\"\"\"")]
        );
        assert_eq!(read("SYSTEM \"\"\"x\""), []);
    }

    #[test]
    fn characters_the_server_drops_are_dropped_from_values() {
        assert_eq!(
            read("ADAPTER \u{1}\u{200b}/etc/\u{a0}shadow\u{feff}"),
            [one(
                "adapter",
                "/etc/shadow",
                "ADAPTER \u{1}\u{200b}/etc/\u{a0}shadow\u{feff}"
            )]
        );
        // Spaces and tabs inside a value stay, around it they go.
        assert_eq!(
            read("\u{feff}FROM\t  my\tmodel \t"),
            [one("from", "my\tmodel", "FROM\t  my\tmodel")]
        );
        // One character the server drops in front of a command leaves the command as it is.
        assert_eq!(
            read("\u{200b}ADAPTER /x\n\u{1}from y"),
            [
                one("adapter", "/x", "\u{200b}ADAPTER /x"),
                one("from", "y", "\u{1}from y"),
            ]
        );
    }

    #[test]
    fn parameters_messages_and_comments_are_read_past() {
        assert_eq!(
            read("# FROM /etc/passwd\nPARAMETER num_ctx 4096\nMESSAGE user hi there\nFROM m"),
            [
                one("parameter", "4096", "PARAMETER num_ctx 4096"),
                one("message", "hi there", "MESSAGE user hi there"),
                one("from", "m", "FROM m"),
            ]
        );
    }

    #[test]
    fn a_rejected_command_ends_the_reading_and_keeps_what_came_before() {
        assert_eq!(
            read("FROM m\nFROMAGE x\nFROM /etc/passwd"),
            [one("from", "m", "FROM m")]
        );
        assert_eq!(
            read("FROM m\nFR0M /etc/passwd"),
            [one("from", "m", "FROM m")]
        );
        assert_eq!(read("FROM"), []);
    }
}
