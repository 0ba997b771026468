//! `[[webhooks]]` of `lake.toml`: one entry per third-party sender.
//!
//! ```toml
//! [[webhooks]]
//! name = "stripe"                 # the URL: POST /v1/hooks/stripe
//! preset = "stripe"               # postmark | stripe | listmonk | github | generic
//! secret_env = "STRIPE_WHSEC"     # or secret / secret_file: the endpoint's signing secret
//! # table = "stripe"              # the custom table (default: the preset's)
//! # host = "billing"              # the rows' host column (default: "lake")
//! # auth = "stripe"               # hmac | stripe | basic | url_secret (default: the preset's)
//! # tolerance = "5m"              # stripe: how far the signed timestamp may be from now
//! # max_body = "1MiB"
//! # remember = 100000             # event ids kept to answer retries (per hook)
//! ```
//!
//! Secrets come inline (`secret`, `password`), from an environment variable (`*_env`) or
//! from a file (`*_file`), as the notification channels' do; they are never logged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::Deserialize;

use lake_format::units::{ByteSize, Dur};
use lake_format::Secret;

use super::presets::Preset;

/// The largest `max_body` a hook may take: webhook events are small (Stripe's are a few
/// KiB); a bigger limit only lets a careless sender hold more of the ingest budget.
pub const MAX_BODY_CEILING: usize = 16 << 20;
/// Default `max_body`.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Default `tolerance` of Stripe signatures (Stripe's own libraries use 300 s).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// Default `remember`: event ids kept per hook to answer retries.
pub const DEFAULT_REMEMBER: usize = 100_000;
/// Shortest secret accepted in a URL: it is the only credential, and URLs end up in logs.
pub const MIN_URL_SECRET: usize = 16;

/// How a hook's requests prove they come from the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` (GitHub and others).
    Hmac,
    /// `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`.
    Stripe,
    /// HTTP basic auth (Postmark, listmonk scripts).
    Basic,
    /// A secret as the last segment of the URL: `/v1/hooks/<name>/<secret>`.
    UrlSecret,
}

/// The validated authentication of a hook.
#[derive(Debug, Clone)]
pub enum HookAuth {
    /// See [`AuthKind::Hmac`].
    Hmac(Secret),
    /// See [`AuthKind::Stripe`].
    Stripe {
        /// The endpoint's signing secret (`whsec_…`).
        secret: Secret,
        /// How far the signed timestamp may be from the lake's clock.
        tolerance: Duration,
    },
    /// See [`AuthKind::Basic`].
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// See [`AuthKind::UrlSecret`].
    UrlSecret(Secret),
}

impl HookAuth {
    /// Its name in messages and the README.
    pub fn kind(&self) -> &'static str {
        match self {
            HookAuth::Hmac(_) => "hmac",
            HookAuth::Stripe { .. } => "stripe",
            HookAuth::Basic { .. } => "basic",
            HookAuth::UrlSecret(_) => "url_secret",
        }
    }
}

/// The generic preset's mapping: JSON pointers into the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pointers {
    /// Column name → JSON pointer (`/data/status`); empty: every top-level field.
    pub columns: BTreeMap<String, String>,
    /// The row's time (RFC 3339 or epoch seconds/ms/µs/ns); absent: time of receipt.
    pub ts: Option<String>,
    /// The event id retries carry; absent: every request is stored.
    pub id: Option<String>,
}

/// One validated `[[webhooks]]` entry.
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// The URL segment.
    pub name: String,
    /// Which payloads it maps.
    pub preset: Preset,
    /// The custom table its rows go to.
    pub table: String,
    /// The rows' `host`.
    pub host: String,
    /// How requests authenticate.
    pub auth: HookAuth,
    /// Largest body (413 beyond).
    pub max_body: usize,
    /// The generic preset's pointers (also usable by others for `ts`/`id` fallbacks: no).
    pub pointers: Pointers,
    /// Event ids remembered for retries.
    pub remember: usize,
}

/// `[[webhooks]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    name: String,
    preset: Preset,
    table: Option<String>,
    host: Option<String>,
    auth: Option<AuthKind>,
    secret: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    user: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    tolerance: Option<Dur>,
    max_body: Option<ByteSize>,
    remember: Option<usize>,
    ts_pointer: Option<String>,
    id_pointer: Option<String>,
    #[serde(default)]
    columns: BTreeMap<String, String>,
}

fn check_pointer(at: &str, p: &str) -> anyhow::Result<()> {
    if !(p.is_empty() || p.starts_with('/')) {
        bail!("{at} = {p:?}: a JSON pointer is empty (the whole payload) or starts with '/', e.g. \"/data/object/id\"");
    }
    Ok(())
}

/// Checks a hook's name: it is a URL segment and appears in logs.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("name {name:?}: use 1 to 64 of a-z, 0-9, '_' and '-' (it is the URL /v1/hooks/<name>)"))
    }
}

/// Validates every `[[webhooks]]` entry; `env` resolves `*_env` keys. Errors name the key.
pub fn validate(
    files: Vec<WebhookFile>,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<HookConfig>> {
    let mut out: Vec<HookConfig> = Vec::new();
    for (i, f) in files.into_iter().enumerate() {
        let at = format!("webhooks[{i}]");
        validate_name(&f.name).map_err(|e| anyhow!("{at}.{e}"))?;
        let at = format!("webhooks[{i}] ({})", f.name);
        if out.iter().any(|h| h.name == f.name) {
            bail!("{at}: another [[webhooks]] entry has this name; each hook needs its own URL");
        }
        let table = f.table.clone().unwrap_or_else(|| f.preset.default_table(&f.name));
        lake_format::custom::validate_table_name(&table).map_err(|e| anyhow!("{at}.table: {e}"))?;
        let host = f.host.clone().unwrap_or_else(|| "lake".to_string());
        lake_format::wire::validate_node_name(&host).map_err(|e| anyhow!("{at}.host = {host:?}: {e}"))?;
        let resolve = |inline, var, file, what: &str| {
            lake_query::alerts::notify::secret(inline, var, file, env, &at, what)
                .map_err(|e| anyhow!("{}: {}", e.at, e.message))
        };
        let secret = resolve(f.secret, f.secret_env, f.secret_file, "secret")?;
        let password = resolve(f.password, f.password_env, f.password_file, "password")?;
        let kind = match f.auth.or(f.preset.default_auth()) {
            Some(k) => k,
            None => bail!("{at}.auth: the generic preset has no default; give auth = \"hmac\", \"stripe\", \"basic\" or \"url_secret\""),
        };
        let need_secret = |s: Option<Secret>| {
            s.filter(|s| !s.expose().is_empty())
                .ok_or_else(|| anyhow!("{at}: auth = \"{}\" needs secret, secret_env or secret_file", auth_name(kind)))
        };
        let unused = |given: bool, key: &str| -> anyhow::Result<()> {
            if given {
                bail!("{at}.{key} is not used with auth = \"{}\"", auth_name(kind));
            }
            Ok(())
        };
        let auth = match kind {
            AuthKind::Hmac => {
                unused(password.is_some() || f.user.is_some(), "user/password")?;
                unused(f.tolerance.is_some(), "tolerance")?;
                HookAuth::Hmac(need_secret(secret)?)
            }
            AuthKind::Stripe => {
                unused(password.is_some() || f.user.is_some(), "user/password")?;
                let tolerance = f.tolerance.map_or(DEFAULT_TOLERANCE, |d| d.0);
                if tolerance.is_zero() || tolerance > Duration::from_secs(86_400) {
                    bail!("{at}.tolerance: between 1s and 24h (Stripe's libraries use 5m)");
                }
                HookAuth::Stripe { secret: need_secret(secret)?, tolerance }
            }
            AuthKind::Basic => {
                unused(secret.is_some(), "secret")?;
                unused(f.tolerance.is_some(), "tolerance")?;
                let user = f
                    .user
                    .filter(|u| !u.is_empty() && !u.contains(':'))
                    .ok_or_else(|| anyhow!("{at}.user: auth = \"basic\" needs a user name (not empty, no ':')"))?;
                let password = password
                    .filter(|p| !p.expose().is_empty())
                    .ok_or_else(|| anyhow!("{at}: auth = \"basic\" needs password, password_env or password_file"))?;
                HookAuth::Basic { user, password }
            }
            AuthKind::UrlSecret => {
                unused(password.is_some() || f.user.is_some(), "user/password")?;
                unused(f.tolerance.is_some(), "tolerance")?;
                let s = need_secret(secret)?;
                let ok = s.expose().len() >= MIN_URL_SECRET
                    && s.expose().bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
                if !ok {
                    bail!("{at}.secret: a URL secret is at least {MIN_URL_SECRET} characters of A-Z, a-z, 0-9, '-', '_', '.', '~' (e.g. `openssl rand -hex 24`)");
                }
                HookAuth::UrlSecret(s)
            }
        };
        let max_body = match f.max_body {
            None => DEFAULT_MAX_BODY,
            Some(b) => {
                let b = usize::try_from(b.0).unwrap_or(usize::MAX);
                if !(1024..=MAX_BODY_CEILING).contains(&b) {
                    bail!("{at}.max_body = {}: between 1KiB and 16MiB", ByteSize(b as u64));
                }
                b
            }
        };
        let remember = f.remember.unwrap_or(DEFAULT_REMEMBER);
        if !(1..=10_000_000).contains(&remember) {
            bail!("{at}.remember = {remember}: between 1 and 10000000 event ids");
        }
        let generic = f.preset == Preset::Generic;
        if !generic && (f.ts_pointer.is_some() || f.id_pointer.is_some() || !f.columns.is_empty()) {
            bail!("{at}: ts_pointer, id_pointer and columns are for preset = \"generic\"; the {} preset maps its payloads itself", f.preset.name());
        }
        for (col, p) in &f.columns {
            lake_format::custom::validate_column_name(col).map_err(|e| anyhow!("{at}.columns: {e}"))?;
            if super::presets::RESERVED.iter().any(|r| lake_format::custom::same_name(r, col)) {
                bail!(
                    "{at}.columns.{col}: the name is taken by a column every hook row has ({:?})",
                    super::presets::RESERVED
                );
            }
            check_pointer(&format!("{at}.columns.{col}"), p)?;
        }
        if let Some(p) = &f.ts_pointer {
            check_pointer(&format!("{at}.ts_pointer"), p)?;
        }
        if let Some(p) = &f.id_pointer {
            check_pointer(&format!("{at}.id_pointer"), p)?;
        }
        if matches!(auth, HookAuth::UrlSecret(_)) && f.preset == Preset::Stripe {
            warnings
                .push(format!("{at}: Stripe signs its requests; auth = \"stripe\" checks them, a URL secret does not"));
        }
        out.push(HookConfig {
            name: f.name,
            preset: f.preset,
            table,
            host,
            auth,
            max_body,
            pointers: Pointers { columns: f.columns, ts: f.ts_pointer, id: f.id_pointer },
            remember,
        });
    }
    Ok(out)
}

fn auth_name(k: AuthKind) -> &'static str {
    match k {
        AuthKind::Hmac => "hmac",
        AuthKind::Stripe => "stripe",
        AuthKind::Basic => "basic",
        AuthKind::UrlSecret => "url_secret",
    }
}
