//! Source checkpoints: where each source resumes after a restart.
//!
//! `<data_dir>/checkpoints/<name>.json` holds `{"version": 1, "state": …}` with the
//! source's own state (a journald cursor, file identities and offsets). A checkpoint is
//! saved only **after** the rows it covers are in the spool (fsynced), so a crash between
//! the two re-reads at most the last batch (the lake deduplicates nothing there, so those
//! rows may appear twice) and never skips input. Writes are atomic: temp file, fsync,
//! rename, directory fsync — a crash leaves the old or the new checkpoint, never a mix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Errors of the checkpoint store.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system trouble.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// The file exists but is not a checkpoint this version understands.
    #[error("checkpoint {path} is unreadable: {reason}")]
    Corrupt {
        /// File concerned.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A checkpoint name outside `[a-z0-9_-]`.
    #[error("invalid checkpoint name {0:?}")]
    Name(String),
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    version: u32,
    state: T,
}

/// The checkpoint directory of a collector.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    /// Opens (creating) `<data_dir>/checkpoints`.
    pub fn open(data_dir: &Path) -> Result<Checkpoints, CheckpointError> {
        let dir = data_dir.join("checkpoints");
        fs::create_dir_all(&dir).map_err(|source| CheckpointError::Io { path: dir.clone(), source })?;
        Ok(Checkpoints { dir })
    }

    fn path(&self, name: &str) -> Result<PathBuf, CheckpointError> {
        let ok = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(self.dir.join(format!("{name}.json")))
        } else {
            Err(CheckpointError::Name(name.to_string()))
        }
    }

    /// The saved state of `name`, or `None` if it never saved one. Blocking (small file).
    pub fn load<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, CheckpointError> {
        let path = self.path(name)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Io { path, source }),
        };
        let env: Envelope<T> =
            serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        if env.version != 1 {
            return Err(CheckpointError::Corrupt { path, reason: format!("version {} is not supported", env.version) });
        }
        Ok(Some(env.state))
    }

    /// Saves the state of `name` atomically. Blocking: a few small writes and fsyncs.
    pub fn save<T: Serialize>(&self, name: &str, state: &T) -> Result<(), CheckpointError> {
        let path = self.path(name)?;
        let io = |source| CheckpointError::Io { path: path.clone(), source };
        let bytes = serde_json::to_vec(&Envelope { version: 1, state })
            .map_err(|e| CheckpointError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        let tmp = path.with_extension("json.tmp");
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io)?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_missing_corrupt_and_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(dir.path()).unwrap();
        assert_eq!(cp.load::<String>("journald").unwrap(), None);
        cp.save("journald", &"s=abc;i=1".to_string()).unwrap();
        assert_eq!(cp.load::<String>("journald").unwrap().as_deref(), Some("s=abc;i=1"));
        fs::write(dir.path().join("checkpoints/caddy.json"), b"{\"version\":1,").unwrap();
        assert!(matches!(cp.load::<String>("caddy"), Err(CheckpointError::Corrupt { .. })));
        assert!(matches!(cp.save("../x", &1), Err(CheckpointError::Name(_))));
    }
}
