//! `[uptime]` and `[[uptime.checks]]`: the serde shape, and its validation into typed
//! checks. Errors name the field, e.g. `uptime.checks[2].target`.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use lake_format::units::Dur;
use serde::Deserialize;

const fn default_interval() -> Dur {
    Dur(Duration::from_secs(60))
}
const fn default_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

/// `[uptime]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UptimeFile {
    /// Default time between two runs of a check. Default 60s.
    #[serde(default = "default_interval")]
    interval: Dur,
    /// Default timeout of one run. Default 10s.
    #[serde(default = "default_timeout")]
    timeout: Dur,
    /// The checks; none by default (the source then does not run).
    #[serde(default)]
    checks: Vec<CheckFile>,
}

impl Default for UptimeFile {
    fn default() -> Self {
        UptimeFile { interval: default_interval(), timeout: default_timeout(), checks: Vec::new() }
    }
}

/// An accepted status: a code (`200`) or a range as text (`"200-399"`, `"2xx"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum StatusFile {
    Code(u16),
    Text(String),
}

/// One `[[uptime.checks]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckFile {
    name: String,
    kind: String,
    target: String,
    #[serde(default)]
    interval: Option<Dur>,
    #[serde(default)]
    timeout: Option<Dur>,
    #[serde(default)]
    expect_status: Option<Vec<StatusFile>>,
    #[serde(default)]
    keyword: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    follow_redirects: Option<bool>,
    #[serde(default)]
    verify_tls: Option<bool>,
    #[serde(default)]
    server_name: Option<String>,
}

/// `[uptime]`, validated.
#[derive(Debug, Clone, Default)]
pub struct UptimeConfig {
    /// The checks, in file order.
    pub checks: Vec<CheckConfig>,
}

/// One check, validated.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Unique name (`attrs.name`).
    pub name: String,
    /// The configured target, written as is into `target`.
    pub target: String,
    /// Time between two runs.
    pub interval: Duration,
    /// Timeout of one run.
    pub timeout: Duration,
    /// What to do.
    pub kind: CheckKind,
}

/// The kind of a check and its own options.
#[derive(Debug, Clone)]
pub enum CheckKind {
    /// An HTTP(S) request.
    Http(HttpCheck),
    /// A TCP connect.
    Tcp {
        /// Host name or IP.
        host: String,
        /// Port.
        port: u16,
    },
    /// A TLS handshake.
    Tls(TlsCheck),
}

impl CheckKind {
    /// The `kind` column.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Http(_) => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Tls(_) => "tls",
        }
    }
}

/// Request method of an HTTP check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// GET (the body can be searched for a keyword).
    Get,
    /// HEAD (no body).
    Head,
}

/// An HTTP check's options.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    /// http or https URL.
    pub url: reqwest::Url,
    /// GET or HEAD. Default GET.
    pub method: HttpMethod,
    /// Accepted status ranges, inclusive. Default 200–399.
    pub expect_status: Vec<(u16, u16)>,
    /// Text the body must contain (searched in the first 1 MiB).
    pub keyword: Option<String>,
    /// Follow redirects (up to 10). Default true.
    pub follow_redirects: bool,
    /// Verify the server certificate. Default true.
    pub verify_tls: bool,
}

impl HttpCheck {
    /// Whether `status` is accepted.
    pub fn accepts(&self, status: u16) -> bool {
        self.expect_status.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// A TLS check's options.
#[derive(Debug, Clone)]
pub struct TlsCheck {
    /// Host name or IP to connect to.
    pub host: String,
    /// Port.
    pub port: u16,
    /// SNI and the name the certificate must carry. Default the host.
    pub server_name: String,
    /// Verify the certificate chain and name. Default true. Days left are reported either way.
    pub verify_tls: bool,
}

impl UptimeFile {
    /// Checks the section and makes it typed.
    pub(crate) fn validate(self) -> anyhow::Result<UptimeConfig> {
        ensure!(!self.interval.0.is_zero(), "uptime.interval must be more than zero");
        ensure!(!self.timeout.0.is_zero(), "uptime.timeout must be more than zero");
        let mut names = HashSet::new();
        let mut checks = Vec::with_capacity(self.checks.len());
        for (i, c) in self.checks.into_iter().enumerate() {
            let at = format!("uptime.checks[{i}]");
            ensure!(!c.name.trim().is_empty(), "{at}.name must not be empty");
            ensure!(names.insert(c.name.clone()), "{at}.name = {:?}: another check has the same name", c.name);
            checks.push(c.validate(&at, self.interval.0, self.timeout.0)?);
        }
        Ok(UptimeConfig { checks })
    }
}

impl CheckFile {
    fn validate(self, at: &str, interval: Duration, timeout: Duration) -> anyhow::Result<CheckConfig> {
        let interval = self.interval.map_or(interval, |d| d.0);
        let timeout = self.timeout.map_or(timeout, |d| d.0);
        crate::sources::check_schedule(at, interval, timeout, "")?;
        let only = |set: bool, key: &str, kinds: &str| -> anyhow::Result<()> {
            ensure!(!set, "{at}.{key} applies to kind = {kinds} only (this check is {:?})", self.kind);
            Ok(())
        };
        let kind = match self.kind.as_str() {
            "http" => {
                only(self.server_name.is_some(), "server_name", "\"tls\"")?;
                let url = reqwest::Url::parse(&self.target)
                    .with_context(|| format!("{at}.target = {:?}: not a URL", self.target))?;
                ensure!(
                    matches!(url.scheme(), "http" | "https") && url.host_str().is_some(),
                    "{at}.target = {:?}: must be an http:// or https:// URL with a host",
                    self.target
                );
                let method = match self.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
                    None | Some("GET") => HttpMethod::Get,
                    Some("HEAD") => HttpMethod::Head,
                    Some(m) => bail!("{at}.method = {m:?}: must be \"GET\" or \"HEAD\""),
                };
                let keyword = self.keyword.filter(|k| !k.is_empty());
                ensure!(
                    !(keyword.is_some() && method == HttpMethod::Head),
                    "{at}.keyword needs method = \"GET\" (a HEAD response has no body)"
                );
                let expect_status = match self.expect_status {
                    None => vec![(200, 399)],
                    Some(list) => {
                        ensure!(!list.is_empty(), "{at}.expect_status must not be empty");
                        list.iter()
                            .enumerate()
                            .map(|(j, s)| parse_status(s).with_context(|| format!("{at}.expect_status[{j}]")))
                            .collect::<anyhow::Result<_>>()?
                    }
                };
                CheckKind::Http(HttpCheck {
                    url,
                    method,
                    expect_status,
                    keyword,
                    follow_redirects: self.follow_redirects.unwrap_or(true),
                    verify_tls: self.verify_tls.unwrap_or(true),
                })
            }
            "tcp" | "tls" => {
                only(self.expect_status.is_some(), "expect_status", "\"http\"")?;
                only(self.keyword.is_some(), "keyword", "\"http\"")?;
                only(self.method.is_some(), "method", "\"http\"")?;
                only(self.follow_redirects.is_some(), "follow_redirects", "\"http\"")?;
                let (host, port) =
                    parse_host_port(&self.target).with_context(|| format!("{at}.target = {:?}", self.target))?;
                if self.kind == "tcp" {
                    only(self.verify_tls.is_some(), "verify_tls", "\"http\" or \"tls\"")?;
                    only(self.server_name.is_some(), "server_name", "\"tls\"")?;
                    CheckKind::Tcp { host, port }
                } else {
                    let server_name = self.server_name.unwrap_or_else(|| host.clone());
                    ensure!(
                        rustls::pki_types::ServerName::try_from(server_name.as_str()).is_ok(),
                        "{at}.server_name = {server_name:?}: not a DNS name or IP address"
                    );
                    CheckKind::Tls(TlsCheck { host, port, server_name, verify_tls: self.verify_tls.unwrap_or(true) })
                }
            }
            other => bail!("{at}.kind = {other:?}: must be \"http\", \"tcp\" or \"tls\""),
        };
        Ok(CheckConfig { name: self.name, target: self.target, interval, timeout, kind })
    }
}

/// `200`, `"200-399"` or `"2xx"` as an inclusive range.
fn parse_status(s: &StatusFile) -> anyhow::Result<(u16, u16)> {
    let (lo, hi) = match s {
        StatusFile::Code(c) => (*c, *c),
        StatusFile::Text(t) => {
            let t = t.trim();
            if let Some(class) = t.strip_suffix("xx").or_else(|| t.strip_suffix("XX")) {
                let d: u16 = class.parse().map_err(|_| anyhow::anyhow!("{t:?}: not a status class like \"2xx\""))?;
                (d * 100, d * 100 + 99)
            } else if let Some((a, b)) = t.split_once('-') {
                let p = |x: &str| {
                    x.trim().parse::<u16>().map_err(|_| anyhow::anyhow!("{t:?}: not a range like \"200-399\""))
                };
                (p(a)?, p(b)?)
            } else {
                let c = t.parse::<u16>().map_err(|_| anyhow::anyhow!("{t:?}: not a status code"))?;
                (c, c)
            }
        }
    };
    ensure!((100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi, "{lo}-{hi}: not within 100-599");
    Ok((lo, hi))
}

/// `host:port` or `[v6]:port`.
fn parse_host_port(target: &str) -> anyhow::Result<(String, u16)> {
    let Some((host, port)) = target.rsplit_once(':') else {
        bail!("must be host:port (the port is missing)");
    };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ensure!(!host.is_empty(), "must be host:port (the host is missing)");
    ensure!(!host.contains(':') || target.starts_with('['), "write an IPv6 address as [addr]:port");
    let port: u16 = port.parse().map_err(|_| anyhow::anyhow!("port {port:?} is not a number from 1 to 65535"))?;
    ensure!(port != 0, "port 0 cannot be probed");
    Ok((host.to_string(), port))
}
