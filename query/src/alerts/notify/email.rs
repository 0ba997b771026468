//! `[[notify.email]]`: an SMTP channel's settings, validated. STARTTLS (default, port
//! 587), implicit TLS (port 465) or plain (port 25, loopback relays only when credentials
//! are given), with optional AUTH, and an extra trusted CA for relays with a private
//! certificate. The lake sends (`lake::alerts::notify::email`).
//!
//! The message is plain text ([`super::text`]): subject `[FIRING] rule: message`, then
//! what, where, since, value, details and the dashboard link.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lake_format::units::Dur;
use serde::Deserialize;

use super::{secret, Secret, SenderChecks};
use crate::alerts::rules::ConfigError;

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    Starttls,
    /// TLS from the first byte, "SMTPS" (port 465).
    Tls,
    /// No TLS (port 25): only for a relay on this machine.
    None,
}

impl TlsMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Starttls => "starttls",
            TlsMode::Tls => "tls",
            TlsMode::None => "none",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        }
    }
}

const fn default_tls() -> TlsMode {
    TlsMode::Starttls
}
const fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

/// One `[[notify.email]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailFile {
    name: String,
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default = "default_tls")]
    tls: TlsMode,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    from: String,
    to: Vec<String>,
    /// PEM file of a CA to trust besides the public roots (a relay with a private certificate).
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    timeout: Dur,
}

impl fmt::Debug for EmailFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailFile").field("name", &self.name).field("host", &self.host).finish_non_exhaustive()
    }
}

/// A validated email channel.
#[derive(Debug, Clone)]
pub struct EmailChannel {
    /// Channel name.
    pub name: String,
    /// SMTP relay host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// Login and password.
    pub credentials: Option<(String, Secret)>,
    /// Sender.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Extra trusted CA (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// Whole-conversation timeout.
    pub timeout: Duration,
}

pub(super) fn build(
    f: EmailFile,
    i: usize,
    env: &dyn Fn(&str) -> Option<String>,
    checks: &dyn SenderChecks,
) -> Result<EmailChannel, ConfigError> {
    let at = format!("notify.email[{i}] ({})", f.name);
    if f.host.trim().is_empty() {
        return Err(ConfigError::new(format!("{at}.host"), "is empty"));
    }
    checks.mailbox(&f.from).map_err(|e| ConfigError::new(format!("{at}.from"), format!("{:?}: {e}", f.from)))?;
    if f.to.is_empty() {
        return Err(ConfigError::new(format!("{at}.to"), "give at least one recipient"));
    }
    for t in &f.to {
        checks.mailbox(t).map_err(|e| ConfigError::new(format!("{at}.to"), format!("{t:?}: {e}")))?;
    }
    let password = secret(f.password, f.password_env, f.password_file, env, &at, "password")?;
    let credentials = match (f.username, password) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(&at, "username given without password, password_env or password_file"))
        }
        (None, Some(_)) => return Err(ConfigError::new(&at, "a password needs a username")),
    };
    let loopback = matches!(f.host.as_str(), "localhost" | "127.0.0.1" | "::1");
    if f.tls == TlsMode::None && credentials.is_some() && !loopback {
        return Err(ConfigError::new(
            format!("{at}.tls"),
            "\"none\" would send the password in clear text to a remote host: use starttls or tls",
        ));
    }
    let ca_pem = match f.ca_file {
        Some(p) => {
            let pem = std::fs::read(&p)
                .map_err(|e| ConfigError::new(format!("{at}.ca_file"), format!("{}: {e}", p.display())))?;
            checks.ca_pem(&pem).map_err(|e| {
                ConfigError::new(format!("{at}.ca_file"), format!("{}: not a PEM certificate: {e}", p.display()))
            })?;
            Some(pem)
        }
        None => None,
    };
    Ok(EmailChannel {
        name: f.name,
        port: f.port.unwrap_or(f.tls.default_port()),
        host: f.host,
        tls: f.tls,
        credentials,
        from: f.from,
        to: f.to,
        ca_pem,
        timeout: f.timeout.0,
    })
}
