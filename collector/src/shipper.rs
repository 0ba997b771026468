//! The shipper: sends the spool's oldest unacknowledged record to the lake, one at a
//! time, in seq order, and acknowledges it in the spool once the lake answered 200.
//!
//! Failures have a kind. Retryable ones (5xx, 408, 429, anything unexpected, connection
//! errors, timeouts) retry the same record with exponential backoff and full jitter,
//! waiting at least what `Retry-After` asks on 429 and 503: order and completeness matter
//! more than latency. Permanent ones (any other 4xx) would never succeed: the record is
//! moved to `<data_dir>/rejected/` with the lake's answer next to it, counted, logged and
//! acknowledged, so one bad batch cannot block the queue.
//!
//! Records of custom tables (table `json/<name>`, NDJSON bodies, see
//! [`crate::sources::custom`]) go to `{lake}/v1/ingest/json/<name>` with
//! `Content-Type: application/x-ndjson`; everything else about them is as above.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lake_format::{wire, BatchId};
use rand::Rng;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{Config, Token};
use crate::sources::custom;
use crate::spool::{SpoolError, SpoolHandle};
use crate::stats::Stats;

/// Longest `Retry-After` honoured; a larger value is taken as this (a bogus header should
/// not silence a node for days).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Longest part of an error response kept for logs and `rejected/*.txt`.
const MAX_MESSAGE: usize = 4096;

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The same request may succeed later.
    Retryable,
    /// The lake will never accept this batch.
    Permanent,
}

/// One failed ingest request.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The lake answered with an error status.
    #[error("lake answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// Body of the answer (truncated).
        message: String,
        /// Wait the lake asked for (429/503 `Retry-After`, seconds form).
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, DNS, timeout.
    #[error("request to the lake failed: {}", chain(.0))]
    Transport(#[source] reqwest::Error),
}

impl ShipError {
    /// Retryable or permanent.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ShipError::Status { status, .. } => classify(*status),
            ShipError::Transport(_) => ErrorKind::Retryable,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ShipError::Status { retry_after, .. } => *retry_after,
            ShipError::Transport(_) => None,
        }
    }
}

/// An error and its causes on one line: reqwest's own message omits why a connection
/// failed ("connection refused" is in the source chain).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// 4xx other than 408 and 429 are permanent; everything else (5xx, and codes the lake
/// never sends) is retried, since retrying loses nothing.
pub fn classify(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
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
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
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
        let ceiling = self
            .min
            .saturating_mul(1u32 << attempt.min(30))
            .min(self.max)
            .max(self.min);
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

/// Sends spooled records to the lake.
#[derive(Debug)]
pub struct Shipper {
    client: reqwest::Client,
    base_url: String,
    token: Token,
    node: String,
    spool: SpoolHandle,
    stats: Arc<Stats>,
    backoff: Backoff,
    rejected_dir: PathBuf,
}

impl Shipper {
    /// A shipper for `config`'s lake, reading from `spool`.
    pub fn new(
        config: &Config,
        spool: SpoolHandle,
        stats: Arc<Stats>,
    ) -> Result<Shipper, ShipperError> {
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
            node: config.node.clone(),
            spool,
            stats,
            backoff: Backoff {
                min: config.shipper.backoff_min,
                max: config.shipper.backoff_max,
            },
            rejected_dir: config.data_dir.join("rejected"),
        })
    }

    /// Ships until `cancel`. An in-flight request is not interrupted by `cancel`; the
    /// caller bounds how long it waits for it.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), ShipperError> {
        loop {
            let record = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                r = self.spool.next() => r?,
            };
            let id = BatchId {
                node: self.node.clone(),
                epoch: record.epoch,
                seq: record.seq,
            };
            let body = Bytes::from(record.body);
            let mut attempt = 0u32;
            loop {
                let sent = std::time::Instant::now();
                match self.send(&id, &record.table, body.clone()).await {
                    Ok(()) => {
                        Stats::set(&self.stats.ship_latency_us, sent.elapsed().as_micros() as u64);
                        self.spool.ack(id.seq).await?;
                        Stats::add(&self.stats.shipped_batches, 1);
                        if attempt > 0 {
                            info!(batch = %id, attempts = attempt + 1, "lake reachable again");
                        }
                        debug!(batch = %id, table = %record.table, attempt, "batch shipped");
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Permanent => {
                        Stats::add(&self.stats.ship_errors, 1);
                        Stats::add(&self.stats.rejected_batches, 1);
                        error!(batch = %id, table = %record.table, error = %e, "lake rejected the batch; moved to rejected/");
                        self.reject(&id, &record.table, &body, &e).await;
                        self.spool.ack(id.seq).await?;
                        break;
                    }
                    Err(e) => {
                        Stats::add(&self.stats.ship_errors, 1);
                        let wait = self.backoff.delay(attempt, e.retry_after());
                        // An outage of days must not flood the journal: every tenth try.
                        if attempt.is_multiple_of(10) {
                            warn!(batch = %id, error = %e, attempt, wait = ?wait, "ship failed, will retry");
                        } else {
                            debug!(batch = %id, error = %e, attempt, wait = ?wait, "ship failed, will retry");
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

    async fn send(&self, id: &BatchId, table: &str, body: Bytes) -> Result<(), ShipError> {
        let url = format!("{}/v1/ingest/{table}", self.base_url);
        let resp = self
            .client
            .post(url)
            .bearer_auth(self.token.expose())
            .header(wire::BATCH_HEADER, id.to_string())
            .header(CONTENT_TYPE, content_type(table))
            .body(body)
            .send()
            .await
            .map_err(ShipError::Transport)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after(status, resp.headers());
        let mut message = resp.text().await.unwrap_or_default();
        if message.len() > MAX_MESSAGE {
            let cut = (0..=MAX_MESSAGE)
                .rev()
                .find(|i| message.is_char_boundary(*i))
                .unwrap_or(0);
            message.truncate(cut);
        }
        Err(ShipError::Status {
            status,
            message,
            retry_after,
        })
    }

    /// Keeps a refused batch and the lake's reason for a human; failing to do so loses
    /// the batch, which is logged and counted as dropped.
    async fn reject(&self, id: &BatchId, table: &str, body: &Bytes, e: &ShipError) {
        let dir = self.rejected_dir.clone();
        let stem = id.to_string().replace('/', "_");
        let body = body.clone();
        let note = format!("batch: {id}\ntable: {table}\nerror: {e}\n");
        let ext = if custom::custom_name(table).is_some() { "ndjson" } else { "arrow" };
        let written = tokio::task::spawn_blocking(move || {
            write_rejected(&dir, &stem, ext, &body, note.as_bytes())
        })
        .await;
        let failure = match written {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err.to_string(),
            Err(join) => join.to_string(),
        };
        Stats::add(&self.stats.dropped_batches, 1);
        error!(batch = %id, error = %failure, "rejected batch could not be kept, dropped");
    }
}

/// The body's content type: NDJSON for a custom table's record, Arrow IPC otherwise.
pub fn content_type(table: &str) -> &'static str {
    if custom::custom_name(table).is_some() {
        custom::CONTENT_TYPE
    } else {
        wire::CONTENT_TYPE
    }
}

fn write_rejected(dir: &Path, stem: &str, body_ext: &str, body: &[u8], note: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    for (ext, bytes) in [(body_ext, body), ("txt", note)] {
        let mut f = std::fs::File::create(dir.join(format!("{stem}.{ext}")))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::File::open(dir)?.sync_all()
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
            assert_eq!(
                classify(StatusCode::from_u16(s).unwrap()),
                ErrorKind::Retryable,
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 413, 422] {
            assert_eq!(
                classify(StatusCode::from_u16(s).unwrap()),
                ErrorKind::Permanent,
                "{s}"
            );
        }
    }

    #[test]
    fn retry_after_only_on_429_and_503_in_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &h),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(StatusCode::TOO_MANY_REQUESTS, &h),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_after(StatusCode::INTERNAL_SERVER_ERROR, &h), None);
        h.insert(RETRY_AFTER, "99999999".parse().unwrap());
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &h),
            Some(MAX_RETRY_AFTER)
        );
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(StatusCode::SERVICE_UNAVAILABLE, &h), None);
    }

    #[test]
    fn backoff_grows_with_jitter_within_bounds() {
        let b = Backoff {
            min: Duration::from_millis(500),
            max: Duration::from_secs(60),
        };
        for attempt in 0..40 {
            let ceiling = Duration::from_millis(500)
                .saturating_mul(1 << attempt.min(30))
                .min(b.max);
            for _ in 0..20 {
                let d = b.delay(attempt, None);
                assert!(d >= b.min && d <= ceiling, "attempt {attempt}: {d:?}");
            }
        }
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert!(b.delay(20, Some(Duration::from_secs(1))) >= b.min);
    }
}
