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
use serde_json::{json, Value as Json};

use crate::http::error::ApiError;
use lake_query::engine::QueryResult;
use lake_query::output::json_cell;

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

/// The result as time series.
pub(crate) fn time_series(result: &QueryResult) -> Result<Vec<Json>, ApiError> {
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
    for batch in &result.batches {
        let times = batch.column(time);
        let numbers: Vec<ArrayRef> = values.iter().map(|&i| as_f64(batch.column(i))).collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            let Some(t) = epoch_ms(times.as_ref(), row) else {
                continue;
            };
            let label = labels.iter().map(|&i| text_cell(batch.column(i).as_ref(), row)).collect::<Vec<_>>().join(" ");
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
    Ok(order
        .into_iter()
        .map(|(target, mut points)| {
            points.sort_by_key(|&(_, t)| t);
            let datapoints: Vec<Json> = points.into_iter().map(|(v, t)| json!([v, t])).collect();
            json!({ "target": target, "datapoints": datapoints })
        })
        .collect())
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

/// The result as a table.
pub(crate) fn table(result: &QueryResult) -> Result<Json, ApiError> {
    let fields = result.schema.fields();
    let columns: Vec<Json> = fields
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
    let mut rows = Vec::with_capacity(result.num_rows());
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
    Ok(json!({ "type": "table", "columns": columns, "rows": rows }))
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

/// A cell as plain text (strings unquoted), empty for null.
pub(crate) fn text_cell(array: &dyn Array, row: usize) -> String {
    match json_cell(array, row) {
        Json::Null => String::new(),
        Json::String(s) => s,
        other => other.to_string(),
    }
}
