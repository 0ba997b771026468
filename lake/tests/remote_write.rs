//! Prometheus remote_write end to end: Debian's real `prometheus` scrapes a real
//! `prometheus-node-exporter` every second and remote-writes to a real `lake serve`
//! (`POST /api/v1/write`, snappy protobuf, the node's token). Over a closed past window,
//! the samples per series in the lake equal those in Prometheus' own TSDB (read through
//! its HTTP API). Then the exporter is stopped: Prometheus writes stale markers, which the
//! lake drops and counts.
//!
//! Needs `/usr/bin/prometheus` and `/usr/bin/prometheus-node-exporter` (`scripts/setup
//! peers` installs them); fails (never skips) without them.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use lake_test_support::KillOnDrop;
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

fn spawn(bin: &str, args: &[String]) -> KillOnDrop {
    assert!(std::path::Path::new(bin).exists(), "{bin} is missing: run `scripts/setup peers`");
    let child = Command::new(bin).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    KillOnDrop(child.unwrap())
}

async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// `name{k="v",…}` with the labels sorted, the key both sides are compared on.
fn key(name: &str, labels: &serde_json::Map<String, Value>) -> String {
    let l: BTreeMap<_, _> = labels.iter().filter(|(k, _)| *k != "__name__").collect();
    format!("{name}{l:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_write_matches_its_own_tsdb_per_series() {
    let dir = tempfile::tempdir().unwrap();
    let c = reqwest::Client::new();
    let (exporter_port, prom_port, lake_port) = (free_port(), free_port(), free_port());
    let mut exporter = spawn(EXPORTER, &[format!("--web.listen-address=127.0.0.1:{exporter_port}")]);
    let _lake = Lake::start(&write_config(dir.path(), lake_port, "1h"), lake_port);
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s}}\n\
             scrape_configs:\n  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n\
             remote_write:\n  - url: http://127.0.0.1:{lake_port}/api/v1/write\n    \
             authorization: {{credentials: {TOKEN}}}\n    queue_config: {{batch_send_deadline: 1s}}\n"
        ),
    )
    .unwrap();
    let prom_url = format!("http://127.0.0.1:{prom_port}");
    let _prometheus = spawn(
        PROMETHEUS,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
    );

    // A window that closed 3 s ago, then 3 s more for the last of it to be sent.
    let lake_url = format!("http://127.0.0.1:{lake_port}");
    let recent = |ms: i64| format!("select count(*) from metrics where name = 'up' and ts > epoch_ms({ms})");
    let start = now_ms();
    wait_for("the first samples in the lake", async || count(&c, &lake_url, &recent(0)).await > 0).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (t0, t1) = (now_ms() - 6000, now_ms() - 3000);
    assert!(t0 > start);
    wait_for("samples after the window", async || count(&c, &lake_url, &recent(t1 + 3000)).await > 0).await;

    // Prometheus: the raw samples of every series of the job over [t0, t1].
    let q = format!("{{job=\"node\"}}[{}ms]", t1 - t0);
    let time = format!("{}.{:03}", t1 / 1000, t1 % 1000);
    let v: Value = c
        .get(format!("{prom_url}/api/v1/query"))
        .query(&[("query", q.as_str()), ("time", time.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "success", "{v}");
    let prom: BTreeMap<String, usize> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let m = s["metric"].as_object().unwrap();
            (key(m["__name__"].as_str().unwrap(), m), s["values"].as_array().unwrap().len())
        })
        .collect();

    // The lake: the same window, both ends included as Prometheus 2's range selectors do.
    let rows = sql(
        &c,
        &lake_url,
        &format!(
            "select name, labels, count(*) from metrics where labels['job'] = 'node' \
             and ts >= epoch_ms({t0}) and ts <= epoch_ms({t1}) group by name, labels"
        ),
    )
    .await;
    let lake: BTreeMap<String, usize> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (key(r[0].as_str().unwrap(), r[1].as_object().unwrap()), r[2].as_u64().unwrap() as usize))
        .collect();
    let samples: usize = prom.values().sum();
    eprintln!("window [{t0}, {t1}] ms: {} series, {samples} samples in Prometheus' TSDB", prom.len());
    for name in ["up", "node_load1", "scrape_samples_scraped"] {
        let (k, n) = prom.iter().find(|(k, _)| k.starts_with(&format!("{name}{{"))).unwrap();
        eprintln!("  {k}: prometheus {n}, lake {:?}", lake.get(k));
    }
    assert!(prom.len() > 100 && samples > 300, "a real scrape: {} series, {samples} samples", prom.len());
    if lake != prom {
        let differ: Vec<_> =
            prom.iter().filter(|(k, n)| lake.get(*k) != Some(n)).take(10).map(|(k, n)| (k, n, lake.get(k))).collect();
        panic!("lake and Prometheus differ ({} vs {} series), e.g. {differ:?}", lake.len(), prom.len());
    }

    // The exporter goes away: Prometheus marks every series stale; no stale marker is stored.
    let stopped = now_ms();
    exporter.0.kill().unwrap();
    exporter.0.wait().unwrap();
    let stale = async || {
        let text = c.get(format!("{lake_url}/metrics")).send().await.unwrap().text().await.unwrap();
        let line = text.lines().find(|l| l.starts_with("lake_remote_write_stale_markers_total ")).unwrap();
        line.rsplit(' ').next().unwrap().parse::<usize>().unwrap()
    };
    wait_for("stale markers", async || stale().await > 100).await;
    let nan = format!(
        "select count(*) from metrics where labels['job'] = 'node' and isnan(value) and ts >= epoch_ms({stopped})"
    );
    let (dropped, stored) = (stale().await, count(&c, &lake_url, &nan).await);
    eprintln!("after the exporter stopped: {dropped} stale markers dropped, {stored} NaN rows stored");
    assert_eq!(stored, 0);
}
