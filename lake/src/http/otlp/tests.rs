//! Tests of the OTLP endpoints through the router (`oneshot`), over a real WAL in a
//! temporary directory: mapping, encodings, limits, answers and batch ids.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, MapArray, RecordBatch};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event as SpanEvent, Link as SpanLink};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tokio::sync::RwLock;
use tower::ServiceExt;

use super::*;
use crate::auth::{Key, KeySet, Role, Verifier};
use crate::ingest::state::{Batches, State as LakeState};
use crate::ingest::wal::Wal;
use crate::ingest::writer::Buffers;

pub(crate) const NODE: &str = "node-a";
pub(crate) const TOKEN: &str = "otlp-test-token-0123456789";

pub(crate) struct Harness {
    _dir: tempfile::TempDir,
    wal_dir: std::path::PathBuf,
    pub(crate) ingest: Arc<Ingest>,
    app: Router,
}

/// An ingest path over a WAL in a temporary directory, `NODE` relaying for `db-1` and
/// `web-1`, and the OTLP routes on it.
pub(crate) fn harness(max_body: usize) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("wal");
    let (wal, _) = Wal::open(&wal_dir).unwrap();
    let ingest = Arc::new(Ingest {
        wal,
        buffers: Arc::new(Buffers::default()),
        batches: Arc::new(Batches::new(LakeState::default())),
        gate: Arc::new(RwLock::new(())),
        auth: Arc::new(Verifier::new(
            KeySet::new(vec![Key::plain("test", Role::Ingest, Some(NODE.into()), TOKEN)]).unwrap(),
        )),
        max_body,
        max_buffered: 1 << 30,
        custom: Arc::new(crate::custom::Registry::open(dir.path(), Default::default())),
        // The test node relays for the resources these tests name in host.name.
        policy: {
            let mut p = crate::http::policy::IngestPolicy::open();
            p.hosts.insert(NODE.into(), Arc::from(vec!["db-1".to_string(), "web-1".to_string()]));
            p
        },
        budget: crate::http::budget::MemoryBudget::new(256 << 20),
        stats: Default::default(),
        remote_write: Default::default(),
        loki: Default::default(),
        jobs: Default::default(),
    });
    let app = router(Arc::clone(&ingest));
    Harness { _dir: dir, wal_dir, ingest, app }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(
    h: &Harness,
    path: &str,
    content_type: &str,
    encoding: Option<&str>,
    token: &str,
    body: Vec<u8>,
) -> Answer {
    let mut req =
        Request::post(path).header("content-type", content_type).header("authorization", format!("Bearer {token}"));
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = h.app.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let status = resp.status();
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer { status, content_type, body }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

fn resource(host: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", s("checkout")),
            kv("host.name", s(host)),
            kv("process.pid", Value::IntValue(4242)),
        ],
        ..Default::default()
    })
}

/// One table's buffered rows, as one batch.
pub(crate) fn rows(h: &Harness, table: Table) -> RecordBatch {
    let batches = h.ingest.buffers.snapshot(table);
    arrow_select::concat::concat_batches(&table.schema(), &batches).unwrap()
}

pub(crate) fn text(b: &RecordBatch, col: &str, i: usize) -> Option<String> {
    let a = b.column_by_name(col).unwrap().as_string::<i32>();
    a.is_valid(i).then(|| a.value(i).to_string())
}

pub(crate) fn int(b: &RecordBatch, col: &str, i: usize) -> Option<i64> {
    let a = b.column_by_name(col).unwrap().as_primitive::<Int64Type>();
    a.is_valid(i).then(|| a.value(i))
}

pub(crate) fn ts(b: &RecordBatch, i: usize) -> i64 {
    b.column_by_name("ts").unwrap().as_primitive::<TimestampMicrosecondType>().value(i)
}

pub(crate) fn map(b: &RecordBatch, col: &str, i: usize) -> BTreeMap<String, String> {
    let m: &MapArray = b.column_by_name(col).unwrap().as_map();
    let entries = m.value(i);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    (0..entries.len()).map(|j| (keys.value(j).to_string(), values.value(j).to_string())).collect()
}

/// (name, value, labels) of every metrics row, sorted.
pub(crate) fn samples(b: &RecordBatch) -> Vec<(String, f64, BTreeMap<String, String>)> {
    let values = b.column_by_name("value").unwrap().as_primitive::<Float64Type>();
    let mut out: Vec<_> =
        (0..b.num_rows()).map(|i| (text(b, "name", i).unwrap(), values.value(i), map(b, "labels", i))).collect();
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

fn log_request() -> ExportLogsServiceRequest {
    let record = |sev: i32, sev_text: &str, body: Value| LogRecord {
        time_unix_nano: 1_795_374_070_123_456_789,
        severity_number: sev,
        severity_text: sev_text.into(),
        body: Some(AnyValue { value: Some(body) }),
        attributes: vec![kv("order.id", Value::IntValue(17)), kv("lake.node", s("forged"))],
        trace_id: vec![0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c],
        span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74],
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("web-1"),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "shop.payments".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                log_records: vec![
                    record(9, "INFO", s("payment accepted")),
                    record(17, "ERROR", s("card declined")),
                    record(
                        1,
                        "TRACE",
                        Value::KvlistValue(KeyValueList {
                            values: vec![kv("step", s("auth")), kv("ok", Value::BoolValue(true))],
                        }),
                    ),
                    LogRecord {
                        observed_time_unix_nano: 1_000_000_000,
                        severity_text: "warning".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn protobuf_logs_map_severity_service_scope_and_attributes() {
    let h = harness(1 << 20);
    let a = send(&h, "/v1/logs", "application/x-protobuf", None, TOKEN, log_request().encode_to_vec()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.content_type, "application/x-protobuf");
    let resp = ExportLogsServiceResponse::decode(&a.body[..]).unwrap();
    assert_eq!(resp.partial_success, None);

    let b = rows(&h, Table::Logs);
    assert_eq!(b.num_rows(), 4);
    for i in 0..4 {
        assert_eq!(text(&b, "host", i).as_deref(), Some("web-1"), "host.name is preferred");
        assert_eq!(text(&b, "source", i).as_deref(), Some("otlp"));
        assert_eq!(text(&b, "unit", i).as_deref(), Some("checkout"));
        assert_eq!(text(&b, "ident", i).as_deref(), Some("shop.payments"));
        assert_eq!(int(&b, "pid", i), Some(4242));
        assert_eq!(map(&b, "attrs", i)["lake.node"], NODE, "the token's node wins over a forged attribute");
    }
    assert_eq!(ts(&b, 0), 1_795_374_070_123_456);
    assert_eq!(ts(&b, 3), 1_000_000, "observed time when the event time is unset");
    assert_eq!(text(&b, "message", 0).as_deref(), Some("payment accepted"));
    assert_eq!(
        [0, 1, 2, 3].map(|i| int(&b, "priority", i)),
        [Some(6), Some(3), Some(7), Some(4)],
        "INFO→6, ERROR→3, TRACE→7, text 'warning'→4"
    );
    let body: serde_json::Value = serde_json::from_str(&text(&b, "message", 2).unwrap()).unwrap();
    assert_eq!(body, serde_json::json!({"step": "auth", "ok": true}), "a structured body is JSON text");
    assert_eq!(text(&b, "message", 3), None);
    let attrs = map(&b, "attrs", 1);
    assert_eq!(attrs["order.id"], "17");
    assert_eq!(attrs["severity_text"], "ERROR");
    assert_eq!(attrs["severity_number"], "17");
    assert_eq!(attrs["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(attrs["span_id"], "eee19b7ec3c1b174");
    assert_eq!(attrs["resource.service.name"], "checkout");
    assert_eq!(attrs["resource.host.name"], "web-1");
    assert_eq!(attrs["scope.version"], "1.2");
}

#[tokio::test]
async fn an_invalid_host_name_falls_back_to_the_token_node() {
    let h = harness(1 << 20);
    let mut req = log_request();
    req.resource_logs[0].resource = resource("not a/valid host");
    let a = send(&h, "/v1/logs", "application/x-protobuf", None, TOKEN, req.encode_to_vec()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let b = rows(&h, Table::Logs);
    assert_eq!(text(&b, "host", 0).as_deref(), Some(NODE));
    assert_eq!(map(&b, "attrs", 0)["resource.host.name"], "not a/valid host");
}

#[tokio::test]
async fn a_host_the_node_does_not_relay_for_is_refused_naming_the_record() {
    let h = harness(1 << 20);
    let mut req = log_request();
    req.resource_logs[0].resource = resource("mail-1");
    let a = send(&h, "/v1/logs", "application/x-protobuf", None, TOKEN, req.encode_to_vec()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    let status = RpcStatus::decode(&a.body[..]).unwrap();
    assert!(
        status.message.starts_with("log record 0 (counting from 0; attrs: its attributes and the resource's): host (the resource's host.name): host \"mail-1\" is neither"),
        "{}",
        status.message
    );
    assert!(rows(&h, Table::Logs).num_rows() == 0, "nothing stored");
}

/// The OTLP/JSON shape: lowerCamelCase keys, hex ids, int64 as strings, enums as ints.
const JSON_LOGS: &str = r#"{
  "resourceLogs": [{
    "resource": {"attributes": [
      {"key": "service.name", "value": {"stringValue": "api"}},
      {"key": "deployment.environment", "value": {"stringValue": "prod"}}
    ]},
    "scopeLogs": [{
      "scope": {"name": "api.http"},
      "logRecords": [{
        "timeUnixNano": "1795374070000000000",
        "observedTimeUnixNano": "1795374071000000000",
        "severityNumber": 13,
        "severityText": "WARN",
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "EEE19B7EC3C1B174",
        "body": {"stringValue": "slow request"},
        "attributes": [
          {"key": "http.status", "value": {"intValue": "503"}},
          {"key": "ratio", "value": {"doubleValue": 0.25}},
          {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": 2}]}}}
        ],
        "someFutureField": {"ignored": true}
      }]
    }]
  }]
}"#;

#[tokio::test]
async fn json_logs_in_the_otlp_json_mapping() {
    let h = harness(1 << 20);
    let a = send(&h, "/v1/logs", "application/json", None, TOKEN, JSON_LOGS.as_bytes().to_vec()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.content_type, "application/json");
    assert_eq!(a.text(), "{}");
    let b = rows(&h, Table::Logs);
    assert_eq!(b.num_rows(), 1);
    assert_eq!(ts(&b, 0), 1_795_374_070_000_000);
    assert_eq!(text(&b, "host", 0).as_deref(), Some(NODE), "no host.name: the token's node");
    assert_eq!(text(&b, "unit", 0).as_deref(), Some("api"));
    assert_eq!(text(&b, "ident", 0).as_deref(), Some("api.http"));
    assert_eq!(int(&b, "priority", 0), Some(4));
    assert_eq!(text(&b, "message", 0).as_deref(), Some("slow request"));
    let attrs = map(&b, "attrs", 0);
    assert_eq!(attrs["http.status"], "503");
    assert_eq!(attrs["ratio"], "0.25");
    assert_eq!(attrs["tags"], r#"["a",2]"#);
    assert_eq!(attrs["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(attrs["span_id"], "eee19b7ec3c1b174");
    assert_eq!(attrs["resource.deployment.environment"], "prod");
    assert_eq!(attrs["lake.node"], NODE);
}

const JSON_METRICS: &str = r#"{
  "resourceMetrics": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
    "scopeMetrics": [{
      "scope": {"name": "api.metrics"},
      "metrics": [
        {"name": "queue.depth", "unit": "1", "gauge": {"dataPoints": [
          {"timeUnixNano": "1795374070000000000", "asInt": "42", "attributes": [{"key": "queue", "value": {"stringValue": "mail"}}]},
          {"timeUnixNano": "1795374070000000000", "attributes": [{"key": "queue", "value": {"stringValue": "empty"}}]}
        ]}},
        {"name": "requests", "sum": {"aggregationTemporality": 2, "isMonotonic": true, "dataPoints": [
          {"startTimeUnixNano": "1795374000000000000", "timeUnixNano": "1795374070000000000", "asDouble": 1234.5}
        ]}},
        {"name": "latency", "unit": "s", "histogram": {"aggregationTemporality": 2, "dataPoints": [
          {"timeUnixNano": "1795374070000000000", "count": "6", "sum": 2.75,
           "bucketCounts": ["1", "2", "3"], "explicitBounds": [0.1, 1]}
        ]}},
        {"name": "rpc", "summary": {"dataPoints": [
          {"timeUnixNano": "1795374070000000000", "count": "10", "sum": 5,
           "quantileValues": [{"quantile": 0.5, "value": 0.4}, {"quantile": 0.99, "value": 1.5}]}
        ]}}
      ]
    }]
  }]
}"#;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    l.insert("service.name".into(), "api".into());
    l.insert("lake.node".into(), NODE.into());
    l
}

#[tokio::test]
async fn json_metrics_gauges_sums_histograms_summaries_and_a_skipped_point() {
    let h = harness(1 << 20);
    let a =
        send(&h, "/v1/metrics", "application/json; charset=utf-8", None, TOKEN, JSON_METRICS.as_bytes().to_vec()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedDataPoints"], "1", "{v}");
    assert!(v["partialSuccess"]["errorMessage"].as_str().unwrap().contains("queue.depth"), "{v}");

    let b = rows(&h, Table::Metrics);
    let cumulative = ("otel_temporality", "cumulative");
    let latency = |le: &'static str| labels(&[("le", le), cumulative, ("otel_unit", "s")]);
    let mut expected = vec![
        ("latency_bucket".to_string(), 1.0, latency("0.1")),
        ("latency_bucket".to_string(), 3.0, latency("1")),
        ("latency_bucket".to_string(), 6.0, latency("+Inf")),
        ("latency_count".to_string(), 6.0, labels(&[cumulative, ("otel_unit", "s")])),
        ("latency_sum".to_string(), 2.75, labels(&[cumulative, ("otel_unit", "s")])),
        ("queue.depth".to_string(), 42.0, labels(&[("queue", "mail"), ("otel_unit", "1")])),
        ("requests".to_string(), 1234.5, labels(&[cumulative])),
        ("rpc".to_string(), 0.4, labels(&[("quantile", "0.5")])),
        ("rpc".to_string(), 1.5, labels(&[("quantile", "0.99")])),
        ("rpc_count".to_string(), 10.0, labels(&[])),
        ("rpc_sum".to_string(), 5.0, labels(&[])),
    ];
    expected.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(samples(&b), expected);
    assert!((0..b.num_rows()).all(|i| ts(&b, i) == 1_795_374_070_000_000));
    assert!((0..b.num_rows()).all(|i| text(&b, "host", i).as_deref() == Some(NODE)));
    assert_eq!(h.ingest.stats.rows.load(Ordering::Relaxed), 11);
}

fn metrics_request() -> ExportMetricsServiceRequest {
    let point = |v: number_data_point::Value| NumberDataPoint {
        time_unix_nano: 1_795_374_070_000_000_000,
        value: Some(v),
        attributes: vec![kv("cpu", s("0"))],
        ..Default::default()
    };
    let metric = |name: &str, data: Data| Metric { name: name.into(), data: Some(data), ..Default::default() };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("db-1"),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric(
                        "temp",
                        Data::Gauge(Gauge { data_points: vec![point(number_data_point::Value::AsDouble(21.5))] }),
                    ),
                    metric(
                        "jobs",
                        Data::Sum(Sum {
                            data_points: vec![point(number_data_point::Value::AsInt(7))],
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        }),
                    ),
                    metric(
                        "bad",
                        Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                count: 3,
                                bucket_counts: vec![1, 2],
                                explicit_bounds: vec![1.0, 2.0, 3.0],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        }),
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn gzip_protobuf_metrics_with_a_malformed_histogram() {
    let h = harness(1 << 20);
    let body = gzip(&metrics_request().encode_to_vec());
    let a = send(&h, "/v1/metrics", "application/x-protobuf", Some("gzip"), TOKEN, body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let resp = ExportMetricsServiceResponse::decode(&a.body[..]).unwrap();
    let partial = resp.partial_success.expect("the histogram was skipped");
    assert_eq!(partial.rejected_data_points, 1);
    assert!(partial.error_message.contains("bucket counts"), "{}", partial.error_message);
    let b = rows(&h, Table::Metrics);
    let got: Vec<(String, f64)> = samples(&b).into_iter().map(|(n, v, _)| (n, v)).collect();
    assert_eq!(got, vec![("jobs".to_string(), 7.0), ("temp".to_string(), 21.5)]);
    assert_eq!(text(&b, "host", 0).as_deref(), Some("db-1"));
    assert_eq!(map(&b, "labels", 0)["cpu"], "0");
    assert_eq!(map(&b, "labels", 0)["service.name"], "checkout");
    assert_eq!(h.ingest.stats.batches.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_gzip_bomb_is_cut_off_at_the_body_limit() {
    // 64 MiB of zeros gzip to about 64 KiB: far under the limits, far over them inflated.
    let bomb = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            e.write_all(&zeros).unwrap();
        }
        e.finish().unwrap()
    };
    assert!(bomb.len() < 1 << 20);
    // Limited by ingest.max_body, and by MAX_DECODED when max_body is larger.
    for max_body in [1 << 20, 256 << 20] {
        let h = harness(max_body);
        let limit = max_body.min(MAX_DECODED);
        let a = send(&h, "/v1/logs", "application/x-protobuf", Some("gzip"), TOKEN, bomb.clone()).await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text());
        let status = RpcStatus::decode(&a.body[..]).unwrap();
        assert!(status.message.contains(&format!("inflates past the {limit} byte")), "{status:?}");
        // An uncompressed body over the limit.
        let a = send(&h, "/v1/logs", "application/x-protobuf", None, TOKEN, vec![0; limit + 1]).await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(h.ingest.buffers.usage().0, 0);
    }
}

#[tokio::test]
async fn bad_bodies_tokens_and_types_are_refused_clearly() {
    let h = harness(1 << 20);
    let good = log_request().encode_to_vec();

    let a = send(&h, "/v1/logs", "application/x-protobuf", None, "wrong-token-000000000000", good.clone()).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let status = RpcStatus::decode(&a.body[..]).unwrap();
    assert_eq!(status.code, 16);
    assert!(status.message.contains("token"), "{status:?}");

    let a = send(&h, "/v1/logs", "application/x-protobuf", None, TOKEN, vec![0xff, 0xff, 0xff, 0x01]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let status = RpcStatus::decode(&a.body[..]).unwrap();
    assert!(status.message.contains("ExportLogsServiceRequest (protobuf)"), "{status:?}");

    let a = send(&h, "/v1/metrics", "application/json", None, TOKEN, b"{\"resourceMetrics\": 5}".to_vec()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["code"], 3);
    assert!(v["message"].as_str().unwrap().contains("ExportMetricsServiceRequest (OTLP/JSON)"), "{v}");

    let a = send(&h, "/v1/logs", "application/x-protobuf", Some("gzip"), TOKEN, good.clone()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(RpcStatus::decode(&a.body[..]).unwrap().message.contains("gzip"));

    let a = send(&h, "/v1/logs", "text/plain", None, TOKEN, good.clone()).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(a.text().contains("application/x-protobuf"), "{}", a.text());

    let a = send(&h, "/v1/logs", "application/x-protobuf", Some("br"), TOKEN, good.clone()).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert_eq!(h.ingest.buffers.usage().0, 0, "nothing stored");
    assert_eq!(h.ingest.stats.unauthorized.load(Ordering::Relaxed), 1);
    assert_eq!(h.ingest.stats.rejected.load(Ordering::Relaxed), 5);

    // An empty request is a valid one with nothing in it.
    let a = send(&h, "/v1/logs", "application/x-protobuf", None, TOKEN, Vec::new()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(h.ingest.stats.batches.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn requests_get_fresh_ids_in_one_epoch_and_replay_from_the_wal() {
    let h = harness(1 << 20);
    for _ in 0..3 {
        let a = send(&h, "/v1/logs", "application/json", None, TOKEN, JSON_LOGS.as_bytes().to_vec()).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    }
    // The same body three times: OTLP is at-least-once, each request is stored.
    assert_eq!(rows(&h, Table::Logs).num_rows(), 3);
    let marks = h.ingest.batches.marks();
    let epochs = &marks[ID_NODE];
    assert_eq!(epochs.len(), 1);
    let (&epoch, &seq) = epochs.iter().next().unwrap();
    assert_eq!(seq, 3);
    assert!(!marks.contains_key(NODE), "the token node's epochs are left to its collector");

    // What replay would find: three records with the lake's ids, decodable as logs.
    let (_, found) = Wal::open(&h.wal_dir).unwrap();
    assert_eq!(found.records.len(), 3);
    for (i, rec) in found.records.iter().enumerate() {
        assert_eq!(rec.batch_id, format!("{ID_NODE}/{epoch}/{}", i + 1));
        let table: Table = rec.table.parse().unwrap();
        assert_eq!(table, Table::Logs);
        assert_eq!(ingest::decode(table, &rec.body).unwrap()[0].num_rows(), 1);
    }

    // A restarted lake picks an epoch above every one it remembers, even with a clock
    // that went backwards.
    let far = BatchId { node: ID_NODE.into(), epoch: u64::MAX / 2, seq: 9 };
    assert_eq!(h.ingest.batches.admit(&far), Admission::New);
    h.ingest.batches.logged(&far);
    let next = Otlp::new(Arc::clone(&h.ingest), Arc::default());
    assert_eq!(next.epoch(), u64::MAX / 2 + 1);
}

#[tokio::test]
async fn metrics_keep_every_resource_attribute_without_clobbering_the_points() {
    let h = harness(1 << 20);
    let mut req = metrics_request();
    let res = req.resource_metrics[0].resource.as_mut().unwrap();
    res.attributes.push(kv("cpu", s("resource-cpu")));
    res.attributes.push(kv("k8s.pod.name", s("db-0")));
    let a = send(&h, "/v1/metrics", "application/x-protobuf", None, TOKEN, req.encode_to_vec()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let b = rows(&h, Table::Metrics);
    let got: Vec<_> = samples(&b).into_iter().map(|(n, _, l)| (n, l)).collect();
    let expected = |extra: &[(&str, &str)]| {
        let mut l: BTreeMap<String, String> = [
            ("cpu", "0"),
            ("resource.cpu", "resource-cpu"),
            ("service.name", "checkout"),
            ("host.name", "db-1"),
            ("process.pid", "4242"),
            ("k8s.pod.name", "db-0"),
            ("lake.node", NODE),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        l
    };
    assert_eq!(
        got,
        vec![
            ("jobs".to_string(), expected(&[("otel_temporality", "cumulative")])),
            ("temp".to_string(), expected(&[])),
        ]
    );
}

fn exp_point(
    scale: i32,
    zero_count: u64,
    positive: (i32, Vec<u64>),
    negative: (i32, Vec<u64>),
) -> ExponentialHistogramDataPoint {
    let buckets = |(offset, bucket_counts): (i32, Vec<u64>)| Some(Buckets { offset, bucket_counts });
    let count = zero_count + positive.1.iter().sum::<u64>() + negative.1.iter().sum::<u64>();
    ExponentialHistogramDataPoint {
        time_unix_nano: 1_795_374_070_000_000_000,
        count,
        sum: Some(12.5),
        scale,
        zero_count,
        positive: buckets(positive),
        negative: buckets(negative),
        ..Default::default()
    }
}

#[test]
fn exponential_buckets_are_cumulative_from_the_most_negative() {
    // Scale 1: base √2. Positive buckets 2 and 3 hold (2, 2.83] and (2.83, 4]; negative
    // bucket 0 holds [-1.41, -1).
    let p = exp_point(1, 2, (2, vec![3, 4]), (0, vec![1]));
    let got = map::exponential_buckets(&p).unwrap();
    let r2 = std::f64::consts::SQRT_2;
    assert_eq!(got, vec![(-1.0, 1), (0.0, 3), (2.0 * r2, 6), (4.0, 10), (f64::INFINITY, 10)]);
    // Scale -1: base 4; bucket -1 holds (0.25, 1].
    let p = exp_point(-1, 0, (-1, vec![5]), (0, vec![]));
    assert_eq!(map::exponential_buckets(&p).unwrap(), vec![(0.0, 0), (1.0, 5), (f64::INFINITY, 5)]);

    let err = |p| map::exponential_buckets(&p).unwrap_err();
    assert_eq!(err(exp_point(21, 0, (0, vec![1]), (0, vec![]))), "scale 21 is outside -10..=20");
    assert_eq!(err(exp_point(0, 0, (0, vec![1; 1001]), (0, vec![]))), "1001 positive buckets (at most 1000)");
    assert_eq!(
        err(exp_point(0, 0, (2000, vec![1]), (0, vec![]))),
        "bucket 2001 at scale 0 lies beyond the range of a double"
    );
}

#[tokio::test]
async fn exponential_histograms_become_cumulative_buckets_with_unit_and_temporality() {
    let h = harness(1 << 20);
    let metric = |name: &str, points| Metric {
        name: name.into(),
        unit: "ms".into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: points,
            aggregation_temporality: 1,
        })),
        ..Default::default()
    };
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric("llm.latency", vec![exp_point(0, 1, (1, vec![2, 0, 3]), (0, vec![]))]),
                    metric("broken", vec![exp_point(30, 0, (0, vec![1]), (0, vec![]))]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let a = send(&h, "/v1/metrics", "application/x-protobuf", None, TOKEN, req.encode_to_vec()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let partial = ExportMetricsServiceResponse::decode(&a.body[..]).unwrap().partial_success.unwrap();
    assert_eq!(partial.rejected_data_points, 1);
    assert_eq!(partial.error_message, "exponential histogram \"broken\": scale 30 is outside -10..=20");
    let meta = |le: Option<&str>| {
        let mut l: BTreeMap<String, String> = [("otel_unit", "ms"), ("otel_temporality", "delta"), ("lake.node", NODE)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(le) = le {
            l.insert("le".into(), le.into());
        }
        l
    };
    // Scale 0: base 2, positive bucket 1 is (2, 4], 2 is (4, 8], 3 is (8, 16].
    let mut expected = vec![
        ("llm.latency_bucket".to_string(), 1.0, meta(Some("0"))),
        ("llm.latency_bucket".to_string(), 3.0, meta(Some("4"))),
        ("llm.latency_bucket".to_string(), 3.0, meta(Some("8"))),
        ("llm.latency_bucket".to_string(), 6.0, meta(Some("16"))),
        ("llm.latency_bucket".to_string(), 6.0, meta(Some("+Inf"))),
        ("llm.latency_count".to_string(), 6.0, meta(None)),
        ("llm.latency_sum".to_string(), 12.5, meta(None)),
    ];
    expected.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(samples(&rows(&h, Table::Metrics)), expected);
}

fn span(name: &str, span_id: u8, parent: Option<u8>) -> Span {
    Span {
        trace_id: vec![0xab; 16],
        span_id: vec![span_id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: 1_795_374_070_123_456_789,
        end_time_unix_nano: 1_795_374_070_125_456_790,
        ..Default::default()
    }
}

fn trace_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("web-1"),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "agent".into(), version: "0.3".into(), ..Default::default() }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn protobuf_spans_map_ids_kind_status_events_links_and_the_resource() {
    let h = harness(1 << 20);
    let root = Span {
        attributes: vec![kv("gen_ai.request.model", s("gpt-4o")), kv("tokens", Value::IntValue(812))],
        status: Some(Status { code: 2, message: "rate limited".into() }),
        trace_state: "vendor=1".into(),
        dropped_events_count: 3,
        events: vec![SpanEvent {
            time_unix_nano: 1_795_374_070_124_000_000,
            name: "retry".into(),
            attributes: vec![kv("attempt", Value::IntValue(2))],
            ..Default::default()
        }],
        links: vec![SpanLink {
            trace_id: vec![0xcd; 16],
            span_id: vec![0x02; 8],
            attributes: vec![kv("why", s("batch"))],
            ..Default::default()
        }],
        ..span("chat gpt-4o", 0x01, None)
    };
    let child = Span {
        kind: 0,
        end_time_unix_nano: 0,
        attributes: vec![kv("lake.node", s("forged"))],
        ..span("tool call", 0x03, Some(0x01))
    };
    let a = send(
        &h,
        "/v1/traces",
        "application/x-protobuf",
        Some("gzip"),
        TOKEN,
        gzip(&trace_request(vec![root, child]).encode_to_vec()),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.content_type, "application/x-protobuf");
    assert_eq!(ExportTraceServiceResponse::decode(&a.body[..]).unwrap().partial_success, None);

    let b = rows(&h, Table::Spans);
    assert_eq!(b.num_rows(), 2);
    let trace = "ab".repeat(16);
    for i in 0..2 {
        assert_eq!(ts(&b, i), 1_795_374_070_123_456);
        assert_eq!(text(&b, "host", i).as_deref(), Some("web-1"));
        assert_eq!(text(&b, "trace_id", i), Some(trace.clone()));
        assert_eq!(text(&b, "service", i).as_deref(), Some("checkout"));
        assert_eq!(text(&b, "scope_name", i).as_deref(), Some("agent"));
        assert_eq!(text(&b, "scope_version", i).as_deref(), Some("0.3"));
        assert_eq!(map(&b, "attrs", i)["lake.node"], NODE, "the token's node wins over a forged attribute");
        let res = map(&b, "resource_attrs", i);
        assert_eq!(
            res,
            [("service.name", "checkout"), ("host.name", "web-1"), ("process.pid", "4242")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        );
    }
    // The root: a server span that failed, 2 ms long.
    assert_eq!(text(&b, "span_id", 0).as_deref(), Some("0101010101010101"));
    assert_eq!(text(&b, "parent_span_id", 0), None);
    assert_eq!(text(&b, "name", 0).as_deref(), Some("chat gpt-4o"));
    assert_eq!(text(&b, "kind", 0).as_deref(), Some("server"));
    assert_eq!(int(&b, "duration_ns", 0), Some(2_000_001));
    assert_eq!(text(&b, "status_code", 0).as_deref(), Some("error"));
    assert_eq!(text(&b, "status_message", 0).as_deref(), Some("rate limited"));
    let attrs: Vec<(String, String)> = map(&b, "attrs", 0).into_iter().collect();
    let want: Vec<(String, String)> = [
        ("gen_ai.request.model", "gpt-4o"),
        ("lake.node", NODE),
        ("otel.dropped_events_count", "3"),
        ("otel.trace_state", "vendor=1"),
        ("tokens", "812"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(attrs, want);
    assert_eq!(
        list(&b, "events", 0),
        vec![r#"{"attrs":{"attempt":2},"name":"retry","time":"2026-11-22T19:01:10.124000Z"}"#]
    );
    assert_eq!(
        list(&b, "links", 0),
        vec![format!(
            r#"{{"attrs":{{"why":"batch"}},"span_id":"0202020202020202","trace_id":"{}","trace_state":""}}"#,
            "cd".repeat(16)
        )]
    );
    // The child: no kind, no end (no duration), status unset, no events.
    assert_eq!(text(&b, "parent_span_id", 1).as_deref(), Some("0101010101010101"));
    assert_eq!(text(&b, "kind", 1), None);
    assert_eq!(int(&b, "duration_ns", 1), None);
    assert_eq!(text(&b, "status_code", 1).as_deref(), Some("unset"));
    assert_eq!(text(&b, "status_message", 1), None);
    assert!(list(&b, "events", 1).is_empty());
    assert_eq!(h.ingest.stats.rows.load(Ordering::Relaxed), 2);
}

fn list(b: &RecordBatch, col: &str, i: usize) -> Vec<String> {
    let l = b.column_by_name(col).unwrap().as_list::<i32>().value(i);
    let v = l.as_string::<i32>();
    (0..v.len()).map(|j| v.value(j).to_string()).collect()
}

#[tokio::test]
async fn spans_with_bad_ids_are_skipped_and_reported() {
    let h = harness(1 << 20);
    let short = Span { trace_id: vec![0xab; 15], ..span("short trace id", 0x01, None) };
    let zero = Span { span_id: vec![0; 8], ..span("zero span id", 0x01, None) };
    let parent = Span { parent_span_id: vec![1; 4], ..span("short parent", 0x01, None) };
    let link = Span {
        links: vec![SpanLink { trace_id: vec![1; 16], span_id: vec![], ..Default::default() }],
        ..span("bad link", 0x01, None)
    };
    // A kind newer than this lake: kept as its number.
    let good = Span { kind: 9, ..span("good", 0x05, None) };
    let req = trace_request(vec![short, zero, parent, link, good]);
    let a = send(&h, "/v1/traces", "application/x-protobuf", None, TOKEN, req.encode_to_vec()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let partial = ExportTraceServiceResponse::decode(&a.body[..]).unwrap().partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 4);
    assert_eq!(partial.error_message, "span \"short trace id\": trace_id has 15 bytes, expected 16");
    let b = rows(&h, Table::Spans);
    assert_eq!(b.num_rows(), 1);
    assert_eq!(text(&b, "name", 0).as_deref(), Some("good"));
    assert_eq!(text(&b, "kind", 0).as_deref(), Some("9"));

    // OTLP/JSON: ids are hex; one of the wrong length is skipped the same way and the
    // answer is JSON; one that is not hex at all makes the body undecodable (400).
    let json = |trace_id: &str| {
        format!(
            r#"{{"resourceSpans": [{{"scopeSpans": [{{"spans": [
                {{"traceId": "{trace_id}", "spanId": "0102030405060708", "name": "a", "kind": 3,
                  "status": {{"code": 2, "message": "upstream timed out"}},
                  "startTimeUnixNano": "1795374070000000000", "endTimeUnixNano": "1795374071000000000"}}
            ]}}]}}]}}"#
        )
    };
    let a = send(&h, "/v1/traces", "application/json", None, TOKEN, json("abcd").into_bytes()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"partialSuccess": {"rejectedSpans": "1", "errorMessage": "span \"a\": trace_id has 2 bytes, expected 16"}})
    );
    let a = send(&h, "/v1/traces", "application/json", None, TOKEN, json("zz".repeat(16).as_str()).into_bytes()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["code"], 3);
    assert!(
        v["message"].as_str().unwrap().starts_with("body is not a valid ExportTraceServiceRequest (OTLP/JSON): "),
        "{v}"
    );
    let a = send(&h, "/v1/traces", "application/json", None, TOKEN, json(&"0a".repeat(16)).into_bytes()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.text(), "{}");
    let b = rows(&h, Table::Spans);
    assert_eq!(b.num_rows(), 2);
    assert_eq!(text(&b, "trace_id", 1), Some("0a".repeat(16)));
    assert_eq!(text(&b, "kind", 1).as_deref(), Some("client"));
    assert_eq!(text(&b, "status_code", 1).as_deref(), Some("error"));
    assert_eq!(text(&b, "status_message", 1).as_deref(), Some("upstream timed out"));
    assert_eq!(int(&b, "duration_ns", 1), Some(1_000_000_000));
    assert_eq!(h.ingest.stats.rejected.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn hostile_spans_are_refused_whole_naming_the_span() {
    let h = harness(1 << 20);
    let refused = |a: &Answer| RpcStatus::decode(&a.body[..]).unwrap().message;
    // Too many attributes for a row's map.
    let many = Span {
        attributes: (0..1001).map(|i| kv(&format!("k{i}"), Value::IntValue(i))).collect(),
        ..span("many", 0x07, None)
    };
    let a = send(
        &h,
        "/v1/traces",
        "application/x-protobuf",
        None,
        TOKEN,
        trace_request(vec![span("ok", 1, None), many]).encode_to_vec(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused(&a),
        "span \"many\" (span_id 0707070707070707): attrs: 1002 map entries in one row; at most 1000 are accepted"
    );
    // An event with too many attributes: that span is skipped.
    let event = Span {
        events: vec![SpanEvent {
            attributes: (0..1001).map(|i| kv(&format!("k{i}"), Value::IntValue(i))).collect(),
            ..Default::default()
        }],
        ..span("loud event", 0x08, None)
    };
    let a =
        send(&h, "/v1/traces", "application/x-protobuf", None, TOKEN, trace_request(vec![event]).encode_to_vec()).await;
    assert_eq!(a.status, StatusCode::OK);
    let partial = ExportTraceServiceResponse::decode(&a.body[..]).unwrap().partial_success.unwrap();
    assert_eq!(partial.error_message, "span \"loud event\": event 0 has 1001 attributes (at most 1000)");
    // A start time in 2554 (the nanoseconds of a u64 reach no further back than 1970).
    let mut req = trace_request(vec![span("future", 0x0a, None)]);
    req.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano = u64::MAX;
    let a = send(&h, "/v1/traces", "application/x-protobuf", None, TOKEN, req.encode_to_vec()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        refused(&a).starts_with(
            "span \"future\" (span_id 0a0a0a0a0a0a0a0a): ts: 2554-07-21T23:34:33.709551Z is more than a day ahead"
        ),
        "{}",
        refused(&a)
    );
    // A host the token's node does not relay for.
    let mut req = trace_request(vec![span("other host", 0x09, None)]);
    req.resource_spans[0].resource = resource("mail-1");
    let a = send(&h, "/v1/traces", "application/json", None, TOKEN, serde_json::to_vec(&req).unwrap()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert!(
        v["message"].as_str().unwrap().starts_with("span \"other host\" (span_id 0909090909090909): host (the resource's host.name): host \"mail-1\" is neither"),
        "{v}"
    );
    assert_eq!(rows(&h, Table::Spans).num_rows(), 0, "nothing stored");
    assert_eq!(h.ingest.stats.rejected.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn exponential_histogram_buckets_are_bounded_per_request() {
    // 300 points of 1,000 buckets: 1 byte a bucket on the wire, a row each in memory.
    let h = harness(16 << 20);
    let points: Vec<_> = (0..300).map(|_| exp_point(0, 0, (0, vec![1; 1000]), (0, vec![]))).collect();
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "wide".into(),
                    data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: points,
                        aggregation_temporality: 2,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = req.encode_to_vec();
    assert!(body.len() < 400_000, "{} bytes", body.len());
    let a = send(&h, "/v1/metrics", "application/x-protobuf", None, TOKEN, body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let partial = ExportMetricsServiceResponse::decode(&a.body[..]).unwrap().partial_success.unwrap();
    // 1,002 bucket rows a point (zero bucket and +Inf included): 249 fit.
    assert_eq!(partial.rejected_data_points, 51);
    assert_eq!(
        partial.error_message,
        "exponential histogram \"wide\": the request's exponential histograms hold more than 250000 buckets; export fewer points per request"
    );
    let b = rows(&h, Table::Metrics);
    assert_eq!(b.num_rows(), 249 * (1002 + 2));
}
