//! Query results in the shapes the JSON datasource plugins read.
//!
//! - Time series: `[{target, datapoints: [[value, epoch_ms], …]}]`. The first timestamp
//!   (or date) column is the time; numeric columns are values; every other column is a
//!   label, and the label values of a row name its series. So `(time, vhost, p95_ms)`
//!   gives one series per vhost, named by the vhost; with several value columns the
//!   column name is appended. Points are sorted by time within a series.
//! - Table: `{type: "table", columns: [{text, type}], rows: [[…]]}`, `type` being
//!   `time` (cells in epoch ms), `number` or `string`.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Float64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};
use serde_json::Value as Json;

use crate::http::error::ApiError;
use lake_query::engine::QueryResult;
use lake_query::output::{json_cell, write_json_cell};

/// `(value, epoch_ms)`: null (or not finite) values stay, as gaps in the graph.
type Point = (Option<f64>, i64);

/// The first time column of a result, if any.
pub(crate) fn time_column(result: &QueryResult) -> Option<usize> {
    result.schema.fields().iter().position(|f| is_time(f.data_type()))
}

fn is_time(ty: &DataType) -> bool {
    matches!(ty, DataType::Timestamp(..) | DataType::Date32 | DataType::Date64)
}

/// Whether the result can be shown as time series: a time column and a numeric one.
pub(crate) fn fits_time_series(result: &QueryResult) -> bool {
    time_column(result).is_some() && result.schema.fields().iter().any(|f| f.data_type().is_numeric())
}

/// The result as time series: the JSON objects of its series, comma-separated, appended
/// to `out` (nothing when it has no rows).
///
/// Written straight as JSON text, byte for byte what serialising
/// `{"datapoints": [[value, epoch_ms], …], "target": name}` values would give (keys in
/// serde_json's sorted order), rather than through a `serde_json::Value` per point: on a
/// 10,000-point panel that tree, and a label `String` allocated per row to find its
/// series, were most of the answer's encoding time. Series are looked up by their name
/// built in a reused buffer; a `String` is allocated once per series.
pub(crate) fn time_series(result: &QueryResult, out: &mut Vec<u8>) -> Result<(), ApiError> {
    let fields = result.schema.fields();
    let Some(time) = time_column(result) else {
        return Err(not_time_series(result));
    };
    let values: Vec<usize> = (0..fields.len()).filter(|&i| i != time && fields[i].data_type().is_numeric()).collect();
    if values.is_empty() {
        return Err(not_time_series(result));
    }
    let labels: Vec<usize> = (0..fields.len()).filter(|&i| i != time && !values.contains(&i)).collect();

    let mut order: Vec<(String, Vec<Point>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let (mut label, mut name) = (String::new(), String::new());
    for batch in &result.batches {
        let times = batch.column(time);
        let numbers: Vec<ArrayRef> = values.iter().map(|&i| as_f64(batch.column(i))).collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            let Some(t) = epoch_ms(times.as_ref(), row) else {
                continue;
            };
            label.clear();
            for (n, &i) in labels.iter().enumerate() {
                if n > 0 {
                    label.push(' ');
                }
                push_text_cell(batch.column(i).as_ref(), row, &mut label);
            }
            for (n, &col) in values.iter().enumerate() {
                name.clear();
                match (label.is_empty(), values.len()) {
                    (true, _) => name.push_str(fields[col].name()),
                    (false, 1) => name.push_str(&label),
                    (false, _) => {
                        name.push_str(&label);
                        name.push(' ');
                        name.push_str(fields[col].name());
                    }
                }
                let v = numbers[n].as_primitive::<Float64Type>();
                let value = (!v.is_null(row)).then(|| v.value(row)).filter(|x| x.is_finite());
                let slot = match index.get(name.as_str()) {
                    Some(&slot) => slot,
                    None => {
                        index.insert(name.clone(), order.len());
                        order.push((name.clone(), Vec::new()));
                        order.len() - 1
                    }
                };
                order[slot].1.push((value, t));
            }
        }
    }
    for (target, mut points) in order {
        points.sort_by_key(|&(_, t)| t);
        separate(out);
        out.extend_from_slice(b"{\"datapoints\":[");
        for (i, (v, t)) in points.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            match v {
                Some(v) => write_json(out, &v)?,
                None => out.extend_from_slice(b"null"),
            }
            out.push(b',');
            write_json(out, &t)?;
            out.push(b']');
        }
        out.extend_from_slice(b"],\"target\":");
        write_json(out, &target)?;
        out.push(b'}');
    }
    Ok(())
}

/// A comma before the next element of the answer's array, unless it is the first.
fn separate(out: &mut Vec<u8>) {
    if out.last().is_some_and(|&b| b != b'[') {
        out.push(b',');
    }
}

/// One JSON scalar (serde_json's own text for it) appended to `out`.
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), ApiError> {
    serde_json::to_writer(&mut *out, value).map_err(|e| ApiError::internal_query(&e))
}

fn not_time_series(result: &QueryResult) -> ApiError {
    let columns: Vec<String> = result
        .schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), lake_query::output::sql_type_name(f.data_type())))
        .collect();
    ApiError::bad_request(format!(
        "a time series needs a timestamp column and a numeric column (got: {}); \
         use format \"table\" for other results",
        columns.join(", ")
    ))
}

/// The result as a table: its JSON object appended to `out` (comma-separated from what
/// `out` holds after its opening `[`), written straight as text, byte for byte what
/// serialising `{"columns": [{"text", "type"}], "rows": [[…]], "type": "table"}` values
/// would give (see [`time_series`] for why).
pub(crate) fn table(result: &QueryResult, out: &mut Vec<u8>) -> Result<(), ApiError> {
    separate(out);
    out.extend_from_slice(b"{\"columns\":[");
    for (n, f) in result.schema.fields().iter().enumerate() {
        let ty = if is_time(f.data_type()) {
            "time"
        } else if f.data_type().is_numeric() {
            "number"
        } else {
            "string"
        };
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"text\":");
        write_json(out, f.name())?;
        out.extend_from_slice(b",\"type\":");
        write_json(out, ty)?;
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"rows\":[");
    let mut first = true;
    for batch in &result.batches {
        // Decimals (DuckDB's HUGEINT sums) have no JSON number form in `json_cell`.
        let prepared: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Decimal128(..) | DataType::Decimal256(..) | DataType::Float16 => as_f64(c),
                _ => Ok(c.clone()),
            })
            .collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'[');
            for (n, c) in prepared.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                if is_time(c.data_type()) {
                    match epoch_ms(c.as_ref(), row) {
                        Some(ms) => write_json(out, &ms)?,
                        None => out.extend_from_slice(b"null"),
                    }
                } else {
                    write_json_cell(c.as_ref(), row, out).map_err(|e| ApiError::internal_query(&e))?;
                }
            }
            out.push(b']');
        }
    }
    out.extend_from_slice(b"],\"type\":\"table\"}");
    Ok(())
}

/// A numeric column as `Float64`.
fn as_f64(column: &ArrayRef) -> Result<ArrayRef, ApiError> {
    arrow_cast::cast(column, &DataType::Float64).map_err(|e| ApiError::internal_query(&e))
}

/// A time cell in Unix epoch milliseconds.
pub(crate) fn epoch_ms(array: &dyn Array, row: usize) -> Option<i64> {
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => array.as_primitive::<TimestampSecondType>().value(row) * 1000,
        DataType::Timestamp(TimeUnit::Millisecond, _) => array.as_primitive::<TimestampMillisecondType>().value(row),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            array.as_primitive::<TimestampMicrosecondType>().value(row).div_euclid(1000)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            array.as_primitive::<TimestampNanosecondType>().value(row).div_euclid(1_000_000)
        }
        DataType::Date32 => i64::from(array.as_primitive::<Date32Type>().value(row)) * 86_400_000,
        DataType::Date64 => array.as_primitive::<Date64Type>().value(row),
        _ => return None,
    })
}

/// [`text_cell`] appended to `buf`, without an allocation for a string cell.
fn push_text_cell(array: &dyn Array, row: usize, buf: &mut String) {
    if array.is_null(row) {
        return;
    }
    match array.data_type() {
        DataType::Utf8 => buf.push_str(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => buf.push_str(array.as_string::<i64>().value(row)),
        DataType::Utf8View => buf.push_str(array.as_string_view().value(row)),
        _ => buf.push_str(&text_cell(array, row)),
    }
}

/// A cell as plain text (strings unquoted), empty for null.
pub(crate) fn text_cell(array: &dyn Array, row: usize) -> String {
    match json_cell(array, row) {
        Json::Null => String::new(),
        Json::String(s) => s,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        Date32Array, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use arrow_schema::{Field, Schema};
    use serde_json::json;

    use super::*;

    /// The answers as they were built before they were written as text: `serde_json`
    /// values, one per point and cell. The text written now must be byte for byte theirs.
    fn series_as_values(result: &QueryResult) -> Vec<Json> {
        let fields = result.schema.fields();
        let time = time_column(result).unwrap();
        let values: Vec<usize> =
            (0..fields.len()).filter(|&i| i != time && fields[i].data_type().is_numeric()).collect();
        let labels: Vec<usize> = (0..fields.len()).filter(|&i| i != time && !values.contains(&i)).collect();
        let mut order: Vec<(String, Vec<Point>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for batch in &result.batches {
            let numbers: Vec<ArrayRef> = values.iter().map(|&i| as_f64(batch.column(i)).unwrap()).collect();
            for row in 0..batch.num_rows() {
                let Some(t) = epoch_ms(batch.column(time).as_ref(), row) else { continue };
                let label =
                    labels.iter().map(|&i| text_cell(batch.column(i).as_ref(), row)).collect::<Vec<_>>().join(" ");
                for (n, &col) in values.iter().enumerate() {
                    let name = match (label.is_empty(), values.len()) {
                        (true, _) => fields[col].name().clone(),
                        (false, 1) => label.clone(),
                        (false, _) => format!("{label} {}", fields[col].name()),
                    };
                    let v = numbers[n].as_primitive::<Float64Type>();
                    let value = (!v.is_null(row)).then(|| v.value(row)).filter(|x| x.is_finite());
                    let slot = *index.entry(name.clone()).or_insert_with(|| {
                        order.push((name, Vec::new()));
                        order.len() - 1
                    });
                    order[slot].1.push((value, t));
                }
            }
        }
        order
            .into_iter()
            .map(|(target, mut points)| {
                points.sort_by_key(|&(_, t)| t);
                let datapoints: Vec<Json> = points.into_iter().map(|(v, t)| json!([v, t])).collect();
                json!({ "target": target, "datapoints": datapoints })
            })
            .collect()
    }

    fn table_as_value(result: &QueryResult) -> Json {
        let columns: Vec<Json> = result
            .schema
            .fields()
            .iter()
            .map(|f| {
                let ty = if is_time(f.data_type()) {
                    "time"
                } else if f.data_type().is_numeric() {
                    "number"
                } else {
                    "string"
                };
                json!({ "text": f.name(), "type": ty })
            })
            .collect();
        let mut rows = Vec::new();
        for batch in &result.batches {
            let prepared: Vec<ArrayRef> = batch
                .columns()
                .iter()
                .map(|c| match c.data_type() {
                    DataType::Decimal128(..) => as_f64(c).unwrap(),
                    _ => c.clone(),
                })
                .collect();
            for row in 0..batch.num_rows() {
                let cells: Vec<Json> = prepared
                    .iter()
                    .map(|c| {
                        if is_time(c.data_type()) {
                            epoch_ms(c.as_ref(), row).map_or(Json::Null, Json::from)
                        } else {
                            json_cell(c.as_ref(), row)
                        }
                    })
                    .collect();
                rows.push(Json::Array(cells));
            }
        }
        json!({ "type": "table", "columns": columns, "rows": rows })
    }

    fn result(columns: Vec<(&str, ArrayRef)>, split: usize) -> QueryResult {
        let schema = Arc::new(Schema::new(
            columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns.into_iter().map(|(_, a)| a).collect()).unwrap();
        // Two batches, as DuckDB hands over larger results.
        let batches = vec![batch.slice(0, split), batch.slice(split, batch.num_rows() - split)];
        QueryResult { schema, batches, truncated: false }
    }

    #[test]
    fn answers_written_as_text_are_the_values_they_replace() {
        let n = 600usize;
        let ts: Vec<Option<i64>> = (0..n)
            .map(|i| (i % 97 != 5).then_some(1_764_000_000_000_000 + ((i * 7919) % n) as i64 * 60_000_123))
            .collect();
        let hosts = ["amber-web", "birch-db", "ü \"quoted\" host", ""];
        let host: Vec<Option<&str>> = (0..n).map(|i| (i % 13 != 0).then_some(hosts[i % hosts.len()])).collect();
        let vhost: Vec<&str> = (0..n).map(|i| if i % 3 == 0 { "a.example" } else { "b.example" }).collect();
        let value: Vec<Option<f64>> = (0..n)
            .map(|i| match i % 11 {
                0 => None,
                1 => Some(f64::NAN),
                2 => Some(f64::INFINITY),
                3 => Some(-0.0),
                _ => Some(i as f64 * 1.37e-3 - 0.25),
            })
            .collect();
        let count: Vec<i64> = (0..n).map(|i| (i * 31 % 1000) as i64).collect();
        let time = || -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(ts.clone()).with_timezone("UTC")) };
        let cases = [
            // (time, label, value): one series per label.
            result(
                vec![
                    ("time", time()),
                    ("host", Arc::new(StringArray::from(host.clone()))),
                    ("v", Arc::new(Float64Array::from(value.clone()))),
                ],
                250,
            ),
            // Two labels and two values: series named "<labels> <column>".
            result(
                vec![
                    ("time", time()),
                    ("host", Arc::new(StringArray::from(host.clone()))),
                    ("vhost", Arc::new(StringArray::from(vhost.clone()))),
                    ("v", Arc::new(Float64Array::from(value.clone()))),
                    ("requests", Arc::new(Int64Array::from(count.clone()))),
                ],
                1,
            ),
            // No label: the value columns name the series.
            result(
                vec![
                    ("time", time()),
                    ("v", Arc::new(Float64Array::from(value.clone()))),
                    ("requests", Arc::new(Int64Array::from(count.clone()))),
                ],
                599,
            ),
            // A date as the time, a decimal as a value.
            result(
                vec![
                    ("day", Arc::new(Date32Array::from((0..n as i32).map(|i| 20_000 + i % 40).collect::<Vec<_>>()))),
                    (
                        "sum",
                        Arc::new(
                            Decimal128Array::from((0..n as i128).map(|i| i * 12_345).collect::<Vec<_>>())
                                .with_precision_and_scale(38, 2)
                                .unwrap(),
                        ),
                    ),
                ],
                0,
            ),
        ];
        for (k, case) in cases.iter().enumerate() {
            let mut out = vec![b'['];
            time_series(case, &mut out).unwrap();
            out.push(b']');
            let expected = serde_json::to_string(&Json::Array(series_as_values(case))).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected, "time series case {k}");

            // Two answers in one array, as a request with two targets gets them.
            let mut out = vec![b'['];
            table(case, &mut out).unwrap();
            table(case, &mut out).unwrap();
            out.push(b']');
            let one = table_as_value(case);
            let expected = serde_json::to_string(&Json::Array(vec![one.clone(), one])).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected, "table case {k}");
        }
        // A result with no row: no series at all, and a table without rows.
        let empty = result(vec![("time", time()), ("v", Arc::new(Float64Array::from(value)))], 0);
        let empty = QueryResult { batches: Vec::new(), ..empty };
        let mut out = vec![b'['];
        time_series(&empty, &mut out).unwrap();
        table(&empty, &mut out).unwrap();
        out.push(b']');
        let expected = serde_json::to_string(&Json::Array(vec![table_as_value(&empty)])).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
