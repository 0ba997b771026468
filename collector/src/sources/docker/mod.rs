//! Docker (or Podman) containers → `containers` (events), `logs` (their output) and
//! `metrics` (their resource use), through the Engine API on the daemon's unix socket
//! ([`api`]).
//!
//! Three parts run side by side:
//! - **Events** ([`events`]): `/events` filtered to containers, followed. Every event is
//!   a `containers` row; `start` makes its container's logs followed; `destroy` forgets
//!   its log position. Each time the stream (re)connects, the running containers are
//!   listed (after subscribing, so none starts unseen) and followed.
//! - **Logs** ([`logs`]): one follower per selected container, resuming from its position.
//! - **Stats** ([`stats`]): every `stats_interval`, one-shot stats and an inspect
//!   (`RestartCount`) of each selected running container, as droppable samples.
//!
//! **Exactly once.** The source's state ([`DockerState`]) is the events cursor (the
//! `timeNano` of the newest event spooled and the events of exactly that nanosecond
//! already spooled) and each followed container's log position ([`logs::LogPos`]).
//! Every batch of events or of one container's lines is spooled as one group with the
//! whole state after it ([`Shared::commit`], one lock, so groups and states stay in
//! order): a restart, clean or `kill -9`, resumes from the state of the last spooled
//! group — `/events?since=<cursor>` (events of the cursor's nanosecond already spooled
//! are skipped) and each container's `logs?since=<position>`. With no state (the first
//! start) the cursor is "now" (saved at once), and the logs of running containers are
//! read from now on. A container without a log position that was created after the
//! cursor (it started while the collector was down, or just now) is read from its first
//! line. Limits: the daemon keeps only its last 256 events in memory, so a collector down
//! through more events than that loses the older ones (the logs of the containers it
//! then finds running are still read whole); and Docker's stdout and stderr copiers may
//! stamp two lines written in the same instant out of order, which the position (the
//! newest time spooled) can skip on a resume between them.
//!
//! **Selection** ([`Selection`]): by name (`include`/`exclude` globs), `labels`
//! (`key` or `key=value`, all must match) and `compose_projects`; it applies to events,
//! logs and stats alike. `skip_actions` (default: the `exec_*` events every health check
//! makes, `attach`, `resize`, `top`) are read but not stored.
//!
//! **Failure.** The daemon unreachable (not running yet, restarting) is counted in the
//! source's `errors`, logged, and retried with a backoff (1 s doubling to 30 s); the
//! collector keeps running. A container whose log driver cannot be read back (`none`,
//! `syslog`, …) is logged once per start and not followed.

pub mod api;
pub mod events;
pub mod logs;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::ensure;
use arrow_array::RecordBatch;
use lake_format::rows::{now_micros, MetricsBuilder};
use lake_format::units::{ByteSize, Dur};
use lake_format::Table;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::api::{since_param, ApiError, Docker};
use self::events::{ContainerRows, Event, COMPOSE_PROJECT, COMPOSE_SERVICE};
use self::logs::{LogPos, Out};
use super::journald::parse::glob;
use super::unparsed::UnparsedRows;
use super::url_escape;
use super::{tailed, Emitted, SourceContext, SourceError};
use crate::stats::{SourceStats, Stats};

/// Name of the source: counters, spool state, `logs.source`.
pub const NAME: &str = "docker";

/// Labels of a container.
pub type Labels = BTreeMap<String, String>;

fn default_socket() -> PathBuf {
    PathBuf::from("/var/run/docker.sock")
}
const fn default_true() -> bool {
    true
}
const fn default_stats_interval() -> Dur {
    Dur(Duration::from_secs(30))
}
const fn default_max_line() -> ByteSize {
    ByteSize(crate::tail::DEFAULT_MAX_LINE_BYTES as u64)
}
const fn default_batch_lines() -> usize {
    5000
}
/// One batch a second at most per container: each costs an encode, an fsync and a request.
const fn default_batch_wait() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_skip_actions() -> Vec<String> {
    ["exec_create", "exec_start", "exec_die", "exec_detach", "attach", "resize", "top"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// `[docker]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerFile {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "default_socket")]
    socket: PathBuf,
    #[serde(default = "default_true")]
    logs: bool,
    #[serde(default = "default_stats_interval")]
    stats_interval: Dur,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    compose_projects: Vec<String>,
    #[serde(default = "default_skip_actions")]
    skip_actions: Vec<String>,
    #[serde(default = "default_max_line")]
    max_line_bytes: ByteSize,
    #[serde(default = "default_batch_lines")]
    batch_lines: usize,
    #[serde(default = "default_batch_wait")]
    batch_wait: Dur,
}

impl Default for DockerFile {
    fn default() -> Self {
        DockerFile {
            enabled: false,
            socket: default_socket(),
            logs: true,
            stats_interval: default_stats_interval(),
            include: Vec::new(),
            exclude: Vec::new(),
            labels: Vec::new(),
            compose_projects: Vec::new(),
            skip_actions: default_skip_actions(),
            max_line_bytes: default_max_line(),
            batch_lines: default_batch_lines(),
            batch_wait: default_batch_wait(),
        }
    }
}

/// Which containers the source reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Name globs (`*`); when not empty, only matching names.
    pub include: Vec<String>,
    /// Name globs never read.
    pub exclude: Vec<String>,
    /// Labels every selected container carries: `(key, None)` any value.
    pub labels: Vec<(String, Option<String>)>,
    /// When not empty, only containers of these compose projects.
    pub compose_projects: Vec<String>,
}

impl Selection {
    /// Whether the container `name` with `labels` is read.
    pub fn selects(&self, name: &str, labels: &Labels) -> bool {
        let matches = |pats: &[String]| pats.iter().any(|p| glob(p.as_bytes(), name.as_bytes()));
        (self.include.is_empty() || matches(&self.include))
            && !matches(&self.exclude)
            && self.labels.iter().all(|(k, v)| match (labels.get(k), v) {
                (Some(_), None) => true,
                (Some(got), Some(want)) => got == want,
                (None, _) => false,
            })
            && (self.compose_projects.is_empty()
                || labels.get(COMPOSE_PROJECT).is_some_and(|p| self.compose_projects.contains(p)))
    }
}

/// `[docker]`, validated.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Whether the source runs.
    pub enabled: bool,
    /// The daemon's unix socket.
    pub socket: PathBuf,
    /// Whether container logs are read.
    pub logs: bool,
    /// How often stats are sampled; `None`: never.
    pub stats_interval: Option<Duration>,
    /// Which containers.
    pub selection: Selection,
    /// Event actions read but not stored.
    pub skip_actions: Vec<String>,
    /// Longest line kept, bytes.
    pub max_line_bytes: usize,
    /// Most lines per spooled batch of one container.
    pub batch_lines: usize,
    /// Longest a read line waits for its batch.
    pub batch_wait: Duration,
}

impl DockerFile {
    /// Checks the section.
    pub fn validate(self) -> anyhow::Result<DockerConfig> {
        ensure!(
            self.socket.is_absolute(),
            "docker.socket = {:?}: must be an absolute path (e.g. /var/run/docker.sock, or Podman's /run/podman/podman.sock)",
            self.socket
        );
        let stats_interval = match self.stats_interval.0 {
            d if d.is_zero() => None,
            d => {
                ensure!(
                    d >= Duration::from_secs(1),
                    "docker.stats_interval = {}: must be at least 1s (or \"0s\" for no stats): each sample waits a second for the daemon's two readings",
                    self.stats_interval
                );
                Some(d)
            }
        };
        for (key, pats) in [("include", &self.include), ("exclude", &self.exclude)] {
            for (i, p) in pats.iter().enumerate() {
                ensure!(!p.trim().is_empty(), "docker.{key}[{i}] is empty: write a container name or a glob");
            }
        }
        let mut labels = Vec::new();
        for (i, l) in self.labels.iter().enumerate() {
            let (k, v) = match l.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (l.as_str(), None),
            };
            ensure!(!k.trim().is_empty(), "docker.labels[{i}] = {l:?}: write \"key\" or \"key=value\"");
            labels.push((k.to_string(), v));
        }
        for (i, p) in self.compose_projects.iter().enumerate() {
            ensure!(!p.trim().is_empty(), "docker.compose_projects[{i}] is empty");
        }
        let max = tailed::check_max_line_bytes("docker", self.max_line_bytes)?;
        tailed::check_batch_lines("docker", self.batch_lines)?;
        ensure!(!self.batch_wait.0.is_zero(), "docker.batch_wait must be more than zero");
        Ok(DockerConfig {
            enabled: self.enabled,
            socket: self.socket,
            logs: self.logs,
            stats_interval,
            selection: Selection {
                include: self.include,
                exclude: self.exclude,
                labels,
                compose_projects: self.compose_projects,
            },
            skip_actions: self.skip_actions,
            max_line_bytes: max,
            batch_lines: self.batch_lines,
            batch_wait: self.batch_wait.0,
        })
    }
}

/// The events cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsCursor {
    /// `timeNano` of the newest event spooled.
    pub since: i64,
    /// [`Event::key`]s of the events of exactly `since` already spooled.
    pub at: Vec<String>,
}

impl EventsCursor {
    /// Whether `e` is new, moving the cursor past it if so.
    pub fn advance(&mut self, e: &Event) -> bool {
        let key = e.key();
        if e.time_nano < self.since || (e.time_nano == self.since && self.at.contains(&key)) {
            return false;
        }
        if e.time_nano > self.since {
            self.since = e.time_nano;
            self.at.clear();
        }
        self.at.push(key);
        true
    }
}

/// The source's position, saved with every spooled group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerState {
    /// Where the events stream resumes.
    pub events: EventsCursor,
    /// Where each container's logs resume, by full id.
    pub logs: BTreeMap<String, LogPos>,
}

/// What the source knows of a container (from an inspect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Full id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image as the container was created with.
    pub image: String,
    /// Labels.
    pub labels: Labels,
    /// Whether it runs with a TTY (its logs are a raw stream).
    pub tty: bool,
    /// Whether it runs now.
    pub running: bool,
    /// Creation time, ns.
    pub created_nanos: i64,
    /// Restarts by its restart policy.
    pub restart_count: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectJson {
    id: String,
    name: String,
    #[serde(default)]
    created: String,
    #[serde(default)]
    restart_count: i64,
    state: InspectState,
    config: InspectConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectState {
    #[serde(default)]
    running: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    #[serde(default)]
    tty: bool,
    #[serde(default)]
    image: String,
    #[serde(default)]
    labels: Option<Labels>,
}

impl From<InspectJson> for Container {
    fn from(j: InspectJson) -> Self {
        let created_nanos =
            j.created.parse::<jiff::Timestamp>().ok().and_then(|t| i64::try_from(t.as_nanosecond()).ok()).unwrap_or(0);
        Container {
            id: j.id,
            name: j.name.trim_start_matches('/').to_string(),
            image: j.config.image,
            labels: j.config.labels.unwrap_or_default(),
            tty: j.config.tty,
            running: j.state.running,
            created_nanos,
            restart_count: j.restart_count,
        }
    }
}

/// One entry of `/containers/json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedJson {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    labels: Option<Labels>,
}

impl ListedJson {
    fn name(&self) -> &str {
        self.names.first().map(|n| n.trim_start_matches('/')).unwrap_or(&self.id)
    }
}

/// What the source's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) ctx: SourceContext,
    pub(crate) docker: Docker,
    pub(crate) config: DockerConfig,
    pub(crate) stats: Arc<SourceStats>,
    state: tokio::sync::Mutex<DockerState>,
    /// Followed containers, with the `start`s seen while followed.
    followers: Mutex<HashMap<String, u64>>,
    /// The events cursor when the source started: a container created after it is new.
    started_cursor: i64,
    errors: AtomicU64,
}

impl Shared {
    /// Spools `batches` with the state `update` makes, as one group; `false` on shutdown
    /// (nothing spooled, the state unchanged).
    pub(crate) async fn commit(
        &self,
        batches: Vec<(Table, RecordBatch)>,
        update: impl FnOnce(&mut DockerState),
        cancel: &CancellationToken,
    ) -> Result<bool, SourceError> {
        let mut state = self.state.lock().await;
        let mut next = state.clone();
        update(&mut next);
        match self.ctx.emit_with_state(NAME, batches, &next, cancel).await? {
            Emitted::Spooled(_) => {
                *state = next;
                Ok(true)
            }
            Emitted::Cancelled => Ok(false),
        }
    }

    /// Inspects container `id`.
    pub(crate) async fn container(&self, id: &str) -> Result<Container, ApiError> {
        let j: InspectJson = self.docker.json(&format!("/containers/{}/json", url_escape(id))).await?;
        Ok(j.into())
    }

    /// Where `c`'s logs start when it has no position: a container created since the
    /// source started from its first line; an older one from the source's start. Not
    /// from "now": a container created earlier and started later (`docker start`, a
    /// compose `up` of a stopped service) prints its first lines before the `start`
    /// event reaches its follower, and those lines would be lost.
    pub(crate) async fn log_start(&self, c: &Container) -> LogPos {
        if let Some(p) = self.state.lock().await.logs.get(&c.id) {
            return *p;
        }
        if c.created_nanos >= self.started_cursor {
            LogPos::default()
        } else {
            LogPos { ts: self.started_cursor, at: 0 }
        }
    }

    /// Marks `id` followed: `false` (and a `start` noted) when it already is.
    fn claim(&self, id: &str) -> bool {
        let mut f = self.followers.lock().expect("followers lock");
        match f.get_mut(id) {
            Some(starts) => {
                *starts += 1;
                false
            }
            None => {
                f.insert(id.to_string(), 0);
                true
            }
        }
    }

    /// The `start`s seen while `id` is followed.
    pub(crate) fn starts(&self, id: &str) -> u64 {
        self.followers.lock().expect("followers lock").get(id).copied().unwrap_or(0)
    }

    /// Stops following `id` unless a `start` came since `seen` (`None`: in any case).
    pub(crate) fn stop_following(&self, id: &str, seen: Option<u64>) -> bool {
        let mut f = self.followers.lock().expect("followers lock");
        if seen.is_none_or(|s| f.get(id).is_none_or(|now| *now == s)) {
            f.remove(id);
            return true;
        }
        false
    }

    /// Counts a failed call; logs the first and every hundredth.
    pub(crate) fn error(&self, e: &ApiError) {
        Stats::add(&self.stats.errors, 1);
        let n = self.errors.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(100) {
            warn!(source = NAME, error = %e, errors = n + 1, "docker API call failed");
        }
    }
}

/// The running Docker source.
#[derive(Debug)]
pub struct DockerSource {
    config: DockerConfig,
    ctx: SourceContext,
}

impl DockerSource {
    /// A source for `config` writing through `ctx`.
    pub fn new(config: DockerConfig, ctx: SourceContext) -> Self {
        DockerSource { config, ctx }
    }

    /// Runs until `cancel`; returns early only on a spool or state error.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let DockerSource { config, ctx } = self;
        let saved: Option<DockerState> = ctx.load_state(NAME).await?;
        let state = match saved {
            Some(s) => s,
            None => {
                // First start: from now on, and say so durably, so a restart before the
                // first event still resumes from here.
                let s = DockerState {
                    events: EventsCursor { since: now_micros() * 1000, at: Vec::new() },
                    ..Default::default()
                };
                if ctx.emit_with_state(NAME, Vec::new(), &s, &cancel).await? == Emitted::Cancelled {
                    return Ok(());
                }
                s
            }
        };
        info!(source = NAME, socket = %config.socket.display(), since = %since_param(state.events.since), "docker source started");
        let known: Vec<String> = state.logs.keys().cloned().collect();
        let shared = Arc::new(Shared {
            docker: Docker::new(&config.socket),
            stats: ctx.source_stats(NAME),
            started_cursor: state.events.since,
            state: tokio::sync::Mutex::new(state),
            followers: Mutex::new(HashMap::new()),
            errors: AtomicU64::new(0),
            config,
            ctx,
        });
        let (tx, mut rx) = mpsc::channel::<String>(1024);
        let mut tasks: JoinSet<Result<(), SourceError>> = JoinSet::new();
        if shared.config.logs {
            // Containers with a position may have written lines while the collector was down.
            for id in known {
                let _ = tx.try_send(id);
            }
        }
        tasks.spawn(follow_events(Arc::clone(&shared), tx.clone(), cancel.clone()));
        if let Some(every) = shared.config.stats_interval {
            tasks.spawn(sample_stats(Arc::clone(&shared), every, cancel.clone()));
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(id) = rx.recv() => {
                    if shared.claim(&id) {
                        tasks.spawn(logs::follow(Arc::clone(&shared), id, cancel.clone()));
                    }
                }
                Some(done) = tasks.join_next() => match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(error) => return Err(SourceError::Task { source_name: NAME, error }),
                },
            }
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Sends the selected running containers to be followed.
async fn discover(shared: &Shared, tx: &mpsc::Sender<String>) -> Result<(), ApiError> {
    let list: Vec<ListedJson> = shared.docker.json("/containers/json").await?;
    for c in list {
        if shared.config.selection.selects(c.name(), c.labels.as_ref().unwrap_or(&Labels::new())) {
            let _ = tx.send(c.id).await;
        }
    }
    Ok(())
}

/// Follows `/events` until `cancel`, reconnecting with a backoff.
async fn follow_events(
    shared: Arc<Shared>,
    tx: mpsc::Sender<String>,
    cancel: CancellationToken,
) -> Result<(), SourceError> {
    let mut backoff = Duration::from_secs(1);
    loop {
        let cursor = shared.state.lock().await.events.clone();
        let filters = url_escape(r#"{"type":["container"]}"#);
        let path = format!("/events?since={}&filters={filters}", since_param(cursor.since));
        let stream = match shared.docker.get(&path).await {
            Ok(s) => Some(s),
            Err(e) => {
                shared.error(&e);
                None
            }
        };
        if let Some(mut stream) = stream {
            backoff = Duration::from_secs(1);
            let listed = if shared.config.logs { discover(&shared, &tx).await } else { Ok(()) };
            if let Err(e) = listed {
                shared.error(&e);
            }
            let mut lines = logs::Lines::new(shared.config.max_line_bytes);
            loop {
                let got = tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    got = stream.chunk() => got,
                };
                let chunk = match got {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        shared.error(&e);
                        break;
                    }
                };
                let mut read = Vec::new();
                lines.feed(Out::Stdout, &chunk, &mut |l| read.push(l));
                if !read.is_empty() && !apply_events(&shared, &tx, read, &cancel).await? {
                    return Ok(());
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Spools the rows of a read of event lines with the cursor after them; then follows
/// the containers they started. `false` on shutdown.
async fn apply_events(
    shared: &Shared,
    tx: &mpsc::Sender<String>,
    read: Vec<logs::Line>,
    cancel: &CancellationToken,
) -> Result<bool, SourceError> {
    let node = Arc::clone(&shared.ctx.node);
    let mut cursor = shared.state.lock().await.events.clone();
    let mut rows = ContainerRows::new();
    let mut unparsed = UnparsedRows::new(NAME);
    let (mut started, mut destroyed) = (Vec::new(), Vec::new());
    for line in read {
        if line.bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        Stats::add(&shared.stats.read, 1);
        let parsed = if line.truncated {
            Err("event longer than max_line_bytes".to_string())
        } else {
            events::parse_event(&line.bytes)
        };
        let e = match parsed {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(error) => {
                Stats::add(&shared.stats.parse_errors, 1);
                unparsed.push_from(&node, &line.bytes, &[("docker", "events")], &error, line.truncated, now_micros());
                continue;
            }
        };
        if !cursor.advance(&e) || shared.config.skip_actions.contains(&e.action) {
            continue;
        }
        if !shared.config.selection.selects(&e.name, &e.attrs) {
            continue;
        }
        rows.push(&node, &e);
        match e.action.as_str() {
            "start" => started.push(e.id.clone()),
            "destroy" => destroyed.push(e.id.clone()),
            _ => {}
        }
    }
    let enc = |r: Result<RecordBatch, arrow_schema::ArrowError>| {
        r.map_err(|e| SourceError::Encode { source_name: NAME, error: e.to_string() })
    };
    let batches = vec![(Table::Containers, enc(rows.finish())?), (Table::Logs, enc(unparsed.finish())?)];
    let spooled = shared
        .commit(
            batches,
            |s| {
                s.events = cursor;
                for id in &destroyed {
                    s.logs.remove(id);
                }
            },
            cancel,
        )
        .await?;
    if spooled && shared.config.logs {
        for id in started {
            let _ = tx.send(id).await;
        }
    }
    Ok(spooled)
}

/// Samples stats every `every` until `cancel`.
async fn sample_stats(shared: Arc<Shared>, every: Duration, cancel: CancellationToken) -> Result<(), SourceError> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let list: Vec<ListedJson> = match shared.docker.json("/containers/json").await {
            Ok(l) => l,
            Err(e) => {
                shared.error(&e);
                continue;
            }
        };
        let mut each = JoinSet::new();
        for c in list {
            if !shared.config.selection.selects(c.name(), c.labels.as_ref().unwrap_or(&Labels::new())) {
                continue;
            }
            let shared = Arc::clone(&shared);
            each.spawn(async move {
                let stats = shared
                    .docker
                    .json::<stats::StatsJson>(&format!("/containers/{}/stats?stream=false", url_escape(&c.id)))
                    .await;
                (shared.container(&c.id).await, stats)
            });
        }
        let ts = now_micros();
        let mut metrics = MetricsBuilder::new();
        while let Some(done) = each.join_next().await {
            let Ok((inspect, sample)) = done else { continue };
            let c = match inspect {
                Ok(c) => c,
                // Gone between the list and the inspect.
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    shared.error(&e);
                    continue;
                }
            };
            let mut labels = vec![("container", c.name.as_str()), ("image", c.image.as_str())];
            for (key, label) in [("compose_project", COMPOSE_PROJECT), ("compose_service", COMPOSE_SERVICE)] {
                if let Some(v) = c.labels.get(label) {
                    labels.push((key, v.as_str()));
                }
            }
            metrics.push(ts, &shared.ctx.node, "container_restart_count", c.restart_count as f64, &labels);
            match sample {
                Ok(s) => {
                    for (name, value) in stats::samples(&s) {
                        metrics.push(ts, &shared.ctx.node, name, value, &labels);
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => shared.error(&e),
            }
        }
        if !metrics.is_empty() {
            shared.ctx.emit_droppable(NAME, Table::Metrics, &metrics.finish()).await?;
        }
    }
}

#[cfg(test)]
mod tests;
