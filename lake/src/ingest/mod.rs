//! The ingest path behind the HTTP handlers, in the order a batch travels it:
//!
//! [`wal`] (append + group-committed fsync, then the 200) → [`writer::Buffers`]
//! (queryable at once) → [`flusher`] (when old or large enough) → [`writer::write_flush`]
//! (Parquet by table and date, atomic commit, recorded in [`state`]) → WAL truncation.
//! At start, [`writer::recover`] completes interrupted flushes and [`replay`] puts the
//! WAL records not yet committed back into the buffers.
//!
//! The HTTP side (auth, decode, schema checks) is [`crate::http::ingest`]; what happens
//! to committed files afterwards (compaction, archive, retention) is [`crate::maintenance`].

pub(crate) mod flusher;
pub(crate) mod replay;
pub mod state;
pub mod wal;
pub mod writer;
