//! Host inventory: what is installed, listening and running on each node, into the
//! `packages`, `listeners`, `units` and `hosts` tables — only changes after the first
//! snapshot.
//!
//! Built in, on every node (`[inventory]`, enabled by default). At start and then every
//! `interval` (1h): installed packages ([`packages`], `dpkg-query`) and the machine
//! description ([`hosts`]). Every `listeners_interval` (60s): listening sockets with their
//! process ([`listeners`], from `/proc`). Every `units_interval` (30s): systemd units
//! ([`units`], `systemctl list-units --all`), so a unit entering `failed` reaches the lake
//! within that time.
//!
//! The last snapshot of each part is the source's saved state (`inventory`), spooled in
//! the same group as the rows of the changes that led to it (held: while the spool is
//! full the source waits, and its state stays the one matching what was spooled). So the
//! first run ships every package, listener and unit once (`change = present`), a restart
//! ships only what changed while the collector was down, and nothing is shipped twice or
//! lost. A part that cannot be read this time (a command failing) keeps its last
//! snapshot — an unreadable package list is not "everything removed".
//!
//! Absent tools are said once, clearly: no `dpkg-query` ("no known package manager"),
//! systemd not the init system, or `systemctl` missing; each is re-checked every interval
//! and said again only when it changes.

pub mod hosts;
pub mod listeners;
pub mod packages;
pub mod units;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::ensure;
use arrow_array::RecordBatch;
use lake_format::rows::{now_micros, TableBuilder};
use lake_format::units::Dur;
use lake_format::Table;
use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Emitted, SourceContext, SourceError};
use crate::stats::{SourceStats, Stats};
use hosts::{HostFacts, HostPaths};
use listeners::Listener;
use packages::Packages;
use units::Units;

/// Name of the source: counters, saved state.
pub const SOURCE: &str = "inventory";
/// Longest stderr text kept in a message.
const MAX_STDERR: usize = 500;

const fn default_true() -> bool {
    true
}
const fn default_interval() -> Dur {
    Dur(Duration::from_secs(3600))
}
const fn default_listeners_interval() -> Dur {
    Dur(Duration::from_secs(60))
}
const fn default_units_interval() -> Dur {
    Dur(Duration::from_secs(30))
}
const fn default_command_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_dpkg_query() -> PathBuf {
    PathBuf::from("dpkg-query")
}
fn default_systemctl() -> PathBuf {
    PathBuf::from("systemctl")
}

/// `[inventory]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InventoryFile {
    /// Whether the inventory runs. Default true.
    #[serde(default = "default_true")]
    enabled: bool,
    /// Packages and host description, every. Default 1h.
    #[serde(default = "default_interval")]
    interval: Dur,
    /// Listening sockets, every. Default 60s.
    #[serde(default = "default_listeners_interval")]
    listeners_interval: Dur,
    /// systemd units, every. Default 30s.
    #[serde(default = "default_units_interval")]
    units_interval: Dur,
    /// `dpkg-query` (a bare name is looked up in PATH).
    #[serde(default = "default_dpkg_query")]
    dpkg_query_path: PathBuf,
    /// `systemctl` (a bare name is looked up in PATH).
    #[serde(default = "default_systemctl")]
    systemctl_path: PathBuf,
    /// Longest a `dpkg-query` or `systemctl` run may take. Default 60s.
    #[serde(default = "default_command_timeout")]
    command_timeout: Dur,
}

impl Default for InventoryFile {
    fn default() -> Self {
        InventoryFile {
            enabled: true,
            interval: default_interval(),
            listeners_interval: default_listeners_interval(),
            units_interval: default_units_interval(),
            dpkg_query_path: default_dpkg_query(),
            systemctl_path: default_systemctl(),
            command_timeout: default_command_timeout(),
        }
    }
}

/// `[inventory]`, validated.
#[derive(Debug, Clone)]
pub struct InventoryConfig {
    /// Whether the source runs.
    pub enabled: bool,
    /// Packages and host description, every.
    pub interval: Duration,
    /// Listeners, every.
    pub listeners_interval: Duration,
    /// Units, every.
    pub units_interval: Duration,
    /// `dpkg-query`.
    pub dpkg_query_path: PathBuf,
    /// `systemctl`.
    pub systemctl_path: PathBuf,
    /// Timeout of one command.
    pub command_timeout: Duration,
    /// `/run/systemd` (whether systemd is the init system).
    pub systemd_run_dir: PathBuf,
    /// Where host facts and listeners are read.
    pub host_paths: HostPaths,
}

impl InventoryFile {
    /// Checks the section.
    pub(crate) fn validate(self) -> anyhow::Result<InventoryConfig> {
        for (name, d) in [
            ("interval", self.interval),
            ("listeners_interval", self.listeners_interval),
            ("units_interval", self.units_interval),
            ("command_timeout", self.command_timeout),
        ] {
            ensure!(d.0 >= Duration::from_secs(1), "inventory.{name} must be at least 1s");
        }
        ensure!(!self.dpkg_query_path.as_os_str().is_empty(), "inventory.dpkg_query_path must not be empty");
        ensure!(!self.systemctl_path.as_os_str().is_empty(), "inventory.systemctl_path must not be empty");
        Ok(InventoryConfig {
            enabled: self.enabled,
            interval: self.interval.0,
            listeners_interval: self.listeners_interval.0,
            units_interval: self.units_interval.0,
            dpkg_query_path: self.dpkg_query_path,
            systemctl_path: self.systemctl_path,
            command_timeout: self.command_timeout.0,
            systemd_run_dir: PathBuf::from("/run/systemd"),
            host_paths: HostPaths::default(),
        })
    }
}

/// The saved state: the last snapshot of each part (`None`: never taken).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InventoryState {
    /// `name:arch` → version.
    #[serde(default)]
    pub packages: Option<Packages>,
    /// Listening sockets, sorted.
    #[serde(default)]
    pub listeners: Option<Vec<Listener>>,
    /// Units by name.
    #[serde(default)]
    pub units: Option<Units>,
    /// The machine description.
    #[serde(default)]
    pub host: Option<HostFacts>,
}

/// A part of the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `packages`.
    Packages,
    /// `listeners`.
    Listeners,
    /// `units`.
    Units,
    /// `hosts`.
    Hosts,
}

/// Why a part could not be read this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// The tool is absent or systemd does not run: said once per change.
    Absent(String),
    /// A run failed: counted, logged (rate-limited by the caller).
    Failed(String),
}

/// A command's stdout, or why not. A program that cannot be found is [`Unavailable::Absent`].
async fn run_command(program: &PathBuf, args: &[&str], timeout: Duration) -> Result<String, Unavailable> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_remove(crate::config::TOKEN_ENV)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Unavailable::Absent(format!("{} not found", program.display())))
        }
        Err(e) => return Err(Unavailable::Failed(format!("cannot start {}: {e}", program.display()))),
    };
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(Unavailable::Failed(format!("{}: {e}", program.display()))),
        Err(_) => {
            return Err(Unavailable::Failed(format!("{} timed out after {timeout:?} (killed)", program.display())))
        }
    };
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().replace('\n', " / ");
        if stderr.len() > MAX_STDERR {
            let cut = (0..=MAX_STDERR).rev().find(|i| stderr.is_char_boundary(*i)).unwrap_or(0);
            stderr.truncate(cut);
        }
        return Err(Unavailable::Failed(format!(
            "{} {}: {}: {stderr}",
            program.display(),
            args.first().unwrap_or(&""),
            out.status
        )));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| Unavailable::Failed(format!("{} printed invalid UTF-8", program.display())))
}

/// Reads installed packages.
pub async fn read_packages(config: &InventoryConfig) -> Result<(Packages, Vec<String>), Unavailable> {
    let format = format!("-f={}", packages::DPKG_FORMAT);
    match run_command(&config.dpkg_query_path, &["-W", &format], config.command_timeout).await {
        Ok(text) => Ok(packages::parse_dpkg(&text)),
        Err(Unavailable::Absent(why)) => Err(Unavailable::Absent(format!(
            "no known package manager here ({why}; only dpkg is supported): packages are not inventoried"
        ))),
        Err(e) => Err(e),
    }
}

/// Reads systemd units.
pub async fn read_units(config: &InventoryConfig) -> Result<(Units, Vec<String>), Unavailable> {
    units::availability(&config.systemctl_path, &config.systemd_run_dir).map_err(Unavailable::Absent)?;
    match run_command(&config.systemctl_path, units::SYSTEMCTL_ARGS, config.command_timeout).await {
        Ok(text) => units::parse(&text).map_err(Unavailable::Failed),
        Err(Unavailable::Absent(why)) => Err(Unavailable::Absent(format!("{why}: units are not inventoried"))),
        Err(e) => Err(e),
    }
}

/// Reads listening sockets (blocking pool).
pub async fn read_listeners(config: &InventoryConfig) -> Result<(Vec<Listener>, usize), Unavailable> {
    let proc_root = config.host_paths.proc_root.clone();
    tokio::task::spawn_blocking(move || {
        let mut bad = 0;
        listeners::snapshot(&proc_root, &mut bad).map(|l| (l, bad))
    })
    .await
    .map_err(|e| Unavailable::Failed(e.to_string()))?
    .map_err(Unavailable::Failed)
}

/// Reads the machine description (blocking pool).
pub async fn read_host(config: &InventoryConfig) -> Result<HostFacts, Unavailable> {
    let paths = config.host_paths.clone();
    tokio::task::spawn_blocking(move || hosts::read(&paths)).await.map_err(|e| Unavailable::Failed(e.to_string()))
}

fn col(b: &TableBuilder, name: &str) -> usize {
    b.column(name).unwrap_or_else(|| panic!("catalog column {name} of {} is missing", b.table()))
}

/// `packages` rows.
pub fn packages_batch(
    node: &str,
    ts: i64,
    changes: &[packages::PackageChange],
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut b = TableBuilder::new(Table::Packages);
    let [c_ts, host, name, version, arch, manager, change, previous] =
        ["ts", "host", "name", "version", "arch", "manager", "change", "previous_version"].map(|n| col(&b, n));
    for c in changes {
        b.ts(c_ts, ts);
        b.text(host, Some(node));
        b.text(name, Some(&c.name));
        b.text(version, Some(&c.version));
        b.text(arch, Some(&c.arch).filter(|a| !a.is_empty()).map(|a| a.as_str()));
        b.text(manager, Some("dpkg"));
        b.text(change, Some(c.change));
        b.text(previous, c.previous_version.as_deref());
        b.end_row();
    }
    b.finish()
}

/// `listeners` rows.
pub fn listeners_batch(
    node: &str,
    ts: i64,
    changes: &[listeners::ListenerChange],
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut b = TableBuilder::new(Table::Listeners);
    let [c_ts, host, proto, addr, port, process, pid, change] =
        ["ts", "host", "proto", "addr", "port", "process", "pid", "change"].map(|n| col(&b, n));
    for c in changes {
        let l = &c.listener;
        b.ts(c_ts, ts);
        b.text(host, Some(node));
        b.text(proto, Some(&l.proto));
        b.text(addr, Some(&l.addr));
        b.int(port, Some(i64::from(l.port)));
        b.text(process, l.process.as_deref());
        b.int(pid, l.pid.map(i64::from));
        b.text(change, Some(c.change));
        b.end_row();
    }
    b.finish()
}

/// `units` rows.
pub fn units_batch(
    node: &str,
    ts: i64,
    changes: &[units::UnitChange],
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut b = TableBuilder::new(Table::Units);
    let [c_ts, host, unit, load, active, sub, change, description] =
        ["ts", "host", "unit", "load_state", "active_state", "sub_state", "change", "description"].map(|n| col(&b, n));
    for c in changes {
        b.ts(c_ts, ts);
        b.text(host, Some(node));
        b.text(unit, Some(&c.unit));
        b.text(load, Some(&c.state.load));
        b.text(active, Some(&c.state.active));
        b.text(sub, Some(&c.state.sub));
        b.text(change, Some(c.change));
        b.text(description, Some(&c.state.description).filter(|d| !d.is_empty()).map(|d| d.as_str()));
        b.end_row();
    }
    b.finish()
}

/// The `hosts` row.
pub fn hosts_batch(node: &str, ts: i64, f: &HostFacts) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut b = TableBuilder::new(Table::Hosts);
    let [c_ts, host, os, kernel, arch, cpus, memory, version, attrs, reboot] =
        ["ts", "host", "os", "kernel", "arch", "cpus", "memory_bytes", "collector_version", "attrs", "reboot_required"]
            .map(|n| col(&b, n));
    b.ts(c_ts, ts);
    b.text(host, Some(node));
    b.text(os, f.os.as_deref());
    b.text(kernel, f.kernel.as_deref());
    b.text(arch, f.arch.as_deref());
    b.int(cpus, f.cpus);
    b.int(memory, f.memory_bytes);
    b.text(version, Some(&f.collector_version));
    b.map(attrs, f.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    b.bool(reboot, Some(f.reboot_required));
    b.end_row();
    b.finish()
}

/// What one part's reading changes: the rows to ship and the state after them.
#[derive(Debug)]
pub struct Step {
    /// The table and its rows (none when nothing changed).
    pub batch: Option<(Table, RecordBatch)>,
    /// The new state.
    pub state: InventoryState,
}

/// Applies a fresh reading of `part` to `state`: the change rows (pure).
pub fn step(state: &InventoryState, node: &str, ts: i64, reading: Reading) -> Result<Step, arrow_schema::ArrowError> {
    let mut next = state.clone();
    let batch = match reading {
        Reading::Packages(p) => {
            let d = packages::diff(state.packages.as_ref(), &p);
            next.packages = Some(p);
            (!d.is_empty()).then(|| packages_batch(node, ts, &d).map(|b| (Table::Packages, b))).transpose()?
        }
        Reading::Listeners(l) => {
            let d = listeners::diff(state.listeners.as_deref(), &l);
            next.listeners = Some(l);
            (!d.is_empty()).then(|| listeners_batch(node, ts, &d).map(|b| (Table::Listeners, b))).transpose()?
        }
        Reading::Units(u) => {
            let d = units::diff(state.units.as_ref(), &u);
            next.units = Some(u);
            (!d.is_empty()).then(|| units_batch(node, ts, &d).map(|b| (Table::Units, b))).transpose()?
        }
        Reading::Host(h) => {
            let changed = state.host.as_ref() != Some(&h);
            next.host = Some(h);
            changed
                .then(|| hosts_batch(node, ts, next.host.as_ref().expect("just set")).map(|b| (Table::Hosts, b)))
                .transpose()?
        }
    };
    Ok(Step { batch, state: next })
}

/// A fresh reading of one part.
#[derive(Debug)]
pub enum Reading {
    /// Installed packages.
    Packages(Packages),
    /// Listening sockets.
    Listeners(Vec<Listener>),
    /// systemd units.
    Units(Units),
    /// Machine description.
    Host(HostFacts),
}

/// What the source last said about a part being unavailable, to say it once per change.
#[derive(Debug, Default)]
struct Said {
    absent: Option<String>,
    failures: super::notes::FailureLog,
}

impl Said {
    fn report(&mut self, part: Part, r: &Result<(), Unavailable>, stats: &SourceStats) {
        match r {
            Ok(()) => {
                if self.absent.take().is_some() {
                    info!(?part, "inventory part available again");
                }
                if let Some(n) = self.failures.succeeded() {
                    info!(?part, after_failures = n, "inventory part readable again");
                }
            }
            Err(Unavailable::Absent(why)) => {
                if self.absent.as_deref() != Some(why.as_str()) {
                    warn!(?part, "{why}");
                    Stats::add(&stats.errors, 1);
                    self.absent = Some(why.clone());
                }
            }
            Err(Unavailable::Failed(why)) => {
                Stats::add(&stats.errors, 1);
                if let Some(n) = self.failures.failed() {
                    warn!(?part, failures_in_a_row = n, "inventory read failed, last snapshot kept: {why}");
                }
            }
        }
    }
}

/// The running inventory.
#[derive(Debug)]
pub struct InventorySource {
    config: InventoryConfig,
    ctx: SourceContext,
}

impl InventorySource {
    /// The source over `config`.
    pub fn new(config: InventoryConfig, ctx: SourceContext) -> Self {
        InventorySource { config, ctx }
    }

    /// Reads one part now, as a [`Reading`]; lines that did not parse count in `parse_errors`.
    pub async fn read(&self, part: Part, stats: &SourceStats) -> Result<Reading, Unavailable> {
        let c = &self.config;
        match part {
            Part::Packages => {
                let (p, bad) = read_packages(c).await?;
                if !bad.is_empty() {
                    Stats::add(&stats.parse_errors, bad.len() as u64);
                    warn!(lines = bad.len(), first = %bad[0], "dpkg-query lines not understood");
                }
                Ok(Reading::Packages(p))
            }
            Part::Units => {
                let (u, bad) = read_units(c).await?;
                if !bad.is_empty() {
                    Stats::add(&stats.parse_errors, bad.len() as u64);
                    warn!(lines = bad.len(), first = %bad[0], "systemctl lines not understood");
                }
                Ok(Reading::Units(u))
            }
            Part::Listeners => {
                let (l, bad) = read_listeners(c).await?;
                Stats::add(&stats.parse_errors, bad as u64);
                Ok(Reading::Listeners(l))
            }
            Part::Hosts => read_host(c).await.map(Reading::Host),
        }
    }

    /// Inventories until `cancel`.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let stats = self.ctx.source_stats(SOURCE);
        let mut state: InventoryState = self.ctx.load_state(SOURCE).await?.unwrap_or_default();
        info!(
            resumed = state.packages.is_some() || state.units.is_some(),
            interval = ?self.config.interval,
            units_interval = ?self.config.units_interval,
            "inventory started"
        );
        let ticker = |d: Duration| {
            let mut t = tokio::time::interval(d);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        };
        let (mut slow, mut fast_l, mut fast_u) =
            (ticker(self.config.interval), ticker(self.config.listeners_interval), ticker(self.config.units_interval));
        let mut said: [Said; 4] = Default::default();
        loop {
            let parts: &[Part] = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = slow.tick() => &[Part::Hosts, Part::Packages],
                _ = fast_l.tick() => &[Part::Listeners],
                _ = fast_u.tick() => &[Part::Units],
            };
            for &part in parts {
                let reading = self.read(part, &stats).await;
                said[part as usize].report(part, &reading.as_ref().map(|_| ()).map_err(Clone::clone), &stats);
                let Ok(reading) = reading else { continue };
                Stats::add(&stats.read, 1);
                let ts = now_micros();
                let step = step(&state, &self.ctx.node, ts, reading)
                    .map_err(|e| SourceError::Encode { source_name: SOURCE, error: e.to_string() })?;
                if step.state == state {
                    continue;
                }
                let batches: Vec<(Table, RecordBatch)> = step.batch.into_iter().collect();
                match self.ctx.emit_with_state(SOURCE, batches, &step.state, &cancel).await? {
                    Emitted::Spooled(_) => state = step.state,
                    Emitted::Cancelled => return Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
