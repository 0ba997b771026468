//! Custom tables: any rows a user sends, with a schema inferred from the data.
//!
//! - [`parse`] turns an NDJSON / JSON-array / CSV body into rows of typed values.
//! - [`Registry`] owns every custom table's schema (`<data>/state/custom/<name>.json`,
//!   see [`lake_format::custom`]): the first batch creates it, later batches may add
//!   columns — never change a type — up to the table's column limit. A schema change
//!   is written (atomically, fsynced) before the batch that needs it reaches the WAL, so
//!   a replayed batch always finds its columns.
//! - [`build`] makes an Arrow batch of the rows against the (evolved) schema; a value
//!   whose type conflicts with its column is a 400 naming the field, line and both
//!   types, or — for a table configured `lenient` — moves into the `_extra` JSON column
//!   and is counted.
//!
//! The batch then takes the Arrow path's road: WAL (the table's name and the batch as
//! Arrow IPC), buffers, Parquet under `tables/<name>/date=…/`.

pub mod build;
pub mod config;
pub mod parse;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use arrow_array::{new_null_array, ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;

use lake_format::catalog::ColumnType;
use lake_format::custom::{self, CustomColumn, CustomSchema};

pub use config::{TableOptions, TablesConfig};

/// Why a batch was refused (all are the sender's mistake: 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomError {
    /// The table name is not allowed.
    #[error(transparent)]
    Name(#[from] custom::NameError),
    /// The body could not be read.
    #[error("line {line}: {message}")]
    Parse {
        /// 1-based line (NDJSON, CSV record) or element (JSON array).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value does not fit its column's type.
    #[error("line {line}: field {field:?} holds a {found} but the column is {expected} (a column's type never changes; send it under another name, or make the table lenient)")]
    Conflict {
        /// 1-based line.
        line: usize,
        /// Field.
        field: String,
        /// The column's type.
        expected: &'static str,
        /// The value's type.
        found: &'static str,
    },
    /// Too many columns.
    #[error("table {table:?} would have {columns} columns; the limit is {limit} (custom.tables.{table}.max_columns in lake.toml)")]
    TooManyColumns {
        /// Table.
        table: String,
        /// Columns it would have.
        columns: usize,
        /// The limit.
        limit: usize,
    },
    /// The `ts` field is not a time.
    #[error("line {line}: field {field:?} is not a timestamp (RFC 3339, or epoch seconds/ms/µs/ns): {value}")]
    BadTs {
        /// 1-based line.
        line: usize,
        /// The configured ts field.
        field: String,
        /// The value, shortened.
        value: String,
    },
    /// The `ts` field is a time outside what the lake stores ([`crate::http::bounds`]).
    #[error("line {line}: field {field:?}: {reason}")]
    TsOutOfRange {
        /// 1-based line.
        line: usize,
        /// The configured ts field.
        field: String,
        /// Why (the time and the bound it breaks).
        reason: String,
        /// Set when the time is too far ahead of the lake's clock (answered with
        /// `"code": "clock_skew"`).
        skew: Option<crate::http::bounds::Skew>,
    },
    /// The body has no rows.
    #[error("the body holds no rows")]
    Empty,
}

impl CustomError {
    /// The clock refusal this is, if it is one.
    pub fn skew(&self) -> Option<crate::http::bounds::Skew> {
        match self {
            CustomError::TsOutOfRange { skew, .. } => *skew,
            _ => None,
        }
    }
}

/// Storing a schema failed (the lake's fault: 500).
#[derive(Debug, thiserror::Error)]
#[error("storing the schema of {table}: {source}")]
pub struct SchemaStoreError {
    table: String,
    source: std::io::Error,
}

/// Every custom table's schema, shared by ingest, WAL replay, queries and compaction.
#[derive(Debug)]
pub struct Registry {
    data: PathBuf,
    tables: RwLock<HashMap<String, Arc<CustomSchema>>>,
    /// Serialises schema changes, so two batches adding columns do not lose one.
    evolve: Mutex<()>,
    config: TablesConfig,
}

/// Short name of a type in messages.
pub fn type_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Timestamp => "timestamp",
        ColumnType::Text => "string",
        ColumnType::Float => "float64",
        ColumnType::Int => "int64",
        ColumnType::Bool => "bool",
        ColumnType::TextMap => "map",
        ColumnType::TextList => "list",
    }
}

impl Registry {
    /// Loads the schemas under `data`; damaged schema files are logged and skipped.
    pub fn open(data: &Path, config: TablesConfig) -> Registry {
        let (ok, bad) = custom::load_all(data);
        for b in bad {
            tracing::error!(problem = %b, "custom table schema unreadable; the table is not served");
        }
        let tables = ok.into_iter().map(|s| (s.name.clone(), Arc::new(s))).collect();
        Registry { data: data.to_path_buf(), tables: RwLock::new(tables), evolve: Mutex::new(()), config }
    }

    /// Options of a table (its `[tables.<name>]` entry or the defaults).
    pub fn options(&self, name: &str) -> &TableOptions {
        self.config.options(name)
    }

    /// The schema of a table, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<CustomSchema>> {
        self.tables.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Every custom table, sorted by name.
    pub fn all(&self) -> Vec<Arc<CustomSchema>> {
        let mut v: Vec<_> = self.tables.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The schema of `name` with every column of `wanted` (name, type of a new column)
    /// present: created or extended (and stored) when needed. Existing columns keep
    /// their type; callers have already checked values against them.
    pub fn evolve(&self, name: &str, wanted: &[(String, ColumnType)]) -> Result<Arc<CustomSchema>, EvolveError> {
        custom::validate_table_name(name).map_err(|e| EvolveError::Refused(e.into()))?;
        if let Some(s) = self.get(name) {
            if wanted.iter().all(|(c, _)| s.column(c).is_some()) {
                return Ok(s);
            }
        }
        let _one = self.evolve.lock().unwrap_or_else(|p| p.into_inner());
        let mut schema = self.get(name).map(|s| (*s).clone()).unwrap_or_else(|| CustomSchema::new(name));
        let before = schema.columns.len();
        for (c, ty) in wanted {
            if schema.column(c).is_none() {
                schema.columns.push(CustomColumn { name: c.clone(), ty: *ty });
            }
        }
        let limit = self.options(name).max_columns;
        if schema.columns.len() > limit {
            return Err(EvolveError::Refused(CustomError::TooManyColumns { table: name.into(), columns: schema.columns.len(), limit }));
        }
        let path = custom::schema_path(&self.data, name);
        let exists = self.get(name).is_some();
        if schema.columns.len() != before || !exists {
            let bytes = serde_json::to_vec_pretty(&schema).map_err(|e| EvolveError::Store(SchemaStoreError { table: name.into(), source: std::io::Error::other(e) }))?;
            crate::state::write_atomic(&path, &bytes).map_err(|source| EvolveError::Store(SchemaStoreError { table: name.into(), source }))?;
            if !exists {
                tracing::info!(table = name, columns = schema.columns.len(), "custom table created");
            } else {
                tracing::info!(table = name, added = schema.columns.len() - before, "custom table gained columns");
            }
        }
        let schema = Arc::new(schema);
        self.tables.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), Arc::clone(&schema));
        Ok(schema)
    }
}

/// Why [`Registry::evolve`] failed.
#[derive(Debug, thiserror::Error)]
pub enum EvolveError {
    /// The sender's mistake.
    #[error(transparent)]
    Refused(#[from] CustomError),
    /// The lake's.
    #[error(transparent)]
    Store(SchemaStoreError),
}

/// `batch` with exactly `schema`'s columns, by name: missing ones NULL. Columns only ever
/// get added, so a batch built against an older schema always fits a newer one.
pub fn conform_to(schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch, arrow_schema::ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(a) => Arc::clone(a),
            None => new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())))
}

#[cfg(test)]
mod tests;
