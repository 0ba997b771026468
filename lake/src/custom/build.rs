//! Rows of a custom-table body into one Arrow batch of the table's (evolved) schema.
//!
//! A field whose name collides ignoring case with `ts`, `host`, `_extra`, a column of the
//! table, a new column an earlier row or field of the batch brought, or (CSV) a field of
//! the same row, is not a column: its value goes to the row's `_extra` under its own
//! name and is counted in [`Built::case_collisions`] (a null has nothing to keep and is
//! left out). The first name to arrive keeps the column.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};

use lake_format::catalog::{ColumnType, TS_TZ};
use lake_format::custom::{same_name, validate_column_name, Collision, CustomSchema, BUILT_IN_COLUMNS, EXTRA_COLUMN};

use super::parse::{Row, Value};
use super::{put_extra, type_name, CustomError, EvolveError, Registry};

/// A built batch and what leniency did to it.
#[derive(Debug)]
pub struct Built {
    /// The rows, in the table's current schema.
    pub batch: RecordBatch,
    /// The schema the batch was built against.
    pub schema: Arc<CustomSchema>,
    /// Values moved to `_extra` because their type conflicted (lenient tables only).
    pub lenient_values: usize,
    /// Values moved to `_extra` because their name collided with a column's ignoring case.
    pub case_collisions: usize,
}

/// Parses RFC 3339 (with an offset) into microseconds since the epoch.
pub fn rfc3339_micros(s: &str) -> Option<i64> {
    if s.len() < 20 || !s.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_microsecond())
}

/// An epoch number in seconds, milliseconds, microseconds or nanoseconds (told apart by
/// magnitude: anything after 1973 in its unit) as microseconds.
pub fn epoch_micros(v: f64) -> Option<i64> {
    if !v.is_finite() {
        return None;
    }
    let a = v.abs();
    let micros = if a < 1e11 {
        v * 1e6
    } else if a < 1e14 {
        v * 1e3
    } else if a < 1e17 {
        v
    } else {
        v / 1e3
    };
    (micros.abs() < 9.2e18).then_some(micros as i64)
}

/// The type a value suggests for a new column.
fn infer(v: &Value) -> Option<ColumnType> {
    match v {
        Value::Null => None,
        Value::Bool(_) => Some(ColumnType::Bool),
        Value::Int(_) => Some(ColumnType::Int),
        Value::Float(_) => Some(ColumnType::Float),
        Value::Text(s) if rfc3339_micros(s).is_some() => Some(ColumnType::Timestamp),
        Value::Text(_) | Value::Json(_) => Some(ColumnType::Text),
    }
}

fn value_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int64",
        Value::Float(_) => "float64",
        Value::Text(s) if rfc3339_micros(s).is_some() => "timestamp",
        Value::Text(_) => "string",
        Value::Json(_) => "JSON object or array",
    }
}

/// Whether a value can be stored in a column of type `ty` without changing its meaning.
fn fits(ty: ColumnType, v: &Value) -> bool {
    match (ty, v) {
        (_, Value::Null) => true,
        (ColumnType::Bool, Value::Bool(_)) => true,
        (ColumnType::Int, Value::Int(_)) => true,
        (ColumnType::Float, Value::Int(_) | Value::Float(_)) => true,
        (ColumnType::Timestamp, Value::Text(s)) => rfc3339_micros(s).is_some(),
        (ColumnType::Text, Value::Text(_) | Value::Json(_)) => true,
        _ => false,
    }
}

/// Two types of one new column within a batch: ints widen to floats, timestamps to strings.
fn unify(a: ColumnType, b: ColumnType) -> Option<ColumnType> {
    use ColumnType::{Float, Int, Text, Timestamp};
    match (a, b) {
        (x, y) if x == y => Some(x),
        (Int, Float) | (Float, Int) => Some(Float),
        (Timestamp, Text) | (Text, Timestamp) => Some(Text),
        _ => None,
    }
}

/// One row, split into the lake's columns and the data's.
struct Split {
    line: usize,
    ts: i64,
    host: String,
    fields: HashMap<String, Value>,
    extra: serde_json::Map<String, serde_json::Value>,
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Text(s) => s.clone().into(),
        Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| s.clone().into()),
    }
}

/// The column `name` would collide with, ignoring case: `ts`, `host`, `_extra`, a column
/// of `existing`, a new column of this batch, or (CSV headers) a field of this row.
fn collision(
    name: &str,
    existing: Option<&CustomSchema>,
    new_cols: &[(String, Option<ColumnType>)],
    row: &HashMap<String, Value>,
) -> Option<String> {
    if row.contains_key(name) {
        return Some(name.to_string());
    }
    let kept = match existing {
        Some(s) => s.colliding(name).map(str::to_string),
        None => BUILT_IN_COLUMNS.iter().find(|c| same_name(c, name) && **c != name).map(|c| c.to_string()),
    };
    kept.or_else(|| new_cols.iter().find(|(n, _)| same_name(n, name) && n != name).map(|(n, _)| n.clone()))
}

/// Builds the batch for `table` from `rows` sent by `node`, evolving its schema.
pub fn build(
    registry: &Registry,
    table: &str,
    node: &str,
    rows: Vec<Row>,
    now_micros: i64,
) -> Result<Built, EvolveError> {
    let opts = registry.options(table).clone();
    let existing = registry.get(table);
    let mut split = Vec::with_capacity(rows.len());
    // New columns in order of appearance, with their unified type (None: only nulls so far).
    let mut new_cols: Vec<(String, Option<ColumnType>)> = Vec::new();
    let mut lenient_values = 0;
    let mut case_collisions = 0;
    let mut example: Option<Collision> = None;
    let window = crate::http::bounds::Window::at(now_micros);
    for row in rows {
        let mut ts = now_micros;
        let mut host = node.to_string();
        let mut fields = HashMap::with_capacity(row.fields.len());
        let mut extra = serde_json::Map::new();
        for (name, v) in row.fields {
            if name == opts.ts_field {
                let parsed = match &v {
                    Value::Null => Some(now_micros),
                    Value::Text(s) => rfc3339_micros(s),
                    Value::Int(i) => epoch_micros(*i as f64),
                    Value::Float(f) => epoch_micros(*f),
                    _ => None,
                };
                // A time the lake does not store is refused like an unreadable one
                // (lenient tables keep it in `_extra`, the row at the time of receipt).
                let out_of_range = match parsed.map(|t| (t, window.check(t))) {
                    Some((t, Err(reason))) if !opts.lenient => {
                        let skew = crate::http::bounds::Skew::ahead(t, now_micros);
                        return Err(CustomError::TsOutOfRange { line: row.line, field: name, reason, skew }.into());
                    }
                    Some((_, Err(_))) => true,
                    _ => false,
                };
                match parsed.filter(|_| !out_of_range) {
                    Some(t) => ts = t,
                    None if opts.lenient => {
                        lenient_values += 1;
                        put_extra(&mut extra, name, to_json(&v));
                    }
                    None => {
                        let text = to_json(&v).to_string().chars().take(60).collect();
                        return Err(CustomError::BadTs { line: row.line, field: name, value: text }.into());
                    }
                }
                continue;
            }
            if name == "host" {
                if let Value::Text(h) = &v {
                    if !h.is_empty() {
                        host = h.clone();
                        continue;
                    }
                }
            }
            if name == "ts" || name == "host" || name == EXTRA_COLUMN {
                // Reserved names the value could not fill: kept, not lost.
                put_extra(&mut extra, name, to_json(&v));
                continue;
            }
            validate_column_name(&name).map_err(|e| CustomError::Parse { line: row.line, message: e.0 })?;
            // DuckDB would take this name for another column's: kept in `_extra` instead.
            if let Some(kept) = collision(&name, existing.as_deref(), &new_cols, &fields) {
                if v == Value::Null {
                    // Nothing to keep (an empty CSV cell under a colliding header).
                    continue;
                }
                case_collisions += 1;
                let value = to_json(&v);
                example.get_or_insert_with(|| Collision { kept, moved: name.clone() });
                put_extra(&mut extra, name, value);
                continue;
            }
            let column_type = existing.as_ref().and_then(|s| s.column(&name)).map(|c| c.ty);
            let ok = match column_type {
                Some(ty) => fits(ty, &v).then_some(()).ok_or((type_name(ty), value_name(&v))),
                None => {
                    let slot = match new_cols.iter_mut().find(|(n, _)| *n == name) {
                        Some(s) => s,
                        None => {
                            new_cols.push((name.clone(), None));
                            new_cols.last_mut().expect("just pushed")
                        }
                    };
                    match (slot.1, infer(&v)) {
                        (_, None) => Ok(()),
                        (None, Some(t)) => {
                            slot.1 = Some(t);
                            Ok(())
                        }
                        (Some(a), Some(b)) => match unify(a, b) {
                            Some(u) => {
                                slot.1 = Some(u);
                                Ok(())
                            }
                            None => Err((type_name(a), value_name(&v))),
                        },
                    }
                }
            };
            match ok {
                Ok(()) => {
                    fields.insert(name, v);
                }
                Err(_) if opts.lenient => {
                    lenient_values += 1;
                    put_extra(&mut extra, name, to_json(&v));
                }
                Err((expected, found)) => {
                    return Err(CustomError::Conflict { line: row.line, field: name, expected, found }.into())
                }
            }
        }
        split.push(Split { line: row.line, ts, host, fields, extra });
    }
    let mut wanted: Vec<(String, ColumnType)> =
        new_cols.into_iter().map(|(n, t)| (n, t.unwrap_or(ColumnType::Text))).collect();
    if split.iter().any(|s| !s.extra.is_empty()) {
        wanted.push((EXTRA_COLUMN.to_string(), ColumnType::Text));
    }
    let mut schema = registry.evolve(table, &wanted)?;
    // Every value now has its column, of a type it fits (a new column's values unified to
    // it) — unless another batch added a column meanwhile: one whose name collides with a
    // new one here (the new one was not added), or of the same name with another type.
    let mut moved = false;
    for s in &mut split {
        let names: Vec<String> =
            s.fields.keys().filter(|n| !schema.column(n).is_some_and(|c| fits(c.ty, &s.fields[*n]))).cloned().collect();
        for name in names {
            let v = s.fields.remove(&name).expect("listed above");
            match schema.column(&name) {
                None => {
                    case_collisions += 1;
                    let kept = schema.colliding(&name).unwrap_or(&name).to_string();
                    example.get_or_insert_with(|| Collision { kept, moved: name.clone() });
                }
                Some(_) if opts.lenient => lenient_values += 1,
                Some(c) => {
                    return Err(CustomError::Conflict {
                        line: s.line,
                        field: name,
                        expected: type_name(c.ty),
                        found: value_name(&v),
                    }
                    .into())
                }
            }
            put_extra(&mut s.extra, name, to_json(&v));
            moved = true;
        }
    }
    if moved && schema.column(EXTRA_COLUMN).is_none() {
        schema = registry.evolve(table, &[(EXTRA_COLUMN.to_string(), ColumnType::Text)])?;
    }
    if let Some(example) = &example {
        registry.note_collisions(table, case_collisions, example);
    }
    let batch = arrays(&schema, &split)
        .map_err(|e| CustomError::Parse { line: 0, message: format!("building the batch: {e}") })?;
    Ok(Built { batch, schema, lenient_values, case_collisions })
}

fn arrays(schema: &CustomSchema, rows: &[Split]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = rows.len();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.columns.len() + 2);
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(TS_TZ);
    let mut host = StringBuilder::with_capacity(n, n * 8);
    for r in rows {
        ts.append_value(r.ts);
        host.append_value(&r.host);
    }
    cols.push(Arc::new(ts.finish()));
    cols.push(Arc::new(host.finish()));
    for c in &schema.columns {
        fn get<'a>(r: &'a Split, name: &str) -> Option<&'a Value> {
            r.fields.get(name)
        }
        let array: ArrayRef = if c.name == EXTRA_COLUMN {
            let mut b = StringBuilder::with_capacity(n, 0);
            for r in rows {
                if r.extra.is_empty() {
                    b.append_null()
                } else {
                    b.append_value(serde_json::Value::Object(r.extra.clone()).to_string())
                }
            }
            Arc::new(b.finish())
        } else {
            match c.ty {
                ColumnType::Bool => {
                    let mut b = BooleanBuilder::with_capacity(n);
                    rows.iter().for_each(|r| {
                        b.append_option(match get(r, &c.name) {
                            Some(Value::Bool(v)) => Some(*v),
                            _ => None,
                        })
                    });
                    Arc::new(b.finish())
                }
                ColumnType::Int => {
                    let mut b = Int64Builder::with_capacity(n);
                    rows.iter().for_each(|r| {
                        b.append_option(match get(r, &c.name) {
                            Some(Value::Int(v)) => Some(*v),
                            _ => None,
                        })
                    });
                    Arc::new(b.finish())
                }
                ColumnType::Float => {
                    let mut b = Float64Builder::with_capacity(n);
                    rows.iter().for_each(|r| {
                        b.append_option(match get(r, &c.name) {
                            Some(Value::Int(v)) => Some(*v as f64),
                            Some(Value::Float(v)) => Some(*v),
                            _ => None,
                        })
                    });
                    Arc::new(b.finish())
                }
                ColumnType::Timestamp => {
                    let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(TS_TZ);
                    rows.iter().for_each(|r| {
                        b.append_option(match get(r, &c.name) {
                            Some(Value::Text(s)) => rfc3339_micros(s),
                            _ => None,
                        })
                    });
                    Arc::new(b.finish())
                }
                ColumnType::Text | ColumnType::TextMap | ColumnType::TextList => {
                    let mut b = StringBuilder::with_capacity(n, 0);
                    rows.iter().for_each(|r| {
                        b.append_option(match get(r, &c.name) {
                            Some(Value::Text(s) | Value::Json(s)) => Some(s.as_str()),
                            _ => None,
                        })
                    });
                    Arc::new(b.finish())
                }
            }
        };
        cols.push(array);
    }
    RecordBatch::try_new(schema.arrow_schema(), cols)
}
