//! Streaming a result as DuckDB produces it: [`Engine::query_stream`] and the
//! [`QueryStream`] it returns (memory, limits, cancellation and errors are described
//! there).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use duckdb::types::Value;
use duckdb::InterruptHandle;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{sql_error, Engine, EngineError, Result};

/// How a stream ended, once [`QueryStream::next`] returned `Ok(None)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEnd {
    /// Rows sent.
    pub rows: usize,
    /// Whether rows were left out because the result hit the row limit.
    pub truncated: bool,
}

/// Interrupts a query from outside its thread: the watchdog, and a reader going away.
#[derive(Default)]
struct Control {
    /// The query connection's handle while the query runs; `None` before and after.
    interrupt: Mutex<Option<Arc<InterruptHandle>>>,
    /// Whether the handle was ever fired.
    fired: AtomicBool,
    cancelled: AtomicBool,
    timed_out: AtomicBool,
}

impl Control {
    fn handle(&self) -> std::sync::MutexGuard<'_, Option<Arc<InterruptHandle>>> {
        self.interrupt.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the query thread once it has its connection.
    fn attach(&self, handle: Arc<InterruptHandle>) {
        *self.handle() = Some(handle);
    }

    /// Called by the query thread when the query is over, before its connection goes
    /// back to the pool: no interrupt can reach the connection after this (the handle is
    /// fired under the same lock). Answers whether it was ever fired — an interrupt that
    /// landed after the query's last step could stop the next query on that connection,
    /// so such a connection is closed, not pooled.
    fn detach(&self) -> bool {
        self.handle().take();
        self.fired.load(Ordering::SeqCst)
    }

    fn interrupt(&self) {
        if let Some(h) = self.handle().as_ref() {
            self.fired.store(true, Ordering::SeqCst);
            h.interrupt();
        }
    }

    /// The reader is gone: stop the query. Seen by the query thread either through the
    /// flag (checked after `attach`) or through the interrupt.
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.interrupt();
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// Cancels the query when dropped while still armed.
struct CancelOnDrop(Option<Arc<Control>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.cancel();
        }
    }
}

/// The chunks of a running query, in order; see [`Engine::query_stream`].
pub struct QueryStream<T> {
    schema: SchemaRef,
    chunks: mpsc::Receiver<T>,
    outcome: oneshot::Receiver<Result<StreamEnd>>,
    end: Option<StreamEnd>,
    /// Cancels the query if the stream is dropped before its end.
    guard: CancelOnDrop,
}

impl<T> fmt::Debug for QueryStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryStream").field("schema", &self.schema).field("end", &self.end).finish_non_exhaustive()
    }
}

impl<T> QueryStream<T> {
    /// Schema of every batch of the result.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The next chunk; `Ok(None)` at the end (then [`QueryStream::end`] says how it ended),
    /// `Err` when the query failed after it started.
    pub async fn next(&mut self) -> Result<Option<T>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`QueryStream::next`] for hand-written futures and bodies.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>>> {
        if self.end.is_some() {
            return Poll::Ready(Ok(None));
        }
        if let Some(chunk) = std::task::ready!(self.chunks.poll_recv(cx)) {
            return Poll::Ready(Ok(Some(chunk)));
        }
        // The query thread sets the outcome before it drops the sender.
        let outcome = match std::task::ready!(Pin::new(&mut self.outcome).poll(cx)) {
            Ok(outcome) => outcome,
            Err(_) => Err(EngineError::Internal("query thread ended without an outcome".into())),
        };
        self.guard.0 = None;
        Poll::Ready(outcome.map(|end| {
            self.end = Some(end);
            None
        }))
    }

    /// How the stream ended, once [`QueryStream::next`] returned `Ok(None)`.
    pub fn end(&self) -> Option<StreamEnd> {
        self.end
    }
}

/// Why the query thread stopped sending.
enum SendError {
    Timeout,
    Cancelled,
}

impl Engine {
    /// Runs one read-only statement with its `?` placeholders bound to `params` (same
    /// sandbox, read-only check, views and limits as [`Engine::query_params`]) and streams
    /// its result. Each Arrow batch DuckDB produces goes to `encode` *on the query thread*
    /// (so encoding runs beside DuckDB, not on the async runtime), and the chunks go
    /// through a bounded channel of `capacity` to the [`QueryStream`]. Memory is those
    /// chunks, whatever the size of the result: when the reader is slower than DuckDB, the
    /// query thread waits for room.
    ///
    /// - **Time limit**: it covers the whole stream. A watchdog task interrupts DuckDB at the
    ///   deadline, and a query thread waiting for room in the channel gives up at the same
    ///   deadline; either way the stream ends with [`EngineError::Timeout`].
    /// - **Cancellation**: dropping the [`QueryStream`] (axum drops the response body when a
    ///   client disconnects) or the future of [`Engine::query_stream`] interrupts the query;
    ///   the query thread stops at its next step or send, counted in
    ///   [`EngineStats::cancelled`](super::EngineStats::cancelled).
    /// - **Row limit**: the stream stops at [`Limits::max_rows`](super::Limits::max_rows)
    ///   and [`StreamEnd::truncated`] says so.
    /// - **Errors**: [`Engine::query_stream`] resolves once DuckDB has started the query and
    ///   the schema is known, so errors up to that point (syntax, sandbox, binder, the time
    ///   limit) are its `Err`; a later error ends the stream with `Err` after the chunks sent
    ///   before it.
    ///
    /// Needs a Tokio runtime with timers (the watchdog and the bounded send use them).
    pub async fn query_stream<T, F>(
        self: &Arc<Self>,
        sql: String,
        params: Vec<Value>,
        capacity: usize,
        encode: F,
    ) -> Result<QueryStream<T>>
    where
        T: Send + 'static,
        F: FnMut(&RecordBatch) -> std::io::Result<T> + Send + 'static,
    {
        let engine = Arc::clone(self);
        let control = Arc::new(Control::default());
        let guard = CancelOnDrop(Some(Arc::clone(&control)));
        let deadline = Instant::now() + self.limits.timeout;
        let runtime = tokio::runtime::Handle::current();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (chunk_tx, chunk_rx) = mpsc::channel(capacity.max(1));
        let (outcome_tx, outcome_rx) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let running = engine.track();
            let mut ready = Some(ready_tx);
            let result = engine.produce(&sql, params, &control, deadline, &runtime, &mut ready, &chunk_tx, encode);
            let result = match result {
                Err(_) if control.is_cancelled() => Err(EngineError::Cancelled),
                Err(_) if control.timed_out.load(Ordering::SeqCst) => Err(EngineError::Timeout(engine.limits.timeout)),
                other => other,
            };
            let result = running.outcome(result);
            match (ready.take(), result) {
                // Failed before the query started: the caller's `Err`.
                (Some(ready), Err(e)) => {
                    let _ = ready.send(Err(e));
                }
                (Some(ready), Ok(_)) => {
                    let _ = ready.send(Err(EngineError::Internal("query ended before it started".into())));
                }
                (None, result) => {
                    let _ = outcome_tx.send(result);
                }
            }
            // `chunk_tx` drops here, after the outcome is set: the reader sees the end.
        });
        let schema =
            ready_rx.await.map_err(|_| EngineError::Internal("query task ended before the query started".into()))??;
        Ok(QueryStream { schema, chunks: chunk_rx, outcome: outcome_rx, end: None, guard })
    }

    /// The query thread: setup, then batches into the channel until the end, the row
    /// limit, an error, the deadline or the reader going away.
    #[allow(clippy::too_many_arguments)]
    fn produce<T, F>(
        &self,
        sql: &str,
        params: Vec<Value>,
        control: &Arc<Control>,
        deadline: Instant,
        runtime: &tokio::runtime::Handle,
        ready: &mut Option<oneshot::Sender<Result<SchemaRef>>>,
        chunks: &mpsc::Sender<T>,
        encode: F,
    ) -> Result<StreamEnd>
    where
        F: FnMut(&RecordBatch) -> std::io::Result<T>,
    {
        let mut conn = self.connect()?;
        control.attach(conn.interrupt_handle());
        let result = self.produce_on(&mut conn, sql, params, control, deadline, runtime, ready, chunks, encode);
        if control.detach() {
            conn.discard();
        }
        result
    }

    /// [`Engine::produce`] on its connection, from the cancellation check on.
    #[allow(clippy::too_many_arguments)]
    fn produce_on<T, F>(
        &self,
        conn: &mut super::database::Conn<'_>,
        sql: &str,
        params: Vec<Value>,
        control: &Arc<Control>,
        deadline: Instant,
        runtime: &tokio::runtime::Handle,
        ready: &mut Option<oneshot::Sender<Result<SchemaRef>>>,
        chunks: &mpsc::Sender<T>,
        mut encode: F,
    ) -> Result<StreamEnd>
    where
        F: FnMut(&RecordBatch) -> std::io::Result<T>,
    {
        if control.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        // The watchdog: interrupts DuckDB at the deadline; gone once `_done` drops.
        let (_done, done) = oneshot::channel::<()>();
        {
            let control = Arc::clone(control);
            runtime.spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {
                        control.timed_out.store(true, Ordering::SeqCst);
                        control.interrupt();
                    }
                    _ = done => {}
                }
            });
        }
        self.check(conn, sql)?;
        conn.views_for(self, sql)?;
        let mut stmt = conn.prepare(sql).map_err(sql_error)?;
        super::check_param_count(&stmt, &params)?;
        let _ = stmt.stream_arrow(duckdb::params_from_iter(params)).map_err(sql_error)?;
        let schema = stmt.schema();
        let sent = ready.take().map(|r| r.send(Ok(Arc::clone(&schema))));
        if sent.is_some_and(|s| s.is_err()) {
            return Err(EngineError::Cancelled);
        }

        let (rows, truncated) = super::take_rows(&mut stmt, &schema, self.limits.max_rows, |batch| {
            let item = encode(&batch).map_err(|e| EngineError::Internal(format!("encoding the result: {e}")))?;
            // Wait for room, but not past the deadline nor for a reader that is gone.
            let sent = runtime.block_on(async {
                tokio::select! {
                    r = chunks.send(item) => r.map_err(|_| SendError::Cancelled),
                    _ = tokio::time::sleep_until(deadline) => Err(SendError::Timeout),
                }
            });
            match sent {
                Ok(()) => {}
                Err(SendError::Cancelled) => {
                    control.cancel();
                    return Err(EngineError::Cancelled);
                }
                Err(SendError::Timeout) => {
                    control.timed_out.store(true, Ordering::SeqCst);
                    return Err(EngineError::Timeout(self.limits.timeout));
                }
            }
            Ok(())
        })?;
        Ok(StreamEnd { rows, truncated })
    }
}
