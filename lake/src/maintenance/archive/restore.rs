//! `lake restore`: archived partitions come back so queries cover them again.
//!
//! For each date of the range, the partition's files are taken from its bucket manifest
//! (or, when the bucket has none, from the ledger). Files already local (same name and
//! size, not retired) are kept; the others are downloaded into a swap stage directory,
//! their size and sha256 checked against the manifest, and committed together through
//! the [`crate::maintenance::swap::Swapper`]: a query sees the whole partition or none of it. The
//! ledger then marks the partition `restored_until` today + `keep_days`, so retention
//! does not delete it again before that date.
//!
//! The bucket is not trusted with paths: every manifest is checked when it is read (its
//! table and date are the partition asked for, every file name is one plain
//! `<name>.parquet` component, none twice), and the whole range is planned and checked
//! before the first byte is written, so a manifest naming `../../tokens.toml` fails the
//! restore, naming the manifest and the name, with nothing written anywhere.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use lake_format::custom::TableRef;
use lake_format::layout::Date;

use super::manifest::{today, BucketFile, BucketManifest, FileRecord, PartitionId};
use super::upload::save;
use super::{hex, local_partitions, ArchiveError, Maintenance, Result};
use crate::progress::Progress;

/// Longest range one restore accepts, in days.
pub const MAX_RANGE_DAYS: i64 = 3660;

/// What to restore (the admin API's body, and the CLI's flags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// Table name.
    pub table: String,
    /// First date, `YYYY-MM-DD`.
    pub from: String,
    /// Last date, `YYYY-MM-DD` (inclusive).
    pub to: String,
    /// Days to keep the restored partitions before retention may delete them again
    /// (default `[retention] restored_keep_days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u32>,
}

impl RestoreRequest {
    /// The table and the dates, checked.
    pub fn parse(&self) -> Result<(TableRef, Date, Date), String> {
        let table = TableRef::parse_known(&self.table).map_err(|e| format!("table: {e}"))?;
        let from =
            Date::parse(&self.from).ok_or_else(|| format!("from: {:?} is not a date (YYYY-MM-DD)", self.from))?;
        let to = Date::parse(&self.to).ok_or_else(|| format!("to: {:?} is not a date (YYYY-MM-DD)", self.to))?;
        if to < from {
            return Err(format!("to ({to}) is before from ({from})"));
        }
        if to.to_days() - from.to_days() >= MAX_RANGE_DAYS {
            return Err(format!("the range {from}..{to} is longer than {MAX_RANGE_DAYS} days"));
        }
        Ok((table, from, to))
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// Table restored.
    pub table: String,
    /// Partitions of the range found in the archive.
    pub partitions_archived: u64,
    /// Partitions that got files back.
    pub partitions_restored: u64,
    /// Files downloaded, verified and committed.
    pub files_restored: u64,
    /// Their bytes.
    pub bytes_restored: u64,
    /// Archived files that were still local.
    pub files_already_local: u64,
    /// Dates of the range with nothing archived.
    pub dates_not_archived: Vec<String>,
    /// Retention keeps the restored partitions through this date.
    pub restored_until: String,
}

/// Reads a partition's bucket manifest; `None` when the store has none.
pub(super) async fn fetch_manifest(m: &Maintenance, id: &PartitionId) -> Result<Option<BucketManifest>> {
    let key = m.store.key(&id.manifest_key());
    let bytes = m
        .store
        .retry(&format!("read {key}"), &crate::progress::NoProgress, || async {
            match m.store.inner().get(&key).await {
                Ok(g) => Ok(Some(g.bytes().await.map_err(ArchiveError::store("get", &key))?)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(ArchiveError::store("get", &key)(e)),
            }
        })
        .await?;
    let Some(b) = bytes else { return Ok(None) };
    let bm: BucketManifest = serde_json::from_slice(&b)
        .map_err(|e| ArchiveError::Manifest { what: key.to_string(), detail: e.to_string() })?;
    if bm.table != id.table.name() || bm.date != id.date.to_string() {
        return Err(ArchiveError::Manifest {
            what: key.to_string(),
            detail: format!("describes {}/{}, not the partition {id} it is stored for", bm.table, bm.date),
        });
    }
    check_names(key.as_ref(), bm.files.iter().map(|f| f.name.as_str()))?;
    Ok(Some(bm))
}

/// Every name is a plain data file name (no path, no `..`), and none appears twice: a
/// name from the bucket (or a ledger that adopted one) is joined to local paths.
fn check_names<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if let Err(e) = lake_format::layout::check_file_name(name) {
            return Err(ArchiveError::Manifest {
                what: what.to_string(),
                detail: format!("file name {name:?}: {e}; refusing to write it (nothing was restored)"),
            });
        }
        if !seen.insert(name) {
            return Err(ArchiveError::Manifest {
                what: what.to_string(),
                detail: format!("file name {name:?} is listed twice"),
            });
        }
    }
    Ok(())
}

#[derive(Debug)]
struct Plan {
    id: PartitionId,
    archived: Vec<BucketFile>,
    missing: Vec<BucketFile>,
    from_bucket: bool,
}

pub(super) async fn run(
    m: &Maintenance,
    req: &RestoreRequest,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<RestoreReport> {
    let (table, from, to) = req.parse().map_err(ArchiveError::Config)?;
    let keep = req.keep_days.unwrap_or(m.retention.restored_keep_days);
    let until = Date::from_days(today().to_days() + i64::from(keep));
    let mut ledger = m.ledger()?;
    let (data, buffers) = (m.data.clone(), Arc::clone(&m.buffers));
    let local: HashMap<PartitionId, Vec<super::LocalFile>> =
        Maintenance::blocking(move || local_partitions(&data, &buffers))
            .await?
            .into_iter()
            .map(|p| (p.id, p.files))
            .collect();
    let mut report = RestoreReport {
        table: table.name().to_string(),
        restored_until: until.to_string(),
        ..RestoreReport::default()
    };

    let mut plans = Vec::new();
    for day in from.to_days()..=to.to_days() {
        let id = PartitionId { table: table.clone(), date: Date::from_days(day) };
        let (archived, from_bucket) = match fetch_manifest(m, &id).await? {
            Some(bm) => (bm.files, true),
            None => match ledger.get(&id).filter(|r| !r.files.is_empty()) {
                Some(r) => (
                    r.files
                        .iter()
                        .map(|(n, f)| BucketFile { name: n.clone(), size: f.size, sha256: f.sha256.clone() })
                        .collect(),
                    false,
                ),
                None => {
                    report.dates_not_archived.push(id.date.to_string());
                    continue;
                }
            },
        };
        if !from_bucket {
            check_names(&format!("ledger entry {id}"), archived.iter().map(|f| f.name.as_str()))?;
        }
        let here = local.get(&id).map(Vec::as_slice).unwrap_or_default();
        let missing: Vec<BucketFile> =
            archived.iter().filter(|f| !here.iter().any(|l| l.name == f.name && l.size == f.size)).cloned().collect();
        report.files_already_local += (archived.len() - missing.len()) as u64;
        report.partitions_archived += 1;
        plans.push(Plan { id, archived, missing, from_bucket });
    }

    let files: u64 = plans.iter().map(|p| p.missing.len() as u64).sum();
    let bytes: u64 = plans.iter().flat_map(|p| &p.missing).map(|f| f.size).sum();
    progress.phase("restore", files, bytes);
    for plan in plans {
        if cancel.is_cancelled() {
            return Err(ArchiveError::Cancelled);
        }
        if !plan.missing.is_empty() {
            wait_for_retired(m, &plan.id, &plan.missing, progress).await?;
            let swapper = Arc::clone(&m.swapper);
            let stage = Maintenance::blocking(move || Ok(swapper.stage_dir()?)).await?;
            let mut adds = Vec::new();
            for f in &plan.missing {
                let rel = plan.id.rel_file(&f.name);
                let key = m.store.key(&rel);
                let dest = stage.join(&f.name);
                m.store.retry(&format!("download {key}"), progress, || download(&key, &dest, f, m, progress)).await?;
                adds.push((dest, PathBuf::from(rel)));
                progress.advance(1, 0);
            }
            let n = adds.len() as u64;
            let swapper = Arc::clone(&m.swapper);
            Maintenance::blocking(move || Ok(swapper.commit(adds, Vec::new())?)).await?;
            report.files_restored += n;
            report.bytes_restored += plan.missing.iter().map(|f| f.size).sum::<u64>();
            report.partitions_restored += 1;
            m.stats.files_restored.fetch_add(n, Ordering::Relaxed);
        }
        let entry = ledger.entry(&plan.id);
        if entry.files.is_empty() && plan.from_bucket {
            entry.synced = true;
        }
        for f in plan.archived {
            entry.files.entry(f.name).or_insert(FileRecord {
                size: f.size,
                sha256: f.sha256,
                verified_at: super::manifest::now_rfc3339(),
            });
        }
        // Every archived file is local again: the archive no longer holds any alone.
        entry.evicted = false;
        if entry.restored_until().is_none_or(|d| d < until) {
            entry.restored_until = Some(until.to_string());
        }
        save(&ledger).await?;
    }
    progress.finish();
    Ok(report)
}

/// Longest a restore waits for files retention just removed to be deleted.
const RETIRED_WAIT: std::time::Duration = std::time::Duration::from_secs(900);

/// A partition retention removed moments ago still has its files on disk, retired (hidden
/// from new queries, kept for running ones) until the swapper's grace period ends.
/// Restoring the same names before then would let the pending deletion remove the restored
/// files, so wait for it, sweeping meanwhile.
async fn wait_for_retired(
    m: &Maintenance,
    id: &PartitionId,
    files: &[BucketFile],
    progress: &dyn Progress,
) -> Result<()> {
    let deadline = std::time::Instant::now() + RETIRED_WAIT;
    let mut told = false;
    loop {
        let pending = files.iter().any(|f| m.buffers.is_retired(&m.data.join(id.rel_file(&f.name))));
        if !pending {
            return Ok(());
        }
        if !told {
            progress.message(&format!("{id}: waiting for the files retention just removed to be deleted (running queries may still read them)"));
            told = true;
        }
        if std::time::Instant::now() > deadline {
            return Err(ArchiveError::Busy(format!("deletion of the retired files of {id}")));
        }
        let swapper = Arc::clone(&m.swapper);
        Maintenance::blocking(move || Ok(swapper.sweep()?)).await?;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Downloads one object into `dest`, checking its size and sha256 against the manifest.
async fn download(
    key: &ObjectPath,
    dest: &std::path::Path,
    f: &BucketFile,
    m: &Maintenance,
    progress: &dyn Progress,
) -> Result<()> {
    let get = m.store.inner().get(key).await.map_err(ArchiveError::store("get", key))?;
    let mut stream = get.into_stream();
    let mut file = tokio::fs::File::create(dest).await.map_err(ArchiveError::io("create", dest))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ArchiveError::store("get", key))?;
        ctx.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(ArchiveError::io("write", dest))?;
        progress.advance(0, chunk.len() as u64);
    }
    file.flush().await.map_err(ArchiveError::io("write", dest))?;
    drop(file);
    let sha = hex(ctx.finish().as_ref());
    if size != f.size || sha != f.sha256 {
        return Err(ArchiveError::Verify {
            key: key.to_string(),
            detail: format!(
                "downloaded {size} bytes with sha256 {sha}; the manifest says {} bytes, {}",
                f.size, f.sha256
            ),
        });
    }
    Ok(())
}
