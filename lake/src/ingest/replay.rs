//! WAL replay at start: records of batches not yet committed to Parquet go back into the
//! buffers, so rows acknowledged before a crash or stop are queryable and flushed again.
//!
//! In: the records [`Wal::open`](super::wal::Wal::open) found and the committed
//! [`State`]. Out: the buffers and the admitted-batch marks filled, with counts of what
//! was replayed and what was skipped (already committed, bad id, no longer decodes).

use lake_format::BatchId;

use super::state::{Batches, State};
use super::wal::WalRecord;
use super::writer::Buffers;
use crate::http;

/// A WAL record of a custom table: its Arrow IPC conformed to the table's schema now
/// (which can only have gained columns since the record was written).
fn decode_custom(
    registry: &crate::custom::Registry,
    table: &str,
    body: &[u8],
) -> Result<Vec<arrow_array::RecordBatch>, String> {
    let schema = registry.get(table).ok_or_else(|| format!("custom table {table} has no schema"))?.arrow_schema();
    let (_, batches) = lake_format::wire::decode(body).map_err(|e| e.to_string())?;
    batches.iter().map(|b| crate::custom::conform_to(&schema, b).map_err(|e| e.to_string())).collect()
}

/// Replays WAL records not yet committed into the buffers.
pub(crate) fn replay(
    records: Vec<WalRecord>,
    state: &State,
    buffers: &Buffers,
    batches: &Batches,
    registry: &crate::custom::Registry,
) -> (usize, usize) {
    let (mut replayed, mut skipped) = (0, 0);
    for rec in records {
        let Some(id) = rec.batch_id.parse::<BatchId>().ok() else {
            tracing::error!(batch = %rec.batch_id, table = %rec.table, "wal record with a bad id skipped");
            skipped += 1;
            continue;
        };
        if state.contains(&id) {
            skipped += 1;
            continue;
        }
        let table = lake_format::custom::TableRef::parse(&rec.table);
        let decoded = match &table {
            lake_format::custom::TableRef::Builtin(t) => http::ingest::decode(*t, &rec.body).map_err(|e| e.to_string()),
            lake_format::custom::TableRef::Custom(name) => decode_custom(registry, name, &rec.body),
        };
        match decoded {
            Ok(b) => {
                buffers.push(table, b);
                batches.logged(&id);
                replayed += 1;
            }
            Err(e) => {
                tracing::error!(batch = %id, %e, "wal record no longer decodes; skipped");
                skipped += 1;
            }
        }
    }
    (replayed, skipped)
}
