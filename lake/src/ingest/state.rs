//! Small durable state of the lake: which batches are committed to Parquet and the next
//! flush number. Written atomically (temp, fsync, rename, fsync dir) as part of each
//! flush commit, so after any crash it describes exactly the Parquet files that exist.
//!
//! # Which batch ids are remembered
//!
//! A batch is a duplicate only if **its exact id was stored**. Per `(node, epoch)` the
//! lake keeps the stored seqs as sorted, disjoint ranges (`[[1, 4], [6, 900]]`): a
//! collector ships its batches in `seq` order, so an epoch is one range, plus one more
//! per hole — a batch the lake refused (400: kept in the collector's `rejected/`), or
//! records a full spool dropped. A seq inside a hole was never stored, so sending it
//! again (`lake-collector replay-rejected`, a restored snapshot, a hand-made retry)
//! stores it; a seq inside a range is acknowledged again without storing twice, also
//! after restarts (WAL replay skips exactly the ids the committed state holds).
//!
//! Senders make epochs that never collide: a collector's spool takes a random 64-bit
//! epoch each time it is opened (a cloned VM or a restored snapshot opens its copy and
//! gets its own), `lake ingest` one per run; the lake's own writers (`_otlp`,
//! `_alerts`) one above every epoch they remember. A retry keeps its id, because the
//! record carries its epoch in the spool.
//!
//! The state is bounded: at most [`EPOCHS_PER_NODE`] epochs per node, the least recently
//! stored forgotten first (a sender only ever retries its newest epochs: a spool ships
//! its records oldest first, so an epoch's retries come before the next epoch's first
//! batch), and at most [`RANGES_PER_EPOCH`] ranges per epoch, the oldest hole filled
//! (treated as stored) first. Forgetting can only make a very old retry be stored twice,
//! never drop a batch that was not stored.
//!
//! Format 1 (`{"v1": …}`, a high-water mark per epoch) is still read: a mark `m` becomes
//! the range `[0, m]`, which is what it meant.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use lake_format::BatchId;

/// Epochs remembered per node, the least recently stored forgotten first. A collector
/// starts a new epoch each time it opens its spool (at every start), `lake ingest` at
/// every run.
pub const EPOCHS_PER_NODE: usize = 32;
/// Seq ranges remembered per epoch: one, plus one per hole (a refused batch, records a
/// full spool dropped). Past it the oldest hole is taken as stored.
pub const RANGES_PER_EPOCH: usize = 64;

/// The persisted state, versioned so later formats can migrate it. Externally tagged
/// (`{"v2": {...}}`): an internally tagged enum would lose the integer map keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VersionedState {
    /// First format: a high-water mark per (node, epoch). Read, never written.
    V1(StateV1),
    /// Exact seq ranges per (node, epoch), epochs in order of use.
    V2(State),
}

impl VersionedState {
    /// The state in the current format.
    pub fn current(&self) -> State {
        match self {
            VersionedState::V1(old) => old.upgrade(),
            VersionedState::V2(s) => s.clone(),
        }
    }
}

impl From<State> for VersionedState {
    fn from(s: State) -> Self {
        VersionedState::V2(s)
    }
}

/// Format 1 of the state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateV1 {
    /// Number the next flush will use in its file names.
    pub next_flush: u64,
    /// node → epoch → highest committed seq (every seq at or below it counted as stored).
    pub committed: BTreeMap<String, BTreeMap<u64, u64>>,
}

impl StateV1 {
    /// A mark `m` meant "every seq up to `m`": the range `[0, m]`. Its epochs were unix
    /// times, so ascending is also the order of use.
    fn upgrade(&self) -> State {
        let committed = self
            .committed
            .iter()
            .map(|(node, epochs)| {
                let mut list: Vec<EpochSeqs> =
                    epochs.iter().map(|(&epoch, &hwm)| EpochSeqs { epoch, seqs: vec![(0, hwm)] }).collect();
                let excess = list.len().saturating_sub(EPOCHS_PER_NODE);
                list.drain(..excess);
                (node.clone(), list)
            })
            .collect();
        State { next_flush: self.next_flush, committed }
    }
}

/// node → its epochs, the least recently stored first.
pub type Committed = BTreeMap<String, Vec<EpochSeqs>>;

/// The seqs stored of one epoch of a node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EpochSeqs {
    /// The sender's epoch.
    pub epoch: u64,
    /// Sorted, disjoint, non-adjacent inclusive ranges `[first, last]` of stored seqs.
    pub seqs: Vec<(u64, u64)>,
}

impl EpochSeqs {
    fn contains(&self, seq: u64) -> bool {
        let i = self.seqs.partition_point(|r| r.1 < seq);
        self.seqs.get(i).is_some_and(|r| r.0 <= seq)
    }

    /// Adds `seq`, merging ranges it joins; past [`RANGES_PER_EPOCH`] the oldest hole is
    /// filled.
    fn insert(&mut self, seq: u64) {
        let seqs = &mut self.seqs;
        // The common case: the next seq of the newest range.
        if let Some(last) = seqs.last_mut() {
            if last.1.checked_add(1) == Some(seq) {
                last.1 = seq;
                return;
            }
        }
        let i = seqs.partition_point(|r| r.1 < seq);
        if seqs.get(i).is_some_and(|r| r.0 <= seq) {
            return;
        }
        let joins_prev = i > 0 && seqs[i - 1].1.checked_add(1) == Some(seq);
        let joins_next = seqs.get(i).is_some_and(|r| seq.checked_add(1) == Some(r.0));
        match (joins_prev, joins_next) {
            (true, true) => {
                seqs[i - 1].1 = seqs[i].1;
                seqs.remove(i);
            }
            (true, false) => seqs[i - 1].1 = seq,
            (false, true) => seqs[i].0 = seq,
            (false, false) => seqs.insert(i, (seq, seq)),
        }
        while seqs.len() > RANGES_PER_EPOCH {
            seqs[0].1 = seqs[1].1;
            seqs.remove(1);
        }
    }
}

/// State as of the last committed flush.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// Number the next flush will use in its file names.
    pub next_flush: u64,
    /// Batch ids stored, per node and epoch.
    pub committed: Committed,
}

impl State {
    /// Whether exactly this batch id was stored.
    pub fn contains(&self, id: &BatchId) -> bool {
        self.committed
            .get(&id.node)
            .and_then(|epochs| epochs.iter().rev().find(|e| e.epoch == id.epoch))
            .is_some_and(|e| e.contains(id.seq))
    }

    /// Remembers the batch id; its epoch becomes its node's most recent, and the least
    /// recent epochs past [`EPOCHS_PER_NODE`] are forgotten.
    pub fn record(&mut self, id: &BatchId) {
        let epochs = self.committed.entry(id.node.clone()).or_default();
        match epochs.iter().rposition(|e| e.epoch == id.epoch) {
            Some(i) if i + 1 == epochs.len() => {}
            Some(i) => {
                let e = epochs.remove(i);
                epochs.push(e);
            }
            None => {
                epochs.push(EpochSeqs { epoch: id.epoch, seqs: Vec::new() });
                if epochs.len() > EPOCHS_PER_NODE {
                    epochs.remove(0);
                }
            }
        }
        if let Some(e) = epochs.last_mut() {
            e.insert(id.seq);
        }
    }

    /// node → epoch → highest seq stored.
    pub fn marks(&self) -> BTreeMap<String, BTreeMap<u64, u64>> {
        self.committed
            .iter()
            .map(|(node, epochs)| {
                let marks = epochs.iter().filter_map(|e| e.seqs.last().map(|r| (e.epoch, r.1))).collect();
                (node.clone(), marks)
            })
            .collect()
    }

    /// Reads the state file (either format); a missing file is the empty state.
    pub fn load(path: &Path) -> io::Result<State> {
        match fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<VersionedState>(&bytes) {
                Ok(v) => Ok(v.current()),
                Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the state file atomically, in the current format.
    pub fn store(&self, path: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&VersionedState::V2(self.clone())).map_err(io::Error::other)?;
        lake_format::durable::write_atomic(path, &bytes)
    }
}

/// Batch ids seen by this process: committed, logged in the WAL, or being ingested now.
#[derive(Debug, Default)]
pub struct Batches {
    inner: Mutex<BatchesInner>,
}

#[derive(Debug, Default)]
struct BatchesInner {
    /// Committed to Parquet or durable in the WAL.
    seen: State,
    in_flight: HashSet<BatchId>,
}

/// What to do with an incoming batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Not seen: store it, then call [`Batches::logged`] (or [`Batches::release`] on failure).
    New,
    /// Already stored: acknowledge without storing.
    Duplicate,
    /// The same batch is being stored by another request right now: ask the sender to retry.
    InFlight,
}

impl Batches {
    /// Starts from the committed state plus the batches replayed from the WAL.
    pub fn new(seen: State) -> Self {
        Batches { inner: Mutex::new(BatchesInner { seen, in_flight: HashSet::new() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BatchesInner> {
        // A panic while holding this lock cannot leave the maps half-updated: every
        // critical section is a single insert or remove.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides whether a batch is new, reserving it if so.
    pub fn admit(&self, id: &BatchId) -> Admission {
        let mut g = self.lock();
        if g.seen.contains(id) {
            Admission::Duplicate
        } else if !g.in_flight.insert(id.clone()) {
            Admission::InFlight
        } else {
            Admission::New
        }
    }

    /// The batch is durable in the WAL.
    pub fn logged(&self, id: &BatchId) {
        let mut g = self.lock();
        g.in_flight.remove(id);
        g.seen.record(id);
    }

    /// Storing the batch failed; a retry may try again.
    pub fn release(&self, id: &BatchId) {
        self.lock().in_flight.remove(id);
    }

    /// Every logged batch id (taken when a flush starts: they are exactly the batches
    /// that flush commits, plus earlier ones).
    pub fn committed(&self) -> Committed {
        self.lock().seen.committed.clone()
    }

    /// node → epoch → highest seq logged (to pick an epoch above every one in use).
    pub fn marks(&self) -> BTreeMap<String, BTreeMap<u64, u64>> {
        self.lock().seen.marks()
    }
}

/// A flush's commit record: where its staged files go and the state after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// (staged file, final path), relative to the data directory.
    pub moves: Vec<(PathBuf, PathBuf)>,
    /// State once the flush is applied.
    pub state: VersionedState,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> BatchId {
        s.parse().unwrap()
    }

    #[test]
    fn admission() {
        let b = Batches::new(State::default());
        assert_eq!(b.admit(&id("n/1/1")), Admission::New);
        assert_eq!(b.admit(&id("n/1/1")), Admission::InFlight);
        b.logged(&id("n/1/1"));
        assert_eq!(b.admit(&id("n/1/1")), Admission::Duplicate);
        assert_eq!(b.admit(&id("n/2/1")), Admission::New);
        b.release(&id("n/2/1"));
        assert_eq!(b.admit(&id("n/2/1")), Admission::New);
    }

    #[test]
    fn state_round_trips_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/lake.json");
        assert_eq!(State::load(&path).unwrap(), State::default());
        let mut s = State { next_flush: 9, ..Default::default() };
        for epoch in 0..(EPOCHS_PER_NODE as u64 + 20) {
            s.record(&BatchId { node: "n".into(), epoch, seq: 5 });
        }
        s.store(&path).unwrap();
        let back = State::load(&path).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.committed["n"].len(), EPOCHS_PER_NODE);
        let newest = EPOCHS_PER_NODE as u64 + 19;
        assert!(back.contains(&id(&format!("n/{newest}/5"))) && !back.contains(&id(&format!("n/{newest}/6"))));
        assert!(!back.contains(&id("n/0/5")), "the least recent epoch is forgotten");
        fs::write(&path, b"{not json").unwrap();
        assert!(State::load(&path).is_err());
    }

    /// The issue's re-sent batches: a seq below the newest one that was never stored
    /// (refused, then replayed; a restored spool) is new, not a duplicate.
    #[test]
    fn only_exact_ids_are_duplicates() {
        let b = Batches::new(State::default());
        for seq in [1, 2, 4, 5] {
            assert_eq!(b.admit(&id(&format!("n/7/{seq}"))), Admission::New);
            b.logged(&id(&format!("n/7/{seq}")));
        }
        assert_eq!(b.admit(&id("n/7/5")), Admission::Duplicate);
        assert_eq!(b.admit(&id("n/7/1")), Admission::Duplicate);
        assert_eq!(b.admit(&id("n/7/3")), Admission::New, "3 was refused, never stored");
        b.logged(&id("n/7/3"));
        assert_eq!(b.admit(&id("n/7/3")), Admission::Duplicate);
        assert_eq!(b.committed()["n"][0].seqs, vec![(1, 5)], "the hole closed");
        assert_eq!(b.admit(&id("n/7/6")), Admission::New);
        assert_eq!(b.marks()["n"][&7], 5);
    }

    #[test]
    fn ranges_merge_and_stay_bounded() {
        let mut e = EpochSeqs { epoch: 1, seqs: Vec::new() };
        for seq in [10, 12, 11, 14, 9, 20, 21, 13] {
            e.insert(seq);
        }
        assert_eq!(e.seqs, vec![(9, 14), (20, 21)]);
        e.insert(u64::MAX);
        e.insert(u64::MAX);
        assert_eq!(e.seqs.last(), Some(&(u64::MAX, u64::MAX)));
        // Every other seq: one range each, bounded by filling the oldest holes.
        let mut e = EpochSeqs { epoch: 1, seqs: Vec::new() };
        for seq in (0..1000).map(|i| i * 2) {
            e.insert(seq);
        }
        assert_eq!(e.seqs.len(), RANGES_PER_EPOCH);
        assert!(e.contains(1998) && !e.contains(1997), "recent holes are exact");
        assert!(e.contains(1), "the oldest holes were filled");
    }

    /// Epochs are forgotten by use, not by value: random epochs have no order.
    #[test]
    fn the_least_recently_used_epoch_is_forgotten() {
        let mut s = State::default();
        s.record(&id("n/18446744073709551615/1"));
        for epoch in 1..EPOCHS_PER_NODE as u64 {
            s.record(&BatchId { node: "n".into(), epoch, seq: 1 });
        }
        // The big epoch is used again: now 1 is the least recent.
        s.record(&id("n/18446744073709551615/2"));
        s.record(&id("n/5000/1"));
        assert!(s.contains(&id("n/18446744073709551615/2")));
        assert!(!s.contains(&id("n/1/1")));
        assert!(s.contains(&id("n/2/1")));
    }

    /// A lake written by format 1 keeps its marks: everything up to a mark is stored.
    #[test]
    fn format_1_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lake.json");
        fs::write(&path, br#"{"v1": {"next_flush": 4, "committed": {"n": {"1700000000": 7, "1700000100": 2}}}}"#)
            .unwrap();
        let s = State::load(&path).unwrap();
        assert_eq!(s.next_flush, 4);
        assert!(s.contains(&id("n/1700000000/7")) && s.contains(&id("n/1700000000/1")));
        assert!(!s.contains(&id("n/1700000000/8")));
        assert_eq!(s.committed["n"].last().unwrap().epoch, 1700000100);
        s.store(&path).unwrap();
        assert!(fs::read_to_string(&path).unwrap().contains("\"v2\""));
        assert_eq!(State::load(&path).unwrap(), s);
    }
}
