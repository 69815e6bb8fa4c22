use super::*;
use http::HeaderValue;

fn headers(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The address a request is counted under.
fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    super::resolve(peer, headers, trusted).src
}

/// Whether the client is unknown (a trusted proxy named it by something not an address).
fn unknown(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> bool {
    super::resolve(peer, headers, trusted).unknown
}

#[test]
fn spoofed_xff_from_untrusted_peer_is_ignored() {
    let h = headers(&["6.6.6.6"]);
    assert_eq!(
        resolve(ip("203.0.113.9"), &h, &nets(&["10.0.0.0/8"])),
        ip("203.0.113.9")
    );
    assert_eq!(resolve(ip("203.0.113.9"), &h, &[]), ip("203.0.113.9"));
}

#[test]
fn trusted_peer_xff_is_walked_right_to_left_past_trusted_hops() {
    let h = headers(&["6.6.6.6, 198.51.100.7, 10.0.0.2"]);
    assert_eq!(
        resolve(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
        ip("198.51.100.7")
    );
}

#[test]
fn multiple_xff_lines_are_one_list_in_order() {
    let h = headers(&["6.6.6.6", "198.51.100.7"]);
    assert_eq!(
        resolve(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
        ip("198.51.100.7")
    );
}

#[test]
fn garbage_hop_stops_at_the_last_vouched_address() {
    let h = headers(&["198.51.100.7, garbage"]);
    assert_eq!(
        resolve(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
        ip("10.0.0.1")
    );
}

#[test]
fn all_trusted_chain_gives_the_leftmost_and_ports_are_accepted() {
    let h = headers(&["10.9.9.9:4711, [2001:db8::5]:80"]);
    assert_eq!(
        resolve(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8", "2001:db8::/32"])),
        ip("10.9.9.9")
    );
}

#[test]
fn ipv4_mapped_peer_is_shown_as_ipv4() {
    assert_eq!(
        resolve(ip("::ffff:192.0.2.10"), &HeaderMap::new(), &[]),
        ip("192.0.2.10")
    );
    let h = headers(&["::ffff:198.51.100.1"]);
    assert_eq!(
        resolve(ip("::ffff:10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
        ip("198.51.100.1")
    );
}

fn raw_headers(values: &[&[u8]]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(X_FORWARDED_FOR, HeaderValue::from_bytes(v).unwrap());
    }
    h
}

fn nginx() -> Vec<IpNet> {
    nets(&["127.0.0.1/32"])
}

#[test]
fn non_ascii_client_text_before_nginx_appended_hop_does_not_hide_the_client() {
    // `X-Forwarded-For: caf\xe9` sent to nginx, which appends the real client on the same line.
    let h = raw_headers(&[b"caf\xe9, 127.0.0.66"]);
    assert_eq!(resolve(ip("127.0.0.1"), &h, &nginx()), ip("127.0.0.66"));
}

#[test]
fn non_ascii_byte_inside_an_address_invalidates_only_that_hop() {
    let h = raw_headers(&[b"198.51.100.7\xff, 203.0.113.5"]);
    assert_eq!(resolve(ip("127.0.0.1"), &h, &nginx()), ip("203.0.113.5"));
}

#[test]
fn garbage_left_of_trusted_hops_yields_the_last_vouched_untrusted_hop() {
    // Client garbage, then the client, then a second trusted proxy: the client is found.
    let h = raw_headers(&[b"\x80\xff junk, 203.0.113.5, 10.0.0.2"]);
    assert_eq!(
        resolve(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
        ip("203.0.113.5")
    );
}

#[test]
fn garbage_between_trusted_hops_stops_at_the_leftmost_vouched_trusted_hop() {
    let h = headers(&["6.6.6.6, not-an-ip, 10.0.0.2"]);
    assert_eq!(
        resolve(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
        ip("10.0.0.2")
    );
}

#[test]
fn haproxy_forwardfor_adds_its_own_header_line_after_the_clients() {
    // HAProxy `option forwardfor` appends a separate line; the client's forged line comes first.
    let h = raw_headers(&[b"6.6.6.6, caf\xe9", b"198.51.100.7"]);
    assert_eq!(resolve(ip("127.0.0.1"), &h, &nginx()), ip("198.51.100.7"));
}

#[test]
fn traefik_and_envoy_lists_without_spaces_are_walked() {
    let h = headers(&["6.6.6.6,198.51.100.7,10.0.0.3"]);
    assert_eq!(
        resolve(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
        ip("198.51.100.7")
    );
}

#[test]
fn ports_brackets_and_mapped_addresses_are_understood() {
    let trusted = nginx();
    for (text, want) in [
        ("203.0.113.5:51234", "203.0.113.5"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("2001:db8::7", "2001:db8::7"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("[::ffff:203.0.113.5]:80", "203.0.113.5"),
        ("\t203.0.113.5 ", "203.0.113.5"),
    ] {
        let h = headers(&[text]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &trusted), ip(want), "{text}");
    }
}

#[test]
fn malformed_ports_and_names_are_not_addresses() {
    for text in [
        "203.0.113.5:",
        "203.0.113.5:99999",
        "203.0.113.5:http",
        "[2001:db8::7]x",
        "[2001:db8::7",
        "2001:db8::7:80:1:2:3:4:5",
        "fe80::1%",
        "[fe80::1%]:80",
        "[fe80::1%25]",
        "203.0.113.5%eth0",
        "unknown",
        "unix:",
        "example.com",
        "127.000.000.001",
        "\"203.0.113.5\"",
    ] {
        assert_eq!(parse_hop(text.as_bytes()), None, "{text}");
    }
}

#[test]
fn empty_elements_are_skipped_not_fatal() {
    let h = headers(&[", ,198.51.100.7,, ,"]);
    assert_eq!(resolve(ip("127.0.0.1"), &h, &nginx()), ip("198.51.100.7"));
    let h = headers(&[""]);
    assert_eq!(resolve(ip("127.0.0.1"), &h, &nginx()), ip("127.0.0.1"));
}

#[test]
fn garbage_after_the_appended_hop_means_no_trusted_proxy_vouched_for_anything() {
    // The rightmost element is what the trusted peer wrote; garbage there means the header
    // reached us as the client wrote it, so the peer itself is all that is known.
    let h = headers(&["198.51.100.7, garbage"]);
    assert_eq!(resolve(ip("127.0.0.1"), &h, &nginx()), ip("127.0.0.1"));
}

#[test]
fn over_long_header_of_trusted_hops_resolves_without_panicking() {
    let mut text = String::from("198.51.100.7");
    for _ in 0..5000 {
        text.push_str(", 10.1.2.3");
    }
    let h = headers(&[&text]);
    assert_eq!(
        resolve(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
        ip("198.51.100.7")
    );
    let h = raw_headers(&[&[b'\xfe'; 64 * 1024]]);
    assert_eq!(resolve(ip("127.0.0.1"), &h, &nginx()), ip("127.0.0.1"));
}

#[test]
fn client_forged_trusted_address_cannot_frame_or_evade() {
    // A client claiming to be 10.0.0.9 (trusted) behind nginx is still itself.
    let h = headers(&["10.0.0.9, 198.51.100.7"]);
    assert_eq!(
        resolve(ip("127.0.0.1"), &h, &nets(&["127.0.0.1/32", "10.0.0.0/8"])),
        ip("198.51.100.7")
    );
}

/// Go's reverse proxy (`net/http/httputil`) appends a link-local client with its zone id: the
/// address is the client, the zone only the link (a helper's review found such a client taken
/// for the trusted proxy itself, with its `manage_from` rights and never banned).
#[test]
fn a_zone_id_is_dropped_and_the_address_is_the_client() {
    let trusted = nginx();
    for (text, want) in [
        ("fe80::2%lo", "fe80::2"),
        ("fe80::2%eth0", "fe80::2"),
        ("fe80::2%25eth0", "fe80::2"),
        ("[fe80::2%eth0]:51234", "fe80::2"),
        ("[fe80::2%25eth0]", "fe80::2"),
        ("10.9.9.9, fe80::2%lo", "fe80::2"),
    ] {
        let h = headers(&[text]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &trusted), ip(want), "{text}");
        assert!(!unknown(ip("127.0.0.1"), &h, &trusted), "{text}");
    }
}

/// A walk that stops at something not an address before it found an untrusted one: the
/// request is counted under the last address vouched for, and marked unknown, so that address's
/// rights do not pass to whoever sent the element.
#[test]
fn a_client_named_by_something_not_an_address_is_unknown() {
    let tenet = nets(&["10.0.0.0/8"]);
    for (peer, text, trusted, src) in [
        ("127.0.0.1", "unix:", nginx(), "127.0.0.1"),
        ("127.0.0.1", "198.51.100.7, unknown", nginx(), "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1:99999", nginx(), "127.0.0.1"),
        ("127.0.0.1", "0177.0.0.1", nginx(), "127.0.0.1"),
        (
            "10.0.0.1",
            "6.6.6.6, not-an-ip, 10.0.0.2",
            tenet.clone(),
            "10.0.0.2",
        ),
    ] {
        let h = headers(&[text]);
        assert_eq!(resolve(ip(peer), &h, &trusted), ip(src), "{text}");
        assert!(unknown(ip(peer), &h, &trusted), "{text}");
    }
    // Known: an address found, nothing said (no header, empty elements), or a chain of
    // trusted hops that runs out (a trusted host is the client), or an untrusted peer.
    for (peer, values, trusted) in [
        ("127.0.0.1", vec!["caf\u{e9}, 198.51.100.7"], nginx()),
        ("127.0.0.1", vec![], nginx()),
        ("127.0.0.1", vec![", ,"], nginx()),
        ("10.0.0.1", vec!["10.9.9.9, 10.0.0.2"], tenet.clone()),
        ("203.0.113.9", vec!["garbage"], tenet.clone()),
    ] {
        let h = headers(&values);
        assert!(!unknown(ip(peer), &h, &trusted), "{values:?}");
    }
}
