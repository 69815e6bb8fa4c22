//! A rule's table of fixed routes gives what its globs give.

use super::*;
use crate::detect::rule::{Candidates, Target};

/// Rules with the path patterns that exercise the table: exact paths, prefixes, a star in
/// the middle, a pattern that matches no fixed route, every path, and a method list.
fn rules() -> Vec<super::super::rule::Rule> {
    let cfgs = [
        rule("exact", |r| r.paths = vec!["/api/tags".into()]),
        rule("prefix", |r| r.paths = vec!["/api/p*".into()]),
        rule("middle", |r| r.paths = vec!["/v1/*s".into()]),
        rule("two", |r| {
            r.paths = vec!["/api/generate".into(), "/v1/chat/completions".into()]
        }),
        rule("none", |r| r.paths = vec!["/admin/*".into()]),
        rule("any", |r| r.paths = vec!["*".into()]),
        rule("posts", |r| {
            r.paths = vec!["/api/*".into()];
            r.methods = vec!["POST".into()];
        }),
    ];
    build_rules(&cfgs).unwrap()
}

fn bits(routes: &[Route]) -> u32 {
    routes.iter().fold(0, |b, r| b | 1 << r.index())
}

#[test]
fn the_table_holds_the_fixed_routes_each_rule_matches() {
    let rules = rules();
    let table: Vec<u32> = rules.iter().map(|r| r.fixed_routes).collect();
    let fixed_v1 = [
        Route::OpenAiChat,
        Route::OpenAiCompletions,
        Route::OpenAiEmbeddings,
        Route::OpenAiModels,
        Route::OpenAiResponses,
        Route::OpenAiTranscriptions,
        Route::AnthropicMessages,
    ];
    let all_fixed: Vec<Route> = Route::ALL
        .into_iter()
        .filter(|r| r.fixed_path().is_some())
        .collect();
    let api_fixed: Vec<Route> = all_fixed
        .iter()
        .copied()
        .filter(|r| r.label().starts_with("/api/"))
        .collect();
    assert_eq!(all_fixed.len(), 25);
    assert_eq!(api_fixed.len(), 17);
    assert_eq!(
        table,
        [
            bits(&[Route::Tags]),
            bits(&[Route::Ps, Route::Pull, Route::Push]),
            // Every fixed `/v1/` path ends in `s` (the star spans `chat/completion` too).
            bits(&fixed_v1),
            bits(&[Route::Generate, Route::OpenAiChat]),
            0,
            bits(&all_fixed),
            bits(&api_fixed),
        ]
    );
}

/// Every fixed route, and paths that look like one but are not its exact text, with methods
/// and latencies: the table and the globs agree for every rule.
#[test]
fn the_table_and_the_globs_agree() {
    let rules = rules();
    let mut paths: Vec<(&str, Route)> = Route::ALL
        .into_iter()
        .filter_map(|r| r.fixed_path().map(|p| (p, r)))
        .collect();
    // A route label beside a path that is not its text: the globs decide.
    paths.extend([
        ("/api/tags/", Route::Tags),
        ("/api/tagsx", Route::Tags),
        ("/API/tags", Route::Tags),
        ("/api/pull", Route::Tags),
        ("/admin/x", Route::Other),
        ("/api/blobs/sha256:00", Route::Blobs),
        ("/v1/models/llama3", Route::OpenAiModel),
    ]);
    let mut checked = 0;
    for rule in &rules {
        for &(path, route) in &paths {
            for method in ["GET", "POST", "post", "PROPFIND"] {
                let fast = Target::new(method, path, route);
                let slow = Target::new(method, path, Route::Other);
                for latency in [secs(0), secs(31)] {
                    assert_eq!(
                        rule.qualifies(&fast, latency),
                        rule.qualifies(&slow, latency),
                        "{} {method} {path} ({route:?})",
                        rule.name()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 7 * 32 * 4 * 2);
}

/// A label that disagrees with the path (a bug elsewhere, or a hand-made record) cannot
/// make a rule count the route's path: only the exact text reads the table.
#[test]
fn a_route_label_without_its_exact_path_is_matched_by_the_globs() {
    let rules = rules();
    let exact = &rules[0];
    assert!(exact.qualifies(&Target::new("GET", "/api/tags", Route::Tags), secs(0)));
    assert!(exact.qualifies(&Target::new("GET", "/api/tags", Route::Other), secs(0)));
    assert!(!exact.qualifies(&Target::new("GET", "/api/tagsx", Route::Tags), secs(0)));
    assert!(!exact.qualifies(&Target::new("GET", "/api/pull", Route::Tags), secs(0)));
    let posts = &rules[6];
    assert!(posts.qualifies(&Target::new("POST", "/api/pull", Route::Pull), secs(0)));
    assert!(!posts.qualifies(&Target::new("GET", "/api/pull", Route::Pull), secs(0)));
    assert!(!posts.qualifies(
        &Target::new("POST", "/v1/models", Route::OpenAiModels),
        secs(0)
    ));
}

/// The candidate lists: for a fixed route's exact path, exactly the rules whose table has the
/// route; for any other path (or a label without its exact text), every rule, in index order.
#[test]
fn the_candidates_of_a_target_are_the_rules_its_route_can_match() {
    let rules = rules();
    let candidates = Candidates::new(&rules);
    let of = |method, path, route| candidates.of(&Target::new(method, path, route)).to_vec();
    // Rules: 0 exact, 1 prefix, 2 middle, 3 two, 4 none, 5 any, 6 posts.
    assert_eq!(of("GET", "/api/tags", Route::Tags), [0, 5, 6]);
    assert_eq!(of("POST", "/api/pull", Route::Pull), [1, 5, 6]);
    assert_eq!(of("POST", "/api/generate", Route::Generate), [3, 5, 6]);
    assert_eq!(
        of("POST", "/v1/chat/completions", Route::OpenAiChat),
        [2, 3, 5]
    );
    assert_eq!(of("GET", "/v1/models", Route::OpenAiModels), [2, 5]);
    let all = [0, 1, 2, 3, 4, 5, 6];
    assert_eq!(of("GET", "/admin/x", Route::Other), all);
    assert_eq!(of("GET", "/api/tagsx", Route::Tags), all);
    assert_eq!(of("GET", "/v1/models/llama3", Route::OpenAiModel), all);
    // A rule left out is one that turns the request down on its path whatever else it is.
    for route in Route::ALL {
        let Some(path) = route.fixed_path() else {
            continue;
        };
        let listed = of("POST", path, route);
        for (i, rule) in rules.iter().enumerate() {
            let i = u16::try_from(i).unwrap();
            let could = ["GET", "POST"]
                .into_iter()
                .any(|m| rule.qualifies(&Target::new(m, path, Route::Other), secs(31)));
            assert_eq!(listed.contains(&i), could, "{} {path}", rule.name());
        }
    }
    // No rules: nothing to ask.
    assert!(Candidates::new(&[])
        .of(&Target::new("GET", "/api/tags", Route::Tags))
        .is_empty());
}

/// The latency band compared in nanoseconds gives what comparing the `Duration`s gives, at
/// its edges and beyond what 64 bits of nanoseconds hold.
#[test]
fn the_latency_band_in_nanoseconds_is_the_durations_band() {
    let band = |min: &str, max: &str| {
        let cfg = rule("band", |r| {
            r.min_latency = min.into();
            r.max_latency = max.into();
        });
        build_rules(&[cfg]).unwrap().remove(0)
    };
    let target = Target::new("GET", "/api/tags", Route::Tags);
    let ns = Duration::from_nanos;
    let huge = Duration::from_secs(u64::MAX / 2);
    let cases: [(&str, &str, Duration, bool); 14] = [
        ("0s", "", Duration::ZERO, true),
        ("0s", "", Duration::MAX, true),
        ("30s", "", secs(30), false),
        ("30s", "", secs(30) + ns(1), true),
        ("30s", "", secs(29), false),
        ("30s", "60s", secs(60) - ns(1), true),
        ("30s", "60s", secs(60), false),
        ("0s", "1ns", Duration::ZERO, true),
        ("0s", "1ns", ns(1), false),
        ("1ns", "", ns(1), false),
        ("1ns", "", ns(2), true),
        // Past 2^64 ns (584 years): still exact.
        ("300000000y", "", huge, true),
        (
            "300000000y",
            "",
            Duration::from_secs(300_000_000 * 31_557_600),
            false,
        ),
        ("0s", "300000000y", Duration::MAX, false),
    ];
    for (min, max, latency, want) in cases {
        let rule = band(min, max);
        assert_eq!(
            rule.qualifies(&target, latency),
            want,
            "{min}..{max}: {latency:?}"
        );
        assert_eq!(
            rule.qualifies_ns(&target, latency.as_nanos()),
            want,
            "{min}..{max}: {latency:?}"
        );
    }
}

/// The built-in rules (0 model_exfiltration, 1 metadata_enumeration, 2
/// jailbreak_long_generation, 3 excessive_requests, 4 endpoint_scan, 5 bulk_generation, 6
/// auth_failures): a model listing is of no interest to the two about generations, a
/// generation to the one about metadata, a path no fixed route has to none of them yet.
#[test]
fn the_candidates_of_the_built_in_rules() {
    let rules = build_rules(&crate::detect::builtin::default_rules()).unwrap();
    let candidates = Candidates::new(&rules);
    let of = |path, route| candidates.of(&Target::new("GET", path, route)).to_vec();
    assert_eq!(of("/api/tags", Route::Tags), [0, 1, 3, 4, 6]);
    assert_eq!(of("/api/generate", Route::Generate), [0, 2, 3, 4, 5, 6]);
    assert_eq!(of("/api/chat", Route::Chat), [0, 3, 4, 5, 6]);
    assert_eq!(of("/api/pull", Route::Pull), [0, 3, 4, 6]);
    assert_eq!(
        of("/v1/audio/transcriptions", Route::OpenAiTranscriptions),
        [0, 3, 4, 5, 6]
    );
    assert_eq!(
        of("/api/experimental/web_search", Route::WebSearch),
        [0, 3, 4, 6]
    );
    assert_eq!(of("/api/status", Route::Status), [0, 3, 4, 6]);
    assert_eq!(of("/nope", Route::Other), [0, 1, 2, 3, 4, 5, 6]);
}
