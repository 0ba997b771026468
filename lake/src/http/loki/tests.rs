//! `/loki/api/v1/push` through its route (`oneshot`) over a real WAL: rows from protobuf
//! and JSON pushes, both auth forms, and every hostile body answered with the status a
//! shipper needs (4xx: dropped, never retried; 5xx/429: retried).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt;
use prost::Message;
use tower::ServiceExt;

use super::push::*;
use super::*;
use crate::http::otlp::tests::{harness, int, map as attrs_of, rows, text, ts, Harness, NODE, TOKEN};

/// 2026-11-22 10:21:10.123456789 UTC, in ns (the OTLP tests' day).
const NOW_NS: i64 = 1_795_374_070_123_456_789;
const NS: i64 = 1_000_000_000;

fn app(h: &Harness) -> Router {
    Router::new()
        .route("/loki/api/v1/push", post(push))
        .with_state(Arc::new(Otlp::new(Arc::clone(&h.ingest), Arc::default())))
}

fn entry(ns: i64, line: &[u8], metadata: &[(&str, &str)]) -> EntryAdapter {
    EntryAdapter {
        timestamp: Some(Timestamp {
            seconds: ns.div_euclid(1_000_000_000),
            nanos: ns.rem_euclid(1_000_000_000) as i32,
        }),
        line: line.to_vec(),
        structured_metadata: metadata
            .iter()
            .map(|(n, v)| LabelPairAdapter { name: n.as_bytes().to_vec(), value: v.as_bytes().to_vec() })
            .collect(),
    }
}

fn stream(labels: &str, entries: Vec<EntryAdapter>) -> StreamAdapter {
    StreamAdapter { labels: labels.as_bytes().to_vec(), entries }
}

fn protobuf(streams: Vec<StreamAdapter>) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(&PushRequest { streams }.encode_to_vec()).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

const PROTOBUF: &[(&str, &str)] = &[("content-type", "application/x-protobuf")];
const JSON: &[(&str, &str)] = &[("content-type", "application/json")];

/// Status and text of the answer.
async fn send_as(app: &Router, auth: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (StatusCode, String) {
    let mut req = Request::post("/loki/api/v1/push").header("authorization", auth);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let status = resp.status();
    (status, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
}

async fn send(app: &Router, headers: &[(&str, &str)], body: Vec<u8>) -> (StatusCode, String) {
    send_as(app, &format!("Bearer {TOKEN}"), headers, body).await
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Every logs row as (ts, host, unit, priority, message, attrs), in order.
type Row = (i64, String, Option<String>, Option<i64>, String, BTreeMap<String, String>);

fn logs(h: &Harness) -> Vec<Row> {
    let b = rows(h, Table::Logs);
    (0..b.num_rows())
        .map(|i| {
            assert_eq!(text(&b, "source", i).as_deref(), Some("loki"));
            (
                ts(&b, i),
                text(&b, "host", i).unwrap(),
                text(&b, "unit", i),
                int(&b, "priority", i),
                text(&b, "message", i).unwrap(),
                attrs_of(&b, "attrs", i),
            )
        })
        .collect()
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn a_protobuf_push_becomes_logs_rows_with_its_labels() {
    let h = harness(1 << 20);
    let app = app(&h);
    let body = protobuf(vec![
        // Promtail's journal scrape, relabelled: unit, a level, a host it relays for.
        stream(
            r#"{host="web-1", job="systemd-journal", unit="nginx.service", level="error"}"#,
            vec![entry(NOW_NS, b"upstream timed out", &[("trace_id", "0af7651916cd43dd"), ("job", "meta")])],
        ),
        // Docker's loki driver: no host of a node, job only, a line that is not UTF-8.
        stream(
            r#"{compose_project="rag", container_name="rag-api-1", job="docker", host="localhost"}"#,
            vec![entry(NOW_NS + 1_000, b"bin\xff\xfeary", &[]), entry(NOW_NS + 2_999, b"second", &[("level", "warn")])],
        ),
    ]);
    let (status, answer) = send(&app, PROTOBUF, body).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let us = NOW_NS / 1000;
    assert_eq!(
        logs(&h),
        vec![
            (
                us,
                "web-1".into(),
                Some("nginx.service".into()),
                Some(3),
                "upstream timed out".into(),
                attrs(&[
                    ("job", "systemd-journal"),
                    ("level", "error"),
                    ("trace_id", "0af7651916cd43dd"),
                    // A metadata key a stream label has: both kept.
                    ("metadata.job", "meta"),
                    ("lake.node", NODE),
                ]),
            ),
            (
                us + 1,
                NODE.into(),
                Some("docker".into()),
                None,
                "bin\u{fffd}\u{fffd}ary".into(),
                attrs(&[
                    ("compose_project", "rag"),
                    ("container_name", "rag-api-1"),
                    ("raw_hex", "62696efffe617279"),
                    ("lake.node", NODE),
                ]),
            ),
            (
                // 2,999 ns later than the first line: µs are cut, not rounded.
                us + 3,
                NODE.into(),
                Some("docker".into()),
                Some(4),
                "second".into(),
                attrs(&[
                    ("compose_project", "rag"),
                    ("container_name", "rag-api-1"),
                    ("level", "warn"),
                    ("lake.node", NODE),
                ]),
            ),
        ]
    );
    assert_eq!(h.ingest.loki.requests.get(), 1);
    assert_eq!(h.ingest.loki.lines.get(), 3);
}

#[tokio::test]
async fn json_pushes_plain_and_gzipped_with_metadata_and_basic_auth() {
    let h = harness(1 << 20);
    let app = app(&h);
    let json = |line: &str| {
        serde_json::json!({"streams": [{
            "stream": {"job": "fluent-bit", "host": "db-1", "severity": "info"},
            "values": [[(NOW_NS).to_string(), line], [(NOW_NS + 5_000).to_string(), "with metadata", {"request_id": "r-7"}]],
        }]})
        .to_string()
        .into_bytes()
    };
    let (status, answer) = send(&app, JSON, json("plain")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let gz = [("content-type", "application/json"), ("content-encoding", "gzip")];
    let (status, answer) = send_as(&app, &basic("node-a", TOKEN), &gz, gzip(&json("gzipped"))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    // (ts, host, unit, priority, message): the same stream's labels on every line.
    let got: Vec<_> = logs(&h).into_iter().map(|(t, h, u, p, m, _)| format!("{t} {h} {u:?} {p:?} {m}")).collect();
    let us = NOW_NS / 1000;
    let row = |t: i64, m: &str| format!("{t} db-1 Some(\"fluent-bit\") Some(6) {m}");
    assert_eq!(
        got,
        vec![row(us, "plain"), row(us + 5, "with metadata"), row(us, "gzipped"), row(us + 5, "with metadata")]
    );
    assert_eq!(logs(&h)[1].5, attrs(&[("severity", "info"), ("request_id", "r-7"), ("lake.node", NODE)]));
}

#[tokio::test]
async fn hostile_pushes_are_4xx_with_a_reason_and_store_nothing() {
    let h = harness(1 << 20);
    let app = app(&h);
    let ok = || protobuf(vec![stream(r#"{job="x"}"#, vec![entry(NOW_NS, b"ok", &[])])]);
    let json = |v: serde_json::Value| v.to_string().into_bytes();
    let one = |labels: &str| protobuf(vec![stream(labels, vec![entry(NOW_NS, b"line", &[])])]);
    let cases: Vec<(&str, StatusCode, (StatusCode, String), &str)> = vec![
        (
            "wrong token",
            StatusCode::UNAUTHORIZED,
            send_as(&app, "Bearer nope", PROTOBUF, ok()).await,
            "missing or unknown ingest token",
        ),
        (
            "wrong basic password",
            StatusCode::UNAUTHORIZED,
            send_as(&app, &basic(NODE, "nope"), PROTOBUF, ok()).await,
            "basic-auth password",
        ),
        (
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            send(&app, &[("content-type", "text/plain")], ok()).await,
            "application/x-protobuf (snappy) or application/json",
        ),
        (
            "gzip protobuf",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            send(&app, &[("content-type", "application/x-protobuf"), ("content-encoding", "gzip")], ok()).await,
            "Loki protobuf pushes are snappy blocks",
        ),
        ("bad snappy", StatusCode::BAD_REQUEST, send(&app, PROTOBUF, b"\x05\xff\xff".to_vec()).await, "not a snappy"),
        (
            "bad protobuf",
            StatusCode::BAD_REQUEST,
            send(&app, PROTOBUF, snap::raw::Encoder::new().compress_vec(b"\x0a\xff\xff\xff\x0f").unwrap()).await,
            "not a protobuf logproto.PushRequest",
        ),
        (
            "huge declared length",
            StatusCode::PAYLOAD_TOO_LARGE,
            send(&app, PROTOBUF, b"\xff\xff\xff\xff\x0f".to_vec()).await,
            "declares 4294967295 bytes",
        ),
        ("bad selector", StatusCode::BAD_REQUEST, send(&app, PROTOBUF, one(r#"{job=x}"#)).await, "stream 0: labels"),
        ("no labels", StatusCode::BAD_REQUEST, send(&app, PROTOBUF, one("{}")).await, "stream 0: no labels"),
        (
            "label twice",
            StatusCode::BAD_REQUEST,
            send(&app, PROTOBUF, one(r#"{job="a", job="b"}"#)).await,
            r#"label \"job\" given twice"#,
        ),
        (
            "another node's host",
            StatusCode::BAD_REQUEST,
            send(&app, PROTOBUF, one(r#"{job="a", host="mail-9"}"#)).await,
            "stream 0 {job=\\\"a\\\", host=\\\"mail-9\\\"}, line 0: host (the stream's host label)",
        ),
        (
            "in 2100",
            StatusCode::BAD_REQUEST,
            send(&app, PROTOBUF, protobuf(vec![stream(r#"{job="a"}"#, vec![entry(4_102_444_800 * NS, b"2100", &[])])]))
                .await,
            "stream 0 {job=\\\"a\\\"}, line 0: ts: 2100-01-01",
        ),
        (
            "json number timestamp",
            StatusCode::BAD_REQUEST,
            send(&app, JSON, json(serde_json::json!({"streams": [{"stream": {"job": "a"}, "values": [[NOW_NS, "x"]]}]})))
                .await,
            "stream 0, value 0: the timestamp is a string of nanoseconds",
        ),
        (
            "json bad label name",
            StatusCode::BAD_REQUEST,
            send(
                &app,
                JSON,
                json(serde_json::json!({"streams": [{"stream": {"bad-name": "a"}, "values": [[NOW_NS.to_string(), "x"]]}]})),
            )
            .await,
            "\\\"bad-name\\\" is not a label name",
        ),
        (
            "json value of one element",
            StatusCode::BAD_REQUEST,
            send(&app, JSON, json(serde_json::json!({"streams": [{"stream": {"job": "a"}, "values": [["1"]]}]}))).await,
            "a value is",
        ),
        ("json not json", StatusCode::BAD_REQUEST, send(&app, JSON, b"{\"streams\": [".to_vec()).await, "not a Loki JSON push"),
        (
            "json bad gzip",
            StatusCode::BAD_REQUEST,
            send(&app, &[("content-type", "application/json"), ("content-encoding", "gzip")], b"not gzip".to_vec()).await,
            "not valid gzip",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, expected, (status, answer), want) in &cases {
        if status != expected || !answer.contains(want) {
            wrong.push(format!("{what}: {status} {answer} (want {expected} and {want:?})"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(rows(&h, Table::Logs).num_rows(), 0, "nothing of a refused push is stored");
    assert_eq!(h.ingest.stats.unauthorized.load(Ordering::Relaxed), 2);
    assert_eq!(h.ingest.loki.rejected.get(), cases.len() as u64 - 2);
    assert_eq!(h.ingest.budget.used(), 0, "every reservation given back");
}

#[tokio::test]
async fn too_many_lines_are_refused_before_rows_are_built() {
    let h = harness(32 << 20);
    let app = app(&h);
    let many = (0..=MAX_LINES as i64).map(|i| entry(NOW_NS + i, b"x", &[])).collect();
    let (status, answer) = send(&app, PROTOBUF, protobuf(vec![stream(r#"{job="a"}"#, many)])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.contains("100001 lines in one push, more than 100000"), "{answer}");
}

#[test]
fn selector_strings_parse_as_loki_reads_them() {
    let ok = |text: &str| parse_labels(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let pairs = |p: &[(&str, &str)]| p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect::<Vec<_>>();
    assert_eq!(ok(r#"{job="varlogs"}"#), pairs(&[("job", "varlogs")]));
    assert_eq!(ok(r#" { a = "1" ,b="2", } "#), pairs(&[("a", "1"), ("b", "2")]));
    assert_eq!(ok(r#"{path="C:\\logs\\\"x\"", nl="a\nb", u="\u00e9\U0001F600", x="\x41"}"#).len(), 4);
    assert_eq!(
        ok(r#"{path="C:\\logs\\\"x\"", nl="a\nb", u="\u00e9\U0001F600", x="\x41"}"#),
        pairs(&[("path", "C:\\logs\\\"x\""), ("nl", "a\nb"), ("u", "é😀"), ("x", "A")])
    );
    assert_eq!(ok("{}"), pairs(&[]));
    for bad in [
        "",
        "job=\"a\"",
        "{job=\"a\"",
        "{job=a}",
        "{1job=\"a\"}",
        "{job=\"a\" b=\"c\"}",
        "{job=\"a\\q\"}",
        "{job=\"\\uD800\"}",
        "{job=\"a}",
        "{job=\"a\"} trailing",
    ] {
        assert!(parse_labels(bad).is_err(), "{bad:?} parsed");
    }
}
