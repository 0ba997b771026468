//! The collector's own counters and gauges, shared by the spool, the shipper and the
//! sources through an `Arc<Stats>`, and shipped as `lake_collector_*` rows in `metrics`
//! (per-source counters carry a `source` label).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters of one source, shipped with the label `source=<name>`.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Input units read: lines, journal entries, probes run.
    pub read: AtomicU64,
    /// Rows produced into the catalog tables.
    pub rows: AtomicU64,
    /// Input that did not parse; kept raw (e.g. `caddy-unparsed` logs) where the source can.
    pub parse_errors: AtomicU64,
    /// Input lost for good (too large to keep, unreadable); each one is also logged.
    pub dropped: AtomicU64,
    /// Failures of the source itself: a subprocess that died, a file that vanished.
    pub errors: AtomicU64,
    /// Times the source waited because the spool was full (it holds its position).
    pub paused: AtomicU64,
    /// Followed files that rolled (renamed, compressed or deleted by a log rotation).
    pub rotations: AtomicU64,
    /// Rolled files read that were not being followed: rolled while the collector was down
    /// or between two polls, read whole or from the position the collector had in them.
    pub rolled_files: AtomicU64,
}

impl SourceStats {
    fn snapshot(&self) -> [(&'static str, u64); 8] {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("lake_collector_source_read_total", get(&self.read)),
            ("lake_collector_source_rows_total", get(&self.rows)),
            ("lake_collector_source_parse_errors_total", get(&self.parse_errors)),
            ("lake_collector_source_dropped_total", get(&self.dropped)),
            ("lake_collector_source_errors_total", get(&self.errors)),
            ("lake_collector_source_paused_total", get(&self.paused)),
            ("lake_collector_source_rotations_total", get(&self.rotations)),
            ("lake_collector_source_rolled_files_total", get(&self.rolled_files)),
        ]
    }
}

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
    /// Unshipped records lost to damage inside a spool segment that was not the last
    /// (found when the spool was opened; the intact records around them are kept).
    pub spool_damaged_records: AtomicU64,
    /// Ingest attempts the lake refused for this node's configuration: token (401), node
    /// name (403), clock. The batch stays in the spool and is tried again.
    pub config_errors: AtomicU64,
    /// Rejected batches deleted from `rejected/` to keep it within its bound.
    pub rejected_evicted: AtomicU64,
    /// Heartbeat pings that failed.
    pub heartbeat_errors: AtomicU64,
    /// Host samples that failed (a source read error).
    pub sample_errors: AtomicU64,
    /// Time the last acknowledged batch took from send to 200, microseconds (gauge).
    pub ship_latency_us: AtomicU64,
    sources: Mutex<Vec<(&'static str, Arc<SourceStats>)>>,
}

/// One self-telemetry row: metric name, optional `source` label, value.
pub type StatRow = (&'static str, Option<&'static str>, u64);

impl Stats {
    /// Adds `n` to a counter.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub(crate) fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    /// The counters of a source, created on first use.
    pub fn source(&self, name: &'static str) -> Arc<SourceStats> {
        let mut all = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, s)) = all.iter().find(|(n, _)| *n == name) {
            return Arc::clone(s);
        }
        let s = Arc::new(SourceStats::default());
        all.push((name, Arc::clone(&s)));
        s
    }

    /// Every value with the metric name (and source label) it is shipped under.
    pub fn snapshot(&self) -> Vec<StatRow> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut rows: Vec<StatRow> = self.totals(get).into_iter().map(|(n, v)| (n, None, v)).collect();
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        for (name, s) in sources.iter() {
            rows.extend(s.snapshot().into_iter().map(|(n, v)| (n, Some(*name), v)));
        }
        rows
    }

    fn totals(&self, get: impl Fn(&AtomicU64) -> u64) -> Vec<(&'static str, u64)> {
        vec![
            ("lake_collector_spool_bytes", get(&self.spool_bytes)),
            ("lake_collector_spool_records", get(&self.spool_records)),
            ("lake_collector_shipped_batches_total", get(&self.shipped_batches)),
            ("lake_collector_ship_errors_total", get(&self.ship_errors)),
            ("lake_collector_dropped_batches_total", get(&self.dropped_batches)),
            ("lake_collector_rejected_batches_total", get(&self.rejected_batches)),
            ("lake_collector_spool_truncations_total", get(&self.spool_truncations)),
            ("lake_collector_spool_damaged_records_total", get(&self.spool_damaged_records)),
            ("lake_collector_config_errors_total", get(&self.config_errors)),
            ("lake_collector_rejected_evicted_total", get(&self.rejected_evicted)),
            ("lake_collector_heartbeat_errors_total", get(&self.heartbeat_errors)),
            ("lake_collector_sample_errors_total", get(&self.sample_errors)),
            ("lake_collector_ship_latency_microseconds", get(&self.ship_latency_us)),
        ]
    }
}
