//! Compaction inside a running `lake serve`, under ingest and a query loop: every query
//! sees each acknowledged row exactly once while small files are merged and retired.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn parquet_files(data: &std::path::Path) -> usize {
    let root = data.join("tables/metrics");
    let mut n = 0;
    for d in std::fs::read_dir(root).into_iter().flatten().flatten() {
        n += std::fs::read_dir(d.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|f| f.path().extension().is_some_and(|e| e == "parquet"))
            .count();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_see_every_row_once_before_during_and_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "150ms");
    // Compact every second, today's files included; retired files live 2 × 2 s.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace("[query]\n", "[query]\ntimeout = \"2s\"\n");
    text.push_str("\n[compaction]\ninterval = \"1s\"\nsettle = \"0s\"\nmin_files = 2\n");
    std::fs::write(&config, text).unwrap();
    let lake = Lake::start(&config, port);
    let url = lake.url.clone();
    let data = dir.path().join("data");

    // The query loop: a count may only lie between the rows acknowledged before the query
    // was sent and those sent (a batch is visible once stored, which can be just before its
    // 200 reaches this client) when it came back, and no row may appear twice.
    let acked = Arc::new(AtomicI64::new(0));
    let sent = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let queries = {
        let (acked, sent, stop, url) = (Arc::clone(&acked), Arc::clone(&sent), Arc::clone(&stop), url.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let low = acked.load(Ordering::SeqCst);
                let rows = sql(
                    &client,
                    &url,
                    "SELECT count(*) AS n, count(DISTINCT (labels['batch'], value)) AS d FROM metrics WHERE name = 'seq'",
                )
                .await;
                let high = sent.load(Ordering::SeqCst);
                let (c, d) = (rows[0][0].as_i64().unwrap(), rows[0][1].as_i64().unwrap());
                assert_eq!(c, d, "a row seen twice (query {n})");
                assert!(low <= c && c <= high, "query {n}: {c} rows outside [{low}, {high}]");
                n += 1;
            }
            n
        })
    };

    let client = reqwest::Client::new();
    let per_batch = 500;
    for b in 0..60u64 {
        sent.fetch_add(per_batch as i64, Ordering::SeqCst);
        let (status, body) =
            post(&client, &url, "metrics", TOKEN, &format!("{NODE}/1/{b}"), encode(&metrics_batch(b, per_batch))).await;
        assert_eq!(status, 200, "{body}");
        acked.fetch_add(per_batch as i64, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let total = acked.load(Ordering::SeqCst);
    // Ingest is over; compaction goes on until one file per partition is left visible
    // and the retired ones are deleted.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut least = usize::MAX;
    while Instant::now() < deadline {
        least = least.min(parquet_files(&data));
        if least == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(least, 1, "compaction left {least} files");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let ran = queries.await.unwrap();
    assert!(ran > 20, "only {ran} queries ran");
    assert_eq!(count(&client, &url, "SELECT count(*) FROM metrics WHERE name = 'seq'").await, total);
    let merged = std::fs::read_dir(data.join("tables/metrics"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(merged.iter().all(|n| n.starts_with("c-")), "{merged:?}");
    println!("{ran} queries, {total} rows, files left: {merged:?}");
}

/// `kill -9` of the lake again and again while it compacts: after each restart every
/// acknowledged row is there exactly once, and no staged or retired file is visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_compaction_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "100ms");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[compaction]\ninterval = \"200ms\"\nsettle = \"0s\"\nmin_files = 2\ntarget_size = \"1MiB\"\n");
    std::fs::write(&config, text).unwrap();
    let client = reqwest::Client::new();
    let mut total = 0i64;
    let mut batch = 0u64;
    for round in 0..6u64 {
        let mut lake = Lake::start(&config, port);
        for _ in 0..15 {
            let (status, body) = post(
                &client,
                &lake.url,
                "metrics",
                TOKEN,
                &format!("{NODE}/1/{batch}"),
                encode(&metrics_batch(batch, 2000)),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            total += 2000;
            batch += 1;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let check = "SELECT count(*), count(DISTINCT (labels['batch'], value)) FROM metrics WHERE name = 'seq'";
        let rows = sql(&client, &lake.url, check).await;
        assert_eq!(
            (rows[0][0].as_i64().unwrap(), rows[0][1].as_i64().unwrap()),
            (total, total),
            "round {round} before the kill"
        );
        tokio::time::sleep(Duration::from_millis(150 + 97 * round)).await;
        lake.kill9();
        let lake = Lake::start(&config, port);
        let rows = sql(&client, &lake.url, check).await;
        assert_eq!(
            (rows[0][0].as_i64().unwrap(), rows[0][1].as_i64().unwrap()),
            (total, total),
            "round {round} after the restart"
        );
        drop(lake);
    }
}

/// `lake compact` asks the running lake (it holds the data lock) and streams its
/// progress; with the lake stopped it compacts in-process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_compact_runs_through_the_server_or_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "100ms");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[compaction]\ninterval = \"0s\"\nsettle = \"0s\"\nmin_files = 2\n");
    std::fs::write(&config, text).unwrap();
    let data = dir.path().join("data");
    let client = reqwest::Client::new();
    let compact = || {
        let out = std::process::Command::new(lake_bin()).args(["compact", "--config"]).arg(&config).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };

    let mut lake = Lake::start(&config, port);
    for b in 0..5u64 {
        let (s, m) =
            post(&client, &lake.url, "metrics", TOKEN, &format!("{NODE}/1/{b}"), encode(&metrics_batch(b, 100))).await;
        assert_eq!(s, 200, "{m}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(parquet_files(&data), 5);
    let said = compact();
    assert!(said.starts_with("compacted 5 small files into 1 ("), "{said}");
    assert_eq!(count(&client, &lake.url, "SELECT count(*) FROM metrics").await, 500);
    for b in 5..8u64 {
        let (s, _) =
            post(&client, &lake.url, "metrics", TOKEN, &format!("{NODE}/1/{b}"), encode(&metrics_batch(b, 100))).await;
        assert_eq!(s, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    lake.term();

    // Offline: the retired files of the first pass are gone after the restart recovery,
    // and the merged file plus three new ones become one.
    let said = compact();
    assert!(said.starts_with("compacted 4 small files into 1 ("), "{said}");
    assert_eq!(parquet_files(&data), 1);
    let lake = Lake::start(&config, port);
    assert_eq!(count(&client, &lake.url, "SELECT count(*) FROM metrics").await, 800);
}
