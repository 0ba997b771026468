//! `/api/v1/write` through its route (`oneshot`) over a real WAL: rows, hosts, stale
//! markers, and every hostile body answered with the status Prometheus needs (4xx: drop,
//! never retried).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::Router;
use http_body_util::BodyExt;
use prost::Message;
use tower::ServiceExt;

use super::*;
use crate::http::otlp::tests::{harness, map as label_map, rows, samples, text, ts, Harness, NODE, TOKEN};

const NOW_MS: i64 = 1_795_374_070_000; // 2026-11-22, as the OTLP tests

fn app(h: &Harness) -> Router {
    Router::new()
        .route("/api/v1/write", post(write))
        .with_state(Arc::new(Otlp::new(Arc::clone(&h.ingest), Arc::default())))
}

fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
    TimeSeries {
        labels: labels.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect(),
        samples: samples.iter().map(|&(value, timestamp)| Sample { value, timestamp }).collect(),
        ..Default::default()
    }
}

fn snappy(bytes: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(bytes).unwrap()
}

fn body(ts: Vec<TimeSeries>) -> Vec<u8> {
    snappy(&WriteRequest { timeseries: ts }.encode_to_vec())
}

/// Status and text of the answer.
async fn send_with(app: &Router, token: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (StatusCode, String) {
    let mut req = Request::post("/api/v1/write").header("authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let status = resp.status();
    (status, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
}

const PROMETHEUS: &[(&str, &str)] = &[
    ("content-type", "application/x-protobuf"),
    ("content-encoding", "snappy"),
    ("x-prometheus-remote-write-version", "0.1.0"),
];

async fn send(app: &Router, body: Vec<u8>) -> (StatusCode, String) {
    send_with(app, TOKEN, PROMETHEUS, body).await
}

#[tokio::test]
async fn samples_become_metrics_rows_with_their_labels_and_host() {
    let h = harness(1 << 20);
    let app = app(&h);
    let up = series(
        &[("__name__", "up"), ("instance", "127.0.0.1:9100"), ("job", "node")],
        &[(1.0, NOW_MS), (0.0, NOW_MS + 1000)],
    );
    let web = series(&[("__name__", "load1"), ("instance", "web-1:9100"), ("job", "node")], &[(0.5, NOW_MS)]);
    let odd = series(&[("__name__", "ratio"), ("job", "x")], &[(f64::INFINITY, NOW_MS), (f64::NAN, NOW_MS + 1)]);
    let (status, text_) = send(&app, body(vec![up, web, odd])).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text_}");
    let b = rows(&h, Table::Metrics);
    // (name, value as text, labels): NaN has no order, its text does.
    let values = b.column_by_name("value").unwrap().as_primitive::<Float64Type>();
    let mut got: Vec<_> = (0..b.num_rows())
        .map(|i| (text(&b, "name", i).unwrap(), values.value(i).to_string(), label_map(&b, "labels", i)))
        .collect();
    let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let node = l(&[("instance", "127.0.0.1:9100"), ("job", "node")]);
    let mut want = vec![
        ("load1".to_string(), "0.5".to_string(), l(&[("instance", "web-1:9100"), ("job", "node")])),
        ("ratio".into(), "NaN".into(), l(&[("job", "x")])),
        ("ratio".into(), "inf".into(), l(&[("job", "x")])),
        ("up".into(), "0".into(), node.clone()),
        ("up".into(), "1".into(), node),
    ];
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let hosts: Vec<_> =
        (0..b.num_rows()).map(|i| (text(&b, "name", i).unwrap(), text(&b, "host", i).unwrap())).collect();
    assert!(hosts.contains(&("up".into(), NODE.into())), "loopback instance is the token's node: {hosts:?}");
    assert!(hosts.contains(&("load1".into(), "web-1".into())), "{hosts:?}");
    assert!(hosts.contains(&("ratio".into(), NODE.into())), "no instance: the token's node: {hosts:?}");
    assert!((0..b.num_rows()).any(|i| ts(&b, i) == NOW_MS * 1000), "ms become µs");
    assert_eq!(h.ingest.remote_write.samples.get(), 5);
}

#[tokio::test]
async fn stale_markers_are_dropped_and_counted() {
    let h = harness(1 << 20);
    let app = app(&h);
    let stale = f64::from_bits(STALE_NAN);
    let s = series(&[("__name__", "up"), ("job", "node")], &[(1.0, NOW_MS), (stale, NOW_MS + 1000)]);
    assert_eq!(send(&app, body(vec![s])).await.0, StatusCode::NO_CONTENT);
    let b = rows(&h, Table::Metrics);
    assert_eq!(samples(&b).into_iter().map(|(_, v, _)| v).collect::<Vec<_>>(), vec![1.0]);
    let stats = &h.ingest.remote_write;
    assert_eq!((stats.samples.get(), stats.stale.get()), (1, 1));
    // A request of stale markers only stores nothing and is still a success.
    let s = series(&[("__name__", "up"), ("job", "node")], &[(stale, NOW_MS + 2000)]);
    assert_eq!(send(&app, body(vec![s])).await.0, StatusCode::NO_CONTENT);
    assert_eq!((stats.requests.get(), stats.stale.get(), rows(&h, Table::Metrics).num_rows()), (2, 2, 1));
}

#[tokio::test]
async fn a_host_not_bound_to_the_token_refuses_the_request() {
    let h = harness(1 << 20);
    let app = app(&h);
    let ok = series(&[("__name__", "up"), ("instance", "db-1:9100")], &[(1.0, NOW_MS)]);
    let other = series(&[("__name__", "up"), ("instance", "mallory:9100"), ("job", "node")], &[(1.0, NOW_MS)]);
    let (status, text_) = send(&app, body(vec![ok, other])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text_}");
    assert!(
        text_.contains(r#"series up{instance=\"mallory:9100\", job=\"node\"}: host (from the instance label)"#),
        "{text_}"
    );
    assert!(text_.contains(r#"host \"mallory\" is neither \"node-a\""#), "{text_}");
    assert_eq!(rows(&h, Table::Metrics).num_rows(), 0, "nothing of the request is stored");
    assert_eq!(h.ingest.remote_write.rejected.get(), 1);
}

#[tokio::test]
async fn hostile_bodies_are_4xx_with_a_reason() {
    let h = harness(1 << 20);
    let app = app(&h);
    let ok = || body(vec![series(&[("__name__", "up")], &[(1.0, NOW_MS)])]);
    let cases: Vec<(&str, (StatusCode, String), &str)> = vec![
        ("wrong token", send_with(&app, "nope", PROMETHEUS, ok()).await, "missing or unknown ingest token"),
        ("bad snappy", send(&app, b"\x05\xff\xff\xff\xff\xff".to_vec()).await, "body is not a snappy block"),
        ("bad protobuf", send(&app, snappy(b"\x0a\xff\xff\xff\x0f")).await, "not a protobuf prometheus.WriteRequest"),
        // A 4 GiB declared length in a five-byte body: refused from the header alone.
        ("huge declared length", send(&app, b"\xff\xff\xff\xff\x0f".to_vec()).await, "declares 4294967295 bytes"),
        ("no __name__", send(&app, body(vec![series(&[("job", "x")], &[(1.0, NOW_MS)])])).await, "no __name__ label"),
        (
            "label twice",
            send(&app, body(vec![series(&[("__name__", "up"), ("job", "a"), ("job", "b")], &[(1.0, NOW_MS)])])).await,
            r#"label \"job\" given twice"#,
        ),
        (
            "too old",
            send(&app, body(vec![series(&[("__name__", "up")], &[(1.0, -5_000_000_000_000)])])).await,
            "series up{}: ts:",
        ),
        (
            "not snappy",
            send_with(&app, TOKEN, &[("content-type", "application/x-protobuf")], ok()).await,
            r#"Content-Encoding \"none\" is not supported"#,
        ),
        (
            "remote_write 2.0",
            send_with(
                &app,
                TOKEN,
                &[
                    ("content-type", "application/x-protobuf;proto=io.prometheus.write.v2.Request"),
                    ("content-encoding", "snappy"),
                ],
                ok(),
            )
            .await,
            "remote_write 1.0",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, (status, text_), want) in &cases {
        let expected = match *what {
            "wrong token" => StatusCode::UNAUTHORIZED,
            "huge declared length" => StatusCode::PAYLOAD_TOO_LARGE,
            "not snappy" | "remote_write 2.0" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        if *status != expected || !text_.contains(want) {
            wrong.push(format!("{what}: {status} {text_} (want {expected} and {want:?})"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(rows(&h, Table::Metrics).num_rows(), 0);
    assert_eq!(h.ingest.stats.unauthorized.load(Ordering::Relaxed), 1);
    assert_eq!(h.ingest.remote_write.rejected.get(), cases.len() as u64 - 1);
    assert_eq!(h.ingest.budget.used(), 0, "every reservation given back");
}

#[tokio::test]
async fn too_many_samples_are_refused_before_rows_are_built() {
    let h = harness(32 << 20);
    let app = app(&h);
    let many: Vec<(f64, i64)> = (0..=MAX_SAMPLES as i64).map(|i| (1.0, NOW_MS + i)).collect();
    let (status, text_) = send(&app, body(vec![series(&[("__name__", "up")], &many)])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text_}");
    assert!(text_.contains("100001 samples in one request, more than 100000"), "{text_}");
}

#[test]
fn the_host_is_the_instance_host_part_or_the_node() {
    let cases = [
        (Some("web-1:9100"), "web-1"),
        (Some("web-1"), "web-1"),
        (Some("10.0.0.5:9100"), "10.0.0.5"),
        (Some("localhost:9100"), NODE),
        (Some("127.0.0.1:9090"), NODE),
        (Some("[::1]:9100"), NODE),
        (Some("[fd00::5]:9100"), NODE),
        (Some("https://example.com/health"), NODE),
        (Some(""), NODE),
        (None, NODE),
    ];
    for (instance, want) in cases {
        assert_eq!(crate::http::policy::host_named(instance, NODE), want, "{instance:?}");
    }
}
