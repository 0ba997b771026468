//! What happens to committed Parquet files after ingest, on a schedule or on request:
//!
//! - [`compact`]: merges a partition's small files into one;
//! - [`archive`]: uploads finished partitions to an object store, verifies them, and
//!   [`archive::restore`]s them back;
//! - [`retention`]: deletes local partitions once archived, and archived ones past their
//!   age;
//! - [`swap`]: the one way any of them replaces files, so running queries see the old
//!   files or the new ones, never a mix;
//! - [`scheduler`]: the cron loop the nightly archive (and compaction) run on.

pub mod archive;
pub mod compact;
pub mod retention;
pub mod scheduler;
pub mod swap;
