//! End-to-end ingest benchmark: 8 simulated collectors send `http` batches to one real
//! `lake serve` process, through WAL fsync and Parquet commit, on this machine.
//!
//! ```sh
//! cargo bench -p lake --bench ingest                 # 60 s, 8 collectors
//! LAKE_BENCH_SECS=20 LAKE_BENCH_COLLECTORS=8 LAKE_BENCH_ROWS=5000 cargo bench -p lake --bench ingest
//! ```
//! Prints a Markdown table and one JSON line: rows/s sustained, requests refused with 503,
//! acknowledgement latency p50/p99, freshness (time from a 200 to the row being visible in
//! `/v1/sql`) p50/p99, and the memory of `lake serve`: its `VmRSS` (with the anonymous and
//! file-backed parts, `RssAnon`/`RssFile`) read from `/proc/<pid>/status` every 200 ms
//! while the collectors send, median and peak, and `VmHWM` (the kernel's high-water mark,
//! which also catches a peak between two samples) at the end.
//!
//! The lake runs with the default `lake.toml`: the bench writes only `data_dir`, `listen`
//! and the nodes. Targets (issue 23 §4–§5, on 2 cores): ≥ 1,000,000 rows/s (goal 2 M),
//! ack p99 < 50 ms, freshness p99 ≤ 1 s, peak RSS (`VmHWM`) ≤ 400 MB.
//!
//! For experiments: `LAKE_BENCH_INGEST='flush_size = "16MiB"'` adds lines to the
//! `[ingest]` section; `LAKE_BENCH_LAKE=/path/to/lake` runs another `lake` binary (a copy
//! of the build before a change, to compare both alternately in the same period).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lake::testing::http_rows;
use lake_format::rows::now_micros;
use lake_format::wire;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One realistic `http` batch of `rows` rows for `node`, encoded for the wire.
fn http_batch(node: &str, rows: usize, salt: u64, marker: Option<&str>) -> Vec<u8> {
    let batch = http_rows(node, rows, salt, now_micros(), marker);
    wire::encode(&batch.schema(), &[batch]).expect("encode")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The `kB` figures of `/proc/<pid>/status` named in `fields`, in their order (0 if absent).
fn status_kib(pid: u32, fields: &[&str]) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Some(fields.iter().map(|f| value(f)).collect())
}

/// `VmRSS`, `RssAnon` and `RssFile` of `pid` (KiB) every 200 ms until `stop`.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<[u64; 3]>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some(v) = status_kib(pid, &["VmRSS", "RssAnon", "RssFile"]) {
                out.push([v[0], v[1], v[2]]);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        out
    })
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn write_config(dir: &Path, port: u16, collectors: u64) -> std::path::PathBuf {
    let mut text = format!(
        "version = 1\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n[ingest]\n{}\n",
        dir.join("data").display(),
        std::env::var("LAKE_BENCH_INGEST").unwrap_or_default()
    );
    for i in 0..collectors {
        text.push_str(&format!("[[nodes]]\nname = \"sim-{i}\"\ntoken = \"bench-token-sim-{i}-0123456789\"\n"));
    }
    text.push_str("[[nodes]]\nname = \"fresh\"\ntoken = \"bench-token-fresh-0123456789\"\n");
    let path = dir.join("lake.toml");
    std::fs::write(&path, text).expect("config");
    path
}

async fn post(c: &reqwest::Client, url: &str, token: &str, id: &str, body: Vec<u8>) -> u16 {
    match c
        .post(format!("{url}/v1/ingest/http"))
        .bearer_auth(token)
        .header(wire::BATCH_HEADER, id)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

fn main() {
    let secs = env_or("LAKE_BENCH_SECS", 60);
    let collectors = env_or("LAKE_BENCH_COLLECTORS", 8);
    let rows_per_batch = env_or("LAKE_BENCH_ROWS", 10_000) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let config = write_config(dir.path(), port, collectors);
    let binary = std::env::var("LAKE_BENCH_LAKE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lake").to_string());
    let mut lake = Command::new(&binary)
        .args(["serve", "--config"])
        .arg(&config)
        // LAKE_BENCH_LOG=info shows each flush (rows, ms) on stderr.
        .env("LOG_FILTER", std::env::var("LAKE_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .spawn()
        .expect("start lake");
    let url = format!("http://127.0.0.1:{port}");
    let pid = lake.id();
    let sampling = Arc::new(AtomicBool::new(false));
    let sampling_stop = Arc::clone(&sampling);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let report = rt.block_on(async move {
        let c = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.get(format!("{url}/health")).send().await.is_err() {
            assert!(Instant::now() < deadline, "lake did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A few distinct bodies per collector, made before the clock starts.
        let bodies: Vec<Vec<Vec<u8>>> = (0..collectors)
            .map(|i| (0..4).map(|k| http_batch(&format!("sim-{i}"), rows_per_batch, i * 10 + k, None)).collect())
            .collect();
        let rows = Arc::new(AtomicU64::new(0));
        // Refusals by status (503 while the buffer is full; 0 for a transport error): each
        // costs its collector a 50 ms pause, so they cap the rate as much as ack latency.
        let refused = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<u16, u64>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample_rss(pid, sampling_stop);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (i, bodies) in bodies.into_iter().enumerate() {
            let (c, url, rows, stop) = (c.clone(), url.clone(), Arc::clone(&rows), Arc::clone(&stop));
            let refused = Arc::clone(&refused);
            tasks.push(tokio::spawn(async move {
                let token = format!("bench-token-sim-{i}-0123456789");
                let mut lat = Vec::new();
                let mut seq = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = bodies[seq as usize % bodies.len()].clone();
                    let t = Instant::now();
                    match post(&c, &url, &token, &format!("sim-{i}/1/{seq}"), body).await {
                        200 => {
                            lat.push(t.elapsed().as_secs_f64() * 1000.0);
                            rows.fetch_add(rows_per_batch as u64, Ordering::Relaxed);
                            seq += 1;
                        }
                        status => {
                            *refused.lock().expect("refusals").entry(status).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                    }
                }
                lat
            }));
        }
        // Freshness: a one-row batch, then poll until a query sees it.
        let mut fresh = Vec::new();
        let mut k = 0u64;
        while started.elapsed() < Duration::from_secs(secs) {
            k += 1;
            let marker = format!("/freshness-marker-{k}");
            let body = http_batch("fresh", 1, k, Some(&marker));
            if post(&c, &url, "bench-token-fresh-0123456789", &format!("fresh/1/{k}"), body).await == 200 {
                let acked = Instant::now();
                loop {
                    let r = c
                        .post(format!("{url}/v1/sql"))
                        .body(format!("select count(*) from http where uri = '{marker}'"))
                        .send()
                        .await;
                    let seen = match r {
                        Ok(r) => r.text().await.unwrap_or_default().contains("[[1]]"),
                        Err(_) => false,
                    };
                    if seen {
                        fresh.push(acked.elapsed().as_secs_f64() * 1000.0);
                        break;
                    }
                    if acked.elapsed() > Duration::from_secs(10) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let mut lat: Vec<f64> = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("collector task"));
        }
        sampling.store(true, Ordering::Relaxed);
        let rss = sampler.join().expect("rss sampler");
        lat.sort_by(f64::total_cmp);
        fresh.sort_by(f64::total_cmp);
        let total = rows.load(Ordering::Relaxed);
        let refused = std::mem::take(&mut *refused.lock().expect("refusals"));
        (total, elapsed, lat, fresh, refused, rss)
    });
    // The high-water mark of the whole run (startup, load, the flushes behind it).
    let hwm = status_kib(pid, &["VmHWM"]).map_or(0, |v| v[0]);
    let _ = lake.kill();
    let _ = lake.wait();
    let (total, elapsed, lat, fresh, refused, rss) = report;
    let rss_max = rss.iter().map(|s| s[0]).max().unwrap_or(0);
    let anon_max = rss.iter().map(|s| s[1]).max().unwrap_or(0);
    let [rss_median, anon_median, file_median] = [0, 1, 2].map(|i| median_u64(rss.iter().map(|s| s[i]).collect()));
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    let rate = total as f64 / elapsed;
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!("| collectors | {collectors} ({rows_per_batch} rows per batch) | 8 |");
    println!("| duration | {elapsed:.1} s | 60 s |");
    println!("| rows acknowledged | {total} | |");
    println!("| ingest rate | {rate:.0} rows/s | ≥ 1,000,000 rows/s (goal 2 M) |");
    let refusals = refused.iter().map(|(s, n)| format!("{n}×{s}")).collect::<Vec<_>>().join(", ");
    let refused: u64 = refused.values().sum();
    println!("| requests refused | {refused} {refusals} | |");
    println!("| ack latency p50 | {:.1} ms | |", percentile(&lat, 0.5));
    println!("| ack latency p99 | {:.1} ms | < 50 ms |", percentile(&lat, 0.99));
    println!("| freshness p50 | {:.1} ms | |", percentile(&fresh, 0.5));
    println!("| freshness p99 | {:.1} ms | ≤ 1000 ms |", percentile(&fresh, 0.99));
    println!("| lake RSS, peak (VmHWM) | {:.1} MB | ≤ 400 MB |", mb(hwm));
    println!(
        "| lake RSS, median of {} samples (max) | {:.1} MB = {:.1} anon + {:.1} file-backed ({:.1}; anon {:.1}) | |",
        rss.len(),
        mb(rss_median),
        mb(anon_median),
        mb(file_median),
        mb(rss_max),
        mb(anon_max)
    );
    println!(
        "{{\"collectors\":{collectors},\"rows_per_batch\":{rows_per_batch},\"seconds\":{elapsed:.1},\"rows\":{total},\"rows_per_sec\":{rate:.0},\"refused\":{refused},\"ack_p50_ms\":{:.1},\"ack_p99_ms\":{:.1},\"fresh_p50_ms\":{:.1},\"fresh_p99_ms\":{:.1},\"rss_hwm_kib\":{hwm},\"rss_max_kib\":{rss_max},\"rss_median_kib\":{rss_median},\"rss_anon_median_kib\":{anon_median},\"rss_file_median_kib\":{file_median},\"rss_anon_max_kib\":{anon_max},\"rss_samples\":{}}}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&fresh, 0.5),
        percentile(&fresh, 0.99),
        rss.len()
    );
}
