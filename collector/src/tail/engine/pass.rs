//! The rolled pass of a scan: every rolled file not followed by inode is identified by its
//! content ([`Identity`]) and what is owed is opened — an orphaned position from there, a
//! file never seen whole. Runs when the rolled files listed change, on start, and while a
//! position or a `.gz` waits (see the tail module docs).

use std::fs::{File, Metadata};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use super::{bump, mtime, Done, Engine, FileKey, Reader, Tracked, GZ_UNREADABLE_AFTER};
use crate::tail::rolled::{gz_at, is_gz, Head};
use crate::tail::MAX_ROLLED_FILES;

/// How a rolled file relates to what the tailer knows.
enum Identity {
    /// Its head cannot be read yet (a `.gz` being written).
    Incomplete,
    /// Empty: nothing to read, nothing to recognise it by.
    Empty,
    /// A copy of a file being followed (a `.gz` of it, or the file under another name).
    Followed,
    /// Holds the position of this orphan.
    Orphan(usize),
    /// Read already.
    Done(usize),
    /// Never seen: rolled while the tailer was down or between two polls.
    Unknown,
}

impl Engine {
    fn identify(&self, head: &Head, gz: bool, len: u64) -> Identity {
        if !head.complete {
            return Identity::Incomplete;
        }
        if head.bytes.is_empty() {
            return Identity::Empty;
        }
        if self.files.iter().any(|t| head.starts_with(t.head_len, t.head_hash)) {
            return Identity::Followed;
        }
        if let Some(k) = self
            .orphans
            .iter()
            .position(|o| head.starts_with(o.state.head_len, o.state.head_hash) && (gz || o.state.offset <= len))
        {
            return Identity::Orphan(k);
        }
        if let Some(k) = self.done.iter().position(|d| head.is(&d.fp)) {
            return Identity::Done(k);
        }
        Identity::Unknown
    }

    /// Identifies every rolled file not followed by inode, and reads what is owed: an
    /// orphaned position from there, a never-seen file whole. See the module docs.
    pub(super) fn rolled_pass(&mut self, mut rolled: Vec<(PathBuf, Metadata)>, first: bool) {
        // Plain files first: a file and the .gz being made of it are read as the plain
        // one, which is complete. Oldest first within each.
        rolled.sort_by_key(|(p, md)| (is_gz(p), mtime(md)));
        let mut cached = std::mem::take(&mut self.heads);
        let mut pending = false;
        for d in &mut self.done {
            d.seen = false;
        }
        let mut unknown = Vec::new();
        for (path, md) in rolled {
            let key = FileKey::of(&md);
            let gz = is_gz(&path);
            if !gz && self.tracked_plain(key.dev, key.ino).is_some() {
                continue;
            }
            let mut head = match cached.remove(&key) {
                Some(h) => h,
                None => match File::open(&path).and_then(|f| Head::read(&path, &f, md.len())) {
                    Ok(h) => h,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        pending = true;
                        continue;
                    }
                    Err(e) => {
                        self.error(&path, "cannot read a rolled file", &e);
                        continue;
                    }
                },
            };
            match self.identify(&head, gz, md.len()) {
                Identity::Incomplete => {
                    pending = true;
                    self.unreadable(&path, &mut head);
                }
                Identity::Empty | Identity::Followed => {}
                Identity::Orphan(k) => {
                    let o = self.orphans.remove(k);
                    match self.open_rolled(&path, &md, &head, o.state.offset, o.state.skipping) {
                        Ok(t) => {
                            bump(&self.counters.rolled_resumed);
                            if o.checkpointed && !self.is_rolled_name(&o.state.path) {
                                bump(&self.counters.rotations);
                            }
                            self.resumed_mtime = self.resumed_mtime.max(Some(t.mtime));
                            info!(path = %path.display(), offset = t.offset, "resuming in a rolled file");
                            self.files.push(t);
                        }
                        Err(e) => {
                            pending = true;
                            self.orphans.push(o);
                            self.open_failed(&path, &mut head, &e);
                        }
                    }
                }
                Identity::Done(k) => self.done[k].seen = true,
                Identity::Unknown => unknown.push((path, md, key)),
            }
            self.heads.insert(key, head);
        }
        for (path, md, key) in unknown {
            let Some(mut head) = self.heads.remove(&key) else {
                continue;
            };
            // A plain file and its .gz both unknown: the one opened first is followed now.
            match self.identify(&head, is_gz(&path), md.len()) {
                Identity::Unknown => {
                    let history =
                        first && (self.fresh || (self.legacy && self.resumed_mtime.is_none_or(|m| mtime(&md) <= m)));
                    if history {
                        self.done.push(Done::new(head.fingerprint()));
                    } else {
                        match self.open_rolled(&path, &md, &head, 0, false) {
                            Ok(t) => {
                                bump(&self.counters.rolled_read);
                                info!(path = %path.display(), "reading a rolled file never read before");
                                self.files.push(t);
                            }
                            Err(e) => {
                                pending = true;
                                self.open_failed(&path, &mut head, &e);
                            }
                        }
                    }
                }
                Identity::Done(k) => self.done[k].seen = true,
                _ => {}
            }
            self.heads.insert(key, head);
        }
        if !pending {
            for o in std::mem::take(&mut self.orphans) {
                if o.checkpointed {
                    bump(&self.counters.lost);
                    warn!(
                        path = %o.state.path.display(),
                        offset = o.state.offset,
                        "a checkpointed file rolled away and was deleted before it was read to its end; its unread lines are lost"
                    );
                }
            }
            for d in &mut self.done {
                d.missed = if d.seen { 0 } else { d.missed.saturating_add(1) };
            }
            self.done.retain(|d| d.missed < 2);
        }
        if self.done.len() > 2 * MAX_ROLLED_FILES {
            let extra = self.done.len() - 2 * MAX_ROLLED_FILES;
            self.done.drain(..extra);
        }
        self.pending = pending;
    }

    /// A rolled `.gz` that does not decompress: looked at again at each scan (it may be
    /// being written), counted once as an error when that lasts.
    fn unreadable(&mut self, path: &Path, head: &mut Head) {
        if !head.reported && head.since.elapsed() >= GZ_UNREADABLE_AFTER {
            head.reported = true;
            self.error(
                path,
                "a rolled .gz file does not decompress; it is not read",
                &"corrupt, or still being written",
            );
        }
    }

    fn open_failed(&mut self, path: &Path, head: &mut Head, e: &io::Error) {
        match e.kind() {
            // Renamed or deleted since it was listed: found again at the next scan.
            io::ErrorKind::NotFound => {}
            // A .gz that ends before the position to resume: still being written.
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                self.unreadable(path, head)
            }
            _ => self.error(path, "cannot open a rolled file", e),
        }
    }

    /// Opens a rolled file at `offset` of its content (the same file as listed, or
    /// `NotFound`).
    fn open_rolled(&self, path: &Path, md: &Metadata, head: &Head, offset: u64, skipping: bool) -> io::Result<Tracked> {
        let mut file = File::open(path)?;
        let now = file.metadata()?;
        if now.dev() != md.dev() || now.ino() != md.ino() {
            return Err(io::ErrorKind::NotFound.into());
        }
        let (reader, pos, gone) = if is_gz(path) {
            let (d, n) = gz_at(file, offset)?;
            (Reader::Gz(Box::new(d)), n, true)
        } else {
            file.seek(SeekFrom::Start(offset))?;
            (Reader::Plain(file), offset, false)
        };
        let fp = head.fingerprint();
        Ok(Tracked {
            dev: md.dev(),
            ino: md.ino(),
            head_len: fp.head_len,
            head_hash: fp.head_hash,
            path: Arc::from(path),
            reader,
            read_pos: pos,
            buf: Vec::new(),
            offset: pos,
            skipping: skipping && pos == offset,
            gone,
            seen: true,
            mtime: mtime(md),
            rolled: true,
            gz_failures: 0,
        })
    }
}
