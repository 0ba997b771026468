//! The archive run: upload, verify and record every finished partition.
//!
//! For each partition of a day before today (UTC), in (table, date) order:
//! 1. Files the ledger lists as verified with the same size are skipped: that is what
//!    makes a run after a crash redo only unverified files.
//! 2. Each other file: sha256 and size are computed from the local file, the file is
//!    uploaded (one PUT up to `multipart_threshold`, a multipart upload of
//!    `multipart_part_size` parts above it, aborted on failure), then verified (read
//!    back and hashed, or HEAD for `verify = "size"`), then recorded in the ledger, which
//!    is saved before the next file starts.
//! 3. Archived files that are no longer local in a partition the archive does not hold
//!    alone were replaced by compaction: they are deleted from the store so engines
//!    reading the bucket never count their rows twice.
//! 4. The partition's bucket manifest is written.
//!
//! A retryable failure is retried ([`super::store::Store::retry`]); a failure that
//! persists ends the run with the error, every file verified so far staying recorded.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use lake_format::layout::Date;

use super::manifest::{now_rfc3339, today, BucketManifest, FileRecord, Ledger, PartitionId};
use super::{hex, local_partitions, ArchiveError, ArchiveReport, LocalFile, LocalPartition, Maintenance, Result};
use crate::maintenance::archive::config::Verify;
use crate::progress::Progress;

/// Parts of one multipart upload in flight at once.
const PART_CONCURRENCY: usize = 4;
/// Read size when streaming a file into a multipart upload.
const READ_CHUNK: usize = 1 << 20;

/// One partition's work.
#[derive(Debug)]
struct Plan {
    part: LocalPartition,
    todo: Vec<LocalFile>,
    superseded: Vec<String>,
}

/// Whether `date` is past `keep` days before `today` (`date < today - keep`).
pub(crate) fn past(date: Date, today: Date, keep: Option<u32>) -> bool {
    keep.is_some_and(|k| date.to_days() < today.to_days() - i64::from(k))
}

pub(super) async fn run(m: &Maintenance, progress: &dyn Progress, cancel: &CancellationToken) -> Result<ArchiveReport> {
    let today = today();
    let compacted = match &m.compaction {
        Some(cfg) => compact_finished(m, cfg, today, progress).await,
        None => crate::maintenance::compact::PassReport::default(),
    };
    let mut ledger = m.ledger()?;
    let retries_before = m.store.retries.load(Ordering::Relaxed);
    let (data, buffers) = (m.data.clone(), Arc::clone(&m.buffers));
    let partitions = Maintenance::blocking(move || local_partitions(&data, &buffers)).await?;
    let mut report = ArchiveReport {
        store: m.store.describe().to_string(),
        files_compacted: compacted.files_in as u64,
        files_compacted_into: compacted.bins as u64,
        ..ArchiveReport::default()
    };

    let mut plans = Vec::new();
    let mut adopted = false;
    for part in partitions {
        if part.id.date >= today || part.files.is_empty() {
            continue;
        }
        if past(part.id.date, today, m.retention.policy(&part.id.table).keep_archive_days) {
            report.partitions_past_archive_retention += 1;
            continue;
        }
        report.partitions += 1;
        if ledger.get(&part.id).is_none() {
            adopted |= adopt_bucket_manifest(m, &mut ledger, &part).await?;
        }
        let rec = ledger.get(&part.id);
        let verified = |f: &LocalFile| rec.and_then(|r| r.files.get(&f.name)).is_some_and(|r| r.size == f.size);
        let todo: Vec<LocalFile> = part.files.iter().filter(|f| !verified(f)).cloned().collect();
        report.files_already_verified += (part.files.len() - todo.len()) as u64;
        let superseded: Vec<String> = match rec {
            Some(r) if !r.evicted => {
                r.files.keys().filter(|n| !part.files.iter().any(|f| &f.name == *n)).cloned().collect()
            }
            _ => Vec::new(),
        };
        let synced = rec.is_some_and(|r| r.synced);
        if todo.is_empty() && superseded.is_empty() && synced {
            report.partitions_verified += 1;
            continue;
        }
        plans.push(Plan { part, todo, superseded });
    }

    if adopted {
        save(&ledger).await?;
    }
    let files: u64 = plans.iter().map(|p| p.todo.len() as u64).sum();
    let bytes: u64 = plans.iter().flat_map(|p| &p.todo).map(|f| f.size).sum();
    progress.phase("archive", files, bytes);
    for plan in plans {
        let id = plan.part.id;
        for f in &plan.todo {
            if cancel.is_cancelled() {
                return Err(ArchiveError::Cancelled);
            }
            let what = format!("upload {}", id.rel_file(&f.name));
            let (rec, multipart) = m.store.retry(&what, progress, || upload_file(m, &id, f, progress)).await?;
            report.files_uploaded += 1;
            report.bytes_uploaded += rec.size;
            report.multipart_uploads += u64::from(multipart);
            m.stats.files_uploaded.fetch_add(1, Ordering::Relaxed);
            m.stats.bytes_uploaded.fetch_add(rec.size, Ordering::Relaxed);
            let entry = ledger.entry(&id);
            entry.files.insert(f.name.clone(), rec);
            entry.synced = false;
            save(&ledger).await?;
            progress.advance(1, 0);
        }
        for name in &plan.superseded {
            let key = m.store.key(&id.rel_file(name));
            m.store.retry(&format!("delete {key}"), progress, || delete(m, &key)).await?;
            report.files_superseded += 1;
            let entry = ledger.entry(&id);
            entry.files.remove(name);
            entry.synced = false;
            save(&ledger).await?;
        }
        write_bucket_manifest(m, &mut ledger, &id, progress).await?;
        report.partitions_verified += 1;
    }
    progress.finish();
    report.retries = m.store.retries.load(Ordering::Relaxed) - retries_before;
    Ok(report)
}

/// Compacts the partitions of finished days, so the archive holds merged files. A failed
/// merge keeps its files (they are archived as they are); the run goes on either way.
async fn compact_finished(
    m: &Maintenance,
    cfg: &crate::maintenance::compact::CompactionConfig,
    today: Date,
    progress: &dyn Progress,
) -> crate::maintenance::compact::PassReport {
    let filter =
        crate::maintenance::compact::Filter { table: None, from: None, to: Some(Date::from_days(today.to_days() - 1)) };
    let report =
        match crate::maintenance::compact::pass_with_progress(&m.data, &m.swapper, &m.buffers, cfg, filter, progress)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                progress
                    .message(&format!("compaction before the upload failed ({e}); archiving the files as they are"));
                crate::maintenance::compact::PassReport::default()
            }
        };
    if report.files_in > 0 || report.failures > 0 {
        progress.message(&format!(
            "compacted {} files of finished days into {} ({} merges failed; their files are archived as they are)",
            report.files_in, report.bins, report.failures
        ));
    }
    report
}

/// Saves the ledger off the runtime (it fsyncs).
pub(crate) async fn save(ledger: &Ledger) -> Result<()> {
    // The ledger is small (a record per archived file); a copy keeps the borrow simple.
    let copy = Ledger { path: ledger.path.clone(), state: ledger.state.clone() };
    Maintenance::blocking(move || copy.save()).await
}

/// A partition the ledger does not know may still be in the store (the ledger was lost,
/// or another lake archived it): take over its manifest, so its files are not uploaded
/// again, and mark the archive as holding files that may not be local.
async fn adopt_bucket_manifest(m: &Maintenance, ledger: &mut Ledger, part: &LocalPartition) -> Result<bool> {
    let Some(bm) = super::restore::fetch_manifest(m, &part.id).await? else { return Ok(false) };
    let entry = ledger.entry(&part.id);
    entry.evicted = bm.files.iter().any(|f| !part.files.iter().any(|l| l.name == f.name));
    for f in bm.files {
        entry.files.insert(f.name, FileRecord { size: f.size, sha256: f.sha256, verified_at: bm.written_at.clone() });
    }
    entry.synced = true;
    Ok(true)
}

/// Writes the partition's manifest to the store and marks the ledger in sync.
pub(super) async fn write_bucket_manifest(
    m: &Maintenance,
    ledger: &mut Ledger,
    id: &PartitionId,
    progress: &dyn Progress,
) -> Result<()> {
    let Some(rec) = ledger.get(id) else { return Ok(()) };
    let body = serde_json::to_vec_pretty(&BucketManifest::of(id, rec))
        .map_err(|e| ArchiveError::Manifest { what: id.manifest_key(), detail: e.to_string() })?;
    let key = m.store.key(&id.manifest_key());
    let body = Bytes::from(body);
    m.store
        .retry(&format!("write {key}"), progress, || async {
            m.store
                .inner()
                .put(&key, PutPayload::from(body.clone()))
                .await
                .map_err(ArchiveError::store("put", &key))?;
            Ok(())
        })
        .await?;
    ledger.entry(id).synced = true;
    save(ledger).await
}

/// Deletes an object; a missing one is fine.
pub(crate) async fn delete(m: &Maintenance, key: &ObjectPath) -> Result<()> {
    match m.store.inner().delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(ArchiveError::store("delete", key)(e)),
    }
}

/// Uploads one file and verifies the stored copy. Returns its record and whether the
/// upload was multipart.
async fn upload_file(
    m: &Maintenance,
    id: &PartitionId,
    f: &LocalFile,
    progress: &dyn Progress,
) -> Result<(FileRecord, bool)> {
    let rel = id.rel_file(&f.name);
    let path = m.data.join(&rel);
    let key = m.store.key(&rel);
    let multipart = f.size > m.archive.multipart_threshold;
    let (sha, size) = if multipart {
        let p = path.clone();
        let (sha, size) = Maintenance::blocking(move || super::sha256_file(&p)).await?;
        put_multipart(m, &path, &key, size, progress).await?;
        (sha, size)
    } else {
        let bytes = tokio::fs::read(&path).await.map_err(ArchiveError::io("read", &path))?;
        let sha = hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
        let size = bytes.len() as u64;
        m.store
            .inner()
            .put(&key, PutPayload::from(Bytes::from(bytes)))
            .await
            .map_err(ArchiveError::store("put", &key))?;
        progress.advance(0, size);
        (sha, size)
    };
    if size != f.size {
        return Err(ArchiveError::Verify {
            key: key.to_string(),
            detail: format!("local file changed size ({} then {size} bytes)", f.size),
        });
    }
    verify(m, &key, size, &sha).await?;
    Ok((FileRecord { size, sha256: sha, verified_at: now_rfc3339() }, multipart))
}

/// Streams a file into a multipart upload; aborts the upload on failure.
async fn put_multipart(
    m: &Maintenance,
    path: &std::path::Path,
    key: &ObjectPath,
    size: u64,
    progress: &dyn Progress,
) -> Result<()> {
    let upload =
        m.store.inner().put_multipart(key).await.map_err(ArchiveError::store("start multipart upload", key))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, m.archive.part_size);
    let result: Result<u64> = async {
        let mut file = tokio::fs::File::open(path).await.map_err(ArchiveError::io("open", path))?;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut sent = 0u64;
        loop {
            let n = file.read(&mut buf).await.map_err(ArchiveError::io("read", path))?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(PART_CONCURRENCY).await.map_err(ArchiveError::store("upload part", key))?;
            writer.write(&buf[..n]);
            sent += n as u64;
            progress.advance(0, n as u64);
        }
        Ok(sent)
    }
    .await;
    match result {
        Ok(sent) if sent == size => {
            writer.finish().await.map_err(ArchiveError::store("complete multipart upload", key))?;
            Ok(())
        }
        Ok(sent) => {
            let _ = writer.abort().await;
            Err(ArchiveError::Verify {
                key: key.to_string(),
                detail: format!("local file changed size ({size} then {sent} bytes)"),
            })
        }
        Err(e) => {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(%key, error = %abort, "aborting a failed multipart upload failed; the store expires it");
            }
            Err(e)
        }
    }
}

/// Checks the stored object against the local size and sha256.
async fn verify(m: &Maintenance, key: &ObjectPath, size: u64, sha: &str) -> Result<()> {
    let mismatch = |detail: String| ArchiveError::Verify { key: key.to_string(), detail };
    match m.archive.verify {
        Verify::Size => {
            let meta = m.store.inner().head(key).await.map_err(ArchiveError::store("head", key))?;
            if meta.size != size {
                return Err(mismatch(format!("stored size {} differs from local {size}", meta.size)));
            }
        }
        Verify::ReadBack => {
            let (got_sha, got_size) = read_back(m, key).await?;
            if got_size != size {
                return Err(mismatch(format!("stored size {got_size} differs from local {size}")));
            }
            if got_sha != sha {
                return Err(mismatch(format!("stored sha256 {got_sha} differs from local {sha}")));
            }
        }
    }
    Ok(())
}

/// sha256 and size of a stored object, streamed.
async fn read_back(m: &Maintenance, key: &ObjectPath) -> Result<(String, u64)> {
    let get = m.store.inner().get(key).await.map_err(ArchiveError::store("get", key))?;
    let mut stream = get.into_stream();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ArchiveError::store("get", key))?;
        ctx.update(&chunk);
        size += chunk.len() as u64;
    }
    Ok((hex(ctx.finish().as_ref()), size))
}
