//! Views of custom tables (see `lake_format::custom`): like the catalog's, over the
//! table's committed files and its fresh rows, with the columns its schema file lists.
//!
//! Schemas are read from `<data>/state/custom/` on every query: the lake writes a schema
//! change before any row that needs it is acknowledged, so the files are never behind
//! the data, and the CLI's `--data-dir` mode sees the same tables as the server.

use std::fmt::Write as _;
use std::path::Path;

use arrow_array::RecordBatch;
use duckdb::Connection;
use lake_format::custom::{load_all, CustomSchema};

use super::views::{duckdb_type, list_files};
use super::{EngineError, FreshRows, Result};

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates one view per custom table on `conn`; fresh rows only for tables `named` in
/// the SQL. Returns the tables' names.
pub(super) fn create(conn: &Connection, data_dir: &Path, fresh: &dyn FreshRows, named: &[String]) -> Result<Vec<String>> {
    let (schemas, _damaged) = load_all(data_dir);
    if schemas.is_empty() {
        return Ok(Vec::new());
    }
    let mut ddl = String::new();
    for s in &schemas {
        let cols: Vec<String> = s.all_columns().iter().map(|(n, t)| format!("{} {}", ident(n), duckdb_type(*t))).collect();
        let _ = writeln!(ddl, "CREATE TEMP TABLE {} ({});", ident(&fresh_name(s)), cols.join(", "));
    }
    conn.execute_batch(&ddl).map_err(|e| EngineError::Internal(format!("creating custom fresh tables: {e}")))?;

    let mut taken: Vec<(&CustomSchema, Vec<String>, Vec<RecordBatch>)> = Vec::new();
    let mut listing: Result<()> = Ok(());
    fresh.consistent(&mut || {
        taken.clear();
        for s in &schemas {
            match list_files(data_dir, &s.name, fresh) {
                Ok(files) => {
                    let rows = if named.contains(&s.name) { fresh.snapshot_custom(&s.name, &s.arrow_schema()) } else { Vec::new() };
                    taken.push((s, files, rows));
                }
                Err(e) => listing = Err(e),
            }
        }
    });
    listing?;

    let mut ddl = String::new();
    for (s, files, batches) in taken {
        if batches.iter().any(|b| b.num_rows() > 0) {
            let mut appender = conn
                .appender_to_catalog_and_db(&fresh_name(s), "temp", "main")
                .map_err(|e| EngineError::Internal(format!("appender for {}: {e}", s.name)))?;
            for batch in batches {
                appender.append_record_batch(batch).map_err(|e| EngineError::Internal(format!("fresh rows of {}: {e}", s.name)))?;
            }
            appender.flush().map_err(|e| EngineError::Internal(format!("fresh rows of {}: {e}", s.name)))?;
        }
        let cols: Vec<String> = s.all_columns().iter().map(|(n, _)| ident(n)).collect();
        let fresh_sql = format!("SELECT * FROM temp.main.{}", ident(&fresh_name(s)));
        let source = if files.is_empty() {
            fresh_sql
        } else {
            let list: Vec<String> = files.iter().map(|f| super::sandbox::quote(f)).collect();
            format!("SELECT * FROM read_parquet([{}], union_by_name = true, hive_partitioning = false) UNION ALL BY NAME {fresh_sql}", list.join(", "))
        };
        let _ = writeln!(ddl, "CREATE TEMP VIEW {} AS SELECT {} FROM ({source});", ident(&s.name), cols.join(", "));
    }
    conn.execute_batch(&ddl).map_err(|e| EngineError::Internal(format!("creating custom views: {e}")))?;
    Ok(schemas.into_iter().map(|s| s.name).collect())
}

fn fresh_name(s: &CustomSchema) -> String {
    format!("__fresh_{}", s.name)
}
