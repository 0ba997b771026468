//! Reading the lake: DuckDB over the committed Parquet files and the rows not yet flushed.
//!
//! - [`engine`]: one in-memory DuckDB database; each query gets its own sandboxed
//!   connection with TEMP views named like the catalog tables, a time limit and a row
//!   limit. In: SQL text. Out: Arrow record batches ([`engine::QueryResult`]).
//! - [`http`]: `POST /v1/sql` (axum), answering JSON, CSV or an Arrow IPC stream.
//! - [`grafana`]: the Grafana JSON datasource API (`/grafana/…`): named queries or raw
//!   SQL with Grafana's macros, values bound as parameters, time series and tables.
//! - [`auth`]: bearer tokens by role, kept as SHA-256 hashes and checked in constant time;
//!   one [`auth::Verifier`] serves the lake's ingest, read and admin endpoints alike.
//! - [`named`]: named queries (`[[queries]]` in `lake.toml`) and the shipped defaults.
//! - [`output`]: rendering a result as a terminal table, JSON, CSV or Arrow, shared by the
//!   HTTP API and the `lake query` CLI.

pub mod alerts;
pub mod auth;
pub mod engine;
pub mod grafana;
pub mod http;
pub mod named;
pub mod output;

/// A value bound to a `?` placeholder by [`Engine::query_params`].
pub use duckdb::types::Value as ParamValue;
pub use engine::{Engine, EngineError, FreshRows, Limits, NoFreshRows, QueryResult};

#[cfg(test)]
mod test_support;
