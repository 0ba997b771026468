//! Hostile input at the lake's edges, against a real `lake serve` (issue 10, part 2).
//!
//! Every test first stores a known baseline (100 metric samples through Arrow ingest and
//! three rows of a custom table), throws one kind of abuse at the server, checks that the
//! answer is a clear 4xx naming the problem, and ends by checking that the baseline is
//! still all there and the server still answers:
//!
//! - oversized bodies on every endpoint → 413 (a forged zstd length too);
//! - slow-loris clients (headers or body a byte at a time) → cut off, others served;
//! - deeply nested JSON on every JSON endpoint → 400, no stack overflow;
//! - 10,000 labels on one sample (Arrow, OTLP) → 400 naming the column or metric;
//! - node names with `../` or `/` (batch ids, table names, OTLP `host.name`, rows) →
//!   refused or kept as data, never a path: nothing appears outside the data directory;
//! - non-UTC, far-future and far-past timestamps → 400 naming the row (see
//!   `lake::http::bounds`), offsets converted to UTC;
//! - unknown tables → 404 (or 400 for names that cannot be custom tables);
//! - a batch whose schema lies (wrong table, wrong type, schema and batch spliced from two
//!   streams, nulls in a required column) → 400 naming the column.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray, TimestampNanosecondArray,
};
use common::*;
use lake_format::rows::{now_micros, MetricsBuilder};
use lake_format::{wire, Table};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::Value;

/// A lake with extra lines under `[ingest]`, `[query]` and `[http]`.
struct Hostile {
    lake: Lake,
    dir: tempfile::TempDir,
    addr: String,
    c: reqwest::Client,
}

impl Hostile {
    fn start(ingest: &str, query: &str, http: &str) -> Hostile {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = lake_toml(dir.path(), port).ingest(ingest).query(query).section(&format!("[http]\n{http}")).write();
        let lake = Lake::start(&path, port);
        Hostile { lake, dir, addr: format!("127.0.0.1:{port}"), c: reqwest::Client::new() }
    }

    fn url(&self) -> &str {
        &self.lake.url
    }

    /// Stops the lake (SIGTERM) and starts it again on the same data.
    fn restart(&mut self) {
        self.lake.term();
        let (config, url) = (self.lake.config.clone(), self.lake.url.clone());
        self.lake = Lake::start_at(&config, &url);
    }

    /// The baseline every test must find intact at its end.
    async fn seed(&self) {
        let (s, b) = post(&self.c, self.url(), "metrics", TOKEN, "node-a/1/1", encode(&metrics_batch(1, 100))).await;
        assert_eq!(s, 200, "{b}");
        let rows =
            "{\"ts\": \"2026-11-25T10:00:00Z\", \"v\": 1}\n{\"ts\": \"2026-11-25T10:01:00Z\", \"v\": 2}\n{\"v\": 3}\n";
        let (s, b) =
            self.send("/v1/ingest/json/baseline", "node-a/2/1", "application/x-ndjson", rows.as_bytes().to_vec()).await;
        assert_eq!(s, 200, "{b}");
    }

    async fn assert_intact(&self) {
        assert_eq!(
            count(&self.c, self.url(), "select count(*) from metrics where name = 'seq' and labels['batch'] = '1'")
                .await,
            100
        );
        assert_eq!(count(&self.c, self.url(), "select count(*) from baseline").await, 3);
        assert_eq!(count(&self.c, self.url(), "select sum(v) from baseline").await, 6);
        let h = self.c.get(format!("{}/health", self.url())).send().await.unwrap();
        assert_eq!(h.status(), 200);
    }

    /// POSTs `body` to `path` with the node token and batch id `id` (none when empty).
    async fn send(&self, path: &str, id: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
        let mut r = self
            .c
            .post(format!("{}{path}", self.url()))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(body);
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

    /// POSTs to the read side (`/v1/sql`, `/grafana/…`) with the read token.
    async fn read(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        let r = self
            .c
            .post(format!("{}{path}", self.url()))
            .bearer_auth(READ_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match r {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.text().await.unwrap_or_default())
            }
            Err(e) => (0, format!("{e:?}")),
        }
    }
}

/// What a raw client saw.
#[derive(Debug)]
struct Raw {
    status: Option<u16>,
    text: String,
    elapsed: Duration,
}

/// Sends `head` and `body` over a fresh connection, a byte every `pace` (or all at once),
/// then reads the answer until the server closes. Write errors (the server hung up) end
/// the sending early.
fn raw(addr: &str, head: &[u8], body: &[u8], pace: Option<Duration>) -> Raw {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let all: Vec<u8> = head.iter().chain(body).copied().collect();
    match pace {
        None => {
            let _ = s.write_all(&all);
        }
        Some(p) => {
            for b in &all {
                if s.write_all(std::slice::from_ref(b)).is_err() {
                    break;
                }
                std::thread::sleep(p);
                // Stop sending once the server has answered or closed.
                s.set_nonblocking(true).unwrap();
                let mut probe = [0u8; 1];
                let answered = !matches!(s.peek(&mut probe), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock);
                s.set_nonblocking(false).unwrap();
                if answered {
                    break;
                }
            }
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|c| c.parse().ok());
    Raw { status, text, elapsed: start.elapsed() }
}

fn ingest_head(path: &str, id: &str, len: usize) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: lake\r\nAuthorization: Bearer {TOKEN}\r\nLake-Batch: {id}\r\nContent-Type: {}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
        wire::CONTENT_TYPE
    )
    .into_bytes()
}

/// Every file and directory under `root`, relative to it.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.to_string())
}

fn otlp_metrics(name: &str, attributes: Vec<KeyValue>, time_unix_nano: u64, host: Option<&str>) -> Vec<u8> {
    let resource = host.map(|h| Resource { attributes: vec![kv("host.name", text_value(h))], ..Default::default() });
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource,
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes,
                            time_unix_nano,
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

fn otlp_log(body: AnyValue, time_unix_nano: u64) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord { time_unix_nano, body: Some(body), ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue { key: key.into(), value: Some(value), ..Default::default() }
}

fn text_value(s: &str) -> AnyValue {
    AnyValue { value: Some(any_value::Value::StringValue(s.into())) }
}

fn now_ns() -> u64 {
    now_micros() as u64 * 1000
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_with_413() {
    let h = Hostile::start("max_body = \"64KiB\"", "", "");
    h.seed().await;
    let big = vec![b'x'; 64 * 1024 + 1];

    // Arrow ingest: refused on Content-Length, before a byte of the body is read.
    let (s, b) = h.send("/v1/ingest/metrics", "node-a/1/2", wire::CONTENT_TYPE, big.clone()).await;
    assert_eq!(s, 413, "{b}");
    assert!(error_of(&b).contains("65536 byte limit (ingest.max_body)"), "{b}");
    // Chunked (no Content-Length): refused as soon as more than the limit arrived.
    let chunked = {
        let mut v = format!(
            "POST /v1/ingest/metrics HTTP/1.1\r\nHost: lake\r\nAuthorization: Bearer {TOKEN}\r\nLake-Batch: node-a/1/2\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        for _ in 0..20 {
            v.extend_from_slice(format!("{:x}\r\n", 8192).as_bytes());
            v.extend_from_slice(&[b'y'; 8192]);
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"0\r\n\r\n");
        v
    };
    let addr = h.addr.clone();
    let r = tokio::task::spawn_blocking(move || raw(&addr, &chunked, &[], None)).await.unwrap();
    assert_eq!(r.status, Some(413), "{}", r.text);

    // A small body whose zstd buffer claims to inflate to 1 TiB: 413 before any allocation.
    let n = 12_345;
    let mut b = MetricsBuilder::new();
    for _ in 0..n {
        b.push(1_795_374_070_000_000, NODE, "bomb", 0.0, &[]);
    }
    let body = encode(&b.finish());
    let real = ((8 * n) as i64).to_le_bytes();
    let at = body.windows(8).position(|w| w == real).expect("a buffer of 8*n bytes");
    let mut forged = body.clone();
    forged[at..at + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
    let (s, b) = h.send("/v1/ingest/metrics", "node-a/1/2", wire::CONTENT_TYPE, forged).await;
    assert_eq!(s, 413, "{b}");
    assert!(error_of(&b).contains("decompresses to"), "{b}");

    // Custom tables: JSON and CSV.
    let (s, b) = h.send("/v1/ingest/json/big", "node-a/3/1", "application/x-ndjson", big.clone()).await;
    assert_eq!(s, 413, "{b}");
    let (s, b) = h.send("/v1/ingest/csv/big", "node-a/3/2", "text/csv", big.clone()).await;
    assert_eq!(s, 413, "{b}");
    // OTLP, protobuf and JSON.
    let (s, b) = h.send("/v1/metrics", "", "application/x-protobuf", big.clone()).await;
    assert_eq!(s, 413, "{b}");
    let (s, b) = h.send("/v1/logs", "", "application/json", big.clone()).await;
    assert_eq!(s, 413, "{b}");
    assert!(b.contains("OTLP limit"), "{b}");
    // The read side buffers at most 2 MiB of request, and says so in JSON like its other errors.
    let huge = format!("{{\"sql\": \"select '{}'\"}}", "z".repeat(3 << 20)).into_bytes();
    let (s, b) = h.read("/v1/sql", huge.clone()).await;
    assert_eq!(s, 413, "{b}");
    assert!(error_of(&b).contains("2097152 byte limit of /v1/sql"), "{b}");
    let (s, b) = h.read("/grafana/query", huge).await;
    assert_eq!(s, 413, "{b}");
    assert!(error_of(&b).contains("2097152 byte limit of Grafana requests"), "{b}");

    // Nothing of the refused batches was stored; their ids are still free.
    let (s, b) = post(&h.c, h.url(), "metrics", TOKEN, "node-a/1/2", encode(&metrics_batch(2, 5))).await;
    assert_eq!(s, 200, "{b}");
    assert!(!b.contains("duplicate"), "{b}");
    assert_eq!(count(&h.c, h.url(), "select count(*) from metrics").await, 105);
    h.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_while_others_are_served() {
    let h = Hostile::start(
        "",
        "timeout = \"10s\"",
        "header_timeout = \"4s\"\nbody_timeout = \"6s\"\nrequest_timeout = \"15s\"",
    );
    h.seed().await;
    let addr = h.addr.clone();

    // Twenty clients sending their headers a byte a second.
    let head = ingest_head("/v1/ingest/metrics", "node-a/1/9", 100);
    let lorises: Vec<_> = (0..20)
        .map(|_| {
            let (a, hd) = (addr.clone(), head.clone());
            std::thread::spawn(move || raw(&a, &hd, &[], Some(Duration::from_secs(1))))
        })
        .collect();
    // One sending a complete head, then its body a byte every 250 ms.
    let body = encode(&metrics_batch(7, 20));
    let slow_body = {
        let (a, hd, b) = (addr.clone(), ingest_head("/v1/ingest/metrics", "node-a/1/7", body.len()), body.clone());
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(&a).unwrap();
            s.write_all(&hd).unwrap();
            let start = Instant::now();
            let r = raw_rest(s, &b, Duration::from_millis(250));
            (r, start.elapsed())
        })
    };
    // And one on the SQL API, one on Grafana.
    let slow_read = |path: &'static str, body: &'static [u8]| {
        let a = addr.clone();
        let hd = format!(
            "POST {path} HTTP/1.1\r\nHost: lake\r\nAuthorization: Bearer {READ_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(&a).unwrap();
            s.write_all(hd.as_bytes()).unwrap();
            raw_rest(s, body, Duration::from_millis(500))
        })
    };
    let slow_sql = slow_read("/v1/sql", b"{\"sql\": \"select 42\"}");
    let slow_grafana = slow_read("/grafana/query", b"{\"targets\": [{\"target\": \"select 1\"}]}");

    // Meanwhile (all of them still connected) the lake serves everyone else at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    for seq in 2..6 {
        let (s, b) =
            post(&h.c, h.url(), "metrics", TOKEN, &format!("node-a/1/{seq}"), encode(&metrics_batch(seq, 10))).await;
        assert_eq!(s, 200, "{b}");
    }
    assert_eq!(count(&h.c, h.url(), "select count(*) from metrics").await, 140);
    assert!(started.elapsed() < Duration::from_secs(3), "normal clients waited {:?}", started.elapsed());

    for l in lorises {
        let r = l.join().unwrap();
        // The head never completed: the connection is closed at header_timeout.
        assert!(
            r.elapsed > Duration::from_millis(3500) && r.elapsed < Duration::from_secs(8),
            "a slow-header client was held {:?}",
            r.elapsed
        );
        assert!(r.status.is_none_or(|s| s == 408), "{r:?}");
    }
    let (r, took) = slow_body.join().unwrap();
    assert_eq!(r.status, Some(408), "{r:?}");
    assert!(r.text.contains("http.body_timeout"), "{r:?}");
    assert!(took > Duration::from_millis(5500) && took < Duration::from_secs(10), "{took:?}");
    for slow in [slow_sql, slow_grafana] {
        let r = slow.join().unwrap();
        assert_eq!(r.status, Some(408), "{r:?}");
        let body = r.text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"));
        assert!(json["error"].as_str().unwrap().contains("http.body_timeout"), "{r:?}");
    }

    // The timed-out batch was not stored: sent again at a normal pace it is new.
    let (s, b) = post(&h.c, h.url(), "metrics", TOKEN, "node-a/1/7", body).await;
    assert_eq!(s, 200, "{b}");
    assert!(!b.contains("duplicate"), "{b}");
    assert_eq!(count(&h.c, h.url(), "select count(*) from metrics where labels['batch'] = '7'").await, 20);
    h.assert_intact().await;
}

/// Sends `body` a byte every `pace` on a connection whose head is sent, then reads the answer.
fn raw_rest(mut s: TcpStream, body: &[u8], pace: Duration) -> Raw {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    for b in body {
        if s.write_all(std::slice::from_ref(b)).is_err() {
            break;
        }
        std::thread::sleep(pace);
        s.set_nonblocking(true).unwrap();
        let mut probe = [0u8; 1];
        let answered = !matches!(s.peek(&mut probe), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock);
        s.set_nonblocking(false).unwrap();
        if answered {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|c| c.parse().ok());
    Raw { status, text, elapsed: start.elapsed() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_refused_without_a_crash() {
    let h = Hostile::start("", "", "");
    h.seed().await;
    let depth = 100_000;
    let nest = format!("{}{}", "[".repeat(depth), "]".repeat(depth));

    // Custom ingest, NDJSON and a JSON array.
    let (s, b) = h
        .send(
            "/v1/ingest/json/nested",
            "node-a/3/1",
            "application/x-ndjson",
            format!("{{\"a\": {nest}}}\n").into_bytes(),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error_of(&b).contains("line 1") && b.contains("recursion limit"), "{b}");
    let (s, b) = h
        .send("/v1/ingest/json/nested", "node-a/3/2", "application/json", format!("[{{\"a\": {nest}}}]").into_bytes())
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("recursion limit"), "{b}");
    // OTLP/JSON: a log body of kvlists nested 10,000 deep.
    let mut v = "{\"stringValue\": \"x\"}".to_string();
    for _ in 0..10_000 {
        v = format!("{{\"kvlistValue\": {{\"values\": [{{\"key\": \"k\", \"value\": {v}}}]}}}}");
    }
    let logs = format!("{{\"resourceLogs\": [{{\"scopeLogs\": [{{\"logRecords\": [{{\"body\": {v}}}]}}]}}]}}");
    let (s, b) = h.send("/v1/logs", "", "application/json", logs.into_bytes()).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("recursion limit"), "{b}");
    // OTLP/protobuf: the same nesting 200 deep (prost stops at 100).
    let mut any = text_value("x");
    for _ in 0..200 {
        any = AnyValue { value: Some(any_value::Value::KvlistValue(KeyValueList { values: vec![kv("k", any)] })) };
    }
    let (s, b) = h.send("/v1/logs", "", "application/x-protobuf", otlp_log(any, now_ns())).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("recursion limit"), "{b}");
    // The SQL API and Grafana.
    // (Nesting where a string is expected fails on the type; under an unknown key the
    // parser has to walk it.)
    for body in [format!("{{\"sql\": {nest}}}"), format!("{{\"x\": {nest}, \"sql\": \"select 1\"}}")] {
        let (s, b) = h.read("/v1/sql", body.into_bytes()).await;
        assert_eq!(s, 400, "{b}");
        assert!(error_of(&b).contains("invalid JSON body"), "{b}");
    }
    let (s, b) = h.read("/grafana/query", nest.clone().into_bytes()).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = h.read("/grafana/variable", nest.into_bytes()).await;
    assert_eq!(s, 400, "{b}");

    assert_eq!(count(&h.c, h.url(), "select count(*) from logs").await, 0);
    h.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_labels_on_one_sample_are_refused_by_name() {
    let h = Hostile::start("", "", "");
    h.seed().await;
    let labels: Vec<(String, String)> = (0..10_000).map(|i| (format!("label_{i}"), format!("value_{i}"))).collect();
    let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    // Arrow: the second row carries 10,000 labels.
    let mut b = MetricsBuilder::new();
    b.push(1_795_374_070_000_000, NODE, "wide", 1.0, &[("a", "b")]);
    b.push(1_795_374_070_000_001, NODE, "wide", 2.0, &pairs);
    let (s, body) = post(&h.c, h.url(), "metrics", TOKEN, "node-a/1/2", encode(&b.finish())).await;
    assert_eq!(s, 400, "{body}");
    let e = error_of(&body);
    assert!(
        e.contains("row 1")
            && e.contains("\"labels\"")
            && e.contains("10000 map entries")
            && e.contains("at most 1000"),
        "{e}"
    );
    // 1,000 is the limit, inclusive.
    let mut b = MetricsBuilder::new();
    b.push(1_795_374_070_000_000, NODE, "wide", 1.0, &pairs[..1000]);
    let (s, body) = post(&h.c, h.url(), "metrics", TOKEN, "node-a/1/3", encode(&b.finish())).await;
    assert_eq!(s, 200, "{body}");

    // OTLP: one data point with 10,000 attributes.
    let attrs: Vec<KeyValue> = labels.iter().map(|(k, v)| kv(k, text_value(v))).collect();
    let (s, body) = h
        .send("/v1/metrics", "", "application/x-protobuf", otlp_metrics("http.server.requests", attrs, now_ns(), None))
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body.contains("metric \\\"http.server.requests\\\"") || body.contains("metric \"http.server.requests\""),
        "{body}"
    );
    assert!(body.contains("10001 map entries"), "{body}");

    // Custom rows: 10,000 fields are refused while parsing.
    let wide: String = format!("{{{}}}", (0..10_000).map(|i| format!("\"f{i}\": {i}")).collect::<Vec<_>>().join(","));
    let (s, body) = h.send("/v1/ingest/json/wide", "node-a/3/1", "application/x-ndjson", wide.into_bytes()).await;
    assert_eq!(s, 400, "{body}");
    assert!(error_of(&body).contains("10000 fields"), "{body}");

    assert_eq!(count(&h.c, h.url(), "select count(*) from metrics where name = 'wide'").await, 1);
    assert_eq!(count(&h.c, h.url(), "select count(*) from metrics where name = 'http.server.requests'").await, 0);
    h.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_names_never_become_paths() {
    let h = Hostile::start("flush_interval = \"300ms\"", "", "");
    h.seed().await;
    let good = encode(&metrics_batch(3, 5));
    for id in ["../../etc/1/1", "a/b/1/1", "..%2F..%2Fetc/1/1", ".hidden/1/1", "/1/1", "node-a/../1", "node-a/1/1/1"] {
        let (s, b) = post(&h.c, h.url(), "metrics", TOKEN, id, good.clone()).await;
        assert_eq!(s, 400, "{id}: {b}");
        assert!(error_of(&b).contains("invalid"), "{id}: {b}");
    }
    // Table names in the path: percent-encoded traversal is decoded, then refused.
    for t in ["..%2F..%2Fetc", "%2e%2e", "..", "metrics%2F..%2F..%2Fx"] {
        let (s, b) = h.send(&format!("/v1/ingest/{t}"), "node-a/1/5", wire::CONTENT_TYPE, good.clone()).await;
        assert!(s == 404 || s == 400, "{t}: {s} {b}");
        let (s, b) =
            h.send(&format!("/v1/ingest/json/{t}"), "node-a/1/5", "application/x-ndjson", b"{\"a\": 1}".to_vec()).await;
        assert!(s == 404 || s == 400, "json {t}: {s} {b}");
    }
    let (s, b) = h.send("/v1/ingest/json/Passwd", "node-a/1/5", "application/x-ndjson", b"{\"a\": 1}".to_vec()).await;
    assert_eq!(s, 400, "{b}");
    assert!(error_of(&b).contains("lower-case identifier"), "{b}");

    // OTLP `host.name` is only taken when it is a valid node name.
    let (s, b) = h
        .send(
            "/v1/metrics",
            "",
            "application/x-protobuf",
            otlp_metrics("traversal", vec![], now_ns(), Some("../../../tmp/evil")),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let rows = sql(&h.c, h.url(), "select host from metrics where name = 'traversal'").await;
    assert_eq!(rows, serde_json::json!([["node-a"]]));
    // A custom row's `host` is never a path: one that is not the sender's node is refused
    // (a node writes only its own rows, see hostile_ingest.rs).
    let (s, b) = h
        .send(
            "/v1/ingest/json/visits",
            "node-a/4/1",
            "application/x-ndjson",
            b"{\"host\": \"../../../tmp/evil\", \"n\": 1}".to_vec(),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error_of(&b).contains("line 1: field \"host\": host \"../../../tmp/evil\" is not \"node-a\""), "{b}");

    // After a flush, every file the lake wrote is under its data directory, in the
    // expected places, and no name anywhere holds "..".
    tokio::time::sleep(Duration::from_secs(2)).await;
    for p in walk(h.dir.path()) {
        let s = p.to_string_lossy();
        assert!(s == "lake.toml" || s.starts_with("data"), "{s} outside the data directory");
        assert!(
            !p.components().any(|c| c.as_os_str() == ".." || c.as_os_str().to_string_lossy().contains("evil")),
            "{s}"
        );
    }
    let tables: Vec<String> = std::fs::read_dir(h.dir.path().join("data/tables"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for t in &tables {
        assert!(
            t.parse::<Table>().is_ok() || ["baseline", "visits"].contains(&t.as_str()),
            "unexpected table directory {t}"
        );
    }
    assert!(!Path::new("/tmp/evil").exists());
    h.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_must_be_utc_and_within_the_window() {
    let h = Hostile::start("flush_interval = \"300ms\"", "", "");
    h.seed().await;
    let now = now_micros();
    let day = 86_400_000_000i64;
    let b = metrics_batch(5, 3);
    let with_ts = |ts: ArrayRef| {
        let mut cols = b.columns().to_vec();
        cols[0] = ts;
        let fields: Vec<_> = b
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if i == 0 {
                    Arc::new(f.as_ref().clone().with_data_type(cols[0].data_type().clone()))
                } else {
                    Arc::clone(f)
                }
            })
            .collect();
        let batch = RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), cols).unwrap();
        wire::encode(&batch.schema(), &[batch]).unwrap()
    };

    // Arrow `ts` in another zone, another unit or without a zone: 400 naming the column.
    let micros = [now, now, now];
    for (ts, what) in [
        (Arc::new(TimestampMicrosecondArray::from(micros.to_vec()).with_timezone("+02:00")) as ArrayRef, "+02:00"),
        (Arc::new(TimestampMicrosecondArray::from(micros.to_vec())) as ArrayRef, "no zone"),
        (
            Arc::new(TimestampNanosecondArray::from(micros.map(|m| m * 1000).to_vec()).with_timezone("UTC"))
                as ArrayRef,
            "ns",
        ),
    ] {
        let (s, body) = post(&h.c, h.url(), "metrics", TOKEN, "node-a/1/2", with_ts(ts)).await;
        assert_eq!(s, 400, "{what}: {body}");
        let e = error_of(&body);
        assert!(
            e.contains("column \"ts\"")
                && (e.contains("Timestamp(µs, \"UTC\")") || e.contains("Timestamp(Microsecond, Some(\"UTC\"))")),
            "{what}: {e}"
        );
    }
    // Far future, far past, the extremes: 400 naming the row.
    for (rows, row, says) in [
        ([now, now, now + 2 * day], 2, "ahead of the lake's clock"),
        ([now, -3_000_000_000_000_000, now], 1, "before 1900-01-01"),
        ([i64::MAX, now, now], 0, "ahead"),
        ([now, now, i64::MIN], 2, "before 1900"),
    ] {
        let ts = Arc::new(TimestampMicrosecondArray::from(rows.to_vec()).with_timezone("UTC")) as ArrayRef;
        let (s, body) = post(&h.c, h.url(), "metrics", TOKEN, "node-a/1/2", with_ts(ts)).await;
        assert_eq!(s, 400, "{body}");
        let e = error_of(&body);
        assert!(e.contains(&format!("row {row} ")) && e.contains("\"ts\"") && e.contains(says), "{e}");
    }
    // An hour ahead (clock skew) and 1950 are fine; 1950 in a batch of its own, as one
    // batch spans at most `ingest.max_days_per_batch` days (hostile_ingest.rs).
    let ok = Arc::new(TimestampMicrosecondArray::from(vec![now + 3_600_000_000, now - 1, now]).with_timezone("UTC"))
        as ArrayRef;
    let (s, body) = post(&h.c, h.url(), "metrics", TOKEN, "node-a/1/2", with_ts(ok)).await;
    assert_eq!(s, 200, "{body}");
    let old = -631_152_000_000_000;
    let ok = Arc::new(TimestampMicrosecondArray::from(vec![old, old + 1, old + 2]).with_timezone("UTC")) as ArrayRef;
    let (s, body) = post(&h.c, h.url(), "metrics", TOKEN, "node-a/1/3", with_ts(ok)).await;
    assert_eq!(s, 200, "{body}");

    // Custom rows: an offset is converted to UTC; no offset, or out of the window, is a 400
    // naming the line.
    let (s, b) = h
        .send(
            "/v1/ingest/json/readings",
            "node-a/3/1",
            "application/x-ndjson",
            b"{\"ts\": \"2026-11-25T10:00:00+02:00\", \"w\": 1}\n".to_vec(),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let rows = sql(&h.c, h.url(), "select epoch_us(ts) from readings").await;
    assert_eq!(rows[0][0].as_i64(), Some(rfc3339("2026-11-25T08:00:00Z")));
    for (body, says) in [
        ("{\"w\": 1}\n{\"ts\": \"2026-11-25 10:00:00\", \"w\": 2}\n", "line 2: field \"ts\" is not a timestamp"),
        (
            "{\"ts\": \"3000-01-01T00:00:00Z\", \"w\": 3}\n",
            "line 1: field \"ts\": 3000-01-01T00:00:00Z is more than a day ahead",
        ),
        ("{\"w\": 1}\n\n{\"ts\": -99999999999, \"w\": 4}\n", "line 3: field \"ts\": "),
    ] {
        let (s, b) =
            h.send("/v1/ingest/json/readings", "node-a/3/2", "application/x-ndjson", body.as_bytes().to_vec()).await;
        assert_eq!(s, 400, "{b}");
        assert!(error_of(&b).contains(says), "{b}");
    }
    // OTLP: a log record a year ahead.
    let (s, b) = h
        .send(
            "/v1/logs",
            "",
            "application/x-protobuf",
            otlp_log(text_value("from the future"), now_ns() + 365 * 86_400 * 1_000_000_000),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("log record 0") && b.contains("ahead"), "{b}");

    // Only the accepted rows are stored, and every partition is a real date.
    assert_eq!(count(&h.c, h.url(), "select count(*) from metrics where labels['batch'] = '5'").await, 6);
    assert_eq!(count(&h.c, h.url(), "select count(*) from readings").await, 1);
    assert_eq!(count(&h.c, h.url(), "select count(*) from logs").await, 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for p in walk(&h.dir.path().join("data/tables")) {
        if let Some(d) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("date=")) {
            let year: i32 = d[..4].parse().unwrap();
            assert!(d.len() == 10 && (1900..=2100).contains(&year), "partition {}", p.display());
        }
    }
    h.assert_intact().await;
}

fn rfc3339(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_microsecond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tables_and_lying_schemas_are_refused_by_name() {
    let mut h = Hostile::start("", "", "");
    h.seed().await;
    let good = encode(&metrics_batch(4, 3));

    // Unknown tables.
    let (s, b) = post(&h.c, h.url(), "nope", TOKEN, "node-a/1/2", good.clone()).await;
    assert_eq!(s, 404, "{b}");
    assert!(error_of(&b).contains("unknown table"), "{b}");
    let (s, b) = h.send("/v1/ingest/json/events", "node-a/1/2", "application/x-ndjson", b"{\"a\": 1}".to_vec()).await;
    assert_eq!(s, 400, "{b}");
    assert!(error_of(&b).contains("taken by a built-in table or view"), "{b}");
    let (s, b) = h.read("/v1/sql", b"{\"sql\": \"select * from nope\"}".to_vec()).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("nope"), "{b}");

    // A logs batch sent as metrics: the first foreign column is named.
    let mut logs = lake_format::rows::TableBuilder::new(Table::Logs);
    let ts = logs.column("ts").unwrap();
    let host = logs.column("host").unwrap();
    let source = logs.column("source").unwrap();
    logs.ts(ts, 1_795_374_070_000_000);
    logs.text(host, Some(NODE));
    logs.text(source, Some("x"));
    logs.end_row();
    let logs = logs.finish().unwrap();
    let (s, b) = post(
        &h.c,
        h.url(),
        "metrics",
        TOKEN,
        "node-a/1/2",
        wire::encode(&logs.schema(), std::slice::from_ref(&logs)).unwrap(),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(error_of(&b).contains("is not in table metrics"), "{b}");

    // A right-named column of the wrong type.
    let m = metrics_batch(4, 3);
    let wrong = RecordBatch::try_from_iter(vec![
        ("ts", m.column(0).clone()),
        ("host", m.column(1).clone()),
        ("name", m.column(2).clone()),
        ("value", Arc::new(StringArray::from(vec!["1", "2", "3"])) as ArrayRef),
    ])
    .unwrap();
    let wrong_body = wire::encode(&wrong.schema(), &[wrong]).unwrap();
    let (s, b) = post(&h.c, h.url(), "metrics", TOKEN, "node-a/1/2", wrong_body.clone()).await;
    assert_eq!(s, 400, "{b}");
    assert!(error_of(&b).contains("column \"value\" of table metrics must be Float64, found Utf8"), "{b}");

    // A stream whose schema message and batch disagree: the schema of one stream, the
    // batch of another (value Float64 announced, Utf8 buffers sent; or five columns
    // announced and four sent).
    let split = |body: &[u8]| {
        let len = i32::from_le_bytes(body[4..8].try_into().unwrap()) as usize;
        (body[..8 + len].to_vec(), body[8 + len..body.len() - 8].to_vec(), body[body.len() - 8..].to_vec())
    };
    let (schema_good, batch_good, eos) = split(&good);
    let (schema_wrong, batch_wrong, _) = split(&wrong_body);
    for (what, spliced, says) in [
        ("metrics schema, a four-column batch", [schema_good.clone(), batch_wrong.clone(), eos.clone()].concat(), "declares 8 arrays for the columns [\"ts\", \"host\", \"name\", \"value\", \"labels\"], but a record batch carries 4"),
        ("four-column schema, a metrics batch", [schema_wrong.clone(), batch_good.clone(), eos.clone()].concat(), "but a record batch carries 8"),
        ("two schemas", [schema_good.clone(), schema_wrong.clone(), batch_good.clone(), eos.clone()].concat(), "Expected a record batch, but found a schema"),
    ] {
        let (s, b) = post(&h.c, h.url(), "metrics", TOKEN, "node-a/1/2", spliced).await;
        assert_eq!(s, 400, "{what}: {b}");
        let e = error_of(&b);
        assert!(e.contains(says), "{what}: {e}");
    }

    // Nulls in a required column.
    let nulls = RecordBatch::try_from_iter(vec![
        ("ts", m.column(0).clone()),
        ("host", Arc::new(StringArray::from(vec![Some(NODE), None, Some(NODE)])) as ArrayRef),
        ("name", m.column(2).clone()),
        ("value", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef),
    ])
    .unwrap();
    let (s, b) =
        post(&h.c, h.url(), "metrics", TOKEN, "node-a/1/2", wire::encode(&nulls.schema(), &[nulls]).unwrap()).await;
    assert_eq!(s, 400, "{b}");
    assert!(error_of(&b).contains("column \"host\" of table metrics must not contain nulls"), "{b}");

    // None of it was stored, and the id is still free.
    let (s, b) = post(&h.c, h.url(), "metrics", TOKEN, "node-a/1/2", good).await;
    assert_eq!((s, b.contains("duplicate")), (200, false), "{b}");
    assert_eq!(count(&h.c, h.url(), "select count(*) from metrics").await, 103);
    h.assert_intact().await;
    // And after a restart (WAL replay or Parquet), still all there.
    h.restart();
    assert_eq!(count(&h.c, h.url(), "select count(*) from metrics").await, 103);
    h.assert_intact().await;
}

/// The acceptance run of issue 18: every hostile request the issue names, one after the
/// other, against one lake — then `select count(*) from metrics` still answers 200 with
/// the baseline, and every alert rule (and `lake alerts`) still evaluates without error.
/// Each request's own refusal is tested in detail in `hostile_sql.rs`, `hostile_schema.rs`,
/// `hostile_ingest.rs`, `hostile_watch.rs` and `hostile_collector.rs`; here only the
/// answer's class is checked, and what matters is what is left standing afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_hostile_request_of_issue_18_queries_and_alerts_still_work() {
    let rules: String = ["node_silent", "filesystem_full", "http_5xx_ratio", "unit_failed", "alert_rule_failing"]
        .iter()
        .map(|r| format!("\n[[rules]]\nname = \"{r}\"\nevery = \"1s\"\n"))
        .collect();
    // `[http]` is the last section Hostile writes, so the rules follow its lines.
    let mut h = Hostile::start(
        "flush_interval = \"300ms\"",
        "",
        &format!("max_connections = 16\nheader_timeout = \"60s\"\n{rules}"),
    );
    h.seed().await;
    let tables = h.dir.path().join("data").join("tables");
    let before_tables = walk(&tables).into_iter().filter(|p| !p.to_string_lossy().ends_with(".parquet")).count();
    let mut answers = Vec::new();

    // §1: reads that would change the engine for everyone after them.
    let inside = tables.join("x");
    for sql in [
        "SELECT * FROM enable_logging(storage='file', storage_path='/nonexistent')".to_string(),
        format!("SELECT * FROM enable_logging(level='trace', storage='file', storage_path='{}')", inside.display()),
        "SELECT * FROM enable_profiling()".into(),
        "SELECT * FROM truncate_duckdb_logs()".into(),
        "SELECT * FROM checkpoint()".into(),
        "SELECT current_setting('threads')".into(),
        "SELECT * FROM query('SELECT * FROM enable_logging()')".into(),
    ] {
        let (s, b) = h.read("/v1/sql", serde_json::to_vec(&serde_json::json!({ "sql": sql })).unwrap()).await;
        answers.push(format!("§1 /v1/sql {sql:.60} → {s}"));
        assert_eq!(s, 403, "{sql}: {b}");
    }
    assert!(!inside.exists(), "a read created {}", inside.display());

    // §2: names differing only in case from a column of a custom table.
    for (line, id) in
        [("{\"Host\": \"x\", \"v\": 4}", "node-a/3/1"), ("{\"level\": \"info\", \"Level\": \"INFO\"}", "node-a/3/2")]
    {
        let (s, b) = h.send("/v1/ingest/json/app", id, "application/x-ndjson", line.as_bytes().to_vec()).await;
        answers.push(format!("§2 json/app {line} → {s}"));
        assert_eq!(s, 200, "{b}");
    }

    // §3: node-a writing rows as another node, and forging alert history.
    let mut forged = MetricsBuilder::new();
    forged.push(now_micros(), "node-b", "seq", 1.0, &[("batch", "forged")]);
    let (s, b) = post(&h.c, h.url(), "metrics", TOKEN, "node-a/4/1", encode(&forged.finish())).await;
    answers.push(format!("§3 metrics with host node-b → {s}"));
    assert_eq!(s, 400, "{b}");
    let mut alert = lake_format::rows::TableBuilder::new(Table::Alerts);
    let [ts, host, rule, state] = ["ts", "host", "rule", "state"].map(|c| alert.column(c).unwrap());
    alert.ts(ts, now_micros());
    alert.text(host, Some(NODE));
    alert.text(rule, Some("forged_rule"));
    alert.text(state, Some("resolved"));
    alert.end_row();
    let alert = alert.finish().unwrap();
    let body = wire::encode(&alert.schema(), &[alert]).unwrap();
    let (s, b) = post(&h.c, h.url(), "alerts", TOKEN, "node-a/4/2", body).await;
    answers.push(format!("§3 ingest into alerts → {s}"));
    assert_eq!(s, 403, "{b}");

    // §4: a wrong token (refused, logged for fail2ban, nothing stored).
    let (s, _) =
        post(&h.c, h.url(), "metrics", "wrong-token-0123456789", "node-a/5/1", encode(&metrics_batch(5, 10))).await;
    answers.push(format!("§4 wrong token → {s}"));
    assert_eq!(s, 401);

    // §5: 3,000 rows a day apart from 1950; silences with a read token; idle connections
    // past the cap.
    let decades: String = (0..3000)
        .map(|d| {
            format!(
                "{{\"ts\": \"{}\", \"v\": {d}}}\n",
                jiff::Timestamp::from_second(-631_152_000 + d * 86_400).unwrap()
            )
        })
        .collect();
    let (s, b) = h.send("/v1/ingest/json/decades", "node-a/6/1", "application/x-ndjson", decades.into_bytes()).await;
    answers.push(format!("§5 3,000 rows from 1950 → {s}"));
    assert_eq!(s, 400, "{b}");
    let silence = serde_json::json!({"rule": "node_silent", "duration": "2h", "comment": "hostile"});
    let r = h.c.post(format!("{}/v1/silences", h.url())).bearer_auth(READ_TOKEN).json(&silence).send().await.unwrap();
    answers.push(format!("§5 silence with a read token → {}", r.status().as_u16()));
    assert_eq!(r.status(), 403);
    let idle: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(&h.addr).unwrap()).collect();
    // The flood closes idle connections, the client's pooled keep-alive among them (a
    // collector reconnects): the ingest and every check after it use new connections.
    h.c = reqwest::Client::new();
    let (s, b) = post(&h.c, h.url(), "metrics", TOKEN, "node-a/7/1", encode(&metrics_batch(7, 10))).await;
    answers.push(format!("§5 ingest beside 64 idle connections (cap 16) → {s}"));
    assert_eq!(s, 200, "{b}");
    drop(idle);
    h.c = reqwest::Client::new();
    for a in &answers {
        println!("{a}");
    }

    // What is left standing: the baseline, no directory a read made, every rule evaluating.
    let after = now_micros();
    h.assert_intact().await;
    assert_eq!(count(&h.c, h.url(), "select count(*) from metrics where host <> 'node-a'").await, 0);
    assert_eq!(count(&h.c, h.url(), "select count(*) from alerts where rule = 'forged_rule'").await, 0);
    let after_tables = walk(&tables).into_iter().filter(|p| !p.to_string_lossy().ends_with(".parquet")).count();
    assert!(after_tables <= before_tables + 4, "only the table's own partitions are new: {:?}", walk(&tables));
    let r =
        h.c.post(format!("{}/v1/sql", h.url()))
            .bearer_auth(READ_TOKEN)
            .json(&serde_json::json!({"sql": "select count(*) from metrics"}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    println!("select count(*) from metrics → {} {}", r.status().as_u16(), r.text().await.unwrap().trim());

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let snap: Value =
            h.c.get(format!("{}/v1/alerts", h.url()))
                .bearer_auth(READ_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let rules = snap["rules"].as_array().unwrap();
        let fresh = |r: &&Value| {
            r["error"].is_null()
                && r["last_eval"]
                    .as_str()
                    .is_some_and(|t| t.parse::<jiff::Timestamp>().unwrap().as_microsecond() > after)
        };
        if rules.iter().filter(|r| r["every"] == "1s").all(|r| fresh(&r)) {
            for r in rules.iter().filter(|r| r["every"] == "1s") {
                println!(
                    "rule {} evaluated at {} (rows {}, error {})",
                    r["name"], r["last_eval"], r["rows"], r["error"]
                );
            }
            assert!(snap["alerts"].as_array().unwrap().iter().all(|a| a["rule"] != "alert_rule_failing"), "{snap}");
            break;
        }
        assert!(Instant::now() < deadline, "rules not evaluating after the hostile run: {snap}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let out = std::process::Command::new(lake_bin())
        .args(["alerts", "--url", h.url(), "--token", READ_TOKEN])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("lake alerts →\n{text}");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("Rules failing to evaluate"), "{text}");
}
