//! Archive, retention and restore against a real S3-protocol server (moto's server mode,
//! installed by `scripts/setup peers`), driven through the `lake` binary as an operator
//! would: `lake serve`, `lake archive --now`, `lake archive status`, `lake restore`,
//! `lake query`. Then an independent reader (pyarrow, also from setup) reads the archived
//! Hive-partitioned Parquet straight from the bucket and must count the same rows.
//!
//! Steps: ingest 9 past days of metrics (3 flushes, so 3 files per day) and one large
//! logs file above the multipart threshold → `lake archive --now` compacts each day to
//! one file and starts uploading; the lake is killed (`kill -9`) once the ledger shows a
//! verified file → after a restart the next run uploads exactly the files not verified →
//! status → pyarrow counts = `lake query` counts →
//! retention deletes local partitions past `keep_local_days` (all verified) → restore
//! brings them back → every per-day aggregate equals the one taken before.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lake_format::layout::Date;
use lake_format::rows::{now_micros, MetricsBuilder, TableBuilder};
use lake_format::{wire, Table};

const BUCKET: &str = "lake-archive";
const DAY: i64 = 86_400_000_000;
const DAYS: i64 = 9;
const KEEP_LOCAL: i64 = 3;

/// moto's S3 server on a loopback port, stopped on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let ok = Command::new("python3").args(["-c", "import moto.server"]).status().is_ok_and(|s| s.success());
        assert!(ok, "moto's server mode is missing: run `scripts/setup peers` (it goes into ~/.cache/lake/peers-venv) and put the venv's bin/ first on PATH, as `make test` does");
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "moto did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn today() -> Date {
    Date::from_micros(now_micros())
}

fn day(days_ago: i64) -> Date {
    Date::from_days(today().to_days() - days_ago)
}

fn config(dir: &Path, port: u16, moto: &Moto) -> PathBuf {
    let archive = format!(
        r#"[archive]
store = "s3"
bucket = "{BUCKET}"
endpoint = "{endpoint}"
region = "us-east-1"
prefix = "lake"
allow_http = true
multipart_threshold = "1MiB"
multipart_part_size = "5MiB"

[retention]
keep_local_days = {KEEP_LOCAL}
restored_keep_days = 2"#,
        endpoint = moto.url(),
    );
    lake_toml(dir, port).flush("1h").query("timeout = \"2s\"").section(&archive).write()
}

fn lake_cmd(config: &Path) -> Command {
    let mut c = Command::new(lake_bin());
    c.env("LAKE_CONFIG", config)
        .env("LAKE_ARCHIVE_ACCESS_KEY_ID", "testing")
        .env("LAKE_ARCHIVE_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("LOG_FILTER", "warn");
    c
}

fn start_lake(config: &Path, port: u16) -> Lake {
    let child = lake_cmd(config).args(["serve"]).stdin(Stdio::null()).spawn().unwrap();
    let lake = Lake { child, url: format!("http://127.0.0.1:{port}"), config: config.to_path_buf() };
    lake.wait_healthy();
    lake
}

/// Runs a `lake` command; returns (exit code, stdout, stderr).
fn run(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = lake_cmd(config).args(args).env("LAKE_TOKEN", READ_TOKEN).output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn json(config: &Path, args: &[&str]) -> serde_json::Value {
    let (code, out, err) = run(config, args);
    assert_eq!(code, 0, "lake {args:?}: {err}\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("lake {args:?}: {e}: {out}"))
}

/// Per (table, date): rows, sum of values / row digest, min and max ts, via `lake query`.
fn aggregates(config: &Path, url: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (table, digest) in [("metrics", "sum(value)"), ("logs", "sum(length(message))")] {
        let sql = format!(
            "select '{table}/' || strftime(ts, '%Y-%m-%d') as p, concat_ws(' ', count(*), {digest}, min(ts), max(ts)) \
             from {table} group by 1 order by 1"
        );
        let v = json(config, &["query", "--url", url, "--format", "json", &sql]);
        for row in v["rows"].as_array().unwrap() {
            out.insert(row[0].as_str().unwrap().to_string(), row[1].as_str().unwrap().to_string());
        }
    }
    out
}

fn counts(aggs: &BTreeMap<String, String>) -> BTreeMap<String, u64> {
    aggs.iter().map(|(k, v)| (k.clone(), v.split(' ').next().unwrap().parse().unwrap())).collect()
}

async fn post(c: &reqwest::Client, url: &str, table: Table, seq: u64, batch: arrow_array::RecordBatch) {
    let body = wire::encode(&table.schema(), &[batch]).unwrap();
    let (s, t) = common::post(c, url, table.name(), TOKEN, &format!("{NODE}/1/{seq}"), body).await;
    assert_eq!(s, 200, "{t}");
}

/// Metrics on each of the 9 past days (a different count per day) and a few today.
fn metrics(round: u64) -> arrow_array::RecordBatch {
    let mut b = MetricsBuilder::new();
    for d in 1..=DAYS {
        for i in 0..(40 * d + round as i64) {
            let ts = day(d).to_days() * DAY + 1_000_000 * (i + 1000 * round as i64);
            b.push(ts, NODE, "load", (i * d) as f64 + round as f64, &[("round", &round.to_string())]);
        }
    }
    for i in 0..7 {
        b.push(now_micros() - i, NODE, "load", 1.0, &[]);
    }
    b.finish()
}

/// ~7 MiB of poorly compressible log lines on one past day: a multipart upload.
fn big_logs() -> arrow_array::RecordBatch {
    let mut b = TableBuilder::new(Table::Logs);
    let c = |b: &TableBuilder, n| b.column(n).unwrap();
    let (ts, host, source, message) = (c(&b, "ts"), c(&b, "host"), c(&b, "source"), c(&b, "message"));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..90_000i64 {
        let mut line = String::with_capacity(160);
        while line.len() < 150 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            line.push_str(&format!("{x:016x}"));
        }
        b.ts(ts, day(2).to_days() * DAY + i * 1000);
        b.text(host, Some(NODE));
        b.text(source, Some("test"));
        b.text(message, Some(&line));
        b.end_row();
    }
    b.finish().unwrap()
}

/// Forces a flush by restarting the lake (shutdown flushes every buffered row).
fn restart(lake: &mut Lake, config: &Path, port: u16) {
    lake.term();
    *lake = start_lake(config, port);
}

fn ledger_verified(data: &Path) -> usize {
    let Ok(bytes) = std::fs::read(data.join("state/archive.json")) else { return 0 };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    v["v1"]["partitions"]
        .as_object()
        .map_or(0, |p| p.values().map(|r| r["files"].as_object().map_or(0, |f| f.len())).sum())
}

fn parquet_files(data: &Path) -> usize {
    let mut n = 0;
    for t in std::fs::read_dir(data.join("tables")).unwrap().flatten() {
        for d in std::fs::read_dir(t.path()).unwrap().flatten() {
            let past = d
                .file_name()
                .to_string_lossy()
                .strip_prefix("date=")
                .and_then(Date::parse)
                .is_some_and(|d| d < today());
            if past {
                n += std::fs::read_dir(d.path())
                    .unwrap()
                    .flatten()
                    .filter(|f| f.file_name().to_string_lossy().ends_with(".parquet"))
                    .count();
            }
        }
    }
    n
}

const READER: &str = r#"
import json, sys
import pyarrow as pa, pyarrow.compute as pc, pyarrow.dataset as ds, pyarrow.fs as fs
port, bucket, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = fs.S3FileSystem(access_key="testing", secret_key="testing", endpoint_override=f"127.0.0.1:{port}",
                     scheme="http", region="us-east-1")
part = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
out = {}
for table in sys.argv[4:]:
    d = ds.dataset(f"{bucket}/{prefix}/tables/{table}", filesystem=s3, format="parquet", partitioning=part)
    t = d.to_table(columns=["date"])
    for row in pc.value_counts(t.column("date")).to_pylist():
        out[f"{table}/{row['values']}"] = row["counts"]
print(json.dumps(out, sort_keys=True))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_kill_resume_retention_restore_and_an_independent_reader() {
    let moto = Moto::start();
    let r = reqwest::Client::new().put(format!("{}/{BUCKET}", moto.url())).send().await.unwrap();
    assert!(r.status().is_success(), "creating the bucket: {}", r.status());

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let cfg = config(dir.path(), port, &moto);
    let mut lake = start_lake(&cfg, port);
    let c = reqwest::Client::new();

    // Three flushes of metrics (three files per past day), one big logs file.
    for round in 0..3 {
        // Batch ids rise: the lake keeps a high-water mark per (node, epoch).
        post(&c, &lake.url, Table::Metrics, 2 * round + 1, metrics(round)).await;
        if round == 0 {
            post(&c, &lake.url, Table::Logs, 2, big_logs()).await;
        }
        restart(&mut lake, &cfg, port);
    }
    assert_eq!(parquet_files(&data), 3 * DAYS as usize + 1, "past-day files on disk");
    let before = aggregates(&cfg, &lake.url);
    assert_eq!(before.len(), DAYS as usize + 2, "{before:?}");

    // 1. `lake archive --now` through the running lake; kill -9 the lake once a file is verified.
    let mut cli = lake_cmd(&cfg)
        .args(["archive", "--now", "--no-retention", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while ledger_verified(&data) == 0 {
        assert!(Instant::now() < deadline, "no file verified in time");
        assert!(cli.try_wait().unwrap().is_none(), "lake archive ended before the kill");
        std::thread::sleep(Duration::from_millis(2));
    }
    lake.kill9();
    let verified_before = ledger_verified(&data);
    let status = cli.wait().unwrap();
    let mut err = String::new();
    cli.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");

    // 2. Restart and run again: exactly the unverified files are uploaded. The killed run
    // had compacted each metrics day's three files into one before uploading.
    lake = start_lake(&cfg, port);
    let files = parquet_files(&data);
    assert_eq!(files, DAYS as usize + 1, "past-day files after compaction");
    println!("killed the lake after {verified_before} of {files} files were verified; the CLI said: {err:?}");
    assert!(verified_before < files, "the archive finished before the kill");
    let report = json(&cfg, &["archive", "--now", "--no-retention", "--format", "json"]);
    println!("resumed archive run: {report}");
    assert_eq!(report["files_uploaded"].as_u64().unwrap() as usize, files - verified_before, "{report}");
    assert_eq!(report["files_already_verified"].as_u64().unwrap() as usize, verified_before, "{report}");
    assert_eq!(report["partitions_verified"], DAYS + 1);
    assert_eq!(ledger_verified(&data), files);

    // The big file went up in parts: S3 gives multipart objects an ETag ending in -<parts>.
    let logs_dir = format!("{}/{BUCKET}/lake/tables/logs/date={}", moto.url(), day(2));
    let name = std::fs::read_dir(data.join(format!("tables/logs/date={}", day(2))))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let head = c.head(format!("{logs_dir}/{}", name.to_string_lossy())).send().await.unwrap();
    let etag = head.headers()["etag"].to_str().unwrap().to_string();
    let size: u64 = head.headers()["content-length"].to_str().unwrap().parse().unwrap();
    println!("big logs file: {size} bytes, ETag {etag}");
    assert!(size > 5 << 20 && etag.trim_matches('"').ends_with("-2"), "{size} {etag}");

    // 3. Status through the running lake.
    let (code, table, err) = run(&cfg, &["archive", "status"]);
    assert_eq!(code, 0, "{err}");
    println!("lake archive status:\n{table}");
    let rows = json(&cfg, &["archive", "status", "--format", "json"]);
    let rows = rows["rows"].as_array().unwrap();
    assert_eq!(rows.len(), DAYS as usize + 2);
    for r in rows {
        let today_row = r[1].as_str() == Some(&today().to_string());
        let want = if today_row { "local" } else { "local+archive" };
        assert_eq!(
            (r[2].as_str().unwrap(), r[7].as_str().unwrap()),
            (want, if today_row { "no" } else { "yes" }),
            "{r:?}"
        );
    }

    // 4. An independent reader (pyarrow) reads the bucket directly and counts the same rows.
    let out = Command::new("python3")
        .args(["-c", READER, &moto.port.to_string(), BUCKET, "lake", "metrics", "logs"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow reader failed (scripts/setup peers installs pyarrow): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let independent: BTreeMap<String, u64> = serde_json::from_slice(&out.stdout).unwrap();
    let mut lake_counts = counts(&before);
    lake_counts.retain(|k, _| !k.ends_with(&today().to_string()));
    println!("pyarrow counts: {independent:?}\nlake query counts (finished days): {lake_counts:?}");
    assert_eq!(independent, lake_counts);

    // 5. Retention: local partitions older than today - 3 days go (all verified).
    let report = json(&cfg, &["archive", "--now", "--format", "json"]);
    println!("archive + retention run: {report}");
    let evicted_metrics = (DAYS - KEEP_LOCAL) as u64;
    assert_eq!(report["files_uploaded"], 0);
    assert_eq!(report["retention"]["partitions_evicted"], evicted_metrics);
    assert_eq!(report["retention"]["files_evicted"], evicted_metrics);
    let after = aggregates(&cfg, &lake.url);
    assert_eq!(after.len(), before.len() - evicted_metrics as usize, "{after:?}");
    assert!(
        after
            .keys()
            .all(|k| !k.starts_with("metrics/") || k.as_str() >= format!("metrics/{}", day(KEEP_LOCAL)).as_str()),
        "{after:?}"
    );

    // 6. Restore the evicted days; queries over local + restored data equal the originals.
    let (from, to) = (day(DAYS + 1).to_string(), day(KEEP_LOCAL + 1).to_string());
    let report = json(&cfg, &["restore", "--table", "metrics", "--from", &from, "--to", &to, "--format", "json"]);
    println!("restore: {report}");
    assert_eq!(report["files_restored"], evicted_metrics);
    assert_eq!(report["dates_not_archived"].as_array().unwrap().len(), 1);
    assert_eq!(aggregates(&cfg, &lake.url), before);

    // Restored partitions are protected from the next retention run.
    let report = json(&cfg, &["archive", "--now", "--format", "json"]);
    assert_eq!(report["retention"]["partitions_evicted"], 0, "{report}");
    assert_eq!(report["retention"]["partitions_kept_restored"], evicted_metrics, "{report}");

    // 7. With the lake stopped, the same commands run in-process (they take the lock).
    lake.term();
    let (code, offline, err) = run(&cfg, &["archive", "status", "--table", "metrics"]);
    assert_eq!(code, 0, "{err}");
    println!("lake archive status (offline, metrics):\n{offline}");
    assert!(offline.contains("restored_until"), "{offline}");
    let report = json(&cfg, &["archive", "--now", "--no-retention", "--format", "json"]);
    assert_eq!(
        (report["files_uploaded"].as_u64(), report["files_already_verified"].as_u64()),
        (Some(0), Some(files as u64))
    );
}
