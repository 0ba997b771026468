//! Sources: each turns one kind of input into typed rows of a catalog table and appends
//! them to the spool through a [`SourceContext`].
//!
//! Two kinds of data, two behaviours when the spool is full:
//! - input that can be read again (journald, log files) *holds its position*: a read
//!   batch becomes one spool group with [`SourceContext::emit_with_state`] — every table's
//!   rows and the source's new position (its state), durable together in one write and
//!   one fsync. While the spool is full it waits (counted in `paused`); nothing is
//!   dropped to make room for it, and nothing of it is dropped later. On start the source
//!   resumes from [`SourceContext::load_state`], the state of its last spooled group, so
//!   a restart (clean or `kill -9`) neither skips input nor spools any of it twice. A
//!   batch whose rows were all filtered out still saves its state (the spool keeps a
//!   state-only group in its `ack` file).
//! - samples that exist only now (host metrics, probes) *drop the oldest* droppable
//!   spooled data instead ([`SourceContext::emit_droppable`]), counted; if the oldest
//!   data is held, the new sample is dropped, counted.
//!
//! States are JSON: `{"version": 1, "state": …}` around the source's own type.

pub mod caddy;
pub mod custom;
pub mod docker;
pub mod exec;
pub mod fail2ban;
pub mod host;
pub mod inventory;
pub mod journald;
pub mod json_file;
pub mod log_file;
pub mod logfile;
pub mod multiline;
pub mod notes;
pub mod probe;
pub mod prometheus;
pub mod prometheus_scrape;
pub mod pull;
pub mod syslog;
pub mod tailed;
pub mod tailscale;
#[cfg(test)]
pub(crate) mod test_support;
pub mod ufw;
pub mod unparsed;
pub mod ups;
pub mod uptime;
pub mod zone;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use lake_format::{wire, Table};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::spool::{OnFull, SpoolError, SpoolHandle};
use crate::stats::{SourceStats, Stats};

/// Gives a rows wrapper (a `TableBuilder` in field `b` plus resolved column indices)
/// the builder's `len`, `is_empty` and `finish`.
macro_rules! rows_deref {
    ($t:ty) => {
        impl std::ops::Deref for $t {
            type Target = lake_format::rows::TableBuilder;
            fn deref(&self) -> &Self::Target {
                &self.b
            }
        }
        impl std::ops::DerefMut for $t {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.b
            }
        }
    };
}
pub(crate) use rows_deref;

/// A name for counters, spool states and errors, which take `&'static str`: the few
/// names of configured sources (`exec/<name>`, `json_file/<name>`) are leaked once, when
/// the configuration is validated — a few bytes per entry for the life of the process.
pub(crate) fn leak_name(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

/// `s` percent-encoded for a URL's path segment or query value: RFC 3986's unreserved
/// characters kept, every other byte `%XX` (the Docker API's ids and filters, a pull's cursor).
pub fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A secret given as `key`, `key_env` or `key_file` ([`lake_format::secret::resolve`]),
/// its error as `section.key_env: …`: the collector's one reading of a token or password.
pub(crate) fn secret(
    section: &str,
    key: &str,
    inline: Option<String>,
    var: Option<String>,
    file: Option<&std::path::Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<lake_format::Secret>> {
    lake_format::secret::resolve(key, inline, var, file, env)
        .map_err(|e| anyhow::anyhow!("{section}.{}: {e}", e.field()))
}

/// Validates the entries of one `[[kind]]` array, each under its section name
/// (`kind[i] ("name")`, what every error about it starts with); two entries of one name
/// are refused, since the name keys the source's counters and saved position.
pub(crate) fn validate_named<F, C>(
    kind: &str,
    files: Vec<F>,
    name: impl Fn(&F) -> String,
    mut validate: impl FnMut(F, &str) -> anyhow::Result<C>,
) -> anyhow::Result<Vec<C>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in files.into_iter().enumerate() {
        let n = name(&f);
        let section = format!("{kind}[{i}] ({n:?})");
        anyhow::ensure!(
            seen.insert(n.clone()),
            "{section}: the name {n:?} is used by two [[{kind}]] entries; give one a distinct name"
        );
        out.push(validate(f, &section)?);
    }
    Ok(out)
}

/// The schedule of a source that runs something every `interval` within `timeout`
/// (`[[exec]]`, `[[prometheus_scrape]]`, `[[ups]]`, uptime checks): both more than zero and
/// the timeout within the interval. `why` ends the message of the last rule.
pub(crate) fn check_schedule(section: &str, interval: Duration, timeout: Duration, why: &str) -> anyhow::Result<()> {
    use lake_format::units::Dur;
    anyhow::ensure!(!interval.is_zero(), "{section}.interval must be more than zero");
    anyhow::ensure!(!timeout.is_zero(), "{section}.timeout must be more than zero");
    anyhow::ensure!(
        timeout <= interval,
        "{section}.timeout ({}) must not exceed {section}.interval ({}){why}",
        Dur(timeout),
        Dur(interval)
    );
    Ok(())
}

/// How long a holding source waits before trying a full spool again.
const FULL_RETRY: Duration = Duration::from_secs(1);

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
    /// The spool failed for a reason other than being full.
    #[error("{source_name}: spool: {error}")]
    Spool {
        /// Which source.
        source_name: &'static str,
        /// The spool's error.
        error: SpoolError,
    },
    /// A batch could not be encoded (a bug: rows are built to the catalog).
    #[error("{source_name}: encoding a batch: {error}")]
    Encode {
        /// Which source.
        source_name: &'static str,
        /// The error.
        error: String,
    },
    /// The saved state could not be encoded or decoded.
    #[error("{source_name}: state: {error}")]
    State {
        /// Which source.
        source_name: &'static str,
        /// The error.
        error: String,
    },
}

/// One record ready for the spool.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// A catalog table's name, or `json/<name>` for a custom table (see [`custom`]).
    pub table: String,
    /// Arrow IPC stream for a catalog table, NDJSON for a custom table.
    pub body: Vec<u8>,
    /// Rows (or NDJSON lines) in the body; a record without rows is not spooled.
    pub rows: u64,
    /// The source whose `rows` counter they add to.
    pub counted_as: &'static str,
}

/// What every source gets: where rows and positions go, counters.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// Node name written in `host`.
    pub node: Arc<str>,
    /// Where batches and source states go.
    pub spool: SpoolHandle,
    /// The collector's counters.
    pub stats: Arc<Stats>,
}

/// Result of an emit that may be interrupted by shutdown.
#[derive(Debug, PartialEq, Eq)]
pub enum Emitted {
    /// In the spool (fsynced) under these seqs, with the state (none for a state alone).
    Spooled(Vec<u64>),
    /// Shutdown came while waiting for room: neither the rows nor the state are spooled.
    Cancelled,
}

/// The versioned envelope of a source state.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "version")]
enum VersionedState<T> {
    #[serde(rename = "1")]
    V1 { state: T },
}

/// Serializes `state` as a source state is stored.
fn encode_state<T: serde::Serialize>(name: &'static str, state: &T) -> Result<Vec<u8>, SourceError> {
    serde_json::to_vec(&VersionedState::V1 { state })
        .map_err(|e| SourceError::State { source_name: name, error: e.to_string() })
}

impl SourceContext {
    /// The counters of one source.
    pub fn source_stats(&self, name: &'static str) -> Arc<SourceStats> {
        self.stats.source(name)
    }

    fn encode(name: &'static str, batch: &RecordBatch) -> Result<Vec<u8>, SourceError> {
        wire::encode(&batch.schema(), std::slice::from_ref(batch))
            .map_err(|e| SourceError::Encode { source_name: name, error: e.to_string() })
    }

    /// Spools one read batch of input that can be read again, as one group: the rows of
    /// every table and `state`, the position after them, all or nothing. Batches without
    /// rows are left out; with none left the state alone is saved. While the spool is
    /// full it waits (the source is paused, its saved state unchanged) until there is
    /// room or `cancel`. Rows count in `name`'s `rows`.
    pub async fn emit_with_state<T: serde::Serialize + Sync>(
        &self,
        name: &'static str,
        batches: Vec<(Table, RecordBatch)>,
        state: &T,
        cancel: &CancellationToken,
    ) -> Result<Emitted, SourceError> {
        let batches = batches.into_iter().map(|(t, b)| (name, t, b)).collect();
        self.emit_group(name, batches, Some(state), cancel).await
    }

    /// [`Self::emit_with_state`] where each batch names the source whose `rows` counter
    /// it adds to (journald routes lines to `firewall` for ufw, `bans` for fail2ban), and
    /// the state may be absent (rows read before any position is known).
    pub async fn emit_group<T: serde::Serialize + Sync>(
        &self,
        name: &'static str,
        batches: Vec<(&'static str, Table, RecordBatch)>,
        state: Option<&T>,
        cancel: &CancellationToken,
    ) -> Result<Emitted, SourceError> {
        let mut records = Vec::with_capacity(batches.len());
        for (counted_as, table, batch) in batches.iter().filter(|(_, _, b)| b.num_rows() > 0) {
            let mut r = Self::encode_batch(name, *table, batch)?;
            r.counted_as = counted_as;
            records.push(r);
        }
        self.emit_encoded(name, records, state, cancel).await
    }

    /// A batch of a catalog table encoded for the spool, its rows counted as `name`'s.
    pub fn encode_batch(name: &'static str, table: Table, batch: &RecordBatch) -> Result<Encoded, SourceError> {
        Ok(Encoded {
            table: table.name().to_string(),
            body: Self::encode(name, batch)?,
            rows: batch.num_rows() as u64,
            counted_as: name,
        })
    }

    /// Batches of one catalog table encoded as one record (empty batches left out; `None`
    /// when no row is left).
    pub fn encode_batches(
        name: &'static str,
        table: Table,
        batches: &[RecordBatch],
    ) -> Result<Option<Encoded>, SourceError> {
        let batches: Vec<RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).cloned().collect();
        let Some(first) = batches.first() else {
            return Ok(None);
        };
        let body = wire::encode(&first.schema(), &batches)
            .map_err(|e| SourceError::Encode { source_name: name, error: e.to_string() })?;
        Ok(Some(Encoded {
            table: table.name().to_string(),
            body,
            rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
            counted_as: name,
        }))
    }

    /// Spools already encoded records (Arrow bodies of catalog tables, NDJSON bodies of
    /// custom tables, see [`custom`]) and `state` as one held group, like
    /// [`Self::emit_group`]: all or nothing, waiting while the spool is full.
    pub async fn emit_encoded<T: serde::Serialize + Sync>(
        &self,
        name: &'static str,
        records: Vec<Encoded>,
        state: Option<&T>,
        cancel: &CancellationToken,
    ) -> Result<Emitted, SourceError> {
        let records: Vec<Encoded> = records.into_iter().filter(|r| r.rows > 0).collect();
        let counts: Vec<(&'static str, u64)> = records.iter().map(|r| (r.counted_as, r.rows)).collect();
        let records: Vec<(String, Vec<u8>)> = records.into_iter().map(|r| (r.table, r.body)).collect();
        let state = match state {
            Some(s) => Some((name.to_string(), encode_state(name, s)?)),
            None => None,
        };
        if records.is_empty() && state.is_none() {
            return Ok(Emitted::Spooled(Vec::new()));
        }
        let stats = self.stats.source(name);
        let mut warned = false;
        loop {
            match self.spool.append_group(records.clone(), state.clone(), OnFull::Reject).await {
                Ok(seqs) => {
                    for (counted_as, rows) in counts {
                        Stats::add(&self.stats.source(counted_as).rows, rows);
                    }
                    return Ok(Emitted::Spooled(seqs));
                }
                Err(SpoolError::Full { .. }) => {
                    Stats::add(&stats.paused, 1);
                    if !warned {
                        warn!(source = name, "spool full: source paused, its position holds");
                        warned = true;
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(Emitted::Cancelled),
                        _ = tokio::time::sleep(FULL_RETRY) => {}
                    }
                }
                Err(error) => return Err(SourceError::Spool { source_name: name, error }),
            }
        }
    }

    /// Spools encoded records of samples that exist only now as one droppable group: a
    /// full spool drops its oldest droppable data, or this group if the oldest data is
    /// held (`None`; counted in `dropped_batches` by the spool).
    pub async fn emit_encoded_droppable(
        &self,
        name: &'static str,
        records: Vec<Encoded>,
    ) -> Result<Option<Vec<u64>>, SourceError> {
        let records: Vec<Encoded> = records.into_iter().filter(|r| r.rows > 0).collect();
        if records.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let counts: Vec<(&'static str, u64)> = records.iter().map(|r| (r.counted_as, r.rows)).collect();
        let records: Vec<(String, Vec<u8>)> = records.into_iter().map(|r| (r.table, r.body)).collect();
        let seqs = match self.spool.append_group(records, None, OnFull::DropOldest).await {
            Ok(seqs) => seqs,
            Err(SpoolError::Dropped { .. }) => return Ok(None),
            Err(error) => return Err(SourceError::Spool { source_name: name, error }),
        };
        for (counted_as, rows) in counts {
            Stats::add(&self.stats.source(counted_as).rows, rows);
        }
        Ok(Some(seqs))
    }

    /// Spools a batch of samples that exist only now; a full spool drops its oldest
    /// droppable data, or this batch if the oldest data is held (`None`; counted in
    /// `dropped_batches` by the spool).
    pub async fn emit_droppable(
        &self,
        name: &'static str,
        table: Table,
        batch: &RecordBatch,
    ) -> Result<Option<u64>, SourceError> {
        let body = Self::encode(name, batch)?;
        let seq = match self.spool.append(table.name().to_string(), body, OnFull::DropOldest).await {
            Ok(seq) => seq,
            Err(SpoolError::Dropped { .. }) => return Ok(None),
            Err(error) => return Err(SourceError::Spool { source_name: name, error }),
        };
        Stats::add(&self.stats.source(name).rows, batch.num_rows() as u64);
        Ok(Some(seq))
    }

    /// The state of the last group `name` spooled, or `None` if it never saved one.
    pub async fn load_state<T: serde::de::DeserializeOwned>(
        &self,
        name: &'static str,
    ) -> Result<Option<T>, SourceError> {
        let Some(json) =
            self.spool.source_state(name).await.map_err(|error| SourceError::Spool { source_name: name, error })?
        else {
            return Ok(None);
        };
        let VersionedState::V1 { state } = serde_json::from_slice(&json)
            .map_err(|e| SourceError::State { source_name: name, error: e.to_string() })?;
        Ok(Some(state))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array};
    use arrow_schema::{DataType, Field, Schema};
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::spool::SpoolOptions;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Pos {
        cursor: String,
    }

    fn batch(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let col: ArrayRef = Arc::new(Int64Array::from((0..rows).collect::<Vec<_>>()));
        RecordBatch::try_new(schema, vec![col]).unwrap()
    }

    async fn context(dir: &std::path::Path, stats: Arc<Stats>) -> SourceContext {
        let opts = SpoolOptions { max_size: 1 << 20, segment_size: 1 << 16 };
        let spool = SpoolHandle::open(dir.join("spool"), opts, Arc::clone(&stats)).await.unwrap();
        SourceContext { node: Arc::from("n"), spool, stats }
    }

    #[tokio::test]
    async fn emit_with_state_then_reopen_loads_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let ctx = context(dir.path(), Arc::clone(&stats)).await;
        let cancel = CancellationToken::new();
        assert_eq!(ctx.load_state::<Pos>("journald").await.unwrap(), None);
        let pos = |c: &str| Pos { cursor: c.to_string() };
        let got = ctx
            .emit_with_state(
                "journald",
                vec![(Table::Logs, batch(3)), (Table::Bans, batch(0)), (Table::Firewall, batch(2))],
                &pos("a"),
                &cancel,
            )
            .await
            .unwrap();
        assert_eq!(got, Emitted::Spooled(vec![1, 2]), "the empty batch is not spooled");
        assert_eq!(stats.source("journald").rows.load(std::sync::atomic::Ordering::Relaxed), 5);
        // Every row filtered out: the state alone still moves.
        let got = ctx.emit_with_state("journald", vec![(Table::Logs, batch(0))], &pos("b"), &cancel).await.unwrap();
        assert_eq!(got, Emitted::Spooled(vec![]));
        assert_eq!(ctx.load_state::<Pos>("journald").await.unwrap(), Some(pos("b")));
        drop(ctx);

        let ctx = context(dir.path(), Arc::new(Stats::default())).await;
        assert_eq!(ctx.load_state::<Pos>("journald").await.unwrap(), Some(pos("b")));
        assert_eq!(ctx.load_state::<Pos>("caddy").await.unwrap(), None);
        let r = ctx.spool.peek().await.unwrap().unwrap();
        assert_eq!((r.seq, r.table.as_str(), r.continues), (1, "logs", true));
        // A state of another shape is an error, not a silent restart from scratch.
        assert!(matches!(ctx.load_state::<u64>("journald").await, Err(SourceError::State { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_spool_pauses_the_source_until_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let opts = SpoolOptions { max_size: 600, segment_size: 600 };
        let spool = SpoolHandle::open(dir.path().join("spool"), opts, Arc::clone(&stats)).await.unwrap();
        let ctx = SourceContext { node: Arc::from("n"), spool, stats: Arc::clone(&stats) };
        let cancel = CancellationToken::new();
        let pos = Pos { cursor: "a".into() };
        let mut spooled = 0;
        let got = loop {
            let emit = ctx.emit_with_state("caddy", vec![(Table::Http, batch(1))], &pos, &cancel);
            match tokio::time::timeout(Duration::from_secs(5), emit).await {
                Ok(r) => {
                    assert!(matches!(r.unwrap(), Emitted::Spooled(_)));
                    spooled += 1;
                }
                Err(_) => break spooled,
            }
        };
        assert!(got >= 1);
        assert!(stats.source("caddy").paused.load(std::sync::atomic::Ordering::Relaxed) >= 1);
        cancel.cancel();
        let r = ctx.emit_with_state("caddy", vec![(Table::Http, batch(1))], &pos, &cancel).await.unwrap();
        assert_eq!(r, Emitted::Cancelled);
        assert_eq!(stats.dropped_batches.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
