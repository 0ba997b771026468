use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use lake_format::Table;
use tower::ServiceExt;

use super::*;
use crate::test_support::{engine, metrics, write_parquet, MemFresh};

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn call(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

fn post(uri: &str, content_type: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(CONTENT_TYPE, content_type)
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn app(tokens: &[&str]) -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(
        dir.path(),
        Table::Metrics,
        1,
        &metrics(&[(0, "n1", "cpu", 10.0, Some("0"))]),
    );
    let fresh = Arc::new(MemFresh::default());
    fresh.set(
        Table::Metrics,
        vec![metrics(&[(1, "n2", "cpu", 20.0, Some("1"))])],
    );
    let router = router(
        engine(dir.path(), fresh),
        tokens.iter().map(|t| t.to_string()).collect(),
        crate::named::defaults(),
    );
    (dir, router)
}

#[tokio::test]
async fn json_body_answers_json() {
    let (_dir, app) = app(&[]);
    let sql = r#"{"sql": "select host, labels['cpu'] as cpu from metrics order by ts"}"#;
    let r = call(&app, post("/v1/sql", "application/json", sql)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[CONTENT_TYPE], "application/json");
    assert_eq!(
        r.json(),
        serde_json::json!({
            "columns": [{"name": "host", "type": "VARCHAR"}, {"name": "cpu", "type": "VARCHAR"}],
            "rows": [["n1", "0"], ["n2", "1"]],
            "truncated": false,
            "row_count": 2,
        })
    );
}

#[tokio::test]
async fn text_body_with_format_param_answers_csv() {
    let (_dir, app) = app(&[]);
    let r = call(
        &app,
        post(
            "/v1/sql?format=csv",
            "text/plain",
            "select host, value from metrics order by ts",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        "host,value\nn1,10.0\nn2,20.0\n"
    );
}

#[tokio::test]
async fn arrow_round_trips_and_flags_truncation() {
    let (_dir, app) = app(&[]);
    let body = r#"{"sql": "select * from metrics order by ts", "format": "arrow"}"#;
    let r = call(&app, post("/v1/sql", "application/json", body)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[CONTENT_TYPE], lake_format::wire::CONTENT_TYPE);
    assert!(r.headers.get(TRUNCATED_HEADER).is_none());
    let (schema, batches) = lake_format::wire::decode(&r.body).unwrap();
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["ts", "host", "name", "value", "labels"]);
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
}

#[tokio::test]
async fn truncated_results_carry_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let limits = crate::engine::Limits {
        max_rows: 2,
        ..Default::default()
    };
    let e = crate::test_support::engine_with(dir.path(), Arc::default(), limits);
    let app = router(e, vec![], crate::named::defaults());
    let r = call(
        &app,
        post("/v1/sql", "text/plain", "select * from range(5)"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[TRUNCATED_HEADER], "true");
    assert_eq!(r.json()["row_count"], 2);
    assert_eq!(r.json()["truncated"], true);
}

#[tokio::test]
async fn read_token_is_required_when_configured() {
    let (_dir, app) = app(&["secret-1", "secret-2"]);
    let r = call(&app, post("/v1/sql", "text/plain", "select 1")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json()["error"].as_str().unwrap().contains("Bearer"));

    let mut req = post("/v1/sql", "text/plain", "select 1");
    req.headers_mut()
        .insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret-3"));
    assert_eq!(call(&app, req).await.status, StatusCode::UNAUTHORIZED);

    let mut req = post("/v1/sql", "text/plain", "select 1");
    req.headers_mut()
        .insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret-2"));
    assert_eq!(call(&app, req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn user_errors_are_400_with_duckdbs_message() {
    let (_dir, app) = app(&[]);
    let r = call(&app, post("/v1/sql", "text/plain", "select nope")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("Binder Error") && msg.contains("nope"),
        "{msg}"
    );

    for (uri, ct, body, expected) in [
        ("/v1/sql", "text/plain", "  ", "empty SQL"),
        ("/v1/sql", "application/json", r#"{"sql": ""}"#, "empty SQL"),
        ("/v1/sql", "application/json", "{", "invalid JSON"),
        (
            "/v1/sql?format=xml",
            "text/plain",
            "select 1",
            "unknown format",
        ),
        (
            "/v1/sql",
            "text/plain",
            "create table t(x int)",
            "single read statement",
        ),
        (
            "/v1/sql",
            "text/plain",
            "select * from read_csv('/etc/passwd')",
            "Permission Error",
        ),
    ] {
        let r = call(&app, post(uri, ct, body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(expected), "{body}: {msg}");
    }
}

#[tokio::test]
async fn timeouts_are_408_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limits = crate::engine::Limits {
        timeout: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let e = crate::test_support::engine_with(dir.path(), Arc::default(), limits);
    let app = router(e, vec![], crate::named::defaults());
    let r = call(
        &app,
        post(
            "/v1/sql",
            "text/plain",
            "select count(*) from range(1000000000) a, range(1000) b",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT);
    assert!(r.json()["error"].as_str().unwrap().contains("200ms"));
}

#[test]
fn token_comparison() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}

#[tokio::test]
async fn a_named_query_runs_with_its_macros_expanded() {
    let (_dir, app) = app(&[]);
    let r = call(
        &app,
        post("/v1/sql", "application/json", r#"{"query": "disk_usage_per_mount", "since": "6h"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["columns"].as_array().is_some());
    let r = call(&app, post("/v1/sql", "application/json", r#"{"query": "nope"}"#)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().contains("http_5xx_ratio"));
    let r = call(&app, post("/v1/sql", "application/json", r#"{"query": "bans_per_jail", "sql": "select 1"}"#)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}
