use super::*;

/// The top-level members as (key, string value or a tag), for comparing. Each body is also
/// read in steps of several budgets, which must give the same members or the same refusal.
fn read(body: &[u8]) -> Result<Vec<(String, String)>, Unreadable> {
    let whole = members(body);
    for budget in [0, 1, 2, 5, 64] {
        let mut reading = Reading::new(body, |_| true);
        let mut steps = 0;
        let stepped = loop {
            steps += 1;
            if let Some(done) = reading.step(budget) {
                break done;
            }
        };
        assert_eq!(stepped, whole, "in steps of {budget}");
        // A step may pause only after reading past its budget.
        assert!(
            steps <= body.len() / budget.max(1) + 2,
            "{steps} steps of {budget}"
        );
    }
    Ok(whole?
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Raw::Str(raw) => format!("s:{}", decode(raw)),
                Raw::Bool(b) => format!("b:{b}"),
                Raw::Null => "null".to_owned(),
                Raw::Other => "other".to_owned(),
            };
            (k.into_owned(), v)
        })
        .collect())
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn only_the_first_value_is_read_and_what_follows_it_is_ignored() {
    let push = pairs(&[("model", "s:attacker.example/x/y")]);
    for body in [
        &br#"{"model":"attacker.example/x/y"} x"#[..],
        br#"{"model":"attacker.example/x/y"}]"#,
        b"{\"model\":\"attacker.example/x/y\"}\n\n}",
        br#"{"model":"attacker.example/x/y"}{"model":"llama3"}"#,
        b"  \t\r\n{\"model\":\"attacker.example/x/y\"}\xff",
    ] {
        assert_eq!(read(body), Ok(push.clone()), "{body:?}");
    }
    // `null` leaves the request empty; Go reads nothing after the literal either.
    assert_eq!(read(b"null"), Ok(vec![]));
    assert_eq!(read(b" null x"), Ok(vec![]));
    assert_eq!(read(b"{}"), Ok(vec![]));
}

#[test]
fn each_byte_of_invalid_utf8_in_a_string_is_one_replacement_character() {
    assert_eq!(
        read(b"{\"model\":\"attacker.example/x\xff/y\"}"),
        Ok(pairs(&[("model", "s:attacker.example/x\u{FFFD}/y")]))
    );
    // A truncated three-byte sequence is two bytes: two replacements, as in Go (Rust's own
    // lossy conversion would give one).
    assert_eq!(
        read(b"{\"model\":\"a\xe2\x82b\"}"),
        Ok(pairs(&[("model", "s:a\u{FFFD}\u{FFFD}b")]))
    );
    // In a key too: it then names no field.
    assert_eq!(
        read(b"{\"mo\xffdel\":\"x\"}"),
        Ok(pairs(&[("mo\u{FFFD}del", "s:x")]))
    );
    // Valid multi-byte text is kept as it is, and escapes decode after it.
    assert_eq!(
        read("{\"m\":\"é😀\\u00e9\"}".as_bytes()),
        Ok(pairs(&[("m", "s:é😀é")]))
    );
}

#[test]
fn a_broken_surrogate_escape_is_a_replacement_character_and_a_pair_is_one_character() {
    for (escaped, decoded) in [
        (r"\ud800", "\u{FFFD}"),
        (r"\udc00", "\u{FFFD}"),
        (r"\ud800x", "\u{FFFD}x"),
        (r"\udc00\ud800", "\u{FFFD}\u{FFFD}"),
        (r"\ud800\u0041", "\u{FFFD}A"),
        (r"\ud800\\u0041", "\u{FFFD}\\u0041"),
        (r"\ud83d\ude00", "😀"),
        (r"\uD83D\uDE00!", "😀!"),
        (r#"\u0000\/\b\f\n\r\t\"\\"#, "\0/\u{8}\u{c}\n\r\t\"\\"),
    ] {
        let body = format!(r#"{{"model":"{escaped}"}}"#);
        assert_eq!(
            read(body.as_bytes()),
            Ok(vec![("model".to_owned(), format!("s:{decoded}"))]),
            "{escaped}"
        );
    }
}

#[test]
fn nesting_is_read_up_to_go_s_limit_of_ten_thousand_levels() {
    // The top-level object is the first level.
    let nested = |levels: usize| {
        let mut b = br#"{"a":"#.to_vec();
        b.extend(std::iter::repeat_n(b'[', levels));
        b.extend(std::iter::repeat_n(b']', levels));
        b.extend(br#","model":"attacker.example/x/y"}"#);
        b
    };
    assert_eq!(
        read(&nested(9_999)),
        Ok(pairs(&[
            ("a", "other"),
            ("model", "s:attacker.example/x/y")
        ]))
    );
    assert_eq!(
        read(&nested(10_000)),
        Err(Unreadable {
            what: "nesting deeper than 10000 levels",
            at: 10_005
        })
    );
}

#[test]
fn a_body_read_in_steps_pauses_between_members_and_inside_skipped_values() {
    // A step of 6 bytes pauses between members and inside the array, after the value that
    // crosses its budget: `{"a":0,` | `"b":[1,` | `2,3,4,` | `5,6,7,` | `8,9],"model":"x",` |
    // `"c":{"d":` | `[{}]}}`. Only the members `keep` takes are kept.
    let body = br#"{"a":0,"b":[1,2,3,4,5,6,7,8,9],"model":"x","c":{"d":[{}]}}"#;
    let mut reading = Reading::new(body, |k| k == b"model");
    let mut steps = 0;
    let done = loop {
        steps += 1;
        if let Some(done) = reading.step(6) {
            break done;
        }
    };
    assert_eq!(done, Ok(vec![(Cow::Borrowed("model"), Raw::Str(b"x"))]));
    assert_eq!(steps, 7);
    // A body that ends (or is refused) within a step's budget takes one step.
    assert_eq!(
        Reading::new(body, |_| true)
            .step(body.len())
            .map(|d| d.map(|m| m.len())),
        Some(Ok(4))
    );
    assert_eq!(
        Reading::new(b"{\"a\":[1,}", |_| true).step(3),
        None,
        "paused before the refusal"
    );
}

#[test]
fn values_no_field_takes_are_checked_but_never_converted() {
    assert_eq!(
        read(br#"{"x":1e400,"y":-0.5E+3,"z":[{"k":[true,false,null,"s",0]},{}],"w":{}}"#),
        Ok(pairs(&[
            ("x", "other"),
            ("y", "other"),
            ("z", "other"),
            ("w", "other")
        ]))
    );
}

#[test]
fn what_go_refuses_is_refused_with_where_reading_stopped() {
    for (body, what, at) in [
        (&b""[..], "an empty body", 0),
        (b"  ", "an empty body", 2),
        (b"[1]", "not a JSON object", 0),
        (b"\"x\"", "not a JSON object", 0),
        (b"\xef\xbb\xbf{}", "not a JSON object", 0),
        (b"nul", "an invalid literal", 0),
        (b"{", "a key that is not a string", 1),
        (b"{\"a\"}", "a key not followed by `:`", 4),
        (b"{\"a\":1,}", "a key that is not a string", 7),
        (b"{\"a\":1", "a member not followed by `,` or `}`", 6),
        (b"{\"a\":01}", "a member not followed by `,` or `}`", 6),
        (b"{\"a\":+1}", "an invalid value", 5),
        (b"{\"a\":.5}", "an invalid value", 5),
        (b"{\"a\":1.}", "an invalid number", 7),
        (b"{\"a\":1e}", "an invalid number", 7),
        (b"{\"a\":tru}", "an invalid literal", 5),
        (b"{\"a\":truex}", "a member not followed by `,` or `}`", 9),
        (b"{\"a\":\"x\ny\"}", "a control character in a string", 7),
        (b"{\"a\":\"\\x\"}", "an invalid escape", 6),
        (b"{\"a\":\"\\u12G4\"}", "an invalid \\u escape", 6),
        (b"{\"a\":\"open", "an unterminated string", 10),
        (b"{\"a\":[1,]}", "an invalid value", 8),
        (b"{\"a\":{1:2}}", "a key that is not a string", 6),
        (
            b"{\"a\":[1}",
            "a value not followed by `,` or its closing bracket",
            7,
        ),
        (
            b"{\"a\":{\"b\":1]}",
            "a value not followed by `,` or its closing bracket",
            11,
        ),
        (b"{\"a\":\xff}", "an invalid value", 5),
    ] {
        assert_eq!(read(body), Err(Unreadable { what, at }), "{body:?}");
    }
}

/// Any JSON text (as a well-kept serializer writes it): top-level keys and string values.
fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    /// Never stricter than a standard parser on valid JSON, and the same strings out: every
    /// object serde_json writes (any keys, any strings, escaped or not, any nesting, pretty
    /// or compact) reads back member by member.
    #[test]
    fn every_valid_object_reads_back_as_written(
        members_in in proptest::collection::vec((proptest::prelude::any::<String>(), json_value()), 0..8),
        pretty in proptest::prelude::any::<bool>(),
    ) {
        let object = serde_json::Value::Object(members_in.into_iter().collect());
        let text = if pretty {
            serde_json::to_vec_pretty(&object).unwrap()
        } else {
            serde_json::to_vec(&object).unwrap()
        };
        let expected: Vec<(String, String)> = object
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => format!("s:{s}"),
                    serde_json::Value::Bool(b) => format!("b:{b}"),
                    serde_json::Value::Null => "null".to_owned(),
                    _ => "other".to_owned(),
                };
                (k.clone(), v)
            })
            .collect();
        proptest::prop_assert_eq!(read(&text), Ok(expected));
    }
}
