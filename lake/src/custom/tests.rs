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
        vec![
            ("amount".into(), "float64"),
            ("meta".into(), "string"),
            ("plan".into(), "string"),
            ("trial".into(), "bool"),
            ("seen".into(), "timestamp")
        ]
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
    assert_eq!(
        b2.batch.column(0).as_primitive::<TimestampMicrosecondType>().value(0),
        NOW,
        "no ts field: time of receipt"
    );
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
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&extra).unwrap(),
        serde_json::json!({"time": "yesterday", "load": "n/a"})
    );
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
    assert_eq!(
        columns(&b.schema),
        vec![("subject".into(), "string"), ("opens".into(), "int64"), ("rate".into(), "float64")]
    );
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

fn extra_of(b: &build::Built, row: usize) -> serde_json::Value {
    let col = b.batch.column_by_name(EXTRA_COLUMN).expect("an _extra column");
    if col.is_null(row) {
        return serde_json::Value::Null;
    }
    serde_json::from_str(col.as_string::<i32>().value(row)).unwrap()
}

#[test]
fn names_differing_only_in_case_go_to_extra_never_to_a_new_column() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path(), "");
    // The built-in columns, in a strict (not lenient) table.
    let b = ingest(&r, "app", r#"{"Host": "x", "TS": 5, "_Extra": true, "level": "info"}"#).unwrap();
    assert_eq!(b.case_collisions, 3);
    assert_eq!(columns(&b.schema), vec![("level".into(), "string"), (EXTRA_COLUMN.into(), "string")]);
    assert_eq!(extra_of(&b, 0), serde_json::json!({"Host": "x", "TS": 5, "_Extra": true}));
    assert_eq!(
        b.batch.column_by_name("host").unwrap().as_string::<i32>().value(0),
        "node-a",
        "Host does not set the row's host"
    );
    // A column of the table, in a later batch; and across rows of one batch.
    let b = ingest(&r, "app", "{\"Level\": \"WARN\", \"msg\": \"m\"}\n{\"MSG\": \"n\", \"Msg\": null}\n").unwrap();
    assert_eq!(b.case_collisions, 2, "a null has nothing to keep");
    assert_eq!(extra_of(&b, 0), serde_json::json!({"Level": "WARN"}));
    assert_eq!(extra_of(&b, 1), serde_json::json!({"MSG": "n"}));
    let names: Vec<String> = r.get("app").unwrap().columns.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["level", EXTRA_COLUMN, "msg"]);
    assert!(r.get("app").unwrap().collisions().is_empty());
    // Both in one line of a new table: the first name (in the row's order) keeps the column.
    let b = ingest(&r, "pair", r#"{"Level": "a", "level": "b"}"#).unwrap();
    assert_eq!(b.case_collisions, 1);
    assert_eq!(columns(&b.schema), vec![("Level".into(), "string"), (EXTRA_COLUMN.into(), "string")]);
    assert_eq!(extra_of(&b, 0), serde_json::json!({"level": "b"}));
    // The registry itself never adds a colliding column (a batch racing another).
    let s = r.evolve("pair", &[("LEVEL".into(), ColumnType::Text), ("new".into(), ColumnType::Int)]).unwrap();
    assert!(s.column("LEVEL").is_none() && s.column("new").is_some());
    // Reopened from disk: the same schema.
    assert_eq!(registry(dir.path(), "").get("pair").unwrap().columns, s.columns);
}

#[test]
fn csv_headers_differing_in_case_or_repeated_keep_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path(), "");
    let rows = parse::csv(b"Level,level,n,n,n\nA,b,1,2,3\n", 100).unwrap();
    let b = build(&r, "levels", "node-a", rows, NOW).unwrap();
    assert_eq!(b.case_collisions, 3);
    assert_eq!(
        columns(&b.schema),
        vec![("Level".into(), "string"), ("n".into(), "int64"), (EXTRA_COLUMN.into(), "string")]
    );
    assert_eq!(b.batch.column_by_name("n").unwrap().as_primitive::<Int64Type>().value(0), 1);
    assert_eq!(extra_of(&b, 0), serde_json::json!({"level": "b", "n": 2, "n#2": 3}));
}

#[test]
fn a_table_whose_schema_file_is_damaged_takes_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(custom::schema_dir(dir.path())).unwrap();
    std::fs::write(custom::schema_path(dir.path(), "broken"), b"{").unwrap();
    let r = registry(dir.path(), "");
    let e = ingest(&r, "broken", r#"{"a": 1}"#).unwrap_err();
    assert!(matches!(e, EvolveError::Store(_)) && e.to_string().contains("damaged"), "{e}");
    assert_eq!(std::fs::read(custom::schema_path(dir.path(), "broken")).unwrap(), b"{");
    ingest(&r, "fine", r#"{"a": 1}"#).unwrap();
}

#[test]
fn moved_columns_keep_their_values_in_extra_as_json() {
    use arrow_array::{BooleanArray, Float64Array, TimestampMicrosecondArray};
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path(), "");
    let b = ingest(&r, "t", r#"{"a": 1, "_extra": "kept"}"#).unwrap().batch;
    // As a repair finds them: three columns whose names another column took.
    let when: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from(vec![1_795_600_800_000_001]).with_timezone(lake_format::catalog::TS_TZ),
    );
    let mut fields: Vec<arrow_schema::Field> = b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(arrow_schema::Field::new("When", when.data_type().clone(), true));
    fields.push(arrow_schema::Field::new("A", arrow_schema::DataType::Float64, true));
    fields.push(arrow_schema::Field::new("_extra_", arrow_schema::DataType::Boolean, true));
    let mut cols = b.columns().to_vec();
    cols.extend([
        when,
        Arc::new(Float64Array::from(vec![2.5])) as ArrayRef,
        Arc::new(BooleanArray::from(vec![Some(true)])) as ArrayRef,
    ]);
    let old = RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), cols).unwrap();
    let merged = merge_into_extra(&old, &[4, 5]).unwrap();
    let merged: serde_json::Value = serde_json::from_str(merged.as_string::<i32>().value(0)).unwrap();
    assert_eq!(merged, serde_json::json!({"_extra": "kept", "When": "2026-11-25T10:00:00.000001Z", "A": 2.5}));
    // conform_to moves whatever the schema lacks; without an `_extra` it refuses.
    let conformed = conform_to(&r.get("t").unwrap().arrow_schema(), &old).unwrap();
    let extra: serde_json::Value =
        serde_json::from_str(conformed.column_by_name(EXTRA_COLUMN).unwrap().as_string::<i32>().value(0)).unwrap();
    assert_eq!(extra["_extra_"], true);
    let mut bare = CustomSchema::new("t");
    bare.columns.push(CustomColumn { name: "a".into(), ty: ColumnType::Int });
    assert!(conform_to(&bare.arrow_schema(), &old).unwrap_err().to_string().contains("When"));
}
