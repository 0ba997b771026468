//! lake: the storage daemon and the operator's CLI.
//!
//! Data path inside `lake serve`: [`http::ingest`] (auth, id, decode, schema) → [`wal`]
//! (append + group-committed fsync, then 200) → [`writer::Buffers`] (queryable at once) →
//! [`writer::write_flush`] (Parquet by table and date, atomic commit) → WAL truncation.
//! [`server`] wires these with the query engine of `lake-query`; [`http::router`] lists
//! every route (ingest, SQL, Grafana, alerts, UI, admin) with its token role, [`auth`]
//! checks the tokens, and [`cli`] holds the subcommands.

pub mod alerts;
pub mod archive;
pub mod auth;
pub mod cli;
pub mod compact;
pub mod config;
pub mod custom;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod heartbeat;
pub mod http;
pub mod lock;
pub mod progress;
pub mod retention;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod swap;
pub mod wal;
pub mod writer;
