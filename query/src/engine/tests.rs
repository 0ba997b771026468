use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use duckdb::types::Value;
use lake_format::Table;

use super::*;
use crate::test_support::{alert, engine, engine_with, metrics, write_parquet, MemFresh};
use lake_test_support::tree_of;

/// Every cell of the result as text, rows in order.
fn cells(e: &Engine, sql: &str) -> Vec<Vec<String>> {
    let r = e.query_blocking(sql).unwrap_or_else(|err| panic!("{sql}: {err}"));
    let mut out = Vec::new();
    for b in &r.batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| {
                arrow_cast::display::ArrayFormatter::try_new(
                    c.as_ref(),
                    &arrow_cast::display::FormatOptions::new().with_null("NULL"),
                )
                .unwrap()
            })
            .collect();
        for i in 0..b.num_rows() {
            out.push(fmts.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    out
}

fn count(e: &Engine, sql: &str) -> i64 {
    let r = e.query_blocking(sql).unwrap_or_else(|err| panic!("{sql}: {err}"));
    r.batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

fn describe(e: &Engine, table: Table) -> Vec<(String, String)> {
    cells(e, &format!("describe {table}")).into_iter().map(|r| (r[0].clone(), r[1].clone())).collect()
}

fn expected_columns(table: Table) -> Vec<(String, String)> {
    table.columns().map(|c| (c.name.to_string(), views_type(c.ty).to_string())).collect()
}

fn views_type(ty: lake_format::catalog::ColumnType) -> &'static str {
    use lake_format::catalog::ColumnType::*;
    match ty {
        Timestamp => "TIMESTAMP WITH TIME ZONE",
        Text => "VARCHAR",
        Float => "DOUBLE",
        Int => "BIGINT",
        Bool => "BOOLEAN",
        TextMap => "MAP(VARCHAR, VARCHAR)",
        TextList => "VARCHAR[]",
    }
}

#[test]
fn an_empty_lake_has_every_table_with_catalog_columns() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::default());
    for table in Table::ALL {
        assert_eq!(count(&e, &format!("select count(*) from {table}")), 0, "{table}");
        assert_eq!(describe(&e, table), expected_columns(table), "{table}");
    }
}

#[test]
fn files_and_fresh_rows_are_both_read_with_the_same_types() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Metrics, 1, &metrics(&[(0, "n1", "cpu", 10.0, Some("0"))]));
    write_parquet(
        dir.path(),
        Table::Metrics,
        2,
        &metrics(&[(1, "n1", "cpu", 20.0, Some("1")), (2, "n2", "load1", 0.5, None)]),
    );
    // Staging is never read, even when it holds a well-formed file.
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("x.parquet"), b"not parquet").unwrap();

    let fresh = Arc::new(MemFresh::default());
    fresh.set(Table::Metrics, vec![metrics(&[(3, "n2", "cpu", 30.0, Some("0"))])]);
    let e = engine(dir.path(), fresh.clone());

    assert_eq!(count(&e, "select count(*) from metrics"), 4);
    assert_eq!(describe(&e, Table::Metrics), expected_columns(Table::Metrics));
    assert_eq!(
        cells(&e, "select host, value, labels['cpu'] from metrics where name = 'cpu' order by ts"),
        [["n1", "10.0", "0"], ["n1", "20.0", "1"], ["n2", "30.0", "0"]]
    );
    assert_eq!(cells(&e, "select ts::varchar from metrics order by ts limit 1"), [["2026-11-22 10:00:00+00"]]);

    // Fresh rows are re-read on every query.
    fresh.set(Table::Metrics, vec![]);
    assert_eq!(count(&e, "select count(*) from metrics"), 3);
}

#[test]
fn map_and_list_columns_survive_the_appender_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Alerts, 1, &alert("disk", &["mail"]));
    let fresh = Arc::new(MemFresh::default());
    fresh.set(Table::Alerts, vec![alert("cpu", &["mail", "hook"])]);
    let e = engine(dir.path(), fresh);
    assert_eq!(
        cells(&e, "select rule, labels['instance'], len(channels), channels[1] from alerts order by rule"),
        [["cpu", "n1", "2", "mail"], ["disk", "n1", "1", "mail"]]
    );
    assert_eq!(describe(&e, Table::Alerts), expected_columns(Table::Alerts));
}

#[test]
fn read_statements_of_every_form_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::default());
    for sql in [
        "select 1",
        "with a as (select 1 as x) select * from a",
        "values (1), (2)",
        "from metrics",
        "describe metrics",
        "show tables",
        "summarize metrics",
        "explain select * from metrics",
        "EXPLAIN ANALYZE select count(*) from logs",
        "select 1;",
    ] {
        e.query_blocking(sql).unwrap_or_else(|err| panic!("{sql}: {err}"));
    }
}

#[test]
fn escapes_are_forbidden_and_mistakes_are_sql_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("staging")).unwrap();
    let staging = dir.path().join("staging").join("*.parquet");
    let e = engine(dir.path(), Arc::default());
    let forbidden = [
        ("SET threads=1".to_string(), "SET is not allowed: the configuration is locked"),
        ("PRAGMA threads=1".to_string(), "PRAGMA is not allowed"),
        ("RESET threads".to_string(), "RESET is not allowed"),
        ("COPY (select 1) TO '/tmp/x.csv'".to_string(), "COPY is not allowed"),
        ("ATTACH '/tmp/x.db'".to_string(), "ATTACH is not allowed"),
        ("INSTALL httpfs".to_string(), "INSTALL is not allowed"),
        ("LOAD httpfs".to_string(), "LOAD is not allowed"),
        ("CREATE TABLE t(x int)".to_string(), "CREATE statements are not allowed"),
        ("DROP VIEW metrics".to_string(), "DROP statements are not allowed"),
        ("select 1; drop view metrics".to_string(), "DROP statements are not allowed"),
        ("EXPLAIN DROP VIEW metrics".to_string(), "DROP statements are not allowed"),
        (
            "select * from read_csv('/etc/passwd')".to_string(),
            "function read_csv is not allowed: queries may only read the lake's own tables (no files outside",
        ),
        ("select * from read_parquet('/tmp/elsewhere/*.parquet')".to_string(), "no files outside"),
        (format!("select * from read_parquet('{}')", staging.display()), "Permission Error"),
        ("select * from read_text('/etc/hostname')".to_string(), "function read_text is not allowed"),
        (
            "select * from '/etc/passwd'".to_string(),
            "table '/etc/passwd' is not allowed: queries may only read the lake's own tables",
        ),
        ("select * from read_parquet('https://example.com/x.parquet')".to_string(), "no URLs"),
    ];
    for (sql, expected) in forbidden {
        match e.query_blocking(&sql) {
            Err(EngineError::Forbidden(msg)) => assert!(msg.contains(expected), "{sql}: {msg}"),
            other => panic!("{sql}: expected Forbidden, got {other:?}"),
        }
    }
    let mistakes = [
        ("select 1; select 2", "got 2 statements"),
        ("", "empty query"),
        ("select getenv('HOME')", "does not exist"),
        ("selec 1", "Parser Error"),
        ("select nope", "nope"),
    ];
    for (sql, expected) in mistakes {
        match e.query_blocking(sql) {
            Err(EngineError::Sql(msg)) => assert!(msg.contains(expected), "{sql}: {msg}"),
            other => panic!("{sql}: expected a SQL error, got {other:?}"),
        }
    }
}

#[test]
fn the_sandbox_holds_even_without_the_statement_check() {
    // Defence in depth: run setup as a query does, then try the escapes directly.
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), Arc::new(NoFreshRows), Limits::default()).unwrap();
    let mut conn = e.connect().unwrap();
    conn.views_for(&e, "").unwrap();
    for (sql, expected) in [
        ("SET threads=1", "locked"),
        ("SET enable_external_access=true", "locked"),
        ("SET allowed_directories=['/']", "locked"),
        ("SET GLOBAL TimeZone='Europe/Paris'", "locked"),
        ("RESET lock_configuration", "locked"),
        ("PRAGMA threads=1", "locked"),
        ("COPY (select 1) TO '/tmp/x.csv'", "Permission Error"),
        ("ATTACH '/tmp/x.db'", "Permission Error"),
        ("INSTALL httpfs", "Permission Error"),
        ("LOAD httpfs", "Permission Error"),
    ] {
        let err = conn.execute_batch(sql).unwrap_err().to_string();
        assert!(err.contains(expected), "{sql}: {err}");
    }
    let threads: i64 = conn.query_row("select current_setting('threads')", [], |r| r.get(0)).unwrap();
    assert_eq!(threads, 2);
    let tz: String = conn.query_row("select current_setting('TimeZone')", [], |r| r.get(0)).unwrap();
    assert_eq!(tz, "UTC");
}

#[test]
fn a_slow_query_is_interrupted_at_the_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { timeout: Duration::from_millis(200), ..Limits::default() };
    let e = engine_with(dir.path(), Arc::default(), limits);
    let start = Instant::now();
    let r = e.query_blocking("select count(*) from range(1000000000) a, range(1000) b");
    assert!(matches!(r, Err(EngineError::Timeout(d)) if d == Duration::from_millis(200)), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    // A quick query on the same engine is unaffected.
    assert_eq!(count(&e, "select count(*) from range(10)"), 10);
}

#[test]
fn results_are_cut_at_the_row_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { max_rows: 3000, ..Limits::default() };
    let e = engine_with(dir.path(), Arc::default(), limits);

    let r = e.query_blocking("select * from range(10000)").unwrap();
    assert!(r.truncated);
    assert_eq!(r.num_rows(), 3000);
    let last = r.batches.last().unwrap();
    assert_eq!(last.column(0).as_primitive::<Int64Type>().value(last.num_rows() - 1), 2999);

    let r = e.query_blocking("select * from range(3000)").unwrap();
    assert!(!r.truncated);
    assert_eq!(r.num_rows(), 3000);

    let r = e.query_blocking("select * from range(0)").unwrap();
    assert!(!r.truncated);
    assert_eq!(r.num_rows(), 0);
    assert_eq!(r.schema.fields().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_queries_see_their_own_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = Arc::new(MemFresh::default());
    fresh.set(Table::Metrics, vec![metrics(&[(0, "n1", "cpu", 1.0, None)])]);
    let e = engine(dir.path(), fresh);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let e = Arc::clone(&e);
            tokio::spawn(async move { e.query("select count(*) from metrics".into()).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.batches[0].column(0).as_primitive::<Int64Type>().value(0), 1);
    }
}

#[test]
fn the_events_view_unions_every_event_table_with_fresh_rows() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = Arc::new(MemFresh::default());
    let e = engine(dir.path(), Arc::clone(&fresh));
    assert_eq!(count(&e, "select count(*) from events"), 0);
    assert_eq!(
        cells(&e, "select column_name from (describe events)"),
        [["ts"], ["host"], ["table"], ["ip"], ["summary"]].map(|r| r.map(String::from).to_vec()).to_vec()
    );
    // An alert exists only in memory: `events` alone must pull it in.
    fresh.set(Table::Alerts, vec![alert("disk_full", &["email"])]);
    let rows = cells(&e, "select \"table\", summary from events");
    assert_eq!(rows, vec![vec!["alerts".to_string(), "disk_full firing disk full".to_string()]]);
}

/// Writes custom table `name`'s schema (columns after ts and host) and one committed file
/// holding `batch` (whose columns are the schema's).
fn custom_table(
    data: &std::path::Path,
    name: &str,
    columns: &[(&str, lake_format::catalog::ColumnType)],
    batch: &arrow_array::RecordBatch,
) {
    let mut schema = lake_format::custom::CustomSchema::new(name);
    for (n, t) in columns {
        schema.columns.push(lake_format::custom::CustomColumn { name: n.to_string(), ty: *t });
    }
    let path = lake_format::custom::schema_path(data, name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec(&schema).unwrap()).unwrap();
    let dir = lake_format::layout::partition_dir(data, name, lake_format::layout::Date::parse("2026-11-22").unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    let file = std::fs::File::create(dir.join(lake_format::layout::file_name("t", 1))).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.arrow_schema(), None).unwrap();
    w.write(&batch.clone().with_schema(schema.arrow_schema()).unwrap()).unwrap();
    w.close().unwrap();
}

#[test]
fn custom_tables_join_the_events_view_with_an_address_and_a_summary() {
    use arrow_array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use lake_format::catalog::ColumnType::{self, Int, Text, TextMap};
    let dir = tempfile::tempdir().unwrap();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(vec![crate::test_support::TS]).with_timezone("UTC")),
        Arc::new(StringArray::from(vec!["hooks"])),
        Arc::new(StringArray::from(vec![Some("Bounce")])),
        Arc::new(StringArray::from(vec![Some("203.0.113.7")])),
        Arc::new(Int64Array::from(vec![None::<i64>])),
        {
            let mut map = lake_format::rows::text_map_builder();
            map.append(true).unwrap();
            Arc::new(map.finish())
        },
    ];
    let schema = Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("ts", ColumnType::Timestamp.data_type(), false),
        arrow_schema::Field::new("host", Text.data_type(), false),
        arrow_schema::Field::new("Type", Text.data_type(), true),
        arrow_schema::Field::new("client_ip", Text.data_type(), true),
        arrow_schema::Field::new("it's", Int.data_type(), true),
        arrow_schema::Field::new("meta", TextMap.data_type(), true),
    ]));
    let batch = arrow_array::RecordBatch::try_new(schema, cols).unwrap();
    custom_table(
        dir.path(),
        "postmark",
        &[("Type", Text), ("client_ip", Text), ("it's", Int), ("meta", TextMap)],
        &batch,
    );
    // A damaged custom table is left out of `events`, and fails only the queries naming it.
    let bad = lake_format::custom::schema_path(dir.path(), "broken");
    std::fs::write(&bad, b"{not json").unwrap();
    let e = engine(dir.path(), Arc::default());
    let rows = cells(&e, "select \"table\", host, ip, summary from events");
    assert_eq!(
        rows,
        vec![["postmark", "hooks", "203.0.113.7", "Type=Bounce client_ip=203.0.113.7"].map(String::from).to_vec()]
    );
    assert_eq!(count(&e, "select count(*) from events where ip = '203.0.113.7'"), 1);
    assert!(e.query_blocking("select * from broken").is_err());
    // Its columns, for `lake top` and `lake anomalies`.
    let t = e.table_columns("postmark").unwrap();
    assert_eq!(t.column("it's").unwrap(), Some(lake_format::catalog::ColumnType::Int));
    assert!(e.table_columns("nothere").unwrap_err().0.contains("no table \"nothere\""));
}

#[test]
fn parameters_are_bound_as_values() {
    use duckdb::types::Value;
    let dir = tempfile::tempdir().unwrap();
    let batch = metrics(&[(0, "n1", "cpu", 1.0, None)]);
    write_parquet(dir.path(), Table::Metrics, 1, &batch);
    let e = engine(dir.path(), Arc::default());
    let count = |host: &str| {
        let r = e
            .query_params_blocking("select count(*) from metrics where host = ?", vec![Value::Text(host.into())])
            .unwrap();
        r.batches[0].column(0).as_primitive::<Int64Type>().value(0)
    };
    assert_eq!(count("n1"), 1);
    assert_eq!(count("n1' OR '1'='1"), 0);
    let err = e.query_params_blocking("select ?, ?", vec![Value::BigInt(1)]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("2 parameter placeholder(s) but 1"), "{msg}");
    // The sandbox still applies: a parameterised write is refused like any other.
    let sql = "insert into metrics select * from metrics where host = ?";
    let err = e.query_params_blocking(sql, vec![Value::Text("n1".into())]).unwrap_err();
    assert!(matches!(err, EngineError::Forbidden(_)), "{err}");
}

#[test]
fn only_the_tables_a_query_names_get_views_unless_it_lists_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Metrics, 1, &metrics(&[(0, "n1", "cpu", 1.0, None)]));
    let e = engine(dir.path(), Arc::default());
    let views = |sql: &str| -> Vec<String> {
        let mut conn = e.connect_unpooled().unwrap();
        conn.views_for(&e, sql).unwrap();
        let mut names: Vec<String> = conn
            .prepare("select view_name from duckdb_views() where temporary and not internal order by 1")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(views("select count(*) from metrics"), ["metrics"]);
    assert_eq!(views("select 1"), Vec::<String>::new());
    assert_eq!(
        views("select * from events"),
        ["alerts", "bans", "events", "firewall", "http", "logs", "probes", "spans"]
    );
    assert_eq!(views("SHOW TABLES").len(), Table::ALL.len() + 1);
    // Listing the catalog through SQL sees every table.
    let names = cells(&e, "select table_name from information_schema.tables where table_type = 'VIEW' order by 1");
    assert_eq!(names.len(), Table::ALL.len() + 1, "{names:?}");
}

#[test]
fn files_lacking_a_catalog_column_are_read_by_name() {
    // A file from before the catalog gained `labels`, beside a current one.
    let dir = tempfile::tempdir().unwrap();
    let current = metrics(&[(0, "n1", "cpu", 1.0, Some("0"))]);
    write_parquet(dir.path(), Table::Metrics, 1, &current);
    let old = current.project(&[0, 1, 2, 3]).unwrap();
    write_parquet(dir.path(), Table::Metrics, 2, &old);
    let e = engine(dir.path(), Arc::default());
    assert_eq!(cells(&e, "select count(*), count(labels), sum(value) from metrics"), [["2", "1", "2.0"]]);
    assert_eq!(describe(&e, Table::Metrics), expected_columns(Table::Metrics));
    // Files with the catalog's columns skip `union_by_name`; the answer is the same.
    let dir2 = tempfile::tempdir().unwrap();
    write_parquet(dir2.path(), Table::Metrics, 1, &current);
    write_parquet(dir2.path(), Table::Metrics, 2, &current);
    let e2 = engine(dir2.path(), Arc::default());
    assert_eq!(cells(&e2, "select count(*), count(labels) from metrics"), [["2", "2"]]);
    let files = views::list_files(&e2.data_dir, "metrics", &NoFreshRows).unwrap();
    assert!(e2.schemas.uniform(Table::Metrics, &files));
    let files = views::list_files(&e.data_dir, "metrics", &NoFreshRows).unwrap();
    assert!(!e.schemas.uniform(Table::Metrics, &files));
}

#[test]
fn sql_given_as_text_is_refused() {
    // `query()` and `query_table()` run SQL the check would only see as a string.
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Metrics, 1, &metrics(&[(0, "n1", "cpu", 1.0, None)]));
    let e = engine(dir.path(), Arc::default());
    for (sql, function) in [
        ("select * from query('select count(*) from metrics')", "query"),
        ("select * from query('select * from enable_logging()')", "query"),
        ("select * from query('select count(*) from met' || 'rics')", "query"),
        ("select count(*) from query_table('metrics')", "query_table"),
        ("select json_serialize_plan('select 1')", "json_serialize_plan"),
        ("select * from json_execute_serialized_sql(json_serialize_sql('select 1'))", "json_execute_serialized_sql"),
    ] {
        forbidden(&e, sql, &format!("function {function} is not allowed: it parses or runs SQL given as text"));
    }
}

#[test]
fn a_statement_can_be_adapted_to_its_columns_on_one_connection() {
    use duckdb::types::Value;
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Metrics, 1, &metrics(&[(0, "n1", "cpu", 1.0, None), (1, "n2", "cpu", 2.0, None)]));
    let e = engine(dir.path(), Arc::default());
    let sql = "select host, value from metrics where name = ?";
    let params = vec![Value::Text("cpu".into())];
    // The columns are seen, then a wrapper binds one more value.
    let r = e
        .query_params_with_blocking(sql, params.clone(), |columns| {
            assert_eq!(columns, ["host", "value"]);
            let mut bound = vec![Value::Text("cpu".into())];
            bound.push(Value::Text("n2".into()));
            Ok(Some((format!("select * from ({sql}) where host = ?"), bound)))
        })
        .unwrap();
    assert_eq!(r.num_rows(), 1);
    let r = e.query_params_with_blocking(sql, params.clone(), |_| Ok(None)).unwrap();
    assert_eq!(r.num_rows(), 2);
    // A replacement is checked like any statement.
    let err =
        e.query_params_with_blocking(sql, params, |_| Ok(Some(("drop view metrics".into(), Vec::new())))).unwrap_err();
    assert!(matches!(err, EngineError::Forbidden(_)), "{err}");
    // Errors of the statement itself come from binding it.
    let err = e.query_params_with_blocking("select nope from metrics", Vec::new(), |_| Ok(None)).unwrap_err();
    assert!(matches!(&err, EngineError::Sql(m) if m.contains("nope")), "{err}");
}

// ---- the read check's allow-list (issue 18) ----

/// `sql` is refused with a 403 whose message contains `expected`.
fn forbidden(e: &Engine, sql: &str, expected: &str) {
    match e.query_blocking(sql) {
        Err(EngineError::Forbidden(msg)) => assert!(msg.contains(expected), "{sql}: {msg:?} lacks {expected:?}"),
        other => panic!("{sql}: expected Forbidden, got {other:?}"),
    }
}

#[test]
fn the_issues_examples_are_refused_naming_the_function() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Metrics, 1, &metrics(&[(0, "n1", "cpu", 1.0, None)]));
    let tables = dir.path().join("tables");
    let before = tree_of(&tables);
    let e = engine(dir.path(), Arc::default());
    let inside = tables.join("x");
    for (sql, function) in [
        ("SELECT * FROM enable_logging(storage='file', storage_path='/nonexistent')".to_string(), "enable_logging"),
        (
            format!("SELECT * FROM enable_logging(storage='file', storage_path='{}', level='trace')", inside.display()),
            "enable_logging",
        ),
        ("SELECT * FROM enable_profiling()".into(), "enable_profiling"),
        ("SELECT enable_profiling()".into(), "enable_profiling"),
        ("SELECT * FROM truncate_duckdb_logs()".into(), "truncate_duckdb_logs"),
        ("SELECT * FROM checkpoint()".into(), "checkpoint"),
        ("SELECT checkpoint()".into(), "checkpoint"),
        ("SELECT * FROM force_checkpoint()".into(), "force_checkpoint"),
        ("SELECT current_setting('threads')".into(), "current_setting"),
        ("SELECT * FROM disable_logging()".into(), "disable_logging"),
        ("SELECT * FROM duckdb_settings()".into(), "duckdb_settings"),
        ("SELECT * FROM duckdb_logs()".into(), "duckdb_logs"),
        ("SELECT getvariable('x')".into(), "getvariable"),
        ("SELECT nextval('s')".into(), "nextval"),
        ("SELECT setseed(0.5)".into(), "setseed"),
        ("SELECT write_log('x')".into(), "write_log"),
        ("SELECT version()".into(), "version"),
        ("SELECT * FROM pragma_version()".into(), "pragma_version"),
        ("SELECT * FROM glob('/etc/*')".into(), "glob"),
        ("SELECT get_block_size('memory')".into(), "get_block_size"),
        ("SELECT ENABLE_PROFILING()".into(), "enable_profiling"),
        ("SELECT * FROM \"Enable_Logging\"()".into(), "enable_logging"),
    ] {
        forbidden(&e, &sql, &format!("function {function} is not allowed: "));
    }
    // The engine still answers, nothing was rebuilt, and no file or directory appeared.
    assert_eq!(count(&e, "select count(*) from metrics"), 1);
    let stats = e.stats();
    assert_eq!((stats.rebuilds, stats.probe_failures), (0, 0), "{stats:?}");
    assert_eq!(stats.refused, 22, "{stats:?}");
    assert_eq!(tree_of(&tables), before);
}

#[test]
fn a_refused_call_is_found_anywhere_in_the_statement() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::default());
    let cs = "current_setting('threads')";
    for sql in [
        format!("with a as (select {cs} as x) select * from a"),
        format!("with a as (select 1), b as (select * from a, (select {cs})) select * from b"),
        format!("with recursive r(n) as (select 1 union all select n + length({cs}) from r where n < 3) select * from r"),
        format!("select * from (select {cs})"),
        format!("select (select {cs})"),
        format!("select 1 where exists (select {cs})"),
        format!("select 1 where 1 in (select length({cs}))"),
        format!("select * from metrics join logs on {cs} = logs.host"),
        format!("select * from metrics m, lateral (select {cs} || m.host)"),
        format!("select * from metrics order by {cs}"),
        format!("select host from metrics group by host having max({cs}) > ''"),
        format!("select row_number() over (partition by {cs}) from metrics"),
        format!("select 1 from metrics qualify row_number() over (order by {cs}) = 1"),
        format!("select count(*) filter (where {cs} = '2') from metrics"),
        format!("select list_transform([1, 2], x -> x || {cs})"),
        format!("select [x || {cs} for x in ['a']]"),
        format!("select case when true then {cs} end"),
        format!("select coalesce(null, {cs})::int + 1"),
        format!("select 1 union all select {cs}"),
        format!("select 1 except select length({cs})"),
        format!("values ({cs})"),
        format!("from metrics select {cs}"),
        format!("select * from range(length({cs}))"),
        format!("select * from generate_series(1, 3) limit length({cs})"),
        format!("explain select {cs}"),
        format!("EXPLAIN ANALYZE select {cs}"),
        format!("describe select {cs}"),
        format!("summarize select {cs}"),
        format!("select * from (unpivot (select {cs} as a, 1 as b) on a into name k value v)"),
        format!("select columns(c -> {cs} = c) from metrics"),
        format!("select * replace ({cs} as host) from metrics"),
        format!("select {cs} collate nocase"),
        format!("select host from metrics where value between 0 and length({cs})"),
        "select ('threads').current_setting()".to_string(),
        "select host.current_setting() from metrics".to_string(),
        format!("select * from (select 1) t(a) positional join (select {cs})"),
        format!("select * from metrics asof join logs on metrics.host = logs.host and metrics.ts >= logs.ts + to_seconds(length({cs}))"),
    ] {
        forbidden(&e, &sql, "function current_setting is not allowed");
    }
    // A refused table function hides as well as a scalar one.
    forbidden(&e, "with a as (select * from checkpoint()) select * from a", "function checkpoint is not allowed");
    forbidden(
        &e,
        "select * from metrics, (select * from enable_profiling())",
        "function enable_profiling is not allowed",
    );
    forbidden(
        &e,
        "select * from metrics where host in (select * from truncate_duckdb_logs())",
        "function truncate_duckdb_logs",
    );
}

#[test]
fn tables_are_the_lakes_the_statements_ctes_and_the_catalog_listings() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Metrics, 1, &metrics(&[(0, "n1", "cpu", 1.0, None)]));
    let e = engine(dir.path(), Arc::default());
    for sql in [
        "select count(*) from temp.main.metrics",
        "select count(*) from main.metrics",
        "select count(*) from METRICS",
        "with x as (select 1) select * from x, metrics",
        "with duckdb_logs as (select 1 as a) select * from duckdb_logs",
        "with a as (select 1 as n), b as (select n from a) select * from b",
        "select * from information_schema.tables",
        "select * from information_schema.columns where table_name = 'metrics'",
        "select * from duckdb_tables()",
        "select * from duckdb_views",
        "select * from duckdb_columns() where table_name = 'metrics'",
        "show tables",
        "show all tables",
        "describe metrics",
        "show metrics",
        "summarize metrics",
        "select count(*) from events",
    ] {
        e.query_blocking(sql).unwrap_or_else(|err| panic!("{sql}: {err}"));
    }
    for (sql, expected) in [
        ("select * from duckdb_databases", "table duckdb_databases is not allowed: a read may use the lake's tables"),
        ("select * from pg_catalog.pg_settings", "table pg_catalog.pg_settings is not allowed"),
        ("select * from information_schema.schemata", "table information_schema.schemata is not allowed"),
        ("select * from sqlite_master", "table sqlite_master is not allowed"),
        ("select * from duckdb_logs", "table duckdb_logs is not allowed"),
        ("select * from system.main.duckdb_logs", "table system.main.duckdb_logs is not allowed"),
        // A CTE's name is in scope inside its WITH only, not beside it.
        ("select * from (with duckdb_logs as (select 1) select * from duckdb_logs), duckdb_logs", "table duckdb_logs"),
        // A CTE sees the CTEs before it, not itself or later ones.
        ("with a as (select * from duckdb_logs), duckdb_logs as (select 1) select * from a", "table duckdb_logs"),
        ("with duckdb_logs as (select * from duckdb_logs) select * from duckdb_logs", "table duckdb_logs"),
        ("select * from 'https://example.com/x.parquet'", "no URLs"),
        ("show databases", "SHOW databases is not allowed"),
        ("show variables", "SHOW variables is not allowed"),
        ("show tables from main", "SHOW SHOW_FROM is not allowed"),
        ("select pg_catalog.pg_typeof(1)", "function pg_catalog.pg_typeof is not allowed"),
        ("select sum(value) export_state from metrics", "EXPORT_STATE is not allowed"),
    ] {
        forbidden(&e, sql, expected);
    }
    // A table DuckDB would not know either is the 400 DuckDB gives, with the lake's tables.
    match e.query_blocking("select * from metric") {
        Err(EngineError::Sql(msg)) => assert!(
            msg.starts_with("Catalog Error: Table with name metric does not exist") && msg.contains("metrics"),
            "{msg}"
        ),
        other => panic!("{other:?}"),
    }
    // The TEMP tables behind the views are not on the list: to a read they do not exist.
    match e.query_blocking("select * from temp.main.__fresh_metrics") {
        Err(EngineError::Sql(msg)) => assert!(msg.contains("__fresh_metrics does not exist"), "{msg}"),
        other => panic!("{other:?}"),
    }
    match e.query_blocking("select * from rnage(3)") {
        Err(EngineError::Sql(msg)) => assert!(msg.contains("Table Function with name rnage does not exist"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn custom_tables_are_the_lakes_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut schema = lake_format::custom::CustomSchema::new("solar");
    schema
        .columns
        .push(lake_format::custom::CustomColumn { name: "watts".into(), ty: lake_format::catalog::ColumnType::Float });
    let path = lake_format::custom::schema_path(dir.path(), "solar");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec(&schema).unwrap()).unwrap();
    let e = engine(dir.path(), Arc::default());
    assert_eq!(count(&e, "select count(*) from solar"), 0);
    match e.query_blocking("select * from lunar") {
        Err(EngineError::Sql(msg)) => assert!(msg.contains("lunar does not exist"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_allow_list_follows_its_rule() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::default());
    let a = &e.allow;
    // Built-in scalar, aggregate and window functions, operators, binder names, macros.
    for name in [
        "abs",
        "count",
        "count_star",
        "sum",
        "quantile_cont",
        "row_number",
        "lag",
        "+",
        "~~",
        "time_bucket",
        "now",
        "epoch_us",
        "make_timestamptz",
        "regexp_matches",
        "unnest",
        "random",
        "error",
        "date_add",
        "list_sum",
        "nullif",
        "array_append",
        "list_value",
        "struct_pack",
        "concat_ws",
    ] {
        assert!(a.allows(name), "{name} should be allowed");
    }
    // State, settings, logs, sequences, SQL as text, table functions, pg_catalog, macros
    // whose definition reads the engine, internals.
    for name in [
        "current_setting",
        "getvariable",
        "current_database",
        "current_schema",
        "current_catalog",
        "version",
        "nextval",
        "currval",
        "setseed",
        "write_log",
        "json_serialize_sql",
        "json_serialize_plan",
        "sleep_ms",
        "enable_logging",
        "checkpoint",
        "query",
        "read_csv",
        "pg_typeof",
        "get_block_size",
        "finalize",
        "current_query",
        "current_connection_id",
        "__internal_compress_integral_utinyint",
    ] {
        assert!(!a.allows(name), "{name} should be refused");
    }
}

#[test]
fn mistakes_in_function_names_stay_400() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::default());
    match e.query_blocking("select cuont(*) from metrics") {
        Err(EngineError::Sql(msg)) => assert!(msg.contains("Scalar Function with name cuont does not exist"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn statements_as_deep_as_duckdb_parses_are_checked_without_recursion() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::default());
    // 150 terms: deeper than serde_json reads (128 levels of JSON), run end to end.
    let sum = vec!["1"; 150].join(" + ");
    assert_eq!(count(&e, &format!("select ({sum})::bigint")), 150);
    let nested = format!("select count(*) from {}(select 1){}", "(select * from ".repeat(100), ") t".repeat(100));
    assert_eq!(count(&e, &nested), 1);
    // Near DuckDB's own limit of 1,000 levels (thousands of levels of JSON), only checked:
    // DuckDB takes minutes to bind sums that deep.
    let conn = e.connect().unwrap();
    let sum = vec!["1"; 990].join(" + ");
    e.check(&conn, &format!("select {sum}")).unwrap();
    let deep = format!("select {}current_setting('threads'){}", "abs(".repeat(990), ")".repeat(990));
    match e.check(&conn, &deep) {
        Err(EngineError::Forbidden(msg)) => assert!(msg.contains("function current_setting is not allowed"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

/// Every read this repository sends — the default named queries, every target, variable
/// and annotation of the dashboards in `dashboards/grafana/dashboards/` (which the web UI
/// renders too), the web UI's SQL examples and the built-in alert rules — passes the check.
#[test]
fn every_read_the_repository_sends_passes_the_check() {
    use std::collections::BTreeMap;

    use crate::grafana::macros::{expand, MacroContext};
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::default());
    let ctx = |vars: BTreeMap<String, Vec<String>>| MacroContext {
        from_ms: 1_795_300_000_000,
        to_ms: 1_795_341_600_000,
        interval_ms: 60_000,
        vars,
    };
    let mut reads: Vec<(String, String)> = Vec::new();

    for q in crate::named::defaults() {
        // With the query's own defaults, as the Grafana API and /v1/sql fill them in.
        reads.push((format!("named query {}", q.name), expand(&q.sql, &ctx(q.vars.clone())).unwrap().sql));
    }

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboards = root.join("dashboards/grafana/dashboards");
    let mut panels = 0;
    for entry in std::fs::read_dir(&dashboards).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let variables: Vec<String> = dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        // Variable queries.
        for v in dashboard["templating"]["list"].as_array().into_iter().flatten() {
            if let Some(sql) = v["definition"].as_str() {
                reads.push((
                    format!("{} variable {}", path.display(), v["name"]),
                    expand(sql, &ctx(BTreeMap::new())).unwrap().sql,
                ));
            }
        }
        // Targets of panels and annotations: a payload Grafana interpolates, then parses.
        let mut todo = vec![&dashboard];
        while let Some(v) = todo.pop() {
            match v {
                serde_json::Value::Object(o) => {
                    if let Some(payload) = o.get("payload").and_then(|p| p.as_str()) {
                        let mut text = payload.to_string();
                        for name in &variables {
                            for suffix in [",", "}", " ", "\n"] {
                                text = text.replace(&format!("${name}{suffix}"), &format!("[\"a\", \"b\"]{suffix}"));
                            }
                        }
                        let payload: serde_json::Value =
                            serde_json::from_str(&text).unwrap_or_else(|err| panic!("{text}: {err}"));
                        let vars = payload
                            .as_object()
                            .unwrap()
                            .keys()
                            .filter(|k| !["sql", "format"].contains(&k.as_str()))
                            .map(|k| (k.clone(), vec!["a".to_string(), "b".to_string()]))
                            .collect();
                        let Some(sql) = payload["sql"].as_str() else {
                            // A named query's target: its SQL is among the named queries above.
                            let name = o.get("target").and_then(|t| t.as_str()).unwrap_or_default();
                            let named = crate::named::defaults().iter().any(|q| q.name == name);
                            assert!(named, "{}: target {name:?} has no sql and names no named query", path.display());
                            todo.extend(o.values());
                            continue;
                        };
                        reads.push((format!("{} target", path.display()), expand(sql, &ctx(vars)).unwrap().sql));
                        panels += 1;
                    }
                    todo.extend(o.values());
                }
                serde_json::Value::Array(a) => todo.extend(a),
                _ => {}
            }
        }
    }
    assert!(panels > 50, "only {panels} dashboard targets found");

    // The web UI's examples: `['title', "SQL"],` lines of lake/ui/sql.js.
    let ui = std::fs::read_to_string(root.join("lake/ui/sql.js")).unwrap();
    let mut examples = 0;
    for line in ui.lines().map(str::trim).filter(|l| l.starts_with("['")) {
        let start = line.find(", \"").unwrap() + 3;
        let end = line.rfind("\"]").unwrap();
        let sql = line[start..end].replace("\\n", "\n").replace("\\'", "'").replace("\\\"", "\"");
        reads.push(("web UI example".into(), sql));
        examples += 1;
    }
    assert!(examples >= 5, "{examples} UI examples");

    // `alert_rule_failing` runs no SQL: it is made from the other rules' evaluations.
    for rule in crate::alerts::builtin::defaults(&["n1".to_string()], 2).into_iter().filter(|r| !r.sql.is_empty()) {
        reads.push((format!("alert rule {}", rule.name), crate::alerts::eval::expand_sql(&rule.sql, 0)));
    }

    let conn = e.connect().unwrap();
    for (what, sql) in &reads {
        e.check(&conn, sql).unwrap_or_else(|err| panic!("{what}: {err}\n{sql}"));
    }
    drop(conn);
    // `lake tables` (its own UNION over every table) runs through the same check.
    assert_eq!(e.describe_tables_blocking().unwrap().num_rows(), Table::ALL.len());
}

/// What the check and the probe cost per query (printed; run with `--nocapture`), with
/// bounds loose enough for a loaded debug build: DuckDB's `json_serialize_sql` (which the
/// check before the allow-list ran too), then reading and walking its answer.
#[test]
fn check_and_probe_cost_is_small() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::default());
    let sql = "SELECT time_bucket(INTERVAL '60000 milliseconds', ts) AS time, vhost, \
               count(*) FILTER (WHERE status >= 500) / count(*) AS ratio \
               FROM http WHERE ts >= make_timestamptz(1795300000000000) AND ts < make_timestamptz(1795341600000000) \
               AND host IN (?, ?) GROUP BY 1, 2 ORDER BY 1";
    let conn = e.connect().unwrap();
    let runs = 200u32;
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..runs {
            f();
        }
        start.elapsed() / runs
    };
    let serialize = format!("SELECT json_serialize_sql({})", sandbox::quote(sql));
    let json: String = conn.query_row(&serialize, [], |r| r.get(0)).unwrap();
    let parse = time(&mut || {
        let _: String = conn.query_row(&serialize, [], |r| r.get(0)).unwrap();
    });
    let walk = time(&mut || {
        let tree = tree::Tree::parse(&json).unwrap();
        let root = match tree.node(tree.get(0, "statements").unwrap()) {
            tree::Node::Array(s) => s[0],
            _ => unreachable!(),
        };
        allow::check(&tree, root, &e.allow, &|n| e.is_lake_table(n)).unwrap();
    });
    let check = time(&mut || e.check(&conn, sql).unwrap());
    let db = e.current().unwrap();
    let probe = time(&mut || db.probe().unwrap());
    drop(conn);
    // The cheapest whole query, probe included, for scale.
    let query = time(&mut || {
        e.query_blocking("select count(*) from metrics").unwrap();
    });
    eprintln!(
        "read check: {check:?} per query (json_serialize_sql {parse:?}, reading and walking its {} bytes {walk:?}); \
         health probe: {probe:?} per query; a whole `select count(*) from metrics` on an empty lake: {query:?}",
        json.len()
    );
    assert!(check < Duration::from_millis(50), "check {check:?}");
    assert!(probe < Duration::from_millis(20), "probe {probe:?}");
}

// ---- the health probe and the rebuild ----

impl Engine {
    /// Runs `sql` on a query connection with no read check: how a hole nobody has found
    /// yet would reach DuckDB. The connection is probed when it drops, as a query's is.
    fn run_unchecked(&self, sql: &str) -> std::result::Result<(), duckdb::Error> {
        let conn = self.connect().unwrap();
        conn.execute_batch(sql)
    }
}

/// The sandbox is in force on `e`'s current database.
fn assert_sandboxed(e: &Engine) {
    let conn = e.connect().unwrap();
    for (sql, expected) in [
        ("SET threads=1", "locked"),
        ("SET enable_external_access=true", "locked"),
        ("COPY (select 1) TO '/tmp/lake-rebuild-escape.csv'", "Permission Error"),
        ("ATTACH '/tmp/lake-rebuild-escape.db'", "Permission Error"),
    ] {
        let err = conn.execute_batch(sql).unwrap_err().to_string();
        assert!(err.contains(expected), "{sql}: {err}");
    }
    let threads: i64 = conn.query_row("select current_setting('threads')", [], |r| r.get(0)).unwrap();
    assert_eq!(threads, 2);
    let access: bool = conn.query_row("select current_setting('enable_external_access')", [], |r| r.get(0)).unwrap();
    assert!(!access);
}

#[test]
fn a_broken_engine_is_rebuilt_after_the_query_that_broke_it() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Metrics, 1, &metrics(&[(0, "n1", "cpu", 1.0, None)]));
    let e = engine(dir.path(), Arc::default());
    assert_eq!(count(&e, "select count(*) from metrics"), 1);
    let before = e.current().unwrap();
    // The issue's statement, run past the check: DuckDB accepts it, and from then on every
    // statement of that database fails — and closing one of its connections aborts the
    // process. The probe when its connection drops sees it, and the engine is rebuilt.
    e.run_unchecked("SELECT * FROM enable_logging(storage='file', storage_path='/nonexistent')").unwrap();
    let stats = e.stats();
    assert_eq!((stats.probe_failures, stats.rebuilds), (1, 1), "{stats:?}");
    assert!(before.is_broken());
    assert!(!Arc::ptr_eq(&before, &e.current().unwrap()));
    drop(before);
    // The next query works, on a database still sandboxed and still checked.
    assert_eq!(count(&e, "select count(*) from metrics"), 1);
    assert_sandboxed(&e);
    forbidden(
        &e,
        "select * from enable_logging(storage='file', storage_path='/nonexistent')",
        "function enable_logging",
    );
    let stats = e.stats();
    assert_eq!((stats.probe_failures, stats.rebuilds), (1, 1), "{stats:?}");
}

#[test]
fn queries_in_flight_on_a_broken_engine_cost_only_themselves() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Metrics, 1, &metrics(&[(0, "n1", "cpu", 1.0, None)]));
    let e = engine(dir.path(), Arc::default());
    // Connections of queries running beside the one that breaks the database.
    let beside: Vec<_> = (0..4).map(|_| e.connect().unwrap()).collect();
    e.run_unchecked("SELECT * FROM enable_logging(storage='file', storage_path='/nonexistent')").unwrap();
    for conn in &beside {
        assert!(conn.query_row("select 1", [], |r| r.get::<_, i32>(0)).is_err());
    }
    // They end (on other threads at once): leaked, not closed, and no second rebuild.
    std::thread::scope(|s| {
        for conn in beside {
            s.spawn(move || drop(conn));
        }
    });
    let stats = e.stats();
    assert_eq!((stats.probe_failures, stats.rebuilds), (1, 1), "{stats:?}");
    assert_eq!(count(&e, "select count(*) from metrics"), 1);
}

#[test]
fn concurrent_probe_failures_rebuild_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::default());
    // Broken behind every query's back (on the root handle, so no query's probe sees it)…
    e.current()
        .unwrap()
        .with_root(|root| {
            root.execute_batch("SELECT * FROM enable_logging(storage='file', storage_path='/nonexistent')")
                .map_err(|err| EngineError::Internal(err.to_string()))
        })
        .unwrap();
    // …then four queries start on it and fail. Closing such a connection aborts the
    // process (DuckDB throws from its destructor): they must be leaked, not closed.
    let conns: Vec<_> = (0..4).map(|_| e.connect().unwrap()).collect();
    for conn in &conns {
        assert!(conn.query_row("select 1", [], |r| r.get::<_, i32>(0)).is_err());
    }
    // They end at the same moment, each finding the database broken.
    let barrier = std::sync::Barrier::new(conns.len());
    std::thread::scope(|s| {
        for conn in conns {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                drop(conn);
            });
        }
    });
    let stats = e.stats();
    assert_eq!(stats.rebuilds, 1, "{stats:?}");
    assert!((1..=4).contains(&stats.probe_failures), "{stats:?}");
    assert_eq!(count(&e, "select count(*) from range(3)"), 3);
    assert_sandboxed(&e);
}

// ---- reuse of a pooled connection's views, and the read check's cache ----

/// Writes the custom table `name`'s schema file with `columns` (all floats).
fn custom_schema(data: &std::path::Path, name: &str, columns: &[&str]) {
    let mut schema = lake_format::custom::CustomSchema::new(name);
    for c in columns {
        schema
            .columns
            .push(lake_format::custom::CustomColumn { name: (*c).into(), ty: lake_format::catalog::ColumnType::Float });
    }
    let path = lake_format::custom::schema_path(data, name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec(&schema).unwrap()).unwrap();
}

/// Idle connections in the engine's pool.
fn pooled(e: &Engine) -> usize {
    e.current().unwrap().pool.lock().unwrap().len()
}

fn metric_values(e: &Engine) -> Vec<String> {
    cells(e, "select value from metrics order by value").into_iter().map(|r| r[0].clone()).collect()
}

#[test]
fn a_flush_between_two_queries_on_a_pooled_connection_shows_the_new_rows_once() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Metrics, 1, &metrics(&[(0, "n1", "cpu", 1.0, None)]));
    let fresh = Arc::new(MemFresh::default());
    fresh.bump();
    fresh.set(Table::Metrics, vec![metrics(&[(1, "n1", "cpu", 2.0, None)])]);
    let e = engine(dir.path(), Arc::clone(&fresh));
    assert_eq!(metric_values(&e), ["1.0", "2.0"]);
    assert_eq!(pooled(&e), 1, "the connection went back to the pool");

    // The flush: its rows are committed and leave memory in one step, the generation moves.
    write_parquet(dir.path(), Table::Metrics, 2, &metrics(&[(1, "n1", "cpu", 2.0, None)]));
    fresh.set(Table::Metrics, vec![metrics(&[(2, "n1", "cpu", 3.0, None)])]);
    fresh.bump();
    assert_eq!(metric_values(&e), ["1.0", "2.0", "3.0"], "the flushed row once, the new fresh row once");
    assert_eq!(pooled(&e), 1, "one connection served every query");

    // Fresh rows change without a flush: the reused view reads the rows of now.
    fresh.set(Table::Metrics, vec![metrics(&[(2, "n1", "cpu", 3.0, None), (3, "n1", "cpu", 4.0, None)])]);
    assert_eq!(metric_values(&e), ["1.0", "2.0", "3.0", "4.0"]);
    fresh.set(Table::Metrics, Vec::new());
    assert_eq!(metric_values(&e), ["1.0", "2.0"]);

    // The reuse is real: a file committed without a new generation (which the lake never
    // does) is not listed until the generation moves.
    write_parquet(dir.path(), Table::Metrics, 3, &metrics(&[(4, "n1", "cpu", 5.0, None)]));
    assert_eq!(metric_values(&e), ["1.0", "2.0"]);
    fresh.bump();
    assert_eq!(metric_values(&e), ["1.0", "2.0", "5.0"]);
}

#[test]
fn a_view_made_without_fresh_rows_gets_them_when_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Metrics, 1, &metrics(&[(0, "n1", "cpu", 1.0, None)]));
    let fresh = Arc::new(MemFresh::default());
    fresh.bump();
    let e = engine(dir.path(), Arc::clone(&fresh));
    // Files alone (no fresh table), then rows arrive at the same generation.
    assert_eq!(metric_values(&e), ["1.0"]);
    fresh.set(Table::Metrics, vec![metrics(&[(1, "n1", "cpu", 2.0, None)])]);
    assert_eq!(metric_values(&e), ["1.0", "2.0"]);
    assert_eq!(pooled(&e), 1);
}

#[test]
fn a_compaction_swap_and_a_restore_show_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let rows =
        |v: &[f64]| metrics(&v.iter().enumerate().map(|(i, &v)| (i as i64, "n1", "cpu", v, None)).collect::<Vec<_>>());
    write_parquet(dir.path(), Table::Metrics, 1, &rows(&[1.0]));
    write_parquet(dir.path(), Table::Metrics, 2, &rows(&[2.0]));
    let fresh = Arc::new(MemFresh::default());
    fresh.bump();
    let e = engine(dir.path(), Arc::clone(&fresh));
    assert_eq!(metric_values(&e), ["1.0", "2.0"]);

    // Compaction: one file replaces two, atomically for queries (a new generation).
    let partition = lake_format::layout::partition_dir(
        dir.path(),
        "metrics",
        lake_format::layout::Date::parse("2026-11-22").unwrap(),
    );
    write_parquet(dir.path(), Table::Metrics, 3, &rows(&[1.0, 2.0]));
    std::fs::remove_file(partition.join(lake_format::layout::file_name("t", 1))).unwrap();
    std::fs::remove_file(partition.join(lake_format::layout::file_name("t", 2))).unwrap();
    fresh.bump();
    assert_eq!(metric_values(&e), ["1.0", "2.0"], "after the swap: the compacted file alone");

    // Restore: a file comes back into an older partition.
    let older = lake_format::layout::partition_dir(
        dir.path(),
        "metrics",
        lake_format::layout::Date::parse("2026-10-01").unwrap(),
    );
    std::fs::create_dir_all(&older).unwrap();
    std::fs::copy(
        partition.join(lake_format::layout::file_name("t", 3)),
        older.join(lake_format::layout::file_name("r", 1)),
    )
    .unwrap();
    fresh.bump();
    assert_eq!(metric_values(&e), ["1.0", "1.0", "2.0", "2.0"], "the restored file is read once");
    assert_eq!(pooled(&e), 1);
}

#[test]
fn a_custom_table_gaining_a_column_shows_it_on_a_pooled_connection() {
    let dir = tempfile::tempdir().unwrap();
    custom_schema(dir.path(), "solar", &["watts"]);
    let fresh = Arc::new(MemFresh::default());
    fresh.bump();
    let e = engine(dir.path(), Arc::clone(&fresh));
    let columns =
        |e: &Engine| -> Vec<String> { cells(e, "describe solar").into_iter().map(|r| r[0].clone()).collect() };
    let before = columns(&e);
    assert!(before.contains(&"watts".to_string()) && !before.contains(&"volts".to_string()), "{before:?}");
    custom_schema(dir.path(), "solar", &["watts", "volts"]);
    let after = columns(&e);
    assert!(after.contains(&"volts".to_string()), "{after:?}");
    assert_eq!(pooled(&e), 1);
}

#[test]
fn idle_pooled_connections_hold_no_fresh_rows() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = Arc::new(MemFresh::default());
    fresh.bump();
    fresh.set(Table::Metrics, vec![metrics(&[(0, "n1", "cpu", 1.0, None)])]);
    let e = engine(dir.path(), Arc::clone(&fresh));
    assert_eq!(count(&e, "select count(*) from metrics"), 1);
    let db = e.current().unwrap();
    let pool = db.pool.lock().unwrap();
    let held: i64 = pool[0].0.query_row("select count(*) from temp.main.__fresh_metrics", [], |r| r.get(0)).unwrap();
    assert_eq!(held, 0);
}

#[test]
fn stale_views_of_tables_a_query_does_not_name_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = Arc::new(MemFresh::default());
    fresh.bump();
    let e = engine(dir.path(), Arc::clone(&fresh));
    count(&e, "select count(*) from http");
    fresh.bump();
    count(&e, "select count(*) from metrics");
    let db = e.current().unwrap();
    let pool = db.pool.lock().unwrap();
    let mut stmt =
        pool[0].0.prepare("select view_name from duckdb_views() where temporary and not internal order by 1").unwrap();
    let names: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(names, ["metrics"]);
}

#[test]
fn a_query_interrupted_at_the_time_limit_does_not_pool_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { timeout: Duration::from_millis(200), ..Limits::default() };
    let e = engine_with(dir.path(), Arc::default(), limits);
    let slow = "select count(*) from range(100000000000) a, range(100000000000) b";
    assert!(matches!(e.query_blocking(slow), Err(EngineError::Timeout(_))));
    assert_eq!(pooled(&e), 0);
    assert_eq!(count(&e, "select count(*) from metrics"), 0);
    assert_eq!(pooled(&e), 1);
}

#[test]
fn the_read_check_is_kept_per_sql_text_but_not_when_it_asked_about_custom_tables() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::default());
    // A named query with parameters: one text, one entry, whatever the values.
    let sql = "select count(*) from metrics where host = ? and value > ?";
    for (host, v) in [("n1", 1.0), ("n2", 2.0)] {
        let r = e.query_params_blocking(sql, vec![Value::Text(host.into()), Value::Double(v)]).unwrap();
        assert_eq!(r.num_rows(), 1);
    }
    assert_eq!(e.checks.len(), 1);
    // Refusals are kept and still counted each time.
    for _ in 0..2 {
        forbidden(&e, "select current_setting('threads')", "current_setting");
    }
    assert_eq!(e.stats().refused, 2);
    assert_eq!(e.checks.len(), 2);
    // A name outside the catalog: unknown now, a custom table a moment later.
    assert!(matches!(e.query_blocking("select * from lunar"), Err(EngineError::Sql(_))));
    custom_schema(dir.path(), "lunar", &["lux"]);
    assert_eq!(count(&e, "select count(*) from lunar"), 0);
    assert!(e.query_blocking("select * from lunar").is_ok(), "not refused from a stale verdict");
    assert_eq!(e.checks.len(), 2, "verdicts about custom tables are not kept");
}

#[test]
fn the_read_check_cache_is_bounded_and_keeps_what_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::default());
    let conn = e.connect().unwrap();
    let hot = "select 0";
    e.check(&conn, hot).unwrap();
    for i in 1..=(CHECK_CACHE_MAX + 10) {
        e.check(&conn, &format!("select {i}")).unwrap();
        e.check(&conn, hot).unwrap();
    }
    assert_eq!(e.checks.len(), CHECK_CACHE_MAX);
    assert!(e.checks.entries().map.contains_key(hot), "the most used text stays");
    let long = format!("select 1 -- {}", "x".repeat(CHECK_CACHE_SQL_MAX));
    e.check(&conn, &long).unwrap();
    assert!(!e.checks.entries().map.contains_key(&long), "long texts are not kept");
}

/// Where the fixed cost of a small query goes (issue 23 §3), printed step by step: a
/// new connection and views made over the listed files (before), against a pooled
/// connection reusing its views and a kept verdict (now). `cargo test --workspace --lib
/// -- engine::tests::query_setup_breakdown --nocapture` shows it.
#[test]
fn query_setup_breakdown() {
    let dir = tempfile::tempdir().unwrap();
    for seq in 0..60 {
        write_parquet(dir.path(), Table::Metrics, seq, &metrics(&[(seq as i64, "n1", "cpu", 1.0, None)]));
    }
    let fresh = Arc::new(MemFresh::default());
    fresh.bump();
    let e = engine(dir.path(), Arc::clone(&fresh));
    let sql = "SELECT time_bucket(INTERVAL '60000 milliseconds', ts) AS time, host, avg(value) \
               FROM metrics WHERE name = ? GROUP BY 1, 2 ORDER BY 1";
    let params = || vec![Value::Text("cpu".into())];
    let runs = 40u32;
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..runs {
            f();
        }
        start.elapsed() / runs
    };
    let lake = |n: &str| e.is_lake_table(n);
    let new_conn = time(&mut || drop(e.connect_unpooled().unwrap().conn.take()));
    let conn = e.connect_unpooled().unwrap();
    let check = time(&mut || sandbox::check_read_only(&conn, sql, &e.allow, &lake).unwrap());
    let kept = time(&mut || e.check(&conn, sql).unwrap());
    drop(conn);
    let made = time(&mut || {
        let mut c = e.connect_unpooled().unwrap();
        c.views_for(&e, sql).unwrap();
        c.conn.take();
    });
    let mut c = e.connect().unwrap();
    c.views_for(&e, sql).unwrap();
    let reused = time(&mut || c.views_for(&e, sql).unwrap());
    let run = time(&mut || {
        run_with_limits(&c, sql, params(), &e.limits).unwrap();
    });
    drop(c);
    let db = e.current().unwrap();
    let probe = time(&mut || db.probe().unwrap());
    let whole = time(&mut || {
        e.query_params_blocking(sql, params()).unwrap();
    });
    eprintln!(
        "a small query over 60 files, per step: new connection {new_conn:?}; read check {check:?} (kept verdict \
         {kept:?}); views made {made:?} (reused {reused:?}); run {run:?}; health probe {probe:?}; \
         the whole query now {whole:?}"
    );
    assert!(reused < made, "reusing views ({reused:?}) costs less than making them ({made:?})");
    assert!(kept < check, "a kept verdict ({kept:?}) costs less than the check ({check:?})");
}

#[test]
fn the_events_view_survives_its_tables_views_being_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = Arc::new(MemFresh::default());
    fresh.bump();
    let e = engine(dir.path(), Arc::clone(&fresh));
    assert_eq!(count(&e, "select count(*) from events"), 0);
    // A new generation: this query drops the views it does not name, `http` among them.
    fresh.bump();
    assert_eq!(count(&e, "select count(*) from metrics"), 0);
    fresh.set(Table::Alerts, vec![alert("disk_full", &["ops"])]);
    assert_eq!(count(&e, "select count(*) from events"), 1);
    fresh.bump();
    assert_eq!(count(&e, "select count(*) from alerts"), 1);
    assert_eq!(count(&e, "select count(*) from events"), 1);
    assert_eq!(pooled(&e), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_query_pools_its_connection_unless_its_reader_went_away() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = Arc::new(MemFresh::default());
    fresh.bump();
    fresh.set(Table::Metrics, vec![metrics(&[(0, "n1", "cpu", 1.0, None)])]);
    let e = engine(dir.path(), Arc::clone(&fresh));
    let mut s =
        e.query_stream("select count(*) from metrics".into(), Vec::new(), 2, |b| Ok(b.num_rows())).await.unwrap();
    let mut rows = 0;
    while let Some(n) = s.next().await.unwrap() {
        rows += n;
    }
    assert_eq!(rows, 1);
    drop(s);
    let pooled_now = || pooled(&e);
    // The query thread hands its connection back just after the end is sent.
    let until = Instant::now() + Duration::from_secs(5);
    while pooled_now() == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pooled_now(), 1, "a stream read to its end pools its connection");

    // A reader that goes away mid-stream interrupts the query: that connection is closed.
    let big = "select * from range(100000000)";
    let mut s = e.query_stream(big.into(), Vec::new(), 1, |b| Ok(b.num_rows())).await.unwrap();
    s.next().await.unwrap();
    drop(s);
    let until = Instant::now() + Duration::from_secs(10);
    while e.stats().running > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(e.stats().cancelled, 1);
    assert_eq!(pooled_now(), 0, "the interrupted query's connection is not pooled");
    // The next query takes a new connection and is not hit by any interrupt.
    let r = e.query("select count(*) from metrics".into()).await.unwrap();
    assert_eq!(r.num_rows(), 1);
}

#[test]
fn the_shared_watchdog_fires_only_the_queries_past_their_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let short =
        engine_with(dir.path(), Arc::default(), Limits { timeout: Duration::from_millis(300), ..Limits::default() });
    let long = engine(dir.path(), Arc::default());
    let slow = "select count(*) from range(100000000000) a, range(100000000000) b";
    let started = Instant::now();
    let interrupted = std::thread::spawn(move || short.query_blocking(slow));
    // Queries with a later deadline run to their end meanwhile, their connections pooled.
    while started.elapsed() < Duration::from_millis(600) {
        assert_eq!(count(&long, "select count(*) from range(1000)"), 1000);
    }
    assert!(matches!(interrupted.join().unwrap(), Err(EngineError::Timeout(_))));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(long.stats().timeouts, 0);
    assert_eq!(pooled(&long), 1);
    // An armed ticket disarmed before its deadline was not fired.
    let w = Watchdog::get().unwrap();
    let conn = long.connect().unwrap();
    let t = w.arm(Instant::now() + Duration::from_secs(60), conn.interrupt_handle());
    assert!(!w.disarm(t));
}

/// The columns an ad-hoc filter's target returns, as `query_params_with_blocking` shows
/// them to its `adapt`.
fn adapt_columns(e: &Engine, sql: &str) -> Vec<String> {
    let seen = std::sync::Mutex::new(Vec::new());
    e.query_params_with_blocking(sql, Vec::new(), |columns| {
        *seen.lock().unwrap() = columns.to_vec();
        Ok(None)
    })
    .unwrap();
    seen.into_inner().unwrap()
}

#[test]
fn ad_hoc_target_columns_are_kept_per_text_and_generation_not_for_custom_tables() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Metrics, 1, &metrics(&[(0, "n1", "cpu", 1.0, None)]));
    custom_schema(dir.path(), "solar", &["watts"]);
    let fresh = Arc::new(MemFresh::default());
    let e = engine(dir.path(), Arc::clone(&fresh));

    // No generation (the CLI's mode): nothing is kept.
    let sql = "select host, value from metrics";
    assert_eq!(adapt_columns(&e, sql), ["host", "value"]);
    assert!(e.columns.0.get(sql).is_none());

    // At a generation: kept for the same text, read again at the next generation.
    fresh.bump();
    assert_eq!(adapt_columns(&e, sql), ["host", "value"]);
    let generation = fresh.generation().unwrap();
    assert!(e.columns.get(sql, generation).is_some(), "kept at the generation it was read at");
    assert_eq!(adapt_columns(&e, sql), ["host", "value"]);
    fresh.bump();
    assert!(e.columns.get(sql, generation + 1).is_none(), "another generation's entry is not used");
    assert_eq!(adapt_columns(&e, sql), ["host", "value"]);
    assert!(e.columns.get(sql, generation + 1).is_some());

    // A custom table gains a column without a new generation: its columns are never kept,
    // and the very next query shows the new one.
    let custom = "select * from solar";
    let before = adapt_columns(&e, custom);
    assert!(before.contains(&"watts".to_string()) && !before.contains(&"volts".to_string()), "{before:?}");
    assert!(e.columns.0.get(custom).is_none(), "a custom table's columns are not kept");
    custom_schema(dir.path(), "solar", &["watts", "volts"]);
    assert!(adapt_columns(&e, custom).contains(&"volts".to_string()));
    // Nor those of `events` (which names every custom table) or of a PIVOT (its columns
    // are values of the data).
    adapt_columns(&e, "select * from events");
    assert!(e.columns.0.get("select * from events").is_none());
    let pivot = "select * from (select host, name, value from metrics) pivot (sum(value) for name in ('cpu'))";
    assert_eq!(adapt_columns(&e, pivot), ["host", "cpu"]);
    assert!(e.columns.0.get(pivot).is_none());
}
