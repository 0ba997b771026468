//! Replays the request bodies the JSON datasource plugins send (shapes from the
//! simpod-json-datasource README/OpenAPI and simple-json) against a fixture lake.

use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use lake_format::rows::{MetricsBuilder, TableBuilder};
use lake_format::Table;
use serde_json::{json, Value as Json};
use tower::ServiceExt;

use super::*;
use lake_query::named::defaults;
use lake_query::test_support::{alert, engine, write_parquet, MemFresh, TS};

/// 2026-11-22T10:00:00Z in epoch milliseconds.
const T0: i64 = TS / 1000;
const TOKEN: &str = "grafana-read-token-0123";

enum Cell<'a> {
    S(&'a str),
    I(i64),
    F(f64),
    B(bool),
}

/// One row per entry: `ts` is `TS + secs`, `host` given, then named cells.
/// `(seconds after TS, host, named cells)`.
type Row<'a> = (i64, &'a str, Vec<(&'a str, Cell<'a>)>);

fn batch(table: Table, rows: &[Row]) -> arrow_array::RecordBatch {
    let mut b = TableBuilder::new(table);
    let (ts, host) = (b.column("ts").unwrap(), b.column("host").unwrap());
    for (secs, h, cells) in rows {
        b.ts(ts, TS + secs * 1_000_000);
        b.text(host, Some(h));
        for (name, cell) in cells {
            let c = b.column(name).unwrap_or_else(|| panic!("{table}.{name}"));
            match cell {
                Cell::S(v) => b.text(c, Some(v)),
                Cell::I(v) => b.int(c, Some(*v)),
                Cell::F(v) => b.float(c, Some(*v)),
                Cell::B(v) => b.bool(c, Some(*v)),
            }
        }
        b.end_row();
    }
    b.finish().unwrap()
}

fn write_fixtures(dir: &std::path::Path) {
    use Cell::*;
    let http = |vhost, status, ms, ip| {
        vec![("vhost", S(vhost)), ("status", I(status)), ("duration_ms", F(ms)), ("remote_ip", S(ip))]
    };
    let rows = vec![
        (0, "n1", http("a.example", 200, 10.0, "192.0.2.1")),
        (10, "n1", http("b.example", 200, 100.0, "192.0.2.2")),
        (30, "n1", http("a.example", 500, 30.0, "192.0.2.1")),
        (60, "n1", http("a.example", 200, 20.0, "192.0.2.3")),
    ];
    write_parquet(dir, Table::Http, 1, &batch(Table::Http, &rows));

    let ban = |jail, action, ip| vec![("jail", S(jail)), ("action", S(action)), ("ip", S(ip))];
    let rows = vec![
        (5, "n1", ban("sshd", "ban", "203.0.113.7")),
        (20, "n1", ban("sshd", "found", "203.0.113.8")),
        (65, "n2", ban("caddy", "ban", "203.0.113.9")),
        (120, "n1", ban("sshd", "unban", "203.0.113.7")),
    ];
    write_parquet(dir, Table::Bans, 1, &batch(Table::Bans, &rows));

    let fw = |action, src, port| vec![("action", S(action)), ("src", S(src)), ("dst_port", I(port))];
    let rows = vec![
        (1, "n1", fw("BLOCK", "198.51.100.1", 22)),
        (2, "n1", fw("BLOCK", "198.51.100.1", 23)),
        (3, "n2", fw("BLOCK", "198.51.100.1", 22)),
        (4, "n1", fw("BLOCK", "198.51.100.2", 3389)),
        (5, "n1", fw("ALLOW", "198.51.100.3", 443)),
    ];
    write_parquet(dir, Table::Firewall, 1, &batch(Table::Firewall, &rows));

    let probe = |target, ok, ms: Option<f64>| {
        let mut v = vec![("kind", S("tailscale")), ("target", S(target)), ("ok", B(ok))];
        if let Some(ms) = ms {
            v.push(("latency_ms", F(ms)));
            v.push(("path", S("direct 10.0.0.2:41641")));
        }
        v
    };
    let rows = vec![
        (0, "n1", probe("n2", true, Some(1.5))),
        (60, "n1", probe("n2", true, Some(2.5))),
        (0, "n2", probe("n1", false, None)),
    ];
    write_parquet(dir, Table::Probes, 1, &batch(Table::Probes, &rows));

    let mut m = MetricsBuilder::new();
    let root = [("mount", "/"), ("device", "/dev/sda1"), ("fstype", "ext4")];
    m.push(TS, "n1", "filesystem_used_bytes", 40.0, &root);
    m.push(TS, "n1", "filesystem_total_bytes", 100.0, &root);
    m.push(TS, "n1", "filesystem_used_ratio", 0.4, &root);
    m.push(TS + 60_000_000, "n1", "filesystem_used_ratio", 0.45, &root);
    m.push(TS, "n1", "cpu_usage_percent", 12.0, &[]);
    write_parquet(dir, Table::Metrics, 1, &m.finish());

    write_parquet(dir, Table::Alerts, 1, &alert("disk_full", &["email"]));
}

fn app_over(dir: &std::path::Path, tokens: &[&str]) -> Router {
    let queries = lake_query::named::merge(Vec::new()).unwrap();
    router(engine(dir, Arc::new(MemFresh::default())), tokens.iter().map(|t| t.to_string()).collect(), queries)
}

fn fixture_app() -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().unwrap();
    write_fixtures(dir.path());
    let app = app_over(dir.path(), &[TOKEN]);
    (dir, app)
}

async fn call(app: &Router, method: &str, uri: &str, body: Option<Json>) -> (StatusCode, Json) {
    let mut req = Request::builder().method(method).uri(uri).header(AUTHORIZATION, format!("Bearer {TOKEN}"));
    if body.is_some() {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, json)
}

async fn post_ok(app: &Router, uri: &str, body: Json) -> Json {
    let (status, json) = call(app, "POST", uri, Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{uri} {body}: {json}");
    json
}

async fn post_err(app: &Router, uri: &str, body: Json) -> String {
    let (status, json) = call(app, "POST", uri, Some(body.clone())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {body}: {json}");
    json["error"].as_str().unwrap().to_string()
}

/// A `/query` body as the simpod plugin sends it, over 10:00–11:00, 1-minute buckets.
fn query_body(targets: Json, adhoc: Json) -> Json {
    json!({
        "app": "dashboard",
        "requestId": "Q102",
        "timezone": "browser",
        "panelId": 2,
        "dashboardId": 7,
        "range": {
            "from": "2026-11-22T10:00:00.000Z",
            "to": "2026-11-22T11:00:00.000Z",
            "raw": {"from": "now-1h", "to": "now"}
        },
        "rangeRaw": {"from": "now-1h", "to": "now"},
        "timeInfo": "",
        "interval": "1m",
        "intervalMs": 60000,
        "maxDataPoints": 1280,
        "targets": targets,
        "adhocFilters": adhoc,
        "scopedVars": {
            "__interval": {"text": "1m", "value": "1m"},
            "__interval_ms": {"text": "60000", "value": 60000}
        },
        "startTime": 1_795_345_200_000_i64,
        "cacheTimeout": null
    })
}

fn named_target(name: &str) -> Json {
    json!([{"refId": "A", "datasource": {"type": "simpod-json-datasource", "uid": "lake"},
            "editorMode": "code", "target": name, "payload": {}, "hide": false}])
}

fn sql_target(sql: &str, extra: Json) -> Json {
    let mut payload = json!({ "sql": sql });
    for (k, v) in extra.as_object().unwrap() {
        payload[k] = v.clone();
    }
    json!([{"refId": "A", "target": "", "payload": payload, "hide": false}])
}

#[tokio::test]
async fn save_and_test_needs_the_read_token() {
    let (_dir, app) = fixture_app();
    let (status, body) = call(&app, "GET", "/", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    for header in [None, Some("Bearer wrong")] {
        let mut req = Request::get("/");
        if let Some(h) = header {
            req = req.header(AUTHORIZATION, h);
        }
        let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let req = Request::post("/query").body(Body::from("{}")).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metrics_offer_the_named_queries() {
    let (_dir, app) = fixture_app();
    let list = post_ok(&app, "/metrics", json!({"metric": "", "payload": {}})).await;
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|m| m["value"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "http_5xx_ratio",
            "top_blocked_sources",
            "bans_per_jail",
            "p95_latency_per_vhost",
            "mesh_latency",
            "disk_usage_per_mount",
            "traffic_by_class",
            "slow_spans",
            "logs",
            "logs_histogram",
            "anomalies"
        ]
    );
    let options = json!([
        {"label": "Time series", "value": "timeseries"},
        {"label": "Table", "value": "table"}
    ]);
    assert_eq!(
        list[1],
        json!({"label": "top_blocked_sources", "value": "top_blocked_sources", "payloads": [
            {"label": "Format", "name": "format", "type": "select", "placeholder": "table",
             "reloadMetric": false, "options": options}
        ]})
    );
    let body = json!({"metric": "http_5xx_ratio", "payload": {}, "name": "format"});
    assert_eq!(post_ok(&app, "/metric-payload-options", body).await, options);
    let body = json!({"metric": "http_5xx_ratio", "payload": {}, "name": "other"});
    assert_eq!(post_ok(&app, "/metric-payload-options", body).await, json!([]));
    // simple-json's search.
    assert_eq!(post_ok(&app, "/search", json!({"target": "ban"})).await, json!(["bans_per_jail"]));
}

#[tokio::test]
async fn named_time_series_one_series_per_label() {
    let (_dir, app) = fixture_app();
    let body = query_body(named_target("http_5xx_ratio"), json!([]));
    assert_eq!(
        post_ok(&app, "/query", body).await,
        json!([
            {"target": "a.example", "datapoints": [[0.5, T0], [0.0, T0 + 60_000]]},
            {"target": "b.example", "datapoints": [[0.0, T0]]}
        ])
    );
    let body = query_body(named_target("bans_per_jail"), json!([]));
    assert_eq!(
        post_ok(&app, "/query", body).await,
        json!([
            {"target": "sshd", "datapoints": [[1.0, T0]]},
            {"target": "caddy", "datapoints": [[1.0, T0 + 60_000]]}
        ])
    );
}

#[tokio::test]
async fn named_tables() {
    let (_dir, app) = fixture_app();
    let body = query_body(named_target("top_blocked_sources"), json!([]));
    assert_eq!(
        post_ok(&app, "/query", body).await,
        json!([{
            "type": "table",
            "columns": [
                {"text": "src", "type": "string"},
                {"text": "packets", "type": "number"},
                {"text": "ports", "type": "number"},
                {"text": "hosts", "type": "string"},
                {"text": "first_seen", "type": "time"},
                {"text": "last_seen", "type": "time"}
            ],
            "rows": [
                ["198.51.100.1", 3, 2, "n1,n2", T0 + 1000, T0 + 3000],
                ["198.51.100.2", 1, 1, "n1", T0 + 4000, T0 + 4000]
            ]
        }])
    );
    let body = query_body(named_target("disk_usage_per_mount"), json!([]));
    assert_eq!(post_ok(&app, "/query", body).await[0]["rows"], json!([["n1", "/", 40.0, 100.0, 45.0]]));
    let body = query_body(named_target("mesh_latency"), json!([]));
    assert_eq!(
        post_ok(&app, "/query", body).await[0]["rows"],
        json!([["n1", "n2", 2.0, 2.45, 0, 2, "direct 10.0.0.2:41641"], ["n2", "n1", null, null, 1, 1, null]])
    );
    // A time series query can be asked for as a table.
    let mut body = query_body(named_target("p95_latency_per_vhost"), json!([]));
    body["targets"][0]["payload"] = json!({"format": "table"});
    let t = post_ok(&app, "/query", body).await;
    assert_eq!(t[0]["type"], "table");
    assert_eq!(t[0]["rows"][0], json!([T0, "a.example", 29.0]));
}

#[tokio::test]
async fn every_default_runs_on_an_empty_and_a_fixture_lake() {
    let empty = tempfile::tempdir().unwrap();
    let (_dir, full) = fixture_app();
    for app in [app_over(empty.path(), &[TOKEN]), full] {
        for q in defaults() {
            let body = query_body(named_target(&q.name), json!([]));
            let answer = post_ok(&app, "/query", body).await;
            assert!(answer.is_array(), "{}: {answer}", q.name);
            // With an ad-hoc filter on a column some results have and others do not.
            let body = query_body(named_target(&q.name), json!([{"key": "host", "operator": "=", "value": "n1"}]));
            post_ok(&app, "/query", body).await;
        }
    }
}

#[tokio::test]
async fn raw_sql_with_macros_and_formats() {
    let (_dir, app) = fixture_app();
    let sql = "SELECT $__timeGroup(ts, '30s') AS time, count(*) AS requests \
               FROM http WHERE $__timeFilter(ts) AND $__from > 0 GROUP BY 1 ORDER BY 1";
    let body = query_body(sql_target(sql, json!({})), json!([]));
    assert_eq!(
        post_ok(&app, "/query", body).await,
        json!([{"target": "requests", "datapoints": [[2.0, T0], [1.0, T0 + 30_000], [1.0, T0 + 60_000]]}])
    );
    // Raw SQL in the target field, result without a time column: a table by shape.
    let body = query_body(
        json!([{"refId": "B", "target": "select vhost, count(*) as n from http group by 1 order by 1"}]),
        json!([]),
    );
    assert_eq!(
        post_ok(&app, "/query", body).await,
        json!([{"type": "table",
                "columns": [{"text": "vhost", "type": "string"}, {"text": "n", "type": "number"}],
                "rows": [["a.example", 3], ["b.example", 1]]}])
    );
    // Hidden and empty targets are skipped; several targets answer in order.
    let body = query_body(
        json!([
            {"refId": "A", "target": "mesh_latency", "hide": true},
            {"refId": "B", "target": ""},
            {"refId": "C", "target": "select 1 as one"},
            {"refId": "D", "target": "select 2 as two", "type": "table"}
        ]),
        json!([]),
    );
    let answer = post_ok(&app, "/query", body).await;
    assert_eq!(answer.as_array().unwrap().len(), 2);
    assert_eq!(answer[1]["rows"], json!([[2]]));
    // The payload may come as JSON text (older plugin versions).
    let body = query_body(json!([{"refId": "A", "target": "", "payload": "{\"sql\": \"select 3 as x\"}"}]), json!([]));
    assert_eq!(post_ok(&app, "/query", body).await[0]["rows"], json!([[3]]));
}

#[tokio::test]
async fn variables_are_bound_as_data() {
    let (_dir, app) = fixture_app();
    let sql = "select vhost, count(*) as n from http where vhost in (${vhost:csv}) \
               and host = '$host' group by 1 order by 1";
    let rows = |host: &str, vhosts: Json| {
        let body = query_body(sql_target(sql, json!({"host": host, "format": "table"})), json!([]));
        let mut body = body;
        body["scopedVars"]["vhost"] = json!({"text": "multi", "value": vhosts});
        body
    };
    let body = rows("n1", json!(["a.example", "b.example"]));
    assert_eq!(post_ok(&app, "/query", body).await[0]["rows"], json!([["a.example", 3], ["b.example", 1]]));
    for evil in ["x' OR 1=1 --", "n1' OR '1'='1", "'); COPY (SELECT 1) TO '/tmp/lake-pwned.csv'; --"] {
        let body = rows(evil, json!(["a.example"]));
        assert_eq!(post_ok(&app, "/query", body).await[0]["rows"], json!([]), "{evil}");
        let body = rows("n1", json!([evil]));
        assert_eq!(post_ok(&app, "/query", body).await[0]["rows"], json!([]));
    }
    assert!(!std::path::Path::new("/tmp/lake-pwned.csv").exists());
    let body = query_body(sql_target("select $nope", json!({})), json!([]));
    let e = post_err(&app, "/query", body).await;
    assert!(e.contains("$nope"), "{e}");
}

#[tokio::test]
async fn adhoc_filters_apply_and_stay_data() {
    let (_dir, app) = fixture_app();
    let filtered = |filters: Json| query_body(named_target("p95_latency_per_vhost"), filters);
    let body = filtered(json!([{"key": "vhost", "operator": "=", "value": "b.example"}]));
    assert_eq!(post_ok(&app, "/query", body).await, json!([{"target": "b.example", "datapoints": [[100.0, T0]]}]));
    let body = filtered(json!([{"key": "vhost", "operator": "=~", "value": "^a\\."}]));
    assert_eq!(post_ok(&app, "/query", body).await.as_array().unwrap().len(), 1);
    for evil in ["x' OR 1=1 --", "') OR 1=1 --", "'); COPY (SELECT 1) TO '/tmp/lake-pwned2.csv'; --"] {
        let body = filtered(json!([{"key": "vhost", "operator": "=", "value": evil}]));
        assert_eq!(post_ok(&app, "/query", body).await, json!([]), "{evil}");
    }
    assert!(!std::path::Path::new("/tmp/lake-pwned2.csv").exists());
    // A key the target does not return is not this panel's concern.
    let body = filtered(json!([{"key": "jail", "operator": "=", "value": "sshd"}]));
    assert_eq!(post_ok(&app, "/query", body).await.as_array().unwrap().len(), 2);
    // Numbers compare as numbers (the value is cast by DuckDB, not pasted).
    let body = query_body(
        sql_target("select status, vhost from http order by ts", json!({"format": "table"})),
        json!([{"key": "status", "operator": ">", "value": "499"}]),
    );
    assert_eq!(post_ok(&app, "/query", body).await[0]["rows"], json!([[500, "a.example"]]));
    // A key that is an injection attempt matches no column; a bad operator is refused.
    let body = filtered(json!([{"key": "vhost\" = vhost OR \"1", "operator": "=", "value": "x"}]));
    assert_eq!(post_ok(&app, "/query", body).await.as_array().unwrap().len(), 2);
    let body = filtered(json!([{"key": "vhost", "operator": "OR 1=1 --", "value": "x"}]));
    let e = post_err(&app, "/query", body).await;
    assert!(e.contains("operator"), "{e}");
}

#[tokio::test]
async fn errors_are_400_with_a_message() {
    let (_dir, app) = fixture_app();
    let e = post_err(&app, "/query", query_body(named_target("nope"), json!([]))).await;
    assert!(e.contains("unknown named query \"nope\""), "{e}");
    assert!(e.contains("http_5xx_ratio"), "{e}");
    let body = query_body(sql_target("select * from nowhere", json!({})), json!([]));
    let e = post_err(&app, "/query", body).await;
    assert!(e.starts_with("target A (payload.sql): Catalog Error"), "{e}");
    let body = query_body(sql_target("delete from http", json!({})), json!([]));
    let (status, json) = call(&app, "POST", "/query", Some(body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
    assert!(json["error"].as_str().unwrap().contains("DELETE statements are not allowed"), "{json}");
    let body = query_body(sql_target("select 'a' as x", json!({"format": "timeseries"})), json!([]));
    let e = post_err(&app, "/query", body).await;
    assert!(e.contains("time series needs a timestamp column"), "{e}");
    let mut body = query_body(named_target("bans_per_jail"), json!([]));
    body["range"]["from"] = json!("yesterday'; drop");
    let e = post_err(&app, "/query", body).await;
    assert!(e.contains("range.from"), "{e}");
    let mut body = query_body(named_target("bans_per_jail"), json!([]));
    body["intervalMs"] = json!("60000); drop");
    post_err(&app, "/query", body).await;
    let e = post_err(&app, "/query", json!("not an object")).await;
    assert!(e.contains("invalid JSON"), "{e}");
}

#[tokio::test]
async fn variable_values() {
    let (_dir, app) = fixture_app();
    let body = json!({
        "payload": {"target": "select distinct vhost from http order by 1"},
        "range": {"from": "2026-11-22T10:00:00.000Z", "to": "2026-11-22T11:00:00.000Z",
                  "raw": {"from": "now-1h", "to": "now"}},
        "rangeRaw": {"from": "now-1h", "to": "now"}
    });
    assert_eq!(
        post_ok(&app, "/variable", body).await,
        json!([{"__text": "a.example", "__value": "a.example"},
               {"__text": "b.example", "__value": "b.example"}])
    );
    let body = json!({"payload": {"target":
        "select jail || ' jail' as label, jail from bans where $__timeFilter(ts) and action = 'ban' order by 1"}});
    // No range: the last 6 hours, in which the fixtures (2026) are not.
    assert_eq!(post_ok(&app, "/variable", body).await, json!([]));
    let body = json!({"payload": {"target": "select 'x' as __value, 'X' as __text"}});
    assert_eq!(post_ok(&app, "/variable", body).await, json!([{"__text": "X", "__value": "x"}]));
    post_err(&app, "/variable", json!({"payload": {}})).await;
}

#[tokio::test]
async fn tag_keys_and_values() {
    let (_dir, app) = fixture_app();
    let keys = post_ok(&app, "/tag-keys", json!({})).await;
    assert!(keys.as_array().unwrap().contains(&json!({"type": "string", "text": "vhost"})));
    assert_eq!(
        post_ok(&app, "/tag-values", json!({"key": "vhost"})).await,
        json!([{"text": "a.example"}, {"text": "b.example"}])
    );
    assert_eq!(post_ok(&app, "/tag-values", json!({"key": "status"})).await, json!([{"text": "200"}, {"text": "500"}]));
    let e = post_err(&app, "/tag-values", json!({"key": "vhost; drop table http"})).await;
    assert!(e.contains("unknown tag key"), "{e}");
}

#[tokio::test]
async fn annotations_from_alerts_and_bans() {
    let (_dir, app) = fixture_app();
    let annotation = json!({"name": "lake events", "datasource": "lake", "enable": true,
                            "iconColor": "rgba(255, 96, 96, 1)", "query": ""});
    let body = |query: &str, to: &str| {
        let mut a = annotation.clone();
        a["query"] = json!(query);
        json!({"range": {"from": "2026-11-22T10:00:00.000Z", "to": to,
                         "raw": {"from": "now-1h", "to": "now"}},
               "rangeRaw": {"from": "now-1h", "to": "now"},
               "annotation": a})
    };
    let all = post_ok(&app, "/annotations", body("", "2026-11-22T11:00:00.000Z")).await;
    let mut a = annotation.clone();
    a["query"] = json!("");
    // The ban of 203.0.113.7 and its unban are one region; the other ban has no end yet.
    assert_eq!(
        all,
        json!([
            {"annotation": a, "time": T0, "title": "disk_full firing",
             "tags": ["alert", "disk_full", "firing", "critical", "n1"], "text": "disk full"},
            {"annotation": a, "time": T0 + 5000, "timeEnd": T0 + 120_000, "isRegion": true,
             "title": "ban 203.0.113.7",
             "tags": ["fail2ban", "sshd", "ban", "n1"], "text": "sshd: ban 203.0.113.7 on n1"},
            {"annotation": a, "time": T0 + 65_000, "title": "ban 203.0.113.9",
             "tags": ["fail2ban", "caddy", "ban", "n2"], "text": "caddy: ban 203.0.113.9 on n2"}
        ])
    );
    // The range ends before the unban: its end is still known.
    let bans = post_ok(&app, "/annotations", body("bans", "2026-11-22T10:01:00.000Z")).await;
    assert_eq!(bans.as_array().unwrap().len(), 1);
    assert_eq!(bans[0]["timeEnd"], T0 + 120_000);
    let alerts = post_ok(&app, "/annotations", body("alerts", "2026-11-22T11:00:00.000Z")).await;
    assert_eq!(alerts.as_array().unwrap().len(), 1);
    let e = post_err(&app, "/annotations", body("nope", "2026-11-22T11:00:00.000Z")).await;
    assert!(e.contains("alerts, bans"), "{e}");
}

/// Alert transitions of several instances, as the rule engine records them.
fn alert_rows(rows: &[(i64, &str, &str, &str)]) -> arrow_array::RecordBatch {
    let mut b = TableBuilder::new(Table::Alerts);
    let c = |b: &TableBuilder, n: &str| b.column(n).unwrap();
    let (ts, host, rule, state, labels, message) =
        (c(&b, "ts"), c(&b, "host"), c(&b, "rule"), c(&b, "state"), c(&b, "labels"), c(&b, "message"));
    for &(secs, r, s, vhost) in rows {
        b.ts(ts, TS + secs * 1_000_000);
        b.text(host, Some("n1"));
        b.text(rule, Some(r));
        b.text(state, Some(s));
        b.map(labels, [("vhost", vhost)]);
        b.text(message, Some(&format!("{r} {s} on {vhost}")));
        b.end_row();
    }
    b.finish().unwrap()
}

#[tokio::test]
async fn annotations_are_regions_from_firing_to_resolved_and_from_ban_to_unban() {
    let dir = tempfile::tempdir().unwrap();
    // a.example: pending, firing, resolved (a region, the resolution folded in);
    // b.example: fires and never resolves (a point); c.example: resolved long after it
    // fired, before the range (a region overlapping the range from before it).
    write_parquet(
        dir.path(),
        Table::Alerts,
        1,
        &alert_rows(&[
            (-7200, "http_5xx_ratio", "firing", "c.example"),
            (100, "http_5xx_ratio", "pending", "a.example"),
            (200, "http_5xx_ratio", "firing", "a.example"),
            (300, "http_5xx_ratio", "firing", "b.example"),
            (500, "http_5xx_ratio", "resolved", "a.example"),
            (900, "http_5xx_ratio", "resolved", "c.example"),
        ]),
    );
    fn ban(secs: i64, host: &'static str, jail: &'static str, action: &'static str, ip: &'static str) -> Row<'static> {
        (secs, host, vec![("jail", Cell::S(jail)), ("action", Cell::S(action)), ("ip", Cell::S(ip))])
    }
    let rows = vec![
        ban(10, "n1", "sshd", "found", "203.0.113.1"),
        ban(20, "n1", "sshd", "ban", "203.0.113.1"),
        // The same address banned by another jail and on another host: separate regions.
        ban(30, "n1", "recidive", "ban", "203.0.113.1"),
        ban(40, "n2", "sshd", "ban", "203.0.113.1"),
        ban(620, "n1", "sshd", "unban", "203.0.113.1"),
        ban(640, "n2", "sshd", "unban", "203.0.113.1"),
        // Banned again later, no unban yet.
        ban(700, "n1", "sshd", "ban", "203.0.113.1"),
    ];
    write_parquet(dir.path(), Table::Bans, 1, &batch(Table::Bans, &rows));
    let app = app_over(dir.path(), &[TOKEN]);
    // simpod-json-datasource's annotation request.
    let request = |query: &str| {
        json!({
            "range": {"from": "2026-11-22T10:00:00.000Z", "to": "2026-11-22T11:00:00.000Z",
                      "raw": {"from": "now-1h", "to": "now"}},
            "rangeRaw": {"from": "now-1h", "to": "now"},
            "annotation": {"name": "incidents", "datasource": {"type": "simpod-json-datasource", "uid": "lake"},
                           "enable": true, "iconColor": "red", "query": query},
            "dashboard": {"uid": "lake-overview"},
            "variables": []
        })
    };
    let alerts = post_ok(&app, "/annotations", request("alerts")).await;
    let summary: Vec<(i64, Option<i64>, String)> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["time"].as_i64().unwrap() - T0,
                e["timeEnd"].as_i64().map(|t| t - T0),
                e["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (-7_200_000, Some(900_000), "http_5xx_ratio firing on c.example".to_string()),
            (100_000, None, "http_5xx_ratio pending on a.example".to_string()),
            (200_000, Some(500_000), "http_5xx_ratio firing on a.example".to_string()),
            (300_000, None, "http_5xx_ratio firing on b.example".to_string()),
        ]
    );
    assert_eq!(alerts[2]["isRegion"], true);
    assert!(alerts[1].get("isRegion").is_none());

    let bans = post_ok(&app, "/annotations", request("bans")).await;
    let summary: Vec<(i64, Option<i64>, String)> = bans
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["time"].as_i64().unwrap() - T0,
                e["timeEnd"].as_i64().map(|t| t - T0),
                e["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (20_000, Some(620_000), "sshd: ban 203.0.113.1 on n1".to_string()),
            (30_000, None, "recidive: ban 203.0.113.1 on n1".to_string()),
            (40_000, Some(640_000), "sshd: ban 203.0.113.1 on n2".to_string()),
            (700_000, None, "sshd: ban 203.0.113.1 on n1".to_string()),
        ]
    );

    // simple-json's older request: range only, no rangeRaw; a range that starts inside
    // the first ban still shows the whole region, and ends folded into it stay hidden.
    let old = json!({"range": {"from": "2026-11-22T10:05:00Z", "to": "2026-11-22T10:11:00Z"},
                     "annotation": {"name": "bans", "enable": true, "query": "bans"}});
    let bans = post_ok(&app, "/annotations", old).await;
    let times: Vec<(i64, Option<i64>)> = bans
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["time"].as_i64().unwrap() - T0, e["timeEnd"].as_i64().map(|t| t - T0)))
        .collect();
    assert_eq!(times, [(20_000, Some(620_000)), (40_000, Some(640_000))]);
}

#[tokio::test]
async fn a_raw_sql_target_leaving_the_sandbox_is_403() {
    let (_dir, app) = fixture_app();
    let targets = json!([{"refId": "A", "target": "select * from read_csv('/etc/passwd')"}]);
    let (status, json) = call(&app, "POST", "/query", Some(query_body(targets, json!([])))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
    let msg = json["error"].as_str().unwrap();
    assert!(msg.starts_with("target A") && msg.contains("no files outside"), "{msg}");
}
