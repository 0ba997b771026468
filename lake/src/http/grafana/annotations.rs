//! Annotations (`POST /annotations`): alert state transitions from `alerts` and fail2ban
//! bans and unbans from `bans`, within the request's range.
//!
//! `annotation.query` picks the source: `alerts`, `bans`, or empty for both. The SQL is
//! fixed text; the range is rendered from parsed milliseconds.
//!
//! Where the end of a state is known, the event is a *region* (`timeEnd`, `isRegion`):
//! - an alert instance (same rule, host and labels) that went `firing` and then, as its
//!   next transition, `resolved` (or `ok`) spans from the firing to the resolution;
//! - a `ban` followed by the `unban` of the same address, jail and host spans the ban.
//!
//! The closing event is then folded into the region rather than shown again. A region
//! is returned when it overlaps the range, so a ban that started before the range and
//! ends inside it shows; the pairing looks [`PAIRING_WINDOW`] before and after the range
//! for the other end. An end whose start is further away shows as a point, and so does
//! a start with no end yet.

use serde_json::{json, Value as Json};

use super::response::{epoch_ms, text_cell};
use crate::http::error::ApiError;
use lake_query::engine::QueryResult;

/// Events returned per source at most.
const MAX_EVENTS: usize = 1000;

/// How far outside the range the other end of a region is looked for.
const PAIRING_WINDOW: &str = "INTERVAL 7 DAYS";

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
    /// The SQL listing this source's events overlapping `[from, to)`, both SQL
    /// timestamp literals. Columns: ts, host, three or four of the source's own, ts_end.
    pub(crate) fn sql(self, from: &str, to: &str) -> String {
        let (table, cols, kind, starts, ends, partition) = match self {
            Source::Alerts => (
                "alerts",
                "rule, state, severity, message",
                "state",
                "'firing'",
                "'resolved', 'ok'",
                "rule, host, CAST(labels AS VARCHAR)",
            ),
            Source::Bans => ("bans", "jail, action, ip", "action", "'ban'", "'unban'", "host, jail, ip"),
        };
        let kinds = match self {
            Source::Alerts => "'pending', 'firing', 'resolved', 'ok'",
            Source::Bans => "'ban', 'unban'",
        };
        format!(
            "WITH e AS (
    SELECT ts, host, {cols},
           lead(ts) OVER w AS next_ts, lead({kind}) OVER w AS next_kind, lag({kind}) OVER w AS prev_kind
    FROM {table}
    WHERE {kind} IN ({kinds})
      AND ts >= {from} - {PAIRING_WINDOW} AND ts < {to} + {PAIRING_WINDOW}
    WINDOW w AS (PARTITION BY {partition} ORDER BY ts)
), r AS (
    SELECT ts, host, {cols},
           CASE WHEN {kind} IN ({starts}) AND next_kind IN ({ends}) THEN next_ts END AS ts_end
    FROM e
    WHERE NOT ({kind} IN ({ends}) AND coalesce(prev_kind IN ({starts}), false))
)
SELECT * FROM r
WHERE ts < {to} AND coalesce(ts_end, ts) >= {from}
ORDER BY ts LIMIT {MAX_EVENTS}"
        )
    }

    /// One event per row of this source's result, carrying `annotation` back.
    pub(crate) fn events(self, result: &QueryResult, annotation: &Json) -> Vec<Json> {
        let mut out = Vec::new();
        for batch in &result.batches {
            let cell = |col: usize, row: usize| text_cell(batch.column(col).as_ref(), row);
            let end_col = batch.num_columns() - 1;
            for row in 0..batch.num_rows() {
                let Some(time) = epoch_ms(batch.column(0).as_ref(), row) else {
                    continue;
                };
                let time_end = epoch_ms(batch.column(end_col).as_ref(), row);
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
                let mut event = json!({
                    "annotation": annotation,
                    "time": time,
                    "title": title,
                    "tags": tags,
                    "text": text,
                });
                if let Some(end) = time_end {
                    event["timeEnd"] = json!(end);
                    event["isRegion"] = json!(true);
                }
                out.push(event);
            }
        }
        out
    }
}
