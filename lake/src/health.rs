//! Whether the lake works: what `/health` answers (200, or 503 with the reasons) and what
//! the heartbeat ([`crate::heartbeat`]) tells a monitor outside the lake.
//!
//! Four checks, each cheap enough to poll:
//! - **engine**: a trivial query through the query engine's public API, answered within
//!   [`ENGINE_TIMEOUT`]; its answer is reused for [`ENGINE_CACHE`], and a probe still
//!   running is waited on rather than started again, so a hung engine costs one thread;
//! - **wal**: the last append or fsync failed (until one succeeds), or damaged records
//!   were skipped when the WAL was opened (until the next start: the operator reads the
//!   log, then restarts);
//! - **flusher**: [`FLUSH_FAILURES`] flushes failed in a row, or a buffered row has
//!   waited longer than 3 × `flush_interval` + 1 minute (a flusher that stopped);
//! - **alerts**: the alert loop's last round had failing rules, or no round completed
//!   for 3 × its interval, at least 15 s (a loop that stopped or hangs).
//!
//! The alert loop reports its rounds here ([`Rounds`]); the WAL and the flusher keep
//! their state in their own stats.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use lake_query::engine::Engine;

use crate::ingest::wal::WalStats;
use crate::ingest::writer::{Buffers, WriterStats};

/// How long the engine probe may take before the engine counts as failing.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an engine probe's answer is reused.
pub const ENGINE_CACHE: Duration = Duration::from_secs(5);
/// Failed flushes in a row that make the flusher failing.
pub const FLUSH_FAILURES: u64 = 3;
/// Rounds the alert loop may miss before it counts as stalled...
pub const MISSED_ROUNDS: u32 = 3;
/// ...and the least time that takes, so a loop of 1 s rounds that waits on a slow fsync
/// for a few seconds is not called stuck.
pub const MIN_STALL: Duration = Duration::from_secs(15);

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Whether the component works.
    pub ok: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Check {
    fn of(failure: Option<String>) -> Check {
        Check { ok: failure.is_none(), reason: failure }
    }
}

/// Every check, as `/health` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checks {
    /// The query engine.
    pub engine: Check,
    /// The write-ahead log.
    pub wal: Check,
    /// The flusher (buffers → Parquet).
    pub flusher: Check,
    /// The alert loop.
    pub alerts: Check,
}

impl Checks {
    /// Whether every check passes.
    pub fn ok(&self) -> bool {
        self.reasons().is_empty()
    }

    /// `<check>: <reason>` of every failing check.
    pub fn reasons(&self) -> Vec<String> {
        [("engine", &self.engine), ("wal", &self.wal), ("flusher", &self.flusher), ("alerts", &self.alerts)]
            .into_iter()
            .filter_map(|(name, c)| c.reason.as_ref().map(|r| format!("{name}: {r}")))
            .collect()
    }
}

/// The lake's components, checked on demand.
#[derive(Debug)]
pub struct Health {
    wal: Arc<WalStats>,
    writer: Arc<WriterStats>,
    buffers: Arc<Buffers>,
    flush_interval: Duration,
    engine: EngineProbe,
    /// The alert loop's rounds.
    pub rounds: Rounds,
    /// The heartbeat's counters (zero without `[heartbeat]`).
    pub heartbeat: Arc<crate::heartbeat::HeartbeatStats>,
}

impl Health {
    /// Checks over these components (the alert loop tells [`Health::rounds`] its interval).
    pub fn new(
        wal: Arc<WalStats>,
        writer: Arc<WriterStats>,
        buffers: Arc<Buffers>,
        flush_interval: Duration,
        engine: Arc<Engine>,
    ) -> Health {
        Health {
            wal,
            writer,
            buffers,
            flush_interval,
            engine: EngineProbe::new(engine),
            rounds: Rounds::new(Duration::from_secs(30)),
            heartbeat: Arc::default(),
        }
    }

    /// Every check.
    pub async fn check(&self) -> Checks {
        Checks {
            engine: Check::of(self.engine.check().await.err()),
            wal: Check::of(self.wal_failure()),
            flusher: Check::of(self.flusher_failure()),
            alerts: Check::of(self.rounds.failure()),
        }
    }

    /// `<check>: <reason>` of the failing checks other than the alert loop's (which
    /// reports its rounds itself): what the heartbeat adds to a round's own failures.
    pub async fn component_failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = self.engine.check().await {
            out.push(format!("engine: {e}"));
        }
        out.extend(self.wal_failure().map(|r| format!("wal: {r}")));
        out.extend(self.flusher_failure().map(|r| format!("flusher: {r}")));
        out
    }

    fn wal_failure(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(e) = self.wal.failing() {
            parts.push(format!("the last append failed: {e}"));
        }
        let salvaged = self.wal.salvaged();
        if !salvaged.is_empty() {
            parts.push(format!(
                "damaged records were skipped when the lake started (shown until the next start): {}",
                salvaged.join("; ")
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    fn flusher_failure(&self) -> Option<String> {
        let failures = self.writer.consecutive_failures.load(Ordering::Relaxed);
        if failures >= FLUSH_FAILURES {
            let last = self.writer.last_error().unwrap_or_else(|| "see the log".into());
            return Some(format!("{failures} flushes in a row failed (rows are kept and retried): {last}"));
        }
        let limit = self.flush_interval * 3 + Duration::from_secs(60);
        match self.buffers.usage().2 {
            Some(age) if age > limit => Some(format!(
                "the oldest buffered row has waited {}s for Parquet (flush_interval {}s): the flusher is not keeping up",
                age.as_secs(),
                self.flush_interval.as_secs()
            )),
            _ => None,
        }
    }
}

/// The cached engine probe.
#[derive(Debug)]
struct EngineProbe {
    engine: Arc<Engine>,
    state: tokio::sync::Mutex<ProbeState>,
}

#[derive(Debug, Default)]
struct ProbeState {
    last: Option<(Instant, Result<(), String>)>,
    /// A probe that did not answer in time (it may still, later).
    running: Option<(Instant, tokio::task::JoinHandle<Result<(), String>>)>,
}

impl EngineProbe {
    fn new(engine: Arc<Engine>) -> EngineProbe {
        EngineProbe { engine, state: tokio::sync::Mutex::default() }
    }

    async fn check(&self) -> Result<(), String> {
        let mut s = self.state.lock().await;
        if let Some((at, r)) = &s.last {
            if at.elapsed() < ENGINE_CACHE {
                return r.clone();
            }
        }
        let (started, mut task) = match s.running.take() {
            Some(r) => r,
            None => {
                let engine = Arc::clone(&self.engine);
                let task = tokio::spawn(async move {
                    let r = engine.query("SELECT 1 AS ok".to_string()).await;
                    r.map(|_| ()).map_err(|e| format!("a trivial query failed: {e}"))
                });
                (Instant::now(), task)
            }
        };
        let wait = ENGINE_TIMEOUT.saturating_sub(started.elapsed());
        let result = match tokio::time::timeout(wait, &mut task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!("the probe task failed: {e}")),
            Err(_) => {
                let r = Err(format!("a trivial query has not answered for {}s", started.elapsed().as_secs()));
                s.running = Some((started, task));
                r
            }
        };
        s.last = Some((Instant::now(), result.clone()));
        result
    }
}

/// The alert loop's rounds: when the last one ended and what failed in it.
#[derive(Debug)]
pub struct Rounds {
    inner: Mutex<RoundsInner>,
}

#[derive(Debug)]
struct RoundsInner {
    interval: Duration,
    since: Instant,
    last: Option<(Instant, Vec<String>)>,
}

impl Rounds {
    fn new(interval: Duration) -> Rounds {
        Rounds { inner: Mutex::new(RoundsInner { interval, since: Instant::now(), last: None }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RoundsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The loop starts: rounds of `interval` are expected from now on.
    pub fn start(&self, interval: Duration) {
        let mut g = self.lock();
        g.interval = interval;
        g.since = Instant::now();
    }

    /// A round ended with these failures (none: it succeeded).
    pub fn record(&self, failures: Vec<String>) {
        self.lock().last = Some((Instant::now(), failures));
    }

    /// Why the alert loop is failing, if it is.
    pub fn failure(&self) -> Option<String> {
        let g = self.lock();
        let (at, failures) = match &g.last {
            Some((at, f)) => (*at, f.as_slice()),
            None => (g.since, &[][..]),
        };
        let limit = (g.interval * MISSED_ROUNDS).max(MIN_STALL);
        if at.elapsed() > limit {
            return Some(format!(
                "no evaluation round completed for {}s (a round is {}s): the alert loop is stuck or gone",
                at.elapsed().as_secs(),
                g.interval.as_secs_f64()
            ));
        }
        (!failures.is_empty()).then(|| format!("the last round failed: {}", failures.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_fail_on_failures_and_on_silence() {
        let r = Rounds::new(Duration::from_millis(20));
        assert_eq!(r.failure(), None, "a loop that just started is fine");
        r.record(vec!["rule a: boom".into()]);
        assert_eq!(r.failure().as_deref(), Some("the last round failed: rule a: boom"));
        r.record(Vec::new());
        assert_eq!(r.failure(), None);
        // A round missed for longer than the floor: stuck.
        r.lock().last = Some((Instant::now() - MIN_STALL - Duration::from_secs(1), Vec::new()));
        let f = r.failure().unwrap();
        assert!(f.starts_with("no evaluation round completed for"), "{f}");
    }

    #[test]
    fn reasons_name_their_check() {
        let ok = Check::of(None);
        let c = Checks {
            engine: ok.clone(),
            wal: Check::of(Some("disk".into())),
            flusher: ok.clone(),
            alerts: Check::of(Some("x".into())),
        };
        assert!(!c.ok());
        assert_eq!(c.reasons(), ["wal: disk", "alerts: x"]);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["engine"], serde_json::json!({"ok": true}));
        assert_eq!(json["wal"], serde_json::json!({"ok": false, "reason": "disk"}));
    }
}
