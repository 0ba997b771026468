use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use lake_format::Table;

use super::*;
use crate::test_support::{alert, engine, engine_with, metrics, write_parquet, MemFresh};

/// Every cell of the result as text, rows in order.
fn cells(e: &Engine, sql: &str) -> Vec<Vec<String>> {
    let r = e
        .query_blocking(sql)
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
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
    let r = e
        .query_blocking(sql)
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
    r.batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

fn describe(e: &Engine, table: Table) -> Vec<(String, String)> {
    cells(e, &format!("describe {table}"))
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect()
}

fn expected_columns(table: Table) -> Vec<(String, String)> {
    table
        .columns()
        .map(|c| (c.name.to_string(), views_type(c.ty).to_string()))
        .collect()
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
        assert_eq!(
            count(&e, &format!("select count(*) from {table}")),
            0,
            "{table}"
        );
        assert_eq!(describe(&e, table), expected_columns(table), "{table}");
    }
}

#[test]
fn files_and_fresh_rows_are_both_read_with_the_same_types() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(
        dir.path(),
        Table::Metrics,
        1,
        &metrics(&[(0, "n1", "cpu", 10.0, Some("0"))]),
    );
    write_parquet(
        dir.path(),
        Table::Metrics,
        2,
        &metrics(&[
            (1, "n1", "cpu", 20.0, Some("1")),
            (2, "n2", "load1", 0.5, None),
        ]),
    );
    // Staging is never read, even when it holds a well-formed file.
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("x.parquet"), b"not parquet").unwrap();

    let fresh = Arc::new(MemFresh::default());
    fresh.set(
        Table::Metrics,
        vec![metrics(&[(3, "n2", "cpu", 30.0, Some("0"))])],
    );
    let e = engine(dir.path(), fresh.clone());

    assert_eq!(count(&e, "select count(*) from metrics"), 4);
    assert_eq!(
        describe(&e, Table::Metrics),
        expected_columns(Table::Metrics)
    );
    assert_eq!(
        cells(
            &e,
            "select host, value, labels['cpu'] from metrics where name = 'cpu' order by ts"
        ),
        [
            ["n1", "10.0", "0"],
            ["n1", "20.0", "1"],
            ["n2", "30.0", "0"]
        ]
    );
    assert_eq!(
        cells(&e, "select ts::varchar from metrics order by ts limit 1"),
        [["2026-11-22 10:00:00+00"]]
    );

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
        cells(
            &e,
            "select rule, labels['instance'], len(channels), channels[1] from alerts order by rule"
        ),
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
        e.query_blocking(sql)
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
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
        ("select * from read_csv('/etc/passwd')".to_string(), "/etc/passwd"),
        ("select * from read_parquet('/tmp/elsewhere/*.parquet')".to_string(), "no files outside"),
        (format!("select * from read_parquet('{}')", staging.display()), "Permission Error"),
        ("select * from read_text('/etc/hostname')".to_string(), "no files outside"),
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
    let conn = e.connect().unwrap();
    views::create(&conn, &e.data_dir, &NoFreshRows, "", &e.schemas).unwrap();
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
    let threads: i64 = conn
        .query_row("select current_setting('threads')", [], |r| r.get(0))
        .unwrap();
    assert_eq!(threads, 2);
    let tz: String = conn
        .query_row("select current_setting('TimeZone')", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tz, "UTC");
}

#[test]
fn a_slow_query_is_interrupted_at_the_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let e = engine_with(dir.path(), Arc::default(), limits);
    let start = Instant::now();
    let r = e.query_blocking("select count(*) from range(1000000000) a, range(1000) b");
    assert!(
        matches!(r, Err(EngineError::Timeout(d)) if d == Duration::from_millis(200)),
        "{r:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    // A quick query on the same engine is unaffected.
    assert_eq!(count(&e, "select count(*) from range(10)"), 10);
}

#[test]
fn results_are_cut_at_the_row_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_rows: 3000,
        ..Limits::default()
    };
    let e = engine_with(dir.path(), Arc::default(), limits);

    let r = e.query_blocking("select * from range(10000)").unwrap();
    assert!(r.truncated);
    assert_eq!(r.num_rows(), 3000);
    let last = r.batches.last().unwrap();
    assert_eq!(
        last.column(0)
            .as_primitive::<Int64Type>()
            .value(last.num_rows() - 1),
        2999
    );

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
    fresh.set(
        Table::Metrics,
        vec![metrics(&[(0, "n1", "cpu", 1.0, None)])],
    );
    let e = engine(dir.path(), fresh);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let e = Arc::clone(&e);
            tokio::spawn(async move { e.query("select count(*) from metrics".into()).await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(
            r.batches[0].column(0).as_primitive::<Int64Type>().value(0),
            1
        );
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

#[test]
fn parameters_are_bound_as_values() {
    use duckdb::types::Value;
    let dir = tempfile::tempdir().unwrap();
    let batch = metrics(&[(0, "n1", "cpu", 1.0, None)]);
    write_parquet(dir.path(), Table::Metrics, 1, &batch);
    let e = engine(dir.path(), Arc::default());
    let count = |host: &str| {
        let r = e
            .query_params_blocking(
                "select count(*) from metrics where host = ?",
                vec![Value::Text(host.into())],
            )
            .unwrap();
        r.batches[0].column(0).as_primitive::<Int64Type>().value(0)
    };
    assert_eq!(count("n1"), 1);
    assert_eq!(count("n1' OR '1'='1"), 0);
    let err = e
        .query_params_blocking("select ?, ?", vec![Value::BigInt(1)])
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("2 parameter placeholder(s) but 1"), "{msg}");
    // The sandbox still applies: a parameterised write is refused like any other.
    let sql = "insert into metrics select * from metrics where host = ?";
    let err = e
        .query_params_blocking(sql, vec![Value::Text("n1".into())])
        .unwrap_err();
    assert!(matches!(err, EngineError::Forbidden(_)), "{err}");
}

#[test]
fn only_the_tables_a_query_names_get_views_unless_it_lists_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Metrics, 1, &metrics(&[(0, "n1", "cpu", 1.0, None)]));
    let e = engine(dir.path(), Arc::default());
    let views = |sql: &str| -> Vec<String> {
        let conn = e.connect().unwrap();
        views::create(&conn, &e.data_dir, &NoFreshRows, sql, &e.schemas).unwrap();
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
    assert_eq!(views("select * from events"), ["alerts", "bans", "events", "firewall", "http", "logs", "probes"]);
    assert_eq!(views("SHOW TABLES").len(), Table::ALL.len() + 1);
    // Listing the catalog through SQL sees every table.
    let names = cells(&e, "select table_name from information_schema.tables where table_type = 'VIEW' order by 1");
    assert_eq!(names.len(), Table::ALL.len() + 1, "{names:?}");
    assert_eq!(count(&e, "select count(*) from query_table('metrics')"), 1);
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
    assert_eq!(
        cells(&e, "select count(*), count(labels), sum(value) from metrics"),
        [["2", "1", "2.0"]]
    );
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
fn sql_inside_the_query_function_is_held_to_a_single_select() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), Table::Metrics, 1, &metrics(&[(0, "n1", "cpu", 1.0, None)]));
    let e = engine(dir.path(), Arc::default());
    for sql in [
        "select * from query('create table x as select 1')",
        "select * from query('attach ''/tmp/x.db''')",
        "select * from query('copy (select 1) to ''/tmp/q.csv''')",
        "select * from query('set threads=1')",
    ] {
        match e.query_blocking(sql) {
            Err(EngineError::Sql(msg)) => assert!(msg.contains("Expected a single SELECT statement"), "{sql}: {msg}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    // A table named only inside the string still resolves: `query` gets every view.
    assert_eq!(count(&e, "select * from query('select count(*) from met' || 'rics')"), 1);
    assert_eq!(count(&e, "select count(*) from query_table('met' || 'rics')"), 1);
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
    let err = e
        .query_params_with_blocking(sql, params, |_| Ok(Some(("drop view metrics".into(), Vec::new()))))
        .unwrap_err();
    assert!(matches!(err, EngineError::Forbidden(_)), "{err}");
    // Errors of the statement itself come from binding it.
    let err = e.query_params_with_blocking("select nope from metrics", Vec::new(), |_| Ok(None)).unwrap_err();
    assert!(matches!(&err, EngineError::Sql(m) if m.contains("nope")), "{err}");
}
