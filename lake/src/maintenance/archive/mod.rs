//! Archival of finished partitions to an object store, and their restore.
//!
//! Data in: committed Parquet files under `<data>/tables/<t>/date=…/`. Data out: the same
//! files, same Hive layout, under `<prefix>/tables/<t>/date=…/` in the store (a local
//! directory by default, any S3-compatible store, or Cloudflare R2), plus manifests
//! ([`manifest`]). Because the bucket holds plain Hive-partitioned Parquet, other engines
//! can read it directly: that is the lake's scale-out path.
//!
//! Jobs, all run through [`Maintenance`], one at a time (a mutex; the admin API answers
//! 409 while one runs, the scheduler waits):
//! - [`Maintenance::archive`] ([`upload`]): every partition of a finished day (date before
//!   today, UTC) whose files are not all verified in the ledger is uploaded file by file,
//!   each verified (size and sha256) and recorded before the next, then its bucket
//!   manifest is written. A crash redoes only unverified files.
//! - [`crate::maintenance::retention`]: local partitions past `keep_local_days` whose every file is
//!   verified in the archive are removed through the [`Swapper`]; partitions past
//!   `keep_archive_days` are removed from the store.
//! - [`Maintenance::restore`] ([`restore`]): partitions come back from the store,
//!   checked against their manifest, and are committed through the [`Swapper`].
//! - [`Maintenance::status`] ([`status`]): what is where.
//!
//! The nightly run ([`Maintenance::nightly`], on `[archive] schedule`) is archive then
//! retention; `lake archive --now` runs the same. With a compaction configuration
//! ([`Maintenance::with_compaction`]), an archive run first compacts every finished
//! partition ([`crate::maintenance::compact::run_pass`]), so the archive holds the merged files.

pub mod config;
pub mod manifest;
pub mod restore;
pub mod status;
pub mod store;
pub mod upload;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use lake_format::custom::TableRef;
use lake_format::layout::{self, Date, PARQUET_EXT};

use crate::ingest::writer::Buffers;
use crate::maintenance::retention::{RetentionConfig, RetentionReport};
use crate::maintenance::swap::{SwapError, Swapper};
use crate::progress::Progress;
use config::ArchiveConfig;
use manifest::{Ledger, PartitionId};
use store::Store;

pub use status::StatusRow;

/// Whether an error may go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Network trouble, 5xx, a failed verification: try again later.
    Retryable,
    /// Configuration, credentials, permissions, a bad request, local disk: retrying the
    /// same call gives the same answer.
    Permanent,
}

/// Errors of archive, retention and restore.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Local file system trouble.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The object store refused or failed.
    #[error("{op} {key}: {source}")]
    Store {
        /// What was being done.
        op: &'static str,
        /// The object key.
        key: String,
        /// Underlying error.
        source: object_store::Error,
    },
    /// A stored object does not match the local file.
    #[error("verifying {key}: {detail}")]
    Verify {
        /// The object key.
        key: String,
        /// What differed.
        detail: String,
    },
    /// A manifest or the ledger does not parse.
    #[error("manifest {what}: {detail}")]
    Manifest {
        /// Which manifest.
        what: String,
        /// Parse error.
        detail: String,
    },
    /// Committing or retiring files failed.
    #[error(transparent)]
    Swap(#[from] SwapError),
    /// An on-demand compaction failed.
    #[error(transparent)]
    Compact(#[from] crate::maintenance::compact::CompactError),
    /// The archive is misconfigured (credentials, paths).
    #[error("{0}")]
    Config(String),
    /// Another maintenance job is running.
    #[error("another maintenance job ({0}) is running; try again when it is done")]
    Busy(String),
    /// The lake is stopping; the job stopped at a safe point and resumes next time.
    #[error("stopped because the lake is shutting down; the next run resumes")]
    Cancelled,
    /// A blocking task panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ArchiveError {
    /// Whether retrying can help.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ArchiveError::Store { source, .. } => store::classify(source),
            ArchiveError::Verify { .. } => ErrorKind::Retryable,
            ArchiveError::Io { source, .. } if source.kind() == std::io::ErrorKind::Interrupted => ErrorKind::Retryable,
            _ => ErrorKind::Permanent,
        }
    }

    pub(crate) fn store<'a>(
        op: &'static str,
        key: &'a object_store::path::Path,
    ) -> impl FnOnce(object_store::Error) -> ArchiveError + 'a {
        move |source| ArchiveError::Store { op, key: key.to_string(), source }
    }

    pub(crate) fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ArchiveError + 'a {
        move |source| ArchiveError::Io { op, path: path.to_path_buf(), source }
    }
}

/// Result of this module.
pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

lake_format::metrics! {
    /// Counters of archive jobs, on `/metrics` (each doc line is its help there) and in
    /// the reports.
    pub struct ArchiveStats {
        /// files uploaded to the archive and verified
        pub files_uploaded: Counter("lake_archive_files_uploaded_total"),
        /// bytes uploaded to the archive and verified
        pub bytes_uploaded: Counter("lake_archive_bytes_uploaded_total"),
        /// files restored from the archive
        pub files_restored: Counter("lake_archive_files_restored_total"),
        /// archive, restore and retention jobs that failed
        pub failures: Counter("lake_archive_failures_total"),
    }
}

/// What an archive run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveReport {
    /// The store.
    pub store: String,
    /// Finished partitions looked at.
    pub partitions: u64,
    /// Partitions whose files are all verified in the archive after the run.
    pub partitions_verified: u64,
    /// Files uploaded and verified by this run.
    pub files_uploaded: u64,
    /// Bytes of those files.
    pub bytes_uploaded: u64,
    /// Of those, files sent as multipart uploads.
    pub multipart_uploads: u64,
    /// Files already verified by an earlier run, not sent again.
    pub files_already_verified: u64,
    /// Archived files deleted from the store because compaction replaced them locally.
    pub files_superseded: u64,
    /// Operations retried after a retryable error.
    pub retries: u64,
    /// Partitions not uploaded because they are past `keep_archive_days`.
    pub partitions_past_archive_retention: u64,
    /// Small files of finished days merged by compaction before the upload.
    #[serde(default)]
    pub files_compacted: u64,
    /// Files compaction wrote in their place.
    #[serde(default)]
    pub files_compacted_into: u64,
    /// What retention did after the upload (the nightly run and `lake archive --now`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionReport>,
}

/// One local file of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// The local content of a partition.
#[derive(Debug, Clone)]
pub struct LocalPartition {
    /// Which partition.
    pub id: PartitionId,
    /// Its committed, not retired files, by name.
    pub files: Vec<LocalFile>,
}

impl LocalPartition {
    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The committed partitions of the lake: `tables/<t>/date=<d>/*.parquet`, skipping
/// hidden files, files retired by a swap (still on disk for running queries), tables
/// not in the catalog and directories that are not partitions. Sorted by (table, date).
pub fn local_partitions(data: &Path, buffers: &Buffers) -> Result<Vec<LocalPartition>> {
    let root = data.join(layout::TABLES_DIR);
    let mut out = Vec::new();
    let tables = match std::fs::read_dir(&root) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(ArchiveError::io("list", &root)(e)),
    };
    for t in tables.flatten() {
        let Ok(table) = TableRef::parse_known(&t.file_name().to_string_lossy()) else { continue };
        let Ok(dates) = std::fs::read_dir(t.path()) else { continue };
        for d in dates.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            let Some(date) = name.strip_prefix("date=").and_then(Date::parse) else { continue };
            let dir = d.path();
            let mut files = Vec::new();
            let entries = std::fs::read_dir(&dir).map_err(ArchiveError::io("list", &dir))?;
            for f in entries.flatten() {
                let fname = f.file_name().to_string_lossy().into_owned();
                if fname.starts_with('.') || !fname.ends_with(&format!(".{PARQUET_EXT}")) {
                    continue;
                }
                let path = f.path();
                if buffers.is_retired(&path) {
                    continue;
                }
                let Ok(meta) = f.metadata() else { continue };
                if meta.is_file() {
                    files.push(LocalFile { name: fname, size: meta.len() });
                }
            }
            files.sort_by(|a, b| a.name.cmp(&b.name));
            out.push(LocalPartition { id: PartitionId { table: table.clone(), date }, files });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The lake's maintenance jobs over one data directory and archive store.
#[derive(Debug)]
pub struct Maintenance {
    pub(crate) data: PathBuf,
    pub(crate) archive: ArchiveConfig,
    pub(crate) retention: RetentionConfig,
    pub(crate) store: Store,
    pub(crate) swapper: Arc<Swapper>,
    /// The retired-file set: files a swap retired are not archived or counted as local.
    pub(crate) buffers: Arc<Buffers>,
    /// Compaction settings: finished partitions are compacted before they are uploaded.
    pub(crate) compaction: Option<crate::maintenance::compact::CompactionConfig>,
    /// Held by the running job (shared with the compactor in `lake serve`); `current` names it.
    job: Arc<tokio::sync::Mutex<()>>,
    current: std::sync::Mutex<&'static str>,
    /// Counters.
    pub stats: ArchiveStats,
}

/// The job lock of a [`Maintenance`], owned so a job can run in its own task.
#[derive(Debug)]
pub struct JobGuard {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Maintenance {
    /// Opens the store. `buffers` is the running lake's (retired files), or a fresh one
    /// offline, where the swapper deletes retired files at once.
    pub fn new(
        data: &Path,
        archive: ArchiveConfig,
        retention: RetentionConfig,
        swapper: Arc<Swapper>,
        buffers: Arc<Buffers>,
    ) -> Result<Maintenance> {
        let store = Store::open(&archive)?;
        Ok(Maintenance::with_store(data, archive, retention, store, swapper, buffers))
    }

    /// Same, with a store already open (tests).
    pub fn with_store(
        data: &Path,
        archive: ArchiveConfig,
        retention: RetentionConfig,
        store: Store,
        swapper: Arc<Swapper>,
        buffers: Arc<Buffers>,
    ) -> Maintenance {
        Maintenance {
            data: data.to_path_buf(),
            archive,
            retention,
            store,
            swapper,
            buffers,
            compaction: None,
            job: Arc::new(tokio::sync::Mutex::new(())),
            current: std::sync::Mutex::new(""),
            stats: ArchiveStats::default(),
        }
    }

    /// Compacts finished partitions before uploading them.
    pub fn with_compaction(mut self, cfg: crate::maintenance::compact::CompactionConfig) -> Self {
        self.compaction = Some(cfg);
        self
    }

    /// Shares the job lock with other maintenance (the compactor), so they never overlap.
    pub fn sharing_jobs(mut self, jobs: Arc<tokio::sync::Mutex<()>>) -> Self {
        self.job = jobs;
        self
    }

    /// The store, described for people.
    pub fn store_description(&self) -> &str {
        self.store.describe()
    }

    /// Takes the job lock without waiting, or says which job holds it.
    pub fn try_job(&self, name: &'static str) -> Result<JobGuard> {
        match Arc::clone(&self.job).try_lock_owned() {
            Ok(g) => {
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = name;
                Ok(JobGuard { _guard: g })
            }
            Err(_) => Err(ArchiveError::Busy(self.current.lock().unwrap_or_else(|p| p.into_inner()).to_string())),
        }
    }

    /// Waits for the job lock (the scheduler).
    pub async fn job(&self, name: &'static str) -> JobGuard {
        let g = Arc::clone(&self.job).lock_owned().await;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = name;
        JobGuard { _guard: g }
    }

    /// Archive, then retention: the nightly run. Call with the job lock held.
    pub async fn nightly(&self, progress: &dyn Progress, cancel: &CancellationToken) -> Result<ArchiveReport> {
        let mut report = self.archive(progress, cancel).await?;
        report.retention = Some(crate::maintenance::retention::run(self, progress, cancel).await?);
        Ok(report)
    }

    /// Uploads every finished partition not yet verified. Call with the job lock held.
    pub async fn archive(&self, progress: &dyn Progress, cancel: &CancellationToken) -> Result<ArchiveReport> {
        let result = upload::run(self, progress, cancel).await;
        if result.is_err() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Brings partitions of `table` from `from` to `to` back. Call with the job lock held.
    pub async fn restore(
        &self,
        req: &restore::RestoreRequest,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<restore::RestoreReport> {
        restore::run(self, req, progress, cancel).await
    }

    /// Compacts the partitions `filter` selects now (`lake compact`; finished days and
    /// settled files of today alike). Call with the job lock held.
    pub async fn compact(
        &self,
        filter: crate::maintenance::compact::Filter,
        progress: &dyn Progress,
    ) -> Result<crate::maintenance::compact::PassReport> {
        let cfg = self.compaction.clone().unwrap_or_default();
        Ok(crate::maintenance::compact::pass_with_progress(
            &self.data,
            &self.swapper,
            &self.buffers,
            &cfg,
            filter,
            progress,
        )
        .await?)
    }

    /// What is where. Needs no job lock (reads the ledger file as it is).
    pub fn status(&self, table: Option<TableRef>) -> Result<Vec<StatusRow>> {
        status::rows(&self.data, &self.buffers, table)
    }

    pub(crate) fn ledger(&self) -> Result<Ledger> {
        Ledger::load(&self.data, self.store.describe())
    }

    /// Runs blocking work (hashing, swaps) off the runtime.
    pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        tokio::task::spawn_blocking(f).await.map_err(|e| ArchiveError::Internal(format!("blocking task: {e}")))?
    }
}

/// The nightly run on the configured schedule until `cancel`; waits for a running
/// on-demand job rather than overlapping it. Does nothing when the archive is disabled.
/// With `jobs`, each run is recorded in the `jobs` table as the job `lake_archive`.
pub async fn run_schedule(
    m: Arc<Maintenance>,
    stats: Arc<crate::maintenance::scheduler::ScheduleStats>,
    jobs: Option<Arc<crate::jobs::Jobs>>,
    cancel: CancellationToken,
) {
    if !m.archive.enabled {
        tracing::info!("archive schedule disabled ([archive] enabled = false)");
        return;
    }
    tracing::info!(schedule = %m.archive.schedule, store = %m.store.describe(), "archive scheduled");
    let schedule = m.archive.schedule.clone();
    crate::maintenance::scheduler::run("archive", schedule, stats, cancel, |child| {
        let m = Arc::clone(&m);
        let jobs = jobs.clone();
        async move {
            let _job = tokio::select! {
                g = m.job("nightly archive") => g,
                _ = child.cancelled() => return Ok(()),
            };
            let run = async {
                let progress = crate::progress::LogProgress::new("archive");
                let report = m.nightly(&progress, &child).await?;
                tracing::info!(
                    uploaded = report.files_uploaded,
                    bytes = report.bytes_uploaded,
                    verified_partitions = report.partitions_verified,
                    evicted = report.retention.as_ref().map_or(0, |r| r.partitions_evicted),
                    "nightly archive done"
                );
                anyhow::Ok(())
            };
            // The run records itself in `jobs` as `lake_archive`, so a `[[jobs]]` entry of
            // that name watches it like any other job.
            match &jobs {
                Some(jobs) => jobs.run_own(crate::jobs::ARCHIVE_JOB, run).await,
                None => run.await,
            }
        }
    })
    .await;
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// sha256 and size of a local file (blocking).
pub(crate) fn sha256_file(path: &Path) -> Result<(String, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(ArchiveError::io("open", path))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(ArchiveError::io("read", path))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(ctx.finish().as_ref()), size))
}

#[cfg(test)]
mod tests;
