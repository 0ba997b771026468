//! `lake tables`: every table (catalog and custom) with its columns, rows, bytes on disk
//! and time span, as one query result (catalog tables first, then custom, each by name).

use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use lake_format::catalog::ColumnType;
use lake_format::custom::load_all;
use lake_format::layout::{table_dir, PARQUET_EXT};
use lake_format::Table;

use super::sandbox::quote;
use super::{Engine, EngineError, QueryResult, Result};

fn type_word(ty: ColumnType) -> &'static str {
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

/// Bytes of the table's committed Parquet files (retired ones excluded).
fn bytes_on_disk(engine: &Engine, table: &str) -> u64 {
    let mut total = 0;
    for part in std::fs::read_dir(table_dir(&engine.data_dir, table)).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(part.path()).into_iter().flatten().flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == PARQUET_EXT) && !engine.fresh.is_retired(&p) {
                total += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

fn describe_one(engine: &Engine, name: &str, kind: &str, columns: &[(String, ColumnType)]) -> String {
    let cols: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {}", type_word(*t))).collect();
    format!(
        "SELECT {} AS \"table\", {} AS kind, {} AS columns, count(*) AS rows, {}::UBIGINT AS bytes, min(ts) AS first_ts, max(ts) AS last_ts FROM \"{name}\"",
        quote(name),
        quote(kind),
        quote(&cols.join(", ")),
        bytes_on_disk(engine, name),
    )
}

impl Engine {
    /// One row per table: name, kind (catalog/custom), columns with types, rows, bytes
    /// of committed files, first and last `ts`. Blocking.
    ///
    /// The catalog's tables are one query; each custom table is one of its own, so a
    /// custom table that cannot be read (see [`super::custom`]) is left out, logged,
    /// rather than failing the whole listing.
    pub fn describe_tables_blocking(&self) -> Result<QueryResult> {
        let mut parts = Vec::new();
        for t in Table::ALL {
            let cols: Vec<(String, ColumnType)> = t.columns().map(|c| (c.name.to_string(), c.ty)).collect();
            parts.push(describe_one(self, t.name(), "catalog", &cols));
        }
        let mut result = self.query_blocking(&format!("{} ORDER BY \"table\"", parts.join(" UNION ALL ")))?;
        let (schemas, damaged) = load_all(Path::new(&self.data_dir));
        for d in damaged {
            tracing::warn!(table = %d.table, problem = %d, "custom table left out of the table list: its schema file is damaged");
        }
        for s in schemas {
            match self.query_blocking(&describe_one(self, &s.name, "custom", &s.all_columns())) {
                Ok(one) => {
                    for batch in one.batches {
                        // The same select list each time: only the types' metadata could differ.
                        let columns = batch.columns().to_vec();
                        let batch = RecordBatch::try_new(Arc::clone(&result.schema), columns)
                            .map_err(|e| EngineError::Internal(format!("describing {}: {e}", s.name)))?;
                        result.batches.push(batch);
                    }
                }
                Err(e) => {
                    tracing::warn!(table = %s.name, error = %e, "custom table left out of the table list: it cannot be read")
                }
            }
        }
        Ok(result)
    }
}

impl Engine {
    /// The columns of table `name`: a catalog table's, or a custom table's from its schema
    /// file. An error names what was asked when the lake has no such table.
    pub fn table_columns(
        &self,
        name: &str,
    ) -> std::result::Result<crate::correlate::TableColumns, crate::correlate::QuestionError> {
        let mut t = crate::correlate::TableColumns::parse(name)?;
        if t.columns.is_some() {
            return Ok(t);
        }
        let (schemas, _) = load_all(Path::new(&self.data_dir));
        match schemas.into_iter().find(|s| s.name == name) {
            Some(s) => {
                t.columns = Some(s.all_columns());
                Ok(t)
            }
            None => Err(crate::correlate::QuestionError(format!("the lake has no table {name:?} (see `lake tables`)"))),
        }
    }
}
