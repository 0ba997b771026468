//! Annotations (`POST /annotations`): alert state transitions from `alerts` and fail2ban
//! bans and unbans from `bans`, within the request's range.
//!
//! `annotation.query` picks the source: `alerts`, `bans`, or empty for both. The SQL is
//! fixed text; the range is rendered from parsed milliseconds.

use serde_json::{json, Value as Json};

use super::response::{epoch_ms, text_cell};
use crate::engine::QueryResult;
use crate::http::ApiError;

/// Events returned per source at most.
const MAX_EVENTS: usize = 1000;

/// Where annotations come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Alerts,
    Bans,
}

/// The sources `annotation.query` names.
pub(crate) fn sources(query: Option<&str>) -> Result<Vec<Source>, ApiError> {
    match query.map(|q| q.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") => Ok(vec![Source::Alerts, Source::Bans]),
        Some("alerts") => Ok(vec![Source::Alerts]),
        Some("bans") => Ok(vec![Source::Bans]),
        Some(other) => Err(ApiError::bad_request(format!(
            "annotation query {other:?} names no source (use alerts, bans, or leave it empty for both)"
        ))),
    }
}

impl Source {
    /// The SQL listing this source's events; `time_condition` restricts `ts`.
    pub(crate) fn sql(self, time_condition: &str) -> String {
        match self {
            Source::Alerts => format!(
                "SELECT ts, host, rule, state, severity, message FROM alerts \
                 WHERE state IN ('pending', 'firing', 'resolved', 'ok') AND {time_condition} \
                 ORDER BY ts LIMIT {MAX_EVENTS}"
            ),
            Source::Bans => format!(
                "SELECT ts, host, jail, action, ip FROM bans \
                 WHERE action IN ('ban', 'unban') AND {time_condition} \
                 ORDER BY ts LIMIT {MAX_EVENTS}"
            ),
        }
    }

    /// One event per row of this source's result, carrying `annotation` back.
    pub(crate) fn events(self, result: &QueryResult, annotation: &Json) -> Vec<Json> {
        let mut out = Vec::new();
        for batch in &result.batches {
            let cell = |col: usize, row: usize| text_cell(batch.column(col).as_ref(), row);
            for row in 0..batch.num_rows() {
                let Some(time) = epoch_ms(batch.column(0).as_ref(), row) else {
                    continue;
                };
                let host = cell(1, row);
                let (title, text, tags) = match self {
                    Source::Alerts => {
                        let (rule, state, severity) = (cell(2, row), cell(3, row), cell(4, row));
                        let mut tags = vec!["alert".to_string(), rule.clone(), state.clone()];
                        if !severity.is_empty() {
                            tags.push(severity);
                        }
                        tags.push(host);
                        (format!("{rule} {state}"), cell(5, row), tags)
                    }
                    Source::Bans => {
                        let (jail, action, ip) = (cell(2, row), cell(3, row), cell(4, row));
                        let text = format!("{jail}: {action} {ip} on {host}");
                        let tags = vec!["fail2ban".to_string(), jail, action.clone(), host];
                        (format!("{action} {ip}"), text, tags)
                    }
                };
                let tags: Vec<String> = tags.into_iter().filter(|t| !t.is_empty()).collect();
                out.push(json!({
                    "annotation": annotation,
                    "time": time,
                    "title": title,
                    "tags": tags,
                    "text": text,
                }));
            }
        }
        out
    }
}
