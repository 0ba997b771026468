//! `POST /v1/logs`, `POST /v1/metrics` and `POST /v1/traces`: OTLP/HTTP ingest, so any
//! OpenTelemetry SDK or Collector can write to the lake. Records land in the `logs`,
//! `metrics` and `spans` tables; how each OTLP field maps onto a column is documented in
//! [`map`]. The three signals share every step below; only the decoding and the mapping
//! differ.
//!
//! Checks, in order: the `Content-Type` is `application/x-protobuf` or `application/json`
//! (415); the bearer token is one of the nodes' ingest tokens (401); the
//! `Content-Encoding` is `gzip` or none (415); the body fits the OTLP limit (413), and so
//! does its gunzipped size: decompression stops at that many bytes, so a zip bomb costs at
//! most the limit in memory (413); the body decodes as an `Export*ServiceRequest`
//! (400 with the decoder's message); every row is within [`super::bounds`] — time window,
//! at most 1,000 labels or attributes, the days a batch may span, the table's retention —
//! and its `host` (the resource's `host.name`) is the token's node or one of its `hosts`
//! ([`super::policy`]) (400 naming the metric, log record or span, the whole request
//! refused).
//! The body, its gunzipped bytes and what decoding them takes come out of the ingest
//! memory budget ([`super::budget`]; 503 + `Retry-After` when it is in use, 413 when the
//! request alone needs more). The rows are then encoded as Arrow IPC and stored
//! through the same path as `/v1/ingest` (WAL append + fsync, then buffered), and only then
//! is the request answered 200 with an `Export*ServiceResponse` in the request's encoding,
//! carrying `partial_success` when items were skipped. Overload (503) and a full disk
//! (507) come with `Retry-After`. Errors carry a `google.rpc.Status` body (protobuf or JSON
//! like the request), as the OTLP specification asks.
//!
//! **Size limit.** The OTLP limit is `ingest.max_body` but at most [`MAX_DECODED`]
//! (20 MiB, the OpenTelemetry Collector receiver's default): decoded OTLP structures take
//! tens of times the bytes they were decoded from (an empty record is two bytes on the
//! wire, a hundred in memory), so the decoded size, not only the wire size, must stay small.
//! SDKs export a few hundred records per request, far below it.
//!
//! **Batch ids.** OTLP has none, so the lake assigns `_otlp/<epoch>/<seq>`: `epoch` is
//! unique per lake process (its start time in µs, and above every epoch the lake already
//! remembers for `_otlp`), `seq` counts requests. WAL replay skips records at or below
//! the committed high-water mark of their (node, epoch), so an epoch reused across
//! restarts would drop rows. Stores are serialized so seqs reach the WAL in order: a
//! flush can never commit a mark above a seq still on its way to the WAL. The ids use
//! their own node name rather than the token's so that one epoch per lake run never
//! crowds a collector's spool epoch out of the bounded per-node state
//! ([`crate::ingest::state::EPOCHS_PER_NODE`]), which would silently end its exactly-once
//! delivery. The sender's identity is kept in the rows (`lake.node`) instead.
//!
//! **Delivery is at least once**, as OTLP defines it: a request retried after a lost
//! answer is stored again.

pub(crate) mod fuzzing; // entry point of the fuzz targets (crate::fuzzing)
mod map;
pub(crate) use map::{priority_of_text, NODE_KEY};
#[cfg(test)]
pub(crate) mod tests; // its harness serves the remote_write tests too

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde_json::json;

use lake_format::{rows::now_micros, wire, BatchId, Table};

use super::budget::{BudgetError, Reservation};
use super::ingest::{self, Ingest};
use super::policy::Sender;
use crate::ingest::state::Admission;

/// Largest OTLP body accepted, before and after gunzip (or `ingest.max_body` if smaller).
pub const MAX_DECODED: usize = 20 << 20;

/// Node name of the batch ids the lake assigns to OTLP requests.
pub const ID_NODE: &str = "_otlp";

lake_format::metrics! {
    /// Counters of the OTLP endpoints, on `/metrics` (each doc line is its help there).
    /// Requests refused for auth or size also count in the ingest endpoint's counters, and
    /// stored batches in its `batches`/`rows`; skipped items are those reported in
    /// `partial_success`.
    pub struct OtlpStats {
        /// OTLP requests answered 200
        pub requests: Counter("lake_otlp_requests_total"),
        /// OTLP log records stored
        pub log_records: Counter("lake_otlp_log_records_total"),
        /// OTLP data points stored
        pub data_points: Counter("lake_otlp_data_points_total"),
        /// OTLP spans stored
        pub spans: Counter("lake_otlp_spans_total"),
        /// OTLP log records, data points and spans skipped (reported in partial_success)
        pub skipped: Counter("lake_otlp_skipped_total"),
        /// OTLP requests refused as undecodable, unsupported or too large
        pub rejected: Counter("lake_otlp_rejected_total"),
    }
}

/// State of the OTLP endpoints.
#[derive(Debug)]
pub struct Otlp {
    ingest: Arc<Ingest>,
    epoch: u64,
    /// Last seq used; held across each store so seqs reach the WAL in order.
    seq: tokio::sync::Mutex<u64>,
    /// Counters, shared with `/metrics`.
    pub stats: Arc<OtlpStats>,
}

impl Otlp {
    /// Builds the endpoints' state over the ingest path; call after WAL replay so the
    /// epoch is above every epoch already used. It counts into `stats`.
    pub fn new(ingest: Arc<Ingest>, stats: Arc<OtlpStats>) -> Otlp {
        let known = ingest.batches.marks().get(ID_NODE).and_then(|e| e.keys().next_back().copied()).unwrap_or(0);
        let epoch = u64::try_from(now_micros()).unwrap_or(0).max(known.saturating_add(1));
        if ingest.auth.current().nodes().contains(&ID_NODE) {
            tracing::warn!(
                node = ID_NODE,
                "a node shares the name of the OTLP batch ids; its collector's duplicates may be stored twice"
            );
        }
        Otlp { ingest, epoch, seq: tokio::sync::Mutex::new(0), stats }
    }

    /// The epoch of this process's batch ids.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The ingest path the rows go through (`/api/v1/write` stores through it too).
    pub(crate) fn ingest(&self) -> &Arc<Ingest> {
        &self.ingest
    }

    fn node_of(&self, headers: &HeaderMap) -> Option<String> {
        self.ingest.node_of(headers)
    }
}

/// The routes `/v1/logs`, `/v1/metrics` and `/v1/traces`.
pub fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/v1/logs", post(logs))
        .route("/v1/metrics", post(metrics))
        .route("/v1/traces", post(traces))
        .with_state(Arc::new(Otlp::new(ingest, Arc::default())))
}

/// `POST /v1/logs`.
pub async fn logs(State(s): State<Arc<Otlp>>, headers: HeaderMap, body: Body) -> Response {
    export(&s, Signal::Logs, &headers, body).await
}

/// `POST /v1/metrics`.
pub async fn metrics(State(s): State<Arc<Otlp>>, headers: HeaderMap, body: Body) -> Response {
    export(&s, Signal::Metrics, &headers, body).await
}

/// `POST /v1/traces`.
pub async fn traces(State(s): State<Arc<Otlp>>, headers: HeaderMap, body: Body) -> Response {
    export(&s, Signal::Traces, &headers, body).await
}

/// What a request carries, named by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Logs,
    Metrics,
    Traces,
}

impl Signal {
    fn table(self) -> Table {
        match self {
            Signal::Logs => Table::Logs,
            Signal::Metrics => Table::Metrics,
            Signal::Traces => Table::Spans,
        }
    }
    fn request_name(self) -> &'static str {
        match self {
            Signal::Logs => "ExportLogsServiceRequest",
            Signal::Metrics => "ExportMetricsServiceRequest",
            Signal::Traces => "ExportTraceServiceRequest",
        }
    }
}

/// The body encoding, taken from `Content-Type`; answers use the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn of(headers: &HeaderMap) -> Option<Format> {
        let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Format::Protobuf),
            "application/json" => Some(Format::Json),
            _ => None,
        }
    }
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// A refused request, answered with a `google.rpc.Status`.
#[derive(Debug)]
pub(crate) struct OtlpError {
    status: StatusCode,
    message: String,
    retry_after: Option<HeaderValue>,
}

impl OtlpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        OtlpError { status, message: message.into(), retry_after: None }
    }

    /// 500: the detail is logged, the sender gets a generic message.
    fn internal(detail: String) -> Self {
        tracing::error!(error = %detail, "otlp request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the lake's log")
    }

    /// The gRPC code that goes with the HTTP status.
    fn grpc_code(&self) -> i32 {
        match self.status {
            StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
            StatusCode::UNAUTHORIZED => 16,                                    // UNAUTHENTICATED
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::INSUFFICIENT_STORAGE => 8, // RESOURCE_EXHAUSTED
            StatusCode::SERVICE_UNAVAILABLE => 14,                             // UNAVAILABLE
            _ => 13,                                                           // INTERNAL
        }
    }

    fn into_response(self, format: Format) -> Response {
        let body = match format {
            Format::Protobuf => RpcStatus { code: self.grpc_code(), message: self.message }.encode_to_vec(),
            Format::Json => json!({"code": self.grpc_code(), "message": self.message}).to_string().into_bytes(),
        };
        let mut resp = (self.status, [(header::CONTENT_TYPE, format.content_type())], body).into_response();
        if let Some(v) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<BudgetError> for OtlpError {
    fn from(e: BudgetError) -> OtlpError {
        match e {
            BudgetError::Busy { .. } => OtlpError {
                retry_after: Some(HeaderValue::from(super::budget::RETRY_AFTER_SECS)),
                ..OtlpError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            },
            BudgetError::TooLarge { .. } => OtlpError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        }
    }
}

/// The ingest path's answers (and gunzip's), for `/api/v1/write` and the Loki push (JSON
/// like the rest of the lake).
impl From<OtlpError> for super::error::ApiError {
    fn from(e: OtlpError) -> Self {
        use super::error::ApiError;
        let retry = || e.retry_after.as_ref().and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(1);
        match e.status {
            StatusCode::SERVICE_UNAVAILABLE => ApiError::unavailable(e.message.clone(), retry()),
            StatusCode::INSUFFICIENT_STORAGE => ApiError::insufficient_storage(e.message.clone(), retry()),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(e.message),
            StatusCode::BAD_REQUEST => ApiError::bad_request(e.message),
            // Logged where it arose; the sender gets the generic message.
            _ => ApiError::internal(e.message),
        }
    }
}

/// `google.rpc.Status`, the body of an OTLP error answer (`details` left empty).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

async fn export(s: &Otlp, signal: Signal, headers: &HeaderMap, body: Body) -> Response {
    let format = Format::of(headers);
    match try_export(s, signal, format, headers, body).await {
        Ok(resp) => resp,
        Err(e) => {
            match e.status {
                StatusCode::UNAUTHORIZED => s.ingest.stats.unauthorized.fetch_add(1, Ordering::Relaxed),
                StatusCode::SERVICE_UNAVAILABLE => s.ingest.stats.overloaded.fetch_add(1, Ordering::Relaxed),
                st if st.is_client_error() => {
                    s.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    s.ingest.stats.rejected.fetch_add(1, Ordering::Relaxed)
                }
                _ => 0,
            };
            e.into_response(format.unwrap_or(Format::Json))
        }
    }
}

/// A request decoded and mapped, ready to store.
struct Prepared {
    /// Arrow IPC stream of the rows; `None` when there are none.
    body: Option<Bytes>,
    accepted: u64,
    rejected: u64,
    reason: Option<String>,
}

async fn try_export(
    s: &Otlp,
    signal: Signal,
    format: Option<Format>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, OtlpError> {
    let Some(format) = format else {
        let got = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("none");
        return Err(OtlpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type {got:?} is not supported; send application/x-protobuf or application/json"),
        ));
    };
    let Some(node) = s.node_of(headers) else {
        return Err(OtlpError::new(
            StatusCode::UNAUTHORIZED,
            "missing or unknown ingest token (Authorization: Bearer <node token>)",
        ));
    };
    let gzip = match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().map(|t| t.trim().to_ascii_lowercase())) {
        None => false,
        Some(Ok(e)) if e.is_empty() || e == "identity" => false,
        Some(Ok(e)) if e == "gzip" || e == "x-gzip" => true,
        Some(other) => {
            let got = other.unwrap_or_else(|_| "<not text>".into());
            return Err(OtlpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {got:?} is not supported; send gzip or no encoding"),
            ));
        }
    };
    let max = s.ingest.max_body.min(MAX_DECODED);
    let mut reservation = s.ingest.budget.reservation();
    let raw =
        ingest::read_body(headers, body, max, "the OTLP limit: ingest.max_body, at most 20 MiB", &mut reservation)
            .await
            .map_err(|e| {
                let retry_after = (e.status() == StatusCode::SERVICE_UNAVAILABLE)
                    .then(|| HeaderValue::from(super::budget::RETRY_AFTER_SECS));
                OtlpError { retry_after, ..OtlpError::new(e.status(), e.message()) }
            })?;
    let sender = s.ingest.policy.sender(node);
    let now = now_micros();
    let days = s.ingest.policy.days(&signal.table().into(), now);
    let (prepared, _reservation) = tokio::task::spawn_blocking(move || {
        let prepared = prepare(signal, format, gzip, &raw, max, &sender, days, now, &mut reservation);
        (prepared, reservation)
    })
    .await
    .map_err(|e| OtlpError::internal(format!("OTLP decoder task failed: {e}")))?;
    let prepared = prepared?;
    if let Some(ipc) = prepared.body {
        store(s, signal.table(), ipc).await?;
    }
    s.stats.requests.fetch_add(1, Ordering::Relaxed);
    s.stats.skipped.fetch_add(prepared.rejected, Ordering::Relaxed);
    let stored = match signal {
        Signal::Logs => &s.stats.log_records,
        Signal::Metrics => &s.stats.data_points,
        Signal::Traces => &s.stats.spans,
    };
    stored.fetch_add(prepared.accepted, Ordering::Relaxed);
    if prepared.rejected > 0 {
        tracing::debug!(?signal, rejected = prepared.rejected, reason = ?prepared.reason, "otlp items skipped");
    }
    Ok(success(signal, format, prepared.rejected, prepared.reason.unwrap_or_default()))
}

/// Gunzips (capped), decodes and maps a body, taking what it holds from the ingest
/// memory budget; blocking work.
#[allow(clippy::too_many_arguments)]
fn prepare(
    signal: Signal,
    format: Format,
    gzip: bool,
    raw: &[u8],
    max: usize,
    sender: &Sender,
    days: super::bounds::Days,
    now: i64,
    reservation: &mut Reservation,
) -> Result<Prepared, OtlpError> {
    let node = sender.node.as_str();
    let unzipped;
    let bytes = if gzip {
        unzipped = gunzip(raw, max, reservation)?;
        &unzipped[..]
    } else {
        raw
    };
    // Decoded OTLP structures and the rows built from them.
    reservation.grow(bytes.len().saturating_mul(super::budget::OTLP_FACTOR))?;
    let bad = |e: String| {
        let encoding = match format {
            Format::Protobuf => "protobuf",
            Format::Json => "OTLP/JSON",
        };
        OtlpError::new(
            StatusCode::BAD_REQUEST,
            format!("body is not a valid {} ({encoding}): {e}", signal.request_name()),
        )
    };
    let mapped = match signal {
        Signal::Logs => map::logs(&decode::<ExportLogsServiceRequest>(format, bytes).map_err(bad)?, node, now),
        Signal::Metrics => map::metrics(&decode::<ExportMetricsServiceRequest>(format, bytes).map_err(bad)?, node, now),
        Signal::Traces => map::spans(&decode::<ExportTraceServiceRequest>(format, bytes).map_err(bad)?, node, now),
    }
    .map_err(|e| OtlpError::internal(format!("building {} rows: {e}", signal.table())))?;
    // The bounds every ingested row respects, and the hosts its sender may write: the
    // whole request is refused, naming the metric or log record, rather than storing what
    // a query or partition cannot hold or what another node should have said.
    let batches = std::slice::from_ref(&mapped.batch);
    let checked = sender.check_rows(batches, now, days);
    if let Err(v) = checked {
        use arrow_array::cast::AsArray;
        let what = match signal {
            Signal::Metrics => mapped
                .batch
                .column_by_name("name")
                .map(|c| {
                    format!(
                        "metric {:?} (a data point's labels: its attributes, service.name and lake.node)",
                        c.as_string::<i32>().value(v.row)
                    )
                })
                .unwrap_or_else(|| format!("data point row {}", v.row)),
            Signal::Logs => format!("log record {} (counting from 0; attrs: its attributes and the resource's)", v.row),
            Signal::Traces => {
                let name = mapped.batch.column_by_name("name").map(|c| c.as_string::<i32>().value(v.row).to_string());
                let id = mapped.batch.column_by_name("span_id").map(|c| c.as_string::<i32>().value(v.row).to_string());
                format!("span {:?} (span_id {})", name.unwrap_or_default(), id.unwrap_or_default())
            }
        };
        let column = if v.column == "host" { "host (the resource's host.name)" } else { v.column.as_str() };
        return Err(OtlpError::new(StatusCode::BAD_REQUEST, format!("{what}: {column}: {}", v.message)));
    }
    let body = if mapped.batch.num_rows() == 0 {
        None
    } else {
        let ipc = wire::encode(&mapped.batch.schema(), std::slice::from_ref(&mapped.batch))
            .map_err(|e| OtlpError::internal(format!("encoding OTLP rows: {e}")))?;
        Some(Bytes::from(ipc))
    };
    Ok(Prepared { body, accepted: mapped.accepted, rejected: mapped.rejected, reason: mapped.reason })
}

/// Decodes an `Export*ServiceRequest` in the body's encoding.
fn decode<M: Message + Default + serde::de::DeserializeOwned>(format: Format, bytes: &[u8]) -> Result<M, String> {
    match format {
        Format::Protobuf => M::decode(bytes).map_err(|e| e.to_string()),
        Format::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    }
}

/// Bytes gunzipped at a time, each taken from the memory budget before it is inflated.
const GUNZIP_STEP: usize = 1 << 20;

/// Decompresses a gzip body, refusing (413) once it exceeds `max` bytes: the output is
/// never allowed to grow past that, however well the input compresses. The output is
/// taken from the memory budget a step at a time, as it grows (503 when it is in use).
pub(crate) fn gunzip(raw: &[u8], max: usize, reservation: &mut Reservation) -> Result<Vec<u8>, OtlpError> {
    let held = reservation.bytes();
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let mut decoder = flate2::read::MultiGzDecoder::new(raw).take(limit);
    loop {
        reservation.grow(GUNZIP_STEP)?;
        out.reserve_exact(GUNZIP_STEP);
        let n = (&mut decoder)
            .take(GUNZIP_STEP as u64)
            .read_to_end(&mut out)
            .map_err(|e| OtlpError::new(StatusCode::BAD_REQUEST, format!("body is not valid gzip: {e}")))?;
        if n < GUNZIP_STEP {
            break;
        }
    }
    reservation.shrink_to(held + out.len());
    out.shrink_to_fit();
    if out.len() > max {
        return Err(OtlpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("gzip body inflates past the {max} byte OTLP limit (ingest.max_body, at most 20 MiB)"),
        ));
    }
    Ok(out)
}

/// Stores one request's rows under a fresh lake-assigned batch id (OTLP and
/// `/api/v1/write`).
pub(crate) async fn store(s: &Otlp, table: Table, ipc: Bytes) -> Result<(), OtlpError> {
    // Held until the batch is logged: seqs reach the WAL and the marks in order.
    let mut seq = s.seq.lock().await;
    *seq += 1;
    let id = BatchId { node: ID_NODE.to_string(), epoch: s.epoch, seq: *seq };
    let batches = &s.ingest.batches;
    match batches.admit(&id) {
        Admission::New => {}
        other => return Err(OtlpError::internal(format!("lake-assigned batch id {id} is not new ({other:?})"))),
    }
    let result = ingest::store(&s.ingest, table, &id, ipc).await;
    match result {
        Ok(_) => {
            batches.logged(&id);
            Ok(())
        }
        Err(e) => {
            batches.release(&id);
            drop(seq);
            let detail = format!("{e:?}");
            // The lake's own error answer logs 5xx details and sets Retry-After.
            let resp = e.into_response();
            let status = resp.status();
            let message = match status {
                StatusCode::SERVICE_UNAVAILABLE => "the lake is busy (ingest buffer full); retry later",
                StatusCode::INSUFFICIENT_STORAGE => "the lake's disk is full; retry later",
                _ => {
                    if !status.is_server_error() {
                        tracing::error!(error = %detail, "otlp rows refused by the ingest path");
                    }
                    "internal error; see the lake's log"
                }
            };
            let status = if status.is_client_error() { StatusCode::INTERNAL_SERVER_ERROR } else { status };
            Err(OtlpError {
                status,
                message: message.into(),
                retry_after: resp.headers().get(header::RETRY_AFTER).cloned(),
            })
        }
    }
}

/// The 200 answer: an empty `Export*ServiceResponse`, or one with `partial_success`.
fn success(signal: Signal, format: Format, rejected: u64, reason: String) -> Response {
    let rejected = i64::try_from(rejected).unwrap_or(i64::MAX);
    let body = match (format, signal) {
        (Format::Protobuf, Signal::Logs) => ExportLogsServiceResponse {
            partial_success: (rejected > 0)
                .then_some(ExportLogsPartialSuccess { rejected_log_records: rejected, error_message: reason }),
        }
        .encode_to_vec(),
        (Format::Protobuf, Signal::Metrics) => ExportMetricsServiceResponse {
            partial_success: (rejected > 0)
                .then_some(ExportMetricsPartialSuccess { rejected_data_points: rejected, error_message: reason }),
        }
        .encode_to_vec(),
        (Format::Protobuf, Signal::Traces) => ExportTraceServiceResponse {
            partial_success: (rejected > 0)
                .then_some(ExportTracePartialSuccess { rejected_spans: rejected, error_message: reason }),
        }
        .encode_to_vec(),
        (Format::Json, _) if rejected == 0 => b"{}".to_vec(),
        // int64 is a string in the protobuf JSON mapping.
        (Format::Json, Signal::Logs) => {
            json!({"partialSuccess": {"rejectedLogRecords": rejected.to_string(), "errorMessage": reason}})
                .to_string()
                .into_bytes()
        }
        (Format::Json, Signal::Metrics) => {
            json!({"partialSuccess": {"rejectedDataPoints": rejected.to_string(), "errorMessage": reason}})
                .to_string()
                .into_bytes()
        }
        (Format::Json, Signal::Traces) => {
            json!({"partialSuccess": {"rejectedSpans": rejected.to_string(), "errorMessage": reason}})
                .to_string()
                .into_bytes()
        }
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, format.content_type())], body).into_response()
}
