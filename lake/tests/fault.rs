//! Fault injection with the real binaries: a lake and two collectors tail numbered Caddy
//! access-log lines while, again and again, the lake or a collector is killed with
//! SIGKILL at a random moment and restarted. Afterwards every sequence number must be in
//! the lake exactly once.
//!
//! `LAKE_FAULT_ITERATIONS` sets the number of kills (default 6: small enough for CI).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const NODES: [&str; 2] = ["node-a", "node-b"];

fn token(node: &str) -> String {
    format!("ingest-token-{node}-0123456789")
}

fn lake_config(dir: &Path, port: u16) -> PathBuf {
    let toml = LakeToml::new(dir, port).flush("500ms").read_tokens(&[READ_TOKEN]);
    NODES.iter().fold(toml, |toml, n| toml.node(n, &token(n))).write()
}

fn collector_config(dir: &Path, node: &str, port: u16, log: &Path) -> PathBuf {
    let text = format!(
        "version = 1\nnode = \"{node}\"\ndata_dir = \"{}\"\n[lake]\nurl = \"http://127.0.0.1:{port}\"\ntoken = \"{}\"\n\
         [host]\nenabled = false\ninterval = \"1s\"\n[shipper]\nbackoff_min = \"50ms\"\nbackoff_max = \"500ms\"\n\
         [caddy]\nenabled = true\npaths = [\"{}\"]\nstart_at = \"beginning\"\npoll_interval = \"100ms\"\nbatch_wait = \"200ms\"\n",
        dir.join(node).display(),
        token(node),
        log.display()
    );
    let p = dir.join(format!("{node}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Starts a collector whose log goes to `<config>.log` (appended across restarts), so a
/// failure can show what the collector said.
fn start_collector(config: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(config.with_extension("log")).unwrap();
    Command::new(collector_bin())
        .arg("--config")
        .arg(config)
        .env("LOG_FILTER", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn log_tail(config: &Path) -> String {
    let text = std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// One Caddy JSON access-log line whose URI carries the sequence number.
fn line(seq: u64) -> String {
    format!(
        r#"{{"level":"info","ts":{}.5,"logger":"http.log.access.log0","msg":"handled request","request":{{"remote_ip":"127.0.0.1","remote_port":"5000","proto":"HTTP/1.1","method":"GET","host":"fault.test","uri":"/seq/{seq}","headers":{{"User-Agent":["fault/1.0"]}}}},"user_id":"","duration":0.0001,"size":5,"status":200,"resp_headers":{{}}}}"#,
        1_795_374_070 + seq
    ) + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sequence_number_exactly_once_across_kill_9s() {
    let iterations: u64 = std::env::var("LAKE_FAULT_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let lake_toml = lake_config(dir.path(), port);
    let mut lake = Lake::start(&lake_toml, port);
    let logs: Vec<PathBuf> = NODES.iter().map(|n| dir.path().join(format!("{n}-access.log"))).collect();
    let configs: Vec<PathBuf> =
        NODES.iter().zip(&logs).map(|(n, l)| collector_config(dir.path(), n, port, l)).collect();
    for l in &logs {
        std::fs::write(l, "").unwrap();
    }
    let mut collectors: Vec<Child> = configs.iter().map(|c| start_collector(c)).collect();

    // Writers: numbered lines at a steady pace into each node's log.
    let stop = Arc::new(AtomicBool::new(false));
    let written: Vec<Arc<AtomicU64>> = NODES.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let writers: Vec<_> = logs
        .iter()
        .zip(&written)
        .map(|(path, count)| {
            let (path, count, stop) = (path.clone(), Arc::clone(count), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut chunk = String::new();
                    for _ in 0..20 {
                        seq += 1;
                        chunk.push_str(&line(seq));
                    }
                    f.write_all(chunk.as_bytes()).unwrap();
                    count.store(seq, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();

    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut lake_kills = 0;
    for i in 0..iterations {
        tokio::time::sleep(Duration::from_millis(300 + next() % 900)).await;
        let victim = next() % 3;
        if victim == 2 || i == 0 {
            lake.kill9();
            lake_kills += 1;
            tokio::time::sleep(Duration::from_millis(next() % 700)).await;
            lake = Lake::start(&lake_toml, port);
        } else {
            let k = victim as usize;
            collectors[k].kill().unwrap();
            collectors[k].wait().unwrap();
            tokio::time::sleep(Duration::from_millis(next() % 500)).await;
            collectors[k] = start_collector(&configs[k]);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }

    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut summary = Vec::new();
    for (n, count) in NODES.iter().zip(&written) {
        let sent = count.load(Ordering::Relaxed) as i64;
        let q = format!("select count(*), count(distinct uri) from http where host = '{n}'");
        let (found, distinct) = loop {
            let r = sql(&c, &lake.url, &q).await;
            let (found, distinct) = (r[0][0].as_i64().unwrap(), r[0][1].as_i64().unwrap());
            if distinct >= sent || Instant::now() > deadline {
                break (found, distinct);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        summary.push((n, sent, found, distinct));
    }
    let exited: Vec<String> = collectors
        .iter_mut()
        .zip(&configs)
        .filter_map(|(ch, cfg)| {
            ch.try_wait().ok().flatten().map(|st| format!("{}: exited {st}\n{}", cfg.display(), log_tail(cfg)))
        })
        .collect();
    for ch in &mut collectors {
        let _ = ch.kill();
        let _ = ch.wait();
    }
    assert!(exited.is_empty(), "a collector died: {exited:?}");
    let (sent, found, distinct) = summary.iter().fold((0, 0, 0), |a, s| (a.0 + s.1, a.1 + s.2, a.2 + s.3));
    println!(
        "fault-injection: iterations={iterations} (lake kills {lake_kills}) rows_sent={sent} rows_found={found} lost={} duplicated={}",
        sent - distinct,
        found - distinct
    );
    for ((n, s, f, d), cfg) in summary.iter().zip(&configs) {
        assert_eq!(*d, *s, "{n}: {} of {s} sequence numbers missing; collector log:\n{}", s - d, log_tail(cfg));
        assert_eq!(*f, *d, "{n}: {} rows stored twice", f - d);
    }
    let bad = count(&c, &lake.url, "select count(*) from http where uri not like '/seq/%' or status != 200").await;
    assert_eq!(bad, 0);
}
