use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use proptest::prelude::*;

use super::ack::{read_ack, render_ack, write_ack, AckFile, AckState, SavedState, ACK_FILE, ACK_VERSION};
use super::recovery::LEGACY_EPOCH_FILE;
use super::segment::{segment_name, SEGMENT_EXT};
use super::*;
use crate::stats::Stats;

const TABLE: &str = "metrics";

fn opts(max_size: u64, segment_size: u64) -> SpoolOptions {
    SpoolOptions { max_size, segment_size }
}

fn open(dir: &Path, o: SpoolOptions) -> (Spool, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    (Spool::open(dir, o, Arc::clone(&stats)).unwrap(), stats)
}

fn body(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize + i) as u8).collect()
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == SEGMENT_EXT))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

fn drain(spool: &mut Spool) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Some(r) = spool.peek().unwrap() {
        seqs.push(r.seq);
        spool.ack(r.seq).unwrap();
    }
    seqs
}

#[test]
fn append_peek_ack_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(1 << 20, 200);
    let (mut s, stats) = open(dir.path(), o);
    let epoch = s.epoch();
    assert_ne!(epoch, 0);
    assert_eq!(s.peek().unwrap(), None);
    for i in 1..=10 {
        assert_eq!(s.append(TABLE, &body(i, 50), OnFull::DropOldest).unwrap(), i);
    }
    assert!(fs::read_dir(dir.path()).unwrap().count() > 4, "segments rolled at segment_size");
    assert_eq!(stats.spool_records.load(std::sync::atomic::Ordering::Relaxed), 10);

    let r = s.peek().unwrap().unwrap();
    assert_eq!((r.epoch, r.seq, r.table.as_str(), r.body.clone()), (epoch, 1, TABLE, body(1, 50)));
    assert_eq!(s.peek().unwrap().unwrap().seq, 1, "peek does not consume");
    s.ack(1).unwrap();
    s.ack(2).unwrap();
    s.ack(2).unwrap();
    assert!(matches!(s.ack(11), Err(SpoolError::AckBeyondEnd { .. })));
    drop(s);

    let (mut s, _) = open(dir.path(), o);
    assert_ne!(s.epoch(), epoch, "every open draws an epoch of its own");
    let r = s.peek().unwrap().unwrap();
    assert_eq!((r.epoch, r.seq, r.body), (epoch, 3, body(3, 50)), "a record keeps its batch id");
    assert_eq!(drain(&mut s), (3..=10).collect::<Vec<_>>());
    assert_eq!(s.pending(), 0);
    drop(s);

    // Everything acked: the seq still continues after a reopen, never reused.
    let (mut s, _) = open(dir.path(), o);
    assert_eq!(s.peek().unwrap(), None);
    assert_eq!(s.append(TABLE, b"x", OnFull::DropOldest).unwrap(), 11);
    assert_eq!(s.pending(), 1);
    let segs = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == SEGMENT_EXT))
        .count();
    assert!(segs <= 2, "acked segments deleted, {segs} left");
}

#[test]
fn a_torn_tail_at_every_offset_is_cut_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(1 << 20, 1 << 20);
    let (mut s, _) = open(dir.path(), o);
    for i in 1..=3 {
        s.append(TABLE, &body(i, 40), OnFull::DropOldest).unwrap();
    }
    drop(s);
    let seg = last_segment(dir.path());
    let full = fs::read(&seg).unwrap();
    let last_len = segment::encoded_len(TABLE, 40, None) as usize;
    let last_start = full.len() - last_len;

    for cut in last_start..full.len() {
        fs::write(&seg, &full[..cut]).unwrap();
        let (mut s, stats) = open(dir.path(), o);
        let truncations = stats.spool_truncations.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(truncations, u64::from(cut > last_start), "cut at {cut}");
        assert_eq!(fs::metadata(&seg).unwrap().len(), last_start as u64, "file cut back at {cut}");
        let r = s.peek().unwrap().unwrap();
        assert_eq!((r.seq, r.body), (1, body(1, 40)));
        // The lost record was never acknowledged to anyone: its seq is given out again.
        assert_eq!(s.append(TABLE, &body(3, 40), OnFull::DropOldest).unwrap(), 3);
        drop(s);
        let (mut s, _) = open(dir.path(), o);
        assert_eq!(s.pending(), 3);
        let r = s.peek().unwrap().unwrap();
        assert_eq!(r.seq, 1);
        drop(s);
    }

    // Damage inside the last record (not only a short file) is cut too.
    let mut damaged = full.clone();
    damaged[last_start + 20] ^= 0xff;
    fs::write(&seg, &damaged).unwrap();
    let (mut s, stats) = open(dir.path(), o);
    assert_eq!(stats.spool_truncations.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(drain(&mut s), vec![1, 2]);
}

#[test]
fn full_spool_drops_the_oldest_and_counts_or_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let rec = segment::encoded_len(TABLE, 100, None);
    let o = opts(rec * 6, rec * 2);
    let (mut s, stats) = open(dir.path(), o);
    for i in 1..=6 {
        s.append(TABLE, &body(i, 100), OnFull::DropOldest).unwrap();
    }
    assert_eq!(stats.dropped_batches.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(matches!(s.append(TABLE, &body(7, 100), OnFull::Reject), Err(SpoolError::Full { .. })));
    assert_eq!(s.pending(), 6, "a rejected append changes nothing");

    assert_eq!(s.append(TABLE, &body(7, 100), OnFull::DropOldest).unwrap(), 7);
    assert_eq!(stats.dropped_batches.load(std::sync::atomic::Ordering::Relaxed), 2, "one segment of two dropped");
    assert!(s.size() <= o.max_size);
    assert_eq!(stats.spool_bytes.load(std::sync::atomic::Ordering::Relaxed), s.size());
    // An ack of a dropped record (the shipper had it in flight) is harmless.
    s.ack(1).unwrap();
    assert_eq!(drain(&mut s), vec![3, 4, 5, 6, 7]);

    assert!(matches!(
        s.append(TABLE, &vec![0; 10 * rec as usize], OnFull::DropOldest),
        Err(SpoolError::TooLarge { .. })
    ));
}

#[test]
fn acked_records_are_not_dropped_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let rec = segment::encoded_len(TABLE, 10, None);
    let (mut s, stats) = open(dir.path(), opts(rec * 4, rec * 2));
    for i in 1..=4 {
        s.append(TABLE, &body(i, 10), OnFull::DropOldest).unwrap();
    }
    s.ack(1).unwrap();
    s.append(TABLE, &body(5, 10), OnFull::DropOldest).unwrap();
    assert_eq!(stats.dropped_batches.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(drain(&mut s), vec![3, 4, 5]);
}

fn group(tables_and_lens: &[(&str, usize)], salt: u64) -> Vec<(String, Vec<u8>)> {
    tables_and_lens.iter().enumerate().map(|(i, (t, len))| (t.to_string(), body(salt + i as u64, *len))).collect()
}

fn state(source: &str, json: &str) -> Option<(String, Vec<u8>)> {
    Some((source.to_string(), json.as_bytes().to_vec()))
}

fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(std::sync::atomic::Ordering::Relaxed)
}

fn state_of(s: &Spool, source: &str) -> Option<String> {
    s.source_state(source).map(|j| String::from_utf8(j.to_vec()).unwrap())
}

#[test]
fn a_group_is_written_whole_with_its_state_on_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(1 << 20, 1 << 20);
    let (mut s, _) = open(dir.path(), o);
    let g = group(&[("logs", 30), ("firewall", 20), ("bans", 10)], 1);
    let seqs = s.append_group(g.clone(), state("journald", r#"{"c":1}"#), OnFull::Reject).unwrap();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(state_of(&s, "journald").as_deref(), Some(r#"{"c":1}"#));
    assert_eq!(s.source_state("caddy"), None);
    for (i, (table, b)) in g.iter().enumerate() {
        let r = s.peek().unwrap().unwrap();
        assert_eq!((r.seq, &r.table, &r.body), (i as u64 + 1, table, b));
        assert_eq!(r.continues, i < 2, "record {i}");
        assert!(r.held);
        assert_eq!(r.state.is_some(), i == 2);
        s.ack(r.seq).unwrap();
    }
    let seqs = s.append_group(group(&[(TABLE, 5)], 9), None, OnFull::DropOldest).unwrap();
    assert_eq!(seqs, vec![4]);
    let r = s.peek().unwrap().unwrap();
    assert!(!r.held && !r.continues && r.state.is_none());
    // Neither records nor state: nothing happens.
    assert_eq!(s.append_group(vec![], None, OnFull::Reject).unwrap(), Vec::<u64>::new());
    assert!(matches!(s.append_group(group(&[("", 1)], 0), None, OnFull::Reject), Err(SpoolError::Table(_))));
    assert!(matches!(
        s.append_group(vec![], Some((String::new(), b"{}".to_vec())), OnFull::Reject),
        Err(SpoolError::SourceState { .. })
    ));
    assert!(matches!(
        s.append_group(vec![], Some(("x".into(), vec![0xff])), OnFull::Reject),
        Err(SpoolError::SourceState { .. })
    ));
}

#[test]
fn a_group_is_never_split_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let rec = segment::encoded_len(TABLE, 100, None);
    let o = opts(1 << 20, rec * 2);
    let (mut s, _) = open(dir.path(), o);
    s.append(TABLE, &body(1, 100), OnFull::Reject).unwrap();
    // Two more would pass segment_size: the group rolls first, whole.
    s.append_group(group(&[(TABLE, 100), (TABLE, 100)], 2), None, OnFull::Reject).unwrap();
    // Larger than a segment: it gets its own.
    s.append_group(group(&[(TABLE, 100); 5], 4), None, OnFull::Reject).unwrap();
    s.append(TABLE, &body(9, 100), OnFull::Reject).unwrap();
    let names: Vec<u64> = s.segments.iter().map(|g| g.first_seq).collect();
    assert_eq!(names, vec![1, 2, 4, 9]);
    drop(s);
    let (mut s, stats) = open(dir.path(), o);
    assert_eq!(get(&stats.spool_truncations), 0);
    assert_eq!(drain(&mut s), (1..=9).collect::<Vec<_>>());
}

/// Cuts the last group at every byte: after reopening, the group is there whole or not
/// at all, and so is its state.
#[test]
fn a_cut_anywhere_in_the_last_group_removes_the_whole_group_and_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(1 << 20, 1 << 20);
    let (mut s, _) = open(dir.path(), o);
    s.append_group(group(&[("logs", 40)], 1), state("journald", "\"a\""), OnFull::Reject).unwrap();
    s.ack(1).unwrap();
    s.append_group(group(&[("logs", 30), ("bans", 20)], 2), state("journald", "\"b\""), OnFull::Reject).unwrap();
    let before_last = s.size();
    s.append_group(
        group(&[("logs", 30), ("firewall", 25), ("bans", 20)], 4),
        state("journald", "\"c\""),
        OnFull::Reject,
    )
    .unwrap();
    drop(s);
    let seg = last_segment(dir.path());
    let full = fs::read(&seg).unwrap();
    let last_start = before_last as usize;
    assert!(last_start < full.len());

    for cut in last_start..=full.len() {
        fs::write(&seg, &full[..cut]).unwrap();
        let (mut s, stats) = open(dir.path(), o);
        let whole = cut == full.len();
        assert_eq!(get(&stats.spool_truncations), u64::from(cut > last_start && !whole), "cut at {cut}");
        let want_state = if whole { "\"c\"" } else { "\"b\"" };
        assert_eq!(state_of(&s, "journald").as_deref(), Some(want_state), "cut at {cut}");
        let want_len = if whole { full.len() } else { last_start };
        assert_eq!(fs::metadata(&seg).unwrap().len(), want_len as u64, "cut at {cut}");
        let mut tables = Vec::new();
        while let Some(r) = s.peek().unwrap() {
            tables.push(r.table.clone());
            s.ack(r.seq).unwrap();
        }
        let want: &[&str] = if whole { &["logs", "bans", "logs", "firewall", "bans"] } else { &["logs", "bans"] };
        assert_eq!(tables, want, "cut at {cut}");
        drop(s);
        // Put the acked state back for the next cut.
        let (_, mut states) = read_ack(dir.path()).unwrap();
        states.insert("journald".into(), SavedState::new(1, b"\"a\"".to_vec()));
        write_ack(dir.path(), 1, &states).unwrap();
        fs::write(&seg, &full).unwrap();
    }
}

#[test]
fn states_survive_ack_delete_and_reopen_and_the_highest_seq_wins() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(1 << 20, 1);
    let (mut s, _) = open(dir.path(), o);
    s.append_group(group(&[("http", 10)], 1), state("caddy", r#"{"o":1}"#), OnFull::Reject).unwrap();
    s.append_group(group(&[("logs", 10)], 2), state("journald", r#"{"c":1}"#), OnFull::Reject).unwrap();
    s.append_group(group(&[("http", 10)], 3), state("caddy", r#"{"o":2}"#), OnFull::Reject).unwrap();
    // Everything acked: every segment but the active one is deleted, yet both states stay.
    s.ack(3).unwrap();
    drop(s);
    assert_eq!(
        fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == SEGMENT_EXT))
            .count(),
        1
    );
    let (mut s, _) = open(dir.path(), o);
    assert_eq!(state_of(&s, "caddy").as_deref(), Some(r#"{"o":2}"#));
    assert_eq!(state_of(&s, "journald").as_deref(), Some(r#"{"c":1}"#));

    // A newer state in a record beats the ack file's.
    s.append_group(group(&[("logs", 10)], 4), state("journald", r#"{"c":2}"#), OnFull::Reject).unwrap();
    drop(s);
    let (_, acked_states) = read_ack(dir.path()).unwrap();
    assert_eq!(acked_states["journald"].json, br#"{"c":1}"#);
    let (mut s, _) = open(dir.path(), o);
    assert_eq!(state_of(&s, "journald").as_deref(), Some(r#"{"c":2}"#));
    assert_eq!(read_states(dir.path()).unwrap()["journald"], br#"{"c":2}"#, "the read-only view agrees");

    // A state-only group (rows all filtered out) goes to the ack file at the last seq,
    // and beats the record of that same seq.
    assert_eq!(s.append_group(vec![], state("journald", r#"{"c":3}"#), OnFull::Reject).unwrap(), Vec::<u64>::new());
    assert_eq!(s.pending(), 1, "no record for a state alone");
    drop(s);
    let (_, acked_states) = read_ack(dir.path()).unwrap();
    assert_eq!(acked_states["journald"].seq, 4);
    let (mut s, _) = open(dir.path(), o);
    assert_eq!(state_of(&s, "journald").as_deref(), Some(r#"{"c":3}"#));
    assert_eq!(state_of(&s, "caddy").as_deref(), Some(r#"{"o":2}"#));
    assert_eq!(drain(&mut s), vec![4]);
    assert_eq!(s.append(TABLE, b"x", OnFull::DropOldest).unwrap(), 5, "no seq used");
    drop(s);
    let (s, _) = open(dir.path(), o);
    assert_eq!(state_of(&s, "journald").as_deref(), Some(r#"{"c":3}"#));
}

#[test]
fn the_ack_file_is_what_serde_writes() {
    let mut states = BTreeMap::new();
    states.insert("caddy".to_string(), SavedState::new(7, br#"{"files":[{"path":"/a \"b\"\\c"}]}"#.to_vec()));
    states.insert("inv\u{e9}ntory".to_string(), SavedState::new(3, "{\"p\":\"\u{e9}\\n\"}".as_bytes().to_vec()));
    for states in [BTreeMap::new(), states] {
        let file = AckFile {
            version: ACK_VERSION,
            acked: 42,
            states: states
                .iter()
                .map(|(k, s)| (k.clone(), AckState { seq: s.seq, state: String::from_utf8(s.json.clone()).unwrap() }))
                .collect(),
        };
        let mut want = serde_json::to_vec(&file).unwrap();
        want.push(b'\n');
        assert_eq!(String::from_utf8(render_ack(42, &states)).unwrap(), String::from_utf8(want).unwrap());
    }
}

#[test]
fn an_ack_is_deferred_at_most_a_second_and_a_crash_only_resends() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(1 << 20, 1 << 20);
    let (mut s, _) = open(dir.path(), o);
    for i in 1..=3 {
        s.append(TABLE, &body(i, 10), OnFull::DropOldest).unwrap();
    }
    s.ack(1).unwrap();
    assert_eq!(read_ack(dir.path()).unwrap().0, 1, "the first ack is written");
    s.ack(2).unwrap();
    assert_eq!(read_ack(dir.path()).unwrap().0, 1, "the next one within a second is not");
    assert_eq!(s.pending(), 1);
    // A crash: seq 2 is delivered again (the lake acknowledges it as a duplicate).
    std::mem::forget(s);
    let (mut s, _) = open(dir.path(), o);
    assert_eq!(s.peek().unwrap().unwrap().seq, 2);
    s.ack(2).unwrap();
    assert_eq!(read_ack(dir.path()).unwrap().0, 2, "first ack after open");
    s.ack(3).unwrap();
    assert_eq!(read_ack(dir.path()).unwrap().0, 2);
    // A clean close writes it.
    drop(s);
    assert_eq!(read_ack(dir.path()).unwrap().0, 3);
    let (mut s, _) = open(dir.path(), o);
    assert_eq!(s.peek().unwrap(), None);
    // And a second later the next ack is written again.
    s.append(TABLE, &body(4, 10), OnFull::DropOldest).unwrap();
    s.ack_written = Some(Instant::now() - ACK_PERSIST_EVERY);
    s.ack(4).unwrap();
    assert_eq!(read_ack(dir.path()).unwrap().0, 4);
}

#[test]
fn an_old_or_damaged_ack_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(ACK_FILE), "v1 12\n").unwrap();
    let stats = Arc::new(Stats::default());
    let err = Spool::open(dir.path(), opts(1 << 20, 1 << 20), stats).unwrap_err();
    assert!(matches!(err, SpoolError::State { .. }), "{err}");
}

#[test]
fn drop_oldest_never_deletes_a_segment_with_held_records() {
    let dir = tempfile::tempdir().unwrap();
    let rec = segment::encoded_len(TABLE, 100, None);
    let o = opts(rec * 4, rec * 2);
    let (mut s, stats) = open(dir.path(), o);
    // Segment 1: metrics (droppable). Segment 3: logs (held) and metrics.
    s.append(TABLE, &body(1, 100), OnFull::DropOldest).unwrap();
    s.append(TABLE, &body(2, 100), OnFull::DropOldest).unwrap();
    s.append("logs", &body(3, 100), OnFull::Reject).unwrap();
    s.append(TABLE, &body(4, 100), OnFull::DropOldest).unwrap();

    // Held data never makes room: Full, nothing deleted.
    assert!(matches!(s.append("logs", &body(5, 100), OnFull::Reject), Err(SpoolError::Full { .. })));
    assert_eq!(s.pending(), 4);
    // A droppable append drops the droppable-only oldest segment.
    assert_eq!(s.append(TABLE, &body(5, 100), OnFull::DropOldest).unwrap(), 5);
    assert_eq!(get(&stats.dropped_batches), 2);
    // Now the oldest segment holds a held record: the droppable append is dropped.
    assert!(matches!(
        s.append_group(group(&[(TABLE, 100), (TABLE, 100)], 6), None, OnFull::DropOldest),
        Err(SpoolError::Dropped { records: 2 })
    ));
    assert_eq!(get(&stats.dropped_batches), 4);
    assert_eq!(s.pending(), 3);
    let r = s.peek().unwrap().unwrap();
    assert_eq!((r.seq, r.table.as_str(), r.held), (3, "logs", true));

    // Once the held record is acked, its segment may go (its metrics count as dropped).
    s.ack(3).unwrap();
    assert_eq!(s.append(TABLE, &body(6, 100), OnFull::DropOldest).unwrap(), 6);
    assert_eq!(get(&stats.dropped_batches), 4, "6 fits");
    assert_eq!(s.append(TABLE, &body(7, 100), OnFull::DropOldest).unwrap(), 7);
    assert_eq!(get(&stats.dropped_batches), 5, "4 dropped, 3 was acked");
    assert_eq!(drain(&mut s), vec![5, 6, 7]);
    drop(s);
    let (mut s, _) = open(dir.path(), o);
    assert_eq!(drain(&mut s), Vec::<u64>::new());
}

#[test]
fn held_flags_are_recovered_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let rec = segment::encoded_len(TABLE, 100, None);
    let o = opts(rec * 3, rec * 2);
    let (mut s, _) = open(dir.path(), o);
    s.append(TABLE, &body(1, 100), OnFull::DropOldest).unwrap();
    s.append("logs", &body(2, 100), OnFull::Reject).unwrap();
    s.append(TABLE, &body(3, 100), OnFull::DropOldest).unwrap();
    drop(s);
    let (mut s, stats) = open(dir.path(), o);
    assert!(matches!(s.append(TABLE, &body(4, 100), OnFull::DropOldest), Err(SpoolError::Dropped { records: 1 })));
    assert_eq!(get(&stats.dropped_batches), 1);
    assert_eq!(drain(&mut s), vec![1, 2, 3]);
}

/// Every segment file of `dir`, oldest first.
fn segments_of(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == SEGMENT_EXT))
        .collect();
    segs.sort();
    segs
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The issue's cloned VM: a copy of the spool directory sends the records it shares with
/// the original under the same ids (the same rows: stored once), and its own new records
/// under an epoch of its own, never an id the original gives to other rows.
#[test]
fn a_copied_spool_never_reuses_the_originals_batch_ids() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let o = opts(1 << 20, 1 << 20);
    let (mut s, _) = open(&a, o);
    for i in 1..=3 {
        s.append(TABLE, &body(i, 10), OnFull::DropOldest).unwrap();
    }
    s.ack(1).unwrap();
    drop(s);
    // An older version's epoch file, shared by every copy: removed, not used.
    fs::write(a.join(LEGACY_EPOCH_FILE), "1700000000\n").unwrap();
    copy_dir(&a, &b);

    let ids = |dir: &Path, salt: u64| {
        let (mut s, _) = open(dir, o);
        s.append(TABLE, &body(salt, 10), OnFull::DropOldest).unwrap();
        let mut ids = Vec::new();
        while let Some(r) = s.peek().unwrap() {
            ids.push((r.epoch, r.seq, r.body.clone()));
            s.ack(r.seq).unwrap();
        }
        ids
    };
    let (from_a, from_b) = (ids(&a, 100), ids(&b, 200));
    assert!(!a.join(LEGACY_EPOCH_FILE).exists() && !b.join(LEGACY_EPOCH_FILE).exists());
    assert_eq!(from_a.len(), 3);
    assert_eq!(from_a[..2], from_b[..2], "shared records keep their ids");
    let (new_a, new_b) = (&from_a[2], &from_b[2]);
    assert_eq!((new_a.1, new_b.1), (4, 4), "both give out seq 4 ...");
    assert_ne!(new_a.0, new_b.0, "... under different epochs");
    assert_ne!(new_a.0, from_a[0].0);
    assert_ne!(new_b.0, from_a[0].0);
}

/// Damage inside a segment that is not the last: the records after it are salvaged
/// (shipped), only the damaged one is lost, counted; a second open finds nothing more.
#[test]
fn damage_in_an_inner_segment_is_salvaged_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(1 << 20, 500);
    let (mut s, _) = open(dir.path(), o);
    for i in 1..=12 {
        s.append(TABLE, &body(i, 50), OnFull::DropOldest).unwrap();
    }
    drop(s);
    let segs = segments_of(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");
    let first = fs::read(&segs[0]).unwrap();
    let rec = segment::encoded_len(TABLE, 50, None) as usize;
    assert!(first.len() >= 5 * rec);

    for (what, at) in [("payload", rec + 40), ("magic", rec), ("length", rec + 5)] {
        let d = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), d.path());
        let seg0 = segments_of(d.path())[0].clone();
        let mut damaged = first.clone();
        damaged[at] ^= 0x5a;
        fs::write(&seg0, &damaged).unwrap();
        let (mut s, stats) = open(d.path(), o);
        assert_eq!(get(&stats.spool_damaged_records), 1, "{what}");
        assert_eq!(get(&stats.dropped_batches), 1, "{what}");
        assert_eq!(get(&stats.spool_truncations), 0, "{what}: not a torn tail");
        // The salvaged run has a segment of its own, named by its first seq.
        assert!(d.path().join(segment_name(3)).exists(), "{what}");
        assert_eq!(fs::metadata(&seg0).unwrap().len(), rec as u64, "{what}: record 1 stays");
        let expect: Vec<u64> = (1..=12).filter(|&q| q != 2).collect();
        let mut got = Vec::new();
        while let Some(r) = s.peek().unwrap() {
            assert_eq!(r.body, body(r.seq, 50), "{what}: seq {}", r.seq);
            got.push(r.seq);
            s.ack(r.seq).unwrap();
        }
        assert_eq!(got, expect, "{what}");
    }

    // Damage only in records already acknowledged: nothing counts as lost.
    let d = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), d.path());
    let (mut s, _) = open(d.path(), o);
    s.ack(3).unwrap();
    drop(s);
    let seg0 = segments_of(d.path())[0].clone();
    let mut damaged = fs::read(&seg0).unwrap();
    damaged[rec + 40] ^= 0x5a;
    fs::write(&seg0, &damaged).unwrap();
    let (mut s, stats) = open(d.path(), o);
    assert_eq!(get(&stats.spool_damaged_records), 0);
    assert_eq!(drain(&mut s), (4..=12).collect::<Vec<_>>());

    // Two damaged records and the segment's end: each intact run is kept.
    let d = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), d.path());
    let seg0 = segments_of(d.path())[0].clone();
    let n0 = first.len() / rec;
    let mut damaged = first.clone();
    damaged[40] ^= 1;
    damaged[2 * rec + 40] ^= 1;
    damaged[(n0 - 1) * rec + 40] ^= 1;
    fs::write(&seg0, &damaged).unwrap();
    let (mut s, stats) = open(d.path(), o);
    assert_eq!(get(&stats.spool_damaged_records), 3);
    assert!(!seg0.exists(), "nothing intact before the first damage: the file is gone");
    let lost = [1, 3, n0 as u64];
    assert_eq!(drain(&mut s), (1..=12).filter(|q| !lost.contains(q)).collect::<Vec<_>>());
    drop(s);
    let (_, stats) = open(d.path(), o);
    assert_eq!(get(&stats.spool_damaged_records), 0, "salvage is done once");
}

/// A group cut by damage in an inner segment: its intact records and the state on its
/// last record are kept, and the salvaged file never looks like a torn tail, even once
/// it is the last segment.
#[test]
fn salvage_keeps_the_intact_records_and_state_of_a_damaged_group() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(1 << 20, 4096);
    let (mut s, _) = open(dir.path(), o);
    s.append_group(
        group(&[("logs", 100), ("firewall", 100), ("bans", 100)], 1),
        state("journald", "{\"c\":1}"),
        OnFull::Reject,
    )
    .unwrap();
    // Fill the segment so the next group rolls into a new one.
    s.append_group(group(&[("logs", 4000)], 2), state("journald", "{\"c\":2}"), OnFull::Reject).unwrap();
    s.append_group(group(&[("logs", 10)], 3), state("caddy", "{\"o\":3}"), OnFull::Reject).unwrap();
    drop(s);
    let segs = segments_of(dir.path());
    assert_eq!(segs.len(), 3, "{segs:?}");
    // Damage record 2 (the group's middle): 1 and 3 stay, and so does the state on 3.
    let mut bytes = fs::read(&segs[0]).unwrap();
    let first = segment::encoded_len("logs", 100, None) as usize;
    bytes[first + 30] ^= 0xff;
    fs::write(&segs[0], &bytes).unwrap();
    let (mut s, stats) = open(dir.path(), o);
    assert_eq!(get(&stats.spool_damaged_records), 1);
    assert_eq!(state_of(&s, "journald").as_deref(), Some("{\"c\":2}"));
    let r = s.peek().unwrap().unwrap();
    assert_eq!((r.seq, r.continues), (1, false), "the run before the damage ends its group");
    s.ack(1).unwrap();
    drop(s);
    // Remove the later segments: the salvaged run becomes the last segment, and a
    // reopen must not cut it as a torn group.
    let after = segments_of(dir.path());
    for p in after.iter().filter(|p| **p > dir.path().join(segment_name(3))) {
        fs::remove_file(p).unwrap();
    }
    let (mut s, stats) = open(dir.path(), o);
    assert_eq!(get(&stats.spool_truncations), 0);
    let r = s.peek().unwrap().unwrap();
    assert_eq!((r.seq, r.table.as_str(), r.body.clone()), (3, "bans", body(3, 100)));
}

#[derive(Debug, Clone)]
enum Op {
    /// Records (body lengths), state of source 0 or 1, held.
    Append(Vec<usize>, Option<u8>, bool),
    Ack,
    Reopen,
    /// Cut the last group, if it was the last thing written, at some byte of it.
    TruncateTail(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (
            proptest::collection::vec(0usize..300, 0..4),
            proptest::option::of(0u8..2),
            any::<bool>()
        )
            .prop_map(|(l, s, h)| Op::Append(l, s, h)),
        3 => Just(Op::Ack),
        1 => Just(Op::Reopen),
        2 => any::<usize>().prop_map(Op::TruncateTail),
    ]
}

const TABLES: [&str; 3] = ["logs", "firewall", "bans"];
const SOURCES: [&str; 2] = ["journald", "caddy"];

/// What the model expects of one record.
#[derive(Debug, Clone, PartialEq)]
struct Expect {
    seq: u64,
    table: String,
    body: Vec<u8>,
    continues: bool,
    held: bool,
    state: Option<(String, Vec<u8>)>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The spool behaves like a queue of whole groups with the newest state per source,
    /// across reopens and torn tails cut at any byte of the last group.
    #[test]
    fn spool_matches_a_queue_model(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(1 << 30, 700);
        let (mut spool, mut stats) = open(dir.path(), o);
        let mut queue: VecDeque<Expect> = VecDeque::new();
        let mut next_seq = 1u64;
        // Every state saved per source, oldest first: (seq, json).
        let mut states: [Vec<(u64, Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
        // (first seq, bytes) of the last group while it is the tail of the last segment.
        let mut last_group: Option<(u64, u64)> = None;
        let mut truncations = 0;
        let mut n_state = 0u64;
        // Acked records, oldest first: a crash brings back those whose ack was deferred.
        let mut acked: Vec<Expect> = Vec::new();

        for op in ops {
            match op {
                Op::Append(lens, src, held) => {
                    let records: Vec<(String, Vec<u8>)> = lens
                        .iter()
                        .enumerate()
                        .map(|(i, len)| (TABLES[i].to_string(), body(next_seq + i as u64, *len)))
                        .collect();
                    n_state += 1;
                    let st = src.map(|i| (SOURCES[usize::from(i)].to_string(), format!("{{\"n\":{n_state}}}").into_bytes()));
                    let on_full = if held { OnFull::Reject } else { OnFull::DropOldest };
                    let size_before = spool.size();
                    let seqs = spool.append_group(records.clone(), st.clone(), on_full).unwrap();
                    let n = records.len() as u64;
                    prop_assert_eq!(seqs, (next_seq..next_seq + n).collect::<Vec<_>>());
                    let saved_seq = if n == 0 { next_seq - 1 } else { next_seq + n - 1 };
                    if let (Some(i), Some((_, json))) = (src, &st) {
                        states[usize::from(i)].push((saved_seq, json.clone()));
                    }
                    for (i, (table, b)) in records.into_iter().enumerate() {
                        let last = i as u64 + 1 == n;
                        queue.push_back(Expect {
                            seq: next_seq + i as u64,
                            table,
                            body: b,
                            continues: !last,
                            held,
                            state: if last { st.clone() } else { None },
                        });
                    }
                    last_group = (n > 0).then(|| (next_seq, spool.size() - size_before));
                    next_seq += n;
                    // A group that rolled to a new segment: its bytes are the whole file.
                }
                Op::Ack => {
                    let got = spool.peek().unwrap().map(|r| Expect {
                        seq: r.seq, table: r.table, body: r.body, continues: r.continues, held: r.held, state: r.state,
                    });
                    prop_assert_eq!(got.as_ref(), queue.front());
                    if let Some(e) = queue.pop_front() {
                        spool.ack(e.seq).unwrap();
                        acked.push(e);
                    }
                    last_group = None;
                }
                Op::Reopen => {
                    drop(spool);
                    (spool, stats) = open(dir.path(), o);
                    truncations = 0;
                    // Only the write in progress at a crash can be torn. A group that an
                    // open has read back whole was fsynced, and the open wrote its state
                    // to the ack file, as an ack does: it can no longer be cut.
                    last_group = None;
                }
                Op::TruncateTail(k) => {
                    let Some((first, len)) = last_group.take() else { continue };
                    // A crash, not a clean close: nothing runs on the way out (a drop
                    // would persist a deferred ack, and the states with it). Records acked
                    // since the `ack` file was last written are delivered again.
                    let on_disk = spool.acked_on_disk;
                    std::mem::forget(spool);
                    for e in acked.iter().rev().take_while(|e| e.seq > on_disk) {
                        queue.push_front(e.clone());
                    }
                    acked.retain(|e| e.seq <= on_disk);
                    let seg = last_segment(dir.path());
                    let size = fs::metadata(&seg).unwrap().len();
                    let start = size - len;
                    let cut = start + k as u64 % len;
                    fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(cut).unwrap();
                    (spool, stats) = open(dir.path(), o);
                    truncations = u64::from(cut > start);
                    queue.retain(|e| e.seq < first);
                    for s in &mut states {
                        s.retain(|(seq, _)| *seq < first);
                    }
                    next_seq = first;
                }
            }
            prop_assert_eq!(spool.pending(), queue.len() as u64);
            prop_assert_eq!(get(&stats.spool_truncations), truncations);
            prop_assert_eq!(get(&stats.dropped_batches), 0);
            for (i, name) in SOURCES.iter().enumerate() {
                prop_assert_eq!(spool.source_state(name), states[i].last().map(|(_, j)| j.as_slice()), "source {}", name);
            }
        }
        let mut got = Vec::new();
        while let Some(r) = spool.peek().unwrap() {
            got.push((r.seq, r.table, r.body));
            spool.ack(got.last().unwrap().0).unwrap();
        }
        prop_assert_eq!(got, queue.into_iter().map(|e| (e.seq, e.table, e.body)).collect::<Vec<_>>());
        drop(spool);
        let (spool, _) = open(dir.path(), o);
        for (i, name) in SOURCES.iter().enumerate() {
            prop_assert_eq!(spool.source_state(name), states[i].last().map(|(_, j)| j.as_slice()));
        }
    }
}
