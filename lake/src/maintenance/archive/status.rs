//! `lake archive status`: per table and partition, what is local (files, bytes), what is
//! archived (files, bytes), whether every local file is verified in the archive, and
//! until when a restored partition is kept. Read from the data directory and the
//! ledger only: no call to the store, so it answers at once and offline.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use lake_format::custom::TableRef;

use super::manifest::{ledger_path, Ledger, PartitionId, PartitionRecord};
use super::{local_partitions, LocalPartition, Result};
use crate::ingest::writer::Buffers;

/// One partition's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRow {
    /// Table name.
    pub table: String,
    /// Date `YYYY-MM-DD`.
    pub date: String,
    /// Committed local files.
    pub local_files: u64,
    /// Their bytes.
    pub local_bytes: u64,
    /// Files in the archive (per the ledger).
    pub archived_files: u64,
    /// Their bytes.
    pub archived_bytes: u64,
    /// `yes` (every local file verified in the archive), `partial k/n`, `no`, or
    /// `archive only` (nothing local).
    pub verified: String,
    /// Where the partition is: `local`, `local+archive`, `archive`.
    pub location: String,
    /// Kept locally through this date after a restore.
    pub restored_until: Option<String>,
}

/// The rows, by (table, date); `table` filters.
pub fn rows(data: &Path, buffers: &Buffers, table: Option<TableRef>) -> Result<Vec<StatusRow>> {
    let ledger = Ledger::read(&ledger_path(data))?.unwrap_or_default();
    let mut by_id: BTreeMap<PartitionId, (Option<LocalPartition>, Option<PartitionRecord>)> = BTreeMap::new();
    for p in local_partitions(data, buffers)? {
        if !p.files.is_empty() {
            let id = p.id.clone();
            by_id.entry(id).or_default().0 = Some(p);
        }
    }
    for (k, rec) in ledger.partitions {
        if let Ok(id) = k.parse::<PartitionId>() {
            by_id.entry(id).or_default().1 = Some(rec);
        }
    }
    Ok(by_id
        .into_iter()
        .filter(|(id, _)| table.as_ref().is_none_or(|t| *t == id.table))
        .map(|(id, (local, rec))| row(id, local.as_ref(), rec.as_ref()))
        .collect())
}

fn row(id: PartitionId, local: Option<&LocalPartition>, rec: Option<&PartitionRecord>) -> StatusRow {
    let files = local.map(|l| l.files.as_slice()).unwrap_or_default();
    let archived = rec.map(|r| r.files.len() as u64).unwrap_or(0);
    let verified_local =
        files.iter().filter(|f| rec.and_then(|r| r.files.get(&f.name)).is_some_and(|r| r.size == f.size)).count();
    let verified = match (files.len(), verified_local) {
        (0, _) if archived > 0 => "archive only".to_string(),
        (0, _) => "-".to_string(),
        (n, v) if n == v => "yes".to_string(),
        (_, 0) => "no".to_string(),
        (n, v) => format!("partial {v}/{n}"),
    };
    let location = match (files.is_empty(), archived > 0) {
        (false, true) => "local+archive",
        (false, false) => "local",
        (true, true) => "archive",
        (true, false) => "-",
    };
    StatusRow {
        table: id.table.name().to_string(),
        date: id.date.to_string(),
        local_files: files.len() as u64,
        local_bytes: files.iter().map(|f| f.size).sum(),
        archived_files: archived,
        archived_bytes: rec.map(PartitionRecord::bytes).unwrap_or(0),
        verified,
        location: location.to_string(),
        restored_until: rec.and_then(|r| r.restored_until.clone()),
    }
}

/// The rows as an Arrow batch, for the CLI's table/json/csv output.
pub fn to_batch(rows: &[StatusRow]) -> RecordBatch {
    let text = |f: fn(&StatusRow) -> Option<&str>| Arc::new(rows.iter().map(f).collect::<StringArray>()) as ArrayRef;
    let num = |f: fn(&StatusRow) -> u64| Arc::new(rows.iter().map(f).collect::<UInt64Array>()) as ArrayRef;
    let schema = Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("date", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("local_files", DataType::UInt64, false),
        Field::new("local_bytes", DataType::UInt64, false),
        Field::new("archived_files", DataType::UInt64, false),
        Field::new("archived_bytes", DataType::UInt64, false),
        Field::new("verified", DataType::Utf8, false),
        Field::new("restored_until", DataType::Utf8, true),
    ]);
    let columns = vec![
        text(|r| Some(&r.table)),
        text(|r| Some(&r.date)),
        text(|r| Some(&r.location)),
        num(|r| r.local_files),
        num(|r| r.local_bytes),
        num(|r| r.archived_files),
        num(|r| r.archived_bytes),
        text(|r| Some(&r.verified)),
        text(|r| r.restored_until.as_deref()),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("columns match the schema")
}
