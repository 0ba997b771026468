//! The shipper: sends the spool's oldest unacknowledged record to the lake, one at a
//! time, in seq order, and acknowledges it in the spool once the lake answered 200.
//!
//! Failures have a kind ([`ErrorKind`]):
//!
//! - **Retryable** (5xx, 408, 429, anything unexpected, connection errors, timeouts):
//!   the same record is retried with exponential backoff and full jitter, waiting at
//!   least what `Retry-After` asks on 429 and 503: order and completeness matter more
//!   than latency.
//! - **Config**: the lake refuses this node, not the batch — its token (401: wrong,
//!   revoked, rotated), its name (403: the batch ids name another node than the token's,
//!   e.g. after a rename), or its clock (a 400 with `"code": "clock_skew"` while this
//!   node's clock and the lake's disagree by more than [`CLOCK_TOLERANCE`]). Every batch
//!   would get the same answer and an operator can fix it, so nothing is set aside: the
//!   record stays at the head of the spool (nothing acknowledged, nothing moved), retried
//!   with a long backoff (`shipper.config_backoff_min` → `config_backoff_max`, default
//!   1 → 5 minutes, jittered; a stop still ends the wait at once), counted in
//!   `config_errors`, and logged at most once a minute with the cause and what to check.
//!   A token read from `lake.token_file` is re-read every few seconds meanwhile, so
//!   fixing the file resumes shipping without a restart (a token from the config file or
//!   `LAKE_TOKEN` needs one).
//! - **Permanent** (any other 4xx: a schema mismatch naming a column, an unknown table,
//!   413, and a `clock_skew` refusal once the clocks agree — the rows were stamped while
//!   the clock was wrong, so waiting would not help): the record is kept in
//!   `<data_dir>/rejected/` with the lake's answer ([`crate::rejected`]), counted, logged
//!   and acknowledged, so one bad batch cannot block the queue. `lake-collector
//!   replay-rejected` sends such batches again.
//!
//! Whether batches reach the lake is published in a [`Link`] for the heartbeat.
//!
//! Records of custom tables (table `json/<name>`, NDJSON bodies, see
//! [`crate::sources::custom`]) go to `{lake}/v1/ingest/json/<name>` with
//! `Content-Type: application/x-ndjson`; everything else about them is as above.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use lake_format::{wire, BatchId};
use rand::Rng;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{Config, RejectedConfig, Secret, TokenSource};
use crate::sources::custom;
use crate::spool::{SpoolError, SpoolHandle};
use crate::stats::Stats;

/// Longest `Retry-After` honoured; a larger value is taken as this (a bogus header should
/// not silence a node for days).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Longest part of an error response kept for logs and `rejected/*.txt`.
const MAX_MESSAGE: usize = 4096;
/// How far this node's clock and the lake's may differ before a `clock_skew` refusal is
/// taken as a clock problem (kept and retried) rather than rows stamped wrong (rejected).
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(60);
/// At most one log line per this long about a configuration refusal.
pub const CONFIG_LOG_EVERY: Duration = Duration::from_secs(60);
/// How often `lake.token_file` is re-read while the lake refuses the token.
const TOKEN_POLL: Duration = Duration::from_secs(2);
/// The lake's `"code"` for rows stamped too far ahead of its clock.
pub const CLOCK_SKEW_CODE: &str = "clock_skew";

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The same request may succeed later.
    Retryable,
    /// The lake refuses this node's configuration (token, node name, clock): the batch is
    /// fine and waits until an operator fixes it.
    Config,
    /// The lake will never accept this batch.
    Permanent,
}

/// A refusal for rows ahead of the lake's clock (`"code": "clock_skew"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSkew {
    /// The refused row's `ts`, µs since 1970.
    pub ts_us: Option<i64>,
    /// The lake's clock when it refused, µs since 1970.
    pub lake_now_us: Option<i64>,
}

impl ClockSkew {
    /// How far this node's clock (reading `now_us`) is ahead of the lake's; negative
    /// when behind. `None` when the lake did not say its time.
    pub fn offset_us(&self, now_us: i64) -> Option<i64> {
        self.lake_now_us.map(|lake| now_us.saturating_sub(lake))
    }

    /// Whether the clocks disagree now (or the lake did not say its time).
    pub fn clocks_disagree(&self, now_us: i64) -> bool {
        self.offset_us(now_us).is_none_or(|o| o.unsigned_abs() > CLOCK_TOLERANCE.as_micros() as u64)
    }
}

/// One failed ingest request.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The lake answered with an error status.
    #[error("lake answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// The lake's `error` message (or the body, truncated).
        message: String,
        /// Wait the lake asked for (429/503 `Retry-After`, seconds form).
        retry_after: Option<Duration>,
        /// Set when the lake refused rows for being ahead of its clock.
        clock: Option<ClockSkew>,
    },
    /// No answer: connection refused or reset, DNS, timeout.
    #[error("request to the lake failed: {}", lake_format::error::error_chain(.0))]
    Transport(#[source] reqwest::Error),
}

impl ShipError {
    /// The kind of this failure, judged with this node's clock now.
    pub fn kind(&self) -> ErrorKind {
        self.kind_at(lake_format::rows::now_micros())
    }

    /// The kind of this failure when this node's clock reads `now_us`.
    pub fn kind_at(&self, now_us: i64) -> ErrorKind {
        match self {
            ShipError::Status { clock: Some(c), .. } if c.clocks_disagree(now_us) => ErrorKind::Config,
            ShipError::Status { clock: Some(_), .. } => ErrorKind::Permanent,
            ShipError::Status { status, .. } => classify(*status),
            ShipError::Transport(_) => ErrorKind::Retryable,
        }
    }

    /// The wait the lake asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ShipError::Status { retry_after, .. } => *retry_after,
            ShipError::Transport(_) => None,
        }
    }

    /// Reads an error answer: status, `Retry-After`, the JSON `error` message (the raw
    /// body when it is not the lake's JSON) and a `clock_skew` code.
    pub async fn from_response(resp: reqwest::Response) -> ShipError {
        let status = resp.status();
        let retry_after = retry_after(status, resp.headers());
        let text = resp.text().await.unwrap_or_default();
        let (message, clock) = parse_error_body(&text);
        ShipError::Status { status, message, retry_after, clock }
    }

    /// One line for an operator about a [`ErrorKind::Config`] refusal: what the lake
    /// refused and what to check.
    pub fn config_cause(&self, node: &str, token: &TokenSource, now_us: i64) -> String {
        match self {
            ShipError::Status { clock: Some(c), message, .. } => {
                let whose = match c.offset_us(now_us) {
                    Some(o) => format!(
                        "this node's clock is {} {} the lake's (here {}, lake {})",
                        human(Duration::from_micros(o.unsigned_abs())),
                        if o >= 0 { "ahead of" } else { "behind" },
                        rfc3339(now_us),
                        c.lake_now_us.map_or_else(String::new, rfc3339)
                    ),
                    None => "the lake did not say its time".to_string(),
                };
                format!(
                    "lake refused rows for clock skew: {whose}; fix the clock (NTP) of this node or of the lake — the batches wait in the spool ({message})"
                )
            }
            ShipError::Status { status, message, .. } if *status == StatusCode::UNAUTHORIZED => format!(
                "lake refused the token for node {node} ({status}: {message}): check {} and that the lake has an ingest token for {node} (`lake token list`) — the batches wait in the spool",
                token_place(token)
            ),
            ShipError::Status { status, message, .. } => format!(
                "lake refused node {node} ({status}: {message}): check `node` in collector.toml and which node the token was made for (`lake token add --role ingest --node {node}`) — the batches wait in the spool"
            ),
            ShipError::Transport(_) => self.to_string(),
        }
    }
}

/// Where this node's token comes from, for a log line.
fn token_place(t: &TokenSource) -> String {
    match t {
        TokenSource::Inline => "lake.token in collector.toml (a restart applies a new one)".to_string(),
        TokenSource::File(p) => format!("lake.token_file {} (re-read while refused)", p.display()),
        TokenSource::Env => {
            format!("{} (e.g. /etc/lake/collector.env; a restart applies a new one)", crate::config::TOKEN_ENV)
        }
    }
}

/// The lake's JSON error body: its `error` message and a clock refusal; any other body is
/// the message itself, truncated.
fn parse_error_body(text: &str) -> (String, Option<ClockSkew>) {
    let json: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let message = json.as_ref().and_then(|v| v["error"].as_str()).map_or_else(|| text.to_string(), str::to_string);
    let clock = json
        .as_ref()
        .filter(|v| v["code"].as_str() == Some(CLOCK_SKEW_CODE))
        .map(|v| ClockSkew { ts_us: v["ts_us"].as_i64(), lake_now_us: v["lake_now_us"].as_i64() });
    (truncate(message), clock)
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let cut = (0..=MAX_MESSAGE).rev().find(|i| message.is_char_boundary(*i)).unwrap_or(0);
        message.truncate(cut);
    }
    message
}

fn rfc3339(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us).map_or_else(|_| format!("{us} µs"), |t| t.to_string())
}

/// `3d 4h`, `2h 5m`, `5m 3s`, `42s`: the two largest units.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m {secs}s")
    } else {
        format!("{secs}s")
    }
}

/// By status alone: 401 and 403 refuse this node's token or name (config); other 4xx
/// but 408 and 429 are permanent; everything else (5xx, and codes the lake never sends)
/// is retried, since retrying loses nothing.
pub fn classify(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        401 | 403 => ErrorKind::Config,
        408 | 429 => ErrorKind::Retryable,
        400..=499 => ErrorKind::Permanent,
        _ => ErrorKind::Retryable,
    }
}

/// `Retry-After` in its seconds form on 429 and 503; the HTTP-date form is ignored (the
/// backoff applies instead).
fn retry_after(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let secs: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Exponential backoff with full jitter between `min` and `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Smallest wait.
    pub min: Duration,
    /// Largest wait computed (a `Retry-After` may ask for more).
    pub max: Duration,
}

impl Backoff {
    /// Wait before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.min.saturating_mul(1u32 << attempt.min(30)).min(self.max).max(self.min);
        let jittered = rand::rng().random_range(self.min..=ceiling);
        retry_after.map_or(jittered, |ra| jittered.max(ra))
    }
}

/// Errors that stop the shipper.
#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The spool failed; the shipper cannot know what to send next.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Whether batches reach the lake: shared by the shipper and the heartbeat.
#[derive(Debug, Default)]
pub struct Link {
    state: Mutex<LinkState>,
}

/// What the shipper last saw of the lake.
#[derive(Debug, Default, Clone)]
pub struct LinkState {
    /// Since when every attempt failed; `None` while batches get through (or there is
    /// nothing to send).
    pub failing_since: Option<Instant>,
    /// The newest failure.
    pub last_error: Option<String>,
}

impl Link {
    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        // Each critical section is a plain assignment: a panic cannot leave it half-done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lake took a batch (stored it, or refused it for good, which moves the queue).
    pub fn delivered(&self) {
        self.lock().failing_since = None;
    }

    /// An attempt failed.
    pub fn failed(&self, error: &dyn fmt::Display) {
        let mut s = self.lock();
        s.failing_since.get_or_insert_with(Instant::now);
        s.last_error = Some(error.to_string());
    }

    /// A copy of the state.
    pub fn state(&self) -> LinkState {
        self.lock().clone()
    }
}

/// Sends spooled records to the lake.
#[derive(Debug)]
pub struct Shipper {
    client: reqwest::Client,
    base_url: String,
    token: Secret,
    token_source: TokenSource,
    node: String,
    spool: SpoolHandle,
    stats: Arc<Stats>,
    backoff: Backoff,
    config_backoff: Backoff,
    rejected_dir: PathBuf,
    rejected_bound: RejectedConfig,
    link: Arc<Link>,
}

impl Shipper {
    /// A shipper for `config`'s lake, reading from `spool`.
    pub fn new(config: &Config, spool: SpoolHandle, stats: Arc<Stats>) -> Result<Shipper, ShipperError> {
        let client = reqwest::Client::builder()
            .timeout(config.lake.timeout)
            .connect_timeout(config.lake.timeout)
            .user_agent(concat!("lake-collector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ShipperError::Client)?;
        Ok(Shipper {
            client,
            base_url: config.lake.url.clone(),
            token: config.lake.token.clone(),
            token_source: config.lake.token_source.clone(),
            node: config.node.clone(),
            spool,
            stats,
            backoff: Backoff { min: config.shipper.backoff_min, max: config.shipper.backoff_max },
            config_backoff: Backoff { min: config.shipper.config_backoff_min, max: config.shipper.config_backoff_max },
            rejected_dir: config.data_dir.join(crate::rejected::DIR),
            rejected_bound: config.rejected,
            link: Arc::new(Link::default()),
        })
    }

    /// Whether batches reach the lake (for the heartbeat).
    pub fn link(&self) -> Arc<Link> {
        Arc::clone(&self.link)
    }

    /// Ships until `cancel`. An in-flight request is not interrupted by `cancel`; the
    /// caller bounds how long it waits for it.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), ShipperError> {
        // When the last configuration refusal was logged (shared by all batches).
        let mut config_logged: Option<Instant> = None;
        loop {
            let record = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                r = self.spool.next() => r?,
            };
            let id = BatchId { node: self.node.clone(), epoch: record.epoch, seq: record.seq };
            let body = Bytes::from(record.body);
            let (mut attempt, mut refused) = (0u32, 0u32);
            loop {
                let sent = std::time::Instant::now();
                let result = self.send(&id, &record.table, body.clone()).await;
                let error = match result {
                    Ok(()) => {
                        Stats::set(&self.stats.ship_latency_us, sent.elapsed().as_micros() as u64);
                        self.spool.ack(id.seq).await?;
                        Stats::add(&self.stats.shipped_batches, 1);
                        self.link.delivered();
                        if refused > 0 {
                            info!(batch = %id, attempts = attempt + refused + 1, "the lake accepts this node again; shipping resumed");
                        } else if attempt > 0 {
                            info!(batch = %id, attempts = attempt + 1, "lake reachable again");
                        }
                        debug!(batch = %id, table = %record.table, attempt, "batch shipped");
                        break;
                    }
                    Err(e) => e,
                };
                Stats::add(&self.stats.ship_errors, 1);
                match error.kind() {
                    ErrorKind::Permanent => {
                        Stats::add(&self.stats.rejected_batches, 1);
                        error!(batch = %id, table = %record.table, error = %error, "lake rejected the batch; moved to rejected/");
                        self.reject(&id, &record.table, &body, &error).await;
                        self.spool.ack(id.seq).await?;
                        self.link.delivered();
                        break;
                    }
                    ErrorKind::Config => {
                        Stats::add(&self.stats.config_errors, 1);
                        self.link.failed(&error);
                        let wait = self.config_backoff.delay(refused, None);
                        refused = refused.saturating_add(1);
                        let now = Instant::now();
                        if config_logged.is_none_or(|t| now.duration_since(t) >= CONFIG_LOG_EVERY) {
                            config_logged = Some(now);
                            let cause =
                                error.config_cause(&self.node, &self.token_source, lake_format::rows::now_micros());
                            error!(batch = %id, attempts = refused, retry_in = %human(wait), "{cause}");
                        } else {
                            debug!(batch = %id, error = %error, attempts = refused, "lake still refuses this node");
                        }
                        if !self.wait_refused(wait, &cancel).await {
                            return Ok(());
                        }
                    }
                    ErrorKind::Retryable => {
                        self.link.failed(&error);
                        let wait = self.backoff.delay(attempt, error.retry_after());
                        // An outage of days must not flood the journal: every tenth try.
                        if attempt.is_multiple_of(10) {
                            warn!(batch = %id, error = %error, attempt, wait = ?wait, "ship failed, will retry");
                        } else {
                            debug!(batch = %id, error = %error, attempt, wait = ?wait, "ship failed, will retry");
                        }
                        attempt = attempt.saturating_add(1);
                        tokio::select! {
                            biased;
                            _ = cancel.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
        }
    }

    /// Waits `wait` after a configuration refusal, ending early when `lake.token_file`
    /// holds a new token. `false` when cancelled.
    async fn wait_refused(&mut self, wait: Duration, cancel: &CancellationToken) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            let step = match self.token_source {
                TokenSource::File(_) => (deadline - now).min(TOKEN_POLL),
                _ => deadline - now,
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(step) => {}
            }
            if self.reload_token() {
                return true;
            }
        }
    }

    /// Re-reads `lake.token_file`; `true` when it holds a new, non-empty token.
    fn reload_token(&mut self) -> bool {
        let TokenSource::File(path) = &self.token_source else {
            return false;
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let fresh = text.trim();
                if fresh.is_empty() || fresh == self.token.expose() {
                    return false;
                }
                info!(path = %path.display(), "lake.token_file holds a new token; trying it now");
                self.token = Secret::new(fresh);
                true
            }
            Err(error) => {
                debug!(path = %path.display(), %error, "cannot re-read lake.token_file");
                false
            }
        }
    }

    async fn send(&self, id: &BatchId, table: &str, body: Bytes) -> Result<(), ShipError> {
        send_batch(&self.client, &self.base_url, &self.token, id, table, body).await
    }

    /// Keeps a refused batch and the lake's reason for a human; failing to do so loses
    /// the batch, which is logged and counted as dropped.
    async fn reject(&self, id: &BatchId, table: &str, body: &Bytes, e: &ShipError) {
        let dir = self.rejected_dir.clone();
        let (id2, table2, body2, bound) = (id.clone(), table.to_string(), body.clone(), self.rejected_bound);
        let error = e.to_string();
        let kept =
            tokio::task::spawn_blocking(move || crate::rejected::keep(&dir, &id2, &table2, &body2, &error, &bound))
                .await;
        let failure = match kept {
            Ok(Ok(evicted)) => {
                Stats::add(&self.stats.rejected_evicted, evicted);
                return;
            }
            Ok(Err(err)) => err.to_string(),
            Err(join) => join.to_string(),
        };
        Stats::add(&self.stats.dropped_batches, 1);
        error!(batch = %id, error = %failure, "rejected batch could not be kept, dropped");
    }
}

/// POSTs one batch to the lake's ingest endpoint for `table`: `Ok` on a 2xx, the lake's
/// answer (or the transport failure) otherwise. The shipper and `replay-rejected` both send
/// through here.
pub(crate) async fn send_batch(
    client: &reqwest::Client,
    base_url: &str,
    token: &Secret,
    id: &BatchId,
    table: &str,
    body: Bytes,
) -> Result<(), ShipError> {
    let resp = client
        .post(format!("{base_url}/v1/ingest/{table}"))
        .bearer_auth(token.expose())
        .header(wire::BATCH_HEADER, id.to_string())
        .header(CONTENT_TYPE, content_type(table))
        .body(body)
        .send()
        .await
        .map_err(ShipError::Transport)?;
    if resp.status().is_success() {
        return Ok(());
    }
    Err(ShipError::from_response(resp).await)
}

/// The body's content type: NDJSON for a custom table's record, Arrow IPC otherwise.
pub fn content_type(table: &str) -> &'static str {
    if custom::custom_name(table).is_some() {
        custom::CONTENT_TYPE
    } else {
        wire::CONTENT_TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_tables_are_ndjson() {
        assert_eq!(content_type("json/app"), "application/x-ndjson");
        assert_eq!(content_type("metrics"), wire::CONTENT_TYPE);
    }

    #[test]
    fn statuses_are_classified() {
        for s in [500, 502, 503, 504, 408, 429, 301, 100] {
            assert_eq!(classify(StatusCode::from_u16(s).unwrap()), ErrorKind::Retryable, "{s}");
        }
        for s in [400, 404, 413, 422] {
            assert_eq!(classify(StatusCode::from_u16(s).unwrap()), ErrorKind::Permanent, "{s}");
        }
        for s in [401, 403] {
            assert_eq!(classify(StatusCode::from_u16(s).unwrap()), ErrorKind::Config, "{s}");
        }
    }

    #[test]
    fn retry_after_only_on_429_and_503_in_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(StatusCode::SERVICE_UNAVAILABLE, &h), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(StatusCode::TOO_MANY_REQUESTS, &h), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(StatusCode::INTERNAL_SERVER_ERROR, &h), None);
        h.insert(RETRY_AFTER, "99999999".parse().unwrap());
        assert_eq!(retry_after(StatusCode::SERVICE_UNAVAILABLE, &h), Some(MAX_RETRY_AFTER));
        h.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(StatusCode::SERVICE_UNAVAILABLE, &h), None);
    }

    #[test]
    fn backoff_grows_with_jitter_within_bounds() {
        let b = Backoff { min: Duration::from_millis(500), max: Duration::from_secs(60) };
        for attempt in 0..40 {
            let ceiling = Duration::from_millis(500).saturating_mul(1 << attempt.min(30)).min(b.max);
            for _ in 0..20 {
                let d = b.delay(attempt, None);
                assert!(d >= b.min && d <= ceiling, "attempt {attempt}: {d:?}");
            }
        }
        assert_eq!(b.delay(0, Some(Duration::from_secs(30))), Duration::from_secs(30));
        assert!(b.delay(20, Some(Duration::from_secs(1))) >= b.min);
    }

    #[test]
    fn clock_refusals_wait_while_the_clocks_disagree_and_are_rejected_after() {
        let day = 86_400_000_000i64;
        let now = 1_795_374_070_000_000i64;
        let body = format!(
            r#"{{"error": "table metrics: row 0 ... ahead", "code": "clock_skew", "ts_us": {}, "lake_now_us": {}}}"#,
            now + 3 * day,
            now - 3 * day
        );
        let (message, clock) = parse_error_body(&body);
        assert_eq!(message, "table metrics: row 0 ... ahead");
        let e = ShipError::Status { status: StatusCode::BAD_REQUEST, message, retry_after: None, clock };
        // This node's clock is 3 days ahead of the lake's: a clock problem, it waits.
        assert_eq!(e.kind_at(now), ErrorKind::Config);
        let cause = e.config_cause("web-1", &TokenSource::Env, now);
        assert!(
            cause.starts_with("lake refused rows for clock skew: this node's clock is 3d 0h ahead of the lake's"),
            "{cause}"
        );
        // The lake's clock was fixed: the clocks agree, the rows were stamped wrong.
        assert_eq!(e.kind_at(now - 3 * day + 5_000_000), ErrorKind::Permanent);
        // A plain 400 is permanent; a code the collector does not know changes nothing.
        let (message, clock) = parse_error_body(r#"{"error": "column \"value\" must be Float64", "code": "other"}"#);
        assert!(clock.is_none());
        let e = ShipError::Status { status: StatusCode::BAD_REQUEST, message, retry_after: None, clock };
        assert_eq!(e.kind_at(now), ErrorKind::Permanent);
        assert_eq!(parse_error_body("not json").0, "not json");
    }

    #[test]
    fn config_causes_name_what_to_check() {
        let e = ShipError::Status {
            status: StatusCode::UNAUTHORIZED,
            message: "unknown token".into(),
            retry_after: None,
            clock: None,
        };
        assert_eq!(e.kind(), ErrorKind::Config);
        let c = e.config_cause("web-1", &TokenSource::File("/etc/lake/t".into()), 0);
        assert!(c.starts_with("lake refused the token for node web-1 (401 Unauthorized: unknown token): check lake.token_file /etc/lake/t"), "{c}");
        let e = ShipError::Status {
            status: StatusCode::FORBIDDEN,
            message: "batch id is for node \"web-1\" but the token belongs to \"web-2\"".into(),
            retry_after: None,
            clock: None,
        };
        let c = e.config_cause("web-1", &TokenSource::Env, 0);
        assert!(c.starts_with("lake refused node web-1 (403 Forbidden"), "{c}");
        assert_eq!(human(Duration::from_secs(3 * 86_400 + 7200)), "3d 2h");
        assert_eq!(human(Duration::from_secs(125)), "2m 5s");
    }
}
