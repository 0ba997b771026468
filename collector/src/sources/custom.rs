//! Custom tables: the collector's side of the contract with the lake for data outside the
//! built-in catalog (`json_file` and `exec` sources with `format = "ndjson"`).
//!
//! # Contract
//!
//! - A spool record whose table string is `json/<name>` carries an NDJSON body: one JSON
//!   object per line, each line ending in `\n`, UTF-8, no blank lines. `<name>` matches
//!   `[a-z][a-z0-9_]{0,62}` and is not a built-in catalog table ([`validate_table_name`],
//!   checked when the configuration is loaded).
//! - The shipper POSTs such a record to `{lake}/v1/ingest/json/<name>` with
//!   `Authorization: Bearer <token>`, `Lake-Batch: <node>/<epoch>/<seq>` and
//!   `Content-Type: application/x-ndjson` ([`CONTENT_TYPE`]), uncompressed. Retries, 4xx →
//!   `rejected/` and acknowledgement on 200 are as for Arrow records.
//! - Lines are shipped byte for byte as the producer wrote them (surrounding whitespace
//!   trimmed), with one exception: a line without the source's `ts_field` (default `ts`)
//!   gets that field added, as the first member, holding the time the collector read the
//!   line (or started the command) in RFC 3339 with microseconds and `Z`, e.g.
//!   `"ts":"2026-11-22T10:15:01.123456Z"`. So a line keeps its event time through a
//!   spool backlog; configure the lake table's timestamp field to the same name.
//! - A body holds at most [`MAX_BODY_BYTES`] (one longer line goes alone in its record).
//! - The collector builds no schema: keys are shipped as written, also ones differing only
//!   in case (`level` and `Level`, `Host`). The lake keeps one column per name ignoring
//!   case and the other values in the row's `_extra` (see the README's custom tables).
//!
//! Lines that are not a JSON object (not UTF-8, not JSON, an array or a scalar, cut at
//! the maximum line length) are never shipped to the custom table: the source keeps them
//! raw in `logs` (`<source>-unparsed`) and counts them in `parse_errors`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserializer as _;

use super::Encoded;

/// Prefix of the spool table string of a custom table.
pub const PREFIX: &str = "json/";
/// Content type of an NDJSON body.
pub const CONTENT_TYPE: &str = "application/x-ndjson";
/// Largest NDJSON body of one spool record (the lake's default body limit is 64 MiB).
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// Checks a custom table name: `[a-z][a-z0-9_]{0,62}`, not a built-in table or a name the
/// lake reserves — the lake's own rule ([`lake_format::custom::validate_table_name`]), so
/// a name the collector accepts is one the lake accepts.
pub fn validate_table_name(name: &str) -> Result<(), String> {
    lake_format::custom::validate_table_name(name).map_err(|e| e.to_string())
}

/// The spool table string of custom table `name`: `json/<name>`.
pub fn spool_table(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// The custom table name of a spool table string, if it is one.
pub fn custom_name(spool_table: &str) -> Option<&str> {
    spool_table.strip_prefix(PREFIX)
}

/// Why a line is not shipped to a custom table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Not UTF-8.
    NotUtf8,
    /// Not JSON, or JSON followed by something else.
    NotJson(String),
    /// Valid JSON, but not an object.
    NotObject,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::NotUtf8 => f.write_str("not UTF-8"),
            LineError::NotJson(e) => write!(f, "not JSON: {e}"),
            LineError::NotObject => f.write_str("JSON, but not an object"),
        }
    }
}

/// What to do with one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// Ship these bytes (without the newline).
    Ship(Cow<'a, [u8]>),
    /// A blank line: nothing to ship, not an error.
    Blank,
}

/// RFC 3339 UTC with microseconds, e.g. `2026-11-22T10:15:01.123456Z`.
pub fn rfc3339_micros(micros: i64) -> String {
    match jiff::Timestamp::from_microsecond(micros) {
        Ok(t) => format!("{:.6}", t),
        // Out of jiff's range (years beyond ±9999): cannot happen for a clock reading.
        Err(_) => "1970-01-01T00:00:00.000000Z".to_string(),
    }
}

/// Checks that `line` is one JSON object and, when it lacks `ts_field`, adds
/// `"<ts_field>":"<RFC 3339 of ts_micros>"` as its first member. Pure; allocates only
/// when it adds the field.
pub fn normalize_line<'a>(line: &'a [u8], ts_field: &str, ts_micros: i64) -> Result<Line<'a>, LineError> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(Line::Blank);
    }
    let text = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8)?;
    if !text.starts_with('{') {
        // Tell "some other JSON" from "not JSON" for the error message.
        return match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Err(LineError::NotObject),
            Err(e) => Err(LineError::NotJson(e.to_string())),
        };
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let seen = de
        .deserialize_map(ObjectCheck { field: ts_field })
        .and_then(|seen| de.end().map(|()| seen))
        .map_err(|e| LineError::NotJson(e.to_string()))?;
    if seen.has_field {
        return Ok(Line::Ship(Cow::Borrowed(line)));
    }
    let key = serde_json::to_string(ts_field).unwrap_or_else(|_| "\"ts\"".to_string());
    let ts = rfc3339_micros(ts_micros);
    let mut out = Vec::with_capacity(line.len() + key.len() + ts.len() + 4);
    out.push(b'{');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b":\"");
    out.extend_from_slice(ts.as_bytes());
    out.push(b'"');
    if seen.members > 0 {
        out.push(b',');
        out.extend_from_slice(&line[1..]);
    } else {
        out.push(b'}');
    }
    Ok(Line::Ship(Cow::Owned(out)))
}

struct Seen {
    has_field: bool,
    members: usize,
}

/// Visits one JSON object without building it: counts members, looks for one key.
struct ObjectCheck<'f> {
    field: &'f str,
}

impl<'de> Visitor<'de> for ObjectCheck<'_> {
    type Value = Seen;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Seen, A::Error> {
        let mut seen = Seen { has_field: false, members: 0 };
        while let Some(is_field) = map.next_key_seed(KeyIs(self.field))? {
            map.next_value::<IgnoredAny>()?;
            seen.members += 1;
            seen.has_field |= is_field;
        }
        Ok(seen)
    }
}

/// A key, compared with the wanted one without allocating.
struct KeyIs<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

/// Accumulates shipped lines of one custom table into NDJSON bodies of at most
/// [`MAX_BODY_BYTES`] each.
#[derive(Debug)]
pub struct NdjsonBodies {
    table: String,
    counted_as: &'static str,
    max: usize,
    done: Vec<Encoded>,
    cur: Vec<u8>,
    rows: u64,
}

impl NdjsonBodies {
    /// Bodies for custom table `name`, rows counted as source `counted_as`.
    pub fn new(name: &str, counted_as: &'static str) -> Self {
        Self::with_max(name, counted_as, MAX_BODY_BYTES)
    }

    /// As [`Self::new`] with another body bound (tests).
    pub fn with_max(name: &str, counted_as: &'static str, max: usize) -> Self {
        NdjsonBodies {
            table: spool_table(name),
            counted_as,
            max: max.max(1),
            done: Vec::new(),
            cur: Vec::new(),
            rows: 0,
        }
    }

    /// Adds one line (without its newline).
    pub fn push(&mut self, line: &[u8]) {
        if !self.cur.is_empty() && self.cur.len() + line.len() + 1 > self.max {
            self.cut();
        }
        self.cur.extend_from_slice(line);
        self.cur.push(b'\n');
        self.rows += 1;
    }

    /// Lines pushed since the last `finish`.
    pub fn rows(&self) -> u64 {
        self.rows + self.done.iter().map(|e| e.rows).sum::<u64>()
    }

    fn cut(&mut self) {
        let body = std::mem::take(&mut self.cur);
        self.done.push(Encoded {
            table: self.table.clone(),
            body,
            rows: std::mem::take(&mut self.rows),
            counted_as: self.counted_as,
        });
    }

    /// The bodies of every line pushed so far (none when no line was); starts empty again.
    pub fn finish(&mut self) -> Vec<Encoded> {
        if self.rows > 0 {
            self.cut();
        }
        std::mem::take(&mut self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: i64 = 1_795_342_501_123_456; // 2026-11-22T10:15:01.123456Z

    fn shipped(line: &str, field: &str) -> String {
        match normalize_line(line.as_bytes(), field, TS).unwrap() {
            Line::Ship(b) => String::from_utf8(b.into_owned()).unwrap(),
            Line::Blank => panic!("blank"),
        }
    }

    #[test]
    fn table_names_are_checked() {
        for ok in ["app", "fastapi_logs", "ups2", "a", &"a".repeat(63)] {
            validate_table_name(ok).unwrap();
        }
        for bad in
            ["", "events", "App", "1app", "_x", "my-table", "x.y", "http", "metrics", "logs", &"a".repeat(64), "é"]
        {
            assert!(validate_table_name(bad).is_err(), "{bad}");
        }
        assert_eq!(spool_table("app"), "json/app");
        assert_eq!(custom_name("json/app"), Some("app"));
        assert_eq!(custom_name("http"), None);
    }

    #[test]
    fn lines_with_the_field_ship_unchanged_others_get_it_first() {
        let line = r#"{"ts":"2026-01-01T00:00:00Z","level":"info","msg":"a \"quoted\" word"}"#;
        assert!(matches!(normalize_line(line.as_bytes(), "ts", TS).unwrap(), Line::Ship(Cow::Borrowed(_))));
        assert_eq!(shipped(line, "ts"), line);
        assert_eq!(
            shipped(r#"{"level":"info","n":1}"#, "ts"),
            r#"{"ts":"2026-11-22T10:15:01.123456Z","level":"info","n":1}"#
        );
        assert_eq!(shipped(r#"  {"time":1}  "#, "time"), r#"{"time":1}"#, "trimmed, own field kept");
        assert_eq!(shipped("{}", "ts"), r#"{"ts":"2026-11-22T10:15:01.123456Z"}"#);
        assert_eq!(shipped("{ }\r", "ts"), r#"{"ts":"2026-11-22T10:15:01.123456Z"}"#);
        // A nested "ts" is not the top-level field.
        assert!(shipped(r#"{"a":{"ts":1}}"#, "ts").starts_with(r#"{"ts":"2026"#));
        // Escaped key spelling still matches.
        assert_eq!(shipped(r#"{"\u0074s":5}"#, "ts"), r#"{"\u0074s":5}"#);
        let odd = shipped(r#"{"a":1}"#, "we\"ird");
        assert!(odd.starts_with(r#"{"we\"ird":"#), "{odd}");
        serde_json::from_str::<serde_json::Value>(&odd).unwrap();
    }

    #[test]
    fn names_differing_only_in_case_ship_as_written() {
        let line = r#"{"level":"info","Level":"WARN","Host":"x"}"#;
        assert_eq!(
            shipped(line, "ts"),
            r#"{"ts":"2026-11-22T10:15:01.123456Z","level":"info","Level":"WARN","Host":"x"}"#
        );
        // `TS` is not the `ts` field: the field is added, `TS` shipped beside it.
        assert_eq!(shipped(r#"{"TS":1}"#, "ts"), r#"{"ts":"2026-11-22T10:15:01.123456Z","TS":1}"#);
    }

    #[test]
    fn what_is_not_one_object_is_an_error() {
        assert_eq!(normalize_line(b"   ", "ts", TS).unwrap(), Line::Blank);
        assert_eq!(normalize_line(b"[1,2]", "ts", TS).unwrap_err(), LineError::NotObject);
        assert_eq!(normalize_line(b"42", "ts", TS).unwrap_err(), LineError::NotObject);
        assert_eq!(normalize_line(b"\"s\"", "ts", TS).unwrap_err(), LineError::NotObject);
        assert_eq!(normalize_line(b"{\"a\":\xff}", "ts", TS).unwrap_err(), LineError::NotUtf8);
        for bad in
            [&b"not json"[..], b"{", b"{\"a\":1} {\"b\":2}", b"{\"a\":1,}", b"{\"a\" 1}", b"{'a':1}", b"{\"a\":NaN}"]
        {
            assert!(
                matches!(normalize_line(bad, "ts", TS), Err(LineError::NotJson(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bodies_are_split_at_the_bound_and_every_line_ends_in_a_newline() {
        let mut b = NdjsonBodies::with_max("app", "json_file", 20);
        for i in 0..5 {
            b.push(format!("{{\"i\":{i}}}").as_bytes()); // 7 bytes + newline
        }
        b.push(&[b'x'; 30]); // alone, over the bound
        assert_eq!(b.rows(), 6);
        let out = b.finish();
        let bodies: Vec<String> = out.iter().map(|e| String::from_utf8(e.body.clone()).unwrap()).collect();
        assert_eq!(
            bodies,
            ["{\"i\":0}\n{\"i\":1}\n", "{\"i\":2}\n{\"i\":3}\n", "{\"i\":4}\n", &format!("{}\n", "x".repeat(30))]
        );
        assert_eq!(out.iter().map(|e| e.rows).collect::<Vec<_>>(), [2, 2, 1, 1]);
        assert!(out.iter().all(|e| e.table == "json/app" && e.counted_as == "json_file"));
        assert!(b.finish().is_empty());
    }

    #[test]
    fn rfc3339_has_microseconds_and_z() {
        assert_eq!(rfc3339_micros(TS), "2026-11-22T10:15:01.123456Z");
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
    }
}
