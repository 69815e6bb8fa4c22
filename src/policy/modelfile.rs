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
//! (0.1.39 to 0.1.42 also read a text starting with U+FFFD as UTF-16, dropping every NUL.)
//!
//! A Modelfile a parser rejects (an unknown command, a stray character in a command) creates
//! nothing; what came before the rejected command is still returned, so the check never reads
//! less.

use std::borrow::Cow;

/// One command: its name in lower case (`from`, `adapter`, ...), its value as the server
/// reads it, and its text as sent (for the detection log; quotes taken out by the line
/// scanner).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Command<'a> {
    pub(super) name: &'static str,
    pub(super) value: String,
    pub(super) text: Cow<'a, str>,
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

/// The `FROM` and `ADAPTER` commands of `text` as any of the parsers reads them: each
/// reading's in order, one after the other (a command several read is there several times),
/// each reading stopped once it has more than `most`.
/// The work is linear in the text: no command but these allocates, and a quoted scanner token
/// is put together only when it starts with one of them.
pub(super) fn commands(text: &str, most: usize) -> Vec<Command<'_>> {
    // 0.1.39 to 0.1.42 took a text starting with U+FFFD for UTF-16: they dropped the U+FFFDs
    // in front and every NUL after.
    let utf16: Vec<Command<'static>> = text
        .strip_prefix('\u{fffd}')
        .map(|rest| rest.trim_start_matches('\u{fffd}').replace('\0', ""))
        .map(|rest| {
            machine(&rest, false, false, most)
                .into_iter()
                .map(Command::into_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut all = machine(text, true, false, most);
    all.extend(machine(text, false, false, most));
    all.extend(utf16);
    all.extend(scanned(text, most));
    all
}

impl Command<'_> {
    fn into_owned(self) -> Command<'static> {
        Command {
            name: self.name,
            value: self.value,
            text: Cow::Owned(self.text.into_owned()),
        }
    }
}

/// The commands of `text` as the state machine reads them; `trim`: the value is trimmed
/// before its quotes are looked at (0.2.0 on); `every`: every command, else only `FROM` and
/// `ADAPTER`.
fn machine(text: &str, trim: bool, every: bool, most: usize) -> Vec<Command<'_>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut state = State::Nil;
    let mut buf = String::new();
    let mut name = "";
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if out.len() > most {
            break;
        }
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
                    let Some(known) = COMMANDS.iter().find(|k| k.eq_ignore_ascii_case(&buf)) else {
                        break;
                    };
                    name = known;
                    buf.clear();
                    state = if matches!(name, "parameter" | "message") {
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
                        if every || matches!(name, "from" | "adapter") {
                            out.push(Command {
                                name,
                                value: value.to_owned(),
                                text: Cow::Borrowed(text[start..i].trim_matches(space)),
                            });
                        }
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
        if let Some(value) = unquote(seen).filter(|_| every || matches!(name, "from" | "adapter")) {
            out.push(Command {
                name,
                value: value.to_owned(),
                text: Cow::Borrowed(text[start..].trim_matches(space)),
            });
        }
    }
    out
}

/// The buffer of the line scanner (Go's `bufio.Scanner`, given `MaxScanTokenSize`): the bytes
/// one call of its split function sees at most.
const SCAN_BUFFER: usize = 64 << 10;

/// The `FROM` and `ADAPTER` commands of `text` as the line scanner (up to 0.1.33) reads them:
/// Go's `bufio.Scanner` over the text with a buffer of [`SCAN_BUFFER`] bytes, filled as Go fills
/// it from a `strings.Reader`, so that a quote whose close lies past what the buffer holds, or
/// that never closes, is read as Go reads it (not as a quote).
fn scanned(text: &str, most: usize) -> Vec<Command<'_>> {
    let data = text.as_bytes();
    let positions = Positions::of(data);
    let mut marks = positions.marks();
    let mut out = Vec::new();
    // The buffer holds data[base..base + end]; the split function sees [start, end).
    let (mut base, mut start, mut end, mut eof) = (0, 0, 0, false);
    while out.len() <= most {
        if end > start || eof {
            match split(data, &mut marks, base + start, base + end, eof) {
                Split::Token(advance, token) => {
                    start += advance;
                    command_of(token, &mut out);
                    continue;
                }
                // The scanner fails: nothing is created; what came before stands.
                Split::Failed => break,
                Split::More if eof => break,
                Split::More => {}
            }
        }
        if start > 0 && (end == SCAN_BUFFER || start > SCAN_BUFFER / 2) {
            base += start;
            end -= start;
            start = 0;
        }
        if end == SCAN_BUFFER {
            // A token longer than the buffer: the scanner fails.
            break;
        }
        let n = (data.len() - (base + end)).min(SCAN_BUFFER - end);
        if n == 0 {
            eof = true;
        }
        end += n;
    }
    out
}

/// Where the text's line breaks, `"` and `"""` are, so that each call of the split function
/// costs a step along these lists, not a scan of the buffer (a megabyte of short lines would
/// otherwise be a scan of 64 KiB per line). The scanner only moves forward, so each list is
/// walked by cursors that only move forward: one for where a token starts, one for where a
/// quote opened after it.
struct Marks<'a> {
    newlines: Cursor<'a>,
    quotes: [Cursor<'a>; 2],
    triples: [Cursor<'a>; 2],
}

/// The positions [`Marks`] walks.
struct Positions {
    newlines: Vec<usize>,
    quotes: Vec<usize>,
    triples: Vec<usize>,
}

impl Positions {
    fn of(data: &[u8]) -> Positions {
        let at = |b: u8| -> Vec<usize> { (0..data.len()).filter(|&i| data[i] == b).collect() };
        let quotes = at(b'"');
        let triples = quotes
            .iter()
            .copied()
            .filter(|&i| data.get(i..i + 3) == Some(&b"\"\"\""[..]))
            .collect();
        Positions {
            newlines: at(b'\n'),
            quotes,
            triples,
        }
    }

    fn marks(&self) -> Marks<'_> {
        fn cursor(list: &[usize]) -> Cursor<'_> {
            Cursor { list, at: 0 }
        }
        Marks {
            newlines: cursor(&self.newlines),
            quotes: [cursor(&self.quotes), cursor(&self.quotes)],
            triples: [cursor(&self.triples), cursor(&self.triples)],
        }
    }
}

/// Positions in order, and how far they have been walked.
struct Cursor<'a> {
    list: &'a [usize],
    at: usize,
}

impl Cursor<'_> {
    /// The first position at or after `from`; `from` never goes back.
    fn first(&mut self, from: usize) -> Option<usize> {
        while self.list.get(self.at).is_some_and(|&p| p < from) {
            self.at += 1;
        }
        self.list.get(self.at).copied()
    }
}

/// What the scanner's split function answers.
enum Split<'a> {
    /// A token, and how far the scanner moves.
    Token(usize, Cow<'a, [u8]>),
    /// It needs more bytes (or, at the end, there are none).
    More,
    /// An error: a quote still open at the end.
    Failed,
}

/// The split function on `data[lo..hi]`: a token between quotes (`"""`, else `"`) when one
/// opens before the first line break, else a line.
fn split<'a>(data: &'a [u8], marks: &mut Marks<'_>, lo: usize, hi: usize, eof: bool) -> Split<'a> {
    let newline = marks.newlines.first(lo).filter(|&nl| nl < hi);
    for (cursors, len) in [(&mut marks.triples, 3), (&mut marks.quotes, 1)] {
        let [opens, closes] = cursors;
        let Some(open) = opens
            .first(lo)
            .filter(|&at| newline.is_some_and(|nl| at < nl))
        else {
            continue;
        };
        let inner = open + len;
        match closes.first(inner).filter(|&close| close + len <= hi) {
            Some(close) => {
                let advance = close + len - lo;
                // Put together only a token that can be a command the check reads.
                let mut head = [0u8; 8];
                for (h, b) in head
                    .iter_mut()
                    .zip(data[lo..open].iter().chain(&data[inner..close]))
                {
                    *h = b.to_ascii_lowercase();
                }
                if !(head.starts_with(b"from ") || head.starts_with(b"adapter ")) {
                    return Split::Token(advance, Cow::Borrowed(&[]));
                }
                let mut token = data[lo..open].to_vec();
                token.extend_from_slice(&data[inner..close]);
                return Split::Token(advance, Cow::Owned(token));
            }
            None if eof => return Split::Failed,
            // Go tries the next quote, then a line.
            None => {}
        }
    }
    let line = |to: usize| {
        let l = &data[lo..to];
        Cow::Borrowed(l.strip_suffix(b"\r").unwrap_or(l))
    };
    match newline {
        Some(nl) => Split::Token(nl + 1 - lo, line(nl)),
        None if eof && hi > lo => Split::Token(hi - lo, line(hi)),
        None => Split::More,
    }
}

/// A scanner token's command, when it is a `FROM` or an `ADAPTER` with a value.
fn command_of<'a>(token: Cow<'a, [u8]>, out: &mut Vec<Command<'a>>) {
    let Some(space) = token.iter().position(|&b| b == b' ') else {
        return;
    };
    let Some(name) = ["from", "adapter"]
        .into_iter()
        .find(|n| token[..space].eq_ignore_ascii_case(n.as_bytes()))
    else {
        return;
    };
    // Cut at ASCII bytes, a token of the (UTF-8) text is UTF-8.
    let text: Cow<'a, str> = match token {
        Cow::Borrowed(b) => String::from_utf8_lossy(b),
        Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
    };
    let value = text[space + 1..].trim().to_owned();
    let text = match text {
        Cow::Borrowed(t) => Cow::Borrowed(t.trim()),
        Cow::Owned(t) => Cow::Owned(t.trim().to_owned()),
    };
    out.push(Command { name, value, text });
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
            .map(|c| (c.name.to_owned(), c.value, c.text.into_owned()))
            .collect()
    }

    /// As 0.2.0 on reads `text`.
    fn read(text: &str) -> Vec<(String, String, String)> {
        listed(machine(text, true, true, usize::MAX))
    }

    /// Each command once, in the order first read.
    fn distinct(commands: Vec<Command>) -> Vec<(String, String, String)> {
        let mut out = listed(commands);
        let mut seen = std::collections::HashSet::new();
        out.retain(|c| seen.insert(c.clone()));
        out
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
            listed(machine(text, false, true, usize::MAX)),
            [
                one("system", " \"x", "SYSTEM  \"x"),
                one("from", "/etc/passwd", "\u{200b}FROM /etc/passwd"),
            ]
        );
        assert_eq!(
            distinct(commands(text, usize::MAX)),
            [one("from", "/etc/passwd", "\u{200b}FROM /etc/passwd")]
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
                listed(scanned(text, usize::MAX)),
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
            , usize::MAX)),
            [
                one("from", "m", "FROM m"),
                one("adapter", "a\rb", "ADAPTER a\rb"),
                one("from", "\"q\"", "FROM \"q\""),
            ]
        );
        // A quote not closed before the end is no quote while a line break follows it (Go's
        // scanner asks for more bytes, then reads a line); `"""` never closed is `""` and the
        // rest.
        for text in [
            "FROM m\nSYSTEM \"x\nFROM /etc/passwd\n",
            "FROM m\nSYSTEM \"\"\"x\nFROM /etc/passwd\n",
        ] {
            assert_eq!(
                listed(scanned(text, usize::MAX)),
                [
                    one("from", "m", "FROM m"),
                    one("from", "/etc/passwd", "FROM /etc/passwd"),
                ],
                "{text:?}"
            );
        }
        // Only on the last line, at the end, is an open quote an error: what came before
        // stands.
        assert_eq!(
            listed(scanned("FROM m\nSYSTEM \"x", usize::MAX)),
            [one("from", "m", "FROM m")]
        );
        // A `"""` whose close lies past the scanner's 64 KiB is read as `""` and lines.
        let long = format!(
            "FROM llama3.2\nSYSTEM \"\"\"be brief\nFROM /etc/passwd\n{}\"\"\"\n",
            format!("{}\n", "b".repeat(100)).repeat(700)
        );
        assert_eq!(
            listed(scanned(&long, usize::MAX)),
            [
                one("from", "llama3.2", "FROM llama3.2"),
                one("from", "/etc/passwd", "FROM /etc/passwd"),
            ]
        );
        // Within the buffer, the same block is one token.
        let short = long.replace(&format!("{}\n", "b".repeat(100)).repeat(700), "b");
        assert_eq!(
            listed(scanned(&short, usize::MAX)),
            [one("from", "llama3.2", "FROM llama3.2")]
        );
    }

    #[test]
    fn every_reading_counts_and_each_command_once() {
        // The state machines see an open quote that never closes; the scanner two commands.
        assert_eq!(
            distinct(commands("FROM m\nSYSTEM \"x\"FROM /a\n", usize::MAX)),
            [one("from", "m", "FROM m"), one("from", "/a", "FROM /a")]
        );
    }

    #[test]
    fn a_text_starting_with_a_replacement_character_is_read_as_0_1_39_read_utf_16() {
        assert_eq!(
            distinct(commands("\u{fffd}FROM /etc/passwd", usize::MAX)),
            [one("from", "/etc/passwd", "FROM /etc/passwd")]
        );
        assert_eq!(
            distinct(commands(
                "\u{fffd}\u{fffd}FROM llama3.2\nA\0DAPTER /etc/shadow\n",
                usize::MAX
            )),
            [
                one("from", "llama3.2", "FROM llama3.2"),
                one("adapter", "/etc/shadow", "ADAPTER /etc/shadow"),
            ]
        );
        // Without it, a NUL in a command ends the reading.
        assert_eq!(
            distinct(commands(
                "FROM llama3.2\nA\0DAPTER /etc/shadow\n",
                usize::MAX
            )),
            [one("from", "llama3.2", "FROM llama3.2")]
        );
    }
}
