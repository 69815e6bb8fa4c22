use super::*;

const KEY: &str = "_debug_render_only";

/// Feeds `body` in every split into two frames (and byte by byte); all must agree.
fn scan(body: &[u8]) -> Scan {
    let mut whole = Scanner::new(KEY);
    whole.feed(body);
    let expected = whole.outcome();
    for cut in 0..=body.len() {
        let mut s = Scanner::new(KEY);
        s.feed(&body[..cut]);
        s.feed(&body[cut..]);
        assert_eq!(s.outcome(), expected, "split at {cut} of {body:?}");
    }
    let mut s = Scanner::new(KEY);
    for b in body {
        s.feed(std::slice::from_ref(b));
    }
    assert_eq!(s.outcome(), expected, "byte by byte: {body:?}");
    expected
}

#[test]
fn a_top_level_true_is_flagged_after_nested_values_of_any_shape() {
    let body = br#"{"model":"m","images":["aGVsbG8=",{"a":[1,{"b":"}]\""}]}],"options":{"x":{"y":[[]]}},"_debug_render_only":true}"#;
    assert_eq!(scan(body), Scan::Flagged);
    assert_eq!(
        scan(b" \r\n\t{ \"_debug_render_only\" :\ttrue }\n"),
        Scan::Flagged
    );
}

#[test]
fn the_answer_waits_for_the_end_of_the_object() {
    let mut s = Scanner::new(KEY);
    s.feed(br#"{"_debug_render_only":true"#);
    assert_eq!(s.outcome(), Scan::Pending);
    s.feed(b"}");
    assert_eq!(s.outcome(), Scan::Flagged);
    // Go's decoder stops at the end of the first value; what trails is ignored.
    s.feed(br#" {"_debug_render_only":false}"#);
    assert_eq!(s.outcome(), Scan::Flagged);
}

#[test]
fn the_key_text_inside_strings_and_nested_objects_is_not_the_switch() {
    for body in [
        &br#"{"prompt":"say \"_debug_render_only\": true","model":"m"}"#[..],
        br#"{"messages":[{"role":"user","content":"x"}],"options":{"_debug_render_only":true}}"#,
        br#"{"a":["_debug_render_only",true]}"#,
        br#"{"_debug_render_only":"true"}"#,
        br#"{"_debug_render_only":1}"#,
        br#"{"_debug_render_only":{"x":true}}"#,
        br#"{"_debug_render_only_":true}"#,
        br#"{"x_debug_render_only":true}"#,
    ] {
        assert_eq!(scan(body), Scan::Clear, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn escaped_and_folded_keys_match_as_go_matches_them() {
    for body in [
        &br#"{"\u005fdebug_render_only":true}"#[..],
        br#"{"\u005Fdebug_\u0052ENDER_only":true}"#,
        br#"{"_DEBUG_Render_Only":true}"#,
        br#"{"_debug_render_\u006fnly":false,"_debug_render_only":true}"#,
    ] {
        assert_eq!(
            scan(body),
            Scan::Flagged,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // The long s and the Kelvin sign fold like Go folds them (a scanner for `insecure`).
    let mut s = Scanner::new("insecure");
    s.feed("{\"in\u{17F}ecure\":true}".as_bytes());
    assert_eq!(s.outcome(), Scan::Flagged);
    let mut s = Scanner::new("insecure");
    s.feed(br#"{"in\u017fecure":true}"#);
    assert_eq!(s.outcome(), Scan::Flagged);
    let mut s = Scanner::new("keep");
    s.feed(br#"{"\u212Aeep":true}"#);
    assert_eq!(s.outcome(), Scan::Flagged);
    // An escaped slash is a slash, not nothing.
    assert_eq!(scan(br#"{"_debug\/_render_only":true}"#), Scan::Clear);
}

#[test]
fn surrogate_pairs_decode_and_broken_halves_become_replacement_characters() {
    // U+1F600 as a pair: a different key, decoded without breaking the scan.
    assert_eq!(
        scan(br#"{"\ud83d\ude00":1,"_debug_render_only":true}"#),
        Scan::Flagged
    );
    let mut s = Scanner::new("\u{1F600}x");
    s.feed(br#"{"\uD83D\uDE00X":true}"#);
    assert_eq!(s.outcome(), Scan::Flagged);
    // A lone high half is U+FFFD, and the text after it is still read.
    let mut s = Scanner::new("\u{FFFD}a");
    s.feed(br#"{"\ud83dA":true}"#);
    assert_eq!(s.outcome(), Scan::Flagged);
    let mut s = Scanner::new("\u{FFFD}\u{FFFD}");
    s.feed(br#"{"\ude00\ud83d":true}"#);
    assert_eq!(s.outcome(), Scan::Flagged);
    assert_eq!(scan(br#"{"\ud800_debug_render_only":true}"#), Scan::Clear);
}

#[test]
fn the_last_duplicate_wins_and_null_leaves_the_switch_as_it_was() {
    assert_eq!(
        scan(br#"{"_debug_render_only":true,"model":"m","_DEBUG_RENDER_ONLY":false}"#),
        Scan::Clear
    );
    assert_eq!(
        scan(br#"{"_debug_render_only":false,"_debug_render_only":true}"#),
        Scan::Flagged
    );
    // Go leaves a bool untouched on `null`.
    assert_eq!(
        scan(br#"{"_debug_render_only":true,"_debug_render_only":null}"#),
        Scan::Flagged
    );
}

#[test]
fn non_objects_and_invalid_json_are_never_flagged() {
    for body in [
        &br#"[{"_debug_render_only":true}]"#[..],
        br#""_debug_render_only""#,
        b"true",
        b"",
        br#"{"_debug_render_only":true"#,
        br#"{"_debug_render_only" true}"#,
        br#"{"_debug_render_only":tru}"#,
        br#"{"_debug_render_only":truee}"#,
        br#"{"_debug_render_only":true,}"#,
        br#"{"_debug_render_only":true "x":1}"#,
        br#"{"\x_debug_render_only":true}"#,
        br#"{"\u00zz":1,"_debug_render_only":true}"#,
        b"{\"a\":\"line\nbreak\",\"_debug_render_only\":true}",
        b"\xef\xbb\xbf{\"_debug_render_only\":true}",
        br#"{"a":[1,2,"_debug_render_only":true}"#,
    ] {
        let got = scan(body);
        assert_ne!(got, Scan::Flagged, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn huge_values_are_not_stored() {
    let mut s = Scanner::new(KEY);
    s.feed(br#"{"images":[""#);
    let chunk = vec![b'A'; 1 << 16];
    for _ in 0..64 {
        s.feed(&chunk);
    }
    s.feed(br#""],"#);
    let long_key = vec![b'k'; 1 << 16];
    s.feed(b"\"");
    s.feed(&long_key);
    s.feed(br#"":true,"_debug_render_only":true}"#);
    assert_eq!(s.outcome(), Scan::Flagged);
    assert!(s.key_buf.capacity() <= 2 * KEY_CAP);
}

#[test]
fn long_strings_and_keys_skip_to_the_bytes_that_matter_and_miss_none() {
    let long = "x".repeat(300);
    let cases = [
        (
            format!(r#"{{"p":"{long}\"{long}","_debug_render_only":true}}"#),
            Scan::Flagged,
        ),
        (
            format!("{{\"p\":\"{long}\n{long}\",\"_debug_render_only\":true}}"),
            Scan::Clear,
        ),
        (
            format!(r#"{{"m":[{{"c":"{long}\\"}},"{long}"],"_debug_render_only":true}}"#),
            Scan::Flagged,
        ),
        (
            format!(r#"{{"m":[{{"c":"{long}\\"}}],"_debug_render_only":true,"z":"{long}"}}"#),
            Scan::Flagged,
        ),
        (
            format!(r#"{{"{long}":"v","{long}\u0022":1,"_debug_render_only":true}}"#),
            Scan::Flagged,
        ),
        (
            format!(r#"{{"{long}\ud800":1,"_debug_render_only":true}}"#),
            Scan::Flagged,
        ),
        (
            format!("{{\"{long}\u{1}{long}\":1,\"_debug_render_only\":true}}"),
            Scan::Clear,
        ),
        (
            format!(r#"{{"_debug_render_only":true,"p":"{long}"#),
            Scan::Pending,
        ),
    ];
    for (body, want) in cases {
        assert_eq!(scan(body.as_bytes()), want, "{body}");
    }
}

#[test]
fn whitespace_nested_values_and_keys_read_in_runs_agree_with_the_byte_by_byte_scan() {
    let pad = " \t\r\n".repeat(40);
    let nums = "1,-2.5e3,true,null,".repeat(20);
    let key = "k".repeat(40);
    let cases = [
        (
            format!(
                r#"{pad}{{{pad}"a"{pad}:{pad}[{nums}0]{pad},{pad}"_debug_render_only"{pad}:{pad}true{pad}}}{pad}"#
            ),
            Scan::Flagged,
        ),
        (
            format!(
                r#"{{"a":{{"b":[{nums}{{"_debug_render_only":true}}]}},"_debug_render_only":false}}"#
            ),
            Scan::Clear,
        ),
        (
            format!("{{\"a\":[{nums}\u{1}],\"_debug_render_only\":true}}"),
            Scan::Clear,
        ),
        (
            format!(r#"{{"{key}":1,"_DEBUG_render_ONLY":true,"{key}{key}":2}}"#),
            Scan::Flagged,
        ),
        (
            format!(r#"{{"_debug_\u0072ender_only{pad}":true,"_debug_render_onl":true}}"#),
            Scan::Clear,
        ),
        (
            format!(r#"{{"_debug_\u0072ender_only":true,"{key}":[{nums}1]}}"#),
            Scan::Flagged,
        ),
        (
            r#"{"_debug_render_only\ud800":true}"#.to_owned(),
            Scan::Clear,
        ),
        (
            "{\"_debug_render_\u{17f}nly\":true}".replace('\u{17f}', "o"),
            Scan::Flagged,
        ),
        (
            "{\"_debug_render_only\":true}".replace("on", "\u{17f}on"),
            Scan::Clear,
        ),
        (
            "{\"_debug_render_\u{17f}\":1,\"_debug_ren\u{17f}der_only\":true}".to_owned(),
            Scan::Clear,
        ),
    ];
    for (body, want) in cases {
        assert_eq!(scan(body.as_bytes()), want, "{body}");
    }
}

/// The streaming scan (bodies larger than `max_body`) and the whole-body reader (smaller ones)
/// must judge the switch alike, or a body could be shaped to pass on one side of the limit.
#[test]
fn the_scan_and_the_whole_body_reader_agree_on_the_switch() {
    let members: &[&[u8]] = &[
        br#""_debug_render_only":true"#,
        br#""_debug_render_only":false"#,
        br#""_debug_render_only":null"#,
        br#""_debug_render_only":"true""#,
        br#""_debug_render_only":1"#,
        br#""_debug_render_only":[true]"#,
        br#""_debug_render_only":{"a":true}"#,
        br#""_debug_render_only":tru"#,
        br#""_debug_render_only" : true "#,
        br#""_DEBUG_Render_only":true"#,
        br#""_debug_\u0072ender_only":true"#,
        br#""_debug_render_only\u0000":true"#,
        br#""\ud800":1"#,
        br#""a":"x\"y\\""#,
        br#""a":[1,{"_debug_render_only":true},"]"]"#,
        br#""a":1e400"#,
        b"\"a\":\"\xff\xfe\"",
        b"\"a\":\"line\nbreak\"",
        "\"\u{17f}\":1".as_bytes(),
        br#""a":-0.5E+3"#,
        br#""a":"#,
    ];
    let suffixes: &[&[u8]] = &[b"", b" \n", b" x", b"{}", b","];
    let mut checked = 0;
    let mut flagged = 0;
    for a in 0..=members.len() {
        for b in 0..=members.len() {
            for c in 0..=members.len() {
                let picked: Vec<&[u8]> = [a, b, c]
                    .iter()
                    .filter_map(|&i| members.get(i).copied())
                    .collect();
                for suffix in suffixes {
                    let mut body = b"{".to_vec();
                    body.extend_from_slice(&picked.join(&b","[..]));
                    body.push(b'}');
                    body.extend_from_slice(suffix);
                    let mut s = Scanner::new(KEY);
                    s.feed(&body);
                    let whole = crate::policy::Members::parse(&body).is_ok_and(|m| m.is_true(KEY));
                    assert_eq!(
                        s.outcome() == Scan::Flagged,
                        whole,
                        "{}",
                        String::from_utf8_lossy(&body)
                    );
                    checked += 1;
                    flagged += usize::from(whole);
                }
            }
        }
    }
    assert_eq!(checked, 22 * 22 * 22 * 5);
    assert!(flagged > 1000, "{flagged}");
}
