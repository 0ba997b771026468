//! Issue 18 §4, the spool half of §5 and §7 "from the nodes", with the real programs: a
//! `lake serve` and `lake-collector` processes (and `lake ingest`) on loopback.
//!
//! - A refused token (401), node name (403) or clock waits in the spool, logged once a
//!   minute, and every row arrives exactly once when it is fixed.
//! - `rejected/` is bounded; `lake-collector replay-rejected` stores what it keeps, once.
//! - Batch ids never collide: two `lake ingest` runs in one second, a cloned spool.
//! - A damaged record in an inner spool segment is salvaged around, loudly.
//! - The heartbeat pings while healthy and posts one webhook when the lake is down, one
//!   when it is back.
//!
//! Needs `lake-collector` built beside `lake` (`cargo build --bin lake-collector`) and
//! `faketime` (Debian's package, installed by `scripts/setup`) for the lake with a wrong
//! clock.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A collector process whose stderr goes to `log`.
struct Collector {
    child: Child,
    log: PathBuf,
}

impl Collector {
    fn start(toml: &Path, log: &Path) -> Collector {
        let err = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(collector_bin())
            .arg("--config")
            .arg(toml)
            .env("LOG_FILTER", "info")
            .env_remove("LAKE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Collector { child, log: log.to_path_buf() }
    }

    /// The log so far, without the terminal colours tracing adds.
    fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI: ESC [ parameters, up to a final letter.
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// SIGTERM and wait: what it spooled stays spooled.
    fn stop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A collector.toml for `NODE` with fast retries, only its own rows from `[host]`, and
/// `extra` appended (token settings included: `token = …` or `token_file = …`).
fn collector_toml(dir: &Path, name: &str, node: &str, lake_port: u16, lake_extra: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "version = 1\nnode = \"{node}\"\ndata_dir = \"{}\"\n[lake]\nurl = \"http://127.0.0.1:{lake_port}\"\ntimeout = \"2s\"\n{lake_extra}\n\
         [host]\nenabled = false\ninterval = \"1s\"\n[inventory]\nenabled = false\n\
         [shipper]\nbackoff_min = \"100ms\"\nbackoff_max = \"300ms\"\nconfig_backoff_min = \"300ms\"\nconfig_backoff_max = \"600ms\"\n{extra}",
        dir.join(name).display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// An `[[exec]]` source writing one row per run, `{"who": who, "n": <run number>}`, into
/// custom table `table`; the run number is counted in `runs` (a file), so the rows that
/// must arrive are known. `wide` adds two more fields.
fn exec_counter(table: &str, who: &str, runs: &Path, wide: bool) -> String {
    let more = if wide { ",\"a\":1,\"b\":2" } else { "" };
    format!(
        "[[exec]]\nname = \"counter\"\nshell = true\nformat = \"ndjson\"\ntable = \"{table}\"\ninterval = \"300ms\"\ntimeout = \"300ms\"\n\
         command = '''echo x >> {runs}; printf '{{\"who\":\"{who}\",\"n\":%d{more}}}\\n' $(wc -l < {runs})'''\n",
        runs = runs.display()
    )
}

async fn wait_until<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

/// `select count(*)` of `table`, 0 while the table does not exist.
async fn rows_of(c: &reqwest::Client, url: &str, sql_text: &str) -> i64 {
    let r = c
        .post(format!("{url}/v1/sql"))
        .bearer_auth(READ_TOKEN)
        .json(&serde_json::json!({"sql": sql_text, "format": "json"}))
        .send()
        .await;
    match r {
        Ok(r) if r.status().is_success() => {
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            v["rows"][0][0].as_i64().unwrap_or(0)
        }
        _ => 0,
    }
}

/// Waits up to `secs` until the count `sql_text` answers reaches `want`, and returns the
/// last count. [`rows_of`] answers 0 while the lake is down or starting, so this also waits
/// through a restart.
async fn rows_reach(c: &reqwest::Client, url: &str, sql_text: &str, want: i64, secs: u64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let n = rows_of(c, url, sql_text).await;
        if n >= want || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Collector `c` of node-a with the right token, `extra` in its config and the `app`
/// counter recording its runs in `runs` (`wide`: see [`exec_counter`]).
fn counting_collector(dir: &Path, lake_port: u16, extra: &str, runs: &Path, wide: bool) -> PathBuf {
    let extra = format!("{extra}{}", exec_counter("app", "a", runs, wide));
    collector_toml(dir, "c", NODE, lake_port, &format!("token = \"{TOKEN}\""), &extra)
}

/// The `n`s stored for `who` in `table`, ascending, with duplicates.
async fn ns_of(c: &reqwest::Client, url: &str, table: &str, who: &str) -> Vec<i64> {
    let rows = sql(c, url, &format!("select n from {table} where who = '{who}' order by n")).await;
    rows.as_array().unwrap().iter().map(|r| r[0].as_i64().unwrap()).collect()
}

/// No duplicates and no gaps: exactly 1..=max.
fn assert_complete(ns: &[i64], what: &str) {
    assert!(!ns.is_empty(), "{what}: no rows");
    let want: Vec<i64> = (1..=*ns.last().unwrap()).collect();
    assert_eq!(ns, want.as_slice(), "{what}: rows lost or stored twice");
}

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == ext)).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn occurrences(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// A wrong token (401) waits in the spool — nothing in `rejected/`, one log line naming
/// the cause however many retries, counted — and fixing `token_file` resumes shipping
/// without a restart: every row arrives exactly once. A node name the token does not
/// belong to (403) waits the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_waits_in_the_spool_and_every_row_arrives_once_when_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let lake = Lake::start(&write_config(dir.path(), port, "1s"), port);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "not-the-token\n").unwrap();
    let runs = dir.path().join("runs");
    let toml = collector_toml(
        dir.path(),
        "c",
        NODE,
        port,
        &format!("token_file = \"{}\"", token_file.display()),
        &exec_counter("app", "a", &runs, false),
    );
    let mut col = Collector::start(&toml, &dir.path().join("c.log"));
    // A renamed node: node-b with node-a's token.
    let renamed = collector_toml(dir.path(), "r", "node-b", port, &format!("token = \"{TOKEN}\""), "");
    let mut col_b = Collector::start(&renamed, &dir.path().join("r.log"));

    let c = reqwest::Client::new();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let log = col.log();
    let cause = "lake refused the token for node node-a (401 Unauthorized";
    assert_eq!(occurrences(&log, cause), 1, "one line a minute, not one per retry:\n{log}");
    assert!(log.contains(&format!("check lake.token_file {}", token_file.display())), "{log}");
    assert!(!dir.path().join("c/rejected").exists(), "a refused token is no reason to set batches aside");
    assert_eq!(rows_of(&c, &lake.url, "select count(*) from app").await, 0);
    let runs_before_fix = std::fs::read_to_string(&runs).unwrap().lines().count();
    assert!(runs_before_fix >= 10, "{runs_before_fix} runs");
    let log_b = col_b.log();
    assert_eq!(occurrences(&log_b, "lake refused node node-b (403 Forbidden"), 1, "{log_b}");
    assert!(!dir.path().join("r/rejected").exists());
    col_b.stop();

    // The fix: the right token in the file. No restart.
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let stored = rows_reach(&c, &lake.url, "select count(*) from app", runs_before_fix as i64, 30).await;
    assert!(stored >= runs_before_fix as i64, "{stored} of the {runs_before_fix} rows spooled while refused");
    tokio::time::sleep(Duration::from_secs(2)).await;
    col.stop();
    tokio::time::sleep(Duration::from_secs(2)).await; // flush interval
    let ns = ns_of(&c, &lake.url, "app", "a").await;
    assert_complete(&ns, "token fixed");
    assert!(ns.len() >= runs_before_fix);
    let log = col.log();
    assert!(log.contains("lake.token_file holds a new token"), "{log}");
    assert!(log.contains("the lake accepts this node again"), "{log}");
    let refused = rows_of(
        &c,
        &lake.url,
        "select max(value)::bigint from metrics where name = 'lake_collector_config_errors_total'",
    )
    .await;
    assert!(refused >= 5, "config errors counted: {refused}");
}

/// A lake whose clock is three days behind refuses every row as being from the future.
/// The collector keeps them (its clock and the lake's disagree: a clock problem), and
/// once the lake runs with the right clock every row arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_skew_refusal_waits_until_the_clocks_agree() {
    let libfaketime =
        libfaketime().expect("libfaketime is needed (apt-get install faketime; scripts/setup installs it)");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "1s");
    // The library itself rather than the `faketime` wrapper, so the child is the lake.
    let wrong = Command::new(lake_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env("LD_PRELOAD", libfaketime)
        .env("FAKETIME", "-3d")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("LOG_FILTER", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut lake = Lake { child: wrong, url: format!("http://127.0.0.1:{port}"), config: config.clone() };
    lake.wait_healthy();

    let runs = dir.path().join("runs");
    let toml = counting_collector(dir.path(), port, "", &runs, false);
    // Its own rows (`metrics`, stamped by this node's clock) are what the lake refuses.
    let mut col = Collector::start(&toml, &dir.path().join("c.log"));
    let c = reqwest::Client::new();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log = col.log();
    let cause = "lake refused rows for clock skew: this node's clock is 3d 0h ahead of the lake's";
    assert_eq!(occurrences(&log, cause), 1, "{log}");
    assert!(!dir.path().join("c/rejected").exists(), "a clock problem is no reason to set batches aside");

    // The lake's clock is fixed.
    lake.term();
    let lake = Lake::start(&config, port);
    let rows_spooled = std::fs::read_to_string(&runs).unwrap().lines().count() as i64;
    let stored = rows_reach(&c, &lake.url, "select count(*) from app", rows_spooled, 30).await;
    assert!(stored >= rows_spooled, "{stored} of {rows_spooled} rows after the fix:\n{}", col.log());
    col.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_complete(&ns_of(&c, &lake.url, "app", "a").await, "clock fixed");
    let stats =
        rows_of(&c, &lake.url, "select count(*) from metrics where name = 'lake_collector_config_errors_total'").await;
    assert!(stats >= 3, "the collector's own rows of the refused period arrived: {stats}");
    assert!(!dir.path().join("c/rejected").exists());
}

/// Debian's libfaketime (`/usr/lib/<triplet>/faketime/libfaketime.so.1`).
fn libfaketime() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.is_file())
}

/// A custom table whose configured width the rows exceed: every batch is refused for
/// good (400) and kept in `rejected/`, which holds only the newest `max_batches`. The
/// lake's config fixed, `replay-rejected` stores exactly the kept rows, once, and
/// deletes them; run again it has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_is_bounded_and_replay_stores_every_kept_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "1s");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{good}\n[custom.tables.app]\nmax_columns = 1\n")).unwrap();
    let mut lake = Lake::start(&config, port);
    let runs = dir.path().join("runs");
    let toml = counting_collector(dir.path(), port, "[rejected]\nmax_batches = 3\n", &runs, true);
    let mut col = Collector::start(&toml, &dir.path().join("c.log"));
    let rejected = dir.path().join("c/rejected");
    wait_until("more refusals than the bound keeps", 30, || {
        let runs = runs.clone();
        async move { std::fs::read_to_string(&runs).map(|t| t.lines().count()).unwrap_or(0) >= 8 }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    col.stop();
    let bodies = files_in(&rejected, "ndjson");
    assert_eq!(bodies.len(), 3, "bounded to max_batches: {bodies:?}");
    assert_eq!(files_in(&rejected, "txt").len(), 3);
    let log = col.log();
    assert!(log.contains("rejected/ is full: deleted the oldest refused batch"), "{log}");
    // The newest refusals are the ones kept.
    let mut kept: Vec<i64> = bodies
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["n"].as_i64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    kept.sort_unstable();
    let total = std::fs::read_to_string(&runs).unwrap().lines().count() as i64;
    assert!(kept[0] > 3 && *kept.last().unwrap() <= total, "kept {kept:?} of {total}");

    // Replay while the lake still refuses: each batch stays, exit 1.
    let replay = |toml: &Path| {
        Command::new(collector_bin())
            .arg("replay-rejected")
            .arg("--config")
            .arg(toml)
            .env_remove("LAKE_TOKEN")
            .output()
            .unwrap()
    };
    let out = replay(&toml);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(occurrences(&stdout, "kept    "), 3, "{stdout}");
    assert!(stdout.contains("400 Bad Request"), "{stdout}");
    assert_eq!(files_in(&rejected, "ndjson").len(), 3);

    // The lake's config fixed: every kept row stored once, the files gone, exit 0.
    lake.term();
    std::fs::write(&config, good).unwrap();
    let lake = Lake::start(&config, port);
    let out = replay(&toml);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(occurrences(&stdout, "stored  "), 3, "{stdout}");
    assert!(files_in(&rejected, "ndjson").is_empty() && files_in(&rejected, "txt").is_empty());
    let c = reqwest::Client::new();
    assert_eq!(ns_of(&c, &lake.url, "app", "a").await, kept, "exactly the kept rows, once");
    let out = replay(&toml);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 stored, 0 left"));
}

/// The issue's repro: two `lake ingest` runs in the same second into the same table.
/// Both rows are stored (the second was acknowledged as a duplicate and lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lake_ingest_runs_in_one_second_both_store_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let lake = Lake::start(&write_config(dir.path(), port, "1s"), port);
    let files: Vec<PathBuf> = (1..=2)
        .map(|i| {
            let p = dir.path().join(format!("w{i}.ndjson"));
            std::fs::write(&p, format!("{{\"ts\": \"2026-11-25T10:00:0{i}Z\", \"temp_c\": {i}}}\n")).unwrap();
            p
        })
        .collect();
    // Started together: the same second on any machine.
    let children: Vec<Child> = files
        .iter()
        .map(|f| {
            Command::new(lake_bin())
                .args(["ingest", "w"])
                .arg(f)
                .args(["--url", &lake.url, "--node", NODE, "--token", TOKEN])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("ingested 1 rows into w in 1 batches"));
    }
    let c = reqwest::Client::new();
    assert_eq!(count(&c, &lake.url, "select count(*) from w").await, 2);
    assert_eq!(count(&c, &lake.url, "select sum(temp_c)::bigint from w").await, 3);
}

/// A spool directory copied to another machine (a cloned VM) while the lake was down,
/// both collectors with the same node name: the shared records are stored once, and
/// neither collector's own rows are dropped as duplicates of the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloned_spool_loses_no_batch_to_duplicate_detection() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "1s");
    let (runs_a, runs_b) = (dir.path().join("runs-a"), dir.path().join("runs-b"));
    let token = format!("token = \"{TOKEN}\"");
    let toml_a = collector_toml(dir.path(), "a", NODE, port, &token, &exec_counter("app", "a", &runs_a, false));
    // The lake is not up yet: A spools.
    let mut a = Collector::start(&toml_a, &dir.path().join("a.log"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.stop();
    // The clone: A's data directory, its own counter.
    let copy = Command::new("cp").arg("-a").arg(dir.path().join("a")).arg(dir.path().join("b")).status().unwrap();
    assert!(copy.success());
    let toml_b = collector_toml(dir.path(), "b", NODE, port, &token, &exec_counter("app", "b", &runs_b, false));
    let lake = Lake::start(&config, port);
    let mut a = Collector::start(&toml_a, &dir.path().join("a.log"));
    let mut b = Collector::start(&toml_b, &dir.path().join("b.log"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.stop();
    b.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = reqwest::Client::new();
    let ns_a = ns_of(&c, &lake.url, "app", "a").await;
    let ns_b = ns_of(&c, &lake.url, "app", "b").await;
    assert_complete(&ns_a, "the original's rows (shared ones once)");
    assert_complete(&ns_b, "the clone's rows");
    assert!(ns_b.len() >= 5, "{ns_b:?}");
}

/// The first spool segment damaged in its middle (a bad sector) while the lake was down:
/// the collector says which file and bytes, the records after the damage are shipped,
/// and only the damaged record's row is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_inner_spool_segment_is_salvaged_and_the_rest_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "1s");
    let runs = dir.path().join("runs");
    let toml =
        counting_collector(dir.path(), port, "[spool]\nsegment_size = \"8KiB\"\nmax_size = \"64MiB\"\n", &runs, false);
    let mut col = Collector::start(&toml, &dir.path().join("c.log"));
    let spool = dir.path().join("c/spool");
    wait_until("three spool segments", 30, || {
        let spool = spool.clone();
        async move { files_in(&spool, "seg").len() >= 3 }
    })
    .await;
    col.stop();
    // Damage the payload of an `app` record that is not the first of its segment, in a
    // segment that is not the last: the records around it are intact.
    let segs = files_in(&spool, "seg");
    let mut found = None;
    'segments: for seg in &segs[..segs.len() - 1] {
        let bytes = std::fs::read(seg).unwrap();
        let (mut offset, mut index) = (0usize, 0);
        while offset + 12 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap()) as usize;
            let text = String::from_utf8_lossy(&bytes[offset + 12..offset + 12 + len]).to_string();
            if index > 0 && text.contains("json/app") {
                let at = text.find("\"n\":").unwrap() + 4;
                let n: String = text[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
                found = Some((seg.clone(), bytes, offset, n.parse::<i64>().unwrap()));
                break 'segments;
            }
            offset += 12 + len;
            index += 1;
        }
    }
    let (seg, mut bytes, damaged_at, damaged_n) = found.expect("an app record, not first in an inner segment");
    bytes[damaged_at + 12 + 20] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();

    let lake = Lake::start(&config, port);
    let mut col = Collector::start(&toml, &dir.path().join("c.log"));
    let c = reqwest::Client::new();
    let spooled = std::fs::read_to_string(&runs).unwrap().lines().count() as i64;
    let after = format!("select count(*) from app where n > {damaged_n}");
    let shipped = rows_reach(&c, &lake.url, &after, spooled - damaged_n, 30).await;
    assert!(shipped >= spooled - damaged_n, "{shipped} of the {} records after the damage", spooled - damaged_n);
    col.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = col.log();
    let line =
        log.lines().find(|l| l.contains("damaged spool segment")).unwrap_or_else(|| panic!("no damage report:\n{log}"));
    assert!(line.contains(&seg.display().to_string()) && line.contains(&format!("bytes={damaged_at}..")), "{line}");
    assert!(line.contains("ERROR") && line.contains("lost=1"), "{line}");
    let ns = ns_of(&c, &lake.url, "app", "a").await;
    let want: Vec<i64> = (1..=*ns.last().unwrap()).filter(|n| *n != damaged_n).collect();
    assert_eq!(ns, want, "only the damaged record's row is missing (n = {damaged_n})");
    let lost = rows_of(
        &c,
        &lake.url,
        "select max(value)::bigint from metrics where name = 'lake_collector_spool_damaged_records_total'",
    )
    .await;
    assert_eq!(lost, 1);
}

/// What the monitoring side received.
#[derive(Default)]
struct Monitor {
    pings: Mutex<Vec<Instant>>,
    hooks: Mutex<Vec<serde_json::Value>>,
}

async fn start_monitor(m: Arc<Monitor>) -> u16 {
    use axum::routing::{get, post};
    let (m1, m2) = (Arc::clone(&m), m);
    let app = axum::Router::new()
        .route(
            "/ping",
            get(move || {
                let m = Arc::clone(&m1);
                async move {
                    m.pings.lock().unwrap().push(Instant::now());
                    "OK"
                }
            }),
        )
        .route(
            "/hook",
            post(move |body: String| {
                let m = Arc::clone(&m2);
                async move {
                    m.hooks.lock().unwrap().push(serde_json::from_str(&body).unwrap());
                    "OK"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// The lake down: pings go on for `grace`, then stop; one webhook after `after`. The
/// lake up: one "resolved", and pings again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_pings_while_healthy_and_the_webhook_tells_lake_down_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "1s");
    let m = Arc::new(Monitor::default());
    let mport = start_monitor(Arc::clone(&m)).await;
    let toml = collector_toml(
        dir.path(),
        "c",
        NODE,
        port,
        &format!("token = \"{TOKEN}\""),
        &format!(
            "[heartbeat]\nurl = \"http://127.0.0.1:{mport}/ping\"\ninterval = \"1s\"\ngrace = \"2s\"\n\
             [heartbeat.lake_down]\nurl = \"http://127.0.0.1:{mport}/hook\"\nafter = \"4s\"\n"
        ),
    );
    let mut col = Collector::start(&toml, &dir.path().join("c.log"));
    // Lake down for 9 s: firing once after about 4 s, pings stopped after about 2 s.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let hooks = m.hooks.lock().unwrap().clone();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let h = &hooks[0];
    assert_eq!(
        (h["status"].as_str(), h["rule"].as_str(), h["node"].as_str()),
        (Some("firing"), Some("lake_unreachable"), Some(NODE))
    );
    assert!(h["last_error"].as_str().unwrap().contains("request to the lake failed"), "{h}");
    assert!(
        h["summary"].as_str().unwrap().starts_with("[FIRING] lake_unreachable: node-a has not reached the lake for"),
        "{h}"
    );
    let pings_down = m.pings.lock().unwrap().clone();
    assert!(!pings_down.is_empty(), "pings while within grace");
    let last_ping_while_down = *pings_down.last().unwrap();
    assert!(
        last_ping_while_down.elapsed() > Duration::from_secs(4),
        "pings stop once delivery failed for longer than grace"
    );

    let _lake = Lake::start(&config, port);
    tokio::time::sleep(Duration::from_secs(6)).await;
    col.stop();
    let hooks = m.hooks.lock().unwrap().clone();
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    assert_eq!(hooks[1]["status"].as_str(), Some("resolved"), "{hooks:?}");
    assert!(hooks[1]["ends_at"].is_string());
    let pings = m.pings.lock().unwrap().len();
    assert!(pings >= pings_down.len() + 3, "pings resume once the lake is back: {pings} after {}", pings_down.len());
}
