//! Archive, retention and restore against a local-directory store (no peer needed).
//! The same flows against a real S3-protocol server are in `lake/tests/archive_s3.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lake_format::layout::{self, Date};
use lake_format::rows::MetricsBuilder;
use lake_format::Table;
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::config::{ArchiveConfig, StoreConfig};
use super::manifest::{ledger_path, today, Ledger, PartitionId};
use super::restore::RestoreRequest;
use super::*;
use crate::ingest::state::State;
use crate::maintenance::retention::{RetentionConfig, TablePolicy};
use crate::progress::NoProgress;

const DAY: i64 = 86_400_000_000;

struct Lake {
    _dir: tempfile::TempDir,
    data: PathBuf,
    archive_dir: PathBuf,
    next_flush: u64,
}

impl Lake {
    fn new() -> Lake {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let archive_dir = dir.path().join("archive");
        std::fs::create_dir_all(&data).unwrap();
        Lake { _dir: dir, data, archive_dir, next_flush: 0 }
    }

    /// One flush of `n` metric rows on each of the given days before today.
    fn flush(&mut self, days_ago: &[i64], n: usize) {
        let today = today().to_days();
        let mut b = MetricsBuilder::new();
        for d in days_ago {
            for i in 0..n {
                b.push((today - d) * DAY + 3_600_000_000 + i as i64, "h", "x", i as f64, &[]);
            }
        }
        let taken = HashMap::from([(Table::Metrics.into(), vec![b.finish()])]);
        let state = State { next_flush: self.next_flush + 1, ..Default::default() };
        crate::ingest::writer::write_flush(&self.data, self.next_flush, &taken, &state, &Buffers::default()).unwrap();
        self.next_flush += 1;
    }

    fn maintenance(&self, keep_local: Option<u32>, tweak: impl FnOnce(&mut ArchiveConfig)) -> Maintenance {
        let mut archive = ArchiveConfig::defaults(&self.data);
        archive.store = StoreConfig::Local { path: self.archive_dir.clone() };
        tweak(&mut archive);
        let retention = RetentionConfig {
            default: TablePolicy { keep_local_days: keep_local, keep_archive_days: None },
            ..RetentionConfig::default()
        };
        let swapper = Arc::new(crate::maintenance::swap::Swapper::open(&self.data, Duration::ZERO).unwrap());
        Maintenance::new(&self.data, archive, retention, swapper, Arc::new(Buffers::default())).unwrap()
    }

    /// Rows per partition, read from the local Parquet files.
    fn rows(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for p in local_partitions(&self.data, &Buffers::default()).unwrap() {
            let mut n = 0;
            for f in &p.files {
                let path = self.data.join(p.id.rel_file(&f.name));
                n += SerializedFileReader::new(std::fs::File::open(path).unwrap())
                    .unwrap()
                    .metadata()
                    .file_metadata()
                    .num_rows();
            }
            if n > 0 {
                out.insert(p.id.to_string(), n);
            }
        }
        out
    }
}

fn id(days_ago: i64) -> PartitionId {
    PartitionId { table: Table::Metrics.into(), date: Date::from_days(today().to_days() - days_ago) }
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn archives_finished_days_verifies_resumes_evicts_and_restores() {
    let mut lake = Lake::new();
    lake.flush(&[5, 4, 3], 100);
    lake.flush(&[5, 0], 50); // a second file in day -5; today's partition is not archived
    let before = lake.rows();
    let m = lake.maintenance(Some(3), |_| {});
    let cancel = CancellationToken::new();

    let r = block(m.archive(&NoProgress, &cancel)).unwrap();
    assert_eq!((r.partitions, r.partitions_verified, r.files_uploaded, r.files_already_verified), (3, 3, 4, 0));
    for (days, file) in [(5, 0), (5, 1), (4, 0), (3, 0)] {
        let rel = id(days).rel_file(&layout::file_name("f", file));
        let (a, b) =
            (std::fs::read(lake.data.join(&rel)).unwrap(), std::fs::read(lake.archive_dir.join(&rel)).unwrap());
        assert!(a == b, "{rel} differs in the archive");
    }
    assert!(lake.archive_dir.join(id(5).manifest_key()).exists());
    assert!(!lake.archive_dir.join(id(0).rel_dir()).exists(), "today's partition was archived");

    // Everything verified: a second run uploads nothing.
    let r = block(m.archive(&NoProgress, &cancel)).unwrap();
    assert_eq!((r.files_uploaded, r.files_already_verified), (0, 4));

    // A crash after one upload but before its ledger record: only that file is redone.
    let mut ledger = Ledger::load(&lake.data, m.store_description()).unwrap();
    ledger.entry(&id(4)).files.clear();
    ledger.save().unwrap();
    let r = block(m.archive(&NoProgress, &cancel)).unwrap();
    assert_eq!((r.files_uploaded, r.files_already_verified), (1, 3));

    // Retention keeps today and 3 days back: day -5 and -4 go, -3 stays.
    let rr = block(crate::maintenance::retention::run(&m, &NoProgress, &cancel)).unwrap();
    assert_eq!((rr.partitions_evicted, rr.files_evicted), (2, 3));
    let after: Vec<String> = lake.rows().into_keys().collect();
    assert_eq!(after, vec![id(3).to_string(), id(0).to_string()]);
    let rows = m.status(None).unwrap();
    let r5 = rows.iter().find(|r| r.date == id(5).date.to_string()).unwrap();
    assert_eq!(
        (r5.local_files, r5.archived_files, r5.verified.as_str(), r5.location.as_str()),
        (0, 2, "archive only", "archive")
    );

    // Restore brings both back byte for byte, and protects them from retention.
    let req = RestoreRequest {
        table: "metrics".into(),
        from: id(6).date.to_string(),
        to: id(4).date.to_string(),
        keep_days: Some(2),
    };
    let rep = block(m.restore(&req, &NoProgress, &cancel)).unwrap();
    assert_eq!((rep.partitions_archived, rep.files_restored, rep.dates_not_archived.len()), (2, 3, 1));
    assert_eq!(lake.rows(), before);
    let rr = block(crate::maintenance::retention::run(&m, &NoProgress, &cancel)).unwrap();
    assert_eq!((rr.partitions_evicted, rr.partitions_kept_restored), (0, 2));
    let s = m.status(Some(Table::Metrics.into())).unwrap();
    let r5 = s.iter().find(|r| r.date == id(5).date.to_string()).unwrap();
    assert_eq!(
        (r5.verified.as_str(), r5.restored_until.clone()),
        ("yes", Some(Date::from_days(today().to_days() + 2).to_string()))
    );
}

#[test]
fn keeps_partitions_not_verified_and_removes_files_compaction_replaced() {
    let mut lake = Lake::new();
    lake.flush(&[10], 20);
    lake.flush(&[10], 30);
    let m = lake.maintenance(Some(1), |_| {});
    let cancel = CancellationToken::new();
    block(m.archive(&NoProgress, &cancel)).unwrap();

    // A late file arrives in the archived day: retention must keep the partition.
    lake.flush(&[10], 5);
    let rr = block(crate::maintenance::retention::run(&m, &NoProgress, &cancel)).unwrap();
    assert_eq!((rr.partitions_evicted, rr.partitions_kept_not_archived), (0, 1));

    // "Compaction" replaces the three files with one.
    let dir = lake.data.join(id(10).rel_dir());
    let stage = m.swapper.stage_dir().unwrap();
    let merged = stage.join("c.parquet");
    std::fs::copy(dir.join(layout::file_name("f", 0)), &merged).unwrap();
    let removes: Vec<PathBuf> = (0..3).map(|n| PathBuf::from(id(10).rel_file(&layout::file_name("f", n)))).collect();
    m.swapper.commit(vec![(merged, PathBuf::from(id(10).rel_file("c-000000000000.parquet")))], removes).unwrap();

    let r = block(m.archive(&NoProgress, &cancel)).unwrap();
    assert_eq!((r.files_uploaded, r.files_superseded), (1, 2));
    let mut names: Vec<String> = std::fs::read_dir(lake.archive_dir.join(id(10).rel_dir()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["c-000000000000.parquet"]);
    let manifest: manifest::BucketManifest =
        serde_json::from_slice(&std::fs::read(lake.archive_dir.join(id(10).manifest_key())).unwrap()).unwrap();
    assert_eq!(manifest.files.len(), 1);
    let rr = block(crate::maintenance::retention::run(&m, &NoProgress, &cancel)).unwrap();
    assert_eq!(rr.partitions_evicted, 1);
}

#[test]
fn multipart_uploads_and_a_damaged_copy_is_caught() {
    let mut lake = Lake::new();
    lake.flush(&[2], 2000);
    let m = lake.maintenance(Some(0), |a| a.multipart_threshold = 1024);
    let cancel = CancellationToken::new();
    let r = block(m.archive(&NoProgress, &cancel)).unwrap();
    assert_eq!((r.files_uploaded, r.multipart_uploads), (1, 1));
    let rel = id(2).rel_file(&layout::file_name("f", 0));
    assert_eq!(std::fs::read(lake.data.join(&rel)).unwrap(), std::fs::read(lake.archive_dir.join(&rel)).unwrap());

    // A copy damaged in the store: retention refuses to delete the only good copy …
    std::fs::write(lake.archive_dir.join(&rel), b"PAR1 not any more").unwrap();
    let rr = block(crate::maintenance::retention::run(&m, &NoProgress, &cancel)).unwrap();
    assert_eq!((rr.partitions_evicted, rr.partitions_kept_not_archived), (0, 1));
    // … and once the local copy is gone anyway, restore refuses the damaged object.
    std::fs::remove_file(lake.data.join(&rel)).unwrap();
    let req = RestoreRequest {
        table: "metrics".into(),
        from: id(2).date.to_string(),
        to: id(2).date.to_string(),
        keep_days: None,
    };
    let e = block(m.restore(&req, &NoProgress, &cancel)).unwrap_err();
    assert!(e.to_string().contains("sha256"), "{e}");
    assert!(lake.rows().is_empty());
}

#[test]
fn a_lost_ledger_is_rebuilt_from_the_bucket_manifests() {
    let mut lake = Lake::new();
    lake.flush(&[3], 10);
    let m = lake.maintenance(Some(0), |_| {});
    let cancel = CancellationToken::new();
    block(m.archive(&NoProgress, &cancel)).unwrap();
    std::fs::remove_file(ledger_path(&lake.data)).unwrap();
    let r = block(m.archive(&NoProgress, &cancel)).unwrap();
    assert_eq!((r.files_uploaded, r.files_already_verified), (0, 1));
    block(crate::maintenance::retention::run(&m, &NoProgress, &cancel)).unwrap();
    std::fs::remove_file(ledger_path(&lake.data)).unwrap();
    let req = RestoreRequest {
        table: "metrics".into(),
        from: id(3).date.to_string(),
        to: id(3).date.to_string(),
        keep_days: None,
    };
    let rep = block(m.restore(&req, &NoProgress, &cancel)).unwrap();
    assert_eq!(rep.files_restored, 1);
    assert_eq!(lake.rows().values().sum::<i64>(), 10);
}

#[test]
fn a_second_job_is_refused_while_one_runs() {
    let lake = Lake::new();
    let m = lake.maintenance(None, |_| {});
    let held = m.try_job("archive").unwrap();
    assert!(matches!(m.try_job("restore"), Err(ArchiveError::Busy(j)) if j == "archive"));
    drop(held);
    m.try_job("restore").unwrap();
}
