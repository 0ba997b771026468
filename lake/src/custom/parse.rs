//! Bodies of custom-table ingest into rows of untyped-but-tagged values.
//!
//! - JSON: a body whose first non-blank byte is `[` is one array of objects; otherwise
//!   NDJSON, one object per non-blank line. Nested objects and arrays are kept as their
//!   JSON text. serde_json's recursion limit (128) refuses absurdly deep nesting.
//! - CSV: a header row, then records (RFC 4180 quoting, embedded newlines and quotes).
//!   An empty cell is NULL; `true`/`false`, integers and decimals are typed as such;
//!   everything else is a string.
//!
//! Field counts are checked per row against `max_fields` before any schema work, so a
//! row with ten thousand keys costs one parse and a clear refusal.

use serde_json::Value as Json;

use super::CustomError;

/// One value, tagged with the type it came as.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// JSON `null` or an empty CSV cell.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer that fits i64.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string (it may hold a timestamp: decided against the column).
    Text(String),
    /// A nested object or array, as JSON text.
    Json(String),
}

/// A row: its 1-based line (record, or array element) and its fields in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Where it came from, for messages.
    pub line: usize,
    /// Field name and value.
    pub fields: Vec<(String, Value)>,
}

fn too_many(line: usize, n: usize, max: usize) -> CustomError {
    CustomError::Parse { line, message: format!("{n} fields; at most {max} are accepted per row") }
}

fn from_json(v: Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Text(s),
        other => Value::Json(other.to_string()),
    }
}

fn object_row(line: usize, v: Json, max_fields: usize) -> Result<Row, CustomError> {
    match v {
        Json::Object(map) => {
            if map.len() > max_fields {
                return Err(too_many(line, map.len(), max_fields));
            }
            Ok(Row { line, fields: map.into_iter().map(|(k, v)| (k, from_json(v))).collect() })
        }
        other => Err(CustomError::Parse {
            line,
            message: format!(
                "expected a JSON object, found {}",
                match other {
                    Json::Array(_) => "an array",
                    Json::String(_) => "a string",
                    Json::Number(_) => "a number",
                    Json::Bool(_) => "a boolean",
                    _ => "null",
                }
            ),
        }),
    }
}

/// NDJSON or a JSON array of objects.
pub fn json(body: &[u8], max_fields: usize) -> Result<Vec<Row>, CustomError> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Err(CustomError::Empty);
    };
    if body[start] == b'[' {
        let items: Vec<Json> = serde_json::from_slice(body)
            .map_err(|e| CustomError::Parse { line: e.line(), message: format!("invalid JSON array: {e}") })?;
        let rows = items
            .into_iter()
            .enumerate()
            .map(|(i, v)| object_row(i + 1, v, max_fields))
            .collect::<Result<Vec<_>, _>>()?;
        return if rows.is_empty() { Err(CustomError::Empty) } else { Ok(rows) };
    }
    let mut rows = Vec::new();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: Json = serde_json::from_slice(line)
            .map_err(|e| CustomError::Parse { line: i + 1, message: format!("invalid JSON: {e}") })?;
        rows.push(object_row(i + 1, v, max_fields)?);
    }
    if rows.is_empty() {
        return Err(CustomError::Empty);
    }
    Ok(rows)
}

fn cell(s: &str) -> Value {
    if s.is_empty() {
        return Value::Null;
    }
    match s {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    let numeric = s.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        && s.bytes().any(|b| b.is_ascii_digit());
    if numeric {
        if let Ok(i) = s.parse::<i64>() {
            return Value::Int(i);
        }
        if let Ok(f) = s.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Text(s.to_string())
}

/// CSV with a header row.
pub fn csv(body: &[u8], max_fields: usize) -> Result<Vec<Row>, CustomError> {
    let mut reader = ::csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| CustomError::Parse { line: 1, message: format!("CSV header: {e}") })?
        .iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    if headers.is_empty() || headers.iter().all(String::is_empty) {
        return Err(CustomError::Parse { line: 1, message: "CSV header row is empty".into() });
    }
    if headers.len() > max_fields {
        return Err(too_many(1, headers.len(), max_fields));
    }
    let mut rows = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| CustomError::Parse {
            line: e.position().map_or(0, |p| p.line() as usize),
            message: format!("CSV: {e}"),
        })?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        rows.push(Row { line, fields: headers.iter().cloned().zip(rec.iter().map(cell)).collect() });
    }
    if rows.is_empty() {
        return Err(CustomError::Empty);
    }
    Ok(rows)
}
