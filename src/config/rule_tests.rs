//! `[rules.NAME]` overrides of the built-in rules: merge, errors, `enabled = false`, and the
//! merged set `check-config` prints.

use super::*;

fn merge(text: &str) -> Result<Config, ConfigError> {
    let file: FileConfig = toml::from_str(text).expect("valid toml");
    Config::merge(&ServeArgs::default(), file)
}

fn rule<'a>(c: &'a Config, name: &str) -> Option<&'a RuleConfig> {
    c.live.rules.iter().find(|r| r.name == name)
}

#[test]
fn an_override_sets_only_the_keys_it_names() {
    let c = merge(
        "[rules.model_exfiltration]\naction = \"block\"\nmin_latency = \"120s\"\n\
         [rules.bulk_generation]\nthreshold_bytes = 1000000\nwindow = \"5m\"\n",
    )
    .unwrap();
    let m = rule(&c, "model_exfiltration").unwrap();
    assert_eq!(
        (m.action.as_str(), m.min_latency.as_str()),
        ("block", "120s")
    );
    assert_eq!(
        (m.window.as_str(), m.threshold),
        ("15m", 1),
        "untouched keys keep the built-in's values"
    );
    let b = rule(&c, "bulk_generation").unwrap();
    assert_eq!(
        (b.threshold_bytes, b.window.as_str()),
        (Some(1_000_000), "5m")
    );
    assert_eq!(c.live.rules.len(), 7);
}

#[test]
fn enabled_false_removes_a_built_in() {
    let c = merge("[rules.endpoint_scan]\nenabled = false\n").unwrap();
    let names: Vec<&str> = c.live.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "model_exfiltration",
            "metadata_enumeration",
            "jailbreak_long_generation",
            "excessive_requests",
            "bulk_generation",
            "auth_failures"
        ]
    );
}

#[test]
fn override_errors_are_one_line_naming_the_key() {
    let err = |text: &str| merge(text).unwrap_err().to_string();
    assert_eq!(
        err("[rules.model_exfil]\naction = \"block\"\n"),
        "config error: rules.model_exfil: no built-in rule of that name"
    );
    assert_eq!(
        err("[[rule]]\nname = \"mine\"\n[rules.endpoint_scan]\nenabled = false\n"),
        "config error: rules.endpoint_scan: overrides apply to the built-in rule set only, and \
         [[rule]] tables replace it (edit the [[rule]] table instead)"
    );
    assert_eq!(
        err("[rules.bulk_generation]\nthreshold = 3\n"),
        "config error: rule[bulk_generation].threshold: must be 1 (or left out) for metric = \
         \"bytes_out\"; set threshold_bytes"
    );
    assert_eq!(
        err("[rules.model_exfiltration]\naction = \"ban\"\n"),
        "config error: rule[model_exfiltration].action: unknown value \"ban\" (expected \"\", log or block)"
    );
    let unknown = toml::from_str::<FileConfig>("[rules.model_exfiltration]\nname = \"x\"\n");
    assert!(unknown
        .unwrap_err()
        .to_string()
        .contains("unknown field `name`"));
}

#[test]
fn check_config_prints_the_merged_rule_set() {
    let c = merge(
        "[rules.model_exfiltration]\naction = \"block\"\n[rules.endpoint_scan]\nenabled = false\n",
    )
    .unwrap();
    let text = c.to_toml();
    assert!(
        !text.contains("[rules."),
        "overrides are printed merged: {text}"
    );
    assert!(!text.contains("endpoint_scan"), "{text}");
    assert!(text.contains("name = \"bulk_generation\"\n"), "{text}");
    assert!(text.contains("metric = \"bytes_out\"\n"), "{text}");
    assert!(text.contains("threshold_bytes = 33554432\n"), "{text}");
    let back = merge(&text).unwrap();
    assert_eq!(
        back.live.rules, c.live.rules,
        "the output reads back as the same rules"
    );
    assert_eq!(rule(&back, "model_exfiltration").unwrap().action, "block");
}

#[test]
fn rules_written_with_rule_tables_keep_following_the_mode() {
    let c = merge("[[rule]]\nname = \"mine\"\n").unwrap();
    assert_eq!(c.live.rules.len(), 1);
    assert_eq!(c.live.rules[0].action, "");
}

#[test]
fn status_is_a_rule_key_in_overrides_and_check_config_prints_it() {
    let c = merge("[rules.auth_failures]\nstatus = [401, 403]\nthreshold = 100\n").unwrap();
    let a = rule(&c, "auth_failures").unwrap();
    assert_eq!((a.status.as_slice(), a.threshold), (&[401, 403][..], 100));
    assert_eq!(
        rule(&c, "excessive_requests").unwrap().status,
        Vec::<i64>::new()
    );
    let text = c.to_toml();
    assert!(text.contains("status = [401, 403]\n"), "{text}");
    assert_eq!(merge(&text).unwrap().live.rules, c.live.rules);
    assert_eq!(
        merge("[rules.auth_failures]\nstatus = [1000]\n")
            .unwrap_err()
            .to_string(),
        "config error: rule[auth_failures].status[0]: 1000 is not an HTTP status (expected 100 to 599)"
    );
}
