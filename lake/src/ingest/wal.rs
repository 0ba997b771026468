//! The lake's write-ahead log: every accepted batch is here, fsynced, before the
//! collector gets its 200.
//!
//! # On disk
//! `<data>/wal/<seq:020>.wal`, a sequence of records:
//! ```text
//! magic u32 LE | payload length u32 LE | crc32 of payload u32 LE | payload
//! payload = table name length u8 | table name | batch id length u16 LE | batch id | Arrow IPC body
//! ```
//! # Invariants
//! - A record is acknowledged only after the `fdatasync` that covers it returned.
//! - Appends are group-committed: one writer thread drains every queued append, writes
//!   them, syncs once and answers them all, so many collectors share one fsync.
//! - A segment is deleted only after every row in it is in a committed Parquet file
//!   ([`Wal::rotate`] before a flush, [`Wal::remove_before`] after its commit).
//! - On open, a torn tail of the newest segment (short header, short payload, bad magic
//!   or CRC, with no intact record after it) is truncated at the last good record and
//!   counted; records before it are replayed. That is what a crash mid-append leaves.
//! - Anything else unreadable is damage to acknowledged records, and is *salvaged*, never
//!   dropped quietly: the records after it are found again by their framing and
//!   replayed, the damaged bytes are copied to `wal/corrupt/` and cut from the segment,
//!   an error names the file and byte range, `lake_wal_corrupt_bytes_total` counts them
//!   and `/health` reports it until the next start ([`Salvage`]).
//!
//! # Finding the next record after damage
//! When the header at the damaged offset still looks right (magic, a length that fits)
//! and an intact record starts exactly where it says it ends, only that record is
//! skipped: the damage was inside its payload. Otherwise the bytes are scanned for the
//! next offset holding a complete record (magic, length, CRC and layout all valid).
//! Trying the record's own boundary first matters: a scan that starts inside a payload
//! could take bytes a sender put in its body for a record.
//! The framing and this search are [`lake_format::durable::Frame`], shared with the
//! collector's spool; the WAL gives it its magic and bounds.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use lake_format::durable::{self, Frame, HEADER_LEN};
use tokio::sync::{mpsc, oneshot};

const MAGIC: u32 = 0x4C41_4B57; // "LAKW"
/// Largest payload a record may carry; a length beyond it means corruption.
const MAX_RECORD: usize = 1 << 30;
/// The WAL's framing (see the module docs); the payload decoder refuses what is too
/// short, so no lower bound is set here.
const FRAME: Frame = Frame::new(MAGIC, 0, MAX_RECORD as u32);

/// Errors of the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O operation failed.
    #[error("wal {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// File or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The writer thread is gone (shutdown or a previous fatal error).
    #[error("wal writer stopped")]
    Stopped,
    /// The record cannot be logged: replay would reject it (and every record after it).
    #[error("wal record too large: {0}")]
    TooLarge(&'static str),
}

impl WalError {
    /// Whether the failure is a full disk (the caller should answer 507 and retry later).
    pub fn is_disk_full(&self) -> bool {
        match self {
            WalError::Io { source, .. } => {
                // 28 is ENOSPC
                source.kind() == io::ErrorKind::StorageFull || source.raw_os_error() == Some(28)
            }
            WalError::Stopped | WalError::TooLarge(_) => false,
        }
    }
}

type Result<T, E = WalError> = std::result::Result<T, E>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io { op, path: path.to_path_buf(), source }
}

/// One logged batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// Table the batch is for.
    pub table: String,
    /// The batch id as sent by the collector.
    pub batch_id: String,
    /// The Arrow IPC body as received.
    pub body: Bytes,
}

impl WalRecord {
    /// Whether the record fits the on-disk format; one that does not would be written
    /// with wrapped lengths and then rejected at replay, after its acknowledgement.
    fn check(&self) -> Result<()> {
        if self.table.len() > usize::from(u8::MAX) {
            return Err(WalError::TooLarge("table name longer than 255 bytes"));
        }
        if self.batch_id.len() > usize::from(u16::MAX) {
            return Err(WalError::TooLarge("batch id longer than 65535 bytes"));
        }
        if 1 + self.table.len() + 2 + self.batch_id.len() + self.body.len() > MAX_RECORD {
            return Err(WalError::TooLarge("payload larger than 1 GiB"));
        }
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        let payload_len = 1 + self.table.len() + 2 + self.batch_id.len() + self.body.len();
        let mut out = Vec::with_capacity(HEADER_LEN + payload_len);
        FRAME.encode_with(&mut out, |out| {
            out.push(self.table.len() as u8);
            out.extend_from_slice(self.table.as_bytes());
            out.extend_from_slice(&(self.batch_id.len() as u16).to_le_bytes());
            out.extend_from_slice(self.batch_id.as_bytes());
            out.extend_from_slice(&self.body);
        });
        out
    }

    fn decode(payload: &[u8]) -> Option<WalRecord> {
        let tlen = *payload.first()? as usize;
        let table = std::str::from_utf8(payload.get(1..1 + tlen)?).ok()?.to_string();
        let rest = &payload[1 + tlen..];
        let blen = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let batch_id = std::str::from_utf8(rest.get(2..2 + blen)?).ok()?.to_string();
        let body = Bytes::copy_from_slice(&rest[2 + blen..]);
        Some(WalRecord { table, batch_id, body })
    }
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Default)]
pub struct Replay {
    /// Every intact record, oldest first.
    pub records: Vec<WalRecord>,
    /// Bytes cut from the torn tail of the newest segment.
    pub truncated_bytes: u64,
    /// Damaged ranges skipped with the records after them kept.
    pub salvaged: Vec<Salvage>,
}

/// Unreadable bytes of a segment that were not a torn tail: acknowledged records may
/// have been in them. The records after them were replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvage {
    /// The segment.
    pub path: PathBuf,
    /// First damaged byte.
    pub start: u64,
    /// One past the last damaged byte.
    pub end: u64,
    /// Where the damaged bytes were copied (`None` if the copy failed).
    pub kept: Option<PathBuf>,
}

impl std::fmt::Display for Salvage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: bytes {}..{} ({} bytes) were unreadable at start; the records in them are lost, the records after them were replayed",
            self.path.display(),
            self.start,
            self.end,
            self.end - self.start
        )?;
        match &self.kept {
            Some(k) => write!(f, " (the bytes are kept in {})", k.display()),
            None => Ok(()),
        }
    }
}

enum Op {
    Append(Vec<u8>, oneshot::Sender<Result<()>>),
    Rotate(oneshot::Sender<Result<u64>>),
    RemoveBefore(u64, oneshot::Sender<Result<()>>),
}

/// Handle to the WAL; cheap to clone.
#[derive(Debug, Clone)]
pub struct Wal {
    tx: mpsc::Sender<Op>,
    stats: Arc<WalStats>,
}

lake_format::metrics! {
    /// Counters of the WAL, on `/metrics` (each doc line is its help there). Appends per
    /// fsync is the group-commit factor; the bytes are those of segments not yet removed.
    pub struct WalStats {
        /// records appended to the WAL
        pub appends: Counter("lake_wal_appends_total"),
        /// WAL fsyncs
        pub fsyncs: Counter("lake_wal_fsyncs_total"),
        /// bytes cut from torn WAL tails at start
        pub truncated_bytes: Counter("lake_wal_truncated_bytes_total"),
        /// damaged WAL bytes skipped at start, the records after them salvaged
        pub corrupt_bytes: Counter("lake_wal_corrupt_bytes_total"),
        /// WAL appends whose write or fsync failed
        pub errors: Counter("lake_wal_errors_total"),
        /// bytes in WAL segments
        pub bytes: Gauge("lake_wal_bytes"),
    }
    also {
        /// What was salvaged at open, one line per damaged range (for `/health`).
        pub salvaged: std::sync::Mutex<Vec<String>>,
        /// The error of the last append if it failed; cleared by the next durable append.
        pub last_error: std::sync::Mutex<Option<String>>,
    }
}

impl WalStats {
    /// Why the WAL is failing now, if it is: its last append or fsync failed.
    pub fn failing(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What was salvaged from damaged segments at start.
    pub fn salvaged(&self) -> Vec<String> {
        self.salvaged.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Append(..) => "Append",
            Op::Rotate(..) => "Rotate",
            Op::RemoveBefore(..) => "RemoveBefore",
        })
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(seq) = name.strip_suffix(".wal").and_then(|s| s.parse().ok()) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

fn sync_dir(dir: &Path) -> Result<()> {
    durable::sync_dir(dir).map_err(io_err("fsync dir", dir))
}

/// Directory under the WAL where damaged bytes are kept for inspection.
pub const CORRUPT_DIR: &str = "corrupt";

/// Copies each damaged range of `path` to `<dir>/corrupt/<segment>.<start>-<end>` and
/// logs it; the copy is best effort (the log line and counters are what must not fail).
fn salvage(dir: &Path, path: &Path, buf: &[u8], damaged: &[std::ops::Range<usize>]) -> Vec<Salvage> {
    let keep_dir = dir.join(CORRUPT_DIR);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    damaged
        .iter()
        .map(|r| {
            let dest = keep_dir.join(format!("{name}.{}-{}", r.start, r.end));
            let kept = fs::create_dir_all(&keep_dir)
                .and_then(|()| write_synced(&dest, &buf[r.clone()]))
                .map(|()| dest.clone())
                .map_err(|e| tracing::error!(path = %dest.display(), %e, "wal: cannot keep a copy of damaged bytes"))
                .ok();
            let s = Salvage { path: path.to_path_buf(), start: r.start as u64, end: r.end as u64, kept };
            tracing::error!(
                path = %path.display(),
                start = r.start,
                end = r.end,
                bytes = r.len(),
                kept = %s.kept.as_deref().map(|k| k.display().to_string()).unwrap_or_default(),
                "wal: damaged records skipped; acknowledged rows in them are lost, the records after them were replayed"
            );
            s
        })
        .collect()
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Deletes the temporary files of a [`rewrite`] a crash interrupted.
fn remove_leftovers(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))?.flatten() {
        if entry.file_name().to_string_lossy().ends_with(".wal.tmp") {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
    }
    Ok(())
}

/// Replaces a segment by its intact records only (temp file, fsync, rename), so the next
/// start neither cuts nor reports the same bytes again.
fn rewrite(path: &Path, buf: &[u8], records: &[(WalRecord, std::ops::Range<usize>)]) -> Result<()> {
    // `.wal.tmp`, not the default `.tmp`: `remove_leftovers` knows the WAL's by that name.
    let tmp = path.with_extension("wal.tmp");
    let parts = records.iter().map(|(_, r)| &buf[r.clone()]);
    durable::write_atomic_via(path, &tmp, parts).map_err(io_err("rewrite", path))
}

struct Writer {
    dir: PathBuf,
    seq: u64,
    file: File,
    /// Bytes of whole records in the current segment: a failed write is cut back to it.
    len: u64,
    stats: Arc<WalStats>,
}

impl Writer {
    fn open_segment(dir: &Path, seq: u64) -> Result<File> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err("create", &path))?;
        sync_dir(dir)?;
        Ok(file)
    }

    fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut pending: Vec<oneshot::Sender<Result<()>>> = Vec::new();
        while let Some(op) = rx.blocking_recv() {
            let mut next = Some(op);
            // Group commit: write everything queued right now, then sync once for all of it.
            while let Some(op) = next.take() {
                match op {
                    Op::Append(bytes, reply) => match self.file.write_all(&bytes) {
                        Ok(()) => {
                            self.len += bytes.len() as u64;
                            self.stats.appends.fetch_add(1, Ordering::Relaxed);
                            self.stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                            pending.push(reply);
                        }
                        Err(e) => {
                            self.stats.errors.fetch_add(1, Ordering::Relaxed);
                            self.stats.set_error(Some(format!(
                                "write to {}: {e}",
                                segment_path(&self.dir, self.seq).display()
                            )));
                            // Make the records written before this one durable first:
                            // `repair` may move on to a new segment, and `sync` only
                            // covers the current one.
                            self.sync(&mut pending);
                            // A partial record (disk full) would hide every later record
                            // from replay: cut it off before anything else is appended.
                            self.repair();
                            let _ = reply.send(Err(WalError::Io {
                                op: "write",
                                path: segment_path(&self.dir, self.seq),
                                source: e,
                            }));
                        }
                    },
                    other => {
                        self.sync(&mut pending);
                        self.control(other);
                    }
                }
                next = rx.try_recv().ok();
            }
            self.sync(&mut pending);
        }
        self.sync(&mut pending);
    }

    /// Cuts the segment back to its last whole record; if that fails, moves on to a new
    /// segment so later records are never written behind a torn one.
    fn repair(&mut self) {
        let path = segment_path(&self.dir, self.seq);
        if let Err(e) = self.file.set_len(self.len) {
            tracing::error!(path = %path.display(), %e, "wal: cannot cut a failed write; starting a new segment");
            match Self::open_segment(&self.dir, self.seq + 1) {
                Ok(file) => {
                    self.seq += 1;
                    self.file = file;
                    self.len = 0;
                }
                Err(e) => tracing::error!(%e, "wal: cannot start a new segment either"),
            }
        }
    }

    fn sync(&mut self, pending: &mut Vec<oneshot::Sender<Result<()>>>) {
        if pending.is_empty() {
            return;
        }
        let result = self.file.sync_data();
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        match &result {
            Ok(()) => self.stats.set_error(None),
            Err(e) => {
                self.stats.errors.fetch_add(pending.len() as u64, Ordering::Relaxed);
                self.stats.set_error(Some(format!("fsync of {}: {e}", segment_path(&self.dir, self.seq).display())));
            }
        }
        if result.is_err() {
            // After a failed fsync the kernel may have dropped the dirty pages: nothing in
            // this segment's unsynced tail can be trusted, so continue in a fresh segment.
            // The records were not acknowledged; if they did reach the disk, replay stores
            // them and the senders' retries are recognised as duplicates.
            if let Ok(file) = Self::open_segment(&self.dir, self.seq + 1) {
                self.seq += 1;
                self.file = file;
                self.len = 0;
            }
        }
        for reply in pending.drain(..) {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(WalError::Io {
                    op: "fsync",
                    path: segment_path(&self.dir, self.seq),
                    source: io::Error::new(e.kind(), e.to_string()),
                }),
            };
            let _ = reply.send(r);
        }
    }

    fn control(&mut self, op: Op) {
        match op {
            Op::Append(..) => unreachable!("appends are handled in run"),
            Op::Rotate(reply) => {
                let r = Self::open_segment(&self.dir, self.seq + 1).map(|file| {
                    self.seq += 1;
                    self.file = file;
                    self.len = 0;
                    self.seq
                });
                let _ = reply.send(r);
            }
            Op::RemoveBefore(seq, reply) => {
                let _ = reply.send(self.remove_before(seq));
            }
        }
    }

    fn remove_before(&mut self, seq: u64) -> Result<()> {
        for s in list_segments(&self.dir)?.into_iter().filter(|s| *s < seq && *s != self.seq) {
            let path = segment_path(&self.dir, s);
            let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
            self.stats.bytes.fetch_sub(len.min(self.stats.bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
        }
        sync_dir(&self.dir)
    }
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, repairs torn tails, returns the handle and
    /// every intact record for replay. Appends go to a fresh segment.
    pub fn open(dir: &Path) -> Result<(Wal, Replay)> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let stats = Arc::new(WalStats::default());
        let mut replay = Replay::default();
        remove_leftovers(dir)?;
        let segments = list_segments(dir)?;
        for (i, &seq) in segments.iter().enumerate() {
            let path = segment_path(dir, seq);
            let buf = fs::read(&path).map_err(io_err("read", &path))?;
            let found = FRAME.scan(&buf, WalRecord::decode);
            let newest = i + 1 == segments.len();
            let mut damaged = found.damaged.clone();
            match found.tail {
                // What a crash mid-append leaves: cut, as every start always did.
                Some(t) if newest => {
                    tracing::warn!(path = %path.display(), kept = t, cut = buf.len() - t, "wal: torn tail truncated");
                    replay.truncated_bytes += (buf.len() - t) as u64;
                }
                // An older segment was complete when the writer moved on (or its tail was
                // never acknowledged, after a failed fsync): loud either way.
                Some(t) => damaged.push(t..buf.len()),
                None => {}
            }
            let good: usize = found.records.iter().map(|(_, r)| r.len()).sum();
            if !damaged.is_empty() {
                replay.salvaged.extend(salvage(dir, &path, &buf, &damaged));
                // Best effort: without it the next start finds (and reports) the same bytes.
                if let Err(e) = rewrite(&path, &buf, &found.records) {
                    tracing::error!(path = %path.display(), %e, "wal: cannot rewrite a salvaged segment without its damaged bytes");
                }
            } else if good < buf.len() {
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err("open", &path))?;
                f.set_len(good as u64).map_err(io_err("truncate", &path))?;
                f.sync_all().map_err(io_err("fsync", &path))?;
            }
            stats.bytes.fetch_add(good as u64, Ordering::Relaxed);
            replay.records.extend(found.records.into_iter().map(|(r, _)| r));
        }
        let corrupt: u64 = replay.salvaged.iter().map(|s| s.end - s.start).sum();
        stats.corrupt_bytes.store(corrupt, Ordering::Relaxed);
        *stats.salvaged.lock().unwrap_or_else(|p| p.into_inner()) =
            replay.salvaged.iter().map(ToString::to_string).collect();
        stats.truncated_bytes.store(replay.truncated_bytes, Ordering::Relaxed);
        let seq = segments.last().map_or(1, |s| s + 1);
        let file = Writer::open_segment(dir, seq)?;
        let writer = Writer { dir: dir.to_path_buf(), seq, file, len: 0, stats: Arc::clone(&stats) };
        let (tx, rx) = mpsc::channel(4096);
        thread::Builder::new()
            .name("lake-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err("spawn writer for", dir))?;
        Ok((Wal { tx, stats }, replay))
    }

    /// Appends a record; returns once it is on disk (fsynced).
    pub async fn append(&self, record: &WalRecord) -> Result<()> {
        record.check()?;
        let (tx, rx) = oneshot::channel();
        self.tx.send(Op::Append(record.encode(), tx)).await.map_err(|_| WalError::Stopped)?;
        rx.await.map_err(|_| WalError::Stopped)?
    }

    /// Starts a new segment; returns its sequence number. Every record appended before
    /// this call is in a segment with a smaller number.
    pub async fn rotate(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Op::Rotate(tx)).await.map_err(|_| WalError::Stopped)?;
        rx.await.map_err(|_| WalError::Stopped)?
    }

    /// Deletes every segment numbered below `seq` (their rows are committed to Parquet).
    pub async fn remove_before(&self, seq: u64) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Op::RemoveBefore(seq, tx)).await.map_err(|_| WalError::Stopped)?;
        rx.await.map_err(|_| WalError::Stopped)?
    }

    /// The WAL's counters.
    pub fn stats(&self) -> &WalStats {
        &self.stats
    }

    /// The WAL's counters, shared (for `/health`).
    pub fn shared_stats(&self) -> Arc<WalStats> {
        Arc::clone(&self.stats)
    }
}

/// Appends raw bytes to the newest segment of `dir`: lets tests fabricate torn tails.
#[cfg(test)]
pub(crate) fn append_garbage(dir: &Path, bytes: &[u8]) {
    let last = *list_segments(dir).unwrap().last().unwrap();
    let mut f = OpenOptions::new().append(true).open(segment_path(dir, last)).unwrap();
    f.write_all(bytes).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::{Seek, SeekFrom};

    fn rec(i: usize) -> WalRecord {
        WalRecord { table: "metrics".into(), batch_id: format!("n1/1/{i}"), body: Bytes::from(vec![i as u8; 100 + i]) }
    }

    #[tokio::test]
    async fn records_survive_reopen_and_removal_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, replay) = Wal::open(dir.path()).unwrap();
        assert!(replay.records.is_empty());
        for i in 0..3 {
            wal.append(&rec(i)).await.unwrap();
        }
        let next = wal.rotate().await.unwrap();
        wal.append(&rec(3)).await.unwrap();
        drop(wal);
        let (wal, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.records, (0..4).map(rec).collect::<Vec<_>>());
        wal.remove_before(next).await.unwrap();
        drop(wal);
        let (_wal, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.records, vec![rec(3)]);
    }

    #[tokio::test]
    async fn concurrent_appends_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let wal = wal.clone();
                tokio::spawn(async move { wal.append(&rec(i % 50)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(wal.stats().appends.load(Ordering::Relaxed), 200);
        assert!(wal.stats().fsyncs.load(Ordering::Relaxed) <= 200);
    }

    #[tokio::test]
    async fn a_torn_tail_at_any_offset_is_cut_and_earlier_records_kept() {
        let full = rec(7).encode();
        for cut in 0..full.len() {
            let dir = tempfile::tempdir().unwrap();
            let (wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&rec(1)).await.unwrap();
            drop(wal);
            append_garbage(dir.path(), &full[..cut]);
            let (_wal, replay) = Wal::open(dir.path()).unwrap();
            assert_eq!(replay.records, vec![rec(1)], "cut at {cut}");
            assert_eq!(replay.truncated_bytes, cut as u64);
        }
        // a flipped bit in the payload is caught by the CRC
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&rec(1)).await.unwrap();
        drop(wal);
        let mut bad = full.clone();
        bad[HEADER_LEN + 20] ^= 1;
        append_garbage(dir.path(), &bad);
        let (_wal, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.records, vec![rec(1)]);
        assert_eq!(replay.truncated_bytes, bad.len() as u64);
    }

    #[test]
    fn record_codec_rejects_garbage_without_panicking() {
        for p in [&b""[..], &[5], &[3, b'a', b'b', b'c', 9]] {
            assert!(WalRecord::decode(p).is_none());
        }
    }

    #[tokio::test]
    async fn records_the_format_cannot_carry_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        let long_table = WalRecord { table: "t".repeat(256), ..rec(1) };
        assert!(matches!(wal.append(&long_table).await, Err(WalError::TooLarge(_))));
        let long_id = WalRecord { batch_id: "b".repeat(65_536), ..rec(1) };
        assert!(matches!(wal.append(&long_id).await, Err(WalError::TooLarge(_))));
        wal.append(&rec(2)).await.unwrap();
        drop(wal);
        let (_wal, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.records, vec![rec(2)]);
        assert_eq!(replay.truncated_bytes, 0);
    }

    /// Writes `byte` at `offset` of segment `seq`.
    fn poke(dir: &Path, seq: u64, offset: u64, byte: u8) {
        let mut f = OpenOptions::new().write(true).open(segment_path(dir, seq)).unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(&[byte]).unwrap();
    }

    /// Segments 1 and 2 with records 0..3 and 3..6, and the writer on segment 3.
    async fn two_full_segments(dir: &Path) {
        let (wal, _) = Wal::open(dir).unwrap();
        for i in 0..3 {
            wal.append(&rec(i)).await.unwrap();
        }
        wal.rotate().await.unwrap();
        for i in 3..6 {
            wal.append(&rec(i)).await.unwrap();
        }
        wal.rotate().await.unwrap();
    }

    fn len(i: usize) -> u64 {
        rec(i).encode().len() as u64
    }

    // Damage inside a payload of an older segment: exactly that record is lost, loudly;
    // the records after it come back; the bytes are kept; the next start is clean.
    #[tokio::test]
    async fn a_damaged_record_in_an_older_segment_is_skipped_and_the_rest_replayed() {
        let dir = tempfile::tempdir().unwrap();
        two_full_segments(dir.path()).await;
        poke(dir.path(), 1, len(0) + HEADER_LEN as u64 + 30, 0xEE);
        let (wal, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.records, [0, 2, 3, 4, 5].map(rec));
        assert_eq!(replay.truncated_bytes, 0, "not a torn tail");
        let path = segment_path(dir.path(), 1);
        let kept = dir.path().join(CORRUPT_DIR).join(format!("{:020}.wal.{}-{}", 1, len(0), len(0) + len(1)));
        assert_eq!(
            replay.salvaged,
            [Salvage { path: path.clone(), start: len(0), end: len(0) + len(1), kept: Some(kept.clone()) }]
        );
        let mut damaged = rec(1).encode();
        damaged[HEADER_LEN + 30] = 0xEE;
        assert_eq!(fs::read(&kept).unwrap(), damaged, "the damaged bytes are kept as they were");
        assert_eq!(wal.stats().corrupt_bytes.load(Ordering::Relaxed), len(1));
        let said = &wal.stats().salvaged()[0];
        assert!(
            said.contains(&path.display().to_string())
                && said.contains(&format!("bytes {}..{}", len(0), len(0) + len(1))),
            "{said}"
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), len(0) + len(2), "the segment keeps its intact records only");
        assert_eq!(wal.stats().bytes.load(Ordering::Relaxed), len(0) + (2..6).map(len).sum::<u64>());
        drop(wal);
        let (wal, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.records, [0, 2, 3, 4, 5].map(rec));
        assert!(replay.salvaged.is_empty() && wal.stats().salvaged().is_empty());
    }

    // A damaged header: where the record ended is unknown, so the next record is found by
    // scanning for a complete frame.
    #[tokio::test]
    async fn after_a_damaged_header_the_next_record_is_found_by_its_framing() {
        for offset in [0, 5, 9] {
            let dir = tempfile::tempdir().unwrap();
            two_full_segments(dir.path()).await;
            // magic, length or CRC of record 4 (segment 2's second record)
            poke(dir.path(), 2, len(3) + offset, 0xEE);
            let (_wal, replay) = Wal::open(dir.path()).unwrap();
            assert_eq!(replay.records, [0, 1, 2, 3, 5].map(rec), "offset {offset}");
            assert_eq!(
                (replay.salvaged[0].start, replay.salvaged[0].end),
                (len(3), len(3) + len(4)),
                "offset {offset}"
            );
        }
    }

    // The last record of an older segment damaged: nothing follows it in that segment,
    // but it is not a crash's torn tail (the writer had moved on): reported, not cut quietly.
    #[tokio::test]
    async fn a_damaged_end_of_an_older_segment_is_reported_not_truncated_quietly() {
        let dir = tempfile::tempdir().unwrap();
        two_full_segments(dir.path()).await;
        poke(dir.path(), 2, len(3) + len(4) + HEADER_LEN as u64 + 2, 0xEE);
        let (wal, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.records, (0..5).map(rec).collect::<Vec<_>>());
        assert_eq!(replay.truncated_bytes, 0);
        assert_eq!(replay.salvaged.len(), 1);
        assert_eq!(wal.stats().corrupt_bytes.load(Ordering::Relaxed), len(5));
    }

    // In the newest segment too, damage followed by intact records is not a torn tail.
    #[tokio::test]
    async fn corruption_in_the_middle_of_the_newest_segment_keeps_the_records_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        for i in 0..3 {
            wal.append(&rec(i)).await.unwrap();
        }
        drop(wal);
        poke(dir.path(), 1, len(0) + HEADER_LEN as u64 + 3, 0xEE);
        let (_wal, replay) = Wal::open(dir.path()).unwrap();
        assert_eq!(replay.records, vec![rec(0), rec(2)]);
        assert_eq!(replay.salvaged.len(), 1);
    }

    // A record whose body holds the bytes of another record (a sender controls its body):
    // damage to the outer payload skips the outer record whole, never replaying the inner.
    #[tokio::test]
    async fn a_record_hidden_in_a_damaged_payload_is_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let forged =
            WalRecord { table: "metrics".into(), batch_id: "other/1/1".into(), body: Bytes::from_static(b"forged") };
        let mut body = vec![7u8; 40];
        body.extend(forged.encode());
        let outer = WalRecord { table: "metrics".into(), batch_id: "n1/1/9".into(), body: Bytes::from(body) };
        two_full_segments(dir.path()).await;
        // Append the outer record and one more to segment 1's end, as if written before rotation.
        let mut f = OpenOptions::new().append(true).open(segment_path(dir.path(), 1)).unwrap();
        f.write_all(&outer.encode()).unwrap();
        f.write_all(&rec(9).encode()).unwrap();
        drop(f);
        poke(dir.path(), 1, (0..3).map(len).sum::<u64>() + HEADER_LEN as u64 + 20, 0xEE);
        let (_wal, replay) = Wal::open(dir.path()).unwrap();
        assert!(!replay.records.contains(&forged));
        assert_eq!(replay.records, [0, 1, 2, 9, 3, 4, 5].map(rec));
    }

    /// What a crash leaves behind the newest segment's last acknowledged record.
    #[derive(Debug, Clone)]
    enum Tail {
        /// Nothing: the crash came between two writes.
        Clean,
        /// A strict prefix of a record whose write was under way (never acknowledged).
        Torn(WalRecord, prop::sample::Index),
        /// A whole record with one bit flipped (the CRC must catch it).
        Flipped(WalRecord, prop::sample::Index),
        /// Random bytes, optionally behind a valid magic so the header parse goes further.
        Garbage(bool, Vec<u8>),
        /// A whole record that reached the disk but whose fsync never returned: not
        /// acknowledged, but intact, so replay must keep it (the sender's retry is a duplicate).
        Unacked(WalRecord),
    }

    #[derive(Debug, Clone)]
    enum Step {
        Append(WalRecord),
        Rotate,
        /// Everything before the `Index`-th rotation seen so far is committed.
        RemoveBefore(prop::sample::Index),
        Crash(Tail),
        Reopen,
    }

    fn any_record() -> impl Strategy<Value = WalRecord> {
        ("[a-z_]{0,16}", "[a-z0-9/]{0,40}", prop::collection::vec(any::<u8>(), 0..4096))
            .prop_map(|(table, batch_id, body)| WalRecord { table, batch_id, body: Bytes::from(body) })
    }

    fn any_tail() -> impl Strategy<Value = Tail> {
        prop_oneof![
            Just(Tail::Clean),
            (any_record(), any::<prop::sample::Index>()).prop_map(|(r, i)| Tail::Torn(r, i)),
            (any_record(), any::<prop::sample::Index>()).prop_map(|(r, i)| Tail::Flipped(r, i)),
            (any::<bool>(), prop::collection::vec(any::<u8>(), 1..64)).prop_map(|(m, g)| Tail::Garbage(m, g)),
            any_record().prop_map(Tail::Unacked),
        ]
    }

    fn any_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => any_record().prop_map(Step::Append),
            2 => Just(Step::Rotate),
            2 => any::<prop::sample::Index>().prop_map(Step::RemoveBefore),
            2 => any_tail().prop_map(Step::Crash),
            1 => Just(Step::Reopen),
        ]
    }

    /// The bytes a crash leaves, and whether replay must keep them as a record.
    fn tail_bytes(tail: &Tail) -> (Vec<u8>, Option<WalRecord>) {
        match tail {
            Tail::Clean => (Vec::new(), None),
            Tail::Torn(r, i) => {
                let full = r.encode();
                (full[..i.index(full.len())].to_vec(), None)
            }
            Tail::Flipped(r, i) => {
                let mut full = r.encode();
                let bit = i.index(full.len() * 8);
                full[bit / 8] ^= 1 << (bit % 8);
                (full, None)
            }
            Tail::Garbage(magic, g) => {
                let mut bytes = if *magic { MAGIC.to_le_bytes().to_vec() } else { Vec::new() };
                bytes.extend_from_slice(g);
                if !*magic && bytes[0] == MAGIC.to_le_bytes()[0] {
                    bytes[0] ^= 0xFF; // no accidental magic: these are meant as plain noise
                }
                (bytes, None)
            }
            Tail::Unacked(r) => (r.encode(), Some(r.clone())),
        }
    }

    /// The model: every durable record with the segment it is in, and the writer's segment.
    struct Model {
        records: Vec<(u64, WalRecord)>,
        seq: u64,
        rotations: Vec<u64>,
    }

    impl Model {
        fn live(&self) -> Vec<WalRecord> {
            self.records.iter().map(|(_, r)| r.clone()).collect()
        }

        fn bytes(&self) -> u64 {
            self.records.iter().map(|(_, r)| r.encode().len() as u64).sum()
        }
    }

    fn reopen(dir: &Path, model: &mut Model, cut: u64) -> Result<Wal, TestCaseError> {
        let (wal, replay) = Wal::open(dir).unwrap();
        // The new writer starts a segment after the newest one, which was the old writer's.
        model.seq += 1;
        prop_assert_eq!(replay.records, model.live(), "replay = acknowledged and not removed, in order");
        prop_assert_eq!(replay.truncated_bytes, cut, "exactly the torn tail is cut");
        prop_assert_eq!(wal.stats().truncated_bytes.load(Ordering::Relaxed), cut);
        prop_assert_eq!(wal.stats().bytes.load(Ordering::Relaxed), model.bytes());
        Ok(wal)
    }

    async fn run_model(dir: &Path, steps: Vec<Step>) -> Result<(), TestCaseError> {
        let (mut wal, replay) = Wal::open(dir).unwrap();
        prop_assert!(replay.records.is_empty());
        let mut model = Model { records: Vec::new(), seq: 1, rotations: Vec::new() };
        for step in steps {
            match step {
                Step::Append(r) => {
                    wal.append(&r).await.unwrap();
                    model.records.push((model.seq, r));
                }
                Step::Rotate => {
                    let seq = wal.rotate().await.unwrap();
                    model.seq += 1;
                    prop_assert_eq!(seq, model.seq, "rotation numbers follow the segments");
                    model.rotations.push(seq);
                }
                Step::RemoveBefore(i) => {
                    if model.rotations.is_empty() {
                        continue;
                    }
                    let before = model.rotations[i.index(model.rotations.len())];
                    wal.remove_before(before).await.unwrap();
                    model.records.retain(|(seq, _)| *seq >= before);
                }
                Step::Crash(tail) => {
                    drop(wal);
                    let (bytes, kept) = tail_bytes(&tail);
                    append_garbage(dir, &bytes);
                    let cut = match kept {
                        Some(r) => {
                            model.records.push((model.seq, r));
                            0
                        }
                        None => bytes.len() as u64,
                    };
                    wal = reopen(dir, &mut model, cut)?;
                }
                Step::Reopen => {
                    drop(wal);
                    wal = reopen(dir, &mut model, 0)?;
                }
            }
            prop_assert_eq!(wal.stats().bytes.load(Ordering::Relaxed), model.bytes());
        }
        drop(wal);
        reopen(dir, &mut model, 0)?;
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any interleaving of append / rotate / remove-before / crash / reopen loses
        /// nothing acknowledged and replays nothing else (beyond intact unacknowledged
        /// records, which the senders' retries deduplicate).
        #[test]
        fn wal_matches_its_model(steps in prop::collection::vec(any_step(), 0..40)) {
            let dir = tempfile::tempdir().unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(run_model(dir.path(), steps))?;
        }
    }

    /// A tmpfs of a fixed size, unmounted (lazily: a writer thread may still hold a file
    /// open) when dropped.
    struct TinyTmpfs(PathBuf);

    impl TinyTmpfs {
        fn mount(at: &Path, size: &str) -> TinyTmpfs {
            fs::create_dir_all(at).unwrap();
            let status = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(at)
                .status();
            assert!(
                matches!(status, Ok(s) if s.success()),
                "mounting a {size} tmpfs at {} failed ({status:?}): this test needs root",
                at.display()
            );
            TinyTmpfs(at.to_path_buf())
        }
    }

    impl Drop for TinyTmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }

    // A write that fails half-way (disk full) must not leave its partial record in front
    // of the records appended after space came back: replay would stop at it.
    #[tokio::test]
    async fn a_failed_append_leaves_no_partial_record_before_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        let _tmpfs = TinyTmpfs::mount(&mnt, "64k");
        let wal_dir = mnt.join("wal");
        // Half the space goes to a filler that is deleted later to make room again.
        let filler = mnt.join("filler");
        fs::write(&filler, vec![0u8; 32 << 10]).unwrap();
        let (wal, _) = Wal::open(&wal_dir).unwrap();
        let big = |i: usize| WalRecord { body: Bytes::from(vec![i as u8; 10_000]), ..rec(i) };
        let mut acked = Vec::new();
        let err = loop {
            let r = big(acked.len());
            match wal.append(&r).await {
                Ok(()) => acked.push(r),
                Err(e) => break e,
            }
            assert!(acked.len() < 10, "the tmpfs never filled up");
        };
        assert!(err.is_disk_full(), "{err}");
        let acked_bytes: u64 = acked.iter().map(|r| r.encode().len() as u64).sum();
        // The last page had room left, so the failed write went in part before ENOSPC.
        assert_ne!(acked_bytes % 4096, 0);
        let segment = segment_path(&wal_dir, 1);
        assert_eq!(fs::metadata(&segment).unwrap().len(), acked_bytes, "the partial record is cut at once");
        assert_eq!(wal.stats().bytes.load(Ordering::Relaxed), acked_bytes);

        fs::remove_file(&filler).unwrap();
        for _ in 0..2 {
            let r = big(acked.len());
            wal.append(&r).await.unwrap();
            acked.push(r);
        }
        drop(wal);
        let (_wal, replay) = Wal::open(&wal_dir).unwrap();
        assert_eq!(replay.truncated_bytes, 0);
        assert_eq!(replay.records, acked);
    }
}
