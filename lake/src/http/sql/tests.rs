use std::sync::Arc;

use axum::body::Body;
use axum::http::header::AUTHORIZATION;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use lake_format::Table;
use tower::ServiceExt;

use super::*;
use lake_query::test_support::{engine, metrics, write_parquet, MemFresh};

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
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    Reply { status, headers, body }
}

fn post(uri: &str, content_type: &str, body: &str) -> Request<Body> {
    Request::post(uri).header(CONTENT_TYPE, content_type).body(Body::from(body.to_string())).unwrap()
}

fn app(tokens: &[&str]) -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Metrics, 1, &metrics(&[(0, "n1", "cpu", 10.0, Some("0"))]));
    let fresh = Arc::new(MemFresh::default());
    fresh.set(Table::Metrics, vec![metrics(&[(1, "n2", "cpu", 20.0, Some("1"))])]);
    let router = router(
        engine(dir.path(), fresh),
        tokens.iter().map(|t| t.to_string()).collect(),
        lake_query::named::defaults(),
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
    let r = call(&app, post("/v1/sql?format=csv", "text/plain", "select host, value from metrics order by ts")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(String::from_utf8(r.body).unwrap(), "host,value\nn1,10.0\nn2,20.0\n");
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
    let limits = lake_query::engine::Limits { max_rows: 2, ..Default::default() };
    let e = lake_query::test_support::engine_with(dir.path(), Arc::default(), limits);
    let app = router(e, vec![], lake_query::named::defaults());
    let r = call(&app, post("/v1/sql", "text/plain", "select * from range(5)")).await;
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
    req.headers_mut().insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret-3"));
    assert_eq!(call(&app, req).await.status, StatusCode::UNAUTHORIZED);

    let mut req = post("/v1/sql", "text/plain", "select 1");
    req.headers_mut().insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret-2"));
    assert_eq!(call(&app, req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn user_errors_are_400_with_duckdbs_message() {
    let (_dir, app) = app(&[]);
    let r = call(&app, post("/v1/sql", "text/plain", "select nope")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains("Binder Error") && msg.contains("nope"), "{msg}");

    for (uri, ct, body, expected) in [
        ("/v1/sql", "text/plain", "  ", "empty SQL"),
        ("/v1/sql", "application/json", r#"{"sql": ""}"#, "empty SQL"),
        ("/v1/sql", "application/json", "{", "invalid JSON"),
        ("/v1/sql?format=xml", "text/plain", "select 1", "unknown format"),
        ("/v1/sql", "text/plain", "select 1; select 2", "got 2 statements"),
        ("/v1/sql", "text/plain", "selec 1", "Parser Error"),
        ("/v1/sql", "text/plain", "select 'a'::int", "Conversion Error"),
        ("/v1/sql", "text/plain", "select getenv('HOME')", "does not exist"),
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
    let limits = lake_query::engine::Limits { timeout: std::time::Duration::from_millis(200), ..Default::default() };
    let e = lake_query::test_support::engine_with(dir.path(), Arc::default(), limits);
    let app = router(e, vec![], lake_query::named::defaults());
    let r = call(&app, post("/v1/sql", "text/plain", "select count(*) from range(1000000000) a, range(1000) b")).await;
    assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT);
    assert!(r.json()["error"].as_str().unwrap().contains("200ms"));
}

#[tokio::test]
async fn an_oversized_body_is_a_json_413() {
    let (_dir, app) = app(&[]);
    let sql = format!("select '{}'", "z".repeat(body::MAX_READ_BODY));
    let r = call(&app, post("/v1/sql", "text/plain", &sql)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json()["error"].as_str().unwrap().contains("byte limit of /v1/sql"), "{:?}", r.json());
}

#[tokio::test]
async fn a_named_query_runs_with_its_macros_expanded() {
    let (_dir, app) = app(&[]);
    let r =
        call(&app, post("/v1/sql", "application/json", r#"{"query": "disk_usage_per_mount", "since": "6h"}"#)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["columns"].as_array().is_some());
    let r = call(&app, post("/v1/sql", "application/json", r#"{"query": "nope"}"#)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().contains("http_5xx_ratio"));
    let r = call(&app, post("/v1/sql", "application/json", r#"{"query": "bans_per_jail", "sql": "select 1"}"#)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_named_query_takes_a_range_and_variables_bound_as_parameters() {
    let (_dir, app) = app(&[]);
    // The log view's query over an empty logs table: the filters are parameters, so a
    // hostile one is text; variables left out take the query's defaults.
    let body = serde_json::json!({
        "query": "logs", "from": 0, "to": 4_000_000_000_000i64,
        "vars": {"grep": "'; DROP TABLE logs; --", "host": ["a", "b'"], "priority": ["0", "1", "2", "3"]},
    });
    let r = call(&app, post("/v1/sql", "application/json", &body.to_string())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["columns"][1]["name"], "message");
    assert_eq!(r.json()["row_count"], 0);
    let r = call(&app, post("/v1/sql", "application/json", r#"{"query": "logs_histogram", "since": "1h"}"#)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    // A range backwards, and range or variables given with plain SQL, are refused.
    let r = call(&app, post("/v1/sql", "application/json", r#"{"query": "logs", "from": 10, "to": 5}"#)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().contains("must be before"), "{:?}", r.json());
    let r = call(&app, post("/v1/sql", "application/json", r#"{"sql": "select 1", "vars": {"a": "b"}}"#)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["error"].as_str().unwrap().contains("named query"), "{:?}", r.json());
    // A one-value variable given two is refused (the SQL no longer parses), never widened.
    let r = call(&app, post("/v1/sql", "application/json", r#"{"query": "logs", "vars": {"grep": ["a", "b"]}}"#)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// Posts `sql` (as text) and returns the status and the JSON error message.
async fn refused(sql: &str) -> (StatusCode, String) {
    let (_dir, app) = app(&[]);
    let r = call(&app, post("/v1/sql", "text/plain", sql)).await;
    let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
    (r.status, msg)
}

/// One test per sandbox escape: 403, and a message saying what is not allowed.
macro_rules! escape {
    ($name:ident, $sql:expr, $($expected:expr),+) => {
        #[tokio::test]
        async fn $name() {
            let sql: &str = $sql;
            let (status, msg) = refused(sql).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{sql}: {msg}");
            $(assert!(msg.contains($expected), "{sql}: {msg:?} lacks {:?}", $expected);)+
        }
    };
}

escape!(escape_insert, "insert into metrics select * from metrics", "INSERT statements are not allowed", "read-only");
escape!(escape_create_table, "CREATE TABLE t(x int)", "CREATE statements are not allowed");
escape!(escape_drop_view, "DROP VIEW metrics", "DROP statements are not allowed");
escape!(escape_stacked_drop, "select 1; drop view metrics", "DROP statements are not allowed");
escape!(escape_explain_drop, "EXPLAIN DROP VIEW metrics", "DROP statements are not allowed");
escape!(
    escape_copy_to_file,
    "COPY (select * from metrics) TO '/tmp/lake-escape.csv'",
    "COPY is not allowed",
    "cannot read or write files"
);
escape!(escape_copy_from_file, "COPY metrics FROM '/etc/passwd'", "COPY is not allowed");
escape!(escape_export_database, "EXPORT DATABASE '/tmp/lake-escape'", "EXPORT is not allowed");
escape!(escape_attach, "ATTACH '/tmp/lake-escape.db' AS x", "ATTACH is not allowed", "attach");
escape!(escape_detach, "DETACH memory", "DETACH is not allowed");
escape!(escape_install, "INSTALL httpfs", "INSTALL is not allowed", "extensions");
escape!(escape_load, "LOAD httpfs", "LOAD is not allowed", "extensions");
escape!(escape_set_threads, "SET threads = 1", "SET is not allowed", "configuration is locked");
escape!(
    escape_set_external_access,
    "SET enable_external_access = true",
    "SET is not allowed",
    "configuration is locked"
);
escape!(escape_reset_lock, "RESET lock_configuration", "RESET is not allowed");
escape!(escape_pragma, "PRAGMA threads = 1", "PRAGMA is not allowed");
escape!(
    escape_read_csv_etc_passwd,
    "select * from read_csv('/etc/passwd')",
    "function read_csv is not allowed",
    "no files outside <data>/tables/"
);
escape!(
    escape_read_text,
    "select * from read_text('/etc/hostname')",
    "function read_text is not allowed",
    "no files outside"
);
escape!(
    escape_read_blob,
    "select * from read_blob('/etc/shadow')",
    "function read_blob is not allowed",
    "no files outside"
);
escape!(escape_read_json, "select * from read_json('/etc/os-release')", "no files outside");
escape!(escape_read_parquet_elsewhere, "select * from read_parquet('/tmp/elsewhere/*.parquet')", "no files outside");
escape!(escape_parquet_metadata, "select * from parquet_metadata('/var/lib/x.parquet')", "no files outside");
escape!(escape_glob_etc, "select * from glob('/etc/*')", "function glob is not allowed", "no files outside");
// A SELECT may still not change the engine for later requests (issue 18).
escape!(
    escape_enable_logging,
    "SELECT * FROM enable_logging(storage='file', storage_path='/nonexistent')",
    "function enable_logging is not allowed"
);
escape!(escape_current_setting, "select current_setting('threads')", "function current_setting is not allowed");
escape!(escape_query_function, "select * from query('select 1')", "function query is not allowed");
escape!(
    escape_https_url,
    "select * from read_parquet('https://example.com/x.parquet')",
    "no URLs",
    "https://example.com/x.parquet"
);
escape!(escape_http_url_csv, "select * from read_csv('http://example.com/x.csv')", "no URLs");
escape!(escape_url_replacement_scan, "select * from 'https://example.com/x.parquet'", "no URLs");

#[tokio::test]
async fn escape_staging_files_are_outside_the_tables() {
    let (dir, app) = app(&[]);
    std::fs::create_dir_all(dir.path().join("staging")).unwrap();
    let sql = format!("select * from read_parquet('{}/staging/*.parquet')", dir.path().display());
    let r = call(&app, post("/v1/sql", "text/plain", &sql)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.json()["error"].as_str().unwrap().contains("no files outside"));
    // The lake's own tables may be read by path.
    let sql = format!(
        "select count(*) from read_parquet('{}/tables/metrics/date=*/*.parquet')",
        dir.path().canonicalize().unwrap().display()
    );
    let r = call(&app, post("/v1/sql", "text/plain", &sql)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["rows"], serde_json::json!([[1]]));
}

#[tokio::test]
async fn escapes_are_forbidden_for_every_format_and_named_errors_stay_400() {
    let (_dir, app) = app(&[]);
    for format in ["json", "csv", "arrow", "table"] {
        let r =
            call(&app, post(&format!("/v1/sql?format={format}"), "text/plain", "COPY metrics TO '/tmp/x.csv'")).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{format}");
        assert_eq!(r.headers[CONTENT_TYPE], "application/json");
        let r = call(&app, post(&format!("/v1/sql?format={format}"), "text/plain", "select nope")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{format}");
    }
}

// ---- streaming ----

fn streaming_app(limits: lake_query::engine::Limits) -> (tempfile::TempDir, Arc<Engine>, Router) {
    let dir = tempfile::tempdir().unwrap();
    let e = lake_query::test_support::engine_with(dir.path(), Arc::default(), limits);
    let router = router(Arc::clone(&e), vec![], lake_query::named::defaults());
    (dir, e, router)
}

/// Enough rows that the answer passes the window and the channel several times over.
const BIG: usize = 400_000;
const BIG_SQL: &str = "select i, 'row-' || i as s from range(400000) t(i)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_larger_than_the_channel_streams_completely_in_every_format() {
    let limits = lake_query::engine::Limits { max_rows: 1_000_000, ..Default::default() };
    let (_dir, _e, app) = streaming_app(limits);
    for format in ["json", "csv", "arrow"] {
        let req = post(&format!("/v1/sql?format={format}"), "text/plain", BIG_SQL);
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // Streamed: chunked (no length), trailers announced, no truncation header.
        assert!(resp.headers().get(axum::http::header::CONTENT_LENGTH).is_none(), "{format}");
        assert_eq!(resp.headers()[axum::http::header::TRAILER], "lake-truncated, lake-error");
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(trailers[TRUNCATED_HEADER], "false", "{format}");
        let body = collected.to_bytes();
        assert!(body.len() > stream::WINDOW, "{format}: {} bytes", body.len());
        match format {
            "json" => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["row_count"], BIG);
                assert_eq!(v["truncated"], false);
                let rows = v["rows"].as_array().unwrap();
                assert_eq!(rows.len(), BIG);
                assert_eq!(rows[BIG - 1], serde_json::json!([BIG - 1, format!("row-{}", BIG - 1)]));
            }
            "csv" => {
                let text = String::from_utf8(body.to_vec()).unwrap();
                let lines: Vec<&str> = text.lines().collect();
                assert_eq!(lines.len(), BIG + 1);
                assert_eq!(lines[0], "i,s");
                assert_eq!(lines[BIG], format!("{},row-{}", BIG - 1, BIG - 1));
            }
            _ => {
                let (schema, batches) = lake_format::wire::decode(&body).unwrap();
                assert_eq!(schema.fields().len(), 2);
                assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), BIG);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_result_cut_at_the_row_limit_says_so_at_its_end() {
    let limits = lake_query::engine::Limits { max_rows: 300_000, ..Default::default() };
    let (_dir, _e, app) = streaming_app(limits);
    for format in ["json", "csv", "arrow"] {
        let resp = app.clone().oneshot(post(&format!("/v1/sql?format={format}"), "text/plain", BIG_SQL)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let collected = resp.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()[TRUNCATED_HEADER], "true", "{format}");
        let body = collected.to_bytes();
        let rows = match format {
            "json" => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["truncated"], true);
                assert_eq!(v["row_count"], 300_000);
                v["rows"].as_array().unwrap().len()
            }
            "csv" => body.iter().filter(|&&b| b == b'\n').count() - 1,
            _ => lake_format::wire::decode(&body).unwrap().1.iter().map(|b| b.num_rows()).sum(),
        };
        assert_eq!(rows, 300_000, "{format}");
    }
}

/// Waits until the engine has no query running, or panics after 10 s.
async fn until_idle(e: &Engine) -> lake_query::engine::EngineStats {
    let start = std::time::Instant::now();
    loop {
        let s = e.stats();
        if s.running == 0 {
            return s;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "query still running: {s:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_the_query() {
    // Rows without end, no row limit to speak of: only the disconnect can stop it.
    let limits = lake_query::engine::Limits {
        max_rows: usize::MAX,
        timeout: std::time::Duration::from_secs(600),
        ..Default::default()
    };
    let (_dir, e, app) = streaming_app(limits);
    for format in ["json", "csv", "arrow"] {
        let before = e.stats().cancelled;
        let resp = app
            .clone()
            .oneshot(post(
                &format!("/v1/sql?format={format}"),
                "text/plain",
                "select i, i * 2 as j from range(1000000000000) t(i)",
            ))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        assert_eq!(e.stats().running, 1);
        drop(body); // what hyper does when the connection closes
        let after = until_idle(&e).await;
        assert_eq!(after.cancelled, before + 1, "{format}: {after:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnecting_over_tcp_cancels_the_query() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = lake_query::engine::Limits {
        max_rows: usize::MAX,
        timeout: std::time::Duration::from_secs(600),
        ..Default::default()
    };
    let (_dir, e, app) = streaming_app(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let sql = "select i from range(1000000000000) t(i)";
    let req = format!(
        "POST /v1/sql?format=csv HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < 2 * stream::WINDOW {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got += n;
    }
    assert_eq!(e.stats().running, 1);
    drop(conn);
    let after = until_idle(&e).await;
    assert_eq!(after.cancelled, 1, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_limit_ends_a_stream_in_progress() {
    // The limit must fall after the first rows are out (a 200 with its head), also on a
    // loaded 2-core CI machine where the first chunk once took longer than 700 ms.
    let timeout = std::time::Duration::from_millis(2500);
    let limits = lake_query::engine::Limits { max_rows: usize::MAX, timeout, ..Default::default() };
    let (_dir, e, app) = streaming_app(limits);
    let sql = "select i, i * 2 as j from range(1000000000000) t(i)";
    for format in ["json", "csv", "arrow"] {
        let started = std::time::Instant::now();
        let resp = app.clone().oneshot(post(&format!("/v1/sql?format={format}"), "text/plain", sql)).await.unwrap();
        // Rows flowed before the limit: the head is out, 200.
        assert_eq!(resp.status(), StatusCode::OK, "{format}");
        let collected = resp.into_body().collect().await;
        assert!(started.elapsed() < timeout + std::time::Duration::from_secs(5), "{format}: {:?}", started.elapsed());
        match format {
            "json" => {
                let collected = collected.unwrap();
                let error = collected.trailers().unwrap()[ERROR_TRAILER].to_str().unwrap().to_string();
                assert!(error.contains("2.5s"), "{error}");
                let v: serde_json::Value = serde_json::from_slice(&collected.to_bytes()).unwrap();
                assert!(v["error"].as_str().unwrap().contains("ran longer than the limit of 2.5s"), "{}", v["error"]);
                assert!(v["row_count"].as_u64().unwrap() > 0);
                assert_eq!(v["row_count"].as_u64().unwrap() as usize, v["rows"].as_array().unwrap().len());
            }
            // CSV and Arrow cut the body.
            _ => {
                let Err(err) = collected else { panic!("{format}: the body should be cut") };
                let err = err.to_string();
                assert!(err.contains("2.5s"), "{format}: {err}");
            }
        }
    }
    let s = until_idle(&e).await;
    assert_eq!(s.timeouts, 3, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_does_not_hold_the_query_past_its_time_limit() {
    // Past the first chunk's time even on a loaded machine (see the test above).
    let timeout = std::time::Duration::from_millis(2500);
    let limits = lake_query::engine::Limits { max_rows: usize::MAX, timeout, ..Default::default() };
    let (_dir, e, app) = streaming_app(limits);
    let resp = app
        .clone()
        .oneshot(post("/v1/sql?format=csv", "text/plain", "select i from range(1000000000000) t(i)"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    // Read nothing: the channel fills and the query thread waits — until the deadline.
    let s = until_idle(&e).await;
    assert_eq!(s.timeouts, 1, "{s:?}");
    // What was queued is still delivered, then the body is cut.
    let mut cut = false;
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            cut = true;
            break;
        }
    }
    assert!(cut);
}
