//! The scan of a poll: lists the patterns and the rolled names, follows renames, detects
//! truncation, resumes checkpointed positions by inode, and hands the rolled files to the
//! rolled pass when they changed (see the tail module docs).

use std::cmp::Reverse;
use std::fs::{File, Metadata};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::{bump, head_matches, mtime, Engine, FileKey, Orphan, Reader, Tracked};
use crate::tail::rolled::{is_gz, plain_head};
use crate::tail::{fnv1a, FileState, StartAt, MAX_ROLLED_FILES};

impl Engine {
    fn expand(&mut self, patterns: &[String]) -> Vec<(PathBuf, Metadata)> {
        let mut found: Vec<(PathBuf, Metadata)> = Vec::new();
        for p in patterns {
            let paths = match glob::glob(p) {
                Ok(paths) => paths,
                Err(e) => {
                    self.error(Path::new(p), "invalid pattern", &e);
                    continue;
                }
            };
            for entry in paths {
                match entry {
                    Ok(path) => match std::fs::metadata(&path) {
                        Ok(md) if md.is_file() => found.push((path, md)),
                        Ok(_) => {}
                        // Deleted between the listing and the stat: the next scan settles it.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => self.error(&path, "cannot stat a tailed file", &e),
                    },
                    Err(e) => self.error(e.path().to_path_buf().as_path(), "cannot list files", &e),
                }
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.dedup_by(|a, b| a.0 == b.0);
        found
    }

    pub(super) fn is_rolled_name(&self, path: &Path) -> bool {
        is_gz(path) || self.rolled_names.iter().any(|p| p.matches_path(path))
    }

    pub(super) fn tracked_plain(&self, dev: u64, ino: u64) -> Option<usize> {
        self.files.iter().position(|t| t.dev == dev && t.ino == ino && matches!(t.reader, Reader::Plain(_)))
    }

    pub(super) fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let patterns = self.config.patterns.clone();
        let (gz, live): (Vec<_>, Vec<_>) = self.expand(&patterns).into_iter().partition(|(p, _)| is_gz(p));
        let rolled_patterns = self.rolled_patterns.clone();
        let mut rolled = self.expand(&rolled_patterns);
        rolled.extend(gz);
        rolled.sort_by(|a, b| a.0.cmp(&b.0));
        rolled.dedup_by(|a, b| a.0 == b.0);
        // A plain file the patterns match is a followed file, whatever its name.
        rolled.retain(|(p, _)| live.binary_search_by(|(q, _)| q.cmp(p)).is_err());
        if rolled.len() > MAX_ROLLED_FILES {
            rolled.sort_by_key(|(_, md)| Reverse(mtime(md)));
            rolled.truncate(MAX_ROLLED_FILES);
            rolled.sort_by(|a, b| a.0.cmp(&b.0));
        }

        let mut resume = self.resume.take();
        let first = resume.is_some();
        for t in &mut self.files {
            t.seen = false;
        }
        for (path, md) in live {
            self.scan_live(path, &md, &mut resume, first);
        }
        for (path, md) in rolled.iter().filter(|(p, _)| !is_gz(p)) {
            self.scan_rolled_plain(path, md, &mut resume);
        }
        for t in &mut self.files {
            if !t.seen && !t.gone {
                t.gone = true;
                if !t.rolled {
                    t.rolled = true;
                    bump(&self.counters.rotations);
                }
            }
        }
        if let Some(entries) = resume {
            self.orphans.extend(entries.into_iter().map(|state| Orphan { state, checkpointed: true }));
        }
        let listed: Vec<(PathBuf, FileKey)> = rolled.iter().map(|(p, md)| (p.clone(), FileKey::of(md))).collect();
        if first || self.pending || !self.orphans.is_empty() || listed != self.rolled_listed {
            self.rolled_pass(rolled, first);
            self.rolled_listed = listed;
        }
        // Gone files (rolled, gz) first, then oldest modification first: a rolled file's
        // tail is read before the lines of the file that replaced it.
        self.files.sort_by_key(|t| (!t.gone, t.mtime));
    }

    /// A file the patterns match: follow it, or start following it (resuming a
    /// checkpointed position when it is that file).
    fn scan_live(&mut self, path: PathBuf, md: &Metadata, resume: &mut Option<Vec<FileState>>, first: bool) {
        let (dev, ino) = (md.dev(), md.ino());
        if let Some(i) = self.tracked_plain(dev, ino) {
            self.check(i, path, md);
            return;
        }
        let file = match File::open(&path) {
            Ok(f) => f,
            // Renamed or deleted since the listing: the next scan finds it where it went.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                self.error(&path, "cannot open a tailed file", &e);
                return;
            }
        };
        let head = match plain_head(&file, md.len()) {
            Ok(h) => h,
            Err(e) => {
                self.error(&path, "cannot read a tailed file", &e);
                return;
            }
        };
        let resumed = take_resume(resume, dev, ino, &head);
        let rolled = self.is_rolled_name(&path);
        let (offset, skipping) = match &resumed {
            Some(e) if e.offset <= md.len() => {
                if rolled && !self.is_rolled_name(&e.path) {
                    // Rolled while we were down, under a name the patterns match.
                    bump(&self.counters.rotations);
                }
                (e.offset, e.skipping)
            }
            Some(e) => {
                // Shrank while we were down: copy-truncate. The rest of the old content
                // may be in the copy.
                bump(&self.counters.truncations);
                self.orphans.push(Orphan { state: e.clone(), checkpointed: false });
                (0, false)
            }
            None if first && self.fresh && self.config.start_at == StartAt::End => (md.len(), false),
            None => (0, false),
        };
        let mut file = file;
        if let Err(e) = file.seek(SeekFrom::Start(offset)) {
            self.error(&path, "cannot seek in a tailed file", &e);
            return;
        }
        self.files.push(Tracked {
            dev,
            ino,
            head_len: head.len() as u32,
            head_hash: fnv1a(&head),
            path: Arc::from(path),
            reader: Reader::Plain(file),
            read_pos: offset,
            buf: Vec::new(),
            offset,
            skipping,
            gone: false,
            seen: true,
            mtime: mtime(md),
            rolled,
            gz_failures: 0,
        });
    }

    /// A plain file under a rolled name: a followed file renamed there stays followed; on
    /// start, a checkpointed file renamed there resumes (other rolled files are for the
    /// rolled pass).
    fn scan_rolled_plain(&mut self, path: &Path, md: &Metadata, resume: &mut Option<Vec<FileState>>) {
        let (dev, ino) = (md.dev(), md.ino());
        if let Some(i) = self.tracked_plain(dev, ino) {
            self.check(i, path.to_path_buf(), md);
            return;
        }
        let Some(entries) = resume.as_mut() else {
            return;
        };
        if !entries.iter().any(|e| e.dev == dev && e.ino == ino) {
            return;
        }
        let Ok(mut file) = File::open(path) else {
            return;
        };
        let Ok(head) = plain_head(&file, md.len()) else {
            return;
        };
        let Some(k) = entries.iter().position(|e| {
            e.dev == dev && e.ino == ino && head_matches(&head, e.head_len, e.head_hash) && e.offset <= md.len()
        }) else {
            return;
        };
        if file.seek(SeekFrom::Start(entries[k].offset)).is_err() {
            return;
        }
        let e = entries.remove(k);
        if !self.is_rolled_name(&e.path) {
            bump(&self.counters.rotations);
        }
        self.resumed_mtime = self.resumed_mtime.max(Some(mtime(md)));
        self.files.push(Tracked {
            dev,
            ino,
            head_len: head.len() as u32,
            head_hash: fnv1a(&head),
            path: Arc::from(path),
            reader: Reader::Plain(file),
            read_pos: e.offset,
            buf: Vec::new(),
            offset: e.offset,
            skipping: e.skipping,
            gone: false,
            seen: true,
            mtime: mtime(md),
            rolled: true,
            gz_failures: 0,
        });
    }

    /// A file found again by inode: follow renames, detect truncation and replacement,
    /// extend a short fingerprint.
    fn check(&mut self, i: usize, path: PathBuf, md: &Metadata) {
        let t = &mut self.files[i];
        t.seen = true;
        t.gone = false;
        t.mtime = mtime(md);
        if *t.path != *path {
            if !t.rolled {
                t.rolled = true;
                bump(&self.counters.rotations);
            }
            t.path = Arc::from(path);
        }
        let Reader::Plain(file) = &t.reader else {
            return;
        };
        let head = match plain_head(file, md.len()) {
            Ok(h) => h,
            Err(e) => {
                let p = Arc::clone(&t.path);
                self.error(&p, "cannot read a tailed file", &e);
                return;
            }
        };
        let t = &mut self.files[i];
        if md.len() < t.read_pos || !head_matches(&head, t.head_len, t.head_hash) {
            bump(&self.counters.truncations);
            if t.offset > 0 && t.head_len > 0 {
                // Copy-truncate: what was not read yet of the old content is in the copy,
                // if the rotation made one under a rolled name.
                self.orphans.push(Orphan { state: t.state(), checkpointed: false });
            }
            let p = Arc::clone(&t.path);
            let r = match &mut t.reader {
                Reader::Plain(f) => f.seek(SeekFrom::Start(0)),
                Reader::Gz(_) => Ok(0),
            };
            t.read_pos = 0;
            t.offset = 0;
            t.buf.clear();
            t.skipping = false;
            t.head_len = head.len() as u32;
            t.head_hash = fnv1a(&head);
            self.warn_limited(&p, "tailed file was truncated or replaced; reading it from the start", &"copy-truncate");
            if let Err(e) = r {
                self.error(&p, "cannot seek in a tailed file", &e);
            }
        } else if head.len() > t.head_len as usize {
            t.head_len = head.len() as u32;
            t.head_hash = fnv1a(&head);
        }
    }
}

/// Takes the checkpointed entry of the file `(dev, ino)` whose head is `head`.
fn take_resume(resume: &mut Option<Vec<FileState>>, dev: u64, ino: u64, head: &[u8]) -> Option<FileState> {
    let entries = resume.as_mut()?;
    let k = entries.iter().position(|e| e.dev == dev && e.ino == ino && head_matches(head, e.head_len, e.head_hash))?;
    Some(entries.remove(k))
}
