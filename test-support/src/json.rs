//! Record batches as JSON rows (column name → value) through arrow-json, with the two
//! renderings the tests' expectations are written in: timestamps as integers (the raw
//! value, microseconds in every lake table) rather than RFC 3339 text, and non-finite
//! floats as the strings `"NaN"`, `"inf"`, `"-inf"` rather than arrow-json's `null`, so a
//! NaN sample stays distinguishable from a missing one.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, PrimitiveArray, RecordBatch};
use arrow_json::writer::{JsonArray, NullableEncoder, WriterBuilder};
use arrow_json::{Encoder, EncoderFactory, EncoderOptions};
use arrow_schema::{ArrowError, DataType, FieldRef, TimeUnit};
use serde_json::Value;

/// Every row of `batch` as a JSON object: nulls `null`, maps objects, lists arrays.
pub fn batch_to_json(batch: &RecordBatch) -> Vec<Value> {
    let mut buf = Vec::new();
    let mut w = WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_encoder_factory(Arc::new(TestEncoders))
        .build::<_, JsonArray>(&mut buf);
    w.write(batch).unwrap();
    w.finish().unwrap();
    drop(w);
    if buf.is_empty() {
        return Vec::new();
    }
    match serde_json::from_slice(&buf).unwrap() {
        Value::Array(rows) => rows,
        other => panic!("arrow-json wrote {other}, not an array"),
    }
}

/// [`batch_to_json`] with a `"table": table` key in every row, so rows of several
/// tables can be pooled and still told apart.
pub fn table_rows(table: &str, batch: &RecordBatch) -> Vec<Value> {
    let mut rows = batch_to_json(batch);
    for row in &mut rows {
        row.as_object_mut().expect("a row is an object").insert("table".into(), table.into());
    }
    rows
}

/// Compares `got` with the golden file `expected` (one JSON value a line) value by value
/// with [`same`]; with `LAKE_BLESS` set, writes `got` there instead (review the diff).
pub fn expect_jsonl(expected: &std::path::Path, got: &[Value]) {
    if std::env::var_os("LAKE_BLESS").is_some() {
        let text: String = got.iter().map(|v| format!("{v}\n")).collect();
        std::fs::write(expected, text).unwrap();
        return;
    }
    let want: Vec<Value> = std::fs::read_to_string(expected)
        .unwrap_or_else(|e| panic!("{}: {e} (LAKE_BLESS=1 writes it)", expected.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), want.len(), "{}: value count", expected.display());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(same(g, w), "{} line {}\n got: {g}\nwant: {w}", expected.display(), i + 1);
    }
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

/// The encoders that differ from arrow-json's defaults (see the module docs).
#[derive(Debug)]
struct TestEncoders;

impl EncoderFactory for TestEncoders {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let nulls = array.nulls().cloned();
        let encoder: Box<dyn Encoder + 'a> = match array.data_type() {
            DataType::Timestamp(unit, _) => Box::new(RawTimestamp(match unit {
                TimeUnit::Second => array.as_primitive::<arrow_array::types::TimestampSecondType>().values().to_vec(),
                TimeUnit::Millisecond => {
                    array.as_primitive::<arrow_array::types::TimestampMillisecondType>().values().to_vec()
                }
                TimeUnit::Microsecond => {
                    array.as_primitive::<arrow_array::types::TimestampMicrosecondType>().values().to_vec()
                }
                TimeUnit::Nanosecond => {
                    array.as_primitive::<arrow_array::types::TimestampNanosecondType>().values().to_vec()
                }
            })),
            DataType::Float64 => Box::new(Float(array.as_primitive::<Float64Type>())),
            _ => return Ok(None),
        };
        Ok(Some(NullableEncoder::new(encoder, nulls)))
    }
}

/// A timestamp column's raw integers.
struct RawTimestamp(Vec<i64>);

impl Encoder for RawTimestamp {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0[idx].to_string().as_bytes());
    }
}

/// A float column, non-finite values as strings.
struct Float<'a>(&'a PrimitiveArray<Float64Type>);

impl Encoder for Float<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let v = self.0.value(idx);
        if v.is_finite() {
            serde_json::to_writer(&mut *out, &v).unwrap();
        } else {
            out.extend_from_slice(format!("\"{v}\"").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{MapBuilder, StringBuilder};
    use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow_schema::{Field, Schema};
    use serde_json::json;

    use super::*;

    #[test]
    fn every_column_type_the_tables_use() {
        let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        map.keys().append_value("cpu");
        map.values().append_value("0");
        map.append(true).unwrap();
        map.append(true).unwrap();
        map.append(false).unwrap();
        let map = map.finish();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(vec![1, 2, 3]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
            Arc::new(Int64Array::from(vec![Some(7), Some(-1), None])),
            Arc::new(Float64Array::from(vec![Some(0.5), Some(f64::NAN), Some(f64::NEG_INFINITY)])),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            Arc::new(map.clone()),
        ];
        let schema = Schema::new(vec![
            Field::new("ts", cols[0].data_type().clone(), false),
            Field::new("s", DataType::Utf8, true),
            Field::new("i", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("m", map.data_type().clone(), true),
        ]);
        let batch = RecordBatch::try_new(Arc::new(schema), cols).unwrap();
        assert_eq!(
            batch_to_json(&batch),
            vec![
                json!({"ts": 1, "s": "a", "i": 7, "f": 0.5, "b": true, "m": {"cpu": "0"}}),
                json!({"ts": 2, "s": null, "i": -1, "f": "NaN", "b": false, "m": {}}),
                json!({"ts": 3, "s": "c", "i": null, "f": "-inf", "b": null, "m": null}),
            ]
        );
    }

    #[test]
    fn an_empty_batch_is_no_rows() {
        let schema = Arc::new(Schema::new(vec![Field::new("i", DataType::Int64, true)]));
        assert!(batch_to_json(&RecordBatch::new_empty(schema)).is_empty());
    }
}
