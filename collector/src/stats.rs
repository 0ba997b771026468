//! The collector's own counters and gauges, shared by the spool, the shipper and the
//! sources through an `Arc<Stats>`, and shipped as `collector_*` rows in `metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Self-telemetry. Counters only grow; gauges are overwritten by their owner.
#[derive(Debug, Default)]
pub struct Stats {
    /// Bytes of spool segment files on disk (gauge).
    pub spool_bytes: AtomicU64,
    /// Records in the spool not yet acknowledged by the lake (gauge).
    pub spool_records: AtomicU64,
    /// Batches acknowledged by the lake.
    pub shipped_batches: AtomicU64,
    /// Failed ingest attempts (each retry counts).
    pub ship_errors: AtomicU64,
    /// Batches lost without reaching the lake: dropped by the size bound, unreadable.
    pub dropped_batches: AtomicU64,
    /// Batches the lake refused for good and that were moved to `rejected/`.
    pub rejected_batches: AtomicU64,
    /// Torn or corrupt spool tails cut off when the spool was opened.
    pub spool_truncations: AtomicU64,
    /// Host samples that failed (a source read error).
    pub sample_errors: AtomicU64,
}

impl Stats {
    /// Adds `n` to a counter.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub(crate) fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    /// Every value with the metric name it is shipped under.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("collector_spool_bytes", get(&self.spool_bytes)),
            ("collector_spool_records", get(&self.spool_records)),
            (
                "collector_shipped_batches_total",
                get(&self.shipped_batches),
            ),
            ("collector_ship_errors_total", get(&self.ship_errors)),
            (
                "collector_dropped_batches_total",
                get(&self.dropped_batches),
            ),
            (
                "collector_rejected_batches_total",
                get(&self.rejected_batches),
            ),
            (
                "collector_spool_truncations_total",
                get(&self.spool_truncations),
            ),
            ("collector_sample_errors_total", get(&self.sample_errors)),
        ]
    }
}
