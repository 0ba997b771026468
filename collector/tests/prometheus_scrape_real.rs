//! `prometheus_scrape` against a real exporter: Debian's `prometheus-node-exporter`
//! (installed by `scripts/setup peers`), started here on a free loopback port and killed
//! after. Scrapes it through the real source into a spool and reads the rows back; then
//! stops it and checks the failed scrape (`up = 0` and a note in `logs`).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lake_collector::config::Config;
use lake_collector::sources::prometheus_scrape::ScrapeSource;
use lake_collector::sources::SourceContext;
use lake_collector::spool::{SpoolHandle, SpoolOptions};
use lake_collector::stats::Stats;
use lake_test_support::{free_port, KillOnDrop};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// The exporter process, killed when dropped.
async fn start_exporter(port: u16) -> KillOnDrop {
    assert!(
        std::path::Path::new(EXPORTER).exists(),
        "{EXPORTER} is missing: run `scripts/setup peers` (apt-get install prometheus-node-exporter)"
    );
    let child = Command::new(EXPORTER)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let exporter = KillOnDrop(child);
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return exporter;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node_exporter did not listen on {port}");
}

/// Every spooled record as (table, rows), acknowledged.
async fn drain(spool: &SpoolHandle) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    while let Some(rec) = spool.peek().await.unwrap() {
        let (_, batches) = lake_format::wire::decode(&rec.body).unwrap();
        let rows = batches.iter().flat_map(|b| lake_test_support::table_rows(&rec.table, b)).collect();
        out.push((rec.table.clone(), rows));
        spool.ack(rec.seq).await.unwrap();
    }
    out
}

fn named<'a>(records: &'a [(String, Vec<Value>)], name: &str) -> Vec<&'a Value> {
    records.iter().filter(|(t, _)| t == "metrics").flat_map(|(_, r)| r).filter(|r| r["name"] == name).collect()
}

#[tokio::test]
async fn scrapes_a_real_node_exporter_into_metrics_and_reports_it_down_when_stopped() {
    let port = free_port();
    let exporter = start_exporter(port).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[prometheus_scrape]]\nname = \"node\"\nurl = \"http://127.0.0.1:{port}/metrics\"\ninterval = \"1s\"\ntimeout = \"1s\"\nlabels = {{ role = \"test\" }}\n"
    );
    let config = Config::from_toml(&toml, Some("t")).unwrap().prometheus_scrape.remove(0);
    let stats = Arc::new(Stats::default());
    let opts = SpoolOptions { max_size: 256 << 20, segment_size: 8 << 20 };
    let spool = SpoolHandle::open(dir.path().join("spool"), opts, Arc::clone(&stats)).await.unwrap();
    let ctx = SourceContext { node: Arc::from("scrape-node"), spool: spool.clone(), stats: Arc::clone(&stats) };
    let cancel = CancellationToken::new();
    let task = tokio::spawn(ScrapeSource::new(config, ctx).run(cancel.clone()));

    let mut all = Vec::new();
    for _ in 0..200 {
        all.extend(drain(&spool).await);
        if !named(&all, "up").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let instance = format!("127.0.0.1:{port}");
    let up = named(&all, "up");
    assert_eq!(up.len(), 1, "one scrape so far");
    assert_eq!(up[0]["value"], 1.0);
    assert_eq!(up[0]["labels"]["job"], "node");
    assert_eq!(up[0]["labels"]["instance"], instance.as_str());
    assert_eq!(up[0]["labels"]["role"], "test");
    let scraped = named(&all, "scrape_samples_scraped")[0]["value"].as_f64().unwrap() as usize;
    let rows: usize = all.iter().filter(|(t, _)| t == "metrics").map(|(_, r)| r.len()).sum();
    eprintln!("node_exporter: {scraped} samples in one scrape");
    assert!(scraped > 100, "{scraped}");
    assert_eq!(rows, scraped + 3, "every sample plus up, scrape_duration_seconds, scrape_samples_scraped");
    assert!(all.iter().all(|(t, _)| t != "logs"), "node_exporter's output parses without a bad line");

    // Counters with labels, summaries as their series, every row stamped with the target.
    let cpu = named(&all, "node_cpu_seconds_total");
    assert!(!cpu.is_empty());
    assert!(cpu.iter().all(|r| r["labels"]["cpu"].is_string() && r["labels"]["mode"].is_string()));
    assert!(cpu.iter().all(|r| r["labels"]["job"] == "node" && r["labels"]["instance"] == instance.as_str()));
    assert!(named(&all, "go_gc_duration_seconds").iter().any(|r| r["labels"]["quantile"] == "0.5"));
    assert_eq!(named(&all, "go_gc_duration_seconds_count").len(), 1);
    assert_eq!(named(&all, "go_gc_duration_seconds_sum").len(), 1);
    assert!(named(&all, "node_exporter_build_info")[0]["labels"]["version"].is_string());
    assert!(all.iter().flat_map(|(_, r)| r).all(|r| r["host"] == "scrape-node"));

    // Stop the exporter: the next scrape fails, up = 0, a note says why, counted.
    drop(exporter);
    let mut after = Vec::new();
    for _ in 0..100 {
        after.extend(drain(&spool).await);
        if named(&after, "up").iter().any(|r| r["value"] == 0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert!(named(&after, "up").iter().any(|r| r["value"] == 0.0), "no failed scrape seen");
    let note = after
        .iter()
        .filter(|(t, _)| t == "logs")
        .flat_map(|(_, r)| r)
        .find(|r| r["source"] == "prometheus_scrape")
        .expect("a note about the failed scrape");
    assert_eq!(note["ident"], "node");
    assert!(note["message"].as_str().unwrap().contains("failed"), "{note}");
    assert!(stats.source("prometheus_scrape/node").errors.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}
