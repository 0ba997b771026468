//! What is archived: the lake's ledger and the bucket's partition manifests.
//!
//! # The ledger: `<data>/state/archive.json`
//! Versioned (`{"v1": {...}}`), written atomically (temp, fsync, rename, fsync dir) after
//! **every** verified file, so a crash at any point loses at most the file in flight: the
//! next run uploads again only what the ledger does not list as verified. Per partition
//! (`"<table>/<date>"`) it keeps:
//! - `files`: name → size, sha256 and when the upload was verified. A committed file is
//!   never rewritten in place (flushes and compactions create new names), so name + size
//!   identify the content the sha256 was taken of.
//! - `evicted`: retention deleted the local copy; the archive is the only one. While set,
//!   archived files missing locally are kept (they are not "superseded").
//! - `synced`: the bucket's partition manifest lists exactly `files`.
//! - `restored_until`: `lake restore` brought the partition back; retention leaves it
//!   alone up to and including that date.
//!
//! The ledger names the store it describes; records of another store (the configuration
//! changed) are set aside as `archive.json.previous` and the new store starts empty.
//!
//! # In the bucket: `<prefix>/_lake/partitions/<table>/date=<date>.json`
//! One manifest per partition, written after all its files are verified: the files with
//! size and sha256. `lake restore` reads it, so a lake whose disk was lost can restore
//! from the bucket alone. It lives beside `tables/`, so engines reading
//! `<prefix>/tables/**` never see it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use lake_format::custom::TableRef;
use lake_format::layout::{self, Date};

use super::{ArchiveError, Result};
use lake_format::durable::write_atomic;

/// A table's partition of one day.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    /// The table.
    pub table: TableRef,
    /// The UTC date.
    pub date: Date,
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.table.name(), self.date)
    }
}

impl FromStr for PartitionId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (t, d) = s.split_once('/').ok_or_else(|| format!("{s:?} is not <table>/<date>"))?;
        let table = TableRef::parse_known(t).map_err(|e| e.to_string())?;
        let date = Date::parse(d).ok_or_else(|| format!("bad date {d:?}"))?;
        Ok(PartitionId { table, date })
    }
}

impl PartitionId {
    /// `tables/<table>/date=<date>`: the partition's directory relative to the data
    /// directory, and its key relative to the archive prefix.
    pub fn rel_dir(&self) -> String {
        format!("{}/{}/date={}", layout::TABLES_DIR, self.table.name(), self.date)
    }

    /// `tables/<table>/date=<date>/<name>`.
    pub fn rel_file(&self, name: &str) -> String {
        format!("{}/{name}", self.rel_dir())
    }

    /// `_lake/partitions/<table>/date=<date>.json`, relative to the archive prefix.
    pub fn manifest_key(&self) -> String {
        format!("{}/partitions/{}/date={}.json", super::store::META_DIR, self.table.name(), self.date)
    }
}

/// One archived, verified file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the content, lowercase hex.
    pub sha256: String,
    /// When the stored copy was verified (RFC 3339, UTC).
    pub verified_at: String,
}

/// What the ledger knows of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// Archived files by name.
    #[serde(default)]
    pub files: BTreeMap<String, FileRecord>,
    /// Retention deleted the local copy.
    #[serde(default)]
    pub evicted: bool,
    /// The bucket's manifest matches `files`.
    #[serde(default)]
    pub synced: bool,
    /// Restored by `lake restore`; kept locally through this date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_until: Option<String>,
}

impl PartitionRecord {
    /// The restore protection date, if any.
    pub fn restored_until(&self) -> Option<Date> {
        self.restored_until.as_deref().and_then(Date::parse)
    }

    /// Bytes archived.
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }
}

/// The ledger's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveState {
    /// The store these records describe ([`super::store::Store::describe`]).
    pub store: String,
    /// Partitions by `<table>/<date>`.
    pub partitions: BTreeMap<String, PartitionRecord>,
}

/// The ledger file, versioned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum VersionedArchiveState {
    V1(ArchiveState),
}

/// Path of the ledger.
pub fn ledger_path(data: &Path) -> PathBuf {
    data.join(layout::STATE_DIR).join("archive.json")
}

/// The ledger, loaded for one job (jobs run one at a time, so there is one writer).
#[derive(Debug)]
pub struct Ledger {
    pub(crate) path: PathBuf,
    /// The records.
    pub state: ArchiveState,
}

impl Ledger {
    /// Reads the ledger of `data` for `store`; a missing file is empty.
    pub fn load(data: &Path, store: &str) -> Result<Ledger> {
        let path = ledger_path(data);
        let state = Ledger::read(&path)?;
        let state = match state {
            Some(s) if s.store == store || s.partitions.is_empty() => ArchiveState { store: store.to_string(), ..s },
            Some(s) => {
                let previous = path.with_extension("json.previous");
                tracing::warn!(old = %s.store, new = %store, kept = %previous.display(), "archive store changed; starting a new ledger");
                std::fs::rename(&path, &previous).map_err(|source| ArchiveError::Io {
                    op: "rename",
                    path: path.clone(),
                    source,
                })?;
                ArchiveState { store: store.to_string(), ..ArchiveState::default() }
            }
            None => ArchiveState { store: store.to_string(), ..ArchiveState::default() },
        };
        Ok(Ledger { path, state })
    }

    /// Reads the ledger file as it is (for status); `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<ArchiveState>> {
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<VersionedArchiveState>(&bytes) {
                Ok(VersionedArchiveState::V1(s)) => Ok(Some(s)),
                Err(e) => Err(ArchiveError::Manifest { what: path.display().to_string(), detail: e.to_string() }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ArchiveError::Io { op: "read", path: path.to_path_buf(), source }),
        }
    }

    /// Writes the ledger atomically.
    pub fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&VersionedArchiveState::V1(self.state.clone()))
            .map_err(|e| ArchiveError::Manifest { what: self.path.display().to_string(), detail: e.to_string() })?;
        write_atomic(&self.path, &bytes).map_err(|source| ArchiveError::Io {
            op: "write",
            path: self.path.clone(),
            source,
        })
    }

    /// The record of a partition, if any.
    pub fn get(&self, id: &PartitionId) -> Option<&PartitionRecord> {
        self.state.partitions.get(&id.to_string())
    }

    /// The record of a partition, created empty if needed.
    pub fn entry(&mut self, id: &PartitionId) -> &mut PartitionRecord {
        self.state.partitions.entry(id.to_string()).or_default()
    }

    /// Forgets a partition.
    pub fn remove(&mut self, id: &PartitionId) {
        self.state.partitions.remove(&id.to_string());
    }

    /// Every partition with a parseable id (others are skipped: written by a later lake).
    pub fn partitions(&self) -> Vec<(PartitionId, &PartitionRecord)> {
        self.state.partitions.iter().filter_map(|(k, v)| k.parse().ok().map(|id| (id, v))).collect()
    }
}

/// A partition manifest in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketManifest {
    /// Format version (1).
    pub version: u32,
    /// Table name.
    pub table: String,
    /// Date `YYYY-MM-DD`.
    pub date: String,
    /// The partition's files.
    pub files: Vec<BucketFile>,
    /// When this manifest was written (RFC 3339).
    pub written_at: String,
}

/// One file of a [`BucketManifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketFile {
    /// File name inside the partition.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256, lowercase hex.
    pub sha256: String,
}

impl BucketManifest {
    /// The manifest of a ledger record.
    pub fn of(id: &PartitionId, rec: &PartitionRecord) -> BucketManifest {
        BucketManifest {
            version: 1,
            table: id.table.name().to_string(),
            date: id.date.to_string(),
            files: rec
                .files
                .iter()
                .map(|(n, f)| BucketFile { name: n.clone(), size: f.size, sha256: f.sha256.clone() })
                .collect(),
            written_at: now_rfc3339(),
        }
    }
}

/// The current time, RFC 3339 UTC to the second.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Today's UTC date.
pub fn today() -> Date {
    Date::from_micros(lake_format::rows::now_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_round_trips_and_a_new_store_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let id: PartitionId = "http/2026-11-01".parse().unwrap();
        assert_eq!(id.rel_file("f.parquet"), "tables/http/date=2026-11-01/f.parquet");
        assert_eq!(id.manifest_key(), "_lake/partitions/http/date=2026-11-01.json");
        let mut l = Ledger::load(dir.path(), "file:///a").unwrap();
        l.entry(&id)
            .files
            .insert("f.parquet".into(), FileRecord { size: 3, sha256: "ab".into(), verified_at: now_rfc3339() });
        l.save().unwrap();
        let back = Ledger::load(dir.path(), "file:///a").unwrap();
        assert_eq!(back.state, l.state);
        assert_eq!(back.partitions().len(), 1);
        let text = std::fs::read_to_string(ledger_path(dir.path())).unwrap();
        assert!(text.contains("\"v1\""), "{text}");
        let other = Ledger::load(dir.path(), "s3://b").unwrap();
        assert!(other.state.partitions.is_empty());
        assert!(ledger_path(dir.path()).with_extension("json.previous").exists());
    }
}
