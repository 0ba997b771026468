//! Line-oriented log files turned into one catalog table: `/var/log/ufw.log` →
//! `firewall`, `/var/log/fail2ban.log` → `bans`. (Any other text log is a `[[log_file]]`
//! entry: [`super::log_file`].)
//!
//! This module is their parsers ([`UfwLines`], [`Fail2banLines`]); files are followed by
//! the shared [`super::tailed`] loop (rotation-safe, fingerprinted; rows and the tailer's
//! new state spooled as one group: a restart, clean or `kill -9`, neither skips nor
//! repeats a line). A line that does not parse is never dropped: it becomes a `logs` row
//! with source `<name>-unparsed` and the raw text (exact bytes hex-encoded when they are
//! not UTF-8), counted in `parse_errors`.

use std::time::Duration;

use arrow_array::RecordBatch;
use lake_format::units::{ByteSize, Dur};
use lake_format::Table;
use tokio_util::sync::CancellationToken;

use super::fail2ban::{self, BansRows};
pub use super::tailed::{LineParser, Parsed};
use super::ufw::{self, FirewallRows};
use super::{tailed, Encoded, SourceContext, SourceError};
use crate::tail::TailConfig;

/// Lines read per batch at most, and how long a batch may wait for more.
const BATCH_LINES: usize = 5000;
const BATCH_WAIT: Duration = Duration::from_millis(500);

/// The tail settings of a `paths` list (`None` when empty: no file mode).
pub fn tail_config(
    section: &str,
    paths: Vec<String>,
    start_at: crate::tail::StartAt,
) -> anyhow::Result<Option<TailConfig>> {
    if paths.is_empty() {
        return Ok(None);
    }
    let max_line = ByteSize(crate::tail::DEFAULT_MAX_LINE_BYTES as u64);
    tailed::tail_config(section, paths, start_at, max_line, Dur(Duration::from_millis(500))).map(Some)
}

fn text(line: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(line).map_err(|_| "invalid UTF-8".to_string())
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

    /// The rows pushed since the last call.
    pub fn finish(&mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        self.rows.finish()
    }
}

impl LineParser for UfwLines {
    fn name(&self) -> &'static str {
        "ufw"
    }
    fn push(&mut self, node: &str, line: &[u8], read_ts: i64) -> Result<Parsed, String> {
        let ev = ufw::parse(text(line)?).map_err(|e| e.to_string())?;
        let ts = ev.time.and_then(|t| t.resolve(&self.tz, read_ts)).unwrap_or(read_ts);
        self.rows.push(node, ts, &ev);
        Ok(Parsed::Row)
    }
    fn records(&mut self, source: &'static str) -> Result<Vec<Encoded>, SourceError> {
        tailed::table_records(source, Table::Firewall, self.finish())
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

    /// The rows pushed since the last call.
    pub fn finish(&mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        self.rows.finish()
    }
}

impl LineParser for Fail2banLines {
    fn name(&self) -> &'static str {
        "fail2ban"
    }
    fn push(&mut self, node: &str, line: &[u8], read_ts: i64) -> Result<Parsed, String> {
        match fail2ban::parse(text(line)?, &self.tz).map_err(|e| e.to_string())? {
            Some(ev) => {
                self.rows.push(node, read_ts, &ev);
                Ok(Parsed::Row)
            }
            None => Ok(Parsed::NotAnEvent),
        }
    }
    fn records(&mut self, source: &'static str) -> Result<Vec<Encoded>, SourceError> {
        tailed::table_records(source, Table::Bans, self.finish())
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
        let LogFileSource { name, tail, parser, ctx } = self;
        let config = tailed::TailedConfig {
            source: name,
            tail,
            batch_lines: BATCH_LINES,
            batch_wait: BATCH_WAIT,
            gather: Duration::ZERO,
            multiline: None,
        };
        tailed::TailedSource::new(config, parser, ctx).run(cancel).await
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
        assert_eq!(p.push("n", line.as_bytes(), 5).unwrap(), Parsed::Row);
        assert!(p.push("n", b"Nov 22 10:15:01 salem sshd[1]: hello", 5).is_err());
        assert_eq!(p.push("n", b"bad \xff", 5).unwrap_err(), "invalid UTF-8");
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
        assert_eq!(p.push("n", ban.as_bytes(), 1).unwrap(), Parsed::Row);
        assert_eq!(p.push("n", other.as_bytes(), 1).unwrap(), Parsed::NotAnEvent);
        assert_eq!(p.finish().unwrap().num_rows(), 1);
    }
}
