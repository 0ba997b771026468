//! The blocking core of the tailer: scans the patterns, matches files to fingerprints,
//! reads chunks and cuts them into lines. See the parent module for the invariants.

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use tracing::warn;

use super::{fnv1a, FileState, Lines, StartAt, TailConfig, TailCounters, TailState, HEAD_MAX};

/// Bytes read from a file per read call.
const CHUNK: usize = 64 * 1024;
/// At most one warning per this period; the counters tell the rest.
const WARN_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug)]
enum Reader {
    Plain(File),
    Gz(Box<MultiGzDecoder<File>>),
}

impl Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Reader::Plain(f) => f.read(buf),
            Reader::Gz(d) => d.read(buf),
        }
    }
}

#[derive(Debug)]
struct Tracked {
    dev: u64,
    ino: u64,
    head_len: u32,
    head_hash: u64,
    path: Arc<Path>,
    reader: Reader,
    /// Bytes taken from the reader so far.
    read_pos: u64,
    /// `file[offset..read_pos]`: read but not yet handed out (empty while skipping).
    buf: Vec<u8>,
    /// Just after the last line handed out (or skipped bytes of a cut line).
    offset: u64,
    skipping: bool,
    /// Not found by the last scan (deleted, rolled out of the patterns, a `.gz`): read
    /// to its end, then forgotten.
    gone: bool,
    seen: bool,
    mtime: (i64, i64),
}

impl Tracked {
    fn state(&self) -> FileState {
        FileState {
            dev: self.dev,
            ino: self.ino,
            head_len: self.head_len,
            head_hash: self.head_hash,
            path: self.path.to_path_buf(),
            offset: self.offset,
            skipping: self.skipping,
        }
    }

    /// Reads one chunk into `buf` through `scratch` (reused: a followed file mostly
    /// reads a few lines or nothing, and zeroing a chunk of `buf` for each read cost more
    /// than copying what came); `Ok(0)` at the end of the file.
    fn fill(&mut self, scratch: &mut Vec<u8>) -> io::Result<usize> {
        if scratch.len() < CHUNK {
            scratch.resize(CHUNK, 0);
        }
        let r = self.reader.read(scratch);
        let n = *r.as_ref().unwrap_or(&0);
        self.buf.extend_from_slice(&scratch[..n]);
        self.read_pos += n as u64;
        if self.skipping {
            // The rest of a cut line: drop it up to and including its newline.
            match self.buf.iter().position(|&b| b == b'\n') {
                Some(k) => {
                    self.buf.drain(..=k);
                    self.offset += k as u64 + 1;
                    self.skipping = false;
                }
                None => {
                    self.offset += self.buf.len() as u64;
                    self.buf.clear();
                }
            }
        }
        r
    }
}

/// Whether `head` still starts with the fingerprinted bytes.
fn head_matches(head: &[u8], head_len: u32, head_hash: u64) -> bool {
    let n = head_len as usize;
    head.len() >= n && fnv1a(&head[..n]) == head_hash
}

fn read_head_at(file: &File, size: u64) -> io::Result<Vec<u8>> {
    let want = size.min(HEAD_MAX as u64) as usize;
    let mut head = vec![0; want];
    let mut got = 0;
    while got < want {
        let n = file.read_at(&mut head[got..], got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    head.truncate(got);
    Ok(head)
}

fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

fn mtime(md: &Metadata) -> (i64, i64) {
    (md.mtime(), md.mtime_nsec())
}

#[derive(Debug)]
pub(super) struct Engine {
    config: TailConfig,
    files: Vec<Tracked>,
    /// Checkpointed positions, consumed by the first scan.
    resume: Option<Vec<FileState>>,
    /// No state at all: the very first start, where `start_at` applies.
    fresh: bool,
    last_scan: Option<Instant>,
    counters: Arc<TailCounters>,
    last_warn: Option<Instant>,
    /// Read buffer shared by the files (see [`Tracked::fill`]).
    scratch: Vec<u8>,
}

impl Engine {
    pub(super) fn new(
        config: TailConfig,
        state: Option<TailState>,
        counters: Arc<TailCounters>,
    ) -> Engine {
        Engine {
            config,
            files: Vec::new(),
            fresh: state.is_none(),
            resume: Some(state.map(|s| s.files).unwrap_or_default()),
            last_scan: None,
            counters,
            last_warn: None,
            scratch: Vec::new(),
        }
    }

    pub(super) fn state(&self) -> TailState {
        match &self.resume {
            // Not scanned yet: the checkpoint we were given still holds.
            Some(files) if self.last_scan.is_none() => TailState {
                files: files.clone(),
            },
            _ => TailState {
                files: self.files.iter().map(Tracked::state).collect(),
            },
        }
    }

    fn warn_limited(&mut self, path: &Path, what: &str, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        if self
            .last_warn
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            self.last_warn = Some(now);
            warn!(path = %path.display(), %error, "{what}");
        }
    }

    fn error(&mut self, path: &Path, what: &str, error: &dyn std::fmt::Display) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.warn_limited(path, what, error);
    }

    /// One pass: rescan when due, then read every file until `max_lines` lines.
    pub(super) fn read(&mut self, lines: &mut Lines, max_lines: usize) {
        lines.clear();
        if self
            .last_scan
            .is_none_or(|t| t.elapsed() >= self.config.poll_interval)
        {
            self.scan();
        }
        let mut finished = Vec::new();
        for i in 0..self.files.len() {
            if lines.len() >= max_lines {
                break;
            }
            if self.read_file(i, lines, max_lines) && self.files[i].gone {
                let t = &mut self.files[i];
                if !t.buf.is_empty() {
                    // The file will not grow any more: its unterminated last line is
                    // complete (this may make the batch one line longer than asked).
                    lines.push(&t.path, &t.buf, false);
                    t.offset += t.buf.len() as u64;
                    t.buf.clear();
                }
                finished.push(i);
            }
        }
        for i in finished.into_iter().rev() {
            self.files.remove(i);
        }
    }

    /// Reads file `i` into `lines`; true when it reached its end.
    fn read_file(&mut self, i: usize, lines: &mut Lines, max_lines: usize) -> bool {
        let max_line = self.config.max_line_bytes;
        let t = &mut self.files[i];
        loop {
            let mut pos = 0;
            while lines.len() < max_lines {
                let Some(n) = t.buf[pos..].iter().position(|&b| b == b'\n') else {
                    break;
                };
                let line = &t.buf[pos..pos + n];
                if line.len() > max_line {
                    lines.push(&t.path, &line[..max_line], true);
                    self.counters.cut_lines.fetch_add(1, Ordering::Relaxed);
                } else {
                    lines.push(&t.path, line, false);
                }
                pos += n + 1;
            }
            t.buf.drain(..pos);
            t.offset += pos as u64;
            if lines.len() >= max_lines {
                return false;
            }
            if t.buf.len() > max_line {
                // No newline within max_line bytes: hand out the start, skip the rest.
                lines.push(&t.path, &t.buf[..max_line], true);
                self.counters.cut_lines.fetch_add(1, Ordering::Relaxed);
                t.offset += t.buf.len() as u64;
                t.buf.clear();
                t.skipping = true;
                continue;
            }
            match t.fill(&mut self.scratch) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let path = Arc::clone(&t.path);
                    self.error(&path, "cannot read a tailed file; retrying", &e);
                    return false;
                }
            }
        }
    }

    fn expand(&mut self) -> Vec<(PathBuf, Metadata)> {
        let mut found: Vec<(PathBuf, Metadata)> = Vec::new();
        let patterns = self.config.patterns.clone();
        for p in &patterns {
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

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let found = self.expand();
        let mut resume = self.resume.take();
        let first = resume.is_some();
        for t in &mut self.files {
            t.seen = false;
        }
        let mut gz_candidates = Vec::new();
        for (path, md) in found {
            if is_gz(&path) {
                gz_candidates.push(path);
                continue;
            }
            let (dev, ino) = (md.dev(), md.ino());
            let same =
                |t: &Tracked| t.dev == dev && t.ino == ino && matches!(t.reader, Reader::Plain(_));
            if let Some(i) = self.files.iter().position(same) {
                self.check(i, path, &md);
                continue;
            }
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.error(&path, "cannot open a tailed file", &e);
                    continue;
                }
            };
            let head = match read_head_at(&file, md.len()) {
                Ok(h) => h,
                Err(e) => {
                    self.error(&path, "cannot read a tailed file", &e);
                    continue;
                }
            };
            let resumed = resume.as_mut().and_then(|entries| {
                let k = entries.iter().position(|e| {
                    e.dev == dev && e.ino == ino && head_matches(&head, e.head_len, e.head_hash)
                })?;
                Some(entries.remove(k))
            });
            let (offset, skipping) = match resumed {
                Some(e) if e.offset <= md.len() => (e.offset, e.skipping),
                Some(_) => {
                    // Shrank while we were down: copy-truncate.
                    self.counters.truncations.fetch_add(1, Ordering::Relaxed);
                    (0, false)
                }
                None if first && self.fresh && self.config.start_at == StartAt::End => {
                    (md.len(), false)
                }
                None => (0, false),
            };
            let mut file = file;
            if let Err(e) = file.seek(SeekFrom::Start(offset)) {
                self.error(&path, "cannot seek in a tailed file", &e);
                continue;
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
                mtime: mtime(&md),
            });
        }
        for t in &mut self.files {
            if !t.seen {
                t.gone = true;
            }
        }
        if let Some(entries) = resume.filter(|e| !e.is_empty()) {
            // Rolled and gzipped copies: `<pattern>.gz` (access*.log → access-….log.gz).
            let gz_patterns = TailConfig {
                patterns: self
                    .config
                    .patterns
                    .iter()
                    .filter(|p| !p.ends_with(".gz"))
                    .map(|p| format!("{p}.gz"))
                    .collect(),
                ..self.config.clone()
            };
            let saved = std::mem::replace(&mut self.config, gz_patterns);
            gz_candidates.extend(self.expand().into_iter().map(|(p, _)| p));
            self.config = saved;
            gz_candidates.sort();
            gz_candidates.dedup();
            for e in entries {
                self.resume_from_gz(e, &gz_candidates);
            }
        }
        // Gone files (rolled, gz) first, then oldest modification first: a rolled file's
        // tail is read before the lines of the file that replaced it.
        self.files.sort_by_key(|t| (!t.gone, t.mtime));
    }

    /// A file found again by inode: follow renames, detect truncation and replacement,
    /// extend a short fingerprint.
    fn check(&mut self, i: usize, path: PathBuf, md: &Metadata) {
        let t = &mut self.files[i];
        t.seen = true;
        t.gone = false;
        t.mtime = mtime(md);
        if *t.path != *path {
            t.path = Arc::from(path);
        }
        let Reader::Plain(file) = &t.reader else {
            return;
        };
        let head = match read_head_at(file, md.len()) {
            Ok(h) => h,
            Err(e) => {
                let p = Arc::clone(&t.path);
                self.error(&p, "cannot read a tailed file", &e);
                return;
            }
        };
        let t = &mut self.files[i];
        if md.len() < t.read_pos || !head_matches(&head, t.head_len, t.head_hash) {
            self.counters.truncations.fetch_add(1, Ordering::Relaxed);
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
            self.warn_limited(
                &p,
                "tailed file was truncated or replaced; reading it from the start",
                &"copy-truncate",
            );
            if let Err(e) = r {
                self.error(&p, "cannot seek in a tailed file", &e);
            }
        } else if head.len() > t.head_len as usize {
            t.head_len = head.len() as u32;
            t.head_hash = fnv1a(&head);
        }
    }

    /// A checkpointed file not found by inode: look for it, by head hash, in `.gz` files.
    fn resume_from_gz(&mut self, e: FileState, candidates: &[PathBuf]) {
        let mut beside = e.path.clone().into_os_string();
        beside.push(".gz");
        let beside = PathBuf::from(beside);
        let mut tried: Vec<&Path> = vec![beside.as_path()];
        tried.extend(
            candidates
                .iter()
                .map(PathBuf::as_path)
                .filter(|p| *p != beside),
        );
        if e.head_len > 0 {
            for path in tried {
                match self.open_gz_at(path, &e) {
                    Ok(Some(t)) => {
                        self.counters.gz_resumed.fetch_add(1, Ordering::Relaxed);
                        self.files.push(t);
                        return;
                    }
                    Ok(None) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => {
                        let p = path.to_path_buf();
                        self.error(&p, "cannot read a rolled .gz file", &err);
                    }
                }
            }
        }
        self.counters.lost.fetch_add(1, Ordering::Relaxed);
        warn!(path = %e.path.display(), offset = e.offset, "a checkpointed file is gone; its unread tail is lost");
    }

    fn open_gz_at(&self, path: &Path, e: &FileState) -> io::Result<Option<Tracked>> {
        let file = File::open(path)?;
        let md = file.metadata()?;
        let mut d = MultiGzDecoder::new(file);
        let mut head = vec![0; e.head_len as usize];
        if d.read_exact(&mut head).is_err() || fnv1a(&head) != e.head_hash {
            return Ok(None);
        }
        let skip = e.offset.saturating_sub(u64::from(e.head_len));
        let skipped = io::copy(&mut (&mut d).take(skip), &mut io::sink())?;
        // The head was consumed too: restart so `read_pos` counts from 0 when offset < head.
        let (d, pos) = if e.offset < u64::from(e.head_len) || skipped < skip {
            let mut d = MultiGzDecoder::new(File::open(path)?);
            let n = io::copy(&mut (&mut d).take(e.offset), &mut io::sink())?;
            (d, n)
        } else {
            (d, e.offset)
        };
        Ok(Some(Tracked {
            dev: md.dev(),
            ino: md.ino(),
            head_len: e.head_len,
            head_hash: e.head_hash,
            path: Arc::from(path),
            reader: Reader::Gz(Box::new(d)),
            read_pos: pos,
            buf: Vec::new(),
            offset: pos,
            skipping: e.skipping,
            gone: true,
            seen: true,
            mtime: mtime(&md),
        }))
    }
}
