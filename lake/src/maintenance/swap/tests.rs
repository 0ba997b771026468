use super::*;

fn committed(data: &Path, rel: &str) -> PathBuf {
    let p = data.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, rel).unwrap();
    PathBuf::from(rel)
}

const OLD_A: &str = "tables/metrics/date=2026-11-01/f-000000000001.parquet";
const OLD_B: &str = "tables/metrics/date=2026-11-01/f-000000000002.parquet";
const NEW: &str = "tables/metrics/date=2026-11-01/c-000000000001.parquet";

#[test]
fn removed_files_vanish_from_listings_at_once_and_from_disk_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (a, b) = (committed(data, OLD_A), committed(data, OLD_B));
    let buffers = Arc::new(Buffers::default());
    let s = Swapper::with_buffers(data, Duration::from_millis(200), Arc::clone(&buffers)).unwrap();
    let stage = s.stage_dir().unwrap();
    fs::write(stage.join("out.parquet"), "merged").unwrap();
    s.commit(vec![(stage.join("out.parquet"), PathBuf::from(NEW))], vec![a.clone(), b.clone()]).unwrap();

    assert_eq!(fs::read_to_string(data.join(NEW)).unwrap(), "merged");
    assert!(!stage.exists(), "the stage directory is cleaned up");
    // Hidden, whether asked with the relative or an absolute path, yet still readable.
    assert!(buffers.is_retired(&data.join(&a)) && buffers.is_retired(&b));
    assert!(!buffers.is_retired(&data.join(NEW)));
    assert!(data.join(&a).exists());
    assert_eq!(s.sweep().unwrap(), 0, "not due yet");

    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(s.sweep().unwrap(), 2);
    assert!(!data.join(&a).exists() && !data.join(&b).exists());
    assert!(!buffers.is_retired(&data.join(&a)));
    assert_eq!(s.pending(), 0);
    let left: Vec<_> = fs::read_dir(data.join("staging")).unwrap().collect();
    assert!(left.is_empty(), "manifest removed after the sweep: {left:?}");
}

#[test]
fn a_partition_emptied_by_retention_disappears() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let a = committed(data, OLD_A);
    let s = Swapper::open(data, Duration::ZERO).unwrap();
    s.commit(vec![], vec![a]).unwrap();
    assert!(!data.join("tables/metrics/date=2026-11-01").exists());
    assert!(data.join("tables/metrics").exists());
}

#[test]
fn a_stop_after_the_commit_point_is_rolled_forward_and_before_it_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let a = committed(data, OLD_A);
    let staging = data.join("staging");

    // Committed (manifest written) but neither renamed nor deleted.
    let stage = staging.join("swap-00000000000000000001-0");
    fs::create_dir_all(&stage).unwrap();
    fs::write(stage.join("x.parquet"), "merged").unwrap();
    let m = SwapManifest::V1 {
        adds: vec![(PathBuf::from("staging/swap-00000000000000000001-0/x.parquet"), PathBuf::from(NEW))],
        removes: vec![a.clone()],
    };
    fs::write(staging.join("swap-00000000000000000002-0.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    // Staged but never committed.
    let orphan = staging.join("swap-00000000000000000003-0");
    fs::create_dir_all(&orphan).unwrap();
    fs::write(orphan.join("y.parquet"), "half").unwrap();
    // A flush's staging entries are the writer's business.
    fs::create_dir_all(staging.join("flush-9")).unwrap();

    let _s = Swapper::open(data, Duration::from_secs(3600)).unwrap();
    assert_eq!(fs::read_to_string(data.join(NEW)).unwrap(), "merged");
    assert!(!data.join(&a).exists(), "no query runs at start: deleted at once");
    assert!(!orphan.exists() && !stage.exists());
    assert!(staging.join("flush-9").exists());
    assert!(!staging.join("swap-00000000000000000002-0.json").exists());
}

#[test]
fn paths_outside_the_table_tree_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let s = Swapper::open(data, Duration::ZERO).unwrap();
    for bad in [
        "tables/metrics/../../etc/passwd.parquet",
        "/etc/passwd",
        "wal/0001.wal",
        "tables/metrics/date=2026-11-01/f.csv",
    ] {
        assert!(matches!(s.commit(vec![], vec![PathBuf::from(bad)]), Err(SwapError::BadPath(_))), "{bad}");
    }
    let outside = data.join("elsewhere.parquet");
    fs::write(&outside, "x").unwrap();
    assert!(matches!(s.commit(vec![(outside, PathBuf::from(NEW))], vec![]), Err(SwapError::BadPath(_))));
}
