//! The lake's HTTP surface: every route of `lake serve` is in one table, [`router()`],
//! with one error type ([`error::ApiError`]) and one body deadline ([`body`]).
//!
//! - ingest: [`ingest`] (catalog tables), [`custom`] (JSON and CSV into custom tables),
//!   [`otlp`] (OpenTelemetry logs, metrics and traces), [`remote_write`] (Prometheus
//!   remote_write), [`loki`] (Loki push), [`hooks`] (third parties' webhooks);
//! - reading: [`sql`] (`/v1/sql`, named queries), [`grafana`] (the Grafana JSON
//!   datasource), [`tables`] (`/v1/tables`), [`ui`] (the web UI), [`mcp`] (`/mcp`, the
//!   Model Context Protocol server for AI agents);
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
pub mod hooks;
pub mod ingest;
pub mod jobs;
pub mod loki;
pub mod mcp;
pub mod otlp;
pub mod policy;
pub mod refused;
pub mod remote_write;
mod router;
pub mod sql;
pub mod tables;
pub mod ui;

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
    /// The OTLP endpoints' counters.
    pub otlp: Arc<otlp::OtlpStats>,
    /// `/mcp`'s counters.
    pub mcp: Arc<mcp::McpStats>,
    /// The PostgreSQL protocol's counters (zero while `[pg]` is off).
    pub pg: Arc<crate::pg::PgStats>,
    /// `/v1/hooks`' counters.
    pub hooks: Arc<hooks::HookStats>,
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

/// Every owner's declared values ([`lake_format::metrics!`]) and the alerter's counters,
/// in the Prometheus text format.
async fn metrics(State(s): State<Arc<Status>>) -> impl IntoResponse {
    let samples = [
        s.ingest.stats.samples(),
        s.ingest.remote_write.samples(),
        s.ingest.loki.samples(),
        s.hooks.samples(),
        s.ingest.jobs.samples(),
        s.otlp.samples(),
        s.mcp.samples(),
        s.pg.samples(),
        s.ingest.budget.samples(),
        s.wal().samples(),
        s.writer.samples(),
        s.buffers.samples(),
        s.compaction.stats.samples(),
        s.archive.stats.samples(),
        s.auth.samples(),
        s.engine.samples(),
        s.health.heartbeat.samples(),
        s.connections.samples(),
    ];
    let mut out = String::new();
    for sample in samples.iter().flatten() {
        sample.write_prometheus(&mut out);
    }
    if let Some(rx) = s.alerts.get() {
        let snap = Arc::clone(&rx.borrow());
        for (k, v) in &snap.counters {
            let (name, help) = (format!("lake_alerts_{k}_total"), format!("alerting: {}", k.replace('_', " ")));
            lake_format::metrics::write_prometheus(&mut out, &name, &help, lake_format::metrics::Kind::Counter, *v);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
