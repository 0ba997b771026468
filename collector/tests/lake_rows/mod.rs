//! Test helper shared by the source tests: record batches as JSON rows (column name →
//! value), so a fixture can state every column of every expected row.

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde_json::{Map, Value};

/// Every row of `batch` as a JSON object; maps become objects, nulls `null`.
pub(crate) fn rows(batch: &RecordBatch) -> Vec<Value> {
    let schema = batch.schema();
    (0..batch.num_rows())
        .map(|r| {
            let mut obj = Map::new();
            for (i, f) in schema.fields().iter().enumerate() {
                let col = batch.column(i);
                let v = if col.is_null(r) {
                    Value::Null
                } else {
                    match f.data_type() {
                        DataType::Timestamp(_, _) => {
                            Value::from(col.as_primitive::<TimestampMicrosecondType>().value(r))
                        }
                        DataType::Utf8 => Value::from(col.as_string::<i32>().value(r)),
                        DataType::Int64 => Value::from(col.as_primitive::<Int64Type>().value(r)),
                        DataType::Map(_, _) => {
                            let m = col.as_map().value(r);
                            let keys = m.column(0).as_string::<i32>();
                            let vals = m.column(1).as_string::<i32>();
                            let mut o = Map::new();
                            for j in 0..m.len() {
                                o.insert(keys.value(j).to_string(), Value::from(vals.value(j)));
                            }
                            Value::Object(o)
                        }
                        other => panic!("column {} of type {other} not handled", f.name()),
                    }
                };
                obj.insert(f.name().clone(), v);
            }
            Value::Object(obj)
        })
        .collect()
}
