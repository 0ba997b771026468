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

use common::*;
use serde_json::{json, Value};

const SDK: &str = "the OpenTelemetry Python SDK (opentelemetry-sdk==1.45.2)";

/// Runs the Python sender against `url`; returns the JSON line it prints.
async fn send(url: &str) -> Value {
    python_peer("otlp/send.py", &[url, TOKEN], "", SDK).await
}

async fn counts(c: &reqwest::Client, url: &str) -> (i64, i64) {
    (
        count(c, url, "select count(*) from logs where source = 'otlp'").await,
        count(c, url, "select count(*) from metrics where labels['service.name'] = 'shop'").await,
    )
}

/// The lake.toml of these tests: the SDK's resources name host.name "web-1", so the test's
/// node relays for it (a node writes only its own rows and the hosts its entry lists).
fn relay_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    LakeToml::new(dir, port)
        .node_with(NODE, &format!("token = \"{TOKEN}\"\nhosts = [\"web-1\"]"))
        .read_tokens(&[READ_TOKEN])
        .flush("1h")
        .write()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_writes_logs_and_metrics_that_sql_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = relay_config(dir.path(), port);
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

/// Runs `tests/otlp/traces.py` against `url`; returns the JSON line it prints.
async fn send_traces(url: &str) -> Value {
    python_peer("otlp/traces.py", &[url, TOKEN], "", SDK).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_tracer_writes_spans_and_exponential_histograms_that_sql_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = relay_config(dir.path(), port);
    let mut lake = Lake::start(&config, port);
    let url = lake.url.clone();
    let c = reqwest::Client::new();

    let sent = send_traces(&url).await;
    let trace_id = sent["trace_id"].as_str().unwrap();
    let spans = &sent["spans"];

    // The tree: two services, each span's parent found by its id, kinds and statuses.
    let tree = sql(
        &c,
        &url,
        &format!(
            "select s.service, s.name, s.kind, s.status_code, p.name, s.host, s.attrs['lake.node'], s.scope_name \
             from spans s left join spans p on p.span_id = s.parent_span_id and p.trace_id = s.trace_id \
             where s.trace_id = '{trace_id}' order by s.ts, s.name"
        ),
    )
    .await;
    println!("span tree: {tree}");
    let agent = |name: &str, kind: &str, status: &str, parent: Value| {
        json!(["agent", name, kind, status, parent, "web-1", NODE, "agent.runtime"])
    };
    assert_eq!(
        tree,
        json!([
            agent("invoke_agent", "server", "unset", Value::Null),
            agent("plan", "internal", "unset", json!("invoke_agent")),
            agent("execute_tool search", "internal", "ok", json!("invoke_agent")),
            agent("chat gpt-4o", "client", "unset", json!("invoke_agent")),
            json!([
                "llm-gateway",
                "POST /v1/chat/completions",
                "server",
                "error",
                "chat gpt-4o",
                NODE,
                NODE,
                "gateway"
            ]),
        ])
    );

    // Ids, start times and durations exactly as the SDK recorded them.
    let timing = sql(
        &c,
        &url,
        &format!(
            "select name, span_id, parent_span_id, epoch_us(ts), duration_ns from spans \
             where trace_id = '{trace_id}' order by name"
        ),
    )
    .await;
    let mut expected: Vec<Value> = spans
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, s)| {
            let (start, end) = (s["start"].as_i64().unwrap(), s["end"].as_i64().unwrap());
            json!([name, s["span_id"], s["parent"], start / 1000, end - start])
        })
        .collect();
    expected.sort_by_key(|r| r[0].as_str().unwrap().to_string());
    assert_eq!(timing, Value::Array(expected));

    // Attributes, the error's status message, the resource, the exception event.
    let server = sql(
        &c,
        &url,
        "select attrs['gen_ai.request.model'], attrs['gen_ai.usage.input_tokens'], status_message, \
         resource_attrs['service.name'], resource_attrs['telemetry.sdk.language'], resource_attrs['host.name'] \
         from spans where name = 'POST /v1/chat/completions'",
    )
    .await;
    assert_eq!(server, json!([["gpt-4o", "812", "rate limited", "llm-gateway", "python", null]]));
    let events = sql(
        &c,
        &url,
        &format!(
            "select name, e ->> '$.name', e -> '$.attrs' ->> 'step', e -> '$.attrs' ->> 'exception.type', \
             e -> '$.attrs' ->> 'exception.message', (e ->> '$.time')::TIMESTAMPTZ >= ts \
             from (select name, ts, unnest(events) as e from spans where trace_id = '{trace_id}') order by name"
        ),
    )
    .await;
    println!("events: {events}");
    assert_eq!(
        events,
        json!([
            ["POST /v1/chat/completions", "exception", null, "RuntimeError", "429 Too Many Requests", true],
            ["plan", "thought", "1", null, null, true],
        ])
    );
    // The README's tree and exception queries.
    let tree = sql(
        &c,
        &url,
        &format!(
            "WITH RECURSIVE tree AS ( \
                 SELECT span_id, name, service, ts, duration_ns, status_code, 0 AS depth \
                 FROM spans WHERE trace_id = '{trace_id}' AND parent_span_id IS NULL \
                 UNION ALL \
                 SELECT s.span_id, s.name, s.service, s.ts, s.duration_ns, s.status_code, t.depth + 1 \
                 FROM spans s JOIN tree t ON s.parent_span_id = t.span_id \
                 WHERE s.trace_id = '{trace_id}' \
             ) \
             SELECT repeat('  ', depth) || name AS span, service, status_code FROM tree ORDER BY ts"
        ),
    )
    .await;
    assert_eq!(
        tree,
        json!([
            ["invoke_agent", "agent", "unset"],
            ["  plan", "agent", "unset"],
            ["  execute_tool search", "agent", "ok"],
            ["  chat gpt-4o", "agent", "unset"],
            ["    POST /v1/chat/completions", "llm-gateway", "error"],
        ])
    );
    let exceptions = sql(
        &c,
        &url,
        "SELECT service, name, e -> '$.attrs' ->> 'exception.type' AS exception, status_message \
         FROM (SELECT ts, service, name, status_message, unnest(events) AS e FROM spans WHERE status_code = 'error') \
         WHERE e ->> '$.name' = 'exception'",
    )
    .await;
    assert_eq!(exceptions, json!([["llm-gateway", "POST /v1/chat/completions", "RuntimeError", "rate limited"]]));
    let link = sql(
        &c,
        &url,
        "select links[1] ->> '$.span_id', links[1] ->> '$.trace_id', len(links) from spans where name = 'execute_tool search'",
    )
    .await;
    assert_eq!(link, json!([[spans["plan"]["span_id"], trace_id, 1]]));
    assert_eq!(
        sql(&c, &url, "select service, count(*) from spans group by 1 order by 1").await,
        json!([["agent", 4], ["llm-gateway", 1]])
    );

    // The exponential histogram: cumulative buckets whose percentiles bracket the true
    // ones within one bucket (base 2^(2^-scale)), with its unit, temporality and resource.
    let scale = sent["scales"][0].as_i64().unwrap();
    let base = 2f64.powf(2f64.powi(-(scale as i32)));
    let mut values: Vec<f64> = sent["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let meta = sql(
        &c,
        &url,
        "select value, labels['otel_unit'], labels['otel_temporality'], labels['model'], labels['telemetry.sdk.language'] \
         from metrics where name = 'llm.latency_count'",
    )
    .await;
    assert_eq!(meta, json!([[400.0, "ms", "cumulative", "gpt-4o", "python"]]));
    for q in [0.5, 0.9, 0.99] {
        // The README's percentile query.
        let got = sql(
            &c,
            &url,
            &format!(
                "WITH b AS ( \
                     SELECT labels['le']::DOUBLE AS le, value AS cumulative \
                     FROM metrics \
                     WHERE name = 'llm.latency_bucket' \
                       AND ts = (SELECT max(ts) FROM metrics WHERE name = 'llm.latency_bucket') \
                 ) \
                 SELECT min(le) AS p95 FROM b WHERE cumulative >= {q} * (SELECT max(cumulative) FROM b)"
            ),
        )
        .await[0][0]
            .as_f64()
            .unwrap();
        let rank = (q * values.len() as f64).ceil() as usize;
        let truth = values[rank - 1];
        println!("p{}: lake {got:.3}, SDK values {truth} (scale {scale}, bucket ratio {base:.5})", q * 100.0);
        assert!(truth <= got && got <= truth * base * (1.0 + 1e-9), "p{q}: lake {got}, true {truth}, base {base}");
    }
    let text = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("\nlake_otlp_spans_total 5\n"), "{text}");

    // A graceful stop writes the spans to Parquet; read back from the file, the same rows.
    lake.term();
    let _lake = Lake::start(&config, port);
    assert_eq!(
        sql(
            &c,
            &url,
            &format!("select s.name, s.service, s.status_code, p.name, len(s.events), len(s.links), s.resource_attrs['service.name'] \
             from spans s left join spans p on p.span_id = s.parent_span_id where s.trace_id = '{trace_id}' order by s.ts, s.name")
        )
        .await,
        json!([
            ["invoke_agent", "agent", "unset", null, 0, 0, "agent"],
            ["plan", "agent", "unset", "invoke_agent", 1, 0, "agent"],
            ["execute_tool search", "agent", "ok", "invoke_agent", 0, 1, "agent"],
            ["chat gpt-4o", "agent", "unset", "invoke_agent", 0, 0, "agent"],
            ["POST /v1/chat/completions", "llm-gateway", "error", "chat gpt-4o", 1, 0, "llm-gateway"],
        ]),
        "rows kept across a graceful restart (from Parquet)"
    );
}
