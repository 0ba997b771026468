//! Webhook delivery: one HTTP POST of the body `lake_query::alerts::notify::webhook::request`
//! renders for the channel's format, with its bearer token. 429 and 5xx answers and
//! network errors are retried; other 4xx are permanent. The URL (a secret for Slack and
//! Discord) never appears in an error: only its scheme, host and port.

use lake_query::alerts::notify::webhook::request;
use lake_query::alerts::notify::{truncate, WebhookChannel};

use super::{Notification, SendError};

/// One attempt to POST `n`.
pub(super) async fn send(http: &reqwest::Client, c: &WebhookChannel, n: &Notification) -> Result<(), SendError> {
    let req = request(c.format, &c.name, n);
    let mut r = http
        .post(c.url.expose())
        .timeout(c.timeout)
        .header(reqwest::header::CONTENT_TYPE, req.content_type)
        .body(req.body);
    for (k, v) in req.headers {
        r = r.header(k, v);
    }
    if let Some(t) = &c.bearer {
        r = r.bearer_auth(t.expose());
    }
    let shown = c.url_for_display();
    let resp = r.send().await.map_err(|e| {
        // reqwest's message includes the URL, which may be secret.
        let e = e.without_url();
        SendError::retryable(format!("{shown}: {}", lake_format::error::error_chain(&e)))
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    let body = truncate(body.trim(), 200);
    let msg =
        if body.is_empty() { format!("{shown}: HTTP {status}") } else { format!("{shown}: HTTP {status}: {body}") };
    if status.as_u16() == 429 || status.is_server_error() {
        Err(SendError::retryable(msg))
    } else {
        Err(SendError::permanent(msg))
    }
}
