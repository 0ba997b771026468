//! Jobs that must run (cron monitoring): what `/v1/jobs/<name>/start|success|fail`
//! accepts, the late runs the lake finds itself, and the lake's own archive run, as rows of
//! the `jobs` table; the built-in rules `job_late`, `job_failed` and `job_slow`
//! (`lake_query::alerts::builtin`) alert on them through the normal alert path.
//!
//! **Where the cron arithmetic lives: here, once.** The alert rules are SQL over tables,
//! and SQL cannot step through a cron expression in a time zone; so the [`watch`] task,
//! which knows every `[[jobs]]` schedule, writes the fact "this due run did not come" as a
//! `late` row (with the due time in `scheduled`) when a due time's grace has passed with no
//! start or end of the job since it. `job_late` then only asks "is the job's latest event
//! `late`?", and the operator's SQL sees the same history the alert did. Likewise the
//! job's `max_duration` travels in each row (`max_duration_ms`), so `job_slow` needs no
//! configuration of its own.
//!
//! **Pairing.** A start gets a `run_id` (the sender's, or one the lake makes up and
//! answers); an end with a `run_id` pairs with that start, an end without one with the most
//! recent start of the job on that host that has no end yet. The duration is the sender's
//! `duration_ms`, else the time since the paired start, else unknown (an end with no
//! start). Lookups read the `jobs` table through the engine, so pairing survives a restart.
//!
//! **Retries are idempotent on `run_id`.** A run starts once and ends once: a start or an
//! end for a `run_id` that already has one is answered again (`duplicate: true`, with what
//! was stored) and not stored twice. An end without a `run_id` cannot be told from a new
//! run's end once its start is closed, so a retried plain `curl …/success` may be stored
//! twice; `lake-collector run-job` always sends its run's id.
//!
//! Every write (and the lookups before it) holds one lock: the lake-assigned batch ids
//! `_jobs/<epoch>/<seq>` must reach the WAL in order, and a retry racing its original must
//! see it stored. Jobs report a few times a day each; this is not a hot path.

pub mod config;
#[cfg(test)]
mod tests;
pub mod watch;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::RecordBatch;
use bytes::Bytes;
use duckdb::types::Value;

use lake_format::rows::{now_micros, TableBuilder};
use lake_format::{wire, BatchId, Table};
use lake_query::Engine;

use crate::http::error::ApiError;
use crate::http::ingest::{self, Ingest};
use crate::ingest::state::Admission;
pub use config::{Job, JobsConfig};

/// Node name of the batch ids of `jobs` rows.
pub const ID_NODE: &str = "_jobs";
/// The host of the lake's own rows (as alert rows without a host label).
pub const LAKE_HOST: &str = "lake";
/// The job the nightly archive run records itself as.
pub const ARCHIVE_JOB: &str = "lake_archive";
/// Most output kept per event: its last 4 KiB.
pub const MAX_OUTPUT: usize = 4096;
/// How far back pairing looks for a run's start (a run longer than this has no duration).
const PAIR_DAYS: u32 = 31;

lake_format::metrics! {
    /// Counters of `/v1/jobs` and the late-run watch.
    pub struct JobsStats {
        /// job events stored (start, success, fail)
        pub events: Counter("lake_jobs_events_total"),
        /// job events acknowledged again without storing (a retried run_id)
        pub duplicates: Counter("lake_jobs_duplicates_total"),
        /// job events refused with a 4xx other than 401
        pub rejected: Counter("lake_jobs_rejected_total"),
        /// late runs found (due runs that did not come within their grace)
        pub late: Counter("lake_jobs_late_total"),
    }
}

/// What a run reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The run began.
    Start,
    /// The run ended well.
    Success,
    /// The run ended badly.
    Fail,
}

impl Event {
    /// Its name in URLs and in `jobs.event`.
    pub fn name(self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Success => "success",
            Event::Fail => "fail",
        }
    }

    /// The event a URL segment names.
    pub fn parse(s: &str) -> Option<Event> {
        [Event::Start, Event::Success, Event::Fail].into_iter().find(|e| e.name() == s)
    }
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct Report {
    /// A declared job.
    pub job: String,
    /// The node that ran it.
    pub host: String,
    /// What happened.
    pub event: Event,
    /// The run's id, when the sender gave one.
    pub run_id: Option<String>,
    /// The command's exit code.
    pub exit_code: Option<i64>,
    /// How long the run took, as the sender measured it.
    pub duration_ms: Option<f64>,
    /// The run's output (cut to its last [`MAX_OUTPUT`] bytes here).
    pub output: Option<String>,
    /// `http`, `run-job` or `lake`.
    pub source: String,
}

/// What was stored for an event (or found stored, for a retry).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recorded {
    /// The job.
    pub job: String,
    /// The event stored (for a duplicate: the one stored before).
    pub event: String,
    /// The host of the row.
    pub host: String,
    /// The run's id.
    pub run_id: String,
    /// The run's duration, when known.
    pub duration_ms: Option<f64>,
    /// Whether it had been stored before (nothing stored now).
    pub duplicate: bool,
}

/// One `jobs` row.
#[derive(Debug, Clone, Default)]
struct Row {
    ts: i64,
    host: String,
    job: String,
    event: String,
    run_id: Option<String>,
    exit_code: Option<i64>,
    duration_ms: Option<f64>,
    output: Option<String>,
    source: String,
    scheduled: Option<i64>,
    max_duration_ms: Option<i64>,
}

/// The jobs' recorder: rows into `jobs` through the ingest path, lookups through the engine.
#[derive(Debug)]
pub struct Jobs {
    /// `[[jobs]]`.
    pub config: Arc<JobsConfig>,
    ingest: Arc<Ingest>,
    engine: Arc<Engine>,
    epoch: u64,
    /// Last seq used; held across each lookup and store (see the module docs).
    seq: tokio::sync::Mutex<u64>,
}

impl Jobs {
    /// The recorder; build it after WAL replay so the epoch is above every one used.
    pub fn new(config: Arc<JobsConfig>, ingest: Arc<Ingest>, engine: Arc<Engine>) -> Jobs {
        let known = ingest.batches.marks().get(ID_NODE).and_then(|e| e.keys().next_back().copied()).unwrap_or(0);
        let epoch = u64::try_from(now_micros()).unwrap_or(0).max(known.saturating_add(1));
        Jobs { config, ingest, engine, epoch, seq: tokio::sync::Mutex::new(0) }
    }

    /// The ingest path the rows go through (and its body limits and budget).
    pub(crate) fn ingest(&self) -> &Arc<Ingest> {
        &self.ingest
    }

    /// The counters (kept with the other ingest counters, for `/metrics`).
    pub fn stats(&self) -> &JobsStats {
        &self.ingest.jobs
    }

    /// Pairs and stores one event (see the module docs); a retry of a stored one is
    /// answered as it was, not stored again.
    pub async fn record(&self, report: Report) -> Result<Recorded, ApiError> {
        let mut seq = self.seq.lock().await;
        let now = now_micros();
        let Report { job, host, event, run_id, exit_code, duration_ms, output, source } = report;
        let mut duration = duration_ms;
        let run_id = match (event, run_id) {
            (Event::Start, Some(id)) => {
                if let Some(found) = self.run(&job, &host, &id).await?.first() {
                    return Ok(self.duplicate(&job, &host, &id, found));
                }
                id
            }
            (Event::Start, None) => new_run_id(),
            (_, Some(id)) => {
                let rows = self.run(&job, &host, &id).await?;
                if let Some(end) = rows.iter().find(|r| r.event != "start") {
                    return Ok(self.duplicate(&job, &host, &id, end));
                }
                if let Some(start) = rows.iter().find(|r| r.event == "start") {
                    duration = duration.or(Some((now - start.ts) as f64 / 1000.0));
                }
                id
            }
            (_, None) => match self.open_start(&job, &host).await? {
                Some((id, started)) => {
                    duration = duration.or(Some((now - started) as f64 / 1000.0));
                    id
                }
                None => new_run_id(),
            },
        };
        let max_duration_ms = self.max_duration_ms(&job);
        let row = Row {
            ts: now,
            host: host.clone(),
            job: job.clone(),
            event: event.name().to_string(),
            run_id: Some(run_id.clone()),
            exit_code,
            duration_ms: if event == Event::Start { None } else { duration.map(|d| d.max(0.0)) },
            output: output.map(|o| tail(&o, MAX_OUTPUT).to_string()),
            source,
            scheduled: None,
            max_duration_ms,
        };
        let duration_ms = row.duration_ms;
        self.store(&mut seq, &[row]).await?;
        self.stats().events.add(1);
        Ok(Recorded { job, event: event.name().to_string(), host, run_id, duration_ms, duplicate: false })
    }

    /// Stores a `late` row for `job`'s run due at `scheduled` (the watch).
    async fn record_late(&self, job: &Job, host: &str, scheduled: i64) -> Result<(), ApiError> {
        let mut seq = self.seq.lock().await;
        let row = Row {
            ts: now_micros(),
            host: host.to_string(),
            job: job.name.clone(),
            event: "late".to_string(),
            source: LAKE_HOST.to_string(),
            scheduled: Some(scheduled),
            max_duration_ms: self.max_duration_ms(&job.name),
            ..Row::default()
        };
        self.store(&mut seq, &[row]).await?;
        self.stats().late.add(1);
        Ok(())
    }

    fn duplicate(&self, job: &str, host: &str, run_id: &str, found: &Found) -> Recorded {
        self.stats().duplicates.add(1);
        Recorded {
            job: job.to_string(),
            event: found.event.clone(),
            host: host.to_string(),
            run_id: run_id.to_string(),
            duration_ms: found.duration_ms,
            duplicate: true,
        }
    }

    fn max_duration_ms(&self, job: &str) -> Option<i64> {
        self.config.get(job)?.max_duration.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// The rows of one run, ends first.
    async fn run(&self, job: &str, host: &str, run_id: &str) -> Result<Vec<Found>, ApiError> {
        let sql = format!(
            "SELECT event, epoch_us(ts) AS ts, duration_ms FROM jobs \
             WHERE job = ? AND host = ? AND run_id = ? AND event <> 'late' AND ts > now() - INTERVAL {PAIR_DAYS} DAY \
             ORDER BY event = 'start', ts"
        );
        let params = vec![Value::Text(job.into()), Value::Text(host.into()), Value::Text(run_id.into())];
        self.found(sql, params).await
    }

    /// The latest start of `job` on `host` that has no end: its run id and time.
    async fn open_start(&self, job: &str, host: &str) -> Result<Option<(String, i64)>, ApiError> {
        let sql = format!(
            "SELECT run_id AS event, epoch_us(ts) AS ts, NULL::DOUBLE AS duration_ms FROM jobs s \
             WHERE job = ? AND host = ? AND event = 'start' AND run_id IS NOT NULL \
               AND ts > now() - INTERVAL {PAIR_DAYS} DAY \
               AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.job = s.job AND e.host = s.host AND e.run_id = s.run_id \
                               AND e.event IN ('success', 'fail')) \
             ORDER BY ts DESC LIMIT 1"
        );
        let params = vec![Value::Text(job.into()), Value::Text(host.into())];
        Ok(self.found(sql, params).await?.into_iter().next().map(|f| (f.event, f.ts)))
    }

    async fn found(&self, sql: String, params: Vec<Value>) -> Result<Vec<Found>, ApiError> {
        let result = self.engine.query_params(sql, params).await.map_err(ApiError::internal_query)?;
        let mut out = Vec::new();
        for b in &result.batches {
            out.extend(found_rows(b).map_err(ApiError::internal)?);
        }
        Ok(out)
    }

    /// Stores rows under the next batch id, `seq` held.
    async fn store(&self, seq: &mut u64, rows: &[Row]) -> Result<(), ApiError> {
        *seq += 1;
        let id = BatchId { node: ID_NODE.to_string(), epoch: self.epoch, seq: *seq };
        let body = encode(rows).map_err(|e| ApiError::internal(format!("encoding jobs rows: {e}")))?;
        match self.ingest.batches.admit(&id) {
            Admission::New => {}
            other => return Err(ApiError::internal(format!("lake-assigned batch id {id} is not new ({other:?})"))),
        }
        // `ingest::store` releases the admission itself when it fails.
        ingest::store(&self.ingest, Table::Jobs, &id, body).await.map(|_| ())
    }

    /// Runs `work` as a run of the job `lake_archive` on the lake's own host: start, then
    /// success or fail with its error as the output. Recording is best effort: the archive
    /// runs whether or not its rows could be stored (a failure to record is logged).
    pub async fn run_own<F, T>(&self, job: &str, work: F) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = anyhow::Result<T>>,
    {
        let report = |event, run_id, output| Report {
            job: job.to_string(),
            host: LAKE_HOST.to_string(),
            event,
            run_id,
            exit_code: None,
            duration_ms: None,
            output,
            source: LAKE_HOST.to_string(),
        };
        let run_id = match self.record(report(Event::Start, None, None)).await {
            Ok(r) => Some(r.run_id),
            Err(e) => {
                tracing::warn!(job, error = e.message(), "could not record the start of the lake's own job");
                None
            }
        };
        let result = work.await;
        let (event, output) = match &result {
            Ok(_) => (Event::Success, None),
            Err(e) => (Event::Fail, Some(format!("{e:#}"))),
        };
        if let Err(e) = self.record(report(event, run_id.or_else(|| Some(new_run_id())), output)).await {
            tracing::warn!(job, error = e.message(), "could not record the end of the lake's own job");
        }
        result
    }
}

/// A row found by a lookup.
#[derive(Debug, Clone)]
struct Found {
    event: String,
    ts: i64,
    duration_ms: Option<f64>,
}

fn found_rows(b: &RecordBatch) -> Result<Vec<Found>, String> {
    let event = b.column(0).as_string_opt::<i32>().ok_or("event is not text")?;
    let ts = b.column(1).as_primitive_opt::<arrow_array::types::Int64Type>().ok_or("ts is not an integer")?;
    let d = b.column(2).as_primitive_opt::<arrow_array::types::Float64Type>().ok_or("duration is not a double")?;
    Ok((0..b.num_rows())
        .map(|i| Found {
            event: event.value(i).to_string(),
            ts: ts.value(i),
            duration_ms: (!arrow_array::Array::is_null(d, i)).then(|| d.value(i)),
        })
        .collect())
}

/// A new run id: 16 hex digits.
pub fn new_run_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The last `max` bytes of `text`, starting on a character boundary.
pub fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The IPC body of rows.
fn encode(rows: &[Row]) -> Result<Bytes, String> {
    let mut b = TableBuilder::new(Table::Jobs);
    let col = |b: &TableBuilder, n: &str| b.column(n).ok_or_else(|| format!("jobs has no column {n}"));
    let (ts, host, job, event, run_id, exit_code, duration, output, source, scheduled, max_duration) = (
        col(&b, "ts")?,
        col(&b, "host")?,
        col(&b, "job")?,
        col(&b, "event")?,
        col(&b, "run_id")?,
        col(&b, "exit_code")?,
        col(&b, "duration_ms")?,
        col(&b, "output")?,
        col(&b, "source")?,
        col(&b, "scheduled")?,
        col(&b, "max_duration_ms")?,
    );
    for r in rows {
        b.ts(ts, r.ts);
        b.text(host, Some(&r.host));
        b.text(job, Some(&r.job));
        b.text(event, Some(&r.event));
        b.text(run_id, r.run_id.as_deref());
        b.int(exit_code, r.exit_code);
        b.float(duration, r.duration_ms);
        b.text(output, r.output.as_deref());
        b.text(source, Some(&r.source));
        // Left unset, `scheduled` is null (end_row).
        if let Some(t) = r.scheduled {
            b.ts(scheduled, t);
        }
        b.int(max_duration, r.max_duration_ms);
        b.end_row();
    }
    let batch = b.finish().map_err(|e| e.to_string())?;
    wire::encode(&batch.schema(), &[batch]).map(Bytes::from).map_err(|e| e.to_string())
}
