//! The spool: an append-only on-disk queue of encoded batches between the sources and the
//! shipper, and the positions (source states) of the sources that wrote them. A batch is
//! durable once [`SpoolHandle::append_group`] returns, and leaves the spool only when the
//! lake acknowledged it (or, for droppable data only, when the size bound dropped it,
//! counted).
//!
//! # Layout
//!
//! ```text
//! <data_dir>/spool/
//!   ack                          {"version":2,"acked":<seq>,"states":{<source>:{"seq":…,"state":"<json>"}}}
//!   00000000000000000001.seg     segment: records with seq 1, 2, ... (name = first seq)
//!   00000000000000000153.seg
//! ```
//!
//! A record is `magic | payload length | crc32(payload) | payload`, the payload holding
//! the epoch, the seq, flags, the table name, an optional source state and the Arrow IPC
//! body (see [`segment`]). The magic is `LKS2`; format 1 (`LKS1`, ack file `v1 <seq>`) is
//! not read, nothing was deployed with it.
//!
//! # Batch ids
//!
//! A record's batch id is `<node>/<epoch>/<seq>`, both numbers stored in the record, so
//! a retry (after a lost answer, a crash, a restart) sends the same id and the lake
//! acknowledges it without storing it twice. The epoch is 64 random bits drawn **every
//! time the spool is opened** and carried by the records appended meanwhile. A copy of
//! the spool directory — a cloned VM, a restored snapshot, a backup put back — therefore
//! sends the records it shares with the original under the original's ids (the same
//! data: stored once), and everything it appends afterwards under an epoch of its own,
//! never under ids the original used for other rows. (Earlier versions fixed the epoch
//! at the spool's creation, in an `epoch` file, which every copy shared: the lake took
//! the copy's new batches for duplicates and dropped them. That file is removed.) The
//! lake remembers exact ids per epoch (`lake/src/state.rs`), so a batch is a duplicate
//! only when its own id was stored.
//!
//! # Groups and source states
//!
//! An append is a *group*: the records of one read batch of a source (one per table) and
//! the source's new position, its *state* (opaque JSON: a journald cursor, tailed files
//! and offsets). Every record but the last carries the flag "group continues"; the last
//! carries the state. A group is written with one `write` and one `fsync`, and never
//! split across segments. So the rows and the position that covers them are durable
//! together or not at all: a source that resumes from [`Spool::source_state`] re-reads
//! exactly what is not in the spool, and a `kill -9` anywhere spools nothing twice.
//!
//! A group with a state but no records (a source read input that yielded no rows, yet its
//! position moved) is not written to a segment: its state is written to the `ack` file
//! directly, with the seq of the last record given out. It costs no seq, so the lake sees
//! no gap and the shipper has nothing to skip.
//!
//! The spool keeps the newest state of every source in memory. The `ack` file holds the
//! acknowledged seq and those states, and is rewritten (temp, fsync, rename, directory
//! fsync) before any segment is deleted, so a state outlives the records that carried it.
//! On open, the state of a source is the one with the highest seq among the `ack` file and
//! the records scanned; on a tie the `ack` file wins (it was written later).
//!
//! # Held and droppable records
//!
//! A record appended with [`OnFull::Reject`] is *held*: its source can pause and keeps its
//! position, so the size bound never drops it. One appended with [`OnFull::DropOldest`] is
//! *droppable* (samples that exist only now: metrics, probes). When full, a droppable
//! append deletes the oldest segments only while none of their unacknowledged records is
//! held; if the oldest one holds held records, the droppable group itself is dropped
//! ([`SpoolError::Dropped`]). Either way every dropped record counts in
//! `dropped_batches`. A held append on a full spool deletes nothing and gets
//! [`SpoolError::Full`].
//!
//! # Invariants
//!
//! - Seqs are given out in order, from 1, one per record; inside a segment they are
//!   contiguous from the segment's name, so record `n` of a segment has seq `name + n`.
//! - An append writes its group and `fsync`s the segment (`sync_data`) before it returns;
//!   a new segment file also `fsync`s the directory so the file itself survives.
//! - `ack` is written to a temporary file, `fsync`ed, renamed over the old
//!   one, and the directory `fsync`ed: it is either the old or the new value.
//! - The ack (with the states) is persisted before any segment is deleted, so a crash can
//!   only resend an already acknowledged batch (the lake deduplicates by batch id), never
//!   lose one, and never lose a state.
//! - Otherwise an ack is persisted at most every [`ACK_PERSIST_EVERY`] (and when the
//!   spool is dropped): rewriting the `ack` file costs two fsyncs, and losing an ack in a
//!   crash only makes the shipper send the batches of that last second again, which the
//!   lake acknowledges as duplicates. Records and states are never deferred: an append is
//!   durable when it returns.
//! - Only the last segment is appended to. Others are deleted once every record in them
//!   is acknowledged, or when the size bound drops them (droppable records only), oldest
//!   first.
//! - On open, every segment is read and checked (magic, length, CRC, expected seq, group
//!   complete). In the last segment, at the first bad record, or at a group the file ends
//!   inside, the file is truncated back to the first record of that group (a torn tail
//!   after a crash): a group is all or nothing. What precedes it stays. Each truncation
//!   is logged and counted. Any other segment was written whole and fsynced before the
//!   next one began, so a bad record there is damage, not a torn write: the intact
//!   records after it are salvaged by their framing, and what was lost is logged with
//!   the file, byte range and seqs, and counted ([`salvage`]).
//! - The next seq is the larger of "one past the last record" and "one past the ack",
//!   so a batch id that reached the lake is never given to another batch.
//!
//! Memory use is one record at a time plus the states: the shipper reads the oldest
//! unacknowledged record from disk when it needs it, and the spool keeps only per-segment
//! counters and the newest state of each source.

mod salvage;
pub(crate) mod segment;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{debug, warn};

use segment::Read;
pub use segment::Record;

use crate::stats::Stats;

/// Written by versions whose epoch was fixed at the spool's creation; no longer used.
const LEGACY_EPOCH_FILE: &str = "epoch";
const ACK_FILE: &str = "ack";
const ACK_VERSION: u32 = 2;
const SEGMENT_EXT: &str = "seg";
/// At most one warning per this long about droppable appends dropped for held data.
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);
/// Longest time an ack stays in memory only, when no segment is deleted meanwhile. A
/// crash resends at most this much acknowledged data (deduplicated by the lake).
pub const ACK_PERSIST_EVERY: Duration = Duration::from_secs(1);

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool I/O on {}: {source}", path.display())]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The spool is at `max_size` and the caller asked not to drop older records.
    #[error("spool is full: {size} bytes used, a {needed}-byte group would pass max_size {max}")]
    Full {
        /// Bytes on disk now.
        size: u64,
        /// Size of the refused group.
        needed: u64,
        /// The bound.
        max: u64,
    },
    /// A droppable group did not fit and the oldest data is held: the group was dropped
    /// (counted in `dropped_batches`).
    #[error("spool is full of held data: a droppable group of {records} records was dropped")]
    Dropped {
        /// Records of the group.
        records: u64,
    },
    /// One group is larger than the whole spool may be.
    #[error("a {len}-byte group exceeds spool.max_size ({max} bytes)")]
    TooLarge {
        /// Size of the group.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The table name cannot be stored.
    #[error("invalid table name {0:?}")]
    Table(String),
    /// The source state cannot be stored.
    #[error("invalid state of source {source_name:?}: {reason}")]
    SourceState {
        /// The source.
        source_name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A state file (`epoch`, `ack`) holds something unexpected.
    #[error("invalid spool state file {}: {reason}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An ack for a seq that was never appended (a bug in the caller).
    #[error("ack of seq {seq}, but the last appended seq is {last}")]
    AckBeyondEnd {
        /// Seq acknowledged.
        seq: u64,
        /// Last seq given out.
        last: u64,
    },
    /// A previous operation panicked while holding the spool.
    #[error("spool lock poisoned by an earlier panic")]
    Poisoned,
    /// The blocking task running a spool operation failed.
    #[error("spool task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

type Result<T, E = SpoolError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

/// Bounds of the spool.
#[derive(Debug, Clone, Copy)]
pub struct SpoolOptions {
    /// Bound on the total size of segment files, in bytes.
    pub max_size: u64,
    /// Size past which the next group starts a new segment, in bytes.
    pub segment_size: u64,
}

/// What an append does when the spool would pass `max_size`; also whether its records
/// are held or droppable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// The records are droppable: delete the oldest segments while they hold only
    /// droppable unshipped records (counted as dropped), else drop this group. For data
    /// that cannot be fetched again but loses little by a gap (metrics, probes).
    DropOldest,
    /// The records are held: refuse with [`SpoolError::Full`], so a source that can hold
    /// its position pauses. Nothing is ever deleted to make room for them.
    Reject,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    count: u64,
    size: u64,
    /// Highest seq of a held record in the segment; 0 when none is.
    last_held: u64,
}

impl Segment {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.count
    }
}

/// The newest state of a source and the seq it was saved with.
#[derive(Debug, Clone)]
struct SavedState {
    seq: u64,
    json: Vec<u8>,
    /// The state as the `ack` file holds it (`{"seq":…,"state":"…"}`), rendered by the
    /// first write that needs it: a large state that rarely changes (inventory's package
    /// list) is escaped once, not at every rewrite of the `ack` file.
    rendered: OnceLock<String>,
}

impl PartialEq for SavedState {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq && self.json == other.json
    }
}

impl Eq for SavedState {}

impl SavedState {
    fn new(seq: u64, json: Vec<u8>) -> SavedState {
        SavedState { seq, json, rendered: OnceLock::new() }
    }

    fn rendered(&self) -> &str {
        self.rendered.get_or_init(|| {
            let state = AckStateRef {
                seq: self.seq,
                // Checked UTF-8 on append; the ack file never holds anything else.
                state: &String::from_utf8_lossy(&self.json),
            };
            serde_json::to_string(&state).expect("a struct of a number and a string serializes")
        })
    }
}

/// Where the record with `seq` starts, remembered so reading in order does not rescan.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    seq: u64,
    segment: u64,
    offset: u64,
}

/// The `ack` file, version 2.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckFile {
    version: u32,
    acked: u64,
    #[serde(default)]
    states: BTreeMap<String, AckState>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckState {
    seq: u64,
    /// The source's JSON, kept as a string so it round-trips byte for byte.
    state: String,
}

/// [`AckState`] borrowed, to render it.
#[derive(Serialize)]
struct AckStateRef<'a> {
    seq: u64,
    state: &'a str,
}

/// The spool, synchronous. Use it through [`SpoolHandle`] from async code.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    epoch: u64,
    opts: SpoolOptions,
    /// Oldest first.
    segments: VecDeque<Segment>,
    /// Append handle of the last segment; `None` means the next append starts a segment.
    active: Option<File>,
    acked: u64,
    /// The acked seq the `ack` file holds (at most `acked`).
    acked_on_disk: u64,
    /// When the `ack` file was last written.
    ack_written: Option<Instant>,
    next_seq: u64,
    cursor: Option<Cursor>,
    reader: Option<(u64, File)>,
    /// Newest state of every source.
    states: BTreeMap<String, SavedState>,
    /// `states` holds something the `ack` file does not.
    states_dirty: bool,
    last_drop_warn: Option<Instant>,
    stats: Arc<Stats>,
}

impl Spool {
    /// Opens the spool in `dir`, creating it on first use, draws the epoch of this open,
    /// and recovers from a crash: torn tails and unfinished groups are truncated, damaged
    /// inner segments salvaged, fully acknowledged segments deleted.
    pub fn open(dir: &Path, opts: SpoolOptions, stats: Arc<Stats>) -> Result<Spool> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let epoch = new_epoch(dir);
        let (acked, mut states) = read_ack(dir)?;

        let mut segments = VecDeque::new();
        let mut states_dirty = false;
        let names = segment_names(dir, true)?;
        for (i, &first_seq) in names.iter().enumerate() {
            // Only the last segment can end in a torn write; damage anywhere else is
            // salvaged around (see the module docs).
            let recovered = match names.get(i + 1) {
                None => vec![recover_segment(dir, first_seq, &stats)?],
                Some(&next_first) => salvage::recover_inner(dir, first_seq, next_first, acked, &stats)?,
            };
            for (segment, found) in recovered {
                segments.push_back(segment);
                for (source, saved) in found {
                    states_dirty |= merge_state(&mut states, source, saved);
                }
            }
        }

        let mut spool = Spool {
            dir: dir.to_path_buf(),
            epoch,
            opts,
            segments,
            active: None,
            acked,
            acked_on_disk: acked,
            ack_written: None,
            next_seq: 1,
            cursor: None,
            reader: None,
            states,
            states_dirty,
            last_drop_warn: None,
            stats,
        };
        let from_segments = spool.segments.back().map_or(1, Segment::end_seq);
        spool.next_seq = from_segments.max(acked + 1);

        // Append to the last segment only if the seqs continue it; otherwise start anew.
        if let Some(last) = spool.segments.back() {
            if last.end_seq() == spool.next_seq {
                let path = spool.segment_path(last.first_seq);
                let file = OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
                spool.active = Some(file);
            } else if last.count == 0 {
                let path = spool.segment_path(last.first_seq);
                fs::remove_file(&path).map_err(io_err(&path))?;
                spool.segments.pop_back();
            }
        }
        spool.delete_acked_segments()?;
        spool.update_gauges();
        debug!(dir = %dir.display(), epoch, acked, next_seq = spool.next_seq, segments = spool.segments.len(), sources = spool.states.len(), "spool open");
        Ok(spool)
    }

    /// The epoch of the records this open appends (part of their batch ids).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The newest state saved by `source`, if it ever saved one.
    pub fn source_state(&self, source: &str) -> Option<&[u8]> {
        self.states.get(source).map(|s| s.json.as_slice())
    }

    /// Appends one droppable or held record without a state; returns its seq.
    pub fn append(&mut self, table: &str, body: &[u8], on_full: OnFull) -> Result<u64> {
        let seqs = self.append_records(&[(table, body)], None, on_full)?;
        Ok(seqs[0])
    }

    /// Appends a group: every record of `records` (`(table, body)`) and, with the last one,
    /// the new `state` of a source (`(source, json)`), all durable together or not at
    /// all. Returns the seqs of the records. A group without records but with a state
    /// saves the state in the `ack` file and returns no seq.
    pub fn append_group(
        &mut self,
        records: Vec<(String, Vec<u8>)>,
        state: Option<(String, Vec<u8>)>,
        on_full: OnFull,
    ) -> Result<Vec<u64>> {
        let refs: Vec<(&str, &[u8])> = records.iter().map(|(t, b)| (t.as_str(), b.as_slice())).collect();
        let state = state.as_ref().map(|(s, j)| (s.as_str(), j.as_slice()));
        self.append_records(&refs, state, on_full)
    }

    fn append_records(
        &mut self,
        records: &[(&str, &[u8])],
        state: Option<(&str, &[u8])>,
        on_full: OnFull,
    ) -> Result<Vec<u64>> {
        for (table, _) in records {
            if table.is_empty() || table.len() > 255 {
                return Err(SpoolError::Table((*table).to_string()));
            }
        }
        if let Some((source, json)) = state {
            check_state(source, json)?;
        }
        if records.is_empty() {
            if let Some((source, json)) = state {
                self.save_state_only(source, json)?;
            }
            return Ok(Vec::new());
        }

        let n = records.len();
        let last_state = |i: usize| if i + 1 == n { state } else { None };
        let len: u64 =
            records.iter().enumerate().map(|(i, (t, b))| segment::encoded_len(t, b.len(), last_state(i))).sum();
        let max = self.opts.max_size;
        if len > max {
            return Err(SpoolError::TooLarge { len, max });
        }
        while self.size() + len > max {
            match on_full {
                OnFull::Reject => return Err(SpoolError::Full { size: self.size(), needed: len, max }),
                OnFull::DropOldest => {
                    if !self.drop_oldest()? {
                        self.count_dropped_group(n as u64, len);
                        return Err(SpoolError::Dropped { records: n as u64 });
                    }
                }
            }
        }

        let roll = match (&self.active, self.segments.back()) {
            (Some(_), Some(last)) => last.size > 0 && last.size + len > self.opts.segment_size,
            _ => true,
        };
        if roll {
            self.start_segment()?;
        }
        let held = on_full == OnFull::Reject;
        let mut bytes = Vec::with_capacity(len as usize);
        for (i, (table, body)) in records.iter().enumerate() {
            let mut flags = if held { segment::HELD } else { 0 };
            if i + 1 < n {
                flags |= segment::CONTINUES;
            }
            let seq = self.next_seq + i as u64;
            segment::encode_into(&mut bytes, self.epoch, seq, flags, table, body, last_state(i));
        }
        let (Some(file), Some(last)) = (self.active.as_mut(), self.segments.back_mut()) else {
            unreachable!("start_segment leaves an active segment");
        };
        let path = self.dir.join(segment_name(last.first_seq));
        let written = file.write_all(&bytes).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Cut the partial group off so the segment stays well-formed; if even that
            // fails, stop appending to it (open() truncates the tail later).
            if file.set_len(last.size).is_err() {
                self.active = None;
            }
            return Err(io_err(&path)(e));
        }
        let first = self.next_seq;
        self.next_seq += n as u64;
        last.count += n as u64;
        last.size += len;
        if held {
            last.last_held = self.next_seq - 1;
        }
        if let Some((source, json)) = state {
            let saved = SavedState::new(self.next_seq - 1, json.to_vec());
            self.states.insert(source.to_string(), saved);
            self.states_dirty = true;
        }
        self.update_gauges();
        Ok((first..self.next_seq).collect())
    }

    /// A state with no records: straight into the `ack` file, at the last seq given out.
    fn save_state_only(&mut self, source: &str, json: &[u8]) -> Result<()> {
        let saved = SavedState::new(self.next_seq - 1, json.to_vec());
        if self.states.get(source) == Some(&saved) {
            return Ok(());
        }
        let old = self.states.insert(source.to_string(), saved);
        if let Err(e) = self.write_ack_file() {
            // Not saved: the previous state stays the one in force.
            match old {
                Some(o) => self.states.insert(source.to_string(), o),
                None => self.states.remove(source),
            };
            return Err(e);
        }
        Ok(())
    }

    fn count_dropped_group(&mut self, records: u64, len: u64) {
        Stats::add(&self.stats.dropped_batches, records);
        let now = Instant::now();
        if self.last_drop_warn.is_none_or(|t| now.duration_since(t) >= DROP_WARN_EVERY) {
            self.last_drop_warn = Some(now);
            warn!(
                records,
                bytes = len,
                max_size = self.opts.max_size,
                "spool full of held (log) data: droppable records dropped"
            );
        }
    }

    /// The oldest record not yet acknowledged, read from disk.
    pub fn peek(&mut self) -> Result<Option<Record>> {
        loop {
            let target = self.acked + 1;
            let Some(seg) = self.segments.iter().find(|s| s.count > 0 && s.end_seq() > target) else {
                return Ok(None);
            };
            let (first_seq, seg_size) = (seg.first_seq, seg.size);
            // Records before `target` may have been dropped with their segment.
            let seq = target.max(first_seq);
            let path = self.segment_path(first_seq);
            let offset = match self.cursor {
                Some(c) if c.seq == seq && c.segment == first_seq => c.offset,
                _ => self.find_offset(first_seq, seq, seg_size)?,
            };
            let file = self.reader_for(first_seq)?;
            match segment::read_at(file, offset, seg_size).map_err(io_err(&path))? {
                Read::Record { len, record } if record.seq == seq => {
                    self.cursor = Some(Cursor { seq: seq + 1, segment: first_seq, offset: offset + len });
                    return Ok(Some(record));
                }
                other => {
                    // Damaged after open (the open scan verified it): skip the record,
                    // count it, and keep the queue moving.
                    warn!(path = %path.display(), seq, offset, found = ?other, "unreadable spool record skipped");
                    Stats::add(&self.stats.dropped_batches, 1);
                    self.acked = seq;
                    self.cursor = None;
                }
            }
        }
    }

    /// Marks every record up to `seq` as delivered and deletes segments that hold nothing
    /// else. The ack is persisted with the source states before a segment is deleted, and
    /// otherwise at most every [`ACK_PERSIST_EVERY`] (see the module docs). Acking a seq
    /// already acked or dropped is a no-op.
    pub fn ack(&mut self, seq: u64) -> Result<()> {
        if seq <= self.acked {
            return Ok(());
        }
        if seq >= self.next_seq {
            return Err(SpoolError::AckBeyondEnd { seq, last: self.next_seq - 1 });
        }
        let previous = self.acked;
        self.acked = seq;
        let due = self.ack_written.is_none_or(|t| t.elapsed() >= ACK_PERSIST_EVERY);
        if due {
            if let Err(e) = self.write_ack_file() {
                self.acked = previous;
                return Err(e);
            }
        }
        // Persists the ack first when it deletes a segment.
        self.delete_acked_segments()?;
        self.update_gauges();
        Ok(())
    }

    /// Writes an ack not persisted yet (see [`Spool::ack`]); the spool does it when
    /// dropped too. A no-op when the `ack` file is up to date.
    pub fn sync_ack(&mut self) -> Result<()> {
        if self.acked_on_disk < self.acked {
            self.write_ack_file()?;
        }
        Ok(())
    }

    /// Rewrites the `ack` file with the acked seq and every state.
    fn write_ack_file(&mut self) -> Result<()> {
        write_ack(&self.dir, self.acked, &self.states)?;
        self.acked_on_disk = self.acked;
        self.ack_written = Some(Instant::now());
        self.states_dirty = false;
        Ok(())
    }

    /// Bytes of segment files on disk.
    pub fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Records not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.segments.iter().map(|s| s.end_seq().saturating_sub(s.first_seq.max(self.acked + 1))).sum()
    }

    fn segment_path(&self, first_seq: u64) -> PathBuf {
        self.dir.join(segment_name(first_seq))
    }

    fn start_segment(&mut self) -> Result<()> {
        let path = self.segment_path(self.next_seq);
        // `create` rather than `create_new`: an empty file of that name can remain from a
        // crash between creating it and writing the first record.
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        file.set_len(0).map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push_back(Segment { first_seq: self.next_seq, count: 0, size: 0, last_held: 0 });
        self.active = Some(file);
        Ok(())
    }

    /// Writes the states and the ack to the `ack` file if it lacks some: called before
    /// deleting a segment, whose records may be the only copy of a state.
    fn persist_states(&mut self) -> Result<()> {
        if self.states_dirty || self.acked_on_disk < self.acked {
            self.write_ack_file()?;
        }
        Ok(())
    }

    /// Deletes the oldest segment (rolling first if it is the one being appended to) if
    /// none of its unacknowledged records is held; `false` when it holds one.
    fn drop_oldest(&mut self) -> Result<bool> {
        match self.segments.front() {
            Some(seg) if seg.last_held > self.acked => return Ok(false),
            Some(_) => {}
            None => return Ok(false),
        }
        self.persist_states()?;
        if self.segments.len() == 1 && self.active.is_some() {
            // Start the next segment before deleting the only one: its name keeps the
            // next seq across a crash, so no batch id (nor a state's seq) is given twice.
            self.start_segment()?;
        }
        let Some(seg) = self.segments.pop_front() else {
            return Ok(false);
        };
        let lost = seg.end_seq().saturating_sub(seg.first_seq.max(self.acked + 1));
        self.remove_segment_file(seg.first_seq)?;
        if lost > 0 {
            Stats::add(&self.stats.dropped_batches, lost);
            warn!(
                segment = seg.first_seq,
                records = lost,
                max_size = self.opts.max_size,
                "spool full: dropped the oldest unshipped droppable records"
            );
        }
        Ok(true)
    }

    fn delete_acked_segments(&mut self) -> Result<()> {
        loop {
            let deletable = match self.segments.front() {
                Some(first) => {
                    let is_active = self.segments.len() == 1 && self.active.is_some();
                    !is_active && first.end_seq() <= self.acked + 1
                }
                None => false,
            };
            if !deletable {
                return Ok(());
            }
            self.persist_states()?;
            if let Some(seg) = self.segments.pop_front() {
                self.remove_segment_file(seg.first_seq)?;
            }
        }
    }

    fn remove_segment_file(&mut self, first_seq: u64) -> Result<()> {
        if self.reader.as_ref().is_some_and(|(s, _)| *s == first_seq) {
            self.reader = None;
        }
        if self.cursor.is_some_and(|c| c.segment == first_seq) {
            self.cursor = None;
        }
        let path = self.segment_path(first_seq);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn reader_for(&mut self, first_seq: u64) -> Result<&File> {
        if self.reader.as_ref().is_none_or(|(s, _)| *s != first_seq) {
            let path = self.segment_path(first_seq);
            let file = File::open(&path).map_err(io_err(&path))?;
            self.reader = Some((first_seq, file));
        }
        match &self.reader {
            Some((_, f)) => Ok(f),
            None => unreachable!("reader set above"),
        }
    }

    /// Offset of `seq` in segment `first_seq`, walking record headers from the start.
    fn find_offset(&mut self, first_seq: u64, seq: u64, seg_size: u64) -> Result<u64> {
        let path = self.segment_path(first_seq);
        let file = self.reader_for(first_seq)?;
        let mut offset = 0;
        for _ in first_seq..seq {
            match segment::skip_at(file, offset, seg_size).map_err(io_err(&path))? {
                Ok(len) => offset += len,
                // Verified at open; reading the damaged record reports and skips it.
                Err(_) => break,
            }
        }
        Ok(offset)
    }

    fn update_gauges(&self) {
        Stats::set(&self.stats.spool_bytes, self.size());
        Stats::set(&self.stats.spool_records, self.pending());
    }
}

impl Drop for Spool {
    /// Persists an ack still in memory only, so a clean stop resends nothing.
    fn drop(&mut self) {
        if let Err(error) = self.sync_ack() {
            warn!(%error, "cannot persist the last ack; those batches are sent again on start");
        }
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{SEGMENT_EXT}")
}

/// Segment files of `dir` by first seq, in order; with `clean`, leftover `.tmp` files of
/// interrupted state writes are removed (the old file is authoritative).
fn segment_names(dir: &Path, clean: bool) -> Result<Vec<u64>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") {
            if clean {
                let _ = fs::remove_file(entry.path());
            }
            continue;
        }
        if let Some(first) = name.strip_suffix(".seg").and_then(|s| s.parse::<u64>().ok()) {
            names.push(first);
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// What a scan of one segment found.
#[derive(Debug, Default)]
struct Scan {
    /// Bytes of whole groups from the start.
    good_len: u64,
    /// Records in them.
    count: u64,
    /// Highest seq of a held record in them, 0 if none.
    last_held: u64,
    /// States carried by them, oldest first.
    states: Vec<(String, SavedState)>,
    /// Why the scan stopped before the end of the file.
    problem: Option<&'static str>,
}

/// Reads every record of a segment, keeping whole groups only.
fn scan_segment(file: &File, first_seq: u64, file_len: u64) -> io::Result<Scan> {
    let mut scan = Scan::default();
    // The group being read: its records, highest held seq and state so far.
    let (mut offset, mut count, mut held) = (0, 0, 0);
    let mut state = None;
    loop {
        match segment::read_at(file, offset, file_len)? {
            Read::End if count == scan.count => return Ok(scan),
            Read::End => {
                scan.problem = Some("file ends inside a group");
                return Ok(scan);
            }
            Read::Record { len, record } if record.seq == first_seq + count => {
                offset += len;
                count += 1;
                if record.held {
                    held = record.seq;
                }
                if let Some((source, json)) = record.state {
                    state = Some((source, SavedState::new(record.seq, json)));
                }
                if !record.continues {
                    scan.good_len = offset;
                    scan.count = count;
                    scan.last_held = scan.last_held.max(held);
                    scan.states.extend(state.take());
                }
            }
            Read::Record { .. } => {
                scan.problem = Some("seq out of order");
                return Ok(scan);
            }
            Read::Bad(why) => {
                scan.problem = Some(why);
                return Ok(scan);
            }
        }
    }
}

/// Scans one segment, truncating it back to the start of the first group that holds a
/// torn, damaged or out-of-sequence record, or that the file ends inside. Returns the
/// segment and the states its groups carry.
fn recover_segment(dir: &Path, first_seq: u64, stats: &Stats) -> Result<(Segment, Vec<(String, SavedState)>)> {
    let path = dir.join(segment_name(first_seq));
    let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_err(&path))?;
    let file_len = file.metadata().map_err(io_err(&path))?.len();
    let scan = scan_segment(&file, first_seq, file_len).map_err(io_err(&path))?;
    if let Some(reason) = scan.problem {
        warn!(
            path = %path.display(),
            offset = scan.good_len,
            bytes_cut = file_len - scan.good_len,
            reason,
            "spool segment truncated at its last whole group"
        );
        Stats::add(&stats.spool_truncations, 1);
        file.set_len(scan.good_len).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
    }
    let segment = Segment { first_seq, count: scan.count, size: scan.good_len, last_held: scan.last_held };
    Ok((segment, scan.states))
}

/// Keeps `saved` as the state of `source` if it is newer than the one known (a tie keeps
/// the known one: the `ack` file is merged first and was written later). Returns whether
/// it was kept.
fn merge_state(states: &mut BTreeMap<String, SavedState>, source: String, saved: SavedState) -> bool {
    match states.get(&source) {
        Some(known) if known.seq >= saved.seq => false,
        _ => {
            states.insert(source, saved);
            true
        }
    }
}

fn check_state(source: &str, json: &[u8]) -> Result<()> {
    let bad = |reason| SpoolError::SourceState { source_name: source.to_string(), reason };
    if source.is_empty() || source.len() > 255 {
        return Err(bad("the source name must have 1 to 255 bytes"));
    }
    if json.len() > u32::MAX as usize / 2 {
        return Err(bad("the state is too large"));
    }
    if std::str::from_utf8(json).is_err() {
        return Err(bad("the state is not UTF-8 (JSON)"));
    }
    Ok(())
}

/// The states of the sources saved in the spool in `dir`, without changing anything:
/// safe while a collector runs on it (a group being written is not seen yet). For tests
/// and inspection; a collector uses [`Spool::source_state`].
pub fn read_states(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    // Segments before the ack file: the ack file is rewritten with every state before a
    // segment is deleted, so a segment gone missing meanwhile has its states in there.
    let mut found = Vec::new();
    for first_seq in segment_names(dir, false)? {
        let path = dir.join(segment_name(first_seq));
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let len = file.metadata().map_err(io_err(&path))?.len();
        found.extend(scan_segment(&file, first_seq, len).map_err(io_err(&path))?.states);
    }
    let (_, mut states) = read_ack(dir)?;
    for (source, saved) in found {
        merge_state(&mut states, source, saved);
    }
    Ok(states.into_iter().map(|(k, v)| (k, v.json)).collect())
}

/// The epoch of the records this open appends: 64 random bits (never 0), new at every
/// open, so a copy of the spool (a cloned VM, a restored snapshot) opened elsewhere never
/// gives out a batch id the original gives out too. The `epoch` file of earlier versions
/// (unix seconds at creation, shared by every copy) is removed: records carry their own
/// epoch.
fn new_epoch(dir: &Path) -> u64 {
    let legacy = dir.join(LEGACY_EPOCH_FILE);
    match fs::remove_file(&legacy) {
        Ok(()) => debug!(path = %legacy.display(), "removed the epoch file of an older version"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            warn!(path = %legacy.display(), %error, "cannot remove the epoch file of an older version; it is not used")
        }
    }
    rand::random::<u64>().max(1)
}

/// The acknowledged seq and the source states of the `ack` file (none when missing).
fn read_ack(dir: &Path) -> Result<(u64, BTreeMap<String, SavedState>)> {
    let path = dir.join(ACK_FILE);
    let bytes = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, BTreeMap::new())),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let bad = |reason: String| SpoolError::State { path: path.clone(), reason };
    let file: AckFile = serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!("expected {{\"version\":{ACK_VERSION},...}} (an older spool format is not read): {e}"))
    })?;
    if file.version != ACK_VERSION {
        return Err(bad(format!("version {} is not supported", file.version)));
    }
    let states =
        file.states.into_iter().map(|(source, s)| (source, SavedState::new(s.seq, s.state.into_bytes()))).collect();
    Ok((file.acked, states))
}

/// Replaces the `ack` file atomically.
fn write_ack(dir: &Path, acked: u64, states: &BTreeMap<String, SavedState>) -> Result<()> {
    write_atomic(dir, ACK_FILE, &render_ack(acked, states))
}

/// The `ack` file's bytes: what serde_json writes for an [`AckFile`], assembled from each
/// state's cached rendering.
fn render_ack(acked: u64, states: &BTreeMap<String, SavedState>) -> Vec<u8> {
    let len: usize = states.iter().map(|(source, s)| source.len() + s.rendered().len() + 8).sum();
    let mut out = Vec::with_capacity(64 + len);
    out.extend_from_slice(format!("{{\"version\":{ACK_VERSION},\"acked\":{acked},\"states\":{{").as_bytes());
    for (i, (source, s)) in states.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, source).expect("writing a string to a Vec cannot fail");
        out.push(b':');
        out.extend_from_slice(s.rendered().as_bytes());
    }
    out.extend_from_slice(b"}}\n");
    out
}

/// Replaces `dir/name` with `bytes` so a crash leaves either the old or the new content.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// The spool shared between async tasks: every operation runs on the blocking pool with
/// the lock taken there, so no lock is ever held across an `.await`.
#[derive(Debug, Clone)]
pub struct SpoolHandle {
    inner: Arc<Mutex<Spool>>,
    notify: Arc<Notify>,
    epoch: u64,
}

impl SpoolHandle {
    /// Opens the spool in `dir` on the blocking pool.
    pub async fn open(dir: PathBuf, opts: SpoolOptions, stats: Arc<Stats>) -> Result<SpoolHandle> {
        let spool = tokio::task::spawn_blocking(move || Spool::open(&dir, opts, stats)).await??;
        Ok(Self::new(spool))
    }

    /// Wraps an open spool.
    pub fn new(spool: Spool) -> SpoolHandle {
        let epoch = spool.epoch();
        SpoolHandle { inner: Arc::new(Mutex::new(spool)), notify: Arc::new(Notify::new()), epoch }
    }

    /// The epoch of the records this open appends (part of their batch ids).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    async fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut Spool) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut spool = inner.lock().map_err(|_| SpoolError::Poisoned)?;
            f(&mut spool)
        })
        .await?
    }

    /// Appends durably and wakes the shipper; returns the seq.
    pub async fn append(&self, table: String, body: Vec<u8>, on_full: OnFull) -> Result<u64> {
        let seq = self.with(move |s| s.append(&table, &body, on_full)).await?;
        // notify_one keeps a permit when the shipper is not waiting yet: no lost wakeup.
        self.notify.notify_one();
        Ok(seq)
    }

    /// Appends a group (records and the source's new state, see [`Spool::append_group`])
    /// durably and wakes the shipper; returns the seqs of the records.
    pub async fn append_group(
        &self,
        records: Vec<(String, Vec<u8>)>,
        state: Option<(String, Vec<u8>)>,
        on_full: OnFull,
    ) -> Result<Vec<u64>> {
        let seqs = self.with(move |s| s.append_group(records, state, on_full)).await?;
        if !seqs.is_empty() {
            self.notify.notify_one();
        }
        Ok(seqs)
    }

    /// The newest state saved by `source`.
    pub async fn source_state(&self, source: &str) -> Result<Option<Vec<u8>>> {
        let source = source.to_string();
        self.with(move |s| Ok(s.source_state(&source).map(<[u8]>::to_vec))).await
    }

    /// The oldest unacknowledged record.
    pub async fn peek(&self) -> Result<Option<Record>> {
        self.with(Spool::peek).await
    }

    /// Waits for the oldest unacknowledged record.
    pub async fn next(&self) -> Result<Record> {
        loop {
            if let Some(r) = self.peek().await? {
                return Ok(r);
            }
            self.notify.notified().await;
        }
    }

    /// Acknowledges every record up to `seq`.
    pub async fn ack(&self, seq: u64) -> Result<()> {
        self.with(move |s| s.ack(seq)).await
    }

    /// Records not yet acknowledged.
    pub async fn pending(&self) -> Result<u64> {
        self.with(|s| Ok(s.pending())).await
    }
}

#[cfg(test)]
mod tests;
