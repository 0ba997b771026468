//! Custom tables: tables a user creates by sending rows (`POST /v1/ingest/json/{table}`),
//! beside the built-in [`catalog`](crate::catalog).
//!
//! A custom table has the catalog's two leading columns, `ts` and `host`, then the
//! columns its data brought, in the order they first appeared, each with one
//! [`ColumnType`] for life: a later batch may add columns (old files read them as NULL)
//! but never change a type. The lake keeps each table's schema in
//! `<data>/state/custom/<name>.json` ([`schema_path`]); the query engine reads the same
//! files, so a custom table is queryable by name like a built-in one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::catalog::{ColumnType, Table};
use crate::layout::STATE_DIR;

/// Longest table or column name.
pub const MAX_NAME: usize = 63;
/// The lenient tables' column of values that did not fit their column's type (JSON text).
pub const EXTRA_COLUMN: &str = "_extra";
/// Names a custom table cannot take: views of the query engine.
pub const RESERVED: &[&str] = &["events", "tables", "information_schema", "main", "temp", "system"];

/// A name refused for a custom table or column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub String);

/// Checks a custom table name: `[a-z][a-z0-9_]{0,62}`, not a built-in or reserved name.
pub fn validate_table_name(name: &str) -> Result<(), NameError> {
    let ok = name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(NameError(format!(
            "table name {name:?}: use a lower-case identifier ([a-z][a-z0-9_]*, at most {MAX_NAME} characters)"
        )));
    }
    if name.parse::<Table>().is_ok() || RESERVED.contains(&name) || name.starts_with("__") {
        return Err(NameError(format!("table name {name:?} is taken by a built-in table or view; choose another")));
    }
    Ok(())
}

/// Checks a column name taken from data: 1..=63 bytes, no control characters, no `"`.
pub fn validate_column_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(|c| c.is_control() || c == '"') {
        return Err(NameError(format!(
            "field name {:?}: names must be 1 to {MAX_NAME} bytes without control characters or '\"'",
            name.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// One column of a custom table (after `ts` and `host`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomColumn {
    /// Column name, as in the data.
    pub name: String,
    /// Its type, fixed when it first appeared.
    #[serde(rename = "type")]
    pub ty: ColumnType,
}

/// The schema of a custom table, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomSchema {
    /// Format version of this file.
    pub version: u32,
    /// Table name.
    pub name: String,
    /// Columns after `ts` and `host`, in order of first appearance.
    pub columns: Vec<CustomColumn>,
}

impl CustomSchema {
    /// A table with no data columns yet.
    pub fn new(name: &str) -> CustomSchema {
        CustomSchema { version: 1, name: name.to_string(), columns: Vec::new() }
    }

    /// The column named `name`, if any (after `ts` and `host`).
    pub fn column(&self, name: &str) -> Option<&CustomColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Every column with its type, `ts` and `host` first.
    pub fn all_columns(&self) -> Vec<(String, ColumnType)> {
        let mut v = vec![("ts".to_string(), ColumnType::Timestamp), ("host".to_string(), ColumnType::Text)];
        v.extend(self.columns.iter().map(|c| (c.name.clone(), c.ty)));
        v
    }

    /// The Arrow schema: `ts` and `host` required, every other column nullable.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut fields = vec![Field::new("ts", ColumnType::Timestamp.data_type(), false), Field::new("host", ColumnType::Text.data_type(), false)];
        fields.extend(self.columns.iter().map(|c| Field::new(&c.name, c.ty.data_type(), true)));
        let meta = std::collections::HashMap::from([("table".to_string(), self.name.clone())]);
        Arc::new(Schema::new_with_metadata(fields, meta))
    }
}

/// `<data>/state/custom`.
pub fn schema_dir(data: &Path) -> PathBuf {
    data.join(STATE_DIR).join("custom")
}

/// `<data>/state/custom/<name>.json`.
pub fn schema_path(data: &Path, name: &str) -> PathBuf {
    schema_dir(data).join(format!("{name}.json"))
}

/// Every custom table's schema under `data`, sorted by name. Unreadable files are
/// returned as errors beside the good ones, so one damaged file hides one table only.
pub fn load_all(data: &Path) -> (Vec<CustomSchema>, Vec<String>) {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(schema_dir(data)) else {
        return (ok, bad);
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<CustomSchema>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(s) if validate_table_name(&s.name).is_ok() && path.file_stem().is_some_and(|f| *f == *s.name) => ok.push(s),
            Ok(s) => bad.push(format!("{}: names table {:?}", path.display(), s.name)),
            Err(e) => bad.push(format!("{}: {e}", path.display())),
        }
    }
    ok.sort_by(|a, b| a.name.cmp(&b.name));
    (ok, bad)
}

/// A table of the lake: built-in or custom.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableRef {
    /// A catalog table.
    Builtin(Table),
    /// A custom table, by name.
    Custom(Arc<str>),
}

impl TableRef {
    /// See [`Table::sort_columns`]; custom tables are sorted by (host, ts).
    pub fn sort_columns(&self) -> &'static [&'static str] {
        match self {
            TableRef::Builtin(t) => t.sort_columns(),
            TableRef::Custom(_) => &["host", "ts"],
        }
    }

    /// See [`Table::row_group_rows`].
    pub fn row_group_rows(&self) -> usize {
        match self {
            TableRef::Builtin(t) => t.row_group_rows(),
            TableRef::Custom(_) => 1_048_576,
        }
    }

    /// The table's name (SQL, URLs, paths).
    pub fn name(&self) -> &str {
        match self {
            TableRef::Builtin(t) => t.name(),
            TableRef::Custom(n) => n,
        }
    }

    /// A built-in table, or a custom one if `name` is a valid custom table name.
    pub fn parse_known(name: &str) -> Result<TableRef, NameError> {
        match name.parse::<Table>() {
            Ok(t) => Ok(TableRef::Builtin(t)),
            Err(_) => validate_table_name(name).map(|()| TableRef::Custom(name.into())),
        }
    }

    /// A built-in table by name, else a custom one (not checked against any registry).
    pub fn parse(name: &str) -> TableRef {
        name.parse::<Table>().map(TableRef::Builtin).unwrap_or_else(|_| TableRef::Custom(name.into()))
    }
}

impl std::str::FromStr for TableRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TableRef::parse_known(s)
    }
}

impl From<Table> for TableRef {
    fn from(t: Table) -> Self {
        TableRef::Builtin(t)
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["signups", "ups_1", "a"] {
            validate_table_name(good).unwrap();
        }
        for bad in ["http", "events", "Signups", "1x", "a-b", "", "__fresh_x", "../etc", &"a".repeat(64)] {
            assert!(validate_table_name(bad).is_err(), "{bad}");
        }
        validate_column_name("user.id").unwrap();
        assert!(validate_column_name("a\"b").is_err() && validate_column_name("").is_err() && validate_column_name("a\nb").is_err());
    }

    #[test]
    fn schema_round_trip_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = CustomSchema::new("signups");
        s.columns.push(CustomColumn { name: "plan".into(), ty: ColumnType::Text });
        s.columns.push(CustomColumn { name: "amount".into(), ty: ColumnType::Float });
        std::fs::create_dir_all(schema_dir(dir.path())).unwrap();
        std::fs::write(schema_path(dir.path(), "signups"), serde_json::to_vec(&s).unwrap()).unwrap();
        std::fs::write(schema_path(dir.path(), "broken"), b"{").unwrap();
        let (ok, bad) = load_all(dir.path());
        assert_eq!(ok, vec![s.clone()]);
        assert_eq!(bad.len(), 1);
        let names: Vec<String> = s.arrow_schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["ts", "host", "plan", "amount"]);
        assert!(String::from_utf8(serde_json::to_vec(&s).unwrap()).unwrap().contains(r#""type":"float""#));
    }
}
