//! The alerting state file, `<data>/state/alerts.json`.
//!
//! Holds everything a restart must not lose: every alert instance (phase, what the
//! channels last heard and when), recent resolutions, silences, the delivery queue, and
//! the outbox of `alerts` rows not yet confirmed in the WAL. Written atomically (temp,
//! fsync, rename, fsync dir) after each change, behind a version tag (`{"v1": …}`).
//!
//! # Exactly-once rows
//! Rows get their batch id (`_alerts/<epoch>/<seq>`) when they enter the outbox, and the
//! outbox is on disk before the rows are appended to the WAL. After a crash the outbox
//! is replayed with the same ids: a batch the WAL already has is acknowledged as a
//! duplicate and not stored again; one it lacks is stored now.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use lake_format::layout;
use lake_query::alerts::state::{AlertRow, AlertState, DeliveryState, Notification};

/// A notification waiting for (another) attempt on one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Unique per lake.
    pub id: u64,
    /// Channel name.
    pub channel: String,
    /// What to send.
    pub notification: Notification,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (µs).
    pub next_at: i64,
    /// `queued` or `retrying`.
    pub state: DeliveryState,
    /// Error of the last attempt.
    pub last_error: Option<String>,
}

/// Rows waiting to be appended to the WAL under a fixed batch id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    /// `_alerts/<epoch>/<seq>`.
    pub batch: String,
    /// The rows.
    pub rows: Vec<AlertRow>,
}

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Persisted {
    /// Instances, recent resolutions, silences.
    pub alerts: AlertState,
    /// Deliveries not finished yet.
    pub deliveries: Vec<Delivery>,
    /// Id of the next delivery.
    pub next_delivery: u64,
    /// Rows not yet confirmed in the WAL, oldest first.
    pub outbox: Vec<Outbox>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Versioned {
    V1(Persisted),
}

/// Path of the state file.
pub fn path(data: &Path) -> PathBuf {
    data.join(layout::STATE_DIR).join("alerts.json")
}

/// Reads the state; a missing file is the empty state.
pub fn load(path: &Path) -> io::Result<Persisted> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<Versioned>(&bytes) {
            Ok(Versioned::V1(p)) => Ok(p),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Persisted::default()),
        Err(e) => Err(e),
    }
}

/// Reads the state at start; an unreadable file is moved aside (and reported) so the
/// lake still starts: alerting starts afresh, the data path is not held up.
pub fn load_or_reset(path: &Path) -> Persisted {
    match load(path) {
        Ok(p) => p,
        Err(e) => {
            let aside = path.with_extension(format!("corrupt-{}", lake_format::rows::now_micros()));
            let moved = std::fs::rename(path, &aside);
            tracing::error!(%e, aside = %aside.display(), moved = moved.is_ok(), "alert state unreadable; starting with an empty one");
            Persisted::default()
        }
    }
}

/// Writes the state atomically.
pub fn save(path: &Path, p: &Persisted) -> io::Result<()> {
    let bytes = serde_json::to_vec(&Versioned::V1(p.clone())).map_err(io::Error::other)?;
    lake_format::durable::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_survives_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        assert_eq!(load(&p).unwrap(), Persisted::default());
        let mut s = Persisted { next_delivery: 7, ..Default::default() };
        s.alerts.add_silence(Some("r".into()), Default::default(), 1, 2, "c".into());
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), s);
        assert!(std::fs::read_to_string(&p).unwrap().starts_with("{\"v1\":"));
        std::fs::write(&p, b"{torn").unwrap();
        assert_eq!(load_or_reset(&p), Persisted::default());
        assert!(!p.exists(), "moved aside");
    }
}
