//! The watcher is watched: a real `lake serve` whose engine, WAL, archive or tokens are
//! turned against it, and what it tells the outside.
//!
//! - the heartbeat: a local HTTP server the test runs gets a ping after every alert
//!   round; a metrics Parquet file broken on purpose makes the rules on it fail, and then
//!   `<url>/fail` arrives with the reason, `/health` answers 503 naming it, and the
//!   built-in `alert_rule_failing` fires through a webhook and into the `alerts` table;
//!   the file restored, all of it clears (`--nocapture` prints one line per ping);
//! - silences: a read token gets 403 naming the alerts role; an alerts token (from
//!   `lake token add --role alerts`) and an admin token may add and remove them;
//! - restore: a bucket manifest naming `../../tokens.toml` fails the restore, naming the
//!   manifest and the name, with nothing written outside staging (or anywhere);
//! - the WAL: a byte damaged in the middle of an older segment of a SIGKILLed lake loses
//!   exactly the record it is in, loudly (log, `/metrics`, `/health` until the next
//!   start, the bytes kept); every record before and after it is queryable.
//!
//! Every test ends with `select count(*) from metrics` answering 200.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use common::*;
use lake_format::rows::{now_micros, MetricsBuilder};
use serde_json::Value;

/// One request the monitor got.
#[derive(Debug, Clone)]
struct Ping {
    at: Duration,
    method: String,
    path: String,
    query: String,
    body: String,
}

/// A stand-in for healthchecks.io (and a webhook receiver): records and prints every request.
struct Monitor {
    url: String,
    seen: Arc<Mutex<Vec<Ping>>>,
}

impl Monitor {
    async fn start() -> Monitor {
        type Seen = (Instant, Arc<Mutex<Vec<Ping>>>);
        async fn record(
            State((t0, seen)): State<Seen>,
            method: Method,
            uri: Uri,
            body: axum::body::Bytes,
        ) -> StatusCode {
            let p = Ping {
                at: t0.elapsed(),
                method: method.to_string(),
                path: uri.path().to_string(),
                query: uri.query().unwrap_or_default().to_string(),
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            if p.path.starts_with("/ping") {
                let body =
                    if p.body.is_empty() { String::new() } else { format!("  body: {}", p.body.replace('\n', " | ")) };
                let query = if p.query.is_empty() { String::new() } else { format!("?{}", p.query) };
                println!("[monitor +{:6.2}s] {} {}{query}{body}", p.at.as_secs_f64(), p.method, p.path);
            } else {
                println!(
                    "[monitor +{:6.2}s] {} {} (webhook, {} bytes)",
                    p.at.as_secs_f64(),
                    p.method,
                    p.path,
                    p.body.len()
                );
            }
            seen.lock().unwrap().push(p);
            StatusCode::OK
        }
        let seen: Arc<Mutex<Vec<Ping>>> = Arc::default();
        let app = axum::Router::new().fallback(record).with_state((Instant::now(), Arc::clone(&seen)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Monitor { url, seen }
    }

    fn at(&self, method: &str, path: &str) -> Vec<Ping> {
        self.seen.lock().unwrap().iter().filter(|p| p.method == method && p.path == path).cloned().collect()
    }

    fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn since(&self, n: usize) -> Vec<Ping> {
        self.seen.lock().unwrap()[n..].to_vec()
    }
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/health`: (status, body).
async fn health(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c.get(format!("{url}/health")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// A lake answering `/health` with any status (a lake reporting damage is not healthy).
fn start_unhealthy_ok(config: &Path, port: u16) -> Lake {
    let lake = Lake::spawn(config, &format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "lake did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    lake
}

/// `n` metrics rows of `host` stamped now (so the rules' windows see them).
fn fresh_metrics(n: usize, name: &str) -> Vec<u8> {
    let mut b = MetricsBuilder::new();
    let now = now_micros();
    for i in 0..n {
        b.push(now - i as i64, NODE, name, 0.5, &[("mount", "/"), ("device", "/dev/vda")]);
    }
    encode(&b.finish())
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_pings_each_round_and_fail_names_a_broken_engine() {
    let monitor = Monitor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("data");
    let config = lake_toml(dir.path(), port)
        .flush("1s")
        .query("timeout = \"10s\"")
        .section(&format!(
            r#"[heartbeat]
url = "{monitor}/ping/5f1c2a"
timeout = "5s"

[[notify.webhook]]
name = "hook"
url = "{monitor}/hook"

[[rules]]
name = "filesystem_full"
every = "1s"

[[rules]]
name = "alert_rule_failing"
every = "1s"
"#,
            monitor = monitor.url,
        ))
        .write();
    let lake = Lake::start(&config, port);
    let c = reqwest::Client::new();
    let (s, b) =
        post(&c, &lake.url, "metrics", TOKEN, &format!("{NODE}/1/1"), fresh_metrics(50, "filesystem_used_ratio")).await;
    assert_eq!(s, 200, "{b}");
    let tables = data.join("tables").join("metrics");
    wait_until("the rows in Parquet", Duration::from_secs(30), || !parquet_files(&tables).is_empty()).await;
    let file = parquet_files(&tables).remove(0);

    // A healthy lake: a ping after every round (rounds are 1 s: the shortest `every`).
    wait_until("three pings", Duration::from_secs(30), || monitor.at("GET", "/ping/5f1c2a").len() >= 3).await;
    assert!(monitor.at("POST", "/ping/5f1c2a/fail").is_empty(), "no failure yet");
    let (status, h) = health(&c, &lake.url).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["status"], "ok");
    for check in ["engine", "wal", "flusher", "alerts"] {
        assert_eq!(h["checks"][check]["ok"], true, "{h}");
    }

    // Break the engine on purpose: the committed Parquet file of metrics is garbage now.
    println!("--- breaking {} ---", file.display());
    let original = std::fs::read(&file).unwrap();
    std::fs::write(&file, vec![0x5a; original.len()]).unwrap();
    let broken_at = monitor.len();
    wait_until("a /fail ping naming the rule", Duration::from_secs(30), || {
        monitor
            .since(broken_at)
            .iter()
            .any(|p| p.method == "POST" && p.path == "/ping/5f1c2a/fail" && p.body.contains("rule filesystem_full:"))
    })
    .await;
    let (status, h) = health(&c, &lake.url).await;
    println!("/health while broken: {status} {h}");
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["status"], "failing");
    assert_eq!(h["checks"]["alerts"]["ok"], false, "{h}");
    let reasons: Vec<String> =
        h["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("alerts: the last round failed: rule filesystem_full:")),
        "{reasons:?}"
    );
    // alert_rule_failing fires (two failed evaluations in a row) through the normal channels.
    wait_until("alert_rule_failing notified", Duration::from_secs(30), || {
        monitor.at("POST", "/hook").iter().any(|p| {
            p.body.contains("\"alert_rule_failing\"") && p.body.contains("\"failing_rule\":\"filesystem_full\"")
        })
    })
    .await;
    let hook: Value = serde_json::from_str(
        &monitor.at("POST", "/hook").iter().find(|p| p.body.contains("\"alert_rule_failing\"")).unwrap().body,
    )
    .unwrap();
    println!("webhook: {hook}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = count(&c, &lake.url, "select count(*) from alerts where rule = 'alert_rule_failing' and state = 'firing' and labels['failing_rule'] = 'filesystem_full'").await;
        if n >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no firing row of alert_rule_failing in the alerts table");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = c.get(format!("{}/metrics", lake.url)).send().await.unwrap().text().await.unwrap();
    let metric = |name: &str| {
        m.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse::<u64>().ok()).unwrap()
    };
    assert!(metric("lake_heartbeat_pings_total") >= 3 && metric("lake_heartbeat_fail_pings_total") >= 1, "{m}");
    assert!(metric("lake_alerts_rounds_failed_total") >= 1);

    // Repaired: the rule evaluates again, the alert resolves, pings succeed, /health is 200.
    println!("--- restoring {} ---", file.display());
    std::fs::write(&file, &original).unwrap();
    let fixed_at = monitor.len();
    wait_until("alert_rule_failing resolved", Duration::from_secs(30), || {
        monitor.since(fixed_at).iter().any(|p| {
            p.path == "/hook" && p.body.contains("\"alert_rule_failing\"") && p.body.contains("\"status\":\"resolved\"")
        })
    })
    .await;
    wait_until("success pings again", Duration::from_secs(30), || {
        monitor.since(fixed_at).iter().filter(|p| p.method == "GET" && p.path == "/ping/5f1c2a").count() >= 2
    })
    .await;
    let (status, h) = health(&c, &lake.url).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(count(&c, &lake.url, "select count(*) from metrics").await, 50);
}

/// `lake token add …` against lake.toml: the token it prints.
fn add_token(config: &Path, args: &[&str]) -> String {
    let out = Command::new(lake_bin()).args(["token", "add", "--config"]).arg(config).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_cannot_add_or_remove_silences() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "1h");
    let alerts_token = add_token(&config, &["--role", "alerts", "--comment", "on-call phone"]);
    assert!(alerts_token.starts_with("lake_l_"), "{alerts_token}");
    let admin_token = add_token(&config, &["--role", "admin"]);
    let lake = Lake::start(&config, port);
    let c = reqwest::Client::new();
    let (s, b) = post(&c, &lake.url, "metrics", TOKEN, &format!("{NODE}/1/1"), encode(&metrics_batch(1, 10))).await;
    assert_eq!(s, 200, "{b}");
    let silence = serde_json::json!({"rule": "uptime_down", "labels": {"target": "http://shop.test/"}, "duration": "2h", "comment": "migration"});
    let add = |token: &str| c.post(format!("{}/v1/silences", lake.url)).bearer_auth(token).json(&silence).send();

    let r = add(READ_TOKEN).await.unwrap();
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"].as_str().unwrap().contains("alerts role")
            && e["error"].as_str().unwrap().contains("lake token add --role alerts"),
        "{e}"
    );
    let r = add("not-a-token-0123456789").await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.post(format!("{}/v1/silences", lake.url)).json(&silence).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let r = add(&alerts_token).await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = add(&admin_token).await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // Listing stays read (and alerts); the silences are there.
    for token in [READ_TOKEN, alerts_token.as_str()] {
        let list: Value =
            c.get(format!("{}/v1/silences", lake.url)).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    }
    // An alerts token reads nothing else.
    let r = c
        .post(format!("{}/v1/sql", lake.url))
        .bearer_auth(&alerts_token)
        .json(&serde_json::json!({"sql": "select 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = c.delete(format!("{}/v1/silences/1", lake.url)).bearer_auth(READ_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = c.delete(format!("{}/v1/silences/1", lake.url)).bearer_auth(&alerts_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The CLI with the read token says what it needs.
    let out = Command::new(lake_bin())
        .args(["silence", "remove", "2", "--url", &lake.url])
        .env("LAKE_TOKEN", READ_TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("alerts role"), "{err}");
    let out = Command::new(lake_bin())
        .args(["silence", "remove", "2", "--url", &lake.url])
        .env("LAKE_TOKEN", &alerts_token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&c, &lake.url, "select count(*) from metrics").await, 10);
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    let mut child = out;
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let o = child.wait_with_output().unwrap();
    String::from_utf8(o.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// Every regular file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_manifest_naming_a_path_outside_staging() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "1s");
    let data = dir.path().join("data");
    let archive = dir.path().join("archive");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[archive]\npath = \"{}\"\nenabled = false\n", archive.display()));
    std::fs::write(&config, text).unwrap();
    let tokens = add_token(&config, &["--role", "admin"]);
    let lake = Lake::start(&config, port);
    let c = reqwest::Client::new();
    let (s, b) = post(&c, &lake.url, "metrics", TOKEN, &format!("{NODE}/1/1"), encode(&metrics_batch(1, 10))).await;
    assert_eq!(s, 200, "{b}");

    // A bucket whose manifest for metrics/2026-11-20 names ../../tokens.toml; the object
    // exists under every key the name could map to, so only the name check stops it.
    let evil = b"[[tokens]]\nid = \"evil\"\nrole = \"admin\"\n".to_vec();
    let manifest = serde_json::json!({
        "version": 1, "table": "metrics", "date": "2026-11-20", "written_at": "2026-11-21T02:00:00Z",
        "files": [
            {"name": "f-000000000001.parquet", "size": evil.len(), "sha256": sha256_hex(&evil)},
            {"name": "../../tokens.toml", "size": evil.len(), "sha256": sha256_hex(&evil)},
        ],
    });
    let mdir = archive.join("_lake/partitions/metrics");
    std::fs::create_dir_all(&mdir).unwrap();
    std::fs::write(mdir.join("date=2026-11-20.json"), serde_json::to_vec(&manifest).unwrap()).unwrap();
    for key in [
        "tables/metrics/date=2026-11-20/f-000000000001.parquet",
        "tables/metrics/date=2026-11-20/%2E%2E/%2E%2E/tokens.toml",
        "tables/tokens.toml",
    ] {
        let p = archive.join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, &evil).unwrap();
    }
    let tokens_before = std::fs::read(data.join("tokens.toml")).unwrap();
    let before = tree(&data);

    let out = Command::new(lake_bin())
        .args(["restore", "--config"])
        .arg(&config)
        .args(["--table", "metrics", "--from", "2026-11-20", "--token", &tokens])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("lake restore: {:?}\n{err}", out.status.code());
    // Nothing was written: not the tokens file, not the good file listed before the bad one.
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(data.join("tokens.toml")).unwrap()),
        String::from_utf8_lossy(&tokens_before),
        "the tokens file was overwritten"
    );
    let after = tree(&data);
    let new: Vec<&String> = after.iter().filter(|p| !before.contains(p)).collect();
    println!("files new since the restore began: {new:?}");
    assert!(new.iter().all(|p| !p.contains("tokens") && !p.contains("2026-11-20")), "written: {new:?}");
    assert!(!data.join("tables/metrics/date=2026-11-20").exists());
    assert!(tree(&data.join("staging")).is_empty(), "staging: {:?}", tree(&data.join("staging")));
    assert!(!dir.path().join("tokens.toml").exists() && !data.join("staging/tokens.toml").exists());
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("_lake/partitions/metrics/date=2026-11-20.json") && err.contains("\"../../tokens.toml\""),
        "{err}"
    );
    assert_eq!(count(&c, &lake.url, "select count(*) from metrics").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_an_older_wal_segment_loses_only_that_record_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Rows stay in the WAL: nothing is flushed while the test kills and restarts.
    let config = write_config(dir.path(), port, "1h");
    let wal = dir.path().join("data").join("wal");
    let c = reqwest::Client::new();
    // Three lives of the lake, each SIGKILLed with its batches only in its own segment.
    let mut seq = 0u64;
    for _ in 0..3 {
        let mut lake = Lake::start(&config, port);
        for _ in 0..3 {
            seq += 1;
            let (s, b) =
                post(&c, &lake.url, "metrics", TOKEN, &format!("{NODE}/7/{seq}"), encode(&metrics_batch(seq, 20)))
                    .await;
            assert_eq!(s, 200, "{b}");
        }
        lake.kill9();
    }
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&wal)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    // Each start opens a new segment and replays the older ones: the second life's
    // batches 4..=6 are in a segment that is neither the first nor the newest.
    let target = segments
        .iter()
        .find(|p| {
            std::fs::metadata(p).unwrap().len() > 0 && segments.last() != Some(*p) && segments.first() != Some(*p)
        })
        .unwrap()
        .clone();
    let bytes = std::fs::read(&target).unwrap();
    // Records: magic | len | crc | payload. Damage a byte inside the second record's payload.
    let len0 = 12 + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let len1 = 12 + u32::from_le_bytes(bytes[len0 + 4..len0 + 8].try_into().unwrap()) as usize;
    let mut damaged = bytes.clone();
    damaged[len0 + 12 + len1 / 2] ^= 0xff;
    std::fs::write(&target, &damaged).unwrap();
    println!(
        "damaged byte {} of {} ({} bytes; second record at {}..{})",
        len0 + 12 + len1 / 2,
        target.display(),
        bytes.len(),
        len0,
        len0 + len1
    );

    let lake = start_unhealthy_ok(&config, port);
    let (status, h) = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = c.get(format!("{}/health", lake.url)).send().await {
                let s = r.status().as_u16();
                break (s, r.json::<Value>().await.unwrap());
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // Every batch but the damaged one (the second of the middle life: 5) is queryable.
    let batches = sql(&c, &lake.url, "select distinct labels['batch'] as b from metrics order by b::int").await;
    let got: Vec<i64> = batches.as_array().unwrap().iter().map(|r| r[0].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(got, [1, 2, 3, 4, 6, 7, 8, 9], "batches 4 and 6 share the damaged segment");
    println!("/health after the damaged start: {status} {h}");
    assert_eq!(status, 503, "{h}");
    let reason = h["checks"]["wal"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&target.display().to_string()) && reason.contains(&format!("bytes {len0}..{}", len0 + len1)),
        "{reason}"
    );
    assert_eq!(count(&c, &lake.url, "select count(*) from metrics").await, 8 * 20);
    let m = c.get(format!("{}/metrics", lake.url)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains(&format!("lake_wal_corrupt_bytes_total {len1}")), "{m}");
    let kept =
        wal.join("corrupt").join(format!("{}.{len0}-{}", target.file_name().unwrap().to_string_lossy(), len0 + len1));
    assert_eq!(std::fs::read(&kept).unwrap(), damaged[len0..len0 + len1], "the damaged bytes are kept");
    drop(lake);

    // The next start has nothing left to report; the rows are all still there.
    let lake = Lake::start(&config, port);
    let (status, h) = health(&c, &lake.url).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(count(&c, &lake.url, "select count(*) from metrics").await, 8 * 20);
}
