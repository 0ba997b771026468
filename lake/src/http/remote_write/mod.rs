//! `POST /api/v1/write`: the Prometheus remote_write 1.0 receiver, so an existing
//! Prometheus (or Grafana Agent/Alloy, vmagent, …) ships its samples into `metrics` with
//! no glue. Body: a snappy block (`Content-Encoding: snappy`) of a protobuf
//! `prometheus.WriteRequest` (`Content-Type: application/x-protobuf`).
//!
//! **Rows.** One row per sample: `name` = the series' `__name__`; `labels` = every other
//! label as sent (`instance`, `job` and the rest); `value` as sent, NaN and ±Inf included;
//! `ts` = the sample's milliseconds as µs. Stale markers (the NaN with bits
//! [`STALE_NAN`], which Prometheus writes when a series disappears) are dropped and
//! counted, not stored as NaN. Exemplars and native histograms are not stored: they are
//! counted and logged (keep `send_exemplars` and `send_native_histograms` off). Metadata
//! is ignored.
//!
//! **Host.** The host part of the series' `instance` label (`web-1:9100` → `web-1`;
//! brackets and port stripped from `[::1]:9100`), which must be the token's node or one of
//! its `[[nodes]] hosts` (400 naming the series otherwise, the whole request refused:
//! [`super::policy`]). The token's node instead when there is no `instance`, when it names
//! a loopback address (`localhost:9100`, `127.0.0.1:9100`: the Prometheus that sends is on
//! the node) or when its host part is not a node name (a URL, an IPv6 address). Relabel
//! `instance` (or list the host) for targets scraped from elsewhere.
//!
//! **Answers** (Prometheus retries 5xx and never 4xx, so the status says which): 204 once
//! every row is in the WAL (fsynced) and buffered; 401 for a missing or unknown ingest
//! token; 415 for another content type or encoding (remote_write 2.0 included); 413 when
//! the body or its declared decompressed length passes the limit ([`MAX_BODY`] or
//! `ingest.max_body` if smaller; the snappy header is read before anything is allocated);
//! 400 for a body that is not snappy or not a `WriteRequest`, more than [`MAX_SERIES`]
//! series or [`MAX_SAMPLES`] samples, a series without `__name__` or with a label twice,
//! and rows out of [`super::bounds`] or of the token's hosts; 503 (`Retry-After`) when the
//! ingest memory budget or buffer is full; 507 when the disk is; 500 otherwise.
//!
//! The rows are stored under the lake-assigned batch ids of the OTLP endpoints (one
//! sequence, [`super::otlp`]); delivery is at least once, as remote_write defines it.

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use prost::Message;

use lake_format::rows::{now_micros, MetricsBuilder};
use lake_format::wire;
use lake_format::Table;

use super::budget::Reservation;
use super::error::ApiError;
use super::ingest;
use super::otlp::Otlp;
use super::policy::Sender;

/// Largest body, compressed and decompressed (or `ingest.max_body` if smaller). Prometheus
/// sends at most `max_samples_per_send` (2,000 by default) samples a request: a few
/// hundred KiB.
pub const MAX_BODY: usize = 32 << 20;
/// Most series in one request.
pub const MAX_SERIES: usize = 100_000;
/// Most samples in one request (50 times Prometheus' default `max_samples_per_send`).
pub const MAX_SAMPLES: usize = 100_000;
/// The bits of Prometheus' stale marker, a NaN no computation produces.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;
/// Bytes a row takes besides its labels' text, for the memory budget.
const ROW_BYTES: usize = 64;

lake_format::metrics! {
    /// Counters of `/api/v1/write` (its requests also count in the `lake_ingest_*` totals).
    pub struct RemoteWriteStats {
        /// remote_write requests stored (answered 204)
        pub requests: Counter("lake_remote_write_requests_total"),
        /// remote_write samples stored
        pub samples: Counter("lake_remote_write_samples_total"),
        /// remote_write stale markers dropped (Prometheus marks a series gone with them)
        pub stale: Counter("lake_remote_write_stale_markers_total"),
        /// remote_write exemplars and native histogram samples dropped (not stored)
        pub unsupported: Counter("lake_remote_write_unsupported_dropped_total"),
        /// remote_write requests refused with a 4xx other than 401
        pub rejected: Counter("lake_remote_write_rejected_total"),
    }
}

/// `prometheus.WriteRequest` (remote_write 1.0); `metadata` (3) is skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub(crate) timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`. Exemplars and histograms are kept as raw bytes: only counted.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub(crate) labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) samples: Vec<Sample>,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub(crate) exemplars: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub(crate) histograms: Vec<Vec<u8>>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Label {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, tag = "2")]
    pub(crate) value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Sample {
    #[prost(double, tag = "1")]
    pub(crate) value: f64,
    #[prost(int64, tag = "2")]
    pub(crate) timestamp: i64,
}

/// `POST /api/v1/write`.
pub async fn write(State(s): State<Arc<Otlp>>, headers: HeaderMap, body: Body) -> Result<StatusCode, ApiError> {
    let result = try_write(&s, &headers, body).await;
    if let Err(e) = &result {
        s.ingest().count_refusal(e, &s.ingest().remote_write.rejected);
    }
    result
}

async fn try_write(s: &Otlp, headers: &HeaderMap, body: Body) -> Result<StatusCode, ApiError> {
    let path = s.ingest();
    let node = ingest::authorize(path, headers)?;
    check_headers(headers)?;
    let max = path.max_body.min(MAX_BODY);
    let mut reservation = path.budget.reservation();
    let what = "the remote_write limit: ingest.max_body, at most 32 MiB";
    let raw = ingest::read_body(headers, body, max, what, &mut reservation).await?;
    let sender = path.policy.sender(node);
    let now = now_micros();
    let days = path.policy.days(&Table::Metrics.into(), now);
    let (prepared, _reservation) = tokio::task::spawn_blocking(move || {
        let prepared = prepare(&raw, max, &sender, days, now, &mut reservation);
        (prepared, reservation)
    })
    .await
    .map_err(|e| ApiError::internal(format!("remote_write decoder task failed: {e}")))?;
    let mapped = prepared?;
    let stats = &path.remote_write;
    if mapped.unsupported > 0 {
        tracing::warn!(
            dropped = mapped.unsupported,
            "remote_write exemplars or native histograms dropped (set send_exemplars and send_native_histograms off)"
        );
    }
    if let Some(ipc) = mapped.ipc {
        super::otlp::store(s, Table::Metrics, ipc).await?;
    }
    stats.requests.add(1);
    stats.samples.add(mapped.samples);
    stats.stale.add(mapped.stale);
    stats.unsupported.add(mapped.unsupported);
    Ok(StatusCode::NO_CONTENT)
}

/// 415 unless the body is snappy-compressed remote_write 1.0 protobuf.
fn check_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("<not text>").trim().to_ascii_lowercase());
    let unsupported = ApiError::unsupported_media_type;
    let ct = text(header::CONTENT_TYPE).unwrap_or_default();
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or("");
    let proto = parts.find_map(|p| p.strip_prefix("proto=")).unwrap_or("prometheus.writerequest");
    if media != "application/x-protobuf" || proto != "prometheus.writerequest" {
        return Err(unsupported(format!(
            "Content-Type {ct:?} is not supported; send application/x-protobuf (remote_write 1.0, prometheus.WriteRequest)"
        )));
    }
    match text(header::CONTENT_ENCODING) {
        Some(e) if e == "snappy" => Ok(()),
        other => Err(unsupported(format!(
            "Content-Encoding {:?} is not supported; remote_write bodies are snappy (Content-Encoding: snappy)",
            other.unwrap_or_else(|| "none".into())
        ))),
    }
}

/// A request decoded, bounded and encoded, ready to store.
#[derive(Debug)]
pub(crate) struct Mapped {
    /// Arrow IPC of the rows; `None` when there are none.
    pub(crate) ipc: Option<Bytes>,
    /// Samples in the rows.
    pub(crate) samples: u64,
    /// Stale markers dropped.
    pub(crate) stale: u64,
    /// Exemplars and native histogram samples dropped.
    pub(crate) unsupported: u64,
}

/// Decompresses (bounded), decodes, maps and checks a body, taking what it holds from the
/// ingest memory budget. Blocking work.
pub(crate) fn prepare(
    raw: &[u8],
    max: usize,
    sender: &Sender,
    days: super::bounds::Days,
    now: i64,
    reservation: &mut Reservation,
) -> Result<Mapped, ApiError> {
    let bytes =
        super::body::unsnappy(raw, max, "the remote_write limit: ingest.max_body, at most 32 MiB", reservation)?;
    // Decoded protobuf structures take several times their wire size.
    reservation.grow(bytes.len().saturating_mul(super::budget::OTLP_FACTOR))?;
    let req = WriteRequest::decode(&bytes[..])
        .map_err(|e| ApiError::bad_request(format!("body is not a protobuf prometheus.WriteRequest: {e}")))?;
    drop(bytes);
    if req.timeseries.len() > MAX_SERIES {
        return Err(ApiError::bad_request(format!(
            "{} series in one request, more than {MAX_SERIES}; lower queue_config.max_samples_per_send",
            req.timeseries.len()
        )));
    }
    let samples: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
    if samples > MAX_SAMPLES {
        return Err(ApiError::bad_request(format!(
            "{samples} samples in one request, more than {MAX_SAMPLES}; lower queue_config.max_samples_per_send"
        )));
    }
    // Every row repeats its series' labels.
    let rows_bytes: usize = req
        .timeseries
        .iter()
        .map(|t| t.samples.len() * (ROW_BYTES + t.labels.iter().map(|l| l.name.len() + l.value.len()).sum::<usize>()))
        .sum();
    reservation.grow(rows_bytes)?;
    let mapped = map(&req, &sender.node)?;
    let batches = std::slice::from_ref(&mapped.batch);
    let checked = sender.check_rows(batches, now, days);
    if let Err(v) = checked {
        let series = &req.timeseries[mapped.series_of[v.row]];
        let column = if v.column == "host" { "host (from the instance label)" } else { v.column.as_str() };
        return Err(ApiError::rows_refused(format!("series {}: {column}: {}", describe(series), v.message), &v));
    }
    let ipc = if mapped.batch.num_rows() == 0 {
        None
    } else {
        let ipc = wire::encode(&mapped.batch.schema(), batches)
            .map_err(|e| ApiError::internal(format!("encoding remote_write rows: {e}")))?;
        Some(Bytes::from(ipc))
    };
    Ok(Mapped { ipc, samples: mapped.batch.num_rows() as u64, stale: mapped.stale, unsupported: mapped.unsupported })
}

/// Rows of a request, before the bounds.
struct Rows {
    batch: arrow_array::RecordBatch,
    /// The series (index into `timeseries`) of each row.
    series_of: Vec<usize>,
    stale: u64,
    unsupported: u64,
}

/// One row per sample (see the module docs); 400 for a series without `__name__` or with a
/// label twice.
fn map(req: &WriteRequest, node: &str) -> Result<Rows, ApiError> {
    let mut b = MetricsBuilder::new();
    let (mut series_of, mut stale, mut unsupported) = (Vec::new(), 0, 0);
    let mut seen = HashSet::new();
    for (i, series) in req.timeseries.iter().enumerate() {
        unsupported += (series.exemplars.len() + series.histograms.len()) as u64;
        seen.clear();
        if let Some(l) = series.labels.iter().find(|l| !seen.insert(l.name.as_str())) {
            return Err(ApiError::bad_request(format!("series {}: label {:?} given twice", describe(series), l.name)));
        }
        let Some(name) = series.labels.iter().find(|l| l.name == "__name__").map(|l| l.value.as_str()) else {
            return Err(ApiError::bad_request(format!("series {}: no __name__ label", describe(series))));
        };
        let instance = series.labels.iter().find(|l| l.name == "instance").map(|l| l.value.as_str());
        let host = super::policy::host_named(instance, node);
        let labels: Vec<(&str, &str)> = series
            .labels
            .iter()
            .filter(|l| l.name != "__name__")
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        for s in &series.samples {
            if s.value.to_bits() == STALE_NAN {
                stale += 1;
                continue;
            }
            b.push(s.timestamp.saturating_mul(1000), host, name, s.value, &labels);
            series_of.push(i);
        }
    }
    Ok(Rows { batch: b.finish(), series_of, stale, unsupported })
}

/// A series as `name{label="value", …}`, cut short, for error messages.
fn describe(series: &TimeSeries) -> String {
    let name = series.labels.iter().find(|l| l.name == "__name__").map_or("", |l| l.value.as_str());
    let labels: Vec<String> =
        series.labels.iter().filter(|l| l.name != "__name__").map(|l| format!("{}={:?}", l.name, l.value)).collect();
    let text = format!("{name}{{{}}}", labels.join(", "));
    if text.chars().count() > 200 {
        text.chars().take(200).chain("…".chars()).collect()
    } else {
        text
    }
}
