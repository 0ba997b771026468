//! The inputs that once crashed a fuzz target (`fixtures/fuzz-regressions/<target>/`),
//! replayed through the same entry points the targets use ([`lake::fuzzing`]), so plain
//! `cargo test` checks them on stable. Also writes the generated seeds of the fuzz
//! corpora (`fuzz/seed` runs the ignored `write_fuzz_seeds`).

use std::path::PathBuf;

use lake_format::catalog::ColumnType;
use lake_format::rows::TableBuilder;
use lake_format::{wire, Table};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

#[test]
fn fuzz_regressions_stay_fixed() {
    let n = lake_format::fuzz_regressions::replay(lake::fuzzing::TARGETS);
    eprintln!("{n} regression inputs replayed");
}

#[test]
fn the_generated_seeds_pass_their_targets() {
    for (name, seeds) in seeds() {
        let run = lake::fuzzing::TARGETS.iter().find(|(t, _)| *t == name).expect("a target").1;
        for (_, data) in seeds {
            run(&data);
        }
    }
}

const NOW_MICROS: i64 = 1_710_000_000_000_000;

/// Two rows of `table` with every column set (one of them with the nullable ones null).
fn wire_body(table: Table) -> Vec<u8> {
    let mut b = TableBuilder::new(table);
    for row in 0..2 {
        for (i, c) in table.columns().enumerate() {
            let null = row == 1 && c.nullable;
            match c.ty {
                ColumnType::Timestamp => b.ts(i, NOW_MICROS + row),
                ColumnType::Text => b.text(i, (!null).then_some("web-1")),
                ColumnType::Int => b.int(i, (!null).then_some(200)),
                ColumnType::Float => b.float(i, (!null).then_some(1.5)),
                ColumnType::Bool => b.bool(i, (!null).then_some(true)),
                ColumnType::TextMap => b.map(i, if null { vec![] } else { vec![("k", "v"), ("a", "b")] }),
                ColumnType::TextList => b.list(i, if null { vec![] } else { vec!["x", "y"] }),
            }
        }
        b.end_row();
    }
    let batch = b.finish().expect("rows of the catalog build");
    wire::encode(&batch.schema(), &[batch]).expect("encodes")
}

fn kv(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource { attributes: vec![kv("service.name", "api"), kv("host.name", "web-1")], ..Default::default() })
}

fn logs_request() -> ExportLogsServiceRequest {
    let record = |sev: i32, body: &str| LogRecord {
        time_unix_nano: 1_710_000_000_000_000_000,
        severity_number: sev,
        severity_text: "WARN".into(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(body.into())) }),
        attributes: vec![
            kv("http.route", "/x"),
            KeyValue {
                key: "n".into(),
                value: Some(AnyValue { value: Some(any_value::Value::IntValue(3)) }),
                ..Default::default()
            },
        ],
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: vec![record(13, "slow request"), record(0, "")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metrics_request() -> ExportMetricsServiceRequest {
    let point = |v: f64| NumberDataPoint {
        time_unix_nano: 1_710_000_000_000_000_000,
        attributes: vec![kv("route", "/x")],
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let metric = |name: &str, data: Data| Metric { name: name.into(), data: Some(data), ..Default::default() };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric("queue.depth", Data::Gauge(Gauge { data_points: vec![point(4.0)] })),
                    metric(
                        "requests",
                        Data::Sum(Sum {
                            data_points: vec![point(10.0)],
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        }),
                    ),
                    metric(
                        "latency",
                        Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                time_unix_nano: 1_710_000_000_000_000_000,
                                count: 3,
                                sum: Some(0.6),
                                bucket_counts: vec![1, 2, 0],
                                explicit_bounds: vec![0.1, 0.5],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        }),
                    ),
                    metric(
                        "llm.latency",
                        Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint {
                                time_unix_nano: 1_710_000_000_000_000_000,
                                count: 6,
                                sum: Some(40.0),
                                scale: 3,
                                zero_count: 1,
                                positive: Some(Buckets { offset: 20, bucket_counts: vec![2, 0, 3] }),
                                negative: Some(Buckets { offset: -2, bucket_counts: vec![] }),
                                ..Default::default()
                            }],
                            aggregation_temporality: 1,
                        }),
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A root span and its child, with an event, a link and an error status.
fn traces_request() -> ExportTraceServiceRequest {
    let sp = |id: u8, parent: Vec<u8>| Span {
        trace_id: vec![0x5b; 16],
        span_id: vec![id; 8],
        parent_span_id: parent,
        name: format!("span {id}"),
        kind: 2,
        start_time_unix_nano: 1_710_000_000_000_000_000,
        end_time_unix_nano: 1_710_000_000_250_000_000,
        attributes: vec![kv("gen_ai.request.model", "gpt-4o")],
        ..Default::default()
    };
    let child = Span {
        status: Some(Status { code: 2, message: "rate limited".into() }),
        events: vec![span::Event {
            time_unix_nano: 1_710_000_000_100_000_000,
            name: "exception".into(),
            attributes: vec![kv("exception.type", "RuntimeError")],
            ..Default::default()
        }],
        links: vec![span::Link { trace_id: vec![0x6c; 16], span_id: vec![9; 8], ..Default::default() }],
        ..sp(2, vec![1; 8])
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans { spans: vec![sp(1, Vec::new()), child], ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("in memory");
    e.finish().expect("in memory")
}

fn prefixed(selector: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![selector];
    v.extend_from_slice(body);
    v
}

/// One target's seeds: (file name, input).
type Seeds = Vec<(String, Vec<u8>)>;

/// The generated seeds, by target.
fn seeds() -> Vec<(&'static str, Seeds)> {
    let wire_seeds = Table::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("{t}.arrows"), prefixed(i as u8, &wire_body(*t))))
        .collect();
    let (logs, metrics) = (logs_request(), metrics_request());
    let traces = traces_request();
    // Selector: bit 2 traces, else bit 0 logs; bit 1 gzip (see lake::fuzzing::otlp_protobuf).
    let protobuf = vec![
        ("logs.pb".to_string(), prefixed(1, &logs.encode_to_vec())),
        ("metrics.pb".to_string(), prefixed(0, &metrics.encode_to_vec())),
        ("logs.pb.gz".to_string(), prefixed(3, &gzip(&logs.encode_to_vec()))),
        ("empty-logs.pb".to_string(), prefixed(1, &[])),
        ("traces.pb".to_string(), prefixed(4, &traces.encode_to_vec())),
        ("traces.pb.gz".to_string(), prefixed(6, &gzip(&traces.encode_to_vec()))),
    ];
    let (logs_json, metrics_json) = (
        serde_json::to_vec(&logs).expect("OTLP/JSON serializes"),
        serde_json::to_vec(&metrics).expect("OTLP/JSON serializes"),
    );
    let otlp_json = vec![
        ("logs.json".to_string(), prefixed(1, &logs_json)),
        ("metrics.json".to_string(), prefixed(0, &metrics_json)),
        ("metrics.json.gz".to_string(), prefixed(2, &gzip(&metrics_json))),
        ("traces.json".to_string(), prefixed(4, &serde_json::to_vec(&traces).expect("OTLP/JSON serializes"))),
    ];
    vec![("wire", wire_seeds), ("otlp_protobuf", protobuf), ("otlp_json", otlp_json)]
}

/// `FUZZ_SEED_DIR=<dir> cargo test -p lake --test fuzz_regressions -- --ignored`: writes
/// `<dir>/<target>/<seed>` (what `fuzz/seed` runs).
#[test]
#[ignore = "writes the fuzz seeds; run by fuzz/seed"]
fn write_fuzz_seeds() {
    let dir = PathBuf::from(std::env::var_os("FUZZ_SEED_DIR").expect("FUZZ_SEED_DIR names the corpus directory"));
    for (target, seeds) in seeds() {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).expect("corpus directory");
        for (name, data) in seeds {
            std::fs::write(d.join(format!("seed-{name}")), data).expect("seed written");
        }
    }
}
