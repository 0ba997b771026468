//! `[archive]` of `lake.toml`: the serde file layer and its validation into
//! [`ArchiveConfig`]. Errors name the key (`archive.schedule`, `archive.endpoint`, …).
//!
//! ```toml
//! [archive]
//! enabled = true                  # default true: the nightly run is on
//! schedule = "0 0 2 * * *"        # cron, six fields with seconds, UTC (default 02:00 daily)
//! store = "local"                 # "local" (default), "s3" or "r2"
//! path = "/srv/lake-archive"      # local only; default <data_dir>/archive
//! bucket = "lake"                 # s3/r2
//! endpoint = "https://<account_id>.r2.cloudflarestorage.com"   # r2: required; s3: optional
//! region = "auto"                 # default "auto" with an endpoint, else "us-east-1"
//! prefix = "lake"                 # key prefix in the bucket or directory (default none)
//! allow_http = false              # plain http endpoints (a test store on loopback) only if true
//! multipart_threshold = "64MiB"   # files above are uploaded in parts
//! multipart_part_size = "16MiB"   # part size (at least 5MiB; every part but the last has it)
//! verify = "read_back"            # "read_back" (default: size + sha256 of the stored object) or "size"
//! ```
//! Credentials of s3/r2 come from the environment: `LAKE_ARCHIVE_ACCESS_KEY_ID` and
//! `LAKE_ARCHIVE_SECRET_ACCESS_KEY` (optional `LAKE_ARCHIVE_SESSION_TOKEN`), else the
//! usual `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use lake_format::units::ByteSize;

use crate::config::Secret;
use crate::maintenance::scheduler::CronSchedule;

/// Default schedule: 02:00:00 UTC every day.
pub const DEFAULT_SCHEDULE: &str = "0 0 2 * * *";
/// Smallest multipart part S3 accepts (every part but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Largest multipart part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 << 30;

const fn default_true() -> bool {
    true
}
fn default_schedule() -> String {
    DEFAULT_SCHEDULE.to_string()
}
const fn default_threshold() -> ByteSize {
    ByteSize(64 << 20)
}
const fn default_part_size() -> ByteSize {
    ByteSize(16 << 20)
}

/// Which kind of store the archive goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StoreKind {
    #[default]
    Local,
    S3,
    R2,
}

/// How an upload is checked before it counts as archived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verify {
    /// Read the stored object back: its size and sha256 must equal the local file's.
    #[default]
    ReadBack,
    /// Only compare the stored size (HEAD): for stores where reading back costs money.
    Size,
}

/// `[archive]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ArchiveFile {
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default = "default_schedule")]
    schedule: String,
    #[serde(default)]
    store: StoreKind,
    path: Option<PathBuf>,
    bucket: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    allow_http: bool,
    #[serde(default = "default_threshold")]
    multipart_threshold: ByteSize,
    #[serde(default = "default_part_size")]
    multipart_part_size: ByteSize,
    #[serde(default)]
    verify: Verify,
}

impl Default for ArchiveFile {
    fn default() -> Self {
        ArchiveFile {
            enabled: true,
            schedule: default_schedule(),
            store: StoreKind::Local,
            path: None,
            bucket: None,
            endpoint: None,
            region: None,
            prefix: String::new(),
            allow_http: false,
            multipart_threshold: default_threshold(),
            multipart_part_size: default_part_size(),
            verify: Verify::ReadBack,
        }
    }
}

/// Access key of an S3-compatible store.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Access key id (not secret, but kept out of logs all the same).
    pub access_key_id: Secret,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token of temporary credentials.
    pub session_token: Option<Secret>,
    /// Where they came from, for messages (`LAKE_ARCHIVE_*` or `AWS_*`).
    pub source: &'static str,
}

/// Where archived partitions go.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// A local directory (the default: runs with nothing else installed).
    Local {
        /// Root directory of the archive.
        path: PathBuf,
    },
    /// An S3-compatible store (AWS S3, Cloudflare R2, MinIO, …).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Endpoint URL; `None` is AWS S3.
        endpoint: Option<String>,
        /// Region (`auto` for R2).
        region: String,
        /// Whether an `http://` endpoint is allowed.
        allow_http: bool,
        /// Credentials from the environment; `None` when unset (an error when the store
        /// is opened, which `lake serve` does at start).
        credentials: Option<Credentials>,
    },
}

/// The validated `[archive]` section.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// Whether the schedule runs (on-demand runs work either way).
    pub enabled: bool,
    /// When the nightly run fires (UTC).
    pub schedule: CronSchedule,
    /// The store.
    pub store: StoreConfig,
    /// Key prefix inside the store, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Files larger than this are uploaded in parts.
    pub multipart_threshold: u64,
    /// Size of each part but the last.
    pub part_size: usize,
    /// How uploads are verified.
    pub verify: Verify,
}

impl ArchiveConfig {
    /// The defaults for a data directory: a local archive under `<data>/archive`.
    pub fn defaults(data_dir: &Path) -> ArchiveConfig {
        ArchiveFile::default().validate(data_dir, &|_| None).expect("the defaults are valid")
    }
}

fn credentials(env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Option<Credentials>> {
    for (prefix, source) in [("LAKE_ARCHIVE_", "LAKE_ARCHIVE_*"), ("AWS_", "AWS_*")] {
        let id = env(&format!("{prefix}ACCESS_KEY_ID")).filter(|s| !s.is_empty());
        let secret = env(&format!("{prefix}SECRET_ACCESS_KEY")).filter(|s| !s.is_empty());
        match (id, secret) {
            (Some(id), Some(secret)) => {
                let token = env(&format!("{prefix}SESSION_TOKEN")).filter(|s| !s.is_empty()).map(Secret);
                return Ok(Some(Credentials {
                    access_key_id: Secret(id),
                    secret_access_key: Secret(secret),
                    session_token: token,
                    source,
                }));
            }
            (None, None) => {}
            _ => bail!("archive credentials: set both {prefix}ACCESS_KEY_ID and {prefix}SECRET_ACCESS_KEY, or neither"),
        }
    }
    Ok(None)
}

/// Normalises a key prefix: no leading/trailing `/`, no empty or `.`/`..` segments.
fn normalise_prefix(p: &str) -> anyhow::Result<String> {
    let trimmed = p.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for seg in trimmed.split('/') {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg.chars().all(|c| c.is_ascii_alphanumeric() || "-_.=".contains(c));
        if !ok {
            bail!("archive.prefix = {p:?}: use letters, digits, '-', '_', '.', '=' and '/' between segments");
        }
    }
    Ok(trimmed.to_string())
}

fn validate_bucket(b: &str) -> anyhow::Result<()> {
    let ok = (3..=63).contains(&b.len())
        && b.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        bail!("archive.bucket = {b:?} is not a bucket name (3-63 lowercase letters, digits, '-' or '.')");
    }
    Ok(())
}

fn validate_endpoint(e: &str, allow_http: bool, r2: bool) -> anyhow::Result<String> {
    let hint = if r2 { " (R2: \"https://<account_id>.r2.cloudflarestorage.com\")" } else { "" };
    let url =
        reqwest::Url::parse(e).map_err(|err| anyhow::anyhow!("archive.endpoint = {e:?} is not a URL: {err}{hint}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            bail!("archive.endpoint = {e:?}: plain http needs allow_http = true (only for a test store on loopback)")
        }
        other => bail!("archive.endpoint = {e:?}: scheme {other:?} is not http(s){hint}"),
    }
    if url.host_str().is_none_or(str::is_empty) {
        bail!("archive.endpoint = {e:?} has no host{hint}");
    }
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        bail!("archive.endpoint = {e:?}: give scheme, host and port only; the bucket goes in archive.bucket{hint}");
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

impl ArchiveFile {
    /// Validates the section; `env` resolves credentials.
    pub(crate) fn validate(
        self,
        data_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<ArchiveConfig> {
        let schedule: CronSchedule = self.schedule.parse().context("archive.schedule")?;
        let prefix = normalise_prefix(&self.prefix)?;
        let part = self.multipart_part_size.0;
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part) {
            bail!(
                "archive.multipart_part_size = {}: must be between 5MiB and 5GiB (S3's part limits)",
                self.multipart_part_size
            );
        }
        let store = match self.store {
            StoreKind::Local => {
                for (key, set) in [
                    ("bucket", self.bucket.is_some()),
                    ("endpoint", self.endpoint.is_some()),
                    ("region", self.region.is_some()),
                ] {
                    if set {
                        bail!("archive.{key} is only for store = \"s3\" or \"r2\" (store is \"local\")");
                    }
                }
                let path = self.path.unwrap_or_else(|| data_dir.join("archive"));
                StoreConfig::Local { path }
            }
            kind @ (StoreKind::S3 | StoreKind::R2) => {
                let r2 = kind == StoreKind::R2;
                if self.path.is_some() {
                    bail!("archive.path is only for store = \"local\"");
                }
                let bucket = self.bucket.context("archive.bucket is required for store = \"s3\" / \"r2\"")?;
                validate_bucket(&bucket)?;
                let endpoint = match (&self.endpoint, r2) {
                    (Some(e), _) => Some(validate_endpoint(e, self.allow_http, r2)?),
                    (None, true) => bail!("archive.endpoint is required for store = \"r2\": \"https://<account_id>.r2.cloudflarestorage.com\""),
                    (None, false) => None,
                };
                let region = match (self.region, &endpoint) {
                    (Some(r), _) if r.trim().is_empty() => bail!("archive.region is empty"),
                    (Some(r), _) => r,
                    (None, Some(_)) => "auto".to_string(),
                    (None, None) => "us-east-1".to_string(),
                };
                StoreConfig::S3 {
                    bucket,
                    endpoint,
                    region,
                    allow_http: self.allow_http,
                    credentials: credentials(env)?,
                }
            }
        };
        Ok(ArchiveConfig {
            enabled: self.enabled,
            schedule,
            store,
            prefix,
            multipart_threshold: self.multipart_threshold.0,
            part_size: usize::try_from(part).unwrap_or(usize::MAX),
            verify: self.verify,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<ArchiveConfig> {
        let f: ArchiveFile = toml::from_str(text)?;
        f.validate(Path::new("/data"), env)
    }

    #[test]
    fn defaults_to_a_local_directory_at_two() {
        let c = ArchiveConfig::defaults(Path::new("/data"));
        assert!(matches!(&c.store, StoreConfig::Local { path } if path == Path::new("/data/archive")));
        assert_eq!(c.schedule.to_string(), DEFAULT_SCHEDULE);
        assert_eq!((c.multipart_threshold, c.part_size), (64 << 20, 16 << 20));
    }

    #[test]
    fn r2_takes_region_auto_and_credentials_from_env() {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("id".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret".to_string()),
            _ => None,
        };
        let c = parse("store = \"r2\"\nbucket = \"lake\"\nendpoint = \"https://abc.r2.cloudflarestorage.com/\"\nprefix = \"/lake/\"", &env).unwrap();
        let StoreConfig::S3 { endpoint, region, credentials, .. } = &c.store else { panic!("{c:?}") };
        assert_eq!(endpoint.as_deref(), Some("https://abc.r2.cloudflarestorage.com"));
        assert_eq!(region, "auto");
        assert_eq!(credentials.as_ref().unwrap().source, "AWS_*");
        assert_eq!(c.prefix, "lake");
        assert!(!format!("{c:?}").contains("secret\""), "{c:?}");
    }

    #[test]
    fn errors_name_the_key() {
        let none = |_: &str| None;
        for (text, says) in [
            ("schedule = \"0 2 * * *\"", "archive.schedule"),
            ("schedule = \"at night\"", "archive.schedule"),
            ("store = \"r2\"\nbucket = \"lake\"", "archive.endpoint"),
            ("store = \"s3\"\nbucket = \"lake\"\nendpoint = \"not a url\"", "archive.endpoint"),
            ("store = \"s3\"\nbucket = \"lake\"\nendpoint = \"http://127.0.0.1:9000\"", "allow_http"),
            ("store = \"s3\"\nbucket = \"lake\"\nendpoint = \"ftp://x\"", "archive.endpoint"),
            ("store = \"s3\"\nbucket = \"lake\"\nendpoint = \"https://x/lake\"", "archive.bucket"),
            ("store = \"s3\"", "archive.bucket"),
            ("store = \"s3\"\nbucket = \"No_Caps\"", "archive.bucket"),
            ("store = \"gcs\"", "gcs"),
            ("bucket = \"lake\"", "archive.bucket"),
            ("prefix = \"a/../b\"", "archive.prefix"),
            ("multipart_part_size = \"1MiB\"", "archive.multipart_part_size"),
            ("verify = \"maybe\"", "maybe"),
            ("bukket = \"x\"", "bukket"),
        ] {
            let e = parse(text, &none).unwrap_err();
            assert!(format!("{e:#}").contains(says), "{text}: {e:#}");
        }
        let half = |k: &str| (k == "LAKE_ARCHIVE_ACCESS_KEY_ID").then(|| "id".to_string());
        let e = parse("store = \"s3\"\nbucket = \"lake\"", &half).unwrap_err();
        assert!(format!("{e:#}").contains("LAKE_ARCHIVE_SECRET_ACCESS_KEY"), "{e:#}");
    }
}
