//! Sending notifications: [`Notifier`] delivers one [`Notification`] to one configured
//! [`Channel`] once (the delivery queue in [`crate::alerts`] retries), by SMTP ([`email`],
//! lettre) or by HTTP POST ([`webhook`], reqwest), and [`Checks`] validates what of a
//! channel's settings only the senders can parse. What the channels are (`[notify]`), the
//! retry policy and what a message says are pure and live in `lake_query::alerts::notify`.

pub mod email;
pub mod webhook;

use lake_query::alerts::notify::{Channel, SenderChecks};
use lake_query::alerts::state::Notification;

/// Checks of channel settings with the senders' own parsers: an email address as lettre
/// reads it, a CA certificate as the SMTP transport loads it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checks;

impl SenderChecks for Checks {
    fn mailbox(&self, address: &str) -> Result<(), String> {
        address.parse::<lettre::message::Mailbox>().map(drop).map_err(|e| e.to_string())
    }

    fn ca_pem(&self, pem: &[u8]) -> Result<(), String> {
        lettre::transport::smtp::client::Certificate::from_pem(pem).map(drop).map_err(|e| e.to_string())
    }
}

/// Whether a failed delivery is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Network trouble, timeouts, 5xx, 429, SMTP 4xx: try again later.
    Retryable,
    /// The peer refused the message for good (4xx, SMTP 5xx): retrying cannot help.
    Permanent,
}

/// A failed delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// Retry or give up.
    pub kind: ErrorKind,
    /// What happened.
    pub message: String,
}

impl SendError {
    /// A failure worth another attempt.
    pub fn retryable(m: impl Into<String>) -> Self {
        SendError { kind: ErrorKind::Retryable, message: m.into() }
    }
    /// A failure no retry can fix.
    pub fn permanent(m: impl Into<String>) -> Self {
        SendError { kind: ErrorKind::Permanent, message: m.into() }
    }
}

/// Sends notifications; one per lake, shared by every delivery.
#[derive(Debug, Clone)]
pub struct Notifier {
    http: reqwest::Client,
}

impl Notifier {
    /// A notifier (one HTTP client for every webhook).
    pub fn new() -> Result<Notifier, String> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("lake/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Notifier { http })
    }

    /// One attempt to deliver `n` through `channel`.
    pub async fn send(&self, channel: &Channel, n: &Notification) -> Result<(), SendError> {
        match channel {
            Channel::Email(e) => email::send(e, n).await,
            Channel::Webhook(w) => webhook::send(&self.http, w, n).await,
        }
    }
}

#[cfg(test)]
mod tests;
