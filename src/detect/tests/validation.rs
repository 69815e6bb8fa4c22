//! Rule validation messages, defaults and the TOML shape.

use super::*;
use crate::detect::rule::{Cutoff, SeverityRule};
use crate::detect::{default_rules, Rule, RuleError};

fn error_of(cfg: RuleConfig) -> String {
    Rule::from_config(&cfg).unwrap_err().to_string()
}

fn toml_rules(text: &str) -> Result<Vec<RuleConfig>, toml::de::Error> {
    #[derive(serde::Deserialize)]
    struct File {
        rule: Vec<RuleConfig>,
    }
    toml::from_str::<File>(text).map(|f| f.rule)
}

#[test]
fn invalid_values_name_the_rule_and_the_key() {
    let cases: Vec<(RuleConfig, &str)> = vec![
        (
            rule("model_exfiltration", |r| r.threshold = 0),
            "rule[model_exfiltration].threshold: must be at least 1",
        ),
        (rule("r", |r| r.threshold = -5), "rule[r].threshold: must be at least 1"),
        (rule("r", |r| r.window = "0s".into()), "rule[r].window: must be at least 1s"),
        (
            rule("r", |r| r.window = "1500ms".into()),
            "rule[r].window: must be a whole number of seconds",
        ),
        (
            rule("r", |r| {
                r.window_kind = "sliding".into();
                r.window = "10s".into();
            }),
            "rule[r].window: must be at least 15s for a sliding window",
        ),
        (
            rule("r", |r| r.paths = Vec::new()),
            "rule[r].paths: must not be empty (use [\"*\"] for any path)",
        ),
        (
            rule("r", |r| r.paths = vec!["/ok".into(), "api/show".into()]),
            "rule[r].paths[1]: bad glob \"api/show\": must start with '/' or a wildcard",
        ),
        (
            rule("r", |r| r.min_latency = "55 parsecs".into()),
            "rule[r].min_latency: bad duration \"55 parsecs\": unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)",
        ),
        (
            rule("r", |r| {
                r.min_latency = "55s".into();
                r.max_latency = "10s".into();
            }),
            "rule[r].max_latency: must be greater than min_latency",
        ),
        (
            rule("r", |r| r.group_by = "source".into()),
            "rule[r].group_by: unknown value \"source\" (expected src_path, src, identity or identity_path)",
        ),
        (
            rule("r", |r| r.window_kind = "hopping".into()),
            "rule[r].window_kind: unknown value \"hopping\" (expected tumbling or sliding)",
        ),
        (
            rule("r", |r| r.action = "ban".into()),
            "rule[r].action: unknown value \"ban\" (expected \"\", log or block)",
        ),
        (
            rule("r", |r| r.methods = vec!["get".into()]),
            "rule[r].methods: \"get\" must be upper case (HTTP methods are case-sensitive)",
        ),
    ];
    for (cfg, expected) in cases {
        assert_eq!(error_of(cfg), expected);
    }
}

#[test]
fn severity_cutoffs_must_fit_the_mode_and_be_ordered() {
    let cases: Vec<(RuleConfig, &str)> = vec![
        (
            rule("r", |r| r.severity_medium = Some(Cutoff::Text("60s".into()))),
            "rule[r].severity_medium: must not exceed severity_high",
        ),
        (
            rule("r", |r| r.severity_high = Some(Cutoff::Count(50))),
            "rule[r].severity_high: expected a duration like \"50s\" for severity_by = \"avg_latency\", got 50",
        ),
        (
            rule("r", |r| r.severity_by = "count".into()),
            "rule[r].severity_high: required when severity_by = \"count\"",
        ),
        (
            rule("r", |r| {
                r.severity_by = "count".into();
                r.severity_high = Some(Cutoff::Count(10));
                r.severity_medium = Some(Cutoff::Text("20s".into()));
            }),
            "rule[r].severity_medium: expected a whole number for severity_by = \"count\", got \"20s\"",
        ),
        (
            rule("r", |r| {
                r.severity_by = "count".into();
                r.severity_high = Some(Cutoff::Count(10));
                r.severity_medium = Some(Cutoff::Count(20));
            }),
            "rule[r].severity_medium: must not exceed severity_high",
        ),
        (
            rule("r", |r| r.severity_by = "p99".into()),
            "rule[r].severity_by: unknown value \"p99\" (expected avg_latency, max_latency, count or bytes)",
        ),
    ];
    for (cfg, expected) in cases {
        assert_eq!(error_of(cfg), expected);
    }
}

#[test]
fn names_must_be_present_and_unique() {
    let unnamed = vec![rule("a", |_| {}), rule("", |_| {})];
    assert_eq!(
        build_rules(&unnamed).unwrap_err(),
        RuleError::EmptyName { position: 2 }
    );
    assert_eq!(
        build_rules(&unnamed).unwrap_err().to_string(),
        "rule[#2].name: must not be empty"
    );
    let twins = vec![rule("a", |_| {}), rule("a", |_| {})];
    assert_eq!(
        build_rules(&twins).unwrap_err().to_string(),
        "rule[a].name: duplicate rule name"
    );
}

#[test]
fn the_spec_example_table_parses_to_the_built_in_seed_rule() {
    let text = r#"
        [[rule]]
        name = "model_exfiltration"
        escu_id = "c9fd1a54-0eab-4470-8970-d5fcc3c740fb"
        attack_type = "Potential Data Exfiltration"
        mitre = "T1048"
        paths = ["*"]
        methods = []
        min_latency = "55s"
        max_latency = ""
        group_by = "src_path"
        window = "15m"
        window_kind = "tumbling"
        threshold = 1
        severity_by = "avg_latency"
        severity_high = "50s"
        severity_medium = "40s"
        action = ""
        risk_score = 20
    "#;
    assert_eq!(
        toml_rules(text).unwrap(),
        // The README's example is a `[[rule]]` (follows the mode); the built-in carries its
        // own block-safe action.
        vec![RuleConfig {
            action: String::new(),
            ..crate::detect::builtin::model_exfiltration()
        }]
    );
}

#[test]
fn unknown_keys_are_refused() {
    let err = toml_rules("[[rule]]\nname = \"a\"\ntreshold = 3\n").unwrap_err();
    assert!(
        err.to_string().contains("unknown field `treshold`"),
        "{err}"
    );
}

#[test]
fn count_cutoffs_accept_integers_and_digit_strings() {
    let text = "[[rule]]\nname = \"a\"\nseverity_by = \"count\"\nseverity_high = 500\nseverity_medium = \"200\"\n";
    let rules = build_rules(&toml_rules(text).unwrap()).unwrap();
    assert_eq!(
        rules[0].severity(),
        SeverityRule::Count {
            high: 500,
            medium: 200
        }
    );
}

#[test]
fn a_minimal_rule_takes_the_documented_defaults() {
    let rules = build_rules(&toml_rules("[[rule]]\nname = \"a\"\n").unwrap()).unwrap();
    let effective = toml::to_string(rules[0].config()).unwrap();
    assert_eq!(
        effective,
        concat!(
            "name = \"a\"\nattack_type = \"\"\npaths = [\"*\"]\nmethods = []\nstatus = []\n",
            "min_latency = \"0s\"\nmax_latency = \"\"\ngroup_by = \"src_path\"\nwindow = \"15m\"\n",
            "window_kind = \"tumbling\"\nmetric = \"count\"\nthreshold = 1\nseverity_by = \"avg_latency\"\n",
            "severity_high = \"50s\"\nseverity_medium = \"40s\"\naction = \"\"\n"
        )
    );
    assert_eq!(&*rules[0].config().name, "a");
}

#[test]
fn default_rules_are_valid_and_named_as_documented() {
    let rules = build_rules(&default_rules()).unwrap();
    let names: Vec<&str> = rules.iter().map(|r| &**r.name()).collect();
    assert_eq!(
        names,
        [
            "model_exfiltration",
            "metadata_enumeration",
            "jailbreak_long_generation",
            "excessive_requests",
            "endpoint_scan",
            "bulk_generation",
            "auth_failures"
        ]
    );
}

#[test]
fn sliding_thresholds_stop_at_what_a_sub_bucket_counts() {
    let sliding = |t: i64| {
        rule("r", move |r| {
            r.window_kind = "sliding".into();
            r.threshold = t;
        })
    };
    assert_eq!(
        error_of(sliding(4_096)),
        "rule[r].threshold: must be at most 4095 for a sliding window (use a tumbling window for more)"
    );
    assert_eq!(
        Rule::from_config(&sliding(4_095)).unwrap().threshold(),
        4_095
    );
    let tumbling = rule("r", |r| r.threshold = 100_000);
    assert_eq!(Rule::from_config(&tumbling).unwrap().threshold(), 100_000);
}

#[test]
fn tumbling_thresholds_stop_at_what_the_32_bit_count_holds() {
    let tumbling = |t: i64| rule("r", move |r| r.threshold = t);
    assert_eq!(
        error_of(tumbling(4_294_967_296)),
        "rule[r].threshold: must be at most 4294967295 for a tumbling window (its per-window count is 32-bit)"
    );
    assert_eq!(
        Rule::from_config(&tumbling(4_294_967_295))
            .unwrap()
            .threshold(),
        4_294_967_295
    );
}

#[test]
fn statuses_must_be_http_statuses_and_are_named_by_position() {
    let with = |status: Vec<i64>| rule("r", move |r| r.status = status);
    assert_eq!(
        error_of(with(vec![99])),
        "rule[r].status[0]: 99 is not an HTTP status (expected 100 to 599)"
    );
    assert_eq!(
        error_of(with(vec![401, 600])),
        "rule[r].status[1]: 600 is not an HTTP status (expected 100 to 599)"
    );
    assert_eq!(
        error_of(with(vec![-401])),
        "rule[r].status[0]: -401 is not an HTTP status (expected 100 to 599)"
    );
    let ok = Rule::from_config(&with(vec![599, 100, 401, 401])).unwrap();
    assert_eq!(ok.statuses, [100, 401, 599]);
    let same = Rule::from_config(&with(vec![100, 401, 599])).unwrap();
    assert!(ok.same_effective_config(&same));
    let other = Rule::from_config(&with(vec![401])).unwrap();
    assert!(!ok.same_effective_config(&other));
}

#[test]
fn group_by_accepts_the_identity_groupings() {
    for by in ["src_path", "src", "identity", "identity_path"] {
        let r = Rule::from_config(&rule("r", |r| r.group_by = by.into())).unwrap();
        assert_eq!(r.config().group_by, by);
    }
    assert_eq!(
        error_of(rule("r", |r| r.group_by = "key".into())),
        "rule[r].group_by: unknown value \"key\" (expected src_path, src, identity or identity_path)"
    );
    let a = Rule::from_config(&rule("r", |r| r.group_by = "identity".into())).unwrap();
    let b = Rule::from_config(&rule("r", |r| r.group_by = "src".into())).unwrap();
    assert!(!a.same_effective_config(&b));
}

/// `[cluster]`: a rule's name in Redis carries a digest of the validated values that decide
/// what it counts and does: the same for the same rule however it is spelled (`15m` and
/// `900s`, lists in another order) or labelled, another for another threshold, action, window
/// or name (a canary replica must not share the others' windows and markers).
#[test]
fn the_shared_id_names_the_rule_and_its_effective_configuration() {
    let id = |f: &dyn Fn(&mut RuleConfig)| {
        let cfg = rule("burst", |r| {
            r.window = "15m".into();
            f(r);
        });
        Rule::from_config(&cfg).unwrap().shared_id.to_string()
    };
    let base = id(&|_| {});
    let digest = base.strip_prefix("burst#").unwrap();
    assert!(
        digest.len() == 16 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{base}"
    );
    assert_eq!(id(&|r| r.window = "900s".into()), base);
    assert_eq!(
        id(&|r| r.status = vec![401, 200]),
        id(&|r| r.status = vec![200, 401])
    );
    // Sets, not lists; labels are not the rule's effect.
    assert_eq!(
        id(&|r| r.paths = vec!["/api/show".into(), "/api/tags".into(), "/api/show".into()]),
        id(&|r| r.paths = vec!["/api/tags".into(), "/api/show".into()])
    );
    assert_eq!(
        id(&|r| r.methods = vec!["POST".into(), "GET".into()]),
        id(&|r| r.methods = vec!["GET".into(), "POST".into()])
    );
    assert_eq!(id(&|r| r.attack_type = "Another label".into()), base);
    assert_eq!(id(&|r| r.mitre = Some("T1048".into())), base);
    for other in [
        id(&|r| r.threshold = 99),
        id(&|r| r.window = "16m".into()),
        id(&|r| r.action = "log".into()),
        id(&|r| r.window_kind = "sliding".into()),
        id(&|r| r.paths = vec!["/api/show".into()]),
    ] {
        assert_ne!(other, base);
        assert!(other.starts_with("burst#"), "{other}");
    }
    let renamed = Rule::from_config(&rule("other", |r| r.window = "15m".into())).unwrap();
    assert!(
        renamed.shared_id.starts_with("other#"),
        "{}",
        renamed.shared_id
    );
}
