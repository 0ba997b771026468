//! The query engine: DuckDB over the lake, one sandboxed connection per query.
//!
//! [`Engine::open`] opens one in-memory DuckDB database and applies the sandbox to it
//! ([`sandbox`]): threads, memory, no extension loading, no file access outside
//! `<data>/tables/`, UTC rendering, then a configuration lock — DuckDB keeps these
//! settings database-wide, so this happens once. Each query then takes a connection of
//! its own from a pool (DuckDB's `Connection` is `!Sync`, so connections are never
//! shared) and:
//!
//! 1. checks with DuckDB's own parser that the SQL is a single read statement calling only
//!    the functions and tables a read may use ([`sandbox`], [`allow`]) — once per SQL
//!    text: the verdict is kept ([`CheckCache`], see [`Engine::check`]);
//! 2. makes one TEMP view per catalog table the SQL names ([`views`]): the committed
//!    Parquet files `UNION ALL BY NAME` a TEMP table holding the [`FreshRows`] snapshot —
//!    or reuses the views the pooled connection made at the same
//!    [`FreshRows::generation`] of the committed file set, copying in only the fresh rows;
//! 3. runs the SQL under a watchdog that interrupts it after [`Limits::timeout`] and
//!    streams at most [`Limits::max_rows`] rows out as Arrow batches.
//!
//! TEMP objects live in the connection's own catalog, so concurrent queries never see
//! each other's views or snapshots. When a query is over, a health probe (`SELECT 1` on a
//! fresh connection) runs before its connection goes back to the pool (its fresh tables
//! emptied) or closes; a database that fails it is replaced by a new one with the same
//! sandbox ([`database`]), pool included, so a read that breaks the engine through a hole
//! in the check costs the queries beside it, not the lake.
//!
//! Where the fixed cost of a small query went before the pool and the kept verdicts
//! (`query_setup_breakdown` in the engine tests prints it; 60 files, debug build, loaded
//! 2-core machine): read check 0.9 ms, views made over the listed files 1.2 ms, health
//! probe 0.16 ms, a new connection 7 µs. A kept verdict costs 13 µs, reused views 17 µs.
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
use std::sync::atomic::Ordering;
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

    /// The generation of the committed file set: a number that changes whenever a file
    /// becomes listed or stops being listed (a flush commit, a compaction, retention or
    /// restore swap, a sweep), read inside [`FreshRows::consistent`]. A pooled query
    /// connection whose views were made at the current generation reuses them instead of
    /// listing the files and binding the views again ([`views`]). `None` — the default,
    /// for a reader that cannot know when another process changes the files (the CLI's
    /// `--data-dir` mode) — makes every query list the files and make its views anew.
    fn generation(&self) -> Option<u64> {
        None
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
    checks: CheckCache,
    columns: ColumnsCache,
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
            checks: CheckCache::default(),
            columns: ColumnsCache::default(),
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
    ///
    /// Verdicts are kept per exact SQL text ([`CheckCache`]): the check reads nothing but
    /// the text, this engine's allow-list (fixed) and which tables are the lake's. The
    /// catalog's tables never change while the engine runs; custom tables do (one is
    /// created by its first row), so a verdict that asked about a name outside the
    /// catalog is not kept. Parameters are bound after the check, never part of the text,
    /// so a named query or panel run with new values hits the same entry.
    fn check(&self, conn: &Connection, sql: &str) -> Result<()> {
        let checked = match self.checks.get(sql) {
            Some(verdict) => verdict,
            None => {
                let asked_custom = std::cell::Cell::new(false);
                let lake = |name: &str| {
                    let catalog = Table::ALL.iter().any(|t| t.name() == name) || name == views::EVENTS;
                    asked_custom.set(asked_custom.get() || !catalog);
                    catalog || self.is_lake_table(name)
                };
                let checked = sandbox::check_read_only(conn, sql, &self.allow, &lake);
                if !asked_custom.get() {
                    self.checks.put(sql, &checked);
                }
                checked
            }
        };
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
        let mut conn = self.connect()?;
        self.check(&conn, sql)?;
        conn.views_for(self, sql)?;
        let result = run_with_limits(&conn, sql, params, &self.limits);
        running.outcome(settle(&mut conn, result))
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
        let mut conn = self.connect()?;
        self.check(&conn, sql)?;
        conn.views_for(self, sql)?;
        let columns = match conn.made.columns_keep() {
            Some(generation) => match self.columns.get(sql, generation) {
                Some(columns) => columns,
                None => {
                    let columns = Arc::new(describe(&conn, sql, &params)?);
                    self.columns.put(sql, generation, Arc::clone(&columns));
                    columns
                }
            },
            None => Arc::new(describe(&conn, sql, &params)?),
        };
        let result = match adapt(&columns)? {
            Some((sql, params)) => {
                self.check(&conn, &sql)?;
                run_with_limits(&conn, &sql, params, &self.limits)
            }
            None => run_with_limits(&conn, sql, params, &self.limits),
        };
        running.outcome(settle(&mut conn, result))
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

/// Answers kept per exact SQL text, the least recently used dropped past
/// [`CHECK_CACHE_MAX`] entries; texts longer than [`CHECK_CACHE_SQL_MAX`] are not kept.
/// The read check's verdicts ([`CheckCache`]) and the result columns of ad-hoc filter
/// targets ([`ColumnsCache`]).
#[derive(Debug)]
struct TextCache<V>(Mutex<TextEntries<V>>);

impl<V> Default for TextCache<V> {
    fn default() -> Self {
        TextCache(Mutex::new(TextEntries { map: std::collections::HashMap::new(), tick: 0 }))
    }
}

#[derive(Debug)]
struct TextEntries<V> {
    /// SQL text -> (answer, tick of its last use).
    map: std::collections::HashMap<String, (V, u64)>,
    tick: u64,
}

/// Entries kept at most: the named queries, panels and alert rules of a lake are a few
/// dozen texts; ad-hoc SQL comes and goes.
const CHECK_CACHE_MAX: usize = 256;
/// Longer texts are answered every time rather than kept: 256 of them would be a lot of
/// memory for texts that are rarely sent twice.
const CHECK_CACHE_SQL_MAX: usize = 16 * 1024;

impl<V: Clone> TextCache<V> {
    fn entries(&self) -> std::sync::MutexGuard<'_, TextEntries<V>> {
        // Each critical section leaves the map whole: a poisoned lock holds consistent data.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, sql: &str) -> Option<V> {
        let mut g = self.entries();
        g.tick += 1;
        let tick = g.tick;
        let (value, used) = g.map.get_mut(sql)?;
        *used = tick;
        Some(value.clone())
    }

    fn put(&self, sql: &str, value: V) {
        if sql.len() > CHECK_CACHE_SQL_MAX {
            return;
        }
        let mut g = self.entries();
        if g.map.len() >= CHECK_CACHE_MAX && !g.map.contains_key(sql) {
            let oldest = g.map.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                g.map.remove(&oldest);
            }
        }
        g.tick += 1;
        let tick = g.tick;
        g.map.insert(sql.to_string(), (value, tick));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().map.len()
    }
}

/// The read check's verdicts by exact SQL text. A hit saves DuckDB's `json_serialize_sql`
/// and the walk of its tree. Only verdicts that depend on the text alone are put here (see
/// [`Engine::check`]); internal errors are not verdicts and are never kept.
#[derive(Debug, Default)]
struct CheckCache(TextCache<Verdict>);

/// A kept verdict of the read check.
#[derive(Debug, Clone)]
enum Verdict {
    Read,
    Forbidden(String),
    Sql(String),
}

impl CheckCache {
    fn get(&self, sql: &str) -> Option<Result<()>> {
        Some(match self.0.get(sql)? {
            Verdict::Read => Ok(()),
            Verdict::Forbidden(m) => Err(EngineError::Forbidden(m)),
            Verdict::Sql(m) => Err(EngineError::Sql(m)),
        })
    }

    fn put(&self, sql: &str, checked: &Result<()>) {
        let verdict = match checked {
            Ok(()) => Verdict::Read,
            Err(EngineError::Forbidden(m)) => Verdict::Forbidden(m.clone()),
            Err(EngineError::Sql(m)) => Verdict::Sql(m.clone()),
            Err(_) => return,
        };
        self.0.put(sql, verdict);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    fn entries(&self) -> std::sync::MutexGuard<'_, TextEntries<Verdict>> {
        self.0.entries()
    }
}

/// The names of the columns a statement returns (what [`describe`] answers), by exact SQL
/// text, with the generation of the committed file set they were read at
/// ([`FreshRows::generation`]); an entry of another generation is read again. Grafana's
/// ad-hoc filters need them before they can wrap a target: `DESCRIBE` binds the target
/// over its views again — a third bind of it per request, as DuckDB already binds a
/// statement over Parquet twice (when it is prepared, and again when it runs, since a
/// multi-file scan cannot be cached).
///
/// A statement's columns follow from its text and the schemas of the views it reads. The
/// catalog tables' views have the catalog's columns whatever the files; their files only
/// change with the generation. Not kept (see [`views::Made::columns_keep`]): statements
/// reading a custom table or `events` (a custom table gains columns without a new
/// generation), listing the catalog, or with `PIVOT` (whose columns are values of the data,
/// which fresh rows change between flushes), and any statement when the generation is
/// unknown (the CLI's `--data-dir` mode).
#[derive(Debug, Default)]
struct ColumnsCache(TextCache<(u64, Arc<Vec<String>>)>);

impl ColumnsCache {
    fn get(&self, sql: &str, generation: u64) -> Option<Arc<Vec<String>>> {
        self.0.get(sql).filter(|(g, _)| *g == generation).map(|(_, columns)| columns)
    }

    fn put(&self, sql: &str, generation: u64, columns: Arc<Vec<String>>) {
        self.0.put(sql, (generation, columns));
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

/// A connection whose query was interrupted at the time limit is not pooled: the
/// watchdog's interrupt may land after the query ended, on whatever runs next.
fn settle<T>(conn: &mut database::Conn<'_>, result: Result<T>) -> Result<T> {
    if let Err(EngineError::Timeout(_)) = &result {
        conn.discard();
    }
    result
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

/// Runs `sql` with the time limit enforced by the [`Watchdog`] and the row limit by
/// stopping the stream early.
fn run_with_limits(conn: &Connection, sql: &str, params: Vec<Value>, limits: &Limits) -> Result<QueryResult> {
    let watchdog = Watchdog::get()?;
    let ticket = watchdog.arm(std::time::Instant::now() + limits.timeout, conn.interrupt_handle());
    let result = fetch(conn, sql, params, limits.max_rows);
    // A query that ended as the watchdog fired counts as timed out even if it had its
    // rows: the interrupt may have landed after its last step, and the timeout is what
    // keeps its connection out of the pool ([`settle`]).
    match result {
        _ if watchdog.disarm(ticket) => Err(EngineError::Timeout(limits.timeout)),
        other => other,
    }
}

/// One thread for the time limit of every blocking query, rather than a thread spawned
/// per query (0.2–0.4 ms of a small query on the 2-core test machine). A query arms it
/// with its deadline and its connection's interrupt handle, and disarms it when it ends;
/// the thread fires the handles whose deadline passed. Firing and disarming take the same
/// lock, so once [`Watchdog::disarm`] returns no interrupt can reach the connection (which
/// may then go back to the pool), and it says whether one did.
struct Watchdog {
    state: Mutex<Armed>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct Armed {
    next: u64,
    /// (deadline, ticket) -> the connection's interrupt handle.
    waiting: std::collections::BTreeMap<(std::time::Instant, u64), Arc<duckdb::InterruptHandle>>,
    /// Tickets fired and not yet disarmed.
    fired: std::collections::HashSet<u64>,
}

/// A query's place in the [`Watchdog`].
struct Ticket((std::time::Instant, u64));

impl Watchdog {
    /// The process's watchdog, its thread started on first use.
    fn get() -> Result<&'static Watchdog> {
        static WATCHDOG: std::sync::OnceLock<std::result::Result<&'static Watchdog, String>> =
            std::sync::OnceLock::new();
        let started = WATCHDOG.get_or_init(|| {
            let w: &'static Watchdog =
                Box::leak(Box::new(Watchdog { state: Mutex::default(), wake: std::sync::Condvar::new() }));
            std::thread::Builder::new()
                .name("lake-query-watchdog".into())
                .spawn(move || w.run())
                .map(|_| w)
                .map_err(|e| format!("watchdog thread: {e}"))
        });
        started.as_ref().copied().map_err(|e| EngineError::Internal(e.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Armed> {
        // Each critical section leaves the maps whole: a poisoned lock holds consistent data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn arm(&self, deadline: std::time::Instant, handle: Arc<duckdb::InterruptHandle>) -> Ticket {
        let mut g = self.lock();
        g.next += 1;
        let key = (deadline, g.next);
        g.waiting.insert(key, handle);
        drop(g);
        self.wake.notify_one();
        Ticket(key)
    }

    /// Whether the query's handle was fired.
    fn disarm(&self, ticket: Ticket) -> bool {
        let mut g = self.lock();
        g.waiting.remove(&ticket.0);
        g.fired.remove(&ticket.0 .1)
    }

    fn run(&self) {
        let mut g = self.lock();
        loop {
            let now = std::time::Instant::now();
            match g.waiting.first_key_value().map(|(k, _)| *k) {
                None => g = self.wake.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(key) if key.0 <= now => {
                    if let Some(handle) = g.waiting.remove(&key) {
                        handle.interrupt();
                        g.fired.insert(key.1);
                    }
                }
                Some(key) => {
                    g = self.wake.wait_timeout(g, key.0 - now).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
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
