//! `bans.json`: restart keeps bans without inflating offences; bad files are moved aside.

use std::fs;
use std::time::Duration;

use super::*;
use crate::enforce::{load_state, save_state, State, JOURNAL_FILE, STATE_FILE};

/// A table with a rule ban of 192.0.2.7 (15m) and an admin ban of 10.0.0.0/8 (1h) from t0.
fn populated() -> (Bans, Ban, Ban) {
    let bans = table();
    let rule = ban(&bans, "192.0.2.7", t0());
    let admin = bans
        .add_manual(
            net("10.0.0.0/8"),
            Duration::from_secs(3600),
            "ops".into(),
            false,
            t0(),
        )
        .unwrap();
    (bans, rule, admin)
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn restart_keeps_bans_and_a_reoffence_is_the_second_not_the_third() {
    let dir = tempfile::tempdir().unwrap();
    let (before, rule, admin) = populated();
    before.save(dir.path(), t0() + mins(1)).unwrap();

    let after = table();
    let report = load_state(dir.path(), t0() + mins(5));
    assert_eq!((report.problem.as_deref(), report.expired.len()), (None, 0));
    let restored = after.restore(report.state, t0() + mins(5));
    assert_eq!(restored, vec![admin.clone(), rule.clone()]);
    assert_eq!(after.list(), before.list());
    assert!(after.check(ip("192.0.2.7"), t0() + mins(5)).is_some());

    assert_eq!(after.expire(t0() + mins(15)), vec![rule]);
    let next = ban(&after, "192.0.2.7", t0() + mins(20));
    assert_eq!((next.offence, next.until), (2, t0() + mins(50)));
}

#[test]
fn bans_that_ended_while_down_are_dropped_but_their_offences_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let (before, _, admin) = populated();
    before.save(dir.path(), t0() + mins(1)).unwrap();

    let report = load_state(dir.path(), t0() + mins(15));
    let ended: Vec<String> = report.expired.iter().map(Ban::src_display).collect();
    assert_eq!(ended, ["192.0.2.7"]);
    let after = table();
    assert_eq!(after.restore(report.state, t0() + mins(15)), vec![admin]);
    assert_eq!(after.check(ip("192.0.2.7"), t0() + mins(15)), None);
    assert_eq!(ban(&after, "192.0.2.7", t0() + mins(16)).offence, 2);
}

#[test]
fn missing_file_is_an_empty_state_without_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let report = load_state(dir.path(), t0());
    assert_eq!(report.state, State::empty(t0()));
    assert_eq!((report.problem, report.moved_to), (None, None));
}

#[test]
fn corrupt_file_is_moved_aside_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(STATE_FILE), "not json{").unwrap();
    let report = load_state(dir.path(), t0());
    let aside = dir
        .path()
        .join(format!("bans.json.corrupt-{}", t0().timestamp()));
    assert_eq!(report.moved_to.as_deref(), Some(aside.as_path()));
    assert!(report
        .problem
        .unwrap()
        .contains("not valid JSON: expected ident"));
    assert_eq!(fs::read_to_string(&aside).unwrap(), "not json{");
    assert_eq!(
        files(dir.path()),
        vec![format!("bans.json.corrupt-{}", t0().timestamp())]
    );
    assert_eq!(report.state.bans, vec![]);
}

#[test]
fn a_state_file_or_journal_that_cannot_be_read_is_moved_aside_not_replaced() {
    // What cannot be read (here a directory where the file should be: root reads any file;
    // for others, a file made root-only by an editor) is kept aside for the operator, never
    // left for the first compaction to write over.
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join(STATE_FILE)).unwrap();
    fs::create_dir(dir.path().join(JOURNAL_FILE)).unwrap();
    let report = load_state(dir.path(), t0());
    let ts = t0().timestamp();
    let aside = dir.path().join(format!("bans.json.corrupt-{ts}"));
    assert_eq!(report.moved_to.as_deref(), Some(aside.as_path()));
    let problem = report.problem.unwrap();
    assert!(
        problem.contains("is unusable (cannot read it: "),
        "{problem}"
    );
    assert!(problem.ends_with("; starting with no bans"), "{problem}");
    let journal = report.journal.problem.unwrap();
    assert!(
        journal.contains("is unusable (cannot read it: "),
        "{journal}"
    );
    assert_eq!(
        files(dir.path()),
        [
            format!("bans.journal.corrupt-{ts}"),
            format!("bans.json.corrupt-{ts}")
        ]
    );
}

#[test]
fn truncated_file_is_moved_aside_and_a_second_one_gets_a_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let (bans, _, _) = populated();
    let ts = t0().timestamp();
    for _ in 0..2 {
        bans.save(dir.path(), t0()).unwrap();
        let path = dir.path().join(STATE_FILE);
        let text = fs::read(&path).unwrap();
        fs::write(&path, &text[..text.len() / 2]).unwrap();
        let report = load_state(dir.path(), t0());
        assert!(report.problem.unwrap().contains("EOF while parsing"));
    }
    let expected = vec![
        format!("bans.json.corrupt-{ts}"),
        format!("bans.json.corrupt-{ts}-1"),
    ];
    assert_eq!(files(dir.path()), expected);
}

#[test]
fn future_version_is_moved_aside_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"{"version":2,"saved_at":"2025-10-02T14:00:00.000Z","bans":[],"offences":[]}"#;
    fs::write(dir.path().join(STATE_FILE), text).unwrap();
    let report = load_state(dir.path(), t0());
    let problem = report.problem.unwrap();
    assert!(
        problem.contains(
            "state version 2 was written by a newer ollama-guard; this build reads version 1"
        ),
        "{problem}"
    );
    assert!(report.moved_to.is_some());
    assert!(!dir.path().join(STATE_FILE).exists());
}

#[test]
fn unreadable_entries_are_skipped_and_counted_and_the_rest_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"src":"192.0.2.7","until":"2025-10-02T15:00:00.000Z","reason":"r","offence":1,"rule":"x","since":"2025-10-02T14:00:00.000Z"}"#;
    let far = good.replace("2025-10-02T15", "+12025-10-02T15");
    let text = format!(
        r#"{{"version":1,"saved_at":"2025-10-02T14:00:00.000Z","bans":[{far},{good}],"offences":[{{"src":"nope","times":[]}}]}}"#
    );
    let path = dir.path().join(STATE_FILE);
    fs::write(&path, &text).unwrap();
    let report = load_state(dir.path(), t0());
    let srcs: Vec<String> = report.state.bans.iter().map(Ban::src_display).collect();
    assert_eq!(
        (srcs, report.state.offences.len(), report.skipped),
        (vec!["192.0.2.7".to_string()], 0, 2)
    );
    assert_eq!(
        report.problem.unwrap(),
        format!(
            "{}: skipped 2 unreadable entries (first: bans[0]: bad time \"+12025-10-02T15:00:00.000Z\": input contains invalid characters); the rest was loaded; a copy was kept as {}.corrupt-{}",
            path.display(),
            path.display(),
            t0().timestamp()
        )
    );
    assert_eq!(report.moved_to, None);
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
    // The copy holds the entries the next compaction will leave out.
    let copy = format!("{}.corrupt-{}", path.display(), t0().timestamp());
    assert_eq!(fs::read_to_string(copy).unwrap(), text);
}

#[test]
fn well_formed_json_of_the_wrong_shape_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"{"version":1,"saved_at":"2025-10-02T14:00:00.000Z","bans":{},"offences":[]}"#;
    fs::write(dir.path().join(STATE_FILE), text).unwrap();
    let report = load_state(dir.path(), t0());
    assert!(report.problem.unwrap().contains("bad content"));
    assert!(report.moved_to.is_some());
}

#[test]
fn admin_ban_of_ten_thousand_years_ends_at_max_until_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bans = table();
    let years = Duration::from_secs(10_000 * 366 * 86_400);
    let b = bans
        .add_manual(net("192.0.2.0/24"), years, "ops".into(), false, t0())
        .unwrap();
    assert_eq!(
        crate::enforce::MAX_UNTIL.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "9999-12-31T23:59:59.999Z"
    );
    assert_eq!(b.until, crate::enforce::MAX_UNTIL);
    bans.save(dir.path(), t0()).unwrap();
    let report = load_state(dir.path(), t0());
    assert_eq!((report.problem, report.skipped), (None, 0));
    assert_eq!(table().restore(report.state, t0()), vec![b]);
}

#[test]
fn rule_ban_past_the_calendar_ends_at_max_until() {
    for length in [Duration::from_secs(20_000 * 366 * 86_400), Duration::MAX] {
        let bans = Bans::new(
            BanPolicy {
                duration: length,
                max: length,
                ..policy()
            },
            Vec::new(),
            64,
        );
        let b = ban(&bans, "192.0.2.7", t0());
        assert_eq!(b.until, crate::enforce::MAX_UNTIL, "{length:?}");
    }
}

#[test]
fn restore_skips_rule_bans_the_allowlist_now_covers_but_keeps_admin_bans() {
    let dir = tempfile::tempdir().unwrap();
    let before = table();
    let covered = ban(&before, "10.1.2.3", t0());
    let other = ban(&before, "192.0.2.7", t0());
    let hour = Duration::from_secs(3600);
    let admin = before
        .add_manual(net("10.9.0.0/16"), hour, "ops".into(), false, t0())
        .unwrap();
    before.save(dir.path(), t0()).unwrap();

    let after = Bans::new(policy(), vec![net("10.0.0.0/8")], 64);
    let report = load_state(dir.path(), t0() + mins(1));
    assert_eq!(report.state.bans.len(), 3);
    let restored = after.restore(report.state, t0() + mins(1));
    assert_eq!(restored, vec![admin, other]);
    assert_eq!(after.check(ip("10.1.2.3"), t0() + mins(1)), None);
    assert!(after.check(ip("10.9.0.1"), t0() + mins(1)).is_some());
    assert_eq!(after.len(), 2);
    assert!(!after.list().contains(&covered));
}

#[test]
fn atomic_save_leaves_only_the_state_file_and_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let (bans, _, _) = populated();
    bans.save(dir.path(), t0()).unwrap();
    save_state(dir.path(), &State::empty(t0() + mins(1))).unwrap();
    assert_eq!(files(dir.path()), vec![STATE_FILE.to_string()]);
    let report = load_state(dir.path(), t0() + mins(1));
    assert_eq!(report.state, State::empty(t0() + mins(1)));
}

#[test]
fn saved_state_records_bans_and_offence_history() {
    let (bans, rule, admin) = populated();
    let state = bans.snapshot(t0() + mins(1));
    assert_eq!((state.version, state.saved_at), (1, t0() + mins(1)));
    assert_eq!(state.bans, vec![admin, rule]);
    let history: Vec<(String, usize)> = state
        .offences
        .iter()
        .map(|r| (r.src.to_string(), r.times.len()))
        .collect();
    assert_eq!(
        history,
        vec![("10.0.0.0/8".into(), 1), ("192.0.2.7/32".into(), 1)]
    );
}

/// Admin calls that ban identities at the same time, on a multi-thread runtime: each one's
/// ban is in `identity-bans.json` when its call returns (a call never answers while another
/// one's write of its change is still running), and no call fails on the other's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identity_bans_are_each_on_disk_when_their_call_returns() {
    use std::sync::Arc;

    use crate::config::LogTarget;
    use crate::enforce::identity::FILE;
    use crate::enforce::Enforcement;
    use crate::telemetry::{DetectionLog, LogWriter, Metrics};

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let metrics = Arc::new(Metrics::new(&[]).unwrap());
    let dropped = metrics.log_lines_dropped.with_label_values(&["detection"]);
    let target = LogTarget::File(dir.path().join("detection.log"));
    let writer = LogWriter::spawn("detection", &target, 64, dropped).unwrap();
    let enforcement = Arc::new(Enforcement::new(
        Arc::new(table()),
        DetectionLog::new(writer),
        metrics,
        Some(state.clone()),
    ));
    for round in 0..20 {
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let (enforcement, state) = (enforcement.clone(), state.clone());
                tokio::spawn(async move {
                    let name = format!("key-{round}-{i}");
                    enforcement
                        .admin_add_identity(&name, Duration::from_secs(3600), "test".into())
                        .await
                        .unwrap();
                    let file = fs::read_to_string(state.join(FILE)).unwrap_or_default();
                    file.contains(&format!("\"{name}\""))
                })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert!(call.await.unwrap(), "round {round}, call {i}");
        }
    }
    let file: serde_json::Value =
        serde_json::from_slice(&fs::read(state.join(FILE)).unwrap()).unwrap();
    assert_eq!(file["bans"].as_array().unwrap().len(), 160);
}
