//! [`SpoolHandle`], the spool for async code: every operation runs on the blocking pool
//! with the lock taken there, and appends wake the shipper.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{OnFull, Record, Result, Spool, SpoolError, SpoolOptions};
use crate::stats::Stats;

/// The spool shared between async tasks: every operation runs on the blocking pool with
/// the lock taken there, so no lock is ever held across an `.await`.
#[derive(Debug, Clone)]
pub struct SpoolHandle {
    inner: Arc<Mutex<Spool>>,
    notify: Arc<Notify>,
    epoch: u64,
}

impl SpoolHandle {
    /// Opens the spool in `dir` on the blocking pool.
    pub async fn open(dir: PathBuf, opts: SpoolOptions, stats: Arc<Stats>) -> Result<SpoolHandle> {
        let spool = tokio::task::spawn_blocking(move || Spool::open(&dir, opts, stats)).await??;
        Ok(Self::new(spool))
    }

    /// Wraps an open spool.
    pub fn new(spool: Spool) -> SpoolHandle {
        let epoch = spool.epoch();
        SpoolHandle { inner: Arc::new(Mutex::new(spool)), notify: Arc::new(Notify::new()), epoch }
    }

    /// The epoch of the records this open appends (part of their batch ids).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    async fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut Spool) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut spool = inner.lock().map_err(|_| SpoolError::Poisoned)?;
            f(&mut spool)
        })
        .await?
    }

    /// Appends durably and wakes the shipper; returns the seq.
    pub async fn append(&self, table: String, body: Vec<u8>, on_full: OnFull) -> Result<u64> {
        let seq = self.with(move |s| s.append(&table, &body, on_full)).await?;
        // notify_one keeps a permit when the shipper is not waiting yet: no lost wakeup.
        self.notify.notify_one();
        Ok(seq)
    }

    /// Appends a group (records and the source's new state, see [`Spool::append_group`])
    /// durably and wakes the shipper; returns the seqs of the records.
    pub async fn append_group(
        &self,
        records: Vec<(String, Vec<u8>)>,
        state: Option<(String, Vec<u8>)>,
        on_full: OnFull,
    ) -> Result<Vec<u64>> {
        let seqs = self.with(move |s| s.append_group(records, state, on_full)).await?;
        if !seqs.is_empty() {
            self.notify.notify_one();
        }
        Ok(seqs)
    }

    /// The newest state saved by `source`.
    pub async fn source_state(&self, source: &str) -> Result<Option<Vec<u8>>> {
        let source = source.to_string();
        self.with(move |s| Ok(s.source_state(&source).map(<[u8]>::to_vec))).await
    }

    /// The oldest unacknowledged record.
    pub async fn peek(&self) -> Result<Option<Record>> {
        self.with(Spool::peek).await
    }

    /// Waits for the oldest unacknowledged record.
    pub async fn next(&self) -> Result<Record> {
        loop {
            if let Some(r) = self.peek().await? {
                return Ok(r);
            }
            self.notify.notified().await;
        }
    }

    /// Acknowledges every record up to `seq`.
    pub async fn ack(&self, seq: u64) -> Result<()> {
        self.with(move |s| s.ack(seq)).await
    }

    /// Records not yet acknowledged.
    pub async fn pending(&self) -> Result<u64> {
        self.with(|s| Ok(s.pending())).await
    }
}
