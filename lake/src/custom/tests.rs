use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};

use super::build::{build, epoch_micros, rfc3339_micros};
use super::*;

const NOW: i64 = 1_795_640_000_000_000; // 2026-11-25T19:33:20Z: the rows below are before it (a later ts is refused)

fn registry(dir: &Path, toml_text: &str) -> Registry {
    #[derive(serde::Deserialize)]
    struct Wrapper {
        #[serde(default)]
        custom: config::CustomFile,
    }
    let file: Wrapper = toml::from_str(toml_text).unwrap();
    Registry::open(dir, file.custom.validate().unwrap())
}

fn ingest(r: &Registry, table: &str, body: &str) -> Result<build::Built, EvolveError> {
    let rows = parse::json(body.as_bytes(), 300).map_err(EvolveError::Refused)?;
    build(r, table, "node-a", rows, NOW)
}

fn refused(e: EvolveError) -> CustomError {
    match e {
        EvolveError::Refused(c) => c,
        other => panic!("{other}"),
    }
}

fn columns(s: &CustomSchema) -> Vec<(String, &'static str)> {
    s.columns.iter().map(|c| (c.name.clone(), type_name(c.ty))).collect()
}

#[test]
fn the_first_batch_infers_and_later_ones_add_columns_but_never_change_types() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path(), "");
    let b1 = ingest(
        &r,
        "signups",
        r#"{"ts": "2026-11-25T10:00:00Z", "plan": "pro", "amount": 10, "trial": true, "meta": {"utm": "x"}}
{"ts": 1795000000, "plan": "free", "amount": 2.5, "trial": false, "seen": "2026-11-25T09:00:00+01:00"}
"#,
    )
    .unwrap();
    assert_eq!(
        columns(&b1.schema),
        vec![("amount".into(), "float64"), ("meta".into(), "string"), ("plan".into(), "string"), ("trial".into(), "bool"), ("seen".into(), "timestamp")]
    );
    let ts = b1.batch.column(0).as_primitive::<TimestampMicrosecondType>();
    assert_eq!((ts.value(0), ts.value(1)), (rfc3339_micros("2026-11-25T10:00:00Z").unwrap(), 1_795_000_000_000_000));
    assert_eq!(b1.batch.column_by_name("host").unwrap().as_string::<i32>().value(0), "node-a");
    assert_eq!(b1.batch.column_by_name("meta").unwrap().as_string::<i32>().value(0), r#"{"utm":"x"}"#);
    assert_eq!(b1.batch.column_by_name("amount").unwrap().as_primitive::<Float64Type>().value(0), 10.0);
    assert!(dir.path().join("state/custom/signups.json").exists());

    // Second batch: a new column; an int still fits the float column.
    let b2 = ingest(&r, "signups", r#"{"plan": "pro", "amount": 3, "country": "NZ", "seats": 4}"#).unwrap();
    assert_eq!(b2.schema.columns.len(), 7);
    assert_eq!(b2.batch.column(0).as_primitive::<TimestampMicrosecondType>().value(0), NOW, "no ts field: time of receipt");
    assert_eq!(b2.batch.column_by_name("seats").unwrap().as_primitive::<Int64Type>().value(0), 4);

    // Third: a conflicting type is refused with field, line and both types.
    let e = refused(ingest(&r, "signups", "{\"seats\": 1}\n{\"seats\": \"many\"}").unwrap_err());
    assert_eq!(e, CustomError::Conflict { line: 2, field: "seats".into(), expected: "int64", found: "string" });
    assert!(e.to_string().contains("line 2: field \"seats\" holds a string but the column is int64"), "{e}");
    // The schema on disk was not changed by the refused batch and survives a reopen.
    let again = registry(dir.path(), "");
    assert_eq!(again.get("signups").unwrap().columns.len(), 7);
}

#[test]
fn a_lenient_table_keeps_conflicting_values_in_extra() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path(), "[custom.tables.ups]\nlenient = true\nts_field = \"time\"\n");
    ingest(&r, "ups", r#"{"time": 1795000000123, "load": 41}"#).unwrap();
    let b = ingest(&r, "ups", r#"{"time": "yesterday", "load": "n/a", "battery": 99}"#).unwrap();
    assert_eq!(b.lenient_values, 2);
    assert!(b.batch.column_by_name("load").unwrap().is_null(0));
    let extra = b.batch.column_by_name("_extra").unwrap().as_string::<i32>().value(0).to_string();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&extra).unwrap(), serde_json::json!({"time": "yesterday", "load": "n/a"}));
    assert_eq!(b.batch.column(0).as_primitive::<TimestampMicrosecondType>().value(0), NOW);
    assert!(r.get("ups").unwrap().column("time").is_none(), "the ts field becomes ts, not a column");
}

#[test]
fn csv_with_quoting_and_embedded_newlines() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path(), "");
    let body = "ts,subject,opens,rate\n2026-11-25T08:00:00Z,\"Hello, \"\"world\"\"\nsecond line\",120,0.5\n2026-11-25T09:00:00Z,plain,,1\n";
    let rows = parse::csv(body.as_bytes(), 100).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].fields[1].1, parse::Value::Text("Hello, \"world\"\nsecond line".into()));
    assert_eq!(rows[1].fields[2].1, parse::Value::Null);
    let b = build(&r, "campaigns", "node-a", rows, NOW).unwrap();
    assert_eq!(columns(&b.schema), vec![("subject".into(), "string"), ("opens".into(), "int64"), ("rate".into(), "float64")]);
    assert!(b.batch.column_by_name("opens").unwrap().is_null(1));
    let e = parse::csv(b"a,b\n1,2,3\n", 100).unwrap_err();
    assert!(matches!(e, CustomError::Parse { line: 2, .. }), "{e}");
}

#[test]
fn ten_thousand_columns_are_refused_before_any_schema_work() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path(), "[custom]\nmax_columns = 50\n");
    let wide: serde_json::Map<String, serde_json::Value> = (0..10_000).map(|i| (format!("c{i}"), i.into())).collect();
    let body = serde_json::Value::Object(wide).to_string();
    let e = parse::json(body.as_bytes(), 52).unwrap_err();
    assert!(e.to_string().contains("10000 fields"), "{e}");
    // Under the per-row ceiling but over the table's limit: refused by the registry.
    let some: serde_json::Map<String, serde_json::Value> = (0..51).map(|i| (format!("c{i}"), i.into())).collect();
    let e = refused(ingest(&r, "wide", &serde_json::Value::Object(some).to_string()).unwrap_err());
    assert!(matches!(e, CustomError::TooManyColumns { columns: 51, limit: 50, .. }), "{e}");
    assert!(r.get("wide").is_none() && !dir.path().join("state/custom/wide.json").exists());
}

#[test]
fn bad_bodies_and_names_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path(), "");
    assert!(matches!(parse::json(b"{\"a\":1}\n[1,2]\n", 10), Err(CustomError::Parse { line: 2, .. })));
    assert!(matches!(parse::json(b"{\"a\":1}\n{\"a\":\xff}\n", 10), Err(CustomError::Parse { line: 2, .. })));
    assert!(matches!(parse::json(b"  \n", 10), Err(CustomError::Empty)));
    let deep = format!("{}{}", "{\"a\":".repeat(200), "}".repeat(200));
    assert!(matches!(parse::json(deep.as_bytes(), 10), Err(CustomError::Parse { .. })));
    assert!(matches!(refused(ingest(&r, "http", "{\"a\":1}").unwrap_err()), CustomError::Name(_)));
    assert!(matches!(refused(ingest(&r, "../x", "{\"a\":1}").unwrap_err()), CustomError::Name(_)));
    let e = refused(ingest(&r, "t", "{\"ts\": \"soon\"}").unwrap_err());
    assert!(e.to_string().contains("not a timestamp"), "{e}");
}

#[test]
fn epochs_in_any_unit() {
    let us = 1_795_000_000_000_000;
    assert_eq!(epoch_micros(1_795_000_000.0), Some(us));
    assert_eq!(epoch_micros(1_795_000_000_000.0), Some(us));
    assert_eq!(epoch_micros(1_795_000_000_000_000.0), Some(us));
    assert_eq!(epoch_micros(1_795_000_000_000_000_000.0), Some(us));
    assert_eq!(epoch_micros(f64::NAN), None);
    assert!(rfc3339_micros("2026-11-25").is_none() && rfc3339_micros("2026-11-25T10:00:00").is_none());
}

#[test]
fn conform_adds_missing_columns_as_null() {
    let mut s = CustomSchema::new("t");
    s.columns.push(CustomColumn { name: "a".into(), ty: ColumnType::Int });
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path(), "");
    let old = ingest(&r, "t", r#"{"a": 1}"#).unwrap().batch;
    s.columns.push(CustomColumn { name: "b".into(), ty: ColumnType::Text });
    let wide = conform_to(&s.arrow_schema(), &old).unwrap();
    assert_eq!(wide.num_columns(), 4);
    assert!(wide.column(3).is_null(0));
}
