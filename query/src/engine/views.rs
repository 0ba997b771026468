//! One TEMP view per catalog table, over committed files and fresh rows.
//!
//! ```sql
//! CREATE TEMP TABLE __fresh_metrics (ts TIMESTAMPTZ, host VARCHAR, …);  -- FreshRows snapshot
//! CREATE TEMP VIEW metrics AS SELECT ts, host, … FROM (
//!     SELECT * FROM read_parquet(['<data>/tables/metrics/date=…/f-….parquet', …],
//!                                union_by_name = false, hive_partitioning = false)
//!     UNION ALL BY NAME SELECT * FROM temp.main.__fresh_metrics);
//! ```
//! - The fresh table is declared from the catalog, so a table with no file yet still has
//!   its columns and types; the outer select list pins the catalog column order. A table
//!   whose files all have the catalog's columns and which has no fresh rows reads its
//!   files alone (no fresh table: one catalog object and a union less per query).
//! - `read_parquet` is only used when a file exists: DuckDB fails on an empty list.
//! - `union_by_name = true` (files of different schemas: a file written before the catalog
//!   gained a column) only when some file of the table lacks the catalog's exact columns
//!   ([`SchemaCache`]): it makes DuckDB read every file's schema at each bind, which is
//!   most of the cost of creating a view.
//! - `hive_partitioning = false` keeps the partition key out of the view, so the columns
//!   are the same with and without files (`ts` carries the date anyway).
//! - arrow-rs writes `ts` as a UTC-adjusted Parquet timestamp, which DuckDB reads as
//!   TIMESTAMPTZ — the type of the fresh table's column (a test checks both).
//! - Fresh rows go in through the Arrow appender; Map and List columns are supported by it
//!   (tested), so no conversion is needed.
//!
//! Only the tables a query names get a view (see [`create`]): binding a view over a
//! table's files costs a few milliseconds (DuckDB reads every file's schema for
//! `union_by_name`), and views of all eleven tables plus `events` cost ~60 ms a query on
//! a 30-day lake — more than most dashboard queries themselves.

use std::fmt::Write as _;
use std::path::Path;

use arrow_array::RecordBatch;
use duckdb::Connection;
use lake_format::catalog::ColumnType;
use lake_format::layout::{table_dir, PARQUET_EXT};
use lake_format::Table;

use super::sandbox::quote;
use super::{EngineError, FreshRows, Result};

/// Creates (or reuses) the view of every catalog table the SQL names on `conn`, with the
/// fresh rows of now.
///
/// The committed files and the fresh rows are taken together inside
/// [`FreshRows::consistent`], and the views name those files explicitly rather than a
/// glob DuckDB would expand later: a flush committing between the two would otherwise
/// show its rows twice (file and buffer) or not at all.
///
/// Views (and their fresh rows) are made only for the tables the SQL names — a word equal
/// to the table's name, the `events` view bringing its seven tables and every custom table — since a query can only
/// read a table whose name it contains. Copying fresh rows is the main cost of a query
/// while a large buffer waits for its flush, and binding views over files the next one.
/// SQL that lists the catalog itself (`SHOW TABLES`, `information_schema`, `duckdb_views()`)
/// gets every view ([`INTROSPECTION`]), so it sees every table. (`query(…)` and
/// `query_table(…)`, which could name a table in a computed string, are refused by the
/// read check.) Custom tables follow the same rule ([`super::custom::create`]); one that
/// cannot be read fails only the queries naming it.
///
/// **Reuse** (`made`, the connection's [`Made`]): a pooled connection keeps its views. When
/// the generation read inside [`FreshRows::consistent`] is the one its views were made
/// at, the committed file set is the one they name, so a view is reused as it is — no
/// listing, no bind — and only the fresh rows are copied in again (its fresh table was
/// emptied when the connection went back to the pool, see [`Made::release`]). At any
/// other generation (or none) every view of the connection is stale: the ones this SQL
/// names are made again over the files listed now, the others are dropped. The lake bumps
/// the generation under the same lock that `consistent` holds shared, so the files a view
/// names and the fresh rows copied beside it still describe one moment: no row twice, none
/// missed.
pub(super) fn create(
    conn: &Connection,
    made: &mut Made,
    data_dir: &Path,
    fresh: &dyn FreshRows,
    sql: &str,
    schemas: &SchemaCache,
) -> Result<()> {
    // Until this returns Ok, the connection's views are not known to be what `made` says.
    made.unsettled = true;
    let named = named_words(sql);
    let everything = named.iter().any(|w| INTROSPECTION.contains(&w.as_str()));
    let events = everything || named.iter().any(|w| w == EVENTS);
    let wanted: Vec<Table> = Table::ALL
        .into_iter()
        .filter(|t| everything || named.iter().any(|w| w == t.name()) || (events && EVENT_TABLES.contains(t)))
        .collect();
    // (table, files listed now — `None` when its view is reused —, fresh rows)
    let mut taken: Vec<(Table, Option<Vec<String>>, Vec<RecordBatch>)> = Vec::new();
    let mut listing: Result<()> = Ok(());
    let mut generation = None;
    fresh.consistent(&mut || {
        taken.clear();
        generation = fresh.generation();
        let current = generation.is_some() && generation == made.generation;
        for &table in &wanted {
            let files = if current && made.views.contains_key(&table) {
                None
            } else {
                match list_files(data_dir, table.name(), fresh) {
                    Ok(files) => Some(files),
                    Err(e) => {
                        listing = Err(e);
                        continue;
                    }
                }
            };
            taken.push((table, files, fresh.snapshot(table)));
        }
    });
    listing?;

    let mut ddl = String::new();
    made.clear_fresh(conn)?;
    if generation.is_none() || generation != made.generation {
        // The committed files changed since these views were made: drop the ones this SQL
        // does not name (the named ones are made again below), so no stale view is left.
        for table in made.views.keys().filter(|t| !wanted.contains(t)) {
            let _ = writeln!(ddl, "DROP VIEW IF EXISTS temp.main.\"{}\";", table.name());
        }
        made.views.clear();
        made.generation = generation;
    }

    // A view needs its fresh table for rows, and for the catalog's columns when no file
    // has them all (no file at all, or older files): otherwise it reads the files alone.
    let mut appends: Vec<(Table, Vec<RecordBatch>)> = Vec::new();
    for (table, files, batches) in taken {
        let rows = batches.iter().any(|b| b.num_rows() > 0);
        let view = match files {
            Some(files) => {
                let uniform = schemas.uniform(table, &files);
                let view = View { with_fresh: rows || files.is_empty() || !uniform, files, uniform };
                Some(view)
            }
            // Reused, unless fresh rows arrived for a view made without its fresh table.
            None => match made.views.remove(&table) {
                Some(old) if rows && !old.with_fresh => Some(View { with_fresh: true, ..old }),
                Some(old) => {
                    made.views.insert(table, old);
                    None
                }
                None => return Err(EngineError::Internal(format!("the reused view of {table} is not known"))),
            },
        };
        if let Some(view) = view {
            if view.with_fresh && made.fresh_tables.insert(table) {
                write_fresh_table(&mut ddl, table);
            }
            write_view(&mut ddl, table, &view.files, view.uniform, view.with_fresh);
            made.views.insert(table, view);
        }
        if rows {
            appends.push((table, batches));
        }
    }
    // Fresh tables first (the views name them), then the views.
    if !ddl.is_empty() {
        conn.execute_batch(&ddl).map_err(|e| EngineError::Internal(format!("creating views: {e}")))?;
    }
    for (table, batches) in appends {
        made.filled.push(fresh_name(table));
        let mut appender = conn
            .appender_to_catalog_and_db(&fresh_name(table), "temp", "main")
            .map_err(|e| EngineError::Internal(format!("appender for {table}: {e}")))?;
        for batch in batches {
            appender
                .append_record_batch(batch)
                .map_err(|e| EngineError::Internal(format!("fresh rows of {table}: {e}")))?;
        }
        appender.flush().map_err(|e| EngineError::Internal(format!("fresh rows of {table}: {e}")))?;
    }
    let custom = super::custom::create(conn, made, data_dir, fresh, &named, everything, events)?;
    // Whether the SQL's columns follow from its text at this generation (`columns_keep`).
    made.catalog_only = !everything && !events && custom.is_empty() && !named.iter().any(|w| w.starts_with("pivot"));
    if events {
        // Made again by every query that reads it, unlike the catalog tables' views: it
        // names every custom table, and those can appear or gain columns between queries.
        conn.execute_batch(&events_view(&custom))
            .map_err(|e| EngineError::Internal(format!("creating the events view: {e}")))?;
    }
    made.unsettled = false;
    Ok(())
}

/// The views and fresh tables a query connection holds, kept with it in the pool.
#[derive(Debug, Default)]
pub(super) struct Made {
    /// The generation the views were made at ([`FreshRows::generation`]).
    generation: Option<u64>,
    /// The catalog tables' views valid at `generation`.
    views: std::collections::HashMap<Table, View>,
    /// Catalog tables whose fresh table exists (empty while the connection is pooled).
    fresh_tables: std::collections::HashSet<Table>,
    /// Fresh tables holding rows (quoted where needed): emptied by [`Made::release`].
    pub(super) filled: Vec<String>,
    /// Making the views failed part way (a DDL statement, an appender, a custom table):
    /// what the connection holds is not known, so it is closed rather than pooled.
    pub(super) unsettled: bool,
    /// The last SQL the views were made for reads catalog tables only (no custom table,
    /// no `events`, no catalog listing) and has no `PIVOT`.
    catalog_only: bool,
}

impl Made {
    /// The generation at which the columns of the SQL these views were just made for may be
    /// kept by its text ([`super::ColumnsCache`]): `None` when they may not — the generation
    /// is unknown, or the SQL reads what can change without a new generation (a custom
    /// table's schema, the `events` view naming them all, a `PIVOT`'s values).
    pub(super) fn columns_keep(&self) -> Option<u64> {
        self.generation.filter(|_| self.catalog_only)
    }

    /// Empties the fresh tables holding rows. Called before the connection goes back to
    /// the pool: idle connections hold no copy of the buffer, and the next query on it
    /// copies the rows of its own moment.
    pub(super) fn release(&mut self, conn: &Connection) -> Result<()> {
        self.clear_fresh(conn)
    }

    fn clear_fresh(&mut self, conn: &Connection) -> Result<()> {
        if self.filled.is_empty() {
            return Ok(());
        }
        let ddl: String = self.filled.iter().map(|t| format!("DELETE FROM temp.main.{t};")).collect();
        self.filled.clear();
        conn.execute_batch(&ddl).map_err(|e| EngineError::Internal(format!("emptying fresh tables: {e}")))
    }
}

/// What one catalog table's view is made of.
#[derive(Debug)]
struct View {
    files: Vec<String>,
    /// Every file has the catalog's columns: no `union_by_name`.
    uniform: bool,
    /// The view reads its fresh table too (rows, or the catalog's columns).
    with_fresh: bool,
}

/// Name of the correlation view.
pub(super) const EVENTS: &str = "events";
/// Words of SQL that lists tables rather than naming them: such SQL gets every view.
/// These are the listings the read check allows (see `allow`).
const INTROSPECTION: [&str; 5] = ["tables", "information_schema", "duckdb_views", "duckdb_tables", "duckdb_columns"];
/// Tables the `events` view reads (their fresh rows are needed when it is named).
const EVENT_TABLES: [Table; 7] =
    [Table::Http, Table::Firewall, Table::Bans, Table::Logs, Table::Probes, Table::Alerts, Table::Spans];

/// `events`: one row per event of any kind on (ts, host, table, ip, summary), for
/// correlation across sources without hand-written joins: the catalog's event tables,
/// then every custom table ([`custom_events`]).
const EVENTS_VIEW: &str = r#"SELECT ts, host, 'http' AS "table", coalesce(client_ip, remote_ip) AS ip,
       concat_ws(' ', method, coalesce(vhost, '') || coalesce(uri, path, ''), status::VARCHAR, round(duration_ms, 1)::VARCHAR || 'ms') AS summary
  FROM http
UNION ALL
SELECT ts, host, 'firewall', src,
       concat_ws(' ', action, proto, coalesce(src, '?') || coalesce(':' || src_port::VARCHAR, ''), '->', coalesce(dst, '?') || coalesce(':' || dst_port::VARCHAR, ''), in_if)
  FROM firewall
UNION ALL
SELECT ts, host, 'bans', ip, concat_ws(' ', jail, action, ip) FROM bans
UNION ALL
SELECT ts, host, 'logs', NULL, concat_ws(' ', coalesce(unit, ident, source) || ':', message) FROM logs
UNION ALL
SELECT ts, host, 'probes', NULL,
       concat_ws(' ', kind, target, CASE WHEN ok THEN 'ok' ELSE 'FAILED' END, round(latency_ms, 1)::VARCHAR || 'ms', error)
  FROM probes
UNION ALL
SELECT ts, host, 'alerts', NULL, concat_ws(' ', rule, state, message) FROM alerts
UNION ALL
SELECT ts, host, 'spans', NULL,
       concat_ws(' ', coalesce(service, scope_name, '?') || ':', name, status_code, round(duration_ns / 1e6, 1)::VARCHAR || 'ms', status_message)
  FROM spans
"#;

/// Names a custom table's address column may have, the first present taken as `ip`.
const IP_COLUMNS: [&str; 6] = ["ip", "client_ip", "remote_ip", "src_ip", "source_ip", "src"];
/// Columns a custom table's event summary shows at most.
const SUMMARY_COLUMNS: usize = 8;

/// The `events` view over the catalog's event tables and the custom tables `custom`.
fn events_view(custom: &[lake_format::custom::CustomSchema]) -> String {
    let mut sql = format!("CREATE OR REPLACE TEMP VIEW {EVENTS} AS\n{EVENTS_VIEW}");
    for s in custom {
        let _ = write!(sql, "UNION ALL\n{}\n", custom_events(s));
    }
    sql.push(';');
    sql
}

/// A custom table's rows as events: its `ts` and `host`, its address column as `ip` (one
/// of [`IP_COLUMNS`], text), and a summary of its first [`SUMMARY_COLUMNS`] text, number
/// and boolean columns as `name=value` (a NULL left out).
fn custom_events(s: &lake_format::custom::CustomSchema) -> String {
    let ident = |n: &str| format!("\"{}\"", n.replace('"', "\"\""));
    let ip = IP_COLUMNS
        .iter()
        .find(|n| s.column(n).is_some_and(|c| c.ty == ColumnType::Text))
        .map_or_else(|| "NULL".to_string(), |n| ident(n));
    let parts: Vec<String> = s
        .columns
        .iter()
        .filter(|c| c.name != lake_format::custom::EXTRA_COLUMN)
        .filter(|c| matches!(c.ty, ColumnType::Text | ColumnType::Int | ColumnType::Float | ColumnType::Bool))
        .take(SUMMARY_COLUMNS)
        .map(|c| format!("{} || {}::VARCHAR", quote(&format!("{}=", c.name)), ident(&c.name)))
        .collect();
    let summary = if parts.is_empty() { "''".to_string() } else { format!("concat_ws(' ', {})", parts.join(", ")) };
    format!("SELECT ts, host, {}, {ip}, {summary} FROM {}", quote(&s.name), ident(&s.name))
}

/// The lower-cased identifier-like words of a SQL text.
fn named_words(sql: &str) -> Vec<String> {
    let mut words: Vec<String> = sql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    words.sort();
    words.dedup();
    words
}

fn fresh_name(table: Table) -> String {
    format!("__fresh_{}", table.name())
}

/// The DuckDB type a catalog column is declared with (the views' fresh tables, custom
/// tables, and compaction's stand-ins for a column a file lacks).
pub fn duckdb_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Timestamp => "TIMESTAMPTZ",
        ColumnType::Text => "VARCHAR",
        ColumnType::Float => "DOUBLE",
        ColumnType::Int => "BIGINT",
        ColumnType::Bool => "BOOLEAN",
        ColumnType::TextMap => "MAP(VARCHAR, VARCHAR)",
        ColumnType::TextList => "VARCHAR[]",
    }
}

fn write_fresh_table(ddl: &mut String, table: Table) {
    let cols: Vec<String> = table.columns().map(|c| format!("\"{}\" {}", c.name, duckdb_type(c.ty))).collect();
    let _ = writeln!(ddl, "CREATE TEMP TABLE {} ({});", fresh_name(table), cols.join(", "));
}

/// The view of `table` over `files`, with its fresh table when `with_fresh` (which must be
/// the case when `files` is empty or not `uniform`).
fn write_view(ddl: &mut String, table: Table, files: &[String], uniform: bool, with_fresh: bool) {
    let cols: Vec<String> = table.columns().map(|c| format!("\"{}\"", c.name)).collect();
    let fresh = format!("SELECT * FROM temp.main.{}", fresh_name(table));
    let list: Vec<String> = files.iter().map(|f| quote(f)).collect();
    let parquet = format!(
        "SELECT * FROM read_parquet([{}], union_by_name = {}, hive_partitioning = false)",
        list.join(", "),
        !uniform
    );
    // DuckDB fails on an empty file list, so a table without files is its fresh rows alone.
    let source = match (files.is_empty(), with_fresh) {
        (true, _) => fresh,
        (false, true) => format!("{parquet} UNION ALL BY NAME {fresh}"),
        (false, false) => parquet,
    };
    let _ = writeln!(
        ddl,
        "CREATE OR REPLACE TEMP VIEW \"{}\" AS SELECT {} FROM ({source});",
        table.name(),
        cols.join(", ")
    );
}

/// Whether committed files have exactly their table's catalog columns, in order, by
/// path. Committed files never change (a rewrite gets a new name), so each footer is read
/// once per engine.
#[derive(Debug, Default)]
pub(super) struct SchemaCache(std::sync::Mutex<std::collections::HashMap<String, bool>>);

/// Entries kept at most; past it the cache starts over (it only saves footer reads).
const SCHEMA_CACHE_MAX: usize = 100_000;

impl SchemaCache {
    /// Whether every one of `files` has `table`'s catalog columns.
    pub(super) fn uniform(&self, table: Table, files: &[String]) -> bool {
        let expected: Vec<&str> = table.columns().map(|c| c.name).collect();
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() > SCHEMA_CACHE_MAX {
            known.clear();
        }
        files.iter().all(|f| *known.entry(f.clone()).or_insert_with(|| has_columns(f, &expected)))
    }
}

/// Whether the Parquet file at `path` has exactly these top-level columns, in order.
/// Unreadable files answer `false`: `union_by_name` then lets DuckDB report them.
fn has_columns(path: &str, expected: &[&str]) -> bool {
    use parquet::file::reader::FileReader as _;
    let Ok(file) = std::fs::File::open(path) else { return false };
    let Ok(reader) = parquet::file::reader::SerializedFileReader::new(file) else { return false };
    let schema = reader.metadata().file_metadata().schema_descr();
    let names: Vec<&str> = schema.root_schema().get_fields().iter().map(|f| f.name()).collect();
    names == expected
}

/// The committed files of a table: `date=*/*.parquet` under its directory (as
/// [`lake_format::layout::table_glob`] describes), hidden and retired files excluded, sorted.
pub(super) fn list_files(data_dir: &Path, table: &str, fresh: &dyn FreshRows) -> Result<Vec<String>> {
    let dir = table_dir(data_dir, table);
    let partitions = match std::fs::read_dir(&dir) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EngineError::Internal(format!("listing {}: {e}", dir.display()))),
    };
    let mut out = Vec::new();
    for partition in partitions.flatten() {
        if !partition.file_name().to_string_lossy().starts_with("date=") {
            continue;
        }
        let Ok(files) = std::fs::read_dir(partition.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(&format!(".{PARQUET_EXT}")) && !name.starts_with('.') {
                let path = f.path();
                if !fresh.is_retired(&path) {
                    out.push(path.to_string_lossy().into_owned());
                }
            }
        }
    }
    out.sort();
    Ok(out)
}
