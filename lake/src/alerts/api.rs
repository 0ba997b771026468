//! What `GET /v1/alerts` answers and `lake alerts` prints: firing and pending alerts,
//! recent resolutions, silences, deliveries still queued and each rule's last
//! evaluation. Built from the persisted state, so `lake alerts --data-dir` shows the same
//! view without a running lake (minus rule health, which only a running lake knows).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use lake_query::alerts::state::{DeliveryStatus, Instance, Phase, Silence};
use lake_query::alerts::{rfc3339, Labels};

use super::store::Persisted;

/// The whole view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was taken (RFC 3339).
    pub generated_at: String,
    /// Whether rules run (`[alerts].enabled`); `None` when read from a data directory.
    pub enabled: Option<bool>,
    /// Pending and firing alerts, firing first.
    pub alerts: Vec<AlertView>,
    /// Recently resolved alerts, newest first.
    pub recent: Vec<AlertView>,
    /// Silences.
    pub silences: Vec<SilenceView>,
    /// Deliveries waiting for an attempt.
    pub queue: Vec<QueuedView>,
    /// Rules and how their last evaluation went (running lake only).
    pub rules: Vec<RuleView>,
    /// Counters since the lake started (running lake only): evaluations, failures,
    /// deliveries, retries, rows.
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
}

/// One alert instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    /// Rule name.
    pub rule: String,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    /// Severity.
    pub severity: String,
    /// Identity labels.
    pub labels: Labels,
    /// Latest value.
    pub value: Option<f64>,
    /// Rendered message.
    pub message: String,
    /// When the condition started to hold (RFC 3339).
    pub since: Option<String>,
    /// When it fired (RFC 3339).
    pub firing_since: Option<String>,
    /// When it resolved (RFC 3339).
    pub resolved_at: Option<String>,
    /// `silenced` or `flapping` when a due notification waits.
    pub held: Option<String>,
    /// Last delivery per channel.
    pub deliveries: BTreeMap<String, DeliveryStatus>,
    /// Instance fingerprint.
    pub fingerprint: String,
}

impl AlertView {
    fn of(i: &Instance, resolved: bool) -> AlertView {
        let state = if resolved { "resolved" } else { i.phase.as_str() };
        AlertView {
            rule: i.rule.clone(),
            state: state.to_string(),
            severity: i.severity.to_string(),
            labels: i.labels.clone(),
            value: i.value,
            message: i.message.clone(),
            since: i.active_since.or(i.firing_since).map(rfc3339),
            firing_since: i.firing_since.map(rfc3339),
            resolved_at: if resolved { i.resolved_at.map(rfc3339) } else { None },
            held: i.held.map(|h| h.as_str().to_string()),
            deliveries: i.deliveries.clone(),
            fingerprint: i.fingerprint.clone(),
        }
    }
}

/// A silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceView {
    /// Id for `lake silence remove`.
    pub id: u64,
    /// Rule, or every rule.
    pub rule: Option<String>,
    /// Labels matched.
    pub labels: Labels,
    /// Start (RFC 3339).
    pub starts_at: String,
    /// End (RFC 3339).
    pub ends_at: String,
    /// Why.
    pub comment: String,
}

impl From<&Silence> for SilenceView {
    fn from(s: &Silence) -> Self {
        SilenceView {
            id: s.id,
            rule: s.rule.clone(),
            labels: s.matchers.clone(),
            starts_at: rfc3339(s.starts_at),
            ends_at: rfc3339(s.ends_at),
            comment: s.comment.clone(),
        }
    }
}

/// A delivery waiting for an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedView {
    /// Rule.
    pub rule: String,
    /// Channel.
    pub channel: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// Alerts in it.
    pub alerts: usize,
    /// Attempts made.
    pub attempts: u32,
    /// Next attempt (RFC 3339).
    pub next_at: String,
    /// Error of the last attempt.
    pub last_error: Option<String>,
}

/// A rule and its last evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleView {
    /// Name.
    pub name: String,
    /// Severity.
    pub severity: String,
    /// Condition, e.g. `> 0.9`.
    pub condition: String,
    /// `every`, e.g. `1m`.
    pub every: String,
    /// `for`, e.g. `5m`.
    pub for_: String,
    /// Channels.
    pub channels: Vec<String>,
    /// Shipped rule.
    pub builtin: bool,
    /// Last evaluation (RFC 3339).
    pub last_eval: Option<String>,
    /// Rows returned by the last evaluation.
    pub rows: Option<usize>,
    /// Error of the last evaluation.
    pub error: Option<String>,
}

impl Snapshot {
    /// The view of a persisted state.
    pub fn of(p: &Persisted, now: i64) -> Snapshot {
        let mut alerts: Vec<AlertView> = p.alerts.active().map(|i| AlertView::of(i, false)).collect();
        alerts
            .sort_by(|a, b| (a.state != "firing", &a.rule, &a.labels).cmp(&(b.state != "firing", &b.rule, &b.labels)));
        // An instance resolved but still tracked (flap history) shows in `recent` only.
        let recent = p.alerts.recent.iter().filter(|i| i.phase == Phase::Ok).map(|i| AlertView::of(i, true)).collect();
        Snapshot {
            generated_at: rfc3339(now),
            enabled: None,
            alerts,
            recent,
            silences: p.alerts.silences.iter().map(SilenceView::from).collect(),
            queue: p
                .deliveries
                .iter()
                .map(|d| QueuedView {
                    rule: d.notification.rule.clone(),
                    channel: d.channel.clone(),
                    status: d.notification.status.as_str().to_string(),
                    alerts: d.notification.alerts.len(),
                    attempts: d.attempts,
                    next_at: rfc3339(d.next_at),
                    last_error: d.last_error.clone(),
                })
                .collect(),
            rules: Vec::new(),
            counters: BTreeMap::new(),
        }
    }
}

/// Body of `POST /v1/silences`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// Rule (any rule if absent).
    #[serde(default)]
    pub rule: Option<String>,
    /// Labels an instance must carry.
    #[serde(default)]
    pub labels: Labels,
    /// How long, e.g. `2h`.
    pub duration: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}
