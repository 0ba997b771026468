//! Caddy tail + parse + batch throughput on one core.
//!
//! Generates a Caddy-like JSON access log (default 1 GiB, `LAKE_BENCH_BYTES` to change;
//! generation is not timed) in a temp dir, then, `LAKE_BENCH_RUNS` times (default 3), reads
//! it with the real tailer, parses every line and builds `http`/`logs` record batches of
//! 10,000 lines, on this one thread. `LAKE_BENCH_ENCODE=1` also encodes each batch to the
//! wire format (Arrow IPC + zstd) as the source does before spooling. Prints each run and
//! the median in lines/s and MB/s. Run: `cargo bench -p lake-collector --bench caddy`.

use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use lake_collector::sources::caddy::CaddyRows;
use lake_collector::tail::{StartAt, TailConfig, Tailer, DEFAULT_MAX_LINE_BYTES};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A realistic mix: 2.6 and 2.7-style lines, TLS or not, bots and browsers, some escapes,
/// and one malformed line in a thousand.
fn write_log(path: &std::path::Path, bytes: u64) -> std::io::Result<u64> {
    let uas = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "curl/8.5.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
    ];
    let paths = [
        "/",
        "/blog/2026/11/a-post?utm_source=x&ref=y",
        "/static/app.3f2a1b.js",
        "/api/v1/items?id=42",
        "/wp-login.php",
        "/caf\\u00e9",
    ];
    let statuses = [200, 200, 200, 304, 404, 301, 500, 201];
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let (mut written, mut lines) = (0u64, 0u64);
    while written < bytes {
        let i = lines as usize;
        let line = if i % 1000 == 999 {
            "127.0.0.1 - - [22/Nov/2026:10:15:01 +0000] \"GET / HTTP/1.1\" 200 5 (not json)".to_string()
        } else if i.is_multiple_of(2) {
            format!(
                r#"{{"level":"info","ts":{}.{:06},"logger":"http.log.access.log0","msg":"handled request","request":{{"remote_ip":"203.0.113.{}","remote_port":"{}","client_ip":"203.0.113.{}","proto":"HTTP/2.0","method":"GET","host":"example.com","uri":"{}","headers":{{"User-Agent":["{}"],"Accept":["text/html,application/xhtml+xml"],"Accept-Encoding":["gzip, br"],"Referer":["https://example.com/"]}},"tls":{{"resumed":false,"version":772,"cipher_suite":4865,"proto":"h2","server_name":"example.com"}}}},"bytes_read":0,"user_id":"","duration":0.00{},"size":{},"status":{},"resp_headers":{{"Server":["Caddy"],"Content-Type":["text/html; charset=utf-8"]}}}}"#,
                1_795_648_600 + i / 1000,
                i % 1_000_000,
                i % 250,
                30_000 + i % 30_000,
                i % 250,
                paths[i % paths.len()],
                uas[i % uas.len()],
                100 + i % 9000,
                512 + i % 50_000,
                statuses[i % statuses.len()]
            )
        } else {
            format!(
                r#"{{"level":"info","ts":{}.{:06},"logger":"http.log.access.log0","msg":"handled request","request":{{"remote_ip":"127.0.0.1","remote_port":"{}","proto":"HTTP/1.1","method":"POST","host":"127.0.0.1:8080","uri":"{}","headers":{{"User-Agent":["{}"],"Accept":["*/*"]}}}},"user_id":"","duration":0.0000{},"size":{},"status":{},"resp_headers":{{"Server":["Caddy"],"Content-Type":["text/plain; charset=utf-8"]}}}}"#,
                1_795_648_600 + i / 1000,
                i % 1_000_000,
                40_000 + i % 20_000,
                paths[i % paths.len()],
                uas[i % uas.len()],
                1000 + i % 9000,
                i % 700,
                statuses[i % statuses.len()]
            )
        };
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
        written += line.len() as u64 + 1;
        lines += 1;
    }
    w.flush()?;
    Ok(lines)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    let bytes = env_u64("LAKE_BENCH_BYTES", 1 << 30);
    let runs = env_u64("LAKE_BENCH_RUNS", 3).max(1);
    let encode = std::env::var_os("LAKE_BENCH_ENCODE").is_some_and(|v| v == "1");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("access.log");
    let t = Instant::now();
    let lines = write_log(&path, bytes).expect("write the log");
    eprintln!("generated {lines} lines, {bytes} bytes in {:.1?}", t.elapsed());

    let mut results: Vec<(f64, f64)> = Vec::new();
    for run in 0..runs {
        let cfg = TailConfig {
            patterns: vec![path.display().to_string()],
            start_at: StartAt::Beginning,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            poll_interval: Duration::from_secs(3600),
        };
        let mut tailer = Tailer::new(cfg, None).expect("tailer");
        let mut rows = CaddyRows::new();
        let (mut n, mut nbytes, mut all_rows, mut encoded) = (0u64, 0u64, 0usize, 0usize);
        let start = Instant::now();
        loop {
            let batch = tailer.read_blocking(10_000).expect("read");
            if batch.is_empty() {
                break;
            }
            for l in batch.iter() {
                n += 1;
                nbytes += l.bytes.len() as u64 + 1;
                rows.push("bench-node", l.bytes, "access.log", l.truncated, 0);
            }
            let (http, logs) = rows.finish().expect("batch");
            for b in [http, logs].into_iter().flatten() {
                all_rows += b.num_rows();
                if encode {
                    encoded += lake_format::wire::encode(&b.schema(), std::slice::from_ref(&b)).expect("encode").len();
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(n, lines, "every line read");
        assert_eq!(all_rows as u64, lines, "one row per line");
        let r = (n as f64 / secs, nbytes as f64 / secs / 1e6);
        eprintln!(
            "run {run}: {n} lines in {secs:.2}s: {:.0} lines/s, {:.1} MB/s{}",
            r.0,
            r.1,
            if encode { format!(", {encoded} bytes encoded") } else { String::new() }
        );
        results.push(r);
    }
    results.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (lps, mbps) = results[results.len() / 2];
    println!("caddy tail+parse+batch{}: median {lps:.0} lines/s, {mbps:.1} MB/s over {runs} runs (target 300000 lines/s/core)",
        if encode { "+encode" } else { "" });
}
