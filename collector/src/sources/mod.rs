//! Sources: each turns one kind of input into Arrow batches and appends them to the
//! spool. Only host metrics exist so far.

pub mod host;

/// Errors that stop a source (a read error of one sample only logs and counts).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The sampling task panicked or was cancelled by the runtime.
    #[error("{source_name} source task failed: {error}")]
    Task {
        /// Which source.
        source_name: &'static str,
        /// The join error.
        error: tokio::task::JoinError,
    },
    /// The source could not start.
    #[error("{source_name} source cannot start: {reason}")]
    Start {
        /// Which source.
        source_name: &'static str,
        /// Why.
        reason: String,
    },
}
