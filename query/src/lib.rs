//! The query engine of the lake: DuckDB over the committed Parquet files and the rows not
//! yet flushed, and the pure logic around it. No HTTP, no network senders, no token
//! hashing here: the lake crate serves these over HTTP (`lake::http`), checks tokens
//! (`lake::auth`) and sends notifications (`lake::alerts::notify`).
//!
//! - [`engine`]: one in-memory DuckDB database; each query gets its own sandboxed
//!   connection with TEMP views named like the catalog tables, a time limit and a row
//!   limit. In: SQL text. Out: Arrow record batches ([`engine::QueryResult`]).
//! - [`grafana`]: Grafana's SQL macros and template variables, expanded into SQL with
//!   bound parameters.
//! - [`named`]: named queries (`[[queries]]` in `lake.toml`) and the shipped defaults.
//! - [`output`]: rendering a result as a terminal table, JSON, CSV or Arrow, shared by the
//!   HTTP API and the `lake query` CLI.
//! - [`correlate`]: the SQL of `lake correlate` and `lake top` (and their MCP tools).
//! - [`anomaly`]: the SQL of `lake anomalies`, the `anomalies` named query and alert rules
//!   of kind `anomaly`: recent hours against the same hours of earlier weeks.
//! - [`alerts`]: alert rules, their state and evaluation, and the text of notifications
//!   (pure: the lake schedules them and sends).

pub mod alerts;
pub mod anomaly;
pub mod correlate;
pub mod engine;
pub mod grafana;
pub mod named;
pub mod output;

/// A value bound to a `?` placeholder by [`Engine::query_params`].
pub use duckdb::types::Value as ParamValue;
pub use engine::{Engine, EngineError, FreshRows, Limits, NoFreshRows, QueryResult};

/// Fixtures for unit tests, here and in the lake crate (feature `test-support`, a
/// dev-dependency feature only).
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod test_support;
