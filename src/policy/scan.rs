//! A streaming check of one top-level boolean switch of a JSON object, for bodies too large
//! to buffer.
//!
//! Generation bodies can be arbitrarily large (base64 images), so the policy stage reads
//! only a prefix; without this scanner, padding the body past that prefix hid
//! `"_debug_render_only": true`. The scanner sees the rest as it streams, keeping only the
//! tokenizer's state (depth, string and escape state, the current top-level key up to a small
//! cap): values of any size pass through without being stored.
//!
//! It decides the way Ollama's Go server would: keys are decoded (escapes, `\uXXXX`,
//! surrogate pairs) and folded like `encoding/json` folds them (see `body.rs`); the last
//! duplicate wins, and a `null` leaves the field as it was (Go's rule for a `bool`). The
//! answer is only known once the top-level object closes — and Ollama cannot act before it
//! has that closing brace either, which is what lets the stage still refuse in time.

use super::body::folds_to;

/// The longest decoded key kept: longer keys cannot fold to the (short) key looked for.
const KEY_CAP: usize = 64;

/// JSON's whitespace.
static WHITESPACE: [bool; 256] = byte_class(false);
/// Inside a nested value, outside its strings: what the scan passes over without a state change
/// (everything but brackets, quotes and control bytes other than whitespace).
static NESTED_QUIET: [bool; 256] = byte_class(true);

const fn byte_class(nested: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        t[i] = ws || (nested && b >= 0x20 && !matches!(b, b'"' | b'{' | b'[' | b'}' | b']'));
        i += 1;
    }
    t
}
/// Go's `encoding/json` refuses deeper nesting.
const MAX_DEPTH: u32 = 10_000;

/// What the scanner knows so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The top-level object has not closed yet.
    Pending,
    /// The object closed and its switch is `true`.
    Flagged,
    /// The object closed without the switch set, or the body is not a JSON object.
    Clear,
}

/// Where the tokenizer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level value.
    Start,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,`: a key.
    Key,
    /// Inside a top-level key.
    KeyString,
    /// After a key: `:`.
    Colon,
    /// After `:`: a value.
    Value,
    /// Inside a top-level string value.
    ValueString,
    /// Inside a bare top-level value (`true`, a number, …).
    Literal,
    /// Inside a nested object or array (`depth` > 1).
    Nested,
    /// After a value: `,` or `}`.
    AfterValue,
    /// The object closed; what follows is ignored (Go's decoder stops there too).
    Done,
    /// Not a JSON object Go would accept.
    Invalid,
}

/// Escape state inside a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    /// Plain characters.
    None,
    /// After `\`.
    Backslash,
    /// Inside `\uXXXX`, with this many hex digits still to come.
    Hex(u8),
}

/// The streaming tokenizer (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Scanner {
    key: &'static str,
    state: State,
    depth: u32,
    /// Inside a string of a nested value.
    nested_string: bool,
    esc: Esc,
    hex: u16,
    /// A high surrogate waiting for its low half (keys only).
    high: Option<u16>,
    /// The current key, decoded, up to [`KEY_CAP`] bytes.
    key_buf: Vec<u8>,
    key_over: bool,
    /// Whether the current member's key is the switch.
    matches: bool,
    lit: [u8; 8],
    lit_len: usize,
    /// The switch's value after the members seen so far.
    flag: bool,
}

impl Scanner {
    /// A scanner for the top-level switch `key` (lower-case ASCII).
    pub(crate) fn new(key: &'static str) -> Self {
        Scanner {
            key,
            state: State::Start,
            depth: 0,
            nested_string: false,
            esc: Esc::None,
            hex: 0,
            high: None,
            key_buf: Vec::new(),
            key_over: false,
            matches: false,
            lit: [0; 8],
            lit_len: 0,
            flag: false,
        }
    }

    /// What is known after the bytes fed so far.
    pub(crate) fn outcome(&self) -> Scan {
        match self.state {
            State::Done if self.flag => Scan::Flagged,
            State::Done | State::Invalid => Scan::Clear,
            _ => Scan::Pending,
        }
    }

    /// Feeds the next bytes of the body (split anywhere).
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            if matches!(self.state, State::Done | State::Invalid) {
                return;
            }
            let key = self.state == State::KeyString && self.esc == Esc::None;
            if key || self.in_plain_string() {
                // Inside a string only a quote, a backslash or a control byte matters: skip the
                // run before the next one at memchr's speed, so a megabyte prompt (or a
                // decompressed one) costs a scan, not a state transition per byte.
                // A quote or a backslash right here makes the run empty: no search (a one-byte
                // key's closing quote is reached this way).
                let run = if matches!(b, b'"' | b'\\') {
                    0
                } else {
                    memchr::memchr2(b'"', b'\\', bytes).unwrap_or(bytes.len())
                };
                let skip = if bytes[..run].iter().fold(0xFF, |m, &c| m.min(c)) >= 0x20 {
                    run
                } else {
                    bytes[..run].iter().position(|&c| c < 0x20).unwrap_or(run)
                };
                if skip > 0 {
                    if key && !self.key_over {
                        // A key's plain bytes are kept (up to the cap) as one piece.
                        self.flush_high();
                        self.push(&bytes[..skip]);
                    }
                    bytes = &bytes[skip..];
                    continue;
                }
            } else if let Some(quiet) = self.quiet() {
                // Whitespace between tokens, and inside a nested value whatever is not a
                // bracket, a quote or a control byte, changes nothing either.
                let skip = bytes
                    .iter()
                    .position(|&c| !quiet[usize::from(c)])
                    .unwrap_or(bytes.len());
                if skip > 0 {
                    bytes = &bytes[skip..];
                    continue;
                }
            }
            self.byte(b);
            bytes = rest;
        }
    }

    /// The bytes that change nothing in this state, outside strings.
    fn quiet(&self) -> Option<&'static [bool; 256]> {
        match self.state {
            State::Start
            | State::KeyOrEnd
            | State::Key
            | State::Colon
            | State::Value
            | State::AfterValue => Some(&WHITESPACE),
            State::Nested if !self.nested_string => Some(&NESTED_QUIET),
            _ => None,
        }
    }

    /// Inside a value's string, not right after a backslash, where a plain byte changes
    /// nothing.
    fn in_plain_string(&self) -> bool {
        self.esc == Esc::None
            && match self.state {
                State::ValueString => true,
                State::Nested => self.nested_string,
                _ => false,
            }
    }

    fn byte(&mut self, b: u8) {
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        self.state = match self.state {
            State::Start if ws => State::Start,
            State::Start if b == b'{' => {
                self.depth = 1;
                State::KeyOrEnd
            }
            State::KeyOrEnd | State::Key | State::Colon | State::Value | State::AfterValue
                if ws =>
            {
                self.state
            }
            State::KeyOrEnd if b == b'}' => State::Done,
            State::KeyOrEnd | State::Key if b == b'"' => {
                self.key_buf.clear();
                self.key_over = false;
                self.high = None;
                State::KeyString
            }
            State::KeyString => self.key_byte(b),
            State::Colon if b == b':' => State::Value,
            State::Value => self.value_start(b),
            State::ValueString => self.value_string_byte(b),
            State::Literal => self.literal_byte(b),
            State::Nested => self.nested_byte(b),
            State::AfterValue if b == b',' => State::Key,
            State::AfterValue if b == b'}' => State::Done,
            _ => State::Invalid,
        };
    }

    fn value_start(&mut self, b: u8) -> State {
        match b {
            b'"' => {
                self.esc = Esc::None;
                State::ValueString
            }
            b'{' | b'[' => {
                self.depth = 2;
                self.nested_string = false;
                State::Nested
            }
            b't' | b'f' | b'n' | b'-' | b'0'..=b'9' => {
                self.lit[0] = b;
                self.lit_len = 1;
                State::Literal
            }
            _ => State::Invalid,
        }
    }

    /// A member's value is complete: a `true` or `false` sets the switch, `null` leaves it.
    fn assign(&mut self, value: Option<bool>) {
        if self.matches {
            if let Some(v) = value {
                self.flag = v;
            }
        }
    }

    fn literal_byte(&mut self, b: u8) -> State {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.') {
            if self.lit_len < self.lit.len() {
                self.lit[self.lit_len] = b;
            }
            self.lit_len = self.lit_len.saturating_add(1);
            return State::Literal;
        }
        let text = &self.lit[..self.lit_len.min(self.lit.len())];
        let value = match text {
            b"true" => Some(true),
            b"false" => Some(false),
            b"null" => None,
            [b'-' | b'0'..=b'9', ..] => Some(false),
            _ => return State::Invalid,
        };
        self.assign(value);
        // The delimiter belongs to what follows the value.
        self.state = State::AfterValue;
        self.byte(b);
        self.state
    }

    /// One byte of a string whose content does not matter: `None` when Go would reject it,
    /// `Some(true)` at its closing quote.
    fn skip_string_byte(&mut self, b: u8) -> Option<bool> {
        match self.esc {
            Esc::Backslash | Esc::Hex(_) => self.esc = Esc::None,
            Esc::None if b == b'\\' => self.esc = Esc::Backslash,
            Esc::None if b == b'"' => return Some(true),
            Esc::None if b < 0x20 => return None,
            Esc::None => {}
        }
        Some(false)
    }

    fn value_string_byte(&mut self, b: u8) -> State {
        match self.skip_string_byte(b) {
            None => State::Invalid,
            Some(false) => State::ValueString,
            Some(true) => {
                // A string is no boolean: Go rejects the body and never sets the switch.
                self.assign(Some(false));
                State::AfterValue
            }
        }
    }

    fn nested_byte(&mut self, b: u8) -> State {
        if self.nested_string {
            match self.skip_string_byte(b) {
                None => return State::Invalid,
                Some(end) => self.nested_string = !end,
            }
            return State::Nested;
        }
        match b {
            b'"' => {
                self.nested_string = true;
                self.esc = Esc::None;
            }
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return State::Invalid;
                }
            }
            b'}' | b']' => {
                self.depth -= 1;
                if self.depth == 1 {
                    self.assign(Some(false));
                    return State::AfterValue;
                }
            }
            _ if b < 0x20 && !matches!(b, b' ' | b'\t' | b'\n' | b'\r') => return State::Invalid,
            _ => {}
        }
        State::Nested
    }
}

mod key;

#[cfg(test)]
mod tests;
