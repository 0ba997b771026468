//! `prometheus_scrape`: scrape `/metrics` endpoints of local exporters (node_exporter,
//! Caddy's own metrics, any instrumented app) into `metrics`, so nothing already
//! instrumented needs a second agent.
//!
//! Config: `[[prometheus_scrape]]` entries, one task each. Every `interval` a GET of `url`
//! (Accept: the text format 0.0.4, bearer token from an environment variable if set,
//! `timeout` for the whole request, body bounded by `max_bytes`), parsed by
//! [`super::prometheus`]. Out, as one droppable spool group per scrape:
//! - every sample as a `metrics` row, labels `job = <name>`, `instance = <host:port>` and
//!   the configured `labels` (a sample's own label of the same name is kept as
//!   `exported_<label>`), `ts` the sample's timestamp or the scrape's start;
//! - per scrape, like Prometheus: `up` (1 when the scrape succeeded),
//!   `scrape_duration_seconds`, `scrape_samples_scraped`, with the same target labels;
//! - lines that do not parse: `logs` rows (source `prometheus_scrape-unparsed`, raw line,
//!   target and line number), counted in `parse_errors`; the rest of the scrape is kept;
//! - a failed scrape (connection, timeout, non-2xx status, body over `max_bytes`, more
//!   than `sample_limit` samples — the whole scrape is then refused, as Prometheus does):
//!   `up = 0`, a `logs` row (source `prometheus_scrape`, ident `<name>`), counted in
//!   `errors`, logged (first, every 10th in a row, recovery).
//!
//! Counters: source `prometheus_scrape/<name>`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::ensure;
use lake_format::error::error_chain;
use lake_format::logs::LogsBuilder;
use lake_format::rows::{now_micros, MetricsBuilder};
use lake_format::units::{ByteSize, Dur};
use lake_format::Table;
use serde::Deserialize;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::notes::{FailureLog, Note, PRIORITY_ERR};
use super::prometheus;
use super::unparsed::UnparsedRows;
use super::{Encoded, SourceContext, SourceError};
use crate::config::Secret;
use crate::stats::Stats;

/// `source` of the `logs` rows about failed scrapes.
pub const NOTE_SOURCE: &str = "prometheus_scrape";
/// The Accept header: the text format, as Prometheus asks for it when it falls back.
const ACCEPT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

const fn default_interval() -> Dur {
    Dur(Duration::from_secs(30))
}
const fn default_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
const fn default_max_bytes() -> ByteSize {
    ByteSize(16 << 20)
}
const fn default_sample_limit() -> usize {
    50_000
}

/// One `[[prometheus_scrape]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScrapeFile {
    /// Unique name, the `job` label: `[a-z0-9][a-z0-9_-]*`. Required.
    name: String,
    /// The endpoint, e.g. `http://127.0.0.1:9100/metrics`. Required.
    url: String,
    /// Time between two scrapes. Default 30s.
    #[serde(default = "default_interval")]
    interval: Dur,
    /// Time one scrape may take, connect included. Default 10s; at most `interval`.
    #[serde(default = "default_timeout")]
    timeout: Dur,
    /// Labels added to every row of the target.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Environment variable holding a bearer token for the endpoint. Default none.
    #[serde(default)]
    bearer_token_env: Option<String>,
    /// Largest body accepted. Default 16MiB.
    #[serde(default = "default_max_bytes")]
    max_bytes: ByteSize,
    /// Most samples accepted per scrape (0: no limit). Default 50000.
    #[serde(default = "default_sample_limit")]
    sample_limit: usize,
}

/// A validated `[[prometheus_scrape]]` entry.
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    /// The entry's name (`job`).
    pub name: String,
    /// Counters name: `prometheus_scrape/<name>`.
    pub source: &'static str,
    /// The endpoint.
    pub url: reqwest::Url,
    /// Time between two scrapes.
    pub interval: Duration,
    /// Time one scrape may take.
    pub timeout: Duration,
    /// `job`, `instance` and the configured labels.
    pub labels: Vec<(String, String)>,
    /// Bearer token read from the environment at load.
    pub bearer_token: Option<Secret>,
    /// Largest body accepted.
    pub max_bytes: u64,
    /// Most samples per scrape (0: none).
    pub sample_limit: usize,
}

/// Validates every entry; names must be unique. `env` looks a variable up.
pub(crate) fn validate_all(
    files: Vec<ScrapeFile>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<ScrapeConfig>> {
    super::validate_named("prometheus_scrape", files, |f| f.name.clone(), |f, section| f.validate(section, env))
}

impl ScrapeFile {
    fn validate(self, section: &str, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<ScrapeConfig> {
        let b = self.name.as_bytes();
        ensure!(
            !b.is_empty()
                && b.len() <= 63
                && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-'),
            "{section}.name: use [a-z0-9][a-z0-9_-]*, at most 63 characters"
        );
        let url = reqwest::Url::parse(&self.url).map_err(|e| anyhow::anyhow!("{section}.url = {:?}: {e}", self.url))?;
        ensure!(
            matches!(url.scheme(), "http" | "https") && url.host_str().is_some(),
            "{section}.url = {:?}: must be an http:// or https:// URL with a host",
            self.url
        );
        super::check_schedule(section, self.interval.0, self.timeout.0, "")?;
        ensure!(self.max_bytes.0 >= 1024, "{section}.max_bytes must be at least 1KiB");
        super::exec::check_labels(section, &self.labels)?;
        let bearer_token = super::secret(section, "bearer_token", None, self.bearer_token_env.clone(), None, env)?;
        let instance = match (url.host_str(), url.port_or_known_default()) {
            // host_str() keeps the brackets of an IPv6 address.
            (Some(h), Some(p)) if h.contains(':') && !h.starts_with('[') => format!("[{h}]:{p}"),
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => String::new(),
        };
        let mut labels: Vec<(String, String)> =
            vec![("job".to_string(), self.name.clone()), ("instance".to_string(), instance)];
        for (k, v) in self.labels {
            match labels.iter_mut().find(|(l, _)| *l == k) {
                Some(slot) => slot.1 = v,
                None => labels.push((k, v)),
            }
        }
        Ok(ScrapeConfig {
            source: super::leak_name(format!("prometheus_scrape/{}", self.name)),
            name: self.name,
            url,
            interval: self.interval.0,
            timeout: self.timeout.0,
            labels,
            bearer_token,
            max_bytes: self.max_bytes.0,
            sample_limit: self.sample_limit,
        })
    }
}

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// No answer.
    #[error("request failed: {0}")]
    Request(String),
    /// Not 2xx.
    #[error("status {0}")]
    Status(u16),
    /// Over `max_bytes`.
    #[error("body larger than max_bytes ({0} bytes)")]
    TooLarge(u64),
    /// Over `sample_limit`.
    #[error("{0} samples, more than sample_limit ({1}): scrape refused")]
    TooManySamples(usize, usize),
}

/// GETs the endpoint; the body, bounded.
pub async fn fetch(client: &reqwest::Client, config: &ScrapeConfig) -> Result<Vec<u8>, ScrapeError> {
    let mut req = client
        .get(config.url.clone())
        .header(reqwest::header::ACCEPT, ACCEPT)
        .header("X-Prometheus-Scrape-Timeout-Seconds", format!("{}", config.timeout.as_secs_f64()));
    if let Some(t) = &config.bearer_token {
        req = req.bearer_auth(t.expose());
    }
    let mut resp = req.send().await.map_err(|e| ScrapeError::Request(error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(ScrapeError::Status(resp.status().as_u16()));
    }
    if let Some(len) = resp.content_length().filter(|l| *l > config.max_bytes) {
        return Err(ScrapeError::TooLarge(len));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| ScrapeError::Request(error_chain(&e)))? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > config.max_bytes {
            return Err(ScrapeError::TooLarge(body.len() as u64));
        }
    }
    Ok(body)
}

/// The rows of one scrape.
#[derive(Debug, Default)]
pub struct ScrapeRows {
    /// `metrics` and `logs` records.
    pub records: Vec<Encoded>,
    /// Samples kept.
    pub samples: u64,
    /// Lines kept raw.
    pub bad_lines: u64,
    /// Why the scrape failed, if it did.
    pub failure: Option<String>,
}

/// Turns a scrape's result into rows (pure: `started` µs and `elapsed` are given).
pub fn rows_of_scrape(
    config: &ScrapeConfig,
    node: &str,
    started: i64,
    elapsed: Duration,
    result: Result<Vec<u8>, ScrapeError>,
) -> Result<ScrapeRows, SourceError> {
    let name = config.source;
    let encode = |e: arrow_schema::ArrowError| SourceError::Encode { source_name: name, error: e.to_string() };
    let mut out = ScrapeRows::default();
    let mut metrics = MetricsBuilder::new();
    let mut unparsed = UnparsedRows::new(NOTE_SOURCE);
    let body;
    let parsed = match result {
        Err(e) => Err(e),
        Ok(b) => {
            body = b;
            let e = prometheus::parse_bytes(&body);
            if config.sample_limit > 0 && e.samples.len() > config.sample_limit {
                Err(ScrapeError::TooManySamples(e.samples.len(), config.sample_limit))
            } else {
                Ok(e)
            }
        }
    };
    let samples = match parsed {
        Ok(e) => {
            prometheus::push_rows(&mut metrics, node, &e.samples, started, &config.labels);
            let url = config.url.as_str();
            for err in &e.errors {
                out.bad_lines += 1;
                let n = err.line_no.to_string();
                unparsed.push_from(node, &err.raw, &[("target", url), ("line", &n)], &err.reason, false, started);
            }
            out.samples = e.samples.len() as u64;
            e.samples.len()
        }
        Err(e) => {
            out.failure = Some(format!("scrape of {} failed: {e}", config.url));
            0
        }
    };
    let target: Vec<(&str, &str)> = config.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let up = if out.failure.is_none() { 1.0 } else { 0.0 };
    metrics.push(started, node, "up", up, &target);
    metrics.push(started, node, "scrape_duration_seconds", elapsed.as_secs_f64(), &target);
    metrics.push(started, node, "scrape_samples_scraped", samples as f64, &target);
    out.records.push(SourceContext::encode_batch(name, Table::Metrics, &metrics.finish())?);
    let mut notes = LogsBuilder::new();
    if let Some(f) = &out.failure {
        Note {
            ts: started,
            node,
            source: NOTE_SOURCE,
            ident: &config.name,
            priority: PRIORITY_ERR,
            message: f,
            attrs: &[("url", config.url.as_str())],
        }
        .push_to(&mut notes);
    }
    let logs = [unparsed.finish().map_err(encode)?, notes.finish().map_err(encode)?];
    out.records.extend(SourceContext::encode_batches(name, Table::Logs, &logs)?);
    Ok(out)
}

/// The running `[[prometheus_scrape]]` entry.
#[derive(Debug)]
pub struct ScrapeSource {
    config: ScrapeConfig,
    ctx: SourceContext,
}

impl ScrapeSource {
    /// A source for one entry.
    pub fn new(config: ScrapeConfig, ctx: SourceContext) -> Self {
        ScrapeSource { config, ctx }
    }

    /// Scrapes every interval until `cancel`.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let ScrapeSource { config, ctx } = self;
        let stats = ctx.source_stats(config.source);
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("lake-collector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::Start { source_name: config.source, reason: e.to_string() })?;
        info!(job = %config.name, url = %config.url, interval = ?config.interval, "prometheus scrape started");
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failures = FailureLog::default();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let started = now_micros();
            let t0 = Instant::now();
            let result = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                r = fetch(&client, &config) => r,
            };
            let rows = rows_of_scrape(&config, &ctx.node, started, t0.elapsed(), result)?;
            Stats::add(&stats.read, rows.samples + rows.bad_lines);
            Stats::add(&stats.parse_errors, rows.bad_lines);
            failures.record(config.source, rows.failure.as_deref(), &stats.errors);
            ctx.emit_encoded_droppable(config.source, rows.records).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> anyhow::Result<Vec<ScrapeConfig>> {
        #[derive(Deserialize)]
        struct F {
            prometheus_scrape: Vec<ScrapeFile>,
        }
        let f: F = toml::from_str(toml)?;
        validate_all(f.prometheus_scrape, &|v| (v == "TOK").then(|| "s3cret".to_string()))
    }

    #[test]
    fn config_builds_target_labels_and_checks_fields() {
        let c = config("[[prometheus_scrape]]\nname = \"node\"\nurl = \"http://127.0.0.1:9100/metrics\"\nlabels = { role = \"db\", job = \"nodes\" }\nbearer_token_env = \"TOK\"\n").unwrap();
        let c = &c[0];
        assert_eq!(
            c.labels,
            [
                ("job".to_string(), "nodes".to_string()),
                ("instance".into(), "127.0.0.1:9100".into()),
                ("role".into(), "db".into())
            ]
        );
        assert_eq!(c.bearer_token.as_ref().unwrap().expose(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.source, "prometheus_scrape/node");
        let v6 = config("[[prometheus_scrape]]\nname = \"a\"\nurl = \"https://[::1]/metrics\"\n").unwrap();
        assert_eq!(v6[0].labels[1].1, "[::1]:443");
        for bad in [
            "[[prometheus_scrape]]\nname = \"a\"\nurl = \"ftp://x/\"\n",
            "[[prometheus_scrape]]\nname = \"A\"\nurl = \"http://x/\"\n",
            "[[prometheus_scrape]]\nname = \"a\"\nurl = \"http://x/\"\nbearer_token_env = \"MISSING\"\n",
            "[[prometheus_scrape]]\nname = \"a\"\nurl = \"http://x/\"\ntimeout = \"1m\"\ninterval = \"10s\"\n",
            "[[prometheus_scrape]]\nname = \"a\"\nurl = \"http://x/\"\n[[prometheus_scrape]]\nname = \"a\"\nurl = \"http://y/\"\n",
            "[[prometheus_scrape]]\nname = \"a\"\nurl = \"http://x/\"\nlabels = { \"bad-label\" = \"x\" }\n",
            "[[prometheus_scrape]]\nname = \"a\"\nurl = \"http://x/\"\nurls = []\n",
        ] {
            assert!(config(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_failed_scrape_is_up_0_with_a_note() {
        let c = config("[[prometheus_scrape]]\nname = \"n\"\nurl = \"http://127.0.0.1:1/metrics\"\n").unwrap();
        let r = rows_of_scrape(&c[0], "node", 5, Duration::from_millis(3), Err(ScrapeError::Status(503))).unwrap();
        assert_eq!(r.failure.as_deref(), Some("scrape of http://127.0.0.1:1/metrics failed: status 503"));
        assert_eq!(
            r.records.iter().map(|e| (e.table.as_str(), e.rows)).collect::<Vec<_>>(),
            [("metrics", 3), ("logs", 1)]
        );
        let mut limited = c[0].clone();
        limited.sample_limit = 1;
        let r = rows_of_scrape(&limited, "node", 5, Duration::ZERO, Ok(b"a 1\nb 2\n".to_vec())).unwrap();
        assert!(r.failure.unwrap().contains("sample_limit"));
        let r = rows_of_scrape(&c[0], "node", 5, Duration::ZERO, Ok(b"a 1\nbad line\nb 2\n".to_vec())).unwrap();
        assert_eq!((r.samples, r.bad_lines, r.failure), (2, 1, None));
        assert_eq!(
            r.records.iter().map(|e| (e.table.as_str(), e.rows)).collect::<Vec<_>>(),
            [("metrics", 5), ("logs", 1)]
        );
    }
}
