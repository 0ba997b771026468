//! lake-collector: gathers telemetry on a node, spools it on disk, ships it to the lake.
//!
//! Data path: a source ([`sources::host`]) samples, encodes an Arrow IPC batch and
//! appends it to the [`spool`] (durable before the append returns); the [`shipper`]
//! sends the oldest unacknowledged record to the lake and acknowledges it in the spool on
//! a 200. Nothing lives only in memory, so a restart or a lake outage loses nothing until
//! the spool's size bound is reached (then the oldest metrics go, counted in [`stats`]).
//!
//! A lake refusal the operator can fix (token, node name, clock) keeps the batch in the
//! spool; one that no fix on this node changes moves it to `rejected/` ([`rejected`],
//! sent again by `lake-collector replay-rejected`). The [`heartbeat`] tells someone
//! outside when batches stop reaching the lake.
//!
//! [`run`] wires it together and shuts down in order: sources, then the shipper.

pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod heartbeat;
pub mod rejected;
pub mod run_job;
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
    /// The heartbeat could not start.
    #[error(transparent)]
    Heartbeat(#[from] heartbeat::HeartbeatError),
    /// A task panicked.
    #[error("task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs the collector until `cancel`, then stops sources, lets the shipper finish its
/// request for a short grace period, and returns. A task failing stops the collector
/// with its error (systemd restarts it; the spool resumes where it was).
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), RunError> {
    let stats = Arc::new(Stats::default());
    let opts = SpoolOptions { max_size: config.spool.max_size, segment_size: config.spool.segment_size };
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

    let ctx = SourceContext { node: Arc::from(config.node.as_str()), spool: spool.clone(), stats: Arc::clone(&stats) };
    let sources_cancel = cancel.child_token();
    let shipper_cancel = cancel.child_token();

    let mut sources: JoinSet<Result<(), SourceError>> = JoinSet::new();
    let k = sources_cancel.clone();
    let st = Arc::clone(&stats);
    {
        let (node, interval, enabled, spool, stats) =
            (config.node.clone(), config.host.interval, config.host.enabled, spool.clone(), Arc::clone(&stats));
        let cancel = k.clone();
        sources.spawn(supervise("host", Arc::clone(&st), k.clone(), move || {
            let host = HostSource {
                node: node.clone(),
                interval,
                host_metrics: enabled,
                spool: spool.clone(),
                stats: Arc::clone(&stats),
            };
            host.run(cancel.clone())
        }));
    }
    // Other sources: each enabled one is spawned below with `ctx.clone()`.
    if config.tailscale.enabled {
        let (cfg, c, cancel) = (config.tailscale.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise("tailscale", Arc::clone(&st), k.clone(), move || {
            sources::tailscale::TailscaleSource::new(cfg.clone(), c.clone()).run(cancel.clone())
        }));
    }
    // A source with nothing to do would return at once: uptime runs only with checks.
    if !config.uptime.checks.is_empty() {
        let (cfg, c, cancel) = (config.uptime.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise("uptime", Arc::clone(&st), k.clone(), move || {
            sources::uptime::UptimeSource::new(cfg.clone(), c.clone()).run(cancel.clone())
        }));
    }
    if config.caddy.enabled {
        let (cfg, c, cancel) = (config.caddy.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise("caddy", Arc::clone(&st), k.clone(), move || {
            sources::caddy::CaddySource::new(cfg.clone(), c.clone()).run(cancel.clone())
        }));
    }
    if config.journald.enabled {
        let ufw = config.ufw.enabled && config.ufw.from_journald;
        let fail2ban =
            (config.fail2ban.enabled && config.fail2ban.from_journald).then(|| config.fail2ban.timezone.clone());
        let (cfg, c, cancel) = (config.journald.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise("journald", Arc::clone(&st), k.clone(), move || {
            sources::journald::JournaldSource::new(cfg.clone(), c.clone(), ufw, fail2ban.clone()).run(cancel.clone())
        }));
    } else {
        // Without journald, ufw and fail2ban can only read their files: say so if none.
        if config.ufw.enabled && config.ufw.from_journald && config.ufw.files.is_none() {
            warn!("[ufw] reads kernel lines from journald, but [journald] is not enabled and no paths are set: no firewall rows");
        }
        if config.fail2ban.enabled && config.fail2ban.from_journald && config.fail2ban.files.is_none() {
            warn!("[fail2ban] reads its messages from journald, but [journald] is not enabled and no paths are set: no ban rows");
        }
    }
    if config.docker.enabled {
        let (cfg, c, cancel) = (config.docker.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise(sources::docker::NAME, Arc::clone(&st), k.clone(), move || {
            sources::docker::DockerSource::new(cfg.clone(), c.clone()).run(cancel.clone())
        }));
    }
    if config.syslog.enabled() {
        let (cfg, c, cancel) = (config.syslog.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise(sources::syslog::NAME, Arc::clone(&st), k.clone(), move || {
            sources::syslog::SyslogSource::new(cfg.clone(), c.clone()).run(cancel.clone())
        }));
    }
    if let (true, Some(files)) = (config.ufw.enabled, &config.ufw.files) {
        let (files, tz, c, cancel) = (files.clone(), config.ufw.timezone.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise("ufw", Arc::clone(&st), k.clone(), move || {
            let parser = sources::logfile::UfwLines::new(tz.clone());
            sources::logfile::LogFileSource::new("ufw", files.clone(), parser, c.clone()).run(cancel.clone())
        }));
    }
    if let (true, Some(files)) = (config.fail2ban.enabled, &config.fail2ban.files) {
        let (files, tz, c, cancel) = (files.clone(), config.fail2ban.timezone.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise("fail2ban", Arc::clone(&st), k.clone(), move || {
            let parser = sources::logfile::Fail2banLines::new(tz.clone());
            sources::logfile::LogFileSource::new("fail2ban", files.clone(), parser, c.clone()).run(cancel.clone())
        }));
    }

    if config.inventory.enabled {
        let (cfg, c, cancel) = (config.inventory.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise(sources::inventory::SOURCE, Arc::clone(&st), k.clone(), move || {
            sources::inventory::InventorySource::new(cfg.clone(), c.clone()).run(cancel.clone())
        }));
    }
    // One task per configured command, endpoint and file set: one that hangs or fails
    // delays nothing else.
    for e in &config.exec {
        let (cfg, c, cancel) = (e.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise(e.source, Arc::clone(&st), k.clone(), move || {
            sources::exec::ExecSource::new(cfg.clone(), c.clone()).run(cancel.clone())
        }));
    }
    for e in &config.prometheus_scrape {
        let (cfg, c, cancel) = (e.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise(e.source, Arc::clone(&st), k.clone(), move || {
            sources::prometheus_scrape::ScrapeSource::new(cfg.clone(), c.clone()).run(cancel.clone())
        }));
    }
    for e in &config.json_file {
        let (cfg, c, cancel) = (e.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise(e.source, Arc::clone(&st), k.clone(), move || {
            sources::json_file::JsonFileSource::new(cfg.clone(), c.clone()).run(cancel.clone())
        }));
    }
    for e in &config.log_file {
        let (cfg, c, cancel) = (e.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise(e.source, Arc::clone(&st), k.clone(), move || {
            sources::log_file::LogFileSource::new(cfg.clone(), c.clone()).run(cancel.clone())
        }));
    }
    for e in &config.ups {
        let (cfg, c, cancel) = (e.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise(e.source, Arc::clone(&st), k.clone(), move || {
            sources::ups::UpsSource::new(cfg.clone(), c.clone()).run(cancel.clone())
        }));
    }
    for e in &config.pull {
        let (cfg, c, cancel) = (e.clone(), ctx.clone(), k.clone());
        sources.spawn(supervise(e.source, Arc::clone(&st), k.clone(), move || {
            sources::pull::PullSource::new(cfg.clone(), c.clone()).run(cancel.clone())
        }));
    }

    let shipper = Shipper::new(&config, spool.clone(), Arc::clone(&stats))?;
    let heartbeat_task = heartbeat::Heartbeat::new(&config, shipper.link(), spool, Arc::clone(&stats))?
        .map(|h| tokio::spawn(h.run(cancel.child_token())));
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
    if let Some(h) = heartbeat_task {
        h.abort();
    }
    info!("collector stopped");
    failure.map_or(Ok(()), Err)
}

/// Longest pause before a failed source is started again.
const RESTART_MAX: Duration = Duration::from_secs(60);

/// Runs a source until `cancel`. A source that fails (or stops by itself) is logged,
/// counted in its `errors`, and started again after a pause growing from 1 s to a
/// minute: one broken input must not stop the others, and the source resumes from the
/// position saved in the spool.
async fn supervise<F, Fut>(
    name: &'static str,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    make: F,
) -> Result<(), SourceError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), SourceError>>,
{
    let mut pause = Duration::from_secs(1);
    loop {
        let started = std::time::Instant::now();
        let result = make().await;
        if cancel.is_cancelled() {
            return result;
        }
        match result {
            Ok(()) => warn!(source = name, "source stopped by itself; starting it again"),
            Err(error) => tracing::error!(source = name, %error, "source failed; starting it again"),
        }
        Stats::add(&stats.source(name).errors, 1);
        if started.elapsed() > RESTART_MAX {
            pause = Duration::from_secs(1);
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RESTART_MAX);
    }
}

fn flatten<E: Into<RunError>>(r: Result<Result<(), E>, tokio::task::JoinError>) -> Result<(), RunError> {
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

#[cfg(test)]
mod supervise_tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_failing_source_is_restarted_counted_and_stops_on_cancel() {
        let stats = Arc::new(Stats::default());
        let cancel = CancellationToken::new();
        let starts = Arc::new(AtomicU32::new(0));
        let (s, k) = (Arc::clone(&starts), cancel.clone());
        let task = tokio::spawn(supervise("test", Arc::clone(&stats), cancel.clone(), move || {
            let (s, k) = (Arc::clone(&s), k.clone());
            async move {
                if s.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(SourceError::Start { source_name: "test", reason: "broken".into() });
                }
                k.cancelled().await;
                Ok(())
            }
        }));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert_eq!(stats.source("test").errors.load(Ordering::Relaxed), 2);
        cancel.cancel();
        task.await.unwrap().unwrap();
    }
}
