//! OTLP/HTTP ingest end to end: the OpenTelemetry Python SDK (`tests/otlp/send.py`) sends
//! logs and metrics to a real `lake serve`, and the rows are read back with SQL: names,
//! values, labels, severity → priority, service name, trace ids. Restarts (crash and
//! graceful) keep every row and accept new requests, which checks the lake-assigned batch
//! ids: a reused epoch would make WAL replay or admission drop rows.
//!
//! Needs the OpenTelemetry Python SDK as `python3` on PATH sees it (`scripts/setup peers`
//! installs it into the peers' virtual environment, which `make test` puts first on PATH);
//! fails (never skips) without it.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

const PIP: &str = "scripts/setup peers` (opentelemetry-sdk==1.45.2 into ~/.cache/lake/peers-venv), then put its bin/ first on PATH as `make test` does: `PATH=~/.cache/lake/peers-venv/bin:$PATH cargo test";

/// Runs the Python sender against `url`; returns the JSON line it prints.
async fn send(url: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp/send.py");
    let url = url.to_string();
    let out = tokio::task::spawn_blocking(move || Command::new("python3").arg(script).args([&url, TOKEN]).output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): install Python 3, then `{PIP}`"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(3) => panic!("the OpenTelemetry Python SDK is not installed: run `{PIP}`\n{stderr}"),
        _ => panic!("send.py failed ({}):\nstdout: {stdout}\nstderr: {stderr}", out.status),
    }
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("send.py printed {stdout:?}: {e}"))
}

async fn counts(c: &reqwest::Client, url: &str) -> (i64, i64) {
    (
        count(c, url, "select count(*) from logs where source = 'otlp'").await,
        count(c, url, "select count(*) from metrics where labels['service.name'] = 'shop'").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_writes_logs_and_metrics_that_sql_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "1h");
    // The SDK's log resource names host.name "web-1": the test's node relays for it (a
    // node writes only its own rows and the hosts its entry lists).
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(&format!("token = \"{TOKEN}\"\n"), &format!("token = \"{TOKEN}\"\nhosts = [\"web-1\"]\n"));
    std::fs::write(&config, text).unwrap();
    let mut lake = Lake::start(&config, port);
    let url = lake.url.clone();
    let c = reqwest::Client::new();

    let sent = send(&url).await;
    let trace_id = sent["trace_id"].as_str().unwrap().to_string();

    // Logs: service, scope, host (the resource's host.name), the token's node, and the
    // severity mapped onto syslog priorities.
    let logs = sql(
        &c,
        &url,
        "select message, priority, unit, ident, host, attrs['lake.node'], attrs['severity_text'] \
         from logs where source = 'otlp' order by priority",
    )
    .await;
    let row = |m: &str, p: i64, sev: &str| json!([m, p, "shop", "shop.payments", "web-1", NODE, sev]);
    assert_eq!(
        logs,
        json!([
            row("out of memory", 2, "FATAL"),
            row("payment failed", 3, "ERROR"),
            row("disk almost full", 4, "WARN"),
            row("order placed", 6, "INFO"),
            row(r#"{"ok":true,"step":"auth"}"#, 7, "DEBUG"),
        ])
    );
    let traced = sql(
        &c,
        &url,
        &format!(
            "select message, attrs['order.id'], attrs['span_id'] from logs where attrs['trace_id'] = '{trace_id}'"
        ),
    )
    .await;
    assert_eq!(traced, json!([["payment failed", "18", sent["span_id"]]]));
    assert_eq!(
        count(&c, &url, "select count(*) from logs where attrs['resource.telemetry.sdk.language'] = 'python'").await,
        5,
        "resource attributes are kept under resource."
    );

    // Metrics: no host.name in this resource, so host is the token's node.
    let metrics = sql(
        &c,
        &url,
        "select name, value, coalesce(labels['region'], labels['room'], labels['le'], ''), host \
         from metrics where labels['service.name'] = 'shop' and labels['lake.node'] = 'node-a' order by name, value",
    )
    .await;
    assert_eq!(
        metrics,
        json!([
            ["latency_bucket", 1.0, "0.1", NODE],
            ["latency_bucket", 3.0, "1", NODE],
            ["latency_bucket", 4.0, "+Inf", NODE],
            ["latency_count", 4.0, "", NODE],
            ["latency_sum", 3.85, "", NODE],
            ["orders", 4.0, "us", NODE],
            ["orders", 5.0, "eu", NODE],
            ["queue.depth", 5.0, "", NODE],
            ["temperature", 21.5, "rack", NODE],
        ])
    );
    assert_eq!(counts(&c, &url).await, (5, 9));
    // The OTLP endpoints' own counters on `/metrics`.
    let text = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |name: &str| -> i64 {
        let line = text.lines().find_map(|l| l.strip_prefix(&format!("{name} ")));
        line.unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}")).parse().unwrap()
    };
    assert_eq!((value("lake_otlp_log_records_total"), value("lake_otlp_rejected_total")), (5, 0));
    assert!(value("lake_otlp_requests_total") >= 2 && value("lake_otlp_data_points_total") >= 5, "{text}");
    assert!(text.contains("# TYPE lake_otlp_requests_total counter\n"), "{text}");

    // kill -9: every acknowledged row comes back from the WAL, and the restarted lake
    // takes new requests under a new epoch.
    lake.kill9();
    let mut lake = Lake::start(&config, port);
    assert_eq!(counts(&c, &url).await, (5, 9), "rows replayed from the WAL");
    send(&url).await;
    assert_eq!(counts(&c, &url).await, (10, 18));

    // A graceful stop flushes to Parquet and commits the marks; after the restart the
    // rows are read from files and a new epoch is stored again.
    lake.term();
    let _lake = Lake::start(&config, port);
    assert_eq!(counts(&c, &url).await, (10, 18), "rows kept across a graceful restart");
    send(&url).await;
    assert_eq!(counts(&c, &url).await, (15, 27));
}
