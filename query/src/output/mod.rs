//! Rendering a [`QueryResult`] for people and programs: an aligned terminal table, JSON,
//! CSV or an Arrow IPC stream. The HTTP API and the `lake query` CLI share these, so both
//! answer byte for byte the same.
//!
//! Timestamps are RFC 3339 in every text format. DuckDB hands `TIMESTAMPTZ` over as
//! Arrow timestamps labelled `"UTC"`, which arrow-cast cannot format without the
//! `chrono-tz` feature, so UTC columns are relabelled as plain timestamps and printed
//! with a `Z` suffix.
//!
//! JSON shape (also the HTTP response):
//! ```json
//! {"columns":[{"name":"ts","type":"TIMESTAMPTZ"}],"rows":[["2026-11-22T10:00:00Z"]],
//!  "truncated":false,"row_count":1}
//! ```
//! A streamed result that failed after its rows started ends with an `"error"` field
//! after `row_count` instead.
//!
//! JSON, CSV and Arrow are also written incrementally for streaming: [`head`] (from the
//! schema), a [`BatchEncoder::batch`] per batch (on any thread), then [`tail`]. [`write()`]
//! is those three over a whole [`QueryResult`], so a streamed and a collected answer are
//! byte for byte the same. The terminal table needs every row for its widths and is only
//! written whole.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::temporal_conversions::as_datetime;
use arrow_array::types::{
    ArrowTimestampType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type,
    UInt8Type,
};
use arrow_array::{Array, ArrayRef, PrimitiveArray, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_ipc::CompressionType;
use arrow_schema::{DataType, Schema, TimeUnit};
use serde_json::{Map, Number, Value};

use crate::engine::QueryResult;

/// How a result is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text table for a terminal.
    Table,
    /// `{"columns", "rows", "truncated", "row_count"}`.
    Json,
    /// Header line, then one line per row.
    Csv,
    /// Arrow IPC stream (zstd), as on the wire.
    Arrow,
}

impl Format {
    /// The HTTP `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Table => "text/plain; charset=utf-8",
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => lake_format::wire::CONTENT_TYPE,
        }
    }
}

/// The format name is not one of `table`, `json`, `csv`, `arrow`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?} (known: table, json, csv, arrow)")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "arrow" => Ok(Format::Arrow),
            _ => Err(UnknownFormat(s.to_string())),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Arrow => "arrow",
        })
    }
}

/// Renders `result` in `format` to `out`.
pub fn write(format: Format, result: &QueryResult, out: &mut dyn Write) -> io::Result<()> {
    if format == Format::Table {
        return write_table(result, out);
    }
    out.write_all(&head(format, &result.schema)?)?;
    let mut encoder = BatchEncoder::new(format, &result.schema)?;
    for batch in &result.batches {
        out.write_all(&encoder.batch(batch)?)?;
    }
    out.write_all(&tail(format, &Tail { truncated: result.truncated, rows: result.num_rows(), error: None }))
}

/// How a result ended, for [`tail`].
#[derive(Debug, Clone, Copy)]
pub struct Tail<'a> {
    /// The row limit cut the result.
    pub truncated: bool,
    /// Rows written.
    pub rows: usize,
    /// The query failed after rows were written: JSON says so in an `"error"` field.
    pub error: Option<&'a str>,
}

/// What comes before the rows: the JSON object's `columns` and the opening of `rows`, the
/// CSV header line, or the Arrow IPC schema message. Empty for the table format.
pub fn head(format: Format, schema: &Schema) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match format {
        Format::Table => {}
        Format::Json => {
            let columns: Vec<Value> = schema
                .fields()
                .iter()
                .map(|f| serde_json::json!({"name": f.name(), "type": sql_type_name(f.data_type())}))
                .collect();
            out.extend_from_slice(b"{\"columns\":");
            serde_json::to_writer(&mut out, &columns)?;
            out.extend_from_slice(b",\"rows\":[");
        }
        Format::Csv => {
            let header: Vec<String> = schema.fields().iter().map(|f| csv_field(f.name())).collect();
            writeln!(out, "{}", header.join(","))?;
        }
        Format::Arrow => {
            let writer =
                StreamWriter::try_new_with_options(&mut out, schema, ipc_options()?).map_err(io::Error::other)?;
            drop(writer);
        }
    }
    Ok(out)
}

/// What comes after the rows: the end of the JSON object (`truncated`, `row_count`, and
/// `error` when given), nothing for CSV, the end-of-stream marker for Arrow.
pub fn tail(format: Format, end: &Tail<'_>) -> Vec<u8> {
    match format {
        Format::Json => {
            let mut out = format!("],\"truncated\":{},\"row_count\":{}", end.truncated, end.rows).into_bytes();
            if let Some(e) = end.error {
                out.extend_from_slice(b",\"error\":");
                out.extend_from_slice(Value::String(e.to_string()).to_string().as_bytes());
            }
            out.push(b'}');
            out
        }
        Format::Arrow => ARROW_END_OF_STREAM.to_vec(),
        Format::Csv | Format::Table => Vec::new(),
    }
}

/// The Arrow IPC end-of-stream marker: a continuation word and a zero length.
const ARROW_END_OF_STREAM: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];

/// The wire's IPC options (zstd), so the API answers what `lake_format::wire` decodes.
fn ipc_options() -> io::Result<IpcWriteOptions> {
    IpcWriteOptions::default().try_with_compression(Some(CompressionType::ZSTD)).map_err(io::Error::other)
}

/// Encodes batches of one result, one after the other, between [`head`] and [`tail`].
pub struct BatchEncoder {
    format: Format,
    rows: usize,
    /// The Arrow writer; its schema message is dropped (it is [`head`]'s).
    ipc: Option<StreamWriter<Vec<u8>>>,
}

impl fmt::Debug for BatchEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchEncoder").field("format", &self.format).field("rows", &self.rows).finish_non_exhaustive()
    }
}

impl BatchEncoder {
    /// An encoder for results of `schema` (not for [`Format::Table`]).
    pub fn new(format: Format, schema: &Schema) -> io::Result<BatchEncoder> {
        let ipc = match format {
            Format::Arrow => {
                let mut w =
                    StreamWriter::try_new_with_options(Vec::new(), schema, ipc_options()?).map_err(io::Error::other)?;
                w.get_mut().clear();
                Some(w)
            }
            Format::Table => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the table format is not written batch by batch",
                ))
            }
            Format::Json | Format::Csv => None,
        };
        Ok(BatchEncoder { format, rows: 0, ipc })
    }

    /// Rows encoded so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The bytes of one batch's rows.
    pub fn batch(&mut self, batch: &RecordBatch) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        match self.format {
            Format::Json => json_rows(batch, self.rows == 0, &mut out)?,
            Format::Csv => csv_rows(batch, &mut out)?,
            Format::Arrow => {
                let w = self.ipc.as_mut().expect("arrow encoder has a writer");
                w.write(batch).map_err(io::Error::other)?;
                out = std::mem::take(w.get_mut());
            }
            Format::Table => unreachable!("refused by BatchEncoder::new"),
        }
        self.rows += batch.num_rows();
        Ok(out)
    }
}

/// Cells longer than this (in characters) are cut in the terminal table.
const MAX_CELL: usize = 60;

const RFC3339_UTC: &str = "%Y-%m-%dT%H:%M:%S%.fZ";

fn write_table(result: &QueryResult, out: &mut dyn Write) -> io::Result<()> {
    let fields = result.schema.fields();
    let header: Vec<String> = fields.iter().map(|f| cell_for_terminal(f.name())).collect();
    let right: Vec<bool> = fields.iter().map(|f| f.data_type().is_numeric()).collect();
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(result.num_rows());
    for batch in &result.batches {
        let prepared = text_columns(batch.columns(), "NULL");
        let columns = formatters(&prepared)?;
        for i in 0..batch.num_rows() {
            let row = columns.iter().map(|c| cell_for_terminal(&c.value(i).to_string()));
            rows.push(row.collect());
        }
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    if !header.is_empty() {
        let names: Vec<String> = header.iter().zip(&widths).map(|(h, &w)| pad(h, w, false)).collect();
        writeln!(out, "{}", names.join(" | ").trim_end())?;
        let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
        writeln!(out, "{}", rule.join("-+-"))?;
        for row in &rows {
            let cells: Vec<String> = row.iter().zip(&widths).zip(&right).map(|((c, &w), &r)| pad(c, w, r)).collect();
            writeln!(out, "{}", cells.join(" | ").trim_end())?;
        }
    }
    let n = rows.len();
    writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" })?;
    if result.truncated {
        writeln!(out, "(truncated at {n} rows)")?;
    }
    Ok(())
}

fn pad(cell: &str, width: usize, right: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(cell.chars().count()));
    if right {
        format!("{fill}{cell}")
    } else {
        format!("{cell}{fill}")
    }
}

/// One line, at most [`MAX_CELL`] characters: control characters would break the grid.
fn cell_for_terminal(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_CELL * 4));
    let mut count = 0;
    for c in s.chars() {
        let piece = match c {
            '\n' => "\\n".to_string(),
            '\r' => "\\r".to_string(),
            '\t' => " ".to_string(),
            c if c.is_control() => format!("\\u{{{:x}}}", c as u32),
            c => c.to_string(),
        };
        let len = piece.chars().count();
        if count + len > MAX_CELL - 1 {
            out.push('…');
            return out;
        }
        out.push_str(&piece);
        count += len;
    }
    out
}

fn csv_rows(batch: &RecordBatch, out: &mut Vec<u8>) -> io::Result<()> {
    let prepared = text_columns(batch.columns(), "");
    let columns = formatters(&prepared)?;
    for i in 0..batch.num_rows() {
        let cells: Vec<String> = columns
            .iter()
            .zip(batch.columns())
            .map(|(c, a)| if a.is_null(i) { String::new() } else { csv_field(&c.value(i).to_string()) })
            .collect();
        writeln!(out, "{}", cells.join(","))?;
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Columns ready for arrow's formatter, which borrows them: UTC timestamps relabelled.
fn text_columns(columns: &[ArrayRef], null: &'static str) -> Vec<(ArrayRef, FormatOptions<'static>)> {
    columns
        .iter()
        .map(|c| {
            let (array, utc) = strip_utc(c);
            let mut options = FormatOptions::new().with_null(null);
            if utc {
                options = options.with_timestamp_format(Some(RFC3339_UTC));
            }
            (array, options)
        })
        .collect()
}

fn formatters<'a>(columns: &'a [(ArrayRef, FormatOptions<'static>)]) -> io::Result<Vec<ArrayFormatter<'a>>> {
    columns
        .iter()
        .map(|(a, o)| ArrayFormatter::try_new(a.as_ref(), o).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)))
        .collect()
}

/// A UTC timestamp column relabelled as zone-less (same instants), and whether it was.
fn strip_utc(array: &ArrayRef) -> (ArrayRef, bool) {
    fn relabel<T: ArrowTimestampType>(a: &ArrayRef) -> ArrayRef {
        let a: PrimitiveArray<T> = a.as_primitive::<T>().clone().with_timezone_opt(None::<String>);
        Arc::new(a)
    }
    match array.data_type() {
        DataType::Timestamp(unit, Some(tz)) if is_utc(tz) => {
            let a = match unit {
                TimeUnit::Second => relabel::<TimestampSecondType>(array),
                TimeUnit::Millisecond => relabel::<TimestampMillisecondType>(array),
                TimeUnit::Microsecond => relabel::<TimestampMicrosecondType>(array),
                TimeUnit::Nanosecond => relabel::<TimestampNanosecondType>(array),
            };
            (a, true)
        }
        _ => (Arc::clone(array), false),
    }
}

fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "utc" | "Z" | "+00:00" | "Etc/UTC")
}

/// The rows of a batch as JSON arrays, comma-separated (and preceded by a comma unless
/// they are the result's first). Cells are written straight into `out` ([`write_json_cell`])
/// rather than built as a `serde_json::Value` per cell and row first: on a 10,000-row
/// answer that tree was most of the encoding's time.
fn json_rows(batch: &RecordBatch, first: bool, out: &mut Vec<u8>) -> io::Result<()> {
    let columns = batch.columns();
    for i in 0..batch.num_rows() {
        if i > 0 || !first {
            out.push(b',');
        }
        out.push(b'[');
        for (n, c) in columns.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            write_json_cell(c.as_ref(), i, out)?;
        }
        out.push(b']');
    }
    Ok(())
}

/// [`json_cell`]'s JSON text, written to `out`: byte for byte what serialising the
/// `Value` would write, without building it for the common types (numbers, booleans,
/// strings, timestamps).
pub fn write_json_cell(array: &dyn Array, i: usize, out: &mut Vec<u8>) -> io::Result<()> {
    if array.is_null(i) {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    macro_rules! num {
        ($t:ty) => {
            serde_json::to_writer(&mut *out, &array.as_primitive::<$t>().value(i))?
        };
    }
    match array.data_type() {
        DataType::Boolean => out.extend_from_slice(if array.as_boolean().value(i) { b"true" } else { b"false" }),
        DataType::Int8 => num!(Int8Type),
        DataType::Int16 => num!(Int16Type),
        DataType::Int32 => num!(Int32Type),
        DataType::Int64 => num!(Int64Type),
        DataType::UInt8 => num!(UInt8Type),
        DataType::UInt16 => num!(UInt16Type),
        DataType::UInt32 => num!(UInt32Type),
        DataType::UInt64 => num!(UInt64Type),
        DataType::Float32 => write_float(f64::from(array.as_primitive::<Float32Type>().value(i)), out)?,
        DataType::Float64 => write_float(array.as_primitive::<Float64Type>().value(i), out)?,
        DataType::Utf8 => serde_json::to_writer(&mut *out, array.as_string::<i32>().value(i))?,
        DataType::LargeUtf8 => serde_json::to_writer(&mut *out, array.as_string::<i64>().value(i))?,
        DataType::Utf8View => serde_json::to_writer(&mut *out, array.as_string_view().value(i))?,
        DataType::Timestamp(unit, tz) => {
            let v = match unit {
                TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(i),
                TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().value(i),
                TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(i),
                TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(i),
            };
            // RFC 3339 text has nothing JSON escapes: quoted as it is.
            out.push(b'"');
            if !write_timestamp(*unit, v, tz.is_some(), out) {
                // Years outside 0000-9999: chrono's text (which signs them), as before.
                out.pop();
                serde_json::to_writer(&mut *out, &json_cell(array, i))?;
                return Ok(());
            }
            out.push(b'"');
        }
        _ => serde_json::to_writer(&mut *out, &json_cell(array, i))?,
    }
    Ok(())
}

/// [`float`]'s JSON: a number, or the text of NaN and the infinities.
fn write_float(v: f64, out: &mut Vec<u8>) -> io::Result<()> {
    if v.is_finite() {
        serde_json::to_writer(&mut *out, &v)?;
    } else {
        serde_json::to_writer(&mut *out, &v.to_string())?;
    }
    Ok(())
}

/// Writes the timestamp `v` (in `unit` since the epoch) as chrono writes it with
/// [`RFC3339_UTC`] (`zoned`) or `%Y-%m-%dT%H:%M:%S%.f`: the fraction with 0, 3, 6 or 9
/// digits, the fewest that hold it. Answers `false`, writing nothing, for a year outside
/// 0000-9999 (chrono signs those). chrono parses its format string on every call, which
/// made timestamps the costliest cells of a result.
fn write_timestamp(unit: TimeUnit, v: i64, zoned: bool, out: &mut Vec<u8>) -> bool {
    let (per_second, nanos_per_unit) = match unit {
        TimeUnit::Second => (1, 1_000_000_000),
        TimeUnit::Millisecond => (1_000, 1_000_000),
        TimeUnit::Microsecond => (1_000_000, 1_000),
        TimeUnit::Nanosecond => (1_000_000_000, 1),
    };
    let secs = v.div_euclid(per_second);
    let nanos = v.rem_euclid(per_second) * nanos_per_unit;
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    // Beyond ±10⁹ days a year would not fit `Date`'s i32; such a time is far outside
    // 0..=9999 anyway, and goes to the caller's fallback like any other.
    if days.unsigned_abs() > 1_000_000_000 {
        return false;
    }
    let date = lake_format::layout::Date::from_days(days);
    let (year, month, day) = (i64::from(date.year), i64::from(date.month), i64::from(date.day));
    if !(0..=9999).contains(&year) {
        return false;
    }
    let two = |n: i64, sep: u8, out: &mut Vec<u8>| {
        out.push(b'0' + (n / 10) as u8);
        out.push(b'0' + (n % 10) as u8);
        out.push(sep);
    };
    for d in [year / 1000, year / 100 % 10, year / 10 % 10, year % 10] {
        out.push(b'0' + d as u8);
    }
    out.push(b'-');
    two(month, b'-', out);
    two(day, b'T', out);
    two(of_day / 3600, b':', out);
    two(of_day / 60 % 60, b':', out);
    out.push(b'0' + (of_day % 60 / 10) as u8);
    out.push(b'0' + (of_day % 10) as u8);
    let (digits, fraction) = if nanos == 0 {
        (0, 0)
    } else if nanos % 1_000_000 == 0 {
        (3, nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        (6, nanos / 1_000)
    } else {
        (9, nanos)
    };
    if digits > 0 {
        out.push(b'.');
        let mut div = 10i64.pow(digits - 1);
        while div > 0 {
            out.push(b'0' + (fraction / div % 10) as u8);
            div /= 10;
        }
    }
    if zoned {
        out.push(b'Z');
    }
    true
}

/// The DuckDB-style name of a result column's type, for clients choosing a renderer.
pub fn sql_type_name(ty: &DataType) -> String {
    match ty {
        DataType::Null => "NULL".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BLOB".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("DECIMAL({p},{s})"),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("{}[]", sql_type_name(f.data_type()))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                format!("MAP({}, {})", sql_type_name(kv[0].data_type()), sql_type_name(kv[1].data_type()))
            }
            other => other.to_string(),
        },
        DataType::Struct(fields) => {
            let inner: Vec<String> =
                fields.iter().map(|f| format!("{} {}", f.name(), sql_type_name(f.data_type()))).collect();
            format!("STRUCT({})", inner.join(", "))
        }
        other => other.to_string(),
    }
}

/// One cell as JSON: numbers, booleans and strings natively, timestamps as RFC 3339,
/// maps as objects, lists as arrays, anything else as arrow's text.
pub fn json_cell(array: &dyn Array, i: usize) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    macro_rules! int {
        ($t:ty) => {
            Value::from(array.as_primitive::<$t>().value(i))
        };
    }
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(i)),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(i).to_string()),
        DataType::Timestamp(unit, tz) => {
            let v = match unit {
                TimeUnit::Second => {
                    as_datetime::<TimestampSecondType>(array.as_primitive::<TimestampSecondType>().value(i))
                }
                TimeUnit::Millisecond => {
                    as_datetime::<TimestampMillisecondType>(array.as_primitive::<TimestampMillisecondType>().value(i))
                }
                TimeUnit::Microsecond => {
                    as_datetime::<TimestampMicrosecondType>(array.as_primitive::<TimestampMicrosecondType>().value(i))
                }
                TimeUnit::Nanosecond => {
                    as_datetime::<TimestampNanosecondType>(array.as_primitive::<TimestampNanosecondType>().value(i))
                }
            };
            match (v, tz) {
                // Zone-aware instants are stored in UTC whatever the label.
                (Some(dt), Some(_)) => Value::String(dt.format(RFC3339_UTC).to_string()),
                (Some(dt), None) => Value::String(dt.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
                (None, _) => Value::Null,
            }
        }
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => {
            let text = scalar_text(array, i);
            text.parse::<Number>().map(Value::Number).unwrap_or(Value::String(text))
        }
        DataType::List(_) => list_json(&array.as_list::<i32>().value(i)),
        DataType::LargeList(_) => list_json(&array.as_list::<i64>().value(i)),
        DataType::Map(_, _) => {
            let entries = array.as_map().value(i);
            let mut obj = Map::new();
            for j in 0..entries.len() {
                let key = match json_cell(entries.column(0).as_ref(), j) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                obj.insert(key, json_cell(entries.column(1).as_ref(), j));
            }
            Value::Object(obj)
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let obj =
                fields.iter().zip(s.columns()).map(|(f, c)| (f.name().clone(), json_cell(c.as_ref(), i))).collect();
            Value::Object(obj)
        }
        _ => Value::String(scalar_text(array, i)),
    }
}

fn list_json(values: &ArrayRef) -> Value {
    Value::Array((0..values.len()).map(|j| json_cell(values.as_ref(), j)).collect())
}

/// JSON has no NaN or infinity: those become strings.
fn float(v: f64) -> Value {
    Number::from_f64(v).map(Value::Number).unwrap_or_else(|| Value::String(v.to_string()))
}

fn scalar_text(array: &dyn Array, i: usize) -> String {
    match ArrayFormatter::try_new(array, &FormatOptions::new()) {
        Ok(f) => f.value(i).to_string(),
        Err(e) => format!("<{e}>"),
    }
}

#[cfg(test)]
mod tests;
