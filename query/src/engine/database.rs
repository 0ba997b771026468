//! The DuckDB database behind the engine, a health probe after every query, and its
//! rebuild when the probe fails.
//!
//! The allow-list ([`super::allow`]) is meant to stop every read that could change the
//! engine for later requests. This is the defence for a hole nobody has found yet: a
//! query's connection is handed out as a [`Conn`], and when the query is over — whatever
//! its outcome — and before the connection closes, a fresh connection of the same database
//! runs `SELECT 1`. If that fails, the database is marked broken and replaced by a new
//! in-memory one with the same sandbox ([`super::sandbox::apply`]): the queries in flight
//! on the old one finish or fail, the next ones use the new one, and the hole has cost the
//! queries that ran beside it instead of the lake. Each failed probe is logged (with
//! DuckDB's error) and counted, as is each rebuild, on the lake's `/metrics`.
//!
//! - **Why after every query, not only failed ones**: a statement that breaks the engine
//!   can succeed itself (`enable_logging` answered 200), so probing only after errors
//!   would let it cost the next user's query too, and would miss a hole whose own
//!   connection cannot be closed safely. The probe is a `duckdb_connect` (a few µs), a
//!   constant `SELECT` and a disconnect: one more DuckDB statement, as costly as the read
//!   check's `json_serialize_sql` — 0.2 to 0.5 ms on the 2-core test machine under heavy
//!   load (`check_and_probe_cost_is_small` in the engine tests prints it), where the
//!   cheapest whole query (`select count(*) from metrics` on an empty lake) takes 3 to
//!   6 ms and a dashboard query over a real lake tens to hundreds of ms.
//! - **Why before the connection closes**: a connection of a database broken this way can
//!   throw from its destructor, and an exception leaving a C++ destructor aborts the
//!   process. It did: after `enable_logging` with a file storage that cannot be written,
//!   closing any connection opened since that had run a statement aborted the lake. So
//!   the connections of a broken database — the query's, the probe's, the root handle —
//!   are leaked on purpose, never closed: a rebuild costs the old database's memory, once.
//! - **Concurrency**: the first probe to fail marks the database broken; only it rebuilds,
//!   under the lock that hands the current database out, and only if the database is still
//!   the current one. Any other query ending on the broken database sees the mark and
//!   leaks its connection without probing again. A rebuild that fails (DuckDB cannot open
//!   a database) is logged, and the next query to connect tries again.
//! - **The pool**: a query connection that passed its probe goes back to the database's
//!   pool (at most [`POOL_MAX`]) with the views it made ([`super::views::Made`]), its
//!   fresh tables emptied, so the next query reuses them while the committed files stay
//!   the same. Not pooled: a connection whose query was interrupted (the time limit, a
//!   streamed query's reader going away: the interrupt may land after the query's last
//!   step and stop the next one; a streamed query's handle is detached from its reader
//!   before the connection goes back), one whose views failed part way. The pool belongs
//!   to the database, so a rebuild drops it (leaked with the broken database). A
//!   statement that got past the check could only change its own connection's TEMP
//!   catalog through a hole the check does not know; the views are made with `CREATE OR
//!   REPLACE` by the engine itself, and the tables a query names get their views again
//!   after every change of the file set.
//! - One race is left: a statement that breaks the database between another query's
//!   successful probe and that query's disconnect. The allow-list is the real check; this
//!   narrows what an unknown hole costs, it does not promise it costs nothing.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use duckdb::Connection;

use super::views::Made;
use super::{sandbox, Engine, EngineError, Limits, Result};

/// One in-memory DuckDB database with the sandbox applied.
#[derive(Debug)]
pub(super) struct Database {
    /// The handle query connections are cloned from. The mutex only makes the `!Sync`
    /// connection shareable; it is held for a clone, never during a query. `None` only
    /// once dropped.
    root: Mutex<Option<Connection>>,
    /// A probe failed: its connections are leaked rather than closed.
    broken: AtomicBool,
    /// Query connections that passed their probe, with the views they hold (see the
    /// module docs), at most [`POOL_MAX`].
    pub(super) pool: Mutex<Vec<(Connection, Made)>>,
}

/// Idle query connections kept at most. Each holds its views (a few KB of catalog
/// entries) and no rows; more than the queries that run at once buys nothing.
const POOL_MAX: usize = 8;

impl Database {
    /// Opens an in-memory database over `data_dir` and applies the sandbox to it.
    pub(super) fn open(data_dir: &Path, limits: &Limits) -> Result<Database> {
        let conn = Connection::open_in_memory().map_err(|e| EngineError::Internal(format!("opening duckdb: {e}")))?;
        sandbox::apply(&conn, data_dir, limits)?;
        Ok(Database { root: Mutex::new(Some(conn)), broken: AtomicBool::new(false), pool: Mutex::new(Vec::new()) })
    }

    /// Runs `f` on the root handle (to derive the allow-list, or in tests).
    pub(super) fn with_root<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let root = self.root.lock().map_err(|_| EngineError::Internal("engine lock poisoned".into()))?;
        f(root.as_ref().ok_or_else(|| EngineError::Internal("database closed".into()))?)
    }

    /// A new connection to the database.
    fn connection(&self) -> Result<Connection> {
        self.with_root(|root| root.try_clone().map_err(|e| EngineError::Internal(format!("new connection: {e}"))))
    }

    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// `SELECT 1` on a fresh connection; the probe's connection is leaked when it fails.
    /// `execute_batch` runs it through `duckdb_query` without fetching the row as Arrow:
    /// a failure of any stage (parse, bind, plan, execute) is an error all the same.
    pub(super) fn probe(&self) -> std::result::Result<(), String> {
        let conn = self.connection().map_err(|e| e.to_string())?;
        match conn.execute_batch("SELECT 1") {
            Ok(()) => Ok(()),
            Err(e) => {
                std::mem::forget(conn);
                Err(match e {
                    duckdb::Error::DuckDBFailure(_, Some(msg)) => msg,
                    other => other.to_string(),
                })
            }
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let pool = std::mem::take(self.pool.get_mut().unwrap_or_else(|p| p.into_inner()));
        if self.broken.load(Ordering::SeqCst) {
            std::mem::forget(pool);
        }
        let root = self.root.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if self.broken.load(Ordering::SeqCst) {
            // Closing a broken database may abort the process: leak it.
            std::mem::forget(root);
        }
    }
}

/// A query's connection. Derefs to DuckDB's; when it drops, the database is probed first
/// (see the module docs), then the connection goes back to the pool with its views (or
/// is closed) — or is leaked if the database broke.
pub(super) struct Conn<'e> {
    pub(super) conn: Option<Connection>,
    /// The views and fresh tables the connection holds ([`super::views::create`]).
    pub(super) made: Made,
    /// Whether it may go back to the pool: not if its query was interrupted (the time
    /// limit, a streamed query's reader going away), since an interrupt that lands after
    /// the query's last step could stop the next one.
    pooled: bool,
    db: Arc<Database>,
    engine: &'e Engine,
}

impl Conn<'_> {
    /// The connection is closed when the query ends, not pooled.
    pub(super) fn discard(&mut self) {
        self.pooled = false;
    }

    /// Makes (or reuses) the views `sql` needs on this connection ([`super::views::create`]).
    pub(super) fn views_for(&mut self, engine: &Engine, sql: &str) -> Result<()> {
        let conn = self.conn.as_ref().expect("a Conn holds its connection until it drops");
        super::views::create(conn, &mut self.made, &engine.data_dir, engine.fresh.as_ref(), sql, &engine.schemas)
    }
}

impl std::fmt::Debug for Conn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("broken", &self.db.is_broken()).finish_non_exhaustive()
    }
}

impl std::ops::Deref for Conn<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("a Conn holds its connection until it drops")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.db.is_broken() {
            std::mem::forget(conn);
            return;
        }
        match self.db.probe() {
            Ok(()) => {
                let mut made = std::mem::take(&mut self.made);
                if !self.pooled || made.unsettled || made.release(&conn).is_err() {
                    return;
                }
                let mut pool = self.db.pool.lock().unwrap_or_else(|p| p.into_inner());
                if pool.len() < POOL_MAX {
                    pool.push((conn, made));
                }
            }
            Err(error) => {
                std::mem::forget(conn);
                self.engine.probe_failed(&self.db, &error);
            }
        }
    }
}

impl Engine {
    /// A connection to the current (already sandboxed) database — a pooled one with the
    /// views it holds, or a new one; a database known to be broken is rebuilt first.
    pub(super) fn connect(&self) -> Result<Conn<'_>> {
        let db = self.healthy()?;
        let pooled = db.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let (conn, made) = match pooled {
            Some(p) => p,
            None => (db.connection()?, Made::default()),
        };
        Ok(Conn { conn: Some(conn), made, pooled: true, db, engine: self })
    }

    /// A new connection that is closed after its query, never pooled: tests that need
    /// a connection without views from earlier queries.
    #[cfg(test)]
    pub(super) fn connect_unpooled(&self) -> Result<Conn<'_>> {
        let db = self.healthy()?;
        let conn = db.connection()?;
        Ok(Conn { conn: Some(conn), made: Made::default(), pooled: false, db, engine: self })
    }

    /// The current database, rebuilt first if it is known to be broken.
    fn healthy(&self) -> Result<Arc<Database>> {
        let db = self.current()?;
        if db.is_broken() {
            self.rebuild(&db);
            return self.current();
        }
        Ok(db)
    }

    /// The database new queries use.
    pub(super) fn current(&self) -> Result<Arc<Database>> {
        let current = self.db.lock().map_err(|_| EngineError::Internal("engine lock poisoned".into()))?;
        Ok(Arc::clone(&current))
    }

    /// A probe of `db` failed with `error`: count it, and rebuild if no one else is.
    fn probe_failed(&self, db: &Arc<Database>, error: &str) {
        self.counters.probe_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if db.broken.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::error!(%error, "query engine failed its health probe after a query: rebuilding it");
        self.rebuild(db);
    }

    /// Replaces `old` (broken) by a new database, unless it was replaced already.
    fn rebuild(&self, old: &Arc<Database>) {
        let Ok(mut current) = self.db.lock() else {
            tracing::error!("query engine lock poisoned: cannot rebuild the engine");
            return;
        };
        if !Arc::ptr_eq(&current, old) {
            return;
        }
        match Database::open(&self.data_dir, &self.limits) {
            Ok(db) => {
                *current = Arc::new(db);
                self.counters.rebuilds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!("query engine rebuilt: a new in-memory database with the same sandbox");
            }
            Err(e) => tracing::error!(error = %e, "rebuilding the query engine failed: the next query tries again"),
        }
    }
}
