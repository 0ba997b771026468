//! The collector's health, told outside the lake: a dead storage node cannot report
//! itself, so the nodes that notice do (`[heartbeat]` in collector.toml).
//!
//! - **Ping.** Every `interval`, while this collector is healthy, it calls `url` (GET or
//!   POST with an empty body: healthchecks.io, Uptime Kuma "push" monitors, Cronitor and
//!   the like). Healthy means batches reach the lake: the last attempt succeeded, there
//!   is nothing to send, or delivery has been failing for less than `grace`. When the
//!   pings stop, the monitoring service raises the alarm — also when this node itself is
//!   down, which nothing on it could report.
//! - **Lake down.** When delivery has failed for `lake_down.after` (the lake unreachable,
//!   answering 5xx, or refusing this node's token or clock), one JSON POST goes to
//!   `lake_down.url` (`"status": "firing"`), and one more when a batch gets through again
//!   (`"status": "resolved"`). A notification that cannot be delivered (the network may
//!   be what is down) is retried every [`RETRY_EVERY`] until it is, oldest first.
//!
//! Input: the shipper's [`Link`] and the spool's pending count. Output: HTTP requests,
//! counted in `heartbeat_errors` when they fail. The payload follows the lake's own
//! webhook JSON (`version`, `source`, `rule`, `severity`, `status`, `summary`, `text`,
//! `starts_at`, `ends_at`, `created_at`), plus `node`, `lake`, `last_error` and
//! `pending_batches`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, HeartbeatConfig, LakeDownConfig, PingConfig, PingMethod};
use crate::shipper::{human, Link};
use crate::spool::SpoolHandle;
use crate::stats::Stats;

/// How often health is looked at.
const TICK: Duration = Duration::from_secs(1);
/// Pause between two attempts to deliver a lake-down notification.
pub const RETRY_EVERY: Duration = Duration::from_secs(10);
/// Notifications waiting for delivery; past it the oldest is dropped (counted).
const MAX_OUTBOX: usize = 16;
/// Name of the condition in the webhook payload.
pub const RULE: &str = "lake_unreachable";

/// Errors that stop the heartbeat before it starts.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the heartbeat's HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The heartbeat task.
#[derive(Debug)]
pub struct Heartbeat {
    client: reqwest::Client,
    node: String,
    lake_url: String,
    config: HeartbeatConfig,
    link: Arc<Link>,
    spool: SpoolHandle,
    stats: Arc<Stats>,
}

impl Heartbeat {
    /// The heartbeat of `config`, or `None` when `[heartbeat]` configures nothing.
    pub fn new(
        config: &Config,
        link: Arc<Link>,
        spool: SpoolHandle,
        stats: Arc<Stats>,
    ) -> Result<Option<Heartbeat>, HeartbeatError> {
        if config.heartbeat.ping.is_none() && config.heartbeat.lake_down.is_none() {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .timeout(config.lake.timeout)
            .connect_timeout(config.lake.timeout)
            .user_agent(concat!("lake-collector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(HeartbeatError::Client)?;
        Ok(Some(Heartbeat {
            client,
            node: config.node.clone(),
            lake_url: config.lake.url.clone(),
            config: config.heartbeat.clone(),
            link,
            spool,
            stats,
        }))
    }

    /// Pings and notifies until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let mut next_ping = Instant::now();
        let mut paused_logged = false;
        // Whether a "firing" was queued and its "resolved" is still owed.
        let mut firing: Option<SystemTime> = None;
        let mut outbox: VecDeque<Value> = VecDeque::new();
        let mut next_delivery = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let now = Instant::now();
            let state = self.link.state();
            let failing_for = state.failing_since.map(|t| now.duration_since(t));

            if let Some(ping) = &self.config.ping {
                if now >= next_ping {
                    next_ping = now + ping.interval;
                    if failing_for.is_none_or(|f| f < ping.grace) {
                        paused_logged = false;
                        self.ping(ping).await;
                    } else if !paused_logged {
                        paused_logged = true;
                        warn!(failing_for = %human(failing_for.unwrap_or_default()), "heartbeat pings paused: batches have not reached the lake for longer than heartbeat.grace");
                    }
                }
            }

            if let Some(down) = &self.config.lake_down {
                match (firing, failing_for) {
                    (None, Some(f)) if f >= down.after => {
                        let since = SystemTime::now() - f;
                        firing = Some(since);
                        let pending = self.spool.pending().await.unwrap_or(0);
                        let error = state.last_error.clone().unwrap_or_default();
                        warn!(failing_for = %human(f), "lake unreachable for heartbeat.lake_down.after: notifying");
                        push(&mut outbox, self.payload("firing", since, None, f, &error, pending), &self.stats);
                    }
                    (Some(since), None) => {
                        firing = None;
                        let ended = SystemTime::now();
                        let took = ended.duration_since(since).unwrap_or_default();
                        let pending = self.spool.pending().await.unwrap_or(0);
                        info!(after = %human(took), "lake reachable again: notifying");
                        push(&mut outbox, self.payload("resolved", since, Some(ended), took, "", pending), &self.stats);
                    }
                    _ => {}
                }
                if !outbox.is_empty() && now >= next_delivery {
                    while let Some(body) = outbox.front() {
                        if !self.notify(down, body).await {
                            // Only a failure delays the next attempt.
                            next_delivery = now + RETRY_EVERY;
                            break;
                        }
                        outbox.pop_front();
                    }
                }
            }
        }
    }

    async fn ping(&self, ping: &PingConfig) {
        let req = match ping.method {
            PingMethod::Get => self.client.get(ping.url.expose()),
            PingMethod::Post => self.client.post(ping.url.expose()).body(""),
        };
        let failure = match req.send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => e.to_string(),
        };
        Stats::add(&self.stats.heartbeat_errors, 1);
        warn!(url = %ping.url.redacted(), error = %failure, "heartbeat ping failed");
    }

    /// Posts one notification; `true` once delivered.
    async fn notify(&self, down: &LakeDownConfig, body: &Value) -> bool {
        // reqwest's `json` feature is not enabled: the body is serialized here.
        let mut req = self
            .client
            .post(down.url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(t) = &down.bearer_token {
            req = req.bearer_auth(t.expose());
        }
        let failure = match req.send().await {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => e.to_string(),
        };
        Stats::add(&self.stats.heartbeat_errors, 1);
        warn!(url = %down.url.redacted(), error = %failure, retry_in = ?RETRY_EVERY, "lake-down webhook failed");
        false
    }

    fn payload(
        &self,
        status: &str,
        since: SystemTime,
        ended: Option<SystemTime>,
        took: Duration,
        error: &str,
        pending: u64,
    ) -> Value {
        let (node, lake) = (&self.node, &self.lake_url);
        let (summary, text) = if status == "firing" {
            (
                format!("[FIRING] {RULE}: {node} has not reached the lake for {}", human(took)),
                format!(
                    "lake-collector on {node} has not delivered a batch to the lake at {lake} for {}. Last error: {error}. \
                     Its spool keeps the data ({pending} batches waiting) and ships it when the lake answers again.",
                    human(took)
                ),
            )
        } else {
            (
                format!("[RESOLVED] {RULE}: {node} reaches the lake again after {}", human(took)),
                format!("lake-collector on {node} delivers to the lake at {lake} again, after {}; {pending} batches still to ship.", human(took)),
            )
        };
        json!({
            "version": "1",
            "source": "lake-collector",
            "rule": RULE,
            "severity": "critical",
            "status": status,
            "node": node,
            "lake": lake,
            "summary": summary,
            "text": text,
            "last_error": (!error.is_empty()).then_some(error),
            "pending_batches": pending,
            "starts_at": rfc3339(since),
            "ends_at": ended.map(rfc3339),
            "created_at": rfc3339(SystemTime::now()),
        })
    }
}

fn push(outbox: &mut VecDeque<Value>, v: Value, stats: &Stats) {
    if outbox.len() >= MAX_OUTBOX {
        outbox.pop_front();
        Stats::add(&stats.heartbeat_errors, 1);
        warn!("lake-down notifications pile up undelivered: dropped the oldest");
    }
    outbox.push_back(v);
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t).map_or_else(|_| String::new(), |t| t.to_string())
}
