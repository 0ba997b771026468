//! `POST /v1/ingest/{table}`: Arrow IPC batches from collectors.
//!
//! Checks, in order: the bearer token names a node (401); the table exists (404); the
//! `Lake-Batch` id is well formed (400) and belongs to the token's node (403); the body
//! fits (413); a batch already stored is acknowledged again without storing (200,
//! `duplicate: true`); the lake is not overloaded (503 + `Retry-After`); the body
//! decodes and matches the table's schema (400 naming the column). Then the batch is
//! appended to the WAL, fsynced, buffered for Parquet, and only then acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::RwLock;

use lake_format::{wire, BatchId, Table};
use lake_query::http::{bearer_token, constant_time_eq};

use super::error::ApiError;
use crate::config::NodeToken;
use crate::state::{Admission, Batches};
use crate::wal::{Wal, WalRecord};
use crate::writer::Buffers;

/// Counters of the ingest endpoint.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Batches stored.
    pub batches: AtomicU64,
    /// Rows stored.
    pub rows: AtomicU64,
    /// Body bytes stored.
    pub bytes: AtomicU64,
    /// Batches acknowledged again without storing.
    pub duplicates: AtomicU64,
    /// Requests refused for a missing or wrong token.
    pub unauthorized: AtomicU64,
    /// Requests refused as malformed (bad id, body, schema, unknown table, too large).
    pub rejected: AtomicU64,
    /// Requests turned away with 503 (buffer full or same batch in flight).
    pub overloaded: AtomicU64,
}

/// Everything the ingest handler needs.
#[derive(Debug)]
pub struct Ingest {
    /// Write-ahead log.
    pub wal: Wal,
    /// Rows waiting for Parquet.
    pub buffers: Arc<Buffers>,
    /// Batch ids seen.
    pub batches: Arc<Batches>,
    /// Held shared by each ingest across WAL append + buffering, exclusively by a flush
    /// while it rotates the WAL and takes the buffers, so no batch straddles the two.
    pub gate: Arc<RwLock<()>>,
    /// Ingest tokens.
    pub tokens: Vec<NodeToken>,
    /// Largest body accepted.
    pub max_body: usize,
    /// Buffered bytes beyond which ingest answers 503 until a flush catches up.
    pub max_buffered: usize,
    /// Counters.
    pub stats: IngestStats,
}

impl Ingest {
    fn node_of(&self, headers: &HeaderMap) -> Option<&str> {
        let token = bearer_token(headers)?;
        // Check every token so the time taken does not reveal which one came close.
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(t.token.0.as_bytes(), token.as_bytes()) {
                found = Some(t.node.as_str());
            }
        }
        found
    }

    fn reject(&self, e: ApiError) -> ApiError {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        e
    }
}

/// The handler.
pub async fn ingest(
    State(s): State<Arc<Ingest>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Some(node) = s.node_of(&headers) else {
        s.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::unauthorized("missing or unknown ingest token (Authorization: Bearer <node token>)"));
    };
    let table: Table = table.parse().map_err(|e: lake_format::catalog::UnknownTable| s.reject(ApiError::not_found(e.to_string())))?;
    let id_text = headers
        .get(wire::BATCH_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| s.reject(ApiError::bad_request("missing Lake-Batch header (<node>/<epoch>/<seq>)")))?;
    let id: BatchId = id_text.parse().map_err(|e: wire::WireError| s.reject(ApiError::bad_request(e.to_string())))?;
    if id.node != node {
        s.stats.rejected.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::forbidden(format!("batch id is for node {:?} but the token belongs to {node:?}", id.node)));
    }
    let body: Bytes = axum::body::to_bytes(body, s.max_body).await.map_err(|_| {
        s.reject(ApiError::too_large(format!("body larger than the {} byte limit (ingest.max_body)", s.max_body)))
    })?;
    match s.batches.admit(&id) {
        Admission::Duplicate => {
            s.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(Json(json!({"batch": id.to_string(), "duplicate": true})));
        }
        Admission::InFlight => {
            s.stats.overloaded.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::unavailable("the same batch is being stored by another request", 1));
        }
        Admission::New => {}
    }
    store(&s, table, &id, body).await
}

/// Stores a batch admitted by [`Batches::admit`]: WAL append (fsynced), buffers, then the
/// id is marked logged — or, on failure, its admission released.
///
/// It runs in a task of its own, so a request dropped half-way (the sender killed or
/// disconnected) cannot leave the batch durable but unmarked — a retry would store it
/// twice — nor leave its admission reserved forever, which would answer every retry
/// "being stored by another request".
pub(crate) async fn store(s: &Arc<Ingest>, table: Table, id: &BatchId, body: Bytes) -> Result<Json<Value>, ApiError> {
    let (task_s, task_id) = (Arc::clone(s), id.clone());
    tokio::spawn(async move {
        let result = store_now(&task_s, table, &task_id, body).await;
        if result.is_err() {
            task_s.batches.release(&task_id);
        }
        result
    })
    .await
    .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
}

async fn store_now(s: &Ingest, table: Table, id: &BatchId, body: Bytes) -> Result<Json<Value>, ApiError> {
    if s.buffers.usage().1 > s.max_buffered {
        s.stats.overloaded.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::unavailable("ingest buffer full, flush in progress", 2));
    }
    let decode_body = body.clone();
    let batches = tokio::task::spawn_blocking(move || decode(table, &decode_body))
        .await
        .map_err(|e| ApiError::internal(format!("decoder task failed: {e}")))?
        .map_err(|e| s.reject(ApiError::bad_request(e.to_string())))?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let len = body.len();
    let record = WalRecord { table: table.name().to_string(), batch_id: id.to_string(), body };
    {
        let _shared = s.gate.read().await;
        s.wal.append(&record).await.map_err(|e| {
            if e.is_disk_full() {
                s.stats.overloaded.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("wal append failed: disk full");
                ApiError::insufficient_storage("the lake's disk is full; retry later", 30)
            } else {
                ApiError::internal(format!("wal append: {e}"))
            }
        })?;
        s.buffers.push(table, batches);
        // Marked inside the gate: a flush that takes these rows also takes their mark.
        s.batches.logged(id);
    }
    s.stats.batches.fetch_add(1, Ordering::Relaxed);
    s.stats.rows.fetch_add(rows as u64, Ordering::Relaxed);
    s.stats.bytes.fetch_add(len as u64, Ordering::Relaxed);
    Ok(Json(json!({"batch": id.to_string(), "rows": rows})))
}

/// Decodes a body and conforms every batch to the table's schema.
pub fn decode(table: Table, body: &[u8]) -> Result<Vec<arrow_array::RecordBatch>, wire::WireError> {
    let (schema, batches) = wire::decode(body)?;
    let target = table.schema();
    // The stream's schema is checked even when it carries no rows.
    wire::conform(table, &target, &arrow_array::RecordBatch::new_empty(schema))?;
    batches.iter().filter(|b| b.num_rows() > 0).map(|b| wire::conform(table, &target, b)).collect()
}
