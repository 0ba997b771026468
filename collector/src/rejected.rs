//! `<data_dir>/rejected/`: batches the lake refused for good (a 400 naming a column, a
//! 404 table, a 413), kept for a human with the lake's answer, within a bound, and sent
//! again by `lake-collector replay-rejected`.
//!
//! # Layout
//!
//! ```text
//! <data_dir>/rejected/
//!   <node>_<epoch>_<seq>.txt      batch: <id> / table: <table> / error: <the lake's answer>
//!   <node>_<epoch>_<seq>.arrow    the body as sent (Arrow IPC; `.ndjson` for custom tables)
//! ```
//!
//! The note is written (and fsynced) before the body, so a body always has its note; a
//! note left without a body by a crash is harmless (the record was not yet acknowledged
//! in the spool, so it is refused and kept again) and is cleaned up with the bound.
//!
//! # Bound
//!
//! At most `[rejected] max_batches` batches and `max_size` bytes (defaults 1000 and
//! 256 MiB). Keeping a new batch past either deletes the **oldest** kept batches first
//! (by the time they were kept), each one counted in `rejected_evicted` and logged: the
//! newest refusals are the ones that tell what is wrong now, and a node never stops
//! shipping because `rejected/` filled up.
//!
//! # Replay
//!
//! [`replay`] sends every kept batch (oldest first) through the lake's normal ingest
//! under a **new** batch id, `<node>/<epoch>/<n>` with a random epoch per run: the
//! original id may have been used since (the lake remembers exact ids, but a replayed
//! batch must never depend on that), and a retry within the run keeps its id so the lake
//! stores it once. A batch the lake stores is deleted; one it refuses stays, with the
//! answer printed.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lake_format::BatchId;
use tracing::warn;

use crate::config::{Config, RejectedConfig};
use crate::shipper::{ErrorKind, ShipError};

/// Name of the directory under `data_dir`.
pub const DIR: &str = "rejected";
const NOTE_EXT: &str = "txt";
const BODY_EXTS: [&str; 2] = ["arrow", "ndjson"];

/// Errors of `rejected/`.
#[derive(Debug, thiserror::Error)]
pub enum RejectedError {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was done.
        op: &'static str,
        /// File or directory concerned.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RejectedError + 'a {
    move |source| RejectedError::Io { op, path: path.to_path_buf(), source }
}

/// One kept batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// `<node>_<epoch>_<seq>`.
    pub stem: String,
    /// The body's file.
    pub body: PathBuf,
    /// The note's file.
    pub note: PathBuf,
    /// Bytes of both.
    pub size: u64,
    /// When it was kept (the note's modification time).
    pub kept_at: SystemTime,
}

/// Keeps a refused batch: note, then body, each fsynced, then the directory; then holds
/// the directory to its bound. Returns how many older batches were deleted for it.
pub fn keep(
    dir: &Path,
    id: &BatchId,
    table: &str,
    body: &[u8],
    error: &str,
    bound: &RejectedConfig,
) -> Result<u64, RejectedError> {
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let stem = id.to_string().replace('/', "_");
    let ext = if crate::sources::custom::custom_name(table).is_some() { "ndjson" } else { "arrow" };
    let note = format!("batch: {id}\ntable: {table}\nerror: {error}\n");
    for (ext, bytes) in [(NOTE_EXT, note.as_bytes()), (ext, body)] {
        let path = dir.join(format!("{stem}.{ext}"));
        let mut f = File::create(&path).map_err(io_err("create", &path))?;
        f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io_err("write", &path))?;
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync", dir))?;
    enforce_bound(dir, bound, &stem)
}

/// Deletes the oldest kept batches (never `keep_stem`, the one just kept) until the
/// directory is within `bound`; also removes notes whose body is gone. Returns how many
/// batches were deleted.
fn enforce_bound(dir: &Path, bound: &RejectedConfig, keep_stem: &str) -> Result<u64, RejectedError> {
    let (mut kept, orphans) = scan(dir)?;
    for note in orphans {
        let _ = fs::remove_file(note);
    }
    let mut count = kept.len() as u64;
    let mut size: u64 = kept.iter().map(|k| k.size).sum();
    let mut evicted = 0;
    kept.retain(|k| k.stem != keep_stem);
    for old in kept {
        if count <= bound.max_batches && size <= bound.max_size {
            break;
        }
        remove(&old)?;
        warn!(
            batch = %old.stem,
            max_batches = bound.max_batches,
            max_size = bound.max_size,
            "rejected/ is full: deleted the oldest refused batch"
        );
        count -= 1;
        size = size.saturating_sub(old.size);
        evicted += 1;
    }
    Ok(evicted)
}

/// The kept batches of `dir`, oldest first, and the notes without a body.
pub fn scan(dir: &Path) -> Result<(Vec<Kept>, Vec<PathBuf>), RejectedError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut kept = Vec::new();
    let mut orphans = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        let note = entry.path();
        if note.extension().is_none_or(|e| e != NOTE_EXT) {
            continue;
        }
        let Some(stem) = note.file_stem().and_then(|s| s.to_str()).map(str::to_string) else {
            continue;
        };
        let body = BODY_EXTS.iter().map(|ext| dir.join(format!("{stem}.{ext}"))).find(|p| p.exists());
        let Some(body) = body else {
            orphans.push(note);
            continue;
        };
        // Vanished meanwhile (a replay, another eviction): not kept any more.
        let (Ok(nm), Ok(bm)) = (fs::metadata(&note), fs::metadata(&body)) else {
            continue;
        };
        kept.push(Kept {
            stem,
            size: nm.len() + bm.len(),
            kept_at: nm.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            body,
            note,
        });
    }
    kept.sort_by(|a, b| a.kept_at.cmp(&b.kept_at).then_with(|| a.stem.cmp(&b.stem)));
    Ok((kept, orphans))
}

/// Deletes a kept batch: the body first, so a crash leaves a note without a body (cleaned
/// up later), never a body without its note.
fn remove(k: &Kept) -> Result<(), RejectedError> {
    for path in [&k.body, &k.note] {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", path)(e)),
        }
    }
    Ok(())
}

/// The table a note names (`table: <name>`).
fn table_of(note: &str) -> Option<&str> {
    note.lines().find_map(|l| l.strip_prefix("table: ")).map(str::trim).filter(|t| !t.is_empty())
}

/// What the lake answered to one replayed batch.
#[derive(Debug)]
pub enum Outcome {
    /// Stored (200); the files were deleted.
    Stored,
    /// Refused; the files stay.
    Refused(ShipError),
    /// The files could not be read (or the note names no table); they stay.
    Unreadable(String),
}

/// The result of a replay run.
#[derive(Debug, Default)]
pub struct Summary {
    /// Batches stored and deleted.
    pub stored: usize,
    /// Batches refused or unreadable, left in place.
    pub kept: usize,
    /// Why the run stopped before the end, if it did: the lake unreachable, or refusing
    /// this node's token or name (nothing else would be accepted either).
    pub stopped: Option<String>,
}

/// Attempts per batch while the lake does not answer (or answers 5xx, 408, 429).
const REPLAY_ATTEMPTS: u32 = 5;

/// Sends every batch of `config`'s `rejected/` again, oldest first, calling `report`
/// with each batch's outcome.
pub async fn replay(
    config: &Config,
    mut report: impl FnMut(&Kept, &str, &BatchId, &Outcome),
) -> Result<Summary, RejectedError> {
    let dir = config.data_dir.join(DIR);
    let (kept, _) = scan(&dir)?;
    let mut summary = Summary::default();
    if kept.is_empty() {
        return Ok(summary);
    }
    let client = reqwest::Client::builder()
        .timeout(config.lake.timeout)
        .connect_timeout(config.lake.timeout)
        .user_agent(concat!("lake-collector/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| io_err("build HTTP client for", &dir)(io::Error::other(e)))?;
    let epoch = rand::random::<u64>().max(1);
    for (i, k) in kept.iter().enumerate() {
        let id = BatchId { node: config.node.clone(), epoch, seq: i as u64 + 1 };
        let read = fs::read_to_string(&k.note).and_then(|note| Ok((note, fs::read(&k.body)?)));
        let (table, body) = match &read {
            Ok((note, body)) => match table_of(note) {
                Some(t) => (t.to_string(), Bytes::from(body.clone())),
                None => {
                    let o = Outcome::Unreadable(format!("{} names no table", k.note.display()));
                    report(k, "?", &id, &o);
                    summary.kept += 1;
                    continue;
                }
            },
            Err(e) => {
                let o = Outcome::Unreadable(e.to_string());
                report(k, "?", &id, &o);
                summary.kept += 1;
                continue;
            }
        };
        let mut wait = Duration::from_millis(500);
        let mut attempt = 1;
        let outcome = loop {
            match crate::shipper::send_batch(&client, &config.lake.url, &config.lake.token, &id, &table, body.clone())
                .await
            {
                Ok(()) => break Outcome::Stored,
                Err(e) if e.kind() == ErrorKind::Retryable && attempt < REPLAY_ATTEMPTS => {
                    let pause = e.retry_after().map_or(wait, |ra| ra.max(wait));
                    tokio::time::sleep(pause).await;
                    wait *= 2;
                    attempt += 1;
                }
                Err(e) => break Outcome::Refused(e),
            }
        };
        match &outcome {
            Outcome::Stored => {
                remove(k)?;
                summary.stored += 1;
            }
            Outcome::Refused(e) => {
                summary.kept += 1;
                match e.kind() {
                    ErrorKind::Permanent => {}
                    ErrorKind::Config => summary.stopped = Some(format!("the lake refuses this node: {e}")),
                    ErrorKind::Retryable => summary.stopped = Some(format!("the lake does not answer: {e}")),
                }
            }
            Outcome::Unreadable(_) => summary.kept += 1,
        }
        report(k, &table, &id, &outcome);
        if summary.stopped.is_some() {
            summary.kept += kept.len() - i - 1;
            break;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(max_batches: u64, max_size: u64) -> RejectedConfig {
        RejectedConfig { max_batches, max_size }
    }

    fn id(seq: u64) -> BatchId {
        BatchId { node: "n".into(), epoch: 9, seq }
    }

    #[test]
    fn the_oldest_batches_go_first_when_the_bound_is_reached() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join(DIR);
        for seq in 1..=5 {
            let evicted = keep(&d, &id(seq), "metrics", &[0u8; 100], "400: bad", &bound(3, 1 << 20)).unwrap();
            assert_eq!(evicted, u64::from(seq > 3), "seq {seq}");
            // Distinct modification times, as in real use.
            std::thread::sleep(Duration::from_millis(20));
        }
        let (kept, orphans) = scan(&d).unwrap();
        assert!(orphans.is_empty());
        let stems: Vec<_> = kept.iter().map(|k| k.stem.as_str()).collect();
        assert_eq!(stems, ["n_9_3", "n_9_4", "n_9_5"]);
        let note = fs::read_to_string(&kept[0].note).unwrap();
        assert_eq!(table_of(&note), Some("metrics"));
        assert!(note.contains("error: 400: bad"));

        // By size: a batch of about 1040 bytes (with its note) in a 1100-byte bound leaves
        // room for nothing else.
        let big = vec![1u8; 1000];
        assert_eq!(keep(&d, &id(6), "json/app", &big, "400", &bound(100, 1100)).unwrap(), 3);
        let (kept, _) = scan(&d).unwrap();
        assert_eq!(kept.len(), 1);
        assert!(kept[0].body.extension().is_some_and(|e| e == "ndjson"));
        // A batch larger than the whole bound is still kept (the newest one always is).
        assert_eq!(keep(&d, &id(7), "metrics", &big, "400", &bound(100, 10)).unwrap(), 1);
        assert_eq!(scan(&d).unwrap().0.len(), 1);
    }

    #[test]
    fn a_note_without_its_body_is_not_a_batch_and_is_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join(DIR);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("n_1_1.txt"), "batch: n/1/1\ntable: metrics\n").unwrap();
        let (kept, orphans) = scan(&d).unwrap();
        assert!(kept.is_empty());
        assert_eq!(orphans.len(), 1);
        keep(&d, &id(2), "metrics", b"x", "400", &bound(10, 1 << 20)).unwrap();
        assert!(!d.join("n_1_1.txt").exists());
    }
}
