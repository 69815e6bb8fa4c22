//! The commands of a Modelfile sent in `/api/create`'s deprecated `modelfile` field, read as
//! the Ollama versions that parsed it themselves (up to 0.5.4) read it, so that no spelling one
//! of them accepts hides a `FROM` or an `ADAPTER` from the check. Their parsers were of three
//! kinds, and a Modelfile's commands are those any of the three reads:
//!
//! - **up to 0.1.33**, a line scanner: a token runs to the end of the line, unless a quote
//!   (`"""`, else `"`) opens before the line ends, in which case it runs to the closing quote,
//!   quotes taken out, and the next token starts right after it (`SYSTEM "x"FROM /a` is two
//!   commands); a token is a command up to its first space, unknown commands are skipped;
//! - **0.1.34 to 0.1.48** and **0.2.0 on**, a state machine: a line ends at `\r` or `\n`; `#`
//!   starts a comment line; a command is letters ended by a space or a tab (`PARAMETER` and
//!   `MESSAGE` take one more word); the value runs to the end of the line, spaces included,
//!   unless it opens a quote (`"` or `"""`) that the line does not close, in which case it runs
//!   on to the line that does; the quotes are then taken off. Characters that are not printable
//!   (control and format characters, spaces other than U+0020) are dropped from a value. The
//!   two differ in one point: from 0.2.0 the value is trimmed before its quotes are looked at
//!   (`SYSTEM  "x` with two spaces is an open quote there, a finished value before).
//!
//! A Modelfile a parser rejects (an unknown command, a stray character in a command) creates
//! nothing; what came before the rejected command is still returned, so the check never reads
//! less.

/// One command: its name in lower case (`from`, `adapter`, ...), its value as the server
/// reads it, and its text as sent (for the detection log; quotes taken out by the line
/// scanner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Command {
    pub(super) name: String,
    pub(super) value: String,
    pub(super) text: String,
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

/// The commands of `text` as any of the parsers reads them: each reading's in order, one
/// after the other, each command once.
pub(super) fn commands(text: &str) -> Vec<Command> {
    let mut out = machine(text, true);
    for c in machine(text, false).into_iter().chain(scanned(text)) {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// The commands of `text` as the state machine reads them; `trim`: the value is trimmed
/// before its quotes are looked at (0.2.0 on).
fn machine(text: &str, trim: bool) -> Vec<Command> {
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
                    let seen = if trim { buf.trim_matches(blank) } else { &buf };
                    if let Some(value) = unquote(seen) {
                        out.push(Command {
                            name: name.clone(),
                            value: value.to_owned(),
                            text: text[start..i].trim_matches(space).to_owned(),
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
        let seen = if trim { buf.trim_matches(blank) } else { &buf };
        if let Some(value) = unquote(seen) {
            out.push(Command {
                name,
                value: value.to_owned(),
                text: text[start..].trim_matches(space).to_owned(),
            });
        }
    }
    out
}

/// The `FROM` and `ADAPTER` commands of `text` as the line scanner (up to 0.1.33) reads them.
fn scanned(text: &str) -> Vec<Command> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (token, advance) = match token(rest) {
            Some(t) => t,
            // A quote never closed: the scanner fails, and nothing is created.
            None => break,
        };
        rest = &rest[advance..];
        let Some((command, arg)) = token.split_once(' ') else {
            continue;
        };
        let name = command.to_ascii_lowercase();
        if matches!(name.as_str(), "from" | "adapter") {
            out.push(Command {
                name,
                value: arg.trim().to_owned(),
                text: token.trim().to_owned(),
            });
        }
    }
    out
}

/// The scanner's next token of `data` and how far it reaches; `None` for an unclosed quote.
fn token(data: &str) -> Option<(String, usize)> {
    if let Some(newline) = data.find('\n') {
        for quote in ["\"\"\"", "\""] {
            let Some(open) = data.find(quote).filter(|&at| at < newline) else {
                continue;
            };
            let inner = open + quote.len();
            let close = inner + data[inner..].find(quote)?;
            return Some((
                format!("{}{}", &data[..open], &data[inner..close]),
                close + quote.len(),
            ));
        }
        let line = &data[..newline];
        return Some((
            line.strip_suffix('\r').unwrap_or(line).to_owned(),
            newline + 1,
        ));
    }
    Some((
        data.strip_suffix('\r').unwrap_or(data).to_owned(),
        data.len(),
    ))
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
/// (zero-width, direction marks, the soft hyphen, tag characters), not a private-use
/// character, not a space other than U+0020. Go also drops unassigned code points, which this
/// keeps: a value holding one is no valid model name and no blob reference, which the check
/// refuses as a file read anyway.
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

    fn listed(commands: Vec<Command>) -> Vec<(String, String, String)> {
        commands
            .into_iter()
            .map(|c| (c.name, c.value, c.text))
            .collect()
    }

    /// As 0.2.0 on reads `text`.
    fn read(text: &str) -> Vec<(String, String, String)> {
        listed(machine(text, true))
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

    #[test]
    fn before_0_2_a_value_is_not_trimmed_before_its_quotes_are_looked_at() {
        let text = "SYSTEM  \"x\n\u{200b}FROM /etc/passwd\n";
        assert_eq!(read(text), []);
        assert_eq!(
            listed(machine(text, false)),
            [
                one("system", " \"x", "SYSTEM  \"x"),
                one("from", "/etc/passwd", "\u{200b}FROM /etc/passwd"),
            ]
        );
        assert_eq!(
            listed(commands(text)),
            [
                one("system", " \"x", "SYSTEM  \"x"),
                one("from", "/etc/passwd", "\u{200b}FROM /etc/passwd"),
            ]
        );
    }

    #[test]
    fn the_line_scanner_ends_a_token_at_its_closing_quote() {
        for text in [
            "#\"\"FROM /etc/passwd\n",
            "SYSTEM \"x\"FROM /etc/passwd\n",
            "SYSTEM \"\"\"x\"\"\"FROM /etc/passwd\n",
        ] {
            assert_eq!(
                listed(scanned(text)),
                [one("from", "/etc/passwd", "FROM /etc/passwd")],
                "{text:?}"
            );
        }
        // A quote opened on a line runs to its close, lines included; only a space separates
        // a command; `\r\n` ends a line, a lone `\r` does not; a quote on the last line, with
        // no line break after it, is not taken out.
        assert_eq!(
            listed(scanned(
                "SYSTEM \"\"\"a\nFROM /etc/passwd\n\"\"\"\nFROM\t/x\r\nFROM m\r\nADAPTER a\rb\nFROM \"q\""
            )),
            [
                one("from", "m", "FROM m"),
                one("adapter", "a\rb", "ADAPTER a\rb"),
                one("from", "\"q\"", "FROM \"q\""),
            ]
        );
        // A quote never closed fails the scanner: what came before it stands.
        assert_eq!(
            listed(scanned("FROM m\nSYSTEM \"x\nFROM /etc/passwd\n")),
            [one("from", "m", "FROM m")]
        );
    }

    #[test]
    fn every_reading_counts_and_each_command_once() {
        // The state machines see an open quote that never closes; the scanner two commands.
        assert_eq!(
            listed(commands("FROM m\nSYSTEM \"x\"FROM /a\n")),
            [one("from", "m", "FROM m"), one("from", "/a", "FROM /a")]
        );
    }
}
