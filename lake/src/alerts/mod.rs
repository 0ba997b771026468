//! Alerting inside `lake serve`: schedules the rules of `lake.toml`, runs their SQL on the
//! query engine, drives the state machine of `lake_query::alerts`, writes every
//! transition and delivery outcome as an `alerts` row, and delivers notifications. The
//! pure parts (rules, state, evaluation, message text) are `lake_query::alerts`; the
//! routes of `/v1/alerts` and `/v1/silences` are [`http`], listed in [`crate::http::router`].
//!
//! One task (the alerter) owns the state, so nothing is shared but the snapshot it
//! publishes for `/v1/alerts`. Its loop:
//!
//! 1. starts the most overdue rule's query on the blocking pool (one at a time: DuckDB
//!    shares two cores with ingest), and the deliveries that are due (at most
//!    [`MAX_SENDS`] at once, each in its own task, so a slow SMTP relay never delays an
//!    evaluation);
//! 2. appends the outbox of rows to the WAL ([`rows`]), after the state naming their
//!    batch ids is on disk ([`store`]): rows are stored exactly once across crashes;
//! 3. saves the state when a transition, notification, delivery outcome or silence
//!    changed it, and publishes the [`api::Snapshot`];
//! 4. sleeps until the next rule or retry is due, a query or delivery finishes, a
//!    silence command arrives, or shutdown.
//!
//! **Rounds.** Every [`round_interval`] (the shortest `every` of the rules, at most a
//! minute: 30 s with the built-ins) the loop ends a round: it fails when a rule's latest
//! evaluation failed, or an evaluation has been running far past the engine's time limit.
//! The round goes to [`crate::health::Rounds`] (`/health`) and to the heartbeat, which
//! pings a monitor outside the lake ([`crate::heartbeat`]). The built-in
//! `alert_rule_failing` is computed here from the same evaluations, never with SQL, so it
//! fires when the engine is down too.
//!
//! Deliveries: one per (notification, channel), sent by [`notify`] (SMTP, webhooks); a
//! failure is retried with the backoff of `[notify]` unless permanent (a 4xx answer, an SMTP 5xx); the final outcome is a
//! `sent` or `failed` row and is shown by `lake alerts`. On shutdown, deliveries in
//! flight get [`SEND_GRACE`]; the rest stay queued in the state file for the next start
//! (so a notification whose answer was lost to the shutdown may be sent twice: at least
//! once, never forgotten).

pub mod api;
pub mod http;
pub mod notify;
pub mod rows;
pub mod store;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use self::notify::{ErrorKind, Notifier, SendError};
use lake_format::units::Dur;
use lake_query::alerts::builtin::{rule_failures, FailingRule};
use lake_query::alerts::eval::{self, expand_sql, fmt_labels, Observed};
use lake_query::alerts::notify::Channel;
use lake_query::alerts::rules::{AlertsConfig, Rule, RuleKind};
use lake_query::alerts::state::{AlertRow, DeliveryState, DeliveryStatus, Notification, Policy};
use lake_query::alerts::Clock;
use lake_query::engine::{Engine, Limits, NoFreshRows, QueryResult};

use crate::health::Health;
use crate::heartbeat::Heartbeat;
use crate::http::ingest::Ingest;
use api::{NewSilence, RuleView, SilenceView, Snapshot};
use store::{Delivery, Outbox, Persisted};

/// Deliveries running at once.
pub const MAX_SENDS: usize = 4;
/// How long shutdown waits for deliveries in flight.
pub const SEND_GRACE: Duration = Duration::from_secs(5);
/// Pause before retrying rows the ingest path refused (buffer full, disk full).
const ROW_RETRY: Duration = Duration::from_secs(2);
/// Longest sleep of the loop when nothing is due.
const IDLE: Duration = Duration::from_secs(60);
/// Longest wait for the WAL to take alert rows; past it the loop goes on and retries
/// (the append itself runs in its own task and is recognised if it lands later).
const ROW_STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest round, whatever the rules' intervals: a dead-man's switch wants a steady beat.
const MAX_ROUND: Duration = Duration::from_secs(60);
/// The round when no rule runs.
const DEFAULT_ROUND: Duration = Duration::from_secs(30);

/// How often the loop ends a round: the shortest `every` of the enabled rules, between 1 s
/// and [`MAX_ROUND`] ([`DEFAULT_ROUND`] without rules or with alerting off).
pub fn round_interval(config: &AlertsConfig) -> Duration {
    let shortest = config.rules.iter().map(|r| r.every).min().filter(|_| config.enabled);
    shortest.unwrap_or(DEFAULT_ROUND).clamp(Duration::from_secs(1), MAX_ROUND)
}

/// What the loop reports its rounds to.
#[derive(Debug, Clone)]
pub struct Watch {
    /// `/health`'s view of the lake; the loop records its rounds there.
    pub health: Arc<Health>,
    /// The dead-man's switch out, if `[heartbeat]` is configured.
    pub heartbeat: Option<Heartbeat>,
}

/// What the HTTP routes ask of the alerter.
#[derive(Debug)]
pub(crate) enum Command {
    AddSilence { req: NewSilence, reply: oneshot::Sender<Result<SilenceView, String>> },
    RemoveSilence { id: u64, reply: oneshot::Sender<bool> },
}

/// A running alerter.
#[derive(Debug)]
pub struct Alerts {
    commands: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    task: tokio::task::JoinHandle<()>,
}

impl Alerts {
    /// Loads the state under `data` and starts the alerter; it stops when `cancel` fires.
    /// Call after WAL replay (the row batch ids depend on what the lake remembers).
    pub fn spawn(
        config: Arc<AlertsConfig>,
        data: &Path,
        engine: Arc<Engine>,
        ingest: Arc<Ingest>,
        clock: Arc<dyn Clock>,
        watch: Watch,
        cancel: CancellationToken,
    ) -> anyhow::Result<Alerts> {
        if ingest.auth.current().nodes().contains(&rows::ID_NODE) {
            tracing::warn!(
                node = rows::ID_NODE,
                "a node shares the name of the alert rows' batch ids; its duplicates may be stored twice"
            );
        }
        let path = store::path(data);
        let mut state = store::load_or_reset(&path);
        let now = clock.now_micros();
        let epoch = rows::epoch(&ingest, &state.outbox, now);
        let known: Vec<&str> = config.rules.iter().map(|r| r.name.as_str()).collect();
        let forgotten = state.alerts.forget_rules(&known, now);
        let notifier = Notifier::new().map_err(anyhow::Error::msg)?;
        let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let due = config.rules.iter().map(|r| (r.name.clone(), now)).collect();
        let round = round_interval(&config);
        watch.health.rounds.start(round);
        // An evaluation still running this long after it started is a hung engine: the
        // engine interrupts queries at its own time limit, so this is well past it.
        let stall = (round * crate::health::MISSED_ROUNDS).max(engine.limits().timeout + Duration::from_secs(30));
        let mut alerter = Alerter {
            policy: Policy {
                flap: config.flap,
                keep_resolved: config.keep_resolved,
                external_url: config.external_url.clone(),
            },
            config,
            path,
            state,
            dirty: false,
            engine,
            ingest,
            notifier,
            clock,
            started: now,
            epoch,
            seq: 0,
            due,
            evals: JoinSet::new(),
            sends: JoinSet::new(),
            in_flight: HashSet::new(),
            rules: BTreeMap::new(),
            snapshot: snap_tx,
            row_retry_at: None,
            row_error_logged: None,
            stats: Stats::default(),
            watch,
            round,
            next_round: now + round.as_micros() as i64,
            running: None,
            stall,
        };
        alerter.enqueue_rows(forgotten);
        let task = tokio::spawn(alerter.run(cmd_rx, cancel));
        Ok(Alerts { commands: cmd_tx, snapshot: snap_rx, task })
    }

    /// The state of `/v1/alerts` and `/v1/silences` (routed in [`crate::http::router`]):
    /// listing with a read or alerts token of `auth`, silences changed with an alerts or
    /// admin one (no tokens at all: open).
    pub fn routes(&self, auth: Arc<crate::auth::Verifier>) -> Arc<http::Routes> {
        Arc::new(http::Routes { snapshot: self.snapshot.clone(), commands: self.commands.clone(), auth })
    }

    /// A receiver of every new snapshot (for `/metrics`).
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.borrow())
    }

    /// Waits until the alerter has stopped (after its token was cancelled) and saved its state.
    pub async fn stopped(self) {
        if let Err(e) = self.task.await {
            tracing::error!(%e, "alerter task failed");
        }
    }
}

/// Last evaluation of a rule.
#[derive(Debug, Default, Clone)]
struct RuleHealth {
    last_eval: Option<i64>,
    rows: Option<usize>,
    error: Option<String>,
    /// Evaluations failed in a row, and when the first of them started (µs).
    failures: u32,
    failing_since: Option<i64>,
}

type EvalDone = (String, i64, Result<QueryResult, String>);

#[derive(Debug)]
struct Alerter {
    config: Arc<AlertsConfig>,
    policy: Policy,
    path: PathBuf,
    state: Persisted,
    /// The state has changes worth an fsync (transitions, deliveries, silences, outbox).
    dirty: bool,
    engine: Arc<Engine>,
    ingest: Arc<Ingest>,
    notifier: Notifier,
    clock: Arc<dyn Clock>,
    started: i64,
    epoch: u64,
    seq: u64,
    /// Next evaluation per rule (µs).
    due: HashMap<String, i64>,
    evals: JoinSet<EvalDone>,
    sends: JoinSet<(u64, Result<(), SendError>)>,
    in_flight: HashSet<u64>,
    rules: BTreeMap<String, RuleHealth>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    row_retry_at: Option<i64>,
    /// The last row-store error logged and when (the retries are counted, not all logged).
    row_error_logged: Option<(String, i64)>,
    stats: Stats,
    watch: Watch,
    /// Round interval, and the end of the current round (µs).
    round: Duration,
    next_round: i64,
    /// The SQL evaluation in flight: rule and start (µs).
    running: Option<(String, i64)>,
    /// How long an evaluation may run before it counts as hung.
    stall: Duration,
}

/// What the alerter counts (published in the snapshot).
#[derive(Debug, Default)]
struct Stats {
    evaluations: u64,
    evaluation_errors: u64,
    notifications_sent: u64,
    notifications_failed: u64,
    delivery_retries: u64,
    rows_stored: u64,
    row_store_retries: u64,
    state_save_errors: u64,
    rounds: u64,
    rounds_failed: u64,
}

impl Stats {
    fn map(&self) -> BTreeMap<String, u64> {
        [
            ("evaluations", self.evaluations),
            ("evaluation_errors", self.evaluation_errors),
            ("notifications_sent", self.notifications_sent),
            ("notifications_failed", self.notifications_failed),
            ("delivery_retries", self.delivery_retries),
            ("rows_stored", self.rows_stored),
            ("row_store_retries", self.row_store_retries),
            ("state_save_errors", self.state_save_errors),
            ("rounds", self.rounds),
            ("rounds_failed", self.rounds_failed),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Alerter {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, cancel: CancellationToken) {
        tracing::info!(
            rules = self.config.rules.len(),
            channels = self.config.channels.len(),
            enabled = self.config.enabled,
            "alerting started"
        );
        loop {
            let now = self.clock.now_micros();
            if self.state.alerts.expire_silences(now) {
                self.dirty = true;
            }
            self.evaluate_internal(now);
            self.start_due_eval(now);
            if now >= self.next_round {
                self.end_round(now);
            }
            self.start_due_sends(now);
            self.flush_outbox(now, false).await;
            self.persist().await;
            self.publish(now);
            let wait = self.next_wake(now);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                Some(done) = self.evals.join_next() => self.on_eval(done),
                Some(done) = self.sends.join_next() => self.on_send(done),
                Some(cmd) = commands.recv() => self.on_command(cmd).await,
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        let deadline = tokio::time::Instant::now() + SEND_GRACE;
        while !self.sends.is_empty() {
            match tokio::time::timeout_at(deadline, self.sends.join_next()).await {
                Ok(Some(done)) => self.on_send(done),
                _ => break,
            }
        }
        if !self.sends.is_empty() {
            tracing::warn!(deliveries = self.sends.len(), "deliveries still running at shutdown; they stay queued");
        }
        self.sends.abort_all();
        self.evals.abort_all();
        let now = self.clock.now_micros();
        self.flush_outbox(now, true).await;
        self.dirty = true;
        self.persist().await;
        tracing::info!("alerting stopped");
    }

    fn rule(&self, name: &str) -> Option<&Rule> {
        self.config.rule(name)
    }

    fn start_due_eval(&mut self, now: i64) {
        if !self.config.enabled || !self.evals.is_empty() {
            return;
        }
        let config = Arc::clone(&self.config);
        let is_sql = |name: &str| config.rule(name).is_none_or(|r| r.kind == RuleKind::Sql);
        let Some((name, _)) = self.due.iter().filter(|(n, t)| **t <= now && is_sql(n)).min_by_key(|(_, t)| **t) else {
            return;
        };
        let name = name.clone();
        let Some(rule) = self.rule(&name) else {
            self.due.remove(&name);
            return;
        };
        let sql = expand_sql(&rule.sql, self.started);
        let engine = Arc::clone(&self.engine);
        self.running = Some((name.clone(), now));
        self.evals.spawn(async move {
            let r = engine.query(sql).await.map_err(|e| e.to_string());
            (name, now, r)
        });
    }

    fn on_eval(&mut self, done: Result<EvalDone, JoinError>) {
        self.running = None;
        let (name, started, result) = match done {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(%e, "rule evaluation task failed");
                return;
            }
        };
        let now = self.clock.now_micros();
        let Some(rule) = self.rule(&name).cloned() else { return };
        self.due.insert(name.clone(), (started + rule.every.as_micros() as i64).max(now));
        let observed = result.and_then(|r| eval::observations(&r).map_err(|e| e.to_string()));
        self.stats.evaluations += 1;
        if observed.is_err() {
            self.stats.evaluation_errors += 1;
        }
        let health = self.rules.entry(name.clone()).or_default();
        health.last_eval = Some(now);
        let observed = match observed {
            Ok(o) => {
                health.rows = Some(o.rows.len() + o.skipped);
                health.failures = 0;
                health.failing_since = None;
                if health.error.take().is_some() {
                    tracing::info!(rule = %name, "rule evaluates again");
                }
                o
            }
            Err(e) => {
                // Logged when the error starts or changes, not on every evaluation.
                if health.error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(rule = %name, error = %e, "rule evaluation failed");
                }
                health.error = Some(e);
                health.failures = health.failures.saturating_add(1);
                health.failing_since.get_or_insert(started);
                return;
            }
        };
        if observed.skipped > 0 {
            tracing::debug!(rule = %name, skipped = observed.skipped, "rows without a value skipped");
        }
        self.apply(&rule, &observed, now);
    }

    /// Feeds one evaluation's instances to the state machine; queues its rows and its
    /// notification.
    fn apply(&mut self, rule: &Rule, observed: &Observed, now: i64) {
        let cycle = self.state.alerts.evaluate(rule, &observed.rows, now, &self.policy);
        if !cycle.rows.is_empty() || cycle.notification.is_some() {
            self.dirty = true;
        }
        for r in &cycle.rows {
            tracing::info!(rule = %r.rule, state = %r.state, labels = %fmt_labels(&r.labels), "alert");
        }
        self.enqueue_rows(cycle.rows);
        if let Some(n) = cycle.notification {
            self.queue_notification(rule, n, now);
        }
    }

    /// The SQL rules whose evaluations fail now: those whose latest evaluation failed,
    /// and the one running past [`Alerter::stall`] (a hung engine never answers).
    fn failing_rules(&self, now: i64) -> Vec<FailingRule> {
        let mut out: Vec<FailingRule> = self
            .config
            .rules
            .iter()
            .filter(|r| r.kind == RuleKind::Sql)
            .filter_map(|r| {
                let h = self.rules.get(&r.name)?;
                let error = h.error.clone()?;
                Some(FailingRule {
                    rule: r.name.clone(),
                    failures: h.failures,
                    since: h.failing_since.unwrap_or(now),
                    error,
                })
            })
            .collect();
        if let Some((name, since)) = &self.running {
            let running = Duration::from_micros(u64::try_from(now - since).unwrap_or(0));
            if running > self.stall {
                let error = format!("its evaluation has been running for {}s without an answer", running.as_secs());
                match out.iter_mut().find(|f| &f.rule == name) {
                    Some(f) => {
                        f.failures = f.failures.saturating_add(1);
                        f.error = error;
                    }
                    None => {
                        let h = self.rules.get(name);
                        out.push(FailingRule {
                            rule: name.clone(),
                            failures: h.map_or(0, |h| h.failures).saturating_add(1),
                            since: h.and_then(|h| h.failing_since).unwrap_or(*since),
                            error,
                        });
                    }
                }
            }
        }
        out
    }

    /// Evaluates the due rules that need no engine (`alert_rule_failing`), even while a
    /// SQL evaluation hangs.
    fn evaluate_internal(&mut self, now: i64) {
        if !self.config.enabled {
            return;
        }
        let due: Vec<Rule> = self
            .config
            .rules
            .iter()
            .filter(|r| r.kind == RuleKind::RuleFailures && self.due.get(&r.name).is_some_and(|t| *t <= now))
            .cloned()
            .collect();
        for rule in due {
            let observed = Observed { rows: rule_failures(&self.failing_rules(now)), skipped: 0 };
            self.due.insert(rule.name.clone(), now + rule.every.as_micros() as i64);
            self.stats.evaluations += 1;
            let health = self.rules.entry(rule.name.clone()).or_default();
            health.last_eval = Some(now);
            health.rows = Some(observed.rows.len());
            self.apply(&rule, &observed, now);
        }
    }

    /// Ends a round: records its outcome for `/health` and hands it to the heartbeat.
    fn end_round(&mut self, now: i64) {
        self.next_round = now + self.round.as_micros() as i64;
        let failures: Vec<String> = if self.config.enabled {
            self.failing_rules(now).into_iter().map(|f| format!("rule {}: {}", f.rule, f.error)).collect()
        } else {
            Vec::new()
        };
        self.stats.rounds += 1;
        if !failures.is_empty() {
            self.stats.rounds_failed += 1;
        }
        self.watch.health.rounds.record(failures.clone());
        if let Some(hb) = &self.watch.heartbeat {
            hb.round(failures);
        }
    }

    fn queue_notification(&mut self, rule: &Rule, n: Notification, now: i64) {
        let fps: Vec<String> = n.alerts.iter().map(|a| a.fingerprint.clone()).collect();
        let fps: Vec<&str> = fps.iter().map(String::as_str).collect();
        for channel in &rule.channels {
            let id = self.state.next_delivery.max(1);
            self.state.next_delivery = id + 1;
            let status =
                DeliveryStatus { kind: n.status, state: DeliveryState::Queued, attempts: 0, at: now, error: None };
            self.state.alerts.record_delivery(&rule.name, &fps, channel, &status);
            self.state.deliveries.push(Delivery {
                id,
                channel: channel.clone(),
                notification: n.clone(),
                attempts: 0,
                next_at: now,
                state: DeliveryState::Queued,
                last_error: None,
            });
        }
        self.dirty = true;
    }

    fn start_due_sends(&mut self, now: i64) {
        let due: Vec<u64> = self
            .state
            .deliveries
            .iter()
            .filter(|d| d.next_at <= now && !self.in_flight.contains(&d.id))
            .map(|d| d.id)
            .collect();
        for id in due {
            if self.in_flight.len() >= MAX_SENDS {
                break;
            }
            let Some(d) = self.state.deliveries.iter().find(|d| d.id == id) else { continue };
            let channel: Option<Channel> = self.config.channel(&d.channel).cloned();
            let n = d.notification.clone();
            let notifier = self.notifier.clone();
            self.in_flight.insert(id);
            self.sends.spawn(async move {
                let r = match channel {
                    Some(c) => notifier.send(&c, &n).await,
                    None => Err(SendError::permanent("the channel is no longer configured")),
                };
                (id, r)
            });
        }
    }

    fn on_send(&mut self, done: Result<(u64, Result<(), SendError>), JoinError>) {
        let (id, result) = match done {
            Ok(d) => d,
            Err(e) => {
                // The task is gone; its delivery stays queued and is started again.
                tracing::error!(%e, "delivery task failed");
                self.in_flight.clear();
                return;
            }
        };
        self.in_flight.remove(&id);
        let now = self.clock.now_micros();
        let Some(pos) = self.state.deliveries.iter().position(|d| d.id == id) else { return };
        let attempts_max = self.config.retry.attempts;
        let delay = |n| self.config.retry.delay(n);
        let d = &mut self.state.deliveries[pos];
        d.attempts += 1;
        let (state, error) = match result {
            Ok(()) => (DeliveryState::Sent, None),
            Err(e) if e.kind == ErrorKind::Permanent || d.attempts >= attempts_max => {
                (DeliveryState::Failed, Some(e.message))
            }
            Err(e) => (DeliveryState::Retrying, Some(e.message)),
        };
        let status =
            DeliveryStatus { kind: d.notification.status, state, attempts: d.attempts, at: now, error: error.clone() };
        let d = d.clone();
        let fps: Vec<&str> = d.notification.alerts.iter().map(|a| a.fingerprint.as_str()).collect();
        self.state.alerts.record_delivery(&d.notification.rule, &fps, &d.channel, &status);
        self.dirty = true;
        match state {
            DeliveryState::Retrying => {
                self.stats.delivery_retries += 1;
                let wait = delay(d.attempts);
                tracing::warn!(rule = %d.notification.rule, channel = %d.channel, attempt = d.attempts, retry_in = %Dur(wait), error = error.as_deref().unwrap_or_default(), "notification failed; will retry");
                let slot = &mut self.state.deliveries[pos];
                slot.next_at = now + wait.as_micros() as i64;
                slot.state = DeliveryState::Retrying;
                slot.last_error = error;
            }
            DeliveryState::Sent | DeliveryState::Failed => {
                self.state.deliveries.remove(pos);
                let what = d.notification.status.as_str();
                let message = match &error {
                    None => format!("{what} notification sent to {} (attempt {})", d.channel, d.attempts),
                    Some(e) => {
                        format!("{what} notification to {} failed after {} attempt(s): {e}", d.channel, d.attempts)
                    }
                };
                if state == DeliveryState::Failed {
                    self.stats.notifications_failed += 1;
                    tracing::error!(rule = %d.notification.rule, channel = %d.channel, attempts = d.attempts, error = error.as_deref().unwrap_or_default(), "notification failed; giving up");
                } else {
                    self.stats.notifications_sent += 1;
                    tracing::info!(rule = %d.notification.rule, channel = %d.channel, attempts = d.attempts, "notification sent");
                }
                let rows = outcome_rows(&d.notification, &d.channel, state, &message, now);
                self.enqueue_rows(rows);
            }
            DeliveryState::Queued => {}
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        let now = self.clock.now_micros();
        match cmd {
            Command::AddSilence { req, reply } => {
                let result = self.add_silence(req, now).await;
                let _ = reply.send(result);
            }
            Command::RemoveSilence { id, reply } => {
                let removed = self.state.alerts.remove_silence(id);
                if removed {
                    self.dirty = true;
                    self.persist().await;
                    // Held notifications go out at the next evaluation: make that now.
                    for t in self.due.values_mut() {
                        *t = (*t).min(now);
                    }
                }
                let _ = reply.send(removed);
            }
        }
    }

    async fn add_silence(&mut self, req: NewSilence, now: i64) -> Result<SilenceView, String> {
        let d: Dur = req.duration.parse()?;
        if d.0 < Duration::from_secs(60) || d.0 > Duration::from_secs(90 * 86_400) {
            return Err(format!("duration {d} must be between 1m and 90d"));
        }
        if let Some(r) = &req.rule {
            if self.rule(r).is_none() {
                let names: Vec<&str> = self.config.rules.iter().map(|r| r.name.as_str()).collect();
                return Err(format!("unknown rule {r:?} (rules: {})", names.join(", ")));
            }
        }
        if req.rule.is_none() && req.labels.is_empty() {
            return Err("give a rule, labels or both: a silence of everything is not allowed".into());
        }
        let s = self.state.alerts.add_silence(req.rule, req.labels, now, now + d.0.as_micros() as i64, req.comment);
        self.dirty = true;
        if !self.persist().await {
            self.state.alerts.remove_silence(s.id);
            return Err("the silence could not be saved (see the lake's log)".into());
        }
        tracing::info!(id = s.id, rule = ?s.rule, labels = %fmt_labels(&s.matchers), until = %lake_query::alerts::rfc3339(s.ends_at), "silence added");
        Ok(SilenceView::from(&s))
    }

    /// Puts rows in the outbox under the next batch id.
    fn enqueue_rows(&mut self, rows: Vec<AlertRow>) {
        if rows.is_empty() {
            return;
        }
        self.seq += 1;
        let batch = format!("{}/{}/{}", rows::ID_NODE, self.epoch, self.seq);
        self.state.outbox.push(Outbox { batch, rows });
        self.dirty = true;
    }

    /// Appends the outbox to the WAL, oldest first, each entry only once the state that
    /// names its batch id is on disk. Stops at the first failure (ids must reach the WAL
    /// in order) and tries again after [`ROW_RETRY`].
    async fn flush_outbox(&mut self, now: i64, force: bool) {
        if !force && self.row_retry_at.is_some_and(|t| now < t) {
            return;
        }
        self.row_retry_at = None;
        while !self.state.outbox.is_empty() {
            if !self.persist().await {
                self.row_retry_at = Some(now + ROW_RETRY.as_micros() as i64);
                return;
            }
            let first = &self.state.outbox[0];
            let stored = tokio::time::timeout(ROW_STORE_TIMEOUT, rows::store(&self.ingest, &first.batch, &first.rows))
                .await
                .unwrap_or_else(|_| Err(format!("the WAL did not take them within {}", Dur(ROW_STORE_TIMEOUT))));
            match stored {
                Ok(()) => {
                    let done = self.state.outbox.remove(0);
                    self.stats.rows_stored += done.rows.len() as u64;
                    self.dirty = true;
                    if self.row_error_logged.take().is_some() {
                        tracing::info!("alert rows are stored again");
                    }
                }
                Err(e) => {
                    self.stats.row_store_retries += 1;
                    // Logged when the error changes and then once a minute; every retry is counted.
                    let quiet =
                        self.row_error_logged.as_ref().is_some_and(|(last, at)| *last == e && now - at < 60_000_000);
                    if !quiet {
                        tracing::warn!(batch = %first.batch, error = %e, waiting = self.state.outbox.len(), "alert rows not stored yet; retrying");
                        self.row_error_logged = Some((e, now));
                    }
                    self.row_retry_at = Some(now + ROW_RETRY.as_micros() as i64);
                    return;
                }
            }
        }
    }

    /// Saves the state if it changed; whether it is on disk.
    async fn persist(&mut self) -> bool {
        if !self.dirty {
            return true;
        }
        let (path, state) = (self.path.clone(), self.state.clone());
        match tokio::task::spawn_blocking(move || store::save(&path, &state)).await {
            Ok(Ok(())) => {
                self.dirty = false;
                true
            }
            Ok(Err(e)) => {
                self.stats.state_save_errors += 1;
                tracing::error!(path = %self.path.display(), %e, "saving the alert state failed");
                false
            }
            Err(e) => {
                self.stats.state_save_errors += 1;
                tracing::error!(%e, "alert state writer task failed");
                false
            }
        }
    }

    fn publish(&self, now: i64) {
        let mut snap = Snapshot::of(&self.state, now);
        snap.enabled = Some(self.config.enabled);
        snap.counters = self.stats.map();
        snap.rules = self
            .config
            .rules
            .iter()
            .map(|r| {
                let h = self.rules.get(&r.name).cloned().unwrap_or_default();
                RuleView {
                    name: r.name.clone(),
                    severity: r.severity.to_string(),
                    condition: r.condition.to_string(),
                    every: Dur(r.every).to_string(),
                    for_: Dur(r.for_).to_string(),
                    channels: r.channels.clone(),
                    builtin: r.builtin,
                    last_eval: h.last_eval.map(lake_query::alerts::rfc3339),
                    rows: h.rows,
                    error: h.error,
                }
            })
            .collect();
        self.snapshot.send_replace(Arc::new(snap));
    }

    fn next_wake(&self, now: i64) -> Duration {
        let mut t = (now + IDLE.as_micros() as i64).min(self.next_round);
        if self.config.enabled {
            let idle = self.evals.is_empty();
            let next = self
                .due
                .iter()
                .filter(|(name, _)| idle || self.rule(name).is_some_and(|r| r.kind != RuleKind::Sql))
                .map(|(_, d)| *d)
                .min();
            if let Some(d) = next {
                t = t.min(d);
            }
        }
        for d in &self.state.deliveries {
            if !self.in_flight.contains(&d.id) && self.in_flight.len() < MAX_SENDS {
                t = t.min(d.next_at);
            }
        }
        if !self.state.outbox.is_empty() {
            t = t.min(self.row_retry_at.unwrap_or(now));
        }
        for s in &self.state.alerts.silences {
            t = t.min(s.ends_at);
        }
        Duration::from_micros((t - now).max(0) as u64)
    }
}

/// One `sent` or `failed` row per alert of a finished delivery.
fn outcome_rows(n: &Notification, channel: &str, state: DeliveryState, message: &str, now: i64) -> Vec<AlertRow> {
    n.alerts
        .iter()
        .map(|a| AlertRow {
            ts: now,
            host: a.labels.get("host").cloned().unwrap_or_else(|| "lake".to_string()),
            rule: n.rule.clone(),
            state: state.as_str().to_string(),
            value: a.value,
            labels: a.labels.clone(),
            severity: Some(n.severity.to_string()),
            message: message.to_string(),
            channels: vec![channel.to_string()],
        })
        .collect()
}

/// Runs every rule's query against an empty lake (`LIMIT 0`): catches SQL and shape
/// errors (no numeric `value` column) before the lake runs. One message per bad rule.
///
/// The empty lake has the custom tables of `data_dir` (their schemas, no rows), so a rule
/// over one — an SQL rule, or one of kind `anomaly` with `table` — is checked against its
/// columns rather than refused as naming an unknown table.
pub fn check_rules(config: &AlertsConfig, limits: &Limits, data_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = tempfile_dir()?;
    let schemas = lake_format::custom::schema_dir(&dir);
    std::fs::create_dir_all(&schemas).with_context(|| format!("creating {}", schemas.display()))?;
    let (custom, _) = lake_format::custom::load_all(data_dir);
    for s in custom {
        let path = lake_format::custom::schema_path(&dir, &s.name);
        std::fs::write(&path, serde_json::to_vec(&s)?).with_context(|| format!("writing {}", path.display()))?;
    }
    let engine =
        Engine::open(&dir, Arc::new(NoFreshRows), Limits { timeout: Duration::from_secs(10), ..limits.clone() })
            .context("opening a query engine to check the rules")?;
    let mut errors = Vec::new();
    for r in config.rules.iter().filter(|r| r.kind == RuleKind::Sql) {
        let sql = eval::probe_sql(&r.sql, 0);
        let checked = engine
            .query_blocking(&sql)
            .map_err(|e| e.to_string())
            .and_then(|res| eval::check_schema(&res.schema).map_err(|e| e.to_string()));
        if let Err(e) = checked {
            errors.push(format!("rule {} (sql): {e}", r.name));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(errors)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("lake-check-{}-{}", std::process::id(), lake_format::rows::now_micros()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// A rule over a custom table is checked against the data directory's schema.
    #[test]
    fn rules_over_custom_tables_are_checked_against_their_schema() {
        let toml = r#"
[alerts]
builtins = false

[[rules]]
name = "signups_anomaly"
kind = "anomaly"
table = "signups"
by = ["plan"]

[[rules]]
name = "signups_sql"
sql = "SELECT count(*) AS value FROM signups WHERE plan = 'pro'"
condition = "> 5"
"#;
        let c = Config::parse(toml, |_| None).unwrap();
        let data = tempfile::tempdir().unwrap();
        let errors = super::check_rules(&c.alerts, &c.limits, data.path()).unwrap();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("rule signups_anomaly (sql)") && errors[0].contains("signups"), "{errors:?}");
        let mut schema = lake_format::custom::CustomSchema::new("signups");
        schema.columns.push(lake_format::custom::CustomColumn {
            name: "plan".into(),
            ty: lake_format::catalog::ColumnType::Text,
        });
        let path = lake_format::custom::schema_path(data.path(), "signups");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec(&schema).unwrap()).unwrap();
        assert_eq!(super::check_rules(&c.alerts, &c.limits, data.path()).unwrap(), Vec::<String>::new());
    }

    /// The README's alerting example is a valid configuration.
    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../../README.md");
        let section = readme.split("\n## Alerts\n").nth(1).expect("README has an Alerts section");
        let toml = section.split("```toml\n").nth(1).and_then(|s| s.split("```").next()).expect("a toml block");
        let c = Config::parse(toml, |k| (k == "LAKE_SMTP_PASSWORD").then(|| "pw".to_string())).unwrap();
        let a = &c.alerts;
        assert_eq!(a.external_url, "https://lake.tailnet.example:7470");
        assert_eq!(a.channels.len(), 2);
        assert!(a.rule("api_errors").is_some() && a.rule("fail2ban_burst").is_none());
        assert_eq!(a.rule("filesystem_full").unwrap().condition.to_string(), "> 0.95");
    }
}
