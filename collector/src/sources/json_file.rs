//! `json_file`: tail NDJSON log files (a FastAPI app's JSON logs, a business event log)
//! into a named custom table.
//!
//! Config: `[[json_file]]` entries, one task each. Files are followed with
//! [`crate::tail`] — the same rotation-safe, fingerprinted tailing and checkpoints as the
//! Caddy source. Each batch of lines becomes one held spool group with the tailer's new
//! position (state `json_file/<name>`): a restart, clean or `kill -9`, neither skips nor
//! repeats a line; while the spool is full the source pauses and its position holds.
//!
//! Each line that is a JSON object is shipped as it is to custom table `json/<table>`
//! (contract in [`super::custom`]; `ts_field` added with the read time when the line lacks
//! it). Every other line — not JSON, not an object, not UTF-8, cut at `max_line_bytes` —
//! becomes a `logs` row with source `json_file-unparsed`, the raw line and its file,
//! counted in `parse_errors`. Blank lines are skipped.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::ensure;
use lake_format::rows::now_micros;
use lake_format::units::{ByteSize, Dur};
use lake_format::Table;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::custom::{self, NdjsonBodies};
use super::tailed::TailReport;
use super::unparsed::UnparsedRows;
use super::{Emitted, SourceContext, SourceError};
use crate::stats::Stats;
use crate::tail::{StartAt, TailConfig, TailState, Tailer, DEFAULT_MAX_LINE_BYTES};

/// `source` of the `logs` rows of lines that are not JSON objects (`<this>-unparsed`).
pub const UNPARSED: &str = "json_file";

const fn default_start_at() -> StartAt {
    StartAt::Beginning
}
const fn default_max_line() -> ByteSize {
    ByteSize(DEFAULT_MAX_LINE_BYTES as u64)
}
const fn default_poll() -> Dur {
    Dur(Duration::from_millis(500))
}
const fn default_batch_lines() -> usize {
    5000
}
const fn default_batch_wait() -> Dur {
    Dur(Duration::from_millis(500))
}
fn default_ts_field() -> String {
    "ts".to_string()
}

/// One `[[json_file]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonFileFile {
    /// Custom table the lines go to. Required.
    table: String,
    /// Glob patterns of the files (include rolled names). Required.
    paths: Vec<String>,
    /// Names the entry's counters and saved position. Default: the table.
    #[serde(default)]
    name: Option<String>,
    /// Field holding each line's time; added with the read time when missing. Default "ts".
    #[serde(default = "default_ts_field")]
    ts_field: String,
    /// Where files found on the very first start begin. Default "beginning".
    #[serde(default = "default_start_at")]
    start_at: StartAt,
    /// Longer lines are cut and kept raw in `logs`. Default 1MiB, at most 16MiB.
    #[serde(default = "default_max_line")]
    max_line_bytes: ByteSize,
    /// How often the patterns are listed again and idle files polled. Default 500ms.
    #[serde(default = "default_poll")]
    poll_interval: Dur,
    /// Most lines per spooled batch. Default 5000.
    #[serde(default = "default_batch_lines")]
    batch_lines: usize,
    /// Longest wait for the first line of a batch. Default 500ms.
    #[serde(default = "default_batch_wait")]
    batch_wait: Dur,
}

/// A validated `[[json_file]]` entry.
#[derive(Debug, Clone)]
pub struct JsonFileConfig {
    /// Counters and state name: `json_file/<name>`.
    pub source: &'static str,
    /// Custom table.
    pub table: String,
    /// Time field.
    pub ts_field: String,
    /// What to tail.
    pub tail: TailConfig,
    /// Most lines per batch.
    pub batch_lines: usize,
    /// Longest wait for a batch.
    pub batch_wait: Duration,
}

/// Validates every entry; names must be unique.
pub(crate) fn validate_all(files: Vec<JsonFileFile>) -> anyhow::Result<Vec<JsonFileConfig>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in files.into_iter().enumerate() {
        let name = f.name.clone().unwrap_or_else(|| f.table.clone());
        let section = format!("json_file[{i}] ({name:?})");
        ensure!(
            seen.insert(name.clone()),
            "{section}: two [[json_file]] entries are named {name:?}; give one a distinct name"
        );
        out.push(f.validate(&section, name)?);
    }
    Ok(out)
}

impl JsonFileFile {
    fn validate(self, section: &str, name: String) -> anyhow::Result<JsonFileConfig> {
        custom::validate_table_name(&self.table).map_err(|e| anyhow::anyhow!("{section}.table: {e}"))?;
        let b = name.as_bytes();
        ensure!(
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-'),
            "{section}.name: use [a-z0-9_-], at most 63 characters"
        );
        ensure!(!self.paths.is_empty(), "{section}.paths must name at least one file pattern");
        for (j, p) in self.paths.iter().enumerate() {
            glob::Pattern::new(p).map_err(|e| anyhow::anyhow!("{section}.paths[{j}] = {p:?}: {e}"))?;
        }
        let max = self.max_line_bytes.0;
        ensure!(
            (1024..=(16 << 20)).contains(&max),
            "{section}.max_line_bytes = {}: must be between 1KiB and 16MiB",
            self.max_line_bytes
        );
        ensure!(!self.poll_interval.0.is_zero(), "{section}.poll_interval must be more than zero");
        ensure!((1..=1_000_000).contains(&self.batch_lines), "{section}.batch_lines must be between 1 and 1000000");
        ensure!(!self.ts_field.is_empty(), "{section}.ts_field must not be empty");
        Ok(JsonFileConfig {
            source: super::leak_name(format!("json_file/{name}")),
            table: self.table,
            ts_field: self.ts_field,
            tail: TailConfig {
                patterns: self.paths,
                start_at: self.start_at,
                max_line_bytes: max as usize,
                poll_interval: self.poll_interval.0,
            },
            batch_lines: self.batch_lines,
            batch_wait: self.batch_wait.0,
        })
    }
}

/// The running `[[json_file]]` entry.
#[derive(Debug)]
pub struct JsonFileSource {
    config: JsonFileConfig,
    ctx: SourceContext,
}

impl JsonFileSource {
    /// A source for one entry.
    pub fn new(config: JsonFileConfig, ctx: SourceContext) -> Self {
        JsonFileSource { config, ctx }
    }

    /// Follows the files until `cancel`; returns early only on a spool or state error.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let JsonFileSource { config, ctx } = self;
        let name = config.source;
        let stats = ctx.source_stats(name);
        let state: Option<TailState> = ctx.load_state(name).await?;
        let mut tailer = Tailer::new(config.tail.clone(), state)
            .map_err(|e| SourceError::Start { source_name: name, reason: e.to_string() })?;
        info!(source = name, table = %config.table, patterns = ?config.tail.patterns, "json_file source started");
        let counters = tailer.counters();
        let mut reported = TailReport::default();
        let mut bodies = NdjsonBodies::new(&config.table, name);
        let mut unparsed = UnparsedRows::new(UNPARSED);
        while !cancel.is_cancelled() {
            let lines = tailer
                .read_batch(config.batch_lines, config.batch_wait, &cancel)
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
                let result = if line.truncated {
                    Err(format!("line longer than max_line_bytes ({} bytes kept)", line.bytes.len()))
                } else {
                    custom::normalize_line(line.bytes, &config.ts_field, read_ts).map_err(|e| e.to_string())
                };
                match result {
                    Ok(custom::Line::Ship(b)) => bodies.push(&b),
                    Ok(custom::Line::Blank) => {}
                    Err(error) => {
                        bad += 1;
                        let file = line.file.to_string_lossy();
                        unparsed.push_from(
                            &ctx.node,
                            line.bytes,
                            &[("file", &file), ("table", &config.table)],
                            &error,
                            line.truncated,
                            read_ts,
                        );
                    }
                }
            }
            Stats::add(&stats.read, read);
            Stats::add(&stats.parse_errors, bad);
            let mut records = bodies.finish();
            let raw = unparsed.finish().map_err(|e| SourceError::Encode { source_name: name, error: e.to_string() })?;
            if raw.num_rows() > 0 {
                records.push(SourceContext::encode_batch(name, Table::Logs, &raw)?);
            }
            if ctx.emit_encoded(name, records, Some(&tailer.state()), &cancel).await? == Emitted::Cancelled {
                // Neither the lines nor the position are spooled: read again on restart.
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> anyhow::Result<Vec<JsonFileConfig>> {
        #[derive(Deserialize)]
        struct F {
            json_file: Vec<JsonFileFile>,
        }
        let f: F = toml::from_str(toml)?;
        validate_all(f.json_file)
    }

    #[test]
    fn config_names_default_to_the_table_and_are_checked() {
        let c = parse("[[json_file]]\ntable = \"fastapi\"\npaths = [\"/var/log/app/*.json\"]\n").unwrap();
        assert_eq!(c[0].source, "json_file/fastapi");
        assert_eq!(c[0].ts_field, "ts");
        assert_eq!(c[0].tail.max_line_bytes, DEFAULT_MAX_LINE_BYTES);
        let two = parse("[[json_file]]\ntable = \"app\"\nname = \"app-a\"\npaths = [\"/a\"]\n[[json_file]]\ntable = \"app\"\nname = \"app-b\"\npaths = [\"/b\"]\n").unwrap();
        assert_eq!(two[1].source, "json_file/app-b");
        for bad in [
            "[[json_file]]\ntable = \"http\"\npaths = [\"/a\"]\n",
            "[[json_file]]\ntable = \"Bad\"\npaths = [\"/a\"]\n",
            "[[json_file]]\ntable = \"app\"\npaths = []\n",
            "[[json_file]]\ntable = \"app\"\npaths = [\"[\"]\n",
            "[[json_file]]\ntable = \"app\"\npaths = [\"/a\"]\n[[json_file]]\ntable = \"app\"\npaths = [\"/b\"]\n",
            "[[json_file]]\ntable = \"app\"\npaths = [\"/a\"]\ntimestamp = \"t\"\n",
            "[[json_file]]\ntable = \"app\"\npaths = [\"/a\"]\nmax_line_bytes = \"1GiB\"\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
