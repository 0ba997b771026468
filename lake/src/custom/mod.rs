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
//! - Column names are unique ignoring ASCII case, as DuckDB's are
//!   ([`lake_format::custom::same_name`]): a field whose name differs only in case from a
//!   column (`Host` beside `host`, `Level` beside `level`, also within one batch or one
//!   row, CSV headers included) never becomes a column; its value goes to the row's
//!   `_extra` under its own name, in strict and lenient tables alike, and is counted
//!   (`lake_ingest_case_collisions_total`) and logged at most once a minute per table.
//! - [`repair`] fixes, when `lake serve` starts, a table stored before that rule.
//!
//! The batch then takes the Arrow path's road: WAL (the table's name and the batch as
//! Arrow IPC), buffers, Parquet under `tables/<name>/date=…/`.

pub mod build;
pub mod config;
pub mod parse;
pub mod repair;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::SchemaRef;

use lake_format::catalog::ColumnType;
use lake_format::custom::{self, CustomColumn, CustomSchema, EXTRA_COLUMN};

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
    /// Tables whose schema file exists but could not be read, with the problem: they take
    /// no rows (a new schema would overwrite the file and hide the table's columns).
    damaged: HashMap<String, String>,
    /// Serialises schema changes, so two batches adding columns do not lose one.
    evolve: Mutex<()>,
    config: TablesConfig,
    /// Per table: when a case collision was last logged, and how many since.
    collision_log: Mutex<HashMap<String, (Instant, u64)>>,
}

/// How often case collisions of one table are logged at most.
const COLLISION_LOG_EVERY: Duration = Duration::from_secs(60);

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
        let mut damaged = HashMap::new();
        for b in bad {
            tracing::error!(table = %b.table, problem = %b, "custom table schema unreadable; the table takes no rows and its queries fail until the file is fixed");
            damaged.insert(b.table.clone(), b.to_string());
        }
        let tables = ok.into_iter().map(|s| (s.name.clone(), Arc::new(s))).collect();
        Registry {
            data: data.to_path_buf(),
            tables: RwLock::new(tables),
            damaged,
            evolve: Mutex::new(()),
            config,
            collision_log: Mutex::new(HashMap::new()),
        }
    }

    /// Logs that `count` values of `table` went to `_extra` because their names collided
    /// ignoring case (`example`: one such pair): at most once a minute per table, with
    /// the count since the last line.
    pub fn note_collisions(&self, table: &str, count: usize, example: &custom::Collision) {
        if count == 0 {
            return;
        }
        let mut log = self.collision_log.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let entry = log.entry(table.to_string()).or_insert((now - COLLISION_LOG_EVERY, 0));
        entry.1 += count as u64;
        if now.duration_since(entry.0) >= COLLISION_LOG_EVERY {
            tracing::warn!(
                table,
                name = %example.moved,
                column = %example.kept,
                values = entry.1,
                "field names differing only in case from a column are kept in _extra, not as columns"
            );
            *entry = (now, 0);
        }
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
    ///
    /// A wanted name that collides ignoring case with a column (one added by another batch
    /// meanwhile) is not added: the caller finds it missing and keeps its values in
    /// `_extra` ([`build::build`]).
    pub fn evolve(&self, name: &str, wanted: &[(String, ColumnType)]) -> Result<Arc<CustomSchema>, EvolveError> {
        custom::validate_table_name(name).map_err(|e| EvolveError::Refused(e.into()))?;
        if let Some(problem) = self.damaged.get(name) {
            let source = std::io::Error::other(format!(
                "its schema file is damaged ({problem}); the table takes no rows until the file is fixed or removed"
            ));
            return Err(EvolveError::Store(SchemaStoreError { table: name.into(), source }));
        }
        if let Some(s) = self.get(name) {
            if wanted.iter().all(|(c, _)| s.column(c).is_some()) {
                return Ok(s);
            }
        }
        let _one = self.evolve.lock().unwrap_or_else(|p| p.into_inner());
        let mut schema = self.get(name).map(|s| (*s).clone()).unwrap_or_else(|| CustomSchema::new(name));
        let before = schema.columns.len();
        for (c, ty) in wanted {
            if schema.column(c).is_none() && schema.colliding(c).is_none() {
                schema.columns.push(CustomColumn { name: c.clone(), ty: *ty });
            }
        }
        let limit = self.options(name).max_columns;
        if schema.columns.len() > limit {
            return Err(EvolveError::Refused(CustomError::TooManyColumns {
                table: name.into(),
                columns: schema.columns.len(),
                limit,
            }));
        }
        let path = custom::schema_path(&self.data, name);
        let exists = self.get(name).is_some();
        if schema.columns.len() != before || !exists {
            let bytes = serde_json::to_vec_pretty(&schema).map_err(|e| {
                EvolveError::Store(SchemaStoreError { table: name.into(), source: std::io::Error::other(e) })
            })?;
            lake_format::durable::write_atomic(&path, &bytes)
                .map_err(|source| EvolveError::Store(SchemaStoreError { table: name.into(), source }))?;
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
/// get added, so a batch built against an older schema always fits a newer one — except
/// a column a repair moved out ([`repair`]: its name collided ignoring case), whose
/// values join `_extra` under their name (see [`merge_into_extra`]).
pub fn conform_to(schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch, arrow_schema::ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let batch_schema = batch.schema();
    let leftover: Vec<usize> =
        (0..batch.num_columns()).filter(|i| schema.field_with_name(batch_schema.field(*i).name()).is_err()).collect();
    let extra = if leftover.is_empty() {
        None
    } else if schema.field_with_name(EXTRA_COLUMN).is_ok() {
        Some(merge_into_extra(batch, &leftover)?)
    } else {
        let names: Vec<&str> = leftover.iter().map(|i| batch_schema.field(*i).name().as_str()).collect();
        return Err(arrow_schema::ArrowError::SchemaError(format!(
            "columns {names:?} are not in the table's schema, which has no {EXTRA_COLUMN} column to keep them"
        )));
    };
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match (f.name() == EXTRA_COLUMN, &extra, batch.column_by_name(f.name())) {
            (true, Some(merged), _) => Arc::clone(merged),
            (_, _, Some(a)) => Arc::clone(a),
            (_, _, None) => new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

/// The `_extra` column of `batch` (JSON objects as text, NULL for none) with the values of
/// its columns `moved` added under their column names: timestamps as RFC 3339, numbers
/// and booleans as JSON, text as JSON strings; NULLs are left out. A name the row's
/// `_extra` already holds is kept as `name#2` (then `#3`, …), so nothing is overwritten;
/// an `_extra` that is not a JSON object is kept whole under `_extra`.
pub fn merge_into_extra(batch: &RecordBatch, moved: &[usize]) -> Result<ArrayRef, arrow_schema::ArrowError> {
    let n = batch.num_rows();
    let schema = batch.schema();
    let mut objects: Vec<serde_json::Map<String, serde_json::Value>> = vec![serde_json::Map::new(); n];
    if let Some(existing) = batch.column_by_name(EXTRA_COLUMN) {
        let existing = as_strings(existing)?;
        for (row, obj) in objects.iter_mut().enumerate() {
            if existing.is_null(row) {
                continue;
            }
            match serde_json::from_str::<serde_json::Value>(existing.value(row)) {
                Ok(serde_json::Value::Object(m)) => *obj = m,
                _ => {
                    obj.insert(EXTRA_COLUMN.to_string(), existing.value(row).into());
                }
            }
        }
    }
    for &i in moved {
        let name = schema.field(i).name();
        for (row, value) in column_json(batch.column(i))?.into_iter().enumerate() {
            if let Some(v) = value {
                put_extra(&mut objects[row], name.clone(), v);
            }
        }
    }
    let merged: StringArray =
        objects.into_iter().map(|o| (!o.is_empty()).then(|| serde_json::Value::Object(o).to_string())).collect();
    Ok(Arc::new(merged))
}

/// The values of a column as JSON (`None` for NULL): the types custom tables have
/// directly, timestamps as RFC 3339 in UTC; any other type through arrow-json.
fn column_json(a: &ArrayRef) -> Result<Vec<Option<serde_json::Value>>, arrow_schema::ArrowError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{
        Float64Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    use arrow_schema::{DataType, TimeUnit};
    let n = a.len();
    let each =
        |f: &dyn Fn(usize) -> serde_json::Value| (0..n).map(|i| (!a.is_null(i)).then(|| f(i))).collect::<Vec<_>>();
    let time =
        |nanos: i128| jiff::Timestamp::from_nanosecond(nanos).map_or(serde_json::Value::Null, |t| t.to_string().into());
    Ok(match a.data_type() {
        DataType::Boolean => each(&|i| a.as_boolean().value(i).into()),
        DataType::Int64 => each(&|i| a.as_primitive::<Int64Type>().value(i).into()),
        DataType::Float64 => each(&|i| {
            serde_json::Number::from_f64(a.as_primitive::<Float64Type>().value(i))
                .map_or(serde_json::Value::Null, serde_json::Value::Number)
        }),
        DataType::Utf8 => each(&|i| a.as_string::<i32>().value(i).into()),
        DataType::LargeUtf8 => each(&|i| a.as_string::<i64>().value(i).into()),
        DataType::Utf8View => each(&|i| a.as_string_view().value(i).into()),
        DataType::Timestamp(TimeUnit::Second, _) => {
            each(&|i| time(i128::from(a.as_primitive::<TimestampSecondType>().value(i)) * 1_000_000_000))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            each(&|i| time(i128::from(a.as_primitive::<TimestampMillisecondType>().value(i)) * 1_000_000))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            each(&|i| time(i128::from(a.as_primitive::<TimestampMicrosecondType>().value(i)) * 1_000))
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            each(&|i| time(i128::from(a.as_primitive::<TimestampNanosecondType>().value(i))))
        }
        other => {
            // Not a type the lake gives custom columns; arrow-json writes it (nulls left out).
            let part = RecordBatch::try_new(
                Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new("v", other.clone(), true)])),
                vec![Arc::clone(a)],
            )?;
            let mut w = arrow_json::LineDelimitedWriter::new(Vec::new());
            w.write(&part)?;
            w.finish()?;
            let text = w.into_inner();
            let mut out = Vec::with_capacity(n);
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let mut obj: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(line).map_err(|e| arrow_schema::ArrowError::JsonError(e.to_string()))?;
                out.push(obj.remove("v"));
            }
            out
        }
    })
}

/// Inserts `name: value` into a row's `_extra`, as `name#2`, `name#3`, … when taken.
pub fn put_extra(extra: &mut serde_json::Map<String, serde_json::Value>, name: String, value: serde_json::Value) {
    if !extra.contains_key(&name) {
        extra.insert(name, value);
        return;
    }
    let key = (2..).map(|i| format!("{name}#{i}")).find(|k| !extra.contains_key(k)).expect("an unused suffix");
    extra.insert(key, value);
}

fn as_strings(a: &ArrayRef) -> Result<&StringArray, arrow_schema::ArrowError> {
    a.as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| arrow_schema::ArrowError::SchemaError(format!("{EXTRA_COLUMN} is {}, not text", a.data_type())))
}

#[cfg(test)]
mod tests;
