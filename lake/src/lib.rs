//! lake: the storage daemon and the operator's CLI.
//!
//! Data path inside `lake serve`: [`http::ingest`] (auth, id, decode, schema) →
//! [`ingest::wal`] (append + group-committed fsync, then 200) → [`ingest::writer::Buffers`]
//! (queryable at once) → [`ingest::flusher`] → [`ingest::writer::write_flush`] (Parquet by
//! table and date, atomic commit) → WAL truncation. Committed files are then merged,
//! archived and expired by [`maintenance`]. [`server`] wires these with the query engine of
//! `lake-query`; [`http::router`] lists every route (ingest, SQL, Grafana, alerts, UI, admin)
//! with its token role, [`auth`] checks the tokens, and [`cli`] holds the subcommands.

pub mod alerts;
pub mod auth;
pub mod cli;
pub mod config;
pub mod custom;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod heartbeat;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod lock;
pub mod maintenance;
pub(crate) mod malloc;
pub mod pg;
pub mod progress;
pub mod server;
#[doc(hidden)]
pub mod testing;
