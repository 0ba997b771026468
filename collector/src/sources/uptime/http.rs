//! HTTP checks with reqwest: any method, headers and body; up when the status is in the
//! accepted set, the keyword is in the body and the JSON value at `expect_json.pointer`
//! is the one expected. Latency is the total response time (headers and, when the body
//! is checked, the body read).

use std::time::{Duration, Instant};

use lake_format::units::Dur;

use super::{tls, ExpectJson, HttpCheck, Outcome};
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
    let start = Instant::now();
    let mut req = client.request(check.method.clone(), check.url.clone()).headers(check.headers.clone());
    if let Some(body) = &check.body {
        req = req.body(body.clone());
    }
    let mut resp = match req.timeout(timeout).send().await {
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
    let mut body = Vec::new();
    let mut complete = true;
    if check.keyword.is_some() || check.expect_json.is_some() {
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_BODY.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    // A keyword-only check stops reading as soon as it is found.
                    if check.expect_json.is_none()
                        && check.keyword.as_ref().is_some_and(|k| contains(&body, k.as_bytes()))
                    {
                        break;
                    }
                    if chunk.len() > room {
                        complete = false;
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
    out.error = if !check.accepts(status) {
        Some(format!("status {status} not expected"))
    } else if let Some(k) = check.keyword.as_ref().filter(|k| !contains(&body, k.as_bytes())) {
        Some(format!("keyword {k:?} not found in the body"))
    } else if let Some(expect) = &check.expect_json {
        json_mismatch(&body, complete, expect)
    } else {
        None
    };
    out.ok = out.error.is_none();
    out
}

/// Why the body does not hold the expected JSON value, `None` when it does.
pub(super) fn json_mismatch(body: &[u8], complete: bool, expect: &ExpectJson) -> Option<String> {
    if !complete {
        return Some(format!("the body is larger than {} MiB: expect_json reads no more", MAX_BODY >> 20));
    }
    let doc: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Some(format!("the body is not JSON ({e})")),
    };
    let Some(got) = doc.pointer(&expect.pointer) else {
        return Some(format!("no JSON value at {:?}", expect.pointer));
    };
    let same = match (got.as_f64(), expect.value.as_f64()) {
        // 1 and 1.0 are the same number to whoever wrote the config.
        (Some(a), Some(b)) => a == b,
        _ => *got == expect.value,
    };
    if same {
        return None;
    }
    let mut shown = got.to_string();
    if shown.len() > 200 {
        let cut = (0..=200).rev().find(|i| shown.is_char_boundary(*i)).unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    Some(format!("JSON at {:?} is {shown}, expected {}", expect.pointer, expect.value))
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
