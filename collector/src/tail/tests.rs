//! Rotation cases of the tailer, on real files in temp dirs.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;

fn config(pattern: &Path) -> TailConfig {
    TailConfig {
        patterns: vec![pattern.display().to_string()],
        start_at: StartAt::Beginning,
        max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        // Zero: every read rescans, so the tests need no sleeping.
        poll_interval: Duration::ZERO,
    }
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn lines(from: usize, to: usize, tag: &str) -> String {
    (from..to).map(|i| format!("{tag} line {i}\n")).collect()
}

/// Reads until a pass returns nothing.
fn drain(t: &mut Tailer) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let batch = t.read_blocking(7).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(
            batch
                .iter()
                .map(|l| String::from_utf8_lossy(l.bytes).into_owned()),
        );
    }
}

fn expected(from: usize, to: usize, tag: &str) -> Vec<String> {
    (from..to).map(|i| format!("{tag} line {i}")).collect()
}

#[test]
fn partial_last_line_waits_for_its_newline_and_state_is_at_a_line_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, "one\ntwo\nthr");
    let mut t = Tailer::new(config(&log), None).unwrap();
    assert_eq!(drain(&mut t), ["one", "two"]);
    assert_eq!(t.state().files[0].offset, 8);
    append(&log, "ee\n");
    assert_eq!(drain(&mut t), ["three"]);
    assert_eq!(t.state().files[0].offset, 14);
}

#[test]
fn rename_rotation_reads_the_old_file_to_its_end_then_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, &lines(0, 5, "a"));
    let mut t = Tailer::new(config(&dir.path().join("access*.log")), None).unwrap();
    assert_eq!(drain(&mut t), expected(0, 5, "a"));
    append(&log, &lines(5, 9, "a"));
    fs::rename(&log, dir.path().join("access-2026-11-22T10-15-01.000.log")).unwrap();
    append(&log, &lines(0, 3, "b"));
    let mut want = expected(5, 9, "a");
    want.extend(expected(0, 3, "b"));
    assert_eq!(drain(&mut t), want);
    assert_eq!(t.state().files.len(), 2);
}

#[test]
fn a_file_renamed_out_of_the_pattern_or_deleted_is_still_read_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, &lines(0, 2, "a"));
    let mut t = Tailer::new(config(&log), None).unwrap();
    assert_eq!(drain(&mut t), expected(0, 2, "a"));
    append(&log, &lines(2, 4, "a"));
    append(&log, "no newline at the end");
    fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, &lines(0, 2, "b"));
    let mut want = expected(2, 4, "a");
    want.push("no newline at the end".into());
    want.extend(expected(0, 2, "b"));
    assert_eq!(drain(&mut t), want);
    // Deleted with unread lines: the open descriptor still reads them.
    append(&log, &lines(2, 3, "b"));
    fs::remove_file(&log).unwrap();
    assert_eq!(drain(&mut t), expected(2, 3, "b"));
    assert!(t.state().files.is_empty());
}

#[test]
fn copy_truncate_reads_again_from_the_start_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, &lines(0, 10, "a"));
    let mut t = Tailer::new(config(&log), None).unwrap();
    assert_eq!(drain(&mut t).len(), 10);
    fs::copy(&log, dir.path().join("access.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &lines(0, 3, "b"));
    assert_eq!(drain(&mut t), expected(0, 3, "b"));
    assert_eq!(t.counters().truncations.load(Ordering::Relaxed), 1);
    // Truncated and rewritten past the old offset between two polls: the head changed.
    append(&log, &lines(3, 4, "b"));
    assert_eq!(drain(&mut t), expected(3, 4, "b"));
    fs::write(&log, lines(0, 20, "c")).unwrap();
    assert_eq!(drain(&mut t), expected(0, 20, "c"));
    assert_eq!(t.counters().truncations.load(Ordering::Relaxed), 2);
}

#[test]
fn restart_resumes_exactly_after_the_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, &lines(0, 10, "a"));
    let mut t = Tailer::new(config(&log), None).unwrap();
    let first: Vec<String> = t
        .read_blocking(4)
        .unwrap()
        .iter()
        .map(|l| String::from_utf8_lossy(l.bytes).into())
        .collect();
    assert_eq!(first, expected(0, 4, "a"));
    let state = t.state();
    drop(t);
    let json = serde_json::to_string(&state).unwrap();
    let state: TailState = serde_json::from_str(&json).unwrap();
    let mut t = Tailer::new(config(&log), Some(state.clone())).unwrap();
    assert_eq!(
        t.state(),
        state,
        "before the first read the given state holds"
    );
    assert_eq!(drain(&mut t), expected(4, 10, "a"));
}

#[test]
fn down_during_a_rename_rotation_resumes_in_the_renamed_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, &lines(0, 3, "a"));
    let mut t = Tailer::new(config(&dir.path().join("access*.log")), None).unwrap();
    assert_eq!(drain(&mut t), expected(0, 3, "a"));
    let state = t.state();
    drop(t);
    append(&log, &lines(3, 6, "a"));
    fs::rename(&log, dir.path().join("access-1.log")).unwrap();
    append(&log, &lines(0, 2, "b"));
    let mut t = Tailer::new(config(&dir.path().join("access*.log")), Some(state)).unwrap();
    let mut want = expected(3, 6, "a");
    want.extend(expected(0, 2, "b"));
    assert_eq!(drain(&mut t), want);
}

#[test]
fn down_during_a_rotation_that_gzipped_the_file_resumes_inside_the_gz() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, &lines(0, 50, "a"));
    let pattern = dir.path().join("access*.log");
    let mut t = Tailer::new(config(&pattern), None).unwrap();
    assert_eq!(drain(&mut t).len(), 50);
    let state = t.state();
    drop(t);
    append(&log, &lines(50, 60, "a"));
    let rolled = dir.path().join("access-1.log.gz");
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(&rolled).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(&fs::read(&log).unwrap()).unwrap();
    gz.finish().unwrap();
    fs::remove_file(&log).unwrap();
    append(&log, &lines(0, 2, "b"));
    let mut t = Tailer::new(config(&pattern), Some(state)).unwrap();
    let mut want = expected(50, 60, "a");
    want.extend(expected(0, 2, "b"));
    assert_eq!(drain(&mut t), want);
    assert_eq!(t.counters().gz_resumed.load(Ordering::Relaxed), 1);
    assert_eq!(t.counters().lost.load(Ordering::Relaxed), 0);
    // Read to its end, the .gz is forgotten; only the live file stays in the state.
    assert_eq!(t.state().files.len(), 1);
}

#[test]
fn a_checkpointed_file_found_nowhere_is_counted_lost() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, &lines(0, 3, "a"));
    let mut t = Tailer::new(config(&log), None).unwrap();
    drain(&mut t);
    let state = t.state();
    fs::remove_file(&log).unwrap();
    let mut t = Tailer::new(config(&log), Some(state)).unwrap();
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.counters().lost.load(Ordering::Relaxed), 1);
}

#[test]
fn long_lines_are_cut_and_flagged_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut cfg = config(&log);
    cfg.max_line_bytes = 100;
    append(
        &log,
        &format!("{}\nshort\n{}", "x".repeat(250), "y".repeat(300_000)),
    );
    let mut t = Tailer::new(cfg.clone(), None).unwrap();
    let got: Vec<(usize, bool)> = {
        let b = t.read_blocking(100).unwrap();
        b.iter().map(|l| (l.bytes.len(), l.truncated)).collect()
    };
    assert_eq!(got, [(100, true), (5, false), (100, true)]);
    // Restart while inside the cut line: the rest is still skipped.
    let state = t.state();
    assert!(state.files[0].skipping);
    let mut t = Tailer::new(cfg, Some(state)).unwrap();
    append(&log, &format!("{}\nafter\n", "y".repeat(10)));
    assert_eq!(drain(&mut t), ["after"]);
    assert_eq!(t.counters().cut_lines.load(Ordering::Relaxed), 0);
}

#[test]
fn start_at_end_skips_existing_content_but_not_files_created_later() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, &lines(0, 5, "old"));
    let mut cfg = config(&dir.path().join("*.log"));
    cfg.start_at = StartAt::End;
    let mut t = Tailer::new(cfg, None).unwrap();
    assert!(drain(&mut t).is_empty());
    append(&log, &lines(0, 1, "new"));
    append(&dir.path().join("other.log"), &lines(0, 2, "later"));
    let mut got = drain(&mut t);
    got.sort();
    let mut want = expected(0, 2, "later");
    want.extend(expected(0, 1, "new"));
    assert_eq!(got, want);
}

#[test]
fn short_files_get_their_fingerprint_extended_and_an_invalid_pattern_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, "a\n");
    let mut t = Tailer::new(config(&log), None).unwrap();
    drain(&mut t);
    assert_eq!(t.state().files[0].head_len, 2);
    append(&log, &"z".repeat(3000));
    append(&log, "\n");
    assert_eq!(drain(&mut t).len(), 1);
    assert_eq!(t.state().files[0].head_len as usize, HEAD_MAX);
    assert!(Tailer::new(config(Path::new("/tmp/[")), None).is_err());
}

#[tokio::test]
async fn read_batch_waits_for_lines_and_stops_on_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut cfg = config(&log);
    cfg.poll_interval = Duration::from_millis(20);
    let mut t = Tailer::new(cfg, None).unwrap();
    let cancel = CancellationToken::new();
    assert!(t
        .read_batch(10, Duration::from_millis(50), &cancel)
        .await
        .unwrap()
        .is_empty());
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(60)).await;
            append(&log, "late\n");
        })
    };
    let got = t
        .read_batch(10, Duration::from_secs(10), &cancel)
        .await
        .unwrap()
        .len();
    assert_eq!(got, 1);
    writer.await.unwrap();
    cancel.cancel();
    assert!(t
        .read_batch(10, Duration::from_secs(10), &cancel)
        .await
        .unwrap()
        .is_empty());
}
