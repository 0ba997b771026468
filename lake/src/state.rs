//! Small durable state of the lake: which batches are committed to Parquet and the next
//! flush number. Written atomically (temp, fsync, rename, fsync dir) as part of each
//! flush commit, so after any crash it describes exactly the Parquet files that exist.
//!
//! Batch ids are remembered as a high-water mark per `(node, epoch)`: a collector ships
//! its batches one at a time in `seq` order, so every `seq` at or below the mark has been
//! stored. Only the newest [`EPOCHS_PER_NODE`] epochs of a node are kept, bounding the file.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use lake_format::BatchId;

/// Epochs remembered per node; a collector gets a new epoch only when its spool is recreated.
pub const EPOCHS_PER_NODE: usize = 8;

/// The persisted state, versioned so later formats can migrate it. Externally tagged
/// (`{"v1": {...}}`): an internally tagged enum would lose the integer map keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VersionedState {
    /// First format.
    V1(State),
}

/// State as of the last committed flush.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// Number the next flush will use in its file names.
    pub next_flush: u64,
    /// node → epoch → highest committed seq.
    pub committed: BTreeMap<String, BTreeMap<u64, u64>>,
}

impl State {
    /// Whether the batch is at or below its node's high-water mark.
    pub fn contains(&self, id: &BatchId) -> bool {
        self.committed.get(&id.node).and_then(|e| e.get(&id.epoch)).is_some_and(|hwm| id.seq <= *hwm)
    }

    /// Raises the mark for the batch's node and epoch, forgetting the oldest epochs.
    pub fn record(&mut self, id: &BatchId) {
        let epochs = self.committed.entry(id.node.clone()).or_default();
        let hwm = epochs.entry(id.epoch).or_insert(0);
        *hwm = (*hwm).max(id.seq);
        while epochs.len() > EPOCHS_PER_NODE {
            epochs.pop_first();
        }
    }

    /// Reads the state file; a missing file is the empty state.
    pub fn load(path: &Path) -> io::Result<State> {
        match fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(VersionedState::V1(s)) => Ok(s),
                Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the state file atomically.
    pub fn store(&self, path: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&VersionedState::V1(self.clone())).map_err(io::Error::other)?;
        write_atomic(path, &bytes)
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("path has no parent"))?;
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// fsyncs a directory so renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
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

    /// The marks of every logged batch (taken when a flush starts: they are exactly the
    /// batches that flush commits, plus earlier ones).
    pub fn marks(&self) -> BTreeMap<String, BTreeMap<u64, u64>> {
        self.lock().seen.committed.clone()
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
    fn high_water_marks_and_admission() {
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
        for epoch in 0..20 {
            s.record(&BatchId { node: "n".into(), epoch, seq: 5 });
        }
        s.store(&path).unwrap();
        let back = State::load(&path).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.committed["n"].len(), EPOCHS_PER_NODE);
        assert!(back.contains(&id("n/19/5")) && !back.contains(&id("n/19/6")));
        fs::write(&path, b"{not json").unwrap();
        assert!(State::load(&path).is_err());
    }
}
