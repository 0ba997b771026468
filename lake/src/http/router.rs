//! Every route of `lake serve`, in one table: its path, its method, its handler and the
//! token role it asks for. `server::run` builds the state ([`Surface`]) and calls
//! [`router`] once.
//!
//! The handlers check their role themselves (each answers 401/403 in its own words, and
//! ingest must learn the node from the token), except the admin routes, which share one
//! check as a layer ([`admin::check_auth`]). Roles, as in [`crate::auth`]:
//! - **ingest**: an ingest token; the node of the rows is the token's (`/v1/jobs` and Loki's
//!   push also take it as the basic-auth password).
//! - **read**: a read token; open when the lake has none (loopback deployments). `/mcp`
//!   also answers 401 with `WWW-Authenticate: Bearer`, as MCP clients expect.
//! - **alerts-read**: a read or an alerts token; **alerts-write**: an alerts or an admin one.
//! - **admin**: an admin token; with none configured, loopback peers only.
//! - **open**: no token (health, metrics, the UI's static files); `/v1/hooks/…` takes no
//!   lake token either: each `[[webhooks]]` entry checks its provider's own signature,
//!   password or URL secret.
//!
//! Around the routes: a request time limit answering 408 (`http.request_timeout`); the
//! server trims trailing slashes before routing, so `/grafana/` is `/grafana`.

use std::sync::Arc;
use std::time::Duration;

use axum::middleware;
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use lake_query::named::NamedQuery;
use lake_query::Engine;

use super::ingest::Ingest;
use super::{
    admin, custom, grafana, health, hooks, ingest, jobs, loki, mcp, metrics, otlp, remote_write, sql, tables, ui,
    Status,
};
use crate::alerts::http as alerts;
use crate::auth::Verifier;
use crate::maintenance::archive::Maintenance;

/// What the routes answer from, built once by `lake serve`.
#[derive(Debug)]
pub struct Surface {
    /// Ingest: the WAL, the buffers, the custom tables (and OTLP on top).
    pub ingest: Arc<Ingest>,
    /// `/health` and `/metrics`.
    pub status: Arc<Status>,
    /// The query engine of `/v1/sql`, `/v1/tables` and Grafana.
    pub engine: Arc<Engine>,
    /// The tokens in force.
    pub auth: Arc<Verifier>,
    /// Named queries (defaults included), for `/v1/sql` and Grafana.
    pub queries: Vec<NamedQuery>,
    /// The alerter's routes' state ([`crate::alerts::Alerts::routes`]).
    pub alerts: Arc<alerts::Routes>,
    /// Archive, restore, compaction and retention, for the admin API.
    pub maintenance: Arc<Maintenance>,
    /// Stops admin jobs at their next safe point (shutdown).
    pub cancel: CancellationToken,
    /// `http.request_timeout`.
    pub request_timeout: Duration,
    /// `[mcp]`: whether `/mcp` serves the MCP server, and its limits.
    pub mcp: mcp::McpConfig,
    /// `[[webhooks]]`: the hooks `/v1/hooks/{name}` takes.
    pub hooks: Arc<hooks::Hooks>,
    /// `[[jobs]]` and their recorder, for `/v1/jobs`.
    pub jobs: Arc<crate::jobs::Jobs>,
}

/// The lake's routes.
pub fn router(s: Surface) -> Router {
    let otlp = Arc::new(otlp::Otlp::new(Arc::clone(&s.ingest), Arc::clone(&s.status.otlp)));
    let tables = Arc::new(tables::Tables { engine: Arc::clone(&s.engine), auth: Arc::clone(&s.auth) });
    let sql = sql::Sql::new(Arc::clone(&s.engine), Arc::clone(&s.auth), s.queries.clone());
    let mcp_route = if s.mcp.enabled {
        let state = mcp::Mcp::new(
            Arc::clone(&s.engine),
            Arc::clone(&s.auth),
            s.queries.clone(),
            s.mcp,
            Arc::clone(&s.status.mcp),
        );
        get(mcp::get).post(mcp::post).delete(mcp::delete).with_state(state)
    } else {
        axum::routing::any(mcp::disabled)
    };
    let grafana = grafana::Grafana::new(s.engine, Arc::clone(&s.auth), s.queries);
    let ui = ui::Ui::new(Arc::clone(&s.auth));
    let admin = admin::Admin::new(s.maintenance, s.auth, s.cancel);
    let (ingest, status, alerts) = (s.ingest, s.status, s.alerts);
    // Every admin route goes through the same check first, even for a wrong method (401
    // before 405, as a route layer over the admin routes did).
    let admin_only = |m: MethodRouter<Arc<admin::Admin>>| {
        m.layer(middleware::from_fn_with_state(Arc::clone(&admin), admin::check_auth)).with_state(Arc::clone(&admin))
    };

    Router::new()
        // Ingest (ingest token).
        .route("/v1/ingest/{table}", post(ingest::ingest).with_state(Arc::clone(&ingest)))
        .route("/v1/ingest/json/{table}", post(custom::json).with_state(Arc::clone(&ingest)))
        .route("/v1/ingest/csv/{table}", post(custom::csv).with_state(Arc::clone(&ingest)))
        .route("/v1/logs", post(otlp::logs).with_state(Arc::clone(&otlp)))
        .route("/v1/metrics", post(otlp::metrics).with_state(Arc::clone(&otlp)))
        .route("/v1/traces", post(otlp::traces).with_state(Arc::clone(&otlp)))
        .route("/api/v1/write", post(remote_write::write).with_state(Arc::clone(&otlp)))
        .route("/loki/api/v1/push", post(loki::push).with_state(otlp))
        // Third parties' webhooks (open: each hook checks its own signature, password or
        // URL secret).
        .route("/v1/hooks/{name}", post(hooks::post).with_state(Arc::clone(&s.hooks)))
        .route("/v1/hooks/{name}/{secret}", post(hooks::post_with_secret).with_state(s.hooks))
        .route("/v1/jobs/{name}/{event}", get(jobs::report).post(jobs::report).with_state(s.jobs))
        // The lake's own state (open).
        .route("/health", get(health).with_state(Arc::clone(&status)))
        .route("/metrics", get(metrics).with_state(status))
        // Reading (read token).
        .route("/v1/tables", get(tables::tables).with_state(tables))
        .route("/v1/sql", post(sql::sql).with_state(sql))
        // The MCP server for AI agents (read token; 404 unless `[mcp] enabled`).
        .route("/mcp", mcp_route)
        // Alerts (alerts-read) and silences (alerts-read to list, alerts-write to change).
        .route("/v1/alerts", get(alerts::alerts).with_state(Arc::clone(&alerts)))
        .route("/v1/silences", get(alerts::silences).post(alerts::add_silence).with_state(Arc::clone(&alerts)))
        .route("/v1/silences/{id}", delete(alerts::remove_silence).with_state(alerts))
        // The web UI: static files (open); `/ui/auth` says whether the read API wants a token.
        .route("/", get(ui::index).with_state(Arc::clone(&ui)))
        .route("/ui", get(ui::index).with_state(Arc::clone(&ui)))
        .route("/ui/auth", get(ui::auth_state).with_state(Arc::clone(&ui)))
        .route("/ui/{*path}", get(ui::asset).with_state(ui))
        // The Grafana JSON datasource (read token).
        .route("/grafana", get(grafana::health).with_state(Arc::clone(&grafana)))
        .route("/grafana/metrics", post(grafana::metrics).with_state(Arc::clone(&grafana)))
        .route("/grafana/metric-payload-options", post(grafana::payload_options).with_state(Arc::clone(&grafana)))
        .route("/grafana/query", post(grafana::query).with_state(Arc::clone(&grafana)))
        .route("/grafana/variable", post(grafana::variable).with_state(Arc::clone(&grafana)))
        .route("/grafana/tag-keys", post(grafana::tag_keys).with_state(Arc::clone(&grafana)))
        .route("/grafana/tag-values", post(grafana::tag_values).with_state(Arc::clone(&grafana)))
        .route("/grafana/search", post(grafana::search).with_state(Arc::clone(&grafana)))
        .route("/grafana/annotations", post(grafana::annotations).with_state(grafana))
        // Archive, restore, compaction (admin).
        .route("/v1/admin/archive", admin_only(post(admin::archive)))
        .route("/v1/admin/restore", admin_only(post(admin::restore)))
        .route("/v1/admin/compact", admin_only(post(admin::compact)))
        .route("/v1/admin/archive/status", admin_only(get(admin::status)))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, s.request_timeout))
}
