//! Webhooks: one HTTP POST per notification, in the shape the receiver expects. Here the
//! channel's settings and the request ([`request`]); the lake POSTs it
//! (`lake::alerts::notify::webhook`).
//!
//! | format | body |
//! |---|---|
//! | `json` | lake's own: `{version: "1", rule, status, severity, summary, text, dashboard, alerts: [{status, fingerprint, labels, details, value, message, starts_at, ends_at, reminder}]}` |
//! | `alertmanager` | Alertmanager's webhook payload, version 4: `{version, groupKey, truncatedAlerts, status, receiver, groupLabels, commonLabels, commonAnnotations, externalURL, alerts: [{status, labels, annotations, startsAt, endsAt, generatorURL, fingerprint}]}`; `alertname` and `severity` are labels, the message is the `summary` annotation |
//! | `ntfy` | the text as the body, headers `Title`, `Priority` (5 critical, 4 warning, 3 info, 2 resolved), `Tags`, `Click` |
//! | `slack` | `{"text": …}` (incoming webhook) |
//! | `discord` | `{"content": …}`, at most 2000 characters |
//!
//! A 2xx answer is success; 429, 5xx and network errors are retried; any other 4xx is
//! permanent (the receiver will not change its mind).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lake_format::units::Dur;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{secret, subject, text, truncate, Notification, Secret};
use crate::alerts::rules::{ConfigError, Severity};
use crate::alerts::state::Status;
use crate::alerts::{format_value, rfc3339, Labels};

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// lake's own JSON.
    Json,
    /// Alertmanager's webhook payload.
    Alertmanager,
    /// ntfy: text body, headers.
    Ntfy,
    /// Slack incoming webhook.
    Slack,
    /// Discord webhook.
    Discord,
}

impl WebhookFormat {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Alertmanager => "alertmanager",
            WebhookFormat::Ntfy => "ntfy",
            WebhookFormat::Slack => "slack",
            WebhookFormat::Discord => "discord",
        }
    }
}

const fn default_format() -> WebhookFormat {
    WebhookFormat::Json
}
const fn default_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

/// One `[[notify.webhook]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    name: String,
    #[serde(default = "default_format")]
    format: WebhookFormat,
    /// The URL; Slack and Discord URLs are secrets: prefer `url_env` or `url_file` for them.
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_env: Option<String>,
    #[serde(default)]
    url_file: Option<PathBuf>,
    /// Sent as `Authorization: Bearer …` (ntfy access tokens, reverse proxies).
    #[serde(default)]
    bearer_token: Option<String>,
    #[serde(default)]
    bearer_token_env: Option<String>,
    #[serde(default)]
    bearer_token_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    timeout: Dur,
}

impl fmt::Debug for WebhookFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookFile").field("name", &self.name).field("format", &self.format).finish_non_exhaustive()
    }
}

/// A validated webhook channel.
#[derive(Debug, Clone)]
pub struct WebhookChannel {
    /// Channel name.
    pub name: String,
    /// Body shape.
    pub format: WebhookFormat,
    /// Where to POST (a secret for Slack and Discord).
    pub url: Secret,
    /// Bearer token.
    pub bearer: Option<Secret>,
    /// Request timeout.
    pub timeout: Duration,
}

impl WebhookChannel {
    /// Scheme, host and port only: the path of a Slack or Discord URL is its secret.
    pub fn url_for_display(&self) -> String {
        match url::Url::parse(self.url.expose()) {
            Ok(u) => format!(
                "{}://{}{}/…",
                u.scheme(),
                u.host_str().unwrap_or("?"),
                u.port().map(|p| format!(":{p}")).unwrap_or_default()
            ),
            Err(_) => "?".into(),
        }
    }
}

pub(super) fn build(
    f: WebhookFile,
    i: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<WebhookChannel, ConfigError> {
    let at = format!("notify.webhook[{i}] ({})", f.name);
    let url = secret(f.url, f.url_env, f.url_file, env, &at, "url")?
        .ok_or_else(|| ConfigError::new(format!("{at}.url"), "give url, url_env or url_file"))?;
    match url::Url::parse(url.expose()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
        _ => return Err(ConfigError::new(format!("{at}.url"), "must be an http:// or https:// URL with a host")),
    }
    let bearer = secret(f.bearer_token, f.bearer_token_env, f.bearer_token_file, env, &at, "bearer_token")?;
    Ok(WebhookChannel { name: f.name, format: f.format, url, bearer, timeout: f.timeout.0 })
}

/// What is POSTed: content type, extra headers and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// The request for `n` in `format`; `receiver` is the channel name.
pub fn request(format: WebhookFormat, receiver: &str, n: &Notification) -> Request {
    let json_body =
        |v: Value| Request { content_type: "application/json", headers: Vec::new(), body: v.to_string().into_bytes() };
    match format {
        WebhookFormat::Json => json_body(generic(n)),
        WebhookFormat::Alertmanager => json_body(alertmanager(receiver, n)),
        WebhookFormat::Slack => json_body(json!({ "text": text(n) })),
        WebhookFormat::Discord => json_body(json!({ "content": truncate(&text(n), 2000) })),
        WebhookFormat::Ntfy => {
            let priority = match (n.status, n.severity) {
                (Status::Resolved, _) => "2",
                (_, Severity::Critical) => "5",
                (_, Severity::Warning) => "4",
                (_, Severity::Info) => "3",
            };
            let tag = if n.status == Status::Firing { "rotating_light" } else { "white_check_mark" };
            Request {
                content_type: "text/plain; charset=utf-8",
                headers: vec![
                    ("Title", header_safe(&subject(n))),
                    ("Priority", priority.to_string()),
                    ("Tags", header_safe(&format!("{tag},{},{}", n.rule, n.severity))),
                    ("Click", header_safe(&n.dashboard)),
                ],
                body: text(n).into_bytes(),
            }
        }
    }
}

/// Header values must be visible ASCII: anything else becomes `?`.
fn header_safe(s: &str) -> String {
    s.chars().map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' }).collect()
}

/// lake's own JSON.
pub fn generic(n: &Notification) -> Value {
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .map(|a| {
            json!({
                "status": a.status.as_str(),
                "fingerprint": a.fingerprint,
                "labels": a.labels,
                "details": a.details,
                "value": a.value,
                "message": a.message,
                "starts_at": rfc3339(a.starts_at),
                "ends_at": a.ends_at.map(rfc3339),
                "reminder": a.reminder,
            })
        })
        .collect();
    json!({
        "version": "1",
        "source": "lake",
        "rule": n.rule,
        "description": n.description,
        "severity": n.severity.as_str(),
        "status": n.status.as_str(),
        "summary": subject(n),
        "text": text(n),
        "dashboard": n.dashboard,
        "created_at": rfc3339(n.created_at),
        "alerts": alerts,
    })
}

/// Alertmanager's webhook payload (version 4).
pub fn alertmanager(receiver: &str, n: &Notification) -> Value {
    let mut all_labels: Vec<Labels> = Vec::new();
    let mut all_annotations: Vec<Labels> = Vec::new();
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .map(|a| {
            let mut labels = a.labels.clone();
            labels.insert("alertname".into(), n.rule.clone());
            labels.insert("severity".into(), n.severity.as_str().into());
            let mut annotations = Labels::new();
            annotations.insert("summary".into(), a.message.clone());
            if !n.description.is_empty() {
                annotations.insert("description".into(), n.description.clone());
            }
            if let Some(v) = a.value {
                annotations.insert("value".into(), format_value(v));
            }
            for (k, v) in &a.details {
                annotations.entry(k.clone()).or_insert_with(|| v.clone());
            }
            all_labels.push(labels.clone());
            all_annotations.push(annotations.clone());
            json!({
                "status": a.status.as_str(),
                "labels": labels,
                "annotations": annotations,
                "startsAt": rfc3339(a.starts_at),
                // Alertmanager's zero time means "no end yet".
                "endsAt": a.ends_at.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), rfc3339),
                "generatorURL": n.dashboard,
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", n.rule),
        "truncatedAlerts": 0,
        "status": n.status.as_str(),
        "receiver": receiver,
        "groupLabels": { "alertname": n.rule },
        "commonLabels": common(&all_labels),
        "commonAnnotations": common(&all_annotations),
        "externalURL": n.external_url,
        "alerts": alerts,
    })
}

fn common(sets: &[Labels]) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some((first, rest)) = sets.split_first() {
        for (k, v) in first {
            if rest.iter().all(|s| s.get(k) == Some(v)) {
                out.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    out
}
