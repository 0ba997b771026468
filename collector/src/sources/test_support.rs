//! Test helpers of the sources' unit tests: a context over a temporary spool and what it
//! holds. Kept here, `#[cfg(test)]`, rather than in lake-test-support: a unit test's
//! `SourceContext` is this crate's, not the one a dev-dependency would link.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

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
        batches.iter().flat_map(lake_test_support::batch_to_json).collect()
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
