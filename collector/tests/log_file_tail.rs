//! `[[log_file]]` with multi-line records across `kill -9` of the real collector: a record
//! still pending when the collector dies (a Python traceback whose last line is not
//! written yet) is saved with the position, finished after the restart from the lines
//! written meanwhile, and shipped exactly once, whole; a record pending at the very end is
//! emitted after `max_wait` by the next run. Nothing is lost, nothing repeated.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The state `log_file/app` saved in the spool, read without disturbing a running collector.
fn saved(data: &Path) -> Option<Value> {
    let states = lake_collector::spool::read_states(&data.join("spool")).ok()?;
    let v: Value = serde_json::from_slice(states.get("log_file/app")?).unwrap();
    Some(v["state"].clone())
}

fn pending_texts(state: &Value) -> Vec<String> {
    state["pending"].as_array().map_or(vec![], |p| p.iter().map(|r| r["text"].as_str().unwrap().to_string()).collect())
}

/// Runs the collector binary until its saved state passes `want`, then `kill -9`s it.
async fn run_until(config: &Path, data: &Path, want: impl Fn(&Value) -> bool) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lake-collector"))
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if saved(data).is_some_and(|s| want(&s)) {
            // SIGKILL: no shutdown path runs.
            child.kill().await.unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().await.unwrap();
    panic!("the saved state never got there: {:?}", saved(data));
}

fn write_config(dir: &Path, log: &Path, max_wait: &str) -> std::path::PathBuf {
    let text = format!(
        r#"node = "test-node"
data_dir = {data:?}
[lake]
token = "t"
url = "http://127.0.0.1:9"
[host]
enabled = false
interval = "1h"
[[log_file]]
name = "app"
paths = [{log:?}]
format = "python"
timezone = "UTC"
batch_wait = "50ms"
poll_interval = "50ms"
[log_file.multiline]
max_wait = "{max_wait}"
"#,
        data = dir.join("data").display().to_string(),
        log = log.display().to_string(),
    );
    let path = dir.join("collector.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_traceback_survives_kill_9_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("app.log");
    append(&log, "INFO:root:one\nERROR:root:two\nTraceback (most recent call last):\n  File \"app.py\", line 3\n");
    let config = write_config(dir.path(), &log, "1h");

    // 1. `one` is complete (the next line starts a record); `two` is pending at the end.
    let size = std::fs::metadata(&log).unwrap().len();
    run_until(&config, &data, |s| {
        s["files"][0]["offset"].as_u64() == Some(size)
            && pending_texts(s) == ["ERROR:root:two\nTraceback (most recent call last):\n  File \"app.py\", line 3"]
    })
    .await;

    // 2. The traceback ends while the collector is down; the next record begins.
    append(&log, "ValueError: bad\nWARNING:root:three\n");
    run_until(&config, &data, |s| pending_texts(s) == ["WARNING:root:three"]).await;

    // 3. Nothing more is written: the next run emits `three` after max_wait.
    let config = write_config(dir.path(), &log, "200ms");
    run_until(&config, &data, |s| s.get("pending").is_none() && s["files"].as_array().is_some_and(|f| !f.is_empty()))
        .await;

    let mut messages = Vec::new();
    for (_, _, rows) in lake_test_support::spool::spooled_tables(&data.join("spool"), |t| t == "logs").await {
        for r in rows {
            assert_eq!(r["source"], "app", "{r}");
            messages.push((r["message"].as_str().unwrap().to_string(), r["priority"].as_i64()));
        }
    }
    let want = [
        ("one".to_string(), Some(6)),
        ("two\nTraceback (most recent call last):\n  File \"app.py\", line 3\nValueError: bad".to_string(), Some(3)),
        ("three".to_string(), Some(4)),
    ];
    assert_eq!(messages, want);
}

/// A rotation in the middle of a record (rename, the old file written a little more, a new
/// live file) across `kill -9`: records are joined per path, so the record may end up as
/// two rows, but every line is in exactly one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_inside_a_pending_record_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("app.log");
    append(&log, "ERROR:root:x\nTraceback (most recent call last):\n");
    let config = write_config(dir.path(), &log, "1h");
    run_until(&config, &data, |s| pending_texts(s) == ["ERROR:root:x\nTraceback (most recent call last):"]).await;

    let rolled = dir.path().join("app.log.1");
    std::fs::rename(&log, &rolled).unwrap();
    append(&rolled, "  File \"a.py\", line 1\n");
    append(&log, "ValueError: v\nINFO:root:next\n");
    let config = write_config(dir.path(), &log, "200ms");
    run_until(&config, &data, |s| s.get("pending").is_none() && s["files"].as_array().is_some_and(|f| f.len() == 2))
        .await;

    let mut text = String::new();
    for (_, _, rows) in lake_test_support::spool::spooled_tables(&data.join("spool"), |t| t == "logs").await {
        for r in rows {
            text += r["message"].as_str().unwrap();
            text.push('\n');
        }
    }
    for line in ["x", "Traceback (most recent call last):", "  File \"a.py\", line 1", "ValueError: v", "next"] {
        assert_eq!(text.lines().filter(|l| *l == line).count(), 1, "{line:?} once in:\n{text}");
    }
    assert_eq!(text.lines().count(), 5, "{text}");
}
