//! One tail-driven source: the loop every source on the [`crate::tail`] reader shares
//! (Caddy access logs, `[[json_file]]`, ufw and fail2ban log files), around the
//! [`LineParser`] that is all each of them adds.
//!
//! In: a [`TailedConfig`] (the tail settings, checked by [`tail_config`], and how lines
//! are batched) and a parser. Out: one held spool group per read batch — the parser's
//! records, the `logs` rows of the lines it could not parse, and the tailer's new
//! position as the source's state ([`SourceContext::emit_encoded`]). Rows and position
//! are durable together, so a restart (clean or `kill -9`) neither skips nor repeats a
//! line; while the spool is full the source pauses and its position holds.
//!
//! The same for every tailed source (they had each grown their own copy, and drifted):
//! - **Config checks** ([`tail_config`]): valid glob patterns, `max_line_bytes` between
//!   1 KiB and 64 MiB, a poll interval, `batch_lines` between 1 and 1,000,000.
//! - **Unparsed lines** ([`ParsedLines`]): a line cut at `max_line_bytes` never reaches
//!   the parser; it and every line the parser refuses become a `logs` row with source
//!   `<parser name>-unparsed`, the raw text (its exact bytes hex-encoded when they are not
//!   UTF-8), the file, why, and `truncated` — counted in `parse_errors`, never dropped.
//! - **Counters**: `read` per line, `parse_errors` per unparsed line, and the tailer's
//!   own counters forwarded by [`TailReport`]: read and decode `errors` → `errors`;
//!   `lost` (a position found in no file, the rest of a `.gz` that stops decompressing)
//!   → `errors` and `dropped`, with a warning; `rotations` → `rotations`;
//!   `rolled_resumed` + `rolled_read` → `rolled_files`, with an info line; `truncations`
//!   → a warning (the lines stay visible: they are read again).
//! - **Batching**: a batch waits up to `batch_wait` for its first line, then keeps
//!   reading for `gather` more (Caddy: `batch_wait`, so one batch per `batch_wait` rather
//!   than per poll, since each costs an encode, an fsync and a request; the others: none)
//!   or until `batch_lines`. Lines are parsed as each poll hands them out, so only one
//!   poll's lines are held raw.
//! - **Multi-line records** (`multiline`, [`super::multiline`]): lines are joined into
//!   records before the parser sees them; the records still pending are saved in the
//!   state beside the tailer's position ([`TailedState`]), so that they are neither lost
//!   nor repeated by a restart.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::ensure;
use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use lake_format::rows::now_micros;
use lake_format::units::{ByteSize, Dur};
use lake_format::Table;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::multiline::{Joiner, MultilineConfig, Pending, Record};
use super::unparsed::UnparsedRows;
use super::{Emitted, Encoded, SourceContext, SourceError};
use crate::stats::{SourceStats, Stats};
use crate::tail::{StartAt, TailConfig, TailCounters, TailState, Tailer};

/// Largest `max_line_bytes` a tailed source accepts: a file's reader holds up to one such
/// line plus a read chunk.
const MAX_LINE_LIMIT: u64 = 64 << 20;

/// Where files found on the very first start begin, unless a section says: the beginning.
pub(crate) const fn default_start_at() -> StartAt {
    StartAt::Beginning
}
/// Lines longer than this are cut and kept raw, unless a section says: 1 MiB.
pub(crate) const fn default_max_line() -> ByteSize {
    ByteSize(crate::tail::DEFAULT_MAX_LINE_BYTES as u64)
}
/// How often patterns are listed again and idle files polled, unless a section says.
pub(crate) const fn default_poll() -> Dur {
    Dur(Duration::from_millis(500))
}
/// Most lines per batch of `[[json_file]]` and `[[log_file]]` (`[caddy]` has its own).
pub(crate) const fn default_batch_lines() -> usize {
    5000
}
/// Longest wait for a batch's first line, `[[json_file]]` and `[[log_file]]`.
pub(crate) const fn default_batch_wait() -> Dur {
    Dur(Duration::from_millis(500))
}

/// What a line is, for the table the parser writes.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A row was added.
    Row,
    /// A valid line that is not an event (fail2ban's "Filter added", a blank line): read,
    /// no row.
    NotAnEvent,
}

/// What a tailed source adds to the shared loop: how a line becomes rows.
pub trait LineParser: Send + std::fmt::Debug {
    /// Names the `logs` rows of unparsed lines: `<name>-unparsed`.
    fn name(&self) -> &'static str;
    /// Adds the rows of one whole line (never one cut at `max_line_bytes`) read at
    /// `read_ts` (µs), or says why it is not one.
    fn push(&mut self, node: &str, line: &[u8], read_ts: i64) -> Result<Parsed, String>;
    /// The rows pushed since the last call, as spool records whose rows count as
    /// `source`'s (none for no row).
    fn records(&mut self, source: &'static str) -> Result<Vec<Encoded>, SourceError>;
    /// An attribute of every unparsed line after its `file` (`[[json_file]]`: its table).
    fn origin(&self) -> Option<(&'static str, &str)> {
        None
    }
}

/// The tail settings of a section, checked: `section` names it in errors (`caddy`,
/// `json_file[0] ("app")`, `ufw`).
pub(crate) fn tail_config(
    section: &str,
    paths: Vec<String>,
    start_at: StartAt,
    max_line_bytes: ByteSize,
    poll_interval: Dur,
) -> anyhow::Result<TailConfig> {
    for (i, p) in paths.iter().enumerate() {
        glob::Pattern::new(p).map_err(|e| anyhow::anyhow!("{section}.paths[{i}] = {p:?}: {e}"))?;
    }
    let max = check_max_line_bytes(section, max_line_bytes)?;
    ensure!(!poll_interval.0.is_zero(), "{section}.poll_interval must be more than zero");
    Ok(TailConfig { patterns: paths, start_at, max_line_bytes: max, poll_interval: poll_interval.0 })
}

/// Checks a section's `max_line_bytes` (between 1 KiB and 64 MiB): the longest line a
/// reader holds.
pub(crate) fn check_max_line_bytes(section: &str, max_line_bytes: ByteSize) -> anyhow::Result<usize> {
    let max = max_line_bytes.0;
    ensure!(
        (1024..=MAX_LINE_LIMIT).contains(&max),
        "{section}.max_line_bytes = {max_line_bytes}: must be between 1KiB and 64MiB"
    );
    Ok(max as usize)
}

/// Checks a section's `batch_lines`.
pub(crate) fn check_batch_lines(section: &str, batch_lines: usize) -> anyhow::Result<()> {
    ensure!(
        (1..=1_000_000).contains(&batch_lines),
        "{section}.batch_lines = {batch_lines}: must be between 1 and 1000000"
    );
    Ok(())
}

/// A parser's batch of one catalog table as its records (none when it has no row).
pub(crate) fn table_records(
    source: &'static str,
    table: Table,
    batch: Result<RecordBatch, ArrowError>,
) -> Result<Vec<Encoded>, SourceError> {
    let batch = batch.map_err(|e| SourceError::Encode { source_name: source, error: e.to_string() })?;
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    Ok(vec![SourceContext::encode_batch(source, table, &batch)?])
}

/// How a tailed source reads and batches.
#[derive(Debug, Clone)]
pub struct TailedConfig {
    /// Counters and state name.
    pub source: &'static str,
    /// What to tail.
    pub tail: TailConfig,
    /// Most lines per spooled batch.
    pub batch_lines: usize,
    /// Longest wait for the first line of a batch (also how often an idle source looks
    /// at its counters).
    pub batch_wait: Duration,
    /// How long a batch keeps reading after its first line.
    pub gather: Duration,
    /// How lines join into records (`None`: a line is a record).
    pub multiline: Option<MultilineConfig>,
}

/// A tailed source's saved state: the tailer's position and the multi-line records still
/// pending at it (their lines are behind the position). A state saved before multi-line
/// records existed reads as one without any pending.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct TailedState {
    /// The tailer's position.
    #[serde(flatten)]
    pub tail: TailState,
    /// Records begun and not yet emitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Pending>,
}

/// A parser's rows plus the `logs` rows of the lines it could not parse.
#[derive(Debug)]
pub struct ParsedLines<P> {
    pub(crate) parser: P,
    pub(crate) unparsed: UnparsedRows,
    /// Lines that did not parse since the last [`ParsedLines::records`].
    pub(crate) parse_errors: u64,
    /// Joins lines into records, when the source has `multiline`.
    pub(crate) joiner: Option<Joiner>,
}

impl<P: LineParser> ParsedLines<P> {
    /// Lines for `parser`.
    pub fn new(parser: P) -> Self {
        let unparsed = UnparsedRows::new(parser.name());
        ParsedLines { parser, unparsed, parse_errors: 0, joiner: None }
    }

    /// Lines for `parser`, joined into records by `multiline` first when set.
    pub fn with_multiline(parser: P, multiline: Option<MultilineConfig>) -> Self {
        ParsedLines { joiner: multiline.map(Joiner::new), ..Self::new(parser) }
    }

    /// Adds one line read at `read_ts` from `file` (cut at `max_line_bytes` when
    /// `truncated`): the parser's rows, or an unparsed `logs` row. Whether it parsed (with
    /// `multiline`: whether the records it completed did; a line that only joins a
    /// pending record parsed).
    pub fn push(&mut self, node: &str, line: &[u8], file: &str, truncated: bool, read_ts: i64) -> bool {
        let Some(joiner) = self.joiner.as_mut() else { return self.push_record(node, line, file, truncated, read_ts) };
        let mut done = Vec::new();
        joiner.push(file, line, truncated, read_ts, &mut |r| done.push(r));
        self.push_records(node, done)
    }

    /// Emits the multi-line records that waited `max_wait` for a next line, at `now` (µs);
    /// how many.
    pub fn expire(&mut self, node: &str, now: i64) -> usize {
        let Some(joiner) = self.joiner.as_mut() else { return 0 };
        let mut done = Vec::new();
        joiner.expired(now, &mut |r| done.push(r));
        let n = done.len();
        self.push_records(node, done);
        n
    }

    /// Every pending multi-line record, emitted now (the end of a fixture, a benchmark).
    pub fn flush(&mut self, node: &str) -> usize {
        self.expire(node, i64::MAX)
    }

    /// Takes back the multi-line records pending in a saved state: into the joiner, or, when
    /// `multiline` was switched off since, as records complete now. How many were pushed as
    /// complete (to be emitted with the next batch).
    pub fn restore(&mut self, node: &str, pending: Vec<Pending>) -> Result<usize, String> {
        if let Some(j) = self.joiner.as_mut() {
            return j.restore(pending).map(|()| 0);
        }
        let n = pending.len();
        for p in pending {
            let bytes = p.bytes()?;
            self.push_record(node, &bytes, &p.file, false, p.read_ts);
        }
        Ok(n)
    }

    /// The records pending in the joiner, for the saved state.
    pub fn pending(&self) -> Vec<Pending> {
        self.joiner.as_ref().map(Joiner::pending).unwrap_or_default()
    }

    fn push_records(&mut self, node: &str, records: Vec<Record>) -> bool {
        let mut all = true;
        for r in records {
            all &= self.push_record(node, &r.bytes, &r.file, r.truncated, r.read_ts);
        }
        all
    }

    fn push_record(&mut self, node: &str, line: &[u8], file: &str, truncated: bool, read_ts: i64) -> bool {
        let parsed = if truncated {
            Err(format!("line longer than max_line_bytes ({} bytes kept)", line.len()))
        } else {
            self.parser.push(node, line, read_ts)
        };
        let Err(error) = parsed else { return true };
        self.parse_errors += 1;
        let mut origin = vec![("file", file)];
        origin.extend(self.parser.origin());
        self.unparsed.push_from(node, line, &origin, &error, truncated, read_ts);
        false
    }

    /// The parser's records then the unparsed lines' `logs` record, counted as `source`'s;
    /// everything starts empty again.
    pub fn records(&mut self, source: &'static str) -> Result<Vec<Encoded>, SourceError> {
        self.parse_errors = 0;
        let mut records = self.parser.records(source)?;
        records.extend(table_records(source, Table::Logs, self.unparsed.finish())?);
        Ok(records)
    }
}

/// A running tailed source: files of one format followed into rows.
#[derive(Debug)]
pub struct TailedSource<P: LineParser> {
    config: TailedConfig,
    parser: P,
    ctx: SourceContext,
}

impl<P: LineParser> TailedSource<P> {
    /// A source reading `config` with `parser`, writing through `ctx`.
    pub fn new(config: TailedConfig, parser: P, ctx: SourceContext) -> Self {
        TailedSource { config, parser, ctx }
    }

    /// Follows the files until `cancel`; returns early only on a tailer, spool or state
    /// error.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let TailedSource { config, parser, ctx } = self;
        let name = config.source;
        let stats = ctx.source_stats(name);
        let state: Option<TailedState> = ctx.load_state(name).await?;
        let resumed = state.as_ref().map_or(0, |s| s.tail.files.len());
        let (state, pending) = match state {
            Some(s) => (Some(s.tail), s.pending),
            None => (None, Vec::new()),
        };
        let mut tailer = Tailer::new(config.tail.clone(), state)
            .map_err(|e| SourceError::Start { source_name: name, reason: e.to_string() })?;
        info!(source = name, patterns = ?config.tail.patterns, resumed, "tailed source started");
        let counters = tailer.counters();
        let mut reported = TailReport::default();
        let mut lines = ParsedLines::with_multiline(parser, config.multiline.clone());
        let mut restored =
            lines.restore(&ctx.node, pending).map_err(|error| SourceError::State { source_name: name, error })?;
        while !cancel.is_cancelled() {
            let n = read_batch(&config, &mut tailer, &mut lines, &ctx.node, &cancel).await?;
            reported.forward(name, &counters, &stats);
            let expired = lines.expire(&ctx.node, now_micros()) + std::mem::take(&mut restored);
            if n == 0 && expired == 0 {
                continue;
            }
            Stats::add(&stats.read, n as u64);
            Stats::add(&stats.parse_errors, lines.parse_errors);
            let records = lines.records(name)?;
            let state = TailedState { tail: tailer.state(), pending: lines.pending() };
            if ctx.emit_encoded(name, records, Some(&state), &cancel).await? == Emitted::Cancelled {
                // Neither the lines nor the position are spooled: read again on restart.
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Reads one batch into `lines`; how many lines it had.
async fn read_batch<P: LineParser>(
    config: &TailedConfig,
    tailer: &mut Tailer,
    lines: &mut ParsedLines<P>,
    node: &str,
    cancel: &CancellationToken,
) -> Result<usize, SourceError> {
    let mut deadline: Option<Instant> = None;
    let mut n = 0usize;
    loop {
        let wait = match deadline {
            None => config.batch_wait,
            Some(d) => d.saturating_duration_since(Instant::now()),
        };
        let read = tailer
            .read_batch(config.batch_lines - n, wait, cancel)
            .await
            .map_err(|e| SourceError::Start { source_name: config.source, reason: e.to_string() })?;
        let read_ts = now_micros();
        for line in read.iter() {
            lines.push(node, line.bytes, &line.file.to_string_lossy(), line.truncated, read_ts);
        }
        n += read.len();
        if read.is_empty() && deadline.is_none() {
            return Ok(n);
        }
        let d = *deadline.get_or_insert_with(|| Instant::now() + config.gather);
        if n >= config.batch_lines || Instant::now() >= d || cancel.is_cancelled() {
            return Ok(n);
        }
    }
}

/// What of a tailer's counters was forwarded so far (they only grow).
#[derive(Debug, Default)]
pub(crate) struct TailReport {
    errors: u64,
    lost: u64,
    truncations: u64,
    rotations: u64,
    rolled: u64,
}

impl TailReport {
    /// Adds what changed since the last call to `stats`, and says what needs saying.
    pub(crate) fn forward(&mut self, source: &str, c: &TailCounters, stats: &SourceStats) {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let now = TailReport {
            errors: get(&c.errors),
            lost: get(&c.lost),
            truncations: get(&c.truncations),
            rotations: get(&c.rotations),
            rolled: get(&c.rolled_resumed) + get(&c.rolled_read),
        };
        let lost = now.lost - self.lost;
        Stats::add(&stats.errors, (now.errors - self.errors) + lost);
        // How many lines a vanished file still held is unknown: each one counts once.
        Stats::add(&stats.dropped, lost);
        Stats::add(&stats.rotations, now.rotations - self.rotations);
        Stats::add(&stats.rolled_files, now.rolled - self.rolled);
        if lost > 0 {
            warn!(
                source,
                files = lost,
                "log files rolled away before they were read to their end; their unread lines are lost"
            );
        }
        if now.rolled > self.rolled {
            info!(
                source,
                files = now.rolled - self.rolled,
                "reading rolled log files the collector had not read (rotated while it was down or between two polls)"
            );
        }
        if now.truncations > self.truncations {
            warn!(
                source,
                count = now.truncations - self.truncations,
                "a log file was truncated and is read again from 0"
            );
        }
        *self = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_forwarded_once() {
        let c = TailCounters::default();
        let s = SourceStats::default();
        let mut r = TailReport::default();
        c.lost.store(1, Ordering::Relaxed);
        c.errors.store(2, Ordering::Relaxed);
        c.rotations.store(3, Ordering::Relaxed);
        c.rolled_read.store(2, Ordering::Relaxed);
        c.rolled_resumed.store(1, Ordering::Relaxed);
        r.forward("caddy", &c, &s);
        r.forward("caddy", &c, &s);
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(get(&s.errors), 3);
        assert_eq!(get(&s.dropped), 1);
        assert_eq!(get(&s.rotations), 3);
        assert_eq!(get(&s.rolled_files), 3);
    }

    /// A parser taking lines that start with `ok`.
    #[derive(Debug, Default)]
    struct Oks(usize);

    impl LineParser for Oks {
        fn name(&self) -> &'static str {
            "oks"
        }
        fn push(&mut self, _node: &str, line: &[u8], _read_ts: i64) -> Result<Parsed, String> {
            if line.starts_with(b"ok") {
                self.0 += 1;
                Ok(Parsed::Row)
            } else {
                Err("not ok".into())
            }
        }
        fn records(&mut self, _source: &'static str) -> Result<Vec<Encoded>, SourceError> {
            self.0 = 0;
            Ok(Vec::new())
        }
        fn origin(&self) -> Option<(&'static str, &str)> {
            Some(("table", "t"))
        }
    }

    /// Every parser gets the same treatment of cut and refused lines.
    #[test]
    fn cut_and_refused_lines_become_unparsed_rows_with_their_file() {
        let mut l = ParsedLines::new(Oks::default());
        assert!(l.push("n", b"ok 1", "/f", false, 1));
        assert!(!l.push("n", b"ok but cut", "/f", true, 1), "a cut line never reaches the parser");
        assert!(!l.push("n", b"bad \xff", "/f", false, 1));
        assert_eq!((l.parser.0, l.parse_errors), (1, 2));
        let records = l.records("oks").unwrap();
        assert_eq!(l.parse_errors, 0);
        assert_eq!(records.len(), 1);
        let (_, batches) = lake_format::wire::decode(&records[0].body).unwrap();
        let rows = lake_test_support::batch_to_json(&batches[0]);
        assert_eq!(rows[0]["source"], "oks-unparsed");
        assert_eq!(rows[0]["attrs"]["error"], "line longer than max_line_bytes (10 bytes kept)");
        assert_eq!(rows[0]["attrs"]["truncated"], "true");
        assert_eq!(rows[0]["attrs"]["table"], "t");
        assert_eq!(rows[1]["attrs"]["raw_hex"], "62616420ff");
        assert_eq!(rows[1]["attrs"]["file"], "/f");
    }

    /// A state saved before multi-line records existed reads as one without any pending;
    /// records pending when `multiline` is switched off are emitted, not forgotten.
    #[test]
    fn saved_states_and_pending_records_carry_over() {
        let old = r#"{"files":[{"dev":1,"ino":2,"head_len":3,"head_hash":4,"path":"/a","offset":5}]}"#;
        let s: TailedState = serde_json::from_str(old).unwrap();
        assert_eq!((s.tail.files[0].offset, s.pending.len()), (5, 0));
        assert!(!serde_json::to_string(&s).unwrap().contains("pending"), "nothing pending, nothing written");
        let pending = vec![Pending {
            file: "/a".into(),
            text: Some("ok pending\n  more".into()),
            hex: None,
            read_ts: 1,
            last_ts: 2,
            lines: 2,
        }];
        let mut l = ParsedLines::new(Oks::default());
        assert_eq!(l.restore("n", pending.clone()).unwrap(), 1);
        assert_eq!(l.parser.0, 1, "the record is complete now");
        let start = regex::bytes::Regex::new("^ok").unwrap();
        let m = MultilineConfig { start, max_bytes: 1 << 10, max_wait: Duration::from_secs(1) };
        let mut l = ParsedLines::with_multiline(Oks::default(), Some(m));
        assert_eq!(l.restore("n", pending.clone()).unwrap(), 0);
        assert_eq!((l.parser.0, l.pending()), (0, pending), "still pending, in the joiner");
    }

    #[test]
    fn tail_settings_are_checked_alike() {
        let ok =
            |max: u64| tail_config("s", vec!["/a*".into()], StartAt::End, ByteSize(max), Dur(Duration::from_millis(1)));
        assert_eq!(ok(1 << 20).unwrap().max_line_bytes, 1 << 20);
        assert!(ok(1023).is_err() && ok((64 << 20) + 1).is_err());
        let err = tail_config("s", vec!["[".into()], StartAt::End, ByteSize(1 << 20), Dur(Duration::from_secs(1)));
        assert!(err.unwrap_err().to_string().starts_with("s.paths[0]"));
        assert!(tail_config("s", vec![], StartAt::End, ByteSize(1 << 20), Dur(Duration::ZERO)).is_err());
        assert!(check_batch_lines("s", 0).is_err() && check_batch_lines("s", 1).is_ok());
    }
}
