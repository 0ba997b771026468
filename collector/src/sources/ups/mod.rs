//! `[[ups]]`: a UPS through NUT (Network UPS Tools): the collector asks `upsd` — on the
//! node the UPS is plugged into, or any node that can reach it — for the UPS's variables
//! every `interval` over NUT's network protocol ([`nut`], port 3493), so the home site's
//! power is on the same dashboards as everything else.
//!
//! Out, as one droppable spool group per poll (a sample exists only now):
//! - `metrics`, labels `ups = <name>`: every variable whose value is a number as
//!   `nut_<variable>` with dots as underscores (`battery.charge` → `nut_battery_charge`,
//!   `battery.runtime` → `nut_battery_runtime` in seconds, `ups.load` → `nut_ups_load`,
//!   `input.voltage` → `nut_input_voltage`, …; not the driver's own `driver.*`);
//!   `nut_ups_status{flag}` = 1 for each flag
//!   of `ups.status` (`OL` on line, `OB` on battery, `LB` low battery, `RB` replace
//!   battery, `CHRG`, `DISCHRG`, `BYPASS`, `OVER`, `TRIM`, `BOOST`, `FSD` forced
//!   shutdown, `OFF`, `CAL`, `HB`) and 0 for each of those it lacks, so "was it on battery
//!   at 03:10" is one query; `nut_up` = 1 when the poll got fresh variables, 0 when upsd
//!   could not be reached or answered an error (`DATA-STALE`: the driver lost the UPS).
//! - `logs` (source `ups`, unit = the UPS's name, ident `upsd`): one row each time the
//!   status changes — on battery (warning), low battery or forced shutdown (critical),
//!   back on line (notice), any other change (info) — with the old and new status, charge
//!   and runtime in `attrs`; and, at start, the status the UPS is in when it needs a look
//!   (on battery, low battery, replace battery, overload, bypass, off, calibrating). `WAIT`
//!   (the driver has not read the UPS yet) is not a status: it is neither reported nor
//!   compared with. These are the power events the `events` view shows beside everything else.
//! - a failed poll: `nut_up = 0`, a `logs` note (source `ups`, priority err), counted in
//!   `errors` and logged (first, every 10th in a row, recovery). The connection is kept
//!   between polls and opened again after a failure.
//!
//! Counters: source `ups/<name>`.

pub mod nut;
#[cfg(test)]
mod tests;

use std::time::Duration;

use anyhow::ensure;
use lake_format::logs::{LogRow, LogsBuilder};
use lake_format::rows::{now_micros, MetricsBuilder};
use lake_format::units::Dur;
use lake_format::Table;
use serde::Deserialize;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::notes::{FailureLog, Note, PRIORITY_ERR};
use super::{Encoded, SourceContext, SourceError};
use crate::stats::Stats;
use nut::{Connection, NutError};

/// `source` of the `logs` rows.
pub const SOURCE: &str = "ups";
/// `ident` of the status-change rows.
const IDENT: &str = "upsd";
/// The flags of `ups.status` that get a `nut_ups_status` series even when absent.
pub const FLAGS: [&str; 14] =
    ["OL", "OB", "LB", "HB", "RB", "CHRG", "DISCHRG", "BYPASS", "CAL", "OFF", "OVER", "TRIM", "BOOST", "FSD"];
/// syslog priorities of status changes.
const PRIORITY_CRIT: i64 = 2;
const PRIORITY_WARNING: i64 = 4;
const PRIORITY_NOTICE: i64 = 5;
const PRIORITY_INFO: i64 = 6;

const fn default_interval() -> Dur {
    Dur(Duration::from_secs(10))
}
const fn default_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_server() -> String {
    "127.0.0.1:3493".into()
}

/// One `[[ups]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpsFile {
    /// The UPS's name on the NUT server (`[name]` in its ups.conf). Required.
    name: String,
    /// upsd's address, `host:port`. Default `127.0.0.1:3493`.
    #[serde(default = "default_server")]
    server: String,
    /// Time between two polls. Default 10s.
    #[serde(default = "default_interval")]
    interval: Dur,
    /// Time one poll (connect included) may take. Default 5s; at most `interval`.
    #[serde(default = "default_timeout")]
    timeout: Dur,
}

/// A validated `[[ups]]` entry.
#[derive(Debug, Clone)]
pub struct UpsConfig {
    /// The UPS's name on the NUT server, the `ups` label and the rows' `unit`.
    pub name: String,
    /// Counters name: `ups/<name>`.
    pub source: &'static str,
    /// upsd's `host:port`.
    pub server: String,
    /// Time between two polls.
    pub interval: Duration,
    /// Time one poll may take.
    pub timeout: Duration,
}

/// Validates every entry; names must be unique.
pub(crate) fn validate_all(files: Vec<UpsFile>) -> anyhow::Result<Vec<UpsConfig>> {
    super::validate_named("ups", files, |f| f.name.clone(), |f, section| f.validate(section))
}

impl UpsFile {
    fn validate(self, section: &str) -> anyhow::Result<UpsConfig> {
        // NUT's own rule for UPS names, and no byte that would break a request line.
        ensure!(
            !self.name.is_empty()
                && self.name.len() <= 63
                && self.name.bytes().all(|c| c.is_ascii_alphanumeric() || b"_-.".contains(&c)),
            "{section}.name: the UPS's name in the NUT server's ups.conf: letters, digits, '_', '-', '.', at most 63"
        );
        let (host, port) = self.server.rsplit_once(':').unwrap_or(("", ""));
        ensure!(
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) && !self.server.contains(char::is_whitespace),
            "{section}.server = {:?}: use host:port, e.g. \"127.0.0.1:3493\" or \"nas.lan:3493\"",
            self.server
        );
        super::check_schedule(section, self.interval.0, self.timeout.0, "")?;
        Ok(UpsConfig {
            source: super::leak_name(format!("ups/{}", self.name)),
            name: self.name,
            server: self.server,
            interval: self.interval.0,
            timeout: self.timeout.0,
        })
    }
}

/// One line describing an entry, for `lake-collector check`.
pub fn describe(c: &UpsConfig) -> String {
    format!("{} at {} every {:?}", c.name, c.server, c.interval)
}

/// The rows of one poll.
#[derive(Debug, Default)]
pub struct PollRows {
    /// `metrics` and `logs` records.
    pub records: Vec<Encoded>,
    /// Variables read.
    pub vars: u64,
    /// Why the poll failed, if it did.
    pub failure: Option<String>,
}

/// What the source remembers between polls: the last status seen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    status: Option<String>,
}

/// Turns one poll's result into rows and updates `seen` (pure: `ts` µs is given).
pub fn rows_of_poll(
    config: &UpsConfig,
    node: &str,
    ts: i64,
    result: Result<Vec<(String, String)>, NutError>,
    seen: &mut Seen,
) -> Result<PollRows, SourceError> {
    let name = config.source;
    let encode = |e: arrow_schema::ArrowError| SourceError::Encode { source_name: name, error: e.to_string() };
    let mut out = PollRows::default();
    let mut metrics = MetricsBuilder::new();
    let mut logs = LogsBuilder::new();
    let ups = [("ups", config.name.as_str())];
    match result {
        Ok(vars) => {
            out.vars = vars.len() as u64;
            let var = |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
            // driver.* are the driver's settings and version, not the UPS's state.
            for (k, v) in vars.iter().filter(|(k, _)| !k.starts_with("driver.")) {
                if let Some(x) = number(v) {
                    metrics.push(ts, node, &format!("nut_{}", k.replace(['.', '-'], "_")), x, &ups);
                }
            }
            let status = var("ups.status").map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "));
            if let Some(status) = &status {
                let flags: Vec<&str> = status.split(' ').collect();
                let mut all: Vec<&str> = FLAGS.to_vec();
                all.extend(flags.iter().filter(|f| !FLAGS.contains(f) && !f.is_empty()));
                for flag in all {
                    let on = if flags.contains(&flag) { 1.0 } else { 0.0 };
                    metrics.push(ts, node, "nut_ups_status", on, &[ups[0], ("flag", flag)]);
                }
            }
            metrics.push(ts, node, "nut_up", 1.0, &ups);
            // `WAIT`: the driver has not read the UPS yet; not a status to compare with.
            if let Some(status) = status.filter(|s| s != "WAIT") {
                if let Some((priority, message)) = change(&config.name, seen.status.as_deref(), &status) {
                    let previous = seen.status.clone().unwrap_or_default();
                    let attrs = [
                        ("status", status.as_str()),
                        ("previous_status", previous.as_str()),
                        ("battery_charge", var("battery.charge").unwrap_or("")),
                        ("battery_runtime", var("battery.runtime").unwrap_or("")),
                        ("server", config.server.as_str()),
                    ];
                    let row = LogRow {
                        ts,
                        host: node,
                        source: SOURCE,
                        unit: Some(&config.name),
                        ident: Some(IDENT),
                        priority: Some(priority),
                        message: Some(&message),
                        ..LogRow::default()
                    };
                    logs.push(&row, attrs.into_iter().filter(|(_, v)| !v.is_empty()));
                }
                seen.status = Some(status);
            }
        }
        Err(e) => {
            metrics.push(ts, node, "nut_up", 0.0, &ups);
            let f = format!("UPS {} at {}: {e}", config.name, config.server);
            Note {
                ts,
                node,
                source: SOURCE,
                ident: &config.name,
                priority: PRIORITY_ERR,
                message: &f,
                attrs: &[("server", config.server.as_str())],
            }
            .push_to(&mut logs);
            out.failure = Some(f);
        }
    }
    out.records.push(SourceContext::encode_batch(name, Table::Metrics, &metrics.finish())?);
    let logs = logs.finish().map_err(encode)?;
    out.records.extend(SourceContext::encode_batches(name, Table::Logs, &[logs])?);
    Ok(out)
}

/// A variable's value as a number, when it is one (`"100"`, `"231.5"`); NUT writes
/// everything as text, most of it numbers.
fn number(v: &str) -> Option<f64> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit() || b".-+eE".contains(&c)) {
        return None;
    }
    v.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Flags that make a status worth a row even at start.
const TROUBLE: [&str; 8] = ["OB", "LB", "FSD", "RB", "OVER", "BYPASS", "OFF", "CAL"];

/// The status-change row for `previous` → `now`: its priority and message, or `None`
/// when nothing is worth a row (no change, or an untroubled on-line status at start).
fn change(ups: &str, previous: Option<&str>, now: &str) -> Option<(i64, String)> {
    let has = |s: Option<&str>, f: &str| s.is_some_and(|s| s.split(' ').any(|x| x == f));
    if previous == Some(now)
        || (previous.is_none() && has(Some(now), "OL") && !TROUBLE.iter().any(|f| has(Some(now), f)))
    {
        return None;
    }
    let (priority, text) = if has(Some(now), "FSD") {
        (PRIORITY_CRIT, "forced shutdown")
    } else if has(Some(now), "LB") && !has(previous, "LB") {
        (PRIORITY_CRIT, "low battery")
    } else if has(Some(now), "OB") && !has(previous, "OB") {
        (PRIORITY_WARNING, "on battery")
    } else if has(Some(now), "OL") && has(previous, "OB") {
        (PRIORITY_NOTICE, "back on line power")
    } else {
        (PRIORITY_INFO, "status changed")
    };
    Some(match previous {
        Some(p) => (priority, format!("UPS {ups} {text}: {now} (was {p})")),
        None => (priority, format!("UPS {ups} {text} at start: {now}")),
    })
}

/// The running `[[ups]]` entry.
#[derive(Debug)]
pub struct UpsSource {
    config: UpsConfig,
    ctx: SourceContext,
}

impl UpsSource {
    /// A source for one entry.
    pub fn new(config: UpsConfig, ctx: SourceContext) -> Self {
        UpsSource { config, ctx }
    }

    /// Polls every interval until `cancel`.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let UpsSource { config, ctx } = self;
        let stats = ctx.source_stats(config.source);
        info!(ups = %config.name, server = %config.server, interval = ?config.interval, "UPS polling started");
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let (mut failures, mut seen, mut conn) = (FailureLog::default(), Seen::default(), None);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let ts = now_micros();
            let result = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                r = tokio::time::timeout(config.timeout, poll(&mut conn, &config)) => {
                    r.unwrap_or(Err(NutError::Timeout(config.timeout)))
                }
            };
            if result.as_ref().is_err_and(|e| !e.keeps_connection()) {
                conn = None;
            }
            let rows = rows_of_poll(&config, &ctx.node, ts, result, &mut seen)?;
            Stats::add(&stats.read, rows.vars);
            failures.record(config.source, rows.failure.as_deref(), &stats.errors);
            ctx.emit_encoded_droppable(config.source, rows.records).await?;
        }
    }
}

/// One `LIST VAR`, on the kept connection or a new one.
async fn poll(conn: &mut Option<Connection>, config: &UpsConfig) -> Result<Vec<(String, String)>, NutError> {
    if conn.is_none() {
        *conn = Some(Connection::connect(&config.server).await?);
    }
    match conn.as_mut() {
        Some(c) => c.list_vars(&config.name).await,
        None => Err(NutError::Io("no connection".into())),
    }
}
