//! `bans.journal`: changes replay in order on top of the snapshot, a crash costs at most the
//! record being written, compaction is equivalent and crash-safe, a change costs O(change).

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::enforce::durable::{compact_after, Flush, Persister, Writer};
use crate::enforce::journal::apply;
use crate::enforce::{load_state, save_state, Change, State, JOURNAL_FILE, STATE_FILE};

const HOUR: Duration = Duration::from_secs(3600);

/// A table that queues its changes and a writer for `dir` that has compacted once, as at
/// start-up (snapshot and journal of generation 1).
fn journaled(dir: &Path) -> (Bans, Writer) {
    let bans = table();
    bans.record_changes();
    let mut writer = Writer::new(dir.to_path_buf(), 0);
    writer.write(&bans, t0(), false).unwrap();
    (bans, writer)
}

fn admin_ban(bans: &Bans, src: &str, now: DateTime<Utc>) -> Ban {
    bans.add_manual(net(src), HOUR, "ops".into(), false, now)
        .unwrap()
}

fn journal_text(dir: &Path) -> String {
    fs::read_to_string(dir.join(JOURNAL_FILE)).unwrap()
}

/// The `op` of every record (the header is not a record).
fn ops(dir: &Path) -> Vec<String> {
    (journal_text(dir).lines().skip(1))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["op"].to_string())
        .collect()
}

fn srcs(state: &State) -> Vec<String> {
    state.bans.iter().map(Ban::src_display).collect()
}

/// Bans in `bans.json` alone, without the journal.
fn snapshot_bans(dir: &Path) -> usize {
    let text = fs::read_to_string(dir.join(STATE_FILE)).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["bans"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn replay_applies_records_in_order_so_a_ban_then_its_removal_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let (bans, mut writer) = journaled(dir.path());
    ban(&bans, "192.0.2.7", t0());
    let admin = admin_ban(&bans, "10.0.0.0/8", t0());
    bans.remove(&net("192.0.2.7/32"), t0() + mins(1)).unwrap();
    writer.write(&bans, t0() + mins(1), false).unwrap();
    assert_eq!(ops(dir.path()), [r#""ban""#, r#""ban""#, r#""unban""#]);
    assert_eq!(
        snapshot_bans(dir.path()),
        0,
        "the snapshot was not rewritten"
    );

    let report = load_state(dir.path(), t0() + mins(2));
    assert_eq!((report.journal.replayed, report.journal.problem), (3, None));
    assert_eq!(report.state.bans, vec![admin]);
}

#[test]
fn torn_last_line_is_ignored_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (bans, mut writer) = journaled(dir.path());
    ban(&bans, "192.0.2.7", t0());
    writer.write(&bans, t0(), false).unwrap();
    let path = dir.path().join(JOURNAL_FILE);
    let mut text = journal_text(dir.path());
    text.push_str(r#"{"op":"ban","src":"198.51.100.1","until":"2025-10"#);
    fs::write(&path, &text).unwrap();

    let report = load_state(dir.path(), t0() + mins(1));
    assert_eq!(srcs(&report.state), ["192.0.2.7"]);
    let j = &report.journal;
    assert_eq!((j.replayed, j.skipped, j.torn_tail), (1, 0, true));
    assert_eq!(
        j.problem.as_deref(),
        Some(format!("{}: the last record was torn by a crash while it was written and was ignored (it had not been acknowledged)", path.display()).as_str())
    );
}

#[test]
fn garbled_middle_line_is_skipped_and_counted_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (bans, mut writer) = journaled(dir.path());
    ban(&bans, "192.0.2.7", t0());
    ban(&bans, "198.51.100.1", t0());
    writer.write(&bans, t0(), false).unwrap();
    let path = dir.path().join(JOURNAL_FILE);
    let mut lines: Vec<String> = journal_text(dir.path()).lines().map(String::from).collect();
    lines.insert(2, "#garbage".into());
    fs::write(&path, lines.join("\n") + "\n").unwrap();

    let report = load_state(dir.path(), t0() + mins(1));
    assert_eq!(srcs(&report.state), ["192.0.2.7", "198.51.100.1"]);
    let j = &report.journal;
    assert_eq!((j.replayed, j.skipped, j.torn_tail), (2, 1, false));
    let copy = format!(
        "{}.corrupt-{}",
        path.display(),
        (t0() + mins(1)).timestamp()
    );
    assert_eq!(
        j.problem.as_deref(),
        Some(format!("{}: skipped 1 unreadable record(s) (first: line 3: expected value at line 1 column 1); the rest was replayed; a copy was kept as {copy}", path.display()).as_str())
    );
    assert_eq!(fs::read_to_string(&copy).unwrap(), lines.join("\n") + "\n");
}

#[test]
fn unreadable_header_moves_the_journal_aside_and_keeps_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (bans, mut writer) = journaled(dir.path());
    ban(&bans, "192.0.2.7", t0());
    writer.write(&bans, t0(), true).unwrap();
    fs::write(
        dir.path().join(JOURNAL_FILE),
        "{\"journal\":9,\"generation\":2}\n",
    )
    .unwrap();

    let report = load_state(dir.path(), t0());
    assert_eq!(srcs(&report.state), ["192.0.2.7"]);
    let problem = report.journal.problem.unwrap();
    assert!(
        problem.contains("journal version 9 is not the version 1 this build reads"),
        "{problem}"
    );
    assert!(!dir.path().join(JOURNAL_FILE).exists());
}

#[test]
fn compaction_leaves_an_equivalent_state_and_an_empty_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (bans, mut writer) = journaled(dir.path());
    ban(&bans, "192.0.2.7", t0());
    ban(&bans, "2001:db8:1:2::9", t0());
    admin_ban(&bans, "10.0.0.0/8", t0());
    admin_ban(&bans, "10.0.0.0/8", t0() + mins(1));
    bans.remove(&net("2001:db8:1:2::/64"), t0() + mins(2));
    writer.write(&bans, t0() + mins(2), false).unwrap();
    let replayed = load_state(dir.path(), t0() + mins(3));
    assert_eq!(replayed.journal.replayed, 5);

    writer.write(&bans, t0() + mins(3), true).unwrap();
    assert_eq!(
        journal_text(dir.path()),
        "{\"journal\":1,\"generation\":2}\n"
    );
    assert_eq!(snapshot_bans(dir.path()), 2);
    let compacted = load_state(dir.path(), t0() + mins(3));
    assert_eq!(compacted.state.journal_generation, 2);
    assert_eq!(compacted.state.bans, replayed.state.bans);
    assert_eq!(compacted.state.offences, replayed.state.offences);
    assert_eq!(compacted.state.bans, bans.list());
}

#[test]
fn journal_past_max_4096_or_twice_the_table_is_compacted_by_the_next_write() {
    assert_eq!(
        (compact_after(0), compact_after(2048), compact_after(3000)),
        (4096, 4096, 6000)
    );
    let dir = tempfile::tempdir().unwrap();
    let (bans, mut writer) = journaled(dir.path());
    // Churn: 4096 records while the table stays empty.
    for i in 0..2048u32 {
        let src = format!("10.{}.{}.1/32", i / 256, i % 256);
        admin_ban(&bans, &src, t0());
        bans.remove(&net(&src), t0()).unwrap();
    }
    writer.write(&bans, t0(), false).unwrap();
    assert_eq!((ops(dir.path()).len(), bans.len()), (4096, 0));
    admin_ban(&bans, "192.0.2.7/32", t0());
    writer.write(&bans, t0(), false).unwrap();
    assert_eq!((ops(dir.path()).len(), snapshot_bans(dir.path())), (0, 1));
}

#[test]
fn crash_between_snapshot_and_journal_replacement_replays_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (bans, mut writer) = journaled(dir.path());
    ban(&bans, "192.0.2.7", t0());
    writer.write(&bans, t0(), false).unwrap();
    // Queued, not yet written: the unban would be lost if the old journal were replayed on
    // top of the new snapshot (its "ban" record would resurrect the ban).
    bans.remove(&net("192.0.2.7/32"), t0() + mins(1)).unwrap();
    let other = ban(&bans, "198.51.100.1", t0() + mins(1));
    // Compaction's first step only: the snapshot of generation 2; the journal stays at 1.
    let (mut state, _) = bans.checkpoint(t0() + mins(1));
    state.journal_generation = 2;
    save_state(dir.path(), &state).unwrap();
    assert_eq!(ops(dir.path()), [r#""ban""#]);

    let report = load_state(dir.path(), t0() + mins(2));
    assert_eq!(
        (
            report.journal.stale,
            report.journal.replayed,
            report.generation()
        ),
        (true, 0, 2)
    );
    assert_eq!(report.state.bans, vec![other]);
    let times: Vec<usize> = report
        .state
        .offences
        .iter()
        .map(|r| r.times.len())
        .collect();
    assert_eq!(times, [1, 1]);
}

#[test]
fn replaying_a_ban_already_in_the_snapshot_changes_nothing() {
    let bans = table();
    let b = ban(&bans, "192.0.2.7", t0());
    let before = bans.snapshot(t0());
    let mut state = before.clone();
    apply(&mut state, vec![Change::Ban(b.clone()), Change::Ban(b)]);
    assert_eq!(state, before);
}

#[test]
fn offences_survive_via_the_journal_so_a_reoffence_escalates() {
    let dir = tempfile::tempdir().unwrap();
    let (bans, mut writer) = journaled(dir.path());
    ban(&bans, "192.0.2.7", t0());
    bans.remove(&net("192.0.2.7/32"), t0() + mins(1)).unwrap();
    writer.write(&bans, t0() + mins(1), false).unwrap();
    assert_eq!(snapshot_bans(dir.path()), 0);

    let report = load_state(dir.path(), t0() + mins(2));
    assert_eq!(report.state.bans, vec![]);
    assert_eq!(report.state.offences[0].times, vec![t0()]);
    let after = table();
    after.restore(report.state, t0() + mins(2));
    let next = ban(&after, "192.0.2.7", t0() + mins(3));
    assert_eq!((next.offence, next.until), (2, t0() + mins(33)));
}

#[test]
fn legacy_state_file_loads_and_the_first_write_gives_it_a_journal() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"{"version":1,"saved_at":"2025-10-02T14:00:00.000Z","bans":[{"src":"192.0.2.7","until":"2025-10-02T15:00:00.000Z","reason":"r","offence":1,"rule":"x","since":"2025-10-02T14:00:00.000Z"}],"offences":[]}"#;
    fs::write(dir.path().join(STATE_FILE), text).unwrap();
    let report = load_state(dir.path(), t0());
    assert_eq!(
        (report.generation(), srcs(&report.state)),
        (0, vec!["192.0.2.7".into()])
    );
    let bans = table();
    bans.record_changes();
    bans.restore(report.state, t0());
    Writer::new(dir.path().to_path_buf(), 0)
        .write(&bans, t0(), false)
        .unwrap();
    assert_eq!(
        journal_text(dir.path()),
        "{\"journal\":1,\"generation\":1}\n"
    );
    let again = load_state(dir.path(), t0());
    assert_eq!(
        (again.generation(), srcs(&again.state)),
        (1, vec!["192.0.2.7".into()])
    );
}

/// 20 000 bans of `10.x.y.z`, as loaded from a state file.
fn twenty_thousand() -> State {
    let mut state = State::empty(t0());
    state.bans = (0..20_000u32)
        .map(|i| Ban {
            src: net(&format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255)),
            until: t0() + mins(60),
            reason: "model_exfiltration: 12 qualifying requests".into(),
            offence: 1,
            rule: Arc::from("model_exfiltration"),
            since: t0(),
        })
        .collect();
    state
}

#[cfg(unix)]
#[test]
fn one_more_ban_at_twenty_thousand_appends_under_a_kib_and_leaves_the_snapshot_alone() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let bans = table();
    bans.record_changes();
    assert_eq!(bans.restore(twenty_thousand(), t0()).len(), 20_000);
    let mut writer = Writer::new(dir.path().to_path_buf(), 0);
    writer.write(&bans, t0(), false).unwrap();
    let snapshot = fs::metadata(dir.path().join(STATE_FILE)).unwrap();
    let journal_before = fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len();

    let new = ban(&bans, "192.0.2.7", t0() + mins(1));
    writer.write(&bans, t0() + mins(1), false).unwrap();
    let journal_after = fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len();
    let appended = journal_after - journal_before;
    let line = serde_json::to_string(&Change::Ban(new)).unwrap().len() as u64 + 1;
    assert_eq!(appended, line);
    assert!(appended < 1024, "{appended} bytes");
    let after = fs::metadata(dir.path().join(STATE_FILE)).unwrap();
    assert_eq!(
        (after.ino(), after.len(), after.modified().unwrap()),
        (snapshot.ino(), snapshot.len(), snapshot.modified().unwrap())
    );
    // What the whole-table rewrite cost per change before the journal.
    assert!(snapshot.len() > 4_000_000, "{} bytes", snapshot.len());
    eprintln!(
        "at 20 000 bans: {} bytes per change with the journal, {} bytes (the snapshot) before",
        appended,
        snapshot.len()
    );
}

#[tokio::test]
async fn flush_through_a_change_makes_it_durable_once_and_repeats_are_free() {
    let dir = tempfile::tempdir().unwrap();
    let bans = Arc::new(table());
    bans.record_changes();
    let persister = Persister::new(dir.path().to_path_buf());
    persister.set_generation(0);
    persister.flush(&bans, Flush::Pending).await.unwrap();
    assert_eq!(ops(dir.path()).len(), 0, "the first write compacts");

    admin_ban(&bans, "192.0.2.7/32", Utc::now());
    admin_ban(&bans, "192.0.2.8/32", Utc::now());
    let through = Flush::Through(bans.last_change());
    persister.flush(&bans, through).await.unwrap();
    assert_eq!(ops(dir.path()), [r#""ban""#, r#""ban""#], "one batch");
    let len = journal_text(dir.path()).len();
    persister.flush(&bans, through).await.unwrap();
    persister.flush(&bans, Flush::Pending).await.unwrap();
    assert_eq!(journal_text(dir.path()).len(), len);
}
