//! lake-collector: gathers telemetry on a node, spools it on disk, ships it to the lake.
//!
//! Data path: a source ([`sources::host`]) samples, encodes an Arrow IPC batch and
//! appends it to the [`spool`] (durable before the append returns); the [`shipper`]
//! sends the oldest unacknowledged record to the lake and acknowledges it in the spool on
//! a 200. Nothing lives only in memory, so a restart or a lake outage loses nothing until
//! the spool's size bound is reached (then the oldest metrics go, counted in [`stats`]).
//!
//! [`run`] wires it together under one `TaskTracker` and shuts down in order.

pub mod checkpoint;
pub mod config;
pub mod shipper;
pub mod sources;
pub mod spool;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::Config;

use shipper::{Shipper, ShipperError};
use sources::host::HostSource;
use sources::SourceError;
use spool::{SpoolError, SpoolHandle, SpoolOptions};
use stats::Stats;

/// How long sources get to finish a tick after cancellation.
const SOURCE_GRACE: Duration = Duration::from_secs(5);
/// How long an in-flight POST may take to finish after cancellation. Abandoning it is
/// safe: the record stays in the spool and is sent again (the lake deduplicates).
const SHIPPER_GRACE: Duration = Duration::from_secs(2);

/// Why the collector stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spool could not be opened.
    #[error("cannot open the spool: {0}")]
    Spool(#[from] SpoolError),
    /// A source stopped with an error.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The shipper stopped with an error.
    #[error(transparent)]
    Shipper(#[from] ShipperError),
    /// A task panicked.
    #[error("task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs the collector until `cancel`, then stops sources, lets the shipper finish its
/// request for a short grace period, and returns. A task failing stops the collector
/// with its error (systemd restarts it; the spool resumes where it was).
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), RunError> {
    let stats = Arc::new(Stats::default());
    let opts = SpoolOptions {
        max_size: config.spool.max_size,
        segment_size: config.spool.segment_size,
    };
    let spool = SpoolHandle::open(config.data_dir.join("spool"), opts, Arc::clone(&stats)).await?;
    let pending = spool.pending().await?;
    info!(
        node = %config.node,
        lake = %config.lake.url,
        data_dir = %config.data_dir.display(),
        epoch = spool.epoch(),
        pending,
        "collector started"
    );

    let tracker = TaskTracker::new();
    let sources_cancel = cancel.child_token();
    let shipper_cancel = cancel.child_token();

    let host = HostSource {
        node: config.node.clone(),
        interval: config.host.interval,
        host_metrics: config.host.enabled,
        spool: spool.clone(),
        stats: Arc::clone(&stats),
    };
    let mut source_task = tracker.spawn(host.run(sources_cancel.clone()));
    let shipper = Shipper::new(&config, spool, Arc::clone(&stats))?;
    let mut shipper_task = tracker.spawn(shipper.run(shipper_cancel.clone()));
    tracker.close();

    // Wait for the stop signal, or for a task that ended by itself (an error).
    let mut failure: Option<RunError> = None;
    let (mut source_done, mut shipper_done) = (false, false);
    tokio::select! {
        _ = cancel.cancelled() => {}
        r = &mut source_task => {
            source_done = true;
            failure = flatten(r).err();
        }
        r = &mut shipper_task => {
            shipper_done = true;
            failure = flatten(r).err();
        }
    }
    if let Some(e) = &failure {
        warn!(error = %e, "a collector task failed; stopping");
    }

    // Sources first: what they already appended is fsynced, nothing is buffered beyond it.
    sources_cancel.cancel();
    if !source_done {
        match tokio::time::timeout(SOURCE_GRACE, &mut source_task).await {
            Ok(r) => keep_first(&mut failure, flatten(r)),
            Err(_) => {
                warn!("sources did not stop in time");
                source_task.abort();
            }
        }
    }
    shipper_cancel.cancel();
    if !shipper_done {
        match tokio::time::timeout(SHIPPER_GRACE, &mut shipper_task).await {
            Ok(r) => keep_first(&mut failure, flatten(r)),
            Err(_) => {
                info!("in-flight batch abandoned at shutdown; it stays spooled");
                shipper_task.abort();
            }
        }
    }
    tracker.wait().await;
    info!("collector stopped");
    failure.map_or(Ok(()), Err)
}

fn flatten<E: Into<RunError>>(
    r: Result<Result<(), E>, tokio::task::JoinError>,
) -> Result<(), RunError> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn keep_first(failure: &mut Option<RunError>, r: Result<(), RunError>) {
    if let (None, Err(e)) = (&failure, r) {
        *failure = Some(e);
    }
}
