//! The blocking core of the tailer: lists the patterns and their rolled names, matches
//! files to fingerprints, reads chunks and cuts them into lines. See the parent module for
//! the invariants; [`super::rolled`] knows the rolled names and how a rolled file's content
//! is recognised, and [`pass`] identifies the rolled files and opens what is owed.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use tracing::warn;

mod pass;
mod scan;

use super::rolled::{gz_at, plain_head, rolled_patterns, Head};
use super::{fnv1a, FileState, Fingerprint, Lines, TailConfig, TailCounters, TailState, HEAD_MAX};

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
                    return Fingerprint { head_len: head.len() as u32, head_hash: fnv1a(&head) };
                }
            }
        }
        Fingerprint { head_len: self.head_len, head_hash: self.head_hash }
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
        FileKey { dev: md.dev(), ino: md.ino(), len: md.len(), mtime: mtime(md) }
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
        Done { fp, seen: true, missed: 0 }
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
    pub(super) fn new(config: TailConfig, state: Option<TailState>, counters: Arc<TailCounters>) -> Engine {
        let rolled_patterns: Vec<String> =
            config.patterns.iter().flat_map(|p| rolled_patterns(p)).filter(|p| glob::Pattern::new(p).is_ok()).collect();
        let rolled_names = rolled_patterns.iter().filter_map(|p| glob::Pattern::new(p).ok()).collect();
        let legacy = state.as_ref().is_some_and(|s| s.rolled.is_none());
        let done =
            state.as_ref().and_then(|s| s.rolled.clone()).unwrap_or_default().into_iter().map(Done::new).collect();
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
            Some(files) if self.last_scan.is_none() => {
                TailState { files: files.clone(), rolled: if self.legacy { None } else { rolled } }
            }
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
        if self.last_warn.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
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
        if self.last_scan.is_none_or(|t| t.elapsed() >= self.config.poll_interval) {
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
}
