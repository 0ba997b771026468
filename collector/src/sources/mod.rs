//! Sources: each turns one kind of input into typed rows of a catalog table and appends
//! them to the spool through a [`SourceContext`].
//!
//! Two kinds of data, two behaviours when the spool is full:
//! - input that can be read again (journald, log files) *holds its position*:
//!   [`SourceContext::emit_holding`] waits until the spool has room, and the source saves
//!   its checkpoint only after the append returned, so nothing is skipped;
//! - samples that exist only now (host metrics, probes) *drop the oldest* spooled data
//!   instead ([`SourceContext::emit_droppable`]), counted.

pub mod caddy;
pub mod host;
pub mod journald;
pub mod ufw;
pub mod fail2ban;
pub mod zone;
pub mod probe;
pub mod tailscale;
pub mod uptime;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use lake_format::{wire, Table};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::checkpoint::Checkpoints;
use crate::spool::{OnFull, SpoolError, SpoolHandle};
use crate::stats::{SourceStats, Stats};

/// How long a holding source waits before trying a full spool again.
const FULL_RETRY: Duration = Duration::from_secs(1);

/// Errors that stop a source (a read error of one sample only logs and counts).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The sampling task panicked or was cancelled by the runtime.
    #[error("{source_name} source task failed: {error}")]
    Task {
        /// Which source.
        source_name: &'static str,
        /// The join error.
        error: tokio::task::JoinError,
    },
    /// The source could not start.
    #[error("{source_name} source cannot start: {reason}")]
    Start {
        /// Which source.
        source_name: &'static str,
        /// Why.
        reason: String,
    },
    /// The spool failed for a reason other than being full.
    #[error("{source_name}: spool: {error}")]
    Spool {
        /// Which source.
        source_name: &'static str,
        /// The spool's error.
        error: SpoolError,
    },
    /// A batch could not be encoded (a bug: rows are built to the catalog).
    #[error("{source_name}: encoding a batch: {error}")]
    Encode {
        /// Which source.
        source_name: &'static str,
        /// The error.
        error: String,
    },
    /// The checkpoint could not be read or written.
    #[error("{source_name}: {error}")]
    Checkpoint {
        /// Which source.
        source_name: &'static str,
        /// The error.
        error: crate::checkpoint::CheckpointError,
    },
}

/// What every source gets: where rows go, counters, checkpoints.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// Node name written in `host`.
    pub node: Arc<str>,
    /// Where batches go.
    pub spool: SpoolHandle,
    /// The collector's counters.
    pub stats: Arc<Stats>,
    /// Where sources save their positions.
    pub checkpoints: Checkpoints,
}

/// Result of an emit that may be interrupted by shutdown.
#[derive(Debug, PartialEq, Eq)]
pub enum Emitted {
    /// In the spool (fsynced) under this seq.
    Spooled(u64),
    /// Shutdown came while waiting for room: the batch is not spooled, do not checkpoint.
    Cancelled,
}

impl SourceContext {
    /// The counters of one source.
    pub fn source_stats(&self, name: &'static str) -> Arc<SourceStats> {
        self.stats.source(name)
    }

    fn encode(name: &'static str, batch: &RecordBatch) -> Result<Vec<u8>, SourceError> {
        wire::encode(&batch.schema(), std::slice::from_ref(batch))
            .map_err(|e| SourceError::Encode { source_name: name, error: e.to_string() })
    }

    /// Spools a batch of input that can be read again. While the spool is full it waits
    /// (the source is paused, its checkpoint unchanged) until there is room or `cancel`.
    /// Save the checkpoint covering these rows only after this returned `Spooled`.
    pub async fn emit_holding(
        &self,
        name: &'static str,
        table: Table,
        batch: &RecordBatch,
        cancel: &CancellationToken,
    ) -> Result<Emitted, SourceError> {
        let body = Self::encode(name, batch)?;
        let stats = self.stats.source(name);
        let mut warned = false;
        loop {
            match self.spool.append(table.name().to_string(), body.clone(), OnFull::Reject).await {
                Ok(seq) => {
                    Stats::add(&stats.rows, batch.num_rows() as u64);
                    return Ok(Emitted::Spooled(seq));
                }
                Err(SpoolError::Full { .. }) => {
                    Stats::add(&stats.paused, 1);
                    if !warned {
                        warn!(source = name, "spool full: source paused, its position holds");
                        warned = true;
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(Emitted::Cancelled),
                        _ = tokio::time::sleep(FULL_RETRY) => {}
                    }
                }
                Err(error) => return Err(SourceError::Spool { source_name: name, error }),
            }
        }
    }

    /// Spools a batch of samples that exist only now; a full spool drops its oldest data.
    pub async fn emit_droppable(&self, name: &'static str, table: Table, batch: &RecordBatch) -> Result<u64, SourceError> {
        let body = Self::encode(name, batch)?;
        let seq = self
            .spool
            .append(table.name().to_string(), body, OnFull::DropOldest)
            .await
            .map_err(|error| SourceError::Spool { source_name: name, error })?;
        Stats::add(&self.stats.source(name).rows, batch.num_rows() as u64);
        Ok(seq)
    }

    /// Loads a checkpoint off the runtime.
    pub async fn load_checkpoint<T>(&self, name: &'static str) -> Result<Option<T>, SourceError>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let cp = self.checkpoints.clone();
        tokio::task::spawn_blocking(move || cp.load(name))
            .await
            .map_err(|error| SourceError::Task { source_name: name, error })?
            .map_err(|error| SourceError::Checkpoint { source_name: name, error })
    }

    /// Saves a checkpoint off the runtime (after the rows it covers were spooled).
    pub async fn save_checkpoint<T>(&self, name: &'static str, state: T) -> Result<(), SourceError>
    where
        T: serde::Serialize + Send + 'static,
    {
        let cp = self.checkpoints.clone();
        tokio::task::spawn_blocking(move || cp.save(name, &state))
            .await
            .map_err(|error| SourceError::Task { source_name: name, error })?
            .map_err(|error| SourceError::Checkpoint { source_name: name, error })
    }
}
