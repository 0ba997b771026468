//! Rotation-safe file following: the line reader under every file source (Caddy access
//! logs, `[[json_file]]`, ufw and fail2ban log files).
//!
//! In: a [`TailConfig`] (glob patterns, where to start in files never seen, a maximum line
//! length, a poll interval) and the [`TailState`] saved by the last run. Out: batches of
//! complete lines ([`Lines`]), each with the file it came from, and after each batch the
//! new [`TailState`] to checkpoint once the rows built from the batch are spooled.
//!
//! # Design note: invariants
//!
//! - **Identity is a fingerprint, not a name.** A followed file is `(dev, inode)` plus an
//!   FNV-1a hash of its first `head_len` bytes (up to [`HEAD_MAX`] = 1 KiB). A file shorter
//!   than 1 KiB is fingerprinted over what it has, and the fingerprint is *extended* at
//!   each scan (after checking the bytes it already covered did not change) until it
//!   covers 1 KiB. The hash tells a reused inode, or a file truncated and rewritten
//!   between two polls, from the file we were reading. A rolled file (below) is known by
//!   the hash of its *content's* first bytes alone — for a `.gz` the decompressed ones —
//!   since renaming and compressing change everything else. Names only say where a file
//!   was last seen.
//! - **The offset in the state is always at a line boundary** (or inside a line being
//!   skipped because it was cut, flagged `skipping`): it is the position just after the
//!   last line handed out by [`Tailer::read_batch`] (in a `.gz`, in the decompressed
//!   stream). Lines read but not yet returned stay buffered, so checkpointing
//!   [`Tailer::state`] after a batch is spooled resumes exactly after that batch: no gap,
//!   and a crash before the checkpoint repeats only that batch.
//! - **A partial last line is never emitted** while its file may still grow; its newline
//!   completes it. Only when a file is gone for good (deleted, compressed, moved out of
//!   every name below, or a `.gz`) and read to its end is a last unterminated line handed
//!   out as it is.
//! - **Long lines are cut, never dropped:** past `max_line_bytes` the first
//!   `max_line_bytes` are emitted with `truncated = true` and the rest up to the newline
//!   is skipped. Memory per file is bounded by `max_line_bytes` + one read chunk.
//! - **Rolled names.** Besides the files its patterns match, the tailer lists the rolled
//!   names of each pattern `P` (see [`rolled_patterns`]): `P.gz`, logrotate's `P.1`,
//!   `P.2.gz`, `P-20261122(.gz)`, and for a name `stem.ext` Caddy's (lumberjack's)
//!   `stem-2026-11-22T10-15-01.000.ext(.gz)` and logrotate's `stem-20261122.ext(.gz)`.
//!   `.gz` files the patterns match are rolled files too. Only the newest
//!   [`MAX_ROLLED_FILES`] rolled files (by modification time) are looked at.
//! - **Rotation by rename** (Caddy's `roll_*`, logrotate's `create`): the open descriptor
//!   follows the inode, so the old file is read to its end even after it was renamed,
//!   compressed away or deleted; while it stays under a pattern or a rolled name it is
//!   still followed (a program may write to it until it reopens its log). The new file is
//!   new and read from its beginning. Files are read oldest modification first, `.gz` and
//!   gone files before the others, so a rolled file's tail comes before the new file's
//!   lines. Each followed file that rolls is counted once in [`TailCounters::rotations`].
//! - **Every rolled file is read exactly once.** When the set of rolled files changes
//!   (and on start), each one is identified by its content fingerprint (cached per
//!   `(dev, inode, size, mtime)`, so an unchanged file is fingerprinted once per process):
//!   the compressed copy of a file being read is skipped; one holding a position the
//!   tailer lost track of (a checkpointed file not found on start, a copy-truncated file)
//!   is read from that position ([`TailCounters::rolled_resumed`]); one already read to
//!   its end is skipped — the fingerprints of those are part of the state
//!   ([`TailState::rolled`]); any other one rolled while the tailer was down or between
//!   two polls, and is read whole, oldest first ([`TailCounters::rolled_read`]). A `.gz`
//!   still being written (its first KiB does not decompress yet) is looked at again at the
//!   next poll. A checkpointed position found in no file at all is counted in
//!   [`TailCounters::lost`] with a warning (the file rolled away and was deleted before
//!   it was read to its end).
//! - **History is not imported.** On the very first start (no state), rolled files that
//!   exist are recorded as read, whatever `start_at` says: only the files the patterns
//!   match are read per `start_at`. A state written before rolled files were tracked
//!   (no `rolled` field) is treated the same way, except rolled files newer than the one
//!   a checkpointed position was found in.
//! - **Copy-truncate:** a file whose size dropped below what was read (or whose first
//!   bytes changed) is read again from 0, counted in [`TailCounters::truncations`]; its
//!   old position is looked for in the rolled files, so lines written between our last
//!   read and the copy are read from the copy. Lines written between the copy and the
//!   truncation are lost by that rotation scheme itself.
//! - Files first seen on the very first start (no state) begin at `start_at`; every file
//!   that appears later begins at 0, since it was created after we started watching.
//!
//! All file I/O is blocking and runs on the blocking pool (one pass per
//! [`Tailer::read_batch`]); [`Tailer::read_blocking`] is the same pass for callers on
//! their own thread (the benchmark).

mod engine;
mod rolled;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use engine::Engine;
pub use rolled::rolled_patterns;

/// Bytes of a file's beginning that its fingerprint hashes.
pub const HEAD_MAX: usize = 1024;
/// Default for [`TailConfig::max_line_bytes`]: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;
/// How many rolled files (the newest by modification time) a tailer looks at; older ones
/// are neither read nor remembered. Caddy keeps 10 by default, logrotate usually 4 to 52.
pub const MAX_ROLLED_FILES: usize = 64;

/// Where to start in a file seen for the first time on the very first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Read what the file already holds.
    Beginning,
    /// Only lines written from now on.
    End,
}

/// What to follow and how.
#[derive(Debug, Clone)]
pub struct TailConfig {
    /// Glob patterns (`*`, `?`, `[...]`, `**`) of the files to follow. Their rolled names
    /// ([`rolled_patterns`]) are found without being listed here.
    pub patterns: Vec<String>,
    /// Where files found on the very first start begin.
    pub start_at: StartAt,
    /// Longer lines are cut to this many bytes and flagged truncated.
    pub max_line_bytes: usize,
    /// How often the patterns are expanded again and idle files polled.
    pub poll_interval: Duration,
}

/// Errors of the tailer itself (file errors are counted and retried, not returned).
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// A pattern is not a valid glob.
    #[error("invalid file pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// The blocking reader task failed (a panic).
    #[error("file reader task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The reader was lost by an earlier interrupted call.
    #[error("file reader is gone (an earlier read was interrupted)")]
    Gone,
}

/// The checkpoint of a tailer: one entry per file it follows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailState {
    /// Followed files (and positions still to be found in a rolled file).
    pub files: Vec<FileState>,
    /// Content fingerprints of the rolled files already read to their end, or left unread
    /// as history on the very first start, so that none is read (again) whole. `None` in
    /// a state written before rolled files were read whole (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled: Option<Vec<Fingerprint>>,
}

/// What a file's content begins with: the FNV-1a 64 hash of its first `head_len` bytes
/// (`head_len` = [`HEAD_MAX`], or the whole content when shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Bytes hashed.
    pub head_len: u32,
    /// Their hash.
    pub head_hash: u64,
}

/// Position in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub ino: u64,
    /// Bytes of the file's beginning covered by `head_hash` (at most [`HEAD_MAX`]).
    pub head_len: u32,
    /// FNV-1a 64 of the first `head_len` bytes.
    pub head_hash: u64,
    /// Where the file was last seen (informational, and where a `.gz` is looked for).
    pub path: PathBuf,
    /// Bytes consumed: just after the last line handed out.
    pub offset: u64,
    /// Whether `offset` is inside a cut line whose rest is being skipped.
    #[serde(default)]
    pub skipping: bool,
}

/// Counters of a tailer, shared with its owner.
#[derive(Debug, Default)]
pub struct TailCounters {
    /// Files read again from 0 because they shrank or their head changed (copy-truncate).
    pub truncations: AtomicU64,
    /// Positions lost: a checkpointed file found neither by inode nor in a rolled file
    /// (it rolled away and was deleted before it was read to its end), or a `.gz` that
    /// stopped decompressing before its end (the rest of it).
    pub lost: AtomicU64,
    /// Open, read or stat errors (each is retried at the next poll).
    pub errors: AtomicU64,
    /// Lines cut at `max_line_bytes`.
    pub cut_lines: AtomicU64,
    /// Followed files that rolled: renamed to a rolled name or out of the patterns,
    /// deleted or compressed away; also a checkpointed file found rolled on start.
    pub rotations: AtomicU64,
    /// Rolled files (plain or `.gz`) read from a position the tailer had in them (the file
    /// it was reading when it stopped, or a copy-truncated file's copy).
    pub rolled_resumed: AtomicU64,
    /// Rolled files never seen before (rolled while the tailer was down or between two
    /// polls) read whole.
    pub rolled_read: AtomicU64,
}

/// One line handed out by the tailer.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// The line without its newline (cut to `max_line_bytes` when `truncated`).
    pub bytes: &'a [u8],
    /// The path the file had when the line was read.
    pub file: &'a Arc<Path>,
    /// Whether the line was longer than `max_line_bytes` and cut.
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy)]
struct LineMeta {
    start: usize,
    end: usize,
    file: u32,
    truncated: bool,
}

/// A batch of lines in one buffer (no allocation per line); reused between batches.
#[derive(Debug, Default)]
pub struct Lines {
    data: Vec<u8>,
    metas: Vec<LineMeta>,
    files: Vec<Arc<Path>>,
}

impl Lines {
    /// Number of lines.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// Whether there is no line.
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// The lines, in file order.
    pub fn iter(&self) -> impl Iterator<Item = Line<'_>> + '_ {
        self.metas.iter().map(|m| Line {
            bytes: &self.data[m.start..m.end],
            file: &self.files[m.file as usize],
            truncated: m.truncated,
        })
    }

    fn clear(&mut self) {
        self.data.clear();
        self.metas.clear();
        self.files.clear();
    }

    fn file_index(&mut self, path: &Arc<Path>) -> u32 {
        if let Some(i) = self.files.iter().rposition(|p| Arc::ptr_eq(p, path)) {
            return i as u32;
        }
        self.files.push(Arc::clone(path));
        (self.files.len() - 1) as u32
    }

    fn push(&mut self, file: &Arc<Path>, bytes: &[u8], truncated: bool) {
        let file = self.file_index(file);
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.metas.push(LineMeta { start, end: self.data.len(), file, truncated });
    }
}

/// Follows the files of a [`TailConfig`]; see the module docs for the guarantees.
#[derive(Debug)]
pub struct Tailer {
    engine: Option<Box<Engine>>,
    lines: Lines,
    poll_interval: Duration,
    counters: Arc<TailCounters>,
}

impl Tailer {
    /// A tailer resuming from `state` (`None` on the very first start). Checks the
    /// patterns; touches no file until the first read.
    pub fn new(config: TailConfig, state: Option<TailState>) -> Result<Tailer, TailError> {
        for p in &config.patterns {
            glob::Pattern::new(p).map_err(|e| TailError::Pattern { pattern: p.clone(), reason: e.to_string() })?;
        }
        let counters = Arc::new(TailCounters::default());
        let poll_interval = config.poll_interval;
        Ok(Tailer {
            engine: Some(Box::new(Engine::new(config, state, Arc::clone(&counters)))),
            lines: Lines::default(),
            poll_interval,
            counters,
        })
    }

    /// The tailer's counters.
    pub fn counters(&self) -> Arc<TailCounters> {
        Arc::clone(&self.counters)
    }

    /// Waits up to `max_wait` for lines and returns up to `max_lines` of them (empty when
    /// nothing came in time or `cancel` fired). File I/O runs on the blocking pool.
    /// Dropping the returned future while a read is in flight loses the reader (later
    /// calls return [`TailError::Gone`]); that only happens when the task is aborted.
    pub async fn read_batch(
        &mut self,
        max_lines: usize,
        max_wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<&Lines, TailError> {
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut lines = std::mem::take(&mut self.lines);
        loop {
            let mut engine = self.engine.take().ok_or(TailError::Gone)?;
            let (engine, out) = tokio::task::spawn_blocking(move || {
                engine.read(&mut lines, max_lines);
                (engine, lines)
            })
            .await?;
            self.engine = Some(engine);
            lines = out;
            if !lines.is_empty() || cancel.is_cancelled() {
                break;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let wake = deadline.min(now + self.poll_interval);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        self.lines = lines;
        Ok(&self.lines)
    }

    /// One read pass on the caller's thread, without waiting: up to `max_lines` lines of
    /// what the files hold now. For callers that own a thread (benchmarks, tools).
    pub fn read_blocking(&mut self, max_lines: usize) -> Result<&Lines, TailError> {
        let engine = self.engine.as_mut().ok_or(TailError::Gone)?;
        engine.read(&mut self.lines, max_lines);
        Ok(&self.lines)
    }

    /// The position just after the last batch handed out; checkpoint it once the rows of
    /// that batch are spooled.
    pub fn state(&self) -> TailState {
        self.engine.as_ref().map(|e| e.state()).unwrap_or_default()
    }
}

/// FNV-1a 64: tiny, stable across releases and platforms (the hash is checkpointed).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
