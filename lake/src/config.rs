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
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7470))
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
    listen: SocketAddr,
    #[serde(default)]
    nodes: Vec<NodeFile>,
    #[serde(default)]
    ingest: IngestFile,
    #[serde(default)]
    query: QueryFile,
    #[serde(default)]
    queries: Vec<NamedQueryFile>,
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
        let mut node_tokens: Vec<NodeToken> = Vec::new();
        for (i, n) in file.nodes.iter().enumerate() {
            validate_node_name(&n.name).with_context(|| format!("nodes[{i}].name"))?;
            if node_tokens.iter().any(|t| t.node == n.name) {
                bail!("nodes[{i}]: node {:?} is listed twice", n.name);
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
        Ok(Config {
            data_dir: file.data_dir,
            listen: file.listen,
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
        })
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
    }

    #[test]
    fn the_example_parses() {
        let text = include_str!("../examples/lake.toml");
        let c = Config::parse(text, |k| (k == "LAKE_TOKEN_GATEWAY").then(|| "g".repeat(32))).unwrap();
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
