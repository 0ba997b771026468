//! A running lake as the CLI's commands reach it over HTTP: the `--url`/`--token` block the
//! reading commands flatten (one set of flags, env vars and help), the bearer token on a
//! request, and a non-2xx answer turned into an error carrying the lake's own message.
//! The archive commands (an admin token, a URL taken from the config) and `lake ingest`
//! (a node's ingest token) keep their own flags but answer errors the same way.

use clap::Args;

/// Where the lake is and the token to show it.
#[derive(Debug, Args)]
pub(super) struct Remote {
    /// URL of a running lake.
    #[arg(long, env = "LAKE_URL", default_value = "http://127.0.0.1:7470", global = true)]
    pub(super) url: String,
    /// A token of the lake: read to query and to look at alerts; alerts (`lake token add
    /// --role alerts`) or admin to add or remove silences.
    #[arg(long, env = "LAKE_TOKEN", hide_env_values = true, global = true)]
    pub(super) token: Option<String>,
}

impl Remote {
    /// `path` (starting with `/`) on the lake, with the token if one was given.
    pub(super) fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        bearer(client.request(method, url), self.token.as_deref())
    }
}

/// `req` with `token` as its bearer, if there is one.
pub(super) fn bearer(req: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// The lake's message in an error answer: its JSON `error` field, else the body as text
/// (a proxy's HTML page, a plain-text 404).
pub(super) fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// `Err("<status>: <the lake's message>")` unless `status` is a success.
pub(super) fn check(status: reqwest::StatusCode, body: &[u8]) -> anyhow::Result<()> {
    anyhow::ensure!(status.is_success(), "{status}: {}", error_message(body));
    Ok(())
}

/// A response whose status is a success, else the error [`check`] makes of it.
pub(super) async fn success(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.bytes().await.unwrap_or_default();
    anyhow::bail!("{status}: {}", error_message(&body))
}
