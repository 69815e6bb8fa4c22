//! A seeded corpus of realistic and hostile lines, checked against straightforward
//! re-implementations: the SPL search with the `regex` crate and a `HashMap`, and the seed
//! rule computed per (bin, src, path) from the generator's own truth.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use chrono::NaiveDateTime;

use super::{compat, with_rules};
use crate::detect::builtin::model_exfiltration;
use crate::detect::{EngineOptions, Severity};
use crate::gin::{format_go_duration, gin_latency, go_quote, write_gin_line, GinFields};
use crate::scan::{scan_rows, Input, Row, ScanOptions};

/// The seed rule's `rex`, copied from docs/seed-rule.md (not from the crate's constant).
const SPL: &str = r#"\|\s+(?<status_code>\d+)\s+\|\s+(?<response_time>[\d\.]+)s\s+\|\s+(?<src_ip>[\:\da-f\.]+)\s+\|\s+(?<http_method>\w+)\s+\"(?<uri_path>[^\"]+)\""#;

/// 2025-10-02T12:00:00 (local).
const START: i64 = 1_759_406_400;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const IPS: [&str; 11] = [
    "192.168.1.50",
    "10.0.0.7",
    "10.0.0.123",
    "127.0.0.1",
    "2001:db8::1f",
    "2001:DB8::1F",
    "fe80::1ff:fe23:4567:890a",
    "::1",
    "::ffff:192.0.2.10",
    "2001:db8:0:1::5",
    "203.0.113.250",
];

/// (as gin logs it, normalised): a logged path is Go's decoded path, used as-is.
const PATHS: [(&str, &str); 12] = [
    ("/api/generate", "/api/generate"),
    ("/api/chat", "/api/chat"),
    ("/api/tags?x=1", "/api/tags"),
    ("/api/show", "/api/show"),
    ("/v1/chat/completions", "/v1/chat/completions"),
    ("/api/show?verbose=true", "/api/show"),
    ("/api/%73how?verbose=true", "/api/%73how"),
    ("//api//chat", "//api//chat"),
    ("/v1/models/llama3:8b", "/v1/models/llama3:8b"),
    ("/api/blobs/sha256:abc", "/api/blobs/sha256:abc"),
    ("/", "/"),
    ("/x\"y\\z", "/x\"y\\z"),
];

const METHODS: [&str; 5] = ["GET", "POST", "POST", "HEAD", "DELETE"];

const PREFIXES: [&str; 5] = [
    "",
    "",
    "",
    "Oct 02 12:00:00 gpu-host ollama[1543654]: ",
    "2025-10-02T12:00:00.000000+00:00 gpu-host ollama[77]: ",
];

fn latency(rng: &mut Rng) -> Duration {
    const EDGES: [u64; 8] = [
        55_000_000_000,
        55_000_000_001,
        54_999_999_999,
        55_500_000_000,
        57_204_518_733,
        59_999_999_999,
        60_000_000_000,
        60_999_999_999,
    ];
    let ns = match rng.below(16) {
        0 => rng.below(1_000),
        1..=3 => 1_000 + rng.below(999_000),
        4..=8 => 1_000_000 + rng.below(999_000_000),
        9 | 10 => 1_000_000_000 + rng.below(54_000_000_000),
        11 => *rng.pick(&EDGES),
        12 | 13 => 55_000_000_000 + rng.below(5_000_000_000),
        14 => 60_000_000_000 + rng.below(3_540_000_000_000),
        _ => 3_600_000_000_000 + rng.below(10_000_000_000_000),
    };
    Duration::from_nanos(ns)
}

/// A well-formed request as generated: what the default mode must count.
pub(super) struct Truth {
    epoch: i64,
    latency: Duration,
    ip: IpAddr,
    path: &'static str,
}

fn garbage(rng: &mut Rng, ts: &str) -> Vec<u8> {
    match rng.below(7) {
        0 => (0..rng.below(300))
            .map(|_| (rng.below(255) + 1) as u8)
            .filter(|&b| b != b'\n')
            .collect(),
        1 => format!("time={ts} level=INFO source=server.go:1 msg=\"llama runner started\"")
            .into_bytes(),
        2 => format!("[GIN-debug] GET    /api/tags --> handler (5 handlers) {ts}").into_bytes(),
        3 => format!(
            "[GIN] {ts} | 200 |        57.5s |       999.1.1.1 | POST     \"/api/generate\""
        )
        .into_bytes(),
        4 => format!(
            "[GIN] {ts} | 200 |       1.2.3s |        10.0.0.7 | POST     \"/api/generate\""
        )
        .into_bytes(),
        5 => format!("{ts} | 200 |        57.5s |        10.0.0.7 | POST     \"/api/generate\"")
            .into_bytes(),
        _ => {
            let full = format!(
                "[GIN] {ts} | 200 |        57.5s |        10.0.0.7 | POST     \"/api/chat\""
            );
            let cut = rng.below(full.len() as u64 - 1) as usize;
            full.as_bytes()[..cut].to_vec()
        }
    }
}

/// The line gin writes on a terminal: colour codes around the status and the method.
fn coloured(f: &GinFields<'_>) -> String {
    let mut latency = String::new();
    format_go_duration(gin_latency(f.latency), &mut latency);
    let mut path = String::new();
    go_quote(f.path, &mut path);
    format!(
        "[GIN] {} |\x1b[97;42m {:>3} \x1b[0m| {latency:>13} | {:>15} |\x1b[97;46m {:<7} \x1b[0m {path}\n",
        f.time.format("%Y/%m/%d - %H:%M:%S"),
        f.status,
        f.client_ip,
        f.method,
    )
}

/// `lines` lines from `seed`: the bytes and the well-formed requests among them.
pub(super) fn corpus(seed: u64, lines: usize) -> (Vec<u8>, Vec<Truth>) {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    let mut truth = Vec::new();
    let mut now = START;
    for _ in 0..lines {
        now += rng.below(4) as i64;
        let time: NaiveDateTime = chrono::DateTime::from_timestamp(now, 0)
            .unwrap()
            .naive_utc();
        let ts = time.format("%Y/%m/%d - %H:%M:%S").to_string();
        if rng.below(20) == 0 {
            out.extend(garbage(&mut rng, &ts));
            out.push(b'\n');
            continue;
        }
        let ip_text = *rng.pick(&IPS);
        let (raw, norm) = *rng.pick(&PATHS);
        let f = GinFields {
            time,
            status: *rng.pick(&[200, 200, 404, 500]),
            latency: latency(&mut rng),
            client_ip: ip_text,
            method: METHODS[rng.below(METHODS.len() as u64) as usize],
            path: raw.as_bytes(),
        };
        let mut line = String::from(*rng.pick(&PREFIXES));
        if rng.below(30) == 0 {
            line.push_str(&coloured(&f));
        } else {
            write_gin_line(&f, &mut line);
        }
        out.extend(line.as_bytes());
        let ip: IpAddr = ip_text.parse().unwrap();
        truth.push(Truth {
            epoch: now,
            latency: gin_latency(f.latency),
            ip: ip.to_canonical(),
            path: norm,
        });
    }
    (out, truth)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

type Key = (i64, String, String);

/// (key, count, avg, max, severity).
type RefRow = (Key, u64, f64, f64, Severity);

fn rows_from(groups: HashMap<Key, (u64, f64, f64)>) -> Vec<RefRow> {
    let mut rows: Vec<_> = groups
        .into_iter()
        .map(|(k, (n, avg, max))| {
            let sev = if avg > 50.0 {
                Severity::High
            } else if avg > 40.0 {
                Severity::Medium
            } else {
                Severity::Low
            };
            (k, n, avg, max, sev)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// The SPL search, done the obvious way.
fn reference_compat(bytes: &[u8], offset_secs: i64) -> Vec<RefRow> {
    let re = regex::bytes::Regex::new(&format!("(?-u){SPL}")).unwrap();
    let mut acc: HashMap<Key, (u64, f64, f64)> = HashMap::new();
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        let Some(caps) = re.captures(text.as_bytes()) else {
            continue;
        };
        let Some(at) = text.find("[GIN] ") else {
            continue;
        };
        let Some(stamp) = text.get(at + 6..at + 27) else {
            continue;
        };
        let Ok(local) = NaiveDateTime::parse_from_str(stamp, "%Y/%m/%d - %H:%M:%S") else {
            continue;
        };
        let field = |n: &str| String::from_utf8(caps[n].to_vec()).unwrap();
        let Ok(rt) = field("response_time").parse::<f64>() else {
            continue;
        };
        if rt <= 55.0 {
            continue;
        }
        let epoch = local.and_utc().timestamp() - offset_secs;
        let key = (
            epoch.div_euclid(900) * 900,
            field("src_ip"),
            field("uri_path"),
        );
        let e = acc.entry(key).or_insert((0, 0.0, 0.0));
        e.0 += 1;
        e.1 += rt;
        e.2 = e.2.max(rt);
    }
    let groups = acc
        .into_iter()
        .map(|(k, (n, sum, max))| (k, (n, round2(sum / n as f64), round2(max))))
        .collect();
    rows_from(groups)
}

/// The seed rule over the generator's truth (IPv6 sources exact: prefix 128).
fn reference_fixed(truth: &[Truth]) -> Vec<RefRow> {
    let mut acc: HashMap<Key, (u64, u128, u128)> = HashMap::new();
    for t in truth.iter().filter(|t| t.latency > Duration::from_secs(55)) {
        let key = (
            t.epoch.div_euclid(900) * 900,
            t.ip.to_string(),
            t.path.to_owned(),
        );
        let e = acc.entry(key).or_insert((0, 0, 0));
        let ns = t.latency.as_nanos();
        e.0 += 1;
        e.1 += ns;
        e.2 = e.2.max(ns);
    }
    let groups = acc
        .into_iter()
        .map(|(k, (n, sum, max))| {
            (
                k,
                (
                    n,
                    round2(sum as f64 / n as f64 / 1e9),
                    round2(max as f64 / 1e9),
                ),
            )
        })
        .collect();
    rows_from(groups)
}

fn scanned(opts: &ScanOptions, bytes: &[u8]) -> (Vec<RefRow>, crate::scan::ScanSummary) {
    let input = Input::sniffed("corpus", Box::new(std::io::Cursor::new(bytes.to_vec()))).unwrap();
    let (rows, summary) = scan_rows(opts, vec![input]).unwrap();
    let rows = rows
        .into_iter()
        .map(|r: Row| {
            assert_eq!(&*r.rule, "model_exfiltration");
            let key = (r.time, r.src, r.uri_path.unwrap().to_string());
            (
                key,
                r.count,
                r.avg_response_time,
                r.max_response_time,
                r.severity,
            )
        })
        .collect();
    (rows, summary)
}

#[test]
fn compat_mode_equals_a_plain_regex_and_hashmap_implementation_of_the_spl() {
    for (seed, zone, offset) in [
        (1, "UTC", 0),
        (0xdead_beef, "+05:30", 19_800),
        (42, "-08:00", -28_800),
    ] {
        let (bytes, _) = corpus(seed, 20_000);
        let want = reference_compat(&bytes, offset);
        let (got, summary) = scanned(&compat(zone), &bytes);
        assert!(want.len() > 50, "seed {seed}: only {} rows", want.len());
        assert_eq!(got, want, "seed {seed}");
        assert_eq!(summary.lines_read, 20_000);
    }
}

#[test]
fn default_mode_seed_rule_rows_equal_a_naive_per_bin_src_path_count() {
    let options = EngineOptions {
        ipv6_prefix: 128,
        ..EngineOptions::default()
    };
    for seed in [7, 0x1234_5678_9abc, 99] {
        let (bytes, truth) = corpus(seed, 20_000);
        let want = reference_fixed(&truth);
        let (got, summary) = scanned(
            &with_rules(vec![model_exfiltration()], options.clone()),
            &bytes,
        );
        assert!(want.len() > 100, "seed {seed}: only {} rows", want.len());
        assert_eq!(got.len(), want.len(), "seed {seed}");
        assert_eq!(got, want, "seed {seed}");
        assert_eq!(summary.lines_parsed, truth.len() as u64);
        assert_eq!(summary.late_records, 0);
    }
}
