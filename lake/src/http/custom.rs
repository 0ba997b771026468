//! `POST /v1/ingest/json/{table}` and `POST /v1/ingest/csv/{table}`: rows for custom
//! tables (see [`crate::custom`]).
//!
//! The same contract as the Arrow endpoint: a node token (401), a `Lake-Batch` id of
//! that node (400/403) making retries idempotent, `ingest.max_body` (413), 503 with
//! `Retry-After` when overloaded or when the ingest memory budget is in use; then the rows
//! are parsed, checked ([`check_rows`]: their hosts and the days they span), the table
//! created or its schema extended, and the batch is fsynced in the WAL before the 200.
//! Refusals name the line and field (400). JSON bodies are NDJSON or one array of
//! objects. A table the lake writes itself (`alerts`) is refused (403), and no custom
//! table may take a built-in table's name (400).
//!
//! ```sh
//! curl -H "Authorization: Bearer $TOKEN" -H 'Lake-Batch: node-a/1/1' \
//!      --data-binary @signups.ndjson http://127.0.0.1:7470/v1/ingest/json/signups
//! ```

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::Value;

use super::bounds::{DaySpan, Days, Window};
use super::error::ApiError;
use super::ingest::{admit, authorize, lake_only, store_payload, Admitted, Ingest, Payload};
use super::policy::Sender;
use crate::custom::build::{epoch_micros, rfc3339_micros};
use crate::custom::parse::{Row, Value as Cell};

/// `POST /v1/ingest/json/{table}`.
pub async fn json(
    State(s): State<Arc<Ingest>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    custom(s, table, headers, body, false).await
}

/// `POST /v1/ingest/csv/{table}`.
pub async fn csv(
    State(s): State<Arc<Ingest>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    custom(s, table, headers, body, true).await
}

async fn custom(
    s: Arc<Ingest>,
    table: String,
    headers: HeaderMap,
    body: Body,
    csv: bool,
) -> Result<Json<Value>, ApiError> {
    let node = authorize(&s, &headers)?;
    if let Ok(builtin) = table.parse::<lake_format::Table>() {
        lake_only(&s, builtin)?;
    }
    lake_format::custom::validate_table_name(&table).map_err(|e| s.reject(ApiError::bad_request(e.to_string())))?;
    match admit(&s, node, &headers, body).await? {
        Admitted::New { id, node, body, reservation } => {
            let sender = s.policy.sender(node);
            store_payload(&s, &id, Payload::Custom { table, sender, csv, body }, reservation).await
        }
        Admitted::Duplicate(answer) => Ok(answer),
    }
}

/// Checks parsed rows before the table is created or extended: every row's `host` (a
/// non-empty string field `host`; rows without one get the sender's node) is one the
/// sender may write, and the rows' dates keep to `days`. The error names the line.
///
/// A row's time is read as [`crate::custom::build`] reads it (field `ts_field`: RFC 3339
/// or an epoch number; absent or null: `now`). A value that is no time, or outside the
/// lake's [`Window`], is left to the builder, which refuses it by line (or, for a lenient
/// table, stores the row at `now`).
pub(crate) fn check_rows(rows: &[Row], ts_field: &str, sender: &Sender, days: Days, now: i64) -> Result<(), String> {
    let window = Window::at(now);
    let mut span = DaySpan::new(days);
    for row in rows {
        let mut ts = now;
        for (name, v) in &row.fields {
            if name == ts_field {
                let parsed = match v {
                    Cell::Null => Some(now),
                    Cell::Text(s) => rfc3339_micros(s),
                    Cell::Int(i) => epoch_micros(*i as f64),
                    Cell::Float(f) => epoch_micros(*f),
                    _ => None,
                };
                ts = parsed.filter(|t| window.check(*t).is_ok()).unwrap_or(now);
            } else if name == "host" {
                // As the builder takes it: a non-empty string; anything else is data.
                if let Cell::Text(h) = v {
                    if !h.is_empty() && !sender.allows(h) {
                        return Err(format!("line {}: field \"host\": {}", row.line, sender.refusal(h)));
                    }
                }
            }
        }
        span.add(ts).map_err(|m| format!("line {}: field {ts_field:?}: {m}", row.line))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::policy::IngestPolicy;

    const NOW: i64 = 1_795_374_070_000_000; // 2026-11-22
    const DAY: i64 = 86_400_000_000;

    fn rows(text: &str) -> Vec<Row> {
        crate::custom::parse::json(text.as_bytes(), 100).unwrap()
    }

    #[test]
    fn rows_are_checked_for_host_and_days_naming_the_line() {
        let a = IngestPolicy::open().sender("node-a".into());
        let days = Days::at(NOW, 31, None);
        let ok = rows("{\"host\": \"node-a\", \"v\": 1}\n{\"v\": 2}\n{\"host\": 3}\n{\"host\": \"\"}\n");
        assert!(check_rows(&ok, "ts", &a, days, NOW).is_ok());
        let bad = rows("{\"v\": 1}\n\n{\"host\": \"node-b\", \"v\": 2}\n");
        let e = check_rows(&bad, "ts", &a, days, NOW).unwrap_err();
        assert!(e.starts_with("line 3: field \"host\": host \"node-b\" is not \"node-a\""), "{e}");

        // One row a day from 1950 (epoch seconds): line 32 is the 32nd day.
        let text: String =
            (0..3000).map(|d| format!("{{\"ts\": {}, \"v\": {d}}}\n", -631_152_000 + d * 86_400)).collect();
        let e = check_rows(&rows(&text), "ts", &a, days, NOW).unwrap_err();
        assert!(
            e.starts_with("line 32: field \"ts\": 1950-02-01T00:00:00Z makes the batch's rows span 32 days"),
            "{e}"
        );
        // A time field of another name; rows without a time are `now`.
        let text = format!(
            "{{\"at\": \"2026-11-21T10:00:00Z\"}}\n{{\"v\": 1}}\n{{\"at\": {}}}\n",
            (NOW - 40 * DAY) / 1_000_000
        );
        let e = check_rows(&rows(&text), "at", &a, days, NOW).unwrap_err();
        assert!(e.starts_with("line 3: field \"at\":"), "{e}");
        // Before retention.
        let e = check_rows(&rows("{\"ts\": \"2026-01-01T00:00:00Z\"}"), "ts", &a, Days::at(NOW, 31, Some(30)), NOW)
            .unwrap_err();
        assert!(e.contains("before the table's retention (keep_archive_days = 30"), "{e}");
        // Values the builder refuses are left to it.
        assert!(check_rows(&rows("{\"ts\": \"yesterday\"}\n{\"ts\": \"1800-01-01T00:00:00Z\"}"), "ts", &a, days, NOW)
            .is_ok());
    }
}
