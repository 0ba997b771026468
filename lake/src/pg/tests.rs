//! Unit tests of the PostgreSQL protocol pieces: the catalog answers against the queries
//! psql 15 and Grafana really send (the fixtures), the message framing limit, parameters.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use pgwire::api::Type;

use super::catalog::{self, Answer, TableInfo};
use super::conn::Limited;
use super::encode;
use super::handler::placeholder_count;
use lake_query::engine::QueryResult;

fn fixture(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn tables() -> Vec<TableInfo> {
    catalog::tables(Path::new("/nonexistent-lake-data"))
}

fn rows(sql: &str) -> QueryResult {
    match catalog::answer(sql, &tables()) {
        Answer::Rows(r) => r,
        other => panic!("{sql}\n→ {other:?}"),
    }
}

/// Column `i` of every row as text (the answers are small).
fn texts(r: &QueryResult, i: usize) -> Vec<String> {
    let f = arrow_cast::display::FormatOptions::default();
    r.batches
        .iter()
        .flat_map(|b| {
            let col = b.column(i).clone();
            let fmt = arrow_cast::display::ArrayFormatter::try_new(col.as_ref(), &f).unwrap();
            (0..b.num_rows()).map(move |j| fmt.value(j).to_string()).collect::<Vec<_>>()
        })
        .collect()
}

fn oid_of(name: &str) -> i64 {
    let r = rows(&fixture("psql15/d-lookup.sql").replace("^(http)$", &format!("^({name})$")));
    r.batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[test]
fn psql_dt_lists_every_lake_table_in_public() {
    let r = rows(&fixture("psql15/dt-list.sql"));
    let names = texts(&r, 1);
    assert!(names.contains(&"http".to_string()) && names.contains(&"metrics".to_string()), "{names:?}");
    assert_eq!(names.len(), lake_format::Table::ALL.len());
    assert!(texts(&r, 0).iter().all(|s| s == "public"));
    assert!(texts(&r, 2).iter().all(|s| s == "table"));
    // `\dt http` filters with psql's anchored pattern; `\d` lists the same tables.
    assert_eq!(texts(&rows(&fixture("psql15/dt-pattern.sql")), 1), vec!["http"]);
    assert_eq!(texts(&rows(&fixture("psql15/d-list-all.sql")), 1), names);
}

#[test]
fn psql_d_table_answers_each_query_psql_sends() {
    let oid = oid_of("http");
    let with_oid = |f: &str| fixture(f).replace("'16384'", &format!("'{oid}'"));
    let info = rows(&with_oid("psql15/d-table.sql"));
    assert_eq!(info.batches[0].num_rows(), 1);
    assert_eq!(info.schema.fields().len(), 15, "the columns psql 15 reads by position");
    let cols = rows(&with_oid("psql15/d-columns.sql"));
    assert_eq!(texts(&cols, 0)[0], "ts");
    assert_eq!(texts(&cols, 1)[0], "timestamp with time zone");
    assert_eq!(cols.schema.fields().len(), 7);
    // \d+: storage, compression, statistics target and the catalog's column docs.
    let plus = rows(&with_oid("psql15/dplus-columns.sql"));
    assert_eq!(plus.schema.fields().len(), 11);
    assert!(!texts(&plus, 10)[0].is_empty(), "ts has its catalog doc as description");
    assert_eq!(rows(&with_oid("psql15/dplus-table.sql")).batches[0].num_rows(), 1);
    for f in ["d-policies", "d-statistics", "d-publications", "d-inherits", "d-partitions"] {
        assert_eq!(rows(&with_oid(&format!("psql15/{f}.sql"))).num_rows(), 0, "{f}");
    }
    // An OID that is no table: nothing, not an error.
    assert_eq!(rows(&fixture("psql15/d-columns.sql").replace("'16384'", "'99999'")).num_rows(), 0);
}

#[test]
fn grafana_metadata_queries_are_answered() {
    assert_eq!(texts(&rows(&fixture("grafana-postgres/version.sql")), 0), vec!["1500"]);
    assert_eq!(rows(&fixture("grafana-postgres/timescaledb.sql")).num_rows(), 0);
    assert_eq!(texts(&rows(&fixture("grafana-postgres/schemas.sql")), 0), vec!["public"]);
    let t = texts(&rows(&fixture("grafana-postgres/tables.sql")), 0);
    assert!(t.contains(&"logs".to_string()), "{t:?}");
    assert_eq!(texts(&rows(&fixture("grafana-postgres/tables-in-schema.sql")), 0), t);
    let c = rows(&fixture("grafana-postgres/columns.sql"));
    assert_eq!(texts(&c, 0)[0], "ts");
    assert!(texts(&c, 1).contains(&"json".to_string()));
    // The data queries are not catalog queries: the engine runs them.
    for f in ["time-group-alias", "time-from-to", "unix-epoch-filter", "table-with-labels"] {
        assert!(
            matches!(catalog::answer(&fixture(&format!("grafana-postgres/{f}.sql")), &tables()), Answer::NotCatalog),
            "{f}"
        );
    }
}

#[test]
fn unknown_catalog_queries_are_refused_with_what_is_answered() {
    match catalog::answer("SELECT rolname FROM pg_catalog.pg_roles", &tables()) {
        Answer::Unsupported(m) => assert!(m.contains("\\dt") && m.contains("information_schema"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(catalog::answer("SELECT 1", &tables()), Answer::NotCatalog));
}

#[test]
fn the_framing_limit_refuses_an_oversized_message_from_its_header() {
    let mut l = Limited::new((), 1024);
    // Startup (untyped, 8 bytes), then a typed Query of 100 bytes, in pieces.
    l.scan(&[0, 0, 0, 8, 0, 3, 0, 0]).unwrap();
    let mut q = vec![b'Q', 0, 0, 0, 100];
    q.extend(vec![b'x'; 96]);
    for chunk in q.chunks(7) {
        l.scan(chunk).unwrap();
    }
    // The next header claims 100 MB: refused at once.
    let e = l.scan(&[b'Q', 5, 245, 225, 0]).unwrap_err();
    assert_eq!((e.len, e.max), (100_000_000, 1024));
    assert!(e.to_string().contains("pg.max_message"));
    // A length under 4 is no message either.
    assert!(Limited::new((), 1024).scan(&[0, 0, 0, 2]).is_err());
}

#[test]
fn parameters_are_counted_outside_quotes_and_typed_by_their_oid() {
    assert_eq!(placeholder_count("select $1, $2 where a = '$3' and \"$4\" = $2 -- $9"), 2);
    assert_eq!(placeholder_count("select 1"), 0);
    use duckdb::types::Value;
    assert_eq!(encode::param(0, &Type::INT8, false, Some(b"42")).unwrap(), Value::BigInt(42));
    assert_eq!(encode::param(0, &Type::INT4, true, Some(&7i32.to_be_bytes())).unwrap(), Value::BigInt(7));
    assert_eq!(encode::param(0, &Type::FLOAT8, false, Some(b"1.5")).unwrap(), Value::Double(1.5));
    assert_eq!(encode::param(0, &Type::BOOL, false, Some(b"t")).unwrap(), Value::Boolean(true));
    assert_eq!(encode::param(0, &Type::UNKNOWN, false, Some(b"x' or 1=1")).unwrap(), Value::Text("x' or 1=1".into()));
    assert_eq!(encode::param(0, &Type::TEXT, false, None).unwrap(), Value::Null);
    // 2000-01-01T00:00:01Z in PostgreSQL's binary form.
    assert_eq!(
        encode::param(0, &Type::TIMESTAMPTZ, true, Some(&1_000_000i64.to_be_bytes())).unwrap(),
        Value::Timestamp(duckdb::types::TimeUnit::Microsecond, 946_684_801_000_000)
    );
    let e = encode::param(1, &Type::INT8, false, Some(b"ten")).unwrap_err();
    assert!(e.to_string().contains("$2"), "{e}");
}

#[test]
fn the_pg_section_is_checked_with_errors_naming_the_key() {
    use crate::config::Config;
    assert!(Config::parse("", |_| None).unwrap().pg.is_none(), "off without the section");
    let c = Config::parse("[pg]\nlisten = \"127.0.0.1:5433\"", |_| None).unwrap().pg.unwrap();
    assert_eq!(c.listen.port(), 5433);
    assert_eq!((c.max_connections, c.max_message), (64, 2 << 20));
    assert!(c.tls.is_none());
    for (text, needle) in [
        ("[pg]\nlisten = \"5433\"", "pg.listen"),
        ("[pg]\nlisten = \"127.0.0.1:5433\"\ntls_cert = \"/x.crt\"", "tls_cert and tls_key"),
        ("[pg]\nlisten = \"127.0.0.1:5433\"\nmax_connections = 0", "pg.max_connections"),
        ("[pg]\nlisten = \"127.0.0.1:5433\"\nidle_timeout = \"0s\"", "pg.idle_timeout"),
        ("[pg]\nlisten = \"127.0.0.1:5433\"\nmax_message = 10", "pg.max_message"),
        ("[pg]\nlisten = \"127.0.0.1:5433\"\nport = 1", "port"),
    ] {
        let e = format!("{:#}", Config::parse(text, |_| None).unwrap_err());
        assert!(e.contains(needle), "{text}: {e}");
    }
}

#[test]
fn floats_are_written_as_postgresql_writes_them() {
    let t = encode::float_text;
    assert_eq!([t(0.0), t(1.0), t(1.5), t(-2.0), t(0.1)], ["0", "1", "1.5", "-2", "0.1"]);
    assert_eq!([t(f64::NAN), t(f64::INFINITY), t(f64::NEG_INFINITY)], ["NaN", "Infinity", "-Infinity"]);
    assert_eq!(t(1e20).parse::<f64>().unwrap(), 1e20);
}
