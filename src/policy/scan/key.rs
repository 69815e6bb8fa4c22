//! Decoding a top-level key as Go's `encoding/json` does before it matches a field: string
//! escapes, `\uXXXX`, surrogate pairs (a broken pair becomes U+FFFD), then the folding of
//! `body.rs`. Only the first [`KEY_CAP`] bytes are kept: a longer key cannot match.

use super::{folds_to, Esc, Scanner, State, KEY_CAP};

impl Scanner {
    /// One byte inside a top-level key.
    pub(super) fn key_byte(&mut self, b: u8) -> State {
        match self.esc {
            Esc::None => match b {
                b'"' => {
                    self.flush_high();
                    // An ASCII key folds as ASCII does (Go's special folds, the Kelvin sign and
                    // the long s, are not ASCII).
                    self.matches = !self.key_over
                        && if self.key_buf.is_ascii() {
                            self.key_buf.eq_ignore_ascii_case(self.key.as_bytes())
                        } else {
                            folds_to(&String::from_utf8_lossy(&self.key_buf), self.key)
                        };
                    return State::Colon;
                }
                b'\\' => self.esc = Esc::Backslash,
                0..=0x1f => return State::Invalid,
                _ => {
                    self.flush_high();
                    self.push(&[b]);
                }
            },
            Esc::Backslash => {
                self.esc = Esc::None;
                let c = match b {
                    b'"' | b'\\' | b'/' => b,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        self.esc = Esc::Hex(4);
                        self.hex = 0;
                        return State::KeyString;
                    }
                    _ => return State::Invalid,
                };
                self.flush_high();
                self.push(&[c]);
            }
            Esc::Hex(left) => {
                let Some(d) = char::from(b).to_digit(16) else {
                    return State::Invalid;
                };
                // Four hex digits fit a u16; `d` < 16.
                self.hex = (self.hex << 4) | d as u16;
                if left > 1 {
                    self.esc = Esc::Hex(left - 1);
                } else {
                    self.esc = Esc::None;
                    self.unit(self.hex);
                }
            }
        }
        State::KeyString
    }

    /// A `\uXXXX` code unit: half of a surrogate pair waits for the other half.
    fn unit(&mut self, u: u16) {
        if let Some(high) = self.high.take() {
            if (0xDC00..=0xDFFF).contains(&u) {
                let c = 0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(u) - 0xDC00);
                self.push_char(char::from_u32(c).unwrap_or('\u{FFFD}'));
                return;
            }
            self.push_char('\u{FFFD}');
        }
        if (0xD800..=0xDBFF).contains(&u) {
            self.high = Some(u);
        } else {
            self.push_char(char::from_u32(u32::from(u)).unwrap_or('\u{FFFD}'));
        }
    }

    /// A high surrogate not followed by its low half is U+FFFD, as in Go.
    pub(super) fn flush_high(&mut self) {
        if self.high.take().is_some() {
            self.push_char('\u{FFFD}');
        }
    }

    fn push_char(&mut self, c: char) {
        let mut buf = [0; 4];
        self.push(c.encode_utf8(&mut buf).as_bytes());
    }

    pub(super) fn push(&mut self, bytes: &[u8]) {
        if self.key_buf.len() + bytes.len() > KEY_CAP {
            self.key_over = true;
        } else {
            self.key_buf.extend_from_slice(bytes);
        }
    }
}
