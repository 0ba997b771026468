//! Notification channels: their configuration (`[notify]`), the retry policy of the
//! delivery queue, and what a notification says: the plain-text message shared by every
//! channel ([`subject`], [`text`]) and the webhook bodies ([`webhook::request`]). Pure: the
//! senders (SMTP, HTTP) are the lake's (`lake::alerts::notify`), which also checks what
//! only they can parse ([`SenderChecks`]: addresses, CA certificates).
//!
//! ```toml
//! [notify]
//! retries = 4               # attempts after the first (default 4)
//! retry_initial = "10s"     # first pause, doubled per attempt (default 10s)
//! retry_max = "10m"         # longest pause (default 10m)
//!
//! [[notify.email]]
//! name = "mail"
//! host = "smtp.example.com"
//! tls = "starttls"          # starttls (default, port 587), tls (implicit, 465), none (25)
//! username = "alerts@example.com"
//! password_env = "LAKE_SMTP_PASSWORD"
//! from = "lake <alerts@example.com>"
//! to = ["me@example.com"]
//!
//! [[notify.webhook]]
//! name = "phone"
//! format = "ntfy"           # json (default), alertmanager, ntfy, slack, discord
//! url = "https://ntfy.sh/my-lake-alerts"
//! ```

pub mod email;
pub mod webhook;

use std::path::PathBuf;
use std::time::Duration;

use lake_format::units::Dur;
use serde::Deserialize;

use super::eval::fmt_labels;
use super::rules::ConfigError;
use super::state::{Notification, Status};
use super::{format_duration_secs, format_time, format_value};

pub use email::{EmailChannel, EmailFile, TlsMode};
pub use webhook::{WebhookChannel, WebhookFile, WebhookFormat};

const fn default_retries() -> u32 {
    4
}
const fn default_retry_initial() -> Dur {
    Dur(Duration::from_secs(10))
}
const fn default_retry_max() -> Dur {
    Dur(Duration::from_secs(600))
}

/// `[notify]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    /// `[[notify.email]]`.
    #[serde(default)]
    email: Vec<EmailFile>,
    /// `[[notify.webhook]]`.
    #[serde(default)]
    webhook: Vec<WebhookFile>,
    /// Attempts after the first. Default 4.
    #[serde(default = "default_retries")]
    retries: u32,
    /// Pause after the first failure, doubled after each next one. Default 10s.
    #[serde(default = "default_retry_initial")]
    retry_initial: Dur,
    /// Longest pause. Default 10m.
    #[serde(default = "default_retry_max")]
    retry_max: Dur,
}

impl Default for NotifyFile {
    fn default() -> Self {
        NotifyFile {
            email: Vec::new(),
            webhook: Vec::new(),
            retries: default_retries(),
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
        }
    }
}

/// How often and how patiently a delivery is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (first + retries).
    pub attempts: u32,
    /// Pause after the first failure.
    pub initial: Duration,
    /// Longest pause.
    pub max: Duration,
}

impl RetryPolicy {
    /// The pause after `failed` failed attempts (1 → `initial`, doubling, at most `max`).
    pub fn delay(&self, failed: u32) -> Duration {
        let factor = 1u32.checked_shl(failed.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// A configured channel.
#[derive(Debug, Clone)]
pub enum Channel {
    /// SMTP email.
    Email(EmailChannel),
    /// An HTTP POST.
    Webhook(WebhookChannel),
}

impl Channel {
    /// Its name.
    pub fn name(&self) -> &str {
        match self {
            Channel::Email(e) => &e.name,
            Channel::Webhook(w) => &w.name,
        }
    }

    /// One line for `lake check-config`.
    pub fn describe(&self) -> String {
        match self {
            Channel::Email(e) => format!(
                "email via {}:{} ({}{}) to {}",
                e.host,
                e.port,
                e.tls.as_str(),
                if e.credentials.is_some() { ", auth" } else { "" },
                e.to.join(", ")
            ),
            Channel::Webhook(w) => format!("webhook ({}) to {}", w.format.as_str(), w.url_for_display()),
        }
    }
}

/// Checks of channel settings that need the senders' own parsers, which live with the
/// senders in the lake crate: an email address as the SMTP sender reads it, a CA
/// certificate as its TLS setup loads it. Each returns the parser's complaint.
pub trait SenderChecks {
    /// `"Name <user@host>"` or `"user@host"`.
    fn mailbox(&self, address: &str) -> Result<(), String>;
    /// A PEM certificate to trust besides the public roots.
    fn ca_pem(&self, pem: &[u8]) -> Result<(), String>;
}

/// Validates `[notify]`.
pub(crate) fn build(
    file: NotifyFile,
    env: &dyn Fn(&str) -> Option<String>,
    checks: &dyn SenderChecks,
) -> Result<(Vec<Channel>, RetryPolicy), ConfigError> {
    let mut channels: Vec<Channel> = Vec::new();
    for (i, e) in file.email.into_iter().enumerate() {
        channels.push(Channel::Email(email::build(e, i, env, checks)?));
    }
    for (i, w) in file.webhook.into_iter().enumerate() {
        channels.push(Channel::Webhook(webhook::build(w, i, env)?));
    }
    let mut seen: Vec<&str> = Vec::new();
    for c in &channels {
        crate::named::validate_name(c.name()).map_err(|_| {
            ConfigError::new(
                format!("notify channel {:?}", c.name()),
                "name must be non-empty and use only a-z, 0-9 and _",
            )
        })?;
        if seen.contains(&c.name()) {
            return Err(ConfigError::new(format!("notify channel {:?}", c.name()), "two channels have this name"));
        }
        seen.push(c.name());
    }
    if file.retry_initial.0.is_zero() || file.retry_max.0 < file.retry_initial.0 {
        return Err(ConfigError::new("notify.retry_initial", "must be above 0 and at most notify.retry_max"));
    }
    if file.retries > 20 {
        return Err(ConfigError::new("notify.retries", "at most 20"));
    }
    let retry = RetryPolicy { attempts: file.retries + 1, initial: file.retry_initial.0, max: file.retry_max.0 };
    Ok((channels, retry))
}

/// A password, token or secret URL: redacted in `Debug` (the workspace's one type).
pub use lake_format::Secret;

/// A secret given inline, through an environment variable or in a file
/// ([`lake_format::secret::resolve`]), with its error at `at.what…`.
pub fn secret(
    inline: Option<String>,
    var: Option<String>,
    file: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
    at: &str,
    what: &str,
) -> Result<Option<Secret>, ConfigError> {
    lake_format::secret::resolve(what, inline, var, file.as_deref(), env)
        .map_err(|e| ConfigError::new(format!("{at}.{}", e.field()), e.to_string()))
}

/// `[FIRING] rule: message` for one alert, `[FIRING:3] rule (severity)` for several.
pub fn subject(n: &Notification) -> String {
    let firing = n.with_status(Status::Firing).count();
    let resolved = n.with_status(Status::Resolved).count();
    let tag = match (firing, resolved) {
        (0, r) if r > 1 => format!("[RESOLVED:{r}]"),
        (0, _) => "[RESOLVED]".to_string(),
        (1, 0) => "[FIRING]".to_string(),
        (f, 0) => format!("[FIRING:{f}]"),
        (f, r) => format!("[FIRING:{f}, RESOLVED:{r}]"),
    };
    let reminder = if n.alerts.iter().all(|a| a.reminder) { " (still firing)" } else { "" };
    let text = match n.alerts.as_slice() {
        [one] => format!("{tag}{reminder} {}: {}", n.rule, one.message),
        _ => format!("{tag}{reminder} {} ({}): {} alerts", n.rule, n.severity, n.alerts.len()),
    };
    truncate(&one_line(&text), 150)
}

/// The plain-text message: short lines a person can read on a phone — what, where,
/// since when, the value, and a link.
pub fn text(n: &Notification) -> String {
    let mut out = String::new();
    out.push_str(&subject(n));
    out.push_str("\n\n");
    let groups = [(Status::Firing, "firing"), (Status::Resolved, "resolved")];
    let many = n.alerts.len() > 1;
    for (status, word) in groups {
        let alerts: Vec<_> = n.with_status(status).collect();
        if alerts.is_empty() {
            continue;
        }
        if many {
            out.push_str(&format!("{} {word}:\n\n", alerts.len()));
        }
        for (i, a) in alerts.iter().enumerate() {
            if many {
                out.push_str(&format!("{}. ", i + 1));
            }
            out.push_str(&a.message);
            out.push('\n');
            let ago = format_duration_secs((n.created_at - a.starts_at) as f64 / 1e6);
            out.push_str(&format!("What:  {} ({})\n", n.rule, n.severity));
            out.push_str(&format!("Where: {}\n", fmt_labels(&a.labels)));
            match (status, a.ends_at) {
                (Status::Resolved, Some(end)) => {
                    out.push_str(&format!(
                        "Since: {} (resolved {}, after {})\n",
                        format_time(a.starts_at),
                        format_time(end),
                        format_duration_secs((end - a.starts_at) as f64 / 1e6)
                    ));
                }
                _ => out.push_str(&format!("Since: {} ({ago} ago)\n", format_time(a.starts_at))),
            }
            out.push_str(&format!("Value: {}\n", a.value.map_or("?".to_string(), format_value)));
            for (k, v) in &a.details {
                out.push_str(&format!("{}: {v}\n", capitalize(k)));
            }
            out.push('\n');
        }
    }
    if !n.description.is_empty() {
        out.push_str(&format!("Rule: {}\n", n.description));
    }
    out.push_str(&format!("Dashboard: {}\n", n.dashboard));
    if let Some(a) = n.with_status(Status::Firing).next() {
        let labels: Vec<String> =
            a.labels.iter().take(2).map(|(k, v)| format!(" --label {k}={}", shell_word(v))).collect();
        out.push_str(&format!("Silence: lake silence add --rule {}{} --for 2h\n", n.rule, labels.concat()));
    }
    out
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>().replace('_', " "),
        None => String::new(),
    }
}

fn shell_word(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Cuts `s` to at most `max` characters, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests;
