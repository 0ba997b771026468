//! Atomic replacement of committed files, for compaction, retention and restore.
//!
//! A swap adds staged files to partitions and removes others as one step for queries.
//!
//! # Protocol
//! 1. The caller writes new files under [`Swapper::stage_dir`] (`<data>/staging/swap-<id>/`).
//! 2. [`Swapper::commit`] fsyncs them and writes `<data>/staging/swap-<n>.json` (adds and
//!    removes, relative to the data directory) atomically: **the commit point**.
//! 3. Under the writer's visibility lock (the one queries hold while they list files),
//!    the adds are renamed into their partitions and the removes are marked retired:
//!    from then on listings skip them ([`lake_query::engine::FreshRows::is_retired`]),
//!    so a query sees either the old files or the new ones, never both or neither.
//! 4. Retired files stay on disk for a grace period longer than any query may run
//!    (queries are interrupted at their time limit), because a query that listed them
//!    before the swap still reads them. [`Swapper::sweep`] then deletes them and the
//!    manifest, again under the visibility lock so a flush never races an empty
//!    partition directory's removal.
//!
//! On start ([`Swapper::open`]) no query runs: every manifest left by a crash is rolled
//! forward at once (renames are idempotent, deletions of missing files are fine) and
//! staging directories without a manifest are discarded.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use lake_format::layout;

use crate::ingest::writer::Buffers;
use lake_format::durable::{sync_dir, write_atomic};

/// Errors of a swap.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// File system trouble.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path concerned.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// A path outside the places a swap may touch (a bug in the caller).
    #[error("swap refused: {0}")]
    BadPath(String),
}

type Result<T, E = SwapError> = std::result::Result<T, E>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SwapError + 'a {
    move |source| SwapError::Io { op, path: path.to_path_buf(), source }
}

const MANIFEST_PREFIX: &str = "swap-";

/// The on-disk record of one swap, versioned.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum SwapManifest {
    #[serde(rename = "1")]
    V1 {
        /// (staged file, final file), relative to the data directory.
        adds: Vec<(PathBuf, PathBuf)>,
        /// Committed files to retire, relative to the data directory.
        removes: Vec<PathBuf>,
    },
}

#[derive(Debug)]
struct Pending {
    due: Instant,
    manifest: PathBuf,
    removes: Vec<PathBuf>,
}

/// Commits swaps and deletes retired files once no query can still read them.
#[derive(Debug)]
pub struct Swapper {
    data: PathBuf,
    grace: Duration,
    buffers: Arc<Buffers>,
    pending: Mutex<Vec<Pending>>,
    next: AtomicU64,
}

/// `tables/<t>/date=…/<file>` of a path (absolute or relative): the key of the retired set.
pub(crate) fn file_key(path: &Path) -> Option<String> {
    let parts: Vec<&str> = path.components().rev().take(4).filter_map(|c| c.as_os_str().to_str()).collect();
    (parts.len() == 4 && parts[3] == layout::TABLES_DIR)
        .then(|| format!("{}/{}/{}/{}", parts[3], parts[2], parts[1], parts[0]))
}

/// A relative path of the form `tables/<t>/date=…/<file>.parquet`, with no `..`.
fn check_committed(p: &Path) -> Result<()> {
    let normal = p.components().all(|c| matches!(c, Component::Normal(_)));
    let key = file_key(p);
    if normal
        && key.as_deref().is_some_and(|k| Path::new(k) == p)
        && p.extension().is_some_and(|e| e == layout::PARQUET_EXT)
    {
        Ok(())
    } else {
        Err(SwapError::BadPath(format!("{} is not tables/<table>/date=…/<file>.parquet", p.display())))
    }
}

impl Swapper {
    /// A swapper for offline use (no lake process serves queries on `data`): swaps apply
    /// at once and retired files are deleted after `grace` (zero is fine offline).
    pub fn open(data: &Path, grace: Duration) -> Result<Swapper> {
        Swapper::with_buffers(data, grace, Arc::new(Buffers::default()))
    }

    /// The server's swapper, sharing the visibility lock and retired set of `buffers`.
    /// Rolls forward what a crash left behind; call before queries are served.
    pub fn with_buffers(data: &Path, grace: Duration, buffers: Arc<Buffers>) -> Result<Swapper> {
        let s = Swapper {
            data: data.to_path_buf(),
            grace,
            buffers,
            pending: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
        };
        s.recover()?;
        Ok(s)
    }

    fn staging(&self) -> PathBuf {
        self.data.join(layout::STAGING_DIR)
    }

    fn fresh_id(&self) -> String {
        let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros();
        format!("{MANIFEST_PREFIX}{micros:020}-{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// A new, empty directory under `<data>/staging/` for files to commit with
    /// [`Swapper::commit`]. Discarded by the next start if never committed.
    pub fn stage_dir(&self) -> Result<PathBuf> {
        let dir = self.staging().join(self.fresh_id());
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(dir)
    }

    /// Adds `adds` (staged file under a [`Swapper::stage_dir`], final path relative to
    /// the data directory) and retires `removes` (relative), atomically for queries and
    /// durably across crashes. Blocking.
    pub fn commit(&self, adds: Vec<(PathBuf, PathBuf)>, removes: Vec<PathBuf>) -> Result<()> {
        let staging = self.staging();
        let mut rel_adds = Vec::with_capacity(adds.len());
        let mut stage_dirs: Vec<PathBuf> = Vec::new();
        for (staged, fin) in adds {
            check_committed(&fin)?;
            let rel = staged.strip_prefix(&self.data).map(Path::to_path_buf).unwrap_or(staged.clone());
            let abs = self.data.join(&rel);
            if !abs.starts_with(&staging) || abs.parent() == Some(staging.as_path()) {
                return Err(SwapError::BadPath(format!("{} is not inside a stage directory", staged.display())));
            }
            fs::File::open(&abs).and_then(|f| f.sync_all()).map_err(io_err("fsync", &abs))?;
            let dir = abs.parent().expect("checked above").to_path_buf();
            if !stage_dirs.contains(&dir) {
                stage_dirs.push(dir);
            }
            rel_adds.push((rel, fin));
        }
        for r in &removes {
            check_committed(r)?;
        }
        for d in &stage_dirs {
            sync_dir(d).map_err(io_err("fsync", d))?;
        }
        let manifest_path = staging.join(format!("{}.json", self.fresh_id()));
        let manifest = SwapManifest::V1 { adds: rel_adds, removes };
        let bytes = serde_json::to_vec(&manifest).map_err(|e| io_err("encode", &manifest_path)(io::Error::other(e)))?;
        write_atomic(&manifest_path, &bytes).map_err(io_err("write", &manifest_path))?;
        let SwapManifest::V1 { adds, removes } = manifest;
        {
            let _exclusive = self.buffers.exclusive();
            apply_adds(&self.data, &adds)?;
            self.buffers.retire(removes.iter().filter_map(|p| file_key(p)));
        }
        for d in stage_dirs {
            if d.starts_with(&staging) && d != staging {
                let _ = fs::remove_dir_all(&d);
            }
        }
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).push(Pending {
            due: Instant::now() + self.grace,
            manifest: manifest_path,
            removes,
        });
        if self.grace.is_zero() {
            self.sweep()?;
        }
        Ok(())
    }

    /// Deletes retired files whose grace period is over. Returns how many were deleted.
    pub fn sweep(&self) -> Result<usize> {
        let due: Vec<Pending> = {
            let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let (due, keep) = std::mem::take(&mut *g).into_iter().partition(|p| p.due <= now);
            *g = keep;
            due
        };
        let mut deleted = 0;
        for p in due {
            let result = {
                let _exclusive = self.buffers.exclusive();
                delete_removes(&self.data, &p.removes)
            };
            match result {
                Ok(n) => {
                    deleted += n;
                    fs::remove_file(&p.manifest).map_err(io_err("remove", &p.manifest))?;
                    self.buffers.unretire(p.removes.iter().filter_map(|r| file_key(r)));
                }
                Err(e) => {
                    // Kept retired and retried at the next sweep: still hidden from queries.
                    self.pending.lock().unwrap_or_else(|p| p.into_inner()).push(p);
                    return Err(e);
                }
            }
        }
        Ok(deleted)
    }

    /// Swaps committed but whose retired files are not deleted yet.
    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn recover(&self) -> Result<()> {
        let staging = self.staging();
        fs::create_dir_all(&staging).map_err(io_err("create", &staging))?;
        let mut entries: Vec<PathBuf> = fs::read_dir(&staging)
            .map_err(io_err("list", &staging))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(MANIFEST_PREFIX)))
            .collect();
        entries.sort();
        for m in entries.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
            let bytes = fs::read(m).map_err(io_err("read", m))?;
            match serde_json::from_slice::<SwapManifest>(&bytes) {
                Ok(SwapManifest::V1 { adds, removes }) => {
                    tracing::warn!(manifest = %m.display(), "completing a swap interrupted by a stop");
                    apply_adds(&self.data, &adds)?;
                    delete_removes(&self.data, &removes)?;
                    fs::remove_file(m).map_err(io_err("remove", m))?;
                }
                Err(e) => tracing::error!(manifest = %m.display(), %e, "unreadable swap manifest left in place"),
            }
        }
        // Stage directories whose swap never reached its commit point.
        for p in entries.iter().filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "tmp")) {
            tracing::info!(path = %p.display(), "removing uncommitted swap staging data");
            if p.is_dir() { fs::remove_dir_all(p) } else { fs::remove_file(p) }.map_err(io_err("remove", p))?;
        }
        Ok(())
    }
}

/// Renames staged files into their partitions (creating and fsyncing directories);
/// safe to repeat. Shared with the writer's flush commit.
pub(crate) fn apply_adds(data: &Path, adds: &[(PathBuf, PathBuf)]) -> Result<()> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (staged, fin) in adds {
        let (staged, fin) = (data.join(staged), data.join(fin));
        let dir = fin.parent().expect("checked: tables/<t>/date=…/<file>").to_path_buf();
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            let table_dir = dir.parent().expect("table dir");
            sync_dir(table_dir).map_err(io_err("fsync", table_dir))?;
        }
        if staged.exists() {
            fs::rename(&staged, &fin).map_err(io_err("rename", &staged))?;
        }
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    for d in &dirs {
        sync_dir(d).map_err(io_err("fsync", d))?;
    }
    Ok(())
}

/// Deletes retired files (missing ones are fine) and partition directories left empty.
fn delete_removes(data: &Path, removes: &[PathBuf]) -> Result<usize> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut n = 0;
    for r in removes {
        let p = data.join(r);
        match fs::remove_file(&p) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &p)(e)),
        }
        let dir = p.parent().expect("checked").to_path_buf();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    for d in dirs {
        // Only succeeds when empty: a partition that kept or gained files stays.
        if fs::remove_dir(&d).is_ok() {
            if let Some(t) = d.parent() {
                let _ = sync_dir(t);
            }
        } else if d.exists() {
            sync_dir(&d).map_err(io_err("fsync", &d))?;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
