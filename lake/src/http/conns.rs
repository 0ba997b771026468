//! The connection cap of `lake serve` (`[http] max_connections`, default 1024) and the
//! connections it counts.
//!
//! Every accepted connection takes a slot. When none is free, the oldest *idle* connection
//! (no request being served or answered on it: a keep-alive connection between requests,
//! or one that has not finished sending its headers) is closed for the new one and counted
//! (`lake_http_connections_evicted_total`). If every connection is busy, the accept loop
//! waits until one finishes or goes idle; new connections wait in the kernel's backlog
//! meanwhile.
//!
//! Why the oldest idle one: a client opening thousands of connections and sending nothing
//! (or its headers a byte at a time) would otherwise hold every slot until
//! `http.header_timeout` and open new ones as fast as they close. With eviction, its
//! connections push out each other; a collector's connection sends its request at once,
//! is busy from then on and is never evicted before it has its answer. An idle
//! collector connection that is evicted costs one reconnection (hyper's client retries a
//! request on a pooled connection closed under it, the collector's shipper retries the
//! rest). Evicted connections get hyper's graceful shutdown, then are dropped within
//! [`EVICT_GRACE`] if still idle; one that started a request meanwhile finishes it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long an evicted idle connection may take to close before it is dropped.
pub const EVICT_GRACE: Duration = Duration::from_secs(1);

/// The open connections and their counters.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, Slot>>,
    changed: tokio::sync::Notify,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Idle connections closed to make room for new ones.
    pub evicted: AtomicU64,
}

#[derive(Debug)]
struct Slot {
    busy: Arc<AtomicUsize>,
    evict: CancellationToken,
}

/// One connection's slot: dropped when the connection ends.
#[derive(Debug)]
pub struct Conn {
    conns: Arc<Connections>,
    id: u64,
    busy: Arc<AtomicUsize>,
    /// Cancelled when the connection is evicted.
    pub evicted: CancellationToken,
}

/// Held while a request is served on a connection, until its answer is written (or
/// dropped): the connection is busy, not to be evicted.
#[derive(Debug)]
pub struct Busy {
    conns: Arc<Connections>,
    busy: Arc<AtomicUsize>,
}

lake_format::metrics! {
    // On `/metrics` (each doc line is its help there).
    pub impl Connections as c {
        /// connections accepted
        Counter("lake_http_connections_accepted_total") = c.accepted.load(Ordering::Relaxed),
        /// idle connections closed to make room under http.max_connections
        Counter("lake_http_connections_evicted_total") = c.evicted.load(Ordering::Relaxed),
        /// open connections (at most http.max_connections)
        Gauge("lake_http_connections") = c.open() as u64,
    }
}

impl Connections {
    /// A cap of `max` open connections.
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max,
            next_id: AtomicU64::new(0),
            open: Mutex::new(BTreeMap::new()),
            changed: tokio::sync::Notify::new(),
            accepted: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    /// Open connections counted against the cap.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for a connection just accepted: at once while the cap leaves room, else by
    /// evicting the oldest idle connection, else once a connection ends or goes idle.
    /// `None` when `cancel` fires first.
    pub async fn admit(self: &Arc<Self>, cancel: &CancellationToken) -> Option<Conn> {
        loop {
            // Registered before looking, so a change between the look and the wait wakes us.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(conn) = self.try_admit() {
                return Some(conn);
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = changed => {}
            }
        }
    }

    fn try_admit(self: &Arc<Self>) -> Option<Conn> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= self.max {
            let victim = open.iter().find(|(_, s)| s.busy.load(Ordering::Acquire) == 0).map(|(id, _)| *id)?;
            if let Some(slot) = open.remove(&victim) {
                slot.evict.cancel();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let busy = Arc::new(AtomicUsize::new(0));
        let evict = CancellationToken::new();
        open.insert(id, Slot { busy: Arc::clone(&busy), evict: evict.clone() });
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Some(Conn { conns: Arc::clone(self), id, busy, evicted: evict })
    }
}

impl Conn {
    /// Marks a request in progress on this connection until the guard is dropped.
    pub fn busy(&self) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy { conns: Arc::clone(&self.conns), busy: Arc::clone(&self.busy) }
    }

    /// Whether no request is in progress on this connection.
    pub fn idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.conns.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
        self.conns.changed.notify_waiters();
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Idle now: a candidate for eviction if the accept loop waits for one.
            self.conns.changed.notify_waiters();
        }
    }
}

/// An answer's body, holding its connection [`Busy`] until it is written or dropped.
#[derive(Debug)]
pub struct BusyBody {
    body: axum::body::Body,
    _busy: Busy,
}

impl BusyBody {
    /// `body`, keeping `busy` until it ends.
    pub fn new(body: axum::body::Body, busy: Busy) -> BusyBody {
        BusyBody { body, _busy: busy }
    }
}

impl http_body::Body for BusyBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_idle_connection_makes_room_and_busy_ones_are_kept() {
        let conns = Connections::new(2);
        let cancel = CancellationToken::new();
        let a = conns.admit(&cancel).await.unwrap();
        let b = conns.admit(&cancel).await.unwrap();
        let a_busy = a.busy();
        // Full: b is the oldest idle one (a is busy).
        let c = conns.admit(&cancel).await.unwrap();
        assert!(b.evicted.is_cancelled() && !a.evicted.is_cancelled());
        assert_eq!((conns.open(), conns.evicted.load(Ordering::Relaxed)), (2, 1));
        drop(b); // its task ends; it no longer counted
        assert_eq!(conns.open(), 2);

        // Both busy: the next one waits until one goes idle, then takes its place.
        let c_busy = c.busy();
        let waiting = tokio::spawn({
            let (conns, cancel) = (Arc::clone(&conns), cancel.clone());
            async move { conns.admit(&cancel).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(a_busy);
        let d = waiting.await.unwrap().unwrap();
        assert!(a.evicted.is_cancelled() && !c.evicted.is_cancelled());
        assert!(d.idle() && !c.idle());

        // Every slot busy at shutdown: the wait ends with nothing.
        let _d_busy = d.busy();
        let waiting = tokio::spawn({
            let (conns, cancel) = (Arc::clone(&conns), cancel.clone());
            async move { conns.admit(&cancel).await.is_none() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
        assert!(waiting.await.unwrap());
        drop(c_busy);
    }
}
