//! `lake serve`: recovery, WAL replay, the flusher and the HTTP server, with ordered
//! shutdown (stop accepting, finish requests, final flush, stop the WAL).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use lake_format::{layout, BatchId, Table};
use lake_query::engine::{Engine, FreshRows};

use crate::config::Config;
use crate::http::{self, ingest::Ingest, Status};
use crate::state::{Batches, State};
use crate::wal::Wal;
use crate::writer::{self, Buffers, WriterStats};

impl FreshRows for Buffers {
    fn snapshot(&self, table: Table) -> Vec<arrow_array::RecordBatch> {
        Buffers::snapshot(self, table)
    }

    fn consistent(&self, f: &mut dyn FnMut()) {
        Buffers::consistent(self, f)
    }

    fn is_retired(&self, path: &std::path::Path) -> bool {
        Buffers::is_retired(self, path)
    }
}

/// Longest a request may take before the server gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running lake's moving parts, shared by the flusher and shutdown.
#[derive(Debug)]
struct Flusher {
    data: PathBuf,
    wal: Wal,
    buffers: Arc<Buffers>,
    batches: Arc<Batches>,
    gate: Arc<RwLock<()>>,
    stats: Arc<WriterStats>,
    next_flush: u64,
    interval: Duration,
    size: usize,
    /// Consecutive failed flushes; the next attempt waits 2^n seconds (at most 30).
    failures: u32,
    retry_at: Option<Instant>,
}

impl Flusher {
    async fn run(mut self, cancel: CancellationToken) {
        let tick = (self.interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
                _ = self.buffers.pushed() => {}
            }
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            let (rows, bytes, age) = self.buffers.usage();
            if rows > 0 && (bytes >= self.size || age.is_some_and(|a| a >= self.interval)) {
                self.flush().await;
            }
        }
        if self.buffers.usage().0 > 0 {
            self.flush().await;
        }
    }

    /// Writes every buffered row to Parquet. A failure keeps the rows (and their WAL
    /// segments) for the next attempt, after a growing pause.
    async fn flush(&mut self) {
        let before = self.stats.flush_errors.load(Ordering::Relaxed);
        self.try_flush().await;
        if self.stats.flush_errors.load(Ordering::Relaxed) > before {
            self.failures = (self.failures + 1).min(5);
            self.retry_at = Some(Instant::now() + Duration::from_secs(1 << self.failures).min(Duration::from_secs(30)));
        } else {
            self.failures = 0;
            self.retry_at = None;
        }
    }

    async fn try_flush(&mut self) {
        let (segment, taken, marks) = {
            let _exclusive = self.gate.write().await;
            let segment = match self.wal.rotate().await {
                Ok(s) => s,
                Err(e) => {
                    self.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%e, "flush: wal rotation failed");
                    return;
                }
            };
            (segment, self.buffers.start_flush(), self.batches.marks())
        };
        let number = self.next_flush;
        let state = State { next_flush: number + 1, committed: marks };
        let data = self.data.clone();
        let buffers = Arc::clone(&self.buffers);
        let started = Instant::now();
        let result =
            tokio::task::spawn_blocking(move || writer::write_flush(&data, number, &taken, &state, &buffers)).await;
        match result {
            Ok(Ok((rows, files))) => {
                self.next_flush += 1;
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                self.stats.rows_written.fetch_add(rows as u64, Ordering::Relaxed);
                self.stats.files_written.fetch_add(files as u64, Ordering::Relaxed);
                tracing::info!(flush = number, rows, ms = started.elapsed().as_millis() as u64, "flushed to parquet");
                if let Err(e) = self.wal.remove_before(segment).await {
                    tracing::warn!(%e, "flush: removing old wal segments failed; they are replayed harmlessly");
                }
            }
            Ok(Err(e)) => {
                self.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(flush = number, %e, "flush failed");
                // A failure after the commit point leaves a manifest: complete it and
                // count the flush as done, or the retry would write those rows twice.
                let data = self.data.clone();
                match tokio::task::spawn_blocking(move || writer::recover(&data)).await {
                    Ok(Ok(state)) if state.next_flush > number => {
                        self.buffers.finish_flush();
                        self.next_flush = state.next_flush;
                        tracing::warn!(flush = number, "flush completed by recovery");
                        if let Err(e) = self.wal.remove_before(segment).await {
                            tracing::warn!(%e, "flush: removing old wal segments failed; they are replayed harmlessly");
                        }
                    }
                    _ => self.buffers.abort_flush(),
                }
            }
            Err(e) => {
                self.buffers.abort_flush();
                self.stats.flush_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(flush = number, %e, "flush task panicked; rows kept for the next attempt");
            }
        }
    }
}

/// Replays WAL records not yet committed into the buffers.
fn replay(records: Vec<crate::wal::WalRecord>, state: &State, buffers: &Buffers, batches: &Batches) -> (usize, usize) {
    let (mut replayed, mut skipped) = (0, 0);
    for rec in records {
        let parsed = rec.batch_id.parse::<BatchId>().ok().zip(rec.table.parse::<Table>().ok());
        let Some((id, table)) = parsed else {
            tracing::error!(batch = %rec.batch_id, table = %rec.table, "wal record with a bad id or table skipped");
            skipped += 1;
            continue;
        };
        if state.contains(&id) {
            skipped += 1;
            continue;
        }
        match http::ingest::decode(table, &rec.body) {
            Ok(b) => {
                buffers.push(table, b);
                batches.logged(&id);
                replayed += 1;
            }
            Err(e) => {
                tracing::error!(batch = %id, %e, "wal record no longer decodes; skipped");
                skipped += 1;
            }
        }
    }
    (replayed, skipped)
}

/// Runs the lake until `cancel` fires.
pub async fn run(config: Config, listener: TcpListener, cancel: CancellationToken) -> anyhow::Result<()> {
    let data = config.data_dir.clone();
    std::fs::create_dir_all(data.join(layout::TABLES_DIR)).with_context(|| format!("creating {}", data.display()))?;
    let d = data.clone();
    let state = tokio::task::spawn_blocking(move || writer::recover(&d)).await??;
    let (wal, found) = Wal::open(&data.join(layout::WAL_DIR))?;
    let buffers = Arc::new(Buffers::default());
    let batches = Arc::new(Batches::new(state.clone()));
    let (replayed, skipped) = replay(found.records, &state, &buffers, &batches);
    tracing::info!(replayed, skipped, truncated_bytes = found.truncated_bytes, "wal replayed");

    let engine = Arc::new(Engine::open(&data, Arc::clone(&buffers) as Arc<dyn FreshRows>, config.limits.clone())?);
    let gate = Arc::new(RwLock::new(()));
    let writer_stats = Arc::new(WriterStats::default());
    let ingest = Arc::new(Ingest {
        wal: wal.clone(),
        buffers: Arc::clone(&buffers),
        batches: Arc::clone(&batches),
        gate: Arc::clone(&gate),
        tokens: config.node_tokens.clone(),
        max_body: config.max_body,
        max_buffered: config.flush_size.saturating_mul(4),
        stats: Default::default(),
    });
    let status = Arc::new(Status {
        ingest: Arc::clone(&ingest),
        writer: Arc::clone(&writer_stats),
        buffers: Arc::clone(&buffers),
        started: Instant::now(),
    });
    let read_tokens: Vec<String> = config.read_tokens.iter().map(|s| s.0.clone()).collect();
    let app = http::router(ingest, status)
        .merge(lake_query::http::router(Arc::clone(&engine), read_tokens.clone(), config.queries.clone()))
        .nest("/grafana", lake_query::grafana::router(engine, read_tokens, config.queries.clone()))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT));

    let flusher = Flusher {
        data: data.clone(),
        wal,
        buffers,
        batches,
        gate,
        stats: writer_stats,
        next_flush: state.next_flush,
        interval: config.flush_interval,
        size: config.flush_size,
        failures: 0,
        retry_at: None,
    };
    let flush_cancel = CancellationToken::new();
    let flush_task = tokio::spawn(flusher.run(flush_cancel.clone()));

    tracing::info!(addr = %listener.local_addr()?, data = %data.display(), "lake serving");
    // Trailing slashes are trimmed before routing: Grafana calls `<datasource url>/`, i.e.
    // `/grafana/`, for its health check.
    let app = tower::Layer::layer(&tower_http::normalize_path::NormalizePathLayer::trim_trailing_slash(), app);
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
    let server = axum::serve(listener, app).with_graceful_shutdown(cancel.clone().cancelled_owned());
    let server = tokio::spawn(async move { server.await });
    cancel.cancelled().await;
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(r) => r??,
        Err(_) => tracing::warn!("requests still running after the shutdown grace period; stopping anyway"),
    }
    // Requests are done: the last flush sees every acknowledged row.
    flush_cancel.cancel();
    flush_task.await?;
    tracing::info!("lake stopped");
    Ok(())
}

/// Binds the configured address.
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))
}
