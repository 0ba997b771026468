//! Crash safety of the lake, with real processes and `kill -9`.
//!
//! 1. A client that behaves like the collector (re-sends every batch until it gets a
//!    200, in order) streams numbered batches while the lake is SIGKILLed at random
//!    moments and restarted: afterwards every acknowledged batch is stored exactly once.
//! 2. The real `lake-collector` ships host metrics while the lake is SIGKILLed and
//!    restarted: the count keeps growing and no sample is stored twice.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_batch_and_stores_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A short flush interval so kills land before, during and after flushes.
    let config = write_config(dir.path(), port, "300ms");
    let mut lake = Lake::start(&config, port);
    let c = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    const KILLS: u64 = 8;
    const ROWS: usize = 50;
    let mut kills = 0u64;
    let mut next_kill = Instant::now() + Duration::from_millis(200);
    let mut seq = 1;
    while kills < KILLS {
        if Instant::now() >= next_kill {
            // Fire the kill while a request is in flight.
            let body = encode(&metrics_batch(seq, ROWS));
            let id = format!("node-a/42/{seq}");
            let (c2, url) = (c.clone(), lake.url.clone());
            let inflight = tokio::spawn(async move { post(&c2, &url, "metrics", TOKEN, &id, body).await });
            tokio::time::sleep(Duration::from_micros(400 * (kills % 9))).await;
            lake.kill9();
            let r = inflight.await.unwrap();
            kills += 1;
            if r.0 == 200 {
                seq += 1;
            }
            lake = Lake::start(&config, port);
            next_kill = Instant::now() + Duration::from_millis(150 + 97 * (kills % 5));
            continue;
        }
        let (s, body) =
            post(&c, &lake.url, "metrics", TOKEN, &format!("node-a/42/{seq}"), encode(&metrics_batch(seq, ROWS))).await;
        match s {
            200 => seq += 1,
            503 | 0 => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    // The last kill may have struck after the WAL fsync but before the answer: like a
    // collector, re-send that batch until it is acknowledged (stored or recognised).
    loop {
        let (s, _) =
            post(&c, &lake.url, "metrics", TOKEN, &format!("node-a/42/{seq}"), encode(&metrics_batch(seq, ROWS))).await;
        if s == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let acked = seq;
    assert!(acked > KILLS * 5, "only {acked} batches acknowledged");
    // One more crash right at the end, then a clean start.
    lake.kill9();
    let lake = Lake::start(&config, port);
    let rows = sql(
        &c,
        &lake.url,
        "select count(*), count(distinct labels['batch']), count(distinct (ts, labels['batch'])) from metrics",
    )
    .await;
    let expected = (acked as usize * ROWS) as i64;
    assert_eq!(rows[0][0].as_i64().unwrap(), expected, "rows after {kills} kills: {rows}");
    assert_eq!(rows[0][1].as_i64().unwrap(), acked as i64);
    assert_eq!(rows[0][2].as_i64().unwrap(), expected);
    // No torn or staged file is visible: every file under tables/ is a complete Parquet file.
    let bad = count(&c, &lake.url, "select count(*) from metrics where value is null").await;
    assert_eq!(bad, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_collector_survives_lake_crashes_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "2s");
    let collector_toml = dir.path().join("collector.toml");
    std::fs::write(
        &collector_toml,
        format!(
            "version = 1\nnode = \"{NODE}\"\ndata_dir = \"{}\"\n[lake]\nurl = \"http://127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n\
             [host]\ninterval = \"1s\"\n[shipper]\nbackoff_min = \"100ms\"\nbackoff_max = \"500ms\"\n",
            dir.path().join("collector").display()
        ),
    )
    .unwrap();
    let mut lake = Lake::start(&config, port);
    let mut collector = Command::new(collector_bin())
        .arg("--config")
        .arg(&collector_toml)
        .env("LOG_FILTER", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let c = reqwest::Client::new();
    let mut last = 0;
    for round in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = count(&c, &lake.url, "select count(*) from metrics").await;
            if n > last {
                last = n;
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: count stuck at {n}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(700 + 300 * round)).await;
        lake.kill9();
        tokio::time::sleep(Duration::from_secs(2)).await; // the collector spools meanwhile
        lake = Lake::start(&config, port);
    }
    // Stop the collector cleanly; what it spooled arrives before it stops or on restart.
    unsafe { libc::kill(collector.id() as i32, libc::SIGTERM) };
    collector.wait().unwrap();
    let n = count(&c, &lake.url, "select count(*) from metrics").await;
    assert!(n > last, "count did not grow after the last restart: {n} <= {last}");
    let dups = count(
        &c,
        &lake.url,
        "select count(*) from (select ts, host, name, labels::varchar, count(*) c from metrics group by all having c > 1)",
    )
    .await;
    assert_eq!(dups, 0, "samples stored twice");
    let names = count(&c, &lake.url, "select count(distinct name) from metrics").await;
    assert!(names >= 5, "only {names} metric names");
}
