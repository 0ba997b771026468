//! HTTP checks with reqwest: status in the accepted set and keyword in the body.
//! Latency is the total response time (headers and, for keyword checks, the body read).

use std::time::{Duration, Instant};

use lake_format::units::Dur;

use super::{tls, HttpCheck, HttpMethod, Outcome};
use lake_format::error::error_chain;

/// How much of the body is searched for the keyword.
const MAX_BODY: usize = 1 << 20;
/// Redirects followed when `follow_redirects` is on.
const MAX_REDIRECTS: usize = 10;

/// A client for one option set. `tls_info` keeps the peer certificate so https checks
/// report days left at no extra connection.
pub(super) fn client(verify_tls: bool, follow_redirects: bool) -> Result<reqwest::Client, String> {
    let redirect = if follow_redirects {
        reqwest::redirect::Policy::limited(MAX_REDIRECTS)
    } else {
        reqwest::redirect::Policy::none()
    };
    reqwest::Client::builder()
        .user_agent(concat!("lake-collector/", env!("CARGO_PKG_VERSION"), " (uptime)"))
        .redirect(redirect)
        .danger_accept_invalid_certs(!verify_tls)
        .tls_info(true)
        // A fresh connection per run measures what a visitor sees, not a warm pool.
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
}

pub(super) async fn probe(client: &reqwest::Client, check: &HttpCheck, timeout: Duration) -> Outcome {
    let method = match check.method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Head => reqwest::Method::HEAD,
    };
    let start = Instant::now();
    let mut resp = match client.request(method, check.url.clone()).timeout(timeout).send().await {
        Ok(r) => r,
        Err(e) => return Outcome::failed(describe(&e, timeout)),
    };
    let status = resp.status().as_u16();
    let mut out = Outcome { status: Some(status), ..Outcome::default() };
    out.attrs.push(("final_url", resp.url().to_string()));
    if let Some(addr) = resp.remote_addr() {
        out.attrs.push(("address", addr.to_string()));
    }
    out.attrs.push(("http_version", format!("{:?}", resp.version())));
    if let Some(der) = resp.extensions().get::<reqwest::tls::TlsInfo>().and_then(|i| i.peer_certificate()) {
        out.cert = tls::cert_info(der);
    }
    let mut keyword_found = true;
    if let Some(keyword) = &check.keyword {
        let mut body = Vec::new();
        keyword_found = false;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_BODY.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if contains(&body, keyword.as_bytes()) {
                        keyword_found = true;
                        break;
                    }
                    if body.len() >= MAX_BODY {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    out.latency = Some(start.elapsed());
                    out.error = Some(format!("reading the body: {}", describe(&e, timeout)));
                    return out;
                }
            }
        }
    }
    out.latency = Some(start.elapsed());
    let status_ok = check.accepts(status);
    out.ok = status_ok && keyword_found;
    out.error = if !status_ok {
        Some(format!("status {status} not expected"))
    } else if !keyword_found {
        Some(format!("keyword {:?} not found in the body", check.keyword.as_deref().unwrap_or_default()))
    } else {
        None
    };
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("timeout after {}", Dur(timeout))
    } else {
        error_chain(e)
    }
}
