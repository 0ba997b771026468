//! Retention: how long partitions stay on the lake's disk and in the archive.
//!
//! ```toml
//! [retention]
//! keep_local_days = 30        # default: none (keep everything local forever)
//! keep_archive_days = 365     # default: none (keep everything archived forever)
//! restored_keep_days = 7      # default 7: how long `lake restore`d partitions stay
//!
//! [retention.tables.http]     # per table; unset keys fall back to the ones above
//! keep_local_days = 7
//! ```
//! A partition of date `d` is past `keep_local_days = n` when `d < today - n` (UTC): the
//! lake keeps today and the `n` days before it. `0` keeps only today.
//!
//! Local partitions past retention are deleted only when **every** file of theirs is
//! verified in the archive (ledger record with the same size, and the object still
//! there with that size: one HEAD each), never while a restore protects them, and
//! always through [`crate::maintenance::swap::Swapper`] so running queries finish on the files they
//! listed. Partitions past `keep_archive_days` are deleted from the store (files, then
//! the bucket manifest) and forgotten by the ledger.
//!
//! Nothing is deleted by default: a lake that was never told how long to keep data
//! keeps all of it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use lake_format::custom::TableRef;
use lake_format::Table;

use crate::maintenance::archive::manifest::{today, PartitionId};
use crate::maintenance::archive::upload::past;
use crate::maintenance::archive::{local_partitions, ArchiveError, Maintenance, Result};
use crate::progress::Progress;

const fn default_restored_keep_days() -> u32 {
    7
}

/// Keep settings of one table (or the defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablePolicy {
    /// Days a partition stays local after its date; `None` keeps it forever.
    pub keep_local_days: Option<u32>,
    /// Days a partition stays in the archive after its date; `None` keeps it forever.
    pub keep_archive_days: Option<u32>,
}

/// `[retention]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionFile {
    keep_local_days: Option<u32>,
    keep_archive_days: Option<u32>,
    #[serde(default = "default_restored_keep_days")]
    restored_keep_days: u32,
    #[serde(default)]
    tables: HashMap<String, TablePolicy>,
}

impl Default for RetentionFile {
    fn default() -> Self {
        RetentionFile {
            keep_local_days: None,
            keep_archive_days: None,
            restored_keep_days: default_restored_keep_days(),
            tables: HashMap::new(),
        }
    }
}

/// The validated `[retention]` section.
#[derive(Debug, Clone, Default)]
pub struct RetentionConfig {
    /// Applies to tables without their own entry (and fills their unset keys).
    pub default: TablePolicy,
    /// Per-table settings, already merged with the defaults.
    pub tables: HashMap<TableRef, TablePolicy>,
    /// Days restored partitions are kept (default 7).
    pub restored_keep_days: u32,
}

impl RetentionConfig {
    /// The effective policy of a table.
    pub fn policy(&self, table: &TableRef) -> TablePolicy {
        self.tables.get(table).copied().unwrap_or(self.default)
    }
}

impl RetentionFile {
    pub(crate) fn validate(self) -> anyhow::Result<RetentionConfig> {
        let default = TablePolicy { keep_local_days: self.keep_local_days, keep_archive_days: self.keep_archive_days };
        let check = |key: &str, p: TablePolicy| -> anyhow::Result<()> {
            if let (Some(l), Some(a)) = (p.keep_local_days, p.keep_archive_days) {
                if a < l {
                    bail!(
                        "{key}keep_archive_days = {a} is shorter than keep_local_days = {l}: the archive copy would \
                         expire while the local one waits for it (local partitions are only deleted once archived)"
                    );
                }
            }
            Ok(())
        };
        check("retention.", default)?;
        let mut tables = HashMap::new();
        for (name, p) in self.tables {
            let Ok(table) = TableRef::parse_known(&name) else {
                let known: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
                bail!("retention.tables.{name}: not a table name (built-in tables: {}; custom tables are lower-case identifiers)", known.join(", "));
            };
            let merged = TablePolicy {
                keep_local_days: p.keep_local_days.or(default.keep_local_days),
                keep_archive_days: p.keep_archive_days.or(default.keep_archive_days),
            };
            check(&format!("retention.tables.{name}."), merged)?;
            tables.insert(table, merged);
        }
        Ok(RetentionConfig { default, tables, restored_keep_days: self.restored_keep_days })
    }
}

/// What a retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    /// Local partitions deleted (their archive copy verified).
    pub partitions_evicted: u64,
    /// Local files deleted.
    pub files_evicted: u64,
    /// Local bytes freed.
    pub bytes_freed: u64,
    /// Partitions past retention kept because not all their files are verified in the archive.
    pub partitions_kept_not_archived: u64,
    /// Partitions past retention kept because a restore protects them.
    pub partitions_kept_restored: u64,
    /// Partitions deleted from the archive (past `keep_archive_days`).
    pub archive_partitions_expired: u64,
    /// Objects deleted from the archive.
    pub archive_files_deleted: u64,
}

/// Applies retention to the lake and the archive. Call with the job lock held.
pub async fn run(m: &Maintenance, progress: &dyn Progress, cancel: &CancellationToken) -> Result<RetentionReport> {
    let today = today();
    let mut ledger = m.ledger()?;
    let (data, buffers) = (m.data.clone(), Arc::clone(&m.buffers));
    let partitions = Maintenance::blocking(move || local_partitions(&data, &buffers)).await?;
    let mut report = RetentionReport::default();

    let due: Vec<_> = partitions
        .into_iter()
        .filter(|p| !p.files.is_empty() && past(p.id.date, today, m.retention.policy(&p.id.table).keep_local_days))
        .collect();
    progress.phase("retention", due.len() as u64, due.iter().map(|p| p.bytes()).sum());
    for part in due {
        if cancel.is_cancelled() {
            return Err(ArchiveError::Cancelled);
        }
        let id = part.id.clone();
        let rec = ledger.get(&id);
        if rec.and_then(|r| r.restored_until()).is_some_and(|d| d >= today) {
            report.partitions_kept_restored += 1;
            progress.advance(1, part.bytes());
            continue;
        }
        let all_verified =
            part.files.iter().all(|f| rec.and_then(|r| r.files.get(&f.name)).is_some_and(|r| r.size == f.size));
        if !all_verified || !still_archived(m, &id, &part.files).await? {
            report.partitions_kept_not_archived += 1;
            progress.message(&format!("{id}: past retention but not verified in the archive; kept"));
            progress.advance(1, part.bytes());
            continue;
        }
        let removes: Vec<PathBuf> = part.files.iter().map(|f| PathBuf::from(id.rel_file(&f.name))).collect();
        let swapper = Arc::clone(&m.swapper);
        Maintenance::blocking(move || Ok(swapper.commit(Vec::new(), removes)?)).await?;
        let entry = ledger.entry(&id);
        entry.evicted = true;
        entry.restored_until = None;
        crate::maintenance::archive::upload::save(&ledger).await?;
        tracing::info!(partition = %id, files = part.files.len(), bytes = part.bytes(), "local partition deleted after retention; archived copy verified");
        report.partitions_evicted += 1;
        report.files_evicted += part.files.len() as u64;
        report.bytes_freed += part.bytes();
        progress.advance(1, part.bytes());
    }
    progress.finish();

    let expired: Vec<PartitionId> = ledger
        .partitions()
        .into_iter()
        .filter(|(id, rec)| {
            past(id.date, today, m.retention.policy(&id.table).keep_archive_days)
                && rec.restored_until().is_none_or(|d| d < today)
        })
        .map(|(id, _)| id)
        .collect();
    if !expired.is_empty() {
        progress.phase("archive retention", expired.len() as u64, 0);
    }
    for id in expired {
        if cancel.is_cancelled() {
            return Err(ArchiveError::Cancelled);
        }
        let names: Vec<String> = ledger.get(&id).map(|r| r.files.keys().cloned().collect()).unwrap_or_default();
        for name in &names {
            let key = m.store.key(&id.rel_file(name));
            m.store
                .retry(&format!("delete {key}"), progress, || crate::maintenance::archive::upload::delete(m, &key))
                .await?;
            report.archive_files_deleted += 1;
        }
        let key = m.store.key(&id.manifest_key());
        m.store
            .retry(&format!("delete {key}"), progress, || crate::maintenance::archive::upload::delete(m, &key))
            .await?;
        ledger.remove(&id);
        crate::maintenance::archive::upload::save(&ledger).await?;
        report.archive_partitions_expired += 1;
        progress.advance(1, 0);
    }
    Ok(report)
}

/// Whether every file still exists in the store with its size (one HEAD each): the last
/// check before the only local copy goes.
async fn still_archived(
    m: &Maintenance,
    id: &PartitionId,
    files: &[crate::maintenance::archive::LocalFile],
) -> Result<bool> {
    for f in files {
        let key = m.store.key(&id.rel_file(&f.name));
        let head = m
            .store
            .retry(&format!("head {key}"), &crate::progress::NoProgress, || async {
                match m.store.inner().head(&key).await {
                    Ok(meta) => Ok(Some(meta.size)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(ArchiveError::store("head", &key)(e)),
                }
            })
            .await?;
        if head != Some(f.size) {
            tracing::warn!(%key, local = f.size, stored = ?head, "archived copy missing or of another size; local partition kept");
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<RetentionConfig> {
        let f: RetentionFile = toml::from_str(text)?;
        f.validate()
    }

    #[test]
    fn defaults_keep_everything_and_tables_override_key_by_key() {
        let c = parse("").unwrap();
        assert_eq!(c.policy(&Table::Http.into()), TablePolicy::default());
        assert_eq!(c.restored_keep_days, 7);
        let c = parse("keep_local_days = 30\nkeep_archive_days = 365\n[tables.http]\nkeep_local_days = 7").unwrap();
        assert_eq!(
            c.policy(&Table::Http.into()),
            TablePolicy { keep_local_days: Some(7), keep_archive_days: Some(365) }
        );
        assert_eq!(
            c.policy(&Table::Logs.into()),
            TablePolicy { keep_local_days: Some(30), keep_archive_days: Some(365) }
        );
    }

    #[test]
    fn errors_name_the_key() {
        for (text, says) in [
            ("[tables.Htp]\nkeep_local_days = 1", "retention.tables.Htp"),
            ("keep_local_days = 30\nkeep_archive_days = 7", "retention.keep_archive_days"),
            ("keep_archive_days = 7\n[tables.http]\nkeep_local_days = 30", "retention.tables.http.keep_archive_days"),
            ("keep_local_days = -1", "keep_local_days"),
            ("keep_lokal_days = 1", "keep_lokal_days"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(format!("{e:#}").contains(says), "{text}: {e:#}");
        }
    }

    #[test]
    fn past_means_older_than_today_minus_n() {
        let today = lake_format::layout::Date::parse("2026-11-25").unwrap();
        let d = |s| lake_format::layout::Date::parse(s).unwrap();
        assert!(past(d("2026-11-24"), today, Some(0)));
        assert!(!past(d("2026-11-25"), today, Some(0)));
        assert!(!past(d("2026-11-24"), today, Some(1)));
        assert!(past(d("2026-11-23"), today, Some(1)));
        assert!(!past(d("2000-01-01"), today, None));
    }
}
