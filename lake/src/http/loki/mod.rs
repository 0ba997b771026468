//! `POST /loki/api/v1/push`: Loki's push API, so Promtail, Grafana Alloy, Docker's loki
//! log driver, Fluent Bit and Vector ship their log lines into `logs` unchanged — only the
//! URL and the credentials point at the lake.
//!
//! **Bodies** ([`push`]): `Content-Type: application/x-protobuf`, a snappy block of a
//! `logproto.PushRequest` (`Content-Encoding` absent or `snappy`, as those shippers send
//! it); or `application/json`, the HTTP API's `{"streams": [{"stream": {…}, "values":
//! [[ns, line, {metadata}?]]}]}`, plain or gzip. Anything else is 415.
//!
//! **Rows.** One `logs` row per line, `source = 'loki'`: `ts` = the line's time (ns cut to
//! µs); `message` = the line (not UTF-8: stored lossily, its bytes in attr `raw_hex`);
//! `host` = the stream's `host` label; `unit` = its `unit` label, else its `job` label;
//! `priority` from a `level` (`detected_level`, `severity`, `lvl`) stream label or
//! structured metadata (`error` → 3, `warn` → 4, `info` → 6 …, as for OTLP severity text).
//! `attrs`: every other stream label under its name (the level label included), then each
//! structured-metadata pair under its name — under `metadata.<name>` when a stream label
//! has that name, so neither hides the other — and `lake.node`, the node whose token sent
//! it (as OTLP rows carry it).
//!
//! **Host.** A `host` label must be a node name the token's node may write for: the node
//! itself or one of its `[[nodes]] hosts` (400 naming the stream otherwise, the whole push
//! refused: [`super::policy`]). Without one (or when it names a loopback address or is not
//! a node name at all) the row's host is the token's node.
//!
//! **Auth.** The node's ingest token, as `Authorization: Bearer <token>` or as the password
//! of HTTP basic auth (user name free): Promtail's `basic_auth`, Docker's loki driver
//! (`loki-url=http://node:<token>@lake:7470/loki/api/v1/push`) and Fluent Bit's
//! `http_passwd` can only send the latter. `X-Scope-OrgID` (Loki's tenant) is ignored:
//! the lake has one tenant per node token.
//!
//! **Answers** (the shippers retry 429 and 5xx, and drop a batch on any other 4xx): 204
//! once every line is in the WAL (fsynced) and buffered; 401 for a missing or unknown
//! token; 415 for another content type or encoding; 413 past the size limit
//! ([`MAX_BODY`] or `ingest.max_body` if smaller; a snappy block's declared length is read
//! before anything is allocated, gzip stops inflating at the limit); 400 naming the stream
//! (and line) for an undecodable body, a stream without labels, a label given twice, a bad
//! label name or selector string, more than [`MAX_STREAMS`] streams or [`MAX_LINES`] lines,
//! and rows out of [`super::bounds`] or of the token's hosts; 503 (`Retry-After`) when the
//! ingest memory budget or buffer is full; 507 when the disk is.
//!
//! The rows are stored under the lake-assigned batch ids of the OTLP endpoints (one
//! sequence, [`super::otlp`]); delivery is at least once, as Loki's shippers define it.

pub(crate) mod fuzzing; // entry point of the fuzz target (crate::fuzzing)
pub(crate) mod push;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;

use lake_format::logs::{hex, LogRow, LogsBuilder};
use lake_format::rows::now_micros;
use lake_format::wire;
use lake_format::Table;

use super::budget::Reservation;
use super::error::ApiError;
use super::ingest;
use super::otlp::Otlp;
use super::policy::Sender;
use push::Stream;

/// Largest body, compressed and decompressed (or `ingest.max_body` if smaller). Promtail
/// and Alloy send at most `batchsize` (1 MiB by default) a request.
pub const MAX_BODY: usize = 32 << 20;
/// Most streams in one push.
pub const MAX_STREAMS: usize = 100_000;
/// Most lines in one push.
pub const MAX_LINES: usize = 100_000;
/// `source` of the rows.
pub const SOURCE: &str = "loki";
/// Bytes a row takes besides its text, for the memory budget.
const ROW_BYTES: usize = 96;
/// The limit, as 413 answers name it.
const LIMIT: &str = "the Loki push limit: ingest.max_body, at most 32 MiB";
/// Stream labels (then structured metadata) a line's priority is read from, in order.
const LEVEL_LABELS: [&str; 4] = ["level", "detected_level", "severity", "lvl"];

lake_format::metrics! {
    /// Counters of `/loki/api/v1/push` (its requests also count in the `lake_ingest_*` totals).
    pub struct LokiStats {
        /// Loki push requests stored (answered 204)
        pub requests: Counter("lake_loki_requests_total"),
        /// Loki log lines stored
        pub lines: Counter("lake_loki_lines_total"),
        /// Loki push requests refused with a 4xx other than 401
        pub rejected: Counter("lake_loki_rejected_total"),
    }
}

/// `POST /loki/api/v1/push`.
pub async fn push(State(s): State<Arc<Otlp>>, headers: HeaderMap, body: Body) -> Result<StatusCode, ApiError> {
    let result = try_push(&s, &headers, body).await;
    if let Err(e) = &result {
        s.ingest().count_refusal(e, &s.ingest().loki.rejected);
    }
    result
}

async fn try_push(s: &Otlp, headers: &HeaderMap, body: Body) -> Result<StatusCode, ApiError> {
    let path = s.ingest();
    let node = authorize(path, headers)?;
    let encoding = Encoding::of(headers)?;
    let max = path.max_body.min(MAX_BODY);
    let mut reservation = path.budget.reservation();
    let raw = ingest::read_body(headers, body, max, LIMIT, &mut reservation).await?;
    let sender = path.policy.sender(node);
    let now = now_micros();
    let days = path.policy.days(&Table::Logs.into(), now);
    let (prepared, _reservation) = tokio::task::spawn_blocking(move || {
        let prepared = prepare(encoding, &raw, max, &sender, days, now, &mut reservation);
        (prepared, reservation)
    })
    .await
    .map_err(|e| ApiError::internal(format!("Loki push decoder task failed: {e}")))?;
    let (ipc, lines) = prepared?;
    if let Some(ipc) = ipc {
        super::otlp::store(s, Table::Logs, ipc).await?;
    }
    path.loki.requests.add(1);
    path.loki.lines.add(lines);
    Ok(StatusCode::NO_CONTENT)
}

/// The node of the token, sent as a bearer token or as the basic-auth password (Loki's
/// push and `/v1/jobs`).
pub(crate) fn authorize(path: &ingest::Ingest, headers: &HeaderMap) -> Result<String, ApiError> {
    let basic = || {
        let password = crate::auth::basic_password(headers)?;
        path.auth.check(crate::auth::Role::Ingest, &password).and_then(|k| k.node)
    };
    match path.node_of(headers).or_else(basic) {
        Some(node) => Ok(node),
        None => {
            path.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
            Err(ApiError::unauthorized(
                "missing or unknown ingest token (Authorization: Bearer <node token>, or the node token as the \
                 basic-auth password)",
            ))
        }
    }
}

/// How the body is encoded, from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// A snappy block of a protobuf `PushRequest`.
    Protobuf,
    /// JSON, gzipped or not.
    Json { gzip: bool },
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Encoding, ApiError> {
        let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("<not text>").trim().to_ascii_lowercase());
        let ct = text(header::CONTENT_TYPE).unwrap_or_default();
        let media = ct.split(';').next().unwrap_or("").trim();
        let ce = text(header::CONTENT_ENCODING).filter(|e| !e.is_empty() && e != "identity");
        let unsupported = |what: String| Err(ApiError::unsupported_media_type(what));
        match (media, ce.as_deref()) {
            ("application/x-protobuf", None | Some("snappy")) => Ok(Encoding::Protobuf),
            ("application/json", None) => Ok(Encoding::Json { gzip: false }),
            ("application/json", Some("gzip" | "x-gzip")) => Ok(Encoding::Json { gzip: true }),
            ("application/x-protobuf", Some(e)) => unsupported(format!(
                "Content-Encoding {e:?} is not supported for protobuf; Loki protobuf pushes are snappy blocks"
            )),
            ("application/json", Some(e)) => {
                unsupported(format!("Content-Encoding {e:?} is not supported for JSON; send gzip or none"))
            }
            _ => unsupported(format!(
                "Content-Type {ct:?} is not supported; send application/x-protobuf (snappy) or application/json"
            )),
        }
    }
}

/// Decompresses (bounded), decodes, maps and checks a body, taking what it holds from the
/// ingest memory budget: the rows as Arrow IPC (`None` when there are none) and their
/// count. Blocking work.
pub(crate) fn prepare(
    encoding: Encoding,
    raw: &[u8],
    max: usize,
    sender: &Sender,
    days: super::bounds::Days,
    now: i64,
    reservation: &mut Reservation,
) -> Result<(Option<Bytes>, u64), ApiError> {
    // A plain JSON body is read where it is: copying it would hold it twice, the copy
    // outside the budget.
    let bytes: Cow<[u8]> = match encoding {
        Encoding::Protobuf => Cow::Owned(super::body::unsnappy(raw, max, LIMIT, reservation)?),
        Encoding::Json { gzip: true } => Cow::Owned(super::otlp::gunzip(raw, max, reservation)?),
        Encoding::Json { gzip: false } => Cow::Borrowed(raw),
    };
    // Decoded structures take several times their wire size.
    reservation.grow(bytes.len().saturating_mul(super::budget::OTLP_FACTOR))?;
    let streams = match encoding {
        Encoding::Protobuf => push::from_protobuf(&bytes),
        Encoding::Json { .. } => push::from_json(&bytes),
    }
    .map_err(ApiError::bad_request)?;
    drop(bytes);
    if streams.len() > MAX_STREAMS {
        return Err(ApiError::bad_request(format!(
            "{} streams in one push, more than {MAX_STREAMS}; send smaller batches",
            streams.len()
        )));
    }
    let lines: usize = streams.iter().map(|s| s.entries.len()).sum();
    if lines > MAX_LINES {
        return Err(ApiError::bad_request(format!(
            "{lines} lines in one push, more than {MAX_LINES}; send smaller batches (batchsize)"
        )));
    }
    // Every row repeats its stream's labels beside its line.
    let rows_bytes: usize = streams
        .iter()
        .map(|s| {
            let labels: usize = s.labels.iter().map(|(n, v)| n.len() + v.len()).sum();
            let lines: usize = s
                .entries
                .iter()
                .map(|e| e.line.len() + e.metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>())
                .sum();
            s.entries.len() * (ROW_BYTES + labels) + lines
        })
        .sum();
    reservation.grow(rows_bytes)?;
    let rows = map(&streams, &sender.node)?;
    let batches = std::slice::from_ref(&rows.batch);
    let checked = sender.check_rows(batches, now, days);
    if let Err(v) = checked {
        let (i, j) = rows.line_of[v.row];
        let column = if v.column == "host" { "host (the stream's host label)" } else { v.column.as_str() };
        return Err(ApiError::rows_refused(
            format!("stream {i} {}, line {j}: {column}: {}", describe(&streams[i]), v.message),
            &v,
        ));
    }
    let count = rows.batch.num_rows() as u64;
    if count == 0 {
        return Ok((None, 0));
    }
    let ipc = wire::encode(&rows.batch.schema(), batches)
        .map_err(|e| ApiError::internal(format!("encoding Loki rows: {e}")))?;
    Ok((Some(Bytes::from(ipc)), count))
}

/// Rows of a push, before the bounds.
struct Rows {
    batch: arrow_array::RecordBatch,
    /// (stream, line within it) of each row.
    line_of: Vec<(usize, usize)>,
}

/// One row per line (see the module docs); 400 for a stream without labels or with a
/// label twice.
fn map(streams: &[Stream], node: &str) -> Result<Rows, ApiError> {
    let mut b = LogsBuilder::new();
    let mut line_of = Vec::new();
    let mut seen = HashSet::new();
    for (i, stream) in streams.iter().enumerate() {
        if stream.labels.is_empty() {
            return Err(ApiError::bad_request(format!(
                "stream {i}: no labels; Loki streams need at least one (job, for example)"
            )));
        }
        seen.clear();
        if let Some((n, _)) = stream.labels.iter().find(|(n, _)| !seen.insert(n.as_str())) {
            return Err(ApiError::bad_request(format!("stream {i} {}: label {n:?} given twice", describe(stream))));
        }
        let label = |name: &str| stream.labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let host = super::policy::host_named(label("host"), node);
        let unit_label = if label("unit").is_some() { "unit" } else { "job" };
        let unit = label(unit_label);
        let stream_level = LEVEL_LABELS.iter().find_map(|l| label(l));
        let mut attrs: Vec<(Cow<str>, &str)> = Vec::new();
        for (j, e) in stream.entries.iter().enumerate() {
            attrs.clear();
            attrs.extend(
                stream
                    .labels
                    .iter()
                    .filter(|(n, _)| n != "host" && (unit.is_none() || n != unit_label))
                    .map(|(n, v)| (Cow::Borrowed(n.as_str()), v.as_str())),
            );
            for (k, v) in &e.metadata {
                let key = if seen.contains(k.as_str()) {
                    Cow::Owned(format!("metadata.{k}"))
                } else {
                    Cow::Borrowed(k.as_str())
                };
                attrs.push((key, v.as_str()));
            }
            let level = stream_level.or_else(|| {
                LEVEL_LABELS.iter().find_map(|l| e.metadata.iter().find(|(k, _)| k == l).map(|(_, v)| v.as_str()))
            });
            let raw_hex = e.raw.as_deref().map(hex);
            let row = LogRow {
                ts: micros(e.ns),
                host,
                source: SOURCE,
                unit,
                ident: None,
                pid: None,
                priority: level.and_then(super::otlp::priority_of_text),
                message: Some(&e.line),
                boot_id: None,
            };
            let extra = [("raw_hex", raw_hex.as_deref()), (super::otlp::NODE_KEY, Some(node))];
            let extra = extra.into_iter().filter_map(|(k, v)| Some((k, v?)));
            b.push(&row, attrs.iter().map(|(k, v)| (k.as_ref(), *v)).chain(extra));
            line_of.push((i, j));
        }
    }
    let batch = b.finish().map_err(|e| ApiError::internal(format!("building Loki rows: {e}")))?;
    Ok(Rows { batch, line_of })
}

/// Nanoseconds as µs (rounded down); times past i64 are caught by the bounds.
fn micros(ns: i128) -> i64 {
    i64::try_from(ns.div_euclid(1000)).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
}

/// A stream as `{label="value", …}`, cut short, for error messages.
fn describe(stream: &Stream) -> String {
    let labels: Vec<String> = stream.labels.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
    push::cut(&format!("{{{}}}", labels.join(", ")))
}
