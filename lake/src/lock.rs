//! The data directory's owner lock.
//!
//! `lake serve` holds an exclusive `flock` on `<data>/lake.lock` for its whole life, so a
//! second server on the same directory fails at start, and maintenance commands (`lake
//! compact`, `lake archive`, `lake restore`) know whether to run in-process (lock free:
//! they take it) or to ask the running server. The kernel drops the lock when the
//! process dies, `kill -9` included, so there is no stale lock to clean up.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "lake.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (a running `lake serve`, or a maintenance command) holds it.
    #[error("{0} is in use by another lake process (a running `lake serve`?)")]
    Held(PathBuf),
    /// The lock file could not be opened.
    #[error("opening {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
}

/// An exclusive hold on a data directory, released on drop.
#[derive(Debug)]
pub struct DataLock {
    _file: File,
    path: PathBuf,
}

impl DataLock {
    /// Takes the lock without waiting; creates the data directory if needed.
    pub fn acquire(data_dir: &Path) -> Result<DataLock, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io_err = |source| LockError::Io { path: path.clone(), source };
        std::fs::create_dir_all(data_dir).map_err(io_err)?;
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err)?;
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                LockError::Held(data_dir.to_path_buf())
            } else {
                io_err(e)
            });
        }
        Ok(DataLock { _file: file, path })
    }

    /// Whether some process holds the lock of `data_dir` right now.
    pub fn is_held(data_dir: &Path) -> bool {
        matches!(DataLock::acquire(data_dir), Err(LockError::Held(_)))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataLock::acquire(dir.path()).unwrap();
        assert!(matches!(DataLock::acquire(dir.path()), Err(LockError::Held(_))));
        assert!(DataLock::is_held(dir.path()));
        drop(held);
        assert!(!DataLock::is_held(dir.path()));
        DataLock::acquire(dir.path()).unwrap();
    }
}
