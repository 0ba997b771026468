//! `json_file`: NDJSON files followed through a rename rotation and a restart of the
//! source; every valid line reaches the custom table exactly once, in order, as written
//! (plus `ts` where missing); bad lines are kept raw in `logs`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use lake_collector::config::Config;
use lake_collector::sources::json_file::JsonFileSource;
use lake_collector::sources::SourceContext;
use lake_collector::spool::{SpoolHandle, SpoolOptions};
use lake_collector::stats::Stats;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

async fn context(dir: &std::path::Path, stats: &Arc<Stats>) -> SourceContext {
    let opts = SpoolOptions { max_size: 64 << 20, segment_size: 1 << 20 };
    let spool = SpoolHandle::open(dir.join("spool"), opts, Arc::clone(stats)).await.unwrap();
    SourceContext { node: Arc::from("app-node"), spool, stats: Arc::clone(stats) }
}

#[derive(Default)]
struct Seen {
    /// Lines of `json/app`, in spool order.
    lines: Vec<String>,
    /// `logs` rows.
    logs: Vec<Value>,
}

/// Reads (without acknowledging) the whole spool from the start.
async fn seen(dir: &std::path::Path) -> Seen {
    // A second handle on the same directory would fight the source's; read the segment
    // files through a fresh open after the source stopped instead (see callers).
    let stats = Arc::new(Stats::default());
    let ctx = context(dir, &stats).await;
    let mut out = Seen::default();
    while let Some(rec) = ctx.spool.peek().await.unwrap() {
        match rec.table.as_str() {
            "json/app" => {
                let text = String::from_utf8(rec.body.clone()).unwrap();
                assert!(text.ends_with('\n'));
                out.lines.extend(text.lines().map(str::to_string));
            }
            "logs" => {
                let (_, batches) = lake_format::wire::decode(&rec.body).unwrap();
                out.logs.extend(batches.iter().flat_map(|b| lake_test_support::table_rows("logs", b)));
            }
            other => panic!("unexpected table {other}"),
        }
        ctx.spool.ack(rec.seq).await.unwrap();
    }
    out
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Runs the source until `rows` rows were spooled in this run (or 20 s), then stops it.
async fn run_until(
    config: &lake_collector::sources::json_file::JsonFileConfig,
    dir: &std::path::Path,
    rows: u64,
    during: impl FnOnce(),
) {
    let stats = Arc::new(Stats::default());
    let ctx = context(dir, &stats).await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(JsonFileSource::new(config.clone(), ctx).run(cancel.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    during();
    let src = stats.source(config.source);
    for _ in 0..400 {
        if src.rows.load(std::sync::atomic::Ordering::Relaxed) >= rows {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(src.rows.load(std::sync::atomic::Ordering::Relaxed), rows, "rows spooled in this run");
}

#[tokio::test]
async fn lines_survive_rotation_and_restart_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let live = logs.join("app.log");
    let toml = format!(
        "[[json_file]]\ntable = \"app\"\npaths = [{:?}]\npoll_interval = \"50ms\"\nbatch_wait = \"50ms\"\n",
        logs.join("app*.log").display().to_string()
    );
    let config = Config::from_toml(&toml, Some("t")).unwrap().json_file.remove(0);
    assert_eq!(config.source, "json_file/app");

    append(&live, "{\"n\":1,\"ts\":\"2026-11-22T10:00:00Z\",\"msg\":\"caf\\u00e9 \\\"quoted\\\"\"}\n{\"n\":2}\nnot json at all\n\n[\"an\",\"array\"]\n");
    // Run 1: the first lines (2 rows: 2 valid lines; the 2 bad lines are 1 logs batch of 2).
    run_until(&config, dir.path(), 4, || {}).await;

    // While stopped: the logger writes more, rotates by rename (access*.log style), keeps
    // writing to the renamed file for a moment, then starts a new live file.
    append(&live, "{\"n\":3}\n");
    let rolled = logs.join("app-2026-11-22T10-05-00.log");
    std::fs::rename(&live, &rolled).unwrap();
    append(&rolled, "{\"n\":4}\n");
    append(&live, "{\"n\":5}\n{\"n\":6,\"ts\":1795342501}\n");
    // Run 2 resumes from the saved position: 3..6 once, then a line written while it runs.
    run_until(&config, dir.path(), 5, || append(&live, "{\"n\":7}\n")).await;

    let s = seen(dir.path()).await;
    let ns: Vec<i64> =
        s.lines.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, [1, 2, 3, 4, 5, 6, 7], "every valid line once, in order: {:#?}", s.lines);
    // As written when it has a ts (escapes and all), else ts added first.
    assert_eq!(s.lines[0], "{\"n\":1,\"ts\":\"2026-11-22T10:00:00Z\",\"msg\":\"caf\\u00e9 \\\"quoted\\\"\"}");
    assert!(s.lines[1].starts_with("{\"ts\":\"") && s.lines[1].ends_with("Z\",\"n\":2}"), "{}", s.lines[1]);
    assert_eq!(s.lines[5], "{\"n\":6,\"ts\":1795342501}");
    // Bad lines: raw, with file and table, counted; the blank line is skipped.
    let bad: Vec<(&str, &str)> =
        s.logs.iter().map(|r| (r["message"].as_str().unwrap(), r["attrs"]["error"].as_str().unwrap())).collect();
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert_eq!(bad[0].0, "not json at all");
    assert!(bad[0].1.starts_with("not JSON"));
    assert_eq!(bad[1], ("[\"an\",\"array\"]", "JSON, but not an object"));
    assert!(s
        .logs
        .iter()
        .all(|r| r["source"] == "json_file-unparsed" && r["attrs"]["table"] == "app" && r["host"] == "app-node"));
    assert!(s.logs[0]["attrs"]["file"].as_str().unwrap().ends_with("app.log"));
}
