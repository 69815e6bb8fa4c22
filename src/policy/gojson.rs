//! Reading a request body's top-level object exactly as Ollama reads it.
//!
//! Ollama's handlers decode a body with gin's `ShouldBindJSON`, that is Go's
//! `json.NewDecoder(body).Decode(&req)`. A policy that reads the body with a stricter or
//! different parser can be dodged: whatever that parser refuses while Go accepts passes
//! unjudged, and Ollama acts on it. What Go's decoder does, and this reader with it:
//!
//! - it reads the **first** JSON value and ignores whatever follows it (`{...} x`,
//!   `{...}{...}`);
//! - it replaces each byte of invalid UTF-8 inside a string with U+FFFD, and so every lone or
//!   broken UTF-16 surrogate escape (`\ud800`), instead of refusing the body;
//! - it nests up to 10 000 levels deep;
//! - it skips the values of members no field takes without converting them (`1e400` is
//!   fine there);
//! - a `null` leaves a field as it was, so in `{"model":"x","model":null}` the model is `x`.
//!
//! Everything Go refuses (a syntax error, a control character in a string, a bad escape, a
//! top-level value that is not an object or `null`) is refused here too, with the byte
//! offset where reading stopped. No crate decodes JSON Go's way, hence this reader: it keeps
//! only where each top-level member's key and value lie, and decodes a string when a policy
//! asks for it.

use std::borrow::Cow;
use std::fmt;

/// The bytes of a string read one by one before memchr takes over.
const SHORT: usize = 16;

/// Go's `encoding/json` refuses deeper nesting.
const MAX_DEPTH: usize = 10_000;

/// Why a body is not one Go's decoder would take into a request struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unreadable {
    /// What was wrong.
    pub(crate) what: &'static str,
    /// The byte offset where reading stopped.
    pub(crate) at: usize,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

/// A top-level member's value, as far as a policy reads one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Raw<'a> {
    /// A string: the bytes between its quotes, escapes not yet decoded.
    Str(&'a [u8]),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// A number, an array or an object.
    Other,
}

/// A top-level member: its key decoded, its value where it lies.
pub(crate) type Member<'a> = (Cow<'a, str>, Raw<'a>);

/// The top-level members of `body`'s first JSON value, in source order (duplicates kept):
/// each key decoded, each value where it lies. `null` as the value gives no members (Go then
/// leaves the request empty).
#[cfg(test)]
pub(crate) fn members(body: &[u8]) -> Result<Vec<Member<'_>>, Unreadable> {
    let mut reading = Reading::new(body, |_| true);
    loop {
        if let Some(done) = reading.step(usize::MAX) {
            return done;
        }
    }
}

/// Reading a body's top-level members a step at a time, so a large body is read in slices
/// between which the worker serves its other connections. Only the members whose key `keep`
/// takes are kept (the others are read and checked all the same): a body of a hundred
/// thousand one-byte members then costs no list of them. `keep` is given the key as it lies in
/// the body (its escapes not decoded: [`decode`] it when it has any).
pub(crate) struct Reading<'a> {
    r: Reader<'a>,
    keep: fn(&[u8]) -> bool,
    out: Vec<Member<'a>>,
    at: At<'a>,
    /// Whether each container open inside the value being skipped is an object.
    open: Vec<bool>,
}

/// Where a [`Reading`] stands.
enum At<'a> {
    /// Before the first value.
    Start,
    /// At a member: after the object's `{` or a `,`.
    Member,
    /// Inside a value no policy reads, under this raw key, its containers in `open`.
    Skipping(&'a [u8]),
    /// Read (or refused): nothing more to do.
    Done,
}

impl<'a> Reading<'a> {
    pub(crate) fn new(body: &'a [u8], keep: fn(&[u8]) -> bool) -> Self {
        Reading {
            r: Reader { b: body, i: 0 },
            keep,
            out: Vec::new(),
            at: At::Start,
            open: Vec::new(),
        }
    }

    /// Reads on until the end, a refusal, or until `budget` more bytes have been read (then
    /// `None`: call again to go on). A step stops only between two values, so it may read
    /// past its budget by one scalar (a string is read at memchr's speed).
    pub(crate) fn step(&mut self, budget: usize) -> Option<Result<Vec<Member<'a>>, Unreadable>> {
        // At least a byte a step, so a step of nothing still gets on.
        let limit = self.r.i.saturating_add(budget.max(1));
        let done = self.read(limit);
        if !matches!(done, Ok(false)) {
            self.at = At::Done;
        }
        match done {
            Ok(false) => None,
            Ok(true) => Some(Ok(std::mem::take(&mut self.out))),
            Err(e) => Some(Err(e)),
        }
    }

    /// [`step`](Self::step)'s work: `Ok(true)` at the end, `Ok(false)` when paused at `limit`.
    fn read(&mut self, limit: usize) -> Result<bool, Unreadable> {
        let r = &mut self.r;
        loop {
            match self.at {
                At::Done => return Ok(true),
                At::Start => {
                    r.ws();
                    match r.peek() {
                        None => return Err(r.err("an empty body")),
                        Some(b'n') => {
                            r.literal(b"null")?;
                            return Ok(true);
                        }
                        Some(b'{') => r.i += 1,
                        Some(_) => return Err(r.err("not a JSON object")),
                    }
                    r.ws();
                    if r.peek() == Some(b'}') {
                        return Ok(true);
                    }
                    self.at = At::Member;
                }
                At::Member => {
                    if r.i >= limit {
                        return Ok(false);
                    }
                    r.ws();
                    let key = r.string()?;
                    r.ws();
                    r.expect(b':')?;
                    r.ws();
                    let value = match r.peek() {
                        Some(b'"') => Raw::Str(r.string_raw()?),
                        Some(b't') => r.literal(b"true").map(|()| Raw::Bool(true))?,
                        Some(b'f') => r.literal(b"false").map(|()| Raw::Bool(false))?,
                        Some(b'n') => r.literal(b"null").map(|()| Raw::Null)?,
                        Some(b'-' | b'0'..=b'9') => r.number().map(|()| Raw::Other)?,
                        _ => {
                            self.at = At::Skipping(key);
                            continue;
                        }
                    };
                    if r.member_end(key, value, self.keep, &mut self.out)? {
                        return Ok(true);
                    }
                }
                At::Skipping(key) => {
                    if !r.skip_value(&mut self.open, limit)? {
                        return Ok(false);
                    }
                    self.at = At::Member;
                    if r.member_end(key, Raw::Other, self.keep, &mut self.out)? {
                        return Ok(true);
                    }
                }
            }
        }
    }
}

/// A string's content (the bytes between its quotes, read by [`Reader`], so its escapes
/// are well formed) decoded as Go decodes it.
pub(crate) fn decode(raw: &[u8]) -> Cow<'_, str> {
    if !raw.contains(&b'\\') {
        if let Ok(s) = std::str::from_utf8(raw) {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let run = raw[i..]
            .iter()
            .position(|&b| b == b'\\')
            .map_or(raw.len(), |n| i + n);
        push_lossy(&mut out, &raw[i..run]);
        i = run;
        if i == raw.len() {
            break;
        }
        let c = raw[i + 1];
        i += 2;
        let ch = match c {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = hex4(&raw[i..i + 4]);
                i += 4;
                if (0xD800..0xDC00).contains(&unit)
                    && raw.get(i..i + 2) == Some(b"\\u")
                    && raw.len() >= i + 6
                {
                    let low = hex4(&raw[i + 2..i + 6]);
                    if (0xDC00..0xE000).contains(&low) {
                        i += 6;
                        let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        out.push(char::from_u32(c).unwrap_or('\u{FFFD}'));
                        continue;
                    }
                }
                // A surrogate without its other half is U+FFFD; what follows is read on
                // its own.
                char::from_u32(unit).unwrap_or('\u{FFFD}')
            }
            // `"`, `\` and `/`: the reader let no other escape through.
            c => char::from(c),
        };
        out.push(ch);
    }
    Cow::Owned(out)
}

/// `bytes` appended with every byte that is not part of valid UTF-8 as U+FFFD, one per byte
/// (Go's rule; Rust's lossy conversion folds a broken sequence into one).
fn push_lossy(out: &mut String, mut bytes: &[u8]) {
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => return out.push_str(s),
            Err(e) => {
                let (good, bad) = bytes.split_at(e.valid_up_to());
                // `good` is valid UTF-8 by `valid_up_to`.
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                out.push('\u{FFFD}');
                bytes = &bad[1..];
            }
        }
    }
}

/// Four hex digits the reader checked.
fn hex4(d: &[u8]) -> u32 {
    d.iter().fold(0, |n, &b| {
        (n << 4) | char::from(b).to_digit(16).unwrap_or(0)
    })
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &'static str) -> Unreadable {
        Unreadable { what, at: self.i }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), Unreadable> {
        if self.peek() != Some(c) {
            return Err(self.err(match c {
                b':' => "a key not followed by `:`",
                _ => "an unexpected character",
            }));
        }
        self.i += 1;
        Ok(())
    }

    fn literal(&mut self, lit: &[u8]) -> Result<(), Unreadable> {
        if !self.b[self.i..].starts_with(lit) {
            return Err(self.err("an invalid literal"));
        }
        self.i += lit.len();
        Ok(())
    }

    /// A top-level member read: kept in `out` when `keep` takes its key, then the `,` or the
    /// `}` after it (`true`: the object ends here).
    fn member_end(
        &mut self,
        key: &'a [u8],
        value: Raw<'a>,
        keep: fn(&[u8]) -> bool,
        out: &mut Vec<Member<'a>>,
    ) -> Result<bool, Unreadable> {
        if keep(key) {
            out.push((decode(key), value));
        }
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                Ok(false)
            }
            // What follows the object is not read (Go's decoder stops there too).
            Some(b'}') => Ok(true),
            _ => Err(self.err("a member not followed by `,` or `}`")),
        }
    }

    /// A key: a string, the reader at its opening quote; the bytes between its quotes.
    fn string(&mut self) -> Result<&'a [u8], Unreadable> {
        if self.peek() != Some(b'"') {
            return Err(self.err("a key that is not a string"));
        }
        self.string_raw()
    }

    /// A string, the reader at its opening quote: the bytes between its quotes, after
    /// checking what Go checks (no control characters, well-formed escapes).
    fn string_raw(&mut self) -> Result<&'a [u8], Unreadable> {
        self.i += 1;
        let start = self.i;
        loop {
            // The run before the next quote or backslash: its first bytes one by one (a key is
            // mostly a few bytes), the rest at memchr's speed, then checked for control
            // characters in one pass the compiler vectorizes.
            let rest = &self.b[self.i..];
            let head = rest.len().min(SHORT);
            match rest[..head]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
            {
                Some(n) if rest[n] < 0x20 => {
                    self.i += n;
                    return Err(self.err("a control character in a string"));
                }
                Some(n) => self.i += n,
                None => {
                    let run = memchr::memchr2(b'"', b'\\', &rest[head..])
                        .map_or(rest.len(), |n| head + n);
                    if rest[head..run]
                        .iter()
                        .fold(false, |bad, &c| bad | (c < 0x20))
                    {
                        self.i += rest.iter().position(|&c| c < 0x20).unwrap_or(run);
                        return Err(self.err("a control character in a string"));
                    }
                    self.i += run;
                }
            }
            match self.peek() {
                None => return Err(self.err("an unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(&self.b[start..self.i - 1]);
                }
                // A backslash.
                Some(_) => match self.b.get(self.i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                    Some(b'u') => {
                        let digits = self.b.get(self.i + 2..self.i + 6);
                        if !digits.is_some_and(|d| d.iter().all(u8::is_ascii_hexdigit)) {
                            return Err(self.err("an invalid \\u escape"));
                        }
                        self.i += 6;
                    }
                    _ => return Err(self.err("an invalid escape")),
                },
            }
        }
    }

    /// A number as JSON (and Go) spells it: `-`? (`0` | `[1-9][0-9]*`) (`.[0-9]+`)?
    /// (`[eE][+-]?[0-9]+`)?; never converted.
    fn number(&mut self) -> Result<(), Unreadable> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("an invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.err("an invalid number"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.err("an invalid number"));
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// One value a policy does not read (a number, an array, an object, or any scalar
    /// inside them), checked as Go checks it, without recursion: `open` holds whether each
    /// open container is an object. The top-level object is the first level. `Ok(false)`:
    /// paused at `limit` before a value inside a container, `open` kept to go on from.
    fn skip_value(&mut self, open: &mut Vec<bool>, limit: usize) -> Result<bool, Unreadable> {
        loop {
            if !open.is_empty() && self.i >= limit {
                return Ok(false);
            }
            // A value.
            self.ws();
            match self.peek() {
                Some(c @ (b'{' | b'[')) => {
                    self.i += 1;
                    if open.len() + 2 > MAX_DEPTH {
                        return Err(self.err("nesting deeper than 10000 levels"));
                    }
                    let object = c == b'{';
                    open.push(object);
                    self.ws();
                    if self.peek() == Some(if object { b'}' } else { b']' }) {
                        self.i += 1;
                        open.pop();
                    } else {
                        if object {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string_raw()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(self.err("an invalid value")),
            }
            // After a value: close containers until one continues with `,`.
            loop {
                let Some(&object) = open.last() else {
                    return Ok(true);
                };
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if object {
                            self.ws();
                            self.member_key()?;
                        }
                        break;
                    }
                    Some(b'}') if object => {
                        self.i += 1;
                        open.pop();
                    }
                    Some(b']') if !object => {
                        self.i += 1;
                        open.pop();
                    }
                    _ => return Err(self.err("a value not followed by `,` or its closing bracket")),
                }
            }
        }
    }

    /// A nested member's `"key":`.
    fn member_key(&mut self) -> Result<(), Unreadable> {
        self.string()?;
        self.ws();
        self.expect(b':')
    }
}

#[cfg(test)]
mod tests;
