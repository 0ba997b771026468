//! The lake's HTTP surface: every route of `lake serve` is in one table, [`router()`],
//! with one error type ([`error::ApiError`]) and one body deadline ([`body`]).
//!
//! - ingest: [`ingest`] (catalog tables), [`custom`] (JSON and CSV into custom tables),
//!   [`otlp`] (OpenTelemetry logs and metrics), [`remote_write`] (Prometheus remote_write);
//! - reading: [`sql`] (`/v1/sql`, named queries), [`grafana`] (the Grafana JSON
//!   datasource), [`tables`] (`/v1/tables`), [`ui`] (the web UI);
//! - alerts and silences: `crate::alerts::http`; archive, restore, compaction: [`admin`];
//! - the lake's own state: `/health` and `/metrics`, here.
//!
//! `/health` answers 200 with the lake's state and a `checks` object (engine, wal,
//! flusher, alerts: [`crate::health`]) while every check passes, and 503 with the same
//! body, `"status": "failing"` and the `reasons`, while one does not.

pub mod admin;
pub mod body;
pub mod bounds;
pub mod budget;
pub mod conns;
pub mod custom;
pub mod error;
pub mod grafana;
pub mod ingest;
pub mod otlp;
pub mod policy;
pub mod refused;
pub mod remote_write;
mod router;
pub mod sql;
pub mod tables;
pub mod ui;

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::ingest::wal::WalStats;
use crate::ingest::writer::{Buffers, WriterStats};
use ingest::Ingest;
pub use router::{router, Surface};

/// What `/health` and `/metrics` report on.
#[derive(Debug)]
pub struct Status {
    /// Ingest endpoint state and counters.
    pub ingest: Arc<Ingest>,
    /// Writer counters.
    pub writer: Arc<WriterStats>,
    /// Buffered rows.
    pub buffers: Arc<Buffers>,
    /// When the server started.
    pub started: Instant,
    /// Compaction counters.
    pub compaction: Arc<crate::maintenance::compact::Compactor>,
    /// Archive, restore and retention counters.
    pub archive: Arc<crate::maintenance::archive::Maintenance>,
    /// The alerter's snapshots (counters), once it runs.
    pub alerts: std::sync::OnceLock<tokio::sync::watch::Receiver<Arc<crate::alerts::api::Snapshot>>>,
    /// Tokens file reloads.
    pub auth: Arc<crate::auth::AuthStats>,
    /// The query engine: queries, refusals, health probes and rebuilds.
    pub engine: Arc<lake_query::Engine>,
    /// The checks of `/health`, and the heartbeat's counters.
    pub health: Arc<crate::health::Health>,
    /// Open connections and the connection cap.
    pub connections: Arc<conns::Connections>,
}

impl Status {
    fn wal(&self) -> &WalStats {
        self.ingest.wal.stats()
    }
}

async fn health(State(s): State<Arc<Status>>) -> impl IntoResponse {
    let checks = s.health.check().await;
    let (rows, bytes, age) = s.buffers.usage();
    let mut body = json!({
        "status": if checks.ok() { "ok" } else { "failing" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": s.started.elapsed().as_secs(),
        "buffered_rows": rows,
        "buffered_bytes": bytes,
        "oldest_buffered_seconds": age.map(|a| a.as_secs_f64()),
        "wal_bytes": s.wal().bytes.load(Ordering::Relaxed),
        "checks": checks,
    });
    if checks.ok() {
        return (axum::http::StatusCode::OK, Json(body));
    }
    body["reasons"] = json!(checks.reasons());
    (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(body))
}

async fn metrics(State(s): State<Arc<Status>>) -> impl IntoResponse {
    let i = &s.ingest.stats;
    let w = &s.writer;
    let wal = s.wal();
    let (rows, bytes, _) = s.buffers.usage();
    let c = &s.compaction.stats;
    let a = &s.archive.stats;
    let t = &s.auth;
    let q = s.engine.stats();
    let hb = &s.health.heartbeat;
    let (budget, cn) = (&s.ingest.budget, &s.connections);
    let counters: &[(&str, &str, u64)] = &[
        ("lake_ingest_batches_total", "batches stored", i.batches.load(Ordering::Relaxed)),
        ("lake_ingest_rows_total", "rows stored", i.rows.load(Ordering::Relaxed)),
        ("lake_ingest_bytes_total", "ingest body bytes stored", i.bytes.load(Ordering::Relaxed)),
        (
            "lake_ingest_duplicates_total",
            "batches acknowledged again without storing",
            i.duplicates.load(Ordering::Relaxed),
        ),
        (
            "lake_ingest_unauthorized_total",
            "requests with a missing or wrong token",
            i.unauthorized.load(Ordering::Relaxed),
        ),
        ("lake_ingest_rejected_total", "malformed requests refused", i.rejected.load(Ordering::Relaxed)),
        ("lake_ingest_overloaded_total", "requests answered 503", i.overloaded.load(Ordering::Relaxed)),
        ("lake_wal_appends_total", "records appended to the WAL", wal.appends.load(Ordering::Relaxed)),
        ("lake_wal_fsyncs_total", "WAL fsyncs", wal.fsyncs.load(Ordering::Relaxed)),
        (
            "lake_wal_truncated_bytes_total",
            "bytes cut from torn WAL tails at start",
            wal.truncated_bytes.load(Ordering::Relaxed),
        ),
        (
            "lake_wal_corrupt_bytes_total",
            "damaged WAL bytes skipped at start, the records after them salvaged",
            wal.corrupt_bytes.load(Ordering::Relaxed),
        ),
        ("lake_wal_errors_total", "WAL appends whose write or fsync failed", wal.errors.load(Ordering::Relaxed)),
        ("lake_flushes_total", "flushes committed", w.flushes.load(Ordering::Relaxed)),
        ("lake_flush_errors_total", "flushes failed (rows kept, retried)", w.flush_errors.load(Ordering::Relaxed)),
        ("lake_rows_written_total", "rows written to Parquet", w.rows_written.load(Ordering::Relaxed)),
        ("lake_files_written_total", "Parquet files committed", w.files_written.load(Ordering::Relaxed)),
        ("lake_wal_bytes", "bytes in WAL segments", wal.bytes.load(Ordering::Relaxed)),
        (
            "lake_ingest_lenient_values_total",
            "values of lenient custom tables kept in _extra",
            i.lenient_values.load(Ordering::Relaxed),
        ),
        (
            "lake_ingest_case_collisions_total",
            "values of custom tables kept in _extra because their name differed only in case from a column's",
            i.case_collisions.load(Ordering::Relaxed),
        ),
        ("lake_compaction_passes_total", "compaction passes run", c.passes.load(Ordering::Relaxed)),
        (
            "lake_compaction_files_written_total",
            "merged files written by compaction",
            c.files_written.load(Ordering::Relaxed),
        ),
        ("lake_compaction_files_merged_total", "small files merged away", c.files_merged.load(Ordering::Relaxed)),
        (
            "lake_compaction_failures_total",
            "compaction bins that failed (their files kept)",
            c.failures.load(Ordering::Relaxed),
        ),
        (
            "lake_archive_files_uploaded_total",
            "files uploaded to the archive and verified",
            a.files_uploaded.load(Ordering::Relaxed),
        ),
        (
            "lake_archive_bytes_uploaded_total",
            "bytes uploaded to the archive and verified",
            a.bytes_uploaded.load(Ordering::Relaxed),
        ),
        (
            "lake_archive_files_restored_total",
            "files restored from the archive",
            a.files_restored.load(Ordering::Relaxed),
        ),
        (
            "lake_archive_failures_total",
            "archive, restore and retention jobs that failed",
            a.failures.load(Ordering::Relaxed),
        ),
        ("lake_auth_reloads_total", "tokens file reloads installed", t.reloads.load(Ordering::Relaxed)),
        (
            "lake_auth_reload_errors_total",
            "tokens file reloads refused as invalid (tokens in force kept)",
            t.reload_errors.load(Ordering::Relaxed),
        ),
        ("lake_engine_queries_total", "queries started (SQL API, Grafana, web UI, alert rules)", q.queries),
        ("lake_engine_timeouts_total", "queries interrupted at the time limit", q.timeouts),
        ("lake_engine_cancelled_total", "streamed queries interrupted because their client went away", q.cancelled),
        ("lake_engine_running", "queries running now", q.running),
        ("lake_engine_refused_total", "statements refused by the read check (403)", q.refused),
        ("lake_engine_probe_failures_total", "health probes (SELECT 1 after a query) that failed", q.probe_failures),
        ("lake_engine_rebuilds_total", "query engine databases replaced after a failed health probe", q.rebuilds),
        (
            "lake_heartbeat_pings_total",
            "heartbeat success pings the monitor accepted",
            hb.pings.load(Ordering::Relaxed),
        ),
        (
            "lake_heartbeat_fail_pings_total",
            "heartbeat failure pings the monitor accepted",
            hb.fail_pings.load(Ordering::Relaxed),
        ),
        (
            "lake_heartbeat_errors_total",
            "heartbeat pings that failed (no answer, time-out, not 2xx)",
            hb.errors.load(Ordering::Relaxed),
        ),
        (
            "lake_heartbeat_skipped_total",
            "rounds whose heartbeat ping was skipped, the previous one still out",
            hb.skipped.load(Ordering::Relaxed),
        ),
        (
            "lake_flush_failures_in_a_row",
            "flushes failed since the last one that succeeded",
            w.consecutive_failures.load(Ordering::Relaxed),
        ),
        (
            "lake_ingest_decode_budget_refused_total",
            "ingest requests refused for the decode memory budget (503, or 413 when one needs more than all of it)",
            budget.refused.load(Ordering::Relaxed),
        ),
        (
            "lake_ingest_decode_memory_bytes",
            "memory held by ingest requests receiving and decoding bodies",
            budget.used() as u64,
        ),
        ("lake_ingest_decode_memory_limit_bytes", "ingest.decode_memory", budget.limit() as u64),
        ("lake_http_connections_accepted_total", "connections accepted", cn.accepted.load(Ordering::Relaxed)),
        (
            "lake_http_connections_evicted_total",
            "idle connections closed to make room under http.max_connections",
            cn.evicted.load(Ordering::Relaxed),
        ),
        ("lake_http_connections", "open connections (at most http.max_connections)", cn.open() as u64),
    ];
    let mut out = String::new();
    for &(name, help, v) in counters {
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
    for m in i.remote_write.metrics() {
        let d = m.desc();
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}\n{} {}",
            d.name,
            d.help(),
            d.name,
            d.kind.as_str(),
            d.name,
            m.get()
        );
    }
    if let Some(rx) = s.alerts.get() {
        let snap = Arc::clone(&rx.borrow());
        for (k, v) in &snap.counters {
            let name = format!("lake_alerts_{k}_total");
            let _ = writeln!(out, "# HELP {name} alerting: {}\n# TYPE {name} counter\n{name} {v}", k.replace('_', " "));
        }
    }
    let _ = writeln!(out, "# HELP lake_buffered_rows rows waiting for Parquet\n# TYPE lake_buffered_rows gauge\nlake_buffered_rows {rows}");
    let _ = writeln!(out, "# HELP lake_buffered_bytes memory of rows waiting for Parquet\n# TYPE lake_buffered_bytes gauge\nlake_buffered_bytes {bytes}");
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
