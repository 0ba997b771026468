//! The late-run watch: one task that knows every `[[jobs]]` schedule and writes a `late`
//! row when a due run did not come (see the module docs of [`super`] for why here).
//!
//! A due time `t` of a job is covered by any start, success or fail of the job at or after
//! `t - early`, where `early` is the smaller of the grace and half the time since the
//! previous due time (a run may begin a little before its time — a clock a few seconds
//! off, a timer with jitter — but not so early that it is the previous run). At `t +
//! grace` the watch looks: nothing since then writes `late` (`scheduled = t`) for the job
//! on its `host` (else the host of its latest run, else `lake`).
//!
//! Due times are counted from the lake's start minus the grace: a run due while the lake
//! was down is not judged (it could not have reported), one whose grace runs past the
//! start is. After a long pause (the machine suspended), only the latest due time whose
//! grace has passed is judged, once.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use duckdb::types::Value;
use tokio_util::sync::CancellationToken;

use lake_format::rows::now_micros;

use super::{Job, Jobs, LAKE_HOST};

/// Longest sleep between two looks at the clock (a clock changed under the lake).
const MAX_SLEEP: Duration = Duration::from_secs(300);
/// Wait after a look that failed (the engine busy or broken) before trying again.
const RETRY: Duration = Duration::from_secs(5);
/// Most due times skipped over in one go (a per-second schedule after days asleep).
const MAX_SKIP: usize = 100_000;

/// Where the watch stands for one job.
#[derive(Debug, Clone, Copy)]
pub(super) struct Due {
    /// The next due time to judge.
    pub(super) next: Option<i64>,
    /// The due time before it, once known.
    pub(super) prev: Option<i64>,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Watches every job until `cancel`; `started` is the lake's start (µs).
pub async fn run(jobs: Arc<Jobs>, started: i64, cancel: CancellationToken) {
    let config = Arc::clone(&jobs.config);
    if config.jobs.is_empty() {
        return;
    }
    let mut dues: Vec<Due> = config
        .jobs
        .iter()
        .map(|j| Due { next: j.schedule.next_after(started - micros(j.grace)), prev: None })
        .collect();
    loop {
        let now = now_micros();
        let earliest = dues
            .iter()
            .zip(&config.jobs)
            .enumerate()
            .filter_map(|(i, (d, j))| Some((i, d.next?.saturating_add(micros(j.grace)))))
            .min_by_key(|(_, deadline)| *deadline);
        let Some((i, deadline)) = earliest else {
            tracing::info!("no job has a due time left; the late-run watch stops");
            return;
        };
        if deadline > now {
            let wait = Duration::from_micros(u64::try_from(deadline - now).unwrap_or(0)).min(MAX_SLEEP);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => continue,
            }
        }
        let job = &config.jobs[i];
        let (due, prev, next) = latest_passed(job, dues[i], now);
        match judge(&jobs, job, due, prev).await {
            Ok(()) => dues[i] = Due { next, prev: Some(due) },
            Err(e) => {
                tracing::warn!(job = %job.name, error = %e, "could not check whether the job ran; trying again");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

/// The latest due time whose grace has passed by `now` (starting from `d.next`, which
/// has), the one before it, and the next one after it.
pub(super) fn latest_passed(job: &Job, d: Due, now: i64) -> (i64, Option<i64>, Option<i64>) {
    let grace = micros(job.grace);
    let mut due = d.next.unwrap_or(now);
    let mut prev = d.prev;
    for _ in 0..MAX_SKIP {
        match job.schedule.next_after(due) {
            Some(n) if n.saturating_add(grace) <= now => {
                prev = Some(due);
                due = n;
            }
            next => return (due, prev, next),
        }
    }
    // Still behind after that many: judge this one, resume from the present.
    (due, prev, job.schedule.next_after(now - grace))
}

/// Writes `late` for `due` unless the job reported since `due - early`.
async fn judge(jobs: &Jobs, job: &Job, due: i64, prev: Option<i64>) -> Result<(), String> {
    let grace = micros(job.grace);
    let early = prev.map_or(grace, |p| grace.min((due - p) / 2));
    let sql = "SELECT count(*) FILTER (WHERE epoch_us(ts) >= ?) AS since, arg_max(host, ts) AS host FROM jobs \
               WHERE job = ? AND event IN ('start', 'success', 'fail') AND ts > now() - INTERVAL 40 DAY";
    let params = vec![Value::BigInt(due - early), Value::Text(job.name.clone())];
    let result = jobs.engine.query_params(sql.to_string(), params).await.map_err(|e| e.to_string())?;
    let batch = result.batches.iter().find(|b| b.num_rows() > 0).ok_or("the look-up returned no row")?;
    let since =
        batch.column(0).as_primitive_opt::<arrow_array::types::Int64Type>().ok_or("count(*) is not a BIGINT")?.value(0);
    if since > 0 {
        return Ok(());
    }
    let hosts = batch.column(1).as_string_opt::<i32>().ok_or("host is not text")?;
    let last_host = (!arrow_array::Array::is_null(hosts, 0)).then(|| hosts.value(0).to_string());
    let host = job.host.clone().or(last_host).unwrap_or_else(|| LAKE_HOST.to_string());
    tracing::warn!(job = %job.name, host = %host, due = %lake_query::alerts::format_time(due), "job is late: no start or end since its due time");
    jobs.record_late(job, &host, due).await.map_err(|e| e.message().to_string())
}
