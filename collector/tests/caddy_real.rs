//! The Caddy source against the real thing and across restarts.
//!
//! `caddy_real_access_log_matches_row_for_row` starts Debian's `caddy` (it must be on
//! PATH: CI installs it with `apt-get install -y caddy`) on a loopback port with a JSON
//! access log rolled at 1 MiB, sends it a range of methods, statuses and sizes, lets it
//! roll (and gzip) its log while the source runs, and checks the spooled `http` rows
//! against Caddy's own log lines, parsed independently, line for line.
//!
//! The restart tests stop the source mid-stream (cleanly, and by aborting the task as a
//! kill -9 would), append more input, start again from the state saved in the spool, and
//! check every input line appears exactly once: the rows and the position are spooled as
//! one group, so even a kill cannot separate them.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lake_collector::sources::caddy::{CaddyConfig, CaddySource};
use lake_collector::sources::SourceContext;
use lake_collector::spool::{SpoolHandle, SpoolOptions};
use lake_collector::stats::Stats;
use lake_collector::tail::{StartAt, TailConfig};
use lake_test_support::spool::{spooled, spooled_tables};
use lake_test_support::{caddy_in, same};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

struct Running {
    ctx: SourceContext,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), lake_collector::sources::SourceError>>,
}

fn caddy_config(pattern: &Path, batch_lines: usize) -> CaddyConfig {
    CaddyConfig {
        enabled: true,
        tail: TailConfig {
            patterns: vec![pattern.display().to_string()],
            start_at: StartAt::Beginning,
            max_line_bytes: 1 << 20,
            poll_interval: Duration::from_millis(50),
        },
        batch_lines,
        batch_wait: Duration::from_millis(100),
    }
}

async fn start(data: &Path, config: CaddyConfig) -> Running {
    let stats = Arc::new(Stats::default());
    let opts = SpoolOptions { max_size: 1 << 30, segment_size: 8 << 20 };
    let spool = SpoolHandle::open(data.join("spool"), opts, Arc::clone(&stats)).await.unwrap();
    let ctx = SourceContext { node: Arc::from("test-node"), spool, stats };
    let cancel = CancellationToken::new();
    let task = tokio::spawn(CaddySource::new(config, ctx.clone()).run(cancel.clone()));
    Running { ctx, cancel, task }
}

fn read_count(r: &Running) -> u64 {
    count(&r.ctx)
}

fn count(ctx: &SourceContext) -> u64 {
    ctx.source_stats("caddy").read.load(Ordering::Relaxed)
}

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Caddy's own lines: rolled files (plain or gzipped) in name order, then the live file.
fn caddy_lines(dir: &Path) -> (Vec<Value>, usize) {
    let mut rolled: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("access-")
        })
        .collect();
    rolled.sort();
    let n_rolled = rolled.len();
    rolled.push(dir.join("access.log"));
    let mut out = Vec::new();
    for p in rolled {
        let mut text = String::new();
        let f = std::fs::File::open(&p).unwrap();
        if p.extension().is_some_and(|e| e == "gz") {
            flate2::read::MultiGzDecoder::new(f).read_to_string(&mut text).unwrap();
        } else {
            std::io::BufReader::new(f).read_to_string(&mut text).unwrap();
        }
        out.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    (out, n_rolled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_real_access_log_matches_row_for_row() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let site = format!(
        "log {{\n\toutput file {}/access.log {{\n\t\troll_size 1MiB\n\t\troll_keep 5\n\t}}\n\tformat json\n}}\nrespond /ok \"hello\" 200\nrespond /created \"made\" 201\nrespond /moved 301\nrespond /missing \"nope\" 404\nrespond /boom \"broken\" 500\nrespond /big \"{}\" 200\nrespond \"default\"",
        logs.display(),
        "x".repeat(5000)
    );
    let caddy = caddy_in(dir.path(), &site);

    let data = dir.path().join("data");
    let running = start(&data, caddy_config(&logs.join("access*.log"), 200)).await;

    let client = reqwest::Client::new();
    let base = caddy.base_url();
    let methods = [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::HEAD,
    ];
    let routes = ["/ok", "/created", "/moved", "/missing", "/boom", "/big", "/else"];
    // Long user agents make lines of ~1.5 KiB, so ~1000 requests roll the 1 MiB log.
    let n = 1000;
    for i in 0..n {
        let m = methods[i % methods.len()].clone();
        let route = routes[(i / 3) % routes.len()];
        let ua = format!("lake-test/{i} {}", "u".repeat(1000 + i % 97));
        let mut req = client.request(m, format!("{base}{route}?i={i}")).header("User-Agent", ua);
        if i % 4 == 1 {
            req = req.body("b".repeat(i % 300)).header("Referer", format!("https://ref.example/{i}"));
        }
        req.send().await.unwrap();
    }
    wait_for("the source to read every line", Duration::from_secs(30), || read_count(&running) >= n as u64).await;
    // One more poll period: nothing extra may come.
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.cancel.cancel();
    running.task.await.unwrap().unwrap();
    assert_eq!(count(&running.ctx), n as u64);

    let (lines, n_rolled) = caddy_lines(&logs);
    assert!(n_rolled >= 1, "caddy did not roll its log: the test needs more traffic");
    assert_eq!(lines.len(), n, "caddy logged every request");
    drop(running.ctx);
    let spooled = spooled(&data.join("spool")).await;
    let rows: Vec<Value> = spooled
        .into_iter()
        .flat_map(|(_, t, rows)| {
            assert_eq!(t, "http", "every real line parses");
            rows
        })
        .collect();
    assert_eq!(rows.len(), n);
    let mut statuses = HashMap::new();
    for (i, (row, line)) in rows.iter().zip(&lines).enumerate() {
        let req = &line["request"];
        let ts = line["ts"].as_f64().unwrap();
        let ts_us = (ts.floor() as i64) * 1_000_000 + ((ts - ts.floor()) * 1e6).round() as i64;
        let uri = req["uri"].as_str().unwrap();
        let want = [
            ("ts", serde_json::json!(ts_us)),
            ("host", "test-node".into()),
            ("vhost", "127.0.0.1".into()),
            ("method", req["method"].clone()),
            ("uri", uri.into()),
            ("path", uri.split('?').next().unwrap().into()),
            ("proto", req["proto"].clone()),
            ("status", line["status"].clone()),
            ("size", line["size"].clone()),
            ("remote_ip", req["remote_ip"].clone()),
            ("client_ip", req["remote_ip"].clone()),
            ("user_agent", req["headers"]["User-Agent"][0].clone()),
            ("referer", req["headers"].get("Referer").map_or(Value::Null, |r| r[0].clone())),
            ("tls_version", Value::Null),
        ];
        for (col, v) in want {
            assert_eq!(row[col], v, "line {i}, column {col}: {row}");
        }
        // Caddy's nanoseconds, rounded to the microsecond.
        let d = (line["duration"].as_f64().unwrap() * 1e6).round() / 1e3;
        assert!(same(&row["duration_ms"], &serde_json::json!(d)), "line {i} duration");
        assert_eq!(row["attrs"]["remote_port"], req["remote_port"], "line {i}");
        assert_eq!(row["attrs"]["logger"], line["logger"], "line {i}");
        *statuses.entry(line["status"].as_i64().unwrap()).or_insert(0) += 1;
    }
    for s in [200, 201, 301, 404, 500] {
        assert!(statuses.contains_key(&s), "status {s} was exercised: {statuses:?}");
    }
}

/// A synthetic Caddy line whose uri carries its number.
fn line(i: usize) -> String {
    format!(
        "{{\"level\":\"info\",\"ts\":1795648600.{i:06},\"logger\":\"http.log.access.log0\",\"msg\":\"handled request\",\"request\":{{\"remote_ip\":\"127.0.0.1\",\"remote_port\":\"5\",\"proto\":\"HTTP/1.1\",\"method\":\"GET\",\"host\":\"h\",\"uri\":\"/n/{i}\",\"headers\":{{}}}},\"duration\":0.001,\"size\":1,\"status\":200}}\n"
    )
}

fn append_lines(path: &Path, range: std::ops::Range<usize>) {
    let text: String = range.map(line).collect();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// How many times each line number was spooled.
async fn counts(data: &Path) -> HashMap<usize, usize> {
    let mut c = HashMap::new();
    for (_, _, rows) in spooled(&data.join("spool")).await {
        for r in rows {
            let n: usize = r["uri"].as_str().unwrap().trim_start_matches("/n/").parse().unwrap();
            *c.entry(n).or_insert(0) += 1;
        }
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_and_restart_read_every_line_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let data = dir.path().join("data");
    append_lines(&log, 0..20_000);
    let cfg = caddy_config(&log, 300);
    let r = start(&data, cfg.clone()).await;
    wait_for("some batches", Duration::from_secs(30), || read_count(&r) >= 1500).await;
    r.cancel.cancel();
    r.task.await.unwrap().unwrap();
    let first = count(&r.ctx);
    drop(r.ctx);
    append_lines(&log, 20_000..20_500);
    // A rotation while stopped, too.
    std::fs::rename(&log, dir.path().join("access-1.log")).unwrap();
    append_lines(&log, 20_500..21_000);
    let mut cfg = cfg;
    cfg.tail.patterns = vec![dir.path().join("access*.log").display().to_string()];
    let r = start(&data, cfg).await;
    wait_for("the rest", Duration::from_secs(60), || read_count(&r) >= 21_000 - first).await;
    r.cancel.cancel();
    r.task.await.unwrap().unwrap();
    assert_eq!(count(&r.ctx), 21_000 - first, "the second run read exactly what the first did not");
    drop(r.ctx);
    let c = counts(&data).await;
    assert_eq!(c.len(), 21_000);
    assert!(c.values().all(|&n| n == 1), "a line was spooled twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_then_restarted_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let data = dir.path().join("data");
    append_lines(&log, 0..20_000);
    let batch = 300;
    let cfg = caddy_config(&log, batch);
    let kills = 3;
    for round in 0..kills {
        let r = start(&data, cfg.clone()).await;
        wait_for("some batches", Duration::from_secs(30), || read_count(&r) >= 900).await;
        // kill -9: the task vanishes wherever it is, between reads or in a spool append.
        r.task.abort();
        let _ = r.task.await;
        // A kill -9 also ends a spool write in flight; an aborted task cannot stop its
        // blocking append, so let that finish before the next run opens the spool.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(r.ctx);
        append_lines(&log, 20_000 + round * 100..20_000 + (round + 1) * 100);
    }
    let r = start(&data, cfg).await;
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = read_count(&r);
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    r.cancel.cancel();
    r.task.await.unwrap().unwrap();
    drop(r.ctx);
    let c = counts(&data).await;
    let total = 20_000 + kills * 100;
    assert_eq!(c.len(), total, "no line is missing");
    assert!(c.keys().all(|&k| k < total));
    let repeated: Vec<_> = c.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "lines spooled twice: {repeated:?}");
}

/// The Caddy state the collector saved in its spool: every file entry as
/// (path, offset), read without disturbing a collector running on the spool.
fn saved_files(data: &Path) -> Option<Vec<(String, u64)>> {
    let states = lake_collector::spool::read_states(&data.join("spool")).ok()?;
    let v: Value = serde_json::from_slice(states.get("caddy")?).ok()?;
    Some(
        v["state"]["files"]
            .as_array()?
            .iter()
            .map(|f| (f["path"].as_str().unwrap_or_default().to_string(), f["offset"].as_u64().unwrap_or_default()))
            .collect(),
    )
}

/// Caddy's rolled files so far (plain or gzipped).
fn rolled_count(logs: &Path) -> usize {
    std::fs::read_dir(logs)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("access-"))
        .count()
}

/// Requests `range` to Caddy, each with its number in the path and a long User-Agent
/// (lines of ~1.4 KiB: ~750 fill Caddy's 1 MiB roll_size).
async fn send(client: &reqwest::Client, base: &str, range: std::ops::Range<usize>) {
    for i in range {
        let ua = format!("lake-rotation-test/{i} {}", "u".repeat(1000));
        let r = client.get(format!("{base}/r/{i}")).header("User-Agent", ua).send().await.unwrap();
        assert!(r.status().is_success());
    }
}

/// SIGTERM, and the wait for the collector to finish its shutdown.
async fn terminate(child: &mut tokio::process::Child) {
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
    let r = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(r, 0, "SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the collector stops within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "clean stop: {status}");
}

/// The issue-18 scenario with the real programs: Caddy with its default gzip rolling at
/// 1 MiB, 9,000 requests; the real collector stopped (SIGTERM) while Caddy rolls its log
/// several times, restarted, `kill -9`ed while it reads the rolled backlog, more
/// requests while it is dead, restarted again. The spool holds every request exactly once
/// (on the tailer that resumed only the file it had been reading, 4,704 of 9,000 rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_rotations_while_the_collector_is_down_are_read_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    // roll_keep high enough that Caddy deletes nothing: every request stays on disk.
    let site = format!(
        "log {{\n\toutput file {}/access.log {{\n\t\troll_size 1MiB\n\t\troll_keep 100\n\t}}\n\tformat json\n}}\nrespond \"ok\" 200",
        logs.display(),
    );
    let caddy = caddy_in(dir.path(), &site);

    let data = dir.path().join("data");
    let cfg_path = dir.path().join("collector.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "node = \"test-node\"\ndata_dir = {:?}\n[lake]\ntoken = \"t\"\nurl = \"http://127.0.0.1:9\"\n[host]\nenabled = false\ninterval = \"1h\"\n[caddy]\nenabled = true\npaths = [{:?}]\npoll_interval = \"100ms\"\nbatch_lines = 500\nbatch_wait = \"200ms\"\n",
            data.display().to_string(),
            logs.join("access*.log").display().to_string(),
        ),
    )
    .unwrap();
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_lake-collector"))
            .arg("--config")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("collector.out")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let client = reqwest::Client::new();
    let base = caddy.base_url();
    let total = 9_000;

    // 1. The collector runs while the first 3,000 requests come, then stops cleanly.
    let mut collector = spawn();
    send(&client, &base, 0..3_000).await;
    wait_for("a first checkpoint", Duration::from_secs(60), || saved_files(&data).is_some()).await;
    terminate(&mut collector).await;

    // 2. Down while Caddy rolls (and gzips) its log at least twice.
    let rolled_before = rolled_count(&logs);
    send(&client, &base, 3_000..6_500).await;
    let rolled_while_down = rolled_count(&logs) - rolled_before;
    assert!(
        rolled_while_down >= 2,
        "Caddy rolled {rolled_while_down} times while the collector was down; the test needs 2"
    );

    // 3. Restarted; killed with -9 while it reads the rolled backlog.
    let mut collector = spawn();
    let before = saved_files(&data);
    send(&client, &base, 6_500..7_000).await;
    wait_for("the restarted collector to checkpoint", Duration::from_secs(60), || saved_files(&data) != before).await;
    collector.kill().await.unwrap();

    // 4. More requests while it is dead, then a last start that reads everything.
    send(&client, &base, 7_000..total).await;
    let mut collector = spawn();
    let mut last = (saved_files(&data), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = saved_files(&data);
        // Read up to the end of every file still there, no .gz in progress (a plain file
        // compressed away since the last batch may still be named in the state).
        let settled = now.as_ref().is_some_and(|files| {
            files
                .iter()
                .all(|(p, offset)| !p.ends_with(".gz") && std::fs::metadata(p).map_or(true, |m| m.len() == *offset))
        });
        if now != last.0 {
            last = (now, Instant::now());
        } else if settled && last.1.elapsed() > Duration::from_secs(2) {
            break;
        }
        assert!(last.1.elapsed() < Duration::from_secs(60), "the collector made no progress for 60 s: {:?}", last.0);
    }
    terminate(&mut collector).await;

    let (caddy_lines, _) = caddy_lines(&logs);
    assert_eq!(caddy_lines.len(), total, "Caddy logged every request and deleted none");
    let mut seen: HashMap<usize, usize> = HashMap::new();
    for (_, _, rows) in spooled_tables(&data.join("spool"), |t| t == "http").await {
        for r in rows {
            let i: usize = r["path"].as_str().unwrap().trim_start_matches("/r/").parse().unwrap();
            *seen.entry(i).or_default() += 1;
        }
    }
    let rows: usize = seen.values().sum();
    let missing = (0..total).filter(|i| !seen.contains_key(i)).count();
    let twice = seen.values().filter(|n| **n > 1).count();
    assert!(
        rows == total && missing == 0 && twice == 0,
        "{rows} http rows for {total} requests: {missing} missing, {twice} stored twice"
    );
}
