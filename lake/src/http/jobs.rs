//! `/v1/jobs/<name>/start`, `/success`, `/fail`: a declared job's run reports itself
//! (cron monitoring, [`crate::jobs`]). `POST` or `GET`, so `curl -fsS <url>` at the end of
//! a crontab line is enough, as with healthchecks.io.
//!
//! **Auth.** The node's ingest token, as `Authorization: Bearer <token>` or as the password
//! of HTTP basic auth (`https://node:<token>@lake/v1/jobs/…`), as Loki's push accepts it;
//! the node is the run's host. A job with a `host` in `[[jobs]]` takes reports from that
//! node only (or from a node whose `[[nodes]] hosts` lists it): 403 otherwise.
//!
//! **Body** (optional, at most [`MAX_BODY`]): `Content-Type: application/json`, an object
//! with any of `run_id` (1 to 64 of `A-Z a-z 0-9 . _ : -`), `exit_code` (integer),
//! `duration_ms` (number), `output` (text) and `source` (who sends it, default `http`); or
//! any other body, kept as the output. Output is stored as its last 4 KiB, invalid UTF-8
//! replaced. `run_id`, `exit_code` and `duration_ms` may also be query parameters
//! (`?run_id=…&exit_code=1`), for a `GET`.
//!
//! **Answers.** 200 with what was stored: `{"job", "event", "host", "run_id",
//! "duration_ms", "duplicate"}` (a start's `run_id` is the one to send with its end;
//! `duplicate: true` when this run had already started or ended: nothing stored again).
//! 401 without a node's ingest token; 400 for a name that cannot be a job's, a bad field;
//! 404 for an event other than start, success and fail, and for a job not declared in
//! `[[jobs]]` (named, with the fix); 403 for another host's job; 413 past [`MAX_BODY`];
//! 503 (`Retry-After`) when the ingest memory budget or buffer is full; 507 when the disk
//! is.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::ingest;
use crate::jobs::{config, Event, Jobs, Recorded, Report, LAKE_HOST, MAX_OUTPUT};

/// Largest body: a report with its output's tail fits many times over.
pub const MAX_BODY: usize = 64 << 10;
/// Longest `run_id`.
pub const MAX_RUN_ID: usize = 64;

/// Query parameters of a report.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    run_id: Option<String>,
    exit_code: Option<i64>,
    duration_ms: Option<f64>,
}

/// A JSON body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonReport {
    run_id: Option<String>,
    exit_code: Option<i64>,
    duration_ms: Option<f64>,
    output: Option<String>,
    source: Option<String>,
}

/// `GET|POST /v1/jobs/{name}/{event}`.
pub async fn report(
    State(jobs): State<Arc<Jobs>>,
    Path((name, event)): Path<(String, String)>,
    params: Result<Query<Params>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Recorded>, ApiError> {
    let result = try_report(&jobs, &name, &event, params, &headers, body).await;
    if let Err(e) = &result {
        jobs.ingest().count_refusal(e, &jobs.stats().rejected);
    }
    result.map(Json)
}

async fn try_report(
    jobs: &Jobs,
    name: &str,
    event: &str,
    params: Result<Query<Params>, QueryRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Recorded, ApiError> {
    let path = jobs.ingest();
    let node = super::loki::authorize(path, headers)?;
    config::check_name(name).map_err(|e| ApiError::bad_request(format!("job {:?}: {e}", cut(name))))?;
    let event = Event::parse(event).ok_or_else(|| {
        ApiError::not_found(format!(
            "no event {:?} for a job: send /v1/jobs/{name}/start, /success or /fail",
            cut(event)
        ))
    })?;
    let job = jobs.config.get(name).ok_or_else(|| {
        let declared: Vec<&str> = jobs.config.jobs.iter().map(|j| j.name.as_str()).collect();
        let declared = if declared.is_empty() { "none".to_string() } else { declared.join(", ") };
        ApiError::not_found(format!(
            "job {name:?} is not declared: add it to lake.toml as [[jobs]] name = {name:?}, schedule = \"<cron>\" \
             (declared: {declared})"
        ))
    })?;
    let sender = path.policy.sender(node);
    let host = match &job.host {
        Some(h) if sender.allows(h) => h.clone(),
        Some(h) => {
            return Err(ApiError::forbidden(format!(
                "job {name:?} runs on host {h:?} ([[jobs]] host in lake.toml); this token is node {:?}'s",
                sender.node
            )))
        }
        None => sender.node.clone(),
    };
    let Query(params) = params.map_err(|e| ApiError::bad_request(format!("query parameters: {}", e.body_text())))?;
    let mut reservation = path.budget.reservation();
    let raw = ingest::read_body(headers, body, MAX_BODY, "the /v1/jobs body limit, 64 KiB", &mut reservation).await?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"));
    let body = if json && !raw.is_empty() {
        serde_json::from_slice::<JsonReport>(&raw).map_err(|e| {
            ApiError::bad_request(format!(
                "body is not a job report: {e} (a JSON object with run_id, exit_code, duration_ms, output, source)"
            ))
        })?
    } else if raw.is_empty() {
        JsonReport::default()
    } else {
        // Only the tail is kept: decode no more than it.
        let start = raw.len().saturating_sub(MAX_OUTPUT + 3);
        JsonReport { output: Some(String::from_utf8_lossy(&raw[start..]).into_owned()), ..JsonReport::default() }
    };
    let run_id = body.run_id.or(params.run_id);
    if let Some(id) = &run_id {
        check_run_id(id)?;
    }
    let duration_ms = body.duration_ms.or(params.duration_ms);
    if duration_ms.is_some_and(|d| !d.is_finite() || d < 0.0) {
        return Err(ApiError::bad_request("duration_ms is a number of milliseconds, 0 or more"));
    }
    let source = body.source.unwrap_or_else(|| "http".to_string());
    check_source(&source)?;
    jobs.record(Report {
        job: job.name.clone(),
        host,
        event,
        run_id,
        exit_code: body.exit_code.or(params.exit_code),
        duration_ms,
        output: body.output.filter(|o| !o.is_empty()),
        source,
    })
    .await
}

fn check_run_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_RUN_ID
        && id.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "run_id {:?}: 1 to {MAX_RUN_ID} of A-Z a-z 0-9 . _ : - (e.g. the start's answer)",
            cut(id)
        )))
    }
}

fn check_source(source: &str) -> Result<(), ApiError> {
    let ok = !source.is_empty()
        && source.len() <= 32
        && source != LAKE_HOST
        && source.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "source {:?}: 1 to 32 of a-z 0-9 _ - naming the sender (e.g. run-job); \"lake\" is the lake's own",
            cut(source)
        )))
    }
}

/// `text`, cut to 80 characters for an error message.
fn cut(text: &str) -> String {
    if text.chars().count() > 80 {
        text.chars().take(80).chain("…".chars()).collect()
    } else {
        text.to_string()
    }
}
