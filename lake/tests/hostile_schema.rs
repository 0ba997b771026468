//! One custom table's schema never breaks queries that do not name it (issue 18, part 2),
//! against a real `lake serve`.
//!
//! - Field names differing only in case from a column (`Host` beside `host`, `Level`
//!   beside `level`, in one line, across batches, in CSV headers) → 200, the value kept
//!   in `_extra` under its name, counted on `/metrics`; every query works, before and
//!   after a flush and a restart.
//! - A lake stored before that rule (a schema with both names, Parquet files and a WAL
//!   batch holding both columns) → repaired at start, every value queryable.
//! - A custom table that cannot be read (damaged schema file, a file that is not Parquet)
//!   → only the queries naming it fail, with a message naming it; the others, `SHOW
//!   TABLES` and `/v1/tables` answer.

mod common;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use common::*;
use lake_format::wire;
use serde_json::Value;

/// 2026-11-25T10:00:00Z.
const T0: i64 = 1_795_600_800_000_000;

fn at(minute: i64) -> String {
    format!("2026-11-25T10:{minute:02}:00Z")
}

async fn metric(c: &reqwest::Client, url: &str, name: &str) -> i64 {
    let text = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// The `_extra` objects of `table`, ordered by ts.
async fn extras(c: &reqwest::Client, url: &str, table: &str) -> Vec<Value> {
    let rows = sql(c, url, &format!("SELECT _extra FROM {table} ORDER BY ts")).await;
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().map_or(Value::Null, |s| serde_json::from_str(s).unwrap()))
        .collect()
}

/// 100 metric samples through the Arrow endpoint: the query that must never break.
async fn baseline(c: &reqwest::Client, url: &str) {
    let (s, m) = post(c, url, "metrics", TOKEN, &format!("{NODE}/7/1"), encode(&metrics_batch(1, 100))).await;
    assert_eq!(s, 200, "{m}");
}

fn start(dir: &Path) -> (Lake, std::path::PathBuf, u16) {
    let port = free_port();
    let config = write_config(dir, port, "300ms");
    (Lake::start(&config, port), config, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_differing_only_in_case_go_to_extra_and_every_query_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let (mut lake, config, port) = start(dir.path());
    let (c, url) = (reqwest::Client::new(), lake.url.clone());
    baseline(&c, &url).await;
    let (s, v) = send_custom(
        &c,
        &url,
        "json",
        "other",
        &format!("{NODE}/1/1"),
        &format!("{{\"ts\": \"{}\", \"temp\": 21.5}}", at(0)),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // A table with `level`; then `Host` (the built-in column) and `Level` (the table's).
    let (s, v) = send_custom(
        &c,
        &url,
        "json",
        "app",
        &format!("{NODE}/1/2"),
        &format!("{{\"ts\": \"{}\", \"level\": \"info\", \"msg\": \"a\"}}", at(1)),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let body = format!("{{\"ts\": \"{}\", \"Host\": \"x\", \"Level\": \"WARN\", \"msg\": \"b\"}}\n{{\"ts\": \"{}\", \"HOST\": \"y\", \"level\": \"debug\", \"msg\": \"c\"}}\n", at(2), at(3));
    let (s, app) = send_custom(&c, &url, "json", "app", &format!("{NODE}/1/3"), &body).await;
    assert_eq!(s, 200, "{app}");

    // A fresh table whose one line has both `Level` and `level`, `Host` and `host`.
    let (s, pair) = send_custom(
        &c,
        &url,
        "json",
        "pair",
        &format!("{NODE}/1/4"),
        &format!(
            "{{\"ts\": \"{}\", \"Level\": \"a\", \"level\": \"b\", \"Host\": \"h\", \"host\": \"{NODE}\"}}",
            at(4)
        ),
    )
    .await;
    assert_eq!(s, 200, "{pair}");
    // CSV headers `Level,level`.
    let (s, levels) = send_custom(
        &c,
        &url,
        "csv",
        "levels",
        &format!("{NODE}/1/5"),
        &format!("ts,Level,level,n\n{},A,b,1\n{},C,,2\n", at(5), at(6)),
    )
    .await;
    assert_eq!(s, 200, "{levels}");
    // The query that names none of these tables (it failed on every one of them before).
    assert_eq!(count(&c, &url, "SELECT count(*) FROM metrics").await, 100);
    // Every colliding value was counted (a null has nothing to keep).
    let counted: Vec<Option<i64>> = [&app, &pair, &levels].iter().map(|v| v["case_collisions"].as_i64()).collect();
    assert_eq!(counted, [Some(3), Some(2), Some(1)]);
    assert_eq!(metric(&c, &url, "lake_ingest_case_collisions_total").await, 6);

    let check = || async {
        assert_eq!(count(&c, &url, "SELECT count(*) FROM metrics").await, 100);
        assert_eq!(count(&c, &url, "SELECT count(*) FROM other").await, 1);
        assert_eq!(count(&c, &url, "SELECT count(*) FROM metrics m, other o WHERE m.host = o.host").await, 100);
        let rows = sql(&c, &url, "SELECT level, msg, host FROM app ORDER BY ts").await;
        assert_eq!(rows, serde_json::json!([["info", "a", NODE], [null, "b", NODE], ["debug", "c", NODE]]));
        assert_eq!(
            extras(&c, &url, "app").await,
            [Value::Null, serde_json::json!({"Host": "x", "Level": "WARN"}), serde_json::json!({"HOST": "y"})]
        );
        let rows = sql(&c, &url, "SELECT _extra::JSON->>'Host' FROM app WHERE _extra IS NOT NULL ORDER BY ts").await;
        assert_eq!(rows, serde_json::json!([["x"], [null]]));
        // One of `Level`/`level` is the column, the other's value is in `_extra`.
        let rows = sql(&c, &url, "SELECT Level, host FROM pair").await;
        assert_eq!(rows[0][1], NODE);
        let extra = &extras(&c, &url, "pair").await[0];
        assert_eq!(extra["Host"], "h");
        let kept = rows[0][0].as_str().unwrap();
        assert_eq!(extra[if kept == "a" { "level" } else { "Level" }], if kept == "a" { "b" } else { "a" }, "{extra}");
        let rows = sql(&c, &url, "SELECT \"Level\", n FROM levels ORDER BY ts").await;
        assert_eq!(rows, serde_json::json!([["A", 1], ["C", 2]]));
        assert_eq!(extras(&c, &url, "levels").await, [serde_json::json!({"level": "b"}), Value::Null]);
        let (s, v) = try_sql(&c, &url, "SELECT table_name FROM information_schema.tables ORDER BY 1").await;
        assert_eq!(s, 200, "{v}");
        for t in ["app", "pair", "levels", "other", "metrics"] {
            assert!(v["rows"].as_array().unwrap().iter().any(|r| r[0] == t), "{t} missing from {v}");
        }
    };
    check().await;
    // The schema files hold one column per name.
    let schema = std::fs::read_to_string(dir.path().join("data/state/custom/app.json")).unwrap();
    assert!(!schema.contains("\"Host\"") && !schema.contains("\"Level\""), "{schema}");

    // Flushed to Parquet, then restarted: the same answers from the files.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(dir.path().join("data/tables/app/date=2026-11-25").read_dir().unwrap().count() >= 1);
    lake.term();
    let lake = Lake::start(&config, port);
    check().await;
    drop(lake);
}

/// A record batch of custom table `app` as the lake wrote it before the rule: `ts`,
/// `host`, `Host`, `Level`, `n`, `level` (the schema file's order).
fn old_batch(
    schema: &Arc<Schema>,
    minutes: &[i64],
    host_col: [Option<&str>; 2],
    level_upper: [Option<&str>; 2],
    n: [i64; 2],
    level: [Option<&str>; 2],
) -> RecordBatch {
    let ts: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from(minutes.iter().map(|m| T0 + m * 60_000_000).collect::<Vec<_>>())
            .with_timezone("UTC"),
    );
    let text = |v: [Option<&str>; 2]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
    RecordBatch::try_new(
        Arc::clone(schema),
        vec![
            ts,
            text([Some(NODE), Some(NODE)]),
            text(host_col),
            text(level_upper),
            Arc::new(Int64Array::from(n.to_vec())),
            text(level),
        ],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_stored_before_the_rule_is_repaired_at_start_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The schema file as the lake wrote it: `Host` beside the built-in `host`, `level`
    // beside `Level`; and a healthy table beside it.
    std::fs::create_dir_all(data.join("state/custom")).unwrap();
    let schema_json = r#"{"version": 1, "name": "app", "columns": [
        {"name": "Host", "type": "text"}, {"name": "Level", "type": "text"}, {"name": "n", "type": "int"}, {"name": "level", "type": "text"}]}"#;
    std::fs::write(data.join("state/custom/app.json"), schema_json).unwrap();
    std::fs::write(
        data.join("state/custom/other.json"),
        r#"{"version": 1, "name": "other", "columns": [{"name": "temp", "type": "float"}]}"#,
    )
    .unwrap();
    let ts = Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false);
    let text = |n: &str| Field::new(n, DataType::Utf8, true);
    let schema = Arc::new(Schema::new(vec![
        ts,
        Field::new("host", DataType::Utf8, false),
        text("Host"),
        text("Level"),
        Field::new("n", DataType::Int64, true),
        text("level"),
    ]));
    // Two committed files, written by arrow-rs as the lake's writer does.
    let part = data.join("tables/app/date=2026-11-25");
    std::fs::create_dir_all(&part).unwrap();
    for (i, batch) in [
        old_batch(&schema, &[1, 2], [Some("x"), None], [Some("INFO"), None], [1, 2], [None, Some("warn")]),
        old_batch(&schema, &[3, 4], [None, Some("y")], [None, Some("ERROR")], [3, 4], [Some("debug"), None]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut w = parquet::arrow::ArrowWriter::try_new(
            File::create(part.join(format!("f-00000000000{i}.parquet"))).unwrap(),
            Arc::clone(&schema),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    // And an acknowledged batch still in the WAL.
    {
        let (wal, _) = lake::ingest::wal::Wal::open(&data.join("wal")).unwrap();
        let batch = old_batch(&schema, &[5, 6], [Some("z"), None], [None, None], [5, 6], [Some("trace"), None]);
        let body = wire::encode(&schema, std::slice::from_ref(&batch)).unwrap();
        wal.append(&lake::ingest::wal::WalRecord {
            table: "app".into(),
            batch_id: format!("{NODE}/9/1"),
            body: body.into(),
        })
        .await
        .unwrap();
    }

    let (lake, _config, _port) = start(dir.path());
    let (c, url) = (reqwest::Client::new(), lake.url.clone());
    baseline(&c, &url).await;
    assert_eq!(count(&c, &url, "SELECT count(*) FROM metrics").await, 100);
    assert_eq!(count(&c, &url, "SELECT count(*) FROM other").await, 0);
    let rows = sql(&c, &url, "SELECT n, \"Level\", host FROM app ORDER BY ts").await;
    assert_eq!(
        rows,
        serde_json::json!([
            [1, "INFO", NODE],
            [2, null, NODE],
            [3, null, NODE],
            [4, "ERROR", NODE],
            [5, null, NODE],
            [6, null, NODE]
        ])
    );
    assert_eq!(
        extras(&c, &url, "app").await,
        [
            serde_json::json!({"Host": "x"}),
            serde_json::json!({"level": "warn"}),
            serde_json::json!({"level": "debug"}),
            serde_json::json!({"Host": "y"}),
            serde_json::json!({"Host": "z", "level": "trace"}),
            Value::Null,
        ]
    );
    // The schema keeps one column per name and remembers what it moved; the old files are
    // gone, replaced by rewritten ones. The replayed WAL batch is flushed on the lake's
    // own timing, before or after this look: its file is numbered after the highest flush
    // number on disk (this lake has no state file), never under an old file's name.
    let fixed: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("state/custom/app.json")).unwrap()).unwrap();
    let cols: Vec<&str> = fixed["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(cols, ["Level", "n", "_extra"]);
    assert_eq!(fixed["moved_to_extra"], serde_json::json!(["Host", "level"]));
    let names: Vec<String> =
        part.read_dir().unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let (rewritten, others): (Vec<&String>, Vec<&String>) = names.iter().partition(|n| n.starts_with("r-"));
    assert_eq!(rewritten.len(), 2, "{names:?}");
    assert!(others.iter().all(|n| *n == "f-000000000002.parquet"), "only the replayed batch's flush: {names:?}");
    // New rows keep following the rule.
    let (s, v) = send_custom(
        &c,
        &url,
        "json",
        "app",
        &format!("{NODE}/1/1"),
        &format!("{{\"ts\": \"{}\", \"LEVEL\": \"new\", \"n\": 7}}", at(7)),
    )
    .await;
    assert_eq!((s, v["case_collisions"].as_i64()), (200, Some(1)), "{v}");
    assert_eq!(count(&c, &url, "SELECT count(*) FROM app WHERE _extra LIKE '%LEVEL%'").await, 1);
    // `lake tables` lists it.
    let tables = c.get(format!("{url}/v1/tables?format=json")).bearer_auth(READ_TOKEN).send().await.unwrap();
    assert_eq!(tables.status(), 200);
    let text = tables.text().await.unwrap();
    assert!(text.contains("\"app\"") && text.contains("_extra string"), "{text}");
    drop(lake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_custom_table_fails_only_the_queries_that_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("state/custom")).unwrap();
    // A schema file that is not a schema (an unknown type), and a table whose committed
    // file is not Parquet.
    std::fs::write(
        data.join("state/custom/badschema.json"),
        r#"{"version": 1, "name": "badschema", "columns": [{"name": "a", "type": "nonsense"}]}"#,
    )
    .unwrap();
    std::fs::write(
        data.join("state/custom/badfile.json"),
        r#"{"version": 1, "name": "badfile", "columns": [{"name": "v", "type": "int"}]}"#,
    )
    .unwrap();
    let part = data.join("tables/badfile/date=2026-11-25");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::write(part.join("f-000000000001.parquet"), b"this is not a parquet file").unwrap();

    let (lake, _config, _port) = start(dir.path());
    let (c, url) = (reqwest::Client::new(), lake.url.clone());
    baseline(&c, &url).await;
    let (s, v) =
        send_custom(&c, &url, "json", "good", &format!("{NODE}/1/1"), &format!("{{\"ts\": \"{}\", \"v\": 1}}", at(0)))
            .await;
    assert_eq!(s, 200, "{v}");

    for (table, sql_text) in [
        ("badfile", "SELECT count(*) FROM badfile"),
        ("badschema", "SELECT * FROM badschema"),
        ("badfile", "SELECT count(*) FROM good JOIN badfile USING (ts)"),
    ] {
        let (s, v) = try_sql(&c, &url, sql_text).await;
        let msg = v["error"].as_str().unwrap_or_default();
        assert!((400..500).contains(&s) && msg.contains(&format!("custom table \"{table}\"")), "{sql_text}: {s} {v}");
    }
    assert_eq!(count(&c, &url, "SELECT count(*) FROM metrics").await, 100);
    assert_eq!(count(&c, &url, "SELECT count(*) FROM good").await, 1);
    assert_eq!(count(&c, &url, "SELECT count(*) FROM metrics m JOIN good g ON m.host = g.host").await, 100);
    // Listings leave the broken tables out instead of failing.
    let (s, v) = try_sql(&c, &url, "SHOW TABLES").await;
    assert_eq!(s, 200, "{v}");
    let listed = v["rows"].to_string();
    assert!(
        listed.contains("\"good\"") && listed.contains("\"metrics\"") && !listed.contains("\"badfile\""),
        "{listed}"
    );
    let tables = c.get(format!("{url}/v1/tables?format=json")).bearer_auth(READ_TOKEN).send().await.unwrap();
    assert_eq!(tables.status(), 200);
    let text = tables.text().await.unwrap();
    assert!(
        text.contains("\"good\"")
            && text.contains("\"metrics\"")
            && !text.contains("badfile")
            && !text.contains("badschema"),
        "{text}"
    );
    // The table with the damaged schema takes no rows (that would replace the file).
    let (s, _) = send_custom(&c, &url, "json", "badschema", &format!("{NODE}/1/2"), "{\"a\": 1}").await;
    assert_eq!(s, 500);
    assert!(std::fs::read_to_string(data.join("state/custom/badschema.json")).unwrap().contains("nonsense"));
    drop(lake);
}
