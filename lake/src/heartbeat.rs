//! The dead-man's switch out: after every alert evaluation round the lake pings a
//! monitor outside itself, so a lake that stops (its VPS, its disk, its alert loop) is
//! noticed by the silence, and one that runs but cannot watch says why.
//!
//! `[heartbeat]` of `lake.toml`:
//!
//! ```toml
//! [heartbeat]
//! url = "https://hc-ping.com/<uuid>"   # required
//! # style = "healthchecks"             # or "uptime_kuma"
//! # fail_url = "https://hc-ping.com/<uuid>/fail"   # healthchecks style; default <url>/fail
//! # timeout = "10s"                    # per ping, 1s to 1m
//! ```
//!
//! - `healthchecks` (healthchecks.io, Better Stack heartbeats, Cronitor's and most cron
//!   monitors' "ping URL"): a round that succeeded is `GET <url>`; a round that failed is
//!   `POST <fail_url>` with the reasons as a `text/plain` body (at most [`MAX_BODY`]).
//! - `uptime_kuma` (an Uptime Kuma "Push" monitor, whose URL is
//!   `https://kuma.example/api/push/<token>?status=up&msg=OK&ping=`): `GET <url>` with
//!   `status=up&msg=OK`, or `status=down&msg=<the first reason>` (at most [`MAX_MSG`]);
//!   other query parameters of the URL are kept.
//!
//! A round fails when a rule failed to evaluate (or its evaluation hangs), the engine
//! does not answer, the WAL's last append failed or the flusher is failing: the same
//! checks as `/health` ([`crate::health`]). Pings never slow the alert loop: each runs
//! in its own task within `timeout`, one at a time (a round that ends while the previous
//! ping is still out skips its ping, counted); failures are counted on `/metrics`
//! (`lake_heartbeat_*`) and logged at most every [`LOG_EVERY`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Url;
use serde::Deserialize;

use lake_format::units::Dur;

use crate::health::Health;

/// Longest reason text POSTed to a fail URL (healthchecks.io keeps the first 100 kB).
pub const MAX_BODY: usize = 10_000;
/// Longest reason in an Uptime Kuma `msg` parameter.
pub const MAX_MSG: usize = 250;
/// Failed pings are logged at most this often (the first at once).
pub const LOG_EVERY: Duration = Duration::from_secs(600);

const fn default_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

/// Which monitor the URL belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// healthchecks.io and alike: `<url>` on success, `<url>/fail` with a body on failure.
    #[default]
    Healthchecks,
    /// An Uptime Kuma push monitor: `?status=up|down&msg=…`.
    UptimeKuma,
}

/// `[heartbeat]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeartbeatFile {
    url: String,
    #[serde(default)]
    style: Style,
    #[serde(default)]
    fail_url: Option<String>,
    #[serde(default = "default_timeout")]
    timeout: Dur,
}

/// The validated `[heartbeat]`.
#[derive(Clone, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Pinged after a round that succeeded.
    pub url: Url,
    /// How pings are made.
    pub style: Style,
    /// Pinged after a round that failed (healthchecks style).
    pub fail_url: Url,
    /// Longest a ping may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for HeartbeatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL is a capability (anyone holding it can ping): host only.
        f.debug_struct("HeartbeatConfig")
            .field("host", &self.url.host_str())
            .field("style", &self.style)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn parse_url(key: &str, u: &str) -> anyhow::Result<Url> {
    let url = Url::parse(u).map_err(|e| anyhow::anyhow!("{key} = {u:?}: not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        anyhow::bail!("{key} = {u:?}: must be an http:// or https:// URL, e.g. \"https://hc-ping.com/<uuid>\"");
    }
    Ok(url)
}

impl HeartbeatFile {
    /// Checks the URLs and the timeout; errors name the key.
    pub(crate) fn validate(self) -> anyhow::Result<HeartbeatConfig> {
        let url = parse_url("heartbeat.url", &self.url)?;
        let fail_url = match (&self.fail_url, self.style) {
            (Some(_), Style::UptimeKuma) => anyhow::bail!(
                "heartbeat.fail_url: an uptime_kuma push monitor takes failures on its own URL (status=down); remove fail_url"
            ),
            (Some(f), Style::Healthchecks) => parse_url("heartbeat.fail_url", f)?,
            (None, _) => {
                let mut f = url.clone();
                let path = format!("{}/fail", f.path().trim_end_matches('/'));
                f.set_path(&path);
                f
            }
        };
        if self.timeout.0 < Duration::from_secs(1) || self.timeout.0 > Duration::from_secs(60) {
            anyhow::bail!("heartbeat.timeout = {}: must be between 1s and 1m", self.timeout);
        }
        Ok(HeartbeatConfig { url, style: self.style, fail_url, timeout: self.timeout.0 })
    }
}

lake_format::metrics! {
    /// What the heartbeat counts, on `/metrics` (each doc line is its help there).
    pub struct HeartbeatStats {
        /// heartbeat success pings the monitor accepted
        pub pings: Counter("lake_heartbeat_pings_total"),
        /// heartbeat failure pings the monitor accepted
        pub fail_pings: Counter("lake_heartbeat_fail_pings_total"),
        /// heartbeat pings that failed (no answer, time-out, not 2xx)
        pub errors: Counter("lake_heartbeat_errors_total"),
        /// rounds whose heartbeat ping was skipped, the previous one still out
        pub skipped: Counter("lake_heartbeat_skipped_total"),
    }
}

/// The pinger.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    config: Arc<HeartbeatConfig>,
    client: reqwest::Client,
    health: Arc<Health>,
    busy: Arc<AtomicBool>,
    log: Arc<Mutex<LogLimit>>,
}

/// Rate limit of the failure log.
#[derive(Debug, Default)]
struct LogLimit {
    failing: bool,
    last: Option<Instant>,
    suppressed: u64,
}

impl Heartbeat {
    /// A pinger for `config`, adding `health`'s component checks to each round's outcome.
    pub fn new(config: HeartbeatConfig, health: Arc<Health>) -> anyhow::Result<Heartbeat> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("lake/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("heartbeat HTTP client: {e}"))?;
        Ok(Heartbeat { config: Arc::new(config), client, health, busy: Arc::default(), log: Arc::default() })
    }

    /// A round ended with these rule failures: pings in the background, at once.
    pub fn round(&self, failures: Vec<String>) {
        let stats = Arc::clone(&self.health.heartbeat);
        if self.busy.swap(true, Ordering::SeqCst) {
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut reasons = failures;
            reasons.extend(this.health.component_failures().await);
            let failed = !reasons.is_empty();
            let outcome = tokio::time::timeout(this.config.timeout, this.ping(&reasons))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {}", Dur(this.config.timeout))));
            match outcome {
                Ok(()) => {
                    let counter = if failed { &stats.fail_pings } else { &stats.pings };
                    counter.fetch_add(1, Ordering::Relaxed);
                    this.logged(None);
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    this.logged(Some(e));
                }
            }
            this.busy.store(false, Ordering::SeqCst);
        });
    }

    /// One ping: success when `reasons` is empty, failure otherwise.
    async fn ping(&self, reasons: &[String]) -> Result<(), String> {
        let c = &self.config;
        let req = match (c.style, reasons.is_empty()) {
            (Style::Healthchecks, true) => self.client.get(c.url.clone()),
            (Style::Healthchecks, false) => self
                .client
                .post(c.fail_url.clone())
                .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(truncate(&reasons.join("\n"), MAX_BODY)),
            (Style::UptimeKuma, ok) => {
                let msg = if ok { "OK".to_string() } else { truncate(&reasons[0], MAX_MSG) };
                self.client.get(kuma_url(&c.url, ok, &msg))
            }
        };
        let resp = req.send().await.map_err(|e| format!("{}: {e}", redacted(&c.url)))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("{} answered {}", redacted(&c.url), resp.status()))
        }
    }

    fn logged(&self, error: Option<String>) {
        let mut l = self.log.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            None => {
                if l.failing {
                    tracing::info!(failed_pings = l.suppressed + 1, "heartbeat pings reach the monitor again");
                }
                *l = LogLimit::default();
            }
            Some(e) => {
                if !l.failing || l.last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    tracing::warn!(error = %e, since_last_log = l.suppressed, "heartbeat ping failed; the monitor may report the lake down");
                    l.last = Some(Instant::now());
                    l.suppressed = 0;
                } else {
                    l.suppressed += 1;
                }
                l.failing = true;
            }
        }
    }
}

/// The URL without its path and query (they hold the monitor's secret).
fn redacted(u: &Url) -> String {
    format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?"))
}

/// `url` with `status` and `msg` set (other parameters kept, e.g. Uptime Kuma's `ping`).
fn kuma_url(url: &Url, up: bool, msg: &str) -> Url {
    let mut u = url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "status" && k != "msg")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        q.append_pair("status", if up { "up" } else { "down" });
        q.append_pair("msg", msg);
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
    }
    u
}

/// At most `max` bytes of `s`, cut at a character boundary, with `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<HeartbeatConfig> {
        let f: HeartbeatFile = toml::from_str(text)?;
        f.validate()
    }

    #[test]
    fn healthchecks_is_the_default_and_fails_to_url_slash_fail() {
        let c = parse("url = \"https://hc-ping.com/0f3e5a\"").unwrap();
        assert_eq!((c.style, c.timeout), (Style::Healthchecks, Duration::from_secs(10)));
        assert_eq!(c.fail_url.as_str(), "https://hc-ping.com/0f3e5a/fail");
        let c =
            parse("url = \"https://hc-ping.com/0f3e5a/\"\nfail_url = \"https://x.example/f?k=1\"\ntimeout = \"3s\"")
                .unwrap();
        assert_eq!((c.fail_url.as_str(), c.timeout), ("https://x.example/f?k=1", Duration::from_secs(3)));
        assert!(!format!("{c:?}").contains("0f3e5a"), "the URL's secret stays out of Debug");
    }

    #[test]
    fn mistakes_name_the_key() {
        for (bad, says) in [
            ("", "missing field `url`"),
            ("url = \"hc-ping.com/x\"", "heartbeat.url"),
            ("url = \"ftp://x.example/\"", "http:// or https://"),
            ("url = \"https://x.example/\"\ntimeout = \"2m\"", "heartbeat.timeout"),
            ("url = \"https://x.example/\"\nstyle = \"kuma\"", "unknown variant `kuma`"),
            (
                "url = \"https://x.example/\"\nstyle = \"uptime_kuma\"\nfail_url = \"https://x.example/f\"",
                "heartbeat.fail_url",
            ),
            ("url = \"https://x.example/\"\nurls = \"x\"", "unknown field `urls`"),
        ] {
            let e = format!("{:#}", parse(bad).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn uptime_kuma_urls_carry_status_and_message() {
        let base = Url::parse("https://kuma.example/api/push/AbC?status=up&msg=OK&ping=").unwrap();
        assert_eq!(kuma_url(&base, true, "OK").as_str(), "https://kuma.example/api/push/AbC?status=up&msg=OK&ping=");
        let down = kuma_url(&base, false, "rule a: IO Error & more");
        assert_eq!(
            down.as_str(),
            "https://kuma.example/api/push/AbC?status=down&msg=rule+a%3A+IO+Error+%26+more&ping="
        );
    }

    #[test]
    fn long_reasons_are_cut_at_a_character() {
        assert_eq!(truncate("abc", 5), "abc");
        let t = truncate(&"é".repeat(10), 9);
        assert!(t.len() <= 9 && t.ends_with('…'), "{t}");
    }
}
