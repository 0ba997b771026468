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
    #[serde(default)]
    headers: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    expect_json: Option<ExpectJsonFile>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    max_lost: Option<u32>,
    #[serde(default)]
    socket: Option<String>,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    expect: Option<String>,
    #[serde(default)]
    expect_rcode: Option<String>,
    #[serde(default)]
    outside: Option<bool>,
}

/// `expect_json = { pointer = "/status", value = "ok" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectJsonFile {
    pointer: String,
    value: toml::Value,
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
    /// Whether the target is outside the site (`attrs.outside = "true"`): the
    /// `site_offline` rule reads a site whose every outside target fails as "uplink down".
    pub outside: bool,
}

/// The kind of a check and its own options.
#[derive(Debug, Clone)]
pub enum CheckKind {
    /// An HTTP(S) request.
    Http(Box<HttpCheck>),
    /// A TCP connect.
    Tcp {
        /// Host name or IP.
        host: String,
        /// Port.
        port: u16,
    },
    /// A TLS handshake.
    Tls(TlsCheck),
    /// ICMP echo requests.
    Icmp(IcmpCheck),
    /// A DNS query to a given server.
    Dns(DnsCheck),
}

impl CheckKind {
    /// The `kind` column.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Http(_) => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Tls(_) => "tls",
            CheckKind::Icmp(_) => "icmp",
            CheckKind::Dns(_) => "dns",
        }
    }
}

/// Which ICMP socket a check uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingSocket {
    /// Unprivileged ICMP datagram socket (`net.ipv4.ping_group_range`).
    Dgram,
    /// Raw socket (CAP_NET_RAW).
    Raw,
}

impl PingSocket {
    /// The `socket` attr.
    pub fn name(self) -> &'static str {
        match self {
            PingSocket::Dgram => "dgram",
            PingSocket::Raw => "raw",
        }
    }
}

/// An ICMP check's options.
#[derive(Debug, Clone)]
pub struct IcmpCheck {
    /// IP address or host name (its first address).
    pub host: String,
    /// Echo requests per run. Default 3.
    pub count: u32,
    /// Requests that may go unanswered while the check is still up. Default count - 1
    /// (up while anything answers).
    pub max_lost: u32,
    /// Only this socket kind; default a datagram socket, else a raw one.
    pub socket: Option<PingSocket>,
}

/// The record types a DNS check asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Canonical name.
    Cname,
    /// Mail exchanger.
    Mx,
    /// Text.
    Txt,
}

impl RecordType {
    /// The type's name.
    pub fn name(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Cname => "CNAME",
            RecordType::Mx => "MX",
            RecordType::Txt => "TXT",
        }
    }
}

/// A DNS check's options.
#[derive(Debug, Clone)]
pub struct DnsCheck {
    /// The name asked for, in wire form.
    pub qname: Vec<u8>,
    /// The server asked.
    pub server: std::net::SocketAddr,
    /// The record type asked for. Default A.
    pub record: RecordType,
    /// An answer of that type must equal this address or contain this text.
    pub expect: Option<String>,
    /// The response code expected. Default NOERROR (0).
    pub expect_rcode: u8,
}

/// `expect_json`: the JSON value at a pointer in the body.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectJson {
    /// RFC 6901 pointer, e.g. `/status` or `/checks/0/ok`.
    pub pointer: String,
    /// The value expected there.
    pub value: serde_json::Value,
}

/// An HTTP check's options.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    /// http or https URL.
    pub url: reqwest::Url,
    /// Any method. Default GET.
    pub method: reqwest::Method,
    /// Request headers, checked when the config is read.
    pub headers: reqwest::header::HeaderMap,
    /// Request body (sent as is; set its Content-Type in `headers`).
    pub body: Option<String>,
    /// A JSON value the body must hold at a pointer.
    pub expect_json: Option<ExpectJson>,
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

/// Most echo requests in one ICMP run.
const MAX_COUNT: u32 = 100;

impl CheckFile {
    fn validate(self, at: &str, interval: Duration, timeout: Duration) -> anyhow::Result<CheckConfig> {
        let interval = self.interval.map_or(interval, |d| d.0);
        let timeout = self.timeout.map_or(timeout, |d| d.0);
        crate::sources::check_schedule(at, interval, timeout, "")?;
        // Each option and the kinds it applies to: a misplaced one is an error, not ignored.
        let options: [(bool, &str, &[&str]); 16] = [
            (self.expect_status.is_some(), "expect_status", &["http"]),
            (self.keyword.is_some(), "keyword", &["http"]),
            (self.method.is_some(), "method", &["http"]),
            (self.follow_redirects.is_some(), "follow_redirects", &["http"]),
            (self.headers.is_some(), "headers", &["http"]),
            (self.body.is_some(), "body", &["http"]),
            (self.expect_json.is_some(), "expect_json", &["http"]),
            (self.verify_tls.is_some(), "verify_tls", &["http", "tls"]),
            (self.server_name.is_some(), "server_name", &["tls"]),
            (self.count.is_some(), "count", &["icmp"]),
            (self.max_lost.is_some(), "max_lost", &["icmp"]),
            (self.socket.is_some(), "socket", &["icmp"]),
            (self.server.is_some(), "server", &["dns"]),
            (self.record.is_some(), "record", &["dns"]),
            (self.expect.is_some(), "expect", &["dns"]),
            (self.expect_rcode.is_some(), "expect_rcode", &["dns"]),
        ];
        if ["http", "tcp", "tls", "icmp", "dns"].contains(&self.kind.as_str()) {
            for (set, key, kinds) in options {
                let list: Vec<String> = kinds.iter().map(|k| format!("{k:?}")).collect();
                ensure!(
                    !set || kinds.contains(&self.kind.as_str()),
                    "{at}.{key} applies to kind = {} only (this check is {:?})",
                    list.join(" or "),
                    self.kind
                );
            }
        }
        let kind = match self.kind.as_str() {
            "http" => CheckKind::Http(Box::new(self.http(at)?)),
            "tcp" | "tls" => {
                let (host, port) =
                    parse_host_port(&self.target).with_context(|| format!("{at}.target = {:?}", self.target))?;
                if self.kind == "tcp" {
                    CheckKind::Tcp { host, port }
                } else {
                    let server_name = self.server_name.clone().unwrap_or_else(|| host.clone());
                    ensure!(
                        rustls::pki_types::ServerName::try_from(server_name.as_str()).is_ok(),
                        "{at}.server_name = {server_name:?}: not a DNS name or IP address"
                    );
                    CheckKind::Tls(TlsCheck { host, port, server_name, verify_tls: self.verify_tls.unwrap_or(true) })
                }
            }
            "icmp" => CheckKind::Icmp(self.icmp(at, timeout)?),
            "dns" => CheckKind::Dns(self.dns(at)?),
            other => bail!("{at}.kind = {other:?}: must be \"http\", \"tcp\", \"tls\", \"icmp\" or \"dns\""),
        };
        Ok(CheckConfig {
            name: self.name,
            target: self.target,
            interval,
            timeout,
            kind,
            outside: self.outside.unwrap_or(false),
        })
    }

    fn http(&self, at: &str) -> anyhow::Result<HttpCheck> {
        let url =
            reqwest::Url::parse(&self.target).with_context(|| format!("{at}.target = {:?}: not a URL", self.target))?;
        ensure!(
            matches!(url.scheme(), "http" | "https") && url.host_str().is_some(),
            "{at}.target = {:?}: must be an http:// or https:// URL with a host",
            self.target
        );
        let method = match self.method.as_deref() {
            None => reqwest::Method::GET,
            Some(m) => {
                let upper = m.to_ascii_uppercase();
                ensure!(
                    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].contains(&upper.as_str()),
                    "{at}.method = {m:?}: must be GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS"
                );
                reqwest::Method::from_bytes(upper.as_bytes()).with_context(|| format!("{at}.method = {m:?}"))?
            }
        };
        let keyword = self.keyword.clone().filter(|k| !k.is_empty());
        let head = method == reqwest::Method::HEAD;
        ensure!(
            !(keyword.is_some() && head),
            "{at}.keyword needs a method other than HEAD (a HEAD response has no body)"
        );
        ensure!(
            !(self.expect_json.is_some() && head),
            "{at}.expect_json needs a method other than HEAD (a HEAD response has no body)"
        );
        ensure!(!(self.body.is_some() && head), "{at}.body: a HEAD request carries no body");
        let expect_status = match &self.expect_status {
            None => vec![(200, 399)],
            Some(list) => {
                ensure!(!list.is_empty(), "{at}.expect_status must not be empty");
                list.iter()
                    .enumerate()
                    .map(|(j, s)| parse_status(s).with_context(|| format!("{at}.expect_status[{j}]")))
                    .collect::<anyhow::Result<_>>()?
            }
        };
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in self.headers.iter().flatten() {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| anyhow::anyhow!("{at}.headers: {k:?} is not a valid header name"))?;
            let value = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
                anyhow::anyhow!("{at}.headers.{k}: the value is not valid in a header (control characters?)")
            })?;
            headers.append(name, value);
        }
        let expect_json = match &self.expect_json {
            None => None,
            Some(e) => {
                ensure!(
                    e.pointer.is_empty() || e.pointer.starts_with('/'),
                    "{at}.expect_json.pointer = {:?}: a JSON pointer is empty or starts with \"/\" (e.g. \"/status\")",
                    e.pointer
                );
                let value = serde_json::to_value(&e.value)
                    .with_context(|| format!("{at}.expect_json.value: not representable as JSON"))?;
                Some(ExpectJson { pointer: e.pointer.clone(), value })
            }
        };
        Ok(HttpCheck {
            url,
            method,
            headers,
            body: self.body.clone(),
            expect_status,
            keyword,
            expect_json,
            follow_redirects: self.follow_redirects.unwrap_or(true),
            verify_tls: self.verify_tls.unwrap_or(true),
        })
    }

    fn icmp(&self, at: &str, timeout: Duration) -> anyhow::Result<IcmpCheck> {
        let host = self.target.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&self.target).trim();
        ensure!(
            !host.is_empty()
                && !host.contains(['/', ' '])
                && (host.parse::<std::net::IpAddr>().is_ok() || !host.contains(':')),
            "{at}.target = {:?}: must be an IP address or a host name (no port, no URL)",
            self.target
        );
        let count = self.count.unwrap_or(3);
        ensure!((1..=MAX_COUNT).contains(&count), "{at}.count = {count}: must be from 1 to {MAX_COUNT}");
        // The requests go out PACKET_GAP apart; the last one needs time for its reply.
        let sending = super::icmp::PACKET_GAP * (count - 1);
        ensure!(
            sending < timeout,
            "{at}.count = {count}: sending them takes {} ({} apart), not less than the timeout {}",
            Dur(sending),
            Dur(super::icmp::PACKET_GAP),
            Dur(timeout)
        );
        let max_lost = self.max_lost.unwrap_or(count - 1);
        ensure!(max_lost < count, "{at}.max_lost = {max_lost}: must be less than count ({count})");
        let socket = match self.socket.as_deref() {
            None | Some("auto") => None,
            Some("dgram") => Some(PingSocket::Dgram),
            Some("raw") => Some(PingSocket::Raw),
            Some(other) => bail!("{at}.socket = {other:?}: must be \"auto\", \"dgram\" or \"raw\""),
        };
        Ok(IcmpCheck { host: host.to_string(), count, max_lost, socket })
    }

    fn dns(&self, at: &str) -> anyhow::Result<DnsCheck> {
        let qname = super::dns::encode_name(self.target.trim()).map_err(|e| anyhow::anyhow!("{at}.target: {e}"))?;
        let Some(server) = &self.server else {
            bail!("{at}.server is required for kind = \"dns\": the server asked, e.g. \"1.1.1.1\" or \"[::1]:5353\"");
        };
        let server = match server.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, 53),
            Err(_) => server.parse::<std::net::SocketAddr>().map_err(|_| {
                anyhow::anyhow!("{at}.server = {server:?}: must be an IP address with an optional port (1.1.1.1, 127.0.0.1:5353, [::1]:53)")
            })?,
        };
        ensure!(server.port() != 0, "{at}.server = {server}: port 0 cannot be asked");
        let record = match self.record.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("A") => RecordType::A,
            Some("AAAA") => RecordType::Aaaa,
            Some("CNAME") => RecordType::Cname,
            Some("MX") => RecordType::Mx,
            Some("TXT") => RecordType::Txt,
            Some(other) => bail!("{at}.record = {other:?}: must be A, AAAA, CNAME, MX or TXT"),
        };
        let expect_rcode = match self.expect_rcode.as_deref() {
            None => 0,
            Some(r) => {
                super::dns::RCODES.iter().find(|(n, _)| n.eq_ignore_ascii_case(r)).map(|(_, c)| *c).with_context(
                    || {
                        let names: Vec<&str> = super::dns::RCODES.iter().map(|(n, _)| *n).collect();
                        format!("{at}.expect_rcode = {r:?}: must be one of {}", names.join(", "))
                    },
                )?
            }
        };
        let expect = self.expect.clone().filter(|e| !e.is_empty());
        ensure!(
            !(expect.is_some() && expect_rcode != 0),
            "{at}.expect needs expect_rcode = \"NOERROR\" (there is no answer to match otherwise)"
        );
        Ok(DnsCheck { qname, server, record, expect, expect_rcode })
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
