//! Caddy JSON access logs → the `http` table.
//!
//! In: Caddy's access log files (`log { format json }`), followed by the shared
//! [`super::tailed`] loop. Out: `http` rows (one per request, see [`parse`] for the field
//! mapping) and, for every line that is not a Caddy JSON access entry (not JSON, cut at
//! `max_line_bytes`, invalid UTF-8), a `logs` row with source `caddy-unparsed` and the
//! raw line, counted in `parse_errors` — never dropped.
//!
//! This module is the parser ([`HttpLines`]) and the `[caddy]` section; the loop, the
//! counters and the spooling (rows and position durable together, state `caddy`) are
//! [`TailedSource`]'s. Caddy batches gather for `batch_wait` after their first line: one
//! batch per `batch_wait` rather than per poll, since each costs an encode, an fsync and
//! a request.
//!
//! Each `http` row also gets `client_class` and `client_name` (human, search engine, AI
//! crawler, monitor, scanner or other bot, and who), from [`classify`].

pub mod classify;
pub mod parse;

use std::time::Duration;

use anyhow::ensure;
use arrow_array::RecordBatch;
use lake_format::rows::TableBuilder;
use lake_format::units::{ByteSize, Dur};
use lake_format::Table;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::tailed::{self, LineParser, Parsed, ParsedLines, TailedConfig, TailedSource};
use super::{Encoded, SourceContext, SourceError};
use crate::tail::{StartAt, TailConfig};
pub use parse::{parse, HttpRow, ParseError};

/// Name of the source: counters label, name of its state in the spool.
pub const SOURCE: &str = "caddy";
/// `source` of the `logs` rows for lines that are not Caddy JSON.
pub const UNPARSED_SOURCE: &str = "caddy-unparsed";

fn default_paths() -> Vec<String> {
    vec!["/var/log/caddy/access*.log".to_string()]
}
const fn default_batch_lines() -> usize {
    10_000
}
/// One batch a second: each costs an encode, an fsync and a request (see `run`).
const fn default_batch_wait() -> Dur {
    Dur(Duration::from_secs(1))
}

/// `[caddy]` as written in `collector.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaddyFile {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "default_paths")]
    paths: Vec<String>,
    #[serde(default = "tailed::default_start_at")]
    start_at: StartAt,
    #[serde(default = "tailed::default_max_line")]
    max_line_bytes: ByteSize,
    #[serde(default = "tailed::default_poll")]
    poll_interval: Dur,
    #[serde(default = "default_batch_lines")]
    batch_lines: usize,
    #[serde(default = "default_batch_wait")]
    batch_wait: Dur,
}

impl Default for CaddyFile {
    fn default() -> Self {
        CaddyFile {
            enabled: false,
            paths: default_paths(),
            start_at: tailed::default_start_at(),
            max_line_bytes: tailed::default_max_line(),
            poll_interval: tailed::default_poll(),
            batch_lines: default_batch_lines(),
            batch_wait: default_batch_wait(),
        }
    }
}

/// The validated `[caddy]` section.
#[derive(Debug, Clone)]
pub struct CaddyConfig {
    /// Whether the source runs.
    pub enabled: bool,
    /// What to tail and how.
    pub tail: TailConfig,
    /// Most lines per spooled batch.
    pub batch_lines: usize,
    /// How long a batch collects lines after its first one; also how long an idle read
    /// waits before it looks at the cancel token and counters again.
    pub batch_wait: Duration,
}

impl CaddyFile {
    /// Checks the section and builds the typed config.
    pub fn validate(self) -> anyhow::Result<CaddyConfig> {
        if self.enabled {
            ensure!(!self.paths.is_empty(), "caddy.paths must name at least one file pattern");
        }
        let tail = tailed::tail_config("caddy", self.paths, self.start_at, self.max_line_bytes, self.poll_interval)?;
        tailed::check_batch_lines("caddy", self.batch_lines)?;
        Ok(CaddyConfig { enabled: self.enabled, tail, batch_lines: self.batch_lines, batch_wait: self.batch_wait.0 })
    }
}

/// Parses Caddy access-log lines into `http` rows.
#[derive(Debug)]
pub struct HttpLines {
    http: TableBuilder,
    h: HttpCols,
    classifier: classify::Classifier,
}

#[derive(Debug)]
struct HttpCols {
    ts: usize,
    host: usize,
    vhost: usize,
    method: usize,
    uri: usize,
    path: usize,
    proto: usize,
    status: usize,
    size: usize,
    bytes_read: usize,
    duration_ms: usize,
    remote_ip: usize,
    client_ip: usize,
    user_agent: usize,
    referer: usize,
    tls_version: usize,
    server_name: usize,
    client_class: usize,
    client_name: usize,
    attrs: usize,
}

fn col(b: &TableBuilder, name: &str) -> usize {
    b.column(name).unwrap_or_else(|| panic!("catalog column {name} of {} is missing", b.table()))
}

impl Default for HttpLines {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpLines {
    /// An empty builder (and the classifier's patterns, compiled once).
    pub fn new() -> HttpLines {
        let http = TableBuilder::new(Table::Http);
        let h = HttpCols {
            ts: col(&http, "ts"),
            host: col(&http, "host"),
            vhost: col(&http, "vhost"),
            method: col(&http, "method"),
            uri: col(&http, "uri"),
            path: col(&http, "path"),
            proto: col(&http, "proto"),
            status: col(&http, "status"),
            size: col(&http, "size"),
            bytes_read: col(&http, "bytes_read"),
            duration_ms: col(&http, "duration_ms"),
            remote_ip: col(&http, "remote_ip"),
            client_ip: col(&http, "client_ip"),
            user_agent: col(&http, "user_agent"),
            referer: col(&http, "referer"),
            tls_version: col(&http, "tls_version"),
            server_name: col(&http, "server_name"),
            client_class: col(&http, "client_class"),
            client_name: col(&http, "client_name"),
            attrs: col(&http, "attrs"),
        };
        HttpLines { http, h, classifier: classify::Classifier::new() }
    }

    pub(crate) fn push_http(&mut self, node: &str, r: &HttpRow<'_>) {
        let (b, c) = (&mut self.http, &self.h);
        let (class, name) = self.classifier.classify(r.user_agent.as_deref(), r.path.as_deref(), r.status);
        b.ts(c.ts, r.ts_micros);
        b.text(c.host, Some(node));
        b.text(c.vhost, r.vhost.as_deref());
        b.text(c.method, r.method.as_deref());
        b.text(c.uri, r.uri.as_deref());
        b.text(c.path, r.path.as_deref());
        b.text(c.proto, r.proto.as_deref());
        b.int(c.status, r.status);
        b.int(c.size, r.size);
        b.int(c.bytes_read, r.bytes_read);
        b.float(c.duration_ms, r.duration_ms);
        b.text(c.remote_ip, r.remote_ip.as_deref());
        b.text(c.client_ip, r.client_ip.as_deref());
        b.text(c.user_agent, r.user_agent.as_deref());
        b.text(c.referer, r.referer.as_deref());
        b.text(c.tls_version, r.tls_version.as_deref());
        b.text(c.server_name, r.server_name.as_deref());
        b.text(c.client_class, Some(class.as_str()));
        b.text(c.client_name, name.as_deref());
        b.map(c.attrs, r.attrs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
        b.end_row();
    }

    fn finish(&mut self) -> Result<Option<RecordBatch>, arrow_schema::ArrowError> {
        if self.http.is_empty() {
            return Ok(None);
        }
        self.http.finish().map(Some)
    }
}

impl LineParser for HttpLines {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn push(&mut self, node: &str, line: &[u8], _read_ts: i64) -> Result<Parsed, String> {
        let r = parse(line).map_err(|e| e.to_string())?;
        self.push_http(node, &r);
        Ok(Parsed::Row)
    }

    fn records(&mut self, source: &'static str) -> Result<Vec<Encoded>, SourceError> {
        tailed::table_records(source, Table::Http, self.http.finish())
    }
}

/// Builds the `http` and `logs` batches of a run of lines as the source does, for the
/// benchmark, the fuzz target and the fixture tests.
#[derive(Debug)]
pub struct CaddyRows {
    lines: ParsedLines<HttpLines>,
}

impl Default for CaddyRows {
    fn default() -> Self {
        Self::new()
    }
}

impl CaddyRows {
    /// Empty builders.
    pub fn new() -> CaddyRows {
        CaddyRows { lines: ParsedLines::new(HttpLines::new()) }
    }

    /// Adds the row of one line: `http` when it parses, else a `caddy-unparsed` log row
    /// stamped `read_ts` (microseconds). Returns whether it parsed.
    pub fn push(&mut self, node: &str, line: &[u8], file: &str, truncated: bool, read_ts: i64) -> bool {
        self.lines.push(node, line, file, truncated, read_ts)
    }

    /// Rows added since the last `finish`.
    pub fn len(&self) -> usize {
        self.lines.parser.http.len() + self.lines.unparsed.len()
    }

    /// Whether no row was added since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `http` and `logs` batches (`None` when empty); the builders start empty again.
    pub fn finish(&mut self) -> Result<(Option<RecordBatch>, Option<RecordBatch>), arrow_schema::ArrowError> {
        let l = &mut self.lines;
        l.parse_errors = 0;
        let http = l.parser.finish()?;
        let logs = if l.unparsed.is_empty() { None } else { Some(l.unparsed.finish()?) };
        Ok((http, logs))
    }
}

/// The running source.
#[derive(Debug)]
pub struct CaddySource {
    config: CaddyConfig,
    ctx: SourceContext,
}

impl CaddySource {
    /// A source over `config`, writing through `ctx`.
    pub fn new(config: CaddyConfig, ctx: SourceContext) -> CaddySource {
        CaddySource { config, ctx }
    }

    /// Follows the files until `cancel`; returns early only on a spool or state error.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let CaddySource { config, ctx } = self;
        let tailed = TailedConfig {
            source: SOURCE,
            tail: config.tail,
            batch_lines: config.batch_lines,
            batch_wait: config.batch_wait,
            gather: config.batch_wait,
            multiline: None,
        };
        TailedSource::new(tailed, HttpLines::new(), ctx).run(cancel).await
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::{CaddyConfig, CaddySource, SOURCE};
    use crate::config::Config;
    use crate::sources::test_support::{context, drain};
    use crate::tail::{StartAt, TailConfig};

    /// Lines that come in several polls within `batch_wait` of the first make one batch.
    #[tokio::test]
    async fn a_batch_collects_the_lines_of_batch_wait_after_its_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let fixture = String::from_utf8_lossy(include_bytes!("../../../../fixtures/caddy/access.log"));
        let lines: Vec<&str> = fixture.lines().filter(|l| l.starts_with('{')).take(3).collect();
        let append = |l: &str| {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
            writeln!(f, "{l}").unwrap();
        };
        append(lines[0]);
        let config = CaddyConfig {
            enabled: true,
            tail: TailConfig {
                patterns: vec![log.display().to_string()],
                start_at: StartAt::Beginning,
                max_line_bytes: 1 << 20,
                poll_interval: Duration::from_millis(20),
            },
            batch_lines: 10,
            batch_wait: Duration::from_millis(600),
        };
        let ctx = context(dir.path()).await;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(CaddySource::new(config, ctx.clone()).run(cancel.clone()));
        tokio::time::sleep(Duration::from_millis(150)).await;
        append(lines[1]);
        tokio::time::sleep(Duration::from_millis(150)).await;
        append(lines[2]);
        let read = || ctx.source_stats(SOURCE).read.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while read() < 3 {
            assert!(tokio::time::Instant::now() < deadline, "lines not read");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
        task.await.unwrap().unwrap();
        let spooled = drain(&ctx).await;
        let http: Vec<usize> = spooled.iter().filter(|s| s.table == "http").map(|s| s.rows().len()).collect();
        assert_eq!(http, [3], "one batch of three rows");
    }

    #[test]
    fn the_example_section_parses_and_unknown_keys_are_rejected() {
        let example = include_str!("../../../examples/collector.toml");
        let c = Config::from_toml(example, None).unwrap();
        assert!(!c.caddy.enabled);
        assert_eq!(c.caddy.tail.patterns, ["/var/log/caddy/access*.log"]);
        assert_eq!(c.caddy.tail.max_line_bytes, 1 << 20);
        assert_eq!(c.caddy.batch_lines, 10_000);
        let err = format!("{:#}", Config::from_toml("[caddy]\npath = [\"x\"]\n", Some("t")).unwrap_err());
        assert!(err.contains("path"), "{err}");
        assert!(Config::from_toml("[caddy]\nmax_line_bytes = \"10B\"\n", Some("t")).is_err());
        assert!(Config::from_toml("[caddy]\nenabled = true\npaths = []\n", Some("t")).is_err());
    }
}
