//! The collector's configuration: `collector.toml` parsed into private serde `*File`
//! structs, then validated once into the public, typed [`Config`] the rest of the crate
//! runs on. Every key has a default, so an absent file (or an empty one) is a working
//! configuration as long as a token can be found.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use lake_format::units::{ByteSize, Dur};
use lake_format::wire;
pub use lake_format::Secret;
use serde::Deserialize;

/// Environment variable read when neither `lake.token` nor `lake.token_file` is set.
pub const TOKEN_ENV: &str = "LAKE_TOKEN";
/// Default `data_dir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/lake-collector";
/// Default `lake.url`.
pub const DEFAULT_LAKE_URL: &str = "http://127.0.0.1:7470";

const fn default_version() -> u32 {
    1
}
const fn default_true() -> bool {
    true
}
const fn default_lake_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
const fn default_host_interval() -> Dur {
    Dur(Duration::from_secs(10))
}
const fn default_spool_max_size() -> ByteSize {
    ByteSize(1 << 30)
}
const fn default_spool_segment_size() -> ByteSize {
    ByteSize(8 << 20)
}
const fn default_backoff_min() -> Dur {
    Dur(Duration::from_millis(500))
}
const fn default_backoff_max() -> Dur {
    Dur(Duration::from_secs(60))
}
const fn default_config_backoff_min() -> Dur {
    Dur(Duration::from_secs(60))
}
const fn default_config_backoff_max() -> Dur {
    Dur(Duration::from_secs(300))
}
const fn default_rejected_max_size() -> ByteSize {
    ByteSize(256 << 20)
}
const fn default_rejected_max_batches() -> u64 {
    1000
}
const fn default_heartbeat_interval() -> Dur {
    Dur(Duration::from_secs(60))
}
const fn default_heartbeat_grace() -> Dur {
    Dur(Duration::from_secs(300))
}
const fn default_lake_down_after() -> Dur {
    Dur(Duration::from_secs(600))
}
fn default_heartbeat_method() -> String {
    "GET".to_string()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_lake_url() -> String {
    DEFAULT_LAKE_URL.to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default = "default_version")]
    version: u32,
    #[serde(default)]
    node: Option<String>,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default)]
    lake: LakeFile,
    #[serde(default)]
    host: HostFile,
    #[serde(default)]
    spool: SpoolFile,
    #[serde(default)]
    shipper: ShipperFile,
    #[serde(default)]
    rejected: RejectedFile,
    #[serde(default)]
    heartbeat: HeartbeatFile,
    // Source sections: one `#[serde(default)] name: crate::sources::name::NameFile,` per source below.
    #[serde(default)]
    tailscale: crate::sources::tailscale::TailscaleFile,
    #[serde(default)]
    uptime: crate::sources::uptime::UptimeFile,
    #[serde(default)]
    caddy: crate::sources::caddy::CaddyFile,
    #[serde(default)]
    journald: crate::sources::journald::JournaldFile,
    #[serde(default)]
    docker: crate::sources::docker::DockerFile,
    #[serde(default)]
    syslog: crate::sources::syslog::SyslogFile,
    #[serde(default)]
    ufw: crate::sources::ufw::UfwFile,
    #[serde(default)]
    fail2ban: crate::sources::fail2ban::Fail2banFile,
    #[serde(default)]
    inventory: crate::sources::inventory::InventoryFile,
    #[serde(default)]
    exec: Vec<crate::sources::exec::ExecFile>,
    #[serde(default)]
    prometheus_scrape: Vec<crate::sources::prometheus_scrape::ScrapeFile>,
    #[serde(default)]
    json_file: Vec<crate::sources::json_file::JsonFileFile>,
    #[serde(default)]
    log_file: Vec<crate::sources::log_file::LogFileFile>,
    #[serde(default)]
    ups: Vec<crate::sources::ups::UpsFile>,
    #[serde(default)]
    pull: Vec<crate::sources::pull::PullFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LakeFile {
    #[serde(default = "default_lake_url")]
    url: String,
    #[serde(default)]
    token: Option<Secret>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default = "default_lake_timeout")]
    timeout: Dur,
}

impl Default for LakeFile {
    fn default() -> Self {
        LakeFile { url: default_lake_url(), token: None, token_file: None, timeout: default_lake_timeout() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostFile {
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default = "default_host_interval")]
    interval: Dur,
}

impl Default for HostFile {
    fn default() -> Self {
        HostFile { enabled: true, interval: default_host_interval() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpoolFile {
    #[serde(default = "default_spool_max_size")]
    max_size: ByteSize,
    #[serde(default = "default_spool_segment_size")]
    segment_size: ByteSize,
}

impl Default for SpoolFile {
    fn default() -> Self {
        SpoolFile { max_size: default_spool_max_size(), segment_size: default_spool_segment_size() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShipperFile {
    #[serde(default = "default_backoff_min")]
    backoff_min: Dur,
    #[serde(default = "default_backoff_max")]
    backoff_max: Dur,
    #[serde(default = "default_config_backoff_min")]
    config_backoff_min: Dur,
    #[serde(default = "default_config_backoff_max")]
    config_backoff_max: Dur,
}

impl Default for ShipperFile {
    fn default() -> Self {
        ShipperFile {
            backoff_min: default_backoff_min(),
            backoff_max: default_backoff_max(),
            config_backoff_min: default_config_backoff_min(),
            config_backoff_max: default_config_backoff_max(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectedFile {
    #[serde(default = "default_rejected_max_size")]
    max_size: ByteSize,
    #[serde(default = "default_rejected_max_batches")]
    max_batches: u64,
}

impl Default for RejectedFile {
    fn default() -> Self {
        RejectedFile { max_size: default_rejected_max_size(), max_batches: default_rejected_max_batches() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatFile {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_env: Option<String>,
    #[serde(default = "default_heartbeat_method")]
    method: String,
    #[serde(default = "default_heartbeat_interval")]
    interval: Dur,
    #[serde(default = "default_heartbeat_grace")]
    grace: Dur,
    #[serde(default)]
    lake_down: Option<LakeDownFile>,
}

impl Default for HeartbeatFile {
    fn default() -> Self {
        HeartbeatFile {
            url: None,
            url_env: None,
            method: default_heartbeat_method(),
            interval: default_heartbeat_interval(),
            grace: default_heartbeat_grace(),
            lake_down: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LakeDownFile {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_env: Option<String>,
    #[serde(default)]
    bearer_token_env: Option<String>,
    #[serde(default = "default_lake_down_after")]
    after: Dur,
}

/// Where the token came from, for `--check` and logs (never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `lake.token` in the file.
    Inline,
    /// `lake.token_file`.
    File(PathBuf),
    /// The `LAKE_TOKEN` environment variable.
    Env,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node name, valid for [`wire::validate_node_name`].
    pub node: String,
    /// Directory for the spool and other state.
    pub data_dir: PathBuf,
    /// Where and how to reach the lake.
    pub lake: LakeConfig,
    /// Host metrics source.
    pub host: HostConfig,
    /// On-disk queue bounds.
    pub spool: SpoolConfig,
    /// Retry policy of the shipper.
    pub shipper: ShipperConfig,
    /// Bound of `rejected/`.
    pub rejected: RejectedConfig,
    /// Heartbeat pings and the lake-down webhook.
    pub heartbeat: HeartbeatConfig,
    // Source configs: one `pub name: crate::sources::name::NameConfig,` per source below.
    /// `[tailscale]`.
    pub tailscale: crate::sources::tailscale::TailscaleConfig,
    /// `[uptime]`.
    pub uptime: crate::sources::uptime::UptimeConfig,
    /// `[caddy]`.
    pub caddy: crate::sources::caddy::CaddyConfig,
    /// `[journald]`.
    pub journald: crate::sources::journald::JournaldConfig,
    /// `[docker]`.
    pub docker: crate::sources::docker::DockerConfig,
    /// `[syslog]`.
    pub syslog: crate::sources::syslog::SyslogConfig,
    /// `[ufw]`.
    pub ufw: crate::sources::ufw::UfwConfig,
    /// `[fail2ban]`.
    pub fail2ban: crate::sources::fail2ban::Fail2banConfig,
    /// `[inventory]`.
    pub inventory: crate::sources::inventory::InventoryConfig,
    /// `[[exec]]` entries.
    pub exec: Vec<crate::sources::exec::ExecConfig>,
    /// `[[prometheus_scrape]]` entries.
    pub prometheus_scrape: Vec<crate::sources::prometheus_scrape::ScrapeConfig>,
    /// `[[json_file]]` entries.
    pub json_file: Vec<crate::sources::json_file::JsonFileConfig>,
    /// `[[log_file]]` entries.
    pub log_file: Vec<crate::sources::log_file::LogFileConfig>,
    /// `[[ups]]` entries.
    pub ups: Vec<crate::sources::ups::UpsConfig>,
    /// `[[pull]]` entries.
    pub pull: Vec<crate::sources::pull::PullConfig>,
}

/// `[lake]`.
#[derive(Debug, Clone)]
pub struct LakeConfig {
    /// Base URL of the lake, without a trailing slash.
    pub url: String,
    /// Bearer token of this node.
    pub token: Secret,
    /// Where the token was found.
    pub token_source: TokenSource,
    /// Timeout of one ingest request, connect included.
    pub timeout: Duration,
}

/// `[host]`.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Whether host metrics are collected.
    pub enabled: bool,
    /// Time between two samples.
    pub interval: Duration,
}

/// `[spool]`.
#[derive(Debug, Clone, Copy)]
pub struct SpoolConfig {
    /// Bound on the spool's size on disk, in bytes.
    pub max_size: u64,
    /// Size at which a segment file is closed and a new one started, in bytes.
    pub segment_size: u64,
}

/// `[shipper]`.
#[derive(Debug, Clone, Copy)]
pub struct ShipperConfig {
    /// Smallest wait before a retry.
    pub backoff_min: Duration,
    /// Largest wait before a retry (Retry-After from the lake may ask for more).
    pub backoff_max: Duration,
    /// Smallest wait before a retry after the lake refused this node's token, name or
    /// clock.
    pub config_backoff_min: Duration,
    /// Largest such wait.
    pub config_backoff_max: Duration,
}

/// `[rejected]`: the bound of `<data_dir>/rejected/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedConfig {
    /// Most batches kept.
    pub max_batches: u64,
    /// Most bytes kept (bodies and notes).
    pub max_size: u64,
}

/// How the heartbeat URL is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingMethod {
    /// `GET` (healthchecks.io, Uptime Kuma push).
    Get,
    /// `POST` with an empty body.
    Post,
}

/// `[heartbeat]`.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatConfig {
    /// The URL pinged while healthy, if any.
    pub ping: Option<PingConfig>,
    /// The webhook told when the lake has not been reached for a while, if any.
    pub lake_down: Option<LakeDownConfig>,
}

/// The heartbeat ping.
#[derive(Debug, Clone)]
pub struct PingConfig {
    /// URL pinged (a secret of sorts: `Debug` shows its host only).
    pub url: SecretUrl,
    /// GET or POST.
    pub method: PingMethod,
    /// Time between pings.
    pub interval: Duration,
    /// Pings stop once delivery to the lake has failed for this long.
    pub grace: Duration,
}

/// `[heartbeat.lake_down]`.
#[derive(Debug, Clone)]
pub struct LakeDownConfig {
    /// The webhook's URL.
    pub url: SecretUrl,
    /// Bearer token sent with it, if any.
    pub bearer_token: Option<Secret>,
    /// How long delivery must fail before the webhook is told.
    pub after: Duration,
}

/// A URL that may embed a secret (a healthchecks.io check id, a Slack hook): a
/// [`Secret`] whose `Debug` output shows the scheme and host, which logs need to say which
/// endpoint failed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Secret);

impl SecretUrl {
    /// The URL itself, for the request only.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// Scheme and host, for logs.
    pub fn redacted(&self) -> String {
        reqwest::Url::parse(self.0.expose()).map_or_else(
            |_| "<invalid URL>".to_string(),
            |u| format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")),
        )
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.redacted())
    }
}

impl Config {
    /// Reads and validates `path`, or builds the defaults when there is no file.
    /// The token is looked up in `LAKE_TOKEN` when the file names none.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let env_token = std::env::var(TOKEN_ENV).ok();
        match path {
            None => Self::from_toml("", env_token.as_deref()),
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("cannot read config file {}", p.display()))?;
                Self::from_toml(&text, env_token.as_deref())
                    .with_context(|| format!("invalid config file {}", p.display()))
            }
        }
    }

    /// Parses and validates TOML text; `env_token` stands for `LAKE_TOKEN`.
    pub fn from_toml(text: &str, env_token: Option<&str>) -> anyhow::Result<Config> {
        // toml's error already names the unknown key and shows the line.
        let file: ConfigFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        file.validate(env_token)
    }
}

impl HeartbeatFile {
    fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<HeartbeatConfig> {
        let method = match self.method.to_ascii_uppercase().as_str() {
            "GET" => PingMethod::Get,
            "POST" => PingMethod::Post,
            other => bail!("heartbeat.method = {other:?}: use \"GET\" or \"POST\""),
        };
        ensure!(!self.interval.0.is_zero(), "heartbeat.interval must be more than zero");
        let ping = secret_url("heartbeat.url", self.url, self.url_env, env)?.map(|url| PingConfig {
            url,
            method,
            interval: self.interval.0,
            grace: self.grace.0,
        });
        let lake_down = match self.lake_down {
            None => None,
            Some(d) => {
                let url = secret_url("heartbeat.lake_down.url", d.url, d.url_env, env)?
                    .ok_or_else(|| anyhow::anyhow!("[heartbeat.lake_down] needs url or url_env"))?;
                ensure!(!d.after.0.is_zero(), "heartbeat.lake_down.after must be more than zero");
                let bearer_token =
                    crate::sources::secret("heartbeat.lake_down", "bearer_token", None, d.bearer_token_env, None, env)?;
                Some(LakeDownConfig { url, bearer_token, after: d.after.0 })
            }
        };
        Ok(HeartbeatConfig { ping, lake_down })
    }
}

/// A URL given in the file (`url`) or in an environment variable (`url_env`), checked.
fn secret_url(
    key: &str,
    url: Option<String>,
    url_env: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<SecretUrl>> {
    let url = match (url, url_env) {
        (Some(_), Some(_)) => bail!("{key} and {key}_env are both set: keep one"),
        (Some(u), None) => u,
        (None, Some(var)) => env(&var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| anyhow::anyhow!("{key}_env: the environment variable {var} is not set"))?,
        (None, None) => return Ok(None),
    };
    let parsed = reqwest::Url::parse(&url).map_err(|e| anyhow::anyhow!("{key} is not a valid URL ({e})"))?;
    ensure!(
        matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some_and(|h| !h.is_empty()),
        "{key} must be an http:// or https:// URL with a host"
    );
    Ok(Some(SecretUrl(Secret::new(url))))
}

impl ConfigFile {
    fn validate(self, env_token: Option<&str>) -> anyhow::Result<Config> {
        let env = |var: &str| std::env::var(var).ok();
        ensure!(self.version == 1, "version = {}: only version 1 is supported", self.version);
        let node = match self.node {
            Some(n) => {
                wire::validate_node_name(&n).context("node")?;
                n
            }
            None => default_node_name(),
        };
        ensure!(!self.data_dir.as_os_str().is_empty(), "data_dir must not be empty");

        let url = self.lake.url.trim_end_matches('/').to_string();
        let example = "e.g. \"http://100.101.102.103:7470\" (the storage node's Tailscale address)";
        ensure!(
            self.lake.url.starts_with("http://") || self.lake.url.starts_with("https://"),
            "lake.url = {:?}: must start with http:// or https://, {example}",
            self.lake.url
        );
        let parsed = reqwest::Url::parse(&self.lake.url)
            .map_err(|e| anyhow::anyhow!("lake.url = {:?} is not a valid URL ({e}): {example}", self.lake.url))?;
        ensure!(
            parsed.host_str().is_some_and(|h| !h.is_empty()),
            "lake.url = {:?} has no host: {example}",
            self.lake.url
        );
        let (token, token_source) = match (self.lake.token, self.lake.token_file) {
            (Some(_), Some(_)) => bail!("lake.token and lake.token_file are both set: keep one"),
            (Some(t), None) => (t, TokenSource::Inline),
            (None, Some(p)) => {
                let t = std::fs::read_to_string(&p)
                    .with_context(|| format!("lake.token_file: cannot read {}", p.display()))?;
                (Secret::new(t.trim()), TokenSource::File(p))
            }
            (None, None) => match env_token {
                Some(t) => (Secret::new(t.trim()), TokenSource::Env),
                None => bail!(
                    "no token for the lake: set lake.token or lake.token_file in the config, \
                     or the {TOKEN_ENV} environment variable"
                ),
            },
        };
        ensure!(
            !token.expose().is_empty(),
            "{} is empty: give this node's ingest token (the storage node's lake.env holds it)",
            match &token_source {
                TokenSource::Inline => "lake.token".to_string(),
                TokenSource::File(p) => format!("lake.token_file ({})", p.display()),
                TokenSource::Env => format!("the {TOKEN_ENV} environment variable"),
            }
        );
        ensure!(!self.lake.timeout.0.is_zero(), "lake.timeout must be more than zero");

        ensure!(!self.host.interval.0.is_zero(), "host.interval must be more than zero");

        let (max_size, segment_size) = (self.spool.max_size.0, self.spool.segment_size.0);
        ensure!(segment_size >= 4096, "spool.segment_size = {segment_size}: must be at least 4KiB");
        // Two segments at least, so dropping the oldest one never empties the spool.
        ensure!(
            max_size >= 2 * segment_size,
            "spool.max_size ({}) must be at least twice spool.segment_size ({})",
            self.spool.max_size,
            self.spool.segment_size
        );

        let (backoff_min, backoff_max) = (self.shipper.backoff_min.0, self.shipper.backoff_max.0);
        ensure!(!backoff_min.is_zero(), "shipper.backoff_min must be more than zero");
        ensure!(
            backoff_min <= backoff_max,
            "shipper.backoff_min ({}) must not exceed shipper.backoff_max ({})",
            self.shipper.backoff_min,
            self.shipper.backoff_max
        );

        let (config_backoff_min, config_backoff_max) =
            (self.shipper.config_backoff_min.0, self.shipper.config_backoff_max.0);
        ensure!(!config_backoff_min.is_zero(), "shipper.config_backoff_min must be more than zero");
        ensure!(
            config_backoff_min <= config_backoff_max,
            "shipper.config_backoff_min ({}) must not exceed shipper.config_backoff_max ({})",
            self.shipper.config_backoff_min,
            self.shipper.config_backoff_max
        );
        ensure!(self.rejected.max_batches >= 1, "rejected.max_batches must be at least 1");
        let heartbeat = self.heartbeat.validate(&env)?;

        Ok(Config {
            node,
            data_dir: self.data_dir,
            lake: LakeConfig { url, token, token_source, timeout: self.lake.timeout.0 },
            host: HostConfig { enabled: self.host.enabled, interval: self.host.interval.0 },
            spool: SpoolConfig { max_size, segment_size },
            shipper: ShipperConfig { backoff_min, backoff_max, config_backoff_min, config_backoff_max },
            rejected: RejectedConfig { max_batches: self.rejected.max_batches, max_size: self.rejected.max_size.0 },
            heartbeat,
            // Source validation: one `name: self.name.validate()?,` per source below.
            tailscale: self.tailscale.validate()?,
            uptime: self.uptime.validate()?,
            caddy: self.caddy.validate()?,
            journald: self.journald.validate()?,
            docker: self.docker.validate()?,
            syslog: self.syslog.validate()?,
            ufw: self.ufw.validate()?,
            fail2ban: self.fail2ban.validate()?,
            inventory: self.inventory.validate()?,
            exec: crate::sources::exec::validate_all(self.exec)?,
            prometheus_scrape: crate::sources::prometheus_scrape::validate_all(self.prometheus_scrape, &|v| {
                std::env::var(v).ok()
            })?,
            json_file: crate::sources::json_file::validate_all(self.json_file)?,
            log_file: crate::sources::log_file::validate_all(self.log_file)?,
            ups: crate::sources::ups::validate_all(self.ups)?,
            pull: crate::sources::pull::validate_all(self.pull, &env)?,
        })
    }
}

/// The machine's hostname made into a valid node name.
fn default_node_name() -> String {
    let raw = sysinfo::System::host_name().unwrap_or_default();
    sanitize_node_name(&raw)
}

/// Replaces every character a node name may not contain with '-', drops leading dots and
/// cuts to the maximum length; an empty result becomes "localhost".
pub(crate) fn sanitize_node_name(raw: &str) -> String {
    let mapped: String = raw
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .collect();
    let mut name: String = mapped.trim_start_matches('.').chars().take(wire::MAX_NODE_LEN).collect();
    if name.is_empty() {
        name = "localhost".to_string();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/collector.toml");

    #[test]
    fn the_example_parses_and_matches_the_defaults() {
        let c = Config::from_toml(EXAMPLE, None).unwrap();
        assert_eq!(c.node, "salem-storage");
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.lake.url, DEFAULT_LAKE_URL);
        assert_eq!(c.lake.token.expose(), "change-me");
        assert_eq!(c.lake.timeout, Duration::from_secs(10));
        assert!(c.host.enabled);
        assert_eq!(c.host.interval, Duration::from_secs(10));
        assert_eq!(c.spool.max_size, 1 << 30);
        assert_eq!(c.spool.segment_size, 8 << 20);
        assert_eq!(c.shipper.backoff_min, Duration::from_millis(500));
        assert_eq!(c.shipper.backoff_max, Duration::from_secs(60));
        assert_eq!(c.shipper.config_backoff_min, Duration::from_secs(60));
        assert_eq!(c.shipper.config_backoff_max, Duration::from_secs(300));
        assert_eq!(c.rejected, RejectedConfig { max_batches: 1000, max_size: 256 << 20 });
        assert!(c.heartbeat.ping.is_none() && c.heartbeat.lake_down.is_none());
        assert!(!c.syslog.enabled(), "[syslog] listens only once an address is set");
        let on = EXAMPLE
            .replace("# udp = \"127.0.0.1:5514\"", "udp = \"127.0.0.1:5514\"")
            .replace("# tcp = \"127.0.0.1:5514\"", "tcp = \"127.0.0.1:5514\"");
        let s = Config::from_toml(&on, None).unwrap().syslog;
        assert!(s.enabled());
        assert_eq!(
            (s.max_message_bytes, s.max_connections, s.idle_timeout, s.queue_bytes, s.batch_lines),
            (64 << 10, 256, Duration::from_secs(300), 16 << 20, 5000)
        );
        // The commented-out heartbeat keys parse as documented once switched on.
        let on = EXAMPLE
            .replace("# url = \"https://hc-ping.com", "url = \"https://hc-ping.com")
            .replace("# [heartbeat.lake_down]\n# url = ", "[heartbeat.lake_down]\nurl = ")
            .replace("# after = \"10m\"", "after = \"10m\"");
        let c = Config::from_toml(&on, None).unwrap();
        let ping = c.heartbeat.ping.unwrap();
        assert_eq!(
            (ping.method, ping.interval, ping.grace),
            (PingMethod::Get, Duration::from_secs(60), Duration::from_secs(300))
        );
        assert_eq!(ping.url.expose(), "https://hc-ping.com/your-check-uuid");
        assert!(!format!("{ping:?}").contains("your-check-uuid"), "the check id is a secret");
        let down = c.heartbeat.lake_down.unwrap();
        assert_eq!((down.url.expose(), down.after), ("https://ntfy.sh/my-lake-alerts", Duration::from_secs(600)));
    }

    #[test]
    fn heartbeat_keys_are_checked() {
        let bad = |toml: &str, says: &str| {
            let err = format!("{:#}", Config::from_toml(toml, Some("t")).unwrap_err());
            assert!(err.contains(says), "{toml}: {err}");
        };
        bad("[heartbeat]\nurl = \"ftp://x\"\n", "heartbeat.url must be an http");
        bad("[heartbeat]\nurl = \"https://x\"\nmethod = \"PUT\"\n", "heartbeat.method");
        bad("[heartbeat]\nurl_env = \"LAKE_TEST_SURELY_UNSET_VAR\"\n", "LAKE_TEST_SURELY_UNSET_VAR is not set");
        bad("[heartbeat.lake_down]\nafter = \"1m\"\n", "needs url or url_env");
        bad("[heartbeat.lake_down]\nurl = \"https://x\"\nafter = \"0s\"\n", "after must be more than zero");
        bad("[heartbeat]\nurls = \"https://x\"\n", "urls");
        bad("[shipper]\nconfig_backoff_min = \"10m\"\n", "config_backoff_max");
        bad("[rejected]\nmax_batches = 0\n", "rejected.max_batches");
        let c = Config::from_toml("[heartbeat]\nurl = \"http://127.0.0.1:9/ping\"\nmethod = \"post\"\n", Some("t"))
            .unwrap();
        assert_eq!(c.heartbeat.ping.unwrap().method, PingMethod::Post);
    }

    #[test]
    fn nothing_configured_works_with_an_env_token() {
        let c = Config::from_toml("", Some("t0k")).unwrap();
        assert_eq!(c.lake.token_source, TokenSource::Env);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        wire::validate_node_name(&c.node).unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = format!("{:#}", Config::from_toml("version = 1\nnodes = \"x\"\n", Some("t")).unwrap_err());
        assert!(err.contains("nodes"), "{err}");
        let err = format!("{:#}", Config::from_toml("[spool]\nmax_sise = \"1GiB\"\n", Some("t")).unwrap_err());
        assert!(err.contains("max_sise"), "{err}");
        let with_typo = EXAMPLE.replace("backoff_max", "backof_max");
        let err = format!("{:#}", Config::from_toml(&with_typo, None).unwrap_err());
        assert!(err.contains("backof_max"), "{err}");
    }

    #[test]
    fn a_missing_token_names_the_three_options() {
        let err = format!("{:#}", Config::from_toml("", None).unwrap_err());
        for option in ["lake.token", "lake.token_file", TOKEN_ENV] {
            assert!(err.contains(option), "{err}");
        }
    }

    #[test]
    fn token_file_is_read_and_trimmed_and_debug_redacts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cret\n").unwrap();
        let toml = format!("[lake]\ntoken_file = {:?}\n", p.display().to_string());
        let c = Config::from_toml(&toml, Some("ignored")).unwrap();
        assert_eq!(c.lake.token.expose(), "s3cret");
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        let both = format!("[lake]\ntoken = \"a\"\ntoken_file = {:?}\n", p.display().to_string());
        assert!(Config::from_toml(&both, None).is_err());
    }

    #[test]
    fn debug_of_the_config_hides_every_token() {
        // Inline in the file, from LAKE_TOKEN, and the lake-down webhook's bearer token.
        let toml = "[lake]\ntoken = \"inl1ne-s3cret\"\n[heartbeat.lake_down]\nurl = \"https://hooks.example/T0/B1/x\"\nbearer_token_env = \"LAKE_TEST_DEBUG_HOOK_TOKEN\"\n";
        let file: ConfigFile = toml::from_str(toml).unwrap();
        let debug = format!("{file:?}");
        assert!(!debug.contains("inl1ne-s3cret") && debug.contains("Secret(<redacted>)"), "{debug}");
        // A name no other test reads, so setting it races nothing.
        std::env::set_var("LAKE_TEST_DEBUG_HOOK_TOKEN", "h00k-s3cret");
        let c = file.validate(None).unwrap();
        let token: &lake_format::Secret = &c.lake.token;
        assert_eq!(token.expose(), "inl1ne-s3cret");
        assert_eq!(c.heartbeat.lake_down.as_ref().unwrap().bearer_token.as_ref().unwrap().expose(), "h00k-s3cret");
        let debug = format!("{c:?}");
        for secret in ["inl1ne-s3cret", "h00k-s3cret", "T0/B1"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(debug.contains("SecretUrl(https://hooks.example/…)"), "{debug}");
        let from_env = Config::from_toml("", Some(" env-s3cret\n")).unwrap();
        assert_eq!(from_env.lake.token.expose(), "env-s3cret");
        assert!(!format!("{from_env:?}").contains("env-s3cret"));
    }

    #[test]
    fn cross_field_errors_name_the_fields() {
        let err = format!(
            "{:#}",
            Config::from_toml("[spool]\nmax_size = \"8MiB\"\nsegment_size = \"8MiB\"\n", Some("t")).unwrap_err()
        );
        assert!(err.contains("spool.max_size") && err.contains("spool.segment_size"), "{err}");
        let err = format!("{:#}", Config::from_toml("[shipper]\nbackoff_min = \"2m\"\n", Some("t")).unwrap_err());
        assert!(err.contains("backoff_min") && err.contains("backoff_max"), "{err}");
        assert!(Config::from_toml("node = \"bad name\"\n", Some("t")).is_err());
        assert!(Config::from_toml("version = 2\n", Some("t")).is_err());
    }

    #[test]
    fn hostnames_become_valid_node_names() {
        for (raw, want) in [
            ("salem-storage", "salem-storage"),
            ("my host!", "my-host-"),
            (".hidden", "hidden"),
            ("", "localhost"),
            ("héllo", "h-llo"),
        ] {
            assert_eq!(sanitize_node_name(raw), want);
            wire::validate_node_name(&sanitize_node_name(raw)).unwrap();
        }
        assert_eq!(sanitize_node_name(&"a".repeat(100)).len(), wire::MAX_NODE_LEN);
    }
}
