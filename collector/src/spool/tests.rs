use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

const TABLE: &str = "metrics";

fn opts(max_size: u64, segment_size: u64) -> SpoolOptions {
    SpoolOptions {
        max_size,
        segment_size,
    }
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
    assert!(epoch > 1_600_000_000);
    assert_eq!(s.peek().unwrap(), None);
    for i in 1..=10 {
        assert_eq!(
            s.append(TABLE, &body(i, 50), OnFull::DropOldest).unwrap(),
            i
        );
    }
    assert!(
        fs::read_dir(dir.path()).unwrap().count() > 4,
        "segments rolled at segment_size"
    );
    assert_eq!(
        stats
            .spool_records
            .load(std::sync::atomic::Ordering::Relaxed),
        10
    );

    let r = s.peek().unwrap().unwrap();
    assert_eq!(
        (r.epoch, r.seq, r.table.as_str(), r.body.clone()),
        (epoch, 1, TABLE, body(1, 50))
    );
    assert_eq!(s.peek().unwrap().unwrap().seq, 1, "peek does not consume");
    s.ack(1).unwrap();
    s.ack(2).unwrap();
    s.ack(2).unwrap();
    assert!(matches!(s.ack(11), Err(SpoolError::AckBeyondEnd { .. })));
    drop(s);

    let (mut s, _) = open(dir.path(), o);
    assert_eq!(s.epoch(), epoch, "epoch persists");
    let r = s.peek().unwrap().unwrap();
    assert_eq!((r.seq, r.body), (3, body(3, 50)));
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
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == SEGMENT_EXT)
        })
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
    let last_len = segment::encoded_len(TABLE, 40) as usize;
    let last_start = full.len() - last_len;

    for cut in last_start..full.len() {
        fs::write(&seg, &full[..cut]).unwrap();
        let (mut s, stats) = open(dir.path(), o);
        let truncations = stats
            .spool_truncations
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(truncations, u64::from(cut > last_start), "cut at {cut}");
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            last_start as u64,
            "file cut back at {cut}"
        );
        let r = s.peek().unwrap().unwrap();
        assert_eq!((r.seq, r.body), (1, body(1, 40)));
        // The lost record was never acknowledged to anyone: its seq is given out again.
        assert_eq!(
            s.append(TABLE, &body(3, 40), OnFull::DropOldest).unwrap(),
            3
        );
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
    assert_eq!(
        stats
            .spool_truncations
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(drain(&mut s), vec![1, 2]);
}

#[test]
fn full_spool_drops_the_oldest_and_counts_or_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let rec = segment::encoded_len(TABLE, 100);
    let o = opts(rec * 6, rec * 2);
    let (mut s, stats) = open(dir.path(), o);
    for i in 1..=6 {
        s.append(TABLE, &body(i, 100), OnFull::DropOldest).unwrap();
    }
    assert_eq!(
        stats
            .dropped_batches
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(matches!(
        s.append(TABLE, &body(7, 100), OnFull::Reject),
        Err(SpoolError::Full { .. })
    ));
    assert_eq!(s.pending(), 6, "a rejected append changes nothing");

    assert_eq!(
        s.append(TABLE, &body(7, 100), OnFull::DropOldest).unwrap(),
        7
    );
    assert_eq!(
        stats
            .dropped_batches
            .load(std::sync::atomic::Ordering::Relaxed),
        2,
        "one segment of two dropped"
    );
    assert!(s.size() <= o.max_size);
    assert_eq!(
        stats.spool_bytes.load(std::sync::atomic::Ordering::Relaxed),
        s.size()
    );
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
    let rec = segment::encoded_len(TABLE, 10);
    let (mut s, stats) = open(dir.path(), opts(rec * 4, rec * 2));
    for i in 1..=4 {
        s.append(TABLE, &body(i, 10), OnFull::DropOldest).unwrap();
    }
    s.ack(1).unwrap();
    s.append(TABLE, &body(5, 10), OnFull::DropOldest).unwrap();
    assert_eq!(
        stats
            .dropped_batches
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(drain(&mut s), vec![3, 4, 5]);
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Ack,
    Reopen,
    TruncateTail(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..300).prop_map(Op::Append),
        3 => Just(Op::Ack),
        1 => Just(Op::Reopen),
        1 => any::<usize>().prop_map(Op::TruncateTail),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The spool behaves like a queue, across reopens and torn tails.
    #[test]
    fn spool_matches_a_queue_model(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(1 << 30, 700);
        let (mut spool, mut stats) = open(dir.path(), o);
        let mut queue: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        let mut next_seq = 1u64;
        let mut acked = 0u64;
        // Length of the last appended record while it is the tail of the last segment.
        let mut last_len: Option<usize> = None;
        let mut truncations = 0;

        for op in ops {
            match op {
                Op::Append(len) => {
                    let b = body(next_seq, len);
                    let seq = spool.append(TABLE, &b, OnFull::DropOldest).unwrap();
                    prop_assert_eq!(seq, next_seq);
                    queue.push_back((seq, b));
                    next_seq += 1;
                    last_len = Some(segment::encoded_len(TABLE, len) as usize);
                }
                Op::Ack => {
                    let got = spool.peek().unwrap().map(|r| (r.seq, r.body));
                    prop_assert_eq!(got.as_ref(), queue.front());
                    if let Some((seq, _)) = queue.pop_front() {
                        spool.ack(seq).unwrap();
                        acked = seq;
                    }
                }
                Op::Reopen => {
                    drop(spool);
                    (spool, stats) = open(dir.path(), o);
                    truncations = 0;
                }
                Op::TruncateTail(k) => {
                    let Some(len) = last_len.take() else { continue };
                    drop(spool);
                    let seg = last_segment(dir.path());
                    let size = fs::metadata(&seg).unwrap().len() as usize;
                    let cut = 1 + k % len;
                    fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len((size - cut) as u64).unwrap();
                    (spool, stats) = open(dir.path(), o);
                    truncations = u64::from(cut < len);
                    let lost = next_seq - 1;
                    if queue.back().is_some_and(|(s, _)| *s == lost) {
                        queue.pop_back();
                    }
                    next_seq = lost.max(acked + 1);
                }
            }
            prop_assert_eq!(spool.pending(), queue.len() as u64);
            prop_assert_eq!(stats.spool_truncations.load(std::sync::atomic::Ordering::Relaxed), truncations);
            prop_assert_eq!(stats.dropped_batches.load(std::sync::atomic::Ordering::Relaxed), 0);
        }
        let got: Vec<u64> = drain(&mut spool);
        prop_assert_eq!(got, queue.iter().map(|(s, _)| *s).collect::<Vec<_>>());
    }
}
