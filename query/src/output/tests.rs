use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use lake_format::Table;

use super::*;
use crate::test_support::{alert, metrics};

fn render(format: Format, result: &QueryResult) -> String {
    let mut out = Vec::new();
    write(format, result, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn result(batch: RecordBatch, truncated: bool) -> QueryResult {
    QueryResult { schema: batch.schema(), batches: vec![batch], truncated }
}

fn mixed() -> RecordBatch {
    let long = "x".repeat(80);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![Some("web-1"), None, Some(long.as_str())])),
        Arc::new(Int64Array::from(vec![Some(5), Some(12345), None])),
        Arc::new(Float64Array::from(vec![Some(0.5), Some(-2.0), Some(f64::NAN)])),
        Arc::new(StringArray::from(vec![Some("a,b"), Some("say \"hi\""), Some("two\nlines")])),
    ];
    let schema = Schema::new(vec![
        Field::new("host", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
        Field::new("v", DataType::Float64, true),
        Field::new("note", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(Arc::new(schema), cols).unwrap()
}

#[test]
fn formats_parse_by_name() {
    for f in [Format::Table, Format::Json, Format::Csv, Format::Arrow] {
        assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
    }
    assert_eq!("JSON".parse::<Format>().unwrap(), Format::Json);
    assert!("xml".parse::<Format>().unwrap_err().to_string().contains("\"xml\""));
}

#[test]
fn table_aligns_cuts_and_counts() {
    let expected = format!(
        "\
host{pad} | n     | v    | note
{rule}-+-------+------+-----------
web-1{pad1} |     5 |  0.5 | a,b
NULL{pad} | 12345 | -2.0 | say \"hi\"
{cut}… |  NULL |  NaN | two\\nlines
(3 rows)
",
        pad = " ".repeat(56),
        pad1 = " ".repeat(55),
        rule = "-".repeat(60),
        cut = "x".repeat(59),
    );
    assert_eq!(render(Format::Table, &result(mixed(), false)), expected);
}

#[test]
fn table_footer_says_when_truncated_and_handles_no_rows() {
    let batch = metrics(&[(0, "n1", "load1", 0.25, None)]);
    let out = render(Format::Table, &result(batch.clone(), true));
    assert_eq!(
        out,
        "\
ts                   | host | name  | value | labels
---------------------+------+-------+-------+-------
2026-11-22T10:00:00Z | n1   | load1 |  0.25 | {}
(1 row)
(truncated at 1 rows)
"
    );
    let empty = QueryResult { schema: batch.schema(), batches: vec![], truncated: false };
    assert_eq!(
        render(Format::Table, &empty),
        "ts | host | name | value | labels\n---+------+------+-------+-------\n(0 rows)\n"
    );
}

#[test]
fn csv_quotes_what_needs_quoting() {
    let expected = format!(
        "host,n,v,note\nweb-1,5,0.5,\"a,b\"\n,12345,-2.0,\"say \"\"hi\"\"\"\n{},,NaN,\"two\nlines\"\n",
        "x".repeat(80)
    );
    assert_eq!(render(Format::Csv, &result(mixed(), false)), expected);
}

#[test]
fn json_has_typed_cells_rfc3339_times_maps_and_lists() {
    let out = render(Format::Json, &result(metrics(&[(0, "n1", "cpu", 1.5, Some("0"))]), false));
    assert_eq!(
        out,
        r#"{"columns":[{"name":"ts","type":"TIMESTAMPTZ"},{"name":"host","type":"VARCHAR"},{"name":"name","type":"VARCHAR"},{"name":"value","type":"DOUBLE"},{"name":"labels","type":"MAP(VARCHAR, VARCHAR)"}],"rows":[["2026-11-22T10:00:00Z","n1","cpu",1.5,{"cpu":"0"}]],"truncated":false,"row_count":1}"#
    );
    let out = render(Format::Json, &result(alert("disk", &["mail", "hook"]), true));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"][0][8], serde_json::json!(["mail", "hook"]));
    assert_eq!(v["columns"][8]["type"], "VARCHAR[]");
    assert_eq!(v["truncated"], true);

    let out = render(Format::Json, &result(mixed(), false));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"][1], serde_json::json!([null, 12345, -2.0, "say \"hi\""]));
    assert_eq!(v["rows"][2][2], "NaN");
}

#[test]
fn arrow_round_trips() {
    let batch = alert("disk", &["mail"]);
    let mut out = Vec::new();
    write(Format::Arrow, &result(batch.clone(), false), &mut out).unwrap();
    let (schema, batches) = lake_format::wire::decode(&out).unwrap();
    assert_eq!(schema, Table::Alerts.schema());
    assert_eq!(batches, vec![batch]);
}

/// The JSON written cell by cell is byte for byte the serialised `json_cell` value, for
/// every type it writes itself (timestamps in each unit, zoned or not, over four
/// centuries and both sides of the epoch, every fraction width; floats that JSON cannot
/// hold; strings that need escaping) and for the ones it hands over (maps, lists).
#[test]
fn json_cells_written_directly_match_the_values() {
    use arrow_array::{
        BooleanArray, Float32Array, TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
        TimestampSecondArray, UInt64Array,
    };
    let same = |array: &dyn Array| {
        for i in 0..array.len() {
            let mut direct = Vec::new();
            write_json_cell(array, i, &mut direct).unwrap();
            let via_value = serde_json::to_vec(&json_cell(array, i)).unwrap();
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(via_value).unwrap(),
                "{:?} row {i}",
                array.data_type()
            );
        }
    };
    // Seconds from 1800 to 2200, a prime step so every field varies, plus the edges.
    let mut secs: Vec<i64> = (-5_364_662_400i64..7_258_118_400).step_by(7_919_993).collect();
    secs.extend([0, -1, 1, 86_399, 86_400, -86_400, 951_782_400, 253_402_300_799, -62_167_219_200]);
    let fractions = [0i64, 1, 999, 1_000, 120_000, 999_999, 1_000_000, 5_000_000, 123_456_789, 999_999_999];
    let mut nanos: Vec<i64> = Vec::new();
    for (n, s) in secs.iter().enumerate() {
        // Nanoseconds reach only 1677-2262: the years 0 and 9999 are tested in seconds.
        if let Some(ns) = s.checked_mul(1_000_000_000) {
            nanos.push(ns + fractions[n % fractions.len()]);
        }
    }
    for zone in [None, Some("UTC")] {
        let tz = zone.map(Arc::<str>::from);
        same(&TimestampSecondArray::from(secs.clone()).with_timezone_opt(tz.clone()));
        same(
            &TimestampMillisecondArray::from(nanos.iter().map(|n| n.div_euclid(1_000_000)).collect::<Vec<_>>())
                .with_timezone_opt(tz.clone()),
        );
        same(
            &TimestampMicrosecondArray::from(nanos.iter().map(|n| n.div_euclid(1_000)).collect::<Vec<_>>())
                .with_timezone_opt(tz.clone()),
        );
        same(&TimestampNanosecondArray::from(nanos.clone()).with_timezone_opt(tz.clone()));
        // Years past 9999 and before 0 are chrono's own text.
        same(
            &TimestampSecondArray::from(vec![Some(300_000_000_000), Some(-70_000_000_000), None]).with_timezone_opt(tz),
        );
    }
    same(&Float64Array::from(vec![
        Some(0.0),
        Some(-0.0),
        Some(0.1),
        Some(1e300),
        Some(-2.5e-300),
        Some(f64::NAN),
        Some(f64::INFINITY),
        Some(f64::NEG_INFINITY),
        Some(12345.0),
        None,
    ]));
    same(&Float32Array::from(vec![Some(0.1f32), Some(f32::NAN), Some(3.0), None]));
    same(&Int64Array::from(vec![Some(i64::MIN), Some(-1), Some(0), Some(i64::MAX), None]));
    same(&UInt64Array::from(vec![Some(u64::MAX), Some(0), None]));
    same(&BooleanArray::from(vec![Some(true), Some(false), None]));
    same(&StringArray::from(vec![Some("plain"), Some("q\"uote\\ \n\t\u{1}"), Some("ünï €"), Some(""), None]));
    for batch in [metrics(&[(0, "n1", "cpu", 1.5, Some("0"))]), alert("disk", &["mail", "hook"])] {
        for column in batch.columns() {
            same(column.as_ref());
        }
    }
}
