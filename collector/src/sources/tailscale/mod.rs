//! Tailscale probes: every interval, list the peers with `tailscale status --json` and
//! ping each with `tailscale ping --c 1 --timeout <t>`, into `probes` (kind `tailscale`).
//!
//! Data in: the two commands' output, parsed by the pure [`parse_status`] and
//! [`parse_ping`]. Data out: one row per peer per tick with latency, the path (a direct
//! `ip:port` or `DERP(region)`) and why a ping failed. Rows go out with
//! [`SourceContext::emit_droppable`]: a probe result cannot be read again, so there is no
//! checkpoint.
//!
//! Choices:
//! - Offline peers (control says `Online: false`) are not pinged: the ping could only
//!   time out, and `timeout × peers` would stretch the tick. They still get a row
//!   (`ok = false`, error `peer offline`) so a peer going away is visible in the lake.
//! - A pong counts as success whatever the exit code: with `--c 1` a pong over DERP
//!   makes `tailscale ping` exit 1 ("direct connection not established", its default
//!   `--until-direct`), yet the peer did answer. The row says `route = relayed`.
//! - Each ping runs under an outer timeout (`timeout + 1s`) with `kill_on_drop`, so a
//!   hung CLI cannot stall the tick; pings run `concurrency` at a time.
//! - Tailscale missing (binary not found, tailscaled not running, backend not
//!   `Running`) makes the source idle, not failed: it logs once per change of state,
//!   counts one error per change, and re-checks every interval, so installing or
//!   starting Tailscale later needs no collector restart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use lake_format::rows::now_micros;
use lake_format::units::Dur;
use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::probe::{self, ProbeRow};
use super::{SourceContext, SourceError};
use crate::stats::Stats;

const SOURCE: &str = "tailscale";
/// Extra time the CLI gets past its own `--timeout` before it is killed.
const PING_GRACE: Duration = Duration::from_secs(1);
/// Longest error text kept from the CLI's output.
const MAX_ERROR_LEN: usize = 200;

const fn default_interval() -> Dur {
    Dur(Duration::from_secs(60))
}
const fn default_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
const fn default_concurrency() -> usize {
    4
}
fn default_path() -> PathBuf {
    PathBuf::from("tailscale")
}

/// `[tailscale]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TailscaleFile {
    /// Whether to probe peers. Default false (not every node runs Tailscale).
    #[serde(default)]
    enabled: bool,
    /// The CLI; a bare name is looked up in `PATH`. Default "tailscale".
    #[serde(default = "default_path")]
    tailscale_path: PathBuf,
    /// Time between two rounds of pings. Default 60s.
    #[serde(default = "default_interval")]
    interval: Dur,
    /// `--timeout` of one ping. Default 5s.
    #[serde(default = "default_timeout")]
    timeout: Dur,
    /// Pings running at once. Default 4.
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    /// Peers to probe (host name, MagicDNS name or Tailscale IP); default all peers.
    #[serde(default)]
    peers: Option<Vec<String>>,
}

impl Default for TailscaleFile {
    fn default() -> Self {
        TailscaleFile {
            enabled: false,
            tailscale_path: default_path(),
            interval: default_interval(),
            timeout: default_timeout(),
            concurrency: default_concurrency(),
            peers: None,
        }
    }
}

impl TailscaleFile {
    /// Checks the section and makes it typed.
    pub(crate) fn validate(self) -> anyhow::Result<TailscaleConfig> {
        ensure!(!self.interval.0.is_zero(), "tailscale.interval must be more than zero");
        ensure!(!self.timeout.0.is_zero(), "tailscale.timeout must be more than zero");
        ensure!(
            self.timeout.0 < self.interval.0,
            "tailscale.timeout ({}) must be less than tailscale.interval ({})",
            self.timeout,
            self.interval
        );
        ensure!(self.concurrency >= 1, "tailscale.concurrency must be at least 1");
        ensure!(!self.tailscale_path.as_os_str().is_empty(), "tailscale.tailscale_path must not be empty");
        if let Some(peers) = &self.peers {
            for (i, p) in peers.iter().enumerate() {
                ensure!(!p.trim().is_empty(), "tailscale.peers[{i}] must not be empty");
            }
        }
        Ok(TailscaleConfig {
            enabled: self.enabled,
            tailscale_path: self.tailscale_path,
            interval: self.interval.0,
            timeout: self.timeout.0,
            concurrency: self.concurrency,
            peers: self.peers,
        })
    }
}

/// `[tailscale]`, validated.
#[derive(Debug, Clone)]
pub struct TailscaleConfig {
    /// Whether the source runs.
    pub enabled: bool,
    /// The `tailscale` CLI.
    pub tailscale_path: PathBuf,
    /// Time between two rounds.
    pub interval: Duration,
    /// Timeout of one ping.
    pub timeout: Duration,
    /// Pings at once.
    pub concurrency: usize,
    /// Explicit peers, or `None` for every peer in the status.
    pub peers: Option<Vec<String>>,
}

/// A peer from `tailscale status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    /// `HostName`.
    pub host_name: String,
    /// `DNSName` without the trailing dot.
    pub dns_name: String,
    /// `TailscaleIPs`, IPv4 first as tailscale lists them.
    pub ips: Vec<String>,
    /// `OS`.
    pub os: String,
    /// `Online` (as seen by the control plane).
    pub online: bool,
    /// `Active` (traffic recently).
    pub active: bool,
    /// `CurAddr`: the direct `ip:port` in use, empty when relayed.
    pub cur_addr: String,
    /// `Relay`: the home DERP region code.
    pub relay: String,
    /// `Tags`.
    pub tags: Vec<String>,
    /// `LastSeen`, as written.
    pub last_seen: String,
}

impl Peer {
    /// What to hand to `tailscale ping`: the first Tailscale IP (unambiguous), else the
    /// MagicDNS name, else the host name.
    fn ping_target(&self) -> &str {
        self.ips
            .first()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .or(Some(self.dns_name.as_str()).filter(|s| !s.is_empty()))
            .unwrap_or(&self.host_name)
    }

    /// Whether an entry of `tailscale.peers` names this peer.
    fn matches(&self, wanted: &str) -> bool {
        let wanted = wanted.trim().trim_end_matches('.');
        self.host_name.eq_ignore_ascii_case(wanted)
            || self.dns_name.eq_ignore_ascii_case(wanted)
            || self.dns_name.split('.').next().is_some_and(|short| short.eq_ignore_ascii_case(wanted))
            || self.ips.iter().any(|ip| ip == wanted)
    }
}

/// `tailscale status --json` that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not the JSON shape of ipnstate.Status.
    #[error("tailscale status --json: {0}")]
    Json(#[from] serde_json::Error),
    /// The daemon is up but not connected (`NeedsLogin`, `Stopped`, ...).
    #[error("tailscale is not running (backend state {0})")]
    NotRunning(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StatusJson {
    #[serde(default)]
    backend_state: String,
    #[serde(default)]
    peer: Option<BTreeMap<String, PeerJson>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PeerJson {
    #[serde(default)]
    host_name: String,
    #[serde(default, rename = "DNSName")]
    dns_name: String,
    #[serde(default, rename = "OS")]
    os: String,
    #[serde(default, rename = "TailscaleIPs")]
    tailscale_ips: Option<Vec<String>>,
    #[serde(default)]
    online: bool,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    cur_addr: String,
    #[serde(default)]
    relay: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    last_seen: String,
}

/// The peers of a `tailscale status --json` output (not `Self`), sorted by host name.
pub fn parse_status(json: &[u8]) -> Result<Vec<Peer>, ParseError> {
    let status: StatusJson = serde_json::from_slice(json)?;
    // An empty state comes from old CLIs that do not print it; only a named other state
    // means the tailnet is down.
    if !status.backend_state.is_empty() && status.backend_state != "Running" {
        return Err(ParseError::NotRunning(status.backend_state));
    }
    let mut peers: Vec<Peer> = status
        .peer
        .unwrap_or_default()
        .into_values()
        .map(|p| Peer {
            host_name: p.host_name,
            dns_name: p.dns_name.trim_end_matches('.').to_string(),
            ips: p.tailscale_ips.unwrap_or_default(),
            os: p.os,
            online: p.online,
            active: p.active,
            cur_addr: p.cur_addr,
            relay: p.relay,
            tags: p.tags.unwrap_or_default(),
            last_seen: p.last_seen,
        })
        .collect();
    peers.sort_by(|a, b| a.host_name.cmp(&b.host_name).then_with(|| a.dns_name.cmp(&b.dns_name)));
    Ok(peers)
}

/// What one `tailscale ping` told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingResult {
    /// A pong came back.
    pub ok: bool,
    /// Round trip in milliseconds.
    pub latency_ms: Option<f64>,
    /// `ip:port` when direct, `DERP(region)` when relayed.
    pub path: Option<String>,
    /// Whether the path is direct.
    pub direct: Option<bool>,
    /// Why there was no pong.
    pub error: Option<String>,
}

impl PingResult {
    fn failed(error: impl Into<String>) -> PingResult {
        PingResult { ok: false, latency_ms: None, path: None, direct: None, error: Some(error.into()) }
    }
}

/// Reads `tailscale ping --c 1` output (stdout, then stderr); `exit_ok` is the exit status.
pub fn parse_ping(output: &str, exit_ok: bool) -> PingResult {
    for line in output.lines() {
        if let Some(pong) = parse_pong(line.trim()) {
            return pong;
        }
    }
    let last = output.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("");
    let known_failure = last.contains("timed out") || last.contains("no reply");
    let error = match (last.is_empty(), known_failure, exit_ok) {
        (true, _, true) => "tailscale ping printed nothing".to_string(),
        (true, _, false) => "tailscale ping failed without output".to_string(),
        (false, true, _) | (false, false, false) => last.to_string(),
        (false, false, true) => format!("unrecognised tailscale ping output: {last}"),
    };
    PingResult::failed(truncate(&error))
}

/// `pong from NAME (IP) via PATH in LATENCY`.
fn parse_pong(line: &str) -> Option<PingResult> {
    let rest = line.strip_prefix("pong from ")?;
    let (before, latency) = rest.rsplit_once(" in ")?;
    let (_, path) = before.rsplit_once(" via ")?;
    let latency_ms = parse_go_duration_ms(latency.trim())?;
    let path = path.trim();
    let direct = !path.starts_with("DERP(");
    Some(PingResult {
        ok: true,
        latency_ms: Some(latency_ms),
        path: Some(path.to_string()),
        direct: Some(direct),
        error: None,
    })
}

/// A Go `time.Duration` string (`2ms`, `1.5s`, `1m2s`, `850µs`, `0s`) in milliseconds.
fn parse_go_duration_ms(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-6,
            "us" | "µs" | "μs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    Some(total)
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_LEN) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The row of one peer.
pub fn peer_row(ts: i64, peer: &Peer, ping: &PingResult) -> ProbeRow {
    let target = if peer.host_name.is_empty() { &peer.dns_name } else { &peer.host_name };
    let mut row = ProbeRow::new(ts, "tailscale", target, ping.ok);
    row.latency_ms = ping.latency_ms;
    row.path = ping.path.clone();
    row.error = ping.error.clone();
    row.attr("ip", peer.ips.first().cloned().unwrap_or_default());
    row.attr("dns_name", peer.dns_name.as_str());
    row.attr("os", peer.os.as_str());
    row.attr("relay", peer.relay.as_str());
    row.attr("cur_addr", peer.cur_addr.as_str());
    row.attr("online", peer.online.to_string());
    row.attr("tags", peer.tags.join(","));
    if let Some(direct) = ping.direct {
        row.attr("route", if direct { "direct" } else { "relayed" });
    }
    row
}

/// Why a round could not run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Availability {
    Unknown,
    Up,
    Down(String),
}

/// The Tailscale prober.
#[derive(Debug)]
pub struct TailscaleSource {
    config: TailscaleConfig,
    ctx: SourceContext,
    state: Availability,
}

impl TailscaleSource {
    /// A source that emits through `ctx`.
    pub fn new(config: TailscaleConfig, ctx: SourceContext) -> Self {
        TailscaleSource { config, ctx, state: Availability::Unknown }
    }

    /// Probes every interval until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), SourceError> {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        info!(
            path = %self.config.tailscale_path.display(),
            interval = ?self.config.interval,
            "tailscale probes started"
        );
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            // Dropping the round on cancel kills the running pings (kill_on_drop).
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                r = self.tick() => { r?; }
            }
        }
    }

    /// One round: status, pings, one batch. Returns the rows emitted (for tests).
    pub(crate) async fn tick(&mut self) -> Result<usize, SourceError> {
        let peers = match self.status().await {
            Ok(peers) => {
                self.set_state(Availability::Up);
                peers
            }
            Err(reason) => {
                self.set_state(Availability::Down(reason));
                return Ok(0);
            }
        };
        let rows = self.probe_all(peers).await;
        if rows.is_empty() {
            return Ok(0);
        }
        probe::emit(&self.ctx, SOURCE, &rows).await?;
        Ok(rows.len())
    }

    /// Logs and counts only changes, so an absent Tailscale costs one line, not one per tick.
    fn set_state(&mut self, new: Availability) {
        if new == self.state {
            return;
        }
        match &new {
            Availability::Up => {
                if self.state != Availability::Unknown {
                    info!("tailscale is available again; probing peers");
                }
            }
            Availability::Down(reason) => {
                Stats::add(&self.ctx.source_stats(SOURCE).errors, 1);
                warn!(
                    %reason,
                    path = %self.config.tailscale_path.display(),
                    "tailscale unavailable; the source stays idle and re-checks every interval"
                );
            }
            Availability::Unknown => {}
        }
        self.state = new;
    }

    async fn status(&self) -> Result<Vec<Peer>, String> {
        let mut cmd = Command::new(&self.config.tailscale_path);
        cmd.args(["status", "--json"]);
        let out = run_command(cmd, self.config.timeout + PING_GRACE).await?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let last = text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no output");
            return Err(truncate(&format!("tailscale status failed ({}): {last}", out.status)));
        }
        parse_status(&out.stdout).map_err(|e| truncate(&e.to_string()))
    }

    async fn probe_all(&self, peers: Vec<Peer>) -> Vec<ProbeRow> {
        // Peers named in the config but missing from the status get a failed row, so a
        // peer removed from the tailnet does not just vanish from the data.
        let mut rows = Vec::new();
        let selected: Vec<Peer> = match &self.config.peers {
            None => peers,
            Some(wanted) => {
                let mut chosen = Vec::new();
                for w in wanted {
                    match peers.iter().find(|p| p.matches(w)) {
                        Some(p) => chosen.push(p.clone()),
                        None => {
                            let mut row = ProbeRow::new(now_micros(), "tailscale", w, false);
                            row.error = Some("peer not in tailscale status".to_string());
                            rows.push(row);
                        }
                    }
                }
                chosen
            }
        };
        let limit = Arc::new(Semaphore::new(self.config.concurrency));
        let mut pings = JoinSet::new();
        for (i, peer) in selected.into_iter().enumerate() {
            let (limit, path, timeout) = (Arc::clone(&limit), self.config.tailscale_path.clone(), self.config.timeout);
            pings.spawn(async move {
                let ts = now_micros();
                let result = if !peer.online {
                    PingResult::failed("peer offline")
                } else {
                    match limit.acquire().await {
                        Ok(_permit) => ping(path, timeout, peer.ping_target()).await,
                        Err(_) => PingResult::failed("probe cancelled"),
                    }
                };
                (i, peer_row(ts, &peer, &result))
            });
        }
        let mut done = Vec::new();
        while let Some(joined) = pings.join_next().await {
            match joined {
                Ok(r) => done.push(r),
                Err(e) => warn!(error = %e, "tailscale ping task failed"),
            }
        }
        done.sort_by_key(|(i, _)| *i);
        let stats = self.ctx.source_stats(SOURCE);
        Stats::add(&stats.read, done.len() as u64);
        rows.extend(done.into_iter().map(|(_, r)| r));
        rows
    }
}

async fn ping(path: PathBuf, timeout: Duration, target: &str) -> PingResult {
    let mut cmd = Command::new(path);
    cmd.args(["ping", "--c", "1", "--timeout"]).arg(format!("{}ms", timeout.as_millis())).arg(target);
    match run_command(cmd, timeout + PING_GRACE).await {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            parse_ping(&text, out.status.success())
        }
        Err(e) => PingResult::failed(e),
    }
}

/// Runs a command to completion with a deadline; the child is killed if it overruns.
async fn run_command(mut cmd: Command, limit: Duration) -> Result<std::process::Output, String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    match tokio::time::timeout(limit, cmd.output()).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Err("tailscale binary not found".to_string()),
        Ok(Err(e)) => Err(format!("cannot run tailscale: {e}")),
        Err(_) => Err(format!("tailscale gave no answer within {}", Dur(limit))),
    }
}

#[cfg(test)]
mod tests;
