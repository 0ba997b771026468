//! Test helpers of the source tests: a context over a temporary spool, what it holds,
//! record batches as JSON rows.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde_json::{json, Map, Value};

use super::SourceContext;
use crate::spool::{SpoolHandle, SpoolOptions};
use crate::stats::Stats;

/// A context whose spool lives in `dir`, node `test-node`.
pub(crate) async fn context(dir: &std::path::Path) -> SourceContext {
    let stats = Arc::new(Stats::default());
    let opts = SpoolOptions { max_size: 256 << 20, segment_size: 8 << 20 };
    let spool = SpoolHandle::open(dir.join("spool"), opts, Arc::clone(&stats)).await.unwrap();
    SourceContext { node: Arc::from("test-node"), spool, stats }
}

/// One spooled record: table and body.
#[derive(Debug, Clone)]
pub(crate) struct Spooled {
    pub(crate) table: String,
    pub(crate) body: Vec<u8>,
}

impl Spooled {
    /// Rows of an Arrow body as JSON.
    pub(crate) fn rows(&self) -> Vec<Value> {
        let (_, batches) = lake_format::wire::decode(&self.body).unwrap();
        batches.iter().flat_map(rows).collect()
    }

    /// Lines of an NDJSON body as JSON.
    pub(crate) fn lines(&self) -> Vec<Value> {
        let text = std::str::from_utf8(&self.body).unwrap();
        assert!(text.ends_with('\n'), "every NDJSON line ends in a newline");
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// Takes (acknowledges) every record spooled so far.
pub(crate) async fn drain(ctx: &SourceContext) -> Vec<Spooled> {
    let mut out = Vec::new();
    while let Some(rec) = ctx.spool.peek().await.unwrap() {
        out.push(Spooled { table: rec.table.clone(), body: rec.body.clone() });
        ctx.spool.ack(rec.seq).await.unwrap();
    }
    out
}

/// Drains until `done` holds for everything drained so far, or panics after `secs`.
pub(crate) async fn drain_until(ctx: &SourceContext, secs: u64, done: impl Fn(&[Spooled]) -> bool) -> Vec<Spooled> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut all = Vec::new();
    loop {
        all.extend(drain(ctx).await);
        if done(&all) {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out; spooled so far: {:?}",
            all.iter().map(|s| &s.table).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every row of `batch` as a JSON object; maps become objects, nulls `null`.
pub(crate) fn rows(batch: &RecordBatch) -> Vec<Value> {
    let schema = batch.schema();
    (0..batch.num_rows())
        .map(|r| {
            let mut row = Map::new();
            for (f, col) in schema.fields().iter().zip(batch.columns()) {
                let v = if col.is_null(r) {
                    Value::Null
                } else {
                    match f.data_type() {
                        DataType::Timestamp(..) => json!(col.as_primitive::<TimestampMicrosecondType>().value(r)),
                        DataType::Utf8 => json!(col.as_string::<i32>().value(r)),
                        DataType::Int64 => json!(col.as_primitive::<Int64Type>().value(r)),
                        DataType::Float64 => {
                            let v = col.as_primitive::<Float64Type>().value(r);
                            if v.is_finite() {
                                json!(v)
                            } else {
                                json!(v.to_string())
                            }
                        }
                        DataType::Boolean => json!(col.as_boolean().value(r)),
                        DataType::Map(..) => {
                            let e = col.as_map().value(r);
                            let keys = e.column(0).as_string::<i32>();
                            let vals = e.column(1).as_string::<i32>();
                            let mut o = Map::new();
                            for i in 0..e.len() {
                                o.insert(keys.value(i).to_string(), json!(vals.value(i)));
                            }
                            Value::Object(o)
                        }
                        other => panic!("column {} of type {other} not handled", f.name()),
                    }
                };
                row.insert(f.name().clone(), v);
            }
            Value::Object(row)
        })
        .collect()
}
