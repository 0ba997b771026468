//! Reads that would change the engine for later requests, against a real `lake serve`
//! with a read token (issue 18, section 1).
//!
//! `SELECT * FROM enable_logging(storage='file', storage_path='/nonexistent')` is a plain
//! SELECT: before the allow-list it aborted the lake (or, through the C API, left every
//! later statement failing), and with a `storage_path` inside `tables/` it made the lake
//! create a directory and a log file there. Every example of the issue — and the same
//! calls through the Grafana API — must answer 403 naming the function; afterwards the
//! lake still runs, `select count(*) from metrics` still answers the seeded rows, nothing
//! appeared under `tables/`, and `/metrics` shows the engine's counters (refusals counted,
//! no probe failure, no rebuild).

mod common;

use std::time::{Duration, Instant};

use common::*;
use lake_test_support::tree_of;
use serde_json::{json, Value};

/// POSTs `body` (JSON) to `path` with the read token: status and body.
async fn read(c: &reqwest::Client, url: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = c.post(format!("{url}{path}")).bearer_auth(READ_TOKEN).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The value of one line of `/metrics`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_would_change_the_engine_are_refused_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "200ms");
    let lake = Lake::start(&config, port);
    let url = lake.url.clone();
    let c = reqwest::Client::new();
    let (s, b) = post(&c, &url, "metrics", TOKEN, "node-a/1/1", encode(&metrics_batch(1, 100))).await;
    assert_eq!(s, 200, "{b}");

    // Wait until the seeded rows are in Parquet, so the tree of tables/ stays still.
    let tables = dir.path().join("data").join("tables");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let flushed = tree_of(&tables).iter().any(|p| p.ends_with(".parquet"));
        let text = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
        if flushed && metric(&text, "lake_buffered_rows") == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the seeded rows were never flushed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = tree_of(&tables);
    assert_eq!(count(&c, &url, "select count(*) from metrics").await, 100);

    let inside = tables.join("x");
    let examples = [
        ("SELECT * FROM enable_logging(storage='file', storage_path='/nonexistent')".to_string(), "enable_logging"),
        (
            format!("SELECT * FROM enable_logging(storage='file', storage_path='{}', level='trace')", inside.display()),
            "enable_logging",
        ),
        ("SELECT * FROM enable_profiling()".to_string(), "enable_profiling"),
        ("SELECT enable_profiling()".to_string(), "enable_profiling"),
        ("SELECT * FROM truncate_duckdb_logs()".to_string(), "truncate_duckdb_logs"),
        ("SELECT * FROM checkpoint()".to_string(), "checkpoint"),
        ("SELECT checkpoint()".to_string(), "checkpoint"),
        ("SELECT current_setting('threads')".to_string(), "current_setting"),
        // Hidden in a CTE, a subquery, a join.
        (
            "WITH a AS (SELECT * FROM enable_logging(storage='file', storage_path='/nonexistent')) SELECT * FROM a"
                .to_string(),
            "enable_logging",
        ),
        ("SELECT * FROM metrics WHERE host IN (SELECT current_setting('threads'))".to_string(), "current_setting"),
        ("SELECT * FROM metrics, (SELECT * FROM checkpoint())".to_string(), "checkpoint"),
        ("SELECT * FROM query('SELECT * FROM enable_profiling()')".to_string(), "query"),
    ];
    let mut refused = 0;
    for (sql, function) in &examples {
        let expected = format!("function {function} is not allowed");
        let (status, body) = read(&c, &url, "/v1/sql", &json!({"sql": sql})).await;
        assert_eq!(status, 403, "{sql}: {body}");
        let msg = body["error"].as_str().unwrap_or_default();
        assert!(msg.contains(&expected), "{sql}: {msg}");
        // The same SQL as a Grafana target (what dashboards and the web UI send).
        let target = json!({
            "range": {"from": "2026-11-25T00:00:00Z", "to": "2026-11-26T00:00:00Z"},
            "targets": [{"refId": "A", "target": "sql", "payload": {"sql": sql, "format": "table"}}],
        });
        let (status, body) = read(&c, &url, "/grafana/query", &target).await;
        assert_eq!(status, 403, "grafana {sql}: {body}");
        let msg = body["error"].as_str().unwrap_or_default();
        assert!(msg.starts_with("target A") && msg.contains(&expected), "grafana {sql}: {msg}");
        refused += 2;
    }

    // The lake is alive, answers every later read, and nothing appeared under tables/.
    let mut lake = lake;
    assert!(lake.child.try_wait().unwrap().is_none(), "the lake exited");
    assert_eq!(count(&c, &url, "select count(*) from metrics").await, 100);
    assert_eq!(count(&c, &url, "select sum(value)::bigint from metrics").await, 4950);
    let target = json!({
        "range": {"from": "2026-11-25T00:00:00Z", "to": "2026-11-26T00:00:00Z"},
        "targets": [{"refId": "A", "target": "sql", "payload": {"sql": "SELECT count(*) AS n FROM metrics", "format": "table"}}],
    });
    let (status, body) = read(&c, &url, "/grafana/query", &target).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["rows"], json!([[100]]), "{body}");
    assert_eq!(tree_of(&tables), before, "files appeared under {}", tables.display());
    assert!(!inside.exists());

    // /metrics: the refusals, and no probe failure or rebuild (nothing got through). The
    // alerter evaluates its rules on the same engine, so a scrape can catch one of its
    // queries running (CI did): wait for a moment when none is.
    let mut text = String::new();
    for _ in 0..100 {
        text = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
        if metric(&text, "lake_engine_running") == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&text, "lake_engine_refused_total"), refused, "{text}");
    assert_eq!(metric(&text, "lake_engine_probe_failures_total"), 0, "{text}");
    assert_eq!(metric(&text, "lake_engine_rebuilds_total"), 0, "{text}");
    assert!(metric(&text, "lake_engine_queries_total") >= refused + 4, "{text}");
    assert_eq!(metric(&text, "lake_engine_running"), 0, "{text}");
    assert_eq!(metric(&text, "lake_engine_timeouts_total"), 0, "{text}");
    assert_eq!(metric(&text, "lake_engine_cancelled_total"), 0, "{text}");
    assert!(text.contains("# TYPE lake_engine_rebuilds_total counter"), "{text}");
    assert!(text.contains("# TYPE lake_engine_running gauge"), "{text}");
    lake.term();
}
