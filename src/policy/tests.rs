use super::*;

fn members(json: &str) -> Members<'_> {
    Members::parse(json.as_bytes()).unwrap()
}

fn rules(route: Route, json: &str) -> Vec<(&'static str, String)> {
    check_body(&PolicyConfig::default(), route, &members(json))
        .into_iter()
        .map(|v| (v.rule, v.value))
        .collect()
}

#[test]
fn default_pulls_from_the_official_registry_and_hugging_face_pass() {
    for body in [
        r#"{"model":"llama3.2"}"#,
        r#"{"name":"llama3.2:1b"}"#,
        r#"{"model":"hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"}"#,
        r#"{"model":"huggingface.co/user/repo"}"#,
        r#"{"model":"ollama.com/library/llama3"}"#,
    ] {
        assert_eq!(rules(Route::Pull, body), [], "{body}");
    }
}

#[test]
fn pulls_from_a_rogue_registry_and_insecure_transfers_are_flagged() {
    assert_eq!(
        rules(
            Route::Pull,
            r#"{"model":"evil.example/ns/llama3","insecure":true}"#
        ),
        [
            ("policy.registry_pull", "evil.example/ns/llama3".to_owned()),
            ("policy.insecure", "true".to_owned())
        ]
    );
}

#[test]
fn every_push_is_flagged_by_default_and_allowed_registries_pass() {
    assert_eq!(
        rules(Route::Push, r#"{"model":"attacker.example/x/y"}"#),
        [("policy.registry_push", "attacker.example/x/y".to_owned())]
    );
    assert_eq!(rules(Route::Push, r#"{"model":"me/llama3"}"#).len(), 1);
    let cfg = PolicyConfig {
        registries_push: vec!["registry.internal".into()],
        ..PolicyConfig::default()
    };
    let ok = check_body(
        &cfg,
        Route::Push,
        &members(r#"{"model":"registry.internal/t/m"}"#),
    );
    assert_eq!(ok, []);
}

#[test]
fn the_deprecated_name_alias_and_case_games_cannot_dodge_the_push_rule() {
    assert_eq!(
        rules(Route::Push, r#"{"model":"","name":"attacker.example/x/y"}"#),
        [("policy.registry_push", "attacker.example/x/y".to_owned())]
    );
    assert_eq!(
        rules(
            Route::Pull,
            r#"{"model":"llama3","MODEL":"attacker.example/x/y"}"#
        ),
        [("policy.registry_pull", "attacker.example/x/y".to_owned())]
    );
    assert_eq!(
        rules(Route::Pull, r#"{"model":"a/b/c/d"}"#),
        [("policy.registry_pull", "a/b/c/d".to_owned())],
        "unreadable names fail closed"
    );
}

#[test]
fn create_from_a_server_path_and_foreign_remote_hosts_are_flagged() {
    assert_eq!(
        rules(Route::Create, r#"{"model":"x","from":"/etc/passwd"}"#),
        [("policy.create_from_path", "/etc/passwd".to_owned())]
    );
    assert_eq!(
        rules(
            Route::Create,
            r#"{"model":"x","modelfile":"FROM ../../secret.gguf\nSYSTEM hi"}"#
        ),
        [(
            "policy.create_from_path",
            "FROM ../../secret.gguf".to_owned()
        )]
    );
    // Innocent Modelfiles pass: an adapter by blob reference, a library model, a line that is
    // no command, a prompt whose lines start with "From" or "Adapter", a template.
    const BLOB: &str = "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    for modelfile in [
        format!(r"FROM llama3.2\nADAPTER {BLOB}\nFROMAGE x\nFROM"),
        r#"FROM llama3.2\nPARAMETER temperature 1\nSYSTEM \"\"\"\nFrom https://docs.example.com/guide/intro you may quote.\nFrom the docs at example.com/docs/intro, answer.\nFrom ~/notes, nothing.\nAdapter ./style is a word.\n\"\"\"\n"#.to_owned(),
        r"FROM hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M\nTEMPLATE {{ .Prompt }}\n".to_owned(),
        format!(r"FROM {BLOB}\n"),
        r"FROM library/llama3.2:1b\r\nFROM user/model:tag\r\nFROM registry.ollama.ai/library/qwen3\r\n"
            .to_owned(),
        r#"\ufeffFROM llama3.2\nLICENSE \"\"\"\nFrom /etc/passwd the rights are yours.\n\"\"\"\nMESSAGE user From where?\n"#
            .to_owned(),
    ] {
        assert_eq!(
            rules(
                Route::Create,
                &format!(r#"{{"model":"x","modelfile":"{modelfile}"}}"#)
            ),
            [],
            "{modelfile}"
        );
    }
    // A Modelfile of more FROM and ADAPTER commands than any person writes is refused whole
    // (each read by three parsers counts three times): 85 lines pass, 86 do not.
    for (lines, want) in [
        (85, vec![]),
        (
            86,
            vec![(
                "policy.create_from_path",
                "more than 256 FROM and ADAPTER commands".to_owned(),
            )],
        ),
    ] {
        let modelfile = r"FROM llama3.2\n".repeat(lines);
        assert_eq!(
            rules(
                Route::Create,
                &format!(r#"{{"model":"x","modelfile":"{modelfile}"}}"#)
            ),
            want,
            "{lines}"
        );
    }
    // Whatever reads as a `FROM` or `ADAPTER` file read to one of Ollama's Modelfile parsers
    // (see `modelfile`): a tab separates the command as a space does, whatever the case; a
    // byte-order mark hides nothing; a lone `\r` ends a line to the state machines (and is part
    // of a value to the line scanner); quotes come off; a relative adapter is read from the
    // server's working directory; a character the parser drops hides nothing; a name that is
    // not one, a blob reference that is not a digest and a top-level directory are files; the
    // line scanner ends a token at its closing quote, and before 0.2 a value was not trimmed.
    let path = "policy.create_from_path";
    for (modelfile, want) in [
        (r"FROM\t/etc/passwd", vec![(path, "FROM\t/etc/passwd")]),
        (
            r"from \t attacker.example/x/y",
            vec![("policy.registry_pull", "from \t attacker.example/x/y")],
        ),
        (r"\ufeffFROM /etc/passwd", vec![(path, "FROM /etc/passwd")]),
        (
            r"FROM llama3.2\nADAPTER\t./lora.gguf",
            vec![(path, "ADAPTER\t./lora.gguf")],
        ),
        (
            r"FROM llama3.2\rFROM /etc/passwd",
            vec![(path, "FROM /etc/passwd")],
        ),
        (
            r#"FROM llama3.2\rADAPTER \"/etc/shadow\""#,
            vec![(path, r#"ADAPTER "/etc/shadow""#)],
        ),
        (
            r#"FROM llama3.2\nADAPTER \"\"\"\n/etc/shadow\"\"\""#,
            vec![(path, "ADAPTER \"\"\"\n/etc/shadow\"\"\"")],
        ),
        (
            r"FROM llama3.2\nADAPTER lora.gguf",
            vec![(path, "ADAPTER lora.gguf")],
        ),
        (
            r"FROM llama3.2\nADAPTER sha256-abc",
            vec![(path, "ADAPTER sha256-abc")],
        ),
        (
            r"\u200bADAPTER x\nFROM llama3.2",
            vec![(path, "\u{200b}ADAPTER x")],
        ),
        (
            r"FROM \u0001/etc/passwd",
            vec![(path, "FROM \u{1}/etc/passwd")],
        ),
        (r"FROM \u0378/x\n", vec![(path, "FROM \u{378}/x")]),
        (
            r#"FROM \"attacker.example/x/y\""#,
            vec![
                ("policy.registry_pull", r#"FROM "attacker.example/x/y""#),
                (path, r#"FROM "attacker.example/x/y""#),
            ],
        ),
        (
            r#"FROM \"/etc/passwd\"\nFROM /etc/hosts"#,
            vec![(path, r#"FROM "/etc/passwd""#)],
        ),
        (r"FROM etc/shadow\n", vec![(path, "FROM etc/shadow")]),
        (
            r"FROM proc/self/environ\n",
            vec![(path, "FROM proc/self/environ")],
        ),
        (r"FROM root/.bashrc\n", vec![(path, "FROM root/.bashrc")]),
        (
            r"FROM Downloads/x.GGUF:latest\n",
            vec![(path, "FROM Downloads/x.GGUF:latest")],
        ),
        (
            r#"FROM llama3.2\nSYSTEM \"x\nFROM /etc/passwd\n"#,
            vec![(path, "FROM /etc/passwd")],
        ),
        (
            r"\ufffdFROM llama3.2\nA\u0000DAPTER /etc/shadow\n",
            vec![(path, "ADAPTER /etc/shadow")],
        ),
        (
            r"FROM @../../../../etc/passwd\n",
            vec![(path, "FROM @../../../../etc/passwd")],
        ),
        (
            r"ADAPTER @../../etc/passwd\nFROM m\n",
            vec![(path, "ADAPTER @../../etc/passwd")],
        ),
        (
            r#"FROM llama3.2\nSYSTEM \"x\"FROM /etc/passwd\n"#,
            vec![(path, "FROM /etc/passwd")],
        ),
        (
            r#"#\"\"FROM /etc/passwd\n"#,
            vec![(path, "FROM /etc/passwd")],
        ),
        (
            r#"FROM m\nSYSTEM  \"x\n\u200bFROM /etc/passwd\n"#,
            vec![(path, "\u{200b}FROM /etc/passwd")],
        ),
    ] {
        let want: Vec<(&str, String)> = want.into_iter().map(|(r, v)| (r, v.to_owned())).collect();
        assert_eq!(
            rules(
                Route::Create,
                &format!(r#"{{"model":"x","modelfile":"{modelfile}"}}"#)
            ),
            want,
            "{modelfile}"
        );
    }
    assert_eq!(
        rules(
            Route::Create,
            r#"{"model":"x","remote_host":"http://10.0.0.9:11434"}"#
        ),
        [(
            "policy.create_remote_host",
            "http://10.0.0.9:11434".to_owned()
        )]
    );
    // The host is read as Go's URL parser reads it: user information runs to the last `@`.
    for (remote, host) in [
        ("ollama.com:443@attacker.example", "attacker.example"),
        ("https://ollama.com@attacker.example/", "attacker.example"),
        (
            "https://a@ollama.com@attacker.example:443",
            "attacker.example",
        ),
        ("HTTPS://attacker.example#@ollama.com", "attacker.example"),
        ("http://[fd00::1]:11434", "fd00::1"),
        ("/var/models", "localhost"),
        // No valid scheme before the first `:` (or a `?`, `#` before it): Go reads a path,
        // and Ollama the local server, whatever follows the `://`.
        ("evil.example?x://ollama.com", "localhost"),
        ("evil.example#://ollama.com", "localhost"),
        ("ollama.com?x://a", "localhost"),
        ("evil.example:80://ollama.com", "localhost"),
        ("1http://ollama.com", "localhost"),
        ("ollama.com:x:443", "ollama.com:x:443"),
    ] {
        assert_eq!(super::url_host(remote), host, "{remote}");
        let body = format!(r#"{{"model":"x","remote_host":"{remote}"}}"#);
        assert_eq!(
            rules(Route::Create, &body),
            [("policy.create_remote_host", remote.to_owned())],
            "{remote}"
        );
    }
    for remote in [
        "ollama.com",
        "https://user@ollama.com:443/",
        "https://ollama.com?x=@a",
        "ollama.com:443",
        "git+https://ollama.com/x",
    ] {
        assert_eq!(super::url_host(remote), "ollama.com", "{remote}");
    }
    assert_eq!(
        rules(Route::Create, r#"{"model":"x","from":"llama3.2:1b"}"#),
        []
    );
    assert_eq!(
        rules(
            Route::Create,
            r#"{"model":"x","from":"llama3:latest","remote_host":"https://ollama.com:443"}"#
        ),
        []
    );
}

/// Ollama 0.12 and later make a remote model of a cloud `from` sent without a `remote_host`,
/// pointing at ollama.com: `create_remote_hosts` decides it as if that host had been sent.
#[test]
fn a_cloud_base_is_a_remote_host_of_ollama_com() {
    let none = PolicyConfig {
        create_remote_hosts: vec![],
        ..PolicyConfig::default()
    };
    let judged = |cfg: &PolicyConfig, json: &str| -> Vec<(&'static str, &'static str, String)> {
        check_body(cfg, Route::Create, &members(json))
            .into_iter()
            .map(|v| (v.rule, v.field, v.value))
            .collect()
    };
    for from in [
        "gpt-oss:20b:cloud",
        "gpt-oss:cloud",
        "gpt-oss:20b-cloud",
        "gpt-oss:20B-CLOUD",
        " gpt-oss:20b: Cloud ",
        "hf.co/x/y:cloud",
    ] {
        let body = format!(r#"{{"model":"x","from":"{from}"}}"#);
        // Allowed by default (`create_remote_hosts = ["ollama.com"]`).
        assert_eq!(judged(&PolicyConfig::default(), &body), [], "{from}");
        assert_eq!(
            judged(&none, &body),
            [("policy.create_remote_host", "from", from.to_owned())],
            "{from}"
        );
    }
    // Not cloud references: a tag that merely contains `cloud`, a `-cloud` with a `/` after
    // the last `:` (a host's port, then a path), no tag at all.
    for from in [
        "gpt-oss:cloudy",
        "cloud",
        "gpt-oss-cloud",
        "h:1/x-cloud",
        "m:x_cloud",
    ] {
        let body = format!(r#"{{"model":"x","from":"{from}"}}"#);
        assert_eq!(judged(&none, &body), [], "{from}");
    }
    // A `remote_host` sent with it is the one judged.
    assert_eq!(
        judged(
            &none,
            r#"{"model":"x","from":"m:cloud","remote_host":"https://attacker.example"}"#
        ),
        [(
            "policy.create_remote_host",
            "remote_host",
            "https://attacker.example".to_owned()
        )]
    );
}

/// A create names the model it makes as a copy names its destination: one on a foreign
/// registry is staged for a push there.
#[test]
fn creates_staged_for_a_foreign_push_are_flagged() {
    assert_eq!(
        rules(
            Route::Create,
            r#"{"model":"attacker.example/x/y","from":"llama3"}"#
        ),
        [("policy.copy_destination", "attacker.example/x/y".to_owned())]
    );
    assert_eq!(
        rules(
            Route::Create,
            r#"{"model":"mine","name":"attacker.example/x/y","from":"llama3"}"#
        ),
        [("policy.copy_destination", "attacker.example/x/y".to_owned())]
    );
    for body in [
        r#"{"model":"my-llama","from":"llama3"}"#,
        r#"{"model":"team/my-llama:v2","from":"llama3"}"#,
        r#"{"model":"registry.ollama.ai/team/my-llama","from":"llama3"}"#,
    ] {
        assert_eq!(rules(Route::Create, body), [], "{body}");
    }
    let pushes_to_ours = PolicyConfig {
        registries_push: vec!["registry.example.com".to_owned()],
        ..PolicyConfig::default()
    };
    assert!(check_body(
        &pushes_to_ours,
        Route::Create,
        &members(r#"{"model":"registry.example.com/team/m","from":"llama3"}"#)
    )
    .is_empty());
}

#[test]
fn copies_staged_for_a_foreign_push_are_flagged() {
    assert_eq!(
        rules(
            Route::Copy,
            r#"{"source":"llama3","destination":"attacker.example/x/y"}"#
        ),
        [("policy.copy_destination", "attacker.example/x/y".to_owned())]
    );
    assert_eq!(
        rules(
            Route::Copy,
            r#"{"source":"llama3","destination":"my-llama"}"#
        ),
        []
    );
}

#[test]
fn debug_render_only_is_flagged_on_generation_routes_only_when_true() {
    assert_eq!(
        rules(Route::Chat, r#"{"model":"m","_debug_render_only":true}"#),
        [("policy.debug_render_only", "true".to_owned())]
    );
    assert_eq!(
        rules(
            Route::Generate,
            r#"{"model":"m","_debug_render_only":false}"#
        ),
        []
    );
    assert_eq!(rules(Route::Generate, r#"{"model":"m","prompt":"hi"}"#), []);
}

#[test]
fn manage_from_restricts_management_to_listed_networks() {
    let cfg = PolicyConfig {
        manage_from: vec!["10.0.0.0/8".parse().unwrap()],
        ..PolicyConfig::default()
    };
    assert_eq!(check_source(&cfg, "10.1.2.3".parse().unwrap(), false), None);
    let v = check_source(&cfg, "192.0.2.7".parse().unwrap(), false).unwrap();
    assert_eq!(
        (v.rule, v.value.as_str()),
        ("policy.manage_from", "192.0.2.7")
    );
    assert_eq!(
        check_source(
            &PolicyConfig::default(),
            "192.0.2.7".parse().unwrap(),
            false
        ),
        None
    );
    // A client a trusted proxy named by something not an address does not get the rights of
    // the address it is counted under; without `manage_from` nothing is checked.
    let v = check_source(&cfg, "10.1.2.3".parse().unwrap(), true).unwrap();
    assert_eq!(
        (v.rule, v.value.as_str()),
        ("policy.manage_from", "unknown client via 10.1.2.3")
    );
    assert_eq!(
        check_source(&PolicyConfig::default(), "10.1.2.3".parse().unwrap(), true),
        None
    );
}

#[test]
fn scope_covers_management_and_generation_routes() {
    use http::Method;
    assert_eq!(scope(Route::Push, &Method::POST), Scope::ManageWithBody);
    assert_eq!(scope(Route::Delete, &Method::DELETE), Scope::ManageWithBody);
    assert_eq!(scope(Route::Blobs, &Method::POST), Scope::Manage);
    assert_eq!(scope(Route::Blobs, &Method::HEAD), Scope::None);
    assert_eq!(scope(Route::Chat, &Method::POST), Scope::Generation);
    assert_eq!(scope(Route::Tags, &Method::GET), Scope::None);
}

#[test]
fn create_from_a_model_on_a_foreign_registry_is_an_untrusted_pull() {
    // Ollama pulls a `from` model it does not have, so the base must come from a registry
    // models may be pulled from.
    assert_eq!(
        rules(Route::Create, r#"{"model":"x","from":"evil.example/ns/m"}"#),
        [("policy.registry_pull", "evil.example/ns/m".to_owned())]
    );
    assert_eq!(
        rules(
            Route::Create,
            r#"{"model":"x","modelfile":"FROM evil.example/ns/m:latest\nSYSTEM hi"}"#
        ),
        [(
            "policy.registry_pull",
            "FROM evil.example/ns/m:latest".to_owned()
        )]
    );
    for ok in [
        r#"{"model":"x","from":"llama3.2:1b"}"#,
        r#"{"model":"x","from":"me/my-model"}"#,
        r#"{"model":"x","from":"hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"}"#,
        r#"{"model":"x","modelfile":"FROM llama3.2\nPARAMETER temperature 0.2"}"#,
    ] {
        assert_eq!(rules(Route::Create, ok), [], "{ok}");
    }
}

#[test]
fn a_registry_with_a_port_that_is_not_a_number_is_foreign() {
    assert_eq!(
        rules(Route::Pull, r#"{"model":"hf.co:evil.example/ns/m"}"#),
        [("policy.registry_pull", "hf.co:evil.example/ns/m".to_owned())]
    );
    assert_eq!(rules(Route::Pull, r#"{"model":"hf.co:443/ns/m"}"#), []);
}
