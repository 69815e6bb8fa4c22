//! Reading a request body the way Ollama's Go server does, so a policy cannot be dodged by
//! spelling.
//!
//! Go's `encoding/json` matches object keys to struct fields *case-insensitively* (with
//! Unicode case folding: `MODEL`, `modeL` and `inſecure` with a long s all set the field) and,
//! when a key repeats, the *last* value wins. A policy that read `model` with a map lookup
//! would be dodged by `{"model":"llama3","MODEL":"attacker.example/x/y"}`. So the top-level
//! entries are read in order, duplicates kept, keys folded; a field's value is the last entry
//! whose folded key matches.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// The top-level members of a JSON object, in source order, duplicates kept.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Go's case folding for ASCII and the two non-ASCII letters that fold onto ASCII ones
/// (`ſ` U+017F → `s`, Kelvin sign U+212A → `k`).
fn fold_char(c: char) -> char {
    match c {
        '\u{17F}' => 's',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    }
}

/// `key` folded with [`fold_char`] (the reference [`folds_to`] is tested against).
#[cfg(test)]
fn fold(key: &str) -> String {
    key.chars().map(fold_char).collect()
}

/// Whether `key` folds to `name` (lower-case ASCII), without building the folded key: a
/// request body's keys are compared with each field a policy reads.
pub(super) fn folds_to(key: &str, name: &str) -> bool {
    let mut want = name.chars();
    key.chars().all(|c| want.next() == Some(fold_char(c))) && want.next().is_none()
}

impl Members {
    /// Parses a body; `None` when it is not a JSON object (Ollama answers 400 itself).
    pub(crate) fn parse(body: &[u8]) -> Option<Members> {
        serde_json::from_slice(body).ok()
    }

    /// The value Go would decode into the field named `name` (lower-case ASCII): the last
    /// member whose key folds to it.
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| folds_to(k, name))
            .map(|(_, v)| v)
    }

    /// The field as a string, when it is one.
    pub(crate) fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// Whether the field is JSON `true`.
    pub(crate) fn is_true(&self, name: &str) -> bool {
        // Go decodes every occurrence in order into the bool: `true`/`false` set it, `null`
        // leaves it as it was (so `{"x":true,"x":null}` is true).
        let mut set = false;
        for (k, v) in &self.0 {
            if folds_to(k, name) {
                match v {
                    Value::Bool(b) => set = *b,
                    Value::Null => {}
                    _ => set = false,
                }
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_like_go_and_the_last_duplicate_wins() {
        let m =
            Members::parse(br#"{"model":"llama3","MODEL":"a/b/c","Model":"attacker.example/x/y"}"#)
                .unwrap();
        assert_eq!(m.str("model"), Some("attacker.example/x/y"));
        let m = Members::parse("{\"in\u{17F}ecure\":true}".as_bytes()).unwrap();
        assert!(m.is_true("insecure"));
        let m = Members::parse("{\"\u{212A}eep_alive\":1}".as_bytes()).unwrap();
        assert!(m.get("keep_alive").is_some());
        let m = Members::parse(br#"{"model":"a","model":"b"}"#).unwrap();
        assert_eq!(m.str("model"), Some("b"));
        // A bool keeps its value through a later null, as Go's decoder does.
        let m = Members::parse(br#"{"insecure":true,"INSECURE":null}"#).unwrap();
        assert!(m.is_true("insecure"));
        let m = Members::parse(br#"{"insecure":true,"insecure":false}"#).unwrap();
        assert!(!m.is_true("insecure"));
    }

    proptest::proptest! {
        /// The comparison without an allocation is the comparison of the folded key, for any
        /// key (ASCII, the two letters that fold onto ASCII, and any other character) and any
        /// field name.
        #[test]
        fn folding_in_place_is_folding_then_comparing(
            key in "[a-zA-Z_\u{17F}\u{212A}\u{130}\u{131}é]{0,8}",
            name in "[a-z_ks]{0,8}",
        ) {
            proptest::prop_assert_eq!(folds_to(&key, &name), fold(&key) == name);
            let same = fold(&key);
            if same.is_ascii() {
                proptest::prop_assert!(folds_to(&key, &same));
            }
        }
    }

    #[test]
    fn escaped_keys_are_decoded_before_matching() {
        let m = Members::parse(br#"{"\u005fdebug_render_only":true}"#).unwrap();
        assert!(m.is_true("_debug_render_only"));
    }

    #[test]
    fn non_objects_and_invalid_json_are_not_members() {
        for body in [&b"[1]"[..], b"\"x\"", b"{not json", b"", b"\xff\xfe"] {
            assert_eq!(Members::parse(body), None, "{body:?}");
        }
        assert!(!Members::parse(br#"{"insecure":"true"}"#)
            .unwrap()
            .is_true("insecure"));
    }
}
