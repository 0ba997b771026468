//! `lake.toml`: the serde file layer, validated into the typed [`Config`].
//!
//! Every key has a default that runs on one machine with nothing else installed; unknown
//! keys are errors naming the key and line. Tokens may be given inline (fine for a
//! generated demo config) or, better, through environment variables set by systemd's
//! `EnvironmentFile=`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use lake_format::units::{ByteSize, Dur};
use lake_format::wire::validate_node_name;
use lake_query::named::{NamedQuery, Panel};

const fn default_version() -> u32 {
    1
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/lake")
}
fn default_listen() -> String {
    "127.0.0.1:7470".into()
}
const fn default_header_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
const fn default_body_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
const fn default_request_timeout() -> Dur {
    Dur(Duration::from_secs(120))
}
const fn default_max_body() -> ByteSize {
    ByteSize(64 << 20)
}
const fn default_flush_interval() -> Dur {
    Dur(Duration::from_secs(30))
}
const fn default_flush_size() -> ByteSize {
    ByteSize(32 << 20)
}
const fn default_max_rows() -> usize {
    100_000
}
const fn default_query_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_memory_limit() -> String {
    "2GB".into()
}
const fn default_threads() -> usize {
    2
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default = "default_version")]
    version: u32,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default)]
    nodes: Vec<NodeFile>,
    #[serde(default)]
    ingest: IngestFile,
    #[serde(default)]
    query: QueryFile,
    #[serde(default)]
    queries: Vec<NamedQueryFile>,
    /// Alerting: `[alerts]`, `[[rules]]`, `[notify]` (parsed and validated in `lake_query::alerts`).
    #[serde(default)]
    alerts: lake_query::alerts::rules::AlertsFile,
    #[serde(default)]
    rules: Vec<lake_query::alerts::rules::RuleFile>,
    #[serde(default)]
    notify: lake_query::alerts::notify::NotifyFile,
    #[serde(default)]
    compaction: crate::compact::CompactionFile,
    #[serde(default)]
    custom: crate::custom::config::CustomFile,
    #[serde(default)]
    archive: crate::archive::config::ArchiveFile,
    #[serde(default)]
    retention: crate::retention::RetentionFile,
    #[serde(default)]
    admin: crate::http::admin::AdminFile,
    #[serde(default)]
    http: HttpFile,
}

/// `[http]`: how long the server waits on a client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    #[serde(default = "default_header_timeout")]
    header_timeout: Dur,
    #[serde(default = "default_body_timeout")]
    body_timeout: Dur,
    #[serde(default = "default_request_timeout")]
    request_timeout: Dur,
}

impl Default for HttpFile {
    fn default() -> Self {
        HttpFile { header_timeout: default_header_timeout(), body_timeout: default_body_timeout(), request_timeout: default_request_timeout() }
    }
}

/// The validated `[http]` section: the server's limits on slow clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// A request's line and headers must arrive within this (default 30s); an idle
    /// keep-alive connection is closed after it too, so it stays above the collectors'
    /// shipping cadence (10s) to spare them reconnections and close races.
    pub header: Duration,
    /// A request's body must arrive within this after its headers (default 60s).
    pub body: Duration,
    /// A request must be answered within this (default 120s), else 408.
    pub request: Duration,
}

/// One `[[queries]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedQueryFile {
    name: String,
    #[serde(default)]
    description: String,
    sql: String,
    #[serde(default = "default_panel")]
    kind: Panel,
}

const fn default_panel() -> Panel {
    Panel::Table
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    name: String,
    token: Option<String>,
    token_env: Option<String>,
}

impl fmt::Debug for NodeFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeFile").field("name", &self.name).field("token_env", &self.token_env).finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestFile {
    #[serde(default = "default_max_body")]
    max_body: ByteSize,
    #[serde(default = "default_flush_interval")]
    flush_interval: Dur,
    #[serde(default = "default_flush_size")]
    flush_size: ByteSize,
}

impl Default for IngestFile {
    fn default() -> Self {
        IngestFile { max_body: default_max_body(), flush_interval: default_flush_interval(), flush_size: default_flush_size() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryFile {
    #[serde(default)]
    read_tokens: Vec<String>,
    #[serde(default)]
    read_tokens_env: Option<String>,
    #[serde(default = "default_max_rows")]
    max_rows: usize,
    #[serde(default = "default_query_timeout")]
    timeout: Dur,
    #[serde(default = "default_memory_limit")]
    memory_limit: String,
    #[serde(default = "default_threads")]
    threads: usize,
}

impl fmt::Debug for QueryFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryFile").field("max_rows", &self.max_rows).finish_non_exhaustive()
    }
}

impl Default for QueryFile {
    fn default() -> Self {
        QueryFile {
            read_tokens: Vec::new(),
            read_tokens_env: None,
            max_rows: default_max_rows(),
            timeout: default_query_timeout(),
            memory_limit: default_memory_limit(),
            threads: default_threads(),
        }
    }
}

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A node allowed to ingest, and its token.
#[derive(Debug, Clone)]
pub struct NodeToken {
    /// Node name; batch ids sent with the token must carry it.
    pub node: String,
    /// The bearer token.
    pub token: Secret,
}

/// The validated configuration of `lake serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root of the lake's files.
    pub data_dir: PathBuf,
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Ingest tokens, one per node.
    pub node_tokens: Vec<NodeToken>,
    /// Largest ingest body accepted (413 beyond).
    pub max_body: usize,
    /// Flush buffered rows at least this often.
    pub flush_interval: Duration,
    /// Flush when buffered rows take this much memory.
    pub flush_size: usize,
    /// Tokens accepted by the SQL API; empty means no auth (loopback use only).
    pub read_tokens: Vec<Secret>,
    /// Limits of each query.
    pub limits: lake_query::engine::Limits,
    /// Named queries (CLI, SQL API, Grafana): the shipped defaults, then the
    /// `[[queries]]` of the file; one named like a default replaces it.
    pub queries: Vec<NamedQuery>,
    /// Alert rules (built-in and `[[rules]]`), notification channels and alerting settings.
    pub alerts: std::sync::Arc<lake_query::alerts::rules::AlertsConfig>,
    /// `[compaction]`: merging small files (default: 128 MiB files, every 10 minutes).
    pub compaction: crate::compact::CompactionConfig,
    /// `[custom]`: defaults and per-table options of custom tables.
    pub custom: crate::custom::TablesConfig,
    /// `[archive]`: where and when finished partitions are archived (default: a local
    /// directory `<data_dir>/archive`, nightly at 02:00 UTC).
    pub archive: crate::archive::config::ArchiveConfig,
    /// `[retention]`: how long partitions stay local and archived (default: forever).
    pub retention: crate::retention::RetentionConfig,
    /// `[admin] tokens`: bearer tokens of the admin API; empty means loopback clients only.
    pub admin_tokens: Vec<Secret>,
    /// `[http]`: header, body and request timeouts of the HTTP server.
    pub http: HttpTimeouts,
}

impl Config {
    /// Loads and validates a file; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                Config::parse(&text, |k| std::env::var(k).ok()).with_context(|| format!("in {}", p.display()))
            }
            None => Config::parse("", |k| std::env::var(k).ok()),
        }
    }

    /// Parses and validates TOML text; `env` resolves `*_env` keys.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let file: ConfigFile = toml::from_str(text)?;
        if file.version != 1 {
            bail!("version = {} is not supported (this lake reads version = 1)", file.version);
        }
        let listen: SocketAddr = file.listen.parse().map_err(|_| {
            anyhow::anyhow!(
                "listen = {:?} is not an IP address and port: e.g. \"127.0.0.1:7470\" (this machine only) or the node's Tailscale address, \"100.101.102.103:7470\"",
                file.listen
            )
        })?;
        let mut node_tokens: Vec<NodeToken> = Vec::new();
        for (i, n) in file.nodes.iter().enumerate() {
            validate_node_name(&n.name).with_context(|| format!("nodes[{i}].name"))?;
            if node_tokens.iter().any(|t| t.node == n.name) {
                bail!("nodes[{i}].name = {:?}: another [[nodes]] entry has this name; each node needs its own name and token", n.name);
            }
            let token = match (&n.token, &n.token_env) {
                (Some(t), None) => t.clone(),
                (None, Some(var)) => env(var)
                    .with_context(|| format!("nodes[{i}] ({}): environment variable {var} (token_env) is not set", n.name))?,
                _ => bail!("nodes[{i}] ({}): give exactly one of token or token_env", n.name),
            };
            if token.len() < 16 {
                bail!("nodes[{i}] ({}): token must be at least 16 characters", n.name);
            }
            if node_tokens.iter().any(|t| t.token.0 == token) {
                bail!("nodes[{i}] ({}): token is shared with another node", n.name);
            }
            node_tokens.push(NodeToken { node: n.name.clone(), token: Secret(token) });
        }
        let mut read_tokens: Vec<Secret> = file.query.read_tokens.iter().cloned().map(Secret).collect();
        if let Some(var) = &file.query.read_tokens_env {
            let v = env(var).with_context(|| format!("query.read_tokens_env: environment variable {var} is not set"))?;
            read_tokens.extend(v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Secret(s.to_string())));
        }
        if read_tokens.iter().any(|r| node_tokens.iter().any(|n| n.token == *r)) {
            bail!("query.read_tokens: a read token must differ from every ingest token");
        }
        // A WAL record carries at most 1 GiB; keep bodies well under it.
        if file.ingest.max_body.0 > 512 << 20 || file.ingest.max_body.0 < 1024 {
            bail!("ingest.max_body = {} must be between 1KiB and 512MiB", file.ingest.max_body);
        }
        if file.query.max_rows == 0 || file.query.threads == 0 {
            bail!("query.max_rows and query.threads must be at least 1");
        }
        let user: Vec<NamedQuery> = file
            .queries
            .into_iter()
            .map(|q| NamedQuery { name: q.name, description: q.description, sql: q.sql, kind: q.kind })
            .collect();
        let queries = lake_query::named::merge(user).context("[[queries]]")?;
        let nodes: Vec<String> = node_tokens.iter().map(|t| t.node.clone()).collect();
        let cx = lake_query::alerts::rules::BuildContext { nodes: &nodes, listen, env: &env };
        let alerts = std::sync::Arc::new(lake_query::alerts::rules::build(file.alerts, file.rules, file.notify, &cx)?);
        let compaction = file.compaction.validate()?;
        let custom = file.custom.validate()?;
        let archive = file.archive.validate(&file.data_dir, &env)?;
        let retention = file.retention.validate()?;
        let others: Vec<&Secret> = node_tokens.iter().map(|n| &n.token).chain(&read_tokens).collect();
        let admin_tokens = file.admin.validate(&env, &others)?;
        let http = file.http.validate(file.query.timeout.0)?;
        Ok(Config {
            data_dir: file.data_dir,
            listen,
            node_tokens,
            max_body: usize::try_from(file.ingest.max_body.0).unwrap_or(usize::MAX),
            flush_interval: file.ingest.flush_interval.0,
            flush_size: usize::try_from(file.ingest.flush_size.0).unwrap_or(usize::MAX),
            read_tokens,
            limits: lake_query::engine::Limits {
                max_rows: file.query.max_rows,
                timeout: file.query.timeout.0,
                memory_limit: file.query.memory_limit,
                threads: file.query.threads,
            },
            queries,
            alerts,
            compaction,
            custom,
            archive,
            retention,
            admin_tokens,
            http,
        })
    }
}

impl HttpFile {
    fn validate(self, query_timeout: Duration) -> anyhow::Result<HttpTimeouts> {
        let t = HttpTimeouts { header: self.header_timeout.0, body: self.body_timeout.0, request: self.request_timeout.0 };
        for (key, d) in [("header_timeout", t.header), ("body_timeout", t.body), ("request_timeout", t.request)] {
            if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
                bail!("http.{key} = {}: must be between 1s and 1h", humantime::format_duration(d));
            }
        }
        if t.body >= t.request {
            bail!(
                "http.body_timeout ({}) must be less than http.request_timeout ({}): the request timeout would cut the body off first",
                humantime::format_duration(t.body),
                humantime::format_duration(t.request)
            );
        }
        if query_timeout >= t.request {
            bail!(
                "query.timeout ({}) must be less than http.request_timeout ({}), or long queries are answered 408 before their own limit",
                humantime::format_duration(query_timeout),
                humantime::format_duration(t.request)
            );
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_with_nothing_configured() {
        let c = Config::parse("", |_| None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7470");
        assert_eq!(c.flush_interval, Duration::from_secs(30));
        assert!(c.node_tokens.is_empty());
        let http = HttpTimeouts { header: Duration::from_secs(30), body: Duration::from_secs(60), request: Duration::from_secs(120) };
        assert_eq!(c.http, http);
    }

    #[test]
    fn the_example_parses() {
        let text = include_str!("../examples/lake.toml");
        let env = |k: &str| match k {
            "LAKE_TOKEN_GATEWAY" => Some("g".repeat(32)),
            "LAKE_ADMIN_TOKENS" => Some(format!("{},{}", "a".repeat(20), "b".repeat(20))),
            _ => None,
        };
        let c = Config::parse(text, env).unwrap();
        assert_eq!(c.admin_tokens.len(), 2);
        assert_eq!(c.retention.policy(&lake_format::Table::Metrics.into()).keep_local_days, Some(14));
        assert_eq!(c.node_tokens.len(), 2);
        assert_eq!(c.queries.len(), lake_query::named::defaults().len() + 1);
    }

    #[test]
    fn errors_name_the_problem() {
        let e = Config::parse("[ingest]\nflush_intervall = \"1s\"", |_| None).unwrap_err();
        assert!(format!("{e:#}").contains("flush_intervall"), "{e:#}");
        let e = Config::parse("[[nodes]]\nname = \"../x\"\ntoken = \"0123456789abcdef\"", |_| None).unwrap_err();
        assert!(format!("{e:#}").contains("nodes[0].name"), "{e:#}");
        let e = Config::parse("[[nodes]]\nname = \"a\"\ntoken_env = \"NOPE\"", |_| None).unwrap_err();
        assert!(format!("{e:#}").contains("NOPE"), "{e:#}");
        let e = Config::parse("[ingest]\nmax_body = \"2GiB\"", |_| None).unwrap_err();
        assert!(format!("{e:#}").contains("ingest.max_body"), "{e:#}");
        let e = Config::parse("version = 2", |_| None).unwrap_err();
        assert!(format!("{e:#}").contains("version"), "{e:#}");
        let e = Config::parse("[ingest]\nflush_interval = \"soon\"", |_| None).unwrap_err();
        assert!(format!("{e:#}").contains("soon"), "{e:#}");
    }

    #[test]
    fn named_queries_add_to_the_defaults() {
        let defaults = lake_query::named::defaults();
        assert_eq!(Config::parse("", |_| None).unwrap().queries, defaults);
        let text = r#"
[[queries]]
name = "errors_per_unit"
description = "journald errors per unit"
sql = "SELECT $__timeGroup(ts, $__interval) AS time, unit, count(*) AS errors FROM logs WHERE priority <= 3 AND $__timeFilter(ts) GROUP BY 1, 2"
kind = "timeseries"

[[queries]]
name = "bans_per_jail"
sql = "SELECT jail, count(*) AS bans FROM bans GROUP BY 1"
"#;
        let q = Config::parse(text, |_| None).unwrap().queries;
        assert_eq!(q.len(), defaults.len() + 1);
        let replaced = q.iter().find(|q| q.name == "bans_per_jail").unwrap();
        assert_eq!((replaced.kind, replaced.description.as_str()), (Panel::Table, ""));
        let added = q.last().unwrap();
        assert_eq!((added.name.as_str(), added.kind), ("errors_per_unit", Panel::TimeSeries));

        for (bad, says) in [
            ("[[queries]]\nname = \"Bad Name\"\nsql = \"select 1\"", "Bad Name"),
            ("[[queries]]\nname = \"a\"\nsql = \"select 1\"\n[[queries]]\nname = \"a\"\nsql = \"select 2\"", "twice"),
            ("[[queries]]\nname = \"a\"\nsql = \"select 1\"\nkind = \"graph\"", "graph"),
            ("[[queries]]\nname = \"a\"\nsql = \"select 1\"\nsqll = \"x\"", "sqll"),
            ("[[queries]]\nname = \"a\"\nsql = \" \"", "no sql"),
        ] {
            let e = Config::parse(bad, |_| None).unwrap_err();
            assert!(format!("{e:#}").contains(says), "{bad}: {e:#}");
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let c = Config::parse("[query]\nread_tokens = [\"supersecretsupersecret\"]", |_| None).unwrap();
        assert!(!format!("{c:?}").contains("supersecret"));
    }
}
