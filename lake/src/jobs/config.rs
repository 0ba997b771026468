//! `[[jobs]]` of lake.toml: the jobs the lake watches, validated at load so a bad cron
//! expression or time zone stops the lake at start with the job and the key named.
//!
//! ```toml
//! [[jobs]]
//! name = "pg_dump"              # letters, digits, _ - . (at most 64)
//! schedule = "0 30 3 * * *"     # cron with seconds: sec min hour day month weekday
//! grace = "30m"                 # how long after a due time a start or end may come (default 30m)
//! timezone = "Europe/Paris"     # the schedule's time zone (default UTC)
//! host = "db-1"                 # the node that runs it (default: any node)
//! max_duration = "1h"           # job_slow fires past it (default: 3x the usual run)
//! ```

use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use lake_format::units::Dur;
use lake_format::wire::validate_node_name;

use crate::maintenance::scheduler::CronSchedule;

/// Default `grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30 * 60);
/// Longest job name.
pub const MAX_NAME: usize = 64;

/// One `[[jobs]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    name: String,
    schedule: String,
    #[serde(default)]
    grace: Option<Dur>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    max_duration: Option<Dur>,
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its name, as in `/v1/jobs/<name>/…` and the `jobs.job` column.
    pub name: String,
    /// When it is due.
    pub schedule: JobSchedule,
    /// How long after a due time its start (or end) may come before it is late.
    pub grace: Duration,
    /// The node that runs it; `None`: any node may report it.
    pub host: Option<String>,
    /// Longer runs are slow (`job_slow`); `None`: compared with its usual runs.
    pub max_duration: Option<Duration>,
}

/// Every `[[jobs]]` entry.
#[derive(Debug, Clone, Default)]
pub struct JobsConfig {
    /// In file order.
    pub jobs: Vec<Job>,
}

impl JobsConfig {
    /// The job declared as `name`.
    pub fn get(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// Validates the entries; errors name the entry (`jobs[0] (pg_dump).schedule`).
    pub fn from_files(files: Vec<JobFile>) -> anyhow::Result<JobsConfig> {
        let mut jobs: Vec<Job> = Vec::with_capacity(files.len());
        for (i, f) in files.into_iter().enumerate() {
            check_name(&f.name).map_err(|e| anyhow::anyhow!("jobs[{i}].name = {:?}: {e}", f.name))?;
            let at = format!("jobs[{i}] ({})", f.name);
            if jobs.iter().any(|j| j.name == f.name) {
                bail!("{at}: another [[jobs]] entry has this name");
            }
            let tz = match &f.timezone {
                None => None,
                Some(name) => Some(jiff::tz::TimeZone::get(name).map_err(|e| {
                    anyhow::anyhow!(
                        "{at}.timezone = {name:?} is not a time zone this machine knows ({e}); use an IANA name such as \"Europe/Paris\", or leave it out for UTC"
                    )
                })?),
            };
            let cron: CronSchedule = f.schedule.parse().with_context(|| format!("{at}.schedule"))?;
            let schedule = JobSchedule { cron, tz, tz_name: f.timezone.clone() };
            if schedule.next_after(lake_format::rows::now_micros()).is_none() {
                bail!("{at}.schedule = {:?} never fires again", f.schedule);
            }
            let grace = f.grace.map_or(DEFAULT_GRACE, |d| d.0);
            if grace < Duration::from_secs(1) {
                bail!("{at}.grace = {:?} must be at least 1s", humantime::format_duration(grace).to_string());
            }
            if let Some(h) = &f.host {
                validate_node_name(h).with_context(|| format!("{at}.host = {h:?}"))?;
            }
            let max_duration = f.max_duration.map(|d| d.0);
            if max_duration.is_some_and(|d| d < Duration::from_millis(1)) {
                bail!("{at}.max_duration must be at least 1ms");
            }
            jobs.push(Job { name: f.name, schedule, grace, host: f.host, max_duration });
        }
        Ok(JobsConfig { jobs })
    }
}

/// Whether `name` may name a job: 1 to [`MAX_NAME`] ASCII letters, digits, `_`, `-` or `.`
/// (it goes in a URL path and in alert labels as it is).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a job name has 1 to {MAX_NAME} characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(format!("{c:?} is not allowed in a job name (ASCII letters, digits, _, - and . only)"));
    }
    Ok(())
}

/// A job's cron schedule in its time zone.
#[derive(Debug, Clone)]
pub struct JobSchedule {
    cron: CronSchedule,
    tz: Option<jiff::tz::TimeZone>,
    tz_name: Option<String>,
}

impl std::fmt::Display for JobSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.cron, self.tz_name.as_deref().unwrap_or("UTC"))
    }
}

impl JobSchedule {
    /// The first due time strictly after `after` (µs since the epoch, both).
    ///
    /// In a time zone, the cron fields are wall-clock times there: the expression is run
    /// over the zone's civil time (as if it were UTC) and each fire time is mapped back to
    /// an instant — a time skipped by a DST change fires just after it, a time repeated
    /// fires at its first occurrence (jiff's "compatible" rule, as cron daemons do).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let utc = |us: i64| DateTime::<Utc>::from_timestamp_micros(us);
        let Some(tz) = &self.tz else {
            return self.cron.next_after(utc(after)?).map(|t| t.timestamp_micros());
        };
        let utc_tz = jiff::tz::TimeZone::UTC;
        let civil = tz.to_datetime(jiff::Timestamp::from_microsecond(after).ok()?);
        // The civil time, read as UTC, steps through the expression; each candidate maps
        // back through the zone. A repeated hour can map a candidate before `after`.
        let mut cursor = utc(utc_tz.to_ambiguous_timestamp(civil).compatible().ok()?.as_microsecond())?;
        for _ in 0..8 {
            let next = self.cron.next_after(cursor)?;
            let wall = utc_tz.to_datetime(jiff::Timestamp::from_microsecond(next.timestamp_micros()).ok()?);
            let instant = tz.to_ambiguous_timestamp(wall).compatible().ok()?.as_microsecond();
            if instant > after {
                return Some(instant);
            }
            cursor = next;
        }
        None
    }
}
