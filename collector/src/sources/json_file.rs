//! `json_file`: tail NDJSON log files (a FastAPI app's JSON logs, a business event log)
//! into a named custom table.
//!
//! Config: `[[json_file]]` entries, one task each. This module is the entry's parser
//! ([`JsonLines`]) and its section; files are followed by the shared [`super::tailed`]
//! loop, like Caddy's — each batch of lines becomes one held spool group with the
//! tailer's new position (state `json_file/<name>`): a restart, clean or `kill -9`,
//! neither skips nor repeats a line; while the spool is full the source pauses and its
//! position holds.
//!
//! Each line that is a JSON object is shipped as it is to custom table `json/<table>`
//! (contract in [`super::custom`]; `ts_field` added with the read time when the line lacks
//! it). Every other line — not JSON, not an object, not UTF-8, cut at `max_line_bytes` —
//! becomes a `logs` row with source `json_file-unparsed`, the raw line and its file,
//! counted in `parse_errors`. Blank lines are skipped.

use std::time::Duration;

use anyhow::ensure;
use lake_format::units::{ByteSize, Dur};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::custom::{self, NdjsonBodies};
use super::tailed::{self, LineParser, Parsed, TailedConfig, TailedSource};
use super::{Encoded, SourceContext, SourceError};
use crate::tail::{StartAt, TailConfig};

/// `source` of the `logs` rows of lines that are not JSON objects (`<this>-unparsed`).
pub const UNPARSED: &str = "json_file";

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
    #[serde(default = "tailed::default_start_at")]
    start_at: StartAt,
    /// Longer lines are cut and kept raw in `logs`. Default 1MiB, at most 64MiB.
    #[serde(default = "tailed::default_max_line")]
    max_line_bytes: ByteSize,
    /// How often the patterns are listed again and idle files polled. Default 500ms.
    #[serde(default = "tailed::default_poll")]
    poll_interval: Dur,
    /// Most lines per spooled batch. Default 5000.
    #[serde(default = "tailed::default_batch_lines")]
    batch_lines: usize,
    /// Longest wait for the first line of a batch. Default 500ms.
    #[serde(default = "tailed::default_batch_wait")]
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
    let name_of = |f: &JsonFileFile| f.name.clone().unwrap_or_else(|| f.table.clone());
    super::validate_named("json_file", files, name_of, |f, section| {
        let name = name_of(&f);
        f.validate(section, name)
    })
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
        let tail = tailed::tail_config(section, self.paths, self.start_at, self.max_line_bytes, self.poll_interval)?;
        tailed::check_batch_lines(section, self.batch_lines)?;
        ensure!(!self.ts_field.is_empty(), "{section}.ts_field must not be empty");
        Ok(JsonFileConfig {
            source: super::leak_name(format!("json_file/{name}")),
            table: self.table,
            ts_field: self.ts_field,
            tail,
            batch_lines: self.batch_lines,
            batch_wait: self.batch_wait.0,
        })
    }
}

/// Ships each line that is a JSON object to the entry's custom table.
#[derive(Debug)]
pub struct JsonLines {
    bodies: NdjsonBodies,
    table: String,
    ts_field: String,
}

impl JsonLines {
    /// The parser of one entry.
    pub fn new(config: &JsonFileConfig) -> Self {
        JsonLines {
            bodies: NdjsonBodies::new(&config.table, config.source),
            table: config.table.clone(),
            ts_field: config.ts_field.clone(),
        }
    }
}

impl LineParser for JsonLines {
    fn name(&self) -> &'static str {
        UNPARSED
    }

    fn push(&mut self, _node: &str, line: &[u8], read_ts: i64) -> Result<Parsed, String> {
        match custom::normalize_line(line, &self.ts_field, read_ts).map_err(|e| e.to_string())? {
            custom::Line::Ship(b) => {
                self.bodies.push(&b);
                Ok(Parsed::Row)
            }
            custom::Line::Blank => Ok(Parsed::NotAnEvent),
        }
    }

    /// The bodies count as the entry's own (`JsonLines::new`), whatever `source` is.
    fn records(&mut self, _source: &'static str) -> Result<Vec<Encoded>, SourceError> {
        Ok(self.bodies.finish())
    }

    fn origin(&self) -> Option<(&'static str, &str)> {
        Some(("table", &self.table))
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
        let parser = JsonLines::new(&config);
        let tailed = TailedConfig {
            source: config.source,
            tail: config.tail,
            batch_lines: config.batch_lines,
            batch_wait: config.batch_wait,
            gather: Duration::ZERO,
            multiline: None,
        };
        TailedSource::new(tailed, parser, ctx).run(cancel).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::DEFAULT_MAX_LINE_BYTES;

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
