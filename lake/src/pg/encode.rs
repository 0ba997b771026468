//! Arrow results as PostgreSQL rows, and PostgreSQL parameters as the engine's values.
//!
//! Each Arrow type maps to the one PostgreSQL type clients know how to read:
//! timestamps (the lake's µs UTC `ts`) → `timestamptz`, strings → `text`, 64-bit
//! integers → `int8`, smaller ones → `int4`, floats and decimals → `float8`, booleans
//! → `bool`, dates → `date`, bytes → `bytea`, maps, lists and structs → `json` (an
//! object for a map with its keys, an array for a list); anything else → `text` as
//! DuckDB's Arrow value prints. The same mapping answers `Describe` and encodes the
//! rows, so the columns a client was promised are the ones it gets, in text or binary
//! as it asked per column.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate, Utc};
use duckdb::types::Value;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds: binary timestamps count from it.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// How a column's values are read from Arrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Timestamp,
    Text,
    Int8,
    Int4,
    Float8,
    Bool,
    Date,
    Bytes,
    Json,
    Display,
}

fn kind_of(dt: &DataType) -> (Kind, Type) {
    match dt {
        DataType::Timestamp(_, _) => (Kind::Timestamp, Type::TIMESTAMPTZ),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _) => {
            (Kind::Text, Type::TEXT)
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => (Kind::Int8, Type::INT8),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            (Kind::Int4, Type::INT4)
        }
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => (Kind::Float8, Type::FLOAT8),
        DataType::Boolean => (Kind::Bool, Type::BOOL),
        DataType::Date32 | DataType::Date64 => (Kind::Date, Type::DATE),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => (Kind::Bytes, Type::BYTEA),
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::FixedSizeList(_, _)
        | DataType::Map(_, _)
        | DataType::Struct(_) => (Kind::Json, Type::JSON),
        _ => (Kind::Display, Type::TEXT),
    }
}

/// The PostgreSQL columns of a result, in the formats the client asked for.
pub(super) fn fields(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (_, ty) = kind_of(f.data_type());
            FieldInfo::new(f.name().clone(), None, None, ty, column_format(format, i))
        })
        .collect()
}

/// A client may send fewer format codes than columns only as none (text) or one (all).
fn column_format(format: &Format, i: usize) -> FieldFormat {
    match format {
        Format::Individual(codes) if i >= codes.len() => FieldFormat::Text,
        f => f.format_for(i),
    }
}

fn internal(e: impl std::fmt::Display) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), "XX000".into(), format!("encoding a result: {e}"))))
}

fn cast(a: &ArrayRef, to: &DataType) -> PgWireResult<ArrayRef> {
    arrow_cast::cast(a, to).map_err(internal)
}

/// Microseconds since the Unix epoch of every value of a timestamp column.
fn micros(a: &ArrayRef) -> PgWireResult<Vec<Option<i64>>> {
    let DataType::Timestamp(unit, _) = a.data_type() else { return Err(internal("not a timestamp")) };
    Ok(match unit {
        TimeUnit::Second => a.as_primitive::<TimestampSecondType>().iter().map(|v| v.map(|s| s * 1_000_000)).collect(),
        TimeUnit::Millisecond => {
            a.as_primitive::<TimestampMillisecondType>().iter().map(|v| v.map(|s| s * 1_000)).collect()
        }
        TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().iter().collect(),
        TimeUnit::Nanosecond => {
            a.as_primitive::<TimestampNanosecondType>().iter().map(|v| v.map(|s| s.div_euclid(1_000))).collect()
        }
    })
}

/// Each value of a nested column as JSON (Arrow's JSON writer: maps as objects).
fn json_values(a: &ArrayRef) -> PgWireResult<Vec<Option<serde_json::Value>>> {
    let schema = Arc::new(Schema::new(vec![Field::new("v", a.data_type().clone(), true)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::clone(a)]).map_err(internal)?;
    let mut w = arrow_json::LineDelimitedWriter::new(Vec::new());
    w.write(&batch).map_err(internal)?;
    w.finish().map_err(internal)?;
    let text = w.into_inner();
    let mut out = Vec::with_capacity(a.len());
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let mut obj: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line).map_err(internal)?;
        out.push(obj.remove("v"));
    }
    if out.len() != a.len() {
        return Err(internal(format!("{} JSON values for {} rows", out.len(), a.len())));
    }
    Ok(out)
}

/// One column, ready to be read row by row.
enum Column {
    Timestamp(Vec<Option<i64>>),
    Text(ArrayRef),
    Int8(ArrayRef),
    Int4(ArrayRef),
    Float8(ArrayRef),
    Bool(ArrayRef),
    Date(ArrayRef),
    Bytes(ArrayRef),
    Json(Vec<Option<serde_json::Value>>),
    Display(Vec<Option<String>>),
}

fn prepare(a: &ArrayRef) -> PgWireResult<Column> {
    let (kind, _) = kind_of(a.data_type());
    Ok(match kind {
        Kind::Timestamp => Column::Timestamp(micros(a)?),
        Kind::Text => Column::Text(cast(a, &DataType::Utf8)?),
        Kind::Int8 => Column::Int8(cast(a, &DataType::Int64)?),
        Kind::Int4 => Column::Int4(cast(a, &DataType::Int32)?),
        Kind::Float8 => Column::Float8(cast(a, &DataType::Float64)?),
        Kind::Bool => Column::Bool(Arc::clone(a)),
        Kind::Date => Column::Date(cast(a, &DataType::Date32)?),
        Kind::Bytes => Column::Bytes(cast(a, &DataType::Binary)?),
        Kind::Json => Column::Json(json_values(a)?),
        Kind::Display => {
            let options = arrow_cast::display::FormatOptions::default();
            let f = arrow_cast::display::ArrayFormatter::try_new(a.as_ref(), &options).map_err(internal)?;
            Column::Display((0..a.len()).map(|i| (!a.is_null(i)).then(|| f.value(i).to_string())).collect())
        }
    })
}

fn opt<T>(a: &ArrayRef, i: usize, v: impl FnOnce() -> T) -> Option<T> {
    (!a.is_null(i)).then(v)
}

/// The rows of `batch` as DataRows under `fields` (from [`fields`] over its schema).
pub(super) fn rows(batch: &RecordBatch, fields: &Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<DataRow>> {
    let columns: Vec<Column> = batch.columns().iter().map(prepare).collect::<PgWireResult<_>>()?;
    let text: Vec<bool> = fields.iter().map(|f| f.format() == FieldFormat::Text).collect();
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let mut e = DataRowEncoder::new(Arc::clone(fields));
        for (j, c) in columns.iter().enumerate() {
            match c {
                Column::Timestamp(v) => {
                    e.encode_field(&v[i].and_then(DateTime::<Utc>::from_timestamp_micros))?;
                }
                Column::Text(a) => e.encode_field(&opt(a, i, || a.as_string::<i32>().value(i)))?,
                Column::Int8(a) => e.encode_field(&opt(a, i, || a.as_primitive::<Int64Type>().value(i)))?,
                Column::Int4(a) => e.encode_field(&opt(a, i, || a.as_primitive::<Int32Type>().value(i)))?,
                Column::Float8(a) if text[j] => {
                    e.encode_field(&opt(a, i, || float_text(a.as_primitive::<Float64Type>().value(i))))?
                }
                Column::Float8(a) => e.encode_field(&opt(a, i, || a.as_primitive::<Float64Type>().value(i)))?,
                Column::Bool(a) => e.encode_field(&opt(a, i, || a.as_boolean().value(i)))?,
                Column::Date(a) => {
                    e.encode_field(&opt(a, i, || a.as_primitive::<Date32Type>().value(i)).and_then(|d| {
                        NaiveDate::from_ymd_opt(1970, 1, 1)
                            .and_then(|e| e.checked_add_signed(chrono::Duration::days(d.into())))
                    }))?
                }
                Column::Bytes(a) => e.encode_field(&opt(a, i, || a.as_binary::<i32>().value(i)))?,
                Column::Json(v) => e.encode_field(&v[i])?,
                Column::Display(v) => e.encode_field(&v[i])?,
            }
        }
        out.push(e.finish()?);
    }
    Ok(out)
}

/// A float8 as PostgreSQL writes it (shortest form that reads back the same value):
/// `1`, `1.5`, `NaN`, `Infinity` — not Rust's `1.0`/`inf`.
pub(super) fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
    } else if v == v.trunc() && v.abs() < 1e15 {
        // Whole numbers without the ".0" (and -0 as PostgreSQL prints it).
        if v == 0.0 && v.is_sign_negative() {
            "-0".to_string()
        } else {
            format!("{}", v as i64)
        }
    } else {
        format!("{v}")
    }
}

fn bad_param(i: usize, ty: &Type, why: impl std::fmt::Display) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "22P02".into(),
        format!("parameter ${} ({}): {why}", i + 1, ty.name()),
    )))
}

/// One bound parameter as the engine's value: typed by the OID the client declared,
/// text when it declared none (DuckDB casts it where the statement needs another type).
pub(super) fn param(i: usize, ty: &Type, binary: bool, bytes: Option<&[u8]>) -> PgWireResult<Value> {
    let Some(b) = bytes else { return Ok(Value::Null) };
    if binary {
        let fixed = |n: usize| -> PgWireResult<&[u8]> {
            if b.len() == n {
                Ok(b)
            } else {
                Err(bad_param(i, ty, format!("{} bytes where {n} were expected", b.len())))
            }
        };
        return Ok(match *ty {
            Type::INT2 => Value::BigInt(i16::from_be_bytes(fixed(2)?.try_into().unwrap_or_default()).into()),
            Type::INT4 => Value::BigInt(i32::from_be_bytes(fixed(4)?.try_into().unwrap_or_default()).into()),
            Type::INT8 => Value::BigInt(i64::from_be_bytes(fixed(8)?.try_into().unwrap_or_default())),
            Type::FLOAT4 => Value::Double(f32::from_be_bytes(fixed(4)?.try_into().unwrap_or_default()).into()),
            Type::FLOAT8 => Value::Double(f64::from_be_bytes(fixed(8)?.try_into().unwrap_or_default())),
            Type::BOOL => Value::Boolean(fixed(1)?[0] != 0),
            Type::TIMESTAMPTZ | Type::TIMESTAMP => {
                let pg = i64::from_be_bytes(fixed(8)?.try_into().unwrap_or_default());
                Value::Timestamp(duckdb::types::TimeUnit::Microsecond, pg.saturating_add(PG_EPOCH_MICROS))
            }
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
                Value::Text(std::str::from_utf8(b).map_err(|_| bad_param(i, ty, "not UTF-8"))?.to_string())
            }
            _ => return Err(bad_param(i, ty, "this binary parameter type is not supported; send it in text format")),
        });
    }
    let s = std::str::from_utf8(b).map_err(|_| bad_param(i, ty, "not UTF-8"))?;
    Ok(match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 => {
            Value::BigInt(s.trim().parse().map_err(|_| bad_param(i, ty, format!("{s:?} is not an integer")))?)
        }
        Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => {
            Value::Double(s.trim().parse().map_err(|_| bad_param(i, ty, format!("{s:?} is not a number")))?)
        }
        Type::BOOL => match s.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "1" | "on" | "yes" | "y" => Value::Boolean(true),
            "f" | "false" | "0" | "off" | "no" | "n" => Value::Boolean(false),
            _ => return Err(bad_param(i, ty, format!("{s:?} is not a boolean"))),
        },
        _ => Value::Text(s.to_string()),
    })
}
