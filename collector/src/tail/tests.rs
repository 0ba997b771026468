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
    let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
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
        out.extend(batch.iter().map(|l| String::from_utf8_lossy(l.bytes).into_owned()));
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
    // Not a rolled name (those stay followed, see below).
    fs::rename(&log, dir.path().join("app.log.old")).unwrap();
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
    OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
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
    let first: Vec<String> =
        t.read_blocking(4).unwrap().iter().map(|l| String::from_utf8_lossy(l.bytes).into()).collect();
    assert_eq!(first, expected(0, 4, "a"));
    let state = t.state();
    drop(t);
    let json = serde_json::to_string(&state).unwrap();
    let state: TailState = serde_json::from_str(&json).unwrap();
    let mut t = Tailer::new(config(&log), Some(state.clone())).unwrap();
    assert_eq!(t.state(), state, "before the first read the given state holds");
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
    let mut gz = flate2::write::GzEncoder::new(fs::File::create(&rolled).unwrap(), flate2::Compression::default());
    gz.write_all(&fs::read(&log).unwrap()).unwrap();
    gz.finish().unwrap();
    fs::remove_file(&log).unwrap();
    append(&log, &lines(0, 2, "b"));
    let mut t = Tailer::new(config(&pattern), Some(state)).unwrap();
    let mut want = expected(50, 60, "a");
    want.extend(expected(0, 2, "b"));
    assert_eq!(drain(&mut t), want);
    assert_eq!(t.counters().rolled_resumed.load(Ordering::Relaxed), 1);
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
    append(&log, &format!("{}\nshort\n{}", "x".repeat(250), "y".repeat(300_000)));
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
    assert!(t.read_batch(10, Duration::from_millis(50), &cancel).await.unwrap().is_empty());
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(60)).await;
            append(&log, "late\n");
        })
    };
    let got = t.read_batch(10, Duration::from_secs(10), &cancel).await.unwrap().len();
    assert_eq!(got, 1);
    writer.await.unwrap();
    cancel.cancel();
    assert!(t.read_batch(10, Duration::from_secs(10), &cancel).await.unwrap().is_empty());
}

/// Compresses `from` into `to` (as Caddy and logrotate do) and deletes `from`.
fn gzip_away(from: &Path, to: &Path) {
    let mut gz = flate2::write::GzEncoder::new(fs::File::create(to).unwrap(), flate2::Compression::default());
    gz.write_all(&fs::read(from).unwrap()).unwrap();
    gz.finish().unwrap();
    fs::remove_file(from).unwrap();
}

/// Sets a file's modification time to `secs` after a base in the past (rolled files are
/// ordered by it, and a test makes several within one clock tick).
fn set_mtime(path: &Path, secs: u64) {
    let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs);
    fs::File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
}

fn counter(t: &Tailer, c: fn(&TailCounters) -> &std::sync::atomic::AtomicU64) -> u64 {
    c(&t.counters()).load(Ordering::Relaxed)
}

/// Reads to the end in batches of `batch` lines, "crashing" (dropping the tailer and
/// starting again from the last committed state, the batch not committed) after every
/// `crash_every`th batch: what a kill -9 between reading and spooling does. Returns the
/// committed lines and the last committed state.
fn read_with_crashes(
    cfg: &TailConfig,
    mut state: Option<TailState>,
    batch: usize,
    crash_every: usize,
) -> (Vec<String>, TailState) {
    let mut out = Vec::new();
    let mut t = Tailer::new(cfg.clone(), state.clone()).unwrap();
    for n in 1.. {
        let got: Vec<String> =
            t.read_blocking(batch).unwrap().iter().map(|l| String::from_utf8_lossy(l.bytes).into_owned()).collect();
        if n % crash_every == 0 {
            t = Tailer::new(cfg.clone(), state.clone()).unwrap();
            continue;
        }
        if got.is_empty() {
            break;
        }
        out.extend(got);
        state = Some(t.state());
    }
    (out, t.state())
}

/// Caddy's rolling while the collector is down: the file it was reading is rolled and
/// gzipped, two more files roll after it (one gzipped, one not yet), and a new one is
/// live. Everything after the checkpoint is read once, oldest first, whether the
/// pattern lists the rolled names or only the live file, and across crashes.
#[test]
fn files_rolled_while_down_are_read_whole_oldest_first_exactly_once() {
    for pattern in ["access.log", "access*.log"] {
        for crash_every in [usize::MAX, 2, 3] {
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("access.log");
            let cfg = config(&dir.path().join(pattern));
            append(&log, &lines(0, 50, "a"));
            let mut t = Tailer::new(cfg.clone(), None).unwrap();
            assert_eq!(drain(&mut t).len(), 50);
            let state = t.state();
            drop(t);

            append(&log, &lines(50, 60, "a"));
            let rolled = |n: u32| dir.path().join(format!("access-2026-11-22T10-0{n}-00.000.log"));
            let gz = |n: u32| dir.path().join(format!("access-2026-11-22T10-0{n}-00.000.log.gz"));
            fs::rename(&log, rolled(1)).unwrap();
            gzip_away(&rolled(1), &gz(1));
            set_mtime(&gz(1), 1);
            append(&log, &lines(0, 40, "b"));
            fs::rename(&log, rolled(2)).unwrap();
            gzip_away(&rolled(2), &gz(2));
            set_mtime(&gz(2), 2);
            append(&log, &lines(0, 30, "c"));
            fs::rename(&log, rolled(3)).unwrap();
            set_mtime(&rolled(3), 3);
            append(&log, &lines(0, 5, "d"));

            let (got, end) = read_with_crashes(&cfg, Some(state), 7, crash_every);
            let mut want = expected(50, 60, "a");
            want.extend(expected(0, 40, "b"));
            want.extend(expected(0, 30, "c"));
            want.extend(expected(0, 5, "d"));
            assert_eq!(got, want, "pattern {pattern}, crash every {crash_every}");

            // And once more from the final state: nothing is read again.
            let mut t = Tailer::new(cfg.clone(), Some(end)).unwrap();
            assert!(drain(&mut t).is_empty(), "pattern {pattern}");
            append(&log, &lines(5, 6, "d"));
            assert_eq!(drain(&mut t), expected(5, 6, "d"));
        }
    }
}

#[test]
fn rolled_files_are_counted_and_a_position_found_nowhere_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = config(&log);
    append(&log, &lines(0, 10, "a"));
    let mut t = Tailer::new(cfg.clone(), None).unwrap();
    drain(&mut t);
    let state = t.state();
    drop(t);
    append(&log, &lines(10, 20, "a"));
    let gz1 = dir.path().join("access.log.1.gz");
    fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    gzip_away(&dir.path().join("access.log.1"), &gz1);
    append(&log, &lines(0, 10, "b"));
    fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    fs::rename(&gz1, dir.path().join("access.log.2.gz")).unwrap();
    set_mtime(&dir.path().join("access.log.2.gz"), 1);
    set_mtime(&dir.path().join("access.log.1"), 2);
    append(&log, &lines(0, 1, "c"));
    let mut t = Tailer::new(cfg.clone(), Some(state.clone())).unwrap();
    let mut want = expected(10, 20, "a");
    want.extend(expected(0, 10, "b"));
    want.extend(expected(0, 1, "c"));
    assert_eq!(drain(&mut t), want);
    assert_eq!(counter(&t, |c| &c.rolled_resumed), 1);
    assert_eq!(counter(&t, |c| &c.rolled_read), 1);
    assert_eq!(counter(&t, |c| &c.rotations), 1);
    assert_eq!(counter(&t, |c| &c.lost), 0);

    // The checkpointed file's copies deleted (rolled out by roll_keep) while down: it is
    // lost, counted; what rolled after it is still read.
    fs::remove_file(dir.path().join("access.log.2.gz")).unwrap();
    fs::remove_file(dir.path().join("access.log.1")).unwrap();
    let mut t = Tailer::new(cfg, Some(state)).unwrap();
    assert_eq!(drain(&mut t), expected(0, 1, "c"));
    assert_eq!(counter(&t, |c| &c.lost), 1);
}

#[test]
fn a_file_renamed_to_a_rolled_name_stays_followed_until_it_is_compressed_away() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let one = dir.path().join("app.log.1");
    append(&log, &lines(0, 2, "a"));
    let mut t = Tailer::new(config(&log), None).unwrap();
    assert_eq!(drain(&mut t), expected(0, 2, "a"));
    // logrotate `create`: the program writes to the renamed file until it reopens its log.
    fs::rename(&log, &one).unwrap();
    append(&one, &lines(2, 4, "a"));
    append(&one, "cut");
    set_mtime(&one, 0);
    append(&log, &lines(0, 1, "b"));
    let mut want = expected(2, 4, "a");
    want.extend(expected(0, 1, "b"));
    assert_eq!(drain(&mut t), want);
    append(&one, " short\n");
    assert_eq!(drain(&mut t), ["cut short"]);
    assert_eq!(counter(&t, |c| &c.rotations), 1);
    // Compressed at the next rotation (delaycompress): the .gz is that file, not read again.
    gzip_away(&one, &dir.path().join("app.log.2.gz"));
    assert!(drain(&mut t).is_empty());
    assert_eq!(counter(&t, |c| &c.rolled_read), 0);
    let state = t.state();
    assert_eq!(state.files.len(), 1);
    assert_eq!(state.rolled.as_ref().map(Vec::len), Some(1));
    let mut t = Tailer::new(config(&log), Some(state)).unwrap();
    assert!(drain(&mut t).is_empty());
}

#[test]
fn rolled_files_present_on_the_first_start_are_history_not_read() {
    for start_at in [StartAt::Beginning, StartAt::End] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        append(&dir.path().join("access.log.1"), &lines(0, 3, "old"));
        append(&dir.path().join("access.log.2"), &lines(0, 3, "older"));
        gzip_away(&dir.path().join("access.log.2"), &dir.path().join("access.log.2.gz"));
        append(&log, &lines(0, 2, "live"));
        let mut cfg = config(&log);
        cfg.start_at = start_at;
        let mut t = Tailer::new(cfg.clone(), None).unwrap();
        let want = if start_at == StartAt::Beginning { expected(0, 2, "live") } else { Vec::new() };
        assert_eq!(drain(&mut t), want);
        let state = t.state();
        assert_eq!(state.rolled.as_ref().map(Vec::len), Some(2));
        let mut t = Tailer::new(cfg, Some(state)).unwrap();
        assert!(drain(&mut t).is_empty());
        assert_eq!(counter(&t, |c| &c.rolled_read), 0);
    }
}

/// A state written before rolled files were tracked: rolled files older than the one the
/// checkpointed position is found in are history; newer ones are read.
#[test]
fn a_state_without_rolled_fingerprints_reads_only_what_rolled_after_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = config(&dir.path().join("access*.log"));
    append(&dir.path().join("access-2026-11-22T09-00-00.000.log"), &lines(0, 3, "old"));
    gzip_away(
        &dir.path().join("access-2026-11-22T09-00-00.000.log"),
        &dir.path().join("access-2026-11-22T09-00-00.000.log.gz"),
    );
    set_mtime(&dir.path().join("access-2026-11-22T09-00-00.000.log.gz"), 0);
    append(&log, &lines(0, 5, "a"));
    let mut t = Tailer::new(cfg.clone(), None).unwrap();
    drain(&mut t);
    let mut state = t.state();
    state.rolled = None;
    let json = serde_json::to_string(&state).unwrap();
    assert!(!json.contains("rolled"), "{json}");
    let state: TailState = serde_json::from_str(&json).unwrap();
    drop(t);
    append(&log, &lines(5, 6, "a"));
    let r1 = dir.path().join("access-2026-11-22T10-00-00.000.log");
    fs::rename(&log, &r1).unwrap();
    gzip_away(&r1, &dir.path().join("access-2026-11-22T10-00-00.000.log.gz"));
    set_mtime(&dir.path().join("access-2026-11-22T10-00-00.000.log.gz"), 10);
    append(&log, &lines(0, 2, "b"));
    let r2 = dir.path().join("access-2026-11-22T11-00-00.000.log");
    fs::rename(&log, &r2).unwrap();
    gzip_away(&r2, &dir.path().join("access-2026-11-22T11-00-00.000.log.gz"));
    set_mtime(&dir.path().join("access-2026-11-22T11-00-00.000.log.gz"), 20);
    append(&log, &lines(0, 1, "c"));
    let mut t = Tailer::new(cfg, Some(state)).unwrap();
    let mut want = expected(5, 6, "a");
    want.extend(expected(0, 2, "b"));
    want.extend(expected(0, 1, "c"));
    assert_eq!(drain(&mut t), want);
}

#[test]
fn a_gz_still_being_written_is_read_once_it_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cfg = config(&log);
    append(&log, &lines(0, 3, "a"));
    let mut t = Tailer::new(cfg.clone(), None).unwrap();
    drain(&mut t);
    // A file rolled and compressed between two polls, never seen plain, its .gz half
    // written: nothing of it can be identified yet.
    let body = lines(0, 200, "b");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let path = dir.path().join("access.log.1.gz");
    fs::write(&path, &gz[..12]).unwrap();
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.state().rolled.as_ref().map(Vec::len), Some(0));
    fs::write(&path, &gz).unwrap();
    assert_eq!(drain(&mut t), expected(0, 200, "b"));
    assert_eq!(counter(&t, |c| &c.rolled_read), 1);
    assert!(drain(&mut t).is_empty());
    assert_eq!(counter(&t, |c| &c.errors), 0);
}

#[test]
fn copy_truncate_reads_what_was_not_read_yet_from_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, &lines(0, 5, "a"));
    let mut t = Tailer::new(config(&log), None).unwrap();
    assert_eq!(drain(&mut t).len(), 5);
    append(&log, &lines(5, 8, "a"));
    fs::copy(&log, dir.path().join("app.log.1")).unwrap();
    OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    append(&log, &lines(0, 2, "b"));
    let mut got = drain(&mut t);
    got.sort();
    let mut want = expected(5, 8, "a");
    want.extend(expected(0, 2, "b"));
    assert_eq!(got, want);
    assert_eq!(counter(&t, |c| &c.truncations), 1);
    assert_eq!(counter(&t, |c| &c.rolled_resumed), 1);
}

/// Many rotations while running, the oldest rolled files deleted as Caddy's roll_keep
/// does: nothing is read twice and the remembered fingerprints stay few.
#[test]
fn many_rotations_while_running_keep_the_state_small() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut t = Tailer::new(config(&log), None).unwrap();
    let mut got = Vec::new();
    let mut want = Vec::new();
    for r in 0..100u64 {
        let tag = format!("r{r}");
        append(&log, &lines(0, 3, &tag));
        want.extend(expected(0, 3, &tag));
        if r % 3 == 0 {
            got.extend(drain(&mut t));
        }
        let plain = dir.path().join(format!("access-2026-11-22T10-00-{r:02}.000.log"));
        fs::rename(&log, &plain).unwrap();
        gzip_away(&plain, &plain.with_extension("log.gz"));
        set_mtime(&plain.with_extension("log.gz"), r);
        if r >= 5 {
            let old = dir.path().join(format!("access-2026-11-22T10-00-{:02}.000.log.gz", r - 5));
            fs::remove_file(old).unwrap();
        }
        append(&log, "");
    }
    got.extend(drain(&mut t));
    got.extend(drain(&mut t));
    let mut g = got.clone();
    g.sort();
    want.sort();
    assert_eq!(g, want, "every line once");
    let state = t.state();
    let remembered = state.rolled.as_ref().map_or(0, Vec::len);
    assert!(remembered <= 16, "{remembered} fingerprints kept");
}
