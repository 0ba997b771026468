//! Helpers of the Caddy tests: record batches as JSON rows, and reading a spool back.
#![allow(dead_code, unreachable_pub)]

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde_json::{json, Map, Value};

/// Every row of `batch` as `{"table": …, column: value, …}`; attrs as an object.
pub fn rows_json(table: &str, batch: &RecordBatch) -> Vec<Value> {
    let schema = batch.schema();
    (0..batch.num_rows())
        .map(|r| {
            let mut row = Map::new();
            row.insert("table".into(), json!(table));
            for (f, col) in schema.fields().iter().zip(batch.columns()) {
                let v = if col.is_null(r) {
                    Value::Null
                } else {
                    match f.data_type() {
                        DataType::Timestamp(..) => {
                            json!(col.as_primitive::<TimestampMicrosecondType>().value(r))
                        }
                        DataType::Utf8 => json!(col.as_string::<i32>().value(r)),
                        DataType::Int64 => json!(col.as_primitive::<Int64Type>().value(r)),
                        DataType::Float64 => json!(col.as_primitive::<Float64Type>().value(r)),
                        DataType::Map(..) => {
                            let m = col.as_map();
                            let e = m.value(r);
                            let keys = e.column(0).as_string::<i32>();
                            let vals = e.column(1).as_string::<i32>();
                            let mut o = Map::new();
                            for i in 0..e.len() {
                                o.insert(keys.value(i).to_string(), json!(vals.value(i)));
                            }
                            Value::Object(o)
                        }
                        other => panic!("column {} of type {other} not handled", f.name()),
                    }
                };
                row.insert(f.name().clone(), v);
            }
            Value::Object(row)
        })
        .collect()
}

/// Every record of the spool in `dir` (oldest first) as (seq, table, rows).
pub async fn spooled(dir: &std::path::Path) -> Vec<(u64, String, Vec<Value>)> {
    spooled_tables(dir, |_| true).await
}

/// The records of the tables `keep` selects (a collector's spool also holds its other
/// sources' rows, e.g. `inventory`), as [`spooled`] does.
pub async fn spooled_tables(dir: &std::path::Path, keep: impl Fn(&str) -> bool) -> Vec<(u64, String, Vec<Value>)> {
    use lake_collector::spool::{SpoolHandle, SpoolOptions};
    use std::sync::Arc;
    let opts = SpoolOptions { max_size: 1 << 30, segment_size: 8 << 20 };
    let spool =
        SpoolHandle::open(dir.to_path_buf(), opts, Arc::new(lake_collector::stats::Stats::default())).await.unwrap();
    let mut out = Vec::new();
    while let Some(rec) = spool.peek().await.unwrap() {
        if !keep(&rec.table) {
            spool.ack(rec.seq).await.unwrap();
            continue;
        }
        let (_, batches) = lake_format::wire::decode(&rec.body).unwrap();
        let mut rows = Vec::new();
        for b in &batches {
            rows.extend(rows_json(&rec.table, b));
        }
        out.push((rec.seq, rec.table.clone(), rows));
        spool.ack(rec.seq).await.unwrap();
    }
    out
}

/// Equal, floats within a relative 1e-12 (JSON text round trips are not bit exact).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w)),
        _ => a == b,
    }
}
