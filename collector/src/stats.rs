//! The collector's own counters and gauges, shared by the spool, the shipper and the
//! sources through an `Arc<Stats>`, and shipped as `lake_collector_*` rows in `metrics`
//! (per-source counters carry a `source` label). Each value is declared once, with its
//! exported name and help, through `lake_format::metrics!`; the rows shipped are that
//! declaration walked, so a counter cannot exist without being shipped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

lake_format::metrics! {
    /// Counters of one source, shipped with the label `source=<name>`.
    pub struct SourceStats {
        /// Input units read: lines, journal entries, probes run.
        pub read: Counter("lake_collector_source_read_total"),
        /// Rows produced into the catalog tables.
        pub rows: Counter("lake_collector_source_rows_total"),
        /// Input that did not parse; kept raw (e.g. `caddy-unparsed` logs) where the source can.
        pub parse_errors: Counter("lake_collector_source_parse_errors_total"),
        /// Input lost for good (too large to keep, unreadable); each one is also logged.
        pub dropped: Counter("lake_collector_source_dropped_total"),
        /// Failures of the source itself: a subprocess that died, a file that vanished.
        pub errors: Counter("lake_collector_source_errors_total"),
        /// Times the source waited because the spool was full (it holds its position).
        pub paused: Counter("lake_collector_source_paused_total"),
        /// Followed files that rolled (renamed, compressed or deleted by a log rotation).
        pub rotations: Counter("lake_collector_source_rotations_total"),
        /// Rolled files read that were not being followed: rolled while the collector was down
        /// or between two polls, read whole or from the position the collector had in them.
        pub rolled_files: Counter("lake_collector_source_rolled_files_total"),
        /// Messages cut to the source's size bound and kept, marked `truncated` (syslog).
        pub truncated: Counter("lake_collector_source_truncated_total"),
        /// Connections the source refused or closed for its limits: too many at once, idle
        /// too long (syslog over TCP).
        pub refused: Counter("lake_collector_source_refused_total"),
    }
}

lake_format::metrics! {
    /// Self-telemetry. Counters only grow; gauges are overwritten by their owner.
    pub struct Stats {
        /// Bytes of spool segment files on disk.
        pub spool_bytes: Gauge("lake_collector_spool_bytes"),
        /// Records in the spool not yet acknowledged by the lake.
        pub spool_records: Gauge("lake_collector_spool_records"),
        /// Batches acknowledged by the lake.
        pub shipped_batches: Counter("lake_collector_shipped_batches_total"),
        /// Failed ingest attempts (each retry counts).
        pub ship_errors: Counter("lake_collector_ship_errors_total"),
        /// Batches lost without reaching the lake: dropped by the size bound, unreadable.
        pub dropped_batches: Counter("lake_collector_dropped_batches_total"),
        /// Batches the lake refused for good and that were moved to `rejected/`.
        pub rejected_batches: Counter("lake_collector_rejected_batches_total"),
        /// Torn or corrupt spool tails cut off when the spool was opened.
        pub spool_truncations: Counter("lake_collector_spool_truncations_total"),
        /// Unshipped records lost to damage inside a spool segment that was not the last
        /// (found when the spool was opened; the intact records around them are kept).
        pub spool_damaged_records: Counter("lake_collector_spool_damaged_records_total"),
        /// Ingest attempts the lake refused for this node's configuration: token (401), node
        /// name (403), clock. The batch stays in the spool and is tried again.
        pub config_errors: Counter("lake_collector_config_errors_total"),
        /// Rejected batches deleted from `rejected/` to keep it within its bound.
        pub rejected_evicted: Counter("lake_collector_rejected_evicted_total"),
        /// Heartbeat pings that failed.
        pub heartbeat_errors: Counter("lake_collector_heartbeat_errors_total"),
        /// Host samples that failed (a source read error).
        pub sample_errors: Counter("lake_collector_sample_errors_total"),
        /// Time the last acknowledged batch took from send to 200, microseconds.
        pub ship_latency_us: Gauge("lake_collector_ship_latency_microseconds"),
    }
    also {
        sources: Mutex<Vec<(&'static str, Arc<SourceStats>)>>,
    }
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

    /// Every value with the metric name (and source label) it is shipped under: the
    /// declared metrics, walked, so none can be left out.
    pub fn snapshot(&self) -> Vec<StatRow> {
        let mut rows: Vec<StatRow> = self.metrics().into_iter().map(|m| (m.desc().name, None, m.get())).collect();
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        for (name, s) in sources.iter() {
            rows.extend(s.metrics().into_iter().map(|m| (m.desc().name, Some(*name), m.get())));
        }
        rows
    }
}
