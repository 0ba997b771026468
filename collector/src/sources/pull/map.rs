//! From a response body to rows: where the records are ([`RowsPath`]), what each column
//! holds ([`Column`]), the row's time ([`TsSpec`]), CSV bodies ([`csv_records`]) and the
//! keys that make a pull idempotent ([`Seen`]).
//!
//! Everything here is pure: the source gives it bytes and a clock reading and gets rows or
//! an error that names the pointer and what was found there.

use std::collections::{HashSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where the records are in a JSON document: a JSON pointer (RFC 6901, `""` for the whole
/// document), in which a segment `[]` stands for every element of the array there — so
/// `/data/viewer/zones/[]/httpRequestsAdaptiveGroups` collects the groups of every zone.
/// The value it ends on is an array of records, or one record (an object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowsPath {
    raw: String,
    /// Plain pointers between the `[]` segments.
    pieces: Vec<String>,
}

impl RowsPath {
    /// Parses a path; `where_` names the setting in the error.
    pub fn parse(raw: &str) -> Result<RowsPath, String> {
        if !raw.is_empty() && !raw.starts_with('/') {
            return Err(format!("{raw:?} is not a JSON pointer: start it with / (\"\" is the whole document)"));
        }
        let mut pieces = Vec::new();
        let mut cur = String::new();
        for seg in raw.split('/').skip(1) {
            if seg == "[]" {
                pieces.push(std::mem::take(&mut cur));
            } else {
                cur.push('/');
                cur.push_str(seg);
            }
        }
        pieces.push(cur);
        Ok(RowsPath { raw: raw.to_string(), pieces })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The records at this path in `doc`: an error names the part of the path that is
    /// missing or of the wrong type.
    pub fn records<'a>(&self, doc: &'a Value) -> Result<Vec<&'a Value>, MapError> {
        let mut cur = vec![doc];
        let mut prefix = String::new();
        let last = self.pieces.len() - 1;
        for (i, piece) in self.pieces.iter().enumerate() {
            prefix.push_str(piece);
            let mut next = Vec::new();
            for v in cur {
                let x = v.pointer(piece).ok_or_else(|| MapError::Missing(prefix.clone()))?;
                if i < last {
                    let arr = x.as_array().ok_or_else(|| MapError::WrongType {
                        pointer: prefix.clone(),
                        want: "an array (the path iterates it with [])",
                        got: kind(x),
                    })?;
                    next.extend(arr.iter());
                } else {
                    match x {
                        Value::Array(a) => next.extend(a.iter()),
                        Value::Object(_) => next.push(x),
                        other => {
                            return Err(MapError::WrongType {
                                pointer: display_pointer(&prefix),
                                want: "an array of records or one record (object)",
                                got: kind(other),
                            })
                        }
                    }
                }
            }
            if i < last {
                prefix.push_str("/[]");
            }
            cur = next;
        }
        Ok(cur)
    }
}

fn display_pointer(p: &str) -> String {
    if p.is_empty() {
        "(the document)".to_string()
    } else {
        p.to_string()
    }
}

/// The JSON type of a value, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Why a response or a record does not map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapError {
    /// The body is not JSON.
    NotJson(String),
    /// The CSV body has no header row, or a row with the wrong number of fields.
    Csv(String),
    /// Nothing at this pointer.
    Missing(String),
    /// Something of the wrong type at this pointer.
    WrongType {
        /// Where.
        pointer: String,
        /// What was expected.
        want: &'static str,
        /// What was there.
        got: &'static str,
    },
    /// A value that does not convert (a time, a typed column).
    BadValue {
        /// Where.
        pointer: String,
        /// Why.
        reason: String,
    },
    /// The API said it failed (GraphQL `errors`).
    Api(String),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::NotJson(e) => write!(f, "the response is not JSON: {e}"),
            MapError::Csv(e) => write!(f, "the response is not CSV with a header row: {e}"),
            MapError::Missing(p) => write!(f, "nothing at pointer {p}"),
            MapError::WrongType { pointer, want, got } => write!(f, "pointer {pointer}: {got}, not {want}"),
            MapError::BadValue { pointer, reason } => write!(f, "pointer {pointer}: {reason}"),
            MapError::Api(e) => write!(f, "the API answered with errors: {e}"),
        }
    }
}

/// How a row's time is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TsFormat {
    /// RFC 3339 with an offset: `2026-11-22T10:15:00Z`.
    #[default]
    Rfc3339,
    /// Unix seconds (a number, or a string of one; fractions kept to the microsecond).
    UnixS,
    /// Unix milliseconds.
    UnixMs,
}

impl TsFormat {
    /// Reads a time as µs since the epoch.
    pub fn parse(self, v: &Value) -> Result<i64, String> {
        let per_unit = match self {
            TsFormat::Rfc3339 => {
                let s = v.as_str().ok_or_else(|| format!("{}, not an RFC 3339 string", kind(v)))?;
                let t: jiff::Timestamp =
                    s.parse().map_err(|e| format!("{s:?} is not an RFC 3339 time with an offset ({e})"))?;
                return Ok(t.as_microsecond());
            }
            TsFormat::UnixS => 1_000_000.0,
            TsFormat::UnixMs => 1_000.0,
        };
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|n| n.is_finite())
        .ok_or_else(|| format!("{} is not a number of {}", v, self.unit()))?;
        let us = (n * per_unit).round();
        // Years 0..=9999 only: anything else is a unit mistake, not a time.
        if !(-62_135_596_800e6..=253_402_300_799e6).contains(&us) {
            return Err(format!("{v} {} is out of range (wrong unit?)", self.unit()));
        }
        Ok(us as i64)
    }

    /// Writes `micros` as this format does (the `max_ts` cursor).
    pub fn render(self, micros: i64) -> String {
        match self {
            TsFormat::Rfc3339 => super::super::custom::rfc3339_micros(micros),
            TsFormat::UnixS => micros.div_euclid(1_000_000).to_string(),
            TsFormat::UnixMs => micros.div_euclid(1_000).to_string(),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            TsFormat::Rfc3339 => "RFC 3339",
            TsFormat::UnixS => "seconds",
            TsFormat::UnixMs => "milliseconds",
        }
    }
}

/// The row's time: a pointer into the record and its format; the pull's start without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsSpec {
    /// JSON pointer relative to the record.
    pub pointer: String,
    /// How it is written.
    pub format: TsFormat,
}

/// The type a column's value is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// As the API wrote it (objects and arrays become JSON text in the lake).
    #[default]
    Auto,
    /// A string (numbers and booleans written as text).
    String,
    /// A 64-bit integer (from a number without fraction or a string of one).
    Int,
    /// A float (from a number or a string of one): keeps the lake column a float even
    /// when the first value has no fraction.
    Float,
    /// true/false (or the strings "true"/"false").
    Bool,
}

/// One output column: a pointer relative to the record, and a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Column name in the custom table.
    pub name: String,
    /// JSON pointer relative to the record (for CSV: `/<header>`).
    pub pointer: String,
    /// Conversion.
    pub ty: ColumnType,
}

impl ColumnType {
    /// Converts a present value; `null` stays null.
    fn convert(self, v: &Value) -> Result<Value, String> {
        if v.is_null() {
            return Ok(Value::Null);
        }
        let fail = |want: &str| format!("{} is not {want}", short(v));
        Ok(match self {
            ColumnType::Auto => v.clone(),
            ColumnType::String => match v {
                Value::String(_) => v.clone(),
                Value::Number(_) | Value::Bool(_) => Value::String(v.to_string()),
                _ => return Err(fail("a string")),
            },
            ColumnType::Int => match v {
                Value::Number(n) if n.is_i64() || n.is_u64() => {
                    n.as_i64().map(Value::from).ok_or_else(|| fail("a 64-bit integer"))?
                }
                Value::Number(n) => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
                    _ => return Err(fail("an integer")),
                },
                Value::String(s) => Value::from(s.trim().parse::<i64>().map_err(|_| fail("an integer"))?),
                _ => return Err(fail("an integer")),
            },
            ColumnType::Float => {
                let f = match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                };
                match f.filter(|f| f.is_finite()).and_then(serde_json::Number::from_f64) {
                    Some(n) => Value::Number(n),
                    None => return Err(fail("a number")),
                }
            }
            ColumnType::Bool => match v {
                Value::Bool(_) => v.clone(),
                Value::String(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
                Value::String(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
                _ => return Err(fail("a boolean")),
            },
        })
    }
}

/// A value cut for an error message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        let mut end = 80;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s
    }
}

/// How records become rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    /// Where the records are.
    pub rows: RowsPath,
    /// The columns; none: every record is shipped whole.
    pub columns: Vec<Column>,
    /// The row's time; none: the pull's start.
    pub ts: Option<TsSpec>,
    /// Constant columns added to every row (the zone of a Cloudflare pull, a location).
    pub set: Vec<(String, Value)>,
}

/// One mapped row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Its time, µs.
    pub ts: i64,
    /// The object shipped (with `ts` as RFC 3339).
    pub object: Map<String, Value>,
}

/// A record that did not map: kept raw in `logs`.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRecord {
    /// The record's JSON, cut to 64 KiB.
    pub raw: String,
    /// Why.
    pub error: MapError,
}

/// Rows and bad records of one response.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Mapped {
    /// Good rows, in the order of the response.
    pub rows: Vec<Row>,
    /// Records that did not map.
    pub bad: Vec<BadRecord>,
}

const MAX_RAW: usize = 64 << 10;

impl Mapping {
    /// Maps the records of `doc`. An error of the whole response (the rows path missing or
    /// of the wrong type) is `Err`; an error of one record is a [`BadRecord`].
    pub fn map(&self, doc: &Value, started: i64) -> Result<Mapped, MapError> {
        let mut out = Mapped::default();
        for rec in self.rows.records(doc)? {
            match self.row(rec, started) {
                Ok(r) => out.rows.push(r),
                Err(error) => {
                    let mut raw = rec.to_string();
                    if raw.len() > MAX_RAW {
                        let mut end = MAX_RAW;
                        while !raw.is_char_boundary(end) {
                            end -= 1;
                        }
                        raw.truncate(end);
                    }
                    out.bad.push(BadRecord { raw, error });
                }
            }
        }
        Ok(out)
    }

    fn row(&self, rec: &Value, started: i64) -> Result<Row, MapError> {
        let at = |p: &str| format!("{}{p}", self.rows.as_str());
        let obj = rec.as_object().ok_or_else(|| MapError::WrongType {
            pointer: at("/…"),
            want: "a record (object)",
            got: kind(rec),
        })?;
        let ts = match &self.ts {
            None => started,
            Some(spec) => {
                let v = rec.pointer(&spec.pointer).ok_or_else(|| MapError::Missing(at(&spec.pointer)))?;
                spec.format.parse(v).map_err(|reason| MapError::BadValue { pointer: at(&spec.pointer), reason })?
            }
        };
        let mut object = Map::new();
        object.insert("ts".to_string(), Value::String(super::super::custom::rfc3339_micros(ts)));
        if self.columns.is_empty() {
            for (k, v) in obj {
                if k != "ts" {
                    object.insert(k.clone(), v.clone());
                }
            }
        }
        for c in &self.columns {
            let v = rec.pointer(&c.pointer).unwrap_or(&Value::Null);
            let v = c.ty.convert(v).map_err(|reason| MapError::BadValue { pointer: at(&c.pointer), reason })?;
            object.insert(c.name.clone(), v);
        }
        for (k, v) in &self.set {
            object.insert(k.clone(), v.clone());
        }
        Ok(Row { ts, object })
    }
}

/// A CSV body (RFC 4180: a header row, `,` separated, `"` quoted with `""` inside, CRLF
/// or LF) as a JSON array of objects of strings keyed by the header, so a [`Mapping`]
/// with rows `""` and columns `/<header>` reads it like JSON.
pub fn csv_records(body: &str) -> Result<Value, MapError> {
    let mut rows = parse_csv(body)?.into_iter();
    let header = rows.next().ok_or_else(|| MapError::Csv("the body is empty".to_string()))?;
    let mut out = Vec::new();
    for (i, fields) in rows.enumerate() {
        if fields.len() == 1 && fields[0].is_empty() {
            continue;
        }
        if fields.len() != header.len() {
            return Err(MapError::Csv(format!(
                "row {} has {} fields, the header {}",
                i + 2,
                fields.len(),
                header.len()
            )));
        }
        let obj: Map<String, Value> = header.iter().cloned().zip(fields.into_iter().map(Value::String)).collect();
        out.push(Value::Object(obj));
    }
    Ok(Value::Array(out))
}

fn parse_csv(body: &str) -> Result<Vec<Vec<String>>, MapError> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = body.chars().peekable();
    let mut quoted = false;
    let mut line = 1;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                line += 1;
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(MapError::Csv(format!("a quoted field opened by line {line} is never closed")));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// Keys of the rows shipped last (a hash of the `key` columns' values), so rows an API
/// reports again (an overlapping window, a page fetched twice) ship once. Bounded: the
/// oldest keys are forgotten first. Saved with the source's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seen {
    order: VecDeque<u64>,
    #[serde(skip)]
    set: HashSet<u64>,
}

impl Seen {
    /// Rebuilds the lookup set after loading.
    pub fn rebuilt(mut self) -> Seen {
        self.set = self.order.iter().copied().collect();
        self
    }

    /// Whether `key` is new; a new key is remembered (the oldest forgotten past `max`).
    pub fn insert(&mut self, key: u64, max: usize) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        while self.order.len() > max {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The key of a row: FNV-1a (64 bits, stable across versions, unlike std's hasher) of the
/// `key` columns' JSON values, `\0` separated; `ts` may be one of them.
pub fn row_key(row: &Map<String, Value>, key: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for k in key {
        let v = row.get(k).unwrap_or(&Value::Null);
        eat(v.to_string().as_bytes());
        eat(&[0]);
    }
    h
}
