//! The query engine: DuckDB over the lake, one sandboxed connection per query.
//!
//! [`Engine::open`] opens one in-memory DuckDB database and applies the sandbox to it
//! ([`sandbox`]): threads, memory, no extension loading, no file access outside
//! `<data>/tables/`, UTC rendering, then a configuration lock — DuckDB keeps these
//! settings database-wide, so this happens once. Each query then clones a connection
//! (DuckDB's `Connection` is `!Sync`, so connections are never shared) and:
//!
//! 1. checks with DuckDB's own parser that the SQL is a single read statement calling only
//!    the functions and tables a read may use ([`sandbox`], [`allow`]);
//! 2. creates one TEMP view per catalog table ([`views`]): the committed Parquet files
//!    `UNION ALL BY NAME` a TEMP table holding the [`FreshRows`] snapshot;
//! 3. runs the SQL under a watchdog that interrupts it after [`Limits::timeout`] and
//!    streams at most [`Limits::max_rows`] rows out as Arrow batches.
//!
//! TEMP objects live in the connection's own catalog and vanish with it, so concurrent
//! queries never see each other's views or snapshots. When a query is over, a health
//! probe (`SELECT 1` on a fresh connection) runs before its connection closes; a database
//! that fails it is replaced by a new one with the same sandbox ([`database`]), so a read
//! that breaks the engine through a hole in the check costs the queries beside it, not
//! the lake.
//!
//! [`Engine::query_stream`] runs the same steps but hands the result over chunk by chunk
//! through a bounded channel as DuckDB produces it (`stream`), for results too large to
//! hold; the blocking forms collect into a [`QueryResult`].

mod allow;
mod custom;
mod database;
mod sandbox;
mod stream;
mod tables;
mod tree;
mod views;

pub use stream::{QueryStream, StreamEnd};
pub use views::duckdb_type;

use database::Database;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::{Array, RecordBatch, StructArray};
use arrow_schema::SchemaRef;
use duckdb::types::Value;
use duckdb::Connection;
use lake_format::Table;

/// Rows acknowledged by the lake but not yet in a committed Parquet file.
pub trait FreshRows: Send + Sync + std::fmt::Debug + 'static {
    /// Rows acknowledged but not yet in Parquet, for one table (already in the catalog schema).
    fn snapshot(&self, table: Table) -> Vec<RecordBatch>;

    /// Runs `f` at a moment when no flush commits: the committed files listed and the
    /// snapshots taken inside `f` describe the same state, so no row is seen twice (in a
    /// file and in memory) or missed. The lake holds a lock here; the default just runs `f`.
    fn consistent(&self, f: &mut dyn FnMut()) {
        f()
    }

    /// Whether a committed file was replaced (by compaction) or dropped (by retention)
    /// and must no longer be listed. Such files stay on disk for a grace period so the
    /// queries that listed them before the swap can finish; called inside
    /// [`FreshRows::consistent`]. The default (no lake process) hides nothing.
    fn is_retired(&self, _path: &Path) -> bool {
        false
    }

    /// Rows acknowledged but not yet in Parquet for the custom table `name`, conformed to
    /// `schema` (its current schema). The default (no lake process) has none.
    fn snapshot_custom(&self, _name: &str, _schema: &SchemaRef) -> Vec<RecordBatch> {
        Vec::new()
    }
}

/// No in-memory rows: the CLI reading a data directory while no lake process owns it.
#[derive(Debug)]
pub struct NoFreshRows;

impl FreshRows for NoFreshRows {
    fn snapshot(&self, _table: Table) -> Vec<RecordBatch> {
        Vec::new()
    }
}

/// The view of every event of any kind on (ts, host, table, ip, summary), over the catalog
/// tables, for correlation across sources (`lake correlate --ip`).
pub const EVENTS_VIEW: &str = views::EVENTS;

/// Per-query resource limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Rows returned at most; the rest is cut and the result marked truncated. Default 100 000.
    pub max_rows: usize,
    /// Wall-clock time a query may run before it is interrupted. Default 30 s.
    pub timeout: Duration,
    /// DuckDB `memory_limit` of the engine (shared by concurrent queries), e.g. `"1GB"`.
    /// Default `"1GB"`.
    pub memory_limit: String,
    /// DuckDB worker threads of the engine (shared by concurrent queries). Default 2.
    pub threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_rows: 100_000, timeout: Duration::from_secs(30), memory_limit: "1GB".to_string(), threads: 2 }
    }
}

/// The answer to a query: Arrow batches, cut at [`Limits::max_rows`].
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Schema of every batch.
    pub schema: SchemaRef,
    /// The rows, in DuckDB's order.
    pub batches: Vec<RecordBatch>,
    /// Whether rows were left out because the result hit `max_rows`.
    pub truncated: bool,
}

impl QueryResult {
    /// Rows in the result (after truncation).
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Why a query produced no result.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The SQL failed in DuckDB (syntax, unknown column, conversion, …) or is not one
    /// statement; the message is DuckDB's. The user's mistake: a 400.
    #[error("{0}")]
    Sql(String),
    /// The SQL tries to leave the sandbox: a statement that is not a read (writes, `COPY`,
    /// `ATTACH`, `INSTALL`/`LOAD`, `SET`/`PRAGMA`, …) or a file or URL outside
    /// `<data>/tables/`. The message says what is not allowed: a 403.
    #[error("{0}")]
    Forbidden(String),
    /// The query ran longer than the limit and was interrupted.
    #[error("query interrupted after the time limit of {0:?}")]
    Timeout(Duration),
    /// The consumer of a [`QueryStream`] went away (a client disconnected); the query was
    /// interrupted. Nobody is left to tell, so this only shows up in [`EngineStats`].
    #[error("query cancelled: its reader went away")]
    Cancelled,
    /// Preparing the connection or converting the result failed: our fault, not the user's.
    #[error("internal error: {0}")]
    Internal(String),
}

lake_format::metrics! {
    /// Counters of the engine, for `/metrics` ([`Engine::samples`], each doc line is its
    /// help there) and tests ([`Engine::stats`]).
    struct Counters {
        /// queries started (SQL API, Grafana, web UI, alert rules)
        queries: Counter("lake_engine_queries_total"),
        /// queries interrupted at the time limit
        timeouts: Counter("lake_engine_timeouts_total"),
        /// streamed queries interrupted because their client went away
        cancelled: Counter("lake_engine_cancelled_total"),
        /// queries running now
        running: Gauge("lake_engine_running"),
        /// statements refused by the read check (403)
        refused: Counter("lake_engine_refused_total"),
        /// health probes (SELECT 1 after a query) that failed
        probe_failures: Counter("lake_engine_probe_failures_total"),
        /// query engine databases replaced after a failed health probe
        rebuilds: Counter("lake_engine_rebuilds_total"),
    }
}

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineStats {
    /// Queries started.
    pub queries: u64,
    /// Queries interrupted at the time limit.
    pub timeouts: u64,
    /// Streamed queries interrupted because their reader went away.
    pub cancelled: u64,
    /// Queries running now.
    pub running: u64,
    /// Statements refused by the read check ([`EngineError::Forbidden`]).
    pub refused: u64,
    /// Health probes (`SELECT 1` on a fresh connection after a query) that failed.
    pub probe_failures: u64,
    /// Times the database was replaced by a new one after a failed probe.
    pub rebuilds: u64,
}

type Result<T, E = EngineError> = std::result::Result<T, E>;

/// DuckDB over the lake's data directory. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Engine {
    /// The database queries clone their connections from; replaced when it breaks
    /// ([`database`]). The mutex is held to take the `Arc`, never during a query.
    db: Mutex<Arc<Database>>,
    /// What a read may call ([`allow`]), derived from the library once.
    allow: allow::AllowList,
    data_dir: PathBuf,
    fresh: Arc<dyn FreshRows>,
    limits: Limits,
    counters: Counters,
    schemas: views::SchemaCache,
}

impl Engine {
    /// Opens an in-memory DuckDB over `data_dir` (which need not exist yet).
    pub fn open(data_dir: &Path, fresh: Arc<dyn FreshRows>, limits: Limits) -> Result<Engine> {
        // DuckDB compares allowed directories textually, so give it the real absolute path.
        let data_dir = data_dir
            .canonicalize()
            .or_else(|_| std::path::absolute(data_dir))
            .map_err(|e| EngineError::Internal(format!("data dir {}: {e}", data_dir.display())))?;
        let db = Database::open(&data_dir, &limits)?;
        let allow = db.with_root(allow::AllowList::derive)?;
        Ok(Engine {
            db: Mutex::new(Arc::new(db)),
            allow,
            data_dir,
            fresh,
            limits,
            counters: Counters::default(),
            schemas: views::SchemaCache::default(),
        })
    }

    /// The engine's counters as exported on `/metrics`, read now.
    pub fn samples(&self) -> Vec<lake_format::metrics::Sample> {
        self.counters.samples()
    }

    /// The engine's counters.
    pub fn stats(&self) -> EngineStats {
        let c = &self.counters;
        EngineStats {
            queries: c.queries.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            running: c.running.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            probe_failures: c.probe_failures.load(Ordering::Relaxed),
            rebuilds: c.rebuilds.load(Ordering::Relaxed),
        }
    }

    /// The read check ([`sandbox::check_read_only`]) with this engine's allow-list and
    /// tables; refusals are counted.
    fn check(&self, conn: &Connection, sql: &str) -> Result<()> {
        let lake = |name: &str| self.is_lake_table(name);
        let checked = sandbox::check_read_only(conn, sql, &self.allow, &lake);
        if let Err(EngineError::Forbidden(_)) = &checked {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
        }
        checked
    }

    /// Whether `name` (lower-case) is one of the lake's tables: the catalog's, `events`,
    /// or a custom table (whose schemas are read only when a name is none of the others).
    /// A custom table whose schema file is damaged is still the lake's: the query naming it
    /// fails when its view is made, with a message naming the table, not as unknown.
    fn is_lake_table(&self, name: &str) -> bool {
        if Table::ALL.iter().any(|t| t.name() == name) || name == views::EVENTS {
            return true;
        }
        let (schemas, damaged) = lake_format::custom::load_all(&self.data_dir);
        schemas.iter().any(|s| s.name == name) || damaged.iter().any(|d| d.table == name)
    }

    /// Counts a query as running until the guard drops, and its outcome.
    fn track(&self) -> Running<'_> {
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        self.counters.running.fetch_add(1, Ordering::Relaxed);
        Running(&self.counters)
    }

    /// The limits every query runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs one read-only statement on the calling thread (it blocks: use [`Engine::query`]
    /// from async code).
    pub fn query_blocking(&self, sql: &str) -> Result<QueryResult> {
        self.query_params_blocking(sql, Vec::new())
    }

    /// Runs one read-only statement whose `?` placeholders are bound, in order, to
    /// `params`, on the calling thread. Values bound this way are data to DuckDB, never
    /// SQL text: this is how user-supplied values (Grafana variables and ad-hoc filters)
    /// reach a query. Same sandbox, read-only check, views and limits as
    /// [`Engine::query_blocking`].
    pub fn query_params_blocking(&self, sql: &str, params: Vec<Value>) -> Result<QueryResult> {
        let running = self.track();
        let conn = self.connect()?;
        self.check(&conn, sql)?;
        views::create(&conn, &self.data_dir, self.fresh.as_ref(), sql, &self.schemas)?;
        running.outcome(run_with_limits(&conn, sql, params, &self.limits))
    }

    /// Runs `sql` — or what `adapt` makes of it once it has seen the names of the columns
    /// `sql` returns (bound by DuckDB, not run) — on one connection, on the calling thread. `adapt` answers `None` to
    /// run `sql` as it is, or a replacement statement and its parameters; the replacement
    /// may only read the tables `sql` names (their views are the ones made for `sql`), and
    /// is checked as read-only like any statement. This is how Grafana's ad-hoc filters
    /// wrap a target they must first see the columns of, for the price of one query's
    /// setup rather than two.
    pub fn query_params_with_blocking(
        &self,
        sql: &str,
        params: Vec<Value>,
        adapt: impl FnOnce(&[String]) -> Result<Option<(String, Vec<Value>)>>,
    ) -> Result<QueryResult> {
        let running = self.track();
        let conn = self.connect()?;
        self.check(&conn, sql)?;
        views::create(&conn, &self.data_dir, self.fresh.as_ref(), sql, &self.schemas)?;
        let columns = describe(&conn, sql, &params)?;
        match adapt(&columns)? {
            Some((sql, params)) => {
                self.check(&conn, &sql)?;
                running.outcome(run_with_limits(&conn, &sql, params, &self.limits))
            }
            None => running.outcome(run_with_limits(&conn, sql, params, &self.limits)),
        }
    }

    /// [`Engine::query_params_with_blocking`] on the blocking thread pool.
    pub async fn query_params_with<F>(
        self: &Arc<Self>,
        sql: String,
        params: Vec<Value>,
        adapt: F,
    ) -> Result<QueryResult>
    where
        F: FnOnce(&[String]) -> Result<Option<(String, Vec<Value>)>> + Send + 'static,
    {
        let engine = Arc::clone(self);
        tokio::task::spawn_blocking(move || engine.query_params_with_blocking(&sql, params, adapt))
            .await
            .map_err(|e| EngineError::Internal(format!("query task failed: {e}")))?
    }

    /// Runs one read-only statement on the blocking thread pool.
    pub async fn query(self: &Arc<Self>, sql: String) -> Result<QueryResult> {
        let engine = Arc::clone(self);
        tokio::task::spawn_blocking(move || engine.query_blocking(&sql))
            .await
            .map_err(|e| EngineError::Internal(format!("query task failed: {e}")))?
    }

    /// [`Engine::query_params_blocking`] on the blocking thread pool.
    pub async fn query_params(self: &Arc<Self>, sql: String, params: Vec<Value>) -> Result<QueryResult> {
        let engine = Arc::clone(self);
        tokio::task::spawn_blocking(move || engine.query_params_blocking(&sql, params))
            .await
            .map_err(|e| EngineError::Internal(format!("query task failed: {e}")))?
    }
}

/// A running query, for [`EngineStats`].
struct Running<'a>(&'a Counters);

impl Running<'_> {
    /// Counts how a query ended and passes its result on.
    fn outcome<T>(&self, result: Result<T>) -> Result<T> {
        match &result {
            Err(EngineError::Timeout(_)) => self.0.timeouts.fetch_add(1, Ordering::Relaxed),
            Err(EngineError::Cancelled) => self.0.cancelled.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        result
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The names of the columns `sql` returns: `DESCRIBE` has DuckDB bind the statement
/// (with its parameters) without planning or running it.
fn describe(conn: &Connection, sql: &str, params: &[Value]) -> Result<Vec<String>> {
    let body = sql.trim_end().trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    let mut stmt = conn.prepare(&format!("DESCRIBE {body}")).map_err(sql_error)?;
    check_param_count(&stmt, params)?;
    let rows = stmt.query_map(duckdb::params_from_iter(params.iter()), |r| r.get::<_, String>(0)).map_err(sql_error)?;
    rows.collect::<std::result::Result<Vec<String>, _>>().map_err(sql_error)
}

/// A count mismatch would otherwise surface as DuckDB's less helpful binder message.
fn check_param_count(stmt: &duckdb::Statement<'_>, params: &[Value]) -> Result<()> {
    if stmt.parameter_count() != params.len() {
        return Err(EngineError::Sql(format!(
            "the query has {} parameter placeholder(s) but {} value(s) were given",
            stmt.parameter_count(),
            params.len()
        )));
    }
    Ok(())
}

/// DuckDB's message for a failed user statement: a 403 when the sandbox refused a file
/// or URL (DuckDB's "Permission Error"), else a 400.
fn sql_error(e: duckdb::Error) -> EngineError {
    let msg = match e {
        duckdb::Error::DuckDBFailure(_, Some(msg)) => msg,
        other => other.to_string(),
    };
    if msg.starts_with("Permission Error") {
        EngineError::Forbidden(format!("{}: {msg}", sandbox::FILES_FORBIDDEN))
    } else {
        EngineError::Sql(msg)
    }
}

/// Runs `sql` with the time limit enforced by a watchdog thread and the row limit by
/// stopping the stream early.
fn run_with_limits(conn: &Connection, sql: &str, params: Vec<Value>, limits: &Limits) -> Result<QueryResult> {
    let (done, wait) = mpsc::channel::<()>();
    let fired = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let handle = conn.interrupt_handle();
        let fired = Arc::clone(&fired);
        let timeout = limits.timeout;
        std::thread::Builder::new()
            .name("lake-query-watchdog".into())
            .spawn(move || {
                // A disconnect means the query finished first.
                if let Err(RecvTimeoutError::Timeout) = wait.recv_timeout(timeout) {
                    fired.store(true, Ordering::SeqCst);
                    handle.interrupt();
                }
            })
            .map_err(|e| EngineError::Internal(format!("watchdog thread: {e}")))?
    };
    let result = fetch(conn, sql, params, limits.max_rows);
    drop(done);
    // The watchdog only waits on the channel, so it ends as soon as `done` is dropped.
    let _ = watchdog.join();
    match result {
        Err(_) if fired.load(Ordering::SeqCst) => Err(EngineError::Timeout(limits.timeout)),
        other => other,
    }
}

fn fetch(conn: &Connection, sql: &str, params: Vec<Value>, max_rows: usize) -> Result<QueryResult> {
    let mut stmt = conn.prepare(sql).map_err(sql_error)?;
    check_param_count(&stmt, &params)?;
    // The returned iterator panics on fetch errors, so rows are pulled with `step` instead.
    let _ = stmt.stream_arrow(duckdb::params_from_iter(params)).map_err(sql_error)?;
    let schema = stmt.schema();
    let mut batches = Vec::new();
    let (_, truncated) = take_rows(&mut stmt, &schema, max_rows, |batch| {
        batches.push(batch);
        Ok(())
    })?;
    Ok(QueryResult { schema, batches, truncated })
}

/// Pulls a started statement's result, at most `max_rows` rows, handing each batch to
/// `each` (the last one cut to fit): the rows taken, and whether rows were left out. The
/// one row limit of both the buffered and the streamed result. DuckDB's iterator panics on
/// fetch errors, so rows are pulled with `step`; the step after the limit only learns
/// whether more rows exist.
fn take_rows(
    stmt: &mut duckdb::Statement<'_>,
    schema: &SchemaRef,
    max_rows: usize,
    mut each: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<(usize, bool)> {
    let mut rows = 0usize;
    let mut truncated = false;
    while let Some(chunk) = stmt.step().map_err(sql_error)? {
        if chunk.is_empty() {
            continue;
        }
        if rows >= max_rows {
            truncated = true;
            break;
        }
        let mut batch = to_batch(schema, chunk)?;
        if rows + batch.num_rows() > max_rows {
            batch = batch.slice(0, max_rows - rows);
            truncated = true;
        }
        rows += batch.num_rows();
        each(batch)?;
        if truncated {
            break;
        }
    }
    Ok((rows, truncated))
}

fn to_batch(schema: &SchemaRef, chunk: StructArray) -> Result<RecordBatch> {
    let (_, columns, _) = chunk.into_parts();
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(|e| EngineError::Internal(format!("result batch does not match its schema: {e}")))
}

#[cfg(test)]
mod tests;
