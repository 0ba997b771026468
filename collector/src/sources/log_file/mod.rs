//! `[[log_file]]`: any plain-text log file (nginx, Apache, syslog, PostgreSQL, php-fpm,
//! Rails, Python, or a `regex` of one's own) → `logs` rows with `source` = the entry's
//! name, or `http` rows for the access-log formats.
//!
//! Config: `[[log_file]]` entries, one task each; this module is the entry's section, its
//! parser ([`LogFileLines`]) and its task. Files are followed by the shared
//! [`super::tailed`] loop, like Caddy's (rotation-safe, `.gz` rolled files, the position
//! and the rows durable together, state `log_file/<name>`): a restart, clean or `kill -9`,
//! neither skips nor repeats a line. With `multiline` (the `python`, `rails`, `postgres`
//! and `php_fpm` formats have one by default) lines are joined into records first
//! ([`super::multiline`]); records still pending are saved with the position.
//!
//! Formats ([`FORMATS`]): the `logs` ones are regex lists ([`formats`]), the access-log
//! ones are [`access`]'s. A record that does not read — no pattern matches, a bad time,
//! not UTF-8, cut at `max_line_bytes` — becomes a `logs` row with source
//! `<name>-unparsed`, the raw text and why, counted in `parse_errors`; never dropped.
//! Blank lines are not records.

pub mod access;
pub mod formats;

use std::time::Duration;

use anyhow::{bail, ensure};
use jiff::tz::TimeZone;
use lake_format::logs::LogsBuilder;
use lake_format::units::{ByteSize, Dur};
use lake_format::Table;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use self::formats::{Pattern, TsFormat};
use super::caddy::HttpLines;
use super::multiline::MultilineConfig;
use super::tailed::{self, LineParser, Parsed, TailedConfig, TailedSource};
use super::{Encoded, SourceContext, SourceError};
use crate::tail::{StartAt, TailConfig};

/// Every `format` value.
pub const FORMATS: &[&str] =
    &["nginx_combined", "nginx_json", "apache_combined", "syslog", "postgres", "php_fpm", "rails", "python", "regex"];

/// Names other sources write in `logs.source`: an entry may not take them.
const TAKEN: &[&str] = &["journald", "docker", "caddy", "ufw", "fail2ban", "otlp", "exec", "json_file"];

fn default_timezone() -> String {
    "local".to_string()
}
const fn default_max_record() -> ByteSize {
    ByteSize(256 << 10)
}
const fn default_max_wait() -> Dur {
    Dur(Duration::from_secs(2))
}

/// One `[[log_file]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFileFile {
    /// `source` of its `logs` rows, its counters and saved position (`log_file/<name>`).
    /// Required: `[a-z0-9_-]`, at most 63 characters.
    name: String,
    /// Glob patterns of the files (rolled names are found too). Required.
    paths: Vec<String>,
    /// One of [`FORMATS`]. Required.
    format: String,
    /// `format = "regex"`: the regex whose named captures make the row (see [`formats`]).
    #[serde(default)]
    regex: Option<String>,
    /// `format = "regex"`: how the `ts` capture reads: "auto" (default), "syslog",
    /// "unix" or a strftime format.
    #[serde(default)]
    ts_format: Option<String>,
    /// Zone of times written without an offset. Default "local".
    #[serde(default = "default_timezone")]
    timezone: String,
    /// Joining lines into records.
    #[serde(default)]
    multiline: Option<MultilineFile>,
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

/// `[log_file.multiline]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MultilineFile {
    /// A line matching this regex begins a record; others continue it. Default: the
    /// format's (required for a format without one).
    #[serde(default)]
    start: Option<String>,
    /// Longest record; the line that would pass it begins the next. Default 256KiB.
    #[serde(default = "default_max_record")]
    max_bytes: ByteSize,
    /// A record is complete when no line came for this long. Default 2s.
    #[serde(default = "default_max_wait")]
    max_wait: Dur,
}

/// What a record becomes.
#[derive(Debug, Clone)]
pub enum Format {
    /// A `logs` row, read by the first matching pattern.
    Logs(Vec<Pattern>),
    /// An `http` row from a combined access-log line.
    Combined,
    /// An `http` row from an nginx `escape=json` line.
    NginxJson,
}

/// A validated `[[log_file]]` entry.
#[derive(Debug, Clone)]
pub struct LogFileConfig {
    /// The entry's name: `source` of its rows.
    pub name: &'static str,
    /// Counters and state name: `log_file/<name>`.
    pub source: &'static str,
    /// The `format` value.
    pub format_name: String,
    /// How records read.
    pub format: Format,
    /// Zone of times without offset.
    pub timezone: TimeZone,
    /// How lines join into records (`None`: a line is a record).
    pub multiline: Option<MultilineConfig>,
    /// What to tail.
    pub tail: TailConfig,
    /// Most lines per batch.
    pub batch_lines: usize,
    /// Longest wait for a batch.
    pub batch_wait: Duration,
}

/// Validates every entry; names must be unique.
pub fn validate_all(files: Vec<LogFileFile>) -> anyhow::Result<Vec<LogFileConfig>> {
    super::validate_named("log_file", files, |f| f.name.clone(), |f, section| f.validate(section))
}

impl LogFileFile {
    fn validate(self, section: &str) -> anyhow::Result<LogFileConfig> {
        let name = self.name;
        let b = name.as_bytes();
        ensure!(
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-'),
            "{section}.name: use [a-z0-9_-], at most 63 characters"
        );
        ensure!(
            !TAKEN.contains(&name.as_str()) && !name.ends_with("-unparsed"),
            "{section}.name: {name:?} is the source name of other rows in `logs`; choose another"
        );
        ensure!(!self.paths.is_empty(), "{section}.paths must name at least one file pattern");
        let tail = tailed::tail_config(section, self.paths, self.start_at, self.max_line_bytes, self.poll_interval)?;
        tailed::check_batch_lines(section, self.batch_lines)?;
        let timezone =
            super::zone::parse_zone(&self.timezone).map_err(|e| anyhow::anyhow!("{section}.timezone: {e}"))?;
        let fmt = self.format.as_str();
        ensure!(
            fmt == "regex" || (self.regex.is_none() && self.ts_format.is_none()),
            "{section}: `regex` and `ts_format` go with format = \"regex\", not with the {fmt:?} preset"
        );
        let (format, preset_start) = match fmt {
            "nginx_combined" | "apache_combined" => (Format::Combined, None),
            "nginx_json" => (Format::NginxJson, None),
            "regex" => {
                let Some(re) = self.regex.as_deref() else { bail!("{section}: format = \"regex\" needs a `regex`") };
                let regex = formats::compile(&format!("{section}.regex"), re).map_err(anyhow::Error::msg)?;
                let ts = match self.ts_format.as_deref() {
                    Some(f) => TsFormat::parse(f).map_err(|e| anyhow::anyhow!("{section}.{e}"))?,
                    None => TsFormat::Auto,
                };
                (Format::Logs(vec![Pattern { regex, ts, strip: None }]), None)
            }
            other => match formats::preset(other) {
                Some((patterns, start)) => (Format::Logs(patterns), start),
                None => bail!("{section}.format = {other:?}: unknown; the formats are {}", FORMATS.join(", ")),
            },
        };
        let multiline = match (self.multiline, preset_start) {
            (None, None) => None,
            (None, Some(start)) => Some((start.to_string(), default_max_record(), default_max_wait())),
            (Some(m), preset) => {
                let Some(start) = m.start.or(preset.map(str::to_string)) else {
                    bail!("{section}.multiline.start: the {fmt:?} format has no default; give the regex that begins a record")
                };
                Some((start, m.max_bytes, m.max_wait))
            }
        };
        let multiline = match multiline {
            None => None,
            Some((start, max_bytes, max_wait)) => {
                let start = regex::bytes::Regex::new(&start)
                    .map_err(|e| anyhow::anyhow!("{section}.multiline.start = {start:?}: {e}"))?;
                ensure!(
                    (1024..=64 << 20).contains(&max_bytes.0),
                    "{section}.multiline.max_bytes = {max_bytes}: must be between 1KiB and 64MiB"
                );
                ensure!(
                    !max_wait.0.is_zero() && max_wait.0 <= Duration::from_secs(3600),
                    "{section}.multiline.max_wait: must be more than zero and at most 1h"
                );
                Some(MultilineConfig { start, max_bytes: max_bytes.0 as usize, max_wait: max_wait.0 })
            }
        };
        Ok(LogFileConfig {
            source: super::leak_name(format!("log_file/{name}")),
            name: super::leak_name(name),
            format_name: self.format,
            format,
            timezone,
            multiline,
            tail,
            batch_lines: self.batch_lines,
            batch_wait: self.batch_wait.0,
        })
    }
}

/// Reads one entry's records into `logs` or `http` rows.
#[derive(Debug)]
pub struct LogFileLines {
    name: &'static str,
    format: Format,
    tz: TimeZone,
    logs: LogsBuilder,
    /// Built for the access-log formats only (the classifier compiles its patterns).
    http: Option<HttpLines>,
}

impl LogFileLines {
    /// The parser of one entry.
    pub fn new(config: &LogFileConfig) -> Self {
        let http = matches!(config.format, Format::Combined | Format::NginxJson).then(HttpLines::new);
        LogFileLines {
            name: config.name,
            format: config.format.clone(),
            tz: config.timezone.clone(),
            logs: LogsBuilder::new(),
            http,
        }
    }
}

impl LineParser for LogFileLines {
    fn name(&self) -> &'static str {
        self.name
    }

    fn push(&mut self, node: &str, record: &[u8], read_ts: i64) -> Result<Parsed, String> {
        let text = std::str::from_utf8(record).map_err(|_| "invalid UTF-8".to_string())?;
        if text.trim().is_empty() {
            return Ok(Parsed::NotAnEvent);
        }
        let http = match &self.format {
            Format::Logs(patterns) => {
                let row = formats::parse(patterns, text, &self.tz, read_ts)?;
                let attrs = row.attrs.iter().map(|(k, v)| (*k, v.as_ref()));
                self.logs.push(&row.log_row(node, self.name), attrs);
                return Ok(Parsed::Row);
            }
            Format::Combined => access::combined(text)?,
            Format::NginxJson => access::nginx_json(text)?,
        };
        self.http.as_mut().expect("http rows for an access-log format").push_http(node, &http);
        Ok(Parsed::Row)
    }

    fn records(&mut self, source: &'static str) -> Result<Vec<Encoded>, SourceError> {
        let mut out = tailed::table_records(source, Table::Logs, self.logs.finish())?;
        if let Some(h) = self.http.as_mut() {
            out.extend(h.records(source)?);
        }
        Ok(out)
    }
}

/// The running `[[log_file]]` entry.
#[derive(Debug)]
pub struct LogFileSource {
    config: LogFileConfig,
    ctx: SourceContext,
}

impl LogFileSource {
    /// A source for one entry.
    pub fn new(config: LogFileConfig, ctx: SourceContext) -> Self {
        LogFileSource { config, ctx }
    }

    /// Follows the files until `cancel`; returns early only on a spool or state error.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let LogFileSource { config, ctx } = self;
        let parser = LogFileLines::new(&config);
        let tailed = TailedConfig {
            source: config.source,
            tail: config.tail,
            batch_lines: config.batch_lines,
            batch_wait: config.batch_wait,
            gather: Duration::ZERO,
            multiline: config.multiline,
        };
        TailedSource::new(tailed, parser, ctx).run(cancel).await
    }
}

/// One line of `collector --check` output.
pub fn describe(c: &LogFileConfig) -> String {
    let table = if matches!(c.format, Format::Logs(_)) { "logs" } else { "http" };
    let ml = c.multiline.as_ref().map_or(String::new(), |m| format!(" multiline {:?}", m.start.as_str()));
    format!("{} {:?} format {} → {table}{ml}", c.source, c.tail.patterns, c.format_name)
}

#[cfg(test)]
mod tests;
