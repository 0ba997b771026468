//! Outages between nodes, with the real binaries and a real network: the collector runs
//! in its own network namespace, joined to the lake's by a veth pair (iproute2). Cutting
//! the link is a real partition; killing the lake for a long stretch while the collector
//! keeps reading is the "lake down for days" case compressed in time. Afterwards every
//! line is in the lake exactly once, and the collector's memory stayed flat while its
//! spool grew (peak RSS is printed). Needs root for `ip netns` (CI runs as root).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A namespace with one end of a veth pair; the other end stays here. Removed on drop.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
}

fn ip(args: &[&str]) {
    let s = Command::new("ip").args(args).status().expect("ip (iproute2) is needed");
    assert!(s.success(), "ip {args:?} failed: this test needs root and iproute2 (CI has both)");
}

impl Netns {
    fn new() -> Netns {
        let id = std::process::id() % 50_000;
        let name = format!("lakept{id}");
        let (host_if, ns_if) = (format!("lkh{id}"), format!("lkn{id}"));
        let net = format!("10.213.{}", id % 250);
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        ip(&["netns", "add", &name]);
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{net}.1/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["netns", "exec", &name, "ip", "addr", "add", &format!("{net}.2/30"), "dev", &ns_if]);
        ip(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"]);
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        Netns { name, host_if, host_ip: format!("{net}.1") }
    }

    fn link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn line(seq: u64) -> String {
    format!(
        r#"{{"level":"info","ts":{}.5,"logger":"http.log.access.log0","msg":"handled request","request":{{"remote_ip":"10.0.0.1","remote_port":"5000","proto":"HTTP/1.1","method":"GET","host":"pt.test","uri":"/seq/{seq}","headers":{{}}}},"user_id":"","duration":0.0001,"size":5,"status":200,"resp_headers":{{}}}}"#,
        1_795_374_070 + seq
    )
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn spool_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_and_long_lake_outage_lose_nothing_and_keep_collector_memory_flat() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The lake listens on its side of the veth; the test itself queries it there too.
    let config = write_config(dir.path(), port, "1s");
    let text = std::fs::read_to_string(&config).unwrap().replace("127.0.0.1", &ns.host_ip);
    std::fs::write(&config, text).unwrap();
    let start_lake = || {
        let mut l = Lake::start_at(&config, &format!("http://{}:{port}", ns.host_ip));
        l.url = format!("http://{}:{port}", ns.host_ip);
        l
    };
    let mut lake = start_lake();

    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let cdir = dir.path().join("collector");
    let ctoml = dir.path().join("collector.toml");
    std::fs::write(
        &ctoml,
        format!(
            "version = 1\nnode = \"{NODE}\"\ndata_dir = \"{}\"\n[lake]\nurl = \"http://{}:{port}\"\ntoken = \"{TOKEN}\"\ntimeout = \"2s\"\n\
             [host]\nenabled = false\n[shipper]\nbackoff_min = \"100ms\"\nbackoff_max = \"1s\"\n\
             [caddy]\nenabled = true\npaths = [\"{}\"]\npoll_interval = \"100ms\"\nbatch_wait = \"200ms\"\n",
            cdir.display(),
            ns.host_ip,
            log.display()
        ),
    )
    .unwrap();
    let mut collector: Child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(collector_bin())
        .arg("--config")
        .arg(&ctoml)
        .env("LOG_FILTER", "error")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = collector.id(); // `ip netns exec` execs the collector in place: same pid.

    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rate = Arc::new(AtomicU64::new(20)); // lines per 10 ms tick
    let writer = {
        let (written, stop, rate, log) = (Arc::clone(&written), Arc::clone(&stop), Arc::clone(&rate), log.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(log).unwrap();
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut chunk = String::new();
                for _ in 0..rate.load(Ordering::Relaxed) {
                    seq += 1;
                    chunk.push_str(&line(seq));
                    chunk.push('\n');
                }
                f.write_all(chunk.as_bytes()).unwrap();
                written.store(seq, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let c = reqwest::Client::new();
    let http_count =
        |c: reqwest::Client, url: String| async move { count(&c, &url, "select count(*) from http").await };
    // Flowing.
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_count(c.clone(), lake.url.clone()).await == 0 {
        assert!(Instant::now() < deadline, "nothing arrived before the partition");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_before = rss_kib(pid);

    // 1. Partition: the link goes down for 5 s; the collector spools.
    ns.link(false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_cut = http_count(c.clone(), lake.url.clone()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = http_count(c.clone(), lake.url.clone()).await;
    assert_eq!(during, at_cut, "rows arrived through a cut link");
    ns.link(true);

    // 2. The lake down for a long stretch, while lines pour in 10x faster.
    lake.kill9();
    rate.store(200, Ordering::Relaxed);
    let mut peak = rss_before;
    let spool_dir = cdir.join("spool");
    let spool_start = spool_bytes(&spool_dir);
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(15) {
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spool_peak = spool_bytes(&spool_dir);
    rate.store(20, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    lake = start_lake();

    // 3. Everything arrives, once.
    let sent = written.load(Ordering::Relaxed) as i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (rows, distinct) = loop {
        let r = sql(&c, &lake.url, "select count(*), count(distinct uri) from http").await;
        let (rows, distinct) = (r[0][0].as_i64().unwrap(), r[0][1].as_i64().unwrap());
        if distinct >= sent || Instant::now() > deadline {
            break (rows, distinct);
        }
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!(
        "partition+outage: lines={sent} found={rows} distinct={distinct} collector_rss_kib before={rss_before} peak={peak} spool_bytes start={spool_start} peak={spool_peak}"
    );
    let _ = collector.kill();
    let _ = collector.wait();
    assert_eq!(distinct, sent, "{} lines lost", sent - distinct);
    assert_eq!(rows, distinct, "{} lines stored twice", rows - distinct);
    assert!(spool_peak > spool_start, "the spool did not grow during the outage");
    // Flat: the backlog lives on disk, not in memory (debug build; a few MiB of slack).
    assert!(peak < rss_before + 16 * 1024, "collector RSS grew from {rss_before} KiB to {peak} KiB during the outage");
}
