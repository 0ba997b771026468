//! The flusher: moves buffered rows to Parquet when the buffers are old or large
//! enough, then truncates the WAL behind them.
//!
//! In: rows acknowledged by [`crate::http::ingest`] (already in the [`super::wal`]) waiting
//! in [`Buffers`]. Out: one [`writer::write_flush`] per flush (a committed Parquet file per
//! table and date) and WAL segments removed once their rows are committed. A failed flush
//! keeps its rows and segments and is retried after a growing pause; `lake serve` stops
//! it last, so its final flush takes every acknowledged row.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use super::state::{Batches, State};
use super::wal::Wal;
use super::writer::{self, Buffers, WriterStats};

/// A running lake's moving parts, shared by the flusher and shutdown.
#[derive(Debug)]
pub(crate) struct Flusher {
    pub(crate) data: PathBuf,
    pub(crate) wal: Wal,
    pub(crate) buffers: Arc<Buffers>,
    pub(crate) batches: Arc<Batches>,
    pub(crate) gate: Arc<RwLock<()>>,
    pub(crate) stats: Arc<WriterStats>,
    pub(crate) next_flush: u64,
    pub(crate) interval: Duration,
    pub(crate) size: usize,
    /// Consecutive failed flushes; the next attempt waits 2^n seconds (at most 30).
    pub(crate) failures: u32,
    pub(crate) retry_at: Option<Instant>,
}

impl Flusher {
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
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
        let failed = self.stats.flush_errors.load(Ordering::Relaxed) > before;
        self.stats.flush_attempted(failed);
        if failed {
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
                    self.stats.flush_failed(format!("wal rotation: {e}"));
                    tracing::error!(%e, "flush: wal rotation failed");
                    return;
                }
            };
            (segment, self.buffers.start_flush(), self.batches.committed())
        };
        let number = self.next_flush;
        let state = State { next_flush: number + 1, committed: marks };
        let data = self.data.clone();
        let buffers = Arc::clone(&self.buffers);
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let result = writer::write_flush(&data, number, &taken, &state, &buffers);
            // The flush's rows are freed now (the buffers let go of them at the commit):
            // their pages go back to the kernel rather than stay in malloc's arenas.
            drop(taken);
            let t = Instant::now();
            crate::malloc::trim();
            tracing::debug!(ms = t.elapsed().as_secs_f64() * 1e3, "flush: memory trimmed");
            result
        })
        .await;
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
                self.stats.flush_failed(e.to_string());
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
                self.stats.flush_failed(format!("flush task failed: {e}"));
                tracing::error!(flush = number, %e, "flush task panicked; rows kept for the next attempt");
            }
        }
    }
}
