//! The state machine of alert instances, with silences, repeat interval and flap guard.
//!
//! Per instance (a rule and a set of labels):
//!
//! ```text
//!          active                 active for `for`
//!   ok ─────────────► pending ─────────────────────► firing
//!    ▲   not active     │                               │ not active
//!    └──────────────────┘ (row "ok")                    ▼
//!    └────────────────────────────────────────────── resolved (row "resolved")
//! ```
//!
//! With `for = 0` an active instance fires at once. Every transition is one
//! [`AlertRow`]. Notifications follow a separate question, asked on every evaluation:
//! does what the channels last heard (`notified`) differ from the instance's phase, or is
//! a reminder due (`repeat`)? If so the instance joins this evaluation's notification of
//! its rule (one message for every instance of one rule that changed together) — unless
//! a silence matches it or it is flapping (more than `max_changes` firing/resolved changes
//! within the flap window), in which case the notification is held, a row `silenced` or
//! `flapping` says so once, and it goes out when the hold ends if the difference is still
//! there. So a restart with the state on disk neither repeats a notification already
//! sent nor forgets a resolution still owed.
//!
//! Time is an argument (µs since the epoch): tests drive `for`, repeat and flap windows
//! without sleeping.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::eval::{fmt_labels, Observation};
use super::rules::{FlapPolicy, Rule, Severity};
use super::template::Context;
use super::{fnv1a, Labels};

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Not active (kept only while its flap history or an owed resolution matters).
    Ok,
    /// Active, waiting for `for` to pass.
    Pending,
    /// Active for at least `for`.
    Firing,
}

impl Phase {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Ok => "ok",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
        }
    }
}

/// What a notification says about an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It fires.
    Firing,
    /// It stopped firing.
    Resolved,
}

impl Status {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// Why a due notification was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hold {
    /// A silence matches the instance.
    Silenced,
    /// The instance changed state too often lately.
    Flapping,
}

impl Hold {
    /// The lowercase name (also the row state).
    pub fn as_str(self) -> &'static str {
        match self {
            Hold::Silenced => "silenced",
            Hold::Flapping => "flapping",
        }
    }
}

/// Outcome of a delivery to one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its first attempt.
    Queued,
    /// Failed at least once; another attempt is scheduled.
    Retrying,
    /// Accepted by the channel.
    Sent,
    /// Given up (attempts exhausted or a permanent error).
    Failed,
}

impl DeliveryState {
    /// The lowercase name (also the row state of final outcomes).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Sent => "sent",
            DeliveryState::Failed => "failed",
        }
    }
}

/// The last delivery of an instance's notification to one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStatus {
    /// Firing or resolved notification.
    pub kind: Status,
    /// Where it is.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// When this status was reached (µs).
    pub at: i64,
    /// Last error, if any.
    pub error: Option<String>,
}

/// One alert instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Rule name.
    pub rule: String,
    /// Stable hash of rule and labels (16 hex digits).
    pub fingerprint: String,
    /// Identity labels.
    pub labels: Labels,
    /// Latest detail columns.
    pub details: Labels,
    /// Latest value.
    pub value: Option<f64>,
    /// Rule severity.
    pub severity: Severity,
    /// Current phase.
    pub phase: Phase,
    /// When the condition started to hold (µs).
    pub active_since: Option<i64>,
    /// When it fired (µs).
    pub firing_since: Option<i64>,
    /// When it last resolved (µs).
    pub resolved_at: Option<i64>,
    /// Last evaluation (µs).
    pub last_eval: i64,
    /// Rendered message.
    pub message: String,
    /// What the channels last heard.
    pub notified: Option<Status>,
    /// When they heard it (µs).
    pub notified_at: Option<i64>,
    /// Firing/resolved changes within the flap window (µs).
    pub changes: Vec<i64>,
    /// Why the due notification waits, if it does.
    pub held: Option<Hold>,
    /// Last delivery per channel.
    pub deliveries: BTreeMap<String, DeliveryStatus>,
}

impl Instance {
    /// The key in [`AlertState::instances`].
    pub fn key(&self) -> String {
        key(&self.rule, &self.fingerprint)
    }
}

fn key(rule: &str, fingerprint: &str) -> String {
    format!("{rule}/{fingerprint}")
}

/// The fingerprint of an instance: 16 hex digits of a stable hash of rule and labels.
pub fn fingerprint(rule: &str, labels: &Labels) -> String {
    let mut parts = vec![rule];
    for (k, v) in labels {
        parts.push(k);
        parts.push(v);
    }
    format!("{:016x}", fnv1a(&parts))
}

/// A silence: matching instances notify nobody until it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// Number, unique per lake.
    pub id: u64,
    /// Rule it applies to (any rule if `None`).
    pub rule: Option<String>,
    /// Labels an instance must carry (equal values).
    pub matchers: Labels,
    /// Start (µs).
    pub starts_at: i64,
    /// End (µs).
    pub ends_at: i64,
    /// Why.
    pub comment: String,
}

impl Silence {
    /// Whether it covers the instance at `now`.
    pub fn matches(&self, rule: &str, labels: &Labels, now: i64) -> bool {
        self.starts_at <= now
            && now < self.ends_at
            && self.rule.as_deref().is_none_or(|r| r == rule)
            && self.matchers.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// One row of the `alerts` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRow {
    /// When (µs).
    pub ts: i64,
    /// The instance's `host` label, or `lake`.
    pub host: String,
    /// Rule name.
    pub rule: String,
    /// `pending`, `firing`, `resolved`, `ok`, `silenced`, `flapping`, `sent`, `failed`.
    pub state: String,
    /// Instance value.
    pub value: Option<f64>,
    /// Instance labels.
    pub labels: Labels,
    /// Rule severity.
    pub severity: Option<String>,
    /// Rendered message, or the delivery's error.
    pub message: String,
    /// Channels concerned.
    pub channels: Vec<String>,
}

impl AlertRow {
    /// A row about an instance.
    pub fn of(inst: &Instance, ts: i64, state: &str, message: String, channels: Vec<String>) -> AlertRow {
        AlertRow {
            ts,
            host: inst.labels.get("host").cloned().unwrap_or_else(|| "lake".to_string()),
            rule: inst.rule.clone(),
            state: state.to_string(),
            value: inst.value,
            labels: inst.labels.clone(),
            severity: Some(inst.severity.to_string()),
            message,
            channels,
        }
    }
}

/// One instance inside a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifiedAlert {
    /// Firing or resolved.
    pub status: Status,
    /// Instance fingerprint.
    pub fingerprint: String,
    /// Identity labels.
    pub labels: Labels,
    /// Detail columns.
    pub details: Labels,
    /// Value.
    pub value: Option<f64>,
    /// Rendered message.
    pub message: String,
    /// When the condition started to hold (µs).
    pub starts_at: i64,
    /// When it resolved (µs), for resolved alerts.
    pub ends_at: Option<i64>,
    /// A reminder of an alert already notified.
    pub reminder: bool,
}

/// What one evaluation of a rule tells the channels: every instance of the rule whose
/// notification is due, in one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Rule name.
    pub rule: String,
    /// What the rule watches.
    pub description: String,
    /// Rule severity.
    pub severity: Severity,
    /// Firing if any alert in it fires.
    pub status: Status,
    /// The instances.
    pub alerts: Vec<NotifiedAlert>,
    /// When it was made (µs).
    pub created_at: i64,
    /// Link for people.
    pub dashboard: String,
    /// The lake's external URL.
    pub external_url: String,
}

impl Notification {
    /// Alerts with the given status.
    pub fn with_status(&self, s: Status) -> impl Iterator<Item = &NotifiedAlert> {
        self.alerts.iter().filter(move |a| a.status == s)
    }
}

/// What one evaluation produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cycle {
    /// Rows for the `alerts` table.
    pub rows: Vec<AlertRow>,
    /// The rule's notification, if any instance's is due.
    pub notification: Option<Notification>,
}

/// Settings the state machine needs beyond the rule.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Flap guard.
    pub flap: FlapPolicy,
    /// Resolved instances kept in [`AlertState::recent`].
    pub keep_resolved: usize,
    /// Base URL of the lake.
    pub external_url: String,
}

/// Every instance, the recent resolutions and the silences: the persisted alert state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AlertState {
    /// Instances by `rule/fingerprint`.
    pub instances: BTreeMap<String, Instance>,
    /// Resolved instances, newest first (copies taken when they resolved).
    pub recent: Vec<Instance>,
    /// Active and future silences.
    pub silences: Vec<Silence>,
    /// Id of the next silence.
    pub next_silence_id: u64,
}

impl AlertState {
    /// Applies one evaluation of `rule` at `now`.
    pub fn evaluate(&mut self, rule: &Rule, observed: &[Observation], now: i64, policy: &Policy) -> Cycle {
        let mut by_fp: BTreeMap<String, &Observation> = BTreeMap::new();
        for o in observed {
            by_fp.insert(fingerprint(&rule.name, &o.labels), o);
        }
        for (fp, o) in &by_fp {
            let k = key(&rule.name, fp);
            if rule.condition.holds(o.value) && !self.instances.contains_key(&k) {
                self.instances.insert(k, new_instance(rule, fp, o, now));
            }
        }
        let silences = self.silences.clone();
        let mut cycle = Cycle::default();
        let mut due: Vec<NotifiedAlert> = Vec::new();
        let mut due_rows: Vec<usize> = Vec::new();
        for inst in self.instances.values_mut().filter(|i| i.rule == rule.name) {
            let obs = by_fp.get(&inst.fingerprint);
            if let Some(o) = obs {
                inst.value = Some(o.value).filter(|v| v.is_finite());
                inst.details = o.details.clone();
            }
            let active = obs.is_some_and(|o| rule.condition.holds(o.value));
            inst.last_eval = now;
            inst.severity = rule.severity;
            inst.message = render(rule, inst);
            let before = inst.phase;
            match (inst.phase, active) {
                (Phase::Ok, true) => {
                    inst.active_since = Some(now);
                    if rule.for_.is_zero() {
                        fire(inst, now);
                    } else {
                        inst.phase = Phase::Pending;
                    }
                }
                (Phase::Pending, true) => {
                    let since = inst.active_since.unwrap_or(now);
                    if now - since >= rule.for_.as_micros() as i64 {
                        fire(inst, now);
                    }
                }
                (Phase::Pending, false) => {
                    inst.phase = Phase::Ok;
                    inst.active_since = None;
                }
                (Phase::Firing, false) => {
                    inst.phase = Phase::Ok;
                    inst.resolved_at = Some(now);
                    inst.changes.push(now);
                }
                (Phase::Firing, true) | (Phase::Ok, false) => {}
            }
            if inst.phase != before {
                let state = match (before, inst.phase) {
                    (_, Phase::Pending) => "pending",
                    (_, Phase::Firing) => "firing",
                    (Phase::Firing, Phase::Ok) => "resolved",
                    _ => "ok",
                };
                cycle.rows.push(AlertRow::of(inst, now, state, inst.message.clone(), Vec::new()));
                if state == "resolved" {
                    self.recent.insert(0, inst.clone());
                }
            }

            let window = policy.flap.window.as_micros() as i64;
            inst.changes.retain(|t| now - *t < window);
            let flapping = inst.changes.len() > policy.flap.max_changes as usize;
            let need = match (inst.phase, inst.notified) {
                (Phase::Firing, Some(Status::Firing)) => {
                    let last = inst.notified_at.unwrap_or(i64::MIN / 2);
                    (now - last >= rule.repeat.as_micros() as i64).then_some((Status::Firing, true))
                }
                (Phase::Firing, _) => Some((Status::Firing, false)),
                (_, Some(Status::Firing)) => Some((Status::Resolved, false)),
                _ => None,
            };
            let hold = if silences.iter().any(|s| s.matches(&rule.name, &inst.labels, now)) {
                Some(Hold::Silenced)
            } else if flapping {
                Some(Hold::Flapping)
            } else {
                None
            };
            let Some((status, reminder)) = need else {
                // The marker outlives quiet evaluations of the same episode, so one row
                // tells of it however often the instance changes under it.
                if inst.held != hold {
                    inst.held = None;
                }
                continue;
            };
            if let Some(h) = hold {
                if inst.held != Some(h) {
                    let why = match h {
                        Hold::Silenced => format!("{} notification held by a silence", status.as_str()),
                        Hold::Flapping => format!(
                            "{} notification held: {} changes within {}",
                            status.as_str(),
                            inst.changes.len(),
                            lake_format::units::Dur(policy.flap.window)
                        ),
                    };
                    cycle.rows.push(AlertRow::of(inst, now, h.as_str(), why, Vec::new()));
                }
                inst.held = Some(h);
                continue;
            }
            inst.held = None;
            inst.notified = Some(status);
            inst.notified_at = Some(now);
            due.push(NotifiedAlert {
                status,
                fingerprint: inst.fingerprint.clone(),
                labels: inst.labels.clone(),
                details: inst.details.clone(),
                value: inst.value,
                message: inst.message.clone(),
                starts_at: inst.active_since.or(inst.firing_since).unwrap_or(now),
                ends_at: (status == Status::Resolved).then(|| inst.resolved_at.unwrap_or(now)),
                reminder,
            });
            // Transition rows of this cycle name the channels they notify.
            if let Some(i) = cycle.rows.iter().rposition(|r| r.labels == inst.labels && r.rule == inst.rule) {
                due_rows.push(i);
            }
        }
        for i in due_rows {
            cycle.rows[i].channels = rule.channels.clone();
        }
        // Instances with nothing left to say are dropped; resolved ones live on in `recent`.
        self.instances.retain(|_, i| {
            i.rule != rule.name || i.phase != Phase::Ok || i.notified == Some(Status::Firing) || !i.changes.is_empty()
        });
        for r in &mut self.recent {
            if r.rule == rule.name {
                if let Some(live) = self.instances.get(&r.key()) {
                    // The resolution's own delivery records land on the copy; keep the
                    // hold visible too.
                    r.held = live.held;
                }
            }
        }
        self.recent.truncate(policy.keep_resolved);
        if !due.is_empty() {
            due.sort_by(|a, b| (a.status != Status::Firing, &a.labels).cmp(&(b.status != Status::Firing, &b.labels)));
            let status = if due.iter().any(|a| a.status == Status::Firing) { Status::Firing } else { Status::Resolved };
            cycle.notification = Some(Notification {
                rule: rule.name.clone(),
                description: rule.description.clone(),
                severity: rule.severity,
                status,
                alerts: due,
                created_at: now,
                dashboard: rule.dashboard.clone().unwrap_or_else(|| format!("{}/", policy.external_url)),
                external_url: policy.external_url.clone(),
            });
        }
        cycle
    }

    /// Drops instances of rules no longer configured; a firing one gets a `resolved` row
    /// (no notification: the rule that would word it is gone).
    pub fn forget_rules(&mut self, known: &[&str], now: i64) -> Vec<AlertRow> {
        let mut rows = Vec::new();
        self.instances.retain(|_, i| {
            if known.contains(&i.rule.as_str()) {
                return true;
            }
            if i.phase == Phase::Firing {
                rows.push(AlertRow::of(i, now, "resolved", "rule removed from the configuration".into(), Vec::new()));
            }
            false
        });
        rows
    }

    /// Adds a silence and returns it.
    pub fn add_silence(
        &mut self,
        rule: Option<String>,
        matchers: Labels,
        starts_at: i64,
        ends_at: i64,
        comment: String,
    ) -> Silence {
        self.next_silence_id = self.next_silence_id.max(1);
        let s = Silence { id: self.next_silence_id, rule, matchers, starts_at, ends_at, comment };
        self.next_silence_id += 1;
        self.silences.push(s.clone());
        s
    }

    /// Removes a silence; whether it existed.
    pub fn remove_silence(&mut self, id: u64) -> bool {
        let before = self.silences.len();
        self.silences.retain(|s| s.id != id);
        self.silences.len() != before
    }

    /// Forgets silences that ended before `now`.
    pub fn expire_silences(&mut self, now: i64) -> bool {
        let before = self.silences.len();
        self.silences.retain(|s| s.ends_at > now);
        self.silences.len() != before
    }

    /// Records a delivery outcome on the instances (live and recent) it was about.
    pub fn record_delivery(&mut self, rule: &str, fingerprints: &[&str], channel: &str, status: &DeliveryStatus) {
        for fp in fingerprints {
            if let Some(i) = self.instances.get_mut(&key(rule, fp)) {
                i.deliveries.insert(channel.to_string(), status.clone());
            }
            if status.kind == Status::Resolved || !self.instances.contains_key(&key(rule, fp)) {
                if let Some(r) = self.recent.iter_mut().find(|r| r.rule == rule && r.fingerprint == *fp) {
                    r.deliveries.insert(channel.to_string(), status.clone());
                }
            }
        }
    }

    /// Instances pending or firing, by rule then labels.
    pub fn active(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values().filter(|i| i.phase != Phase::Ok)
    }
}

fn fire(inst: &mut Instance, now: i64) {
    inst.phase = Phase::Firing;
    inst.firing_since = Some(now);
    inst.resolved_at = None;
    inst.changes.push(now);
}

fn new_instance(rule: &Rule, fp: &str, o: &Observation, now: i64) -> Instance {
    Instance {
        rule: rule.name.clone(),
        fingerprint: fp.to_string(),
        labels: o.labels.clone(),
        details: o.details.clone(),
        value: Some(o.value).filter(|v| v.is_finite()),
        severity: rule.severity,
        phase: Phase::Ok,
        active_since: None,
        firing_since: None,
        resolved_at: None,
        last_eval: now,
        message: String::new(),
        notified: None,
        notified_at: None,
        changes: Vec::new(),
        held: None,
        deliveries: BTreeMap::new(),
    }
}

fn render(rule: &Rule, inst: &Instance) -> String {
    let text = rule.message.render(&Context {
        rule: &rule.name,
        severity: rule.severity.as_str(),
        value: inst.value,
        labels: &inst.labels,
        details: &inst.details,
    });
    if text.trim().is_empty() {
        format!("{} {}", rule.name, fmt_labels(&inst.labels))
    } else {
        text
    }
}

#[cfg(test)]
mod tests;
