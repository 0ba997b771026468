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
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
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
        {"name": "latency", "histogram": {"aggregationTemporality": 2, "dataPoints": [
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
    let mut expected = vec![
        ("latency_bucket".to_string(), 1.0, labels(&[("le", "0.1")])),
        ("latency_bucket".to_string(), 3.0, labels(&[("le", "1")])),
        ("latency_bucket".to_string(), 6.0, labels(&[("le", "+Inf")])),
        ("latency_count".to_string(), 6.0, labels(&[])),
        ("latency_sum".to_string(), 2.75, labels(&[])),
        ("queue.depth".to_string(), 42.0, labels(&[("queue", "mail")])),
        ("requests".to_string(), 1234.5, labels(&[])),
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
