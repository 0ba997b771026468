//! Loki push end to end: `tests/loki/push.py` ships lines to a real `lake serve` with
//! python-logging-loki (PyPI, a real Loki client: JSON, basic auth) and with a protobuf
//! `logproto.PushRequest` built by Google's protobuf runtime from push.proto's messages,
//! snappy-compressed as Promtail sends it. The rows are read back with SQL, exactly; a
//! careless push (a number for a timestamp) is refused with the reason and stores
//! nothing; `kill -9` loses no acknowledged line.
//!
//! Needs python-logging-loki and cramjam as `python3` on PATH sees them (`scripts/setup
//! peers` installs them into the peers' virtual environment, which `make test` puts first
//! on PATH); fails (never skips) without them.

mod common;

use common::*;
use serde_json::{json, Value};

const CLIENTS: &str = "python-logging-loki==0.3.1 and cramjam==2.14.0";

/// Runs the Python shipper against `url`; returns the JSON line it prints.
async fn push(url: &str, run: &str) -> Value {
    python_peer("loki/push.py", &[url, TOKEN, run], "", CLIENTS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_clients_ship_lines_that_sql_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "1h");
    let mut lake = Lake::start(&config, port);
    let url = lake.url.clone();
    let c = reqwest::Client::new();

    let sent = push(&url, "r1").await;
    let base_us = sent["base_ns"].as_i64().unwrap() / 1000;

    // The client library's lines: severity label → priority, job → unit, the logger's
    // name and the extra tag in attrs, the token's node as host.
    let library = sql(
        &c,
        &url,
        "select message, priority, unit, host, attrs['severity'], attrs['logger'], attrs['request_id'], \
         attrs['run'], attrs['lake.node'] from logs where source = 'loki' and unit = 'py-app' order by priority",
    )
    .await;
    let row = |m: &str, p: i64, sev: &str, req: Value| json!([m, p, "py-app", NODE, sev, "app-r1", req, "r1", NODE]);
    assert_eq!(
        library,
        json!([
            row("json line three", 3, "error", json!("r-42")),
            row("json line two", 4, "warning", Value::Null),
            row("json line one", 6, "info", Value::Null),
        ])
    );

    // The protobuf push: exact times, unit from the unit label, the job label and the
    // structured metadata in attrs, escaped quotes and non-ASCII text intact.
    let proto = sql(
        &c,
        &url,
        "select epoch_us(ts), message, priority, unit, attrs['job'], attrs['trace_id'], attrs['container_name'] \
         from logs where source = 'loki' and attrs['run'] = 'r1' and unit <> 'py-app' order by ts",
    )
    .await;
    assert_eq!(
        proto,
        json!([
            [base_us, "upstream timed out", 3, "nginx.service", "promtail", "0af7651916cd43dd8448eb211c80319c", null],
            [base_us + 1, r#"quote " and \ backslash"#, 3, "nginx.service", "promtail", null, null],
            [base_us + 2, "é ünïcode ✓", 3, "nginx.service", "promtail", null, null],
            [base_us + 5, "from docker", null, "docker", null, null, "rag-api-1"],
        ])
    );

    // The careless push: 400 with the reason, nothing of it stored.
    assert_eq!(sent["bad_status"], 400, "{sent}");
    let reason = sent["bad_answer"]["error"].as_str().unwrap();
    assert!(reason.contains("stream 0, value 0: the timestamp is a string of nanoseconds"), "{reason}");
    assert_eq!(count(&c, &url, "select count(*) from logs where unit = 'bad'").await, 0);

    // The endpoint's counters.
    let text = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |name: &str| -> i64 {
        let line = text.lines().find_map(|l| l.strip_prefix(&format!("{name} ")));
        line.unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}")).parse().unwrap()
    };
    assert_eq!(
        (value("lake_loki_requests_total"), value("lake_loki_lines_total"), value("lake_loki_rejected_total")),
        (4, 7, 1)
    );

    // kill -9: every acknowledged line comes back from the WAL; a second run is stored
    // beside it under the lake's new epoch.
    let loki_rows = "select count(*) from logs where source = 'loki'";
    assert_eq!(count(&c, &url, loki_rows).await, 7);
    lake.kill9();
    let lake = Lake::start(&config, port);
    assert_eq!(count(&c, &url, loki_rows).await, 7, "lines replayed from the WAL");
    push(&url, "r2").await;
    assert_eq!(count(&c, &url, loki_rows).await, 14);
    drop(lake);
}
