use crate::gin::go_quote;
use crate::gin::quote::{go_unquote, is_go_print};

fn quoted(bytes: &[u8]) -> String {
    let mut out = String::new();
    go_quote(bytes, &mut out);
    out
}

#[test]
fn go_quote_keeps_plain_paths_and_escapes_quote_and_backslash() {
    assert_eq!(quoted(b"/api/generate"), r#""/api/generate""#);
    assert_eq!(quoted(b"/api/tags?x=1&y=%20"), r#""/api/tags?x=1&y=%20""#);
    assert_eq!(quoted(b""), r#""""#);
    assert_eq!(quoted(br#"/a"b\c"#), r#""/a\"b\\c""#);
}

#[test]
fn go_quote_uses_short_escapes_for_named_controls() {
    assert_eq!(quoted(b"\x07\x08\x0c\n\r\t\x0b"), r#""\a\b\f\n\r\t\v""#);
}

#[test]
fn go_quote_uses_hex_escapes_for_other_controls_and_del() {
    assert_eq!(quoted(b"\x00\x1b[0m\x7f"), r#""\x00\x1b[0m\x7f""#);
}

#[test]
fn go_quote_escapes_each_invalid_utf8_byte() {
    assert_eq!(quoted(b"/a\xff"), r#""/a\xff""#);
    assert_eq!(quoted(b"\xe2\x28\xa1"), r#""\xe2(\xa1""#);
    assert_eq!(quoted(b"\xf0\x9f\x98"), r#""\xf0\x9f\x98""#);
    assert_eq!(quoted(b"\xed\xa0\x80"), r#""\xed\xa0\x80""#);
}

#[test]
fn go_quote_keeps_printable_unicode_raw() {
    assert_eq!(
        quoted("/é/日本/🦙/\u{fffd}".as_bytes()),
        "\"/é/日本/🦙/\u{fffd}\""
    );
    assert_eq!(quoted("µ¡ÿ".as_bytes()), "\"µ¡ÿ\"");
}

#[test]
fn go_quote_escapes_non_printable_runes_with_u_forms() {
    let cases = [
        ("\u{85}", r#""\u0085""#),
        ("\u{a0}", r#""\u00a0""#),
        ("\u{ad}", r#""\u00ad""#),
        ("\u{200b}", r#""\u200b""#),
        ("\u{2028}", r#""\u2028""#),
        ("\u{feff}", r#""\ufeff""#),
        ("\u{e000}", r#""\ue000""#),
        ("\u{378}", r#""\u0378""#),
        ("\u{e0001}", r#""\U000e0001""#),
        ("\u{10ffff}", r#""\U0010ffff""#),
    ];
    for (text, want) in cases {
        assert_eq!(quoted(text.as_bytes()), want, "{text:?}");
    }
}

#[test]
fn go_print_follows_go_unicode_15_0() {
    // U+1FAE8 SHAKING FACE and U+11F00 KAWI SIGN CANDRABINDU arrived in Unicode 15.0.
    assert!(is_go_print('\u{1fae8}'));
    assert!(is_go_print('\u{11f00}'));
    // U+10D40 (Garay) arrived in Unicode 16.0, which Go does not have: escaped.
    assert!(!is_go_print('\u{10d40}'));
    assert_eq!(quoted("\u{10d40}".as_bytes()), r#""\U00010d40""#);
    assert!(is_go_print(' '));
    assert!(!is_go_print('\u{3000}'));
}

#[test]
fn go_unquote_reverses_go_quote() {
    let samples: [&[u8]; 6] = [
        b"/api/show",
        br#"/a"b\c"#,
        b"\x07\x08\x0c\n\r\t\x0b\x00\x7f",
        "/é/🦙/\u{a0}\u{10ffff}".as_bytes(),
        b"/x?q=%22",
        b"",
    ];
    for raw in samples {
        let q = quoted(raw);
        let inner = &q[1..q.len() - 1];
        assert_eq!(go_unquote(inner).unwrap().as_bytes(), raw, "{q}");
    }
}

#[test]
fn go_unquote_decodes_octal_hex_and_unicode_escapes() {
    assert_eq!(go_unquote(r"\101\x42\u0043\U00000044").unwrap(), "ABCD");
    assert_eq!(go_unquote(r"\xC3\xA9").unwrap(), "é");
}

#[test]
fn go_unquote_turns_invalid_utf8_escapes_and_surrogates_into_replacement_chars() {
    assert_eq!(go_unquote(r"/a\xff").unwrap(), "/a\u{fffd}");
    assert_eq!(go_unquote(r"\ud800").unwrap(), "\u{fffd}");
}

#[test]
fn go_unquote_rejects_escapes_go_rejects() {
    let rejects = [
        r"\q",
        r"\x4",
        r"\x4g",
        r"\400",
        r"\18",
        r"\'",
        r"\",
        r"\U00110000",
        r"\u12",
    ];
    for bad in rejects {
        assert_eq!(go_unquote(bad), None, "{bad}");
    }
}
