//! Cron schedules of `lake serve` (the nightly archive; compaction may share it).
//!
//! A [`CronSchedule`] is parsed once, when the configuration is loaded, so a bad
//! expression stops the lake at start with a message naming the key rather than at
//! 02:00. [`run`] sleeps until the next fire time inside a `select!` on the cancel token,
//! runs the job to completion (awaited in the loop itself, so runs never overlap; a run
//! longer than the interval simply skips the fire times it overran, which are counted),
//! then computes the next fire time from the clock again.
//!
//! Expressions have six fields, `sec min hour day-of-month month day-of-week` (an
//! optional seventh is the year), in UTC: `0 0 2 * * *` is 02:00:00 UTC every day.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

/// A parsed cron expression, evaluated in UTC.
#[derive(Clone)]
pub struct CronSchedule {
    text: String,
    schedule: cron::Schedule,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.text)
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A cron expression that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid cron expression {text:?}: {reason} (six fields, `sec min hour day month weekday`, in UTC; e.g. \"0 0 2 * * *\" is 02:00 every day)")]
pub struct CronError {
    text: String,
    reason: String,
}

impl FromStr for CronSchedule {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim().to_string();
        let fields = text.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(CronError { text, reason: format!("{fields} fields") });
        }
        let schedule =
            cron::Schedule::from_str(&text).map_err(|e| CronError { text: text.clone(), reason: e.to_string() })?;
        if schedule.upcoming(Utc).next().is_none() {
            return Err(CronError { text, reason: "never fires".into() });
        }
        Ok(CronSchedule { text, schedule })
    }
}

impl CronSchedule {
    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&after).next()
    }
}

/// Counters of one scheduled job.
#[derive(Debug, Default)]
pub struct ScheduleStats {
    /// Runs started.
    pub runs: std::sync::atomic::AtomicU64,
    /// Runs that returned an error.
    pub failures: std::sync::atomic::AtomicU64,
    /// Fire times skipped because the previous run was still going.
    pub skipped: std::sync::atomic::AtomicU64,
}

/// Runs `job` at every fire time of `schedule` until `cancel` fires. The job receives a
/// child token and should stop at its next safe point when it fires.
pub async fn run<F, Fut>(
    name: &'static str,
    schedule: CronSchedule,
    stats: std::sync::Arc<ScheduleStats>,
    cancel: CancellationToken,
    mut job: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    use std::sync::atomic::Ordering;
    loop {
        let now = Utc::now();
        let Some(next) = schedule.next_after(now) else {
            tracing::warn!(job = name, schedule = %schedule, "schedule has no further fire time; stopping it");
            return;
        };
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        tracing::debug!(job = name, next = %next, "next scheduled run");
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        stats.runs.fetch_add(1, Ordering::Relaxed);
        tracing::info!(job = name, "scheduled run starting");
        match job(cancel.child_token()).await {
            Ok(()) => tracing::info!(job = name, "scheduled run done"),
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(job = name, error = format!("{e:#}"), "scheduled run failed");
            }
        }
        let missed = fires_between(&schedule, next, Utc::now());
        if missed > 0 {
            stats.skipped.fetch_add(missed, Ordering::Relaxed);
            tracing::warn!(job = name, missed, "the run outlasted later fire times; they were skipped");
        }
    }
}

/// Fire times in `(from, to]`, counted up to a bound.
fn fires_between(schedule: &CronSchedule, from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    schedule.schedule.after(&from).take_while(|t| *t <= to).take(10_000).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    #[test]
    fn parses_the_default_and_rejects_nonsense() {
        let s: CronSchedule = "0 0 2 * * *".parse().unwrap();
        let at = DateTime::parse_from_rfc3339("2026-11-25T03:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(s.next_after(at).unwrap().to_rfc3339(), "2026-11-26T02:00:00+00:00");
        for bad in ["0 2 * * *", "0 0 25 * * *", "nightly", ""] {
            let e = bad.parse::<CronSchedule>().unwrap_err().to_string();
            assert!(e.contains("invalid cron expression"), "{bad}: {e}");
        }
    }

    #[test]
    fn counts_fires_missed_by_a_long_run() {
        let s: CronSchedule = "0 * * * * *".parse().unwrap();
        let from = DateTime::parse_from_rfc3339("2026-11-25T03:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(fires_between(&s, from, from + chrono::Duration::seconds(150)), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn runs_each_second_without_overlap_and_stops_on_cancel() {
        let s: CronSchedule = "* * * * * *".parse().unwrap();
        let stats = Arc::new(ScheduleStats::default());
        let cancel = CancellationToken::new();
        let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = Arc::clone(&running);
        let c = cancel.clone();
        let task = tokio::spawn(run("test", s, Arc::clone(&stats), cancel.clone(), move |_child| {
            let r = Arc::clone(&r);
            let c = c.clone();
            async move {
                assert!(!r.swap(true, Ordering::SeqCst), "overlapping runs");
                tokio::time::sleep(Duration::from_millis(50)).await;
                r.store(false, Ordering::SeqCst);
                c.cancel();
                Ok(())
            }
        }));
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
        assert_eq!(stats.runs.load(Ordering::Relaxed), 1);
    }
}
