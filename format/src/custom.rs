//! Custom tables: tables a user creates by sending rows (`POST /v1/ingest/json/{table}`),
//! beside the built-in [`catalog`](crate::catalog).
//!
//! A custom table has the catalog's two leading columns, `ts` and `host`, then the
//! columns its data brought, in the order they first appeared, each with one
//! [`ColumnType`] for life: a later batch may add columns (old files read them as NULL)
//! but never change a type. The lake keeps each table's schema in
//! `<data>/state/custom/<name>.json` ([`schema_path`]); the query engine reads the same
//! files, so a custom table is queryable by name like a built-in one.
//!
//! Column names are unique **ignoring ASCII case** ([`same_name`]), `ts`, `host` and
//! [`EXTRA_COLUMN`] included: DuckDB compares identifiers that way, so a schema with both
//! `Host` and `host` cannot be turned into a view at all. The lake sends a value whose
//! name collides to the row's [`EXTRA_COLUMN`] instead of adding a column; a schema
//! written before that rule is repaired when `lake serve` starts
//! ([`CustomSchema::without_collisions`]), and the names it moved are remembered in
//! [`CustomSchema::moved_to_extra`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::catalog::{ColumnType, Table};
use crate::layout::STATE_DIR;

/// Longest table or column name.
pub const MAX_NAME: usize = 63;
/// A custom table's overflow column (JSON text, one object per row): values whose type
/// did not fit their column (lenient tables), and values whose name collides, ignoring
/// case, with a column of the table (any table). Added to the schema when first needed.
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

/// Whether DuckDB takes two column names for one: equal ignoring ASCII case. (DuckDB folds
/// ASCII letters only: `É` and `é` are two columns to it, and to the lake.)
pub fn same_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The column names of every custom table that no data column may take in any case.
pub const BUILT_IN_COLUMNS: [&str; 3] = ["ts", "host", EXTRA_COLUMN];

/// A data column of a stored schema whose name another column already takes, ignoring
/// case (see [`CustomSchema::collisions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    /// The column that keeps the name (`ts`, `host`, `_extra`, or the earlier column).
    pub kept: String,
    /// The column that has to go (its values belong in [`EXTRA_COLUMN`]).
    pub moved: String,
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
    /// Columns a repair took out of the schema because their name collided with another
    /// ignoring case: their values are in [`EXTRA_COLUMN`] under these names. `lake serve`
    /// checks the table's files for them at every start, so a file from before the repair
    /// (one brought back by `lake restore`) is repaired too. Absent from most files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved_to_extra: Vec<String>,
}

impl CustomSchema {
    /// A table with no data columns yet.
    pub fn new(name: &str) -> CustomSchema {
        CustomSchema { version: 1, name: name.to_string(), columns: Vec::new(), moved_to_extra: Vec::new() }
    }

    /// The column named `name`, if any (after `ts` and `host`).
    pub fn column(&self, name: &str) -> Option<&CustomColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The name of the column (`ts`, `host`, `_extra` or a data column) that `name` would
    /// collide with: equal ignoring case but not equal. `None` when `name` is free or is
    /// exactly a column's name.
    pub fn colliding(&self, name: &str) -> Option<&str> {
        let mut taken = BUILT_IN_COLUMNS.iter().copied().chain(self.columns.iter().map(|c| c.name.as_str()));
        if taken.clone().any(|c| c == name) {
            return None;
        }
        taken.find(|c| same_name(c, name))
    }

    /// The data columns whose names an earlier column, `ts`, `host` or `_extra` already
    /// takes ignoring case (or exactly): what a schema written before the rule of
    /// [`same_name`] may hold. `_extra` itself always keeps its name; otherwise the
    /// first column keeps it.
    pub fn collisions(&self) -> Vec<Collision> {
        let mut seen: Vec<&str> = vec!["ts", "host"];
        if self.columns.iter().any(|c| c.name == EXTRA_COLUMN) {
            seen.push(EXTRA_COLUMN);
        }
        let mut out = Vec::new();
        for c in &self.columns {
            if c.name == EXTRA_COLUMN {
                continue;
            }
            match seen.iter().find(|s| same_name(s, &c.name)) {
                Some(kept) => out.push(Collision { kept: kept.to_string(), moved: c.name.clone() }),
                None if same_name(&c.name, EXTRA_COLUMN) => {
                    out.push(Collision { kept: EXTRA_COLUMN.to_string(), moved: c.name.clone() })
                }
                None => seen.push(&c.name),
            }
        }
        out
    }

    /// This schema with every colliding column ([`CustomSchema::collisions`]) taken out,
    /// recorded in [`CustomSchema::moved_to_extra`], and [`EXTRA_COLUMN`] added (at the
    /// end) if it was missing. Returns the collisions too; none: the schema unchanged.
    pub fn without_collisions(&self) -> (CustomSchema, Vec<Collision>) {
        let collisions = self.collisions();
        let mut fixed = self.clone();
        if collisions.is_empty() {
            return (fixed, collisions);
        }
        fixed.columns.retain(|c| !collisions.iter().any(|x| x.moved == c.name));
        for x in &collisions {
            if !fixed.moved_to_extra.contains(&x.moved) {
                fixed.moved_to_extra.push(x.moved.clone());
            }
        }
        if fixed.column(EXTRA_COLUMN).is_none() {
            fixed.columns.push(CustomColumn { name: EXTRA_COLUMN.to_string(), ty: ColumnType::Text });
        }
        (fixed, collisions)
    }

    /// Every column with its type, `ts` and `host` first.
    pub fn all_columns(&self) -> Vec<(String, ColumnType)> {
        let mut v = vec![("ts".to_string(), ColumnType::Timestamp), ("host".to_string(), ColumnType::Text)];
        v.extend(self.columns.iter().map(|c| (c.name.clone(), c.ty)));
        v
    }

    /// The Arrow schema: `ts` and `host` required, every other column nullable.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("ts", ColumnType::Timestamp.data_type(), false),
            Field::new("host", ColumnType::Text.data_type(), false),
        ];
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

/// A schema file that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedSchema {
    /// The table it is for: the file's name without `.json`.
    pub table: String,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for DamagedSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

/// Every custom table's schema under `data`, sorted by name. Unreadable files are
/// returned as errors beside the good ones, so one damaged file hides one table only.
pub fn load_all(data: &Path) -> (Vec<CustomSchema>, Vec<DamagedSchema>) {
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
        let table = path.file_stem().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        match parsed {
            Ok(s) if validate_table_name(&s.name).is_ok() && table == s.name => ok.push(s),
            Ok(s) => bad.push(DamagedSchema { table, path, problem: format!("names table {:?}", s.name) }),
            Err(problem) => bad.push(DamagedSchema { table, path, problem }),
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
        assert!(
            validate_column_name("a\"b").is_err()
                && validate_column_name("").is_err()
                && validate_column_name("a\nb").is_err()
        );
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
        assert_eq!(bad[0].table, "broken");
        assert!(
            !String::from_utf8(serde_json::to_vec(&s).unwrap()).unwrap().contains("moved_to_extra"),
            "absent unless a repair moved columns"
        );
        let names: Vec<String> = s.arrow_schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["ts", "host", "plan", "amount"]);
        assert!(String::from_utf8(serde_json::to_vec(&s).unwrap()).unwrap().contains(r#""type":"float""#));
    }

    fn schema(cols: &[&str]) -> CustomSchema {
        let mut s = CustomSchema::new("app");
        s.columns = cols.iter().map(|c| CustomColumn { name: c.to_string(), ty: ColumnType::Text }).collect();
        s
    }

    #[test]
    fn names_that_differ_only_in_case_collide() {
        assert!(same_name("Host", "host") && same_name("LEVEL", "level") && !same_name("É", "é"));
        let s = schema(&["level", "msg"]);
        assert_eq!(s.colliding("Level"), Some("level"));
        assert_eq!(s.colliding("HOST"), Some("host"));
        assert_eq!(s.colliding("Ts"), Some("ts"));
        assert_eq!(s.colliding("_Extra"), Some("_extra"), "the overflow column's name is taken even before it exists");
        assert_eq!(s.colliding("level"), None, "the exact name is the column itself");
        assert_eq!(s.colliding("other"), None);
    }

    #[test]
    fn a_colliding_schema_is_repaired_into_one_column_per_name() {
        let s = schema(&["Level", "Host", "msg", "level", "_EXTRA", "MSG"]);
        let (fixed, moved) = s.without_collisions();
        let pairs: Vec<(&str, &str)> = moved.iter().map(|c| (c.kept.as_str(), c.moved.as_str())).collect();
        assert_eq!(pairs, [("host", "Host"), ("Level", "level"), ("_extra", "_EXTRA"), ("msg", "MSG")]);
        let names: Vec<&str> = fixed.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Level", "msg", EXTRA_COLUMN]);
        assert_eq!(fixed.moved_to_extra, ["Host", "level", "_EXTRA", "MSG"]);
        assert!(fixed.collisions().is_empty());
        // Idempotent: a repaired schema stays as it is.
        assert_eq!(fixed.without_collisions().0, fixed);
        // `_extra` keeps its name even when a variant came first.
        let (fixed, _) = schema(&["_Extra", "a", "_extra"]).without_collisions();
        let names: Vec<&str> = fixed.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", EXTRA_COLUMN]);
        // Stored and read back.
        let text = serde_json::to_string(&fixed).unwrap();
        assert_eq!(serde_json::from_str::<CustomSchema>(&text).unwrap(), fixed);
    }
}
