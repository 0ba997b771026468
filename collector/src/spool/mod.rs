//! The spool: an append-only on-disk queue of encoded batches between the sources and the
//! shipper. A batch is durable once [`SpoolHandle::append`] returns, and leaves the spool
//! only when the lake acknowledged it (or the size bound dropped it, counted).
//!
//! # Layout
//!
//! ```text
//! <data_dir>/spool/
//!   epoch                        decimal unix seconds at creation; never rewritten
//!   ack                          "v1 <last acknowledged seq>\n"
//!   00000000000000000001.seg     segment: records with seq 1, 2, ... (name = first seq)
//!   00000000000000000153.seg
//! ```
//!
//! A record is `magic | payload length | crc32(payload) | payload`, the payload holding
//! the epoch, the seq, the table name and the Arrow IPC body (see [`segment`]).
//!
//! # Invariants
//!
//! - Seqs are given out in order, from 1, one per record; inside a segment they are
//!   contiguous from the segment's name, so record `n` of a segment has seq `name + n`.
//! - An append writes the record and `fsync`s the segment (`sync_data`) before it
//!   returns; a new segment file also `fsync`s the directory so the file itself survives.
//! - `epoch` and `ack` are written to a temporary file, `fsync`ed, renamed over the old
//!   one, and the directory `fsync`ed: they are either the old or the new value.
//! - The ack is persisted before any segment is deleted, so a crash can only resend an
//!   already acknowledged batch (the lake deduplicates by batch id), never lose one.
//! - Only the last segment is appended to. Others are deleted once every record in them
//!   is acknowledged, or when the size bound drops them, oldest first.
//! - On open, every segment is read and checked (magic, length, CRC, expected seq). At
//!   the first bad record the file is truncated there (a torn tail after a crash); what
//!   precedes it stays. Each truncation is logged and counted.
//! - The next seq is the larger of "one past the last record" and "one past the ack",
//!   so a batch id that reached the lake is never given to another batch.
//!
//! Memory use is one record at a time: the shipper reads the oldest unacknowledged record
//! from disk when it needs it, and the spool keeps only per-segment counters.

pub(crate) mod segment;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tracing::{debug, warn};

use segment::Read;
pub use segment::Record;

use crate::stats::Stats;

const EPOCH_FILE: &str = "epoch";
const ACK_FILE: &str = "ack";
const SEGMENT_EXT: &str = "seg";

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
    #[error("spool is full: {size} bytes used, a {needed}-byte record would pass max_size {max}")]
    Full {
        /// Bytes on disk now.
        size: u64,
        /// Size of the refused record.
        needed: u64,
        /// The bound.
        max: u64,
    },
    /// One record is larger than the whole spool may be.
    #[error("a {len}-byte record exceeds spool.max_size ({max} bytes)")]
    TooLarge {
        /// Size of the record.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The table name cannot be stored.
    #[error("invalid table name {0:?}")]
    Table(String),
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
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Bounds of the spool.
#[derive(Debug, Clone, Copy)]
pub struct SpoolOptions {
    /// Bound on the total size of segment files, in bytes.
    pub max_size: u64,
    /// Size past which the next record starts a new segment, in bytes.
    pub segment_size: u64,
}

/// What an append does when the spool would pass `max_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Delete the oldest segments, counting their unshipped records as dropped. For data
    /// that cannot be fetched again but loses little by a gap (metrics).
    DropOldest,
    /// Refuse with [`SpoolError::Full`], so a source that can hold its position pauses.
    Reject,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    count: u64,
    size: u64,
}

impl Segment {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.count
    }
}

/// Where the record with `seq` starts, remembered so reading in order does not rescan.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    seq: u64,
    segment: u64,
    offset: u64,
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
    next_seq: u64,
    cursor: Option<Cursor>,
    reader: Option<(u64, File)>,
    stats: Arc<Stats>,
}

impl Spool {
    /// Opens the spool in `dir`, creating it (and its epoch) on first use, and recovers
    /// from a crash: torn tails are truncated, fully acknowledged segments deleted.
    pub fn open(dir: &Path, opts: SpoolOptions, stats: Arc<Stats>) -> Result<Spool> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let epoch = read_or_create_epoch(dir)?;
        let acked = read_ack(dir)?;

        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                // A state write interrupted before its rename; the old file is authoritative.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            if let Some(first) = name
                .strip_suffix(".seg")
                .and_then(|s| s.parse::<u64>().ok())
            {
                names.push(first);
            }
        }
        names.sort_unstable();

        let mut segments = VecDeque::with_capacity(names.len());
        for first_seq in names {
            segments.push_back(recover_segment(dir, first_seq, &stats)?);
        }

        let mut spool = Spool {
            dir: dir.to_path_buf(),
            epoch,
            opts,
            segments,
            active: None,
            acked,
            next_seq: 1,
            cursor: None,
            reader: None,
            stats,
        };
        let from_segments = spool.segments.back().map_or(1, Segment::end_seq);
        spool.next_seq = from_segments.max(acked + 1);

        // Append to the last segment only if the seqs continue it; otherwise start anew.
        if let Some(last) = spool.segments.back() {
            if last.end_seq() == spool.next_seq {
                let path = spool.segment_path(last.first_seq);
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                spool.active = Some(file);
            } else if last.count == 0 {
                let path = spool.segment_path(last.first_seq);
                fs::remove_file(&path).map_err(io_err(&path))?;
                spool.segments.pop_back();
            }
        }
        spool.delete_acked_segments()?;
        spool.update_gauges();
        debug!(dir = %dir.display(), epoch, acked, next_seq = spool.next_seq, segments = spool.segments.len(), "spool open");
        Ok(spool)
    }

    /// The spool's generation, part of every batch id.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Appends a record and makes it durable; returns its seq.
    pub fn append(&mut self, table: &str, body: &[u8], on_full: OnFull) -> Result<u64> {
        if table.is_empty() || table.len() > 255 {
            return Err(SpoolError::Table(table.to_string()));
        }
        let len = segment::encoded_len(table, body.len());
        let max = self.opts.max_size;
        if len > max {
            return Err(SpoolError::TooLarge { len, max });
        }
        while self.size() + len > max {
            if on_full == OnFull::Reject {
                return Err(SpoolError::Full {
                    size: self.size(),
                    needed: len,
                    max,
                });
            }
            self.drop_oldest()?;
        }

        let roll = match (&self.active, self.segments.back()) {
            (Some(_), Some(last)) => last.size > 0 && last.size + len > self.opts.segment_size,
            _ => true,
        };
        if roll {
            self.start_segment()?;
        }
        let bytes = segment::encode(self.epoch, self.next_seq, table, body);
        let (Some(file), Some(last)) = (self.active.as_mut(), self.segments.back_mut()) else {
            unreachable!("start_segment leaves an active segment");
        };
        let path = self.dir.join(segment_name(last.first_seq));
        let written = file.write_all(&bytes).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Cut the partial record off so the segment stays well-formed; if even that
            // fails, stop appending to it (open() truncates the tail later).
            if file.set_len(last.size).is_err() {
                self.active = None;
            }
            return Err(io_err(&path)(e));
        }
        last.count += 1;
        last.size += len;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.update_gauges();
        Ok(seq)
    }

    /// The oldest record not yet acknowledged, read from disk.
    pub fn peek(&mut self) -> Result<Option<Record>> {
        loop {
            let target = self.acked + 1;
            let Some(seg) = self
                .segments
                .iter()
                .find(|s| s.count > 0 && s.end_seq() > target)
            else {
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
                    self.cursor = Some(Cursor {
                        seq: seq + 1,
                        segment: first_seq,
                        offset: offset + len,
                    });
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

    /// Marks every record up to `seq` as delivered, persists it, and deletes segments
    /// that hold nothing else. Acking a seq already acked or dropped is a no-op.
    pub fn ack(&mut self, seq: u64) -> Result<()> {
        if seq <= self.acked {
            return Ok(());
        }
        if seq >= self.next_seq {
            return Err(SpoolError::AckBeyondEnd {
                seq,
                last: self.next_seq - 1,
            });
        }
        write_atomic(&self.dir, ACK_FILE, format!("v1 {seq}\n").as_bytes())?;
        self.acked = seq;
        self.delete_acked_segments()?;
        self.update_gauges();
        Ok(())
    }

    /// Bytes of segment files on disk.
    pub fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Records not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.end_seq().saturating_sub(s.first_seq.max(self.acked + 1)))
            .sum()
    }

    fn segment_path(&self, first_seq: u64) -> PathBuf {
        self.dir.join(segment_name(first_seq))
    }

    fn start_segment(&mut self) -> Result<()> {
        let path = self.segment_path(self.next_seq);
        // `create` rather than `create_new`: an empty file of that name can remain from a
        // crash between creating it and writing the first record.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.set_len(0).map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push_back(Segment {
            first_seq: self.next_seq,
            count: 0,
            size: 0,
        });
        self.active = Some(file);
        Ok(())
    }

    /// Deletes the oldest segment (rolling first if it is the one being appended to).
    fn drop_oldest(&mut self) -> Result<()> {
        if self.segments.len() == 1 && self.active.is_some() {
            self.active = None;
        }
        let Some(seg) = self.segments.pop_front() else {
            return Ok(());
        };
        let lost = seg
            .end_seq()
            .saturating_sub(seg.first_seq.max(self.acked + 1));
        self.remove_segment_file(seg.first_seq)?;
        if lost > 0 {
            Stats::add(&self.stats.dropped_batches, lost);
            warn!(
                segment = seg.first_seq,
                records = lost,
                max_size = self.opts.max_size,
                "spool full: dropped the oldest unshipped records"
            );
        }
        Ok(())
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

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{SEGMENT_EXT}")
}

/// Scans one segment, truncating it at the first record that is torn, damaged or out of
/// sequence.
fn recover_segment(dir: &Path, first_seq: u64, stats: &Stats) -> Result<Segment> {
    let path = dir.join(segment_name(first_seq));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let file_len = file.metadata().map_err(io_err(&path))?.len();
    let mut offset = 0;
    let mut count = 0;
    loop {
        let problem = match segment::read_at(&file, offset, file_len).map_err(io_err(&path))? {
            Read::End => break,
            Read::Record { len, record } if record.seq == first_seq + count => {
                offset += len;
                count += 1;
                continue;
            }
            Read::Record { .. } => "seq out of order",
            Read::Bad(why) => why,
        };
        warn!(
            path = %path.display(),
            offset,
            bytes_cut = file_len - offset,
            reason = problem,
            "spool segment truncated at its last good record"
        );
        Stats::add(&stats.spool_truncations, 1);
        file.set_len(offset).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        break;
    }
    Ok(Segment {
        first_seq,
        count,
        size: offset,
    })
}

fn read_or_create_epoch(dir: &Path) -> Result<u64> {
    let path = dir.join(EPOCH_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| SpoolError::State {
            path: path.clone(),
            reason: format!("expected unix seconds, found {:?}", text.trim()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_secs().max(1));
            write_atomic(dir, EPOCH_FILE, format!("{epoch}\n").as_bytes())?;
            Ok(epoch)
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn read_ack(dir: &Path) -> Result<u64> {
    let path = dir.join(ACK_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let bad = |reason: String| SpoolError::State {
        path: path.clone(),
        reason,
    };
    match text.trim().split_once(' ') {
        Some(("v1", seq)) => seq
            .parse()
            .map_err(|_| bad(format!("seq {seq:?} is not a number"))),
        _ => Err(bad(format!(
            "expected \"v1 <seq>\", found {:?}",
            text.trim()
        ))),
    }
}

/// Replaces `dir/name` with `bytes` so a crash leaves either the old or the new content.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
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
        SpoolHandle {
            inner: Arc::new(Mutex::new(spool)),
            notify: Arc::new(Notify::new()),
            epoch,
        }
    }

    /// The spool's generation.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> Result<T> + Send + 'static,
    ) -> Result<T> {
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
