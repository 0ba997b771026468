//! The blocking core of the tailer: lists the patterns and their rolled names, matches
//! files to fingerprints, reads chunks and cuts them into lines. See the parent module for
//! the invariants; [`super::rolled`] knows the rolled names and how a rolled file's content
//! is recognised.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use tracing::{info, warn};

use super::rolled::{gz_at, is_gz, plain_head, rolled_patterns, Head};
use super::{
    fnv1a, FileState, Fingerprint, Lines, StartAt, TailConfig, TailCounters, TailState, HEAD_MAX,
    MAX_ROLLED_FILES,
};

/// Bytes read from a file per read call.
const CHUNK: usize = 64 * 1024;
/// At most one warning per this period; the counters tell the rest.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// Failed reads of a `.gz` in a row (each from a reopened stream) before the rest of it
/// is given up as lost: a stream cut short or corrupt does not heal.
const GZ_ATTEMPTS: u32 = 3;
/// How long a rolled `.gz` may fail to decompress before that is counted as an error (a
/// `.gz` being written by the rotation does not decompress yet, for a moment).
const GZ_UNREADABLE_AFTER: Duration = Duration::from_secs(30);

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
    /// Not found by the last scan (deleted, out of the patterns and rolled names, a
    /// `.gz`): read to its end, then forgotten.
    gone: bool,
    seen: bool,
    mtime: (i64, i64),
    /// Under a rolled name (or gone) already: its rotation was counted.
    rolled: bool,
    /// Failed reads in a row of a `.gz` (see [`GZ_ATTEMPTS`]).
    gz_failures: u32,
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
        if n > 0 {
            self.gz_failures = 0;
        }
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

    /// The fingerprint a copy of this file's content has (a file read to its end: its
    /// first KiB, or all of it when shorter).
    fn content_fingerprint(&self) -> Fingerprint {
        if let Reader::Plain(f) = &self.reader {
            // The fingerprint is extended only at scans: a file that grew past it and went
            // away in between is fingerprinted again over what it holds.
            if (self.head_len as usize) < HEAD_MAX && self.offset > u64::from(self.head_len) {
                if let Ok(head) = plain_head(f, self.offset) {
                    return Fingerprint {
                        head_len: head.len() as u32,
                        head_hash: fnv1a(&head),
                    };
                }
            }
        }
        Fingerprint {
            head_len: self.head_len,
            head_hash: self.head_hash,
        }
    }
}

/// How one read of a file ended.
enum ReadEnd {
    /// `max_lines` reached, or a read error to retry at the next pass.
    More,
    /// At the end of what the file holds now.
    End,
    /// A `.gz` that cannot be decompressed further: the rest of it is lost.
    Broken,
}

/// Whether `head` still starts with the fingerprinted bytes.
fn head_matches(head: &[u8], head_len: u32, head_hash: u64) -> bool {
    let n = head_len as usize;
    head.len() >= n && fnv1a(&head[..n]) == head_hash
}

fn mtime(md: &Metadata) -> (i64, i64) {
    (md.mtime(), md.mtime_nsec())
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A rolled file as listed: an unchanged one keeps its cached fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl FileKey {
    fn of(md: &Metadata) -> FileKey {
        FileKey {
            dev: md.dev(),
            ino: md.ino(),
            len: md.len(),
            mtime: mtime(md),
        }
    }
}

/// A rolled file's content known to be read (or left as history).
#[derive(Debug)]
struct Done {
    fp: Fingerprint,
    /// Found by the current rolled pass.
    seen: bool,
    /// Complete rolled passes in a row that did not find it; forgotten at 2 (a file
    /// renamed between two listings is missed once at most).
    missed: u8,
}

impl Done {
    fn new(fp: Fingerprint) -> Done {
        Done {
            fp,
            seen: true,
            missed: 0,
        }
    }
}

/// A position in a file the tailer no longer follows, to be found in a rolled file.
#[derive(Debug)]
struct Orphan {
    state: FileState,
    /// From the checkpoint (lost when found nowhere), or the old content of a truncated
    /// file (whose copy may not exist: nothing is lost that is known to have been there).
    checkpointed: bool,
}

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

#[derive(Debug)]
pub(super) struct Engine {
    config: TailConfig,
    /// Patterns of the rolled names of `config.patterns`.
    rolled_patterns: Vec<String>,
    rolled_names: Vec<glob::Pattern>,
    files: Vec<Tracked>,
    /// Checkpointed positions, consumed by the first scan.
    resume: Option<Vec<FileState>>,
    /// No state at all: the very first start, where `start_at` applies.
    fresh: bool,
    /// A state without `rolled` (written before rolled files were read whole).
    legacy: bool,
    /// Modification time of the newest rolled file a checkpointed position was found in
    /// by the first scan (what a `legacy` state's history ends with).
    resumed_mtime: Option<(i64, i64)>,
    /// Fingerprints of rolled files read to their end (the state's `rolled`).
    done: Vec<Done>,
    /// Positions waiting to be found in a rolled file.
    orphans: Vec<Orphan>,
    /// The rolled files the last rolled pass looked at: no pass while they stay the same.
    rolled_listed: Vec<(PathBuf, FileKey)>,
    /// Heads of the rolled files present at the last pass.
    heads: HashMap<FileKey, Head>,
    /// A rolled file could not be identified yet: look again at the next scan.
    pending: bool,
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
        let rolled_patterns: Vec<String> = config
            .patterns
            .iter()
            .flat_map(|p| rolled_patterns(p))
            .filter(|p| glob::Pattern::new(p).is_ok())
            .collect();
        let rolled_names = rolled_patterns
            .iter()
            .filter_map(|p| glob::Pattern::new(p).ok())
            .collect();
        let legacy = state.as_ref().is_some_and(|s| s.rolled.is_none());
        let done = state
            .as_ref()
            .and_then(|s| s.rolled.clone())
            .unwrap_or_default()
            .into_iter()
            .map(Done::new)
            .collect();
        Engine {
            config,
            rolled_patterns,
            rolled_names,
            files: Vec::new(),
            fresh: state.is_none(),
            legacy,
            resumed_mtime: None,
            resume: Some(state.map(|s| s.files).unwrap_or_default()),
            done,
            orphans: Vec::new(),
            rolled_listed: Vec::new(),
            heads: HashMap::new(),
            pending: false,
            last_scan: None,
            counters,
            last_warn: None,
            scratch: Vec::new(),
        }
    }

    pub(super) fn state(&self) -> TailState {
        let rolled = Some(self.done.iter().map(|d| d.fp).collect());
        match &self.resume {
            // Not scanned yet: the checkpoint we were given still holds.
            Some(files) if self.last_scan.is_none() => TailState {
                files: files.clone(),
                rolled: if self.legacy { None } else { rolled },
            },
            _ => TailState {
                files: self
                    .files
                    .iter()
                    .map(Tracked::state)
                    .chain(self.orphans.iter().map(|o| o.state.clone()))
                    .collect(),
                rolled,
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
        bump(&self.counters.errors);
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
            let end = self.read_file(i, lines, max_lines);
            let broken = matches!(end, ReadEnd::Broken);
            if broken || (matches!(end, ReadEnd::End) && self.files[i].gone) {
                let t = &mut self.files[i];
                if !t.buf.is_empty() {
                    // The file will not grow any more: its unterminated last line is
                    // complete (this may make the batch one line longer than asked).
                    lines.push(&t.path, &t.buf, false);
                    t.offset += t.buf.len() as u64;
                    t.buf.clear();
                }
                if broken {
                    bump(&self.counters.lost);
                    warn!(
                        path = %t.path.display(),
                        read = t.read_pos,
                        "a rolled .gz file stops decompressing; the rest of it is lost"
                    );
                }
                finished.push(i);
            }
        }
        for i in finished.into_iter().rev() {
            let t = self.files.remove(i);
            // Its content is read: a copy of it (its .gz) is not read again.
            let fp = t.content_fingerprint();
            if fp.head_len > 0 && !self.done.iter().any(|d| d.fp == fp) {
                self.done.push(Done::new(fp));
            }
        }
    }

    /// Reads file `i` into `lines` until `max_lines` or the end of what it holds.
    fn read_file(&mut self, i: usize, lines: &mut Lines, max_lines: usize) -> ReadEnd {
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
                    bump(&self.counters.cut_lines);
                } else {
                    lines.push(&t.path, line, false);
                }
                pos += n + 1;
            }
            t.buf.drain(..pos);
            t.offset += pos as u64;
            if lines.len() >= max_lines {
                return ReadEnd::More;
            }
            if t.buf.len() > max_line {
                // No newline within max_line bytes: hand out the start, skip the rest.
                lines.push(&t.path, &t.buf[..max_line], true);
                bump(&self.counters.cut_lines);
                t.offset += t.buf.len() as u64;
                t.buf.clear();
                t.skipping = true;
                continue;
            }
            match t.fill(&mut self.scratch) {
                Ok(0) => return ReadEnd::End,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let path = Arc::clone(&t.path);
                    if let Reader::Gz(_) = t.reader {
                        t.gz_failures += 1;
                        if t.gz_failures >= GZ_ATTEMPTS {
                            self.error(&path, "cannot decompress a rolled file", &e);
                            return ReadEnd::Broken;
                        }
                        // A decoder that failed cannot go on: the next pass reads from a
                        // new one at the same place (a .gz still being written has grown).
                        if let Ok((d, n)) = File::open(&*path).and_then(|f| gz_at(f, t.read_pos)) {
                            if n == t.read_pos {
                                t.reader = Reader::Gz(Box::new(d));
                            }
                        }
                    }
                    self.error(&path, "cannot read a tailed file; retrying", &e);
                    return ReadEnd::More;
                }
            }
        }
    }

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

    fn is_rolled_name(&self, path: &Path) -> bool {
        is_gz(path) || self.rolled_names.iter().any(|p| p.matches_path(path))
    }

    fn tracked_plain(&self, dev: u64, ino: u64) -> Option<usize> {
        self.files
            .iter()
            .position(|t| t.dev == dev && t.ino == ino && matches!(t.reader, Reader::Plain(_)))
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let patterns = self.config.patterns.clone();
        let (gz, live): (Vec<_>, Vec<_>) = self
            .expand(&patterns)
            .into_iter()
            .partition(|(p, _)| is_gz(p));
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
            self.orphans
                .extend(entries.into_iter().map(|state| Orphan {
                    state,
                    checkpointed: true,
                }));
        }
        let listed: Vec<(PathBuf, FileKey)> = rolled
            .iter()
            .map(|(p, md)| (p.clone(), FileKey::of(md)))
            .collect();
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
    fn scan_live(
        &mut self,
        path: PathBuf,
        md: &Metadata,
        resume: &mut Option<Vec<FileState>>,
        first: bool,
    ) {
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
                self.orphans.push(Orphan {
                    state: e.clone(),
                    checkpointed: false,
                });
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
    fn scan_rolled_plain(
        &mut self,
        path: &Path,
        md: &Metadata,
        resume: &mut Option<Vec<FileState>>,
    ) {
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
            e.dev == dev
                && e.ino == ino
                && head_matches(&head, e.head_len, e.head_hash)
                && e.offset <= md.len()
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
                self.orphans.push(Orphan {
                    state: t.state(),
                    checkpointed: false,
                });
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

    fn identify(&self, head: &Head, gz: bool, len: u64) -> Identity {
        if !head.complete {
            return Identity::Incomplete;
        }
        if head.bytes.is_empty() {
            return Identity::Empty;
        }
        if self
            .files
            .iter()
            .any(|t| head.starts_with(t.head_len, t.head_hash))
        {
            return Identity::Followed;
        }
        if let Some(k) = self.orphans.iter().position(|o| {
            head.starts_with(o.state.head_len, o.state.head_hash) && (gz || o.state.offset <= len)
        }) {
            return Identity::Orphan(k);
        }
        if let Some(k) = self.done.iter().position(|d| head.is(&d.fp)) {
            return Identity::Done(k);
        }
        Identity::Unknown
    }

    /// Identifies every rolled file not followed by inode, and reads what is owed: an
    /// orphaned position from there, a never-seen file whole. See the module docs.
    fn rolled_pass(&mut self, mut rolled: Vec<(PathBuf, Metadata)>, first: bool) {
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
                    let history = first
                        && (self.fresh
                            || (self.legacy
                                && self.resumed_mtime.is_none_or(|m| mtime(&md) <= m)));
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
    fn open_rolled(
        &self,
        path: &Path,
        md: &Metadata,
        head: &Head,
        offset: u64,
        skipping: bool,
    ) -> io::Result<Tracked> {
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

/// Takes the checkpointed entry of the file `(dev, ino)` whose head is `head`.
fn take_resume(
    resume: &mut Option<Vec<FileState>>,
    dev: u64,
    ino: u64,
    head: &[u8],
) -> Option<FileState> {
    let entries = resume.as_mut()?;
    let k = entries
        .iter()
        .position(|e| e.dev == dev && e.ino == ino && head_matches(head, e.head_len, e.head_hash))?;
    Some(entries.remove(k))
}
