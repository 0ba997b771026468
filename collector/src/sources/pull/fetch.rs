//! One HTTP request of a pull: method, headers, secrets, body, a deadline for the whole
//! exchange and a bound on the body read (a 100 MB answer is refused after `max_bytes`,
//! not buffered).

use std::time::Duration;

use lake_format::error::error_chain;

use crate::config::Secret;

/// A request ready to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// GET or POST.
    pub method: reqwest::Method,
    /// The URL, `{cursor}` already substituted.
    pub url: reqwest::Url,
    /// Headers that are not secret.
    pub headers: Vec<(String, String)>,
    /// Secret headers (`Authorization: Bearer …`, an API key header): never logged.
    pub secret_headers: Vec<(String, Secret)>,
    /// The body (POST), `{cursor}` already substituted.
    pub body: Option<String>,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No answer: connection refused, TLS, DNS.
    #[error("request failed: {0}")]
    Request(String),
    /// No complete answer within `timeout`.
    #[error("no answer within the timeout ({0:?})")]
    Timeout(Duration),
    /// Not 2xx; the start of the body says why.
    #[error("status {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        /// The status code.
        status: u16,
        /// The start of the body, cut at 200 bytes.
        body: String,
    },
    /// Over `max_bytes`.
    #[error("body larger than max_bytes ({max} bytes): refused")]
    TooLarge {
        /// The bound.
        max: u64,
    },
}

/// The URL for messages and logs: scheme, host, port and path; the query (where API keys
/// travel) replaced by `?…`.
pub fn redacted(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let had_query = u.query().is_some();
    u.set_query(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let mut s = u.to_string();
    if had_query {
        s.push_str("?…");
    }
    s
}

/// Sends `req` and reads the body, at most `max_bytes`, all within `timeout`.
pub async fn fetch(
    client: &reqwest::Client,
    req: &Request,
    timeout: Duration,
    max_bytes: u64,
) -> Result<Vec<u8>, FetchError> {
    match tokio::time::timeout(timeout, exchange(client, req, max_bytes)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout(timeout)),
    }
}

async fn exchange(client: &reqwest::Client, req: &Request, max_bytes: u64) -> Result<Vec<u8>, FetchError> {
    let mut b = client.request(req.method.clone(), req.url.clone());
    for (k, v) in &req.headers {
        b = b.header(k, v);
    }
    for (k, v) in &req.secret_headers {
        let mut value = reqwest::header::HeaderValue::from_str(v.expose())
            .map_err(|_| FetchError::Request(format!("the secret of header {k} is not a valid header value")))?;
        value.set_sensitive(true);
        b = b.header(k, value);
    }
    if let Some(body) = &req.body {
        b = b.body(body.clone());
    }
    let resp = b.send().await.map_err(|e| FetchError::Request(without_url(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        let start = read_prefix(resp, 200).await;
        let body = String::from_utf8_lossy(&start).split_whitespace().collect::<Vec<_>>().join(" ");
        return Err(FetchError::Status { status: status.as_u16(), body });
    }
    read_bounded(resp, max_bytes).await
}

/// reqwest's error chain names the full URL, query (and key) included: the chain with it
/// redacted.
fn without_url(e: &reqwest::Error) -> String {
    let full = error_chain(e);
    match e.url() {
        Some(u) => full.replace(u.as_str(), &redacted(u)),
        None => full,
    }
}

/// The first `n` bytes of an error answer's body (what the API says went wrong), however
/// long the body is; empty when it cannot be read.
async fn read_prefix(mut resp: reqwest::Response, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < n {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c[..c.len().min(n - out.len())]),
            _ => break,
        }
    }
    out
}

/// Reads a body up to `max` bytes: a `Content-Length` over it is refused before reading, a
/// body that grows over it as soon as it does.
pub async fn read_bounded(mut resp: reqwest::Response, max: u64) -> Result<Vec<u8>, FetchError> {
    if resp.content_length().is_some_and(|l| l > max) {
        return Err(FetchError::TooLarge { max });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| FetchError::Request(without_url(&e)))? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(FetchError::TooLarge { max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
