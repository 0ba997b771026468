//! Views of custom tables (see `lake_format::custom`): like the catalog's, over the
//! table's committed files and its fresh rows, with the columns its schema file lists.
//!
//! Schemas are read from `<data>/state/custom/` on every query: the lake writes a schema
//! change before any row that needs it is acknowledged, so the files are never behind
//! the data, and the CLI's `--data-dir` mode sees the same tables as the server.
//!
//! As for the catalog ([`super::views`]), only the custom tables whose name is a word of
//! the SQL get a view (all of them for SQL that lists the catalog), so a lake with many
//! custom tables costs a query no more than the tables it reads. Each table's view is made
//! on its own: a table that cannot be turned into one — a damaged schema file, a schema
//! with two columns of one name ignoring case (stored before the lake refused that; `lake
//! serve` repairs it at start), a committed file DuckDB cannot read — fails only the
//! queries that name it, with [`EngineError::Sql`] (400, like DuckDB's own error for a
//! damaged file) naming the table and what is wrong. SQL that lists the catalog goes on
//! without it (logged), so `SHOW TABLES` still answers.

use std::path::Path;

use arrow_array::RecordBatch;
use duckdb::Connection;
use lake_format::custom::{load_all, CustomSchema};

use super::views::{duckdb_type, list_files, Made};
use super::{EngineError, FreshRows, Result};

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Why one custom table cannot be queried: the message every query naming it gets.
fn unavailable(table: &str, why: &str) -> String {
    format!("custom table {table:?} cannot be read: {why} (other tables are not affected; the lake's log has details)")
}

/// Creates the view of every custom table `named` in the SQL (every one when
/// `everything`, SQL that lists the catalog, or `events`, SQL reading the `events` view)
/// on `conn`, with its fresh rows, and returns the schemas of the views made.
///
/// A named table that cannot be made into a view fails the query with
/// [`EngineError::Sql`] naming it; one wanted only for a listing or for `events` is left
/// out and logged.
pub(super) fn create(
    conn: &Connection,
    made: &mut Made,
    data_dir: &Path,
    fresh: &dyn FreshRows,
    named: &[String],
    everything: bool,
    events: bool,
) -> Result<Vec<CustomSchema>> {
    let explicit = |name: &str| !everything && named.iter().any(|w| w == name);
    let wanted = |name: &str| everything || events || named.iter().any(|w| w == name);
    let (schemas, damaged) = load_all(data_dir);
    let skip_or_fail = |table: &str, why: String| -> Result<()> {
        if explicit(table) {
            Err(EngineError::Sql(unavailable(table, &why)))
        } else {
            tracing::warn!(table, problem = %why, "custom table left out of a catalog listing or the events view: it cannot be read");
            Ok(())
        }
    };
    for d in damaged.iter().filter(|d| wanted(&d.table)) {
        skip_or_fail(&d.table, format!("its schema file {} is damaged: {}", d.path.display(), d.problem))?;
    }
    let mut ready: Vec<&CustomSchema> = Vec::new();
    for s in schemas.iter().filter(|s| wanted(&s.name)) {
        match s.collisions().first() {
            Some(c) => skip_or_fail(
                &s.name,
                format!(
                    "its schema has columns {:?} and {:?}, one name to DuckDB (start `lake serve` to repair it)",
                    c.kept, c.moved
                ),
            )?,
            None => ready.push(s),
        }
    }
    if ready.is_empty() {
        return Ok(Vec::new());
    }

    let mut taken: Vec<Taken<'_>> = Vec::new();
    fresh.consistent(&mut || {
        taken.clear();
        for s in &ready {
            let files = list_files(data_dir, &s.name, fresh);
            let rows = if files.is_ok() { fresh.snapshot_custom(&s.name, &s.arrow_schema()) } else { Vec::new() };
            taken.push(Taken { schema: s, files, rows });
        }
    });

    let mut created = Vec::new();
    for Taken { schema: s, files, rows } in taken {
        match files.and_then(|files| create_one(conn, made, s, &files, rows)) {
            Ok(()) => created.push(s.clone()),
            Err(EngineError::Sql(why) | EngineError::Internal(why) | EngineError::Forbidden(why)) => {
                skip_or_fail(&s.name, why)?
            }
            Err(other) => return Err(other),
        }
    }
    Ok(created)
}

/// One table's committed files and fresh rows, taken together.
struct Taken<'a> {
    schema: &'a CustomSchema,
    files: Result<Vec<String>>,
    rows: Vec<RecordBatch>,
}

/// The fresh table and the view of one custom table. Errors are the table's own.
///
/// Made anew by every query (`OR REPLACE` on a pooled connection): the schema files are
/// read per query anyway, and a table gaining a column must show it at once.
fn create_one(
    conn: &Connection,
    made: &mut Made,
    s: &CustomSchema,
    files: &[String],
    batches: Vec<RecordBatch>,
) -> Result<()> {
    let fresh_table = ident(&fresh_name(s));
    let declared: Vec<String> =
        s.all_columns().iter().map(|(n, t)| format!("{} {}", ident(n), duckdb_type(*t))).collect();
    conn.execute_batch(&format!("CREATE OR REPLACE TEMP TABLE {fresh_table} ({});", declared.join(", ")))
        .map_err(|e| EngineError::Internal(format!("declaring its fresh rows: {e}")))?;
    if batches.iter().any(|b| b.num_rows() > 0) {
        made.filled.push(fresh_table.clone());
        let mut appender = conn
            .appender_to_catalog_and_db(&fresh_name(s), "temp", "main")
            .map_err(|e| EngineError::Internal(format!("appender for its fresh rows: {e}")))?;
        for batch in batches {
            appender.append_record_batch(batch).map_err(|e| EngineError::Internal(format!("its fresh rows: {e}")))?;
        }
        appender.flush().map_err(|e| EngineError::Internal(format!("its fresh rows: {e}")))?;
    }
    let cols: Vec<String> = s.all_columns().iter().map(|(n, _)| ident(n)).collect();
    let fresh_sql = format!("SELECT * FROM temp.main.{fresh_table}");
    let source = if files.is_empty() {
        fresh_sql
    } else {
        let list: Vec<String> = files.iter().map(|f| super::sandbox::quote(f)).collect();
        format!("SELECT * FROM read_parquet([{}], union_by_name = true, hive_partitioning = false) UNION ALL BY NAME {fresh_sql}", list.join(", "))
    };
    // Binding the view reads the files' footers: a damaged file fails here.
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TEMP VIEW {} AS SELECT {} FROM ({source});",
        ident(&s.name),
        cols.join(", ")
    ))
    .map_err(|e| EngineError::Sql(e.to_string()))
}

fn fresh_name(s: &CustomSchema) -> String {
    format!("__fresh_{}", s.name)
}
