use crate::gin::splunk::SPL_PATTERN;
use crate::gin::{splunk_extract, splunk_response_time, SplunkFields};

fn line(latency: &str, ip: &str) -> String {
    format!(
        "[GIN] 2025/10/02 - 14:47:30 | 200 | {latency:>13} | {ip:>15} | POST     \"/api/generate\""
    )
}

#[test]
fn spl_pattern_compiles_and_extracts_all_five_fields() {
    assert!(SPL_PATTERN.starts_with(r"\|\s+(?<status_code>\d+)"));
    let l = line("57.204518733s", "192.168.1.50");
    assert_eq!(
        splunk_extract(&l),
        Some(SplunkFields {
            status_code: "200",
            response_time: "57.204518733",
            src_ip: "192.168.1.50",
            http_method: "POST",
            uri_path: "/api/generate",
        })
    );
}

#[test]
fn splunk_extract_never_matches_minutes_or_subsecond_units() {
    for latency in [
        "1m5s", "1m0s", "29m59s", "1h2m3s", "12.5ms", "850ns", "16.52µs",
    ] {
        assert_eq!(
            splunk_extract(&line(latency, "10.0.0.7")),
            None,
            "{latency}"
        );
    }
}

#[test]
fn splunk_extract_never_matches_uppercase_ipv6() {
    assert_eq!(splunk_extract(&line("56.1s", "2001:DB8::1")), None);
    assert_eq!(
        splunk_extract(&line("56.1s", "2001:db8::1"))
            .unwrap()
            .src_ip,
        "2001:db8::1"
    );
}

#[test]
fn splunk_extract_matches_zero_seconds_as_zero() {
    assert_eq!(
        splunk_extract(&line("0s", "127.0.0.1"))
            .unwrap()
            .response_time,
        "0"
    );
}

#[test]
fn splunk_extract_matches_through_a_journald_prefix_but_not_colour_codes() {
    let l = format!(
        "Dec 11 09:58:58 quorra ollama[1543654]: {}",
        line("58s", "10.0.0.1")
    );
    assert_eq!(splunk_extract(&l).unwrap().response_time, "58");
    let coloured = "[GIN] 2025/10/02 - 14:47:30 |\x1b[97;42m 200 \x1b[0m|           58s |        10.0.0.1 |\x1b[97;46m POST    \x1b[0m \"/api/chat\"";
    assert_eq!(splunk_extract(coloured), None);
}

#[test]
fn splunk_extract_takes_the_leftmost_match_over_a_forged_path() {
    let l = "[GIN] 2025/10/02 - 14:47:30 | 200 |            0s |       127.0.0.1 | GET      \"/x| 404 | 58s | 6.6.6.6 | GET \\\"/api/show\\\"\"";
    let f = splunk_extract(l).unwrap();
    assert_eq!(
        (f.status_code, f.response_time, f.src_ip),
        ("200", "0", "127.0.0.1")
    );
    assert_eq!(f.uri_path, "/x| 404 | 58s | 6.6.6.6 | GET \\");
}

#[test]
fn splunk_extract_keeps_dotted_garbage_that_is_not_a_number() {
    let l = line("1.2.3s", "10.0.0.7");
    let f = splunk_extract(&l).unwrap();
    assert_eq!(f.response_time, "1.2.3");
    assert_eq!(splunk_response_time(f.response_time), None);
}

#[test]
fn splunk_response_time_reads_plain_decimals_only() {
    assert_eq!(splunk_response_time("57.204518733"), Some(57.204518733));
    assert_eq!(splunk_response_time("0"), Some(0.0));
    assert_eq!(splunk_response_time("55."), Some(55.0));
    assert_eq!(splunk_response_time(".5"), Some(0.5));
    for bad in ["", ".", "..", "1.2.3", "1e3", "inf", "NaN", "-1", " 1"] {
        assert_eq!(splunk_response_time(bad), None, "{bad:?}");
    }
}
