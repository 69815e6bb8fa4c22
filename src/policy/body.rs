//! Reading a request body the way Ollama's Go server does, so a policy cannot be dodged by
//! spelling.
//!
//! Go's `encoding/json` matches object keys to struct fields *case-insensitively* (with
//! Unicode case folding: `MODEL`, `modeL` and `inſecure` with a long s all set the field) and,
//! when a key repeats, the *last* value wins. A policy that read `model` with a map lookup
//! would be dodged by `{"model":"llama3","MODEL":"attacker.example/x/y"}`. So the top-level
//! entries are read in order, duplicates kept, keys folded; a field's value is the last entry
//! whose folded key matches and whose value is not `null` (Go's decoder leaves a field as it
//! was on a `null`: `{"model":"attacker.example/x/y","model":null}` pushes to
//! `attacker.example`). How the body itself is read, Go's way, is `gojson`.

use std::borrow::Cow;

use super::gojson::{self, Raw, Reading, Unreadable};

/// The top-level members of a JSON object, in source order, duplicates kept: keys decoded,
/// values where they lie in the body (a string is decoded when a policy reads it).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Members<'a>(Vec<(Cow<'a, str>, Raw<'a>)>);

/// Every field a policy reads (lower-case ASCII). A body's other members are read and checked
/// but not kept.
const FIELDS: [&str; 9] = [
    "model",
    "name",
    "insecure",
    "destination",
    "_debug_render_only",
    "from",
    "path",
    "modelfile",
    "remote_host",
];

/// The length of the longest of the [`FIELDS`].
const LONGEST_FIELD: usize = "_debug_render_only".len();

/// Whether a member under `raw` (a key as it lies in the body) may set one of the [`FIELDS`]:
/// compared byte by byte when it is plain ASCII, decoded and folded otherwise.
fn read_by_a_policy(raw: &[u8]) -> bool {
    // Each character of a field takes at most six bytes in a key (a `\uXXXX` escape): a
    // longer key names none, and is not decoded (a megabyte of broken UTF-8 would cost
    // milliseconds).
    if raw.len() > 6 * LONGEST_FIELD {
        return false;
    }
    if raw.iter().all(|&b| b.is_ascii() && b != b'\\') {
        return FIELDS
            .iter()
            .any(|f| raw.eq_ignore_ascii_case(f.as_bytes()));
    }
    let key = gojson::decode(raw);
    FIELDS.iter().any(|f| folds_to(&key, f))
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

impl<'a> Members<'a> {
    /// Reads a body as Ollama's Go server does ([`gojson`]); an error when Go's decoder
    /// would refuse it too. (The proxy reads a body a step at a time: [`Members::reading`].)
    #[cfg(test)]
    pub(crate) fn parse(body: &'a [u8]) -> Result<Members<'a>, Unreadable> {
        let mut reading = Members::reading(body);
        loop {
            if let Some(done) = reading.step(usize::MAX) {
                return done;
            }
        }
    }

    /// Reads a body as [`parse`](Self::parse) does, a step at a time (a large body is read in
    /// slices, the worker serving its other connections between them).
    pub(crate) fn reading(body: &'a [u8]) -> ReadingMembers<'a> {
        ReadingMembers(Reading::new(body, read_by_a_policy))
    }

    /// The value Go would decode into the field named `name` (lower-case ASCII): the last
    /// member whose key folds to it and whose value is not `null` (a `null` leaves a Go
    /// field as it was).
    fn get(&self, name: &str) -> Option<Raw<'a>> {
        debug_assert!(
            FIELDS.contains(&name),
            "{name} is not in FIELDS: it is never kept"
        );
        self.0
            .iter()
            .rev()
            .find(|(k, v)| *v != Raw::Null && folds_to(k, name))
            .map(|(_, v)| *v)
    }

    /// The field as a string, when it is one (decoded as Go decodes it). Any other value
    /// makes Go's decoder refuse the whole body, so Ollama never acts on it.
    pub(crate) fn str(&self, name: &str) -> Option<Cow<'a, str>> {
        match self.get(name)? {
            Raw::Str(raw) => Some(gojson::decode(raw)),
            _ => None,
        }
    }

    /// Whether the field is JSON `true`. Go decodes every occurrence in order into the bool:
    /// `true`/`false` set it, `null` leaves it (so `{"x":true,"x":null}` is true), and any
    /// other value makes the decoder refuse the body, which Ollama answers 400.
    pub(crate) fn is_true(&self, name: &str) -> bool {
        self.get(name) == Some(Raw::Bool(true))
    }
}

/// A body being read into its [`Members`], a step at a time.
pub(crate) struct ReadingMembers<'a>(Reading<'a>);

impl<'a> ReadingMembers<'a> {
    /// Reads on until the end, a refusal, or `budget` more bytes (then `None`: call again).
    pub(crate) fn step(&mut self, budget: usize) -> Option<Result<Members<'a>, Unreadable>> {
        self.0.step(budget).map(|done| done.map(Members))
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
        assert_eq!(m.str("model").as_deref(), Some("attacker.example/x/y"));
        let m = Members::parse("{\"in\u{17F}ecure\":true}".as_bytes()).unwrap();
        assert!(m.is_true("insecure"));
        assert!(folds_to("\u{212A}eep_alive", "keep_alive"));
        // Only the members a policy may read are kept, whatever their spelling.
        let m =
            Members::parse("{\"\u{212A}eep_alive\":1,\"MOD\u{17F}\":2,\"Model\":[3]}".as_bytes())
                .unwrap();
        assert_eq!(m.0, [(Cow::Borrowed("Model"), Raw::Other)]);
        let m = Members::parse(br#"{"model":"a","model":"b"}"#).unwrap();
        assert_eq!(m.str("model").as_deref(), Some("b"));
        // A bool keeps its value through a later null, as Go's decoder does.
        let m = Members::parse(br#"{"insecure":true,"INSECURE":null}"#).unwrap();
        assert!(m.is_true("insecure"));
        let m = Members::parse(br#"{"insecure":true,"insecure":false}"#).unwrap();
        assert!(!m.is_true("insecure"));
    }

    #[test]
    fn a_null_leaves_a_string_field_as_the_earlier_member_set_it() {
        for body in [
            &br#"{"model":"attacker.example/x/y","model":null}"#[..],
            br#"{"model":"attacker.example/x/y","MODEL":null,"Model":null}"#,
            br#"{"model":null,"model":"attacker.example/x/y","model":null}"#,
        ] {
            let m = Members::parse(body).unwrap();
            assert_eq!(m.str("model").as_deref(), Some("attacker.example/x/y"));
        }
        let m = Members::parse(br#"{"model":null}"#).unwrap();
        assert_eq!(m.str("model"), None);
    }

    #[test]
    fn a_string_is_decoded_only_when_it_has_escapes_or_broken_utf8() {
        let m = Members::parse(br#"{"model":"plain","from":"a\/b\u00e9"}"#).unwrap();
        assert!(matches!(m.str("model"), Some(Cow::Borrowed("plain"))));
        assert_eq!(m.str("from").as_deref(), Some("a/b\u{e9}"));
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

    proptest::proptest! {
        /// The byte comparison of a plain key is the folded comparison of the decoded one, for
        /// any spelling of any field (case, escapes, the two letters that fold onto ASCII).
        #[test]
        fn a_key_is_kept_exactly_when_it_folds_to_a_field(
            field in proptest::sample::select(FIELDS.to_vec()),
            spell in proptest::collection::vec(0u8..5, 18),
        ) {
            let raw: String = field
                .chars()
                .zip(spell.iter().cycle())
                .map(|(c, how)| match (how, c) {
                    (1, c) => c.to_ascii_uppercase().to_string(),
                    (2, c) => format!("\\u{:04x}", u32::from(c)),
                    (3, 's') => "\u{17F}".to_owned(),
                    (3, c) => format!("\\u{:04X}", u32::from(c.to_ascii_uppercase())),
                    (4, _) => "x".to_owned(),
                    (_, c) => c.to_string(),
                })
                .collect();
            let decoded = gojson::decode(raw.as_bytes());
            let folds = FIELDS.iter().any(|f| folds_to(&decoded, f));
            proptest::prop_assert_eq!(read_by_a_policy(raw.as_bytes()), folds, "{}", raw);
        }
    }

    #[test]
    fn a_key_longer_than_any_spelling_of_a_field_is_not_decoded() {
        assert!(FIELDS.iter().all(|f| f.len() <= LONGEST_FIELD));
        let escaped: String = "_debug_render_only"
            .chars()
            .map(|c| format!("\\u{:04x}", u32::from(c)))
            .collect();
        assert_eq!(escaped.len(), 6 * LONGEST_FIELD);
        assert!(read_by_a_policy(escaped.as_bytes()));
        assert!(!read_by_a_policy(format!("{escaped} ").as_bytes()));
        assert!(!read_by_a_policy(&vec![0xff; 1 << 20]));
    }

    #[test]
    fn escaped_keys_are_decoded_before_matching() {
        let m = Members::parse(br#"{"\u005fdebug_render_only":true}"#).unwrap();
        assert!(m.is_true("_debug_render_only"));
    }

    #[test]
    fn non_objects_and_invalid_json_are_not_members() {
        for body in [&b"[1]"[..], b"\"x\"", b"{not json", b"", b"\xff\xfe"] {
            assert!(Members::parse(body).is_err(), "{body:?}");
        }
        assert!(!Members::parse(br#"{"insecure":"true"}"#)
            .unwrap()
            .is_true("insecure"));
    }
}
