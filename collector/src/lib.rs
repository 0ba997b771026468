//! lake-collector: gathers telemetry on a node, spools it on disk, ships it to the lake.
//!
//! Data path: a source ([`sources::host`]) samples, encodes an Arrow IPC batch and
//! appends it to the [`spool`] (durable before the append returns); the [`shipper`]
//! sends the oldest unacknowledged record to the lake and acknowledges it in the spool on
//! a 200. Nothing lives only in memory, so a restart or a lake outage loses nothing until
//! the spool's size bound is reached (then the oldest metrics go, counted in [`stats`]).
//!
//! [`run`] wires it together and shuts down in order: sources, then the shipper.

pub mod config;
pub mod shipper;
pub mod sources;
pub mod spool;
pub mod stats;
pub mod tail;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;

use shipper::{Shipper, ShipperError};
use sources::host::HostSource;
use sources::{SourceContext, SourceError};
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

    let ctx = SourceContext {
        node: Arc::from(config.node.as_str()),
        spool: spool.clone(),
        stats: Arc::clone(&stats),
    };
    let sources_cancel = cancel.child_token();
    let shipper_cancel = cancel.child_token();

    let mut sources: JoinSet<Result<(), SourceError>> = JoinSet::new();
    let host = HostSource {
        node: config.node.clone(),
        interval: config.host.interval,
        host_metrics: config.host.enabled,
        spool: spool.clone(),
        stats: Arc::clone(&stats),
    };
    sources.spawn(host.run(sources_cancel.clone()));
    // Other sources: each enabled one is spawned below with `ctx.clone()`.
    if config.tailscale.enabled {
        let tailscale = sources::tailscale::TailscaleSource::new(config.tailscale.clone(), ctx.clone());
        sources.spawn(tailscale.run(sources_cancel.clone()));
    }
    // A source that returns stops the collector, so uptime runs only with checks to run.
    if !config.uptime.checks.is_empty() {
        let uptime = sources::uptime::UptimeSource::new(config.uptime.clone(), ctx.clone());
        sources.spawn(uptime.run(sources_cancel.clone()));
    }
    if config.caddy.enabled {
        sources.spawn(sources::caddy::CaddySource::new(config.caddy.clone(), ctx.clone()).run(sources_cancel.clone()));
    }
    if config.journald.enabled {
        let ufw = config.ufw.enabled && config.ufw.from_journald;
        let fail2ban = (config.fail2ban.enabled && config.fail2ban.from_journald).then(|| config.fail2ban.timezone.clone());
        let journald = sources::journald::JournaldSource::new(config.journald.clone(), ctx.clone(), ufw, fail2ban);
        sources.spawn(journald.run(sources_cancel.clone()));
    } else {
        // Without journald, ufw and fail2ban can only read their files: say so if none.
        if config.ufw.enabled && config.ufw.from_journald && config.ufw.files.is_none() {
            warn!("[ufw] reads kernel lines from journald, but [journald] is not enabled and no paths are set: no firewall rows");
        }
        if config.fail2ban.enabled && config.fail2ban.from_journald && config.fail2ban.files.is_none() {
            warn!("[fail2ban] reads its messages from journald, but [journald] is not enabled and no paths are set: no ban rows");
        }
    }
    if let (true, Some(files)) = (config.ufw.enabled, &config.ufw.files) {
        let parser = sources::logfile::UfwLines::new(config.ufw.timezone.clone());
        sources.spawn(sources::logfile::LogFileSource::new("ufw", files.clone(), parser, ctx.clone()).run(sources_cancel.clone()));
    }
    if let (true, Some(files)) = (config.fail2ban.enabled, &config.fail2ban.files) {
        let parser = sources::logfile::Fail2banLines::new(config.fail2ban.timezone.clone());
        sources.spawn(
            sources::logfile::LogFileSource::new("fail2ban", files.clone(), parser, ctx.clone()).run(sources_cancel.clone()),
        );
    }

    let shipper = Shipper::new(&config, spool, Arc::clone(&stats))?;
    let mut shipper_task = tokio::spawn(shipper.run(shipper_cancel.clone()));

    // Wait for the stop signal, or for a task that ended by itself (an error).
    let mut failure: Option<RunError> = None;
    let mut shipper_done = false;
    tokio::select! {
        _ = cancel.cancelled() => {}
        Some(r) = sources.join_next() => {
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
    let drained = tokio::time::timeout(SOURCE_GRACE, async {
        while let Some(r) = sources.join_next().await {
            keep_first(&mut failure, flatten(r));
        }
    })
    .await;
    if drained.is_err() {
        warn!("sources did not stop in time");
        sources.abort_all();
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
