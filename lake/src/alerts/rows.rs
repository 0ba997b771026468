//! `alerts` rows into the lake through the ingest path (WAL append + fsync, buffers,
//! batch-id marks), under lake-assigned batch ids `_alerts/<epoch>/<seq>`.
//!
//! `epoch` is above every `_alerts` epoch the lake remembers and every one still in the
//! outbox, so ids never repeat across restarts; within an epoch, batches are stored in
//! `seq` order and a failed one is retried before any later one, because the lake
//! remembers a high-water mark per (node, epoch): storing seq 5 before seq 4 would make
//! 4 look already stored.

use std::sync::Arc;

use bytes::Bytes;

use lake_format::rows::TableBuilder;
use lake_format::{wire, BatchId, Table};
use lake_query::alerts::state::AlertRow;

use crate::http::ingest::{self, Ingest};
use crate::ingest::state::Admission;

/// Node name of the batch ids of alert rows.
pub const ID_NODE: &str = "_alerts";

/// The epoch for this process's new batch ids.
pub fn epoch(ingest: &Ingest, outbox: &[super::store::Outbox], now_micros: i64) -> u64 {
    let known = ingest.batches.marks().get(ID_NODE).and_then(|e| e.keys().next_back().copied()).unwrap_or(0);
    let pending = outbox.iter().filter_map(|o| o.batch.parse::<BatchId>().ok()).map(|b| b.epoch).max().unwrap_or(0);
    u64::try_from(now_micros).unwrap_or(0).max(known.max(pending).saturating_add(1))
}

/// The IPC body of rows.
pub fn encode(rows: &[AlertRow]) -> Result<Bytes, String> {
    let mut b = TableBuilder::new(Table::Alerts);
    let col = |b: &TableBuilder, n: &str| b.column(n).ok_or_else(|| format!("alerts has no column {n}"));
    let (ts, host, rule, state, value, labels, severity, message, channels) = (
        col(&b, "ts")?,
        col(&b, "host")?,
        col(&b, "rule")?,
        col(&b, "state")?,
        col(&b, "value")?,
        col(&b, "labels")?,
        col(&b, "severity")?,
        col(&b, "message")?,
        col(&b, "channels")?,
    );
    for r in rows {
        b.ts(ts, r.ts);
        b.text(host, Some(&r.host));
        b.text(rule, Some(&r.rule));
        b.text(state, Some(&r.state));
        b.float(value, r.value);
        b.map(labels, r.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        b.text(severity, r.severity.as_deref());
        b.text(message, Some(&r.message));
        b.list(channels, r.channels.iter().map(String::as_str));
        b.end_row();
    }
    let batch = b.finish().map_err(|e| e.to_string())?;
    wire::encode(&batch.schema(), &[batch]).map(Bytes::from).map_err(|e| e.to_string())
}

/// Stores one outbox entry: `Ok` once its rows are durable in the WAL (now or before).
pub async fn store(ingest: &Arc<Ingest>, batch: &str, rows: &[AlertRow]) -> Result<(), String> {
    let id: BatchId = batch.parse().map_err(|e| format!("batch id {batch}: {e}"))?;
    match ingest.batches.admit(&id) {
        Admission::New => {}
        Admission::Duplicate => return Ok(()),
        Admission::InFlight => return Err(format!("batch {batch} is being stored")),
    }
    let body = match encode(rows) {
        Ok(b) => b,
        Err(e) => {
            ingest.batches.release(&id);
            return Err(e);
        }
    };
    // `ingest::store` releases the admission itself when it fails.
    ingest::store(ingest, Table::Alerts, &id, body).await.map(|_| ()).map_err(|e| format!("{} {e:?}", e.status()))
}
