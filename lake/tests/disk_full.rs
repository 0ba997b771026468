//! The lake's disk fills up: ingest answers 507 (nothing half-stored), every batch
//! acknowledged before stays queryable, and once space returns the lake goes on by
//! itself. The data directory is a real, small tmpfs (so the test needs root, as CI has);
//! growing the tmpfs with `mount -o remount` is the space returning.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use lake_format::rows::MetricsBuilder;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status();
        assert!(ok.is_ok_and(|s| s.success()), "mounting a tmpfs failed: this test needs root (CI runs as root)");
        Tmpfs(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let s = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status().unwrap();
        assert!(s.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A batch that zstd cannot shrink much: random label values.
fn bulky_batch(seq: u64) -> Vec<u8> {
    let mut b = MetricsBuilder::new();
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..2000 {
        let mut noise = String::with_capacity(64);
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.push_str(&format!("{:08x}", x as u32));
        }
        b.push(1_795_374_070_000_000 + i, NODE, "seq", i as f64, &[("batch", &seq.to_string()), ("noise", &noise)]);
    }
    encode(&b.finish())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_keeps_what_was_acknowledged_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "300ms");
    let fs = Tmpfs::mount(&dir.path().join("data"), "6m");
    let lake = Lake::start(&config, port);
    let c = reqwest::Client::new();

    let mut acked = Vec::new();
    let mut refused = None;
    for seq in 1..=400u64 {
        let (s, body) = post(&c, &lake.url, "metrics", TOKEN, &format!("node-a/3/{seq}"), bulky_batch(seq)).await;
        match s {
            200 => acked.push(seq),
            507 | 503 => {
                assert!(body.contains("retry"), "{body}");
                refused = Some(seq);
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let refused = refused.expect("the 6 MiB disk never filled");
    assert!(acked.len() >= 3, "only {} batches fitted", acked.len());
    // What was acknowledged is all there, once.
    let n = count(&c, &lake.url, "select count(distinct labels['batch']) from metrics").await;
    assert_eq!(n, acked.len() as i64);

    // Space returns: the refused batch and more are accepted, flushes catch up.
    fs.resize("256m");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seq = refused;
    while seq < refused + 5 {
        let (s, body) = post(&c, &lake.url, "metrics", TOKEN, &format!("node-a/3/{seq}"), bulky_batch(seq)).await;
        match s {
            200 => {
                acked.push(seq);
                seq += 1;
            }
            507 | 503 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("not recovered: {other}: {body}"),
        }
    }
    // Wait until every row is in Parquet (buffer empty), then check exactness.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health: serde_json::Value =
            c.get(format!("{}/health", lake.url)).send().await.unwrap().json().await.unwrap();
        if health["buffered_rows"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "flush never caught up: {health}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = sql(&c, &lake.url, "select count(*), count(distinct labels['batch']) from metrics").await;
    assert_eq!(rows[0][0].as_i64().unwrap(), acked.len() as i64 * 2000, "{rows}");
    assert_eq!(rows[0][1].as_i64().unwrap(), acked.len() as i64);
    drop(lake);
}
