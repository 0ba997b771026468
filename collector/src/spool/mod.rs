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
//! lake remembers exact ids per epoch (`lake/src/ingest/state.rs`), so a batch is a duplicate
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

mod ack;
mod handle;
mod queue;
mod recovery;
mod salvage;
pub(crate) mod segment;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lake_format::durable;

pub use handle::SpoolHandle;
pub use queue::Spool;
pub use recovery::read_states;
pub use segment::Record;

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

fn sync_dir(dir: &Path) -> Result<()> {
    durable::sync_dir(dir).map_err(io_err(dir))
}

#[cfg(test)]
mod tests;
