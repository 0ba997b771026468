//! The ingest memory budget: one pool of bytes (`[ingest] decode_memory`, default
//! 256 MiB) that every ingest request (Arrow, custom NDJSON/CSV, OTLP) takes from before it
//! holds a body or decodes one, and gives back when it is answered.
//!
//! Without it each request is bounded (`ingest.max_body`, the Arrow and OTLP inflation
//! limits) but their number is not: a few dozen concurrent 64 MiB batches, each inflating
//! eightfold, are more than a 2–4 GB machine has, and the kernel's OOM killer would end the
//! lake (losing nothing durable, but taking every node's ingest down with it).
//!
//! What a request takes ([`Reservation`]):
//! - its body, as it arrives: the declared `Content-Length` at once (so an answer comes
//!   before the bytes), chunk by chunk without one;
//! - before decoding: an Arrow body's decompressed size, exact, from its message headers
//!   ([`lake_format::wire::decoded_size`]); a custom body [`CUSTOM_FACTOR`] times its size
//!   (parsed rows and the built batch); an OTLP body's gunzipped bytes as they come out,
//!   then [`OTLP_FACTOR`] times them (decoded protobuf or JSON structures and the rows).
//!
//! Past the budget the request is answered 503 with `Retry-After` (the collector retries
//! it later; nothing of it is stored) and counted (`lake_ingest_decode_budget_refused_total`).
//! A request that needs more than the whole budget could never be taken: it is answered
//! 413, like a body over `ingest.max_body`, so a sender does not retry it for ever.
//! Rows already decoded and buffered for Parquet are bounded separately: 503 past four
//! times `ingest.flush_size`, counting the rows a running flush still holds
//! ([`crate::ingest::writer::Buffers::held_bytes`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use lake_format::units::ByteSize;

use super::error::ApiError;

/// Bytes a custom (NDJSON/CSV) body takes while parsed and built, per byte of body: the
/// rows as parsed values (a field name and value take a few dozen bytes more than their
/// text), the batch built from them and its WAL encoding.
pub const CUSTOM_FACTOR: usize = 8;

/// Bytes an OTLP body takes while decoded and mapped, per gunzipped byte: OTLP structures
/// in memory take several times their wire size, plus the rows built from them.
pub const OTLP_FACTOR: usize = 10;

/// Seconds a request turned away for the budget is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 1;

/// The shared pool.
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    /// Requests answered 503 because the budget was in use.
    pub refused: AtomicU64,
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget").field("limit", &self.limit).field("used", &self.used()).finish_non_exhaustive()
    }
}

/// Why a reservation could not grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// Other requests hold the budget now; retry later.
    #[error("the ingest decode memory budget (ingest.decode_memory = {}) is in use by other requests; retry in a moment", ByteSize(*limit as u64))]
    Busy {
        /// The budget.
        limit: usize,
    },
    /// This request alone needs more than the whole budget.
    #[error("this request needs {:.1} MiB of memory to decode, more than the whole ingest decode memory budget (ingest.decode_memory = {}); send smaller batches", *need as f64 / 1048576.0, ByteSize(*limit as u64))]
    TooLarge {
        /// Bytes this request needs in all.
        need: usize,
        /// The budget.
        limit: usize,
    },
}

impl From<BudgetError> for ApiError {
    fn from(e: BudgetError) -> ApiError {
        match e {
            BudgetError::Busy { .. } => ApiError::unavailable(e.to_string(), RETRY_AFTER_SECS),
            BudgetError::TooLarge { .. } => ApiError::too_large(e.to_string()),
        }
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget { limit, used: AtomicUsize::new(0), refused: AtomicU64::new(0) })
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by requests now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty reservation, to grow as the request goes.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation { budget: Arc::clone(self), bytes: 0 }
    }
}

lake_format::metrics! {
    // On `/metrics` (each doc line is its help there).
    pub impl MemoryBudget as b {
        /// ingest requests refused for the decode memory budget (503, or 413 when one needs more than all of it)
        Counter("lake_ingest_decode_budget_refused_total") = b.refused.load(Ordering::Relaxed),
        /// memory held by ingest requests receiving and decoding bodies
        Gauge("lake_ingest_decode_memory_bytes") = b.used() as u64,
        /// ingest.decode_memory
        Gauge("lake_ingest_decode_memory_limit_bytes") = b.limit() as u64,
    }
}

/// Bytes one request holds; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    /// Takes `n` more bytes, or says why not (nothing taken then).
    pub fn grow(&mut self, n: usize) -> Result<(), BudgetError> {
        let b = &self.budget;
        let need = self.bytes.saturating_add(n);
        if need > b.limit {
            b.refused.fetch_add(1, Ordering::Relaxed);
            return Err(BudgetError::TooLarge { need, limit: b.limit });
        }
        b.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| used.checked_add(n).filter(|u| *u <= b.limit))
            .map_err(|_| {
                b.refused.fetch_add(1, Ordering::Relaxed);
                BudgetError::Busy { limit: b.limit }
            })?;
        self.bytes = need;
        Ok(())
    }

    /// Gives back all but `n` bytes (a reservation made for an upper bound, once the
    /// real size is known). Never grows.
    pub fn shrink_to(&mut self, n: usize) {
        if n < self.bytes {
            self.budget.used.fetch_sub(self.bytes - n, Ordering::AcqRel);
            self.bytes = n;
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_share_the_budget_and_give_it_back() {
        let b = MemoryBudget::new(100);
        let mut one = b.reservation();
        one.grow(60).unwrap();
        let mut two = b.reservation();
        assert_eq!(two.grow(50), Err(BudgetError::Busy { limit: 100 }));
        assert_eq!(two.bytes(), 0, "a refused grow takes nothing");
        two.grow(40).unwrap();
        assert_eq!(b.used(), 100);
        drop(one);
        assert_eq!(b.used(), 40);
        two.grow(10).unwrap();
        two.shrink_to(5);
        assert_eq!((b.used(), two.bytes()), (5, 5));
        drop(two);
        assert_eq!(b.used(), 0);
        assert_eq!(b.refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_request_larger_than_the_budget_is_too_large_not_busy() {
        let b = MemoryBudget::new(100);
        let mut r = b.reservation();
        r.grow(70).unwrap();
        let e = r.grow(31).unwrap_err();
        assert_eq!(e, BudgetError::TooLarge { need: 101, limit: 100 });
        assert_eq!(ApiError::from(e).status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        let busy = ApiError::from(BudgetError::Busy { limit: 256 << 20 });
        assert_eq!(busy.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(busy.message().contains("ingest.decode_memory = 256MiB"), "{}", busy.message());
    }
}
