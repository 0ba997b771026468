//! A lake-collector spool read back: every record, oldest first, as JSON rows, acknowledged
//! as it is read (so a test can read what arrived since its last look).

use std::path::Path;
use std::sync::Arc;

use lake_collector::spool::{SpoolHandle, SpoolOptions};
use lake_collector::stats::Stats;
use serde_json::Value;

use crate::table_rows;

/// One spooled record: its sequence number, table and rows (each row with a `"table"` key
/// too, so rows of several records can be pooled and still told apart).
pub type Record = (u64, String, Vec<Value>);

/// Every record of the spool in `dir` (oldest first).
pub async fn spooled(dir: &Path) -> Vec<Record> {
    spooled_tables(dir, |_| true).await
}

/// The records of the tables `keep` selects (a collector's spool also holds its other
/// sources' rows, e.g. `inventory`); the others are acknowledged unread.
pub async fn spooled_tables(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<Record> {
    let opts = SpoolOptions { max_size: 1 << 30, segment_size: 8 << 20 };
    let spool = SpoolHandle::open(dir.to_path_buf(), opts, Arc::new(Stats::default())).await.unwrap();
    let mut out = Vec::new();
    while let Some(rec) = spool.peek().await.unwrap() {
        if keep(&rec.table) {
            let (_, batches) = lake_format::wire::decode(&rec.body).unwrap();
            let rows = batches.iter().flat_map(|b| table_rows(&rec.table, b)).collect();
            out.push((rec.seq, rec.table.clone(), rows));
        }
        spool.ack(rec.seq).await.unwrap();
    }
    out
}
