//! `POST /v1/ingest/json/{table}` and `POST /v1/ingest/csv/{table}`: rows for custom
//! tables (see [`crate::custom`]).
//!
//! The same contract as the Arrow endpoint: a node token (401), a `Lake-Batch` id of
//! that node (400/403) making retries idempotent, `ingest.max_body` (413), 503 with
//! `Retry-After` when overloaded; then the rows are parsed, the table created or its
//! schema extended, and the batch is fsynced in the WAL before the 200. Refusals name
//! the line and field (400). JSON bodies are NDJSON or one array of objects.
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

use super::error::ApiError;
use super::ingest::{admit, authorize, store_payload, Admitted, Ingest, Payload};

/// `POST /v1/ingest/json/{table}`.
pub async fn json(State(s): State<Arc<Ingest>>, Path(table): Path<String>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    custom(s, table, headers, body, false).await
}

/// `POST /v1/ingest/csv/{table}`.
pub async fn csv(State(s): State<Arc<Ingest>>, Path(table): Path<String>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    custom(s, table, headers, body, true).await
}

async fn custom(s: Arc<Ingest>, table: String, headers: HeaderMap, body: Body, csv: bool) -> Result<Json<Value>, ApiError> {
    let node = authorize(&s, &headers)?;
    lake_format::custom::validate_table_name(&table).map_err(|e| s.reject(ApiError::bad_request(e.to_string())))?;
    match admit(&s, node, &headers, body).await? {
        Admitted::New { id, node, body } => store_payload(&s, &id, Payload::Custom { table, node, csv, body }).await,
        Admitted::Duplicate(answer) => Ok(answer),
    }
}
