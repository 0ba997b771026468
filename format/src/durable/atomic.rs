//! Replacing a file so that a crash leaves either the old or the new content, never a
//! mix: write a temporary file beside it, fsync it, rename it over the file, fsync the
//! directory (without the last step the rename itself may not survive a power cut).
//!
//! Leftover temporary files of an interrupted write are the caller's to clean: each
//! caller names them (`<stem>.tmp` by default) and knows which ones are its own.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `bytes` atomically, through `path` with its extension replaced by
/// `tmp` (`state.json` goes through `state.tmp`); creates the parent directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_via(path, &path.with_extension("tmp"), [bytes])
}

/// Replaces `path` with the concatenation of `parts` atomically, through the temporary
/// file `tmp` (which must be in the same directory: a rename does not cross file
/// systems). For callers whose temporary name is part of their on-disk contract, or who
/// write large contents in pieces without joining them in memory first.
pub fn write_atomic_via<'a>(path: &Path, tmp: &Path, parts: impl IntoIterator<Item = &'a [u8]>) -> io::Result<()> {
    let dir = parent(path);
    fs::create_dir_all(dir)?;
    let mut f = File::create(tmp)?;
    for part in parts {
        f.write_all(part)?;
    }
    f.sync_all()?;
    drop(f);
    fs::rename(tmp, path)?;
    sync_dir(dir)
}

/// fsyncs a directory, so that creations, renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path`; a bare file name is in the current directory.
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_created_then_replaced_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_atomic(&path, b"one").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path().join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn parts_are_written_in_order_through_the_named_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.wal");
        let tmp = dir.path().join("1.wal.tmp");
        // A leftover of an interrupted write is overwritten, not appended to.
        fs::write(&tmp, b"stale leftover").unwrap();
        write_atomic_via(&path, &tmp, [&b"ab"[..], b"", b"cd"]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"abcd");
        assert!(!tmp.exists());
    }

    #[test]
    fn a_failed_write_leaves_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ack");
        write_atomic(&path, b"old").unwrap();
        // The temporary file cannot be created where a directory stands.
        let tmp = dir.path().join("blocked");
        fs::create_dir(&tmp).unwrap();
        assert!(write_atomic_via(&path, &tmp, [&b"new"[..]]).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn a_directory_syncs_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        sync_dir(dir.path()).unwrap();
        assert!(sync_dir(&dir.path().join("missing")).is_err());
    }
}
