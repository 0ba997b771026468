//! `pull`: fetch an API on a schedule and map its answer into rows — Cloudflare's edge
//! analytics, the weather at the home site, any JSON or CSV endpoint.
//!
//! Config: `[[pull]]` entries in `collector.toml`, one task each. Every `interval` a
//! request (`method`, `headers`, a bearer token or a secret header read from the file, an
//! environment variable or a file, an optional `body` such as a GraphQL POST; `timeout`
//! for the whole exchange, the body bounded by `max_bytes`) whose answer — JSON, or CSV
//! with a header row — is mapped ([`map`]): `rows`, a JSON pointer to the records (a
//! segment `[]` iterates an array), `columns` (name → pointer relative to the record,
//! optionally typed), the row's time from `ts` in `ts_format` (RFC 3339, unix seconds or
//! milliseconds; the pull's start without it), constant `set` columns. Rows go to custom
//! table `json/<table>` like `exec`'s (see [`super::custom`]).
//!
//! **Cursor.** `cursor = "/pointer"` takes the next position from the answer (a page
//! token, a newest id), `cursor = "max_ts"` is the newest row time shipped; either is
//! substituted for `{cursor}` in `url` (percent-encoded) and `body` (JSON-string escaped)
//! of the next request (`cursor_initial` before the first). A pointer cursor that moved
//! fetches the next page at once, up to `max_pages` per interval. **Idempotence:** with
//! `key` (column names, `ts` allowed) a row whose key was shipped recently (the last
//! `max_keys`) is skipped, so an API that reports overlapping windows ships each row
//! once. The cursor and the keys are the source's state, spooled in the same group as the
//! rows ([`super::SourceContext::emit_encoded`]): a restart, clean or `kill -9`, resumes
//! where the last spooled rows ended, neither repeating nor skipping; while the spool is
//! full the source waits and its position holds.
//!
//! Presets fill all of this in: `cloudflare` ([`cloudflare`]: GraphQL Analytics per zone
//! into `cloudflare_http` and the built-in `firewall` table, over windows that closed),
//! `open_meteo` (the current weather at `latitude`/`longitude` into `weather`, one row per
//! 15-minute reading, keyed by its time and location).
//!
//! **Errors.** A request that fails (connection, `timeout`, non-2xx, a body over
//! `max_bytes`) or an answer that does not map (not JSON, GraphQL `errors`, the `rows`
//! pointer missing or not records) is a `logs` row (source `pull`, ident `<name>`) whose
//! message names the pull, the method and URL (query hidden: keys travel there) and the
//! pointer; it counts in `errors` and is logged (first, every 10th in a row, recovery).
//! Nothing is shipped and the cursor holds, so the next interval tries the same position
//! again. A record that does not map (its time missing or malformed, a value not of its
//! column's type, not an object) is a `logs` row `pull-unparsed` with the record's JSON,
//! counted in `parse_errors`; the other records ship.
//!
//! Counters: source `pull/<name>`.

pub mod cloudflare;
pub mod fetch;
pub mod map;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure};
use lake_format::logs::LogsBuilder;
use lake_format::rows::now_micros;
use lake_format::units::{ByteSize, Dur};
use lake_format::Table;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::custom::{self, NdjsonBodies};
use super::notes::{FailureLog, Note, PRIORITY_ERR};
use super::ufw::FirewallRows;
use super::unparsed::UnparsedRows;
use super::{Emitted, Encoded, SourceContext, SourceError};
use crate::config::Secret;
use crate::stats::Stats;
use fetch::{FetchError, Request};
use map::{BadRecord, Column, ColumnType, MapError, Mapping, RowsPath, Seen, TsFormat, TsSpec};

/// `source` of the `logs` rows about failed pulls (and `<this>-unparsed` of bad records).
pub const NOTE_SOURCE: &str = "pull";
/// The Open-Meteo forecast endpoint.
pub const OPEN_METEO_URL: &str = "https://api.open-meteo.com/v1/forecast";
/// Current-weather variables asked for by default.
pub const OPEN_METEO_VARIABLES: &[&str] = &[
    "temperature_2m",
    "relative_humidity_2m",
    "apparent_temperature",
    "precipitation",
    "weather_code",
    "cloud_cover",
    "pressure_msl",
    "wind_speed_10m",
    "wind_direction_10m",
    "wind_gusts_10m",
];

const fn default_interval() -> Dur {
    Dur(Duration::from_secs(60))
}
const fn default_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
const fn default_max_bytes() -> ByteSize {
    ByteSize(16 << 20)
}
const fn default_max_pages() -> usize {
    10
}
const fn default_max_keys() -> usize {
    10_000
}
const fn default_settle() -> Dur {
    Dur(Duration::from_secs(300))
}
const fn default_backfill() -> Dur {
    Dur(Duration::from_secs(3600))
}
const fn default_true() -> bool {
    true
}

/// Which preset fills the entry in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Everything from the entry.
    #[default]
    Generic,
    /// Cloudflare GraphQL Analytics.
    Cloudflare,
    /// Open-Meteo current weather.
    OpenMeteo,
}

/// The answer's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// JSON.
    #[default]
    Json,
    /// CSV with a header row: records `{header: "value"}`, rows pointer `""`.
    Csv,
}

/// A column as written: a pointer, or `{ pointer, type }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ColumnFile {
    Pointer(String),
    Typed {
        pointer: String,
        #[serde(rename = "type", default)]
        ty: ColumnType,
    },
}

/// A constant column value.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SetValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// One `[[pull]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PullFile {
    /// Unique name: `[a-z0-9][a-z0-9_-]*`, at most 63 characters. Required.
    name: String,
    /// `generic` (default), `cloudflare` or `open_meteo`.
    #[serde(default)]
    preset: Preset,
    /// The endpoint (required for `generic`); `{cursor}` is substituted.
    #[serde(default)]
    url: Option<String>,
    /// GET (default) or POST.
    #[serde(default)]
    method: Option<String>,
    /// Headers sent (not secret: they may be logged).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Request body (POST); `{cursor}` is substituted.
    #[serde(default)]
    body: Option<String>,
    /// Bearer token: inline, from an environment variable, or from a file (one of them).
    #[serde(default)]
    bearer_token: Option<Secret>,
    #[serde(default)]
    bearer_token_env: Option<String>,
    #[serde(default)]
    bearer_token_file: Option<PathBuf>,
    /// A header carrying a secret (`X-Api-Key`), its value as the bearer token's.
    #[serde(default)]
    secret_header: Option<String>,
    #[serde(default)]
    secret: Option<Secret>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    /// `json` (default) or `csv`.
    #[serde(default)]
    format: BodyFormat,
    /// Custom table of the rows (`generic`: required).
    #[serde(default)]
    table: Option<String>,
    /// JSON pointer to the records. Default `""` (the document).
    #[serde(default)]
    rows: Option<String>,
    /// Column name → pointer relative to the record (or `{ pointer, type }`).
    #[serde(default)]
    columns: BTreeMap<String, ColumnFile>,
    /// Pointer to the row's time, relative to the record.
    #[serde(default)]
    ts: Option<String>,
    /// `rfc3339` (default), `unix_s` or `unix_ms`.
    #[serde(default)]
    ts_format: TsFormat,
    /// Constant columns added to every row.
    #[serde(default)]
    set: BTreeMap<String, SetValue>,
    /// Columns whose values identify a row (dedupe). Default none (open_meteo: ts, location).
    #[serde(default)]
    key: Vec<String>,
    /// Keys remembered for dedupe. Default 10000.
    #[serde(default = "default_max_keys")]
    max_keys: usize,
    /// `"/pointer"` into the answer or `"max_ts"`.
    #[serde(default)]
    cursor: Option<String>,
    /// `{cursor}` before the first answer. Default "".
    #[serde(default)]
    cursor_initial: Option<String>,
    /// Pages fetched at most per interval (pointer cursor). Default 10.
    #[serde(default = "default_max_pages")]
    max_pages: usize,
    /// Time between two pulls. Default 60s.
    #[serde(default = "default_interval")]
    interval: Dur,
    /// Time one request may take, connect to last byte. Default 10s; at most `interval`.
    #[serde(default = "default_timeout")]
    timeout: Dur,
    /// Largest answer accepted. Default 16MiB.
    #[serde(default = "default_max_bytes")]
    max_bytes: ByteSize,
    /// cloudflare: zone tags (ids). Required there.
    #[serde(default)]
    zones: Vec<String>,
    /// cloudflare: how long a minute is left to settle before it is fetched. Default 5m.
    #[serde(default = "default_settle")]
    settle: Dur,
    /// cloudflare: how far back the first window starts. Default 1h.
    #[serde(default = "default_backfill")]
    backfill: Dur,
    /// cloudflare: longest window of one request. Default 1h.
    #[serde(default = "default_backfill")]
    max_window: Dur,
    /// cloudflare: also firewall events into `firewall`. Default true.
    #[serde(default = "default_true")]
    firewall: bool,
    /// open_meteo: coordinates. Required there.
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
    /// open_meteo: current-weather variables. Default [`OPEN_METEO_VARIABLES`].
    #[serde(default)]
    variables: Vec<String>,
    /// open_meteo: the `location` column. Default the entry's name.
    #[serde(default)]
    location: Option<String>,
}

/// Where the next request starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorSpec {
    /// No cursor.
    None,
    /// From the answer at this pointer.
    Pointer(String),
    /// The newest row time shipped, written in `ts_format`.
    MaxTs,
}

/// The Cloudflare part of an entry.
#[derive(Debug, Clone)]
pub struct CloudflareSpec {
    /// Zone tags.
    pub zones: Vec<String>,
    /// Time left to settle.
    pub settle: Duration,
    /// First window's reach back.
    pub backfill: Duration,
    /// Longest window.
    pub max_window: Duration,
    /// Firewall events too.
    pub firewall: bool,
}

/// A validated `[[pull]]` entry.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// The entry's name.
    pub name: String,
    /// Counters and state name: `pull/<name>`.
    pub source: &'static str,
    /// The preset.
    pub preset: Preset,
    /// GET or POST.
    pub method: reqwest::Method,
    /// The URL as configured (`{cursor}` not substituted).
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Secret headers.
    pub secret_headers: Vec<(String, Secret)>,
    /// Body template.
    pub body: Option<String>,
    /// JSON or CSV.
    pub format: BodyFormat,
    /// Custom table.
    pub table: String,
    /// How records become rows.
    pub mapping: Mapping,
    /// Dedupe key columns.
    pub key: Vec<String>,
    /// Keys remembered.
    pub max_keys: usize,
    /// Cursor.
    pub cursor: CursorSpec,
    /// First cursor.
    pub cursor_initial: String,
    /// Pages per interval.
    pub max_pages: usize,
    /// Time between pulls.
    pub interval: Duration,
    /// Time a request may take.
    pub timeout: Duration,
    /// Largest answer.
    pub max_bytes: u64,
    /// Cloudflare settings (preset `cloudflare`).
    pub cloudflare: Option<CloudflareSpec>,
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// A secret for an HTTP header ([`super::secret`]), refused if it cannot be one.
fn secret(
    section: &str,
    key: &str,
    inline: Option<Secret>,
    var: Option<String>,
    file: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<Secret>> {
    let value = super::secret(section, key, inline.map(|s| s.0), var, file.as_deref(), env)?;
    if let Some(v) = &value {
        ensure!(
            reqwest::header::HeaderValue::from_str(v.expose()).is_ok(),
            "{section}.{key}: not a valid header value (control characters?)"
        );
    }
    Ok(value)
}

/// Validates every `[[pull]]` entry; names must be unique. `env` looks a variable up.
pub(crate) fn validate_all(
    files: Vec<PullFile>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<PullConfig>> {
    super::validate_named("pull", files, |f| f.name.clone(), |f, section| f.validate(section, env))
}

fn check_url(section: &str, url: &str) -> anyhow::Result<()> {
    let probe = url.replace("{cursor}", "x");
    let parsed = reqwest::Url::parse(&probe).map_err(|e| anyhow::anyhow!("{section}.url is not a valid URL ({e})"))?;
    ensure!(
        matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some_and(|h| !h.is_empty()),
        "{section}.url must be an http:// or https:// URL with a host"
    );
    Ok(())
}

impl PullFile {
    fn validate(self, section: &str, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<PullConfig> {
        ensure!(valid_name(&self.name), "{section}.name: use [a-z0-9][a-z0-9_-]*, at most 63 characters");
        super::check_schedule(section, self.interval.0, self.timeout.0, ": pulls never overlap")?;
        ensure!(
            (1024..=(256 << 20)).contains(&self.max_bytes.0),
            "{section}.max_bytes must be between 1KiB and 256MiB"
        );
        ensure!((1..=1000).contains(&self.max_pages), "{section}.max_pages must be between 1 and 1000");
        ensure!((1..=1_000_000).contains(&self.max_keys), "{section}.max_keys must be between 1 and 1000000");
        let bearer =
            secret(section, "bearer_token", self.bearer_token, self.bearer_token_env, self.bearer_token_file, env)?;
        let header_secret = secret(section, "secret", self.secret, self.secret_env, self.secret_file, env)?;
        let mut secret_headers = Vec::new();
        if let Some(t) = bearer {
            secret_headers.push(("Authorization".to_string(), Secret::new(format!("Bearer {}", t.expose()))));
        }
        match (self.secret_header, header_secret) {
            (Some(h), Some(s)) => {
                ensure!(
                    reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_ok(),
                    "{section}.secret_header: {h:?} is not a header name"
                );
                secret_headers.push((h, s));
            }
            (None, None) => {}
            (Some(_), None) => bail!("{section}.secret_header needs secret, secret_env or secret_file"),
            (None, Some(_)) => bail!("{section}: secret needs secret_header (the header that carries it)"),
        }
        let mut headers = Vec::new();
        for (k, v) in &self.headers {
            ensure!(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_ok(),
                "{section}.headers: {k:?} is not a header name"
            );
            ensure!(
                reqwest::header::HeaderValue::from_str(v).is_ok(),
                "{section}.headers.{k}: not a valid header value"
            );
            ensure!(
                !k.eq_ignore_ascii_case("authorization"),
                "{section}.headers.Authorization: use bearer_token(_env/_file) or secret_header, which are never logged"
            );
            headers.push((k.clone(), v.clone()));
        }
        let method = match self.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("GET") => reqwest::Method::GET,
            Some("POST") => reqwest::Method::POST,
            Some(other) => bail!("{section}.method = {other:?}: use \"GET\" or \"POST\""),
        };
        let mut set: Vec<(String, Value)> = self
            .set
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    SetValue::Bool(b) => Value::Bool(b),
                    SetValue::Int(i) => Value::from(i),
                    SetValue::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
                    SetValue::Text(s) => Value::String(s),
                };
                (k, v)
            })
            .collect();
        let cursor = match self.cursor.as_deref() {
            None => CursorSpec::None,
            Some("max_ts") => CursorSpec::MaxTs,
            Some(p) if p.starts_with('/') => CursorSpec::Pointer(p.to_string()),
            Some(p) => bail!("{section}.cursor = {p:?}: use a JSON pointer into the answer (\"/next\") or \"max_ts\""),
        };
        let mapped_by_user = self.rows.is_some() || !self.columns.is_empty() || self.ts.is_some();
        let (url, table, mapping, key, cloudflare, method, headers) = match self.preset {
            Preset::Generic => {
                let url = self.url.ok_or_else(|| anyhow::anyhow!("{section}: url is required"))?;
                let table = self
                    .table
                    .ok_or_else(|| anyhow::anyhow!("{section}: table is required (the custom table the rows go to)"))?;
                let rows = RowsPath::parse(self.rows.as_deref().unwrap_or(""))
                    .map_err(|e| anyhow::anyhow!("{section}.rows: {e}"))?;
                let mut columns = Vec::new();
                for (name, c) in self.columns {
                    let (pointer, ty) = match c {
                        ColumnFile::Pointer(p) => (p, ColumnType::Auto),
                        ColumnFile::Typed { pointer, ty } => (pointer, ty),
                    };
                    ensure!(
                        pointer.is_empty() || pointer.starts_with('/'),
                        "{section}.columns.{name} = {pointer:?}: a JSON pointer relative to the record starts with /"
                    );
                    columns.push(Column { name, pointer, ty });
                }
                let ts = match self.ts {
                    Some(p) => {
                        ensure!(
                            p.starts_with('/'),
                            "{section}.ts = {p:?}: a JSON pointer relative to the record starts with /"
                        );
                        Some(TsSpec { pointer: p, format: self.ts_format })
                    }
                    None => None,
                };
                ensure!(
                    cursor != CursorSpec::MaxTs || ts.is_some(),
                    "{section}: cursor = \"max_ts\" needs ts (the pointer to each row's time)"
                );
                (url, table, Mapping { rows, columns, ts, set: Vec::new() }, self.key, None, method, headers)
            }
            Preset::OpenMeteo => {
                ensure!(
                    !mapped_by_user,
                    "{section}: preset open_meteo maps the answer itself: remove rows, columns and ts"
                );
                let lat =
                    self.latitude.ok_or_else(|| anyhow::anyhow!("{section}: preset open_meteo needs latitude"))?;
                let lon =
                    self.longitude.ok_or_else(|| anyhow::anyhow!("{section}: preset open_meteo needs longitude"))?;
                ensure!((-90.0..=90.0).contains(&lat), "{section}.latitude must be between -90 and 90");
                ensure!((-180.0..=180.0).contains(&lon), "{section}.longitude must be between -180 and 180");
                let vars: Vec<String> = if self.variables.is_empty() {
                    OPEN_METEO_VARIABLES.iter().map(|s| s.to_string()).collect()
                } else {
                    self.variables
                };
                for v in &vars {
                    ensure!(
                        !v.is_empty() && v.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
                        "{section}.variables: {v:?} is not an Open-Meteo variable name"
                    );
                }
                let base = self.url.unwrap_or_else(|| OPEN_METEO_URL.to_string());
                check_url(section, &base)?;
                let mut u = reqwest::Url::parse(&base)?;
                u.query_pairs_mut()
                    .append_pair("latitude", &lat.to_string())
                    .append_pair("longitude", &lon.to_string())
                    .append_pair("current", &vars.join(","))
                    .append_pair("timeformat", "unixtime");
                let columns = vars
                    .iter()
                    .map(|v| Column {
                        name: v.clone(),
                        pointer: format!("/{v}"),
                        // Codes and flags are integers; measurements floats, also when a
                        // reading happens to be whole, so the lake's column stays a float.
                        ty: if v.ends_with("_code") || v == "is_day" { ColumnType::Int } else { ColumnType::Float },
                    })
                    .collect();
                set.push(("location".into(), Value::String(self.location.unwrap_or_else(|| self.name.clone()))));
                set.push(("latitude".into(), serde_json::Number::from_f64(lat).map_or(Value::Null, Value::Number)));
                set.push(("longitude".into(), serde_json::Number::from_f64(lon).map_or(Value::Null, Value::Number)));
                let mapping = Mapping {
                    rows: RowsPath::parse("/current").expect("valid path"),
                    columns,
                    ts: Some(TsSpec { pointer: "/time".into(), format: TsFormat::UnixS }),
                    set: Vec::new(),
                };
                let key = if self.key.is_empty() { vec!["ts".into(), "location".into()] } else { self.key };
                (u.to_string(), self.table.unwrap_or_else(|| "weather".into()), mapping, key, None, method, headers)
            }
            Preset::Cloudflare => {
                ensure!(
                    !mapped_by_user,
                    "{section}: preset cloudflare maps the answer itself: remove rows, columns and ts"
                );
                ensure!(
                    cursor == CursorSpec::None,
                    "{section}: preset cloudflare keeps its own cursor (the end of the last window): remove cursor"
                );
                ensure!(
                    self.body.is_none(),
                    "{section}: preset cloudflare writes the GraphQL query itself: remove body"
                );
                ensure!(
                    !self.zones.is_empty(),
                    "{section}: preset cloudflare needs zones (zone tags, from the zone's Overview page)"
                );
                for z in &self.zones {
                    ensure!(
                        !z.is_empty() && z.len() <= 64 && z.bytes().all(|c| c.is_ascii_alphanumeric()),
                        "{section}.zones: {z:?} is not a zone tag (32 hex digits)"
                    );
                }
                ensure!(
                    secret_headers.iter().any(|(h, _)| h == "Authorization" || h.eq_ignore_ascii_case("x-auth-key")),
                    "{section}: preset cloudflare needs an API token with Analytics Read: bearer_token_env or bearer_token_file"
                );
                ensure!(self.settle.0 >= Duration::from_secs(60), "{section}.settle must be at least 1m");
                ensure!(self.max_window.0 >= Duration::from_secs(60), "{section}.max_window must be at least 1m");
                ensure!(
                    self.max_window.0 <= Duration::from_secs(86_400),
                    "{section}.max_window must be at most 1d (the API's range limit)"
                );
                let url = self.url.unwrap_or_else(|| cloudflare::DEFAULT_URL.to_string());
                let mut headers = headers;
                if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                    headers.push(("Content-Type".into(), "application/json".into()));
                }
                let spec = CloudflareSpec {
                    zones: self.zones,
                    settle: self.settle.0,
                    backfill: self.backfill.0,
                    max_window: self.max_window.0,
                    firewall: self.firewall,
                };
                let table = self.table.unwrap_or_else(|| cloudflare::DEFAULT_TABLE.into());
                // The zone's own mapping is built per request; this one holds the `set` columns.
                let mut mapping = cloudflare::http_mapping("");
                mapping.set.clear();
                (url, table, mapping, Vec::new(), Some(spec), reqwest::Method::POST, headers)
            }
        };
        check_url(section, &url)?;
        custom::validate_table_name(&table).map_err(|e| anyhow::anyhow!("{section}.table: {e}"))?;
        let mut mapping = mapping;
        for (k, _) in &set {
            ensure!(!k.is_empty() && k != "ts", "{section}.set: {k:?} cannot be a constant column");
        }
        mapping.set.extend(set);
        let names: HashSet<&str> = std::iter::once("ts")
            .chain(mapping.columns.iter().map(|c| c.name.as_str()))
            .chain(mapping.set.iter().map(|(k, _)| k.as_str()))
            .collect();
        for c in &mapping.columns {
            ensure!(c.name != "ts", "{section}.columns.ts: the row's time is set with ts = \"/pointer\"");
            ensure!(
                c.name != "host",
                "{section}.columns.host: the lake fills host with the node; name the column otherwise (vhost, server)"
            );
        }
        if !mapping.columns.is_empty() {
            for k in &key {
                ensure!(names.contains(k.as_str()), "{section}.key: {k:?} is not a column (nor ts, nor set)");
            }
        }
        ensure!(
            self.format == BodyFormat::Json || self.preset == Preset::Generic,
            "{section}.format: presets read JSON"
        );
        Ok(PullConfig {
            source: super::leak_name(format!("pull/{}", self.name)),
            name: self.name,
            preset: self.preset,
            method,
            url,
            headers,
            secret_headers,
            body: self.body,
            format: self.format,
            table,
            mapping,
            key,
            max_keys: self.max_keys,
            cursor,
            cursor_initial: self.cursor_initial.unwrap_or_default(),
            max_pages: self.max_pages,
            interval: self.interval.0,
            timeout: self.timeout.0,
            max_bytes: self.max_bytes.0,
            cloudflare,
        })
    }
}

/// The saved position of a pull.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PullState {
    /// The `{cursor}` of the next request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// The newest row time shipped, µs (`max_ts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<i64>,
    /// Keys of the rows shipped last (`key`).
    #[serde(default, skip_serializing_if = "Seen::is_empty")]
    pub seen: Seen,
    /// cloudflare: per zone tag, the end of the last window shipped (µs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub zones: BTreeMap<String, i64>,
}

/// Escapes a cursor for the inside of a JSON string.
fn json_escape(s: &str) -> String {
    let q = serde_json::to_string(s).unwrap_or_default();
    q[1..q.len() - 1].to_string()
}

/// What one request produced.
#[derive(Debug, Default)]
pub struct Pulled {
    /// Spool records: the table's rows, `firewall`, `logs` of bad records and failures.
    pub records: Vec<Encoded>,
    /// Rows kept (after dedupe), every table.
    pub rows: u64,
    /// Rows the API reported again, skipped by `key`.
    pub repeated: u64,
    /// Records that did not map.
    pub bad: u64,
    /// Why the request or its answer failed; nothing else is shipped then.
    pub failure: Option<String>,
    /// Another page is waiting (pointer cursor that moved).
    pub more: bool,
    /// A Cloudflare window hit the API's row limit: what is beyond it is not in the answer.
    pub truncated: bool,
}

/// One request of a pull and what it asks for.
#[derive(Debug, Clone)]
pub struct Step {
    /// The request.
    pub req: Request,
    /// Which target: 0, or the zone's index (cloudflare).
    pub target: usize,
    /// The window asked for (cloudflare), µs.
    pub window: Option<(i64, i64)>,
}

/// The next request of `target` (0, or a Cloudflare zone's index) from `state`; `None`
/// for a zone whose next minute has not settled.
pub fn request(config: &PullConfig, state: &PullState, target: usize, now: i64) -> Option<Step> {
    let (url, body, window) = match &config.cloudflare {
        Some(cf) => {
            let zone = &cf.zones[target];
            let w = cloudflare::window(state.zones.get(zone).copied(), now, cf.settle, cf.backfill, cf.max_window)?;
            (config.url.clone(), Some(cloudflare::body(zone, w.0, w.1, cf.firewall)), Some(w))
        }
        None => {
            let cursor = state.cursor.as_deref().unwrap_or(&config.cursor_initial);
            let url = config.url.replace("{cursor}", &super::url_escape(cursor));
            let body = config.body.as_ref().map(|b| b.replace("{cursor}", &json_escape(cursor)));
            (url, body, None)
        }
    };
    let url = reqwest::Url::parse(&url).ok()?;
    let req = Request {
        method: config.method.clone(),
        url,
        headers: config.headers.clone(),
        secret_headers: config.secret_headers.clone(),
        body,
    };
    Some(Step { req, target, window })
}

/// Turns one answer into rows and the next state (pure: `started` µs is given). On a
/// failure `state` is left as it was.
pub fn process(
    config: &PullConfig,
    node: &str,
    step: &Step,
    answer: Result<Vec<u8>, FetchError>,
    state: &mut PullState,
    started: i64,
) -> Result<Pulled, SourceError> {
    let Step { req, target, window } = step;
    let (target, window) = (*target, *window);
    let name = config.source;
    let encode = |e: arrow_schema::ArrowError| SourceError::Encode { source_name: name, error: e.to_string() };
    let zone = config.cloudflare.as_ref().map(|cf| cf.zones[target].as_str());
    let what = match zone {
        Some(z) => format!("pull {} (zone {z}): {} {}", config.name, req.method, fetch::redacted(&req.url)),
        None => format!("pull {}: {} {}", config.name, req.method, fetch::redacted(&req.url)),
    };
    let mut out = Pulled::default();
    let mapped = answer.map_err(|e| e.to_string()).and_then(|body| {
        let doc = parse_body(config.format, &body).map_err(|e| e.to_string())?;
        map_answer(config, node, zone, &doc, started).map_err(|e| e.to_string())
    });
    let mut unparsed = UnparsedRows::new(NOTE_SOURCE);
    let mut notes = LogsBuilder::new();
    match mapped {
        Err(e) => {
            let message = format!("{what}: {e}");
            Note {
                ts: started,
                node,
                source: NOTE_SOURCE,
                ident: &config.name,
                priority: PRIORITY_ERR,
                message: &message,
                attrs: &[("url", &fetch::redacted(&req.url)), ("zone", zone.unwrap_or(""))],
            }
            .push_to(&mut notes);
            out.failure = Some(message);
        }
        Ok(answer) => {
            let mut next = state.clone();
            next.seen = std::mem::take(&mut next.seen).rebuilt();
            let mut bodies = NdjsonBodies::new(&config.table, name);
            let before = answer.rows.len();
            let fw_len = answer.firewall.as_ref().map_or(0, |f| f.len());
            if let (Some(z), Some((since, until))) = (zone, window) {
                if before >= cloudflare::LIMIT || fw_len >= cloudflare::LIMIT {
                    // Shipped as received, but said: the rest of the window is not in the answer.
                    let message = format!(
                        "{what}: {} rows in the window {} – {}, the API's limit: the rest of it is missing; lower max_window",
                        cloudflare::LIMIT,
                        custom::rfc3339_micros(since),
                        custom::rfc3339_micros(until)
                    );
                    Note {
                        ts: started,
                        node,
                        source: NOTE_SOURCE,
                        ident: &config.name,
                        priority: 4,
                        message: &message,
                        attrs: &[("zone", z)],
                    }
                    .push_to(&mut notes);
                    out.truncated = true;
                }
            }
            for row in answer.rows {
                if !config.key.is_empty() && !next.seen.insert(map::row_key(&row.object, &config.key), config.max_keys)
                {
                    out.repeated += 1;
                    continue;
                }
                next.newest = Some(next.newest.map_or(row.ts, |n| n.max(row.ts)));
                match serde_json::to_vec(&row.object) {
                    Ok(line) => bodies.push(&line),
                    Err(e) => return Err(SourceError::Encode { source_name: name, error: e.to_string() }),
                }
                out.rows += 1;
            }
            out.records.extend(bodies.finish());
            if let Some(fw) = answer.firewall {
                out.rows += fw.len() as u64;
                let mut fw = fw;
                let b = fw.finish().map_err(encode)?;
                out.records.extend(SourceContext::encode_batches(name, Table::Firewall, &[b])?);
            }
            for b in &answer.bad {
                out.bad += 1;
                unparsed.push_from(
                    node,
                    b.raw.as_bytes(),
                    &[("pull", &config.name)],
                    &b.error.to_string(),
                    false,
                    started,
                );
            }
            match &config.cursor {
                CursorSpec::None => {}
                CursorSpec::MaxTs => {
                    if let (Some(n), Some(spec)) = (next.newest, &config.mapping.ts) {
                        next.cursor = Some(spec.format.render(n));
                    }
                }
                CursorSpec::Pointer(_) => {
                    if let Some(c) = answer.cursor {
                        out.more = before > 0 && next.cursor.as_deref() != Some(c.as_str());
                        next.cursor = Some(c);
                    }
                }
            }
            if let (Some(z), Some((_, until))) = (zone, window) {
                next.zones.insert(z.to_string(), until);
            }
            *state = next;
        }
    }
    let logs = [unparsed.finish().map_err(encode)?, notes.finish().map_err(encode)?];
    out.records.extend(SourceContext::encode_batches(name, Table::Logs, &logs)?);
    Ok(out)
}

/// An answer mapped.
struct Answer {
    rows: Vec<map::Row>,
    bad: Vec<BadRecord>,
    firewall: Option<FirewallRows>,
    cursor: Option<String>,
}

fn parse_body(format: BodyFormat, body: &[u8]) -> Result<Value, MapError> {
    match format {
        BodyFormat::Json => serde_json::from_slice(body).map_err(|e| MapError::NotJson(e.to_string())),
        BodyFormat::Csv => {
            let text = std::str::from_utf8(body).map_err(|e| MapError::Csv(format!("not UTF-8 ({e})")))?;
            map::csv_records(text.strip_prefix('\u{feff}').unwrap_or(text))
        }
    }
}

fn map_answer(
    config: &PullConfig,
    node: &str,
    zone: Option<&str>,
    doc: &Value,
    started: i64,
) -> Result<Answer, MapError> {
    let mut firewall = None;
    let mapped = match (zone, &config.cloudflare) {
        (Some(z), Some(cf)) => {
            cloudflare::graphql_errors(doc)?;
            let mut mapping = cloudflare::http_mapping(z);
            mapping.set.extend(config.mapping.set.iter().cloned());
            let mut m = mapping.map(doc, started)?;
            if cf.firewall {
                let mut rows = FirewallRows::new();
                let (_, bad) = cloudflare::firewall_rows(doc, z, node, &mut rows)?;
                m.bad.extend(bad);
                firewall = Some(rows);
            }
            m
        }
        _ => config.mapping.map(doc, started)?,
    };
    let cursor = match &config.cursor {
        CursorSpec::Pointer(p) => match doc.pointer(p) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                return Err(MapError::WrongType {
                    pointer: p.clone(),
                    want: "a string or a number (the cursor)",
                    got: map::kind(other),
                })
            }
        },
        _ => None,
    };
    Ok(Answer { rows: mapped.rows, bad: mapped.bad, firewall, cursor })
}

/// The HTTP client of a pull, with the collector's user agent. Redirects are not followed
/// (a 3xx is a failed pull naming its status): a secret header would go along to wherever
/// the redirect points.
pub fn client(config: &PullConfig) -> Result<reqwest::Client, SourceError> {
    reqwest::Client::builder()
        .connect_timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lake-collector/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SourceError::Start { source_name: config.source, reason: e.to_string() })
}

/// One request of `target` and its processing (fetch + [`process`]); `None` when the
/// target has nothing to ask yet (a Cloudflare zone whose next minute has not settled).
pub async fn pull_once(
    client: &reqwest::Client,
    config: &PullConfig,
    node: &str,
    target: usize,
    state: &mut PullState,
    now: i64,
) -> Result<Option<Pulled>, SourceError> {
    let Some(step) = request(config, state, target, now) else {
        return Ok(None);
    };
    let answer = fetch::fetch(client, &step.req, config.timeout, config.max_bytes).await;
    process(config, node, &step, answer, state, now).map(Some)
}

/// The running `[[pull]]` entry.
#[derive(Debug)]
pub struct PullSource {
    config: PullConfig,
    ctx: SourceContext,
}

impl PullSource {
    /// A source for one entry.
    pub fn new(config: PullConfig, ctx: SourceContext) -> Self {
        PullSource { config, ctx }
    }

    /// Pulls every interval until `cancel`.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let PullSource { config, ctx } = self;
        let stats = ctx.source_stats(config.source);
        let client = client(&config)?;
        let mut state: PullState = ctx.load_state(config.source).await?.unwrap_or_default();
        state.seen = std::mem::take(&mut state.seen).rebuilt();
        info!(pull = %config.name, url = %reqwest::Url::parse(&config.url.replace("{cursor}", "")).map(|u| fetch::redacted(&u)).unwrap_or_default(), interval = ?config.interval, "pull source started");
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failures = FailureLog::default();
        let targets = config.cloudflare.as_ref().map_or(1, |cf| cf.zones.len());
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            for target in 0..targets {
                for _page in 0..config.max_pages {
                    let mut next = state.clone();
                    let pulled = tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        r = pull_once(&client, &config, &ctx.node, target, &mut next, now_micros()) => r?,
                    };
                    let Some(p) = pulled else { break };
                    Stats::add(&stats.read, p.rows + p.bad + p.repeated);
                    Stats::add(&stats.parse_errors, p.bad);
                    if p.truncated {
                        Stats::add(&stats.dropped, 1);
                        tracing::warn!(pull = %config.name, "a Cloudflare window hit the API's row limit: lower max_window");
                    }
                    failures.record(config.source, p.failure.as_deref(), &stats.errors);
                    if p.failure.is_some() {
                        ctx.emit_encoded_droppable(config.source, p.records).await?;
                        break;
                    }
                    // Rows and the position after them, in one held group.
                    match ctx.emit_encoded(config.source, p.records, Some(&next), &cancel).await? {
                        Emitted::Spooled(_) => state = next,
                        Emitted::Cancelled => return Ok(()),
                    }
                    if !p.more {
                        break;
                    }
                }
            }
        }
    }
}

/// For `--check`: one line per entry.
pub fn describe(config: &PullConfig) -> String {
    let target = match &config.cloudflare {
        Some(cf) if cf.firewall => format!("{} + firewall", custom::spool_table(&config.table)),
        _ => custom::spool_table(&config.table),
    };
    let url = reqwest::Url::parse(&config.url.replace("{cursor}", "")).map(|u| fetch::redacted(&u)).unwrap_or_default();
    format!("{} ({:?}) {} {url} every {:?} → {target}", config.name, config.preset, config.method, config.interval)
}

#[cfg(test)]
mod tests;
