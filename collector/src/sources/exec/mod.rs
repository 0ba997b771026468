//! `exec`: run a command on an interval and ingest what it prints — the escape hatch for
//! UPS readings (`upsc`), solar inverters, a weather script, business counters.
//!
//! Config: `[[exec]]` entries in `collector.toml`, one task each (a hung command delays
//! only its own next run). Each run ([`run::run`]): argv form without a shell unless
//! `shell = true`, its own process group killed whole at `timeout`, stdout bounded.
//!
//! Out, per run, as one droppable spool group (a reading exists only now; a full spool
//! drops the oldest readings, counted):
//! - `format = "ndjson"`: every line that is a JSON object → custom table `json/<table>`
//!   (see [`super::custom`] for the contract, `ts_field` added from the run's start time
//!   when missing); `format = "prometheus"`: the text exposition → `metrics` rows (see
//!   [`super::prometheus`]), labels `job = <name>` plus the configured `labels`.
//! - every other line (not JSON, not an object, not a metric line, not UTF-8): a `logs`
//!   row with source `exec-unparsed`, the raw line, the command's name and line number,
//!   counted in `parse_errors`;
//! - a failed run (non-zero exit, killed by a signal, timed out, could not start, output
//!   cut at `max_output_bytes`): a `logs` row with source `exec`, ident `<name>`, priority
//!   3, what happened and the tail of its stderr; counted in `errors` (a cut output also
//!   in `dropped`) and logged (first failure, every 10th in a row, and the recovery).
//!   What a failed run printed is still ingested, line by line as above;
//! - `metrics` rows `exec_up` (1 when the command exited 0) and `exec_duration_seconds`,
//!   labels `exec = <name>` (+ `labels`).
//!
//! Counters: source `exec/<name>`.

pub mod run;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure};
use lake_format::logs::LogsBuilder;
use lake_format::rows::{now_micros, MetricsBuilder};
use lake_format::units::{ByteSize, Dur};
use lake_format::Table;
use serde::Deserialize;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::custom::{self, NdjsonBodies};
use super::notes::{FailureLog, Note, PRIORITY_ERR};
use super::prometheus;
use super::unparsed::UnparsedRows;
use super::{Encoded, SourceContext, SourceError};
use crate::stats::{SourceStats, Stats};
use run::{Ended, Outcome, Spec};

/// `source` of the `logs` rows about failed runs.
pub const NOTE_SOURCE: &str = "exec";
/// Longest line kept raw when it does not parse.
const MAX_RAW_LINE: usize = 64 << 10;

const fn default_interval() -> Dur {
    Dur(Duration::from_secs(60))
}
const fn default_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
const fn default_max_output() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_ts_field() -> String {
    "ts".to_string()
}

/// What the command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line, into a custom table.
    Ndjson,
    /// Prometheus text exposition format, into `metrics`.
    Prometheus,
}

/// `command`: an argv array, or one string for `shell = true`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum CommandFile {
    Line(String),
    Argv(Vec<String>),
}

/// One `[[exec]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecFile {
    /// Unique name: `[a-z0-9][a-z0-9_-]*`, at most 63 characters. Required.
    name: String,
    /// `["upsc", "ups@localhost"]` (argv, no shell), or a string with `shell = true`.
    command: CommandFile,
    /// Run `command` with `/bin/sh -c`. Default false.
    #[serde(default)]
    shell: bool,
    /// `ndjson` or `prometheus`. Required.
    format: Format,
    /// Custom table of the lines (`ndjson` only, required there).
    #[serde(default)]
    table: Option<String>,
    /// Field holding each line's time (`ndjson`); added with the run's start when missing.
    #[serde(default = "default_ts_field")]
    ts_field: String,
    /// Time between two starts. Default 60s.
    #[serde(default = "default_interval")]
    interval: Dur,
    /// Time a run may take before its process group is killed. Default 10s; at most `interval`.
    #[serde(default = "default_timeout")]
    timeout: Dur,
    /// Labels added to every `metrics` row of the command.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Environment variables added for the command.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Working directory. Default: the collector's.
    #[serde(default)]
    working_dir: Option<PathBuf>,
    /// Stdout kept per run; the rest is discarded, counted. Default 16MiB.
    #[serde(default = "default_max_output")]
    max_output_bytes: ByteSize,
}

/// A validated `[[exec]]` entry.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// The entry's name.
    pub name: String,
    /// Counters and `logs` ident: `exec/<name>`.
    pub source: &'static str,
    /// What to run.
    pub spec: Spec,
    /// Output format.
    pub format: Format,
    /// Custom table (`ndjson`).
    pub table: Option<String>,
    /// Time field of NDJSON lines.
    pub ts_field: String,
    /// Time between two starts.
    pub interval: Duration,
    /// Labels of `metrics` rows (configured labels, `job` for prometheus output).
    pub labels: Vec<(String, String)>,
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// Checks label names of a `labels` table.
pub(crate) fn check_labels(section: &str, labels: &BTreeMap<String, String>) -> anyhow::Result<()> {
    for k in labels.keys() {
        let mut b = k.bytes();
        let ok = matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
            && !k.starts_with("__");
        ensure!(ok, "{section}.labels: {k:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)");
    }
    Ok(())
}

/// Validates every `[[exec]]` entry; names must be unique.
pub(crate) fn validate_all(files: Vec<ExecFile>) -> anyhow::Result<Vec<ExecConfig>> {
    super::validate_named("exec", files, |f| f.name.clone(), |f, section| f.validate(section))
}

impl ExecFile {
    fn validate(self, section: &str) -> anyhow::Result<ExecConfig> {
        ensure!(valid_name(&self.name), "{section}.name: use [a-z0-9][a-z0-9_-]*, at most 63 characters");
        let (program, args) = match (self.command, self.shell) {
            (CommandFile::Line(line), true) => (PathBuf::from("/bin/sh"), vec!["-c".to_string(), line]),
            (CommandFile::Argv(argv), true) => {
                ensure!(
                    argv.len() == 1,
                    "{section}.command: with shell = true give one string (the script), not an argv array"
                );
                (PathBuf::from("/bin/sh"), vec!["-c".to_string(), argv.into_iter().next().unwrap_or_default()])
            }
            (CommandFile::Line(_), false) => bail!(
                "{section}.command is a string: give an argv array (e.g. [\"upsc\", \"ups@localhost\"]), \
                 or set shell = true to run it with /bin/sh -c"
            ),
            (CommandFile::Argv(mut argv), false) => {
                ensure!(!argv.is_empty() && !argv[0].is_empty(), "{section}.command must name a program");
                let program = PathBuf::from(argv.remove(0));
                (program, argv)
            }
        };
        if let Some(l) = args.get(1).filter(|_| self.shell) {
            ensure!(!l.trim().is_empty(), "{section}.command: the script is empty");
        }
        super::check_schedule(section, self.interval.0, self.timeout.0, ": runs never overlap")?;
        let max = self.max_output_bytes.0;
        ensure!((1..=(256 << 20)).contains(&max), "{section}.max_output_bytes must be between 1B and 256MiB");
        let table = match (self.format, self.table) {
            (Format::Ndjson, Some(t)) => {
                custom::validate_table_name(&t).map_err(|e| anyhow::anyhow!("{section}.table: {e}"))?;
                Some(t)
            }
            (Format::Ndjson, None) => {
                bail!("{section}: format = \"ndjson\" needs a table (the custom table the lines go to)")
            }
            (Format::Prometheus, Some(_)) => {
                bail!("{section}.table: format = \"prometheus\" writes to metrics; remove table")
            }
            (Format::Prometheus, None) => None,
        };
        ensure!(!self.ts_field.is_empty(), "{section}.ts_field must not be empty");
        check_labels(section, &self.labels)?;
        for k in self.env.keys() {
            ensure!(!k.is_empty() && !k.contains(['=', '\0']), "{section}.env: {k:?} is not a variable name");
        }
        let mut labels: Vec<(String, String)> = self.labels.into_iter().collect();
        if self.format == Format::Prometheus && !labels.iter().any(|(k, _)| k == "job") {
            labels.push(("job".to_string(), self.name.clone()));
        }
        Ok(ExecConfig {
            source: super::leak_name(format!("exec/{}", self.name)),
            spec: Spec {
                program,
                args,
                env: self.env,
                working_dir: self.working_dir,
                timeout: self.timeout.0,
                max_output: max as usize,
            },
            name: self.name,
            format: self.format,
            table,
            ts_field: self.ts_field,
            interval: self.interval.0,
            labels,
        })
    }
}

/// The rows of one run, encoded for the spool.
#[derive(Debug, Default)]
pub struct RunRows {
    /// Records to spool (custom table bodies, `metrics`, `logs`).
    pub records: Vec<Encoded>,
    /// Output lines read.
    pub lines: u64,
    /// Lines kept raw in `logs`.
    pub bad_lines: u64,
}

/// Turns a run's outcome into rows. Pure apart from the clock-free inputs it is given:
/// `started` (µs) stamps rows and NDJSON lines without a time. Failures add a note row.
pub fn rows_of_run(config: &ExecConfig, node: &str, started: i64, o: &Outcome) -> Result<RunRows, SourceError> {
    let name = config.source;
    let encode = |e: arrow_schema::ArrowError| SourceError::Encode { source_name: name, error: e.to_string() };
    let mut out = RunRows::default();
    let mut unparsed = UnparsedRows::new("exec");
    let mut metrics = MetricsBuilder::new();
    let exec_label = [("exec", config.name.as_str())];
    let mut bad = |line_no: usize, raw: &[u8], error: &str| {
        let cut = raw.len() > MAX_RAW_LINE;
        let raw = &raw[..raw.len().min(MAX_RAW_LINE)];
        let n = line_no.to_string();
        unparsed.push_from(node, raw, &[("exec", &config.name), ("line", &n)], error, cut, started);
    };
    let lines = o.stdout.split(|b| *b == b'\n').enumerate().filter(|(_, l)| !l.trim_ascii().is_empty());
    match config.format {
        Format::Ndjson => {
            let table = config.table.as_deref().unwrap_or_default();
            let mut bodies = NdjsonBodies::new(table, name);
            for (i, line) in lines {
                out.lines += 1;
                match custom::normalize_line(line, &config.ts_field, started) {
                    Ok(custom::Line::Ship(b)) => bodies.push(&b),
                    Ok(custom::Line::Blank) => {}
                    Err(e) => {
                        out.bad_lines += 1;
                        bad(i + 1, line, &e.to_string());
                    }
                }
            }
            out.records.extend(bodies.finish());
        }
        Format::Prometheus => {
            let e = prometheus::parse_bytes(&o.stdout);
            out.lines = lines.count() as u64;
            for err in &e.errors {
                out.bad_lines += 1;
                bad(err.line_no, &err.raw, &err.reason);
            }
            let samples = e.samples;
            prometheus::push_rows(&mut metrics, node, &samples, started, &config.labels);
        }
    }
    // Self metrics of the run.
    let mut self_labels: Vec<(&str, &str)> = exec_label.to_vec();
    self_labels.extend(config.labels.iter().filter(|(k, _)| k != "job").map(|(k, v)| (k.as_str(), v.as_str())));
    metrics.push(started, node, "exec_up", if o.success() { 1.0 } else { 0.0 }, &self_labels);
    metrics.push(started, node, "exec_duration_seconds", o.elapsed.as_secs_f64(), &self_labels);
    out.records.push(SourceContext::encode_batch(name, Table::Metrics, &metrics.finish())?);

    let mut notes = LogsBuilder::new();
    if let Some(message) = failure_message(config, o) {
        let status = format!("{:?}", o.ended);
        Note {
            ts: started,
            node,
            source: NOTE_SOURCE,
            ident: &config.name,
            priority: PRIORITY_ERR,
            message: &message,
            attrs: &[("stderr", &o.stderr_tail), ("status", &status)],
        }
        .push_to(&mut notes);
    }
    let logs = [unparsed.finish().map_err(encode)?, notes.finish().map_err(encode)?];
    out.records.extend(SourceContext::encode_batches(name, Table::Logs, &logs)?);
    Ok(out)
}

/// What went wrong in a run, if anything.
pub fn failure_message(config: &ExecConfig, o: &Outcome) -> Option<String> {
    let what = match &o.ended {
        Ended::Exited(0) if o.stdout_discarded == 0 && !o.leftovers_killed => return None,
        Ended::Exited(0) if o.stdout_discarded > 0 => format!(
            "output longer than max_output_bytes ({} bytes kept, {} discarded)",
            o.stdout.len(),
            o.stdout_discarded
        ),
        Ended::Exited(0) => format!(
            "exited, but processes it started still held its output at the timeout ({:?}) and were killed",
            config.spec.timeout
        ),
        Ended::Exited(code) => format!("exited with code {code}"),
        Ended::Signaled(sig) => format!("killed by signal {sig}"),
        Ended::TimedOut => format!("timed out after {:?}: its process group was killed", config.spec.timeout),
        Ended::Cancelled => "stopped at shutdown".to_string(),
        Ended::Failed(e) => e.clone(),
    };
    Some(format!("exec {}: {what}", config.name))
}

/// The running `[[exec]]` entry.
#[derive(Debug)]
pub struct ExecSource {
    config: ExecConfig,
    ctx: SourceContext,
}

impl ExecSource {
    /// A source for one entry.
    pub fn new(config: ExecConfig, ctx: SourceContext) -> Self {
        ExecSource { config, ctx }
    }

    /// Runs the command every interval until `cancel`.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let ExecSource { config, ctx } = self;
        let stats = ctx.source_stats(config.source);
        info!(exec = %config.name, program = %config.spec.program.display(), interval = ?config.interval, "exec source started");
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failures = FailureLog::default();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let started = now_micros();
            let outcome = run::run(&config.spec, &cancel).await;
            if outcome.ended == Ended::Cancelled {
                return Ok(());
            }
            let rows = rows_of_run(&config, &ctx.node, started, &outcome)?;
            account(&config, &outcome, &rows, &stats, &mut failures);
            ctx.emit_encoded_droppable(config.source, rows.records).await?;
        }
    }
}

fn account(config: &ExecConfig, o: &Outcome, rows: &RunRows, stats: &SourceStats, failures: &mut FailureLog) {
    Stats::add(&stats.read, rows.lines);
    Stats::add(&stats.parse_errors, rows.bad_lines);
    match failure_message(config, o) {
        Some(message) => {
            Stats::add(&stats.errors, 1);
            if o.stdout_discarded > 0 {
                Stats::add(&stats.dropped, 1);
            }
            if let Some(n) = failures.failed() {
                warn!(exec = %config.name, failures_in_a_row = n, stderr = %o.stderr_tail, "{message}");
            }
        }
        None => {
            if let Some(n) = failures.succeeded() {
                info!(exec = %config.name, after_failures = n, "exec command succeeds again");
            }
        }
    }
    if rows.bad_lines > 0 {
        tracing::debug!(exec = %config.name, lines = rows.bad_lines, "exec output lines kept raw in logs");
    }
}

/// For `--check`: one line per entry.
pub fn describe(config: &ExecConfig) -> String {
    let target = match (&config.format, &config.table) {
        (Format::Ndjson, Some(t)) => custom::spool_table(t),
        _ => "metrics".to_string(),
    };
    format!("{} every {:?} → {target}", config.name, config.interval)
}

#[cfg(test)]
mod tests;
