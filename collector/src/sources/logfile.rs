//! Line-oriented log files turned into one catalog table: `/var/log/ufw.log` →
//! `firewall`, `/var/log/fail2ban.log` → `bans`.
//!
//! Files are followed with [`crate::tail`] (rotation-safe, fingerprinted); each batch of
//! lines is parsed by a [`LineParser`], and the rows are spooled together with the
//! tailer's new state as one group ([`SourceContext::emit_with_state`]): a restart, clean
//! or `kill -9`, neither skips nor repeats a line. A line that does not
//! parse is never dropped: it becomes a `logs` row with source `<name>-unparsed` and the
//! raw text (exact bytes hex-encoded when they are not UTF-8), counted in `parse_errors`.

use arrow_array::RecordBatch;
use lake_format::rows::now_micros;
use lake_format::Table;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::fail2ban::{self, BansRows};
use super::tailed::TailReport;
use super::ufw::{self, FirewallRows};
use super::unparsed::UnparsedRows;
use super::{Emitted, SourceContext, SourceError};
use crate::stats::Stats;
use crate::tail::{TailConfig, TailState, Tailer};

/// Lines read per batch at most, and how long a batch may wait for more.
const BATCH_LINES: usize = 5000;
const BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The tail settings of a `paths` list (`None` when empty: no file mode).
pub fn tail_config(
    section: &str,
    paths: Vec<String>,
    start_at: crate::tail::StartAt,
) -> anyhow::Result<Option<TailConfig>> {
    if paths.is_empty() {
        return Ok(None);
    }
    for (i, p) in paths.iter().enumerate() {
        glob::Pattern::new(p).map_err(|e| anyhow::anyhow!("{section}.paths[{i}] = {p:?}: {e}"))?;
    }
    Ok(Some(TailConfig {
        patterns: paths,
        start_at,
        max_line_bytes: crate::tail::DEFAULT_MAX_LINE_BYTES,
        poll_interval: std::time::Duration::from_millis(500),
    }))
}

/// What a line is, for the table the source writes.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A row was added.
    Row,
    /// A valid line that is not an event (fail2ban's "Filter added", …): read, no row.
    NotAnEvent,
}

/// Parses lines of one format into rows of one table.
pub trait LineParser: Send + std::fmt::Debug {
    /// Adds the row of `line` (read at `read_ts`), or says why it is not one.
    fn push(&mut self, node: &str, line: &str, read_ts: i64) -> Result<Parsed, String>;
    /// The table written.
    fn table(&self) -> Table;
    /// The batch of rows pushed since the last call.
    fn finish(&mut self) -> Result<RecordBatch, arrow_schema::ArrowError>;
}

/// `ufw.log` lines (syslog header + kernel message).
#[derive(Debug)]
pub struct UfwLines {
    rows: FirewallRows,
    tz: jiff::tz::TimeZone,
}

impl UfwLines {
    /// Parser for a file whose classic syslog timestamps are in `tz`.
    pub fn new(tz: jiff::tz::TimeZone) -> Self {
        UfwLines { rows: FirewallRows::new(), tz }
    }
}

impl LineParser for UfwLines {
    fn push(&mut self, node: &str, line: &str, read_ts: i64) -> Result<Parsed, String> {
        let ev = ufw::parse(line).map_err(|e| e.to_string())?;
        let ts = ev.time.and_then(|t| t.resolve(&self.tz, read_ts)).unwrap_or(read_ts);
        self.rows.push(node, ts, &ev);
        Ok(Parsed::Row)
    }
    fn table(&self) -> Table {
        Table::Firewall
    }
    fn finish(&mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        self.rows.finish()
    }
}

/// `fail2ban.log` lines.
#[derive(Debug)]
pub struct Fail2banLines {
    rows: BansRows,
    tz: jiff::tz::TimeZone,
}

impl Fail2banLines {
    /// Parser for a log written in `tz`.
    pub fn new(tz: jiff::tz::TimeZone) -> Self {
        Fail2banLines { rows: BansRows::new(), tz }
    }
}

impl LineParser for Fail2banLines {
    fn push(&mut self, node: &str, line: &str, read_ts: i64) -> Result<Parsed, String> {
        match fail2ban::parse(line, &self.tz).map_err(|e| e.to_string())? {
            Some(ev) => {
                self.rows.push(node, read_ts, &ev);
                Ok(Parsed::Row)
            }
            None => Ok(Parsed::NotAnEvent),
        }
    }
    fn table(&self) -> Table {
        Table::Bans
    }
    fn finish(&mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        self.rows.finish()
    }
}

/// A followed set of log files of one format.
#[derive(Debug)]
pub struct LogFileSource<P: LineParser> {
    name: &'static str,
    tail: TailConfig,
    parser: P,
    ctx: SourceContext,
}

impl<P: LineParser> LogFileSource<P> {
    /// A source named `name` (its saved state and counters) reading `tail` with `parser`.
    pub fn new(name: &'static str, tail: TailConfig, parser: P, ctx: SourceContext) -> Self {
        LogFileSource { name, tail, parser, ctx }
    }

    /// Follows the files until `cancel`.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let LogFileSource { name, tail, mut parser, ctx } = self;
        let stats = ctx.source_stats(name);
        let state: Option<TailState> = ctx.load_state(name).await?;
        let mut tailer = Tailer::new(tail.clone(), state)
            .map_err(|e| SourceError::Start { source_name: name, reason: e.to_string() })?;
        info!(source = name, patterns = ?tail.patterns, "log file source started");
        let counters = tailer.counters();
        let mut reported = TailReport::default();
        let mut unparsed = UnparsedRows::new(name);
        while !cancel.is_cancelled() {
            let lines = tailer
                .read_batch(BATCH_LINES, BATCH_WAIT, &cancel)
                .await
                .map_err(|e| SourceError::Start { source_name: name, reason: e.to_string() })?;
            reported.forward(name, &counters, &stats);
            if lines.is_empty() {
                continue;
            }
            let read_ts = now_micros();
            let (mut read, mut bad) = (0u64, 0u64);
            for line in lines.iter() {
                read += 1;
                let parsed = match std::str::from_utf8(line.bytes) {
                    Ok(text) if !line.truncated => parser.push(&ctx.node, text, read_ts),
                    Ok(_) => Err("line longer than max_line_bytes, cut".to_string()),
                    Err(_) => Err("invalid UTF-8".to_string()),
                };
                if let Err(error) = parsed {
                    bad += 1;
                    let file = line.file.to_string_lossy();
                    unparsed.push(&ctx.node, line.bytes, &file, &error, line.truncated, read_ts);
                }
            }
            Stats::add(&stats.read, read);
            Stats::add(&stats.parse_errors, bad);
            let encode = |e: arrow_schema::ArrowError| SourceError::Encode { source_name: name, error: e.to_string() };
            let rows = parser.finish().map_err(encode)?;
            let raw = unparsed.finish().map_err(encode)?;
            // Empty batches are left out; the state is saved even if both are.
            let batches = vec![(parser.table(), rows), (Table::Logs, raw)];
            if ctx.emit_with_state(name, batches, &tailer.state(), &cancel).await? == Emitted::Cancelled {
                // Not spooled, nor the state: these lines are read again on restart.
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ufw_file_lines_take_their_syslog_time_and_bad_lines_say_why() {
        let tz = jiff::tz::TimeZone::UTC;
        let mut p = UfwLines::new(tz);
        let line = "2026-11-22T10:15:01.123456+00:00 salem kernel: [UFW BLOCK] IN=eth0 OUT= MAC=00:00 SRC=203.0.113.7 DST=198.51.100.2 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=4242 DF PROTO=TCP SPT=54321 DPT=22 WINDOW=64240 RES=0x00 SYN URGP=0";
        assert_eq!(p.push("n", line, 5).unwrap(), Parsed::Row);
        assert!(p.push("n", "Nov 22 10:15:01 salem sshd[1]: hello", 5).is_err());
        let b = p.finish().unwrap();
        assert_eq!(b.num_rows(), 1);
        let ts = b.column(0).as_any().downcast_ref::<arrow_array::TimestampMicrosecondArray>().unwrap();
        assert_eq!(ts.value(0), 1_795_342_501_123_456); // 2026-11-22T10:15:01.123456Z
    }

    #[test]
    fn fail2ban_lines_that_are_not_events_give_no_row() {
        let mut p = Fail2banLines::new(jiff::tz::TimeZone::UTC);
        let ban = "2026-11-22 10:15:03,002 fail2ban.actions        [812]: NOTICE  [sshd] Ban 203.0.113.7";
        let other = "2026-11-22 08:00:00,000 fail2ban.filter         [812]: INFO    Added logfile: '/var/log/auth.log'";
        assert_eq!(p.push("n", ban, 1).unwrap(), Parsed::Row);
        assert_eq!(p.push("n", other, 1).unwrap(), Parsed::NotAnEvent);
        assert_eq!(p.finish().unwrap().num_rows(), 1);
    }
}
