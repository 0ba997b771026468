//! What one node may do to the lake, against a real `lake serve` (issue 18, sections 3,
//! 4 and 5): a node writes only its own rows; tables the lake writes itself take no
//! ingest; a batch spans a bounded number of days and keeps to its table's retention;
//! concurrent bodies share one decode memory budget; idle connections cannot lock the
//! collectors out; the read APIs are not served open beyond loopback by accident; and
//! every refused token leaves one line fail2ban can act on.
//!
//! Every test stores a baseline first (100 metric samples of the node's own host, now),
//! and ends by checking that it is still all there and queryable.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lake_format::rows::{now_micros, MetricsBuilder, TableBuilder};
use lake_format::{wire, Table};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;

const NODE_B: &str = "node-b";
const TOKEN_B: &str = "ingest-token-node-b-0123456789";
/// A second token of node-a, kept in the tokens file rather than lake.toml.
const FILE_TOKEN: &str = "ingest-token-node-a-in-the-file-0123";
const DAY: i64 = 86_400_000_000;
const FLUSH: &str = "[ingest]\nflush_interval = \"300ms\"\n";

/// A lake with node-a (`node_a` lines added to its entry) and node-b, and `sections`
/// appended to the file.
struct Edge {
    lake: Lake,
    dir: tempfile::TempDir,
    port: u16,
    c: reqwest::Client,
}

fn write_lake_toml(dir: &Path, listen: &str, node_a: &str, read_tokens: bool, sections: &str) -> PathBuf {
    let toml = LakeToml::listening(dir, listen)
        .node_with(NODE, &format!("token = \"{TOKEN}\"\n{node_a}"))
        .node(NODE_B, TOKEN_B);
    let toml = if read_tokens { toml.read_tokens(&[READ_TOKEN]) } else { toml };
    toml.section(sections).write()
}

/// Spawns `lake serve` (with `args` after the config) logging at `log_filter` to `stderr`.
fn spawn_lake(config: &Path, args: &[&str], log_filter: &str, stderr: Stdio) -> std::process::Child {
    Command::new(lake_bin())
        .args(["serve", "--config"])
        .arg(config)
        .args(args)
        .env("LOG_FILTER", log_filter)
        .stdin(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

impl Edge {
    fn start(node_a: &str, sections: &str) -> Edge {
        Edge::start_logging(node_a, sections, &[], None)
    }

    /// [`Edge::start`] with extra `lake serve` arguments and the lake's stderr (at
    /// `LOG_FILTER=error`) in `log`.
    fn start_logging(node_a: &str, sections: &str, args: &[&str], log: Option<&Path>) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        Edge::start_in(dir, node_a, sections, args, log)
    }

    fn start_in(dir: tempfile::TempDir, node_a: &str, sections: &str, args: &[&str], log: Option<&Path>) -> Edge {
        let port = free_port();
        let config = write_lake_toml(dir.path(), &format!("127.0.0.1:{port}"), node_a, true, sections);
        let (filter, stderr) = match log {
            Some(p) => ("error", Stdio::from(std::fs::File::create(p).unwrap())),
            None => ("warn", Stdio::inherit()),
        };
        let child = spawn_lake(&config, args, filter, stderr);
        let lake = Lake { child, url: format!("http://127.0.0.1:{port}"), config };
        lake.wait_healthy();
        Edge { lake, dir, port, c: reqwest::Client::new() }
    }

    fn url(&self) -> &str {
        &self.lake.url
    }

    /// The baseline: 100 samples of node-a, now.
    async fn seed(&self) {
        let (s, b) =
            post(&self.c, self.url(), "metrics", TOKEN, "node-a/1/1", metrics(&[NODE; 100], now_micros(), "base"))
                .await;
        assert_eq!(s, 200, "{b}");
    }

    async fn assert_intact(&self) {
        // A fresh client: tests may have had the lake close pooled connections.
        let c = reqwest::Client::new();
        assert!(count(&c, self.url(), "select count(*) from metrics").await >= 100);
        assert_eq!(
            count(&c, self.url(), "select count(*) from metrics where name = 'base' and host = 'node-a'").await,
            100
        );
        assert_eq!(c.get(format!("{}/health", self.url())).send().await.unwrap().status(), 200);
    }

    /// POSTs `body` to `path` with `token` and batch id `id` (none when empty).
    async fn send(&self, path: &str, token: &str, id: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
        send(&self.c, self.url(), path, token, id, content_type, body).await
    }

    async fn metric(&self, name: &str) -> String {
        let text = self.c.get(format!("{}/metrics", self.url())).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
            .to_string()
    }
}

async fn send(
    c: &reqwest::Client,
    url: &str,
    path: &str,
    token: &str,
    id: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let mut r = c.post(format!("{url}{path}")).header("content-type", content_type).body(body);
    if !token.is_empty() {
        r = r.bearer_auth(token);
    }
    if !id.is_empty() {
        r = r.header(wire::BATCH_HEADER, id);
    }
    match r.send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, format!("{e:?}")),
    }
}

/// Samples named `name`, one per host in `hosts`, a microsecond apart from `ts`.
fn metrics(hosts: &[&str], ts: i64, name: &str) -> Vec<u8> {
    let mut b = MetricsBuilder::new();
    for (i, h) in hosts.iter().enumerate() {
        b.push(ts + i as i64, h, name, i as f64, &[]);
    }
    encode(&b.finish())
}

/// Samples named `name` of node-a, one at each of `times`.
fn metrics_at(times: &[i64], name: &str) -> Vec<u8> {
    let mut b = MetricsBuilder::new();
    for (i, t) in times.iter().enumerate() {
        b.push(*t, NODE, name, i as f64, &[]);
    }
    encode(&b.finish())
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.to_string())
}

fn kv(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

fn resource(host: &str) -> Option<Resource> {
    Some(Resource { attributes: vec![kv("host.name", host), kv("service.name", "relay")], ..Default::default() })
}

fn otlp_metrics(host: &str, name: &str) -> Vec<u8> {
    let now_ns = now_micros() as u64 * 1000;
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(host),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: now_ns,
                            value: Some(number_data_point::Value::AsDouble(1.5)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn otlp_logs(host: &str, message: &str) -> Vec<u8> {
    let now_ns = now_micros() as u64 * 1000;
    let record = LogRecord {
        time_unix_nano: now_ns,
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(message.into())) }),
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(host),
            scope_logs: vec![ScopeLogs { log_records: vec![record.clone(), record], ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn otlp_spans(host: &str, name: &str) -> Vec<u8> {
    let now_ns = now_micros() as u64 * 1000;
    let span = Span {
        trace_id: vec![0x4b; 16],
        span_id: vec![0x07; 8],
        name: name.into(),
        start_time_unix_nano: now_ns,
        end_time_unix_nano: now_ns + 1_000_000,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(host),
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_writes_only_rows_of_its_own_host() {
    let e = Edge::start("", FLUSH);
    e.seed().await;
    let now = now_micros();

    // Arrow: five rows of node-a, then one of node-b.
    let mut hosts = vec![NODE; 5];
    hosts.push(NODE_B);
    let (s, b) = post(&e.c, e.url(), "metrics", TOKEN, "node-a/10/1", metrics(&hosts, now, "forged")).await;
    assert_eq!(s, 400, "{b}");
    let err = error_of(&b);
    assert!(err.contains("row 5") && err.contains("\"node-b\"") && err.contains("hosts = [\"node-b\"]"), "{err}");

    // NDJSON and CSV: the line holding another host.
    let ndjson = "{\"n\": 1}\n{\"host\": \"node-a\", \"n\": 2}\n{\"host\": \"node-b\", \"n\": 3}\n";
    let (s, b) = e.send("/v1/ingest/json/visits", TOKEN, "node-a/11/1", "application/x-ndjson", ndjson.into()).await;
    assert_eq!(s, 400, "{b}");
    let err = error_of(&b);
    assert!(err.contains("line 3") && err.contains("\"node-b\""), "{err}");
    let csv = "host,n\nnode-a,1\nnode-b,2\n";
    let (s, b) = e.send("/v1/ingest/csv/visits", TOKEN, "node-a/11/2", "text/csv", csv.into()).await;
    assert_eq!(s, 400, "{b}");
    assert!(error_of(&b).contains("line 3") && b.contains("node-b"), "{b}");

    // OTLP: a resource's host.name that is another node.
    let (s, b) = e.send("/v1/metrics", TOKEN, "", "application/x-protobuf", otlp_metrics(NODE_B, "forged.otlp")).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("metric \"forged.otlp\"") && b.contains("host.name") && b.contains("\"node-b\""), "{b}");
    let (s, b) = e.send("/v1/logs", TOKEN, "", "application/x-protobuf", otlp_logs(NODE_B, "forged")).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("log record 0") && b.contains("node-b"), "{b}");
    let (s, b) = e.send("/v1/traces", TOKEN, "", "application/x-protobuf", otlp_spans(NODE_B, "forged")).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("span \"forged\" (span_id 0707070707070707)") && b.contains("\"node-b\""), "{b}");

    // node-b itself may, and rows without a host are the sender's.
    let (s, b) = post(&e.c, e.url(), "metrics", TOKEN_B, "node-b/1/1", metrics(&[NODE_B; 3], now, "own")).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) =
        e.send("/v1/ingest/json/visits", TOKEN, "node-a/11/3", "application/x-ndjson", "{\"n\": 1}\n".into()).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = e.send("/v1/logs", TOKEN, "", "application/x-protobuf", otlp_logs(NODE, "mine")).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = e.send("/v1/traces", TOKEN, "", "application/x-protobuf", otlp_spans(NODE, "mine")).await;
    assert_eq!(s, 200, "{b}");

    // Nothing of the refused batches was stored.
    assert_eq!(count(&e.c, e.url(), "select count(*) from metrics where name in ('forged', 'forged.otlp')").await, 0);
    assert_eq!(count(&e.c, e.url(), "select count(*) from metrics where host = 'node-b'").await, 3);
    assert_eq!(count(&e.c, e.url(), "select count(*) from logs where host = 'node-b'").await, 0);
    assert_eq!(sql(&e.c, e.url(), "select host, n from visits").await, serde_json::json!([["node-a", 1]]));
    assert_eq!(count(&e.c, e.url(), "select count(*) from logs where host = 'node-a' and message = 'mine'").await, 2);
    assert_eq!(sql(&e.c, e.url(), "select host, name from spans").await, serde_json::json!([["node-a", "mine"]]));
    e.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_writes_the_hosts_its_entry_lists_with_every_token() {
    // node-a relays for node-b and relay-1; a second token of node-a is in the tokens file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let hash = lake::auth::TokenHash::of(FILE_TOKEN).to_hex();
    std::fs::write(
        dir.path().join("data/tokens.toml"),
        format!("version = 1\n\n[[tokens]]\nid = \"0a0a0a0a\"\nrole = \"ingest\"\nnode = \"{NODE}\"\nsha256 = \"{hash}\"\ncreated = \"2026-11-25T10:00:00Z\"\n"),
    )
    .unwrap();
    let e = Edge::start_in(dir, "hosts = [\"node-b\", \"relay-1\"]", FLUSH, &[], None);
    e.seed().await;
    let now = now_micros();
    let (s, b) = post(
        &e.c,
        e.url(),
        "metrics",
        TOKEN,
        "node-a/10/1",
        metrics(&[NODE, NODE_B, "relay-1", NODE_B], now, "relayed"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let ndjson = "{\"host\": \"relay-1\", \"n\": 1}\n{\"n\": 2}\n";
    let (s, b) =
        e.send("/v1/ingest/json/visits", FILE_TOKEN, "node-a/11/1", "application/x-ndjson", ndjson.into()).await;
    assert_eq!(s, 200, "the tokens file's token of node-a has node-a's hosts: {b}");
    let (s, b) =
        e.send("/v1/metrics", FILE_TOKEN, "", "application/x-protobuf", otlp_metrics("relay-1", "relayed.otlp")).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = e.send("/v1/logs", TOKEN, "", "application/x-protobuf", otlp_logs(NODE_B, "relayed")).await;
    assert_eq!(s, 200, "{b}");
    // A host it does not list is still refused, and the list is node-a's alone.
    let (s, b) =
        e.send("/v1/metrics", FILE_TOKEN, "", "application/x-protobuf", otlp_metrics("mail-1", "relayed.otlp")).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("mail-1") && b.contains("node-b, relay-1"), "{b}");
    let (s, b) = post(&e.c, e.url(), "metrics", TOKEN_B, "node-b/1/1", metrics(&["relay-1"], now, "relayed")).await;
    assert_eq!(s, 400, "{b}");

    let rows =
        sql(&e.c, e.url(), "select host, count(*) from metrics where name like 'relayed%' group by 1 order by 1").await;
    assert_eq!(rows, serde_json::json!([["node-a", 1], ["node-b", 2], ["relay-1", 2]]));
    assert_eq!(
        sql(&e.c, e.url(), "select host, n from visits order by n").await,
        serde_json::json!([["relay-1", 1], ["node-a", 2]])
    );
    assert_eq!(
        count(&e.c, e.url(), "select count(*) from logs where host = 'node-b' and message = 'relayed'").await,
        2
    );
    e.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_the_lake_writes_take_no_ingest() {
    let e = Edge::start("", FLUSH);
    e.seed().await;
    // A well-formed `alerts` batch claiming a rule fired and resolved.
    let mut b = TableBuilder::new(Table::Alerts);
    let col = |b: &TableBuilder, n: &str| b.column(n).unwrap();
    let (ts, host, rule, state) = (col(&b, "ts"), col(&b, "host"), col(&b, "rule"), col(&b, "state"));
    for st in ["firing", "resolved"] {
        b.ts(ts, now_micros());
        b.text(host, Some(NODE));
        b.text(rule, Some("node_silent"));
        b.text(state, Some(st));
        b.end_row();
    }
    let batch = b.finish().unwrap();
    let body = wire::encode(&batch.schema(), &[batch]).unwrap();
    let (s, b) = post(&e.c, e.url(), "alerts", TOKEN, "node-a/20/1", body).await;
    assert_eq!(s, 403, "{b}");
    assert!(error_of(&b).contains("table alerts is written by the lake only"), "{b}");
    for path in ["/v1/ingest/json/alerts", "/v1/ingest/csv/alerts"] {
        let (s, b) = e
            .send(
                path,
                TOKEN,
                "node-a/20/2",
                "application/x-ndjson",
                b"{\"rule\": \"node_silent\", \"state\": \"resolved\"}".to_vec(),
            )
            .await;
        assert_eq!(s, 403, "{path}: {b}");
        assert!(error_of(&b).contains("written by the lake only"), "{path}: {b}");
    }
    // Other built-in names cannot become custom tables either.
    let (s, b) =
        e.send("/v1/ingest/json/metrics", TOKEN, "node-a/20/3", "application/x-ndjson", b"{\"v\": 1}".to_vec()).await;
    assert_eq!(s, 400, "{b}");
    assert!(error_of(&b).contains("taken by a built-in table"), "{b}");
    assert_eq!(
        count(&e.c, e.url(), "select count(*) from alerts where host = 'node-a' and rule = 'node_silent'").await,
        0
    );
    assert!(!e.dir.path().join("data/state/custom/alerts.json").exists());
    e.assert_intact().await;
}

/// Dates under `tables/` (`date=YYYY-MM-DD` directories) of any table.
fn partitions(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(data.join("tables")).unwrap().flatten() {
        for d in std::fs::read_dir(t.path()).unwrap().flatten() {
            out.push(format!("{}/{}", t.file_name().to_string_lossy(), d.file_name().to_string_lossy()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_spanning_decades_is_refused_and_flushes_go_on() {
    let e = Edge::start("", FLUSH);
    e.seed().await;
    // The case: one NDJSON request of 3,000 rows, one per day from 1950.
    let noon_1950 = -631_152_000 + 12 * 3600; // 1950-01-01T12:00:00Z
    let body: String = (0..3000)
        .map(|d| {
            format!(
                "{{\"ts\": \"{}\", \"reading\": {d}}}\n",
                jiff::Timestamp::from_second(noon_1950 + d * 86_400).unwrap()
            )
        })
        .collect();
    assert!(body.starts_with("{\"ts\": \"1950-01-01T12:00:00Z\""), "{}", &body[..80]);
    let started = Instant::now();
    let (s, b) =
        e.send("/v1/ingest/json/history", TOKEN, "node-a/30/1", "application/x-ndjson", body.into_bytes()).await;
    assert_eq!(s, 400, "{b}");
    let err = error_of(&b);
    assert!(
        err.contains("line 32")
            && err.contains("1950-02-01T12:00:00Z")
            && err.contains("span 32 days (1950-01-01 to 1950-02-01)")
            && err.contains("ingest.max_days_per_batch = 31"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "refused at once: {:?}", started.elapsed());

    // Arrow: the same bound, naming the row; 31 dates are fine.
    let now = now_micros();
    let times: Vec<i64> = (0..40).map(|d| now - d * DAY).collect();
    let (s, b) = post(&e.c, e.url(), "metrics", TOKEN, "node-a/30/2", metrics_at(&times, "span")).await;
    assert_eq!(s, 400, "{b}");
    assert!(error_of(&b).contains("row 31") && b.contains("span 32 days"), "{b}");
    let (s, b) = post(&e.c, e.url(), "metrics", TOKEN, "node-a/30/3", metrics_at(&times[..31], "span")).await;
    assert_eq!(s, 200, "{b}");

    // Flushing goes on: the rows are written to Parquet within moments, and nothing of
    // 1950 (and no `history` table) exists.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if e.metric("lake_buffered_rows").await == "0"
            && e.metric("lake_rows_written_total").await.parse::<u64>().unwrap() >= 131
        {
            break;
        }
        assert!(Instant::now() < deadline, "rows not flushed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let parts = partitions(&e.dir.path().join("data"));
    assert!(parts.iter().all(|p| p.contains("/date=20") && !p.starts_with("history/")), "{parts:?}");
    assert_eq!(parts.iter().filter(|p| p.starts_with("metrics/")).count(), 31, "{parts:?}");
    assert!(!e.dir.path().join("data/state/custom/history.json").exists());
    assert_eq!(count(&e.c, e.url(), "select count(*) from metrics where name = 'span'").await, 31);
    e.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_before_their_tables_retention_are_refused() {
    let sections = format!("{FLUSH}\n[retention]\nkeep_local_days = 7\nkeep_archive_days = 30\n[retention.tables.logs]\nkeep_archive_days = 400\n");
    let e = Edge::start("", &sections);
    e.seed().await;
    let now = now_micros();
    // Metrics keep 30 days: a row 40 days old would be deleted by the next nightly run.
    let (s, b) = post(&e.c, e.url(), "metrics", TOKEN, "node-a/40/1", metrics_at(&[now, now - 40 * DAY], "old")).await;
    assert_eq!(s, 400, "{b}");
    let err = error_of(&b);
    assert!(err.contains("row 1") && err.contains("before the table's retention (keep_archive_days = 30"), "{err}");
    // Older than keep_local_days is fine: it is archived, then leaves the local disk.
    let (s, b) = post(&e.c, e.url(), "metrics", TOKEN, "node-a/40/2", metrics_at(&[now - 20 * DAY], "old")).await;
    assert_eq!(s, 200, "{b}");
    // Custom tables follow the default; OTLP logs the table's own 400 days.
    let old = jiff::Timestamp::from_microsecond(now - 40 * DAY).unwrap();
    let (s, b) = e
        .send(
            "/v1/ingest/json/readings",
            TOKEN,
            "node-a/41/1",
            "application/x-ndjson",
            format!("{{\"ts\": \"{old}\", \"v\": 1}}\n").into_bytes(),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error_of(&b).contains("line 1") && b.contains("retention"), "{b}");
    let mut logs = ExportLogsServiceRequest::decode(&otlp_logs(NODE, "old")[..]).unwrap();
    for r in &mut logs.resource_logs[0].scope_logs[0].log_records {
        r.time_unix_nano = (now - 200 * DAY) as u64 * 1000;
    }
    let (s, b) = e.send("/v1/logs", TOKEN, "", "application/x-protobuf", logs.encode_to_vec()).await;
    assert_eq!(s, 200, "{b}");
    for r in &mut logs.resource_logs[0].scope_logs[0].log_records {
        r.time_unix_nano = (now - 500 * DAY) as u64 * 1000;
    }
    let (s, b) = e.send("/v1/logs", TOKEN, "", "application/x-protobuf", logs.encode_to_vec()).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("log record 0") && b.contains("keep_archive_days = 400"), "{b}");

    assert_eq!(count(&e.c, e.url(), "select count(*) from metrics where name = 'old'").await, 1);
    assert_eq!(count(&e.c, e.url(), "select count(*) from logs where message = 'old'").await, 2);
    e.assert_intact().await;
}

/// A metrics batch of `rows` samples of `host` whose labels hold pseudo-random hex (it
/// barely compresses), marked with label `batch`.
fn noisy_batch(host: &str, batch: u64, rows: usize) -> Vec<u8> {
    let mut b = MetricsBuilder::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ batch;
    let now = now_micros();
    for i in 0..rows {
        let mut noise = String::with_capacity(64);
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.push_str(&format!("{x:016x}"));
        }
        b.push(now + i as i64, host, "noisy", i as f64, &[("batch", &batch.to_string()), ("noise", &noise)]);
    }
    encode(&b.finish())
}

/// An answer read off a raw connection: status, `Retry-After`, body.
fn parse_answer(text: &str) -> (u16, Option<String>, String) {
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let retry = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after: ").map(str::to_string));
    (status, retry, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bodies_past_the_decode_budget_are_told_to_retry() {
    const SENDERS: u64 = 12;
    // Twelve collectors: node-a and node-b, six spool epochs each, one batch per epoch (a
    // collector sends its batches one at a time, in order; the lake remembers eight
    // epochs per node).
    let sender = |i: usize| if i.is_multiple_of(2) { (NODE, TOKEN) } else { (NODE_B, TOKEN_B) };
    let id = |i: usize| format!("{}/{}/1", sender(i).0, 50 + i);
    let bodies: Vec<Vec<u8>> = (0..SENDERS as usize).map(|i| noisy_batch(sender(i).0, 100 + i as u64, 3000)).collect();
    let body_max = bodies.iter().map(Vec::len).max().unwrap();
    let decoded_max = bodies.iter().map(|b| wire::decoded_size(b, usize::MAX).unwrap()).max().unwrap();
    // Room for ten bodies at once (so the eleventh and twelfth are refused on their
    // headers), and for any one request whole (so none is too large for it).
    let budget = body_max * 21 / 2;
    assert!(body_max + decoded_max < budget, "body {body_max}, decoded {decoded_max}");
    let sections = format!("{FLUSH}max_body = {}\ndecode_memory = {budget}\n", body_max.next_multiple_of(1024));
    let e = Edge::start("", &sections);
    e.seed().await;

    // Twelve senders send their headers at once and their bodies a second later.
    let addr = format!("127.0.0.1:{}", e.port);
    let senders: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let (addr, body, token, id) = (addr.clone(), body.clone(), sender(i).1, id(i));
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let head = format!(
                    "POST /v1/ingest/metrics HTTP/1.1\r\nHost: lake\r\nAuthorization: Bearer {token}\r\nLake-Batch: {id}\r\n\
                     Content-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    wire::CONTENT_TYPE,
                    body.len()
                );
                s.write_all(head.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_secs(1));
                let _ = s.write_all(&body);
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                parse_answer(&String::from_utf8_lossy(&out))
            })
        })
        .collect();
    let answers: Vec<(u16, Option<String>, String)> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{answers:?}");
    let refused: Vec<usize> = (0..answers.len()).filter(|i| answers[*i].0 == 503).collect();
    assert!(refused.len() >= 2, "two senders cannot even have their bodies held: {statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    for i in &refused {
        let (_, retry, body) = &answers[*i];
        assert_eq!(retry.as_deref(), Some("1"), "{answers:?}");
        assert!(error_of(body).contains("ingest.decode_memory"), "{body}");
    }
    // Every 200's rows are there, once; the refused ones are not.
    for (i, a) in answers.iter().enumerate() {
        let n =
            count(&e.c, e.url(), &format!("select count(*) from metrics where labels['batch'] = '{}'", 100 + i)).await;
        assert_eq!(n, if a.0 == 200 { 3000 } else { 0 }, "batch {i}: {statuses:?}");
    }
    assert!(e.metric("lake_ingest_decode_budget_refused_total").await.parse::<u64>().unwrap() >= refused.len() as u64);
    // Retried, as the collector does, each is stored once.
    for i in refused {
        let (s, b) = post(&e.c, e.url(), "metrics", sender(i).1, &id(i), bodies[i].clone()).await;
        assert_eq!(s, 200, "{b}");
        assert!(b.contains("\"rows\":3000"), "stored now, not taken for a duplicate: {b}");
    }
    for (i, body) in bodies.iter().enumerate() {
        let (s, b) = post(&e.c, e.url(), "metrics", sender(i).1, &id(i), body.clone()).await;
        assert_eq!(s, 200, "{b}");
        assert!(b.contains("\"duplicate\":true"), "{b}");
    }
    assert_eq!(count(&e.c, e.url(), "select count(*) from metrics where name = 'noisy'").await, 3000 * SENDERS as i64);
    assert_eq!(
        count(&e.c, e.url(), "select count(distinct labels['batch']) from metrics where name = 'noisy'").await,
        SENDERS as i64
    );
    assert_eq!(e.metric("lake_ingest_decode_memory_bytes").await, "0", "every request gave its share back");
    e.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_cap_do_not_lock_the_collectors_out() {
    // The idle timeout is a minute: only the cap's eviction can make room in time.
    let e = Edge::start("", &format!("{FLUSH}[http]\nmax_connections = 16\nheader_timeout = \"60s\"\n"));
    e.seed().await;
    let addr = format!("127.0.0.1:{}", e.port);
    // A client opening 300 connections and sending nothing on them.
    let idle: Vec<TcpStream> = (0..300).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A collector still gets through, at once.
    let started = Instant::now();
    let c = reqwest::Client::new();
    let (s, b) =
        post(&c, e.url(), "metrics", TOKEN, "node-a/60/1", metrics(&[NODE; 10], now_micros(), "through")).await;
    assert_eq!(s, 200, "{b}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // The lake closed the idle ones it had to (all but at most the cap of them).
    let mut closed = 0;
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            _ => {}
        }
    }
    assert!(closed >= 300 - 16, "{closed} closed");
    let evicted: u64 = e.metric("lake_http_connections_evicted_total").await.parse().unwrap();
    assert!(evicted >= 300 - 16, "{evicted}");
    assert!(e.metric("lake_http_connections").await.parse::<u64>().unwrap() <= 16);
    assert_eq!(count(&c, e.url(), "select count(*) from metrics where name = 'through'").await, 10);
    e.assert_intact().await;
}

/// Waits for `child` to exit within `limit`; its status, or `None` (then it is killed).
fn exit_within(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_reads_beyond_loopback_need_insecure_open() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Every address of the machine, and no read token anywhere.
    let config = write_lake_toml(dir.path(), &format!("0.0.0.0:{port}"), "", false, FLUSH);
    let log = dir.path().join("refused.log");
    let mut child = spawn_lake(&config, &[], "warn", Stdio::from(std::fs::File::create(&log).unwrap()));
    let status = exit_within(&mut child, Duration::from_secs(30)).expect("lake serve must refuse to start");
    assert!(!status.success(), "{status:?}");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("listen = \"0.0.0.0:")
            && said.contains("not a loopback address")
            && said.contains("no read token")
            && said.contains("--insecure-open"),
        "{said}"
    );
    assert!(!dir.path().join("data/wal").exists(), "nothing started");
    let help = Command::new(lake_bin()).args(["serve", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--insecure-open"));

    // With the flag it starts, and says what it does.
    let log = dir.path().join("open.log");
    let child = spawn_lake(&config, &["--insecure-open"], "warn", Stdio::from(std::fs::File::create(&log).unwrap()));
    let mut lake = Lake { child, url: format!("http://127.0.0.1:{port}"), config: config.clone() };
    lake.wait_healthy();
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("--insecure-open: the SQL API"), "{said}");
    let c = reqwest::Client::new();
    let (s, b) = post(&c, &lake.url, "metrics", TOKEN, "node-a/1/1", metrics(&[NODE; 100], now_micros(), "base")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(count(&c, &lake.url, "select count(*) from metrics").await, 100);
    lake.term();

    // A read token in the tokens file is enough, without the flag.
    let hash = lake::auth::TokenHash::of(READ_TOKEN).to_hex();
    std::fs::write(
        dir.path().join("data/tokens.toml"),
        format!("version = 1\n\n[[tokens]]\nid = \"0b0b0b0b\"\nrole = \"read\"\nsha256 = \"{hash}\"\ncreated = \"2026-11-25T10:00:00Z\"\n"),
    )
    .unwrap();
    let child = spawn_lake(&config, &[], "warn", Stdio::inherit());
    let lake = Lake { child, url: format!("http://127.0.0.1:{port}"), config };
    lake.wait_healthy();
    let r = c.post(format!("{}/v1/sql", lake.url)).json(&serde_json::json!({"sql": "select 1"})).send().await.unwrap();
    assert_eq!(r.status(), 401, "reads need the token now");
    assert_eq!(count(&c, &lake.url, "select count(*) from metrics where name = 'base'").await, 100);
}

/// `fail2ban-regex <log> <filter>`: the lines it matched, and its whole report.
fn fail2ban_regex(log: &Path) -> (u64, String) {
    let filter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/fail2ban/filter.d/lake-auth.conf");
    let out = Command::new("fail2ban-regex").arg(log).arg(&filter).output();
    let out = out.unwrap_or_else(|e| {
        panic!("fail2ban-regex: {e}: `scripts/setup peers` installs Debian's fail2ban (apt-get install fail2ban)")
    });
    let report = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    // "Lines: 12 lines, 0 ignored, 8 matched, 4 missed"
    let matched = report
        .lines()
        .find_map(|l| l.strip_prefix("Lines: "))
        .and_then(|l| l.split(", ").find_map(|p| p.strip_suffix(" matched")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no match count in:\n{report}"));
    (matched, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_are_logged_with_the_peer_for_fail2ban() {
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("lake.log");
    // LOG_FILTER=error: the refused-token lines are logged all the same.
    let admin = "[admin]\ntokens = [\"admin-token-0123456789abcdef\"]\n";
    let e = Edge::start_logging("", &format!("{FLUSH}{admin}"), &[], Some(&log));
    e.seed().await;
    // The client connects from 127.0.0.2: the line carries the real peer address.
    let c = reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let url = e.url();
    let arrow = metrics(&[NODE], now_micros(), "refused");
    let protobuf = "application/x-protobuf";
    // (path, token, batch id, body, status, reason logged)
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("/v1/ingest/metrics", "", "node-a/70/1", arrow.clone(), 401, "no token"),
        ("/v1/ingest/metrics", "not-a-token-0123456789", "node-a/70/1", arrow.clone(), 401, "bad token"),
        ("/v1/ingest/metrics", TOKEN, "node-b/70/1", arrow.clone(), 403, "forbidden"),
        ("/v1/ingest/alerts", TOKEN, "node-a/70/2", arrow.clone(), 403, "forbidden"),
        ("/v1/ingest/json/readings", READ_TOKEN, "node-a/70/3", b"{\"v\": 1}".to_vec(), 401, "bad token"),
        ("/v1/logs", "not-a-token-0123456789", "", otlp_logs(NODE, "x"), 401, "bad token"),
        ("/v1/sql", TOKEN, "", b"{\"sql\": \"select 1\"}".to_vec(), 401, "bad token"),
        ("/v1/sql", "", "", b"{\"sql\": \"select 1\"}".to_vec(), 401, "no token"),
        ("/v1/admin/compact", READ_TOKEN, "", b"{}".to_vec(), 401, "bad token"),
    ];
    for (path, token, id, body, want, _) in &cases {
        let ct = if path.starts_with("/v1/logs") { protobuf } else { "application/json" };
        let (s, b) = send(&c, url, path, token, id, ct, body.clone()).await;
        assert_eq!(s, *want, "{path}: {b}");
    }
    // Accepted requests log nothing.
    let (s, b) =
        send(&c, url, "/v1/sql", READ_TOKEN, "", "application/json", b"{\"sql\": \"select 1\"}".to_vec()).await;
    assert_eq!(s, 200, "{b}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("refused token")).collect();
    assert_eq!(lines.len(), cases.len(), "{text}");
    for (line, (path, _, _, _, _, reason)) in lines.iter().zip(&cases) {
        assert!(
            line.ends_with(&format!("WARN lake_auth: lake auth: refused token from 127.0.0.2 on {path} ({reason})")),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "no colour codes in a log file: {line:?}");
    }
    let (matched, report) = fail2ban_regex(&log);
    assert_eq!(matched, cases.len() as u64, "{report}");
    e.assert_intact().await;
    drop(e);

    // The JSON log format matches the same filter.
    let log = scratch.path().join("lake.json.log");
    let e = Edge::start_logging("", FLUSH, &["--log-json"], Some(&log));
    e.seed().await;
    let (s, _) = send(&c, e.url(), "/v1/sql", "", "", "application/json", b"{\"sql\": \"select 1\"}".to_vec()).await;
    assert_eq!(s, 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"message\":\"lake auth: refused token from 127.0.0.2 on /v1/sql (no token)\""), "{text}");
    let (matched, report) = fail2ban_regex(&log);
    assert_eq!(matched, 1, "{report}");
    e.assert_intact().await;
}
