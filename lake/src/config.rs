//! `lake.toml`: the serde file layer, validated into the typed [`Config`].
//!
//! Every key has a default that runs on one machine with nothing else installed; unknown
//! keys are errors naming the key and line. Tokens are best kept out of this file: in the
//! tokens file `lake token` manages ([`crate::auth`], `[auth] tokens_file`), or here as
//! their SHA-256 (`token_sha256`, `read_tokens_sha256`, `[admin] tokens_sha256`). Plaintext
//! tokens (inline, or from environment variables set by systemd's `EnvironmentFile=`)
//! still work: they are hashed on load, and inline ones earn a warning at start.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::auth::{Key, KeySet, Role, TokenHash};
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
/// 16 MiB: ingest answers 503 past 4 × this of rows waiting or being flushed, which bounds
/// the buffered rows and the copy of them each query makes. Under the 8-collector ingest
/// bench (`http` rows, ~590 bytes each in Arrow; 20 s runs on 2 cores at load 20) the peak
/// RSS of `lake serve` was 567–621 MB at 32 MiB, 318–466 MB at 16 MiB, 273–379 MB at
/// 8 MiB, the rows/s the same within the noise.
const fn default_flush_size() -> ByteSize {
    ByteSize(16 << 20)
}
const fn default_max_days_per_batch() -> u32 {
    31
}
const fn default_decode_memory() -> ByteSize {
    ByteSize(256 << 20)
}
const fn default_max_connections() -> usize {
    1024
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
    compaction: crate::maintenance::compact::CompactionFile,
    #[serde(default)]
    custom: crate::custom::config::CustomFile,
    #[serde(default)]
    archive: crate::maintenance::archive::config::ArchiveFile,
    #[serde(default)]
    retention: crate::maintenance::retention::RetentionFile,
    #[serde(default)]
    admin: crate::http::admin::AdminFile,
    #[serde(default)]
    http: HttpFile,
    #[serde(default)]
    auth: AuthFile,
    /// `[heartbeat]`: the dead-man's switch out (none without the section).
    #[serde(default)]
    heartbeat: Option<crate::heartbeat::HeartbeatFile>,
    /// `[mcp]`: the MCP server for AI agents at `/mcp` (off without the section).
    #[serde(default)]
    mcp: crate::http::mcp::McpFile,
    /// `[pg]`: the PostgreSQL wire protocol (off without the section).
    #[serde(default)]
    pg: Option<crate::pg::PgFile>,
    /// `[[webhooks]]`: third parties' webhooks in (`POST /v1/hooks/<name>`).
    #[serde(default)]
    webhooks: Vec<crate::http::hooks::config::WebhookFile>,
    /// `[[jobs]]`: jobs that must run (cron monitoring).
    #[serde(default)]
    jobs: Vec<crate::jobs::config::JobFile>,
}

/// `[auth]`: where `lake token` keeps the tokens.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    /// Default `<data_dir>/tokens.toml`; a relative path is relative to lake.toml's directory.
    tokens_file: Option<PathBuf>,
}

/// One hash or several (`token_sha256 = "…"` or `["…", "…"]` during a changeover).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Hashes {
    One(String),
    Many(Vec<String>),
}

impl Hashes {
    fn list(&self) -> Vec<&str> {
        match self {
            Hashes::One(h) => vec![h.as_str()],
            Hashes::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// The keys of `lake.toml` for `role`: inline plaintext (`inline`, named `key`), from the
/// environment variable `env_key` (comma-separated), and as hashes (`hash_key`). Plaintext
/// shorter than 16 characters is refused; inline plaintext adds a warning.
pub(crate) struct KeySource<'a> {
    pub(crate) role: Role,
    pub(crate) node: Option<&'a str>,
    pub(crate) key: &'a str,
    pub(crate) inline: &'a [Secret],
    pub(crate) env_key: &'a str,
    pub(crate) env_var: Option<&'a str>,
    pub(crate) hash_key: &'a str,
    pub(crate) hashes: &'a [&'a str],
}

impl KeySource<'_> {
    pub(crate) fn keys(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<Vec<Key>> {
        let node = self.node.map(str::to_string);
        let mut keys = Vec::new();
        let mut plain = |source: String, t: &str| -> anyhow::Result<()> {
            if t.len() < 16 {
                bail!("{source}: a token must be at least 16 characters");
            }
            keys.push(Key::plain(format!("lake.toml {source}"), self.role, node.clone(), t));
            Ok(())
        };
        for (i, t) in self.inline.iter().enumerate() {
            plain(
                if self.inline.len() == 1 && !self.key.ends_with('s') {
                    self.key.to_string()
                } else {
                    format!("{}[{i}]", self.key)
                },
                t.expose(),
            )?;
        }
        if !self.inline.is_empty() {
            let hash_key = self.hash_key.rsplit('.').next().unwrap_or(self.hash_key);
            warnings.push(format!(
                "{}: plaintext token in lake.toml; keep only its SHA-256 there ({hash_key}, from `printf %s \"$TOKEN\" | sha256sum`) or use the tokens file (`lake token add`)",
                self.key
            ));
        }
        if let Some(var) = self.env_var {
            let v = env(var).with_context(|| format!("{}: environment variable {var} is not set", self.env_key))?;
            for (i, t) in v.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
                plain(format!("{} ({var}[{i}])", self.env_key), t)?;
            }
        }
        for (i, h) in self.hashes.iter().enumerate() {
            let at = if self.hashes.len() == 1 { self.hash_key.to_string() } else { format!("{}[{i}]", self.hash_key) };
            let hash = TokenHash::from_hex(h).map_err(|e| anyhow::anyhow!("{at} = {h:?}: {e}"))?;
            keys.push(Key {
                source: format!("lake.toml {at}"),
                role: self.role,
                node: node.clone(),
                hash,
                expires: None,
            });
        }
        Ok(keys)
    }
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
    #[serde(default = "default_max_connections")]
    max_connections: usize,
}

impl Default for HttpFile {
    fn default() -> Self {
        HttpFile {
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_connections(),
        }
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
    token: Option<Secret>,
    token_env: Option<String>,
    token_sha256: Option<Hashes>,
    /// Hosts other than itself this node may send rows for (a gateway, an OTLP relay).
    #[serde(default)]
    hosts: Vec<String>,
}

impl fmt::Debug for NodeFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeFile")
            .field("name", &self.name)
            .field("token_env", &self.token_env)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
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
    #[serde(default = "default_max_days_per_batch")]
    max_days_per_batch: u32,
    #[serde(default = "default_decode_memory")]
    decode_memory: ByteSize,
}

impl Default for IngestFile {
    fn default() -> Self {
        IngestFile {
            max_body: default_max_body(),
            flush_interval: default_flush_interval(),
            flush_size: default_flush_size(),
            max_days_per_batch: default_max_days_per_batch(),
            decode_memory: default_decode_memory(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryFile {
    #[serde(default)]
    read_tokens: Vec<Secret>,
    #[serde(default)]
    read_tokens_env: Option<String>,
    #[serde(default)]
    read_tokens_sha256: Vec<String>,
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
            read_tokens_sha256: Vec::new(),
            max_rows: default_max_rows(),
            timeout: default_query_timeout(),
            memory_limit: default_memory_limit(),
            threads: default_threads(),
        }
    }
}

/// A secret that never shows in logs or `Debug` output: the workspace's one type for it.
pub use lake_format::Secret;

/// The validated configuration of `lake serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root of the lake's files.
    pub data_dir: PathBuf,
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Nodes declared by `[[nodes]]` (alert rules cover them); their tokens are in `keys`
    /// or in the tokens file.
    pub nodes: Vec<String>,
    /// `[[nodes]] hosts`: for each node that has them, the hosts other than itself its
    /// rows may carry (a gateway, an OTLP relay). Every token of the node has them, from
    /// lake.toml or the tokens file.
    pub hosts: std::collections::BTreeMap<String, Vec<String>>,
    /// The tokens of `lake.toml`, every role, as hashes: `[[nodes]]`, `[query] read_tokens*`,
    /// `[admin] tokens*`. The tokens file's are added to them at start and on every reload.
    pub keys: Vec<Key>,
    /// `[auth] tokens_file`: the tokens `lake token` manages (default `<data_dir>/tokens.toml`).
    pub tokens_file: PathBuf,
    /// Advice for the log at start (plaintext tokens in lake.toml).
    pub warnings: Vec<String>,
    /// Largest ingest body accepted (413 beyond).
    pub max_body: usize,
    /// Flush buffered rows at least this often.
    pub flush_interval: Duration,
    /// Flush when buffered rows take this much memory.
    pub flush_size: usize,
    /// `ingest.max_days_per_batch`: the dates of one batch's rows span at most this many
    /// days (default 31).
    pub max_days_per_batch: u32,
    /// `ingest.decode_memory`: bytes all ingest requests together may hold while they
    /// receive and decode bodies (default 256 MiB); 503 past it.
    pub decode_memory: usize,
    /// `http.max_connections`: open connections at most (default 1024); past it the
    /// oldest idle one is closed for each new one.
    pub max_connections: usize,
    /// Limits of each query.
    pub limits: lake_query::engine::Limits,
    /// Named queries (CLI, SQL API, Grafana): the shipped defaults, then the
    /// `[[queries]]` of the file; one named like a default replaces it.
    pub queries: Vec<NamedQuery>,
    /// Alert rules (built-in and `[[rules]]`), notification channels and alerting settings.
    pub alerts: std::sync::Arc<lake_query::alerts::rules::AlertsConfig>,
    /// `[compaction]`: merging small files (default: 128 MiB files, every 10 minutes).
    pub compaction: crate::maintenance::compact::CompactionConfig,
    /// `[custom]`: defaults and per-table options of custom tables.
    pub custom: crate::custom::TablesConfig,
    /// `[archive]`: where and when finished partitions are archived (default: a local
    /// directory `<data_dir>/archive`, nightly at 02:00 UTC).
    pub archive: crate::maintenance::archive::config::ArchiveConfig,
    /// `[retention]`: how long partitions stay local and archived (default: forever).
    pub retention: crate::maintenance::retention::RetentionConfig,
    /// `[http]`: header, body and request timeouts of the HTTP server.
    pub http: HttpTimeouts,
    /// `[heartbeat]`: a monitor outside the lake pinged after every alert round.
    pub heartbeat: Option<crate::heartbeat::HeartbeatConfig>,
    /// `[mcp]`: the MCP server at `/mcp`.
    pub mcp: crate::http::mcp::McpConfig,
    /// `[pg]`: the PostgreSQL wire protocol, when configured.
    pub pg: Option<crate::pg::PgConfig>,
    /// `[[webhooks]]`: the hooks `POST /v1/hooks/<name>` takes.
    pub webhooks: Vec<crate::http::hooks::HookConfig>,
    /// `[[jobs]]`: the jobs `/v1/jobs` takes reports for and the late-run watch watches.
    pub jobs: std::sync::Arc<crate::jobs::JobsConfig>,
}

impl Config {
    /// Loads and validates a file; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                let mut c =
                    Config::parse(&text, |k| std::env::var(k).ok()).with_context(|| format!("in {}", p.display()))?;
                // `[auth] tokens_file` relative to lake.toml (the default is absolute when
                // data_dir is).
                if c.tokens_file.is_relative() && tokens_file_given(&text) {
                    let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
                    c.tokens_file = dir.join(&c.tokens_file);
                }
                Ok(c)
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
        let mut warnings = Vec::new();
        let mut keys: Vec<Key> = Vec::new();
        let mut nodes: Vec<String> = Vec::new();
        let mut hosts = std::collections::BTreeMap::new();
        for (i, n) in file.nodes.iter().enumerate() {
            validate_node_name(&n.name).with_context(|| format!("nodes[{i}].name"))?;
            for (j, h) in n.hosts.iter().enumerate() {
                validate_node_name(h).with_context(|| format!("nodes[{i}] ({}).hosts[{j}] = {h:?}", n.name))?;
            }
            if !n.hosts.is_empty() {
                let mut list = n.hosts.clone();
                list.sort();
                list.dedup();
                hosts.insert(n.name.clone(), list);
            }
            if nodes.contains(&n.name) {
                bail!("nodes[{i}].name = {:?}: another [[nodes]] entry has this name; each node needs its own name and token", n.name);
            }
            let given =
                [n.token.is_some(), n.token_env.is_some(), n.token_sha256.is_some()].iter().filter(|g| **g).count();
            if given > 1 {
                bail!("nodes[{i}] ({}): give at most one of token, token_env or token_sha256 (or none: its tokens are in the tokens file)", n.name);
            }
            let hashes = n.token_sha256.as_ref().map(Hashes::list).unwrap_or_default();
            let key = format!("nodes[{i}] ({})", n.name);
            let src = KeySource {
                role: Role::Ingest,
                node: Some(&n.name),
                key: &format!("{key}.token"),
                inline: n.token.as_slice(),
                env_key: &format!("{key}.token_env"),
                env_var: n.token_env.as_deref(),
                hash_key: &format!("{key}.token_sha256"),
                hashes: &hashes,
            };
            keys.extend(src.keys(&env, &mut warnings)?);
            nodes.push(n.name.clone());
        }
        let read_hashes: Vec<&str> = file.query.read_tokens_sha256.iter().map(String::as_str).collect();
        let src = KeySource {
            role: Role::Read,
            node: None,
            key: "query.read_tokens",
            inline: &file.query.read_tokens,
            env_key: "query.read_tokens_env",
            env_var: file.query.read_tokens_env.as_deref(),
            hash_key: "query.read_tokens_sha256",
            hashes: &read_hashes,
        };
        keys.extend(src.keys(&env, &mut warnings)?);
        // A WAL record carries at most 1 GiB; keep bodies well under it.
        if file.ingest.max_body.0 > 512 << 20 || file.ingest.max_body.0 < 1024 {
            bail!("ingest.max_body = {} must be between 1KiB and 512MiB", file.ingest.max_body);
        }
        if !(1..=36_600).contains(&file.ingest.max_days_per_batch) {
            bail!("ingest.max_days_per_batch = {} must be between 1 and 36600 (days)", file.ingest.max_days_per_batch);
        }
        if file.ingest.decode_memory.0 < file.ingest.max_body.0 {
            bail!(
                "ingest.decode_memory = {} is less than ingest.max_body = {}: a body of the largest size accepted could never be decoded",
                file.ingest.decode_memory,
                file.ingest.max_body
            );
        }
        if !(2..=1_000_000).contains(&file.http.max_connections) {
            bail!("http.max_connections = {} must be between 2 and 1000000", file.http.max_connections);
        }
        if file.query.max_rows == 0 || file.query.threads == 0 {
            bail!("query.max_rows and query.threads must be at least 1");
        }
        let user: Vec<NamedQuery> = file
            .queries
            .into_iter()
            .map(|q| NamedQuery {
                name: q.name,
                description: q.description,
                sql: q.sql,
                kind: q.kind,
                vars: Default::default(),
            })
            .collect();
        let queries = lake_query::named::merge(user).context("[[queries]]")?;
        let cx = lake_query::alerts::rules::BuildContext {
            nodes: &nodes,
            listen,
            env: &env,
            checks: &crate::alerts::notify::Checks,
        };
        let alerts = std::sync::Arc::new(lake_query::alerts::rules::build(file.alerts, file.rules, file.notify, &cx)?);
        let compaction = file.compaction.validate()?;
        let custom = file.custom.validate()?;
        let archive = file.archive.validate(&file.data_dir, &env)?;
        let retention = file.retention.validate()?;
        keys.extend(file.admin.keys(&env, &mut warnings)?);
        // The same token twice (two nodes, or a read token that also ingests) is an error.
        let keys = KeySet::new(keys)?.keys().to_vec();
        let tokens_file = file.auth.tokens_file.unwrap_or_else(|| file.data_dir.join(crate::auth::DEFAULT_FILE));
        let max_connections = file.http.max_connections;
        let http = file.http.validate(file.query.timeout.0)?;
        let heartbeat = file.heartbeat.map(crate::heartbeat::HeartbeatFile::validate).transpose()?;
        let mcp = file.mcp.validate()?;
        let pg = file.pg.map(crate::pg::PgFile::validate).transpose()?;
        let webhooks = crate::http::hooks::config::validate(file.webhooks, &env, &mut warnings)?;
        let jobs = std::sync::Arc::new(crate::jobs::JobsConfig::from_files(file.jobs)?);
        Ok(Config {
            data_dir: file.data_dir,
            listen,
            nodes,
            hosts,
            keys,
            tokens_file,
            warnings,
            max_body: usize::try_from(file.ingest.max_body.0).unwrap_or(usize::MAX),
            flush_interval: file.ingest.flush_interval.0,
            flush_size: usize::try_from(file.ingest.flush_size.0).unwrap_or(usize::MAX),
            max_days_per_batch: file.ingest.max_days_per_batch,
            decode_memory: usize::try_from(file.ingest.decode_memory.0).unwrap_or(usize::MAX),
            max_connections,
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
            http,
            heartbeat,
            mcp,
            pg,
            webhooks,
            jobs,
        })
    }
}

/// Whether lake.toml sets `[auth] tokens_file` (a relative one is then resolved against it).
fn tokens_file_given(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("auth").and_then(|a| a.get("tokens_file")).cloned())
        .is_some()
}

/// What `lake token` needs of lake.toml, read without resolving any secret (the
/// environment of an operator's shell lacks the service's `EnvironmentFile=`).
#[derive(Debug, Clone)]
pub struct TokensView {
    /// The tokens file.
    pub tokens_file: PathBuf,
    /// Nodes declared by `[[nodes]]`.
    pub nodes: Vec<String>,
    /// Whether lake.toml itself holds read tokens (inline, env or hashes).
    pub config_read_tokens: bool,
}

impl TokensView {
    /// Reads `path` (`None`: the defaults).
    pub fn load(path: Option<&Path>) -> anyhow::Result<TokensView> {
        #[derive(Deserialize)]
        struct Partial {
            #[serde(default = "default_data_dir")]
            data_dir: PathBuf,
            #[serde(default)]
            nodes: Vec<PartialNode>,
            #[serde(default)]
            query: toml::Table,
            #[serde(default)]
            auth: PartialAuth,
        }
        #[derive(Deserialize)]
        struct PartialNode {
            name: String,
        }
        #[derive(Deserialize, Default)]
        struct PartialAuth {
            tokens_file: Option<PathBuf>,
        }
        let text = match path {
            Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            None => String::new(),
        };
        let at = || path.map_or("the default configuration".to_string(), |p| p.display().to_string());
        let f: Partial = toml::from_str(&text).with_context(|| format!("in {}", at()))?;
        let tokens_file = match f.auth.tokens_file {
            Some(t) if t.is_relative() => {
                path.and_then(Path::parent).filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).join(t)
            }
            Some(t) => t,
            None => f.data_dir.join(crate::auth::DEFAULT_FILE),
        };
        let q = &f.query;
        let non_empty = |k: &str| q.get(k).is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()));
        let config_read_tokens =
            non_empty("read_tokens") || non_empty("read_tokens_env") || non_empty("read_tokens_sha256");
        Ok(TokensView { tokens_file, nodes: f.nodes.into_iter().map(|n| n.name).collect(), config_read_tokens })
    }
}

impl HttpFile {
    fn validate(self, query_timeout: Duration) -> anyhow::Result<HttpTimeouts> {
        let t =
            HttpTimeouts { header: self.header_timeout.0, body: self.body_timeout.0, request: self.request_timeout.0 };
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
        assert_eq!((c.flush_interval, c.flush_size), (Duration::from_secs(30), 16 << 20));
        assert!(c.keys.is_empty() && c.nodes.is_empty());
        assert_eq!(c.tokens_file, Path::new("/var/lib/lake/tokens.toml"));
        let http = HttpTimeouts {
            header: Duration::from_secs(30),
            body: Duration::from_secs(60),
            request: Duration::from_secs(120),
        };
        assert_eq!(c.http, http);
        assert_eq!((c.max_days_per_batch, c.decode_memory, c.max_connections), (31, 256 << 20, 1024));
        assert!(c.hosts.is_empty());
    }

    #[test]
    fn ingest_limits_and_node_hosts_are_validated() {
        let text =
            "[[nodes]]\nname = \"gateway\"\nhosts = [\"web-2\", \"web-1\", \"web-2\"]\n[[nodes]]\nname = \"web-1\"\n\
                    [ingest]\nmax_days_per_batch = 7\ndecode_memory = \"1GiB\"\n[http]\nmax_connections = 64\n";
        let c = Config::parse(text, |_| None).unwrap();
        assert_eq!(c.hosts.len(), 1);
        assert_eq!(c.hosts["gateway"], ["web-1", "web-2"]);
        assert_eq!((c.max_days_per_batch, c.decode_memory, c.max_connections), (7, 1 << 30, 64));
        for (bad, says) in [
            ("[[nodes]]\nname = \"g\"\nhosts = [\"ok\", \"../etc\"]", "nodes[0] (g).hosts[1] = \"../etc\""),
            ("[[nodes]]\nname = \"g\"\nhost = [\"x\"]", "unknown field `host`"),
            ("[ingest]\nmax_days_per_batch = 0", "ingest.max_days_per_batch = 0"),
            (
                "[ingest]\nmax_body = \"64MiB\"\ndecode_memory = \"32MiB\"",
                "ingest.decode_memory = 32MiB is less than ingest.max_body = 64MiB",
            ),
            ("[http]\nmax_connections = 1", "http.max_connections = 1"),
        ] {
            let e = Config::parse(bad, |_| None).unwrap_err();
            assert!(format!("{e:#}").contains(says), "{bad}: {e:#}");
        }
    }

    #[test]
    fn the_example_parses() {
        let text = include_str!("../examples/lake.toml");
        let env = |k: &str| match k {
            "LAKE_TOKEN_GATEWAY" => Some("g".repeat(32)),
            "LAKE_ADMIN_TOKENS" => Some(format!("{},{}", "a".repeat(20), "b".repeat(20))),
            "STRIPE_WHSEC" | "POSTMARK_HOOK_PASSWORD" | "GITHUB_WEBHOOK_SECRET" => Some("hook-secret".into()),
            _ => None,
        };
        let c = Config::parse(text, env).unwrap();
        let hooks: Vec<(&str, &str, &str)> =
            c.webhooks.iter().map(|h| (h.name.as_str(), h.table.as_str(), h.auth.kind())).collect();
        assert_eq!(
            hooks,
            [("stripe", "stripe", "stripe"), ("postmark", "postmark", "basic"), ("github", "github", "hmac")]
        );
        assert_eq!(c.keys.iter().filter(|k| k.role == Role::Admin).count(), 2);
        assert_eq!(c.retention.policy(&lake_format::Table::Metrics.into()).keep_local_days, Some(14));
        assert_eq!(c.nodes, ["salem-storage", "gateway", "web-1"]);
        assert_eq!(c.hosts["gateway"], ["nas", "printer"]);
        assert_eq!(c.keys.iter().filter(|k| k.role == Role::Ingest).count(), 2);
        assert_eq!(c.queries.len(), lake_query::named::defaults().len() + 1);
        let hb = c.heartbeat.as_ref().expect("the example pings a monitor");
        assert_eq!(hb.fail_url.path(), "/00000000-0000-0000-0000-000000000000/fail");
        assert!(c.mcp.enabled && c.mcp.max_sessions == 64 && c.mcp.max_rows == 200, "{:?}", c.mcp);
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
        let e = Config::parse("[heartbeat]\nurl = \"hc-ping.com/x\"", |_| None).unwrap_err();
        assert!(format!("{e:#}").contains("heartbeat.url"), "{e:#}");
        let e = Config::parse("[heartbeat]\ntimeout = \"5s\"", |_| None).unwrap_err();
        assert!(format!("{e:#}").contains("url"), "{e:#}");
        assert!(Config::parse("", |_| None).unwrap().heartbeat.is_none());
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
    fn tokens_are_hashed_on_load_in_every_form() {
        let hash = TokenHash::of("hashed-read-token-0123").to_hex();
        let text = format!(
            "[[nodes]]\nname = \"a\"\ntoken = \"plain-ingest-token-0123\"\n\
             [[nodes]]\nname = \"b\"\ntoken_sha256 = [\"{}\", \"{}\"]\n\
             [[nodes]]\nname = \"c\"\n\
             [query]\nread_tokens_sha256 = [\"{hash}\"]\nread_tokens_env = \"R\"\n\
             [admin]\ntokens_sha256 = [\"{}\"]\n",
            TokenHash::of("b-old-token-0123456").to_hex(),
            TokenHash::of("b-new-token-0123456").to_hex(),
            TokenHash::of("admin-token-0123456").to_hex(),
        );
        let c =
            Config::parse(&text, |k| (k == "R").then(|| "env-read-token-0123, env-read-token-4567".into())).unwrap();
        let set = KeySet::new(c.keys.clone()).unwrap();
        let find = |role, t: &str| set.find(role, &TokenHash::of(t), 0).map(|k| (k.node.clone(), k.source.clone()));
        assert_eq!(
            find(Role::Ingest, "plain-ingest-token-0123"),
            Some((Some("a".into()), "lake.toml nodes[0] (a).token".into()))
        );
        assert_eq!(find(Role::Ingest, "b-old-token-0123456").unwrap().0.as_deref(), Some("b"));
        assert_eq!(find(Role::Ingest, "b-new-token-0123456").unwrap().0.as_deref(), Some("b"));
        assert!(find(Role::Read, "hashed-read-token-0123").is_some());
        assert!(find(Role::Read, "env-read-token-4567").is_some());
        assert!(find(Role::Admin, "admin-token-0123456").is_some());
        assert!(find(Role::Read, "plain-ingest-token-0123").is_none(), "an ingest token does not read");
        assert_eq!(c.nodes, ["a", "b", "c"], "a node may have no token here (tokens file)");
        // Only the inline plaintext token is worth a warning.
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(
            c.warnings[0].contains("nodes[0] (a).token") && c.warnings[0].contains("token_sha256"),
            "{:?}",
            c.warnings
        );

        for (bad, says) in [
            (
                "[[nodes]]\nname = \"a\"\ntoken_sha256 = \"abc\"",
                "nodes[0] (a).token_sha256 = \"abc\": not a SHA-256 digest",
            ),
            ("[query]\nread_tokens_sha256 = [\"xyz\"]", "query.read_tokens_sha256 = \"xyz\""),
            ("[[nodes]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\ntoken_env = \"X\"", "at most one of"),
            ("[[nodes]]\nname = \"a\"\ntoken = \"short\"", "at least 16"),
            (
                "[[nodes]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\n[query]\nread_tokens = [\"0123456789abcdef\"]",
                "query.read_tokens[0]: the same token as lake.toml nodes[0] (a).token",
            ),
            ("[auth]\ntokens_fil = \"x\"", "tokens_fil"),
        ] {
            let e = Config::parse(bad, |_| None).unwrap_err();
            assert!(format!("{e:#}").contains(says), "{bad}: {e:#}");
        }
    }

    #[test]
    fn the_tokens_file_is_beside_lake_toml_when_relative() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lake.toml");
        std::fs::write(&p, "[auth]\ntokens_file = \"tokens.toml\"\n").unwrap();
        assert_eq!(Config::load(Some(&p)).unwrap().tokens_file, dir.path().join("tokens.toml"));
        assert_eq!(TokensView::load(Some(&p)).unwrap().tokens_file, dir.path().join("tokens.toml"));
        std::fs::write(&p, "data_dir = \"/srv/lake\"\n[query]\nread_tokens_env = \"UNSET\"\n").unwrap();
        let v = TokensView::load(Some(&p)).unwrap();
        assert_eq!(v.tokens_file, Path::new("/srv/lake/tokens.toml"));
        assert!(v.config_read_tokens, "the env var need not be set for `lake token`");
    }

    #[test]
    fn secrets_are_redacted() {
        let c = Config::parse("[query]\nread_tokens = [\"supersecretsupersecret\"]", |_| None).unwrap();
        assert!(!format!("{c:?}").contains("supersecret"));
    }
}
