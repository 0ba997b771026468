//! `POST /v1/ingest/{table}`: Arrow IPC batches from collectors.
//!
//! Checks, in order: the bearer token names a node (401); the table exists (404) and is
//! not one the lake writes itself (403, [`super::policy`]); the `Lake-Batch` id is well
//! formed (400) and belongs to the token's node (403); the body fits (413) and the ingest
//! memory budget has room for it (503 + `Retry-After`, [`super::budget`]); a batch
//! already stored is acknowledged again without storing (200, `duplicate: true`); the
//! lake is not overloaded (503 + `Retry-After`); the budget has room for the decoded
//! batch (503; 413 when it never could); the body decodes (its compressed buffers may
//! inflate to [`Ingest::max_decoded`] bytes, 413 beyond) and matches the table's schema
//! (400 naming the column); every row is within [`super::bounds`] — time window, map
//! sizes, the days a batch may span and the table's retention — and carries a `host` the
//! token may write ([`super::policy`]) (400 naming the row). Then the batch is appended to
//! the WAL, fsynced, buffered for Parquet, and only then acknowledged. A body that does
//! not arrive within `http.body_timeout` is answered 408 and nothing of it is stored.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::RwLock;

use crate::auth::Verifier;
use lake_format::custom::TableRef;
use lake_format::{wire, BatchId, Table};

use super::budget::{MemoryBudget, Reservation};
use super::error::ApiError;
use super::policy::{IngestPolicy, Sender};
use crate::ingest::state::{Admission, Batches};
use crate::ingest::wal::{Wal, WalRecord};
use crate::ingest::writer::Buffers;

lake_format::metrics! {
    /// Counters of the ingest endpoints, on `/metrics` (each doc line is its help there).
    /// Malformed: bad id, body, schema, unknown table, too large. Overloaded: buffer full
    /// or the same batch in flight. Lenient values: a lenient custom table's values whose
    /// type conflicted; case collisions: see [`crate::custom`].
    pub struct IngestStats {
        /// batches stored
        pub batches: Counter("lake_ingest_batches_total"),
        /// rows stored
        pub rows: Counter("lake_ingest_rows_total"),
        /// ingest body bytes stored
        pub bytes: Counter("lake_ingest_bytes_total"),
        /// batches acknowledged again without storing
        pub duplicates: Counter("lake_ingest_duplicates_total"),
        /// requests with a missing or wrong token
        pub unauthorized: Counter("lake_ingest_unauthorized_total"),
        /// malformed requests refused
        pub rejected: Counter("lake_ingest_rejected_total"),
        /// requests answered 503
        pub overloaded: Counter("lake_ingest_overloaded_total"),
        /// values of lenient custom tables kept in _extra
        pub lenient_values: Counter("lake_ingest_lenient_values_total"),
        /// values of custom tables kept in _extra because their name differed only in case from a column's
        pub case_collisions: Counter("lake_ingest_case_collisions_total"),
    }
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
    /// The tokens in force (ingest keys name their node), reloaded with the tokens file.
    pub auth: Arc<Verifier>,
    /// Largest body accepted.
    pub max_body: usize,
    /// Bytes of buffered rows, waiting for Parquet or being written to it
    /// ([`crate::ingest::writer::Buffers::held_bytes`]), beyond which ingest answers 503
    /// until a flush catches up.
    pub max_buffered: usize,
    /// Custom tables' schemas.
    pub custom: Arc<crate::custom::Registry>,
    /// The hosts each node may write, days per batch, retention.
    pub policy: IngestPolicy,
    /// Memory all requests together may hold while receiving and decoding bodies.
    pub budget: Arc<MemoryBudget>,
    /// Counters.
    pub stats: IngestStats,
    /// Counters of `/api/v1/write` (Prometheus remote_write); its requests count in
    /// `stats` too.
    pub remote_write: super::remote_write::RemoteWriteStats,
    /// Counters of `/loki/api/v1/push`; its requests count in `stats` too.
    pub loki: super::loki::LokiStats,
    /// Counters of `/v1/jobs` and the late-run watch ([`crate::jobs`]).
    pub jobs: crate::jobs::JobsStats,
}

impl Ingest {
    /// The node whose ingest token the request carries (checked in constant time).
    pub(crate) fn node_of(&self, headers: &HeaderMap) -> Option<String> {
        self.auth.ingest_node(headers)
    }

    pub(crate) fn reject(&self, e: ApiError) -> ApiError {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        e
    }

    /// Counts a refused request of an endpoint that keeps its own `rejected` counter too
    /// (remote_write, Loki): 503 as overloaded; any other 4xx but 401 (counted where the
    /// token is checked) as rejected, in `endpoint` and in the ingest totals.
    pub(crate) fn count_refusal(&self, e: &ApiError, endpoint: &lake_format::metrics::Metric) {
        let status = e.status();
        if status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
            self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
        } else if status.is_client_error() && status != axum::http::StatusCode::UNAUTHORIZED {
            endpoint.add(1);
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a refusal as what it is: 503 overloaded, any other status rejected.
    pub(crate) fn refuse(&self, e: ApiError) -> ApiError {
        if e.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE {
            self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
            e
        } else {
            self.reject(e)
        }
    }

    /// Most bytes an Arrow body's compressed buffers may inflate to: 8 × `max_body`, at
    /// least 64 MiB (zstd shrinks telemetry five- to tenfold; a thousandfold is a bomb).
    pub fn max_decoded(&self) -> usize {
        self.max_body.saturating_mul(8).max(64 << 20)
    }
}

/// Reads a whole request body of at most `max` bytes: 413 at once when `Content-Length`
/// says more (or as soon as more arrived), 408 when it does not arrive within
/// `http.body_timeout`, 400 when the connection breaks off. `what` names the limit. The
/// body's bytes are taken from the ingest memory budget through `reservation` (all of a
/// declared `Content-Length` before reading, else chunk by chunk): 503 when it is in use.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    what: &str,
    reservation: &mut Reservation,
) -> Result<Bytes, ApiError> {
    use futures::StreamExt;
    let too_large = || ApiError::too_large(format!("body larger than the {max} byte limit ({what})"));
    let declared = super::body::declared_length(headers);
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let declared = declared.map_or(0, |n| n as usize);
    reservation.grow(declared)?;
    let mut out = bytes::BytesMut::with_capacity(declared);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| match super::body::timed_out(&e) {
            Some(t) => ApiError::timeout(t.to_string()),
            None => ApiError::bad_request(format!("reading the request body failed: {e}")),
        })?;
        if out.len() + chunk.len() > max {
            return Err(too_large());
        }
        if out.len() + chunk.len() > declared {
            reservation.grow(out.len() + chunk.len() - declared.max(out.len()))?;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// The handler.
pub async fn ingest(
    State(s): State<Arc<Ingest>>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let node = authorize(&s, &headers)?;
    let table: Table =
        table.parse().map_err(|e: lake_format::catalog::UnknownTable| s.reject(ApiError::not_found(e.to_string())))?;
    lake_only(&s, table)?;
    match admit(&s, node, &headers, body).await? {
        Admitted::New { id, node, body, reservation } => {
            let sender = s.policy.sender(node);
            store_payload(&s, &id, Payload::Arrow { table, sender, body }, reservation).await
        }
        Admitted::Duplicate(answer) => Ok(answer),
    }
}

/// 403 for a table only the lake writes (`alerts`): no node may forge or bury its rows.
pub(crate) fn lake_only(s: &Ingest, table: Table) -> Result<(), ApiError> {
    if table.written_by_lake() {
        return Err(s.reject(ApiError::forbidden(format!(
            "table {table} is written by the lake only (it is the lake's own record); it takes no ingest"
        ))));
    }
    Ok(())
}

/// The node whose token the request carries (401 otherwise).
pub(crate) fn authorize(s: &Ingest, headers: &HeaderMap) -> Result<String, ApiError> {
    s.node_of(headers).ok_or_else(|| {
        s.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        ApiError::unauthorized("missing or unknown ingest token (Authorization: Bearer <node token>)")
    })
}

/// The outcome of [`admit`].
#[derive(Debug)]
pub(crate) enum Admitted {
    /// A batch to store; its admission is held until [`store_payload`] ends.
    New {
        /// Its id.
        id: BatchId,
        /// The sending node.
        node: String,
        /// The body.
        body: Bytes,
        /// The body's share of the ingest memory budget.
        reservation: Reservation,
    },
    /// Stored before: the answer to give again.
    Duplicate(Json<Value>),
}

/// Checks the batch id (400, 403 when it names another node), reads the body (413; 503
/// when the ingest memory budget is in use) and admits the id: new, a duplicate (answered
/// again, 200), or in flight elsewhere (503).
pub(crate) async fn admit(s: &Ingest, node: String, headers: &HeaderMap, body: Body) -> Result<Admitted, ApiError> {
    let id_text = headers
        .get(wire::BATCH_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| s.reject(ApiError::bad_request("missing Lake-Batch header (<node>/<epoch>/<seq>)")))?;
    let id: BatchId = id_text.parse().map_err(|e: wire::WireError| s.reject(ApiError::bad_request(e.to_string())))?;
    if id.node != node {
        s.stats.rejected.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::forbidden(format!(
            "batch id is for node {:?} but the token belongs to {node:?}",
            id.node
        )));
    }
    let mut reservation = s.budget.reservation();
    let body =
        read_body(headers, body, s.max_body, "ingest.max_body", &mut reservation).await.map_err(|e| s.refuse(e))?;
    match s.batches.admit(&id) {
        Admission::Duplicate => {
            s.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            Ok(Admitted::Duplicate(Json(json!({"batch": id.to_string(), "duplicate": true}))))
        }
        Admission::InFlight => {
            s.stats.overloaded.fetch_add(1, Ordering::Relaxed);
            Err(ApiError::unavailable("the same batch is being stored by another request", 1))
        }
        Admission::New => Ok(Admitted::New { id, node, body, reservation }),
    }
}

/// Stores a batch of Arrow IPC the lake encoded itself (OTLP rows, alert rows), admitted by
/// [`Batches::admit`]: WAL append (fsynced), buffers, then the id is marked logged — or,
/// on failure, its admission released. Bodies from senders go through [`Payload::Arrow`].
///
/// It runs in a task of its own, so a request dropped half-way (the sender killed or
/// disconnected) cannot leave the batch durable but unmarked — a retry would store it
/// twice — nor leave its admission reserved forever, which would answer every retry
/// "being stored by another request".
pub(crate) async fn store(s: &Arc<Ingest>, table: Table, id: &BatchId, body: Bytes) -> Result<Json<Value>, ApiError> {
    store_payload(s, id, Payload::Own(table, body), s.budget.reservation()).await
}

/// A body to store: Arrow IPC of a catalog table, or rows for a custom table.
#[derive(Debug)]
pub(crate) enum Payload {
    /// Arrow IPC of a catalog table from a sender: decoded within
    /// [`Ingest::max_decoded`], every row checked against [`super::bounds`] and the
    /// sender's hosts.
    Arrow {
        /// The table.
        table: Table,
        /// Who sent it.
        sender: Sender,
        /// The body.
        body: Bytes,
    },
    /// Arrow IPC of a catalog table that the lake built (and bounded) itself.
    Own(Table, Bytes),
    /// NDJSON / JSON array or CSV rows for a custom table.
    Custom {
        /// Table name (validated by the registry).
        table: String,
        /// Who sent it: the node is the `host` of rows without one.
        sender: Sender,
        /// CSV rather than JSON.
        csv: bool,
        /// The body.
        body: Bytes,
    },
}

/// What goes into the WAL and the buffers.
struct Prepared {
    table: TableRef,
    batches: Vec<arrow_array::RecordBatch>,
    wal_body: Bytes,
    lenient_values: usize,
    case_collisions: usize,
}

/// Decodes (Arrow) or parses, infers and builds (custom) a payload. Blocking.
fn prepare(s: &Ingest, payload: Payload) -> Result<Prepared, ApiError> {
    match payload {
        Payload::Arrow { table, sender, body } => {
            let batches = decode_bounded(table, &body, s.max_decoded()).map_err(|e| s.reject(wire_error(e)))?;
            let now = lake_format::rows::now_micros();
            let refused =
                |v: super::bounds::Violation| s.reject(ApiError::rows_refused(format!("table {table}: {v}"), &v));
            sender.check_rows(&batches, now, s.policy.days(&table.into(), now)).map_err(refused)?;
            Ok(Prepared { table: table.into(), batches, wal_body: body, lenient_values: 0, case_collisions: 0 })
        }
        Payload::Own(table, body) => {
            let batches = decode(table, &body).map_err(|e| s.reject(ApiError::bad_request(e.to_string())))?;
            Ok(Prepared { table: table.into(), batches, wal_body: body, lenient_values: 0, case_collisions: 0 })
        }
        Payload::Custom { table, sender, csv, body } => {
            use crate::custom::{build, parse, EvolveError};
            // Rows wider than the table may ever grow are refused while parsing.
            let options = s.custom.options(&table);
            let max_fields = options.max_columns + 8;
            let rows = if csv { parse::csv(&body, max_fields) } else { parse::json(&body, max_fields) }
                .map_err(|e| s.reject(ApiError::bad_request(e.to_string())))?;
            // Hosts and days before the table is created or extended: a refused batch
            // leaves no trace.
            let now = lake_format::rows::now_micros();
            let days = s.policy.days(&TableRef::Custom(table.as_str().into()), now);
            super::custom::check_rows(&rows, &options.ts_field, &sender, days, now)
                .map_err(|e| s.reject(ApiError::bad_request(format!("table {table}: {e}"))))?;
            let built = build::build(&s.custom, &table, &sender.node, rows, now).map_err(|e| match e {
                EvolveError::Refused(e) => s.reject(ApiError::bad_request(e.to_string()).with_skew(e.skew())),
                EvolveError::Store(e) => ApiError::internal(e.to_string()),
            })?;
            let wal_body = wire::encode(&built.batch.schema(), std::slice::from_ref(&built.batch))
                .map_err(|e| ApiError::internal(format!("encoding {table}: {e}")))?;
            Ok(Prepared {
                table: TableRef::Custom(table.into()),
                batches: vec![built.batch],
                wal_body: wal_body.into(),
                lenient_values: built.lenient_values,
                case_collisions: built.case_collisions,
            })
        }
    }
}

/// An Arrow body that does not decode: 413 when it would inflate too far, else 400.
fn wire_error(e: wire::WireError) -> ApiError {
    match e {
        wire::WireError::Inflated { .. } => ApiError::too_large(e.to_string()),
        e => ApiError::bad_request(e.to_string()),
    }
}

/// [`store`] for any payload, holding `reservation` (the body's share of the memory
/// budget, grown by what decoding needs) until it is stored or refused.
pub(crate) async fn store_payload(
    s: &Arc<Ingest>,
    id: &BatchId,
    payload: Payload,
    reservation: Reservation,
) -> Result<Json<Value>, ApiError> {
    let (task_s, task_id) = (Arc::clone(s), id.clone());
    tokio::spawn(async move {
        let result = store_now(&task_s, &task_id, payload, reservation).await;
        if result.is_err() {
            task_s.batches.release(&task_id);
        }
        result
    })
    .await
    .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
}

async fn store_now(
    s: &Arc<Ingest>,
    id: &BatchId,
    payload: Payload,
    mut reservation: Reservation,
) -> Result<Json<Value>, ApiError> {
    if s.buffers.held_bytes() > s.max_buffered {
        s.stats.overloaded.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::unavailable("ingest buffer full, flush in progress", 2));
    }
    // What decoding will hold, taken before it starts (the body itself is held already).
    let decoding = match &payload {
        Payload::Arrow { body, .. } => {
            wire::decoded_size(body, s.max_decoded()).map_err(|e| s.reject(wire_error(e)))?
        }
        Payload::Custom { body, .. } => body.len().saturating_mul(super::budget::CUSTOM_FACTOR),
        Payload::Own(..) => 0,
    };
    reservation.grow(decoding).map_err(|e| s.refuse(e.into()))?;
    let task_s = Arc::clone(s);
    let Prepared { table, batches, wal_body, lenient_values, case_collisions } =
        tokio::task::spawn_blocking(move || prepare(&task_s, payload))
            .await
            .map_err(|e| ApiError::internal(format!("decoder task failed: {e}")))??;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let len = wal_body.len();
    let record = WalRecord { table: table.name().to_string(), batch_id: id.to_string(), body: wal_body };
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
    let mut answer = json!({"batch": id.to_string(), "rows": rows});
    if lenient_values > 0 {
        s.stats.lenient_values.fetch_add(lenient_values as u64, Ordering::Relaxed);
        answer["lenient_values"] = lenient_values.into();
    }
    if case_collisions > 0 {
        s.stats.case_collisions.fetch_add(case_collisions as u64, Ordering::Relaxed);
        answer["case_collisions"] = case_collisions.into();
    }
    Ok(Json(answer))
}

/// Decodes a body and conforms every batch to the table's schema.
pub fn decode(table: Table, body: &[u8]) -> Result<Vec<arrow_array::RecordBatch>, wire::WireError> {
    decode_bounded(table, body, usize::MAX)
}

/// [`decode`] with the compressed buffers inflating to at most `max_decoded` bytes.
pub fn decode_bounded(
    table: Table,
    body: &[u8],
    max_decoded: usize,
) -> Result<Vec<arrow_array::RecordBatch>, wire::WireError> {
    let (schema, batches) = wire::decode_bounded(body, max_decoded)?;
    let target = table.schema();
    // The stream's schema is checked even when it carries no rows.
    wire::conform(table, &target, &arrow_array::RecordBatch::new_empty(schema))?;
    batches.iter().filter(|b| b.num_rows() > 0).map(|b| wire::conform(table, &target, b)).collect()
}
